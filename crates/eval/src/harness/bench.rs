//! The benchmarks of one row, run inside its cell: start latency (`/bin/true`, `python3 -c pass`),
//! exec latency in a persistent sandbox (tiers that have them), the memory the sandbox machinery
//! holds, a syscall-heavy workload's slowdown against the cell itself, and sandboxes per second.
//! Every run is a fresh sandbox (for the OCI runtimes a container under a fresh id, which `run`
//! deletes when it ends); what is timed is the sandbox's host command alone.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::rows;
use super::sandbox::Sandbox;
use crate::model::{Bench, Stats};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchSpec {
    /// Timed runs per start-latency measurement (after 3 warm-ups).
    pub runs: u32,
    /// Seconds of the start-rate measurement.
    pub rate_seconds: f64,
}

/// The syscall-heavy workload: 100 000 stat calls, timed by the workload itself (seconds).
const SYSCALLS: &str =
    "import os,time\nt=time.perf_counter()\nfor _ in range(100000): os.stat('/')\nprint(time.perf_counter()-t)";

/// Makes the process of one run (stdio unset): each call a fresh sandbox.
type Start<'a> = dyn Fn() -> Command + Sync + 'a;

/// The process of a host command.
fn host(argv: &[String]) -> impl Fn() -> Command + Sync + '_ {
    move || {
        let mut c = Command::new(argv.first().map_or("", String::as_str));
        c.args(argv.iter().skip(1));
        c
    }
}

/// The process of one run of `argv` (from `Sandbox::command`) in the row's sandbox.
fn sandboxed<'a>(sandbox: &'a Sandbox, argv: &'a [String]) -> impl Fn() -> Command + Sync + 'a {
    move || sandbox.process(argv).0
}

fn quiet(start: &Start) -> Command {
    let mut c = start();
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Milliseconds of each successful run; None if one fails.
fn timings(start: &Start, runs: u32) -> Option<Vec<f64>> {
    for _ in 0..3 {
        if !quiet(start).status().ok()?.success() {
            return None;
        }
    }
    let mut samples = Vec::new();
    for _ in 0..runs {
        let mut command = quiet(start);
        let began = Instant::now();
        if !command.status().ok()?.success() {
            return None;
        }
        samples.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    Some(samples)
}

pub fn measure(sandbox: &Sandbox, spec: &BenchSpec) -> Bench {
    let cmd = |argv: &[&str]| sandbox.command(argv).ok();
    let stats = |argv: &[&str], runs: u32| {
        let argv = cmd(argv)?;
        let samples = timings(&sandboxed(sandbox, &argv), runs)?;
        Stats::of(&samples)
    };
    let exec = sandbox
        .row
        .persistent()
        .then(|| exec_latency(sandbox, spec.runs))
        .flatten();
    // The microVM rows' image has no python3 (`sandbox::prepare_vm_image`): not measured there,
    // rather than booting VMs for commands that cannot run.
    let python = !sandbox.row.vm();
    Bench {
        start_true: stats(&["/bin/true"], spec.runs),
        start_python: python
            .then(|| stats(&["python3", "-c", "pass"], spec.runs.div_ceil(2)))
            .flatten(),
        exec,
        peak_memory_kib: cmd(&["sleep", "1"])
            .and_then(|argv| machinery_memory(&sandboxed(sandbox, &argv))),
        syscall_slowdown: python
            .then(|| cmd(&["python3", "-c", SYSCALLS]))
            .flatten()
            .and_then(|argv| syscall_slowdown(&sandboxed(sandbox, &argv))),
        start_rate_per_s: cmd(&["/bin/true"])
            .and_then(|argv| start_rate(&sandboxed(sandbox, &argv), spec.rate_seconds)),
    }
}

/// `agentbox exec` round trips into one persistent sandbox of the row's tier (for a microVM row,
/// one VM booted from the row's image).
fn exec_latency(sandbox: &Sandbox, runs: u32) -> Option<Stats> {
    let agentbox = sandbox.agentbox.as_str();
    let mut create = vec![agentbox.to_string(), "create".into()];
    create.extend(rows::agentbox_flags(sandbox.row, &sandbox.workdir));
    let out = Command::new(&create[0])
        .args(&create[1..])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || id.is_empty() {
        return None;
    }
    let exec: Vec<String> = [agentbox, "exec", &id, "--", "/bin/true"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let samples = timings(&host(&exec), runs);
    let rm = [agentbox.to_string(), "rm".into(), id];
    let _ = quiet(&host(&rm)).status();
    samples.and_then(|s| Stats::of(&s))
}

fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Pss:")
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Proportional memory of every process of the sandbox machinery while the command (`sleep 1`)
/// runs, the command itself excluded.
fn machinery_memory(start: &Start) -> Option<u64> {
    let mut child = quiet(start).spawn().ok()?;
    std::thread::sleep(Duration::from_millis(400));
    let root = child.id();
    let tree = descendants(root);
    let total: u64 = std::iter::once(root)
        .chain(tree.iter().copied())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| !c.starts_with(b"sleep\0"))
                .unwrap_or(false)
        })
        .map(pss_kib)
        .sum();
    let _ = child.wait();
    (total > 0).then_some(total)
}

fn descendants(root: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    Some((pid, super::posture::parent_from_stat(&stat)?))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.retain(|p| *p != root);
    found
}

fn workload_seconds(start: &Start) -> Option<f64> {
    let out = start()
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The workload's time in the sandbox over its time in the cell (median of three each).
fn syscall_slowdown(inside: &Start) -> Option<f64> {
    let outside: Vec<String> = ["python3", "-c", SYSCALLS]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let median = |start: &Start| {
        let mut v: Vec<f64> = (0..3).filter_map(|_| workload_seconds(start)).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let (h, s) = (median(&host(&outside))?, median(inside)?);
    (h > 0.0).then(|| s / h)
}

/// Sandboxes started and finished per second by one worker per CPU for `seconds`.
fn start_rate(start: &Start, seconds: f64) -> Option<f64> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let counts: Vec<Option<u32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(move || {
                    let mut n = 0u32;
                    while Instant::now() < deadline {
                        match quiet(start).status() {
                            Ok(s) if s.success() => n += 1,
                            _ => return None,
                        }
                    }
                    Some(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    let mut total = 0u32;
    for n in counts {
        total += n?;
    }
    Some(f64::from(total) / started.elapsed().as_secs_f64())
}
