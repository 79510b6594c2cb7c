//! Persistent sandboxes without a daemon: create, exec, cp, ls, rm, gc, TTL, and a killed
//! supervisor, all against the real kernel.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A sandbox created for one test and removed when dropped.
struct Box_ {
    id: String,
}

impl Box_ {
    fn create(flags: &[&str]) -> Box_ {
        let mut args = vec!["create"];
        args.extend_from_slice(flags);
        let out = agentbox(&args).output().unwrap();
        let id = ok(out).trim().to_string();
        assert_eq!(id.len(), 12, "{id}");
        Box_ { id }
    }

    fn exec(&self, argv: &[&str]) -> std::process::Output {
        let mut args = vec!["exec", &self.id, "--"];
        args.extend_from_slice(argv);
        agentbox(&args).output().unwrap()
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(format!("/run/agentbox/{}/state.json", self.id)).unwrap(),
        )
        .unwrap()
    }
}

impl Drop for Box_ {
    fn drop(&mut self) {
        let _ = agentbox(&["rm", &self.id]).output();
    }
}

/// Whether process `pid` has ended within a few seconds (gone, or a zombie waiting for the host's
/// init to reap it).
fn ended(pid: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')) =>
            {
                return true
            }
            Ok(_) if Instant::now() > deadline => return false,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The posture lines of /proc/self/status that confinement decides.
const POSTURE: &str = "grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status; for n in user mnt pid net ipc uts cgroup; do readlink /proc/self/ns/$n; done; cat /proc/self/cgroup";

#[test]
fn every_exec_is_exactly_as_confined_and_shares_the_sandbox() {
    let _g = serial();
    let b = Box_::create(&["--memory", "256M"]);
    let first = ok(b.exec(&["sh", "-c", POSTURE]));
    let second = ok(b.exec(&["sh", "-c", POSTURE]));
    assert_eq!(first, second);
    for line in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(first.contains(line), "{line} missing:\n{first}");
    }
    // The same posture as a one-shot run's command (namespace ids aside).
    let one_shot = ok(sh(&[], POSTURE));
    let status = |text: &str| {
        text.lines()
            .filter(|l| l.contains(":\t"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(status(&first), status(&one_shot));
    // Landlock and the sandbox's files: /tmp persists across execs, / stays unwritable.
    ok(b.exec(&["sh", "-c", "echo kept > /tmp/f"]));
    assert_eq!(ok(b.exec(&["cat", "/tmp/f"])), "kept\n");
    let o = b.exec(&["sh", "-c", "touch /new 2>&1"]);
    assert!(stdout(&o).contains("Permission denied"), "{}", stdout(&o));
    // Seen from the host: the exec'd command runs in the sandbox's cgroups, as a sandbox uid.
    let state = b.state();
    let pids_dir = state["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .find(|d| d.contains("/pids/"))
        .unwrap();
    let mut child = agentbox(&["exec", &b.id, "--", "sh", "-c", "echo ready; exec sleep 30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    // `ready` comes just before the exec of sleep: look until it shows up.
    let deadline = Instant::now() + Duration::from_secs(5);
    let sleeper = loop {
        let procs = std::fs::read_to_string(format!("{pids_dir}/cgroup.procs")).unwrap();
        let found = procs
            .lines()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            });
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the exec'd sleep is not in the sandbox's pids cgroup: {procs}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let uid: u64 = status_field(sleeper, "Uid")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(uid >= 0x1000_0000, "host uid {uid}");
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

#[test]
fn exec_streams_stdin_and_passes_exit_codes_timeouts_and_signals() {
    let _g = serial();
    let b = Box_::create(&[]);
    assert_eq!(b.exec(&["sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(b.exec(&["sh", "-c", "kill -9 $$"]).status.code(), Some(137));
    let o = b.exec(&["nosuchcmd"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    let mut child = agentbox(&["exec", "-i", &b.id, "--", "sha256sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&vec![b'x'; 1 << 20])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut host = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    host.stdin
        .take()
        .unwrap()
        .write_all(&vec![b'x'; 1 << 20])
        .unwrap();
    assert_eq!(stdout(&out), stdout(&host.wait_with_output().unwrap()));
    let started = Instant::now();
    let o = agentbox(&[
        "exec",
        "--timeout",
        "1s",
        &b.id,
        "--",
        "sh",
        "-c",
        "sleep 30 & sleep 30",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(124));
    assert!(started.elapsed() < Duration::from_secs(10));
    // SIGTERM to the exec client reaches the command.
    let mut child = agentbox(&[
        "exec",
        &b.id,
        "--",
        "python3",
        "-c",
        "import signal,sys,time; signal.signal(signal.SIGTERM, lambda *a: (print('got TERM', flush=True), sys.exit(3))); print('ready', flush=True); time.sleep(30)",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn cp_moves_files_in_and_out_inside_the_root_only() {
    let _g = serial();
    let b = Box_::create(&[]);
    let dir = tempfile::Builder::new().prefix("cp-").tempdir().unwrap();
    let src = dir.path().join("in.txt");
    std::fs::write(&src, "into the box\n").unwrap();
    ok(agentbox(&[
        "cp",
        src.to_str().unwrap(),
        &format!("{}:/workspace/in.txt", b.id),
    ])
    .output()
    .unwrap());
    assert_eq!(ok(b.exec(&["cat", "/workspace/in.txt"])), "into the box\n");
    // A symlink planted inside pointing at / resolves inside the sandbox, never on the host.
    ok(b.exec(&[
        "sh",
        "-c",
        "ln -s / /tmp/escape; echo sandbox-etc > /tmp/marker",
    ]));
    let out = dir.path().join("out.txt");
    ok(agentbox(&[
        "cp",
        &format!("{}:/tmp/escape/tmp/marker", b.id),
        out.to_str().unwrap(),
    ])
    .output()
    .unwrap());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "sandbox-etc\n");
    let o = agentbox(&[
        "cp",
        &format!("{}:/tmp/escape/etc/shadow", b.id),
        out.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(125),
        "the host's /etc/shadow came out: {}",
        stderr(&o)
    );
}

#[test]
fn ls_rm_and_unknown_ids() {
    let _g = serial();
    let b = Box_::create(&["--name", &format!("ls-test-{}", std::process::id())]);
    let table = ok(agentbox(&["ls"]).output().unwrap());
    let row = table
        .lines()
        .find(|l| l.starts_with(&b.id))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("running") && row.contains(" ns ") && row.contains("ls-test"),
        "{row}"
    );
    let o = agentbox(&["exec", "no-such-sandbox", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stderr(&o).lines().count(), 1);
    let cgroups: Vec<String> = b.state()["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    let supervisor = b.state()["supervisor"].as_u64().unwrap();
    ok(agentbox(&["rm", &b.id]).output().unwrap());
    assert!(!std::path::Path::new(&format!("/run/agentbox/{}", b.id)).exists());
    for dir in cgroups {
        assert!(!std::path::Path::new(&dir).exists(), "{dir} left");
    }
    assert!(ended(supervisor), "the supervisor outlived rm");
}

#[test]
fn a_killed_supervisor_shows_as_failed_and_gc_reclaims_everything() {
    let _g = serial();
    let b = Box_::create(&[]);
    let state = b.state();
    let supervisor = state["supervisor"].as_u64().unwrap();
    let init = state["init"].as_u64().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{init}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the sandbox outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let table = ok(agentbox(&["ls"]).output().unwrap());
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&b.id) && l.contains("failed")),
        "{table}"
    );
    let o = b.exec(&["true"]);
    assert_eq!(o.status.code(), Some(123));
    assert!(stderr(&o).contains("supervisor died"), "{}", stderr(&o));
    let gc = ok(agentbox(&["gc"]).output().unwrap());
    assert!(gc.contains(&b.id), "{gc}");
    assert!(!std::path::Path::new(&format!("/run/agentbox/{}", b.id)).exists());
    for dir in state["cgroups"].as_array().unwrap() {
        assert!(!std::path::Path::new(dir.as_str().unwrap()).exists());
    }
}

#[test]
fn a_sandbox_ends_at_its_ttl() {
    let _g = serial();
    let b = Box_::create(&["--ttl", "1s"]);
    let supervisor = b.state()["supervisor"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/run/agentbox/{}", b.id)).exists() {
        assert!(Instant::now() < deadline, "the sandbox outlived its TTL");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ended(supervisor), "the supervisor outlived its TTL");
}

#[test]
fn create_refuses_bad_input_and_the_chroot_tier() {
    let _g = serial();
    for (args, code) in [
        (vec!["create", "--memory", "12XB"], 125),
        (vec!["create", "--ttl", "soon"], 125),
        (vec!["create", "--name", "bad name"], 125),
        (vec!["create", "--tier", "chroot"], 123),
    ] {
        let before = std::fs::read_dir("/run/agentbox").unwrap().count();
        let o = agentbox(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert!(
            std::fs::read_dir("/run/agentbox").unwrap().count() <= before,
            "{args:?} left a directory"
        );
    }
}

#[test]
fn an_idle_sandbox_ends_after_its_idle_timeout_but_not_while_busy() {
    let _g = serial();
    let b = Box_::create(&["--idle-timeout", "1s"]);
    // Busy for longer than the idle timeout: the sandbox stays.
    ok(b.exec(&["sleep", "1.5"]));
    ok(b.exec(&["true"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/run/agentbox/{}", b.id)).exists() {
        assert!(
            Instant::now() < deadline,
            "the idle sandbox was not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn exec_t_gives_a_terminal_of_the_sandbox_and_stdin_needs_i() {
    let _g = serial();
    let b = Box_::create(&[]);
    let o = agentbox(&[
        "exec",
        "-t",
        &b.id,
        "--",
        "sh",
        "-c",
        "tty; test -t 0 && test -t 1 && echo both-terminals",
    ])
    .output()
    .unwrap();
    let out = stdout(&o);
    assert!(out.starts_with("/dev/pts/"), "{out}");
    assert!(out.contains("both-terminals"), "{out}");
    // Without -i the command reads /dev/null, not the caller's stdin.
    let mut child = agentbox(&["exec", &b.id, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"not for the command\n")
        .unwrap();
    assert_eq!(stdout(&child.wait_with_output().unwrap()), "");
}

#[test]
fn concurrent_execs_each_get_their_own_output_and_exit_code() {
    let _g = serial();
    let b = Box_::create(&[]);
    let children: Vec<_> = (0..24)
        .map(|i| {
            let script = format!("sleep 0.{}; echo out-{i}; exit {}", i % 5, i % 7);
            agentbox(&["exec", &b.id, "--", "sh", "-c", &script])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let o = child.wait_with_output().unwrap();
        assert_eq!(stdout(&o), format!("out-{i}\n"));
        assert_eq!(o.status.code(), Some((i % 7) as i32));
    }
}
