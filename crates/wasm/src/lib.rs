//! The engine of agentbox's `wasm` tier: runs one WebAssembly program — a WASI preview 1 core
//! module or a WASI preview 2 `wasi:cli/run` component — under wasmtime, and reports how it ended.
//!
//! The guest gets exactly what a [`WasmRun`] names: its argv, its environment, its preopened
//! directories and the process's stdin/stdout/stderr. It never gets sockets (every network use is
//! denied), the host's environment or arguments, or any file outside its preopens. Memory, wall
//! time and CPU (fuel) are capped per run. This crate must never touch the host file system
//! beyond the preopens, the module file and the compilation cache directory, and it holds no
//! `unsafe`: compiled code is only ever reloaded through wasmtime's own cache.

mod cache;
mod compile;
mod error;
mod limits;
mod preopen;
mod run;
mod timeout;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::WasmError;
pub use run::run;

/// A host directory the guest sees at `guest`. The only file system that exists for the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preopen {
    /// The host directory.
    pub host: PathBuf,
    /// Where the guest finds it, e.g. `/work`.
    pub guest: String,
    /// Whether the guest may create, write, rename and delete in it; otherwise directory and file
    /// permissions are both read-only.
    pub writable: bool,
}

/// One run of a WebAssembly program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmRun {
    /// Host path of a `.wasm` core module (WASI preview 1) or component (`wasi:cli/run`).
    pub module: PathBuf,
    /// argv as the module sees it (`args[0]` is the program name).
    pub args: Vec<String>,
    /// The only environment the module sees.
    pub env: Vec<(String, String)>,
    /// The only file system the module sees.
    pub preopens: Vec<Preopen>,
    /// A guest path inside one of the preopens, given to the guest as `PWD` and as the
    /// component's initial cwd. wasi-libc ignores `PWD` (it resolves a relative path against the
    /// preopen named `.`), so that directory is also preopened as `.`, with its preopen's
    /// permissions; one consequence: an absolute path under no other preopen resolves inside it.
    /// `None`: no working directory.
    pub cwd: Option<String>,
    /// Bytes of linear memory the module may hold, all its memories together; tables are capped
    /// proportionally (one element per 8 bytes).
    pub memory_limit: u64,
    /// Wall-clock budget: the module is interrupted at the deadline, even inside a host call.
    pub timeout: Option<Duration>,
    /// CPU budget in wasmtime fuel units (about one per wasm instruction). `None`: unlimited, and
    /// fuel is not metered at all (metering costs speed).
    pub fuel: Option<u64>,
    /// wasmtime's compilation cache directory, created mode 0700 when missing. `None`: no cache.
    pub cache_dir: Option<PathBuf>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum WasmExit {
    /// `proc_exit(n)` or a return from `_start` (0); a component's `run` result (ok 0, error 1).
    Code(i32),
    /// The wall-clock `timeout` expired.
    Timeout,
    /// The `fuel` budget ran out.
    FuelExhausted,
    /// Any other trap, its message on one line.
    Trap(String),
}

/// The 4 bytes every WebAssembly binary (module or component) starts with.
pub(crate) const WASM_MAGIC: [u8; 4] = *b"\0asm";

/// Whether `path` is a file that starts with the WebAssembly magic `\0asm`.
pub fn is_wasm_file(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| magic == WASM_MAGIC)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn is_wasm_file_checks_the_magic() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("a.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
        let text = dir.path().join("a.txt");
        std::fs::write(&text, b"#!/bin/sh\n").unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, b"\0as").unwrap();
        assert!(is_wasm_file(&wasm));
        assert!(!is_wasm_file(&text));
        assert!(!is_wasm_file(&short));
        assert!(!is_wasm_file(&dir.path().join("missing")));
        assert!(!is_wasm_file(dir.path()));
    }

    #[test]
    fn exit_serializes_as_a_tagged_enum() {
        let json = serde_json::to_string(&WasmExit::Code(3)).unwrap();
        assert_eq!(json, r#"{"kind":"code","value":3}"#);
        let json = serde_json::to_string(&WasmExit::Timeout).unwrap();
        assert_eq!(json, r#"{"kind":"timeout"}"#);
    }
}
