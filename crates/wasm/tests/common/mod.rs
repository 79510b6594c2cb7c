//! Shared by the integration tests: building modules, and running one in a child process (this
//! same test binary, re-entered through its `wasm_child` test) so that what the module writes to
//! the inherited stdout/stderr can be read back.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentbox_wasm::{WasmExit, WasmRun};

const CHILD_RUN: &str = "AGENTBOX_WASM_TEST_RUN";
const CHILD_RESULT: &str = "AGENTBOX_WASM_TEST_RESULT";
const BEGIN: &str = "\n<<<agentbox-wasm-begin>>>\n";
const END: &str = "<<<agentbox-wasm-end>>>";

/// Defines the `wasm_child` test that [`run_captured`] re-enters; a no-op in a normal test run.
#[macro_export]
macro_rules! child_runner {
    () => {
        #[test]
        fn wasm_child() {
            common::child_main();
        }
    };
}

/// The body of `wasm_child`: runs the `WasmRun` given in the environment between two markers on
/// stdout and stderr, and writes its result as JSON to the given file.
pub fn child_main() {
    let Ok(spec) = std::env::var(CHILD_RUN) else {
        return;
    };
    let run: WasmRun = serde_json::from_str(&spec).unwrap();
    print!("{BEGIN}");
    eprint!("{BEGIN}");
    std::io::stdout().flush().unwrap();
    std::io::stderr().flush().unwrap();
    let result = agentbox_wasm::run(&run).map_err(|err| err.to_string());
    std::io::stdout().flush().unwrap();
    std::io::stderr().flush().unwrap();
    print!("{END}");
    eprint!("{END}");
    std::io::stdout().flush().unwrap();
    std::io::stderr().flush().unwrap();
    let path = std::env::var(CHILD_RESULT).unwrap();
    std::fs::write(path, serde_json::to_string(&result).unwrap()).unwrap();
}

/// What a child run produced.
#[derive(Debug)]
pub struct Captured {
    pub exit: Result<WasmExit, String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Captured {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Starts this test binary as a child that runs `run` with piped stdio.
pub fn spawn_child(run: &WasmRun, result: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "wasm_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_RUN, serde_json::to_string(run).unwrap())
        .env(CHILD_RESULT, result)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `run` in a child process with `stdin` as its standard input; returns its result and
/// exactly what the module wrote to stdout and stderr.
pub fn run_captured(run: &WasmRun, stdin: &[u8]) -> Captured {
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("result.json");
    let mut child = spawn_child(run, &result);
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "child failed: {stderr}");
    let exit = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    Captured {
        exit,
        stdout: between_markers(&output.stdout),
        stderr: between_markers(&output.stderr),
    }
}

/// The bytes between the begin and end markers.
pub fn between_markers(out: &[u8]) -> Vec<u8> {
    let find = |needle: &[u8], from: usize| {
        out[from..]
            .windows(needle.len())
            .position(|window| window == needle)
            .map(|at| at + from)
    };
    let begin = find(BEGIN.as_bytes(), 0).expect("begin marker") + BEGIN.len();
    let end = find(END.as_bytes(), begin).expect("end marker");
    out[begin..end].to_vec()
}

/// Reads from `child`'s stdout until `needle` shows up (or `within` passes).
pub fn read_until(child: &mut Child, needle: &[u8], within: Duration) -> Vec<u8> {
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_vec();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen
                .windows(needle.len())
                .any(|window| window == needle.as_slice())
            {
                break;
            }
        }
        let _ = tx.send(seen);
    });
    rx.recv_timeout(within).unwrap_or_default()
}

/// Writes the binary of `wat` to `dir/name`.
pub fn wat_file(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path
}

/// A run of `module` with nothing granted: argv `[name]`, no env, no preopens, 64 MiB, a 60 s
/// safety deadline.
pub fn plain_run(module: &Path) -> WasmRun {
    WasmRun {
        module: module.to_owned(),
        args: vec![module.file_name().unwrap().to_string_lossy().into_owned()],
        env: vec![],
        preopens: vec![],
        cwd: None,
        memory_limit: 64 << 20,
        timeout: Some(Duration::from_secs(60)),
        fuel: None,
        cache_dir: None,
    }
}

/// A WAT core module whose `_start` writes `text` to stdout.
pub fn hello_wat(text: &str) -> String {
    let escaped: String = text.bytes().map(|b| format!("\\{b:02x}")).collect();
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{escaped}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {len}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = text.len()
    )
}
