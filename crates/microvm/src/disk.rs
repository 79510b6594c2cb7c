//! Root disks: an image directory becomes a read-only ext4 base built once (cached by key), and
//! each sandbox writes to its own qcow2 overlay over it, deleted with the sandbox. The tools disk
//! (layered mode) is another read-only ext4 image, holding the `agentbox` binary, cached by the
//! binary's content.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::qemu::Disk;

/// Where base disks are cached (`<key>.ext4`).
pub const DEFAULT_CACHE: &str = "/var/cache/agentbox/disks";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("`{0}` not found: install {1}")]
    MissingTool(&'static str, &'static str),
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

fn io(what: impl std::fmt::Display, e: std::io::Error) -> DiskError {
    DiskError::Io(what.to_string(), e)
}

/// Finds `tool` in the usual directories (PATH may lack the sbin ones).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

/// The cache key of an image directory: sha256 of `digest` when given (an image's content
/// digest), else of the directory's path, device, inode and mtime.
pub fn cache_key(dir: &Path, digest: Option<&str>) -> Result<String, DiskError> {
    let mut h = Sha256::new();
    match digest {
        Some(d) => h.update(format!("digest:{d}")),
        None => {
            let meta = std::fs::metadata(dir).map_err(|e| io(dir.display(), e))?;
            h.update(format!(
                "dir:{}\0{}:{}:{}.{}",
                dir.display(),
                meta.dev(),
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec()
            ));
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Bytes the tree uses, counted in 4 KiB blocks (a `du` of it, not following symlinks).
pub fn tree_bytes(dir: &Path) -> Result<u64, DiskError> {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        total += 4096;
        for entry in std::fs::read_dir(&d).map_err(|e| io(d.display(), e))? {
            let entry = entry.map_err(|e| io(d.display(), e))?;
            let meta = entry
                .path()
                .symlink_metadata()
                .map_err(|e| io(entry.path().display(), e))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len().div_ceil(4096) * 4096 + 256;
            }
        }
    }
    Ok(total)
}

/// The base disk's size for a tree of `bytes`: +30 % + 64 MiB, rounded up to 4 KiB.
pub fn disk_size(bytes: u64) -> u64 {
    let size = bytes + bytes * 3 / 10 + (64 << 20);
    size.div_ceil(4096) * 4096
}

/// Returns the cached read-only base disk of `dir`, building it with `mkfs.ext4 -d` when missing
/// (into a temp file, then renamed: concurrent builders never see a partial disk).
pub fn base_disk(dir: &Path, digest: Option<&str>, cache_dir: &Path) -> Result<PathBuf, DiskError> {
    let key = cache_key(dir, digest)?;
    let path = cache_dir.join(format!("{key}.ext4"));
    if path.is_file() {
        return Ok(path);
    }
    let mkfs = find_tool("mkfs.ext4").ok_or(DiskError::MissingTool("mkfs.ext4", "e2fsprogs"))?;
    std::fs::create_dir_all(cache_dir).map_err(|e| io(cache_dir.display(), e))?;
    let size_kib = disk_size(tree_bytes(dir)?) / 1024;
    let tmp = cache_dir.join(format!(".{key}.{}.tmp", std::process::id()));
    let out = Command::new(mkfs)
        .args(["-q", "-F", "-d"])
        .arg(dir)
        .args(["-L", "agentbox", "-b", "4096"])
        .arg(&tmp)
        .arg(format!("{size_kib}k"))
        .output()
        .map_err(|e| io("running mkfs.ext4", e))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(DiskError::Tool {
            tool: "mkfs.ext4",
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| io(tmp.display(), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(path.display(), e))?;
    Ok(path)
}

/// The file name of the binary on the tools disk (the guest agent executes
/// `/run/agentbox-tools/agentbox __sandbox -- ARGV` for layered requests).
pub const TOOLS_BINARY: &str = "agentbox";

/// Returns the cached read-only tools disk holding `agentbox` (stripped of its symbols when
/// `strip` is installed: about a fifth smaller), building it with `mkfs.ext4 -d` when missing,
/// into a temp file renamed into place like [`base_disk`]. Content-addressed: the cache key is the
/// sha256 of the binary, so a rebuilt binary gets a new disk and never a stale one (the hash is
/// remembered per file identity, see [`tools_key`]).
pub fn tools_disk(agentbox: &Path, cache_dir: &Path) -> Result<PathBuf, DiskError> {
    let key = tools_key(agentbox, cache_dir)?;
    let path = cache_dir.join(format!("tools-{key}.ext4"));
    if path.is_file() {
        return Ok(path);
    }
    let mkfs = find_tool("mkfs.ext4").ok_or(DiskError::MissingTool("mkfs.ext4", "e2fsprogs"))?;
    std::fs::create_dir_all(cache_dir).map_err(|e| io(cache_dir.display(), e))?;
    let staging = cache_dir.join(format!(".tools-{key}.{}.d", std::process::id()));
    let tmp = cache_dir.join(format!(".tools-{key}.{}.tmp", std::process::id()));
    let built = build_tools_disk(agentbox, &mkfs, &staging, &tmp);
    let _ = std::fs::remove_dir_all(&staging);
    if let Err(e) = built {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(|e| io(path.display(), e))?;
    Ok(path)
}

fn build_tools_disk(
    agentbox: &Path,
    mkfs: &Path,
    staging: &Path,
    tmp: &Path,
) -> Result<(), DiskError> {
    let _ = std::fs::remove_dir_all(staging);
    std::fs::create_dir(staging).map_err(|e| io(staging.display(), e))?;
    let binary = staging.join(TOOLS_BINARY);
    let stripped = find_tool("strip").is_some_and(|strip| {
        Command::new(strip)
            .args(["--strip-all", "-o"])
            .arg(&binary)
            .arg(agentbox)
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if !stripped {
        std::fs::copy(agentbox, &binary).map_err(|e| io(agentbox.display(), e))?;
    }
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io(binary.display(), e))?;
    // No journal (never written) and no reserved blocks: the disk is the binary and a little
    // metadata. Sizes are a floor of 8 MiB plus 10 %.
    let bytes = tree_bytes(staging)?;
    let size_kib = (bytes + bytes / 10 + (8 << 20)).div_ceil(4096) * 4;
    let out = Command::new(mkfs)
        .args(["-q", "-F", "-d"])
        .arg(staging)
        .args([
            "-L",
            "agentbox-tools",
            "-b",
            "4096",
            "-m",
            "0",
            "-O",
            "^has_journal",
        ])
        .arg(tmp)
        .arg(format!("{size_kib}k"))
        .output()
        .map_err(|e| io("running mkfs.ext4", e))?;
    if !out.status.success() {
        return Err(DiskError::Tool {
            tool: "mkfs.ext4",
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| io(tmp.display(), e))
}

/// sha256 of the tools disk's recipe and of `agentbox`'s content. Hashing ~40 MB costs ~50 ms,
/// so the key is remembered in `cache_dir` by the file's identity (device, inode, size, mtime and
/// ctime: any write to the file changes its ctime, which no user can set back).
fn tools_key(agentbox: &Path, cache_dir: &Path) -> Result<String, DiskError> {
    let meta = std::fs::metadata(agentbox).map_err(|e| io(agentbox.display(), e))?;
    let identity = format!(
        "{}:{}:{}:{}.{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    );
    let index = cache_dir.join(format!(
        ".tools-index-{}",
        hex::encode(Sha256::digest(identity.as_bytes()))
    ));
    if let Ok(key) = std::fs::read_to_string(&index) {
        if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(key);
        }
    }
    let mut file = File::open(agentbox).map_err(|e| io(agentbox.display(), e))?;
    let mut h = Sha256::new();
    // The recipe's version: bump when the disk's layout or build changes.
    h.update(b"agentbox-tools-disk v1\0");
    std::io::copy(&mut file, &mut h).map_err(|e| io(agentbox.display(), e))?;
    let key = hex::encode(h.finalize());
    // Best effort (a read-only cache only costs the hash next time); atomic, like the disks.
    let tmp = index.with_extension(format!("{}.tmp", std::process::id()));
    if std::fs::create_dir_all(cache_dir).is_ok() && std::fs::write(&tmp, &key).is_ok() {
        let _ = std::fs::rename(&tmp, &index);
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(key)
}

/// Creates the sandbox's writable view of `base` in `state_dir`: a qcow2 overlay
/// (`qemu-img create -f qcow2 -F raw -b BASE`) when `qemu-img` exists, else QEMU's own temporary
/// snapshot of the raw base (`snapshot=on`; QEMU must then run with `TMPDIR=state_dir`).
/// Either way the base is never written. `base_as_seen` is the path QEMU will open the base by
/// (recorded in the overlay; a jailed QEMU sees the base bind-mounted into its state dir).
pub fn overlay(base: &Path, base_as_seen: &Path, state_dir: &Path) -> Result<Disk, DiskError> {
    let Some(qemu_img) = find_tool("qemu-img") else {
        return Ok(Disk::RawSnapshot(base_as_seen.to_path_buf()));
    };
    let size = std::fs::metadata(base)
        .map_err(|e| io(base.display(), e))?
        .len();
    let path = state_dir.join("overlay.qcow2");
    let out = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-u", "-b"])
        .arg(base_as_seen)
        .arg(&path)
        .arg(size.to_string())
        .output()
        .map_err(|e| io("running qemu-img", e))?;
    if !out.status.success() {
        return Err(DiskError::Tool {
            tool: "qemu-img",
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(Disk::Qcow2(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn size_adds_thirty_percent_and_64_mib() {
        assert_eq!(disk_size(0), 64 << 20);
        assert_eq!(disk_size(100 << 20), (130 << 20) + (64 << 20));
        assert_eq!(disk_size(1) % 4096, 0);
    }

    #[test]
    fn key_follows_digest_or_directory_identity() {
        let dir = tempfile::tempdir().unwrap();
        let a = cache_key(dir.path(), None).unwrap();
        assert_eq!(a, cache_key(dir.path(), None).unwrap());
        assert_ne!(a, cache_key(dir.path(), Some("sha256:x")).unwrap());
        assert_eq!(
            cache_key(Path::new("/nonexistent"), Some("sha256:x")).unwrap(),
            cache_key(dir.path(), Some("sha256:x")).unwrap()
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(a, cache_key(other.path(), None).unwrap());
    }

    #[test]
    fn tools_key_follows_content_and_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"binary one").unwrap();
        std::fs::write(&b, b"binary one").unwrap();
        let key = tools_key(&a, &cache).unwrap();
        assert_eq!(
            key,
            tools_key(&b, &cache).unwrap(),
            "same content, same key"
        );
        let indexes = || std::fs::read_dir(&cache).unwrap().count();
        assert_eq!(indexes(), 2, "one index entry per file identity");
        assert_eq!(key, tools_key(&a, &cache).unwrap(), "remembered");
        assert_eq!(indexes(), 2);
        std::fs::write(&b, b"binary two").unwrap();
        assert_ne!(
            key,
            tools_key(&b, &cache).unwrap(),
            "rewritten: new identity"
        );
    }

    #[test]
    fn tree_bytes_counts_blocks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![1u8; 5000]).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert!(tree_bytes(dir.path()).unwrap() >= 8192 + 2 * 4096);
    }
}
