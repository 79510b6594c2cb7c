//! Process creation (clone into new namespaces, fork), waiting, killing, and per-process prctl bits.

use std::time::Duration;

use crate::{check, SysError};

/// Namespace flags, re-exported so callers need not depend on libc.
pub mod ns {
    pub const USER: u64 = libc::CLONE_NEWUSER as u64;
    pub const MOUNT: u64 = libc::CLONE_NEWNS as u64;
    pub const PID: u64 = libc::CLONE_NEWPID as u64;
    pub const NET: u64 = libc::CLONE_NEWNET as u64;
    pub const IPC: u64 = libc::CLONE_NEWIPC as u64;
    pub const UTS: u64 = libc::CLONE_NEWUTS as u64;
    pub const CGROUP: u64 = libc::CLONE_NEWCGROUP as u64;
}

/// Which side of a fork we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Parent(i32),
    Child,
}

/// Number of threads of the current process, from /proc/self/stat.
fn thread_count() -> Result<usize, SysError> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| {
        SysError::new(
            "read",
            "/proc/self/stat",
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })?;
    // Field 20 (num_threads), counted after the parenthesised command name, which may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    after
        .split_whitespace()
        .nth(17)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| SysError::new("parse", "/proc/self/stat", libc::EINVAL))
}

/// Refuses, as [`fork_with_namespaces`] would, when this process has more than one thread: for
/// callers that check before they create anything a failed fork would have to undo.
pub fn require_single_thread() -> Result<(), SysError> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(SysError::new(
            "fork",
            format!("from a process with {threads} threads"),
            libc::EDEADLK,
        ));
    }
    Ok(())
}

/// Forks, optionally into new namespaces (`flags` from [`ns`]). Refuses to run in a multi-threaded
/// process: the child of a threaded fork may inherit locks held by threads that do not exist in it.
pub fn fork_with_namespaces(flags: u64) -> Result<Fork, SysError> {
    fork_checked(flags, thread_count()?)
}

/// A plain fork for a program that starts no thread before it forks (the escape probes), which may
/// run where /proc is absent (a bare chroot): refuses when /proc shows other threads, and trusts the
/// program's structure when there is no /proc to ask.
pub fn fork_single_threaded_program() -> Result<Fork, SysError> {
    match thread_count() {
        Ok(threads) => fork_checked(0, threads),
        Err(e) if e.errno() == libc::ENOENT => fork_checked(0, 1),
        Err(e) => Err(e),
    }
}

fn fork_checked(flags: u64, threads: usize) -> Result<Fork, SysError> {
    if threads != 1 {
        return Err(SysError::new(
            "fork",
            format!("from a process with {threads} threads"),
            libc::EDEADLK,
        ));
    }
    // SAFETY: the raw clone syscall with no new stack (0) behaves like fork: the child continues on
    // a copy of this address space. The process is single-threaded (checked by the callers), so no
    // other thread can hold a lock (allocator, stdio) that the child would inherit in a locked state.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD as u64) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match check(ret, "clone", || format!("flags {flags:#x}"))? {
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid as i32)),
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// How a child ended, from the status `waitpid`/`wait4` wrote.
    pub(crate) fn from_status(status: i32) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }

    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// Waits for `pid` (-1: any child). `Ok(None)` when `nohang` and nothing has exited, or when there
/// are no children left (ECHILD).
pub fn wait(pid: i32, nohang: bool) -> Result<Option<(i32, Exit)>, SysError> {
    let mut status = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 } | libc::__WALL;
    loop {
        // SAFETY: waitpid writes only to `status`, a valid i32 we own.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ret == -1 {
            let err = SysError::last("waitpid", pid.to_string());
            match err.errno() {
                libc::EINTR => continue,
                libc::ECHILD => return Ok(None),
                _ => return Err(err),
            }
        }
        if ret == 0 {
            return Ok(None);
        }
        return Ok(Some((ret, Exit::from_status(status))));
    }
}

/// Sends `signal` to `pid`. ESRCH (already gone) is not an error.
pub fn kill(pid: i32, signal: i32) -> Result<(), SysError> {
    // SAFETY: kill has no memory arguments.
    let ret = unsafe { libc::kill(pid, signal) };
    if ret == -1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) {
        return Err(SysError::last("kill", pid.to_string()));
    }
    Ok(())
}

/// A pidfd for `pid`: readable (POLLIN) once the process has exited; close-on-exec. The pid must be
/// a child not yet reaped (or otherwise known not to be reused) for the fd to mean that process.
pub fn pidfd_open(pid: i32) -> Result<std::os::fd::OwnedFd, SysError> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; it reads no memory.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = check(ret, "pidfd_open", || pid.to_string())?;
    let fd =
        i32::try_from(fd).map_err(|_| SysError::new("pidfd_open", pid.to_string(), libc::EBADF))?;
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { libc::getpid() }
}

pub fn getppid() -> i32 {
    // SAFETY: getppid has no arguments and cannot fail.
    unsafe { libc::getppid() }
}

/// Starts a new session (detaches from the controlling terminal).
pub fn setsid() -> Result<(), SysError> {
    // SAFETY: setsid has no arguments.
    let ret = unsafe { libc::setsid() };
    check(ret as libc::c_long, "setsid", String::new)?;
    Ok(())
}

fn prctl(option: libc::c_int, arg: libc::c_ulong, name: &'static str) -> Result<(), SysError> {
    // SAFETY: every option passed here (PDEATHSIG, NO_NEW_PRIVS, DUMPABLE, CHILD_SUBREAPER) takes
    // plain integers, no pointers.
    let ret = unsafe {
        libc::prctl(
            option,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check(ret as libc::c_long, "prctl", || name.to_string())?;
    Ok(())
}

/// Asks the kernel to send `signal` to this process when its parent dies.
pub fn set_parent_death_signal(signal: i32) -> Result<(), SysError> {
    prctl(
        libc::PR_SET_PDEATHSIG,
        signal as libc::c_ulong,
        "PR_SET_PDEATHSIG",
    )
}

/// Makes this process the reaper of its orphaned descendants (instead of the host's init), so
/// that processes an engine leaves when its driver dies are reparented here and reaped.
pub fn set_child_subreaper() -> Result<(), SysError> {
    prctl(libc::PR_SET_CHILD_SUBREAPER, 1, "PR_SET_CHILD_SUBREAPER")
}

/// Sets `no_new_privs`: execve can never grant privileges again (setuid bits, file caps).
pub fn set_no_new_privs() -> Result<(), SysError> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
}

/// Makes the process non-dumpable: no core dumps, /proc/PID files owned by root, no ptrace attach.
pub fn set_dumpable(dumpable: bool) -> Result<(), SysError> {
    prctl(
        libc::PR_SET_DUMPABLE,
        dumpable as libc::c_ulong,
        "PR_SET_DUMPABLE",
    )
}

/// Leaves the calling process's namespaces of the given kinds for new ones.
pub fn unshare(flags: u64) -> Result<(), SysError> {
    // SAFETY: unshare takes only flags.
    let ret = unsafe { libc::unshare(flags as libc::c_int) };
    check(ret as libc::c_long, "unshare", || format!("{flags:#x}"))?;
    Ok(())
}

/// Sets the hostname of the current UTS namespace.
pub fn set_hostname(name: &str) -> Result<(), SysError> {
    // SAFETY: the pointer and length describe `name`'s bytes, valid for the call.
    let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    check(ret as libc::c_long, "sethostname", || name.to_string())?;
    Ok(())
}

/// Exits immediately without running destructors or flushing stdio (the child side of a fork).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// Sleeps, resuming after signals until `d` has passed.
pub fn sleep(d: Duration) {
    std::thread::sleep(d);
}

/// Moves the calling process into the namespaces (`flags` from [`ns`]) of process `pid`, through a
/// pidfd so that the pid cannot be recycled in between.
pub fn join_namespaces_of(pid: i32, flags: u64) -> Result<(), SysError> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = check(fd, "pidfd_open", || pid.to_string())? as i32;
    // SAFETY: `fd` is the pidfd just opened; setns takes it and integer flags.
    let ret = unsafe { libc::setns(fd, flags as libc::c_int) };
    let result = check(ret as libc::c_long, "setns", || {
        format!("{flags:#x} of {pid}")
    });
    // SAFETY: `fd` was opened above and is not used after this.
    unsafe { libc::close(fd) };
    result.map(|_| ())
}
