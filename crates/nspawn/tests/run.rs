//! Real runs of systemd-nspawn (as root, no mocks) on a root shaped like agentbox's `host` image:
//! an empty directory, merged-/usr symbolic links and read-only binds of the host's system. What
//! the payload observes is written to a writable bind (`/out`) and judged on the host side.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agentbox_nspawn::{run, survivors};
use agentbox_oci::{Bind, EngineError, Limits, Sandbox, Tmpfs};

/// Each sandbox gets its own host id range and name.
static NEXT: AtomicU32 = AtomicU32::new(0);

struct Fixture {
    sandbox: Sandbox,
    root: tempfile::TempDir,
    out: tempfile::TempDir,
    _state: tempfile::TempDir,
}

fn usable() -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root || !agentbox_nspawn::probe().available {
        eprintln!("skipped: needs root and systemd-nspawn");
        return false;
    }
    true
}

fn fixture(argv: &[&str]) -> Fixture {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let bind = |source: &str, target: &str, writable: bool| Bind {
        source: PathBuf::from(source),
        target: PathBuf::from(target),
        writable,
    };
    let sandbox = Sandbox {
        id: format!("agentbox-{:06x}{:06x}", pid & 0xff_ffff, n),
        rootfs: root.path().to_path_buf(),
        image: None,
        symlinks: ["bin", "sbin", "lib", "lib64"]
            .iter()
            .map(|d| {
                (
                    PathBuf::from(format!("/{d}")),
                    PathBuf::from(format!("usr/{d}")),
                )
            })
            .collect(),
        binds: vec![
            bind("/usr", "/usr", false),
            bind("/etc/ld.so.cache", "/etc/ld.so.cache", false),
            bind("/etc/passwd", "/etc/passwd", false),
            bind("/etc/group", "/etc/group", false),
            bind(out.path().to_str().unwrap(), "/out", true),
        ],
        tmpfs: vec![Tmpfs {
            target: PathBuf::from("/scratch"),
            size: 1 << 20,
            mode: 0o1777,
        }],
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("AGENTBOX_TEST".to_string(), "yes".to_string()),
        ],
        cwd: PathBuf::from("/"),
        uid: 0,
        uid_range: Some((
            // 192 pid buckets of 256 ranges each stay below 0xd000_0000.
            0x1000_0000 + (pid % 192) * 0x100_0000 + (n % 256) * 0x1_0000,
            65_536,
        )),
        hostname: "sandbox".to_string(),
        limits: Limits {
            timeout: Some(Duration::from_secs(30)),
            ..Limits::default()
        },
        seccomp: agentbox_seccomp::default_allowlist().unwrap(),
        state_dir: state.path().to_path_buf(),
        oci_runtime: None,
    };
    Fixture {
        sandbox,
        root,
        out,
        _state: state,
    }
}

fn sh(script: &str) -> Fixture {
    fixture(&["/bin/sh", "-c", script])
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// nspawn processes still running for this sandbox.
fn nspawn_processes(id: &str) -> Vec<String> {
    let needle = format!("--machine={id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}

fn assert_nothing_left(f: &Fixture) {
    assert!(
        survivors(f.root.path()).is_empty(),
        "processes left in the root"
    );
    assert!(
        nspawn_processes(&f.sandbox.id).is_empty(),
        "nspawn left running"
    );
    assert!(!Path::new("/run/systemd/nspawn/propagate")
        .join(&f.sandbox.id)
        .exists());
}

#[test]
fn true_exits_zero() {
    if !usable() {
        return;
    }
    let f = fixture(&["/bin/true"]);
    let out = run(&f.sandbox).unwrap();
    assert_eq!(out.code, Some(0));
    assert!(!out.timed_out);
    assert_nothing_left(&f);
}

#[test]
fn exit_code_passes_through() {
    if !usable() {
        return;
    }
    let f = sh("exit 7");
    assert_eq!(run(&f.sandbox).unwrap().code, Some(7));
}

#[test]
fn a_signal_death_is_255() {
    if !usable() {
        return;
    }
    let f = sh("kill -KILL $$");
    let out = run(&f.sandbox).unwrap();
    assert_eq!((out.code, out.signal), (Some(255), None));
}

#[test]
fn a_missing_command_is_not_found() {
    if !usable() {
        return;
    }
    for argv in [&["/no/such/command"][..], &["no-such-command"][..]] {
        let f = fixture(argv);
        match run(&f.sandbox) {
            Err(EngineError::Command {
                not_found: true, ..
            }) => {}
            other => panic!("{argv:?}: {other:?}"),
        }
    }
    let f = fixture(&["/etc/passwd"]);
    assert!(matches!(
        run(&f.sandbox),
        Err(EngineError::Command {
            not_found: false,
            ..
        })
    ));
}

#[test]
fn the_timeout_kills_everything() {
    if !usable() {
        return;
    }
    // A background child too: the whole PID namespace must go.
    let mut f = sh("sleep 1000 & sleep 1000");
    f.sandbox.limits.timeout = Some(Duration::from_secs(1));
    let start = Instant::now();
    let out = run(&f.sandbox).unwrap();
    assert!(out.timed_out);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_nothing_left(&f);
}

#[test]
fn the_inside_view() {
    if !usable() {
        return;
    }
    let f = sh("grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status > /out/status; \
         cat /proc/self/uid_map > /out/uid_map; \
         ls /proc | grep -E '^[0-9]+$' > /out/pids; \
         ls /sys/class/net > /out/net; \
         env > /out/env; \
         hostname > /out/hostname; \
         ls -ld /scratch | cut -c1-10 > /out/scratch");
    assert_eq!(run(&f.sandbox).unwrap().code, Some(0));
    let status = read(f.out.path(), "status");
    for want in [
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(status.contains(want), "{want} in {status}");
    }
    let map: Vec<u64> = read(f.out.path(), "uid_map")
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let (start, count) = f.sandbox.uid_range.unwrap();
    assert_eq!(map, [0, u64::from(start), u64::from(count)]);
    // nspawn's stub init (1), the shell (2) and its short-lived children only.
    let pids: Vec<u32> = read(f.out.path(), "pids")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(pids.contains(&1) && pids.len() <= 6, "{pids:?}");
    assert!(pids.iter().all(|&p| p < 100), "{pids:?}");
    assert_eq!(read(f.out.path(), "net").trim(), "lo");
    assert_eq!(read(f.out.path(), "hostname").trim(), "sandbox");
    assert_eq!(read(f.out.path(), "scratch").trim(), "drwxrwxrwt");
    // Exactly the sandbox's environment (sh adds PWD, and SHLVL where it counts).
    let mut env: Vec<String> = read(f.out.path(), "env")
        .lines()
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL="))
        .map(str::to_string)
        .collect();
    env.sort();
    assert_eq!(env, ["AGENTBOX_TEST=yes", "PATH=/usr/bin:/bin"]);
}

#[test]
fn writes_land_in_the_root_not_in_the_host_system() {
    if !usable() {
        return;
    }
    let canary = format!("/usr/agentbox-canary-{}", std::process::id());
    let f = sh(&format!(
        "echo hi > /written; echo $? > /out/root_rc; \
         touch {canary}; echo $? > /out/usr_rc; \
         echo x > /scratch/x; echo $? > /out/tmpfs_rc"
    ));
    assert_eq!(run(&f.sandbox).unwrap().code, Some(0));
    assert_eq!(read(f.out.path(), "root_rc").trim(), "0");
    assert_eq!(read(f.root.path(), "written"), "hi\n");
    assert_ne!(read(f.out.path(), "usr_rc").trim(), "0");
    assert!(!Path::new(&canary).exists());
    assert_eq!(read(f.out.path(), "tmpfs_rc").trim(), "0");
    assert!(!f.root.path().join("scratch/x").exists());
}

#[test]
fn denied_syscalls_fail() {
    if !usable() {
        return;
    }
    // unshare(2), keyctl(2), mount(2), ptrace(2) from python: errno or -1.
    let script = r#"
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    r = libc.syscall(nr, *args)
    return r, ctypes.get_errno()
out = {
  "unshare": call(272, 0x10000000),
  "keyctl": call(250, 0, 0),
  "mount": call(165, b"none", b"/scratch", b"tmpfs", 0, 0),
  "ptrace": call(101, 16, 1, 0, 0),
  "getpid": call(39),
}
json.dump(out, open("/out/syscalls.json", "w"))
"#;
    let f = fixture(&["/usr/bin/python3", "-c", script]);
    if cfg!(not(target_arch = "x86_64")) {
        return;
    }
    assert_eq!(run(&f.sandbox).unwrap().code, Some(0));
    let text = read(f.out.path(), "syscalls.json");
    for name in ["unshare", "keyctl", "mount", "ptrace"] {
        let want = format!("\"{name}\": [-1, 1]");
        assert!(text.contains(&want), "{name} denied with EPERM: {text}");
    }
    assert!(!text.contains("\"getpid\": [-1"), "{text}");
    // And the command-line tool.
    let f = sh("unshare -U true; echo $? > /out/rc");
    assert_eq!(run(&f.sandbox).unwrap().code, Some(0));
    assert_ne!(read(f.out.path(), "rc").trim(), "0");
}

#[test]
fn a_user_of_the_image_and_one_it_lacks() {
    if !usable() {
        return;
    }
    let mut f = sh("id -u > /out/uid; grep CapEff /proc/self/status > /out/caps");
    f.sandbox.uid = 65534;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(run(&f.sandbox).unwrap().code, Some(0));
    assert_eq!(read(f.out.path(), "uid").trim(), "65534");
    assert!(read(f.out.path(), "caps").contains("0000000000000000"));
    let mut f = fixture(&["/bin/true"]);
    f.sandbox.uid = 4242;
    assert!(matches!(
        run(&f.sandbox),
        Err(EngineError::Unenforceable { field: "user", .. })
    ));
}

#[test]
fn a_bind_path_with_a_colon() {
    if !usable() {
        return;
    }
    let mut f = sh("cat '/in:side/file' > /out/copy");
    let odd = tempfile::Builder::new().prefix("a:b").tempdir().unwrap();
    std::fs::write(odd.path().join("file"), "colon\n").unwrap();
    f.sandbox.binds.push(Bind {
        source: odd.path().to_path_buf(),
        target: PathBuf::from("/in:side"),
        writable: false,
    });
    assert_eq!(run(&f.sandbox).unwrap().code, Some(0));
    assert_eq!(read(f.out.path(), "copy"), "colon\n");
}

#[test]
fn nofile_limit_applies() {
    if !usable() {
        return;
    }
    let mut f = sh("ulimit -n > /out/soft; ulimit -Hn > /out/hard");
    f.sandbox.limits.nofile = Some(321);
    assert_eq!(run(&f.sandbox).unwrap().code, Some(0));
    assert_eq!(read(f.out.path(), "soft").trim(), "321");
    assert_eq!(read(f.out.path(), "hard").trim(), "321");
}

/// `cargo test -p agentbox-nspawn --test run -- --ignored --nocapture timing`
#[test]
#[ignore]
fn timing_of_true() {
    if !usable() {
        return;
    }
    let rounds = 20;
    let f = fixture(&["/bin/true"]);
    run(&f.sandbox).unwrap();
    let start = Instant::now();
    for _ in 0..rounds {
        assert_eq!(run(&f.sandbox).unwrap().code, Some(0));
    }
    let ours = start.elapsed() / rounds;
    let argv = agentbox_nspawn::args(
        &f.sandbox,
        &agentbox_nspawn::Launch::ThroughEnv("/usr/bin/env".into()),
    )
    .unwrap();
    let start = Instant::now();
    for _ in 0..rounds {
        let status = std::process::Command::new("systemd-nspawn")
            .args(&argv)
            .env_clear()
            .status()
            .unwrap();
        assert!(status.success());
    }
    let raw = start.elapsed() / rounds;
    eprintln!("/bin/true: run() {ours:?}, raw systemd-nspawn {raw:?} (mean of {rounds})");
}
