//! Running the runtimes' short helper commands (`--version`, `state`, `kill`, `delete`) with a hard
//! timeout, and finding processes a runtime left behind. Never waits without a bound.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
/// readers are abandoned after one more second if a grandchild keeps a pipe open.
pub(crate) fn capture(cmd: &mut Command, timeout: Duration) -> Result<Captured, EngineError> {
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| EngineError::Setup {
            step: format!("starting {program}"),
            message: e.to_string(),
        })?;
    let readers: Vec<mpsc::Receiver<String>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|pipe| {
        let (tx, rx) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
            });
        }
        rx
    })
    .collect();
    let status = wait_with_timeout(&mut child, timeout)?;
    let mut texts = readers
        .iter()
        .map(|rx| rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default());
    Ok(Captured {
        status,
        stdout: texts.next().unwrap_or_default(),
        stderr: texts.next().unwrap_or_default(),
    })
}

/// Waits for `child` up to `timeout`; kills it (SIGKILL) and reaps it after that.
pub(crate) fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<Option<ExitStatus>, EngineError> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            Ok(None) => std::thread::sleep(poll_interval(start.elapsed())),
            Err(e) => {
                return Err(EngineError::Setup {
                    step: "waiting for the runtime".into(),
                    message: e.to_string(),
                })
            }
        }
    }
}

/// Short sleeps first (most helper commands end within milliseconds), then 20 ms.
pub(crate) fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_millis(50) {
        Duration::from_millis(2)
    } else {
        Duration::from_millis(20)
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
