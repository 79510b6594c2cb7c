//! The compilation cache: the first run of a module writes its compiled code to the cache
//! directory (created 0700), the second loads it instead of compiling again. No timing is
//! asserted; the timings are printed for the curious (`--nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use agentbox_wasm::{run, WasmExit};
use common::{plain_run, wat_file};

child_runner!();

/// Compiled artifacts under `dir` (usage statistics left out) with their inode numbers.
fn artifacts(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            // wasmtime's bookkeeping renames its work files while we list (seen in CI): a file
            // gone between the listing and its stat was one of those, not compiled code.
            let meta = match entry.metadata() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                other => other.unwrap(),
            };
            let path = entry.path();
            if meta.is_dir() {
                pending.push(path);
            } else {
                // Usage statistics and wasmtime's in-flight work files (`*.wip-*`, written now
                // and then by the cache's own bookkeeping, even on a hit) are not compiled code.
                let name = entry.file_name().to_string_lossy().into_owned();
                let bookkeeping = name.ends_with(".stats") || name.contains(".wip");
                if !bookkeeping {
                    found.push((path, meta.ino()));
                }
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_second_run_loads_the_compiled_code_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat_file(
        dir.path(),
        "exit3.wasm",
        r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start") (call $exit (i32.const 3))))"#,
    );
    let cache = dir.path().join("cache/wasm");
    let mut spec = plain_run(&module);
    spec.cache_dir = Some(cache.clone());

    let started = Instant::now();
    assert_eq!(run(&spec).unwrap(), WasmExit::Code(3));
    let cold = started.elapsed();
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let first = artifacts(&cache);
    assert!(
        !first.is_empty(),
        "the first run left no compiled code in {}",
        cache.display()
    );

    let started = Instant::now();
    assert_eq!(run(&spec).unwrap(), WasmExit::Code(3));
    let warm = started.elapsed();
    // A miss would have compiled again and written a new file (a new inode) in its place.
    assert_eq!(
        artifacts(&cache),
        first,
        "the second run did not load from the cache"
    );
    eprintln!("run() of a tiny module: cold {cold:?}, warm {warm:?}");
}

#[test]
fn a_different_engine_setting_is_a_different_cache_entry() {
    let dir = tempfile::tempdir().unwrap();
    let module = wat_file(
        dir.path(),
        "nop.wasm",
        r#"(module (memory (export "memory") 1) (func (export "_start")))"#,
    );
    let mut spec = plain_run(&module);
    spec.cache_dir = Some(dir.path().join("cache"));
    spec.timeout = None;
    assert_eq!(run(&spec).unwrap(), WasmExit::Code(0));
    let one = artifacts(&dir.path().join("cache")).len();
    // Fuel metering changes the generated code: it must not reuse the unmetered artifact.
    spec.fuel = Some(1_000);
    assert_eq!(run(&spec).unwrap(), WasmExit::Code(0));
    assert!(artifacts(&dir.path().join("cache")).len() > one);
}
