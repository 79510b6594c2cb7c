//! The policy fields a Docker container cannot enforce: refused, naming the field, never run
//! weaker. Pure: it reads the policy only (what the daemon itself supports is checked at create
//! time, where any daemon warning about an ignored limit fails the run).
//!
//! Field by field:
//! - `image`: enforced. A store image or image directory is imported once
//!   (`agentbox/<12 hex of its digest>:latest`); `host` is a tiny imported image holding only
//!   the symlinks and mount points, plus read-only binds of the host's system directories.
//! - `mounts` (binds): enforced with the Mounts API (`type=bind`, the source must exist; Docker
//!   never creates it). Read-only binds are non-recursive, so no writable submount of the source
//!   shows through (Docker 20.10 cannot make submounts read-only); nosuid is not set on binds,
//!   no-new-privileges makes set-id bits inert. Tmpfs mounts: enforced (`size`, `mode`,
//!   nosuid, nodev).
//! - `network.mode`: only `none` (`NetworkMode: none`: loopback only). `allow` needs agentbox's
//!   egress proxy inside the sandbox's network namespace and `open` needs its NAT with private
//!   ranges dropped; Docker's networks do neither: refused.
//! - `limits.memory`: enforced (`Memory`, and `MemorySwap` equal to it: no swap). An OOM kill is
//!   reported from `State.OOMKilled`.
//! - `limits.cpus`: enforced (`NanoCpus`, CFS bandwidth).
//! - `limits.pids`: enforced (`PidsLimit`, the pids cgroup).
//! - `limits.nofile`: enforced (`Ulimits` nofile, soft = hard).
//! - `limits.disk`: enforced: the root file system is read-only, so the only writable space
//!   outside the policy's binds and tmpfs is `/tmp` and `/dev/shm`, both tmpfs of this size.
//! - `limits.timeout`: enforced by agentbox (SIGKILL to the container, reported as timed out).
//! - `limits.fuel`: the wasm tier's budget: refused when insisted on.
//! - `user`: enforced (`User: uid:uid`). Note that uid 0 is host root unless the daemon runs with
//!   userns-remap (see `probe`'s notes).
//! - `cwd`: enforced (`WorkingDir`, created by Docker if missing).
//! - `env`: enforced, except that Docker always adds `HOSTNAME` (and `PATH` when the policy has
//!   none).
//! - seccomp, capabilities, no-new-privileges: always applied (see `spec`).

use agentbox_oci::EngineError;
use agentbox_policy::{NetMode, Policy};

use crate::ENGINE;

/// Refuses what Docker cannot enforce in `policy` (fields marked optional are let through).
pub fn check(policy: &Policy) -> Result<(), EngineError> {
    let refuse = |field: &'static str, reason: &str| {
        Err(EngineError::Unenforceable {
            engine: ENGINE,
            field,
            reason: reason.into(),
        })
    };
    match policy.network.mode {
        NetMode::None => {}
        NetMode::Allow => {
            return refuse(
                "network.mode",
                "allow needs agentbox's egress proxy inside the sandbox's network namespace, \
                 which a Docker container cannot host; use network mode none or --tier ns",
            )
        }
        NetMode::Open => {
            return refuse(
                "network.mode",
                "open needs agentbox's NAT that drops private, link-local and host addresses; \
                 Docker's bridge reaches them; use network mode none or --tier ns",
            )
        }
    }
    if policy.insists_on("limits.fuel") {
        return refuse(
            "limits.fuel",
            "fuel is the wasm tier's CPU budget; use limits.cpus or limits.timeout here",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use agentbox_policy::PolicySpec;

    fn refused(toml: &str) -> Option<&'static str> {
        let policy = PolicySpec::from_toml("t.toml", toml)
            .and_then(|s| s.validate(None))
            .unwrap();
        match check(&policy) {
            Ok(()) => None,
            Err(EngineError::Unenforceable { field, .. }) => Some(field),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn docker_refuses_networks_and_fuel_only() {
        let d = "tier = \"docker\"\n";
        assert_eq!(refused(d), None);
        assert_eq!(
            refused(&format!(
                "{d}user = 1000\ncwd = \"/tmp\"\n[limits]\nmemory = \"64M\"\ncpus = \"0.5\"\n\
                 pids = 10\nnofile = 64\ndisk = \"10M\"\ntimeout = \"1s\"\n"
            )),
            None
        );
        assert_eq!(
            refused(&format!("{d}[network]\nmode = \"allow:a.test\"\n")),
            Some("network.mode")
        );
        assert_eq!(
            refused(&format!("{d}[network]\nmode = \"open\"\n")),
            Some("network.mode")
        );
        assert_eq!(
            refused(&format!("{d}[limits]\nfuel = 5\n")),
            Some("limits.fuel")
        );
        assert_eq!(
            refused(&format!(
                "{d}optional = [\"limits.fuel\"]\n[limits]\nfuel = 5\n"
            )),
            None
        );
    }
}
