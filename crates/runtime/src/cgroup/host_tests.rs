//! Against the host's real cgroup hierarchy; needs root. These fail (never skip) on a host without
//! usable cgroups: a sandbox there would run without limits.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{detect_host, Cgroup, CgroupLimits, Hierarchy};

fn name(tag: &str) -> String {
    format!("agentbox-test-{}-{tag}", std::process::id())
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_string()
}

/// A shell that waits for a line on stdin before running `script`, so that it can be attached first.
fn held_shell(script: &str) -> Child {
    Command::new("sh")
        .args(["-c", &format!("read go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn release(child: &mut Child) {
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
}

fn sigkill(pid: i32) {
    agentbox_sys::process::kill(pid, agentbox_sys::signal::SIGKILL).unwrap();
}

#[test]
fn host_limits_read_back_and_leaves_are_removed() {
    let h = detect_host().unwrap();
    let limits = CgroupLimits {
        memory: 64 << 20,
        pids: 32,
        cpu_millis: Some(500),
    };
    let cg = Cgroup::create(&h, &name("limits"), &limits).unwrap();
    let dirs = cg.dirs().to_vec();
    match &h {
        Hierarchy::V1 { .. } => {
            let [memory, pids, cpu] = &dirs[..] else {
                panic!("expected 3 v1 leaves, got {dirs:?}")
            };
            assert_eq!(read(memory, "memory.limit_in_bytes"), "67108864");
            if cg.features().swap_accounting {
                assert_eq!(read(memory, "memory.memsw.limit_in_bytes"), "67108864");
            } else {
                assert_eq!(read(memory, "memory.swappiness"), "0");
            }
            assert_eq!(read(pids, "pids.max"), "32");
            assert_eq!(read(cpu, "cpu.cfs_period_us"), "100000");
            assert_eq!(read(cpu, "cpu.cfs_quota_us"), "50000");
        }
        Hierarchy::V2 { .. } => {
            let [leaf] = &dirs[..] else {
                panic!("expected 1 v2 leaf, got {dirs:?}")
            };
            assert_eq!(read(leaf, "memory.max"), "67108864");
            assert_eq!(read(leaf, "pids.max"), "32");
            assert_eq!(read(leaf, "cpu.max"), "50000 100000");
        }
    }
    assert_eq!(cg.pids().unwrap(), Vec::<i32>::new());
    assert_eq!((cg.events().oom_kills, cg.events().pids_limit_hits), (0, 0));

    cg.remove().unwrap();
    for dir in &dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// The pids limit is enforced and counted; kill_all empties the cgroup; remove copes with leaves
/// whose processes have only just died.
#[test]
fn host_pids_limit_kill_all_and_remove() {
    let h = detect_host().unwrap();
    let limits = CgroupLimits {
        memory: 64 << 20,
        pids: 8,
        cpu_millis: None,
    };
    let cg = Cgroup::create(&h, &name("pids"), &limits).unwrap();
    let mut child = held_shell("i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); done; wait");
    let pid = i32::try_from(child.id()).unwrap();
    cg.attach(pid).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    release(&mut child);

    let deadline = Instant::now() + Duration::from_secs(10);
    while cg.events().pids_limit_hits == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        cg.events().pids_limit_hits > 0,
        "fork beyond pids.max was not refused: {:?}",
        cg.events()
    );
    assert!(cg.pids().unwrap().len() <= 8);

    cg.kill_all(&mut sigkill).unwrap();
    assert!(cg.pids().unwrap().is_empty());
    child.wait().unwrap();
    let dirs = cg.dirs().to_vec();
    cg.remove().unwrap();
    for dir in &dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// The memory limit is enforced by the OOM killer, which is counted.
#[test]
fn host_memory_limit_oom_kills() {
    let h = detect_host().unwrap();
    let limit = 32 << 20;
    let limits = CgroupLimits {
        memory: limit,
        pids: 16,
        cpu_millis: None,
    };
    let cg = Cgroup::create(&h, &name("oom"), &limits).unwrap();
    // tail keeps the whole newline-free input in memory: 200 MB, far over the limit.
    let mut child = held_shell("head -c 200000000 /dev/zero | tail > /dev/null");
    cg.attach(i32::try_from(child.id()).unwrap()).unwrap();
    release(&mut child);
    child.wait().unwrap();

    let events = cg.events();
    assert!(events.oom_kills >= 1, "no OOM kill recorded: {events:?}");
    if let Some(peak) = events.memory_peak {
        assert!(peak <= limit, "peak {peak} over the limit {limit}");
    }
    cg.kill_all(&mut sigkill).unwrap();
    cg.remove().unwrap();
}
