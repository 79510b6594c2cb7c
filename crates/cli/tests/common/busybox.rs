//! The microvm tiers' test helpers: a minimal image (Debian's static busybox and a marker file)
//! and the host's QEMU processes.
#![allow(clippy::unwrap_used)]

/// A root with busybox and its applets in /bin.
pub fn busybox_root(dir: &std::path::Path) {
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "echo", "uname", "true", "sleep", "id", "head", "dd", "rm", "ls", "mkdir",
        "env", "pwd",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    std::fs::write(dir.join("etc/marker"), "from the image\n").unwrap();
    let mut perms = std::fs::metadata(dir.join("tmp")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o1777);
    std::fs::set_permissions(dir.join("tmp"), perms).unwrap();
}

/// Live (not zombie) QEMU processes on the host.
pub fn live_qemu_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            stat.contains("(qemu-system") && !stat.contains(") Z ")
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The live QEMUs that were not in `before` (other tests' or tools' VMs are not ours).
pub fn new_qemus(before: &[u32]) -> Vec<u32> {
    live_qemu_pids()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect()
}
