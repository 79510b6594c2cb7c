//! Signals sent to agentbox, and agentbox killed, on every tier that runs commands (the table in
//! `common/tiers.rs`): a signal ends the command as it would end it outside a sandbox, or reaches
//! its handler, although runc and crun make the command the init of its PID namespace (which the
//! kernel spares signals it has no handler for); a `kill -9` of agentbox takes the container with
//! it; and `agentbox gc` ends a container whose agentbox processes were all killed at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use common::tiers::*;
use common::*;

/// `agentbox run ROW -- sh -c SCRIPT`, once the script printed `ready`.
fn start(row: &Row, script: &str) -> Running {
    let mut args: Vec<&str> = row.flags.to_vec();
    args.extend_from_slice(&["--", "sh", "-c", script]);
    spawn_ready(&args)
}

fn send(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The child's exit within `limit`, or an error after killing it.
fn exit_within(child: &mut std::process::Child, limit: Duration) -> Result<ExitStatus, String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("agentbox still running after {limit:?}"))
}

/// Whether `argv` stops running within `limit`.
fn gone_within(argv: &[&str], limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if pids_running(argv).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_signal_the_command_does_not_handle_ends_it() {
    each(|row| {
        // `exec`: under runc and crun the sleep is its PID namespace's init.
        let mut r = start(row, "echo ready; exec sleep 41");
        send(r.child.id(), "TERM");
        let status = exit_within(&mut r.child, Duration::from_secs(20))?;
        if status.code() != Some(128 + 15) {
            return Err(format!("SIGTERM: expected exit 143, got {status:?}"));
        }
        if !gone_within(&["sleep", "41"], Duration::from_secs(5)) {
            return Err("sleep 41 survived its sandbox".into());
        }
        Ok(())
    });
}

#[test]
fn a_signal_the_command_handles_reaches_its_handler() {
    each(|row| {
        let mut r = start(
            row,
            "trap 'echo caught; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        );
        send(r.child.id(), "TERM");
        let status = exit_within(&mut r.child, Duration::from_secs(20))?;
        let mut rest = String::new();
        let _ = r.stdout.read_to_string(&mut rest);
        if status.code() != Some(7) || rest != "caught\n" {
            return Err(format!(
                "expected the handler's `caught` and exit 7, got {status:?} and {rest:?}"
            ));
        }
        Ok(())
    });
}

#[test]
fn a_killed_agentbox_takes_the_sandbox_with_it() {
    each(|row| {
        let mut r = start(row, "echo ready; exec sleep 42");
        send(r.child.id(), "KILL");
        let _ = r.child.wait();
        if !gone_within(&["sleep", "42"], Duration::from_secs(10)) {
            return Err("sleep 42 outlived its killed agentbox".into());
        }
        Ok(())
    });
    // What the killed supervisors held (slots, cgroups) is gc's.
    assert!(agentbox(&["gc"]).output().unwrap().status.success());
}

#[test]
fn gc_ends_a_sandbox_whose_agentbox_processes_were_all_killed() {
    each(|row| {
        let before = host_state();
        let mut r = start(row, "echo ready; exec sleep 43");
        let supervisor = r.child.id();
        // The engine child (or the ns init) first, so that no agentbox process is left to clean
        // up: as a `kill -9` of the whole process group.
        let ours: Vec<u32> = descendants(supervisor)
            .into_iter()
            .filter(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "agentbox")
            })
            .collect();
        for pid in ours {
            send(pid, "KILL");
        }
        send(supervisor, "KILL");
        let _ = r.child.wait();
        let o = agentbox(&["gc"]).output().unwrap();
        if !o.status.success() {
            return Err(format!("gc failed: {}", stderr(&o)));
        }
        if !gone_within(&["sleep", "43"], Duration::from_secs(5)) {
            return Err(format!(
                "sleep 43 outlived gc, which printed {:?}",
                stdout(&o)
            ));
        }
        let engines = std::fs::read_dir("/run/agentbox/engines").map_or(0, |d| d.count());
        if engines != 0 {
            return Err(format!(
                "gc left {engines} entries in /run/agentbox/engines"
            ));
        }
        assert_nothing_left(&before);
        Ok(())
    });
}
