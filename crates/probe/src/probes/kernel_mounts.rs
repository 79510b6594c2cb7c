//! Probes of mounting what exposes the kernel: new procfs, sysfs and cgroup mounts, the host's
//! block device, and the cgroup v1 release_agent. Mounts are made under the scratch directory and
//! detached at once (a block device only read-only); release_agent is opened write-only and
//! closed without a byte written.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use agentbox_sys::attempt_kernel;
use agentbox_sys::mount;
use agentbox_sys::process;

use super::kernel::{
    errno_name, io_errno, masked, mountinfo, namespace, open_for_writing, private_mount_namespace,
    refusal, scratch_path, sys_refusal, MountPoint, SAFE_FLAGS,
};
use super::kernel_env::{
    cap, cgroup2_root_flag_options, errno, fstype_of_magic, is_block_fstype, partition_name,
    refused_open_by, split_dev, MountEntry, INIT_CGROUP_NS,
};
use crate::{Context, Outcome, Verdict};

/// The cgroup v1 mounts tried, in order: a new named hierarchy with no controller (allowed to
/// the root of a user namespace, but only from the initial cgroup namespace), then single
/// controllers (which reuse the host's hierarchy when it is bound already).
const V1_OPTIONS: [&str; 4] = ["none,name=agentboxprobe", "rdma", "memory", "pids"];

pub(super) fn not_applicable(
    id: &str,
    attempted: impl Into<String>,
    why: impl Into<String>,
) -> Outcome {
    Outcome::new(id, Verdict::NotApplicable, attempted).observed(why)
}

/// A few names from a directory, for evidence.
fn some_names(dir: &Path) -> String {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let n = names.len();
            names.truncate(12);
            format!("{n} entries: {}", names.join(" "))
        }
        Err(e) => format!("cannot list: {e}"),
    }
}

/// Mounts a new `fstype` under scratch; escaped if the kernel lets it.
fn fresh_mount_probe(
    context: &Context,
    id: &str,
    fstype: &str,
    seen: fn(&Path) -> String,
) -> Outcome {
    let ns = private_mount_namespace(context);
    let mut point = match MountPoint::create(context, fstype) {
        Ok(p) => p,
        Err(why) => return not_applicable(id, format!("mount {fstype}"), why),
    };
    let attempted = format!(
        "mount(\"{fstype}\", \"{}\", \"{fstype}\", MS_NOSUID|MS_NODEV|MS_NOEXEC)",
        point.path().display()
    );
    match point.mount(Path::new(fstype), fstype, SAFE_FLAGS, "") {
        Ok(()) => {
            let evidence = seen(point.path());
            let unmounted = match point.unmount() {
                Ok(()) => "detached again".to_string(),
                Err(e) => format!("detaching failed: {e}"),
            };
            Outcome::new(id, Verdict::Escaped, attempted)
                .observed(format!("mounted a new {fstype} {ns}; {unmounted}"))
                .evidence(evidence)
        }
        Err(e) => sys_refusal(id, attempted, &e, Some(cap::SYS_ADMIN), ns),
    }
}

pub(super) fn mount_proc(context: &Context) -> Outcome {
    fresh_mount_probe(context, "mount_proc", "proc", |dir| {
        let pids = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                    .count()
            })
            .unwrap_or(0);
        format!("{pids} processes visible in the new procfs")
    })
}

pub(super) fn mount_sysfs(context: &Context) -> Outcome {
    fresh_mount_probe(context, "mount_sysfs", "sysfs", |dir| {
        format!("class/net: {}", some_names(&dir.join("class/net")))
    })
}

/// One mount attempt's label and errno (0: it worked).
type Tried = (String, i32);

/// The outcome of a list of mount attempts: escaped if one worked, blocked if one was refused,
/// not applicable if the kernel has none of them.
fn judge_mounts(id: &str, attempted: String, tried: &[Tried], note: &str) -> Outcome {
    let summary: Vec<String> = tried
        .iter()
        .map(|(what, e)| match e {
            0 => format!("{what}: mounted"),
            e => format!("{what}: {}", errno_name(*e)),
        })
        .collect();
    let summary = summary.join("; ");
    if tried.iter().any(|(_, e)| *e == 0) {
        return Outcome::new(id, Verdict::Escaped, attempted)
            .observed(format!("{summary}; each detached at once; {note}"));
    }
    let refused = tried
        .iter()
        .find(|(_, e)| matches!(*e, errno::EPERM | errno::EACCES | errno::ENOSYS));
    match refused {
        Some((_, e)) => refusal(
            id,
            attempted,
            *e,
            Some(cap::SYS_ADMIN),
            &format!("{summary}; {note}"),
        ),
        None => not_applicable(
            id,
            attempted,
            format!("no cgroup hierarchy of these kinds exists here ({summary}); {note}"),
        ),
    }
}

/// Tries the cgroup v1 options in order at `point`; the first that mounts is left mounted.
fn mount_v1(point: &mut MountPoint, tried: &mut Vec<Tried>) -> Option<&'static str> {
    for opt in V1_OPTIONS {
        match point.mount(Path::new("cgroup"), "cgroup", SAFE_FLAGS, opt) {
            Ok(()) => {
                tried.push((format!("cgroup -o {opt}"), 0));
                return Some(opt);
            }
            Err(e) => tried.push((format!("cgroup -o {opt}"), e.errno())),
        }
    }
    None
}

/// How cgroup2 can be mounted without changing the host: a cgroup2 mount made from the initial
/// cgroup namespace resets the root flags of the whole host's cgroup2 tree to the options it is
/// given. `None` (with the reason) when no safe way is known.
fn cgroup2_safe_options() -> Result<(String, &'static str), String> {
    if process::unshare(process::ns::CGROUP).is_ok() {
        return Ok((String::new(), "from a new cgroup namespace"));
    }
    match namespace("cgroup") {
        Some(ns) if ns != INIT_CGROUP_NS => {
            return Ok((String::new(), "outside the initial cgroup namespace"))
        }
        None => {
            return Err("cgroup namespace unknown (no /proc): a cgroup2 mount could reset the host's cgroup2 root flags".into())
        }
        Some(_) => {}
    }
    let entries = mountinfo().unwrap_or_default();
    match entries.iter().rev().find(|e| e.fstype == "cgroup2") {
        Some(e) => Ok((
            cgroup2_root_flag_options(&e.super_options),
            "with the host's current cgroup2 root flags",
        )),
        None => Err("in the initial cgroup namespace with the host's cgroup2 root flags unknown: a mount would reset them host-wide".into()),
    }
}

pub(super) fn mount_cgroup(context: &Context) -> Outcome {
    let id = "mount_cgroup";
    let ns = private_mount_namespace(context);
    let mut point = match MountPoint::create(context, "cgroup") {
        Ok(p) => p,
        Err(why) => return not_applicable(id, "mount cgroup", why),
    };
    let attempted = format!(
        "mount(\"cgroup\", \"{}\", \"cgroup\", nosuid|nodev|noexec, {}), then cgroup2",
        point.path().display(),
        V1_OPTIONS.join(" | ")
    );
    let mut tried = Vec::new();
    if mount_v1(&mut point, &mut tried).is_some() {
        let _ = point.unmount();
    }
    let mut note = ns.to_string();
    match cgroup2_safe_options() {
        Ok((options, how)) => {
            match point.mount(Path::new("cgroup2"), "cgroup2", SAFE_FLAGS, &options) {
                Ok(()) => {
                    let _ = point.unmount();
                    tried.push((format!("cgroup2 {how}"), 0));
                }
                Err(e) => tried.push((format!("cgroup2 {how}"), e.errno())),
            }
        }
        Err(why) => note = format!("{note}; cgroup2 not tried: {why}"),
    }
    judge_mounts(id, attempted, &tried, &note)
}

pub(super) fn release_agent(context: &Context) -> Outcome {
    let id = "release_agent";
    let mut writable: Vec<String> = Vec::new();
    // What did not open for writing: the file, its errno (0 when it opened but is a mask), why.
    let mut refused: Vec<(String, i32, String)> = Vec::new();
    // Records the file as writable or refused; true if writable.
    let mut try_file = |file: &Path, label: String| -> bool {
        match open_for_writing(file) {
            Ok(meta) => match masked(&meta) {
                None => {
                    writable.push(label);
                    return true;
                }
                Some(why) => refused.push((label, 0, why)),
            },
            Err(e) if io_errno(&e) == errno::ENOENT => refused.push((
                label,
                errno::ENOENT,
                "absent: the mount shows a cgroup namespace's root, not the hierarchy's root, where alone release_agent exists".into(),
            )),
            Err(e) => refused.push((label, io_errno(&e), refused_open_by(io_errno(&e)))),
        }
        false
    };
    // Hierarchies the sandbox already shows.
    let mut visible: Vec<PathBuf> = vec![PathBuf::from("/sys/fs/cgroup/release_agent")];
    if let Ok(dir) = std::fs::read_dir("/sys/fs/cgroup") {
        visible.extend(dir.flatten().map(|e| e.path().join("release_agent")));
    }
    for file in visible.iter().filter(|f| f.exists()) {
        let _ = try_file(file, file.display().to_string());
    }
    // A hierarchy mounted afresh.
    let ns = private_mount_namespace(context);
    let mut tried = Vec::new();
    let point = MountPoint::create(context, "release-agent");
    let attempted = format!(
        "open(release_agent, O_WRONLY) without writing, in /sys/fs/cgroup/* and in a cgroup v1 mount under scratch (-o {})",
        V1_OPTIONS.join(" | ")
    );
    // Every option until one gives a writable file: in a cgroup namespace the mount shows the
    // namespace's root, which is the hierarchy's root (where release_agent lives) only for a
    // hierarchy whose cgroups the sandbox was not placed in (rdma, in CVE-2022-0492).
    if let Ok(mut point) = point {
        for opt in V1_OPTIONS {
            let label = format!("cgroup -o {opt}");
            match point.mount(Path::new("cgroup"), "cgroup", SAFE_FLAGS, opt) {
                Ok(()) => {
                    tried.push((label, 0));
                    let file = point.path().join("release_agent");
                    let opened = try_file(&file, format!("release_agent of a new -o {opt} mount"));
                    let _ = point.unmount();
                    if opened {
                        break;
                    }
                }
                Err(e) => tried.push((label, e.errno())),
            }
        }
    }
    let mounts: Vec<String> = tried
        .iter()
        .map(|(what, e)| {
            format!(
                "{what}: {}",
                if *e == 0 {
                    "mounted".into()
                } else {
                    errno_name(*e)
                }
            )
        })
        .collect();
    let mounts = format!("mounts {ns}: {}", mounts.join("; "));
    if !writable.is_empty() {
        let caveat = if super::kernel::in_init_user_ns() == Some(false) {
            "; outside the initial user namespace the kernel (5.17+) still refuses the write itself"
        } else {
            ""
        };
        return Outcome::new(id, Verdict::Escaped, attempted)
            .observed(format!(
                "release_agent opens for writing (nothing written){caveat}; {mounts}"
            ))
            .evidence(writable.join(", "));
    }
    // The fresh mount's file comes last: its errno is the one that decides.
    if let Some((_, e, _)) = refused.last() {
        let errno = (*e != 0).then(|| errno_name(*e));
        // Files refused alike are named once: "9 files (/sys/fs/cgroup/cpu/release_agent, ...)".
        let mut groups: Vec<(i32, &str, Vec<&str>)> = Vec::new();
        for (what, e, why) in &refused {
            match groups.iter_mut().find(|(ge, gw, _)| ge == e && gw == why) {
                Some(group) => group.2.push(what),
                None => groups.push((*e, why, vec![what])),
            }
        }
        let each: Vec<String> = groups
            .iter()
            .map(|(e, why, whats)| {
                let what = match whats[..] {
                    [one] => one.to_string(),
                    [first, ..] => format!("{} files ({first}, ...)", whats.len()),
                    [] => String::new(),
                };
                match e {
                    0 => format!("{what}: {why}"),
                    e => format!("{what}: {}, {why}", errno_name(*e)),
                }
            })
            .collect();
        return Outcome::new(id, Verdict::Blocked, attempted)
            .errno(errno)
            .observed(format!("not writable: {}; {mounts}", each.join("; ")));
    }
    let failed = tried.iter().find(|(_, e)| *e != 0).map(|(_, e)| *e);
    match failed {
        Some(e) if matches!(e, errno::EPERM | errno::EACCES | errno::ENOSYS) => refusal(
            id,
            attempted,
            e,
            Some(cap::SYS_ADMIN),
            &format!("no v1 hierarchy visible; {mounts}"),
        ),
        _ => not_applicable(
            id,
            attempted,
            format!("no cgroup v1 here: none visible and none mountable; {mounts}"),
        ),
    }
}

/// A block device holding a filesystem the sandbox can see, and a directory on it held open, so
/// its superblock stays alive while the probe mounts it.
struct LiveDevice {
    entry: MountEntry,
    _pin: File,
}

/// The first mounted filesystem on a block device whose mount point this process can open and
/// finds on that very device (preferring the one at `/`); failing that, the filesystem of `/`
/// itself, which a chrooted process does not see in its mountinfo.
fn live_device(entries: &[MountEntry]) -> Option<LiveDevice> {
    let mut candidates: Vec<&MountEntry> = entries
        .iter()
        .filter(|e| e.major != 0 && is_block_fstype(&e.fstype))
        .collect();
    candidates.sort_by_key(|e| e.mount_point != "/");
    let seen = candidates.into_iter().find_map(|e| {
        let pin = File::open(&e.mount_point).ok()?;
        let dev = pin.metadata().ok()?.dev();
        (split_dev(dev) == (e.major, e.minor)).then(|| LiveDevice {
            entry: e.clone(),
            _pin: pin,
        })
    });
    seen.or_else(root_device)
}

/// The block device and filesystem of `/`, from stat and statfs.
fn root_device() -> Option<LiveDevice> {
    let pin = File::open("/").ok()?;
    let (major, minor) = split_dev(pin.metadata().ok()?.dev());
    let magic = attempt_kernel::filesystem_magic(Path::new("/")).ok()?;
    let fstype = fstype_of_magic(magic)?;
    if major == 0 {
        return None;
    }
    let partitions = std::fs::read_to_string("/proc/partitions").unwrap_or_default();
    let source = partition_name(&partitions, major, minor)
        .map_or_else(|| format!("{major}:{minor}"), |n| format!("/dev/{n}"));
    Some(LiveDevice {
        entry: MountEntry {
            major,
            minor,
            root: "/".into(),
            mount_point: "/".into(),
            options: Vec::new(),
            fstype: fstype.into(),
            source,
            super_options: Vec::new(),
        },
        _pin: pin,
    })
}

/// An existing block device node for `major:minor`, if the sandbox has one.
fn existing_node(entry: &MountEntry) -> Option<PathBuf> {
    let want = (entry.major, entry.minor);
    [
        PathBuf::from(&entry.source),
        PathBuf::from(format!("/dev/block/{}:{}", entry.major, entry.minor)),
    ]
    .into_iter()
    .find(|p| {
        std::fs::metadata(p)
            .is_ok_and(|m| m.file_type().is_block_device() && split_dev(m.rdev()) == want)
    })
}

pub(super) fn mount_blockdev(context: &Context) -> Outcome {
    let id = "mount_blockdev";
    let entries = mountinfo().unwrap_or_default();
    let Some(device) = live_device(&entries) else {
        let disks = std::fs::read_to_string("/proc/partitions").unwrap_or_default();
        return not_applicable(
            id,
            "mount a block device",
            "no filesystem on a block device is visible; unmounted disks are not mounted (even a read-only mount may replay a journal)",
        )
        .evidence(disks);
    };
    let e = &device.entry;
    let ns = private_mount_namespace(context);
    // A device node: the sandbox's own, or one made under scratch.
    let mut made: Option<PathBuf> = None;
    let node = match existing_node(e) {
        Some(p) => p,
        None => {
            let path = match scratch_path(context, "blk") {
                Ok(p) => p,
                Err(why) => return not_applicable(id, "mknod a block device", why),
            };
            let attempted = format!(
                "mknod(\"{}\", S_IFBLK, {}:{})",
                path.display(),
                e.major,
                e.minor
            );
            if let Err(err) = attempt_kernel::mknod_block(&path, e.major, e.minor) {
                let note = format!(
                    "no node for {}:{} ({}, {}) in the sandbox",
                    e.major, e.minor, e.source, e.fstype
                );
                return sys_refusal(id, attempted, &err, Some(cap::MKNOD), &note);
            }
            made = Some(path.clone());
            path
        }
    };
    let outcome = mount_device(context, e, &node, ns);
    if let Some(path) = made {
        let _ = std::fs::remove_file(path);
    }
    outcome
}

fn mount_device(context: &Context, e: &MountEntry, node: &Path, ns: &str) -> Outcome {
    let id = "mount_blockdev";
    let mut point = match MountPoint::create(context, "blockdev") {
        Ok(p) => p,
        Err(why) => return not_applicable(id, "mount a block device", why),
    };
    let flags = mount::MS_RDONLY | SAFE_FLAGS;
    let attempted = format!(
        "mount(\"{}\" ({}:{}, {} at {}), \"{}\", \"{}\", MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC)",
        node.display(),
        e.major,
        e.minor,
        e.source,
        e.mount_point,
        point.path().display(),
        e.fstype
    );
    match point.mount(node, &e.fstype, flags, "") {
        Ok(()) => {
            let seen = some_names(point.path());
            let _ = point.unmount();
            Outcome::new(id, Verdict::Escaped, attempted)
                .observed(format!("mounted the device read-only {ns}; detached again"))
                .evidence(seen)
        }
        // The kernel will not give a read-only mount(2) the superblock of a filesystem mounted
        // read-write, but by then the capability, device-cgroup and device-open checks have passed.
        // A read-write context reuses that live superblock as it is (the device is pinned by
        // `LiveDevice`), and fsmount makes a read-only, detached mount of it.
        Err(err) if err.errno() == errno::EBUSY => {
            let attempted = format!("{attempted}; on EBUSY fsopen/fsconfig/fsmount(MOUNT_ATTR_RDONLY) of the live superblock");
            match attempt_kernel::mount_live_superblock_readonly(&e.fstype, node) {
                Ok(fd) => {
                    let seen = some_names(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())));
                    drop(fd);
                    Outcome::new(id, Verdict::Escaped, attempted)
                        .observed(format!(
                            "mount(2) read-only got EBUSY (the filesystem is mounted read-write already); a detached read-only mount of it was made {ns} and dropped"
                        ))
                        .evidence(seen)
                }
                Err(err2) => sys_refusal(
                    id,
                    attempted,
                    &err2,
                    Some(cap::SYS_ADMIN),
                    "mount(2) got EBUSY first",
                ),
            }
        }
        Err(err) => sys_refusal(id, attempted, &err, Some(cap::SYS_ADMIN), ns),
    }
}
