//! Cold and warm start of `agentbox_wasm::run` in-process, for a hello world (a WAT module by
//! default, or the `.wasm` given as the first argument): cold = an empty cache directory each
//! run, warm = the same cache directory. The module's output goes to stdout; the medians go to
//! stderr. `cargo run --release -p agentbox-wasm --example startup -- [hello.wasm] >/dev/null`
//!
//! With `ONCE=<cache dir>` in the environment it runs the module once with that cache directory
//! and exits with its code: a process to time with hyperfine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentbox_wasm::{run, WasmRun};

const RUNS: usize = 50;
const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello, world\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let module = match std::env::args_os().nth(1) {
        Some(path) => PathBuf::from(path),
        None => {
            let path = dir.path().join("hello.wasm");
            std::fs::write(&path, wat::parse_str(HELLO).unwrap()).unwrap();
            path
        }
    };
    let once = std::env::var_os("ONCE").map(PathBuf::from);
    let cache = once.clone().unwrap_or_else(|| dir.path().join("cache"));
    let spec = WasmRun {
        module: module.clone(),
        args: vec!["hello".into()],
        env: vec![],
        preopens: vec![],
        cwd: None,
        memory_limit: 256 << 20,
        timeout: Some(Duration::from_secs(10)),
        fuel: None,
        cache_dir: Some(cache.clone()),
    };
    if once.is_some() {
        match run(&spec).unwrap() {
            agentbox_wasm::WasmExit::Code(code) => std::process::exit(code),
            other => panic!("{other:?}"),
        }
    }
    let time = |spec: &WasmRun| {
        let started = Instant::now();
        run(spec).unwrap();
        started.elapsed()
    };
    let cold: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let _ = std::fs::remove_dir_all(&cache);
            time(&spec)
        })
        .collect();
    let warm: Vec<Duration> = (0..RUNS).map(|_| time(&spec)).collect();
    let uncached = WasmRun {
        cache_dir: None,
        ..spec.clone()
    };
    let none: Vec<Duration> = (0..RUNS).map(|_| time(&uncached)).collect();
    eprintln!(
        "{}: median of {RUNS} runs: cold (empty cache) {:?}, warm (cached) {:?}, no cache {:?}",
        module.display(),
        median(cold),
        median(warm),
        median(none)
    );
}
