//! The host side of a row: the objects planted for the probes (a work directory with a secret and
//! a canary, a loopback listener, the sentinel's marker), and snapshots of what a probe must not
//! change (sysctls, cgroup v1 release agents, the mount table), restored if a probe changed them.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// Host files a probe must never change. Every v1 `release_agent` is added at snapshot time.
const WATCHED: &[&str] = &[
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/modprobe",
    "/proc/sys/kernel/hostname",
    "/proc/sys/kernel/domainname",
    "/proc/sys/kernel/sysrq",
    "/sys/kernel/uevent_helper",
    "/proc/sys/net/ipv4/ip_forward",
];

/// A random hex string from the kernel.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// What was planted for one row; `remove` cleans it up.
pub struct Planted {
    pub workdir: PathBuf,
    pub secret: String,
    pub canary_read: PathBuf,
    pub canary_write: PathBuf,
    pub canary_content: String,
    pub marker: String,
    pub listener: TcpListener,
}

impl Planted {
    pub fn new() -> std::io::Result<Planted> {
        let id = random_hex(6);
        let workdir = PathBuf::from(format!("/tmp/agentbox-eval-{id}"));
        std::fs::create_dir_all(&workdir)?;
        let secret = format!("agentbox-eval-secret-{}", random_hex(12));
        let canary_read = workdir.join("secret");
        std::fs::write(&canary_read, &secret)?;
        let canary_write = workdir.join("canary");
        let canary_content = format!("agentbox-eval-canary-{}\n", random_hex(12));
        std::fs::write(&canary_write, &canary_content)?;
        for f in [&canary_read, &canary_write] {
            std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        Ok(Planted {
            workdir,
            secret,
            canary_read,
            canary_write,
            canary_content,
            marker: format!("agentbox-eval-sentinel-{}", random_hex(6)),
            listener,
        })
    }

    /// Connections the listener received (each one is an escape).
    pub fn connections(&self) -> u32 {
        let mut n = 0;
        while self.listener.accept().is_ok() {
            n += 1;
        }
        n
    }

    /// Whether the canary is still exactly as planted.
    pub fn canary_intact(&self) -> bool {
        std::fs::read_to_string(&self.canary_write).is_ok_and(|c| c == self.canary_content)
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

/// The watched host files and the mount table at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub files: Vec<(PathBuf, Option<String>)>,
    /// Mount point -> (fstype, source, root within its file system).
    pub mounts: BTreeMap<String, (String, String, String)>,
}

/// Whether a mount is of a kind the mount probes make: a proc, sysfs or cgroup file system, or a
/// block device mounted whole. Other mounts appearing meanwhile (a bind, an overlay, a tmpfs: other
/// software on the host, such as a Docker daemon) are no probe's and are left alone.
pub fn probe_kind(fstype: &str, source: &str, root: &str) -> bool {
    matches!(fstype, "proc" | "sysfs" | "cgroup" | "cgroup2")
        || (source.starts_with("/dev/") && root == "/" && !fstype.contains("tmpfs"))
}

pub fn snapshot() -> Snapshot {
    let mut paths: Vec<PathBuf> = WATCHED.iter().map(PathBuf::from).collect();
    if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
        for d in dirs.flatten() {
            let agent = d.path().join("release_agent");
            if agent.exists() {
                paths.push(agent);
            }
        }
    }
    let files = paths
        .into_iter()
        .map(|p| {
            let content = std::fs::read_to_string(&p).ok();
            (p, content)
        })
        .collect();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split_whitespace().collect();
            let mut right = right.split_whitespace();
            let (fstype, source) = (right.next()?, right.next().unwrap_or(""));
            Some((
                left.get(4)?.to_string(),
                (
                    fstype.to_string(),
                    source.to_string(),
                    left.get(3)?.to_string(),
                ),
            ))
        })
        .collect();
    Snapshot { files, mounts }
}

/// What changed between two snapshots, each change undone where it can be (old values written
/// back, new mounts detached). Returns one line per change.
pub fn restore(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut changes = Vec::new();
    for ((path, old), (_, new)) in before.files.iter().zip(&after.files) {
        if old != new {
            let undone = match old {
                Some(value) => std::fs::write(path, value).is_ok(),
                None => false,
            };
            changes.push(format!(
                "{} changed from {:?} to {:?}{}",
                path.display(),
                old.as_deref().unwrap_or("").trim(),
                new.as_deref().unwrap_or("").trim(),
                if undone { " (restored)" } else { "" }
            ));
        }
    }
    for (mount, (fstype, source, root)) in &after.mounts {
        if before.mounts.contains_key(mount) || !probe_kind(fstype, source, root) {
            continue;
        }
        let _ = std::process::Command::new("umount")
            .args(["-l", mount])
            .status();
        changes.push(format!(
            "new host mount at {mount} ({fstype} from {source}) (detached)"
        ));
    }
    changes
}

/// The host's hostname and boot id, for the leak probes.
pub fn identity() -> (String, String) {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    (
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/random/boot_id"),
    )
}

/// Host directories that must not show inside a sandbox (in its mount table).
pub fn host_paths(workdir: &Path) -> Vec<String> {
    // Not the working directory: the probe binary is bound in from under it, and a bind's source
    // path shows in mountinfo by design (the probe would report the harness's own bind).
    let mut paths = vec![workdir.display().to_string()];
    if let Ok(home) = std::env::var("HOME") {
        if home != "/" && !home.is_empty() {
            paths.push(home);
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mounts_a_probe_could_make_count_as_its_effect() {
        assert!(probe_kind("proc", "proc", "/"));
        assert!(probe_kind("cgroup2", "cgroup2", "/"));
        assert!(probe_kind("ext4", "/dev/vda", "/"));
        // A Docker daemon's bind of a directory of the root disk, an overlay, a tmpfs.
        assert!(!probe_kind("ext4", "/dev/vda", "/var/tmp/docker/1000.1000"));
        assert!(!probe_kind("overlay", "overlay", "/"));
        assert!(!probe_kind("tmpfs", "tmpfs", "/"));
        let snap = snapshot();
        assert!(snap.mounts.contains_key("/"), "{:?}", snap.mounts);
    }
}
