//! Boots real microVMs under TCG (root, QEMU, the guest kernel and the release agent needed):
//! one VM serves every functional check, a second one is killed to check `Died` and cleanup.
//!
//! Prerequisites: `scripts/build-guest-kernel.sh` and `cargo build -p agentbox-guest --release`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentbox_microvm::{disk, initramfs, Accel, Jail, Vm, VmError, VmSpec, DEFAULT_KERNEL};
use agentbox_protocol::{ExitRecord, RunRequest};

fn agent_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    for candidate in [
        "x86_64-unknown-linux-gnu/release/agentbox-guest",
        "release/agentbox-guest",
        "x86_64-unknown-linux-gnu/debug/agentbox-guest",
        "debug/agentbox-guest",
    ] {
        let p = target.join(candidate);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the guest agent is not built under {}: run `cargo build -p agentbox-guest --release` first",
        target.display()
    );
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
        "sh", "cat", "echo", "uname", "true", "sleep", "ls", "dd", "grep", "head", "rm",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    std::fs::write(dir.join("etc/hostname"), "guest\n").unwrap();
}

fn sha256_file(p: &Path) -> String {
    initramfs::sha256_hex(&std::fs::read(p).unwrap())
}

fn req(argv: &[&str]) -> RunRequest {
    RunRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        cwd: "/".to_string(),
        stdin: false,
        timeout_ms: None,
        uid: None,
        gid: None,
        layered_spec: None,
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

fn host_uname_r() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

fn qemu_processes_of(pid_marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("qemu-system") && cmdline.contains(pid_marker) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

fn qemu_rss_kib(pid: u32) -> Option<u64> {
    // With the jail the spawned process is `unshare`; QEMU is its child.
    let status = |p: u32| std::fs::read_to_string(format!("/proc/{p}/status")).ok();
    let mut pids = vec![pid];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|s| s.parse::<u32>().ok()),
        );
    }
    pids.iter().rev().find_map(|p| {
        let s = status(*p)?;
        if !s.contains("qemu-system") {
            return None;
        }
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    })
}

#[test]
fn boots_runs_isolates_and_cleans_up() {
    let kernel = kernel();
    let agent = agent_binary();
    let initrd = initramfs::cached_initramfs(&agent, Path::new(initramfs::DEFAULT_CACHE)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("rootfs");
    image_dir(&image);
    let t = Instant::now();
    let base = disk::base_disk(&image, None, &tmp.path().join("disks")).unwrap();
    println!("base disk built in {:?}: {}", t.elapsed(), base.display());
    assert_eq!(
        disk::base_disk(&image, None, &tmp.path().join("disks")).unwrap(),
        base,
        "cached"
    );
    let base_sum = sha256_file(&base);
    let marker = format!("abtest-{}", std::process::id());

    let jailed = std::env::var_os("AGENTBOX_TEST_NO_JAIL").is_none();
    let mut spec = VmSpec::new(&format!("{marker}-a"), &kernel, &initrd);
    spec.base_disk = Some(base.clone());
    spec.memory_mib = 256;
    spec.accel = Accel::Tcg;
    spec.boot_timeout = Duration::from_secs(60);
    if jailed {
        spec.jail = Some(Jail::nth(1));
    }
    let mut vm = Vm::boot(spec).unwrap_or_else(|e| panic!("boot: {e}"));
    let state_dir = vm.state_dir().to_path_buf();
    assert!(state_dir.starts_with("/run/agentbox/vms"));
    println!(
        "boot-to-hello: {:?} (guest uptime at hello {} ms), kernel {}, jailed {jailed}",
        vm.boot_to_hello(),
        vm.guest_boot_ms(),
        vm.kernel_release()
    );
    if let Some(rss) = vm.qemu_pid().and_then(qemu_rss_kib) {
        println!("QEMU RSS after boot: {} MiB", rss / 1024);
    }

    // The guest runs its own kernel.
    let (exit, out, _) = run(&mut vm, req(&["uname", "-r"]));
    assert_eq!(exit.code, Some(0));
    assert_eq!(out.trim(), vm.kernel_release());
    assert_ne!(out.trim(), host_uname_r());

    // Round trip.
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let (exit, out, _) = run(&mut vm, req(&["echo", "hi"]));
        best = best.min(t.elapsed());
        assert_eq!((exit.code, out.as_str()), (Some(0), "hi\n"));
    }
    println!("exec round trip (echo hi, best of 5): {best:?}");

    // Exit codes pass through.
    let (exit, _, _) = run(&mut vm, req(&["sh", "-c", "exit 7"]));
    assert_eq!(exit.code, Some(7));

    // Writes land in the overlay, never in the base disk.
    let (exit, _, err) = run(
        &mut vm,
        req(&[
            "sh",
            "-c",
            "echo guest-data > /etc/written && rm /etc/hostname && sync",
        ]),
    );
    assert_eq!(exit.code, Some(0), "{err}");
    let (_, out, _) = run(&mut vm, req(&["cat", "/etc/written"]));
    assert_eq!(out, "guest-data\n");

    // Memory: MemTotal is close to what was asked (the kernel keeps some for itself).
    let (_, out, _) = run(&mut vm, req(&["grep", "MemTotal", "/proc/meminfo"]));
    let kib: u64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    println!("guest MemTotal: {kib} KiB");
    assert!(
        kib > 200 * 1024 && kib <= 256 * 1024,
        "MemTotal {kib} KiB for 256 MiB"
    );

    // A per-command timeout kills the command.
    let mut sleep = req(&["sleep", "30"]);
    sleep.timeout_ms = Some(500);
    let t = Instant::now();
    let (exit, _, _) = run(&mut vm, sleep);
    assert!(exit.timed_out, "{exit:?}");
    assert!(t.elapsed() < Duration::from_secs(10));

    // Power off ends QEMU.
    vm.power_off(Duration::from_secs(20)).unwrap();
    assert!(!vm.alive());
    drop(vm);
    assert!(!state_dir.exists(), "state dir left behind");
    assert_eq!(sha256_file(&base), base_sum, "the base disk was written");

    // A second VM whose QEMU is killed reports Died, and its state goes with it.
    let mut spec = VmSpec::new(&format!("{marker}-b"), &kernel, &initrd);
    spec.base_disk = Some(base.clone());
    spec.boot_timeout = Duration::from_secs(60);
    if jailed {
        spec.jail = Some(Jail::nth(2));
    }
    let mut vm = Vm::boot(spec).unwrap_or_else(|e| panic!("boot: {e}"));
    let state_dir = vm.state_dir().to_path_buf();
    let pid = vm.qemu_pid().unwrap();
    if jailed {
        assert_ne!(Some(pid), vm.pid(), "QEMU runs under unshare");
    }
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    match vm.run(req(&["echo", "hi"]), None, &mut out, &mut err) {
        Err(VmError::Died { log_tail }) => println!("died as expected; log tail:\n{log_tail}"),
        other => panic!("expected Died, got {other:?}"),
    }
    drop(vm);
    assert!(!state_dir.exists(), "state dir left behind");
    // Give killed jailed QEMUs a moment to be reaped by their namespace's end.
    let until = Instant::now() + Duration::from_secs(5);
    while !qemu_processes_of(&marker).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(qemu_processes_of(&marker), Vec::<String>::new());
    assert_eq!(sha256_file(&base), base_sum);
}

#[test]
fn kvm_probe_decides_within_its_deadline_and_caches() {
    let kernel = kernel();
    let initrd =
        initramfs::cached_initramfs(&agent_binary(), Path::new(initramfs::DEFAULT_CACHE)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let verdict_file = tmp.path().join("microvm-accel");
    let t = Instant::now();
    let accel = agentbox_microvm::accel::probe_kvm_cached(&kernel, &initrd, &verdict_file);
    let took = t.elapsed();
    let verdict = std::fs::read_to_string(&verdict_file).unwrap();
    println!("accel probe: {accel:?} in {took:?}; verdict {verdict:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        agentbox_microvm::accel::parse_verdict(&verdict),
        Some(accel)
    );
    assert!(qemu_processes_of("kvm-probe-").is_empty());
}
