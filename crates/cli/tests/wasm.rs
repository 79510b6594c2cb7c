//! The wasm tier end to end: `agentbox run --tier wasm` and persistent wasm sandboxes, with modules
//! compiled at test time from C by Debian's clang, lld and wasi-libc (scripts/install-deps.sh).

// Test code: a failed spawn, read or compile is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Compiles C `source` to a WASI module in `dir`; returns its path.
fn module(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    let wasm = dir.join(format!("{name}.wasm"));
    std::fs::write(&c, source).unwrap();
    let out = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-o"])
        .arg(&wasm)
        .arg(&c)
        .output()
        .expect("clang (scripts/install-deps.sh installs clang, lld and wasi-libc)");
    assert!(
        out.status.success(),
        "clang: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wasm
}

const FILES: &str = r#"
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <errno.h>
static void try_read(const char *p) {
    FILE *f = fopen(p, "r");
    char buf[128] = {0};
    if (f) { fgets(buf, sizeof buf, f); fclose(f); printf("read %s: %s\n", p, buf); }
    else printf("refused %s: %s\n", p, strerror(errno));
}
static void try_write(const char *p) {
    FILE *f = fopen(p, "w");
    if (f) { fputs("from wasm\n", f); fclose(f); printf("wrote %s\n", p); }
    else printf("refused %s: %s\n", p, strerror(errno));
}
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == 'r') try_read(argv[i] + 2); else try_write(argv[i] + 2);
    }
    const char *k = getenv("K");
    printf("env K=%s PATH=%s\n", k ? k : "-", getenv("PATH") ? getenv("PATH") : "-");
    return 7;
}
"#;

#[test]
fn a_module_sees_only_its_preopens_and_its_environment() {
    let _g = serial();
    let before = host_state();
    let dir = tempfile::tempdir().unwrap();
    let m = module(dir.path(), "files", FILES);
    let ws = dir.path().join("ws");
    let ro = dir.path().join("ro");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(dir.path().join("secret"), "host secret\n").unwrap();
    std::fs::write(ro.join("data"), "ro data\n").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), ws.join("link")).unwrap();
    let ro_flag = format!("{}:/data", ro.display());
    let secret = dir.path().join("secret");
    let out = run(&[
        "--tier",
        "wasm",
        "--workspace",
        ws.to_str().unwrap(),
        "--ro",
        &ro_flag,
        "--env",
        "K=v",
        "--",
        m.to_str().unwrap(),
        "w:/workspace/out.txt",
        "r:/data/data",
        "w:/data/new",
        "r:/workspace/link",
        "r:/workspace/../secret",
        &format!("r:{}", secret.display()),
        "r:/etc/passwd",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("wrote /workspace/out.txt"), "{text}");
    assert_eq!(
        std::fs::read_to_string(ws.join("out.txt")).unwrap(),
        "from wasm\n"
    );
    assert!(text.contains("read /data/data: ro data"), "{text}");
    for refused in [
        "/data/new",
        "/workspace/link",
        "/workspace/../secret",
        "/etc/passwd",
    ] {
        assert!(
            text.contains(&format!("refused {refused}")),
            "{refused}: {text}"
        );
    }
    assert!(!text.contains("host secret"), "{text}");
    assert!(!ro.join("new").exists());
    // Only the policy's own environment: no PATH, no HOME.
    assert!(text.contains("env K=v PATH=-"), "{text}");
    assert_nothing_left(&before);
}

#[test]
fn timeouts_fuel_and_traps_end_a_module_with_their_own_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let spin = module(
        dir.path(),
        "spin",
        "int main(void) { volatile unsigned long x = 0; for (;;) x++; }",
    );
    let trap = module(dir.path(), "trap", "int main(void) { __builtin_trap(); }");
    let record = dir.path().join("record.json");
    let out = run(&[
        "--tier",
        "wasm",
        "--timeout",
        "300ms",
        "--",
        spin.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    let mut policy = dir.path().join("fuel.toml");
    std::fs::write(&policy, "tier = \"wasm\"\n[limits]\nfuel = 100000\n").unwrap();
    let out = run(&[
        "--policy",
        policy.to_str().unwrap(),
        "--exit-record",
        record.to_str().unwrap(),
        "--",
        spin.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(stderr(&out).contains("fuel"), "{}", stderr(&out));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(rec["reason"], "fuel_exhausted", "{rec}");
    assert_eq!(rec["tier"], "wasm", "{rec}");
    policy = dir.path().join("trap.toml");
    std::fs::write(&policy, "tier = \"wasm\"\n").unwrap();
    let out = run(&[
        "--policy",
        policy.to_str().unwrap(),
        "--",
        trap.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(132), "{}", stderr(&out));
    assert!(stderr(&out).contains("trapped"), "{}", stderr(&out));
}

#[test]
fn bad_modules_and_unenforceable_fields_are_refused_on_one_line() {
    let _g = serial();
    let before = host_state();
    let dir = tempfile::tempdir().unwrap();
    let m = module(dir.path(), "ok", "int main(void) { return 0; }");
    let text_file = dir.path().join("script.sh");
    std::fs::write(&text_file, "#!/bin/sh\n").unwrap();
    let garbage = dir.path().join("bad.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0\xff\xff\xff").unwrap();
    let m = m.to_str().unwrap();
    for (args, code, needle) in [
        (vec!["--", "/nonexistent.wasm"], 127, "/nonexistent.wasm"),
        (
            vec!["--", text_file.to_str().unwrap()],
            126,
            "not a WebAssembly module",
        ),
        (vec!["--", garbage.to_str().unwrap()], 126, "bad.wasm"),
        (vec!["--pids", "5", "--", m], 123, "limits.pids"),
        (vec!["--cpus", "1", "--", m], 123, "limits.cpus"),
        (vec!["--user", "1000", "--", m], 123, "user"),
        (vec!["--net", "allow:a.test", "--", m], 123, "network.mode"),
    ] {
        let mut full = vec!["--tier", "wasm"];
        full.extend_from_slice(&args);
        let out = run(&full);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // Fuel belongs to the wasm tier only.
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "[limits]\nfuel = 5\n").unwrap();
    let out = run(&["--policy", policy.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.status.code(), Some(123), "{}", stderr(&out));
    assert!(stderr(&out).contains("limits.fuel"), "{}", stderr(&out));
    assert_nothing_left(&before);
}

#[test]
fn a_persistent_wasm_sandbox_keeps_its_files_between_modules() {
    let _g = serial();
    let before = host_state();
    let dir = tempfile::tempdir().unwrap();
    let m = module(dir.path(), "files", FILES);
    let id = ok(agentbox(&["create", "--tier", "wasm"]).output().unwrap());
    let id = id.trim();
    let dest = format!("{id}:/workspace/files.wasm");
    ok(agentbox(&["cp", m.to_str().unwrap(), &dest])
        .output()
        .unwrap());
    let exec = |args: &[&str]| {
        let mut full = vec!["exec", id, "--"];
        full.extend_from_slice(args);
        agentbox(&full).output().unwrap()
    };
    let first = exec(&["/workspace/files.wasm", "w:/workspace/kept.txt"]);
    assert_eq!(first.status.code(), Some(7), "{}", stderr(&first));
    let second = exec(&[
        "/workspace/files.wasm",
        "r:/workspace/kept.txt",
        "r:/etc/passwd",
    ]);
    assert_eq!(second.status.code(), Some(7), "{}", stderr(&second));
    let text = stdout(&second);
    assert!(
        text.contains("read /workspace/kept.txt: from wasm"),
        "{text}"
    );
    assert!(text.contains("refused /etc/passwd"), "{text}");
    // Only modules run there.
    let sh = exec(&["sh", "-c", "true"]);
    assert_eq!(sh.status.code(), Some(127), "{}", stderr(&sh));
    let listed = ok(agentbox(&["ls"]).output().unwrap());
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(id) && l.contains("wasm")),
        "{listed}"
    );
    ok(agentbox(&["rm", id]).output().unwrap());
    assert_nothing_left(&before);
}
