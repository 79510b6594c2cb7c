//! Signal handling without handlers: signals are blocked and taken synchronously with
//! `sigtimedwait`, so the supervisor and the sandbox init are plain loops with no async-signal rules.

use std::time::Duration;

use crate::SysError;

pub use libc::{SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH};

/// Signals a user or a caller may send to agentbox (`kill`, `timeout`, a terminal's ^C), passed on
/// to the sandbox's command by every tier.
pub const FORWARDED: &[i32] = &[SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2];

/// A saved signal mask, to restore in a child before it execs.
#[derive(Clone, Copy)]
pub struct SavedMask(libc::sigset_t);

/// Blocks every signal in the calling thread and returns the previous mask.
pub fn block_all() -> Result<SavedMask, SysError> {
    // SAFETY: `all` and `old` are plain sigset_t values owned by this frame; sigfillset initialises
    // `all`, and sigprocmask writes the old mask into `old`.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        if libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old) == -1 {
            return Err(SysError::last("sigprocmask", "block all"));
        }
        Ok(SavedMask(old))
    }
}

/// Before execve: restores the mask saved by [`block_all`] and the default SIGPIPE disposition,
/// which the Rust runtime sets to "ignore" at start-up and execve would pass on to the command.
/// agentbox installs no signal handler, so no other disposition needs resetting; dispositions the
/// caller of agentbox chose (an ignored SIGHUP under nohup) pass through, as with any exec.
pub fn prepare_exec(mask: SavedMask) -> Result<(), SysError> {
    // SAFETY: SIG_DFL is a valid disposition for SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    restore(mask)
}

/// Restores a mask saved by [`block_all`].
pub fn restore(mask: SavedMask) -> Result<(), SysError> {
    // SAFETY: `mask.0` is a sigset_t obtained from sigprocmask.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut()) } == -1 {
        return Err(SysError::last("sigprocmask", "restore"));
    }
    Ok(())
}

/// A signal taken by [`wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub signo: i32,
    /// The sender's pid (for SIGCHLD, the child's).
    pub pid: i32,
}

/// Waits for any (blocked) signal, at most `timeout`. `Ok(None)` on timeout.
pub fn wait(timeout: Option<Duration>) -> Result<Option<Received>, SysError> {
    // SAFETY: `set` and `info` are owned by this frame; sigfillset initialises `set`; sigtimedwait
    // writes `info`; `ts` outlives the call. A null timeout pointer means wait forever.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        let signo = libc::sigtimedwait(&set, &mut info, ts_ptr);
        if signo == -1 {
            let err = SysError::last("sigtimedwait", "");
            return match err.errno() {
                libc::EAGAIN => Ok(None),
                libc::EINTR => Ok(Some(Received { signo: 0, pid: 0 })),
                _ => Err(err),
            };
        }
        Ok(Some(Received {
            signo,
            pid: info.si_pid(),
        }))
    }
}

/// A signalfd for every (blocked) signal: readable when one is pending; read it with
/// [`read_signalfd`]. Non-blocking, close-on-exec.
pub fn signalfd() -> Result<std::os::fd::OwnedFd, SysError> {
    use std::os::fd::FromRawFd;
    // SAFETY: `set` is initialised by sigfillset; signalfd reads it for the call.
    let fd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
    };
    if fd == -1 {
        return Err(SysError::last("signalfd", ""));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Takes one pending signal from a signalfd, if any.
pub fn read_signalfd(fd: &std::os::fd::OwnedFd) -> Option<Received> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero signalfd_siginfo is valid; read fills at most its size.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of `size` bytes.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (n as usize == size).then_some(Received {
        signo: info.ssi_signo as i32,
        pid: info.ssi_pid as i32,
    })
}
