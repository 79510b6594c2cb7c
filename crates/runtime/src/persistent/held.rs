//! What a supervisor holds: a sandbox it launched itself (the `ns` and engine tiers, whose init
//! is its child in the sandbox's namespaces), or a VM host that owns a microVM.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use agentbox_policy::Policy;
use agentbox_sys::process::Exit;

use crate::microvm::host::VmHost;
use crate::supervise::Launched;

pub(crate) enum Held {
    Sandbox(Box<Launched>),
    Vm(VmHost),
}

impl Held {
    /// The host pid of the sandbox's init (the VM host on the microvm tier).
    pub(crate) fn init_pid(&self) -> i32 {
        match self {
            Held::Sandbox(l) => l.sandbox.child,
            Held::Vm(v) => v.pid,
        }
    }

    /// The first host uid of the sandbox's range (0 for a VM: its ids are the guest's own).
    pub(crate) fn uid_base(&self) -> u32 {
        match self {
            Held::Sandbox(l) => l.uid_base(),
            Held::Vm(_) => 0,
        }
    }

    pub(crate) fn cgroups(&self) -> Vec<PathBuf> {
        match self {
            Held::Sandbox(l) => l.sandbox.cgroup_dirs(),
            Held::Vm(_) => Vec::new(),
        }
    }

    pub(crate) fn init_exited(&mut self) -> bool {
        match self {
            Held::Sandbox(l) => l.sandbox.init_exited(),
            Held::Vm(v) => v.exited(),
        }
    }

    /// Once its channel is closed, gives an engine tier's child up to `timeout` to remove its
    /// container itself and end, before [`Held::finish`] would kill it: killed in the middle of
    /// its own removal (a request to the Docker daemon, a runtime's `delete`), it could leave the
    /// engine busy with it when the supervisor's own removal comes.
    pub(crate) fn let_engine_child_end(&mut self, timeout: std::time::Duration) {
        if let Held::Sandbox(l) = self {
            if l.sandbox.is_engine() {
                l.sandbox.await_exit(timeout);
            }
        }
    }

    /// Tears the sandbox down: nothing of it survives.
    pub(crate) fn finish(self, policy: &Policy) {
        match self {
            Held::Sandbox(l) => {
                let _ = l.finish(policy, Ok((Exit::Code(0), false)));
            }
            Held::Vm(v) => v.finish(),
        }
    }
}

/// Starts what the supervisor will hold for `policy`, serving the init channel `theirs`; returns
/// it with the supervisor's end of the channel.
pub(crate) fn start(
    policy: &Policy,
    ours: OwnedFd,
    theirs: OwnedFd,
    net_context: &crate::net::NetContext,
) -> Result<(Held, OwnedFd), crate::RunError> {
    if policy.tier == agentbox_policy::Tier::Microvm {
        let (host, ours) = VmHost::start(policy, ours, theirs)?;
        return Ok((Held::Vm(host), ours));
    }
    let launched = crate::supervise::launch(
        policy,
        crate::supervise::Purpose::Serve(theirs),
        net_context,
    )?;
    Ok((Held::Sandbox(Box::new(launched)), ours))
}
