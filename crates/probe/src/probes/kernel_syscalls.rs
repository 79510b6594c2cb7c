//! Probes of syscalls that open kernel attack surface or powers beyond the sandbox: module
//! loading (with an empty image), raw and packet sockets (closed at once, nothing sent), user
//! namespaces (unshare, clone3), the kernel keyring, bpf, userfaultfd, perf, io_uring, file
//! handles, and the x32 ABI as a way around a seccomp filter. Whatever they create is empty and
//! closed or removed again.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use agentbox_sys::attempt_kernel;
use agentbox_sys::process::{self, Exit};
use agentbox_sys::SysError;

use super::kernel::{
    describe_exit, errno_name, in_throwaway_child, looks_chrooted, read_value, refusal,
    sys_refusal, sysctl_note,
};
use super::kernel_env::{cap, errno, module_load_verdict, refused_by};
use crate::{Context, Outcome, Verdict};

/// An attempt that returns a descriptor: escaped if it came back (it is closed at once).
fn fd_attempt(
    id: &str,
    attempted: &str,
    result: Result<OwnedFd, SysError>,
    needs: Option<u32>,
    success: &str,
    note: &str,
) -> Outcome {
    match result {
        Ok(fd) => {
            drop(fd);
            Outcome::new(id, Verdict::Escaped, attempted)
                .observed(format!("{success}; closed at once; {note}"))
        }
        Err(e) => sys_refusal(id, attempted, &e, needs, note),
    }
}

pub(super) fn module_load(_: &Context) -> Outcome {
    let id = "module_load";
    let attempted = "init_module(NULL, 0, \"\"): an empty image, which nothing can load";
    let note = sysctl_note(
        "kernel.modules_disabled",
        "/proc/sys/kernel/modules_disabled",
    );
    match attempt_kernel::init_module_empty() {
        Ok(()) => Outcome::new(id, Verdict::Escaped, attempted)
            .observed(format!("the kernel accepted an empty module image; {note}")),
        Err(e) => {
            let n = e.errno();
            match module_load_verdict(n) {
                Verdict::Escaped => Outcome::new(id, Verdict::Escaped, attempted)
                    .errno(Some(errno_name(n)))
                    .observed(format!(
                        "{} is the kernel rejecting the image itself: the CAP_SYS_MODULE and seccomp checks passed, so a real module would load; {note}",
                        errno_name(n)
                    )),
                _ => sys_refusal(id, attempted, &e, Some(cap::SYS_MODULE), &note),
            }
        }
    }
}

/// A socket attempt: escaped if created; a missing family counts as blocked.
fn socket_attempt(id: &str, attempted: &str, result: Result<OwnedFd, SysError>) -> Outcome {
    match result {
        Ok(fd) => {
            drop(fd);
            Outcome::new(id, Verdict::Escaped, attempted)
                .observed("created (CAP_NET_RAW in the socket's network namespace); closed at once, nothing sent")
        }
        Err(e)
            if matches!(
                e.errno(),
                errno::EAFNOSUPPORT | errno::EPROTONOSUPPORT | errno::ESOCKTNOSUPPORT
            ) =>
        {
            Outcome::new(id, Verdict::Blocked, attempted)
                .errno(Some(errno_name(e.errno())))
                .observed("the family or type is unavailable: a kernel without it, or a filter answering with this errno")
        }
        Err(e) => sys_refusal(id, attempted, &e, Some(cap::NET_RAW), ""),
    }
}

pub(super) fn raw_socket(_: &Context) -> Outcome {
    socket_attempt(
        "raw_socket",
        "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)",
        attempt_kernel::raw_icmp_socket(),
    )
}

pub(super) fn packet_socket(_: &Context) -> Outcome {
    socket_attempt(
        "packet_socket",
        "socket(AF_PACKET, SOCK_RAW, 0)",
        attempt_kernel::packet_socket(),
    )
}

/// Why a new user namespace may have been refused, beyond seccomp and capabilities.
fn userns_note(errno: i32) -> String {
    let mut notes = Vec::new();
    if errno == errno::EPERM && looks_chrooted() {
        notes.push("the process looks chrooted (no mount at / in mountinfo), and the kernel refuses new user namespaces to chrooted processes".to_string());
    }
    if errno == errno::ENOSPC {
        notes.push(format!(
            "ENOSPC: the user-namespace limit is reached ({})",
            sysctl_note(
                "user.max_user_namespaces",
                "/proc/sys/user/max_user_namespaces"
            )
        ));
    }
    if errno == errno::EUSERS {
        notes.push("EUSERS: the nesting limit of 32 user namespaces".into());
    }
    for (name, path) in [
        (
            "kernel.unprivileged_userns_clone",
            "/proc/sys/kernel/unprivileged_userns_clone",
        ),
        (
            "kernel.apparmor_restrict_unprivileged_userns",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        ),
    ] {
        if let Some(v) = read_value(path) {
            notes.push(format!("host sysctl {name} = {v}"));
        }
    }
    notes.join("; ")
}

/// A refusal to create a user namespace: ENOSPC and EUSERS are limits, so blocked too.
fn userns_refusal(id: &str, attempted: &str, e: &SysError) -> Outcome {
    let note = userns_note(e.errno());
    match e.errno() {
        errno::ENOSPC | errno::EUSERS => Outcome::new(id, Verdict::Blocked, attempted)
            .errno(Some(errno_name(e.errno())))
            .observed(note),
        _ => sys_refusal(id, attempted, e, None, &note),
    }
}

pub(super) fn userns_nested(_: &Context) -> Outcome {
    let id = "userns_nested";
    let attempted = "unshare(CLONE_NEWUSER), then unshare(CLONE_NEWNS) inside it";
    match process::unshare(process::ns::USER) {
        Ok(()) => {
            let mount_ns = match process::unshare(process::ns::MOUNT) {
                Ok(()) => {
                    "unshare(CLONE_NEWNS) inside it worked too (mount code reachable)".to_string()
                }
                Err(e) => format!(
                    "unshare(CLONE_NEWNS) inside it failed: {}",
                    errno_name(e.errno())
                ),
            };
            Outcome::new(id, Verdict::Escaped, attempted)
                .observed(format!("created a new user namespace; {mount_ns}"))
        }
        Err(e) => userns_refusal(id, attempted, &e),
    }
}

pub(super) fn clone3(_: &Context) -> Outcome {
    let id = "clone3";
    let attempted =
        "clone3({flags: CLONE_NEWUSER, exit_signal: SIGCHLD}); the child _exit(0)s at once";
    match attempt_kernel::clone3_exit_at_once(process::ns::USER) {
        Ok(pid) => {
            let exit = process::wait(pid, false).ok().flatten().map(|(_, e)| e);
            Outcome::new(id, Verdict::Escaped, attempted).observed(format!(
                "created a child in a new user namespace; it {}",
                describe_exit(exit)
            ))
        }
        Err(e) if e.errno() == errno::ENOSYS => Outcome::new(id, Verdict::Blocked, attempted)
            .errno(Some(errno_name(errno::ENOSYS)))
            .observed(format!(
                "{}; glibc and python then fall back to clone, whose flags a filter can check",
                refused_by(errno::ENOSYS, None, &super::kernel::guards())
            )),
        Err(e) => userns_refusal(id, attempted, &e),
    }
}

pub(super) fn keyctl(_: &Context) -> Outcome {
    let id = "keyctl";
    let attempted = "keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0); add_key(\"user\", \"agentbox-probe\", \"x\", KEY_SPEC_SESSION_KEYRING); keyctl(KEYCTL_UNLINK)";
    let ring = match attempt_kernel::session_keyring_id() {
        Ok(serial) => format!("session keyring {serial}"),
        Err(e) => format!("KEYCTL_GET_KEYRING_ID: {}", errno_name(e.errno())),
    };
    match attempt_kernel::add_user_key_to_session("agentbox-probe", b"x") {
        Ok(key) => {
            let unlinked = match attempt_kernel::unlink_from_session(key) {
                Ok(()) => "unlinked again".to_string(),
                Err(e) => format!("unlinking failed: {}", errno_name(e.errno())),
            };
            Outcome::new(id, Verdict::Escaped, attempted).observed(format!(
                "{ring}; added key {key} (the kernel keyring is not namespaced); {unlinked}"
            ))
        }
        Err(e) => sys_refusal(id, attempted, &e, None, &ring),
    }
}

pub(super) fn bpf(_: &Context) -> Outcome {
    fd_attempt(
        "bpf",
        "bpf(BPF_MAP_CREATE, {BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry})",
        attempt_kernel::bpf_array_map_create(),
        Some(cap::BPF),
        "an eBPF map was created",
        &sysctl_note(
            "kernel.unprivileged_bpf_disabled",
            "/proc/sys/kernel/unprivileged_bpf_disabled",
        ),
    )
}

pub(super) fn userfaultfd(_: &Context) -> Outcome {
    let id = "userfaultfd";
    let attempted = "userfaultfd(O_CLOEXEC|O_NONBLOCK), then with UFFD_USER_MODE_ONLY";
    let note = sysctl_note(
        "vm.unprivileged_userfaultfd",
        "/proc/sys/vm/unprivileged_userfaultfd",
    );
    let full = match attempt_kernel::userfaultfd(false) {
        Ok(fd) => {
            drop(fd);
            return Outcome::new(id, Verdict::Escaped, attempted).observed(format!(
                "a userfaultfd that handles kernel-mode faults was created (the race-widening primitive of kernel exploits); closed at once; {note}"
            ));
        }
        Err(e) => e,
    };
    match attempt_kernel::userfaultfd(true) {
        Ok(fd) => {
            drop(fd);
            Outcome::new(id, Verdict::Blocked, attempted)
                .errno(Some(errno_name(full.errno())))
                .observed(format!(
                    "only a user-mode-only userfaultfd is allowed (kernel-mode faults refused: {}); {note}",
                    errno_name(full.errno())
                ))
        }
        Err(_) => sys_refusal(id, attempted, &full, Some(cap::SYS_PTRACE), &note),
    }
}

pub(super) fn perf_event_open(_: &Context) -> Outcome {
    fd_attempt(
        "perf_event_open",
        "perf_event_open({PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, disabled, exclude_kernel, exclude_hv}, self, cpu -1)",
        attempt_kernel::perf_event_open_cpu_clock(),
        Some(cap::PERFMON),
        "a perf event was opened",
        &sysctl_note("kernel.perf_event_paranoid", "/proc/sys/kernel/perf_event_paranoid"),
    )
}

pub(super) fn io_uring_setup(_: &Context) -> Outcome {
    // With kernel.io_uring_disabled = 0 anyone may set up a ring; 1 restricts it to a group or
    // CAP_SYS_ADMIN, 2 disables it.
    let needs = match read_value("/proc/sys/kernel/io_uring_disabled").as_deref() {
        Some("0") => None,
        _ => Some(cap::SYS_ADMIN),
    };
    fd_attempt(
        "io_uring_setup",
        "io_uring_setup(1, zeroed params)",
        attempt_kernel::io_uring_setup_one(),
        needs,
        "an io_uring was set up",
        &sysctl_note(
            "kernel.io_uring_disabled",
            "/proc/sys/kernel/io_uring_disabled",
        ),
    )
}

pub(super) fn open_by_handle_at(context: &Context) -> Outcome {
    let id = "open_by_handle_at";
    let attempted =
        "name_to_handle_at(AT_FDCWD, \"/\") then open_by_handle_at(fd of \"/\", handle, O_RDONLY)";
    let mut candidates = vec![PathBuf::from("/")];
    if context.scratch.is_absolute() {
        candidates.push(context.scratch.clone());
    }
    candidates.push(PathBuf::from("/tmp"));
    let mut found = None;
    for path in &candidates {
        match attempt_kernel::name_to_handle(path) {
            Ok((handle, _mount_id)) => {
                found = Some((path.clone(), handle));
                break;
            }
            Err(e) if e.errno() == errno::EOPNOTSUPP || e.errno() == errno::ENOENT => {}
            Err(e) => {
                return sys_refusal(id, attempted, &e, None, "name_to_handle_at itself needs no capability: EPERM there is a seccomp filter or an LSM");
            }
        }
    }
    let Some((path, handle)) = found else {
        return Outcome::new(id, Verdict::NotApplicable, attempted)
            .observed("no filesystem here gives file handles (EOPNOTSUPP)");
    };
    let mount_fd = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            return Outcome::new(id, Verdict::Inconclusive, attempted).observed(format!(
                "cannot open {} for the mount fd: {e}",
                path.display()
            ))
        }
    };
    let (kind, len) = handle.describe();
    match attempt_kernel::open_by_handle(&mount_fd, &handle) {
        Ok(fd) => {
            let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "?".into());
            drop(fd);
            Outcome::new(id, Verdict::Escaped, attempted)
                .observed(format!(
                    "opened {} by handle (type {kind}, {len} bytes) with no path walk: CAP_DAC_READ_SEARCH is usable, so handles of host inodes could be forged",
                    path.display()
                ))
                .evidence(format!("opened: {target}"))
        }
        Err(e) => sys_refusal(
            id,
            attempted,
            &e,
            Some(cap::DAC_READ_SEARCH),
            &format!("name_to_handle_at({}) worked; open_by_handle_at needs CAP_DAC_READ_SEARCH in the initial user namespace", path.display()),
        ),
    }
}

/// Whether the running kernel was built with the x32 ABI, from /boot/config-<release> (the
/// compressed /proc/config.gz is not read).
fn x32_in_config() -> Option<bool> {
    let release = read_value("/proc/sys/kernel/osrelease")?;
    let config =
        std::fs::read_to_string(Path::new("/boot").join(format!("config-{release}"))).ok()?;
    if config.lines().any(|l| l == "CONFIG_X86_X32_ABI=y") {
        Some(true)
    } else {
        Some(false)
    }
}

pub(super) fn seccomp_x32(_: &Context) -> Outcome {
    seccomp_x32_attempt("seccomp_x32")
}

#[cfg(not(target_arch = "x86_64"))]
fn seccomp_x32_attempt(id: &str) -> Outcome {
    Outcome::new(id, Verdict::NotApplicable, "unshare through the x32 ABI")
        .observed("x32 is an x86_64 ABI")
}

#[cfg(target_arch = "x86_64")]
fn seccomp_x32_attempt(id: &str) -> Outcome {
    let attempted = "unshare(CLONE_NEWUSER) natively, then as x32 syscall 272|0x40000000 (and x32 getpid 39|0x40000000 to see whether the kernel has the ABI), each in a throwaway child";
    let run = |attempt: fn() -> i32| in_throwaway_child(attempt);
    let native = match run(|| super::kernel::exit_code(process::unshare(process::ns::USER))) {
        Ok(exit) => exit,
        Err(e) => {
            return Outcome::new(id, Verdict::Inconclusive, attempted)
                .observed(format!("fork: {e}"))
        }
    };
    if native == Some(Exit::Code(0)) {
        return Outcome::new(id, Verdict::NotApplicable, attempted)
            .observed("unshare(CLONE_NEWUSER) is allowed natively: nothing to bypass");
    }
    let abi = run(|| super::kernel::exit_code(attempt_kernel::getpid_x32()))
        .ok()
        .flatten();
    let x32 = run(|| super::kernel::exit_code(attempt_kernel::unshare_x32(process::ns::USER)))
        .ok()
        .flatten();
    let config = match x32_in_config() {
        Some(true) => "; /boot/config: CONFIG_X86_X32_ABI=y",
        Some(false) => "; /boot/config: CONFIG_X86_X32_ABI not set",
        None => "",
    };
    let facts = format!(
        "native unshare {}; x32 getpid {}; x32 unshare {}{config}",
        describe_exit(native),
        describe_exit(abi),
        describe_exit(x32)
    );
    match x32 {
        Some(Exit::Code(0)) => Outcome::new(id, Verdict::Escaped, attempted)
            .observed(format!("the x32 entry did what the native one may not: {facts}")),
        Some(Exit::Signal(31)) => Outcome::new(id, Verdict::Blocked, attempted)
            .observed(format!("the seccomp filter kills x32 calls: {facts}")),
        Some(Exit::Code(n)) if n == errno::ENOSYS => {
            let layer = match abi {
                Some(Exit::Code(n)) if n == errno::ENOSYS => {
                    "the kernel has no x32 ABI (x32 getpid is ENOSYS too), or a filter answers x32 calls with ENOSYS"
                }
                Some(Exit::Code(_)) => "a filter answers the x32 unshare with ENOSYS (the x32 ABI exists)",
                _ => "the kernel lacks the x32 ABI or a filter answers with ENOSYS",
            };
            Outcome::new(id, Verdict::Blocked, attempted)
                .errno(Some(errno_name(n)))
                .observed(format!("{layer}: {facts}"))
        }
        Some(Exit::Code(n)) if n == errno::EPERM || n == errno::EACCES => {
            refusal(id, attempted, n, None, &format!("refused through x32 as natively (a filter that checks the x32 bit, or the same kernel refusal): {facts}"))
        }
        _ => Outcome::new(id, Verdict::Inconclusive, attempted).observed(facts),
    }
}
