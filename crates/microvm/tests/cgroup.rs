//! A jailed QEMU runs in a cgroup of its own (real kernel, root, QEMU under TCG; the guest
//! kernel and the release agent needed, as for `boot.rs`): every QEMU thread is inside, the
//! limits are set, and the cgroup goes when the VM goes, whether QEMU powered off or was killed.
//! A cgroup that cannot be made stops the boot before QEMU starts and leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentbox_microvm::cgroup::{self, Hierarchy, QemuLimits};
use agentbox_microvm::{disk, initramfs, Accel, Jail, Vm, VmError, VmSpec, DEFAULT_KERNEL};
use agentbox_protocol::RunRequest;

fn agent_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    [
        "x86_64-unknown-linux-gnu/release/agentbox-guest",
        "release/agentbox-guest",
    ]
    .iter()
    .map(|c| target.join(c))
    .find(|p| p.is_file())
    .expect("the guest agent is not built: cargo build -p agentbox-guest --release")
}

fn base_disk(tmp: &Path) -> PathBuf {
    let image = tmp.join("rootfs");
    if image.exists() {
        return disk::base_disk(&image, None, &tmp.join("disks")).unwrap();
    }
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "run", "root"] {
        std::fs::create_dir_all(image.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", image.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "dd", "ls", "sync", "rm"] {
        std::os::unix::fs::symlink("busybox", image.join("bin").join(applet)).unwrap();
    }
    disk::base_disk(&image, None, &tmp.join("disks")).unwrap()
}

fn spec(name: &str, jail: u16, tmp: &Path) -> VmSpec {
    let kernel = PathBuf::from(DEFAULT_KERNEL);
    assert!(kernel.is_file(), "run scripts/build-guest-kernel.sh first");
    let initrd =
        initramfs::cached_initramfs(&agent_binary(), Path::new(initramfs::DEFAULT_CACHE)).unwrap();
    let mut spec = VmSpec::new(name, &kernel, &initrd);
    spec.base_disk = Some(base_disk(tmp));
    spec.memory_mib = 256;
    spec.vcpus = 1;
    spec.accel = Accel::Tcg;
    spec.boot_timeout = Duration::from_secs(60);
    spec.jail = Some(Jail::nth(jail));
    spec
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

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

fn leaves(name: &str) -> (Hierarchy, Vec<PathBuf>) {
    let h = cgroup::detect_host().unwrap();
    let dirs = cgroup::leaves(&h, &cgroup::leaf_name(name)).unwrap();
    (h, dirs)
}

/// The cgroup paths of a task, one line per hierarchy (`4:memory:/agentbox-qemu-x`).
fn cgroup_lines(pid: u32, tid: &str) -> String {
    read(Path::new(&format!("/proc/{pid}/task/{tid}/cgroup")))
}

fn memory_peak(h: &Hierarchy, name: &str) -> u64 {
    let leaf = cgroup::leaf_name(name);
    let file = match h {
        Hierarchy::V1 { memory, .. } => memory.join(&leaf).join("memory.max_usage_in_bytes"),
        Hierarchy::V2 { root } => root.join(&leaf).join("memory.peak"),
    };
    read(&file).parse().unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// QEMU's resident memory split from smaps: (guest RAM's mapping, the biggest other mapping —
/// TCG's translation buffer —, everything else), in MiB.
fn rss_split(pid: u32, guest_mib: u64) -> (u64, u64, u64) {
    let smaps = read(Path::new(&format!("/proc/{pid}/smaps")));
    let (mut guest, mut others) = (0, Vec::new());
    let mut size = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some("Size:"), Some(kib)) => size = kib,
            (Some("Rss:"), Some(kib)) if size == guest_mib * 1024 => guest += kib,
            (Some("Rss:"), Some(kib)) => others.push(kib),
            _ => {}
        }
    }
    others.sort_unstable();
    let biggest = others.pop().unwrap_or(0);
    (
        guest / 1024,
        biggest / 1024,
        others.iter().sum::<u64>() / 1024,
    )
}

fn wait_gone(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let left: Vec<PathBuf> = dirs.iter().filter(|d| d.exists()).cloned().collect();
        if left.is_empty() || Instant::now() > until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn qemu_is_born_in_its_cgroup_with_limits_and_the_cgroup_goes_with_the_vm() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("abcg-{}-a", std::process::id());
    let (h, dirs) = leaves(&name);
    let mut vm = Vm::boot(spec(&name, 11, tmp.path())).unwrap_or_else(|e| panic!("boot: {e}"));
    assert_eq!(vm.cgroup().unwrap().dirs(), dirs.as_slice());
    let qemu = vm.qemu_pid().expect("QEMU runs");
    let leaf = cgroup::leaf_name(&name);

    // Every thread of QEMU is in the leaf of every controller (v1) or the v2 leaf.
    let tids: Vec<String> = std::fs::read_dir(format!("/proc/{qemu}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    println!("QEMU {qemu}: {} threads after boot", tids.len());
    for tid in &tids {
        let lines = cgroup_lines(qemu, tid);
        let wanted: &[&str] = match &h {
            Hierarchy::V1 { .. } => &["memory", "pids", "cpu"],
            Hierarchy::V2 { .. } => &[""],
        };
        for controller in wanted {
            let ok = lines.lines().any(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctrls, path) = (parts.next(), parts.next(), parts.next());
                ctrls.is_some_and(|c| c.split(',').any(|c| c == *controller))
                    && path == Some(&format!("/{leaf}"))
            });
            assert!(ok, "thread {tid} not in {controller}:/{leaf}:\n{lines}");
        }
    }
    for dir in &dirs {
        let procs = read(&dir.join("cgroup.procs"));
        assert!(
            procs.lines().any(|p| p == qemu.to_string()),
            "{qemu} not in {}: {procs}",
            dir.display()
        );
        // Nothing but QEMU: the jail's sh exec'd into it, `unshare` stayed outside.
        assert_eq!(procs.lines().count(), 1, "{}: {procs}", dir.display());
    }

    // The limits.
    let limits = QemuLimits::for_vm(256, 1);
    match &h {
        Hierarchy::V1 { memory, pids, cpu } => {
            let cpu = cpu.as_ref().unwrap();
            assert_eq!(
                read(&memory.join(&leaf).join("memory.limit_in_bytes")),
                limits.memory.to_string()
            );
            assert_eq!(
                read(&pids.join(&leaf).join("pids.max")),
                limits.pids.to_string()
            );
            assert_eq!(read(&cpu.join(&leaf).join("cpu.cfs_period_us")), "100000");
            assert_eq!(
                read(&cpu.join(&leaf).join("cpu.cfs_quota_us")),
                (limits.cpu_millis * 100).to_string()
            );
            println!(
                "pids.current after boot: {}",
                read(&pids.join(&leaf).join("pids.current"))
            );
        }
        Hierarchy::V2 { root } => {
            let leaf = root.join(&leaf);
            assert_eq!(read(&leaf.join("memory.max")), limits.memory.to_string());
            assert_eq!(read(&leaf.join("pids.max")), limits.pids.to_string());
            assert_eq!(
                read(&leaf.join("cpu.max")),
                format!("{} 100000", limits.cpu_millis * 100)
            );
        }
    }
    println!(
        "after boot: QEMU RSS {} MiB (guest RAM, biggest other mapping, rest: {:?} MiB); \
         cgroup memory peak {} MiB",
        rss_kib(qemu) / 1024,
        rss_split(qemu, 256),
        memory_peak(&h, &name) >> 20,
    );

    // A workload: new code to translate, a file written to the overlay, the guest's page cache.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let script = "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; \
        dd if=/dev/zero of=/root/f bs=1M count=64 2>/dev/null; sync; ls -R / >/dev/null; \
        rm /root/f; echo done";
    let exit = vm
        .run(req(&["sh", "-c", script]), None, &mut out, &mut err)
        .unwrap();
    assert_eq!(exit.code, Some(0), "{}", String::from_utf8_lossy(&err));
    assert_eq!(String::from_utf8_lossy(&out), "done\n");
    let threads = std::fs::read_dir(format!("/proc/{qemu}/task"))
        .unwrap()
        .count();
    println!(
        "after a workload: {threads} threads; QEMU RSS {} MiB (guest RAM, biggest other \
         mapping, rest: {:?} MiB); cgroup memory peak {} MiB",
        rss_kib(qemu) / 1024,
        rss_split(qemu, 256),
        memory_peak(&h, &name) >> 20,
    );
    assert!((threads as u64) < limits.pids);
    if let Hierarchy::V1 { cpu: Some(cpu), .. } = &h {
        // Whether the CPU limit bit during boot and the workload.
        let stat = read(&cpu.join(&leaf).join("cpu.stat"));
        println!("cpu.stat: {}", stat.replace('\n', ", "));
    }

    // QEMU crashes (SIGKILL): the VM is dead, its cgroup goes with the Vm.
    agentbox_sys::process::kill(qemu as i32, libc::SIGKILL).unwrap();
    match vm.run(req(&["echo", "hi"]), None, &mut out, &mut err) {
        Err(VmError::Died { .. }) => {}
        other => panic!("expected Died, got {other:?}"),
    }
    assert!(
        dirs.iter().all(|d| d.exists()),
        "the leaves stay until drop"
    );
    drop(vm);
    assert_eq!(
        wait_gone(&dirs),
        Vec::<PathBuf>::new(),
        "leaves left behind"
    );

    // A clean power-off: gone too.
    let name = format!("abcg-{}-b", std::process::id());
    let (_, dirs) = leaves(&name);
    let mut vm = Vm::boot(spec(&name, 12, tmp.path())).unwrap_or_else(|e| panic!("boot: {e}"));
    assert!(dirs.iter().all(|d| d.exists()));
    vm.power_off(Duration::from_secs(20)).unwrap();
    drop(vm);
    assert_eq!(
        wait_gone(&dirs),
        Vec::<PathBuf>::new(),
        "leaves left behind"
    );
}

#[test]
fn a_cgroup_that_cannot_be_made_stops_the_boot_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("abcg-{}-c", std::process::id());
    let (_, dirs) = leaves(&name);
    // A leaf of that name that still holds a process (a "QEMU of an earlier VM"): the last
    // controller's, so that the leaves before it are made first and must be undone.
    let busy = dirs.last().unwrap().clone();
    std::fs::create_dir(&busy).unwrap();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    std::fs::write(busy.join("cgroup.procs"), sleeper.id().to_string()).unwrap();

    let spec = spec(&name, 13, tmp.path());
    let state_dir = spec.run_dir.join(&name);
    let result = Vm::boot(spec);

    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let until = Instant::now() + Duration::from_secs(3);
    while std::fs::remove_dir(&busy).is_err() && busy.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }

    match result {
        Err(e @ VmError::Cgroup(cgroup::CgroupError::Busy { .. })) => {
            let msg = e.to_string();
            println!("refused as expected: {msg}");
            assert!(msg.contains("no VM started"), "{msg}");
            assert!(msg.contains(&busy.display().to_string()), "{msg}");
        }
        Err(other) => panic!("expected a cgroup error, got {other}"),
        Ok(_) => panic!("booted despite the cgroup failure"),
    }
    assert!(!state_dir.exists(), "state dir left behind");
    let others: Vec<&PathBuf> = dirs.iter().filter(|d| **d != busy).collect();
    assert!(
        others.iter().all(|d| !d.exists()),
        "leaves left: {others:?}"
    );
    assert!(!busy.exists(), "the test's own busy leaf stayed");
    let marker = format!("abcg-{}-c", std::process::id());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !(cmdline.contains("qemu-system") && cmdline.contains(&marker)),
            "a QEMU started: {cmdline}"
        );
    }
}
