//! Copying files into and out of a running sandbox's root: the core of `agentbox cp`.
//!
//! The root is a directory fd (`open_root`: `/proc/<init pid>/root`). Every sandbox path is resolved
//! by the kernel inside it (`agentbox_sys::resolve::open_in_root`: `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS`), so absolute symlinks, `..` and `/proc/*/root` resolve inside the root or
//! fail, even while the sandbox swaps directories for symlinks during the copy. Below the named
//! path, on both sides, every entry is opened by name relative to its parent directory's fd with the
//! last component never followed, so a walk cannot be redirected by a rename either.
//!
//! What is copied: regular files, directories (recursively, at most `MAX_DEPTH` deep) and symlinks,
//! which are recreated with the same target and never followed (the named source included: `cp -P`).
//! Devices, FIFOs and sockets are refused and never opened. A file is written to a fresh name
//! (`O_EXCL`), then renamed over the destination: nothing that exists is ever written through (no
//! symlink, hard link, FIFO or device). Modes are masked to `0o777`: no setuid, setgid or sticky bit
//! crosses in either direction. Entries created in the sandbox are owned by the caller's `owner`;
//! entries created on the host by the caller (root).
//!
//! This module must never join a sandbox path into a host path string, and never open a sandbox
//! entry through the host's own resolution.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use agentbox_sys::resolve::{self, errno, FileKind, FileStat, OpenFlags};
use agentbox_sys::SysError;

/// How deep a directory tree may nest below the named path: a sandbox can build trees (or bind
/// mount loops) deep enough to exhaust the stack or the fd table of the copier.
pub const MAX_DEPTH: usize = 128;

/// The bits of a mode that are copied: permissions only, never setuid, setgid or sticky.
const PERMISSION_BITS: u32 = 0o777;

/// The mode of a parent directory that `copy_in` creates.
const PARENT_DIR_MODE: u32 = 0o755;

/// How many fresh temporary names are tried before giving up (the sandbox can squat names).
const TEMP_NAME_ATTEMPTS: usize = 16;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Which side of the copy a path belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Host,
    Sandbox,
}

/// A path and the side it is on, shown as `sandbox:/etc/passwd` or `host:/tmp/out`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub side: Side,
    pub path: PathBuf,
}

impl Location {
    pub fn host(path: impl Into<PathBuf>) -> Self {
        Self {
            side: Side::Host,
            path: path.into(),
        }
    }

    pub fn sandbox(path: impl Into<PathBuf>) -> Self {
        Self {
            side: Side::Sandbox,
            path: path.into(),
        }
    }

    fn join(&self, name: impl AsRef<Path>) -> Self {
        Self {
            side: self.side,
            path: self.path.join(name),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            Side::Host => "host",
            Side::Sandbox => "sandbox",
        };
        write!(f, "{side}:{}", self.path.display())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{0}: a sandbox path must be absolute")]
    RelativeSandboxPath(PathBuf),
    /// A destination that names no entry to create (`/`, a path ending in `..`).
    #[error("{0}: the destination must end in a file name")]
    NoFileName(Location),
    #[error("{0}: not found")]
    NotFound(Location),
    /// The path, or a directory on the way to it, is something else (a file, or a symlink where
    /// the copy needs a directory it can enter without following).
    #[error("{0}: not a directory")]
    NotADirectory(Location),
    /// A regular file was replaced by something else between being looked at and being opened.
    #[error("{0}: no longer the regular file it was (changed while being copied)")]
    NotAFile(Location),
    #[error("{path}: refusing to copy a {kind}: only regular files, directories and symlinks are copied")]
    SpecialFile { path: Location, kind: &'static str },
    #[error("{0}: directories nest deeper than {MAX_DEPTH} levels")]
    TooDeep(Location),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: Location,
        #[source]
        source: io::Error,
    },
}

impl TransferError {
    fn io(op: &'static str, path: &Location, err: SysError) -> Self {
        Self::Io {
            op,
            path: path.clone(),
            source: err.source,
        }
    }
}

/// Opens `/proc/<init_pid>/root`, the root of that process's mount namespace, as an
/// `O_PATH | O_DIRECTORY` fd for `copy_in` and `copy_out`.
pub fn open_root(init_pid: i32) -> Result<OwnedFd, TransferError> {
    let path = PathBuf::from(format!("/proc/{init_pid}/root"));
    resolve::open(&path, OpenFlags::PATH.directory(), 0)
        .map_err(|e| open_error(&Location::host(&path), e))
}

/// Copies the host file, symlink or directory tree `host_src` to `sandbox_dst` inside `root`,
/// creating missing parent directories. `sandbox_dst` is the path the source becomes: a file
/// replaces a file or symlink there, a directory merges into an existing directory. Everything
/// created is owned by `owner` (uid, gid as seen on the host). Returns the bytes of file data copied.
pub fn copy_in(
    root: &OwnedFd,
    host_src: &Path,
    sandbox_dst: &Path,
    owner: (u32, u32),
) -> Result<u64, TransferError> {
    require_absolute(sandbox_dst)?;
    let dst = Location::sandbox(sandbox_dst);
    let (dst_parent, dst_name) = destination(sandbox_dst, &dst)?;
    let src = Location::host(host_src);
    let (src_parent, src_name) = split(host_src);
    let src_dir = resolve::open(src_parent, OpenFlags::PATH.directory(), 0)
        .map_err(|e| open_error(&src, e))?;
    let source = Source {
        dir: &src_dir,
        name: src_name,
        at: src,
    };
    // A missing source fails before any parent directory is created in the sandbox.
    source.open(OpenFlags::PATH)?;
    let mut copy = Copy {
        owner: Some(owner),
        bytes: 0,
    };
    let dst_dir = copy.sandbox_dir(root, dst_parent)?;
    copy.entry(source, &dst_dir, dst_name, dst, 0)?;
    Ok(copy.bytes)
}

/// Copies the file, symlink or directory tree `sandbox_src` inside `root` to `host_dst`, whose
/// parent directory must exist. Symlinks are recreated with their target as written in the
/// sandbox (they point into the sandbox's view, and nothing here follows them); files and
/// directories are created owned by the caller, with the source's permission bits only. Returns
/// the bytes of file data copied.
pub fn copy_out(root: &OwnedFd, sandbox_src: &Path, host_dst: &Path) -> Result<u64, TransferError> {
    require_absolute(sandbox_src)?;
    let dst = Location::host(host_dst);
    let (dst_parent, dst_name) = destination(host_dst, &dst)?;
    let dst_dir = resolve::open(dst_parent, OpenFlags::DIRECTORY, 0)
        .map_err(|e| open_error(&Location::host(dst_parent), e))?;
    let src = Location::sandbox(sandbox_src);
    let (src_parent, src_name) = split(sandbox_src);
    let src_dir = resolve::open_in_root(root, src_parent, OpenFlags::PATH.directory(), 0)
        .map_err(|e| open_error(&src, e))?;
    let mut copy = Copy {
        owner: None,
        bytes: 0,
    };
    copy.entry(
        Source {
            dir: &src_dir,
            name: src_name,
            at: src,
        },
        &dst_dir,
        dst_name,
        dst,
        0,
    )?;
    Ok(copy.bytes)
}

fn require_absolute(path: &Path) -> Result<(), TransferError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(TransferError::RelativeSandboxPath(path.to_path_buf()))
    }
}

/// The directory that holds `path` and its name there; `(path, ".")` for a path that names no
/// entry of a parent (`/`, `..`), which then can only be a directory.
fn split(path: &Path) -> (&Path, &Path) {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => (or_dot(parent), Path::new(name)),
        _ => (path, Path::new(".")),
    }
}

/// The parent directory and the name a destination is created under.
fn destination<'a>(path: &'a Path, dst: &Location) -> Result<(&'a Path, &'a OsStr), TransferError> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((or_dot(parent), name)),
        _ => Err(TransferError::NoFileName(dst.clone())),
    }
}

fn or_dot(path: &Path) -> &Path {
    if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    }
}

/// The error of an open: a missing entry or a non-directory on the way get their own variants.
fn open_error(at: &Location, err: SysError) -> TransferError {
    match err.errno() {
        errno::ENOENT => TransferError::NotFound(at.clone()),
        errno::ENOTDIR => TransferError::NotADirectory(at.clone()),
        _ => TransferError::io("open", at, err),
    }
}

/// An entry to copy: `name` in the directory `dir` (`.` for `dir` itself). `at` is where it is,
/// for messages only; nothing resolves it.
struct Source<'a> {
    dir: &'a OwnedFd,
    name: &'a Path,
    at: Location,
}

impl Source<'_> {
    fn open(&self, flags: OpenFlags) -> Result<OwnedFd, TransferError> {
        resolve::open_in_root(self.dir, self.name, flags.no_follow(), 0)
            .map_err(|e| open_error(&self.at, e))
    }
}

/// One copy in progress.
struct Copy {
    /// The owner of every entry created (copy_in); `None` leaves the caller's (copy_out).
    owner: Option<(u32, u32)>,
    bytes: u64,
}

impl Copy {
    /// Copies `src` to `name` in `dst_dir`.
    fn entry(
        &mut self,
        src: Source<'_>,
        dst_dir: &OwnedFd,
        name: &OsStr,
        dst: Location,
        depth: usize,
    ) -> Result<(), TransferError> {
        // A handle that opens nothing: devices and FIFOs are looked at, never opened.
        let handle = src.open(OpenFlags::PATH)?;
        let stat = resolve::fstat(&handle).map_err(|e| TransferError::io("stat", &src.at, e))?;
        match stat.kind {
            FileKind::File => {
                let file = src.open(OpenFlags::READ.non_blocking())?;
                let opened =
                    resolve::fstat(&file).map_err(|e| TransferError::io("stat", &src.at, e))?;
                if !opened.is_file() || !opened.same_inode(&stat) {
                    return Err(TransferError::NotAFile(src.at));
                }
                self.write_file(File::from(file), &opened, &src.at, dst_dir, name, &dst)
            }
            FileKind::Directory => {
                if depth >= MAX_DEPTH {
                    return Err(TransferError::TooDeep(src.at));
                }
                // "." of the handle is the very directory looked at, whatever its name is now.
                let dir = resolve::open_in_root(&handle, Path::new("."), OpenFlags::DIRECTORY, 0)
                    .map_err(|e| open_error(&src.at, e))?;
                let mut names = resolve::read_dir_names(&dir)
                    .map_err(|e| TransferError::io("list", &src.at, e))?;
                names.sort();
                let out = self.make_dir(dst_dir, name, stat.mode, &dst)?;
                for child in &names {
                    let source = Source {
                        dir: &dir,
                        name: Path::new(child),
                        at: src.at.join(child),
                    };
                    self.entry(source, &out, child, dst.join(child), depth + 1)?;
                }
                Ok(())
            }
            FileKind::Symlink => {
                let target = resolve::readlink(&handle)
                    .map_err(|e| TransferError::io("readlink", &src.at, e))?;
                self.make_symlink(&target, dst_dir, name, &dst)
            }
            kind => Err(TransferError::SpecialFile {
                path: src.at,
                kind: kind.describe(),
            }),
        }
    }

    /// The directory `path` inside `root`, with missing directories created (`mkdir -p`), each
    /// by name under its parent's fd.
    fn sandbox_dir(&self, root: &OwnedFd, path: &Path) -> Result<OwnedFd, TransferError> {
        let at = Location::sandbox(path);
        match resolve::open_in_root(root, path, OpenFlags::DIRECTORY, 0) {
            Ok(dir) => Ok(dir),
            Err(e) if e.errno() == errno::ENOENT => match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) => {
                    let parent = self.sandbox_dir(root, parent)?;
                    self.make_dir(&parent, name, PARENT_DIR_MODE, &at)
                }
                _ => Err(TransferError::NotFound(at)),
            },
            Err(e) => Err(open_error(&at, e)),
        }
    }

    /// Creates directory `name` in `parent` (or takes the directory already there, never through
    /// a symlink) and opens it. A directory it creates gets the owner and `mode`'s permissions.
    fn make_dir(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        mode: u32,
        at: &Location,
    ) -> Result<OwnedFd, TransferError> {
        let created = match resolve::mkdirat(parent, Path::new(name), 0o700) {
            Ok(()) => true,
            Err(e) if e.errno() == errno::EEXIST => false,
            Err(e) => return Err(TransferError::io("mkdir", at, e)),
        };
        let dir =
            resolve::open_in_root(parent, Path::new(name), OpenFlags::DIRECTORY.no_follow(), 0)
                .map_err(|e| match e.errno() {
                    errno::ELOOP => TransferError::NotADirectory(at.clone()),
                    _ => open_error(at, e),
                })?;
        if created {
            self.chown(&dir, at)?;
            resolve::fchmod(&dir, mode & PERMISSION_BITS)
                .map_err(|e| TransferError::io("chmod", at, e))?;
        }
        Ok(dir)
    }

    /// Writes the data of `src` (at most `stat.size` bytes: a file that grows while being read does not
    /// make the copy endless) to a fresh file, then renames it to `name` in `dir`.
    fn write_file(
        &mut self,
        mut src: File,
        stat: &FileStat,
        from: &Location,
        dir: &OwnedFd,
        name: &OsStr,
        at: &Location,
    ) -> Result<(), TransferError> {
        let (temp, out) = fresh_name(at, |temp| {
            resolve::open_in_root(dir, temp, OpenFlags::CREATE_NEW.no_follow(), 0o600)
        })?;
        let mut out = File::from(out);
        let written = pump(&mut src, stat.size, from, &mut out, at)
            .and_then(|n| {
                self.chown(&out, at)?;
                resolve::fchmod(&out, stat.mode & PERMISSION_BITS)
                    .map_err(|e| TransferError::io("chmod", at, e))?;
                Ok(n)
            })
            .and_then(|n| {
                resolve::renameat(dir, &temp, dir, Path::new(name))
                    .map_err(|e| TransferError::io("rename", at, e))?;
                Ok(n)
            });
        match written {
            Ok(n) => {
                self.bytes += n;
                Ok(())
            }
            Err(e) => {
                let _ = resolve::unlinkat(dir, &temp);
                Err(e)
            }
        }
    }

    /// Creates a symlink to `target` under a fresh name, gives it the owner, then renames it to
    /// `name` in `dir` (replacing a file or symlink there).
    fn make_symlink(
        &self,
        target: &Path,
        dir: &OwnedFd,
        name: &OsStr,
        at: &Location,
    ) -> Result<(), TransferError> {
        let (temp, ()) = fresh_name(at, |temp| resolve::symlinkat(target, dir, temp))?;
        let placed = self.own_symlink(dir, &temp, at).and_then(|()| {
            resolve::renameat(dir, &temp, dir, Path::new(name))
                .map_err(|e| TransferError::io("rename", at, e))
        });
        if placed.is_err() {
            let _ = resolve::unlinkat(dir, &temp);
        }
        placed
    }

    /// Chowns the symlink just created as `temp` through a handle to it, after checking that the
    /// name still holds a symlink (the sandbox could have swapped in a hard link to a file).
    fn own_symlink(&self, dir: &OwnedFd, temp: &Path, at: &Location) -> Result<(), TransferError> {
        if self.owner.is_none() {
            return Ok(());
        }
        let link = resolve::open_in_root(dir, temp, OpenFlags::PATH.no_follow(), 0)
            .map_err(|e| open_error(at, e))?;
        let stat = resolve::fstat(&link).map_err(|e| TransferError::io("stat", at, e))?;
        if stat.kind != FileKind::Symlink {
            return Err(TransferError::Io {
                op: "create symlink",
                path: at.clone(),
                source: io::Error::other("the new symlink was replaced while being created"),
            });
        }
        self.chown(&link, at)
    }

    fn chown(&self, fd: &impl AsRawFd, at: &Location) -> Result<(), TransferError> {
        match self.owner {
            Some((uid, gid)) => {
                resolve::fchown(fd, uid, gid).map_err(|e| TransferError::io("chown", at, e))
            }
            None => Ok(()),
        }
    }
}

/// Runs `create` with fresh hidden names (`.agentbox-cp-<pid>-<n>`) until one does not exist yet.
fn fresh_name<T>(
    at: &Location,
    mut create: impl FnMut(&Path) -> Result<T, SysError>,
) -> Result<(PathBuf, T), TransferError> {
    for _ in 0..TEMP_NAME_ATTEMPTS {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = PathBuf::from(format!(".agentbox-cp-{}-{n}", std::process::id()));
        match create(&temp) {
            Ok(made) => return Ok((temp, made)),
            Err(e) if e.errno() == errno::EEXIST => continue,
            Err(e) => return Err(TransferError::io("create", at, e)),
        }
    }
    Err(TransferError::Io {
        op: "create",
        path: at.clone(),
        source: io::Error::new(
            io::ErrorKind::AlreadyExists,
            "every temporary name tried already exists",
        ),
    })
}

/// Copies at most `size` bytes from `src` to `out`; returns how many.
fn pump(
    src: &mut File,
    size: u64,
    from: &Location,
    out: &mut File,
    to: &Location,
) -> Result<u64, TransferError> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let chunk = &mut buf[..want];
        let n = match src.read(chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(TransferError::Io {
                    op: "read",
                    path: from.clone(),
                    source,
                })
            }
        };
        out.write_all(&chunk[..n])
            .map_err(|source| TransferError::Io {
                op: "write",
                path: to.clone(),
                source,
            })?;
        left -= n as u64;
    }
    Ok(size - left)
}
