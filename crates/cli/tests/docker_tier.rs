//! The docker tier end to end through `agentbox run`, `create`, `exec` and `rm`, against a Docker
//! daemon this test starts itself (its own data root, socket and containerd; no bridge, no
//! iptables) with `--userns-remap`, so that the policy's uid 0 is an unprivileged host uid as on
//! every other tier. Without remapping, the tier refuses the policy's `user` (tested first).
//! The same checks as the conformance suite, which runs on tiers that need no daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../docker/tests/support/dockerd.rs"]
mod dockerd;

use std::process::Output;

use common::*;

/// A system user for `--userns-remap` with its subordinate id ranges, removed on drop.
struct RemapUser {
    name: &'static str,
    subuid: String,
    subgid: String,
}

const REMAP_USER: &str = "agentbox-dockremap";
const REMAP_RANGE: &str = "3000000000:65536";

impl RemapUser {
    fn create() -> RemapUser {
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
        let exists = std::process::Command::new("id")
            .arg(REMAP_USER)
            .output()
            .unwrap()
            .status
            .success();
        if !exists {
            let status = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(REMAP_USER)
                .status()
                .unwrap();
            assert!(status.success(), "useradd {REMAP_USER}");
        }
        let line = format!("{REMAP_USER}:{REMAP_RANGE}\n");
        std::fs::write("/etc/subuid", format!("{subuid}{line}")).unwrap();
        std::fs::write("/etc/subgid", format!("{subgid}{line}")).unwrap();
        RemapUser {
            name: REMAP_USER,
            subuid,
            subgid,
        }
    }
}

impl Drop for RemapUser {
    fn drop(&mut self) {
        let _ = std::fs::write("/etc/subuid", &self.subuid);
        let _ = std::fs::write("/etc/subgid", &self.subgid);
        let _ = std::process::Command::new("userdel")
            .arg(self.name)
            .status();
    }
}

fn docker(socket: &std::path::Path, args: &[&str]) -> Output {
    let mut full = vec!["run", "--tier", "docker"];
    full.extend_from_slice(args);
    agentbox(&full)
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .output()
        .unwrap()
}

fn on(socket: &std::path::Path, args: &[&str]) -> Output {
    agentbox(args)
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .output()
        .unwrap()
}

/// `agentbox run --tier docker -- sh -c SCRIPT` sent `signal` once it printed `ready`: it ends
/// with `code` (128 + N: killed by signal N) after printing `rest`.
fn signalled(socket: &std::path::Path, script: &str, code: i32, rest: &str, signal: &str) {
    use std::io::{BufRead, Read};
    let mut child = agentbox(&["run", "--tier", "docker", "--", "sh", "-c", script])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n", "{script}");
    let sent = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{script}: agentbox still running 30 s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut left = String::new();
    out.read_to_string(&mut left).unwrap();
    use std::os::unix::process::ExitStatusExt;
    let code_or_signal = status.code().or(status.signal().map(|s| 128 + s));
    assert_eq!(
        (code_or_signal, left.as_str()),
        (Some(code), rest),
        "{script}"
    );
}

#[test]
fn the_docker_tier_runs_the_policy_on_a_remapping_daemon_and_refuses_it_on_another() {
    let _guard = serial();
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    // No daemon at all: refused with the reason, naming how to fix it.
    let o = agentbox(&["run", "--tier", "docker", "--", "/bin/true"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(123), "{}", stderr(&o));
    assert!(stderr(&o).contains("not available"), "{}", stderr(&o));

    // A daemon without userns-remap: uid 0 in its containers is the host's root.
    {
        let daemon = dockerd::Dockerd::start(&[]);
        let o = docker(&daemon.socket, &["--", "/bin/true"]);
        assert_eq!(o.status.code(), Some(123), "{}", stderr(&o));
        assert!(stderr(&o).contains("cannot enforce user"), "{}", stderr(&o));
        assert!(stderr(&o).contains("userns-remap"), "{}", stderr(&o));
    }

    let _user = RemapUser::create();
    let daemon = dockerd::Dockerd::start(&[&format!("--userns-remap={REMAP_USER}")]);
    let s = &daemon.socket;

    assert_eq!(docker(s, &["--", "/bin/true"]).status.code(), Some(0));
    assert_eq!(
        docker(s, &["--", "sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    let o = docker(s, &["--", "/no/such/command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));

    // Posture from inside: no capabilities, no new privileges, agentbox's seccomp filter, a
    // remapped uid, only loopback, a read-only system.
    let o = docker(
        s,
        &[
            "--",
            "sh",
            "-c",
            "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; cat /proc/self/uid_map; \
             ls /sys/class/net; touch /usr/bin/x 2>/dev/null && echo WROTE_USR; echo ok > /tmp/f && cat /tmp/f",
        ],
    );
    let out = ok(o);
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("3000000000"), "uid map not remapped: {out}");
    assert!(!out.contains("WROTE_USR") && out.contains("ok"), "{out}");
    assert!(!out.contains("eth0"), "{out}");

    // Limits and the wall clock.
    let o = docker(s, &["--timeout", "1s", "--", "sleep", "30"]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));

    // A SIGTERM to agentbox ends a command that does not handle it, although it is the init of
    // its PID namespace (which the kernel spares such signals), and reaches one that does.
    let handles = "trap 'echo caught; exit 7' TERM; echo ready; while :; do sleep 0.1; done";
    for (script, code, rest) in [
        ("echo ready; exec sleep 44", 143, ""),
        (handles, 7, "caught\n"),
    ] {
        signalled(s, script, code, rest, "TERM");
    }
    // A `kill -9` of agentbox: its engine child removes the container.
    signalled(s, "echo ready; exec sleep 45", 137, "", "KILL");
    let started = std::time::Instant::now();
    while !pids_running(&["sleep", "45"]).is_empty() {
        assert!(
            started.elapsed().as_secs() < 15,
            "sleep 45 outlived agentbox"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = docker(
        s,
        &[
            "--pids",
            "16",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 64 ]; do sleep 3 & i=$((i+1)); echo $i; done",
        ],
    );
    let started: usize = stdout(&o)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(started > 0 && started < 64, "pids 16: {started} started");
    let o = docker(
        s,
        &[
            "--memory",
            "64M",
            "--",
            "python3",
            "-c",
            "b = bytearray(256 << 20); b[::4096] = b'x' * len(b[::4096]); print('ALLOCATED')",
        ],
    );
    assert!(!o.status.success() && !stdout(&o).contains("ALLOCATED"));

    // A host process is out of reach.
    let mut sentinel = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let script = format!(
        "kill -9 {} 2>/dev/null && echo KILLED; echo done",
        sentinel.id()
    );
    let out = ok(docker(s, &["--", "sh", "-c", &script]));
    assert!(!out.contains("KILLED"), "{out}");
    assert!(sentinel.try_wait().unwrap().is_none());
    let _ = sentinel.kill();
    let _ = sentinel.wait();

    // Persistent: create, two execs sharing state, files refused (the daemon owns them), rm.
    let o = on(s, &["create", "--tier", "docker"]);
    let id = ok(o).trim().to_string();
    ok(on(
        s,
        &["exec", &id, "--", "sh", "-c", "echo kept > /tmp/state"],
    ));
    assert_eq!(
        ok(on(s, &["exec", &id, "--", "cat", "/tmp/state"])),
        "kept\n"
    );
    let o = on(s, &["exec", &id, "--", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    let o = on(s, &["cp", "/etc/hostname", &format!("{id}:/tmp/h")]);
    assert_eq!(o.status.code(), Some(123), "{}", stderr(&o));
    assert!(stderr(&o).contains("files"), "{}", stderr(&o));
    ok(on(s, &["rm", &id]));

    // Nothing left in the daemon.
    let o = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(s)
        .arg("http://docker/containers/json?all=1")
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "[]", "containers left");
    drop(daemon);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        forwarding,
        "the daemon changed the host's IP forwarding"
    );
}
