//! `microvm+ns`: the command runs inside agentbox's `ns` tier within the guest, so an escape from
//! the namespaces, seccomp and Landlock lands on the guest's kernel, not the host's. The host
//! chooses the inner policy (this module) and sends it with the command; the guest agent runs
//! `agentbox __sandbox` from the read-only tools disk with it.

use std::path::{Path, PathBuf};

use agentbox_policy::{LimitsSpec, NetworkSpec, Policy, PolicySpec};

use crate::persistent::protocol::ExecRequest;
use crate::RunError;

/// The inner `ns` policy for a layered microVM: the guest's root as the "host" image, no
/// network, and the limits, user, environment and working directory the policy itself gave
/// (the VM's RAM and vCPUs bound the rest).
pub fn inner_spec(policy: &Policy) -> PolicySpec {
    let given = |field: &str| policy.given.contains(&field);
    let limits = &policy.limits;
    PolicySpec {
        tier: Some("ns".into()),
        network: Some(NetworkSpec {
            mode: "none".into(),
            ..NetworkSpec::default()
        }),
        limits: LimitsSpec {
            memory: given("limits.memory").then(|| limits.memory.to_string()),
            cpus: limits
                .cpus
                .filter(|_| given("limits.cpus"))
                .map(|c| format!("{}.{:03}", c.0 / 1000, c.0 % 1000)),
            pids: given("limits.pids").then_some(limits.pids),
            timeout: limits
                .timeout
                .filter(|_| given("limits.timeout"))
                .map(|t| format!("{}ms", t.as_millis())),
            disk: given("limits.disk").then(|| limits.disk.to_string()),
            nofile: given("limits.nofile").then_some(limits.nofile),
            fuel: None,
        },
        env: policy.env_given.iter().cloned().collect(),
        cwd: given("cwd").then(|| policy.cwd.display().to_string()),
        user: given("user").then_some(policy.user),
        optional: policy.optional.clone(),
        ..PolicySpec::default()
    }
}

/// The inner policy as the JSON the guest agent hands to `agentbox __sandbox`.
pub fn inner_spec_json(policy: &Policy) -> String {
    serde_json::to_string(&inner_spec(policy)).unwrap_or_default()
}

/// The inner policy of one exec: the policy's, with the exec's environment, working directory
/// and wall clock on top.
pub(crate) fn exec_spec_json(policy: &Policy, request: &ExecRequest) -> String {
    let mut spec = inner_spec(policy);
    spec.env.extend(request.env.iter().cloned());
    if let Some(cwd) = &request.cwd {
        spec.cwd = Some(cwd.clone());
    }
    if let Some(ms) = request.timeout_ms {
        spec.limits.timeout = Some(format!("{ms}ms"));
    }
    serde_json::to_string(&spec).unwrap_or_default()
}

/// The read-only disk that carries this agentbox binary into the guest (built once per binary;
/// the cache keeps the newest few).
pub(crate) fn tools_disk() -> Result<PathBuf, RunError> {
    let exe = std::env::current_exe().map_err(|e| RunError::setup("agentbox binary", e))?;
    let cache = Path::new(agentbox_microvm::disk::DEFAULT_CACHE);
    let disk = agentbox_microvm::disk::tools_disk(&exe, cache)
        .map_err(|e| RunError::setup("tools disk", e))?;
    prune_tools_disks(cache, &disk, KEEP_TOOLS_DISKS);
    Ok(disk)
}

/// Tools disks kept in the cache: each agentbox build makes a new one (30-130 MB).
const KEEP_TOOLS_DISKS: usize = 3;

/// Removes all but the `keep` newest tools disks (never `current`); a VM using a removed one
/// keeps it open until it ends.
fn prune_tools_disks(cache: &Path, current: &Path, keep: usize) {
    let Ok(dir) = std::fs::read_dir(cache) else {
        return;
    };
    let mut disks: Vec<(std::time::SystemTime, PathBuf)> = dir
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("tools-") && name.ends_with(".ext4")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(_, p)| p != current)
        .collect();
    disks.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (_, old) in disks.into_iter().skip(keep.saturating_sub(1)) {
        let _ = std::fs::remove_file(&old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> Policy {
        PolicySpec::from_toml("test", toml)
            .unwrap()
            .validate(None)
            .unwrap()
    }

    #[test]
    fn the_inner_policy_carries_what_the_policy_gave_and_validates() {
        let outer = policy(
            "tier = \"microvm+ns\"\nimage = \"/img\"\nuser = 1000\ncwd = \"/tmp\"\nenv = { A = \"1\" }\n\
             [limits]\nmemory = \"256M\"\npids = 32\nnofile = 64\ntimeout = \"1.5s\"\ncpus = \"2\"\n",
        );
        assert!(outer.layered);
        assert_eq!(outer.tier_label(), "microvm+ns");
        let inner = inner_spec(&outer);
        assert_eq!(inner.tier.as_deref(), Some("ns"));
        assert_eq!(
            inner.image, None,
            "the guest's root is the inner sandbox's host"
        );
        assert_eq!(inner.network.as_ref().unwrap().mode, "none");
        assert_eq!(inner.limits.pids, Some(32));
        assert_eq!(inner.limits.nofile, Some(64));
        assert_eq!(inner.limits.timeout.as_deref(), Some("1500ms"));
        let validated = inner.validate(None).unwrap();
        assert_eq!(validated.limits.memory, 256 << 20);
        assert_eq!(validated.user, 1000);
        assert_eq!(validated.cwd, std::path::PathBuf::from("/tmp"));
        assert_eq!(validated.limits.cpus.map(|c| c.0), Some(2000));
        assert!(validated.env_given.contains(&("A".into(), "1".into())));
        // The JSON round-trips through the helper's parser (unknown fields refused there).
        let json = inner_spec_json(&outer);
        assert_eq!(crate::helper::parse_spec(&json).unwrap(), inner);
    }

    #[test]
    fn defaults_stay_the_inner_tiers_own() {
        let inner = inner_spec(&policy("tier = \"microvm+ns\"\nimage = \"/img\"\n"));
        assert_eq!(inner.limits, LimitsSpec::default());
        assert_eq!(inner.user, None);
        assert_eq!(inner.cwd, None);
    }
}
