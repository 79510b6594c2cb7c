//! `PolicySpec`: the policy exactly as written in a TOML/JSON file or assembled from CLI flags.
//! Every field is optional here; defaults and range checks are applied by `validate`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// A policy as a user writes it. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Isolation tier: `ns` (default), `chroot`, `wasm`, `oci`, `gvisor`, `nspawn`, `docker`,
    /// `microvm`, or
    /// `auto` (the strongest tier available here that enforces the whole policy).
    pub tier: Option<String>,
    /// The `oci` tier's runtime: `runc` or `crun` (default: whichever is installed, crun first).
    pub runtime: Option<String>,
    /// `host` (default), an image of the store by name or digest, or the absolute path of a root
    /// filesystem directory.
    pub image: Option<String>,
    /// A host directory bound read-write at `/workspace`.
    pub workspace: Option<String>,
    /// Extra mounts, in order.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    pub network: Option<NetworkSpec>,
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Environment of the command. Nothing is inherited from the host except PATH, HOME, LANG, TERM
    /// defaults; entries here override those.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox (default `/workspace`).
    pub cwd: Option<String>,
    /// Numeric uid (and gid) of the command inside the sandbox (default 0, which is unprivileged on
    /// the host).
    pub user: Option<u32>,
    /// Fields a tier that cannot enforce them may ignore instead of refusing the run (for example
    /// `["limits.pids"]` for a policy shared between the ns and wasm tiers).
    #[serde(default)]
    pub optional: Vec<String>,
}

/// One mount. A tagged enum, so that a bind and a tmpfs cannot be confused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MountSpec {
    /// A host path made visible inside the sandbox.
    Bind {
        source: String,
        target: String,
        #[serde(default)]
        writable: bool,
    },
    /// A fresh, empty, writable tmpfs.
    Tmpfs {
        target: String,
        size: Option<String>,
    },
}

/// Network policy as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// `none` (default: loopback only), `allow` (only the egress proxy, for the names in `allow`),
    /// `open` (NAT through a veth, private ranges still dropped). `allow:a.com,*.b.org` is short for
    /// `allow` plus those names.
    pub mode: String,
    /// Host names the proxy admits in `allow` mode: exact (`pypi.org`) or `*.suffix`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Host names the proxy refuses even when `allow` matches them.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Networks reachable although private or link-local (`allow`: IP literals and names resolving
    /// inside them; `open`: destinations the firewall would otherwise drop).
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// `allow` mode: append one JSON line per proxy decision to this host file.
    pub audit: Option<String>,
    /// `allow` mode: an /etc/hosts-format host file the proxy consults before DNS (tests, pinning).
    pub hosts_file: Option<String>,
}

/// Resource limits as written (`"512M"`, `"1.5"`, `"30s"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Memory limit, no swap (`512M`). Default 1G.
    pub memory: Option<String>,
    /// CPU bandwidth in CPUs (`1.5`). Default: unlimited.
    pub cpus: Option<String>,
    /// Maximum number of processes and threads. Default 1024.
    pub pids: Option<u64>,
    /// Wall-clock limit (`30s`, `5m`). Default: none.
    pub timeout: Option<String>,
    /// Size of each writable scratch filesystem (`/tmp`, the root's upper layer). Default 1G.
    pub disk: Option<String>,
    /// Maximum open files per process. Default 1024.
    pub nofile: Option<u64>,
    /// wasm tier only: a CPU budget in wasmtime fuel units (roughly one per instruction).
    pub fuel: Option<u64>,
}

impl PolicySpec {
    /// Parses a TOML policy file. `source` names the file in the error.
    pub fn from_toml(source: &str, text: &str) -> Result<Self, PolicyError> {
        toml::from_str(text).map_err(|e| PolicyError::parse(source, e.message()))
    }
}
