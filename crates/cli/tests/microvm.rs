//! The microvm tier through `agentbox run`: a QEMU microVM with agentbox's guest kernel and agent
//! (built by scripts/test.sh), on an image made by the test (Debian's static busybox). Under TCG
//! on this host (its KVM does not boot guests), about a second per VM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Output, Stdio};

use common::busybox::{live_qemu_pids, VmTest};
use common::*;

fn vm(image: &Path, flags: &[&str], command: &[&str]) -> Output {
    let mut args = vec!["--tier", "microvm", "--image", image.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(command);
    run(&args)
}

/// `agentbox run --tier microvm --image IMAGE -- COMMAND`, to spawn (stdin closed unless set).
fn vm_command(image: &Path, command: &[&str]) -> std::process::Command {
    let mut args = vec![
        "run",
        "--tier",
        "microvm",
        "--image",
        image.to_str().unwrap(),
        "--",
    ];
    args.extend_from_slice(command);
    agentbox(&args)
}

#[test]
fn a_command_runs_on_the_guest_kernel_with_the_policy_and_nothing_is_left() {
    let t = VmTest::new();
    let image = t.image.clone();

    // Its own kernel: agentbox's guest build, not the host's.
    let out = ok(vm(&image, &[], &["uname", "-r"]));
    let host = String::from_utf8(
        std::process::Command::new("uname")
            .arg("-r")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_ne!(out.trim(), host.trim());
    assert!(out.trim().ends_with("-agentbox"), "{out}");

    // Exit codes, stdin, stdout and stderr, the image's files, a read-only base.
    let o = vm(
        &image,
        &[],
        &[
            "sh",
            "-c",
            "cat /etc/marker; echo err >&2; echo changed > /etc/marker; cat /etc/marker; exit 7",
        ],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(stdout(&o), "from the image\nchanged\n");
    assert!(stderr(&o).contains("err"));
    assert_eq!(
        fs::read_to_string(image.join("etc/marker")).unwrap(),
        "from the image\n",
        "a guest write reached the image"
    );
    let mut child = vm_command(&image, &["cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"through stdin\n").unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "through stdin\n");

    // A stdin that never closes does not hold the run once the command ended (it is read only
    // while the command runs).
    let mut held = vm_command(&image, &["echo", "done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _open_stdin = held.stdin.take();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while held.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run waits for stdin to close"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = held.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "done\n");
    // A SIGTERM to agentbox reaches the command in the guest (128 + 15), even one sent during
    // the boot, and the VM is cleaned up as after any run.
    let mut child = vm_command(&image, &["sleep", "60"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143));

    // --verbose names the accelerator the probe chose, and why.
    let o = vm(&image, &["--verbose"], &["true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let said = stderr(&o);
    assert!(said.contains("agentbox: tier microvm"), "{said}");
    assert!(
        said.contains("accelerator TCG (probe: tcg")
            || said.contains("accelerator KVM (probe: kvm"),
        "{said}"
    );
    assert!(said.contains("-agentbox answered"), "{said}");

    // A missing command is 127, the wall clock 124, the memory is the VM's.
    let o = vm(&image, &[], &["/no/such/command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    let started = std::time::Instant::now();
    let o = vm(&image, &["--timeout", "2s"], &["sleep", "60"]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(started.elapsed().as_secs() < 30);
    let out = ok(vm(
        &image,
        &["--memory", "128M"],
        &["head", "-1", "/proc/meminfo"],
    ));
    let kib: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(kib < 128 * 1024 && kib > 64 * 1024, "{out}");
    let out = ok(vm(&image, &["--user", "1000"], &["id", "-u"]));
    assert_eq!(out, "1000\n");

    // What a VM cannot be given is refused, naming the field.
    for (flags, field) in [
        (&["--net", "allow:example.test"][..], "network.mode"),
        (&["--pids", "10"][..], "limits.pids"),
        (&["--ro", "/etc:/hostetc"][..], "mounts"),
    ] {
        let o = vm(&image, flags, &["true"]);
        assert_eq!(o.status.code(), Some(123), "{flags:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(field), "{}", stderr(&o));
    }
    let o = run(&["--tier", "microvm", "--", "true"]);
    assert_eq!(o.status.code(), Some(123));
    assert!(stderr(&o).contains("image"), "{}", stderr(&o));

    t.assert_nothing_left();
}

#[test]
fn microvm_plus_ns_runs_the_command_in_the_ns_tier_inside_the_guest() {
    let t = VmTest::new();
    let image = t.image.clone();
    let work = t.work.path();
    let record = work.join("record.json");
    // The fields plain microvm refuses (pids, nofile) are the inner ns tier's to enforce.
    let o = run(&[
        "--tier",
        "microvm+ns",
        "--image",
        image.to_str().unwrap(),
        "--pids",
        "16",
        "--nofile",
        "40",
        "--exit-record",
        record.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; ulimit -n; \
         tr '\\0' ' ' < /proc/1/cmdline; echo; uname -r; echo x > /etc/x || echo denied",
    ]);
    let out = ok(o);
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("\n40\n"), "{out}");
    assert!(
        out.contains("agentbox __sandbox"),
        "pid 1 is not agentbox's ns init: {out}"
    );
    assert!(out.contains("-agentbox\n"), "not the guest kernel: {out}");
    assert!(out.ends_with("denied\n"), "{out}");
    let record = fs::read_to_string(&record).unwrap();
    assert!(record.contains("\"microvm+ns\""), "{record}");
    // The pids limit holds inside; exit codes and the timeout come through both layers.
    let o = vm_layered(
        &image,
        &["--pids", "8"],
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done; wait",
    );
    assert_ne!(o.status.code(), Some(0), "12 processes ran under pids=8");
    assert_eq!(vm_layered(&image, &[], "exit 5").status.code(), Some(5));
    let o = vm_layered(&image, &["--timeout", "2s"], "sleep 60");
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));

    t.assert_nothing_left();
}

fn vm_layered(image: &Path, flags: &[&str], script: &str) -> Output {
    let mut args = vec!["--tier", "microvm+ns", "--image", image.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.extend(["--", "sh", "-c", script]);
    run(&args)
}

#[test]
fn a_killed_agentbox_takes_its_vm_along_and_gc_reclaims_the_rest() {
    let t = VmTest::new();
    let image = t.image.clone();
    let mut child = vm_command(&image, &["sleep", "60"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ours = loop {
        let new = t.new_qemus();
        if !new.is_empty() {
            break new;
        }
        assert!(std::time::Instant::now() < deadline, "no QEMU started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // QEMU dies with agentbox (parent-death signals through the jail), not at its own leisure.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while live_qemu_pids().iter().any(|p| ours.contains(p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "QEMU outlived agentbox"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Its cgroup, uid slot and state directory are gc's to reclaim.
    let out = ok(agentbox(&["gc"]).output().unwrap());
    assert!(out.contains("microVM state vm-"), "{out}");
    t.assert_nothing_left();
}
