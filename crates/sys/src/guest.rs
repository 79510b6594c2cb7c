//! Syscalls only the microVM guest agent (PID 1 of the guest) needs: reaping any child with its
//! resource use, flushing disks and rebooting. Thin wrappers; the agent decides when.

use std::time::Duration;

use crate::process::Exit;
use crate::SysError;

/// Resource use of a reaped child (and of the descendants it waited for), from wait4's rusage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildUsage {
    pub max_rss_kb: u64,
    pub user: Duration,
    pub system: Duration,
}

/// Waits until some child has exited and returns its pid **without reaping it** (waitid with
/// WNOWAIT), so the caller can decide who reaps it. `Ok(None)` when there are no children.
pub fn wait_exited_any() -> Result<Option<i32>, SysError> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `info`, which outlives the call.
        let ret = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::__WALL,
            )
        };
        if ret == -1 {
            let err = SysError::last("waitid", "any child");
            match err.errno() {
                libc::EINTR => continue,
                libc::ECHILD => return Ok(None),
                _ => return Err(err),
            }
        }
        // SAFETY: waitid succeeded with WEXITED, so `info` describes a child and si_pid is set.
        let pid = unsafe { info.si_pid() };
        return Ok(Some(pid));
    }
}

/// Reaps `pid` if it has exited (never blocks) and returns how it ended with its resource use.
/// `Ok(None)` when it has not exited or is not (or no longer) our child.
pub fn reap_with_usage(pid: i32) -> Result<Option<(Exit, ChildUsage)>, SysError> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 writes only into `status` and `usage`, both owned by this frame.
        let ret =
            unsafe { libc::wait4(pid, &mut status, libc::WNOHANG | libc::__WALL, &mut usage) };
        if ret == -1 {
            let err = SysError::last("wait4", pid.to_string());
            match err.errno() {
                libc::EINTR => continue,
                libc::ECHILD => return Ok(None),
                _ => return Err(err),
            }
        }
        if ret == 0 {
            return Ok(None);
        }
        let exit = if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        };
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        return Ok(Some((
            exit,
            ChildUsage {
                max_rss_kb: usage.ru_maxrss.max(0) as u64,
                user: time(usage.ru_utime),
                system: time(usage.ru_stime),
            },
        )));
    }
}

/// Flushes every filesystem's dirty data to its device.
pub fn sync_all() {
    // SAFETY: sync has no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// reboot(RB_AUTOBOOT): restarts the machine at once (a microVM started with `reboot=t` and QEMU
/// `-no-reboot` ends). Needs CAP_SYS_BOOT; returns only on failure. Call [`sync_all`] first.
pub fn reboot_now() -> SysError {
    // SAFETY: reboot with RB_AUTOBOOT takes no pointers; on success it does not return.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    SysError::last("reboot", "RB_AUTOBOOT")
}
