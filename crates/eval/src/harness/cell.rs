//! One row's evaluation, run as `agentbox __eval-cell` inside a throwaway pid and mount namespace
//! of its own (`unshare --fork --pid --mount --mount-proc`): the cell is that namespace's pid 1.
//! It prepares what the row's sandbox needs (`Sandbox`: a root, OCI bundles, a /run and a cgroup
//! of its own), starts the sentinel, runs the probes in the row's sandbox while it reads the
//! sandboxed process's posture from /proc, checks the sentinel, runs the benchmarks, removes what
//! the runtimes made (containers, cgroups), and prints one JSON `CellResult`. Whatever a probe of
//! a weak row does to processes or mounts stays inside this namespace and dies with it; the cell
//! changes mounts only inside it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentbox_probe::{Context, Outcome};
use serde::{Deserialize, Serialize};

use super::bench::{self, BenchSpec};
use super::posture;
use super::rows::{self, RowId, PROBE_IN_SANDBOX};
use super::sandbox::reap_orphans;
use super::sandbox::Sandbox;
use crate::model::{Bench, Posture};

/// The argument of the sentinel's command line that marks it (`agentbox __sentinel MARKER`).
pub const SENTINEL_SUBCOMMAND: &str = "__sentinel";
pub const CELL_SUBCOMMAND: &str = "__eval-cell";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellSpec {
    pub row: RowId,
    /// The agentbox binary on the host: the probe, the sentinel and the `run` of agentbox rows.
    pub agentbox: String,
    /// The host work directory of this row (canaries, the root of `peer:chroot`).
    pub workdir: String,
    /// The probes' context; the cell fills in the sentinel's pid and the scratch dir.
    pub context: Context,
    pub only: Option<Vec<String>>,
    pub bench: Option<BenchSpec>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CellResult {
    pub outcomes: Vec<Outcome>,
    /// The probe program's exit code and stderr (bounded), for diagnostics.
    pub exit: Option<i32>,
    pub stderr: String,
    pub posture: Option<Posture>,
    /// Alive after the probes, and whether anything was tracing it at the end.
    pub sentinel_alive: bool,
    pub sentinel_traced: bool,
    pub bench: Option<Bench>,
    /// Set when the cell itself failed (the row is then inconclusive).
    pub error: Option<String>,
}

/// `agentbox __sentinel MARKER`: sleeps until killed.
pub fn sentinel_main() -> i32 {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// `agentbox __eval-cell`: reads a `CellSpec` on stdin, prints a `CellResult`.
pub fn cell_main() -> i32 {
    // The cell stands for the host: the sandbox must inherit no descriptor but 0-2 from it (the
    // caller of `agentbox eval` may hold others, which peers without fd hygiene would pass on).
    let _ = agentbox_sys::fd::close_all_except(&[0, 1, 2]);
    let mut text = String::new();
    let result = match std::io::stdin().read_to_string(&mut text) {
        Err(e) => CellResult {
            error: Some(format!("read spec: {e}")),
            ..Default::default()
        },
        Ok(_) => match serde_json::from_str::<CellSpec>(&text) {
            Err(e) => CellResult {
                error: Some(format!("spec: {e}")),
                ..Default::default()
            },
            Ok(spec) => run_cell(&spec).unwrap_or_else(|e| CellResult {
                error: Some(e),
                ..Default::default()
            }),
        },
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(&result).unwrap_or_default()
    );
    0
}

fn run_cell(spec: &CellSpec) -> Result<CellResult, String> {
    let mut sandbox = Sandbox::prepare(spec)?;
    let scratch = rows::scratch(spec.row, &spec.workdir);
    let marker = spec.context.sentinel_marker.clone();
    let mut sentinel = Command::new(&spec.agentbox)
        .args([SENTINEL_SUBCOMMAND, &marker])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("sentinel: {e}"))?;
    let mut context = spec.context.clone();
    context.sentinel_pid = i32::try_from(sentinel.id()).unwrap_or(0);
    context.scratch = scratch.clone().into();
    let context_json = serde_json::to_string(&context).map_err(|e| e.to_string())?;
    let result = probes_run(&sandbox, &context_json, spec.only.as_deref());
    let sentinel_alive = matches!(sentinel.try_wait(), Ok(None));
    let sentinel_traced = posture::tracer_of(sentinel.id()).is_some_and(|t| t != 0);
    let _ = sentinel.kill();
    let _ = sentinel.wait();
    let (outcomes, exit, stderr, posture) = result?;
    let bench = spec.bench.as_ref().map(|b| bench::measure(&sandbox, b));
    sandbox.clean_up();
    reap_orphans();
    Ok(CellResult {
        outcomes,
        exit,
        stderr,
        posture,
        sentinel_alive,
        sentinel_traced,
        bench,
        error: None,
    })
}

type ProbeRun = (Vec<Outcome>, Option<i32>, String, Option<Posture>);

/// Fresh sandboxes for the probes after the sandbox died under one.
const RESTARTS: usize = 4;

/// Runs the probes (`only`, in order). When the sandbox dies under one before the others ran (a
/// runtime that ends the whole sandbox at its pids or memory limit), the remaining ones run in a
/// fresh sandbox: the probe that was running stays without a result (inconclusive), the others
/// still get theirs. The posture is the first run's; stderr is every run's.
fn probes_run(
    sandbox: &Sandbox,
    context_json: &str,
    only: Option<&[String]>,
) -> Result<ProbeRun, String> {
    let mut pending = only.map(<[String]>::to_vec);
    let (mut all, mut exit, mut stderr, mut posture) = (Vec::new(), None, String::new(), None);
    for round in 0..=RESTARTS {
        let joined = pending.as_ref().map(|p| p.join(","));
        let mut argv = vec![PROBE_IN_SANDBOX, "__probe", "--context", context_json];
        if let Some(joined) = &joined {
            argv.extend(["--only", joined]);
        }
        let command = sandbox.command(&argv)?;
        let (outcomes, code, err, seen) = probe_run(sandbox, &command)?;
        posture = posture.or(seen);
        exit = code;
        stderr.push_str(&err);
        let produced = !outcomes.is_empty();
        let Some(list) = pending.as_mut() else {
            all.extend(outcomes);
            break;
        };
        list.retain(|id| !outcomes.iter().any(|o| &o.id == id));
        all.extend(outcomes);
        // Ran to the end, or never started: nothing to resume.
        if code == Some(0) || list.is_empty() || (round == 0 && !produced) {
            break;
        }
        let died_under = list.remove(0);
        stderr.push_str(&format!(
            "\n[the sandbox ended during {died_under} (exit {code:?}); the remaining probes run in a fresh one]\n"
        ));
        if list.is_empty() {
            break;
        }
    }
    bound(&mut stderr, 4000);
    Ok((all, exit, stderr, posture))
}

/// Runs the probe command, reading the sandboxed probe's posture while it runs; then deletes its
/// container (OCI rows).
fn probe_run(sandbox: &Sandbox, command: &[String]) -> Result<ProbeRun, String> {
    // A terminal the cell owns, as the probe's stdin: TIOCSTI has something to aim at. Not for
    // a microVM: no host terminal reaches a guest (its stdin is a stream over the guest
    // channel), and `agentbox run --tier microvm` waits for its stdin's end, which a terminal
    // never gives.
    let pty = (!sandbox.row.vm())
        .then(|| agentbox_sys::pty::open_pair(Path::new("/dev/ptmx")).ok())
        .flatten();
    let stdin = match &pty {
        Some((_, slave)) => slave
            .try_clone()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null()),
        None => Stdio::null(),
    };
    let (mut process, container) = sandbox.process(command);
    let mut child = process
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", command.first().map_or("", String::as_str)))?;
    let root = child.id();
    let gvisor = sandbox.row.gvisor();
    let vm = sandbox.row.vm();
    let watcher = std::thread::spawn(move || {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        while Instant::now() < deadline {
            // A microVM's payload is no host process: QEMU is, once it has set itself up (its
            // jail and seccomp sandbox apply before the guest boots; a second in, they have).
            if vm {
                if let Some(qemu) = posture::find_qemu(root) {
                    std::thread::sleep(Duration::from_millis(1000));
                    return posture::read_qemu(qemu);
                }
            }
            // The probe at any depth below the run: agentbox's engine tiers run it as a
            // grandchild or deeper (agentbox, its engine child, the runtime, the container).
            if let Some(p) = posture::find_probe(root).and_then(posture::read) {
                return Some(p);
            }
            // gVisor's payload is no host process: the sentry that runs it is what the host has.
            if gvisor {
                let settled = started.elapsed() > Duration::from_secs(3);
                if let Some((sentry, gofer)) = posture::find_sentry(root, settled) {
                    // The sentry and the gofer confine themselves (seccomp, no_new_privs) while
                    // the payload starts: the last reading within a second, while they last.
                    let mut last = posture::read_sentry(sentry, gofer);
                    let until = Instant::now() + Duration::from_secs(1);
                    while last.is_some() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(50));
                        match posture::read_sentry(sentry, gofer) {
                            Some(p) if gofer.is_none() || p.note_names_gofer() => last = Some(p),
                            _ => break,
                        }
                    }
                    if last.is_some() {
                        return last;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    });
    let stderr_reader = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    });
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let mut stderr = stderr_reader
        .and_then(|t| t.join().ok())
        .unwrap_or_default();
    let status = child.wait().map_err(|e| e.to_string());
    if let Some(id) = &container {
        sandbox.delete(id);
    }
    let status = status?;
    let posture = watcher.join().ok().flatten();
    drop(pty);
    let outcomes = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Outcome>(l).ok())
        .collect();
    bound(&mut stderr, 2000);
    Ok((outcomes, status.code(), stderr, posture))
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn bound(text: &mut String, max: usize) {
    if text.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_are_cut_at_a_character_boundary() {
        let mut text = "ab\u{e9}".repeat(3);
        bound(&mut text, 3);
        assert_eq!(text, "ab");
        let mut short = "ok".to_string();
        bound(&mut short, 10);
        assert_eq!(short, "ok");
    }
}
