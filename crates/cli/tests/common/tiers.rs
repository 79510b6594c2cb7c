//! The table of tiers the conformance suites run against (`conformance.rs`,
//! `conformance_signals.rs`), and how a check runs on each.

use std::process::Output;

use super::{run, serial, stderr, stdout};

/// One row of the table: how to select the tier, and what it claims.
pub struct Row {
    pub name: &'static str,
    pub flags: &'static [&'static str],
    /// It has a /proc of its own (chroot has none at all).
    pub proc: bool,
    /// It loads agentbox's seccomp allowlist (gVisor filters the sentry's own calls instead, and
    /// shows no seccomp mode to the sandbox).
    pub seccomp: bool,
    /// It enforces limits.pids (chroot: RLIMIT_NPROC, which does not stop a fork bomb's first
    /// hundred processes: it is checked like the others).
    pub pids: bool,
    /// Its software is installed by scripts/install-deps.sh, so it must be available here.
    pub required: bool,
}

pub const ROWS: &[Row] = &[
    Row {
        name: "ns",
        flags: &["--tier", "ns"],
        proc: true,
        seccomp: true,
        pids: true,
        required: true,
    },
    Row {
        name: "chroot",
        flags: &["--tier", "chroot"],
        proc: false,
        seccomp: false,
        pids: true,
        required: true,
    },
    Row {
        name: "oci (runc)",
        flags: &["--tier", "oci", "--runtime", "runc"],
        proc: true,
        seccomp: true,
        pids: true,
        required: true,
    },
    Row {
        name: "oci (crun)",
        flags: &["--tier", "oci", "--runtime", "crun"],
        proc: true,
        seccomp: true,
        pids: true,
        required: true,
    },
    Row {
        name: "gvisor",
        flags: &["--tier", "gvisor"],
        proc: true,
        seccomp: false,
        pids: true,
        required: true,
    },
    Row {
        name: "nspawn",
        flags: &["--tier", "nspawn"],
        proc: true,
        seccomp: true,
        pids: true,
        required: true,
    },
];

pub fn with(row: &Row, extra: &[&str], command: &[&str]) -> Output {
    let mut args: Vec<&str> = row.flags.to_vec();
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    run(&args)
}

/// The rows that can run here; the others are printed with their reason (and fail the test when
/// the row is required).
pub fn available() -> Vec<&'static Row> {
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for row in ROWS {
        let o = with(row, &[], &["/bin/true"]);
        if o.status.code() == Some(0) {
            rows.push(row);
        } else {
            let why = format!("{}: exit {:?}: {}", row.name, o.status.code(), stderr(&o));
            eprintln!("SKIPPED tier {why}");
            if row.required {
                missing.push(why);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "tiers whose software install-deps.sh installs cannot run: {missing:?}"
    );
    rows
}

/// Runs `check` on every available row and reports every failure at once.
pub fn each(check: impl Fn(&Row) -> Result<(), String>) {
    let _guard = serial();
    let failures: Vec<String> = available()
        .into_iter()
        .filter_map(|row| check(row).err().map(|e| format!("{}: {e}", row.name)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

pub fn expect(o: &Output, code: i32, what: &str) -> Result<(), String> {
    if o.status.code() == Some(code) {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected exit {code}, got {:?}; stdout {:?} stderr {:?}",
            o.status.code(),
            stdout(o),
            stderr(o)
        ))
    }
}
