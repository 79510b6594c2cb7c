//! `agentbox __probe [--context JSON] [--only ID,ID] [--list]`: runs the probes one by one, each in
//! a forked child with a time limit, and prints one JSON line per probe.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use agentbox_sys::process::{self, Exit, Fork};
use agentbox_sys::{fd, msg, signal};

use crate::probes::{all, Probe};
use crate::{Context, Outcome, Verdict};

/// The descriptors above stderr this program inherited (fd, link target), listed at the start of
/// [`main`] before the runner opens any of its own.
pub(crate) static INHERITED_FDS: OnceLock<Vec<(i32, String)>> = OnceLock::new();

/// Entry point; returns the exit code (0 when every probe ran, whatever it found).
pub fn main(args: &[String]) -> i32 {
    let _ = INHERITED_FDS.set(crate::probes::fs_fds::open_fds());
    let mut context = Context::default();
    let mut only: Option<Vec<String>> = None;
    let mut list = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--list" => list = true,
            "--context" if i + 1 < args.len() => {
                i += 1;
                match serde_json::from_str(&args[i]) {
                    Ok(c) => context = c,
                    Err(e) => {
                        eprintln!("agentbox probe: --context: {e}");
                        return 2;
                    }
                }
            }
            "--only" if i + 1 < args.len() => {
                i += 1;
                only = Some(args[i].split(',').map(str::to_string).collect());
            }
            other => {
                eprintln!("agentbox probe: unknown argument {other:?}");
                return 2;
            }
        }
        i += 1;
    }
    let probes: Vec<Probe> = all()
        .into_iter()
        .filter(|p| only.as_ref().is_none_or(|o| o.iter().any(|id| id == p.id)))
        .collect();
    let mut out = std::io::stdout().lock();
    for probe in &probes {
        let line = if list {
            serde_json::json!({"id": probe.id, "title": probe.title, "category": probe.category})
                .to_string()
        } else {
            serde_json::to_string(&run_one(probe, &context)).unwrap_or_default()
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return 1;
        }
    }
    0
}

/// Runs `probe` in a child of its own; the child's outcome, or why there is none.
fn run_one(probe: &Probe, context: &Context) -> Outcome {
    let failed =
        |why: String| Outcome::new(probe.id, Verdict::Inconclusive, "run the probe").observed(why);
    let (read, write) = match fd::pipe() {
        Ok(p) => p,
        Err(e) => return failed(format!("pipe: {e}")),
    };
    let child = match process::fork_single_threaded_program() {
        Err(e) => return failed(format!("fork: {e}")),
        Ok(Fork::Child) => {
            drop(read);
            let outcome = (probe.run)(context);
            let mut w = std::fs::File::from(write);
            let _ = w.write_all(
                serde_json::to_string(&outcome)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            process::exit_now(0)
        }
        Ok(Fork::Parent(pid)) => pid,
    };
    drop(write);
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_secs(probe.timeout_s.into());
    let mut reader = std::fs::File::from(read);
    let mut text = Vec::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        match msg::poll_readable(&[reader.as_raw_fd()], ms) {
            Ok(ready) if ready.first() == Some(&true) => {
                let mut buf = [0u8; 8192];
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => text.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if timed_out {
        let _ = process::kill(child, signal::SIGKILL);
    }
    let exit = process::wait(child, false).ok().flatten().map(|(_, e)| e);
    match serde_json::from_slice::<Outcome>(&text) {
        Ok(outcome) => outcome,
        Err(_) if timed_out => failed(format!("no result within {} s", probe.timeout_s)),
        Err(_) => match exit {
            Some(Exit::Signal(s)) => failed(format!("the probe died of signal {s}")),
            Some(Exit::Code(c)) => failed(format!("the probe exited with {c} and no result")),
            None => failed("the probe vanished".into()),
        },
    }
}
