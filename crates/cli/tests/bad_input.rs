//! Bad input to `agentbox run`: every mistake gets exactly one `agentbox: ` line on stderr naming
//! the field or flag and the offending value, a distinct documented exit code (125 invalid input,
//! 126 cannot execute, 127 not found), nothing on stdout, and nothing left behind on the host.

// Test code: a failed spawn, read or parse is a test failure, so helpers (and the shared
// `common` module) panic with a message instead of threading errors.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

const INVALID: i32 = 125;
const CANNOT_EXECUTE: i32 = 126;
const NOT_FOUND: i32 = 127;
const TIMEOUT: i32 = 124;

/// Asserts that `o` is a refusal: exit `code`, no stdout, exactly one stderr line starting with
/// `agentbox: ` that contains every one of `needles`.
fn assert_refused(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code\nstdout: {}\nstderr: {err}",
        stdout(o)
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got {}:\n{err}",
        lines.len()
    );
    assert!(
        lines[0].starts_with("agentbox: "),
        "stderr line does not start with `agentbox: `: {err}"
    );
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "stderr line does not name {needle:?}: {err}"
        );
    }
    assert!(
        o.stdout.is_empty(),
        "nothing expected on stdout: {}",
        stdout(o)
    );
}

/// Runs `agentbox run ARGS` serialised, checks the refusal and that nothing was left behind.
fn refused(args: &[&str], code: i32, needles: &[&str]) -> Output {
    let _g = serial();
    let before = host_state();
    let o = run(args);
    assert_refused(&o, code, needles);
    assert_nothing_left(&before);
    o
}

/// A temp directory holding `name` with `contents`; returns the dir (kept alive) and the path.
fn file_in_tempdir(name: &str, contents: &str, mode: u32) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write temp file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let path = path.to_str().expect("utf-8 temp path").to_string();
    (dir, path)
}

// ---- policy file -------------------------------------------------------------------------------

#[test]
fn policy_unknown_field_under_limits() {
    let (_d, f) = file_in_tempdir("f.toml", "[limits]\nmemroy = \"1G\"\n", 0o644);
    refused(&["--policy", &f, "--", "true"], INVALID, &["memroy"]);
}

#[test]
fn policy_unknown_top_level_field() {
    let (_d, f) = file_in_tempdir("f.toml", "tmeout = \"1s\"\n", 0o644);
    refused(&["--policy", &f, "--", "true"], INVALID, &["tmeout"]);
}

#[test]
fn policy_malformed_toml() {
    let (_d, f) = file_in_tempdir("f.toml", "[limits\nmemory = \n", 0o644);
    refused(&["--policy", &f, "--", "true"], INVALID, &["policy", &f]);
}

#[test]
fn policy_wrong_type() {
    let (_d, f) = file_in_tempdir("f.toml", "[limits]\npids = \"many\"\n", 0o644);
    refused(&["--policy", &f, "--", "true"], INVALID, &["policy", &f]);
}

#[test]
fn policy_file_missing() {
    refused(
        &[
            "--policy",
            "/nonexistent/agentbox-policy.toml",
            "--",
            "true",
        ],
        INVALID,
        &["/nonexistent/agentbox-policy.toml"],
    );
}

#[test]
fn policy_file_bad_value_names_field() {
    let (_d, f) = file_in_tempdir("f.toml", "[limits]\nmemory = \"12XB\"\n", 0o644);
    refused(
        &["--policy", &f, "--", "true"],
        INVALID,
        &["limits.memory", "12XB"],
    );
}

// ---- limits ------------------------------------------------------------------------------------

#[test]
fn memory_bad_size() {
    refused(
        &["--memory", "12XB", "--", "true"],
        INVALID,
        &["limits.memory", "12XB"],
    );
}

#[test]
fn memory_too_small() {
    refused(
        &["--memory", "1K", "--", "true"],
        INVALID,
        &["limits.memory", "1K"],
    );
}

#[test]
fn memory_absurdly_large() {
    refused(
        &["--memory", "5000T", "--", "true"],
        INVALID,
        &["limits.memory", "5000T"],
    );
}

#[test]
fn disk_bad_size() {
    refused(
        &["--disk", "lots", "--", "true"],
        INVALID,
        &["limits.disk", "lots"],
    );
}

#[test]
fn pids_zero() {
    refused(
        &["--pids", "0", "--", "true"],
        INVALID,
        &["limits.pids", "0"],
    );
}

#[test]
fn pids_not_a_number() {
    refused(
        &["--pids", "many", "--", "true"],
        INVALID,
        &["--pids", "many"],
    );
}

#[test]
fn cpus_zero() {
    refused(
        &["--cpus", "0", "--", "true"],
        INVALID,
        &["limits.cpus", "0"],
    );
}

#[test]
fn cpus_absurd() {
    refused(
        &["--cpus", "5000", "--", "true"],
        INVALID,
        &["limits.cpus", "5000"],
    );
}

#[test]
fn timeout_zero() {
    refused(
        &["--timeout", "0s", "--", "true"],
        INVALID,
        &["limits.timeout", "0s"],
    );
}

#[test]
fn timeout_not_a_duration() {
    refused(
        &["--timeout", "forever", "--", "true"],
        INVALID,
        &["limits.timeout", "forever"],
    );
}

// ---- tier, network, image ----------------------------------------------------------------------

#[test]
fn unknown_tier() {
    refused(&["--tier", "vm", "--", "true"], INVALID, &["tier", "vm"]);
}

#[test]
fn image_missing() {
    refused(
        &["--image", "/nonexistent", "--", "true"],
        INVALID,
        &["image", "/nonexistent"],
    );
}

#[test]
fn image_is_a_file() {
    let (_d, f) = file_in_tempdir("rootfs", "not a directory\n", 0o644);
    refused(&["--image", &f, "--", "true"], INVALID, &["image", &f]);
}

#[test]
fn image_relative() {
    refused(
        &["--image", "rootfs", "--", "true"],
        INVALID,
        &["image", "rootfs"],
    );
}

// ---- mounts ------------------------------------------------------------------------------------

#[test]
fn bind_source_relative() {
    refused(
        &["--ro", "rel:/x", "--", "true"],
        INVALID,
        &["source", "rel"],
    );
}

#[test]
fn bind_source_missing() {
    let o = refused(
        &["--ro", "/nonexistent:/x", "--", "true"],
        INVALID,
        &["/nonexistent"],
    );
    let line = stderr(&o);
    assert!(
        line.contains("bind") || line.contains("--ro"),
        "the message should name the bind mount: {line}"
    );
}

#[test]
fn bind_target_reserved() {
    refused(
        &["--ro", "/etc:/proc/x", "--", "true"],
        INVALID,
        &["target", "/proc/x"],
    );
}

#[test]
fn bind_empty_target() {
    refused(
        &["--rw", "/etc:", "--", "true"],
        INVALID,
        &["--rw", "/etc:"],
    );
}

#[test]
fn workspace_missing() {
    refused(
        &["--workspace", "/nonexistent", "--", "true"],
        INVALID,
        &["workspace", "/nonexistent"],
    );
}

// ---- env, user, cwd ----------------------------------------------------------------------------

#[test]
fn env_without_equals() {
    refused(
        &["--env", "NOEQUALS", "--", "true"],
        INVALID,
        &["--env", "NOEQUALS"],
    );
}

#[test]
fn env_bad_name() {
    refused(&["--env", "1A=x", "--", "true"], INVALID, &["env", "1A"]);
}

#[test]
fn user_out_of_range() {
    refused(
        &["--user", "70000", "--", "true"],
        INVALID,
        &["user", "70000"],
    );
}

#[test]
fn user_not_numeric() {
    refused(
        &["--user", "nobody", "--", "true"],
        INVALID,
        &["--user", "nobody"],
    );
}

#[test]
fn cwd_missing() {
    refused(
        &["--cwd", "/nonexistent", "--", "true"],
        INVALID,
        &["cwd", "/nonexistent"],
    );
}

#[test]
fn cwd_relative() {
    refused(&["--cwd", "tmp", "--", "true"], INVALID, &["cwd", "tmp"]);
}

// ---- the command -------------------------------------------------------------------------------

#[test]
fn command_not_found() {
    refused(&["--", "nosuchcmd"], NOT_FOUND, &["nosuchcmd"]);
}

#[test]
fn command_path_not_found() {
    refused(
        &["--", "/usr/bin/nosuchcmd"],
        NOT_FOUND,
        &["/usr/bin/nosuchcmd"],
    );
}

/// A non-executable file bound into the sandbox, run by path.
#[test]
fn command_bound_file_not_executable() {
    let (_d, f) = file_in_tempdir("script", "#!/bin/sh\necho ran\n", 0o644);
    let bind = format!("{f}:/opt/script");
    refused(
        &["--ro", &bind, "--", "/opt/script"],
        CANNOT_EXECUTE,
        &["/opt/script"],
    );
}

/// A non-executable file that the host image shows (no user bind involved), run by path.
#[test]
fn command_image_file_not_executable() {
    assert!(Path::new("/usr/lib/os-release").is_file());
    refused(
        &["--", "/usr/lib/os-release"],
        CANNOT_EXECUTE,
        &["/usr/lib/os-release"],
    );
}

#[test]
fn command_is_a_directory() {
    refused(&["--", "/usr"], CANNOT_EXECUTE, &["/usr"]);
}

#[test]
fn unknown_flag() {
    refused(&["--bogus", "--", "true"], INVALID, &["--bogus"]);
}

#[test]
fn no_command_at_all() {
    let o = refused(&[], INVALID, &[]);
    let line = stderr(&o);
    assert!(
        line.contains("CMD") || line.contains("command"),
        "the message should name the missing command: {line}"
    );
}

#[test]
fn empty_command_after_dashes() {
    let o = refused(&["--"], INVALID, &[]);
    let line = stderr(&o);
    assert!(
        line.contains("CMD") || line.contains("command"),
        "the message should name the missing command: {line}"
    );
}

// ---- the same on the chroot tier ---------------------------------------------------------------

#[test]
fn chroot_command_not_found() {
    refused(
        &["--tier", "chroot", "--", "nosuchcmd"],
        NOT_FOUND,
        &["nosuchcmd"],
    );
}

#[test]
fn chroot_image_missing() {
    refused(
        &["--tier", "chroot", "--image", "/nonexistent", "--", "true"],
        INVALID,
        &["image", "/nonexistent"],
    );
}

#[test]
fn chroot_bad_size() {
    refused(
        &["--tier", "chroot", "--memory", "12XB", "--", "true"],
        INVALID,
        &["limits.memory", "12XB"],
    );
}

#[test]
fn chroot_bind_source_missing() {
    refused(
        &["--tier", "chroot", "--ro", "/nonexistent:/x", "--", "true"],
        INVALID,
        &["/nonexistent"],
    );
}

#[test]
fn chroot_command_bound_file_not_executable() {
    let (_d, f) = file_in_tempdir("script", "#!/bin/sh\necho ran\n", 0o644);
    let bind = format!("{f}:/opt/script");
    refused(
        &["--tier", "chroot", "--ro", &bind, "--", "/opt/script"],
        CANNOT_EXECUTE,
        &["/opt/script"],
    );
}

#[test]
fn chroot_command_image_file_not_executable() {
    refused(
        &["--tier", "chroot", "--", "/usr/lib/os-release"],
        CANNOT_EXECUTE,
        &["/usr/lib/os-release"],
    );
}

#[test]
fn chroot_command_is_a_directory() {
    refused(
        &["--tier", "chroot", "--", "/usr"],
        CANNOT_EXECUTE,
        &["/usr"],
    );
}

#[test]
fn chroot_cwd_missing() {
    refused(
        &["--tier", "chroot", "--cwd", "/nonexistent", "--", "true"],
        INVALID,
        &["cwd", "/nonexistent"],
    );
}

// ---- policy file and flags combine: flags win --------------------------------------------------

#[test]
fn policy_file_applies_without_flags() {
    let (_d, f) = file_in_tempdir("f.toml", "[limits]\ntimeout = \"1s\"\n", 0o644);
    let _g = serial();
    let before = host_state();
    let o = run(&["--policy", &f, "--", "sleep", "5"]);
    assert_eq!(o.status.code(), Some(TIMEOUT), "stderr: {}", stderr(&o));
    assert_nothing_left(&before);
}

#[test]
fn flag_overrides_policy_file_longer_timeout() {
    let (_d, f) = file_in_tempdir("f.toml", "[limits]\ntimeout = \"1s\"\n", 0o644);
    let _g = serial();
    let before = host_state();
    let o = run(&["--policy", &f, "--timeout", "30s", "--", "sleep", "2"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(o.stderr.is_empty(), "stderr: {}", stderr(&o));
    assert_nothing_left(&before);
}

#[test]
fn flag_overrides_policy_file_shorter_timeout() {
    let (_d, f) = file_in_tempdir("f.toml", "[limits]\ntimeout = \"30s\"\n", 0o644);
    let _g = serial();
    let before = host_state();
    let started = std::time::Instant::now();
    let o = run(&["--policy", &f, "--timeout", "1s", "--", "sleep", "5"]);
    assert_eq!(o.status.code(), Some(TIMEOUT), "stderr: {}", stderr(&o));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "the 1s flag should have ended the run, took {:?}",
        started.elapsed()
    );
    assert_nothing_left(&before);
}

#[test]
fn flag_overrides_bad_policy_value() {
    // The file's bad value is replaced by the flag before validation: the run succeeds.
    let (_d, f) = file_in_tempdir("f.toml", "[limits]\nmemory = \"12XB\"\n", 0o644);
    let _g = serial();
    let before = host_state();
    let o = run(&["--policy", &f, "--memory", "256M", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_nothing_left(&before);
}

#[test]
fn workspace_that_is_a_file() {
    let _g = serial();
    let before = host_state();
    let file = tempfile::NamedTempFile::new().unwrap();
    let o = run(&["--workspace", file.path().to_str().unwrap(), "--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("workspace") && err.contains("not a directory"),
        "{err}"
    );
    assert_nothing_left(&before);
}

// ---- network -----------------------------------------------------------------------------------

#[test]
fn network_bad_values_name_the_value() {
    for (args, needles) in [
        (
            &["--net", "wide-open"][..],
            &["network.mode", "wide-open"][..],
        ),
        (&["--net", "allow:"], &["network.mode", "empty allowlist"]),
        (
            &["--net", "allow:bad..name"],
            &["network.allow", "bad..name"],
        ),
        (
            &["--net", "allow:a.test", "--deny-host", "x*.test"],
            &["network.deny", "x*.test"],
        ),
        (
            &["--net", "open", "--allow-cidr", "10.0.0.0/33"],
            &["network.cidrs", "10.0.0.0/33"],
        ),
        (
            &["--net", "open", "--allow-cidr", "nine"],
            &["network.cidrs", "nine"],
        ),
        (
            &["--net", "open", "--net-audit", "/tmp/a.jsonl"],
            &["network.audit", "allow"],
        ),
        (&["--allow-cidr", "10.0.0.0/8"], &["network.cidrs", "none"]),
        (
            &["--net", "allow:a.test", "--net-hosts", "/nonexistent/hosts"],
            &["network.hosts_file", "/nonexistent/hosts"],
        ),
        (
            &[
                "--net",
                "allow:a.test",
                "--net-audit",
                "/nonexistent/dir/a.jsonl",
            ],
            &["network.audit", "/nonexistent/dir/a.jsonl"],
        ),
    ] {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--", "true"]);
        refused(&full, INVALID, needles);
    }
}
