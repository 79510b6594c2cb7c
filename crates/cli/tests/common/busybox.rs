//! A minimal image for the microvm tier's tests: Debian's static busybox and a marker file.
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
