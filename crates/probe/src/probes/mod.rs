//! The probes. Each is a plain function from the context to an outcome, run in a child of its own.

pub(crate) mod errno;
mod fs;
mod fs_chroot;
mod fs_devices;
pub(crate) mod fs_fds;
mod fs_leaks;
mod fs_procs;
mod fs_resources;
mod kernel;
mod kernel_env;
mod kernel_files;
mod kernel_mounts;
mod kernel_privilege;
mod kernel_syscalls;

use crate::{Context, Outcome};

/// One technique.
pub struct Probe {
    pub id: &'static str,
    pub title: &'static str,
    /// "filesystem", "processes", "devices", "kernel", "syscalls", "privilege", "leaks",
    /// "network", "resources".
    pub category: &'static str,
    /// Seconds the probe may take before it is killed (and judged inconclusive).
    pub timeout_s: u32,
    pub run: fn(&Context) -> Outcome,
}

/// Every probe, in report order.
pub fn all() -> Vec<Probe> {
    let mut probes = fs::probes();
    probes.extend(kernel::probes());
    probes
}
