//! The `agentbox run` command as a user sees it: help, streams, exit codes, signals, environment,
//! user, working directory, exit record, timeout, the sandbox init, and the chroot tier.

// Test code: a failed spawn, read or parse is a test failure, so helpers (and the shared
// `common` module) panic with a message instead of threading errors.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The help text with all runs of whitespace collapsed to one space (clap wraps lines).
fn help_text() -> String {
    let o = agentbox(&["run", "--help"])
        .output()
        .expect("spawn agentbox");
    assert!(o.status.success(), "--help exit {:?}", o.status.code());
    stdout(&o).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The description that follows `flag` in the help's option list (up to the next option).
fn describe(help: &str, flag: &str) -> String {
    let marker = format!("{flag} <");
    let start = help
        .find(&marker)
        .unwrap_or_else(|| panic!("{flag} is not in the help: {help}"));
    let rest = &help[start + marker.len()..];
    let after_value = rest.find("> ").map(|i| &rest[i + 2..]).unwrap_or("");
    let end = after_value.find(" --").unwrap_or(after_value.len());
    let end = after_value[..end].rfind(" -e,").unwrap_or(end);
    after_value[..end].trim().to_string()
}

#[test]
fn help_explains_every_option() {
    let help = help_text();
    for flag in [
        "--policy",
        "--tier",
        "--image",
        "--workspace",
        "--ro",
        "--rw",
        "--net",
        "--memory",
        "--cpus",
        "--pids",
        "--timeout",
        "--disk",
        "--env",
        "--cwd",
        "--user",
        "--exit-record",
    ] {
        let text = describe(&help, flag);
        assert!(
            text.split_whitespace().count() >= 5,
            "{flag} has no explanatory sentence: {text:?}"
        );
    }
    // The exit codes are documented.
    for code in ["123", "124", "125", "126", "127", "128+N"] {
        assert!(
            help.contains(code),
            "exit code {code} is not documented: {help}"
        );
    }
}

#[test]
fn help_says_chroot_is_not_a_security_boundary() {
    let help = help_text();
    let tier = describe(&help, "--tier");
    assert!(
        tier.contains("chroot"),
        "--tier does not describe chroot: {tier}"
    );
    assert!(
        tier.contains("not a security boundary"),
        "--tier does not warn about chroot: {tier}"
    );
    assert!(
        help.contains("chroot tier is NOT a security boundary"),
        "the footer does not warn about the chroot tier: {help}"
    );
}

// ---- streams -----------------------------------------------------------------------------------

#[test]
fn stdout_and_stderr_are_separate() {
    let o = sh(&[], "echo out; echo err >&2");
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
}

fn run_with_stdin(args: &[&str], input: Vec<u8>) -> std::process::Output {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let mut child = agentbox(&full)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agentbox");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        // The sandbox may exit before reading everything; that shows up in the output check.
        let _ = stdin.write_all(&input);
    });
    let o = child.wait_with_output().expect("wait agentbox");
    writer.join().expect("stdin writer");
    o
}

#[test]
fn stdin_passes_through() {
    let o = run_with_stdin(&["--", "cat"], b"hello\n".to_vec());
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "hello\n");
}

#[test]
fn large_stdin_passes_through_intact() {
    // 5 MB of deterministic, non-repeating bytes (xorshift).
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<u8> = (0..5 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let mut host = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn host sha256sum");
    let mut host_in = host.stdin.take().expect("stdin");
    let copy = data.clone();
    let writer = std::thread::spawn(move || host_in.write_all(&copy));
    let host_out = host.wait_with_output().expect("host sha256sum");
    writer
        .join()
        .expect("writer thread")
        .expect("write host stdin");
    let expected = String::from_utf8_lossy(&host_out.stdout)
        .split_whitespace()
        .next()
        .expect("host digest")
        .to_string();
    assert_eq!(expected.len(), 64);

    let o = run_with_stdin(&["--", "sha256sum"], data);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let got = stdout(&o);
    assert_eq!(
        got.split_whitespace().next(),
        Some(expected.as_str()),
        "sandbox digest {got}"
    );
}

// ---- exit codes --------------------------------------------------------------------------------

#[test]
fn exit_code_passes_through() {
    assert_eq!(sh(&[], "exit 42").status.code(), Some(42));
    assert_eq!(sh(&[], "exit 0").status.code(), Some(0));
    assert_eq!(sh(&[], "exit 1").status.code(), Some(1));
}

#[test]
fn killed_by_sigkill_is_137() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record.json");
    let record_arg = record.to_str().expect("utf-8");
    let o = sh(&["--exit-record", record_arg], "kill -9 $$");
    assert_eq!(o.status.code(), Some(137), "stderr: {}", stderr(&o));
    let json = read_record(&record);
    assert_eq!(json["reason"], "signaled", "{json}");
    assert_eq!(json["signal"], 9, "{json}");
    assert_eq!(json["exit_code"], 137, "{json}");
}

#[test]
fn killed_by_sigsegv_is_139() {
    let o = python(
        &[],
        "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
    );
    assert_eq!(o.status.code(), Some(139), "stderr: {}", stderr(&o));
}

// ---- signals sent to agentbox are forwarded ----------------------------------------------------

fn forwards(signal_name: &str, signal_const: &str) {
    let code = format!(
        "import signal, sys, time\n\
         signal.signal(signal.{signal_const}, lambda *a: (print('got {signal_name}', flush=True), sys.exit(7)))\n\
         print('ready', flush=True)\n\
         time.sleep(60)\n"
    );
    // The timeout bounds the test should forwarding be missing.
    let mut child = agentbox(&["run", "--timeout", "20s", "--", "python3", "-c", &code])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agentbox");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read ready");
    assert_eq!(line, "ready\n", "the sandboxed python did not start");
    let status = Command::new("kill")
        .args([&format!("-{signal_name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read rest");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    let exit = child.wait().expect("wait agentbox");
    assert_eq!(rest, format!("got {signal_name}\n"), "stderr: {err}");
    assert_eq!(exit.code(), Some(7), "stderr: {err}");
}

#[test]
fn sigterm_is_forwarded() {
    forwards("TERM", "SIGTERM");
}

#[test]
fn sigint_is_forwarded() {
    forwards("INT", "SIGINT");
}

// ---- environment, user, cwd --------------------------------------------------------------------

fn env_of(args: &[&str]) -> BTreeMap<String, String> {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--", "env"]);
    let o = agentbox(&full)
        .env("AGENTBOX_SECRET", "1")
        .env("HOME", "/host/home")
        .output()
        .expect("spawn agentbox");
    ok(o)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn environment_is_clean() {
    let env = env_of(&[]);
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(keys, ["HOME", "LANG", "PATH", "TERM"], "{env:?}");
    assert!(!env.contains_key("AGENTBOX_SECRET"));
    assert_eq!(env["HOME"], "/root", "the host HOME must not leak");
}

#[test]
fn env_flags_are_set() {
    let env = env_of(&["--env", "A=1", "--env", "B=2", "-e", "C=x=y"]);
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["A", "B", "C", "HOME", "LANG", "PATH", "TERM"],
        "{env:?}"
    );
    assert_eq!(env["A"], "1");
    assert_eq!(env["B"], "2");
    assert_eq!(env["C"], "x=y");
}

#[test]
fn env_flag_overrides_default() {
    let env = env_of(&["--env", "LANG=C"]);
    assert_eq!(env["LANG"], "C");
}

#[test]
fn cwd_default_and_flag() {
    assert_eq!(ok(run(&["--", "pwd"])), "/workspace\n");
    assert_eq!(ok(run(&["--cwd", "/tmp", "--", "pwd"])), "/tmp\n");
}

#[test]
fn user_flag_sets_uid_gid_and_home() {
    let out = ok(sh(&["--user", "1000"], "id -u; id -g; echo $HOME"));
    assert_eq!(out, "1000\n1000\n/tmp\n");
}

#[test]
fn default_user_is_root_inside() {
    let out = ok(sh(&[], "id -u; echo $HOME"));
    assert_eq!(out, "0\n/root\n");
}

// ---- exit record and timeout -------------------------------------------------------------------

fn read_record(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("exit record written");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("exit record is not JSON ({e}): {text}"))
}

#[test]
fn exit_record_of_a_normal_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record.json");
    let o = sh(
        &["--exit-record", record.to_str().expect("utf-8")],
        "sleep 0.2; exit 3",
    );
    assert_eq!(o.status.code(), Some(3));
    let json = read_record(&record);
    assert_eq!(json["reason"], "exited", "{json}");
    assert_eq!(json["code"], 3, "{json}");
    assert_eq!(json["exit_code"], 3, "{json}");
    assert!(json["signal"].is_null(), "{json}");
    let ms = json["duration_ms"]
        .as_u64()
        .expect("duration_ms is a number");
    assert!((200..10_000).contains(&ms), "duration_ms {ms}");
}

#[test]
fn timeout_kills_and_exits_124() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("record.json");
    let started = Instant::now();
    let o = run(&[
        "--timeout",
        "1s",
        "--exit-record",
        record.to_str().expect("utf-8"),
        "--",
        "sleep",
        "10",
    ]);
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(124), "stderr: {}", stderr(&o));
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("agentbox: ") && l.contains("timed out")),
        "no timeout notice on stderr: {err}"
    );
    let json = read_record(&record);
    assert_eq!(json["reason"], "timeout", "{json}");
    assert_eq!(json["exit_code"], 124, "{json}");
}

#[test]
fn timeout_kills_background_processes_too() {
    // A process that escaped into the background must not keep the run (or its output) alive.
    let started = Instant::now();
    let o = sh(&["--timeout", "1s"], "sleep 30 & sleep 30 & wait");
    assert_eq!(o.status.code(), Some(124), "stderr: {}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(6));
}

// ---- the sandbox init --------------------------------------------------------------------------

#[test]
fn init_is_pid_1_and_is_agentbox() {
    let o = run(&["--", "cat", "/proc/1/cmdline"]);
    let out = ok(o);
    let args: Vec<&str> = out.split('\0').filter(|a| !a.is_empty()).collect();
    assert_eq!(
        args.first().copied(),
        Some(BIN),
        "/proc/1/cmdline: {args:?}"
    );
    assert_eq!(
        args.get(1).copied(),
        Some("run"),
        "/proc/1/cmdline: {args:?}"
    );
    let pid = ok(sh(&[], "echo $$"));
    assert_ne!(pid.trim(), "1", "the command must not be pid 1");
}

#[test]
fn orphans_are_reaped_by_the_init() {
    // Each subshell starts a short sleep and exits at once, so the sleep is re-parented to pid 1;
    // once it has exited, only the init can reap it.
    let script = "(sleep 0.1 & echo $!); (sleep 0.1 & echo $!); sleep 1; echo states; \
                  cat /proc/[0-9]*/stat";
    let out = ok(sh(&[], script));
    let (orphans, states) = out.split_once("states\n").expect("marker");
    let orphans: Vec<&str> = orphans.lines().collect();
    assert_eq!(orphans.len(), 2, "{out}");
    for line in states.lines() {
        let pid = line.split_whitespace().next().unwrap_or("");
        let state = line
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split_whitespace().next().unwrap_or(""))
            .unwrap_or("");
        assert_ne!(state, "Z", "zombie left: {line}");
        assert!(!orphans.contains(&pid), "orphan {pid} still exists: {line}");
    }
    // The scan saw the init and the shell at least.
    assert!(states.lines().count() >= 2, "{states}");
}

// ---- the chroot tier ---------------------------------------------------------------------------

#[test]
fn chroot_tier_runs_as_an_unprivileged_uid() {
    let out = ok(run(&["--tier", "chroot", "--", "id", "-u"]));
    let uid: u32 = out.trim().parse().expect("numeric uid");
    assert_ne!(uid, 0, "chroot tier must not run as host root");
}

#[test]
fn chroot_tier_has_no_proc() {
    let out = ok(sh(
        &["--tier", "chroot"],
        "if test -e /proc/self; then echo present; else echo absent; fi",
    ));
    assert_eq!(out, "absent\n");
}

#[test]
fn chroot_tier_exit_code_and_streams() {
    let o = sh(&["--tier", "chroot"], "echo out; echo err >&2; exit 5");
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
}

#[test]
fn chroot_tier_timeout() {
    let started = Instant::now();
    let o = run(&["--tier", "chroot", "--timeout", "1s", "--", "sleep", "10"]);
    assert_eq!(o.status.code(), Some(124), "stderr: {}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[test]
fn dev_stdout_stderr_and_stdin_reopen_through_captured_pipes() {
    // Command::output() captures through pipes the test process (host root) created.
    for user in ["0", "1000"] {
        let mut child = agentbox(&[
            "run",
            "--user",
            user,
            "--",
            "sh",
            "-c",
            "echo out > /dev/stdout; echo err > /dev/stderr; cat /dev/stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agentbox");
        child.stdin.take().unwrap().write_all(b"in\n").unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(stdout(&o), "out\nin\n", "user {user}: {}", stderr(&o));
        assert_eq!(stderr(&o), "err\n", "user {user}");
    }
}
