//! The exit record of a run: how the command ended, and why.

use std::time::Duration;

use agentbox_sys::process::Exit;
use serde::Serialize;

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The command exited by itself (any code).
    Exited,
    /// A signal killed the command (not the OOM killer, not the timeout).
    Signaled,
    /// The wall-clock timeout killed the whole sandbox.
    Timeout,
    /// The kernel's OOM killer killed a process of the sandbox at the memory limit.
    OutOfMemory,
    /// wasm tier: the module used up its fuel (`limits.fuel`).
    FuelExhausted,
    /// wasm tier: the module trapped (unreachable, out-of-bounds access, stack overflow...).
    Trapped,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExitRecord {
    pub tier: &'static str,
    pub reason: Reason,
    /// The command's exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// What `agentbox run` exits with.
    pub exit_code: i32,
    pub duration_ms: u64,
    /// Processes killed by the OOM killer at the memory limit.
    pub oom_kills: u64,
    /// Forks refused because the pids limit was reached.
    pub pids_limit_hits: u64,
    /// Peak memory of the sandbox, when the cgroup reports it.
    pub memory_peak: Option<u64>,
}

impl ExitRecord {
    pub fn new(
        tier: &'static str,
        exit: Exit,
        timed_out: bool,
        duration: Duration,
        events: crate::cgroup::CgroupEvents,
    ) -> Self {
        let reason = if timed_out {
            Reason::Timeout
        } else if events.oom_kills > 0 {
            Reason::OutOfMemory
        } else if matches!(exit, Exit::Signal(_)) {
            Reason::Signaled
        } else {
            Reason::Exited
        };
        let (code, signal) = match exit {
            Exit::Code(c) => (Some(c), None),
            Exit::Signal(s) => (None, Some(s)),
        };
        let exit_code = if timed_out {
            crate::exit_code::TIMEOUT
        } else {
            exit.shell_code()
        };
        ExitRecord {
            tier,
            reason,
            code,
            signal,
            exit_code,
            duration_ms: duration.as_millis() as u64,
            oom_kills: events.oom_kills,
            pids_limit_hits: events.pids_limit_hits,
            memory_peak: events.memory_peak,
        }
    }

    /// One line for stderr when the run ended abnormally (limit, timeout); `None` for a plain exit.
    pub fn notice(&self, timeout: Option<Duration>) -> Option<String> {
        let mut parts = Vec::new();
        match self.reason {
            Reason::Timeout => parts.push(format!(
                "timed out after {}; the whole sandbox was killed",
                timeout.map(|t| format!("{:?}", t)).unwrap_or_default()
            )),
            Reason::OutOfMemory => parts.push(format!(
                "out of memory: the OOM killer ended {} process(es) at the memory limit",
                self.oom_kills
            )),
            Reason::FuelExhausted => {
                parts.push("the module ran out of fuel (limits.fuel) and was stopped".to_string())
            }
            Reason::Trapped => parts.push("the module trapped".to_string()),
            Reason::Exited | Reason::Signaled => {}
        }
        if self.pids_limit_hits > 0 {
            parts.push(format!(
                "the pids limit refused {} fork(s)",
                self.pids_limit_hits
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

impl ExitRecord {
    /// The record of a run that ended without a process exit status (the wasm tier).
    pub fn of_module(
        tier: &'static str,
        reason: Reason,
        code: Option<i32>,
        exit_code: i32,
        duration: Duration,
    ) -> Self {
        ExitRecord {
            tier,
            reason,
            code,
            signal: None,
            exit_code,
            duration_ms: duration.as_millis() as u64,
            oom_kills: 0,
            pids_limit_hits: 0,
            memory_peak: None,
        }
    }
}

/// The record as one line of JSON.
pub fn to_json(record: &ExitRecord) -> String {
    serde_json::to_string(record).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
