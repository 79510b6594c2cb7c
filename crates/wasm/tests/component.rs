//! Components (WASI preview 2 `wasi:cli/run`) written in WAT: the run result and `wasi:cli/exit`
//! become exit codes, and the deadline, fuel and memory limits hold as for core modules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use agentbox_wasm::{run, WasmError, WasmExit};
use common::{plain_run, wat_file};

child_runner!();

/// A component exporting `wasi:cli/run` around a core module whose `run` export returns the
/// result's discriminant (0 ok, 1 error); `imports` and `core_imports` wire imports in.
fn command(core_module: &str, imports: &str, instantiate: &str) -> String {
    format!(
        r#"(component
          {imports}
          (core module $m {core_module})
          (core instance $i (instantiate $m {instantiate}))
          (func $run (result (result)) (canon lift (core func $i "run")))
          (instance $inst (export "run" (func $run)))
          (export "wasi:cli/run@0.2.0" (instance $inst)))"#
    )
}

#[test]
fn the_run_result_is_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let ok = command(
        r#"(func (export "run") (result i32) (i32.const 0))"#,
        "",
        "",
    );
    let ok = wat_file(dir.path(), "ok.wasm", &ok);
    assert!(agentbox_wasm::is_wasm_file(&ok));
    assert_eq!(run(&plain_run(&ok)).unwrap(), WasmExit::Code(0));
    let err = command(
        r#"(func (export "run") (result i32) (i32.const 1))"#,
        "",
        "",
    );
    let err = wat_file(dir.path(), "err.wasm", &err);
    assert_eq!(run(&plain_run(&err)).unwrap(), WasmExit::Code(1));
}

#[test]
fn wasi_cli_exit_is_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    // exit(ok) then `unreachable`: Code(0) only if the exit really ended the run.
    let wat = command(
        r#"(import "wasi" "exit" (func $exit (param i32)))
           (func (export "run") (result i32) (call $exit (i32.const 0)) unreachable)"#,
        r#"(import "wasi:cli/exit@0.2.0" (instance $exit (export "exit" (func (param "status" (result))))))
           (core func $exit (canon lower (func $exit "exit")))
           (core instance $wasi (export "exit" (func $exit)))"#,
        r#"(with "wasi" (instance $wasi))"#,
    );
    let module = wat_file(dir.path(), "exit.wasm", &wat);
    assert_eq!(run(&plain_run(&module)).unwrap(), WasmExit::Code(0));
}

#[test]
fn limits_hold_for_components() {
    let dir = tempfile::tempdir().unwrap();
    let spin = command(
        r#"(func (export "run") (result i32) (loop $l (br $l)) (i32.const 0))"#,
        "",
        "",
    );
    let spin = wat_file(dir.path(), "spin.wasm", &spin);
    let mut spec = plain_run(&spin);
    spec.timeout = Some(Duration::from_millis(200));
    assert_eq!(run(&spec).unwrap(), WasmExit::Timeout);
    spec.timeout = None;
    spec.fuel = Some(100_000);
    assert_eq!(run(&spec).unwrap(), WasmExit::FuelExhausted);

    let big = command(
        r#"(memory 100) (func (export "run") (result i32) (i32.const 0))"#,
        "",
        "",
    );
    let big = wat_file(dir.path(), "big.wasm", &big);
    let mut spec = plain_run(&big);
    spec.memory_limit = 1 << 20;
    assert!(matches!(run(&spec), Err(WasmError::Setup(_))));
    spec.memory_limit = 100 << 16;
    assert_eq!(run(&spec).unwrap(), WasmExit::Code(0));
}

#[test]
fn a_component_without_wasi_cli_run_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = wat_file(dir.path(), "empty.wasm", "(component)");
    assert!(matches!(run(&plain_run(&empty)), Err(WasmError::Setup(_))));
}
