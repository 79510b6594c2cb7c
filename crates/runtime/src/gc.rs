//! Reclaiming what a supervisor that died (`kill -9`) could not clean up: its cgroup leaves (and
//! any process still in them) and its uid slot. The sandbox itself is already gone: its init died
//! of the parent-death signal and took the namespaces with it.

use std::path::{Path, PathBuf};

use agentbox_policy::Tier;
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
    /// Engine containers (runc, crun, runsc, Docker) of uid slots nobody holds.
    pub containers: Vec<String>,
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
    // Dead supervisors' cgroups first: an engine left running in one (nspawn) holds processes
    // of a uid range that is freed below only once none is left.
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
    reclaimed.containers = orphan_containers();
    for name in &reclaimed.containers {
        if let Some(base) = slot_base_of(name) {
            reclaim_engines(base);
        }
    }
    reclaimed.slots = crate::uidmap::free_stale_slots(&reclaim_engines);
    // The OCI containers' shared cgroup parent, which runs leave in place, once none is in it.
    reclaimed
        .cgroups
        .extend(agentbox_oci::cgroups::remove_unused_parents());
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
    Ok(reclaimed)
}

/// Removes what an engine tier keeps for the container of a dead slot (its name is the slot's:
/// `engine::container_name`): a runc/crun/runsc container killed with its state and cgroups, a
/// Docker container. A one-shot run's engine child does that itself when its supervisor dies;
/// this covers both being killed at once (`kill -9` of the process group).
pub(crate) fn reclaim_engines(base: u32) {
    let name = crate::engine::container_name(base);
    let dir = Path::new(crate::engine::ENGINE_DIR).join(&name);
    let had_engine_dir = dir.exists();
    for tier in [Tier::Oci, Tier::Gvisor] {
        let _ = crate::engine::destroy(tier, &name);
    }
    // Only where agentbox ran a container under that name: asking a daemon costs a connection.
    if had_engine_dir && agentbox_docker::endpoint().is_ok() {
        let _ = crate::engine::destroy(Tier::Docker, &name);
    }
}

/// Names of engine containers (their agentbox directory, or a runtime's state) whose uid slot
/// nobody holds.
fn orphan_containers() -> Vec<String> {
    let mut dirs = vec![PathBuf::from(crate::engine::ENGINE_DIR)];
    dirs.extend(
        [
            agentbox_oci::Runtime::Crun,
            agentbox_oci::Runtime::Runc,
            agentbox_oci::Runtime::Runsc {
                platform: String::new(),
            },
        ]
        .iter()
        .map(agentbox_oci::run::runtime_root),
    );
    let mut names: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|d| d.flatten())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            // runsc's state files are `<id>_sandbox:<id>.state` and the like.
            Some(name.split('_').next()?.to_string())
        })
        .filter(|name| {
            slot_base_of(name).is_some_and(|base| {
                !crate::uidmap::slot_held((base - crate::uidmap::UID_BASE) / crate::uidmap::RANGE)
            })
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The first uid of the slot a container name stands for (`engine::container_name`).
fn slot_base_of(name: &str) -> Option<u32> {
    let base = u32::from_str_radix(name.strip_prefix("agentbox-")?, 16).ok()?;
    let valid = base >= crate::uidmap::UID_BASE
        && (base - crate::uidmap::UID_BASE).is_multiple_of(crate::uidmap::RANGE)
        && (base - crate::uidmap::UID_BASE) / crate::uidmap::RANGE < crate::uidmap::SLOT_COUNT;
    valid.then_some(base)
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

    #[test]
    fn container_names_stand_for_slot_bases() {
        let base = crate::uidmap::UID_BASE + 7 * crate::uidmap::RANGE;
        assert_eq!(
            slot_base_of(&crate::engine::container_name(base)),
            Some(base)
        );
        assert_eq!(slot_base_of("agentbox-10000001"), None);
        assert_eq!(slot_base_of("agentbox-ffff0000"), None);
        assert_eq!(slot_base_of("agentbox-exp"), None);
        assert_eq!(slot_base_of("raw-crun"), None);
    }
}
