//! The agent in non-PID-1 mode, driven through the real `Client` over a unix socket that the
//! test listens on: commands, streams, errors, timeouts, files, garbage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use agentbox_protocol::client::{Client, ClientError};
use agentbox_protocol::{DataKind, ErrorCode, FileKind, Frame, Reply, RunRequest};

struct Agent {
    client: Client<UnixStream>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Agent {
    start_with(&[])
}

fn start_with(extra: &[&std::ffi::OsStr]) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channel.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_agentbox-guest"))
        .arg("--channel")
        .arg(&path)
        .args(extra)
        .spawn()
        .unwrap();
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let client = Client::connect(stream).unwrap();
    Agent {
        client,
        child,
        _dir: dir,
    }
}

fn cmd(argv: &[&str]) -> RunRequest {
    RunRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/".into(),
        stdin: false,
        timeout_ms: None,
        uid: None,
        gid: None,
        layered_spec: None,
    }
}

fn run(agent: &mut Agent, req: RunRequest) -> (agentbox_protocol::ExitRecord, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = agent.client.run(req, None, &mut out, &mut err).unwrap();
    (
        exit,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn assert_agent_error(result: Result<impl std::fmt::Debug, ClientError>, expected: ErrorCode) {
    match result {
        Err(ClientError::Agent { code, .. }) => assert_eq!(code, expected),
        other => panic!("expected agent error {expected:?}, got {other:?}"),
    }
}

#[test]
fn hello_reports_version_and_mode() {
    let agent = start();
    let hello = agent.client.hello();
    assert_eq!(hello.version, agentbox_protocol::PROTOCOL_VERSION);
    assert!(!hello.agent.pid1);
    assert!(!hello.agent.kernel_release.is_empty());
}

#[test]
fn echo_streams_stdout() {
    let mut agent = start();
    let (exit, out, err) = run(&mut agent, cmd(&["echo", "hi"]));
    assert_eq!(
        (exit.code, exit.signal, exit.timed_out),
        (Some(0), None, false)
    );
    assert_eq!((out.as_str(), err.as_str()), ("hi\n", ""));
}

#[test]
fn exit_code_is_reported() {
    let mut agent = start();
    let (exit, _, _) = run(&mut agent, cmd(&["sh", "-c", "exit 7"]));
    assert_eq!(exit.code, Some(7));
}

#[test]
fn stdin_is_piped_and_closed() {
    let mut agent = start();
    let input = vec![b'x'; 300_000];
    let mut out = Vec::new();
    let exit = agent
        .client
        .run(
            cmd(&["wc", "-c"]),
            Some(&mut input.as_slice()),
            &mut out,
            &mut Vec::new(),
        )
        .unwrap();
    assert_eq!(exit.code, Some(0));
    assert_eq!(String::from_utf8(out).unwrap().trim(), "300000");
}

#[test]
fn stderr_is_kept_apart_from_stdout() {
    let mut agent = start();
    let (exit, out, err) = run(
        &mut agent,
        cmd(&["sh", "-c", "echo out; echo err >&2; echo out2"]),
    );
    assert_eq!(exit.code, Some(0));
    assert_eq!(out, "out\nout2\n");
    assert_eq!(err, "err\n");
}

#[test]
fn environment_is_complete_and_cwd_applies() {
    let mut agent = start();
    let mut req = cmd(&["sh", "-c", "echo \"$FOO:$HOME:$(pwd)\""]);
    req.env.push(("FOO".into(), "bar".into()));
    req.cwd = "/tmp".into();
    let (_, out, _) = run(&mut agent, req);
    assert_eq!(out, "bar::/tmp\n");
}

#[test]
fn missing_command_is_not_found_and_agent_keeps_serving() {
    let mut agent = start();
    let result = agent.client.run(
        cmd(&["no-such-command-xyz"]),
        None,
        &mut Vec::new(),
        &mut Vec::new(),
    );
    assert_agent_error(result, ErrorCode::NotFound);
    let result = agent.client.run(
        cmd(&["/etc/passwd"]),
        None,
        &mut Vec::new(),
        &mut Vec::new(),
    );
    assert_agent_error(result, ErrorCode::CannotExecute);
    let mut layered = cmd(&["true"]);
    layered.env.clear();
    layered.layered_spec = Some(r#"{"tier":"ns"}"#.into());
    // No --tools: no tools disk, so layered mode is refused.
    assert_agent_error(
        agent
            .client
            .run(layered, None, &mut Vec::new(), &mut Vec::new()),
        ErrorCode::Unsupported,
    );
    assert_eq!(run(&mut agent, cmd(&["true"])).0.code, Some(0));
}

#[test]
fn timeout_kills_the_process_group() {
    let mut agent = start();
    let mut req = cmd(&["sh", "-c", "sleep 30 & sleep 30"]);
    req.timeout_ms = Some(300);
    let started = Instant::now();
    let (exit, _, _) = run(&mut agent, req);
    assert!(exit.timed_out);
    assert_eq!(exit.signal, Some(9));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn kill_signals_a_running_command() {
    let mut agent = start();
    let id = agent.client.spawn(cmd(&["sleep", "30"])).unwrap();
    // Wait for `started` so the kill reaches a live command.
    match agent.client.next_frame().unwrap() {
        Frame::Control(Reply::Started { id: started, .. }) => assert_eq!(started, id),
        other => panic!("expected started, got {other:?}"),
    }
    agent.client.kill(id, 15).unwrap();
    let exit = agent
        .client
        .wait(id, &mut Vec::new(), &mut Vec::new())
        .unwrap();
    assert_eq!((exit.signal, exit.timed_out), (Some(15), false));
}

#[test]
fn concurrent_commands_are_not_mixed() {
    let mut agent = start();
    let script =
        |c: &str| format!("i=0; while [ $i -lt 3000 ]; do echo {c}{c}{c}{c}; i=$((i+1)); done");
    let a = agent
        .client
        .spawn(cmd(&["sh", "-c", &script("a")]))
        .unwrap();
    let b = agent
        .client
        .spawn(cmd(&["sh", "-c", &script("b")]))
        .unwrap();
    let mut outputs: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut exited = 0;
    while exited < 2 {
        match agent.client.next_frame().unwrap() {
            Frame::Data {
                kind: DataKind::Stdout,
                id,
                bytes,
            } => outputs.entry(id).or_default().extend(bytes),
            Frame::Control(Reply::Exited { exit, .. }) => {
                assert_eq!(exit.code, Some(0));
                exited += 1;
            }
            Frame::Control(Reply::Started { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(outputs[&a], "aaaa\n".repeat(3000).into_bytes());
    assert_eq!(outputs[&b], "bbbb\n".repeat(3000).into_bytes());
}

#[test]
fn files_are_written_read_listed_and_stated() {
    let mut agent = start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    let path = path.to_str().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let written = agent
        .client
        .write_file(path, 0o640, &mut data.as_slice())
        .unwrap();
    assert_eq!(written, data.len() as u64);
    let mut back = Vec::new();
    assert_eq!(
        agent.client.read_file(path, &mut back).unwrap(),
        data.len() as u64
    );
    assert_eq!(back, data);
    let entries = agent.client.list_dir(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            entries[0].name.as_str(),
            entries[0].kind,
            entries[0].size,
            entries[0].mode
        ),
        ("data.bin", FileKind::File, 200_000, 0o640)
    );
    let info = agent.client.stat(path).unwrap();
    assert_eq!((info.kind, info.mode), (FileKind::File, 0o640));
    assert_agent_error(
        agent.client.read_file("/no/such/file", &mut Vec::new()),
        ErrorCode::NotFound,
    );
    assert_agent_error(agent.client.list_dir("/no/such/dir"), ErrorCode::NotFound);
    assert_agent_error(
        agent
            .client
            .write_file("/no/such/dir/f", 0o600, &mut &b"x"[..]),
        ErrorCode::NotFound,
    );
}

#[test]
fn resource_use_reads_the_guest() {
    let mut agent = start();
    let r = agent.client.resource_use().unwrap();
    assert!(r.mem_total_kb > 0 && r.mem_available_kb > 0 && r.uptime_ms > 0);
    assert_eq!(r.running, 0);
}

#[test]
fn garbage_then_resync_then_requests_are_answered() {
    let mut agent = start();
    use std::io::Write;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    agent.client.get_mut().write_all(&garbage).unwrap();
    agent.client.resync().unwrap();
    let (exit, out, _) = run(&mut agent, cmd(&["echo", "still here"]));
    assert_eq!((exit.code, out.as_str()), (Some(0), "still here\n"));
}

#[test]
fn bad_message_with_intact_length_gets_bad_request() {
    let mut agent = start();
    use std::io::Write;
    // A `run` without its required fields.
    let json = br#"{"type":"run","id":5}"#;
    let mut frame = ((json.len() + 1) as u32).to_be_bytes().to_vec();
    frame.push(0x01);
    frame.extend_from_slice(json);
    agent.client.get_mut().write_all(&frame).unwrap();
    match agent.client.next_frame().unwrap() {
        Frame::Control(Reply::Error { id, code, .. }) => {
            assert_eq!((id, code), (Some(5), ErrorCode::BadRequest))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(run(&mut agent, cmd(&["true"])).0.code, Some(0));
}

#[test]
fn oversized_frame_is_a_framing_error_then_resync_recovers() {
    let mut agent = start();
    use std::io::Write;
    let len = (2u32 << 20).to_be_bytes();
    agent.client.get_mut().write_all(&len).unwrap();
    agent.client.get_mut().write_all(&[0x01; 64]).unwrap();
    match agent.client.next_frame().unwrap() {
        Frame::Control(Reply::Error { id, code, .. }) => {
            assert_eq!((id, code), (None, ErrorCode::Framing))
        }
        other => panic!("unexpected {other:?}"),
    }
    agent.client.resync().unwrap();
    assert_eq!(run(&mut agent, cmd(&["true"])).0.code, Some(0));
}

#[test]
fn power_off_ends_a_non_pid1_agent() {
    let mut agent = start();
    agent.client.power_off().unwrap();
    let status = agent.child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn exec_round_trip_of_true() {
    let mut agent = start();
    run(&mut agent, cmd(&["/bin/true"])); // warm up
    let rounds = 100;
    let started = Instant::now();
    for _ in 0..rounds {
        assert_eq!(run(&mut agent, cmd(&["/bin/true"])).0.code, Some(0));
    }
    let each = started.elapsed() / rounds;
    println!("exec round trip of /bin/true over the socket: {each:?} (mean of {rounds})");
}

/// Layered mode through a stand-in `agentbox` (a script printing what it was given): the agent
/// runs `<tools>/agentbox __sandbox -- ARGV` with only the spec in its environment, streams its
/// output and reports its exit code.
#[test]
fn layered_runs_the_tools_helper_with_the_spec() {
    let tools = tempfile::tempdir().unwrap();
    let helper = tools.path().join("agentbox");
    std::fs::write(
        &helper,
        "#!/bin/sh\necho \"args:$*\"\necho \"spec:$AGENTBOX_SPEC_JSON\"\nenv | grep -v -e '^PWD=' -e '^SHLVL=' -e '^_=' | sort >&2\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut agent = start_with(&["--tools".as_ref(), tools.path().as_os_str()]);
    let mut layered = cmd(&["sh", "-c", "echo hi"]);
    layered.env.clear();
    layered.layered_spec = Some(r#"{"tier":"ns","network":{"mode":"none"}}"#.into());
    let (exit, out, err) = run(&mut agent, layered.clone());
    assert_eq!(exit.code, Some(7), "{out}{err}");
    assert_eq!(
        out,
        "args:__sandbox -- sh -c echo hi\nspec:{\"tier\":\"ns\",\"network\":{\"mode\":\"none\"}}\n"
    );
    assert_eq!(
        err,
        "AGENTBOX_SPEC_JSON={\"tier\":\"ns\",\"network\":{\"mode\":\"none\"}}\n"
    );
    // The command's environment travels in the spec, not beside it.
    layered.env = vec![("K".into(), "V".into())];
    assert_agent_error(
        agent
            .client
            .run(layered, None, &mut Vec::new(), &mut Vec::new()),
        ErrorCode::BadRequest,
    );
}
