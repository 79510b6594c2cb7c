//! The ns tier's isolation, proven from inside the sandbox and checked from the host: user
//! namespace mapping, the ephemeral overlay root, read-only system directories, binds, and the
//! pid namespace going down with its supervisor.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first host uid agentbox hands to sandboxes.
const UID_BASE: u64 = 0x1000_0000;

#[test]
fn python_sees_small_pid_and_uid_0_while_the_host_sees_an_unprivileged_uid() {
    let mut running = spawn_ready(&[
        "--",
        "python3",
        "-c",
        "import os,time; print(os.getpid(), os.getuid(), os.getgid(), flush=True); print('ready', flush=True); time.sleep(60)",
    ]);
    let sandboxed = descendants(running.child.id())
        .into_iter()
        .find(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "python3")
        })
        .expect("the sandboxed python3 on the host");
    for key in ["Uid", "Gid"] {
        let ids = status_field(sandboxed, key).unwrap();
        for id in ids.split_whitespace() {
            let id: u64 = id.parse().unwrap();
            assert!(
                id >= UID_BASE,
                "host sees {key} {id} for the sandboxed python: {ids}"
            );
        }
    }
    let _ = std::process::Command::new("kill")
        .arg(running.child.id().to_string())
        .status();
    let status = running.child.wait().unwrap();
    let mut first = String::new();
    std::io::Read::read_to_string(&mut running.stdout, &mut first).unwrap();
    assert!(!status.success());
    // What python printed before `ready` was consumed by spawn_ready's loop; print it again.
    let out = ok(python(
        &[],
        "import os; print(os.getpid(), os.getuid(), os.getgid())",
    ));
    let fields: Vec<u32> = out.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert!(fields[0] <= 3, "pid inside: {out}");
    assert_eq!(&fields[1..], [0, 0], "{out}");
}

#[test]
fn system_directories_are_read_only_and_tmp_writes_vanish() {
    let marker = format!("agentbox-marker-{}", std::process::id());
    let o = sh(&[], &format!("touch /usr/{marker} 2>&1; echo data > /tmp/{marker} && cat /tmp/{marker}; grep ' /usr ' /proc/self/mountinfo"));
    let out = ok(o);
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("data"), "{out}");
    let usr = out.lines().find(|l| l.contains(" /usr ")).unwrap();
    for flag in ["ro", "nosuid", "nodev"] {
        assert!(
            usr.split_whitespace()
                .nth(5)
                .unwrap()
                .split(',')
                .any(|f| f == flag),
            "{flag} missing: {usr}"
        );
    }
    assert!(!Path::new("/usr").join(&marker).exists());
    assert!(
        !Path::new("/tmp").join(&marker).exists(),
        "a sandbox's /tmp reached the host"
    );
    let second = ok(sh(
        &[],
        &format!("test -e /tmp/{marker} && echo leaked || echo clean"),
    ));
    assert_eq!(second.trim(), "clean");
}

#[test]
fn root_is_an_ephemeral_tmpfs_and_landlock_keeps_it_read_only() {
    let out = ok(sh(&[], "grep ' / / ' /proc/self/mountinfo; touch /new-at-root 2>&1; mkdir /etc/new 2>&1; echo ok > /root/f && cat /root/f"));
    assert!(out.contains(" - tmpfs "), "root is not a tmpfs: {out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(out.lines().last().unwrap().contains("ok"), "{out}");
}

/// A root filesystem made of dash and the libraries it needs, copied from the host.
fn tiny_rootfs() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("rootfs-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let mut files = vec![
        PathBuf::from("/usr/bin/dash"),
        PathBuf::from("/usr/bin/cat"),
        PathBuf::from("/usr/bin/ls"),
    ];
    for bin in files.clone() {
        let ldd = std::process::Command::new("ldd")
            .arg(&bin)
            .output()
            .unwrap();
        for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
            if word.starts_with('/') {
                files.push(PathBuf::from(word));
            }
        }
    }
    for file in files {
        let real = std::fs::canonicalize(&file).unwrap();
        for path in [&file, &real] {
            let dest = root.join(path.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&real, &dest).unwrap();
        }
    }
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("dash", root.join("usr/bin/sh")).unwrap();
    if !root.join("lib64").exists() {
        std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).unwrap();
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/image-file"), "from the image\n").unwrap();
    dir
}

fn listing(root: &Path) -> Vec<(PathBuf, u64, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.path().symlink_metadata().unwrap();
            out.push((entry.path(), meta.len(), meta.mode()));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_directory_image_is_the_lower_layer_of_an_overlay_and_never_changes() {
    let image = tiny_rootfs();
    let before = listing(image.path());
    let img = image.path().to_str().unwrap();
    let out = ok(run(&[
        "--image",
        img,
        "--",
        "/bin/sh",
        "-c",
        "cat /etc/image-file; cat /proc/self/mountinfo; echo x > /tmp/new && cat /tmp/new; ls -ld /etc/image-file; ls /",
    ]));
    assert!(out.contains("from the image"), "{out}");
    let root = out
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_default();
    assert!(
        root.contains(" - overlay "),
        "root is not an overlay: {out}"
    );
    // Image files owned by host root show as the sandbox's root (idmapped lower layer).
    assert!(
        out.lines()
            .any(|l| l.contains("/etc/image-file") && l.contains(" 0 ") || l.contains("root root")),
        "{out}"
    );
    assert_eq!(
        listing(image.path()),
        before,
        "the run changed the image directory"
    );
    // Nothing of the host outside the image is visible.
    let o = run(&["--image", img, "--", "/bin/sh", "-c", "ls /usr/bin/python3"]);
    assert!(
        !o.status.success(),
        "host /usr visible through a directory image: {}",
        stdout(&o)
    );
}

#[test]
fn read_only_binds_are_read_only_and_read_write_binds_reach_the_host_as_the_directory_owner() {
    let ro = tempfile::Builder::new().prefix("ro-").tempdir().unwrap();
    std::fs::write(ro.path().join("f"), "host data\n").unwrap();
    let rw = tempfile::Builder::new().prefix("rw-").tempdir().unwrap();
    std::os::unix::fs::chown(rw.path(), Some(1234), Some(1234)).unwrap();
    let ro_arg = format!("{}:/data", ro.path().display());
    let out = ok(sh(
        &["--ro", &ro_arg, "--workspace", rw.path().to_str().unwrap()],
        "cat /data/f; (echo x > /data/g) 2>&1; grep ' /data ' /proc/self/mountinfo; echo made > /workspace/new; stat -c '%u %g' /workspace",
    ));
    assert!(out.contains("host data"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    let data = out.lines().find(|l| l.contains(" /data ")).unwrap();
    let opts = data.split_whitespace().nth(5).unwrap();
    for flag in ["ro", "nosuid", "nodev"] {
        assert!(
            opts.split(',').any(|f| f == flag),
            "{flag} missing on the bind: {data}"
        );
    }
    assert!(!ro.path().join("g").exists());
    let made = rw.path().join("new");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "made\n");
    let meta = std::fs::metadata(&made).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1234, 1234),
        "a file made in the workspace must belong to the workspace's owner"
    );
    assert_eq!(
        out.lines().last().unwrap().trim(),
        "0 0",
        "the workspace owner is the sandbox's root inside: {out}"
    );
}

#[test]
fn killing_the_supervisor_takes_every_sandbox_process_down() {
    let marker = format!(
        "{}.{}",
        900 + std::process::id() % 97,
        std::process::id() % 1000
    );
    let script = format!("sleep {marker} & sleep {marker} & echo ready; wait");
    let mut running = spawn_ready(&["--", "sh", "-c", &script]);
    let supervisor = running.child.id();
    // `ready` may come before both sleeps have exec'd.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids_running(&["sleep", &marker]).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the sandbox's sleeps never showed up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status();
    let _ = running.child.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids_running(&["sleep", &marker]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "sandbox processes outlived their supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The supervisor died before cleaning up: its cgroup and uid slot stay until `agentbox gc`.
    let left = sandbox_cgroups(supervisor);
    assert!(
        !left.is_empty(),
        "a killed supervisor cannot have removed its cgroup"
    );
    let gc = ok(agentbox(&["gc"]).output().unwrap());
    for dir in left {
        assert!(!dir.exists(), "gc left {}: {gc}", dir.display());
        assert!(gc.contains(&dir.display().to_string()), "{gc}");
    }
    let slots = std::fs::read_dir("/run/agentbox/slots").unwrap().flatten();
    for slot in slots {
        let owner = std::fs::read_to_string(slot.path()).unwrap_or_default();
        assert_ne!(
            owner.trim(),
            supervisor.to_string(),
            "gc left the dead supervisor's uid slot"
        );
    }
}

#[test]
fn the_chroot_tier_enforces_network_none_too() {
    let mut running = spawn_ready(&[
        "--tier",
        "chroot",
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 30",
    ]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let sleeper = loop {
        let found = descendants(running.child.id()).into_iter().find(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the chroot sandbox's sleep never showed up"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let inside = std::fs::read_link(format!("/proc/{sleeper}/ns/net")).unwrap();
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let _ = std::process::Command::new("kill")
        .arg(running.child.id().to_string())
        .status();
    let _ = running.child.wait();
    assert_ne!(
        inside, host,
        "the chroot tier shares the host's network namespace"
    );
}

#[test]
fn a_mount_target_that_crosses_a_symlink_of_the_image_is_refused() {
    let image = tiny_rootfs();
    std::os::unix::fs::symlink("/etc", image.path().join("workspace")).unwrap();
    let ws = tempfile::Builder::new().prefix("ws-").tempdir().unwrap();
    let before = listing(image.path());
    for _ in 0..5 {
        let o = run(&[
            "--image",
            image.path().to_str().unwrap(),
            "--workspace",
            ws.path().to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            "true",
        ]);
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(stderr(&o).contains("crosses a symlink"), "{}", stderr(&o));
    }
    assert_eq!(listing(image.path()), before);
}
