//! Tenancy: which sandboxes a tenant sees (those whose state.json records it as their tenant),
//! how a path's `{id}` resolves among them, the quotas checked before a create, and what a
//! policy sent over the API may ask for. Reads /run/agentbox afresh each time (the server keeps
//! no state), and never lets one tenant tell another tenant's sandbox from a missing one.

use agentbox_policy::{MountSpec, Policy, PolicySpec};
use agentbox_runtime::persistent::{state, State as SandboxState};

use crate::auth::Tenant;
use crate::error::{ApiError, ErrorCode};

/// The tenant's sandboxes, oldest first.
pub fn owned(tenant: &Tenant) -> Vec<SandboxState> {
    state::list()
        .into_iter()
        .filter(|s| s.tenant.as_deref() == Some(tenant.name.as_str()))
        .collect()
}

/// The tenant's sandbox with this id, or else this name; `not_found` for any other tenant's.
/// Callers pass the returned state's `id` (never `target`) on to the runtime.
pub fn resolve(tenant: &Tenant, target: &str) -> Result<SandboxState, ApiError> {
    let mine = owned(tenant);
    let by_id = mine.iter().position(|s| s.id == target);
    let by_name = || mine.iter().position(|s| s.name.as_deref() == Some(target));
    by_id
        .or_else(by_name)
        .map(|i| mine[i].clone())
        .ok_or_else(|| ApiError::no_sandbox(target))
}

/// The memory limit a sandbox's cgroup enforces, in bytes (0 once the cgroup is gone).
pub fn memory_limit(sandbox: &SandboxState) -> u64 {
    sandbox
        .cgroups
        .iter()
        .find_map(|dir| {
            ["memory.limit_in_bytes", "memory.max"]
                .iter()
                .find_map(|f| {
                    let text = std::fs::read_to_string(dir.join(f)).ok()?;
                    match text.trim() {
                        "max" => Some(u64::MAX),
                        n => n.parse().ok(),
                    }
                })
        })
        .unwrap_or(0)
}

/// Refuses a create that would take the tenant over its quotas.
pub fn check_quota(tenant: &Tenant, mine: &[SandboxState], memory: u64) -> Result<(), ApiError> {
    let count = mine.len();
    if count >= tenant.max_sandboxes as usize {
        return Err(ApiError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "tenant {} holds {count} of its {} sandbox(es); delete one first",
                tenant.name, tenant.max_sandboxes
            ),
        ));
    }
    let used = mine
        .iter()
        .map(memory_limit)
        .fold(0u64, u64::saturating_add);
    if used.saturating_add(memory) > tenant.max_memory {
        return Err(ApiError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "tenant {}: {used} bytes of memory limits in use plus {memory} asked exceeds \
                 its {} bytes",
                tenant.name, tenant.max_memory
            ),
        ));
    }
    Ok(())
}

/// Checks a policy sent over the API and returns it validated (its image resolved; the memory
/// limit the quota counts is `limits.memory`). Host paths are
/// refused: a caller of the API is not a user of this host, and a bind of a host directory
/// (read-write ones are written with the directory owner's ids) would hand it that directory.
pub fn check_policy(spec: &PolicySpec) -> Result<Policy, ApiError> {
    if spec.workspace.is_some() {
        return Err(ApiError::invalid(
            "policy.workspace: host directories cannot be bound through the API",
        ));
    }
    if spec
        .mounts
        .iter()
        .any(|m| matches!(m, MountSpec::Bind { .. }))
    {
        return Err(ApiError::invalid(
            "policy.mounts: bind mounts of host paths cannot be made through the API (tmpfs can)",
        ));
    }
    if let Some(network) = &spec.network {
        if network.audit.is_some() || network.hosts_file.is_some() {
            return Err(ApiError::invalid(
                "policy.network: audit and hosts_file are host paths and cannot be set through the \
                 API (the audit log of an API sandbox is in its state directory)",
            ));
        }
    }
    if spec.image.as_deref().is_some_and(|i| i.starts_with('/')) {
        return Err(ApiError::invalid(
            "policy.image: a host directory cannot be used through the API; use \"host\" or an \
             image of the store (agentbox image ls)",
        ));
    }
    agentbox_runtime::select::validate(spec, None)
        .map_err(|e| ApiError::invalid(format!("policy: {e}")))
}

/// Checks a sandbox name: the runtime's rules, and never the shape of an id, so that a name can
/// not be taken for another sandbox's id.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let id_shaped = name.len() == 12 && name.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid || id_shaped {
        return Err(ApiError::invalid(format!(
            "name {name:?}: use 1-64 letters, digits, '-', '_' or '.', not 12 hex digits"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tenant(max_sandboxes: u32, max_memory: u64) -> Tenant {
        Tenant {
            name: "t".into(),
            max_sandboxes,
            max_memory,
        }
    }

    #[test]
    fn host_paths_are_refused_and_the_memory_limit_is_returned() {
        let mut spec = PolicySpec::default();
        assert_eq!(check_policy(&spec).unwrap().limits.memory, 1 << 30);
        spec.limits.memory = Some("256M".into());
        assert_eq!(check_policy(&spec).unwrap().limits.memory, 256 << 20);
        let bind: PolicySpec =
            serde_json::from_str(r#"{"mounts":[{"type":"bind","source":"/","target":"/h"}]}"#)
                .unwrap();
        assert!(check_policy(&bind).unwrap_err().message.contains("mounts"));
        let ws = PolicySpec {
            workspace: Some("/etc".into()),
            ..Default::default()
        };
        assert!(check_policy(&ws).unwrap_err().message.contains("workspace"));
        let image = PolicySpec {
            image: Some("/".into()),
            ..Default::default()
        };
        assert!(check_policy(&image).unwrap_err().message.contains("image"));
        for field in ["audit", "hosts_file"] {
            let net: PolicySpec = serde_json::from_str(&format!(
                r#"{{"network":{{"mode":"allow:a.test","{field}":"/etc/passwd"}}}}"#
            ))
            .unwrap();
            assert!(check_policy(&net).unwrap_err().message.contains(field));
        }
        let bad = PolicySpec {
            tier: Some("vm9".into()),
            ..Default::default()
        };
        assert_eq!(
            check_policy(&bad).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn names_follow_the_runtime_and_never_look_like_ids() {
        assert!(check_name("web-1.a_b").is_ok());
        assert!(check_name("0123456789ab").is_err());
        assert!(check_name("0123456789abc").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn quotas_count_sandboxes_and_memory() {
        assert!(check_quota(&tenant(1, 1 << 30), &[], 1 << 30).is_ok());
        let e = check_quota(&tenant(0, 1 << 30), &[], 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::QuotaExceeded);
        let e = check_quota(&tenant(5, 1 << 20), &[], 2 << 20).unwrap_err();
        assert_eq!(e.code, ErrorCode::QuotaExceeded);
        assert!(e.message.contains("memory"), "{}", e.message);
    }
}
