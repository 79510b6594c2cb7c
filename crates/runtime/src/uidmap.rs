//! Host uid ranges for sandboxes. Each running sandbox holds a slot: a range of 65536 host uids
//! (and gids) that its user namespace maps to 0-65535 inside, so two sandboxes never share a host
//! uid. A slot is a file under /run/agentbox/slots holding the owner's pid; a slot whose owner is
//! dead is taken over.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::RunError;

const SLOTS_DIR: &str = "/run/agentbox/slots";
pub const SLOT_COUNT: u32 = 4096;
/// First host uid handed to sandboxes: far above any distribution's regular or subordinate ids.
pub const UID_BASE: u32 = 0x1000_0000;
/// Ids mapped per sandbox.
pub const RANGE: u32 = 65536;

/// A held uid range; released when dropped.
pub struct Slot {
    path: PathBuf,
    pub base: u32,
}

impl Slot {
    /// The slot's number (0-4095): its uid range, and its /30 in open network mode.
    pub fn index(&self) -> u32 {
        (self.base - UID_BASE) / RANGE
    }

    pub fn acquire() -> Result<Slot, RunError> {
        Slot::acquire_in(Path::new(SLOTS_DIR))
    }

    fn acquire_in(dir: &Path) -> Result<Slot, RunError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RunError::setup(format!("mkdir {}", dir.display()), e))?;
        let pid = std::process::id();
        let start = pid % SLOT_COUNT;
        for i in 0..SLOT_COUNT {
            let n = (start + i) % SLOT_COUNT;
            let path = dir.join(n.to_string());
            for _attempt in 0..2 {
                match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(mut f) => {
                        f.write_all(pid.to_string().as_bytes())
                            .map_err(|e| RunError::setup("write uid slot", e))?;
                        return Ok(Slot {
                            path,
                            base: UID_BASE + n * RANGE,
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        // A dead owner's range may still have processes (an engine's container
                        // outliving its killed supervisor): not reused until `gc` ends them.
                        let free = |path: &Path| {
                            !owner_alive(path)
                                && processes_in_range(UID_BASE + n * RANGE).is_empty()
                        };
                        if !free(&path) || !remove_if(dir, &path, free)? {
                            break;
                        }
                    }
                    Err(e) => return Err(RunError::setup("create uid slot", e)),
                }
            }
        }
        Err(RunError::setup(
            "uid slot",
            format!("all {SLOT_COUNT} uid ranges are in use"),
        ))
    }
}

/// Removes the slot file `path` if `still` holds for it, under the lock of [`with_takeover_lock`];
/// returns whether it did.
fn remove_if(dir: &Path, path: &Path, still: impl Fn(&Path) -> bool) -> Result<bool, RunError> {
    with_takeover_lock(dir, || still(path) && std::fs::remove_file(path).is_ok())
}

/// Runs `f` under a lock shared by everyone who removes slot files of `dir` (a taker of a dead
/// owner's slot, `gc`). Without it two processes could both find a slot's owner dead, and the
/// second remove the file the first had just created in its place (two sandboxes on one uid
/// range), or `gc` end the processes of a sandbox that had just taken the slot over.
fn with_takeover_lock<R>(dir: &Path, f: impl FnOnce() -> R) -> Result<R, RunError> {
    let lock_path = dir.with_extension("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| RunError::setup(format!("open {}", lock_path.display()), e))?;
    lock.lock()
        .map_err(|e| RunError::setup(format!("lock {}", lock_path.display()), e))?;
    Ok(f())
}

/// Frees the slots whose owner is dead; returns how many. For each, `reclaim` gets the slot's
/// first uid to remove what an engine keeps under the slot's name; then every process still
/// running with an id of the range is killed, and the slot is freed only once none is left.
pub fn free_stale_slots(reclaim: &dyn Fn(u32)) -> usize {
    let Ok(entries) = std::fs::read_dir(SLOTS_DIR) else {
        return 0;
    };
    let mut freed = 0;
    for entry in entries.flatten() {
        let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&n| n < SLOT_COUNT)
        else {
            continue;
        };
        if owner_alive(&entry.path()) {
            continue;
        }
        let base = UID_BASE + n * RANGE;
        let path = entry.path();
        // Checked again under the lock: a run may have taken the slot over meanwhile.
        let removed = with_takeover_lock(Path::new(SLOTS_DIR), || {
            if owner_alive(&path) {
                return false;
            }
            reclaim(base);
            kill_range(base) && std::fs::remove_file(&path).is_ok()
        });
        if removed.unwrap_or(false) {
            freed += 1;
        }
    }
    freed
}

/// SIGKILLs every process with an id of the range at `base` until none is left (at most ~1 s);
/// returns whether none is.
fn kill_range(base: u32) -> bool {
    for _ in 0..200 {
        let pids = processes_in_range(base);
        if pids.is_empty() {
            return true;
        }
        for pid in pids {
            let _ = agentbox_sys::process::kill(pid, agentbox_sys::signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    processes_in_range(base).is_empty()
}

/// Live processes (zombies, which can do nothing, left out) whose real, effective, saved or
/// file-system uid is in the range at `base`.
pub fn processes_in_range(base: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|status| uids_in_range(&status, base))
        })
        .collect()
}

fn uids_in_range(status: &str, base: u32) -> bool {
    let zombie = status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .is_some_and(|s| s.trim_start().starts_with('Z'));
    !zombie
        && status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|ids| {
                ids.split_whitespace()
                    .filter_map(|id| id.parse::<u32>().ok())
                    .any(|id| (base..base.saturating_add(RANGE)).contains(&id))
            })
}

/// Whether slot `index` is held by a live process.
pub fn slot_held(index: u32) -> bool {
    let path = PathBuf::from(format!("{SLOTS_DIR}/{index}"));
    path.exists() && owner_alive(&path)
}

fn owner_alive(path: &std::path::Path) -> bool {
    match std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        // Any process with that pid, a kernel thread that recycled a dead owner's pid included:
        // a slot wrongly held is only wasted, one wrongly freed would be shared by two sandboxes
        // (reading /proc/PID/exe instead fails for a live owner that a reader may not trace).
        Some(pid) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
        // Being written right now, or unreadable: treat as held.
        None => true,
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Maps uids and gids 0-65535 of the user namespace of `pid` onto `base`.. on the host.
pub fn write_maps(pid: i32, base: u32) -> Result<(), RunError> {
    let line = format!("0 {base} {RANGE}\n");
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{file}"), &line)
            .map_err(|e| RunError::setup(format!("write {file}"), e))?;
    }
    Ok(())
}

/// A user namespace with the slot's mapping (`0 base RANGE`), made without a sandbox in it: the
/// engine tiers' containers get that mapping from their runtime, and binds and images are
/// idmapped through this one so that they show the same owners inside.
pub fn slot_userns(base: u32) -> Result<std::os::fd::OwnedFd, RunError> {
    parked_userns(
        &format!("0 {base} {RANGE}\n"),
        &format!("0 {base} {RANGE}\n"),
    )
}

/// A user namespace mapping only the host ids `owner` (uid, gid) to `writer` (uid, gid), for
/// idmapping a read-write bind: the sandbox's writer then owns the files of the directory's owner
/// and everything it creates there belongs to that owner on the host, like any other file of the
/// project. Files of other owners show as nobody. The namespace is made by a short-lived child
/// that is parked on a pipe while its maps are written, then released.
pub fn owner_userns(
    owner: (u32, u32),
    writer: (u32, u32),
) -> Result<std::os::fd::OwnedFd, RunError> {
    parked_userns(
        &format!("{} {} 1\n", owner.0, writer.0),
        &format!("{} {} 1\n", owner.1, writer.1),
    )
}

/// A user namespace with these maps, made by a short-lived child parked on a pipe while its maps
/// are written, then released.
fn parked_userns(uid_map: &str, gid_map: &str) -> Result<std::os::fd::OwnedFd, RunError> {
    use agentbox_sys::process::{self, ns, Fork};
    let (park, release) = agentbox_sys::fd::pipe().map_err(|e| RunError::setup("pipe", e))?;
    match process::fork_with_namespaces(ns::USER)
        .map_err(|e| RunError::setup("clone idmap namespace", e))?
    {
        Fork::Child => {
            drop(release);
            let mut byte = [0u8; 1];
            let _ = std::io::Read::read(&mut std::fs::File::from(park), &mut byte);
            process::exit_now(0)
        }
        Fork::Parent(pid) => {
            drop(park);
            let result = (|| {
                std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
                std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
                std::fs::File::open(format!("/proc/{pid}/ns/user"))
            })();
            drop(release);
            let _ = process::wait(pid, false);
            Ok(result
                .map_err(|e| RunError::setup("idmap namespace", e))?
                .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_owners_slot_is_taken_over_by_one_process_only() {
        let dir = tempfile::tempdir().unwrap();
        let slots = dir.path().join("slots");
        // The slot every thread tries first (all share this process's pid) has a dead owner.
        let first = std::process::id() % SLOT_COUNT;
        std::fs::create_dir(&slots).unwrap();
        std::fs::write(slots.join(first.to_string()), "999999999").unwrap();
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let takers: Vec<_> = (0..8)
            .map(|_| {
                let (start, slots) = (start.clone(), slots.clone());
                std::thread::spawn(move || {
                    start.wait();
                    Slot::acquire_in(&slots).unwrap()
                })
            })
            .collect();
        let held: Vec<Slot> = takers.into_iter().map(|t| t.join().unwrap()).collect();
        let mut bases: Vec<u32> = held.iter().map(|s| s.base).collect();
        bases.sort_unstable();
        bases.dedup();
        assert_eq!(bases.len(), 8, "two takers share a range: {bases:?}");
        for slot in &held {
            assert!(
                slot.path.exists(),
                "{} was removed under its holder",
                slot.path.display()
            );
        }
    }

    #[test]
    fn a_live_process_owns_a_slot_and_a_slot_being_written_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("7");
        std::fs::write(&slot, std::process::id().to_string()).unwrap();
        assert!(owner_alive(&slot));
        std::fs::write(&slot, "999999999").unwrap();
        assert!(!owner_alive(&slot));
        std::fs::write(&slot, "").unwrap();
        assert!(owner_alive(&slot), "a slot being written is held");
    }

    #[test]
    fn any_of_the_four_uids_puts_a_process_in_a_range() {
        let base = UID_BASE + 3 * RANGE;
        let status = |ids: &str| format!("Name:\tx\nUid:\t{ids}\nGid:\t0\t0\t0\t0\n");
        assert!(uids_in_range(&status(&format!("0\t{base}\t0\t0")), base));
        assert!(uids_in_range(
            &status(&format!("0\t0\t0\t{}", base + RANGE - 1)),
            base
        ));
        assert!(!uids_in_range(
            &status(&format!("{}\t0\t0\t0", base + RANGE)),
            base
        ));
        assert!(!uids_in_range(
            &status(&format!("{}\t0\t0\t0", base - 1)),
            base
        ));
        assert!(!uids_in_range("garbage", base));
        let zombie = format!("State:\tZ (zombie)\nUid:\t{base}\t{base}\t{base}\t{base}\n");
        assert!(!uids_in_range(&zombie, base));
    }
}
