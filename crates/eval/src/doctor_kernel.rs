//! The kernel-feature checks of `agentbox doctor`. Files are read below a root directory (`/` on the
//! host, a fake tree in tests), and the few answers only a syscall gives are gathered once in
//! `SyscallProbes`, so that every check is a pure function of files and probe results.

use std::path::{Path, PathBuf};

use agentbox_sys::host_probe::{self, LandlockSupport};

use super::{Check, Status};

/// The newest Landlock ABI whose rights agentbox uses (see `agentbox_sys::landlock`), and the
/// kernel that introduced it.
const REVIEWED_LANDLOCK_ABI: u32 = 6;
const REVIEWED_LANDLOCK_KERNEL: &str = "6.12";
/// Where the runtime looks for `nft` and `ip` (`agentbox_runtime::net::open`).
const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
/// Seccomp actions the compiled filter returns.
const SECCOMP_ACTIONS: [&str; 3] = ["kill_process", "errno", "allow"];

/// What only a syscall can tell. Errors are kept as text: they are reported, not acted on.
pub(super) struct SyscallProbes {
    pub landlock: Result<LandlockSupport, String>,
    /// `Ok(false)`: the syscall does not exist.
    pub pidfd: Result<bool, String>,
    pub mount_setattr: bool,
}

impl SyscallProbes {
    pub fn run() -> Self {
        Self {
            landlock: host_probe::landlock_support().map_err(|e| e.to_string()),
            pidfd: host_probe::pidfd_open_works().map_err(|e| e.to_string()),
            mount_setattr: host_probe::mount_setattr_exists(),
        }
    }
}

/// Files of the host below `root`.
pub(super) struct HostFiles<'a> {
    pub root: &'a Path,
}

impl HostFiles<'_> {
    pub fn path(&self, absolute: &Path) -> PathBuf {
        self.root
            .join(absolute.strip_prefix("/").unwrap_or(absolute))
    }

    pub fn read(&self, absolute: impl AsRef<Path>) -> Option<String> {
        std::fs::read_to_string(self.path(absolute.as_ref())).ok()
    }

    /// The trimmed content of a one-value file such as a sysctl.
    pub fn value(&self, absolute: impl AsRef<Path>) -> Option<String> {
        self.read(absolute).map(|s| s.trim().to_string())
    }

    pub fn exists(&self, absolute: impl AsRef<Path>) -> bool {
        self.path(absolute.as_ref()).exists()
    }
}

pub(super) fn check(
    name: &str,
    status: Status,
    detail: impl Into<String>,
    fix: Option<&str>,
) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

/// Every kernel-feature check, in display order.
pub(super) fn checks(root: &Path, probes: &SyscallProbes) -> Vec<Check> {
    let files = HostFiles { root };
    let status = files.read("/proc/self/status").unwrap_or_default();
    let euid = effective_uid(&status);
    let kernel = files.value("/proc/sys/kernel/osrelease");
    let mountinfo = files.read("/proc/self/mountinfo").unwrap_or_default();
    let (cgroups, swap) = super::cgroup::checks(&files, &mountinfo);
    vec![
        privileges(euid),
        user_namespaces(&files, euid),
        seccomp(&files, &status),
        landlock(&probes.landlock),
        cgroups,
        swap,
        filesystems(&files),
        idmapped_mounts(kernel.as_deref(), probes.mount_setattr),
        pidfd(&probes.pidfd),
        nftables(&files),
        ip_forwarding(&files),
        kvm(&files),
    ]
}

/// The effective uid from the `Uid:` line of `/proc/self/status` (real, effective, saved, fs).
pub(super) fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
}

/// `(major, minor)` from a kernel release such as `6.18.44-fc-v669`.
pub(super) fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

fn privileges(euid: Option<u32>) -> Check {
    match euid {
        Some(0) => check(
            "root",
            Status::Ok,
            "running as root (agentbox needs root)",
            None,
        ),
        Some(uid) => check(
            "root",
            Status::Warn,
            format!("running as uid {uid}; agentbox needs root, and root-only files were not read"),
            Some("run agentbox (and this doctor) as root, e.g. with sudo"),
        ),
        None => check(
            "root",
            Status::Warn,
            "could not read the uid from /proc/self/status",
            Some("mount /proc"),
        ),
    }
}

fn user_namespaces(files: &HostFiles<'_>, euid: Option<u32>) -> Check {
    const NAME: &str = "user namespaces";
    if !files.exists("/proc/self/ns/user") {
        return check(
            NAME,
            Status::Missing,
            "no /proc/self/ns/user: the kernel is built without user namespaces",
            Some("a kernel built with CONFIG_USER_NS=y"),
        );
    }
    let max = files.value("/proc/sys/user/max_user_namespaces");
    if max.as_deref() == Some("0") {
        return check(
            NAME,
            Status::Missing,
            "user.max_user_namespaces=0: nobody, root included, may create one",
            Some(
                "sysctl -w user.max_user_namespaces=15000 (and drop the 0 from /etc/sysctl.conf \
                 or /etc/sysctl.d)",
            ),
        );
    }
    let root = euid == Some(0);
    let mut notes = vec![match &max {
        Some(n) => format!("user.max_user_namespaces={n}"),
        None => "user.max_user_namespaces unreadable".to_string(),
    }];
    let mut restricted = false;
    for (sysctl, blocks_when) in [
        ("kernel.unprivileged_userns_clone", "0"),
        ("kernel.apparmor_restrict_unprivileged_userns", "1"),
    ] {
        let path = format!("/proc/sys/{}", sysctl.replace('.', "/"));
        match files.value(&path) {
            None => notes.push(format!("{sysctl} absent")),
            Some(v) if v == blocks_when => {
                restricted = true;
                notes.push(format!("{sysctl}={v}"));
            }
            Some(v) => notes.push(format!("{sysctl}={v}")),
        }
    }
    if restricted && !root {
        return check(
            NAME,
            Status::Warn,
            format!(
                "{}; these restrict unprivileged users, and this is not root",
                notes.join(", ")
            ),
            Some("run agentbox as root (the restrictions do not apply to root)"),
        );
    }
    let tail = if restricted {
        "; those restrict only unprivileged users, and agentbox runs as root, so they do not matter"
    } else {
        "; the unprivileged-user knobs do not apply to root anyway"
    };
    check(
        NAME,
        Status::Ok,
        format!("{}{tail}", notes.join(", ")),
        None,
    )
}

fn seccomp(files: &HostFiles<'_>, status: &str) -> Check {
    const NAME: &str = "seccomp";
    let mode = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim);
    let Some(mode) = mode else {
        return check(
            NAME,
            Status::Missing,
            "no Seccomp field in /proc/self/status: the kernel is built without seccomp",
            Some("a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y"),
        );
    };
    let own = match mode {
        "0" => "this process is unfiltered".to_string(),
        "2" => "this process already runs under a filter (agentbox's stacks on top)".to_string(),
        other => format!("this process is in seccomp mode {other}"),
    };
    let Some(actions) = files.value("/proc/sys/kernel/seccomp/actions_avail") else {
        return check(
            NAME,
            Status::Warn,
            format!("{own}; /proc/sys/kernel/seccomp/actions_avail unreadable (kernel < 4.14?)"),
            Some("a kernel >= 4.14 with CONFIG_SECCOMP_FILTER=y"),
        );
    };
    let offered: Vec<&str> = actions.split_whitespace().collect();
    let lacking: Vec<&str> = SECCOMP_ACTIONS
        .iter()
        .copied()
        .filter(|a| !offered.contains(a))
        .collect();
    if !lacking.is_empty() {
        return check(
            NAME,
            Status::Missing,
            format!(
                "filters lack the {} action(s) agentbox's filter returns",
                lacking.join(", ")
            ),
            Some("a kernel >= 4.14 with CONFIG_SECCOMP_FILTER=y"),
        );
    }
    check(
        NAME,
        Status::Ok,
        format!("filters available ({own}); actions: {actions}"),
        None,
    )
}

fn landlock(support: &Result<LandlockSupport, String>) -> Check {
    const NAME: &str = "landlock";
    match support {
        Ok(LandlockSupport::Abi(v)) if *v >= REVIEWED_LANDLOCK_ABI => check(
            NAME,
            Status::Ok,
            format!("ABI {v} (agentbox uses rights up to ABI {REVIEWED_LANDLOCK_ABI})"),
            None,
        ),
        Ok(LandlockSupport::Abi(v)) => check(
            NAME,
            Status::Warn,
            format!(
                "ABI {v}: enforced, but the rights of ABI {}..{REVIEWED_LANDLOCK_ABI} (e.g. \
                 truncate, device ioctl, signal scoping) are not",
                v + 1
            ),
            Some(&format!(
                "a kernel >= {REVIEWED_LANDLOCK_KERNEL} for ABI {REVIEWED_LANDLOCK_ABI}"
            )),
        ),
        Ok(LandlockSupport::Disabled) => check(
            NAME,
            Status::Missing,
            "built into the kernel but not enabled at boot",
            Some(
                "add landlock to the lsm= boot parameter (current list: /sys/kernel/security/lsm), \
                 e.g. lsm=landlock,lockdown,yama,apparmor,bpf",
            ),
        ),
        Ok(LandlockSupport::NotBuilt) => check(
            NAME,
            Status::Missing,
            "the kernel has no Landlock (built without it, or older than 5.13)",
            Some("a kernel >= 5.13 built with CONFIG_SECURITY_LANDLOCK=y"),
        ),
        Err(e) => check(
            NAME,
            Status::Missing,
            format!("the version query failed: {e}"),
            Some("a kernel >= 5.13 built with CONFIG_SECURITY_LANDLOCK=y"),
        ),
    }
}

fn filesystems(files: &HostFiles<'_>) -> Check {
    const NAME: &str = "overlayfs";
    let Some(list) = files.read("/proc/filesystems") else {
        return check(
            NAME,
            Status::Missing,
            "/proc/filesystems unreadable",
            Some("mount /proc"),
        );
    };
    let has = |fs: &str| {
        list.lines()
            .any(|l| l.split_whitespace().last() == Some(fs))
    };
    match (has("overlay"), has("tmpfs")) {
        (_, false) => check(
            NAME,
            Status::Missing,
            "no tmpfs in /proc/filesystems: sandbox roots are tmpfs",
            Some("a kernel built with CONFIG_TMPFS=y"),
        ),
        (true, true) => check(
            NAME,
            Status::Ok,
            "overlay and tmpfs in /proc/filesystems",
            None,
        ),
        (false, true) => check(
            NAME,
            Status::Warn,
            "tmpfs present, overlay not in /proc/filesystems: --image DIR (an overlay root) fails \
             unless the module loads on first mount",
            Some("modprobe overlay"),
        ),
    }
}

fn idmapped_mounts(release: Option<&str>, mount_setattr: bool) -> Check {
    const NAME: &str = "idmapped mounts";
    let version = release.and_then(kernel_version);
    let release = release.unwrap_or("unknown");
    if !mount_setattr {
        return check(
            NAME,
            Status::Missing,
            format!("kernel {release} has no mount_setattr (needs 5.12): binds cannot be made nosuid/nodev/idmapped"),
            Some("a kernel >= 5.12"),
        );
    }
    match version {
        Some(v) if v >= (5, 12) => check(
            NAME,
            Status::Ok,
            format!(
                "kernel {release} >= 5.12, mount_setattr present; whether a given file system \
                 supports an idmap is found at mount time (without, binds go unmapped)"
            ),
            None,
        ),
        _ => check(
            NAME,
            Status::Warn,
            format!("mount_setattr present, but kernel release {release} is not >= 5.12 as read"),
            Some("a kernel >= 5.12"),
        ),
    }
}

fn pidfd(result: &Result<bool, String>) -> Check {
    match result {
        Ok(true) => check("pidfd", Status::Ok, "pidfd_open works", None),
        Ok(false) => check(
            "pidfd",
            Status::Missing,
            "no pidfd_open syscall (needs 5.3)",
            Some("a kernel >= 5.3"),
        ),
        Err(e) => check(
            "pidfd",
            Status::Missing,
            format!("pidfd_open failed: {e}"),
            Some("a kernel >= 5.3, and a free file descriptor"),
        ),
    }
}

fn find_tool(files: &HostFiles<'_>, name: &str) -> Option<String> {
    TOOL_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| files.path(p).is_file())
        .map(|p| p.display().to_string())
}

fn nftables(files: &HostFiles<'_>) -> Check {
    const NAME: &str = "nftables";
    match (find_tool(files, "nft"), find_tool(files, "ip")) {
        (Some(nft), Some(ip)) => check(
            NAME,
            Status::Ok,
            format!("{nft} and {ip} present (used by --net open)"),
            None,
        ),
        (nft, ip) => {
            let mut lacking = Vec::new();
            if nft.is_none() {
                lacking.push("nft");
            }
            if ip.is_none() {
                lacking.push("ip");
            }
            check(
                NAME,
                Status::Warn,
                format!(
                    "{} not found: --net open is refused (other modes work)",
                    lacking.join(" and ")
                ),
                Some("apt-get install nftables iproute2"),
            )
        }
    }
}

fn ip_forwarding(files: &HostFiles<'_>) -> Check {
    const NAME: &str = "ip forwarding";
    match files.value("/proc/sys/net/ipv4/ip_forward").as_deref() {
        Some("1") => check(
            NAME,
            Status::Ok,
            "net.ipv4.ip_forward=1 (--net open NATs)",
            None,
        ),
        other => check(
            NAME,
            Status::Warn,
            format!(
                "net.ipv4.ip_forward={}: --net open is refused (other modes work)",
                other.unwrap_or("unreadable")
            ),
            Some("sysctl -w net.ipv4.ip_forward=1 (only for --net open)"),
        ),
    }
}

fn kvm(files: &HostFiles<'_>) -> Check {
    const NAME: &str = "kvm";
    let path = files.path(Path::new("/dev/kvm"));
    if !path.exists() {
        return check(
            NAME,
            Status::Missing,
            "no /dev/kvm: the microvm tiers run under TCG emulation (slower)",
            Some(
                "enable virtualization in the firmware and modprobe kvm_intel (or kvm_amd); in a \
                 VM, enable nested virtualization on its host",
            ),
        );
    }
    let access = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(_) => "opens read-write".to_string(),
        Err(e) => format!("cannot be opened read-write: {e}"),
    };
    check(
        NAME,
        Status::Ok,
        format!(
            "/dev/kvm present ({access}); whether a guest really boots with it is probed by the \
             microvm tier (see its line below)"
        ),
        None,
    )
}
