//! `agentbox eval` and `agentbox doctor` end to end. The harness is tested against a deliberately
//! weak row (chroot as root), which the probes must catch escaping, so a probe that cannot fail is
//! seen; and against the `ns` tier, which must hold. Running the whole suite (resource probes
//! included) against the `chroot` tier must leave the host unchanged.

// Test code: a failed spawn, read or parse is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

/// Runs `agentbox eval ARGS --json FILE` and returns the report.
fn eval(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut full = vec!["eval"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--json", json.to_str().unwrap()]);
    let out = agentbox(&full).output().unwrap();
    assert!(
        out.status.success(),
        "eval {args:?}: {:?}\n{}",
        out.status,
        stderr(&out)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

/// The verdict of each probe of row `id`.
fn verdicts(report: &Value, id: &str) -> BTreeMap<String, String> {
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row {id}"));
    assert_eq!(row["available"], true, "{row}");
    row["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["probe"].as_str().unwrap().to_string(),
                r["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_all(v: &BTreeMap<String, String>, verdict: &str, probes: &[&str], row: &str) {
    let wrong: Vec<String> = probes
        .iter()
        .filter(|p| v.get(**p).map(String::as_str) != Some(verdict))
        .map(|p| format!("{p}={:?}", v.get(*p)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{row}: expected {verdict}: {wrong:?}\nall: {v:?}"
    );
}

#[test]
fn a_root_chroot_is_caught_escaping_and_the_ns_tier_holds() {
    let _g = serial();
    let before = host_state();
    let report = eval(&["--tiers", "peer:chroot,ns", "--quick", "--no-bench"]);
    let weak = verdicts(&report, "peer:chroot");
    assert_all(
        &weak,
        "escaped",
        &[
            "chroot_double",
            "host_processes",
            "kill_sentinel",
            "mknod",
            "mount_proc",
            "capabilities",
            "keyctl",
            "io_uring_setup",
            "raw_socket",
            "net_loopback",
            "canary_write",
            "host_files",
        ],
        "peer:chroot",
    );
    let ns = verdicts(&report, "ns");
    assert_all(
        &ns,
        "blocked",
        &[
            "chroot_double",
            "chroot_fchdir",
            "host_files",
            "canary_write",
            "host_processes",
            "kill_sentinel",
            "ptrace_sentinel",
            "process_vm_readv",
            "mknod",
            "dev_kmsg",
            "dev_mem",
            "mount_proc",
            "mount_sysfs",
            "mount_cgroup",
            "core_pattern",
            "module_load",
            "tiocsti",
            "mount_blockdev",
            "setuid_nnp",
            "seccomp_x32",
            "raw_socket",
            "packet_socket",
            "release_agent",
            "userns_nested",
            "keyctl",
            "bpf",
            "userfaultfd",
            "perf_event_open",
            "io_uring_setup",
            "open_by_handle_at",
            "capabilities",
            "leak_hostname",
            "net_loopback",
            "leaked_fds",
        ],
        "ns",
    );
    // The posture is read on the host side, not taken from the probe.
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "ns")
        .unwrap();
    let posture = &row["posture"];
    assert_eq!(posture["cap_eff"], "0000000000000000", "{posture}");
    assert_eq!(posture["no_new_privs"], true, "{posture}");
    assert_eq!(posture["seccomp"], 2, "{posture}");
    for ns in ["mnt", "pid", "net", "user", "ipc", "uts", "cgroup"] {
        assert!(
            posture["own_namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == ns),
            "{ns}: {posture}"
        );
    }
    // Blocked results say which layer stopped them, where that can be told.
    let layered = row["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] == "blocked" && r["layer"].is_string())
        .count();
    assert!(layered > 10, "{row}");
    assert_nothing_left(&before);
    assert!(
        std::fs::read_dir("/tmp")
            .unwrap()
            .flatten()
            .all(|e| !(e.path().is_dir()
                && e.file_name()
                    .to_string_lossy()
                    .starts_with("agentbox-eval-"))),
        "planted files left in /tmp"
    );
}

/// What a probe could change on the host.
fn host_files() -> Vec<(String, String)> {
    let mut paths = vec![
        "/proc/sys/kernel/core_pattern".to_string(),
        "/proc/sys/kernel/modprobe".to_string(),
        "/proc/sys/kernel/hostname".to_string(),
    ];
    for d in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let agent = d.path().join("release_agent");
        if agent.exists() {
            paths.push(agent.display().to_string());
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let c = std::fs::read_to_string(&p).unwrap_or_default();
            (p, c)
        })
        .collect()
}

#[test]
fn the_whole_suite_against_the_chroot_tier_leaves_the_host_unchanged() {
    let _g = serial();
    let before = host_state();
    let files = host_files();
    let mountinfo = |()| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().nth(4).unwrap_or("").to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let mounts = mountinfo(());
    // Every probe, resource probes included; no benchmarks (they are not probes).
    let report = eval(&["--tiers", "chroot", "--no-bench"]);
    let v = verdicts(&report, "chroot");
    assert!(v.len() >= 40, "{v:?}");
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "chroot")
        .unwrap();
    assert!(row["reason"].is_null(), "{}", row["reason"]);
    assert_eq!(host_files(), files, "a watched host file changed");
    assert_eq!(mountinfo(()), mounts, "host mounts changed");
    assert_nothing_left(&before);
    let sentinels: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("__sentinel") || c.contains("__eval-cell"))
        .collect();
    assert!(sentinels.is_empty(), "{sentinels:?}");
}

#[test]
fn unknown_rows_and_probes_are_refused_naming_them() {
    for (args, needle) in [
        (["eval", "--tiers", "vm9"], "vm9"),
        (["eval", "--probes", "nope"], "nope"),
    ] {
        let out = agentbox(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}

#[test]
fn doctor_reports_this_host() {
    let out = agentbox(&["doctor"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let out = agentbox(&["doctor", "--json"]).output().unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    // ns at least; an engine tier (gvisor) where one runs here.
    let strongest = json["strongest"].as_str().unwrap_or("");
    assert!(
        ["ns", "oci", "nspawn", "gvisor", "microvm"].contains(&strongest),
        "{json}"
    );
    assert!(
        text.contains(&format!("Strongest tier here: {strongest}")),
        "{text}"
    );
}

#[test]
fn the_microvm_rows_hold_and_leave_nothing() {
    let _g = serial();
    let before = host_state();
    let files = host_files();
    let report = eval(&["--tiers", "microvm,microvm+ns", "--quick", "--no-bench"]);
    for row in ["microvm", "microvm+ns"] {
        let v = verdicts(&report, row);
        assert!(!v.is_empty(), "{row}: no probes ran");
        let escaped: Vec<&String> = v
            .iter()
            .filter(|(_, verdict)| verdict.as_str() == "escaped")
            .map(|(probe, _)| probe)
            .collect();
        assert!(escaped.is_empty(), "{row}: escaped {escaped:?}\nall: {v:?}");
        // The guest's kernel is its own: the host's boot id is out of reach.
        assert_eq!(
            v.get("leak_boot_id").map(String::as_str),
            Some("blocked"),
            "{row}: {v:?}"
        );
    }
    assert_eq!(host_files(), files, "a watched host file changed");
    assert_nothing_left(&before);
    let vms = std::fs::read_dir("/run/agentbox/vms")
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(vms, 0, "VM state left in /run/agentbox/vms");
}
