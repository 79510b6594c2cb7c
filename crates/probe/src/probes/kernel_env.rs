//! Pure helpers of the kernel probes: parsing /proc/self/status, /proc/self/mountinfo and uid_map,
//! naming capabilities, decoding device numbers, and saying which layer most likely refused an
//! attempt. Nothing here touches the system; the probes pass in what they read.

use crate::Verdict;

/// errno values the kernel probes branch on (the asm-generic numbers, shared by x86_64 and
/// aarch64).
pub(super) mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const ENOEXEC: i32 = 8;
    pub const EBADF: i32 = 9;
    pub const EACCES: i32 = 13;
    pub const EFAULT: i32 = 14;
    pub const EBUSY: i32 = 16;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const ENOSYS: i32 = 38;
    pub const EUSERS: i32 = 87;
    pub const EPROTONOSUPPORT: i32 = 93;
    pub const ESOCKTNOSUPPORT: i32 = 94;
    pub const EOPNOTSUPP: i32 = 95;
    pub const EAFNOSUPPORT: i32 = 97;
}

/// The capability numbers the probes name (<linux/capability.h>).
pub(super) mod cap {
    pub const DAC_READ_SEARCH: u32 = 2;
    pub const NET_RAW: u32 = 13;
    pub const SYS_MODULE: u32 = 16;
    pub const SYS_PTRACE: u32 = 19;
    pub const SYS_ADMIN: u32 = 21;
    pub const MKNOD: u32 = 27;
    pub const BPF: u32 = 39;
    pub const PERFMON: u32 = 38;
}

const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities whose presence in the effective set counts as an escape.
pub(super) const DANGEROUS_CAPS: [u32; 10] = [21, 12, 19, 16, 2, 1, 17, 27, 18, 7];

/// The name of capability `n` (`CAP_SYS_ADMIN`), or `cap N` for one newer than this table.
pub(super) fn cap_name(n: u32) -> String {
    CAP_NAMES
        .get(n as usize)
        .map_or_else(|| format!("cap {n}"), |s| (*s).to_string())
}

/// The names of the capabilities set in `mask`, lowest first.
pub(super) fn cap_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|&n| mask & (1 << n) != 0)
        .map(cap_name)
        .collect()
}

/// The names of the dangerous capabilities set in `mask`, in the order of [`DANGEROUS_CAPS`].
pub(super) fn dangerous_caps(mask: u64) -> Vec<String> {
    DANGEROUS_CAPS
        .iter()
        .filter(|&&n| mask & (1 << n) != 0)
        .map(|&n| cap_name(n))
        .collect()
}

/// The fields of /proc/self/status the probes use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Status {
    pub cap_inh: Option<u64>,
    pub cap_prm: Option<u64>,
    pub cap_eff: Option<u64>,
    pub cap_bnd: Option<u64>,
    pub cap_amb: Option<u64>,
    pub no_new_privs: Option<bool>,
    /// 0 none, 1 strict, 2 filter.
    pub seccomp: Option<u32>,
    /// Real, effective, saved and filesystem uid.
    pub uids: Option<[u32; 4]>,
}

pub(super) fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let hex = || u64::from_str_radix(value, 16).ok();
        match key {
            "CapInh" => s.cap_inh = hex(),
            "CapPrm" => s.cap_prm = hex(),
            "CapEff" => s.cap_eff = hex(),
            "CapBnd" => s.cap_bnd = hex(),
            "CapAmb" => s.cap_amb = hex(),
            "NoNewPrivs" => s.no_new_privs = value.parse::<u8>().ok().map(|v| v != 0),
            "Seccomp" => s.seccomp = value.parse().ok(),
            "Uid" => {
                let ids: Vec<u32> = value
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                if let [r, e, saved, fs] = ids[..] {
                    s.uids = Some([r, e, saved, fs]);
                }
            }
            _ => {}
        }
    }
    s
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MountEntry {
    pub major: u32,
    pub minor: u32,
    /// The root of the mount within its filesystem.
    pub root: String,
    /// Where it is mounted, relative to the process's root.
    pub mount_point: String,
    /// Per-mount options (`rw,nosuid,nodev`).
    pub options: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// Superblock options.
    pub super_options: Vec<String>,
}

/// Decodes the octal escapes (`\040` for a space) the kernel writes in mountinfo paths.
pub(super) fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(d)) = (bytes[i], octal) {
            let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
            if let Ok(b) = u8::try_from(value) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.split(' ').collect();
    if left.len() < 6 || right.len() < 3 {
        return None;
    }
    let (major, minor) = left[2].split_once(':')?;
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: unescape(left[3]),
        mount_point: unescape(left[4]),
        options: left[5].split(',').map(str::to_string).collect(),
        fstype: right[0].to_string(),
        source: unescape(right[1]),
        super_options: right[2].split(',').map(str::to_string).collect(),
    })
}

/// Whether `path` is `mount_point` or below it, comparing whole components.
fn is_under(path: &str, mount_point: &str) -> bool {
    mount_point == "/"
        || path == mount_point
        || path
            .strip_prefix(mount_point)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The mount that holds absolute `path`: the longest mount point above it, the last one mounted
/// when several are stacked there.
pub(super) fn mount_of<'a>(entries: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    for e in entries.iter().filter(|e| is_under(path, &e.mount_point)) {
        if best.is_none_or(|b| e.mount_point.len() >= b.mount_point.len()) {
            best = Some(e);
        }
    }
    best
}

/// A chrooted process sees no mount at `/` in its mountinfo: the mount holding its root is
/// mounted outside it. (The kernel refuses new user namespaces to chrooted processes.)
pub(super) fn looks_chrooted(entries: &[MountEntry]) -> bool {
    !entries.is_empty() && !entries.iter().any(|e| e.mount_point == "/")
}

/// The filesystems that live on a block device (the ones worth mounting in `mount_blockdev`).
pub(super) fn is_block_fstype(fstype: &str) -> bool {
    matches!(
        fstype,
        "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "f2fs" | "vfat" | "exfat" | "jfs" | "reiserfs"
    )
}

/// The block filesystem with statfs magic `magic`, for a root whose mount mountinfo does not show.
pub(super) fn fstype_of_magic(magic: u64) -> Option<&'static str> {
    match magic {
        0xef53 => Some("ext4"), // ext2, ext3 and ext4 share it; the ext4 driver mounts all three
        0x5846_5342 => Some("xfs"),
        0xf2f5_2010 => Some("f2fs"),
        _ => None,
    }
}

/// The name of block device `major:minor` in the text of /proc/partitions.
pub(super) fn partition_name(partitions: &str, major: u32, minor: u32) -> Option<String> {
    partitions.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [ma, mi, _, name] = f[..] else {
            return None;
        };
        (ma.parse() == Ok(major) && mi.parse() == Ok(minor)).then(|| name.to_string())
    })
}

/// The controlling terminal (`tty_nr`, a device number; 0 for none) in the text of
/// /proc/self/stat, counted after the parenthesised command name, which may hold spaces.
pub(super) fn tty_nr_of_stat(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(4)?.parse().ok()
}

/// The major and minor numbers of a Linux `dev_t` (glibc's encoding).
pub(super) fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// The host uid that `uid` of this user namespace stands for, from the text of
/// /proc/self/uid_map (`inside outside count` per line); `None` when unmapped.
pub(super) fn host_uid(uid_map: &str, uid: u32) -> Option<u32> {
    uid_map.lines().find_map(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let [inside, outside, count] = f[..] else {
            return None;
        };
        let uid = u64::from(uid);
        (uid >= inside && uid < inside + count).then(|| (outside + uid - inside) as u32)
    })
}

/// The init namespaces' fixed inode numbers (`user:[4026531837]`, `cgroup:[4026531835]`).
pub(super) const INIT_USER_NS: &str = "user:[4026531837]";
pub(super) const INIT_CGROUP_NS: &str = "cgroup:[4026531835]";

/// The root flags of cgroup2 that a mount from the initial cgroup namespace resets host-wide to
/// what it is given: the options to pass so they stay as they are.
pub(super) fn cgroup2_root_flag_options(super_options: &[String]) -> String {
    const ROOT_FLAGS: [&str; 6] = [
        "nsdelegate",
        "favordynmods",
        "memory_localevents",
        "memory_recursiveprot",
        "memory_hugetlb_accounting",
        "pids_localevents",
    ];
    super_options
        .iter()
        .filter(|o| ROOT_FLAGS.contains(&o.as_str()))
        .cloned()
        .collect::<Vec<_>>()
        .join(",")
}

/// What the probes know about the guards around them, for saying who refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Guards {
    /// Whether a seccomp filter is installed (`None`: unknown).
    pub seccomp_filter: Option<bool>,
    pub cap_eff: Option<u64>,
    pub init_user_ns: Option<bool>,
}

/// Which layer most likely returned `errno` for an attempt that needs capability `needs` (`None`:
/// one that needs no capability, so a refusal comes from a filter, an LSM, a sysctl or a chroot).
pub(super) fn refused_by(errno: i32, needs: Option<u32>, g: &Guards) -> String {
    let cap = needs.map(cap_name);
    match errno {
        errno::ENOSYS => match g.seccomp_filter {
            Some(false) => {
                "ENOSYS with no seccomp filter installed: the kernel lacks this syscall".into()
            }
            _ => "ENOSYS: the seccomp filter (or a kernel built without this syscall)".into(),
        },
        errno::EROFS => "EROFS: a read-only mount".into(),
        errno::EPERM | errno::EACCES => {
            let held = match (needs, g.cap_eff) {
                (Some(n), Some(eff)) => Some(eff & (1 << n) != 0),
                _ => None,
            };
            match (g.seccomp_filter, held, &cap) {
                (Some(true), _, None) => {
                    "the seccomp filter (the attempt needs no capability; else an LSM or a sysctl)"
                        .into()
                }
                (Some(false), _, None) => "a kernel check other than capabilities (an LSM, a sysctl or a chroot; no seccomp filter is installed)".into(),
                (Some(false), Some(false), Some(c)) => {
                    format!("the kernel: {c} is not effective (no seccomp filter is installed)")
                }
                (Some(false), Some(true), Some(c)) if g.init_user_ns == Some(false) => format!(
                    "the kernel: {c} is held only in a child user namespace (no seccomp filter is installed)"
                ),
                (Some(false), _, _) => {
                    "the kernel's permission check (no seccomp filter is installed)".into()
                }
                (Some(true), Some(false), Some(c)) => {
                    format!("the kernel ({c} is not effective) or the seccomp filter")
                }
                (Some(true), Some(true), Some(c)) if g.init_user_ns == Some(true) => {
                    format!("probably the seccomp filter ({c} is effective in the initial user namespace)")
                }
                (Some(true), Some(true), Some(c)) => format!(
                    "the kernel ({c} is held only in a child user namespace) or the seccomp filter"
                ),
                _ => "a capability check of the kernel or a seccomp filter".into(),
            }
        }
        _ => "an error of the attempt itself, not a permission check".into(),
    }
}

/// Which layer most likely refused opening a kernel file for writing.
pub(super) fn refused_open_by(errno: i32) -> String {
    match errno {
        errno::EROFS => "a read-only mount over it".into(),
        errno::EACCES | errno::EPERM => "the kernel's permission check on the file (only root of the initial user namespace may write it) or Landlock/an LSM (seccomp cannot see paths)".into(),
        _ => "an error of the open itself, not a permission check".into(),
    }
}

/// The verdict of an attempt that failed with `errno`: a refusal blocks it; ENOSYS with no
/// seccomp filter installed means the kernel lacks the syscall (not applicable); anything else
/// says nothing about the guards.
pub(super) fn verdict_of_refusal(errno: i32, g: &Guards) -> Verdict {
    match errno {
        errno::ENOSYS if g.seccomp_filter == Some(false) => Verdict::NotApplicable,
        errno::EPERM | errno::EACCES | errno::ENOSYS | errno::EROFS => Verdict::Blocked,
        _ => Verdict::Inconclusive,
    }
}

/// `module_load`'s reading of init_module's errno with an empty image: past the capability and
/// seccomp checks the kernel looks at the image and finds it too short.
pub(super) fn module_load_verdict(errno: i32) -> Verdict {
    match errno {
        errno::EPERM | errno::ENOSYS => Verdict::Blocked,
        errno::ENOEXEC | errno::EFAULT | errno::EINVAL | errno::EBADF => Verdict::Escaped,
        _ => Verdict::Inconclusive,
    }
}

/// A setuid-root executable found by `setuid_nnp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SetuidFile {
    pub path: String,
    pub executable: bool,
    pub nosuid: bool,
    pub noexec: bool,
    /// The owner is root on the host (not only in this user namespace).
    pub host_root: bool,
}

impl SetuidFile {
    pub fn grants_root(&self) -> bool {
        self.executable && !self.nosuid && !self.noexec && self.host_root
    }
}

/// `setuid_nnp`'s decision: escaped when already host root, or when a setuid-root program could
/// be run with no_new_privs off; blocked otherwise, saying why.
pub(super) fn setuid_verdict(
    host_root: bool,
    no_new_privs: Option<bool>,
    files: &[SetuidFile],
) -> (Verdict, String) {
    let usable: Vec<&str> = files
        .iter()
        .filter(|f| f.grants_root())
        .map(|f| f.path.as_str())
        .collect();
    if host_root {
        return (
            Verdict::Escaped,
            "already root on the host (euid 0, mapped to host uid 0)".into(),
        );
    }
    match no_new_privs {
        Some(false) if !usable.is_empty() => (
            Verdict::Escaped,
            format!(
                "NoNewPrivs=0 and {} setuid-root program(s) runnable from suid mounts, e.g. {}",
                usable.len(),
                usable[0]
            ),
        ),
        Some(true) => (
            Verdict::Blocked,
            format!(
                "NoNewPrivs=1: execve grants no privileges ({} setuid-root file(s) present)",
                files.len()
            ),
        ),
        _ if files.is_empty() => (Verdict::Blocked, "no setuid-root files present".into()),
        _ if usable.is_empty() => (
            Verdict::Blocked,
            format!(
                "{} setuid-root file(s), none runnable with effect (nosuid/noexec mounts, not executable, or not owned by host root)",
                files.len()
            ),
        ),
        _ => (
            Verdict::Inconclusive,
            "setuid-root programs present, NoNewPrivs unknown".into(),
        ),
    }
}

#[cfg(test)]
#[path = "kernel_env_tests.rs"]
mod tests;
