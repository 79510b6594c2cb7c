//! Resource limits, proven for real on this host's cgroups: the pids limit stops a fork bomb with
//! the host unaffected, the OOM killer ends a memory hog and the run says so, the timeout kills the
//! whole tree, and the cgroup files hold the policy's values while the sandbox runs.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::time::{Duration, Instant};

fn record(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn record_file() -> tempfile::NamedTempFile {
    tempfile::Builder::new()
        .prefix("record-")
        .suffix(".json")
        .tempfile()
        .unwrap()
}

#[test]
fn a_fork_bomb_is_stopped_by_the_pids_limit_and_the_host_is_unaffected() {
    let rec = record_file();
    let started = Instant::now();
    let child = agentbox(&[
        "run",
        "--pids",
        "64",
        "--timeout",
        "4s",
        "--exit-record",
        rec.path().to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "bomb() { bomb | bomb & }; bomb; sleep 10",
    ])
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // While the bomb runs, the host still forks and execs freely.
    let host = std::process::Command::new("/bin/true").status().unwrap();
    assert!(host.success());
    let supervisor = child.id();
    let inside = descendants(supervisor).len();
    // stderr is drained below; the bomb's error messages go there.
    assert!(
        inside <= 64 + 1,
        "{inside} processes in a sandbox limited to 64 (plus the supervisor's view)"
    );
    // Drains stderr while waiting: the bomb's "cannot fork" messages would fill the pipe.
    let output = child.wait_with_output().unwrap();
    let status = output.status;
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(status.code(), Some(124), "{err}");
    let r = record(rec.path());
    assert!(r["pids_limit_hits"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["reason"], "timeout", "{r}");
    assert!(err.contains("pids limit"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(descendants(supervisor).is_empty());
}

#[test]
fn a_memory_hog_is_oom_killed_and_the_run_says_so() {
    let rec = record_file();
    let o = run(&[
        "--memory",
        "64M",
        "--exit-record",
        rec.path().to_str().unwrap(),
        "--",
        "python3",
        "-c",
        "x = b'x' * (512 << 20); print('survived')",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(!stdout(&o).contains("survived"));
    assert!(stderr(&o).contains("out of memory"), "{}", stderr(&o));
    let r = record(rec.path());
    assert_eq!(r["reason"], "out_of_memory", "{r}");
    assert!(r["oom_kills"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["signal"], 9, "{r}");
    let peak = r["memory_peak"].as_u64().unwrap();
    assert!(peak <= 64 << 20, "peak {peak} above the limit");
    assert!(
        peak > 32 << 20,
        "peak {peak}: the hog never got near the limit"
    );
}

#[test]
fn memory_within_the_limit_is_fine() {
    let o = python(
        &["--memory", "256M"],
        "x = b'x' * (64 << 20); print(len(x))",
    );
    assert_eq!(ok(o).trim(), (64u64 << 20).to_string());
}

#[test]
fn the_timeout_kills_the_whole_tree() {
    let marker = format!("{}.{}", 800 + std::process::id() % 97, 7);
    let started = Instant::now();
    let o = sh(
        &["--timeout", "1s"],
        &format!("sleep {marker} & (sleep {marker} &) ; sh -c 'sleep {marker}' & wait"),
    );
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        pids_running(&["sleep", &marker]).is_empty(),
        "sleepers outlived the timeout"
    );
}

#[test]
fn the_chroot_tier_timeout_kills_the_whole_tree_too() {
    let marker = format!("{}.{}", 700 + std::process::id() % 97, 3);
    let o = sh(
        &["--tier", "chroot", "--timeout", "1s"],
        &format!("(sleep {marker} &) ; sleep {marker}"),
    );
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(
        pids_running(&["sleep", &marker]).is_empty(),
        "chroot sleepers outlived the timeout"
    );
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn cgroup_files_hold_the_policy_while_the_sandbox_runs() {
    let mut running = spawn_ready(&[
        "--memory",
        "96M",
        "--pids",
        "50",
        "--cpus",
        "0.2",
        "--",
        "sh",
        "-c",
        "echo ready; while :; do :; done",
    ]);
    let supervisor = running.child.id();
    std::thread::sleep(Duration::from_millis(1200));
    let dirs = sandbox_cgroups(supervisor);
    let find = |controller: &str| {
        dirs.iter()
            .find(|d| d.starts_with(format!("/sys/fs/cgroup/{controller}")))
            .cloned()
    };
    let memory = find("memory").expect("memory cgroup");
    let pids = find("pids").expect("pids cgroup");
    let cpu = find("cpu").expect("cpu cgroup");
    assert_eq!(
        read(&memory.join("memory.limit_in_bytes")),
        (96u64 << 20).to_string()
    );
    if memory.join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(
            read(&memory.join("memory.memsw.limit_in_bytes")),
            (96u64 << 20).to_string()
        );
    }
    assert_eq!(read(&pids.join("pids.max")), "50");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "20000");
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    // The busy loop is really throttled.
    let stat = read(&cpu.join("cpu.stat"));
    let throttled: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(throttled > 0, "{stat}");
    // Every process of the sandbox is in the cgroups.
    let procs = read(&pids.join("cgroup.procs"));
    for pid in descendants(supervisor) {
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} is not in {procs}"
        );
    }
    let _ = std::process::Command::new("kill")
        .arg(supervisor.to_string())
        .status();
    let _ = running.child.wait();
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
