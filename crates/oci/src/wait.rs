//! Waiting for an engine's client process (runc, crun, runsc, systemd-nspawn) without polling: a
//! pidfd says when it exits, at once, and a signalfd hands over the signals the supervisor
//! forwards to the engine child (which has every signal blocked, as the supervisor that forked it
//! had) and the parent-death signal. A sleep-and-`try_wait` loop loses half its period on average
//! after every exit: ~1 ms at 2 ms, ~10 ms at 20 ms, which was the largest part of what the
//! nspawn tier added to systemd-nspawn.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::time::Instant;

use agentbox_sys::signal::{self, FORWARDED};
use agentbox_sys::{msg, process};

use crate::EngineError;

/// What ended a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The client exited (and is reaped).
    Exited(ExitStatus),
    /// The deadline passed first.
    Deadline,
    /// A signal from [`FORWARDED`] arrived.
    Signal(i32),
    /// The process that started this one (the supervisor) is gone: nobody will clean up after
    /// the sandbox but this process.
    ParentDied,
}

/// A wait on one child process.
pub struct ChildWait {
    pidfd: OwnedFd,
    /// None: signals are left to the caller.
    signals: Option<OwnedFd>,
    parent: i32,
}

fn failed(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Setup {
        step: format!("waiting for the engine: {what}"),
        message: e.to_string(),
    }
}

impl ChildWait {
    /// Starts watching `child`, which must not have been waited for yet (its pid cannot be reused
    /// while it is unreaped).
    pub fn new(child: &Child) -> Result<ChildWait, EngineError> {
        let mut wait = ChildWait::exit_only(child)?;
        wait.signals = Some(signal::signalfd().map_err(|e| failed("signalfd", e))?);
        Ok(wait)
    }

    /// Like [`ChildWait::new`], but [`ChildWait::next`] ends only at the exit or the deadline and
    /// takes no pending signal.
    pub fn exit_only(child: &Child) -> Result<ChildWait, EngineError> {
        let pid = i32::try_from(child.id()).map_err(|e| failed("pid", e))?;
        Ok(ChildWait {
            pidfd: process::pidfd_open(pid).map_err(|e| failed("pidfd_open", e))?,
            signals: None,
            parent: process::getppid(),
        })
    }

    /// Waits until `child` exits, `deadline` passes, a forwarded signal arrives or the parent
    /// dies, whichever is first. Signals that are not blocked in this thread are not seen here
    /// (they take their usual course).
    pub fn next(
        &self,
        child: &mut Child,
        deadline: Option<Instant>,
    ) -> Result<Waited, EngineError> {
        loop {
            if let Some(status) = child.try_wait().map_err(|e| failed("waitpid", e))? {
                return Ok(Waited::Exited(status));
            }
            let timeout_ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Waited::Deadline);
                    }
                    // Rounded up: a wake-up just before the deadline would only loop again.
                    i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                }
            };
            let Some(signals) = &self.signals else {
                msg::poll_readable(&[self.pidfd.as_raw_fd()], timeout_ms)
                    .map_err(|e| failed("poll", e))?;
                continue;
            };
            let fds = [self.pidfd.as_raw_fd(), signals.as_raw_fd()];
            let ready = msg::poll_readable(&fds, timeout_ms).map_err(|e| failed("poll", e))?;
            if !ready[1] {
                continue;
            }
            while let Some(received) = signal::read_signalfd(signals) {
                if process::getppid() != self.parent {
                    return Ok(Waited::ParentDied);
                }
                if FORWARDED.contains(&received.signo) {
                    return Ok(Waited::Signal(received.signo));
                }
            }
            if process::getppid() != self.parent {
                return Ok(Waited::ParentDied);
            }
        }
    }
}

/// How a process's own code treats a signal, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Caught,
    Ignored,
    Default,
}

/// The disposition of `signo` in process `pid`; `None` when the process is gone.
pub fn disposition(pid: i32, signo: i32) -> Option<Disposition> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(disposition_in(&status, signo))
}

/// [`disposition`] from the text of a `/proc/PID/status`.
pub fn disposition_in(status: &str, signo: i32) -> Disposition {
    let has = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| (1..=64).contains(&signo) && mask & (1 << (signo - 1)) != 0)
    };
    if has("SigCgt:") {
        Disposition::Caught
    } else if has("SigIgn:") {
        Disposition::Ignored
    } else {
        Disposition::Default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_are_read_from_the_masks() {
        // SIGTERM (15) caught, SIGINT (2) ignored, SIGHUP (1) neither.
        let status = "Name:\tx\nSigIgn:\t0000000000000002\nSigCgt:\t0000000000004000\n";
        assert_eq!(disposition_in(status, 15), Disposition::Caught);
        assert_eq!(disposition_in(status, 2), Disposition::Ignored);
        assert_eq!(disposition_in(status, 1), Disposition::Default);
        assert_eq!(disposition_in("garbage", 15), Disposition::Default);
    }

    #[test]
    fn a_child_that_exits_is_seen_at_once_and_a_deadline_is_kept() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.05")
            .spawn()
            .unwrap();
        let wait = ChildWait::new(&child).unwrap();
        let start = Instant::now();
        let soon = Some(start + std::time::Duration::from_millis(5));
        assert_eq!(wait.next(&mut child, soon).unwrap(), Waited::Deadline);
        assert!(start.elapsed() >= std::time::Duration::from_millis(5));
        match wait.next(&mut child, None).unwrap() {
            Waited::Exited(status) => assert!(status.success()),
            other => panic!("{other:?}"),
        }
    }
}
