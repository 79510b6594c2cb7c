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
}

pub fn mechanisms(tier: Tier) -> Mechanisms {
    match tier {
        Tier::Ns => Mechanisms {
            clone_flags: ns::USER | ns::MOUNT | ns::PID | ns::IPC | ns::UTS,
            flavour: Flavour::Namespaces,
            user_namespace: true,
            pid_namespace: true,
            cgroups: true,
            seccomp: seccomp::default_program(),
            child: launch::ns_child,
        },
        Tier::Chroot => Mechanisms {
            clone_flags: ns::MOUNT,
            flavour: Flavour::Chroot,
            user_namespace: false,
            pid_namespace: false,
            cgroups: false,
            seccomp: &[],
            child: launch::chroot_child,
        },
    }
}

/// Refuses the policy fields `policy.tier` cannot enforce.
pub fn check_enforceable(policy: &Policy) -> Result<(), RunError> {
    match policy.tier {
        Tier::Ns => Ok(()),
        Tier::Chroot if policy.limits.cpus.is_some() => Err(RunError::Unenforceable {
            tier: "chroot",
            field: "limits.cpus",
            reason: "the chroot tier limits with rlimits only, and no rlimit caps CPU bandwidth; use --tier ns".into(),
        }),
        Tier::Chroot => Ok(()),
    }
}
