//! Layered mode (`microvm+ns`) under real QEMU (TCG): the guest agent runs the command inside
//! agentbox's own `ns` tier in the guest kernel, through the `agentbox` binary of the read-only
//! tools disk. One VM with the tools disk serves every check made from inside; a second VM
//! without it shows that a layered request is refused. Verdicts are decided outside the inner
//! sandbox where it matters (a write attempt is checked by the agent's own view of the guest).
//!
//! Prerequisites: `scripts/build-guest-kernel.sh`, `cargo build -p agentbox-guest --release` and
//! `cargo build -p agentbox-cli --release` (or `AGENTBOX_BIN=/path/to/agentbox`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentbox_microvm::{disk, initramfs, Accel, Jail, Vm, VmSpec, DEFAULT_KERNEL};
use agentbox_protocol::client::ClientError;
use agentbox_protocol::{ErrorCode, ExitRecord, RunRequest};

fn target_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn built(name: &str, how: &str) -> PathBuf {
    let target = target_dir();
    for dir in [
        "x86_64-unknown-linux-gnu/release",
        "release",
        "x86_64-unknown-linux-gnu/debug",
        "debug",
    ] {
        let p = target.join(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} is not built under {}: run `{how}` first",
        target.display()
    );
}

fn agentbox_binary() -> PathBuf {
    match std::env::var_os("AGENTBOX_BIN") {
        Some(p) => PathBuf::from(p),
        None => built("agentbox", "cargo build -p agentbox-cli --release"),
    }
}

fn kernel() -> PathBuf {
    let k = PathBuf::from(DEFAULT_KERNEL);
    assert!(
        k.is_file(),
        "no guest kernel at {DEFAULT_KERNEL}: run scripts/build-guest-kernel.sh first"
    );
    k
}

/// A busybox root: /bin/busybox + applet symlinks, and the usual empty directories.
fn image_dir(dir: &Path) {
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "run", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "echo", "true", "sleep", "ls", "dd", "ps", "seq",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    std::fs::write(dir.join("etc/hostname"), "guest\n").unwrap();
}

/// The inner sandbox: the ns tier on the guest's own root, no network, small limits.
const SPEC: &str = r#"{"tier":"ns","image":"host","network":{"mode":"none"},"limits":{"memory":"48M","pids":16},"env":{"PATH":"/bin"},"cwd":"/"}"#;

fn direct(argv: &[&str]) -> RunRequest {
    RunRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/bin".into())],
        cwd: "/".to_string(),
        stdin: false,
        timeout_ms: Some(60_000),
        uid: None,
        gid: None,
        layered_spec: None,
    }
}

fn layered(argv: &[&str]) -> RunRequest {
    RunRequest {
        env: vec![],
        layered_spec: Some(SPEC.to_string()),
        ..direct(argv)
    }
}

fn run(vm: &mut Vm, r: RunRequest) -> (ExitRecord, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = vm.run(r, None, &mut out, &mut err).unwrap();
    (
        exit,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// `key:\tvalue` of a /proc status text.
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map_or("", str::trim)
}

fn spec(name: &str, kernel: &Path, initrd: &Path, base: &Path, jail: u16) -> VmSpec {
    let mut spec = VmSpec::new(name, kernel, initrd);
    spec.base_disk = Some(base.to_path_buf());
    spec.memory_mib = 256;
    spec.accel = Accel::Tcg;
    spec.boot_timeout = Duration::from_secs(60);
    if std::env::var_os("AGENTBOX_TEST_NO_JAIL").is_none() {
        spec.jail = Some(Jail::nth(jail));
    }
    spec
}

#[test]
fn layered_ns_runs_inside_the_guest() {
    let kernel = kernel();
    let agent = built("agentbox-guest", "cargo build -p agentbox-guest --release");
    let initrd = initramfs::cached_initramfs(&agent, Path::new(initramfs::DEFAULT_CACHE)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("rootfs");
    image_dir(&image);
    let base = disk::base_disk(&image, None, &tmp.path().join("disks")).unwrap();

    let agentbox = agentbox_binary();
    let t = Instant::now();
    let tools = disk::tools_disk(&agentbox, Path::new(disk::DEFAULT_CACHE)).unwrap();
    let first = t.elapsed();
    let t = Instant::now();
    assert_eq!(
        disk::tools_disk(&agentbox, Path::new(disk::DEFAULT_CACHE)).unwrap(),
        tools,
        "cached"
    );
    let meta = std::fs::metadata(&tools).unwrap();
    println!(
        "tools disk {}: {} MiB apparent, {} MiB allocated (binary {} MiB); first call {first:?}, cached call {:?}",
        tools.display(),
        meta.len() >> 20,
        (std::os::unix::fs::MetadataExt::blocks(&meta) * 512) >> 20,
        std::fs::metadata(&agentbox).unwrap().len() >> 20,
        t.elapsed()
    );

    let marker = format!("ablayer-{}", std::process::id());
    let mut with_tools = spec(&format!("{marker}-a"), &kernel, &initrd, &base, 41);
    with_tools.tools_disk = Some(tools.clone());
    let mut vm = Vm::boot(with_tools).unwrap_or_else(|e| panic!("boot: {e}"));
    let boot_with_tools = vm.boot_to_hello();
    println!(
        "boot-to-hello with the tools disk: {boot_with_tools:?} (guest uptime {} ms)",
        vm.guest_boot_ms()
    );

    // The agent's own view: PID 1 is the agent, cgroup v2 is mounted with the controllers the
    // ns tier needs, the tools disk is mounted read-only.
    let (_, agent_pid1, _) = run(&mut vm, direct(&["cat", "/proc/1/cmdline"]));
    assert!(agent_pid1.starts_with("/init"), "{agent_pid1:?}");
    let (exit, out, err) = run(
        &mut vm,
        direct(&["cat", "/sys/fs/cgroup/cgroup.controllers"]),
    );
    assert_eq!(exit.code, Some(0), "{err}");
    for controller in ["memory", "pids", "cpu"] {
        assert!(out.split_whitespace().any(|c| c == controller), "{out}");
    }
    let (_, mounts, _) = run(&mut vm, direct(&["cat", "/proc/mounts"]));
    let tools_mount = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/run/agentbox-tools"))
        .unwrap_or_else(|| panic!("tools disk not mounted:\n{mounts}"));
    assert!(tools_mount.contains(" ro,"), "{tools_mount}");

    // A layered command: round trip, then what it sees.
    let (exit, out, err) = run(&mut vm, layered(&["echo", "hi"]));
    assert_eq!((exit.code, out.as_str()), (Some(0), "hi\n"), "{err}");
    let (mut best_layered, mut best_direct) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let t = Instant::now();
        let (exit, _, err) = run(&mut vm, layered(&["true"]));
        best_layered = best_layered.min(t.elapsed());
        assert_eq!(exit.code, Some(0), "{err}");
        let t = Instant::now();
        run(&mut vm, direct(&["true"]));
        best_direct = best_direct.min(t.elapsed());
    }
    println!("round trip of `true` (best of 3): layered {best_layered:?}, direct {best_direct:?}");

    // stdin streams through the helper to the command.
    let mut cat = layered(&["cat"]);
    cat.stdin = true;
    let mut out = Vec::new();
    let exit = vm
        .run(
            cat,
            Some(&mut &b"to the inner cat\n"[..]),
            &mut out,
            &mut Vec::new(),
        )
        .unwrap();
    assert_eq!(
        (exit.code, out.as_slice()),
        (Some(0), &b"to the inner cat\n"[..])
    );

    // Its own PID namespace: PID 1 is not the agent.
    let (exit, out, err) = run(&mut vm, layered(&["cat", "/proc/1/cmdline"]));
    assert_eq!(exit.code, Some(0), "{err}");
    assert_ne!(out, agent_pid1, "PID 1 inside is the agent");
    println!("PID 1 inside: {:?}", out.replace('\0', " "));

    // seccomp filter, no_new_privs, no effective capabilities.
    let (exit, status, err) = run(&mut vm, layered(&["cat", "/proc/self/status"]));
    assert_eq!(exit.code, Some(0), "{err}");
    assert_eq!(status_field(&status, "Seccomp"), "2", "{status}");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{status}");
    assert_eq!(
        status_field(&status, "CapEff"),
        "0000000000000000",
        "{status}"
    );

    // cgroup v2 limits are applied: the pids limit stops a fork bomb, the memory limit kills a
    // command that grows past it (in a 256 MiB guest that could hold it).
    let (exit, out, err) = run(
        &mut vm,
        layered(&[
            "sh",
            "-c",
            "for i in $(seq 40); do sleep 5 & done 2>/dev/null; echo started",
        ]),
    );
    println!("pids: exit {exit:?}\n{out}{err}");
    assert!(
        err.contains("fork") || err.contains("Resource temporarily unavailable"),
        "40 processes under pids=16: {exit:?} {out} {err}"
    );
    let (exit, out, err) = run(
        &mut vm,
        layered(&[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/null bs=64M count=1 && echo survived",
        ]),
    );
    println!("memory: exit {exit:?}\n{out}{err}");
    assert!(
        !out.contains("survived"),
        "a 64 MiB buffer under memory=48M: {out}"
    );
    assert!(err.contains("out of memory"), "{err}");

    // A write outside the workspace fails, and nothing reached the guest's root.
    let (exit, _, err) = run(
        &mut vm,
        layered(&["sh", "-c", "echo owned > /etc/layered-canary"]),
    );
    assert_ne!(exit.code, Some(0), "write outside the workspace: {err}");
    let (exit, _, _) = run(&mut vm, direct(&["ls", "/etc/layered-canary"]));
    assert_ne!(exit.code, Some(0), "the canary reached the guest's root");

    // The agent's timeout kills the whole layered tree.
    let mut sleeper = layered(&["sh", "-c", "sleep 300 & sleep 301"]);
    sleeper.timeout_ms = Some(1000);
    let t = Instant::now();
    let (exit, _, _) = run(&mut vm, sleeper);
    assert!(exit.timed_out, "{exit:?}");
    assert!(t.elapsed() < Duration::from_secs(20));
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, ps, _) = run(&mut vm, direct(&["ps"]));
        if !ps.contains("sleep 30") {
            break;
        }
        assert!(Instant::now() < until, "sleepers left behind:\n{ps}");
        std::thread::sleep(Duration::from_millis(100));
    }

    vm.power_off(Duration::from_secs(20)).unwrap();
    let state_dir = vm.state_dir().to_path_buf();
    drop(vm);
    assert!(!state_dir.exists(), "state dir left behind");

    // Without the tools disk, a layered request is refused by the agent.
    let mut vm = Vm::boot(spec(&format!("{marker}-b"), &kernel, &initrd, &base, 42))
        .unwrap_or_else(|e| panic!("boot: {e}"));
    println!(
        "boot-to-hello without the tools disk: {:?} (with: {boot_with_tools:?})",
        vm.boot_to_hello()
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let refused = vm
        .client()
        .unwrap()
        .run(layered(&["true"]), None, &mut out, &mut err);
    match refused {
        Err(ClientError::Agent { code, message, .. }) => {
            assert_eq!(code, ErrorCode::Unsupported, "{message}");
            assert!(message.contains("tools disk"), "{message}");
        }
        other => panic!("expected the agent's refusal, got {other:?}"),
    }
    let (exit, _, _) = run(&mut vm, direct(&["true"]));
    assert_eq!(exit.code, Some(0), "the agent keeps serving");
    vm.power_off(Duration::from_secs(20)).unwrap();
}
