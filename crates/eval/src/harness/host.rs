//! The host side of a row: the objects planted for the probes (a work directory with a secret and
//! a canary, a loopback listener, the sentinel's marker), and snapshots of what a probe must not
//! change (sysctls, cgroup v1 release agents, the mount table), restored if a probe changed them.

use std::collections::BTreeSet;
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
    pub mounts: BTreeSet<String>,
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
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
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
    for mount in after.mounts.difference(&before.mounts) {
        let _ = std::process::Command::new("umount")
            .args(["-l", mount])
            .status();
        changes.push(format!("new host mount at {mount} (detached)"));
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
