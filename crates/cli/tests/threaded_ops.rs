//! The operations on persistent sandboxes that servers call from threads: create through the helper
//! binary, exec with captured output, and files, all from this (multi-threaded) test process.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::path::Path;

use agentbox_policy::{LimitsSpec, PolicySpec};
use agentbox_runtime::persistent::{self, protocol::ExecRequest, CreateOptions};

struct Created(String);

impl Drop for Created {
    fn drop(&mut self) {
        let _ = persistent::stop(&self.0);
    }
}

fn request(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        cwd: None,
        timeout_ms: None,
        tty: false,
        tty_size: None,
        stdin: true,
    }
}

fn create(tenant: &str) -> Created {
    let spec = PolicySpec {
        limits: LimitsSpec {
            memory: Some("256M".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let options = CreateOptions {
        tenant: Some(tenant.into()),
        ..Default::default()
    };
    Created(persistent::create_with_helper(Path::new(BIN), &spec, &options).unwrap())
}

#[test]
fn create_exec_and_files_from_a_threaded_caller() {
    let _g = serial();
    let b = create("team-a");
    assert_eq!(
        persistent::state::find(&b.0).unwrap().tenant.as_deref(),
        Some("team-a")
    );
    let out = persistent::exec_captured(
        &b.0,
        request(&["python3", "-c", "print(6*7)"]),
        b"",
        1 << 20,
    )
    .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice(), out.truncated),
        (0, b"42\n".as_slice(), false)
    );
    // A megabyte through stdin and back, while the command writes as it reads.
    let input = vec![b'y'; 1 << 20];
    let out = persistent::exec_captured(&b.0, request(&["cat"]), &input, 2 << 20).unwrap();
    assert_eq!(out.stdout.len(), 1 << 20);
    let out = persistent::exec_captured(
        &b.0,
        request(&["sh", "-c", "echo err >&2; exit 3"]),
        b"",
        1 << 20,
    )
    .unwrap();
    assert_eq!(
        (out.exit_code, out.stderr.as_slice()),
        (3, b"err\n".as_slice())
    );
    let out = persistent::exec_captured(
        &b.0,
        request(&["sh", "-c", "head -c 100000 /dev/zero"]),
        b"",
        10,
    )
    .unwrap();
    assert!(out.truncated && out.stdout.len() == 10);
    let e = persistent::exec_captured(&b.0, request(&["nosuch"]), b"", 100).unwrap_err();
    assert_eq!(e.exit_code(), 127);
    persistent::write_file(&b.0, Path::new("/workspace/note.txt"), b"hello").unwrap();
    assert_eq!(
        persistent::read_file(&b.0, Path::new("/workspace/note.txt"), 100).unwrap(),
        b"hello"
    );
    let ls = persistent::list_dir(&b.0, Path::new("/workspace")).unwrap();
    assert!(
        ls.iter()
            .any(|e| e.name == "note.txt" && e.kind == "file" && e.size == 5),
        "{ls:?}"
    );
    let out = persistent::exec_captured(
        &b.0,
        request(&["stat", "-c", "%u", "/workspace/note.txt"]),
        b"",
        100,
    )
    .unwrap();
    assert_eq!(
        out.stdout, b"0\n",
        "a written file belongs to the sandbox's user"
    );
    // Paths resolve inside the sandbox: a planted symlink to / does not reach the host.
    persistent::exec_captured(&b.0, request(&["ln", "-s", "/", "/tmp/up"]), b"", 100).unwrap();
    assert!(persistent::read_file(&b.0, Path::new("/tmp/up/etc/shadow"), 100).is_err());
    assert!(persistent::read_file(&b.0, Path::new("relative"), 100).is_err());
}
