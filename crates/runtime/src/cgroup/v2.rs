//! cgroup v2: one leaf under the unified root. Knows the v2 file names and enables controllers in
//! the root's `cgroup.subtree_control` (the only write outside the sandbox's own leaf).

use std::path::Path;

use super::{
    cpu_quota_us, read_keyed, read_number, write_file, CgroupError, CgroupEvents, CgroupFs,
    CgroupLimits, Features, Write, CPU_PERIOD_US,
};

pub(super) fn probe(leaf: &Path) -> Features {
    Features {
        swap_accounting: leaf.join("memory.swap.max").exists(),
        oom_group: leaf.join("memory.oom.group").exists(),
    }
}

/// Controllers the leaf needs: memory and pids always, cpu only for a CPU limit.
fn needed(limits: &CgroupLimits) -> Vec<&'static str> {
    let mut needed = vec!["memory", "pids"];
    if limits.cpu_millis.is_some() {
        needed.push("cpu");
    }
    needed
}

/// Fails closed when `root` does not offer a needed controller, then writes `+c` to the root's
/// `cgroup.subtree_control` for each needed controller not yet enabled (nothing when all are).
/// Controllers are left enabled afterwards: other leaves may rely on them. On a root that holds
/// processes itself (a container's namespace root) the kernel refuses with EBUSY, reported as a
/// write error naming the file.
pub(super) fn enable_controllers(
    fs: &dyn CgroupFs,
    root: &Path,
    limits: &CgroupLimits,
) -> Result<(), CgroupError> {
    let read = |file: &str| {
        let path = root.join(file);
        std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
    };
    let offered = read("cgroup.controllers")?;
    let enabled = read("cgroup.subtree_control")?;
    let needed = needed(limits);
    if let Some(controller) = needed
        .iter()
        .find(|c| !offered.split_whitespace().any(|o| o == **c))
    {
        return Err(CgroupError::ControllerUnavailable {
            controller,
            root: root.to_path_buf(),
        });
    }
    let missing: Vec<String> = needed
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(fs, &root.join("cgroup.subtree_control"), &missing.join(" "))
}

/// The writes for the v2 leaf. `memory.swap.max` 0 forbids swap when swap is accounted; without
/// swap accounting v2 has no per-cgroup way to forbid it (reported by `Features`).
pub(super) fn plan(leaf: &Path, limits: &CgroupLimits, features: &Features) -> Vec<Write> {
    let mut writes = vec![Write::new(leaf, "memory.max", limits.memory)];
    if features.swap_accounting {
        writes.push(Write::new(leaf, "memory.swap.max", 0));
    }
    if features.oom_group {
        writes.push(Write::new(leaf, "memory.oom.group", 1));
    }
    writes.push(Write::new(leaf, "pids.max", limits.pids));
    if let Some(millis) = limits.cpu_millis {
        writes.push(Write::new(
            leaf,
            "cpu.max",
            format!("{} {CPU_PERIOD_US}", cpu_quota_us(millis)),
        ));
    }
    writes
}

/// `memory.events` and `pids.events` are flat-keyed (`oom_kill N`, `max N`); `memory.peak` is
/// Linux 5.19+.
pub(super) fn events(leaf: &Path) -> CgroupEvents {
    CgroupEvents {
        oom_kills: read_keyed(&leaf.join("memory.events"), "oom_kill"),
        pids_limit_hits: read_keyed(&leaf.join("pids.events"), "max"),
        memory_peak: read_number(&leaf.join("memory.peak")),
    }
}
