//! Core modules (WASI preview 1) written in WAT: output, exit codes, the three limits (deadline,
//! fuel, memory), what the guest sees (argv, environment, cwd), no sockets, and the errors of a
//! run that cannot start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use agentbox_wasm::{run, Preopen, WasmError, WasmExit};
use common::{hello_wat, plain_run, run_captured, wat_file};

child_runner!();

const SLEEP_WAT: &str = r#"
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (func $sleep (param $ns i64)
    (i64.store (i32.const 1024) (i64.const 0))
    (i32.store8 (i32.const 1032) (i32.const 0))
    (i32.store (i32.const 1040) (i32.const 1))
    (i64.store (i32.const 1048) (local.get $ns))
    (i64.store (i32.const 1056) (i64.const 0))
    (i32.store16 (i32.const 1064) (i32.const 0))
    (drop (call $poll (i32.const 1024) (i32.const 1088) (i32.const 1) (i32.const 1152))))"#;

#[test]
fn hello_world_goes_to_the_inherited_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat_file(dir.path(), "hello.wasm", &hello_wat("hello, world\n"));
    let out = run_captured(&plain_run(&module), b"");
    assert_eq!(out.exit, Ok(WasmExit::Code(0)));
    assert_eq!(out.stdout(), "hello, world\n");
    assert_eq!(out.stderr(), "");
}

#[test]
fn proc_exit_is_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat_file(
        dir.path(),
        "exit.wasm",
        r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start") (call $exit (i32.const 7))))"#,
    );
    assert_eq!(run(&plain_run(&module)).unwrap(), WasmExit::Code(7));
}

#[test]
fn a_trap_is_reported_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat_file(
        dir.path(),
        "trap.wasm",
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
    );
    let WasmExit::Trap(message) = run(&plain_run(&module)).unwrap() else {
        panic!("expected a trap");
    };
    assert!(message.contains("unreachable"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn an_infinite_loop_is_stopped_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat_file(
        dir.path(),
        "loop.wasm",
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#,
    );
    let mut spec = plain_run(&module);
    spec.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(run(&spec).unwrap(), WasmExit::Timeout);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn a_sleep_in_a_host_call_is_cut_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let wat = format!(
        r#"(module {SLEEP_WAT}
          (memory (export "memory") 1)
          (func (export "_start") (call $sleep (i64.const 60000000000))))"#
    );
    let module = wat_file(dir.path(), "sleep.wasm", &wat);
    let mut spec = plain_run(&module);
    spec.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(run(&spec).unwrap(), WasmExit::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_read_of_stdin_that_never_ends_is_cut_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat_file(
        dir.path(),
        "read.wasm",
        r#"(module
          (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 64))
            (i32.store (i32.const 4) (i32.const 64))
            (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    );
    let mut spec = plain_run(&module);
    spec.timeout = Some(Duration::from_millis(300));
    let result = dir.path().join("result.json");
    let mut child = common::spawn_child(&spec, &result);
    // Keep stdin open and silent until the child is done.
    let stdin = child.stdin.take();
    let started = Instant::now();
    let status = child.wait().unwrap();
    drop(stdin);
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let exit: Result<WasmExit, String> =
        serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(exit, Ok(WasmExit::Timeout));
}

#[test]
fn fuel_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat_file(
        dir.path(),
        "spin.wasm",
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#,
    );
    let mut spec = plain_run(&module);
    spec.fuel = Some(1_000_000);
    assert_eq!(run(&spec).unwrap(), WasmExit::FuelExhausted);
}

#[test]
fn enough_fuel_lets_the_module_finish() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat_file(
        dir.path(),
        "short.wasm",
        r#"(module (memory (export "memory") 1) (func (export "_start")))"#,
    );
    let mut spec = plain_run(&module);
    spec.fuel = Some(1_000_000);
    assert_eq!(run(&spec).unwrap(), WasmExit::Code(0));
}

#[test]
fn growing_past_the_memory_limit_fails_in_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    // Exit 42 only if: the first page is granted, the second is refused (-1), and a table grow
    // past limit/8 elements is refused too.
    let module = wat_file(
        dir.path(),
        "grow.wasm",
        r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (table $t 1 funcref)
          (func (export "_start")
            (if (i32.ne (memory.grow (i32.const 1)) (i32.const 1)) (then (call $exit (i32.const 1))))
            (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1)) (then (call $exit (i32.const 2))))
            (if (i32.ne (table.grow $t (ref.null func) (i32.const 20000)) (i32.const -1))
              (then (call $exit (i32.const 3))))
            (if (i32.ne (table.grow $t (ref.null func) (i32.const 100)) (i32.const 1))
              (then (call $exit (i32.const 4))))
            (call $exit (i32.const 42))))"#,
    );
    let mut spec = plain_run(&module);
    spec.memory_limit = 2 * 65_536;
    assert_eq!(run(&spec).unwrap(), WasmExit::Code(42));
}

#[test]
fn an_initial_memory_over_the_limit_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat_file(
        dir.path(),
        "big.wasm",
        r#"(module (memory (export "memory") 100) (func (export "_start")))"#,
    );
    let mut spec = plain_run(&module);
    spec.memory_limit = 1 << 20;
    let err = run(&spec).unwrap_err();
    assert!(matches!(err, WasmError::Setup(_)), "{err}");
}

#[test]
fn a_malformed_module_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0\x01\xff\xff\xff").unwrap();
    let WasmError::Malformed(message) = run(&plain_run(&garbage)).unwrap_err() else {
        panic!("expected Malformed");
    };
    assert!(!message.contains('\n'), "{message}");
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, "(module)").unwrap();
    assert!(matches!(
        run(&plain_run(&text)),
        Err(WasmError::Malformed(_))
    ));
}

#[test]
fn a_missing_file_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wasm");
    assert!(matches!(run(&plain_run(&missing)), Err(WasmError::NotFound(p)) if p == missing));
}

#[test]
fn a_module_without_start_or_with_unknown_imports_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = wat_file(dir.path(), "reactor.wasm", "(module (func (export \"f\")))");
    assert!(matches!(
        run(&plain_run(&reactor)),
        Err(WasmError::Setup(_))
    ));
    let unknown = wat_file(
        dir.path(),
        "unknown.wasm",
        r#"(module (import "env" "host_exec" (func)) (func (export "_start")))"#,
    );
    let err = run(&plain_run(&unknown)).unwrap_err();
    assert!(
        matches!(&err, WasmError::Setup(m) if m.contains("host_exec")),
        "{err}"
    );
}

/// Prints argv and environ, each as its NUL-terminated strings, separated by a newline.
const DUMP_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 32) "\n")
  (func $dump (param $buf i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $buf))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))))
  (func (export "_start")
    (drop (call $args_sizes (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 1024) (i32.const 8192)))
    (call $dump (i32.const 8192) (i32.load (i32.const 4)))
    (call $dump (i32.const 32) (i32.const 1))
    (drop (call $env_sizes (i32.const 0) (i32.const 4)))
    (drop (call $env_get (i32.const 1024) (i32.const 16384)))
    (call $dump (i32.const 16384) (i32.load (i32.const 4)))))"#;

/// argv and environ as the module printed them.
fn dumped(stdout: &str) -> (Vec<String>, Vec<String>) {
    let (args, env) = stdout.split_once('\n').unwrap();
    let strings = |s: &str| {
        s.split_terminator('\0')
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    (strings(args), strings(env))
}

#[test]
fn argv_and_environment_are_exactly_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat_file(dir.path(), "dump.wasm", DUMP_WAT);
    let mut spec = plain_run(&module);
    spec.args = vec!["prog".into(), "two words".into(), "".into()];
    spec.env = vec![("A".into(), "1".into()), ("B".into(), "x=y z".into())];
    // The test process's own environment (HOME, PATH, CARGO_*, ...) must not leak in.
    let out = run_captured(&spec, b"");
    assert_eq!(out.exit, Ok(WasmExit::Code(0)));
    let (args, env) = dumped(&out.stdout());
    assert_eq!(args, ["prog", "two words", ""]);
    assert_eq!(env, ["A=1", "B=x=y z"]);

    spec.args = vec![];
    spec.env = vec![];
    let out = run_captured(&spec, b"");
    assert_eq!(out.stdout(), "\n");
}

#[test]
fn the_cwd_is_given_as_pwd() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("sub")).unwrap();
    let module = wat_file(dir.path(), "dump.wasm", DUMP_WAT);
    let mut spec = plain_run(&module);
    spec.env = vec![
        ("PWD".into(), "/elsewhere".into()),
        ("A".into(), "1".into()),
    ];
    spec.preopens = vec![Preopen {
        host: work.path().to_owned(),
        guest: "/work".into(),
        writable: false,
    }];
    spec.cwd = Some("/work/./sub/".into());
    let out = run_captured(&spec, b"");
    assert_eq!(out.exit, Ok(WasmExit::Code(0)));
    assert_eq!(dumped(&out.stdout()).1, ["A=1", "PWD=/work/sub"]);

    spec.cwd = Some("/tmp".into());
    assert!(matches!(run(&spec), Err(WasmError::Preopen { guest, .. }) if guest == "/tmp"));
    spec.cwd = Some("/work/missing".into());
    assert!(matches!(run(&spec), Err(WasmError::Preopen { .. })));
}

#[test]
fn every_socket_call_fails() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // For fds 0..16 (stdio, the preopen, nothing): accept, recv, send, shutdown must all fail.
    let module = wat_file(
        dir.path(),
        "sock.wasm",
        r#"(module
          (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "sock_recv" (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "sock_send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start") (local $fd i32)
            (i32.store (i32.const 0) (i32.const 256))
            (i32.store (i32.const 4) (i32.const 16))
            (loop $next
              (if (i32.eqz (call $accept (local.get $fd) (i32.const 0) (i32.const 64)))
                (then (call $exit (i32.add (i32.const 100) (local.get $fd)))))
              (if (i32.eqz (call $recv (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 64) (i32.const 68)))
                (then (call $exit (i32.add (i32.const 120) (local.get $fd)))))
              (if (i32.eqz (call $send (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 64)))
                (then (call $exit (i32.add (i32.const 140) (local.get $fd)))))
              (if (i32.eqz (call $shutdown (local.get $fd) (i32.const 3)))
                (then (call $exit (i32.add (i32.const 160) (local.get $fd)))))
              (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
              (br_if $next (i32.lt_u (local.get $fd) (i32.const 16))))
            (call $exit (i32.const 0))))"#,
    );
    let mut spec = plain_run(&module);
    spec.preopens = vec![Preopen {
        host: work.path().to_owned(),
        guest: "/work".into(),
        writable: true,
    }];
    assert_eq!(run(&spec).unwrap(), WasmExit::Code(0));
}

#[test]
fn stdout_streams_before_the_module_ends() {
    let dir = tempfile::tempdir().unwrap();
    // Writes "ready" (no newline), then sleeps 5 s.
    let wat = format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
          {SLEEP_WAT}
          (memory (export "memory") 1)
          (data (i32.const 64) "ready")
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 64))
            (i32.store (i32.const 4) (i32.const 5))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (call $sleep (i64.const 5000000000))))"#
    );
    let module = wat_file(dir.path(), "stream.wasm", &wat);
    let result = dir.path().join("result.json");
    let mut child = common::spawn_child(&plain_run(&module), &result);
    let seen = common::read_until(&mut child, b"ready", Duration::from_secs(4));
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(String::from_utf8_lossy(&seen).contains("ready"), "{seen:?}");
    assert!(still_running, "the module had already ended");
}
