//! Raw attempts of the escape probes (filesystem, processes, devices, resources), each a thin wrapper
//! that reports the errno. Nothing here chooses a target: the probe crate passes only objects the
//! harness planted (the sentinel's pid after checking its command line, files under the scratch
//! directory). The wrappers that act on another process refuse pids 0, 1 and negative ones, so no
//! call here can reach a process group, every process, or init.

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::path::Path;
use std::time::Duration;

use crate::{check, cstring, SysError};

/// For `OpenOptions::custom_flags`: open without blocking (devices such as /dev/kmsg).
pub const O_NONBLOCK: i32 = libc::O_NONBLOCK;

/// The symbolic name of an errno value (`EPERM`), for the common ones.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::EDEADLK => "EDEADLK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EDQUOT => "EDQUOT",
        libc::EMEDIUMTYPE => "EMEDIUMTYPE",
        libc::ECANCELED => "ECANCELED",
        libc::EOWNERDEAD => "EOWNERDEAD",
        _ => return None,
    })
}

/// Changes the working directory to the directory open at `fd` (which may lie outside the root).
pub fn fchdir(fd: RawFd) -> Result<(), SysError> {
    // SAFETY: fchdir takes an integer; an fd that is not open or not a directory fails with
    // EBADF/ENOTDIR and changes nothing.
    let ret = unsafe { libc::fchdir(fd) };
    check(ret as libc::c_long, "fchdir", || format!("fd {fd}"))?;
    Ok(())
}

/// Whether descriptor `fd` is open in this process (`fcntl(F_GETFD)`); opens nothing itself.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no third argument and only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Creates a character device node `path` (mode 0600) for device `major:minor`.
pub fn mknod_char(path: &Path, major: u32, minor: u32) -> Result<(), SysError> {
    let c = cstring(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a NUL-terminated string owned by this frame; mode and dev are integers.
    let ret = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, dev) };
    check(ret as libc::c_long, "mknod", || {
        format!("{} c {major} {minor}", path.display())
    })?;
    Ok(())
}

/// Refuses the pids that would not name one other process: 0 (the caller's group), negative (a
/// group, or every process for -1) and 1 (init).
fn one_process(op: &'static str, pid: i32) -> Result<(), SysError> {
    if pid <= 1 {
        return Err(SysError::new(
            op,
            format!("refused pid {pid}"),
            libc::EINVAL,
        ));
    }
    Ok(())
}

/// Sends `signal` to the single process `pid` (> 1). Unlike `process::kill`, ESRCH is an error.
pub fn kill_one(pid: i32, signal: i32) -> Result<(), SysError> {
    one_process("kill", pid)?;
    // SAFETY: kill takes integers; `pid` > 1 names exactly one process.
    let ret = unsafe { libc::kill(pid, signal) };
    check(ret as libc::c_long, "kill", || {
        format!("{pid} signal {signal}")
    })?;
    Ok(())
}

/// `PTRACE_SEIZE` with no options: attaches without stopping the tracee.
pub fn ptrace_seize(pid: i32) -> Result<(), SysError> {
    one_process("ptrace", pid)?;
    // SAFETY: PTRACE_SEIZE takes the pid, a null address and an options word of 0; no memory of
    // ours is read or written.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    check(ret, "ptrace", || format!("PTRACE_SEIZE {pid}"))?;
    Ok(())
}

/// `PTRACE_INTERRUPT`: stops a seized tracee, so that it can be detached.
pub fn ptrace_interrupt(pid: i32) -> Result<(), SysError> {
    one_process("ptrace", pid)?;
    // SAFETY: PTRACE_INTERRUPT takes the pid and ignores address and data.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_INTERRUPT,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    check(ret, "ptrace", || format!("PTRACE_INTERRUPT {pid}"))?;
    Ok(())
}

/// `PTRACE_DETACH`, resuming the tracee with no signal (it must be in a ptrace stop).
pub fn ptrace_detach(pid: i32) -> Result<(), SysError> {
    one_process("ptrace", pid)?;
    // SAFETY: PTRACE_DETACH takes the pid, an ignored address and a signal number of 0.
    let ret = unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    check(ret, "ptrace", || format!("PTRACE_DETACH {pid}"))?;
    Ok(())
}

/// Waits for a state change of `pid`, which may be a tracee rather than a child, at most
/// `timeout` (polling with WNOHANG). `Ok(false)` when nothing happened in time.
pub fn wait_tracee(pid: i32, timeout: Duration) -> Result<bool, SysError> {
    one_process("waitpid", pid)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`, an i32 owned by this frame.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        if ret == -1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(SysError::last("waitpid", pid.to_string()));
        }
        if ret > 0 {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads `len` bytes at `address` in process `pid` (`process_vm_readv`); returns what was read.
pub fn read_process_memory(pid: i32, address: u64, len: usize) -> Result<Vec<u8>, SysError> {
    one_process("process_vm_readv", pid)?;
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: address as usize as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes `buf`, writable for its whole length and alive for the call. The
    // remote iovec is only an address in the other process, which the kernel checks (EFAULT); it is
    // never dereferenced in ours.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    let n = check(n as libc::c_long, "process_vm_readv", || {
        format!("{pid} at {address:#x}")
    })?;
    buf.truncate(n as usize);
    Ok(buf)
}

/// The node name of `uname(2)` (the hostname of the caller's UTS namespace).
pub fn nodename() -> Result<String, SysError> {
    // SAFETY: an all-zero utsname is a valid out-parameter.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes only into `uts`, which outlives the call.
    let ret = unsafe { libc::uname(&mut uts) };
    check(ret as libc::c_long, "uname", String::new)?;
    // SAFETY: the kernel NUL-terminates nodename within its fixed-size array, and `uts` lives
    // until the string is copied out.
    let name = unsafe { CStr::from_ptr(uts.nodename.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// CPU time (user + system) used so far by every thread of this process, ended ones included.
pub fn cpu_time_self() -> Result<Duration, SysError> {
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `usage`, which outlives the call.
    let ret = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    check(ret as libc::c_long, "getrusage", || "RUSAGE_SELF".into())?;
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Ok(Duration::from_micros(
        micros(usage.ru_utime) + micros(usage.ru_stime),
    ))
}

/// Ignores SIGXFSZ, so that a write beyond `RLIMIT_FSIZE` fails with EFBIG instead of killing.
pub fn ignore_file_size_signal() -> Result<(), SysError> {
    // SAFETY: SIG_IGN is a valid disposition for SIGXFSZ; no handler code is installed.
    let old = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    if old == libc::SIG_ERR {
        return Err(SysError::last("signal", "SIGXFSZ ignore"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_common_errnos() {
        assert_eq!(errno_name(libc::EPERM), Some("EPERM"));
        assert_eq!(errno_name(libc::ENOSPC), Some("ENOSPC"));
        assert_eq!(errno_name(libc::EAGAIN), Some("EAGAIN"));
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_name(100_000), None);
    }

    #[test]
    fn refuses_group_and_broadcast_pids() {
        for pid in [-1, 0, 1, -42] {
            assert_eq!(kill_one(pid, 0).unwrap_err().errno(), libc::EINVAL);
            assert_eq!(ptrace_seize(pid).unwrap_err().errno(), libc::EINVAL);
            assert_eq!(
                read_process_memory(pid, 0x1000, 8).unwrap_err().errno(),
                libc::EINVAL
            );
        }
    }

    #[test]
    fn reads_own_nodename_and_cpu_time() {
        assert!(!nodename().unwrap().is_empty());
        cpu_time_self().unwrap();
    }
}
