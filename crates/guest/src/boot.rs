//! PID 1 set-up of the microVM guest: the kernel command line, the pseudo-filesystems (cgroup v2
//! included, for the `ns` tier that layered mode runs inside the guest), the switch into the root
//! disk (an ext4 image, read-only, under an overlay whose upper layer is a tmpfs) and the
//! read-only tools disk. It runs before the channel exists, so its errors go to the console.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentbox_sys::mount::{mount, Flags, MS_NODEV, MS_NOSUID, MS_RDONLY};
use agentbox_sys::SysError;

/// The default guest end of the host channel (the first port of the first virtio-serial device).
pub const DEFAULT_CHANNEL: &str = "/dev/vport0p1";
/// Where the tools disk (`agentbox.tools=DEV`: an ext4 image holding the `agentbox` binary, for
/// layered mode) is mounted, read-only, in the final root.
pub const TOOLS_DIR: &str = "/run/agentbox-tools";

/// What the kernel command line asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// `agentbox.root=DEV`: the root disk; none: run from the initramfs.
    pub root: Option<PathBuf>,
    /// `agentbox.rootfstype=TYPE` (default ext4).
    pub root_fstype: String,
    /// `agentbox.disk=BYTES`: size of the tmpfs holding the overlay's writes (default: half of RAM).
    pub disk_bytes: Option<u64>,
    /// `agentbox.channel=PATH` (default [`DEFAULT_CHANNEL`]).
    pub channel: PathBuf,
    /// `agentbox.tools=DEV`: the read-only tools disk (ext4), mounted at [`TOOLS_DIR`].
    pub tools: Option<PathBuf>,
}

/// Parses `/proc/cmdline`. Unknown words are the kernel's; a malformed value of ours is ignored
/// with the default kept (the agent must come up to report anything).
pub fn parse_cmdline(cmdline: &str) -> BootConfig {
    let mut config = BootConfig {
        root: None,
        root_fstype: "ext4".to_string(),
        disk_bytes: None,
        channel: PathBuf::from(DEFAULT_CHANNEL),
        tools: None,
    };
    for word in cmdline.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "agentbox.root" if !value.is_empty() => config.root = Some(PathBuf::from(value)),
            "agentbox.rootfstype" if !value.is_empty() => config.root_fstype = value.to_string(),
            "agentbox.disk" => config.disk_bytes = value.parse().ok(),
            "agentbox.channel" if !value.is_empty() => config.channel = PathBuf::from(value),
            "agentbox.tools" if !value.is_empty() => config.tools = Some(PathBuf::from(value)),
            _ => {}
        }
    }
    config
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("creating {0}: {1}")]
    Mkdir(PathBuf, std::io::Error),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("device {0} did not appear within 10 s")]
    NoDevice(PathBuf),
}

fn mkdir(path: &Path) -> Result<(), BootError> {
    std::fs::create_dir_all(path).map_err(|e| BootError::Mkdir(path.to_path_buf(), e))
}

/// Mounts `fstype` on `target`, tolerating EBUSY (the kernel may have mounted devtmpfs already).
fn mount_fs(fstype: &str, target: &str, flags: Flags, data: &str) -> Result<(), BootError> {
    mkdir(Path::new(target))?;
    match mount(Path::new(fstype), Path::new(target), fstype, flags, data) {
        Err(e) if e.errno() == libc::EBUSY => Ok(()),
        other => Ok(other?),
    }
}

/// Mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /tmp and /run in the initramfs.
pub fn mount_pseudo_filesystems() -> Result<(), BootError> {
    mount_fs("proc", "/proc", MS_NOSUID | MS_NODEV | libc::MS_NOEXEC, "")?;
    mount_fs("sysfs", "/sys", MS_NOSUID | MS_NODEV | libc::MS_NOEXEC, "")?;
    mount_fs("devtmpfs", "/dev", MS_NOSUID, "mode=0755")?;
    mount_fs(
        "devpts",
        "/dev/pts",
        MS_NOSUID | libc::MS_NOEXEC,
        "mode=0620,ptmxmode=0666",
    )?;
    mount_fs("tmpfs", "/dev/shm", MS_NOSUID | MS_NODEV, "mode=1777")?;
    mount_fs("tmpfs", "/tmp", MS_NOSUID | MS_NODEV, "mode=1777")?;
    mount_fs("tmpfs", "/run", MS_NOSUID | MS_NODEV, "mode=0755")?;
    Ok(())
}

/// Mounts the cgroup v2 hierarchy at /sys/fs/cgroup (moved into the root with /sys), where the
/// `ns` tier of layered mode creates its leaves and enables the memory, pids and cpu
/// controllers. `nsdelegate`: a cgroup namespace's root is a delegation boundary, as on hosts.
pub fn mount_cgroup2() -> Result<(), BootError> {
    mount_fs(
        "cgroup2",
        "/sys/fs/cgroup",
        MS_NOSUID | MS_NODEV | libc::MS_NOEXEC,
        "nsdelegate",
    )
}

/// Waits up to 10 s for the kernel to create `device` (virtio-blk probes asynchronously).
fn wait_for_device(device: &Path) -> Result<(), BootError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !device.exists() {
        if Instant::now() > deadline {
            return Err(BootError::NoDevice(device.to_path_buf()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Mounts the tools disk read-only, nodev and nosuid (not noexec: the `agentbox` binary on it is
/// what layered mode executes) at [`TOOLS_DIR`] of the current root, and returns that directory.
pub fn mount_tools(device: &Path) -> Result<PathBuf, BootError> {
    wait_for_device(device)?;
    let dir = Path::new(TOOLS_DIR);
    mkdir(dir)?;
    mount(device, dir, "ext4", MS_RDONLY | MS_NODEV | MS_NOSUID, "")?;
    Ok(dir.to_path_buf())
}

/// Mounts the root disk read-only under an overlay with a tmpfs upper layer, moves the
/// pseudo-filesystems into it and makes it the root (the `switch_root` way: an initramfs cannot
/// be pivoted away, so the new root is moved onto `/` and chrooted into).
pub fn switch_to_root_disk(config: &BootConfig, device: &Path) -> Result<(), BootError> {
    wait_for_device(device)?;
    let lower = Path::new("/.agentbox/lower");
    let rw = Path::new("/.agentbox/rw");
    let root = Path::new("/.agentbox/root");
    for dir in [lower, rw, root] {
        mkdir(dir)?;
    }
    mount(device, lower, &config.root_fstype, MS_RDONLY, "")?;
    let size = config
        .disk_bytes
        .map_or_else(|| "50%".to_string(), |b| b.to_string());
    mount(
        Path::new("tmpfs"),
        rw,
        "tmpfs",
        0,
        &format!("size={size},mode=0755"),
    )?;
    mkdir(&rw.join("upper"))?;
    mkdir(&rw.join("work"))?;
    mount(
        Path::new("overlay"),
        root,
        "overlay",
        0,
        "lowerdir=/.agentbox/lower,upperdir=/.agentbox/rw/upper,workdir=/.agentbox/rw/work",
    )?;
    for moved in ["/dev", "/proc", "/sys", "/tmp", "/run"] {
        let target = root.join(&moved[1..]);
        mkdir(&target)?;
        mount(Path::new(moved), &target, "", libc::MS_MOVE, "")?;
    }
    agentbox_sys::mount::chdir(root)?;
    mount(Path::new("."), Path::new("/"), "", libc::MS_MOVE, "")?;
    agentbox_sys::mount::chroot(Path::new("."))?;
    agentbox_sys::mount::chdir(Path::new("/"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_defaults_without_our_words() {
        let c = parse_cmdline("console=hvc0 reboot=t panic=-1 quiet");
        assert_eq!(c.root, None);
        assert_eq!(c.root_fstype, "ext4");
        assert_eq!(c.disk_bytes, None);
        assert_eq!(c.channel, PathBuf::from(DEFAULT_CHANNEL));
        assert_eq!(c.tools, None);
    }

    #[test]
    fn cmdline_reads_root_disk_and_channel() {
        let c = parse_cmdline(
            "console=hvc0 agentbox.root=/dev/vda agentbox.disk=1073741824 agentbox.channel=/dev/vport1p1 agentbox.tools=/dev/vdb\n",
        );
        assert_eq!(c.root, Some(PathBuf::from("/dev/vda")));
        assert_eq!(c.tools, Some(PathBuf::from("/dev/vdb")));
        assert_eq!(c.disk_bytes, Some(1 << 30));
        assert_eq!(c.channel, PathBuf::from("/dev/vport1p1"));
    }

    #[test]
    fn cmdline_ignores_malformed_values() {
        let c =
            parse_cmdline("agentbox.disk=lots agentbox.root= agentbox.channel= agentbox.tools=");
        assert_eq!(c.disk_bytes, None);
        assert_eq!(c.tools, None);
        assert_eq!(c.root, None);
        assert_eq!(c.channel, PathBuf::from(DEFAULT_CHANNEL));
    }
}
