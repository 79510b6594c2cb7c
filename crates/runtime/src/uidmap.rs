//! Host uid ranges for sandboxes. Each running sandbox holds a slot: a range of 65536 host uids
//! (and gids) that its user namespace maps to 0-65535 inside, so two sandboxes never share a host
//! uid. A slot is a file under /run/agentbox/slots holding the owner's pid; a slot whose owner is
//! dead is taken over.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use crate::RunError;

const SLOTS_DIR: &str = "/run/agentbox/slots";
const SLOT_COUNT: u32 = 4096;
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
        std::fs::create_dir_all(SLOTS_DIR)
            .map_err(|e| RunError::setup(format!("mkdir {SLOTS_DIR}"), e))?;
        let pid = std::process::id();
        let start = pid % SLOT_COUNT;
        for i in 0..SLOT_COUNT {
            let n = (start + i) % SLOT_COUNT;
            let path = PathBuf::from(format!("{SLOTS_DIR}/{n}"));
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
                        if owner_alive(&path) {
                            break;
                        }
                        let _ = std::fs::remove_file(&path);
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

/// Removes the slot files whose owner is dead; returns how many.
pub fn free_stale_slots() -> usize {
    let Ok(entries) = std::fs::read_dir(SLOTS_DIR) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| !owner_alive(&e.path()) && std::fs::remove_file(e.path()).is_ok())
        .count()
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
