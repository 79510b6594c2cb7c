//! A caller that holds threads runs sandboxes through the hidden helper subcommand: a fresh,
//! single-threaded `agentbox` process does the set-up, never a fork of the threaded caller.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use agentbox_policy::{LimitsSpec, PolicySpec};
use agentbox_runtime::helper_command;

#[test]
fn a_threaded_caller_runs_a_sandbox_through_the_helper() {
    let (stop, parked) = std::sync::mpsc::channel::<()>();
    let waiter = std::thread::spawn(move || parked.recv());
    let threads = status_field(std::process::id(), "Threads").unwrap();
    assert!(
        threads.parse::<u32>().unwrap() >= 2,
        "the caller must hold threads: {threads}"
    );
    let spec = PolicySpec {
        limits: LimitsSpec {
            memory: Some("256M".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let argv = [
        "python3",
        "-c",
        "import os; print(os.getpid(), os.getuid())",
    ]
    .map(String::from);
    let out = helper_command(std::path::Path::new(BIN), &spec, &argv)
        .output()
        .unwrap();
    stop.send(()).unwrap();
    let _ = waiter.join();
    let text = ok(out);
    let fields: Vec<u32> = text
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert!(fields[0] <= 3 && fields[1] == 0, "{text}");
}

#[test]
fn the_helper_refuses_a_bad_spec_in_one_line() {
    let out = agentbox(&["__sandbox", "--", "true"])
        .env("AGENTBOX_SPEC_JSON", r#"{"tier":"ns","memroy":"1G"}"#)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("memroy"), "{err}");
}

#[test]
fn the_helper_is_not_in_the_help() {
    let out = agentbox(&["--help"]).output().unwrap();
    assert!(!stdout(&out).contains("__sandbox"));
}
