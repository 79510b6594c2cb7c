//! The request and response bodies of the API: the same types the handlers (de)serialize and the
//! OpenAPI document describes. Requests refuse unknown fields; this module holds no behaviour
//! beyond turning a runtime `State` into its public view.

use std::collections::BTreeMap;

use agentbox_policy::PolicySpec;
use agentbox_runtime::persistent::{Health, State as SandboxState};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/sandboxes`.
#[derive(Debug, Default, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The sandbox policy, as in a policy file (tier, limits, env, cwd, user, tmpfs mounts).
    /// Unknown fields are refused. Host paths (`workspace`, bind mounts, a directory `image`)
    /// are refused through the API.
    #[schema(value_type = Option<Object>)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub policy: Option<PolicySpec>,
    /// A name unique on the host: 1-64 letters, digits, `-`, `_`, `.`; not 12 hex digits.
    pub name: Option<String>,
    /// Seconds after creation when the sandbox is removed.
    pub ttl_s: Option<u64>,
    /// Seconds without a command running after which the sandbox is removed.
    pub idle_s: Option<u64>,
}

/// `201` of `POST /v1/sandboxes`.
#[derive(Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Created {
    pub id: String,
}

/// Whether a sandbox's supervisor still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxHealth {
    Running,
    /// The supervisor died: the sandbox is gone; `DELETE` reclaims what it left.
    Failed,
}

/// One sandbox of the caller's tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Sandbox {
    pub id: String,
    pub name: Option<String>,
    pub tier: String,
    pub state: SandboxHealth,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Bytes of memory its cgroup is charged with now, when readable.
    pub memory: Option<u64>,
}

impl From<&SandboxState> for Sandbox {
    fn from(s: &SandboxState) -> Sandbox {
        Sandbox {
            id: s.id.clone(),
            name: s.name.clone(),
            tier: s.tier.clone(),
            state: match s.health() {
                Health::Running => SandboxHealth::Running,
                Health::Failed => SandboxHealth::Failed,
            },
            created: s.created,
            memory: s.memory_in_use(),
        }
    }
}

/// `POST /v1/sandboxes/{id}/exec`.
#[derive(Debug, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// The argv; the first element is looked up in the sandbox's PATH.
    pub command: Vec<String>,
    /// Given to the command on its stdin; without it the command reads /dev/null.
    pub stdin: Option<String>,
    /// Working directory inside the sandbox (default: the policy's).
    pub cwd: Option<String>,
    /// Added to (or replacing entries of) the policy's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds after which the command is killed (exit code 124).
    pub timeout_s: Option<u64>,
}

/// The outcome of a command run to its end.
#[derive(Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ExecResult {
    /// The command's exit code; 128+N when signal N killed it, 124 at its timeout, 127 when it
    /// does not exist in the sandbox, 126 when it cannot be executed.
    pub exit_code: i32,
    /// UTF-8 (invalid sequences replaced), at most 1 MiB.
    pub stdout: String,
    /// UTF-8 (invalid sequences replaced), at most 1 MiB.
    pub stderr: String,
    /// Whether stdout or stderr was cut at 1 MiB.
    pub truncated: bool,
    pub duration_ms: u64,
}

/// One entry of `GET /v1/sandboxes/{id}/dir`.
#[derive(Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct DirEntry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Bytes.
    pub size: u64,
}

/// `GET /health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthStatus {
    /// Always `ok` while the server answers.
    pub status: String,
}

/// `POST /v1/sandboxes/{id}/network`: host names to admit or refuse from now on.
#[derive(Debug, Default, Clone, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkChange {
    /// Names to admit: exact (`pypi.org`) or `*.example.com` for its subdomains.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Names to refuse even where an allow rule matches.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A sandbox's egress lists.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct NetworkLists {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// Networks reachable although private (fixed at creation).
    pub cidrs: Vec<String>,
}

impl From<agentbox_runtime::persistent::Allowlist> for NetworkLists {
    fn from(l: agentbox_runtime::persistent::Allowlist) -> NetworkLists {
        NetworkLists {
            allow: l.allow,
            deny: l.deny,
            cidrs: l.cidrs,
        }
    }
}
