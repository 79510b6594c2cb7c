#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use agentbox_oci::{Bind, EngineError, Limits, Sandbox, Tmpfs};

use crate::command::{args, escape, Launch};

fn sandbox() -> Sandbox {
    Sandbox {
        id: "agentbox-0123456789ab".to_string(),
        rootfs: PathBuf::from("/run/agentbox/root"),
        image: None,
        symlinks: vec![(PathBuf::from("/bin"), PathBuf::from("usr/bin"))],
        binds: vec![
            Bind {
                source: PathBuf::from("/usr"),
                target: PathBuf::from("/usr"),
                writable: false,
            },
            Bind {
                source: PathBuf::from("/home/a:b\\c"),
                target: PathBuf::from("/work"),
                writable: true,
            },
        ],
        tmpfs: vec![Tmpfs {
            target: PathBuf::from("/scratch"),
            size: 1 << 20,
            mode: 0o1777,
        }],
        argv: vec!["sh".to_string(), "-c".to_string(), "exit 7".to_string()],
        env: vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("A".to_string(), "x=y z".to_string()),
        ],
        cwd: PathBuf::from("/work"),
        uid: 0,
        uid_range: Some((100_000, 65_536)),
        hostname: "sandbox".to_string(),
        limits: Limits {
            nofile: Some(256),
            timeout: Some(Duration::from_secs(5)),
            ..Limits::default()
        },
        seccomp: agentbox_seccomp::default_allowlist().unwrap(),
        state_dir: PathBuf::from("/run/agentbox/state"),
        oci_runtime: None,
    }
}

fn strings(v: &[OsString]) -> Vec<String> {
    v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
}

#[test]
fn the_full_command_line() {
    let argv = strings(&args(&sandbox(), &Launch::Direct).unwrap());
    let without_filter: Vec<&str> = argv
        .iter()
        .filter(|a| !a.starts_with("--system-call-filter="))
        .map(String::as_str)
        .collect();
    assert_eq!(
        without_filter,
        [
            "--quiet",
            "--keep-unit",
            "--register=no",
            "--as-pid2",
            "--console=pipe",
            "--link-journal=no",
            "--resolv-conf=off",
            "--timezone=off",
            "--kill-signal=SIGKILL",
            "--private-network",
            "--drop-capability=all",
            "--no-new-privileges=yes",
            "--machine=agentbox-0123456789ab",
            "--directory=/run/agentbox/root",
            "--private-users=100000:65536",
            // /run/agentbox/root does not exist here, so it is not owned by the range.
            "--private-users-ownership=map",
            "--hostname=sandbox",
            "--chdir=/work",
            "--rlimit=NOFILE=256",
            "--bind-ro=/usr:/usr:idmap",
            "--bind=/home/a\\:b\\\\c:/work:idmap",
            "--tmpfs=/scratch:mode=1777,size=1048576",
            "--setenv=PATH=/usr/bin:/bin",
            "--setenv=A=x=y z",
            "--",
            "sh",
            "-c",
            "exit 7",
        ]
    );
    let filters: Vec<&String> = argv
        .iter()
        .filter(|a| a.starts_with("--system-call-filter="))
        .collect();
    assert_eq!(filters.len(), 2);
    assert!(filters[1].starts_with("--system-call-filter=~"));
}

#[test]
fn through_env_gives_exactly_the_sandbox_environment() {
    let argv = strings(
        &args(
            &sandbox(),
            &Launch::ThroughEnv(PathBuf::from("/usr/bin/env")),
        )
        .unwrap(),
    );
    let dashdash = argv.iter().position(|a| a == "--").unwrap();
    assert_eq!(
        &argv[dashdash + 1..],
        [
            "/usr/bin/env",
            "-i",
            "--",
            "PATH=/usr/bin:/bin",
            "A=x=y z",
            "sh",
            "-c",
            "exit 7"
        ]
    );
}

#[test]
fn a_command_with_equals_is_not_wrapped_in_env() {
    let mut sb = sandbox();
    sb.argv = vec!["/bin/a=b".to_string()];
    let err = args(&sb, &Launch::ThroughEnv("/usr/bin/env".into()));
    assert!(matches!(err, Err(EngineError::Setup { .. })));
    assert!(args(&sb, &Launch::Direct).is_ok());
}

#[test]
fn a_non_root_uid_becomes_user() {
    let mut sb = sandbox();
    sb.uid = 1000;
    let argv = strings(&args(&sb, &Launch::Direct).unwrap());
    assert!(argv.contains(&"--user=1000".to_string()));
    assert!(!strings(&args(&sandbox(), &Launch::Direct).unwrap())
        .iter()
        .any(|a| a.starts_with("--user")));
}

#[test]
fn refuses_bad_ranges_and_paths() {
    let sb = sandbox();
    for range in [None, Some((0, 65_536)), Some((100_000, 0))] {
        let mut sb = sb.clone();
        sb.uid_range = range;
        assert!(matches!(
            args(&sb, &Launch::Direct),
            Err(EngineError::Setup { .. })
        ));
    }
    let mut uid_outside = sandbox();
    uid_outside.uid = 70_000;
    assert!(args(&uid_outside, &Launch::Direct).is_err());
    let mut relative = sandbox();
    relative.binds[0].target = PathBuf::from("usr");
    assert!(args(&relative, &Launch::Direct).is_err());
    let mut control = sandbox();
    control.tmpfs[0].target = PathBuf::from("/a\nb");
    assert!(args(&control, &Launch::Direct).is_err());
    let mut bad_env = sandbox();
    bad_env.env.push(("A B".to_string(), "x".to_string()));
    assert!(args(&bad_env, &Launch::Direct).is_err());
    let mut empty = sandbox();
    empty.argv.clear();
    assert!(matches!(
        args(&empty, &Launch::Direct),
        Err(EngineError::Command {
            not_found: true,
            ..
        })
    ));
}

#[test]
fn escapes_colons_and_backslashes() {
    assert_eq!(escape(b"/a:b\\c"), b"/a\\:b\\\\c".to_vec());
    assert_eq!(escape(b"/plain"), b"/plain".to_vec());
}

#[test]
fn the_syscall_filter_narrows_nspawn_to_the_allowlist() {
    use crate::seccomp::syscall_filter_for;
    use agentbox_seccomp::Arch;
    let list = agentbox_seccomp::default_allowlist().unwrap();
    let f = syscall_filter_for(&list, Arch::X86_64);
    for allowed in [
        "read", "write", "clone", "ioctl", "socket", "openat", "execve",
    ] {
        // In nspawn's base list, so not sent again.
        assert!(
            crate::seccomp::in_nspawn_base(allowed),
            "{allowed} in the base"
        );
        assert!(!f.allow.iter().any(|s| s == allowed), "{allowed} not sent");
        assert!(!f.deny.iter().any(|s| s == allowed), "{allowed} not denied");
    }
    // Allowed by agentbox, missing from the base list of a container without capabilities.
    for added in ["mlock", "landlock_create_ruleset", "seccomp"] {
        assert!(f.allow.iter().any(|s| s == added), "{added} added");
    }
    for denied in [
        "unshare",
        "setns",
        "mount",
        "open_tree",
        "keyctl",
        "add_key",
        "ptrace",
        "bpf",
        "userfaultfd",
        "kexec_load",
        "init_module",
        "reboot",
        "name_to_handle_at",
        "swapon",
        "settimeofday",
    ] {
        assert!(f.deny.iter().any(|s| s == denied), "{denied} denied");
        assert!(!f.allow.iter().any(|s| s == denied), "{denied} not allowed");
    }
    // ENOSYS denials force a fallback to siblings nspawn cannot filter anyway: left to nspawn.
    for left in ["clone3", "openat2"] {
        assert!(!f.deny.iter().any(|s| s == left));
        assert!(!f.allow.iter().any(|s| s == left));
    }
    // aarch64-only names are harmless in the deny list; x86_64-only names never in aarch64's allow.
    let arm = syscall_filter_for(&list, Arch::Aarch64);
    assert!(!arm.allow.iter().any(|s| s == "open"));
}
