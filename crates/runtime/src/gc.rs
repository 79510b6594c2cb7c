//! Reclaiming what a supervisor that died (`kill -9`) could not clean up: its cgroup leaves (and
//! any process still in them) and its uid slot. The sandbox itself is already gone: its init died
//! of the parent-death signal and took the namespaces with it.

use std::path::{Path, PathBuf};

use agentbox_sys::{process, signal};

use crate::cgroup::{self, Hierarchy};
use crate::RunError;

/// What `collect` reclaimed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    /// Persistent sandboxes whose supervisor died.
    pub sandboxes: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    pub slots: usize,
    /// Veths and firewall tables (open network mode) of slots nobody holds.
    pub networks: Vec<String>,
    /// State directories of microVMs whose owner died.
    pub vms: Vec<String>,
}

/// Reclaims failed persistent sandboxes, removes the cgroup leaves of dead supervisors and frees
/// their uid slots.
pub fn collect() -> Result<Reclaimed, RunError> {
    let mut reclaimed = Reclaimed::default();
    // Persistent sandboxes whose supervisor died: their state dirs, cgroups and slots.
    for state in crate::persistent::state::list() {
        if state.health() == crate::persistent::Health::Failed {
            crate::persistent::state::reclaim(&state)?;
            reclaimed.cgroups.extend(state.cgroups.iter().cloned());
            reclaimed.sandboxes.push(state.id);
        }
    }
    reclaimed.slots = crate::uidmap::free_stale_slots();
    reclaimed.networks = crate::net::collect_orphans(&crate::uidmap::slot_held);
    // The state directories (overlay, sockets, logs) of microVMs whose owner died.
    if let Ok(entries) = std::fs::read_dir(agentbox_microvm::vm::DEFAULT_RUN_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let slot = name.strip_prefix("vm-").and_then(|n| n.parse().ok());
            if slot.is_some_and(|s| !crate::uidmap::slot_held(s)) {
                let _ = std::fs::remove_dir_all(entry.path());
                reclaimed.vms.push(name);
            }
        }
    }
    let roots = match cgroup::detect_host() {
        Ok(Hierarchy::V1 { memory, pids, cpu }) => [Some(memory), Some(pids), cpu]
            .into_iter()
            .flatten()
            .collect(),
        Ok(Hierarchy::V2 { root }) => vec![root],
        Err(_) => Vec::new(),
    };
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dead_supervisor = supervisor_of(&name).is_some_and(|pid| !supervisor_alive(pid));
            // A microVM's QEMU cgroup lives as long as the VM's uid slot is held.
            let dead_vm = vm_slot_of(&name).is_some_and(|slot| !crate::uidmap::slot_held(slot));
            if dead_supervisor || dead_vm {
                let dir = entry.path();
                empty_and_remove(&dir)
                    .map_err(|e| RunError::setup(format!("gc {}", dir.display()), e))?;
                reclaimed.cgroups.push(dir);
            }
        }
    }
    Ok(reclaimed)
}

/// The uid slot in a microVM's QEMU cgroup name (`agentbox-qemu-vm-<slot>`, see
/// `crate::microvm::boot`).
fn vm_slot_of(name: &str) -> Option<u32> {
    let prefix = agentbox_microvm::cgroup::leaf_name("vm-");
    name.strip_prefix(&prefix)?.parse().ok()
}

/// The supervisor pid in a leaf name `agentbox-<supervisor>-<n>` (`n` counts that supervisor's
/// sandboxes; see `supervise::create_cgroup`).
fn supervisor_of(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix("agentbox-")?.split('-');
    let supervisor = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    parts.next().is_none().then_some(supervisor)
}

/// Whether a process with that pid exists. A recycled pid keeps the garbage until it goes too:
/// better than ever reclaiming a live sandbox.
fn supervisor_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub(crate) fn empty_and_remove(dir: &Path) -> std::io::Result<()> {
    for _ in 0..200 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
        if procs.trim().is_empty() {
            match std::fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(agentbox_sys::errno::EBUSY) => {}
                Err(e) => return Err(e),
            }
        }
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = process::kill(pid, signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_agentbox_leaf_names_name_a_supervisor() {
        assert_eq!(supervisor_of("agentbox-123-456"), Some(123));
        assert_eq!(supervisor_of("agentbox-123-1"), Some(123));
        assert_eq!(supervisor_of("agentbox-123-4294967295"), Some(123));
        assert_eq!(supervisor_of("agentbox-qemu-vm-3"), None);
        assert_eq!(vm_slot_of("agentbox-qemu-vm-3"), Some(3));
        assert_eq!(vm_slot_of("agentbox-qemu-test-3"), None);
        assert_eq!(vm_slot_of("agentbox-123-456"), None);
        assert_eq!(supervisor_of("agentbox-123"), None);
        assert_eq!(supervisor_of("agentbox-test-1"), None);
        assert_eq!(supervisor_of("agentbox-1-2-3"), None);
        assert_eq!(supervisor_of("user.slice"), None);
    }
}
