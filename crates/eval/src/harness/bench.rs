//! The benchmarks of one row, run inside its cell: start latency (`/bin/true`, `python3 -c pass`),
//! exec latency in a persistent sandbox (tiers that have them), the memory the sandbox machinery
//! holds, a syscall-heavy workload's slowdown against the cell itself, and sandboxes per second.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::rows::{self, RowId, EVAL_LIMITS};
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

fn quiet(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Milliseconds of each successful run of `argv`; None if it fails.
fn timings(argv: &[String], runs: u32) -> Option<Vec<f64>> {
    for _ in 0..3 {
        if !quiet(argv).status().ok()?.success() {
            return None;
        }
    }
    let mut samples = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        if !quiet(argv).status().ok()?.success() {
            return None;
        }
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Some(samples)
}

pub fn measure(row: RowId, agentbox: &str, root: &str, spec: &BenchSpec) -> Bench {
    let cmd = |argv: &[&str]| rows::command(row, agentbox, root, argv);
    let start_true = timings(&cmd(&["/bin/true"]), spec.runs).and_then(|s| Stats::of(&s));
    let start_python = timings(&cmd(&["python3", "-c", "pass"]), spec.runs.div_ceil(2))
        .and_then(|s| Stats::of(&s));
    let exec = (row == RowId::Ns)
        .then(|| exec_latency(agentbox, spec.runs))
        .flatten();
    Bench {
        start_true,
        start_python,
        exec,
        peak_memory_kib: machinery_memory(&cmd(&["sleep", "1"])),
        syscall_slowdown: syscall_slowdown(&cmd(&["python3", "-c", SYSCALLS])),
        start_rate_per_s: start_rate(&cmd(&["/bin/true"]), spec.rate_seconds),
    }
}

/// `agentbox exec` round trips into one persistent sandbox.
fn exec_latency(agentbox: &str, runs: u32) -> Option<Stats> {
    let mut create = vec![agentbox.to_string(), "create".into()];
    create.extend(EVAL_LIMITS.iter().map(|s| s.to_string()));
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
    let samples = timings(&exec, runs);
    let _ = quiet(&[agentbox.to_string(), "rm".into(), id]).status();
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
fn machinery_memory(argv: &[String]) -> Option<u64> {
    let mut child = quiet(argv).spawn().ok()?;
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

fn workload_seconds(argv: &[String]) -> Option<f64> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The workload's time in the sandbox over its time in the cell (median of three each).
fn syscall_slowdown(inside: &[String]) -> Option<f64> {
    let host: Vec<String> = ["python3", "-c", SYSCALLS]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let median = |argv: &[String]| {
        let mut v: Vec<f64> = (0..3).filter_map(|_| workload_seconds(argv)).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let (h, s) = (median(&host)?, median(inside)?);
    (h > 0.0).then(|| s / h)
}

/// Sandboxes started and finished per second by one worker per CPU for `seconds`.
fn start_rate(argv: &[String], seconds: f64) -> Option<f64> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let argv = argv.to_vec();
            std::thread::spawn(move || {
                let mut n = 0u32;
                while Instant::now() < deadline {
                    match quiet(&argv).status() {
                        Ok(s) if s.success() => n += 1,
                        _ => return None,
                    }
                }
                Some(n)
            })
        })
        .collect();
    let mut total = 0u32;
    for h in handles {
        total += h.join().ok().flatten()?;
    }
    Some(f64::from(total) / started.elapsed().as_secs_f64())
}
