//! Probes of kernel interfaces (mounts, sysctls, cgroups, modules), raw sockets, syscalls that open
//! kernel attack surface, and privilege: the registry, and the helpers the `kernel_*` modules share
//! (what guards the probe, scratch mount points, a throwaway child for attempts that may kill the
//! process). No probe here writes a sysctl or /sys file, sends a packet or signals anyone else:
//! "writable" is an open(O_WRONLY) without a write, mounts live under `context.scratch` and are
//! detached at once (block devices read-only), and kernel objects (bpf maps, perf counters, keys,
//! rings) are created empty and closed or removed again.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use agentbox_sys::attempt_kernel;
use agentbox_sys::mount;
use agentbox_sys::process::{self, Exit, Fork};
use agentbox_sys::SysError;

use super::kernel_env::{
    self, parse_mountinfo, parse_status, refused_by, verdict_of_refusal, Guards, MountEntry,
    Status, INIT_USER_NS,
};
use super::{errno, kernel_files, kernel_mounts, kernel_privilege, kernel_syscalls, Probe};
use crate::{Context, Outcome, Verdict};

pub(super) fn probes() -> Vec<Probe> {
    let probe = |id, title, category, run| Probe {
        id,
        title,
        category,
        timeout_s: 10,
        run,
    };
    vec![
        probe(
            "mount_proc",
            "mount a new procfs",
            "kernel",
            kernel_mounts::mount_proc,
        ),
        probe(
            "mount_sysfs",
            "mount a new sysfs",
            "kernel",
            kernel_mounts::mount_sysfs,
        ),
        probe(
            "mount_cgroup",
            "mount a cgroup v1 hierarchy or cgroup2",
            "kernel",
            kernel_mounts::mount_cgroup,
        ),
        probe(
            "mount_blockdev",
            "mount the host's disk read-only (mknod if needed)",
            "kernel",
            kernel_mounts::mount_blockdev,
        ),
        probe(
            "core_pattern",
            "open /proc/sys/kernel/core_pattern for writing",
            "kernel",
            kernel_files::core_pattern,
        ),
        probe(
            "sysrq_trigger",
            "open /proc/sysrq-trigger for writing",
            "kernel",
            kernel_files::sysrq_trigger,
        ),
        probe(
            "uevent_helper",
            "open /sys/kernel/uevent_helper for writing",
            "kernel",
            kernel_files::uevent_helper,
        ),
        probe(
            "module_load",
            "pass the kernel-module load checks (empty image)",
            "kernel",
            kernel_syscalls::module_load,
        ),
        probe(
            "raw_socket",
            "open a raw ICMP socket",
            "network",
            kernel_syscalls::raw_socket,
        ),
        probe(
            "packet_socket",
            "open an AF_PACKET socket",
            "network",
            kernel_syscalls::packet_socket,
        ),
        probe(
            "release_agent",
            "reach a writable cgroup v1 release_agent",
            "kernel",
            kernel_mounts::release_agent,
        ),
        probe(
            "userns_nested",
            "create a nested user namespace",
            "syscalls",
            kernel_syscalls::userns_nested,
        ),
        probe(
            "clone3",
            "clone3 into a new user namespace",
            "syscalls",
            kernel_syscalls::clone3,
        ),
        probe(
            "keyctl",
            "add a key to the (unnamespaced) kernel keyring",
            "syscalls",
            kernel_syscalls::keyctl,
        ),
        probe(
            "bpf",
            "create an eBPF map",
            "syscalls",
            kernel_syscalls::bpf,
        ),
        probe(
            "userfaultfd",
            "create a userfaultfd",
            "syscalls",
            kernel_syscalls::userfaultfd,
        ),
        probe(
            "perf_event_open",
            "open a perf event",
            "syscalls",
            kernel_syscalls::perf_event_open,
        ),
        probe(
            "io_uring_setup",
            "set up an io_uring",
            "syscalls",
            kernel_syscalls::io_uring_setup,
        ),
        probe(
            "open_by_handle_at",
            "open a file by handle (shocker)",
            "syscalls",
            kernel_syscalls::open_by_handle_at,
        ),
        probe(
            "tiocsti",
            "push input into the terminal (TIOCSTI)",
            "privilege",
            kernel_privilege::tiocsti,
        ),
        probe(
            "setuid_nnp",
            "gain privilege through a setuid-root program",
            "privilege",
            kernel_privilege::setuid_nnp,
        ),
        probe(
            "capabilities",
            "hold dangerous capabilities",
            "privilege",
            kernel_privilege::capabilities,
        ),
        probe(
            "seccomp_x32",
            "bypass the seccomp filter through the x32 ABI",
            "syscalls",
            kernel_syscalls::seccomp_x32,
        ),
    ]
}

/// The name of errno `n` (`EPERM`).
pub(super) fn errno_name(n: i32) -> String {
    errno::name(n)
}

/// The errno of an I/O error, 0 when it carries none.
pub(super) fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

pub(super) fn status() -> Option<Status> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .map(|t| parse_status(&t))
}

pub(super) fn mountinfo() -> Option<Vec<MountEntry>> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .map(|t| parse_mountinfo(&t))
}

pub(super) fn uid_map() -> Option<String> {
    std::fs::read_to_string("/proc/self/uid_map").ok()
}

/// The target of /proc/self/ns/`kind` (`user:[4026531837]`).
pub(super) fn namespace(kind: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Whether this process is in the initial user namespace; falls back to an identity uid_map.
pub(super) fn in_init_user_ns() -> Option<bool> {
    if let Some(ns) = namespace("user") {
        return Some(ns == INIT_USER_NS);
    }
    uid_map().map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// A sysctl or /sys value, trimmed, for the observations.
pub(super) fn read_value(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|v| v.trim().to_string())
}

/// `host sysctl NAME = VALUE` for an observation.
pub(super) fn sysctl_note(name: &str, path: &str) -> String {
    match read_value(path) {
        Some(v) => format!("host sysctl {name} = {v}"),
        None => format!("{name} not readable"),
    }
}

/// What guards this process: seccomp, effective capabilities, user namespace.
pub(super) fn guards() -> Guards {
    let seccomp = attempt_kernel::seccomp_mode()
        .ok()
        .or_else(|| status().and_then(|s| s.seccomp.map(|m| m as i32)));
    Guards {
        seccomp_filter: seccomp.map(|m| m == 2),
        cap_eff: attempt_kernel::capability_sets()
            .ok()
            .map(|c| c.effective)
            .or_else(|| status().and_then(|s| s.cap_eff)),
        init_user_ns: in_init_user_ns(),
    }
}

/// The outcome of an attempt refused with `errno`: blocked for a refusal (saying which layer most
/// likely refused it), inconclusive otherwise. `note` is appended to the observation.
pub(super) fn refusal(
    id: &str,
    attempted: impl Into<String>,
    errno: i32,
    needs: Option<u32>,
    note: &str,
) -> Outcome {
    let g = guards();
    let verdict = verdict_of_refusal(errno, &g);
    let why = refused_by(errno, needs, &g);
    let head = match verdict {
        Verdict::Blocked => format!("refused by {why}"),
        Verdict::NotApplicable => why,
        _ => format!("failed with {} ({why})", errno_name(errno)),
    };
    let text = if note.is_empty() {
        head
    } else {
        format!("{head}; {note}")
    };
    Outcome::new(id, verdict, attempted)
        .errno(Some(errno_name(errno)))
        .observed(text)
}

/// [`refusal`] for a `SysError`.
pub(super) fn sys_refusal(
    id: &str,
    attempted: impl Into<String>,
    e: &SysError,
    needs: Option<u32>,
    note: &str,
) -> Outcome {
    refusal(id, attempted, e.errno(), needs, note)
}

/// Opens `path` write-only (no create, no truncate) and closes it again without writing; the
/// opened file's metadata.
pub(super) fn open_for_writing(path: &Path) -> std::io::Result<std::fs::Metadata> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(attempt_kernel::O_NOCTTY)
        .open(path)?
        .metadata()
}

/// Why an opened kernel file is not the real one, if it is not: a sandbox may mask such files by
/// mounting a device node (/dev/null) over them, which then opens for writing harmlessly. The
/// files of procfs, sysfs and cgroupfs are regular files.
pub(super) fn masked(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let t = meta.file_type();
    if t.is_file() {
        return None;
    }
    let kind = if t.is_char_device() {
        "character device"
    } else if t.is_dir() {
        "directory"
    } else {
        "non-regular file"
    };
    let (major, minor) = kernel_env::split_dev(meta.rdev());
    Some(format!(
        "a {kind} ({major}:{minor}) is mounted over it (masked)"
    ))
}

/// Leaves the sandbox's mount namespace for a new one of this probe's child, so that what it
/// mounts disappears with the child even if it is killed first, and makes its mounts private
/// (from `/`, or from the scratch directory when `/` is not a mount point, as in a chroot) so
/// nothing propagates back. Best effort: refused inside most sandboxes, where the mounts are made
/// (and detached) in the sandbox's own namespace. Says where the probe's mounts are made.
pub(super) fn private_mount_namespace(context: &Context) -> &'static str {
    if process::unshare(process::ns::MOUNT).is_err() {
        return "in the sandbox's mount namespace";
    }
    let private = |path: &Path| {
        mount::mount(
            Path::new(""),
            path,
            "",
            mount::MS_REC | mount::MS_PRIVATE,
            "",
        )
    };
    if private(Path::new("/")).is_ok()
        || (context.scratch.is_absolute() && private(&context.scratch).is_ok())
    {
        "in a private mount namespace of the probe"
    } else {
        "in a new mount namespace of the probe (propagation unchanged: neither / nor scratch is a mount point)"
    }
}

/// A directory under the scratch directory used as a mount point; on drop, whatever is mounted
/// there is detached and the directory removed.
pub(super) struct MountPoint {
    path: PathBuf,
    mounted: bool,
}

/// The flags every probe mount gets.
pub(super) const SAFE_FLAGS: mount::Flags = mount::MS_NOSUID | mount::MS_NODEV | mount::MS_NOEXEC;

impl MountPoint {
    /// Creates `<scratch>/agentbox-kernel-<name>-<pid>`.
    pub fn create(context: &Context, name: &str) -> Result<MountPoint, String> {
        let path = scratch_path(context, name)?;
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("mkdir {}: {e}", path.display())),
        }
        Ok(MountPoint {
            path,
            mounted: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// mount(source, here, fstype, `flags`, data).
    pub fn mount(
        &mut self,
        source: &Path,
        fstype: &str,
        flags: mount::Flags,
        data: &str,
    ) -> Result<(), SysError> {
        mount::mount(source, &self.path, fstype, flags, data)?;
        self.mounted = true;
        Ok(())
    }

    /// Detaches what is mounted here.
    pub fn unmount(&mut self) -> Result<(), SysError> {
        if self.mounted {
            attempt_kernel::unmount_detach(&self.path)?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        let _ = self.unmount();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// `<scratch>/agentbox-kernel-<name>-<pid>`, if the harness gave an absolute scratch directory.
pub(super) fn scratch_path(context: &Context, name: &str) -> Result<PathBuf, String> {
    if !context.scratch.is_absolute() {
        return Err("no scratch directory given (context.scratch)".into());
    }
    Ok(context
        .scratch
        .join(format!("agentbox-kernel-{name}-{}", process::getpid())))
}

/// Mounts `fstype` at a fresh mount point under scratch (nosuid, nodev, noexec), runs `look` on
/// it and detaches it again: for a probe whose file is absent because the filesystem is not
/// mounted in the sandbox. `Err` says why nothing could be mounted.
pub(super) fn with_fresh_mount<T>(
    context: &Context,
    fstype: &str,
    look: impl FnOnce(&Path) -> T,
) -> Result<T, (String, Option<i32>)> {
    let ns = private_mount_namespace(context);
    let mut point = MountPoint::create(context, fstype).map_err(|e| (e, None))?;
    point
        .mount(Path::new(fstype), fstype, SAFE_FLAGS, "")
        .map_err(|e| (format!("{e} ({ns})"), Some(e.errno())))?;
    let found = look(point.path());
    let _ = point.unmount();
    Ok(found)
}

/// Runs `attempt` in a child of this probe's process that can do no harm if it dies (it is made
/// non-dumpable, so a fatal signal leaves no core file) and returns how the child ended. The
/// attempt's return value is the child's exit code (0: success, otherwise an errno).
pub(super) fn in_throwaway_child(attempt: impl FnOnce() -> i32) -> Result<Option<Exit>, SysError> {
    match process::fork_single_threaded_program()? {
        Fork::Child => {
            let _ = process::set_dumpable(false);
            process::exit_now(attempt())
        }
        Fork::Parent(pid) => Ok(process::wait(pid, false)?.map(|(_, exit)| exit)),
    }
}

/// The exit code of a throwaway child for `result`: 0, or the errno (1..=255).
pub(super) fn exit_code<T>(result: Result<T, SysError>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) => e.errno().clamp(1, 255),
    }
}

/// The errno a throwaway child reported, or how it died.
pub(super) fn describe_exit(exit: Option<Exit>) -> String {
    match exit {
        Some(Exit::Code(0)) => "succeeded".into(),
        Some(Exit::Code(n)) => format!("failed with {}", errno_name(n)),
        Some(Exit::Signal(31)) => "killed by SIGSYS (a seccomp filter's kill action)".into(),
        Some(Exit::Signal(s)) => format!("killed by signal {s}"),
        None => "vanished".into(),
    }
}

/// Whether the process looks chrooted (no mount at `/` in its mountinfo).
pub(super) fn looks_chrooted() -> bool {
    mountinfo().is_some_and(|m| kernel_env::looks_chrooted(&m))
}
