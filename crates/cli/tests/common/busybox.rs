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

/// One microVM test's set-up and final check: the serial lock, a busybox image in a temp dir,
/// and what the host held before (to prove nothing is left: host state, QEMUs, VM state dirs).
pub struct VmTest {
    _serial: std::sync::MutexGuard<'static, ()>,
    pub work: tempfile::TempDir,
    pub image: std::path::PathBuf,
    before: super::HostState,
    qemu_before: Vec<u32>,
}

impl VmTest {
    pub fn new() -> VmTest {
        let serial = super::serial();
        let work = tempfile::tempdir().unwrap();
        let image = work.path().join("root");
        busybox_root(&image);
        VmTest {
            _serial: serial,
            work,
            image,
            before: super::host_state(),
            qemu_before: live_qemu_pids(),
        }
    }

    pub fn image(&self) -> &str {
        self.image.to_str().unwrap()
    }

    /// The QEMUs started since `new`.
    pub fn new_qemus(&self) -> Vec<u32> {
        new_qemus(&self.qemu_before)
    }

    /// Nothing of the test's VMs is left: no QEMU, no VM state directory, nothing of
    /// [`super::assert_nothing_left`].
    pub fn assert_nothing_left(&self) {
        assert_eq!(self.new_qemus(), Vec::<u32>::new(), "a QEMU is left");
        super::assert_nothing_left(&self.before);
        let vms = std::fs::read_dir("/run/agentbox/vms")
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(vms, 0, "VM state left in /run/agentbox/vms");
    }
}
