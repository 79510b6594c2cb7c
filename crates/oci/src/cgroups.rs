//! Where a container's cgroups live on the host, and the two things agentbox reads or does there
//! itself: whether the memory limit killed something (OOM) and removing what a runtime left. The
//! runtimes create and configure the cgroups; this module never writes a limit.

use std::path::{Path, PathBuf};

/// The cgroup mount root.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The parent of every agentbox OCI container's cgroup (relative to each hierarchy's root). It
/// stays between runs, empty and without limits, as Docker's and systemd's parents do: removing it
/// after each run, and the runtime making it again in every hierarchy at the next, cost ~0.5 ms a
/// run. `agentbox gc` removes it when no container is in it ([`remove_unused_parents`]).
pub const CGROUP_PARENT: &str = "agentbox-oci";

/// The `linux.cgroupsPath` of container `id`.
pub fn cgroups_path(id: &str) -> PathBuf {
    Path::new("/").join(CGROUP_PARENT).join(id)
}

/// Every cgroup directory named after `id` under the hierarchies (at depth 1 to 3), on v1 and v2:
/// the thorough search (tests use it to find leftovers).
pub fn container_cgroups(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir(CGROUP_ROOT) else {
        return found;
    };
    for h in hierarchies.flatten() {
        find_named(&h.path(), id, 3, &mut found);
    }
    let direct = Path::new(CGROUP_ROOT).join(CGROUP_PARENT).join(id);
    if direct.is_dir() && !found.contains(&direct) {
        found.push(direct);
    }
    found
}

fn find_named(dir: &Path, name: &str, depth: u32, out: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        if e.file_name().to_str().is_some_and(|n| n.contains(name)) {
            out.push(path);
        } else {
            find_named(&path, name, depth - 1, out);
        }
    }
}

/// Whether the kernel's OOM killer acted in container `id`'s memory cgroup (v1 `oom_kill` count
/// in memory.oom_control, v2 `oom_kill` in memory.events). Read before the runtime deletes it.
pub fn oom_killed(id: &str) -> bool {
    let v1 = Path::new(CGROUP_ROOT)
        .join("memory")
        .join(CGROUP_PARENT)
        .join(id);
    let v2 = Path::new(CGROUP_ROOT).join(CGROUP_PARENT).join(id);
    [v1.join("memory.oom_control"), v2.join("memory.events")]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .any(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
}

/// Where the runtimes put container `id`'s cgroups (its `linux.cgroupsPath`, with the cgroupfs
/// driver): `agentbox-oci/<id>` under each entry of the cgroup root (every v1 hierarchy, the
/// unified one, and a plain directory a runtime took for one) and under the root itself (v2).
/// A dozen `stat`s, where [`container_cgroups`] walks every hierarchy three levels deep.
fn placed_cgroups(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let direct = Path::new(CGROUP_ROOT).join(CGROUP_PARENT).join(id);
    if direct.is_dir() {
        found.push(direct);
    }
    if let Ok(hierarchies) = std::fs::read_dir(CGROUP_ROOT) {
        for h in hierarchies.flatten() {
            let dir = h.path().join(CGROUP_PARENT).join(id);
            if dir.is_dir() {
                found.push(dir);
            }
        }
    }
    found
}

/// Kills what is left in container `id`'s cgroups and removes them (deepest first), where the
/// runtimes put them. Returns the directories it could not remove.
pub fn remove_container_cgroups(id: &str) -> Vec<PathBuf> {
    remove_cgroups(placed_cgroups(id))
}

/// As [`remove_container_cgroups`], for a container whose cgroups may be anywhere (a runtime run
/// without agentbox's `cgroupsPath`, as the gVisor platform probe's): every directory named after
/// `id` down to depth 3.
pub fn remove_cgroups_named(id: &str) -> Vec<PathBuf> {
    remove_cgroups(container_cgroups(id))
}

fn remove_cgroups(mut dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    if dirs.is_empty() {
        // The usual end of a run: the runtime removed its cgroups itself.
        return dirs;
    }
    // Children before parents.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let mounts = cgroup_mounts();
    let mut left = Vec::new();
    for dir in dirs {
        remove_tree(&dir, &mounts);
        if dir.exists() {
            left.push(dir);
        }
    }
    left
}

/// Removes the shared parent [`CGROUP_PARENT`] from every cgroup mount where no container is in
/// it (rmdir fails then), unless a run is starting a container (it holds [`parent_lock`] shared
/// between its runtime's mkdir of the parent and of the container's own directory). Returns the
/// directories removed.
pub fn remove_unused_parents() -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Some(lock) = parent_lock() else {
        return removed;
    };
    if lock.try_lock().is_err() {
        return removed;
    }
    let mut dirs: Vec<PathBuf> = cgroup_mounts()
        .iter()
        .map(|m| m.join(CGROUP_PARENT))
        .collect();
    // Where a runtime took a plain directory for a hierarchy (see `remove_tree`).
    dirs.push(Path::new(CGROUP_ROOT).join(CGROUP_PARENT));
    for dir in dirs {
        if std::fs::remove_dir(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

/// The lock guarding the shared cgroup parent: runs hold it shared while their runtime starts
/// the container; `gc` takes it exclusively, without waiting, to remove the parent.
pub(crate) fn parent_lock() -> Option<std::fs::File> {
    let path = Path::new(crate::run::STATE_BASE).join("cgroup-parent.lock");
    let _ = std::fs::create_dir_all(crate::run::STATE_BASE);
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()
}

/// Mount points of cgroup file systems in this mount namespace.
fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split(' ').next()?;
            let point = before.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

fn remove_tree(dir: &Path, mounts: &[PathBuf]) {
    // A runtime that believes a directory is a hierarchy (crun with the unmounted cgroup2's
    // mount point, a plain directory of the /sys/fs/cgroup tmpfs) makes plain directories there.
    if !mounts.iter().any(|m| dir.starts_with(m)) {
        let _ = std::fs::remove_dir_all(dir);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path(), mounts);
            }
        }
    }
    for _ in 0..50 {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = agentbox_sys::process::kill(pid, 9);
            }
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
