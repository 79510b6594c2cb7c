//! What each tier is made of: the one place that says which mechanisms a tier uses and which policy
//! fields it cannot enforce (refused, naming the field: never run weaker). A new tier starts here.

use agentbox_policy::{Policy, Tier};
use agentbox_sys::process::ns;
use agentbox_sys::seccomp::SockFilter;

use crate::launch::{self, ChildSpec};
use crate::plan::Flavour;
use crate::{seccomp, RunError};

/// The mechanisms a tier applies. A closed table, so dispatch stays static and exhaustive.
pub struct Mechanisms {
    /// Namespaces made by the clone itself (the network namespace is made in parallel by the
    /// child; see `launch`).
    pub clone_flags: u64,
    pub flavour: Flavour,
    /// A user namespace: ids mapped to the uid slot, binds idmapped through it.
    pub user_namespace: bool,
    /// A pid namespace whose init takes every process down with it; without one, the sandbox's
    /// processes are found by the slot's uid.
    pub pid_namespace: bool,
    /// Limits applied with cgroups (otherwise with rlimits).
    pub cgroups: bool,
    pub seccomp: &'static [SockFilter],
    /// What the forked child runs.
    pub child: fn(ChildSpec<'_>) -> !,
    /// An engine tier: the child drives an external runtime (see `engine`).
    pub engine: bool,
}

/// The mechanisms of a tier that runs processes; None for the wasm tier, which runs modules in
/// the supervisor's process (see `wasm`).
pub fn mechanisms(tier: Tier) -> Option<Mechanisms> {
    match tier {
        Tier::Wasm | Tier::Microvm => None,
        Tier::Oci | Tier::Gvisor | Tier::Nspawn | Tier::Docker => Some(Mechanisms {
            // A private mount namespace for the root it builds; the engine makes the rest.
            clone_flags: ns::MOUNT,
            // No /proc or /dev of agentbox's: the engine mounts its own.
            flavour: Flavour::Engine,
            user_namespace: false,
            pid_namespace: false,
            cgroups: crate::engine::payload_in_caller_cgroup(tier),
            seccomp: &[],
            child: crate::engine::child,
            engine: true,
        }),
        Tier::Ns => Some(Mechanisms {
            clone_flags: ns::USER | ns::MOUNT | ns::PID | ns::IPC | ns::UTS,
            flavour: Flavour::Namespaces,
            user_namespace: true,
            pid_namespace: true,
            cgroups: true,
            seccomp: seccomp::default_program(),
            child: launch::ns_child,
            engine: false,
        }),
        Tier::Chroot => Some(Mechanisms {
            clone_flags: ns::MOUNT,
            flavour: Flavour::Chroot,
            user_namespace: false,
            pid_namespace: false,
            cgroups: false,
            seccomp: &[],
            child: launch::chroot_child,
            engine: false,
        }),
    }
}

/// Refuses the policy fields `policy.tier` cannot enforce (fields the policy marked optional are
/// ignored instead).
pub fn check_enforceable(policy: &Policy) -> Result<(), RunError> {
    let refuse = |field: &'static str, reason: &str| {
        Err(RunError::Unenforceable {
            tier: policy.tier.name(),
            field,
            reason: reason.into(),
        })
    };
    match policy.tier {
        Tier::Ns | Tier::Chroot if policy.insists_on("limits.fuel") => refuse(
            "limits.fuel",
            "fuel is the wasm tier's CPU budget; use limits.cpus or limits.timeout here",
        ),
        Tier::Ns => Ok(()),
        Tier::Chroot if policy.insists_on("limits.cpus") => refuse(
            "limits.cpus",
            "the chroot tier limits with rlimits only, and no rlimit caps CPU bandwidth; use --tier ns",
        ),
        Tier::Chroot => Ok(()),
        Tier::Wasm => wasm_enforceable(policy),
        Tier::Microvm => crate::microvm::check(policy),
        Tier::Oci | Tier::Gvisor | Tier::Nspawn | Tier::Docker => {
            if policy.insists_on("limits.fuel") {
                return refuse(
                    "limits.fuel",
                    "fuel is the wasm tier's CPU budget; use limits.cpus or limits.timeout here",
                );
            }
            crate::engine::check(policy)
        }
    }
}

/// What a WASI module cannot be given: processes, users, a CPU share, scratch file systems, an
/// image, a network.
fn wasm_enforceable(policy: &Policy) -> Result<(), RunError> {
    let refuse = |field: &'static str, reason: &str| {
        Err(RunError::Unenforceable {
            tier: "wasm",
            field,
            reason: reason.into(),
        })
    };
    let meaningless: [(&'static str, &str); 5] = [
        ("limits.pids", "a module is one process with no fork; bound its CPU with limits.fuel or limits.timeout"),
        ("limits.cpus", "a module runs on one thread; bound its CPU with limits.fuel or limits.timeout"),
        ("limits.disk", "a module has no scratch file system, only the preopened host directories"),
        ("limits.nofile", "wasmtime does not cap a module's open files"),
        ("user", "WASI has no users: files are created with the supervisor's ids"),
    ];
    for (field, reason) in meaningless {
        if policy.insists_on(field) {
            return refuse(field, &format!("{reason} (or list it in `optional`)"));
        }
    }
    if policy.image != agentbox_policy::Image::Host {
        return refuse(
            "image",
            "a module sees only the preopened directories, never an image",
        );
    }
    if policy
        .mounts
        .iter()
        .any(|m| matches!(m.kind, agentbox_policy::MountKind::Tmpfs { .. }))
    {
        return refuse(
            "mounts",
            "a tmpfs has no WASI equivalent; bind a host directory instead",
        );
    }
    if policy.network.mode != agentbox_policy::NetMode::None {
        return refuse(
            "network.mode",
            "WASI modules get no sockets in this version: only network mode none",
        );
    }
    if policy.insists_on("cwd")
        && !policy
            .mounts
            .iter()
            .any(|m| policy.cwd.starts_with(&m.target))
    {
        return refuse(
            "cwd",
            "the working directory must be inside a preopened directory",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentbox_policy::PolicySpec;

    fn policy(toml: &str) -> Policy {
        PolicySpec::from_toml("t.toml", toml)
            .and_then(|s| s.validate(None))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn refused_field(toml: &str) -> Option<&'static str> {
        match check_enforceable(&policy(toml)) {
            Err(RunError::Unenforceable { field, .. }) => Some(field),
            Ok(()) => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_wasm_tier_refuses_what_means_nothing_to_a_module_unless_optional() {
        let wasm = "tier = \"wasm\"\n";
        assert_eq!(refused_field(wasm), None);
        // Defaults are not refused: only what the policy sets itself.
        assert_eq!(
            refused_field(&format!(
                "{wasm}[limits]\nmemory = \"64M\"\ntimeout = \"1s\"\nfuel = 1000\n"
            )),
            None
        );
        assert_eq!(
            refused_field(&format!("{wasm}[limits]\npids = 10\n")),
            Some("limits.pids")
        );
        assert_eq!(
            refused_field(&format!(
                "{wasm}optional = [\"limits.pids\"]\n[limits]\npids = 10\n"
            )),
            None
        );
        assert_eq!(
            refused_field(&format!("{wasm}[limits]\ncpus = \"1\"\n")),
            Some("limits.cpus")
        );
        assert_eq!(refused_field(&format!("{wasm}user = 1000\n")), Some("user"));
        assert_eq!(
            refused_field(&format!("{wasm}image = \"/srv/root\"\n")),
            Some("image")
        );
        assert_eq!(
            refused_field(&format!(
                "{wasm}[[mounts]]\ntype = \"tmpfs\"\ntarget = \"/t\"\n"
            )),
            Some("mounts")
        );
        assert_eq!(
            refused_field(&format!("{wasm}[network]\nmode = \"allow:a.test\"\n")),
            Some("network.mode")
        );
        assert_eq!(
            refused_field(&format!("{wasm}cwd = \"/elsewhere\"\n")),
            Some("cwd")
        );
    }

    #[test]
    fn fuel_is_refused_by_the_process_tiers() {
        assert_eq!(refused_field("[limits]\nfuel = 5\n"), Some("limits.fuel"));
        assert_eq!(
            refused_field("tier = \"chroot\"\n[limits]\nfuel = 5\n"),
            Some("limits.fuel")
        );
        assert_eq!(
            refused_field("optional = [\"limits.fuel\"]\n[limits]\nfuel = 5\n"),
            None
        );
        assert!(mechanisms(Tier::Wasm).is_none());
    }
}
