//! Running the runtimes' short helper commands (`--version`, `state`, `kill`, `delete`) with a hard
//! timeout, and finding processes a runtime left behind. Never waits without a bound.

use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::wait::{ChildWait, Waited};
use crate::EngineError;

/// What a helper command printed and how it ended (`None`: killed at the timeout).
#[derive(Debug)]
pub(crate) struct Captured {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `cmd` with stdin closed and its output captured, killing it after `timeout`. The output
/// goes to two unlinked temporary files, not pipes: no reader thread is needed (this runs in
/// processes that fork sandboxes afterwards, which must stay single-threaded), and a grandchild
/// that keeps the output open (runsc's sandbox) cannot hold anything up.
pub(crate) fn capture(cmd: &mut Command, timeout: Duration) -> Result<Captured, EngineError> {
    let program = format!("{:?}", cmd.get_program());
    let setup = |step: &str, e: std::io::Error| EngineError::Setup {
        step: format!("{step} {program}"),
        message: e.to_string(),
    };
    let mut out = tempfile::tempfile().map_err(|e| setup("output file for", e))?;
    let mut err = tempfile::tempfile().map_err(|e| setup("output file for", e))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            out.try_clone().map_err(|e| setup("output of", e))?,
        ))
        .stderr(Stdio::from(
            err.try_clone().map_err(|e| setup("output of", e))?,
        ))
        .spawn()
        .map_err(|e| setup("starting", e))?;
    let status = wait_with_timeout(&mut child, timeout)?;
    let read = |file: &mut std::fs::File| {
        let mut text = String::new();
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.take(1 << 20).read_to_string(&mut text);
        text
    };
    Ok(Captured {
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
    })
}

/// Waits for `child` up to `timeout`; kills it (SIGKILL) and reaps it after that. Takes no
/// signal: those pending stay for the caller's own wait (`engine::serve` reaps on SIGCHLD).
pub(crate) fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<Option<ExitStatus>, EngineError> {
    let deadline = Instant::now() + timeout;
    let wait = ChildWait::exit_only(child)?;
    loop {
        match wait.next(child, Some(deadline))? {
            Waited::Exited(status) => return Ok(Some(status)),
            Waited::Deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            Waited::Signal(_) | Waited::ParentDied => {}
        }
    }
}

/// Pids of live processes whose command line mentions `needle` (a unique state path or
/// container id), this process excluded.
pub(crate) fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| u32::try_from(pid).is_ok_and(|p| p != me))
        .filter(|pid| {
            // Zombies have an empty cmdline and cannot be killed anyway.
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .split('\0')
                    .any(|arg| arg.contains(needle))
            })
        })
        .collect()
}

/// SIGKILLs every process whose command line mentions `needle`; returns how many there were.
pub(crate) fn kill_mentioning(needle: &str) -> usize {
    let pids = processes_mentioning(needle);
    for &pid in &pids {
        let _ = agentbox_sys::process::kill(pid, 9);
    }
    pids.len()
}
