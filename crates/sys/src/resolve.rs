//! Path resolution confined to a directory, and the `*at` calls that work on the fds it returns.
//!
//! `open_in_root` resolves a path with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: the kernel
//! treats the directory fd as `/`, so absolute symlinks, `..` and symlinks swapped in during the walk
//! all stay inside it, and `/proc/*/root`-style magic links are refused. The other wrappers take a
//! directory fd and a single name, or an fd alone, so callers never rebuild a path as a string. This
//! module must never resolve a caller's path against the host's root except in `open`, which exists
//! for host paths the caller trusts.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::{check, cstring, SysError};

/// errno values callers of these wrappers branch on.
pub mod errno {
    pub use libc::{EEXIST, ELOOP, ENOENT, ENOTDIR, EXDEV};
}

/// How many times `open_in_root` retries an `EAGAIN`: the kernel returns it when a rename or mount
/// anywhere raced with a `..` it was resolving, and asks the caller to retry.
const EAGAIN_RETRIES: usize = 64;

/// What an open is for (`O_*`), with the last component followed or not. Only the combinations
/// built from these constants and modifiers exist; `O_CLOEXEC` is always added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFlags(libc::c_int);

impl OpenFlags {
    /// Read only; never makes a terminal the controlling one.
    pub const READ: Self = Self(libc::O_RDONLY | libc::O_NOCTTY);
    /// Write, creating the file or truncating it.
    pub const WRITE_CREATE_TRUNCATE: Self =
        Self(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOCTTY);
    /// Write a file that this call creates: fails with `EEXIST` if the name exists (even as a
    /// dangling symlink), so nothing existing is ever written through.
    pub const CREATE_NEW: Self =
        Self(libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY);
    /// A directory opened for listing.
    pub const DIRECTORY: Self = Self(libc::O_RDONLY | libc::O_DIRECTORY);
    /// A handle to the entry itself (`O_PATH`): it opens nothing (no device, no FIFO), and serves
    /// `fstat`, `fchown`, `readlink` and as the directory of further `*at` calls.
    pub const PATH: Self = Self(libc::O_PATH);

    /// Fails unless the entry is a directory (checked before the entry is opened).
    pub const fn directory(self) -> Self {
        Self(self.0 | libc::O_DIRECTORY)
    }

    /// Does not follow the last component if it is a symlink: with `PATH` the handle is the
    /// symlink itself; otherwise the open fails with `ELOOP`.
    pub const fn no_follow(self) -> Self {
        Self(self.0 | libc::O_NOFOLLOW)
    }

    /// Never blocks in open: a FIFO opens at once and a file with a write lease fails with
    /// `EWOULDBLOCK` instead of waiting for the lease holder.
    pub const fn non_blocking(self) -> Self {
        Self(self.0 | libc::O_NONBLOCK)
    }

    /// The `O_*` bits, without `O_CLOEXEC`.
    pub const fn bits(self) -> libc::c_int {
        self.0
    }

    fn creates(self) -> bool {
        self.0 & libc::O_CREAT != 0
    }
}

/// `struct open_how` of openat2(2). libc's is `#[non_exhaustive]`, so it cannot be built here.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` resolved inside `root` as if `root` were `/` (openat2 with `RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS`, `O_CLOEXEC`). `mode` is the mode of a file the open creates and is
/// ignored otherwise.
pub fn open_in_root(
    root: &impl AsRawFd,
    path: &Path,
    flags: OpenFlags,
    mode: u32,
) -> Result<OwnedFd, SysError> {
    let c = cstring(path)?;
    let how = OpenHow {
        flags: (flags.0 | libc::O_CLOEXEC) as u64,
        mode: if flags.creates() { u64::from(mode) } else { 0 },
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    for _ in 0..EAGAIN_RETRIES {
        // SAFETY: `c` is a NUL-terminated string and `how` a #[repr(C)] open_how whose exact size
        // is passed; both live until the call returns and the kernel only reads them. The fd
        // argument is an integer the kernel checks.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        match check(ret, "openat2", || path.display().to_string()) {
            Ok(fd) => {
                // SAFETY: `fd` was just returned by openat2 and is owned by nobody else.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
            }
            Err(e) if e.errno() == libc::EAGAIN || e.errno() == libc::EINTR => continue,
            Err(e) => return Err(e),
        }
    }
    Err(SysError::new(
        "openat2",
        path.display().to_string(),
        libc::EAGAIN,
    ))
}

/// Opens a host path with the usual resolution (relative paths from the working directory,
/// symlinks and magic links followed), `O_CLOEXEC`. For paths the caller trusts, such as
/// `/proc/<pid>/root` or a path the user named on the host.
pub fn open(path: &Path, flags: OpenFlags, mode: u32) -> Result<OwnedFd, SysError> {
    let c = cstring(path)?;
    let mode = if flags.creates() { mode } else { 0 };
    loop {
        // SAFETY: `c` is a NUL-terminated string that outlives the call; openat returns a new
        // fd or -1.
        let ret = unsafe {
            libc::openat(
                libc::AT_FDCWD,
                c.as_ptr(),
                flags.0 | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        match check(ret as libc::c_long, "open", || path.display().to_string()) {
            // SAFETY: `fd` was just returned by openat and is owned by nobody else.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Creates directory `name` in `dir` (mkdirat). `name` is taken relative to `dir`; callers pass a
/// single component so no symlink is followed.
pub fn mkdirat(dir: &impl AsRawFd, name: &Path, mode: u32) -> Result<(), SysError> {
    let c = cstring(name)?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the rest are integers.
    let ret = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) };
    check(ret as libc::c_long, "mkdirat", || {
        name.display().to_string()
    })?;
    Ok(())
}

/// Creates the symlink `name` in `dir` pointing to `target` (symlinkat). The target is stored as
/// given; nothing resolves it here.
pub fn symlinkat(target: &Path, dir: &impl AsRawFd, name: &Path) -> Result<(), SysError> {
    let t = cstring(target)?;
    let n = cstring(name)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the fd is an integer.
    let ret = unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) };
    check(ret as libc::c_long, "symlinkat", || {
        format!("{} -> {}", name.display(), target.display())
    })?;
    Ok(())
}

/// Renames `from` in `from_dir` to `to` in `to_dir`, replacing `to` if it exists (renameat). A
/// symlink at `to` is replaced, never followed.
pub fn renameat(
    from_dir: &impl AsRawFd,
    from: &Path,
    to_dir: &impl AsRawFd,
    to: &Path,
) -> Result<(), SysError> {
    let f = cstring(from)?;
    let t = cstring(to)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the fds are integers.
    let ret = unsafe {
        libc::renameat(
            from_dir.as_raw_fd(),
            f.as_ptr(),
            to_dir.as_raw_fd(),
            t.as_ptr(),
        )
    };
    check(ret as libc::c_long, "renameat", || {
        format!("{} to {}", from.display(), to.display())
    })?;
    Ok(())
}

/// Atomically swaps the entries `a` and `b` of `dir` (renameat2 RENAME_EXCHANGE): both names
/// exist before and after, each naming the other's inode.
pub fn rename_exchange(dir: &impl AsRawFd, a: &Path, b: &Path) -> Result<(), SysError> {
    let ca = cstring(a)?;
    let cb = cstring(b)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the rest are integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            dir.as_raw_fd(),
            ca.as_ptr(),
            dir.as_raw_fd(),
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    check(ret, "renameat2 exchange", || {
        format!("{} and {}", a.display(), b.display())
    })?;
    Ok(())
}

/// Removes the non-directory entry `name` of `dir` (unlinkat without AT_REMOVEDIR).
pub fn unlinkat(dir: &impl AsRawFd, name: &Path) -> Result<(), SysError> {
    let c = cstring(name)?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the rest are integers.
    let ret = unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    check(ret as libc::c_long, "unlinkat", || {
        name.display().to_string()
    })?;
    Ok(())
}

/// The target of the symlink that `link` is an `O_PATH | O_NOFOLLOW` handle to (readlinkat with
/// an empty path): the very inode the handle holds, whatever its name now points to.
pub fn readlink(link: &impl AsRawFd) -> Result<PathBuf, SysError> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the empty string literal is NUL-terminated and static; `buf` is writable for
    // `buf.len()` bytes, which is the size passed, and readlinkat writes at most that many.
    let ret = unsafe {
        libc::readlinkat(
            link.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let len = check(ret as libc::c_long, "readlink", || fd_name(link))? as usize;
    if len >= buf.len() {
        return Err(SysError::new("readlink", fd_name(link), libc::ENAMETOOLONG));
    }
    buf.truncate(len);
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

/// Changes the owner of the file `fd` refers to, which may be an `O_PATH` handle of a symlink
/// (fchownat with AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW): never a file found by name.
pub fn fchown(fd: &impl AsRawFd, uid: u32, gid: u32) -> Result<(), SysError> {
    // SAFETY: the empty string literal is NUL-terminated and static; the rest are integers.
    let ret = unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(ret as libc::c_long, "fchown", || {
        format!("{} to {uid}:{gid}", fd_name(fd))
    })?;
    Ok(())
}

/// Sets the mode of the file `fd` refers to (fchmod; not on `O_PATH` handles).
pub fn fchmod(fd: &impl AsRawFd, mode: u32) -> Result<(), SysError> {
    // SAFETY: fchmod takes integers only.
    let ret = unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) };
    check(ret as libc::c_long, "fchmod", || {
        format!("{} to {mode:o}", fd_name(fd))
    })?;
    Ok(())
}

/// The type of a file, as `fstat` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileKind {
    fn from_mode(mode: libc::mode_t) -> Self {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Self::File,
            libc::S_IFDIR => Self::Directory,
            libc::S_IFLNK => Self::Symlink,
            libc::S_IFCHR => Self::CharDevice,
            libc::S_IFBLK => Self::BlockDevice,
            libc::S_IFIFO => Self::Fifo,
            _ => Self::Socket,
        }
    }

    /// A name for messages ("character device").
    pub fn describe(self) -> &'static str {
        match self {
            Self::File => "regular file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::CharDevice => "character device",
            Self::BlockDevice => "block device",
            Self::Fifo => "FIFO",
            Self::Socket => "socket",
        }
    }
}

/// What `fstat` says about an open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub kind: FileKind,
    /// The permission bits, setuid, setgid and sticky included (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
}

impl FileStat {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }

    pub fn is_file(&self) -> bool {
        self.kind == FileKind::File
    }

    /// Whether both describe the same inode (same device and inode number).
    pub fn same_inode(&self, other: &FileStat) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// fstat(2) on `fd`, which may be an `O_PATH` handle (then it describes a symlink itself).
pub fn fstat(fd: &impl AsRawFd) -> Result<FileStat, SysError> {
    // SAFETY: an all-zero stat is a valid out-parameter; fstat writes only into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat that outlives the call.
    let ret = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    check(ret as libc::c_long, "fstat", || fd_name(fd))?;
    Ok(FileStat {
        kind: FileKind::from_mode(st.st_mode),
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: u64::try_from(st.st_size).unwrap_or(0),
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// The names in the directory `dir` (opened with `OpenFlags::DIRECTORY`), without `.` and `..`,
/// read with getdents64 from the fd's current offset to the end.
pub fn read_dir_names(dir: &impl AsRawFd) -> Result<Vec<OsString>, SysError> {
    let mut names = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: `buf` is writable for `buf.len()` bytes, the size passed; getdents64 writes
        // at most that many bytes of whole records into it.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        let len = check(ret, "getdents64", || fd_name(dir))? as usize;
        if len == 0 {
            return Ok(names);
        }
        let records = buf
            .get(..len)
            .ok_or_else(|| SysError::new("getdents64", fd_name(dir), libc::EIO))?;
        parse_dirents(records, &mut names)
            .ok_or_else(|| SysError::new("getdents64", fd_name(dir), libc::EIO))?;
    }
}

/// Appends the names of the `linux_dirent64` records in `records` (d_ino u64, d_off i64,
/// d_reclen u16, d_type u8, then the NUL-terminated name). None if a record is malformed.
fn parse_dirents(mut records: &[u8], names: &mut Vec<OsString>) -> Option<()> {
    const NAME_OFFSET: usize = 19;
    while !records.is_empty() {
        let reclen = usize::from(u16::from_ne_bytes([*records.get(16)?, *records.get(17)?]));
        if reclen <= NAME_OFFSET {
            return None;
        }
        let field = records.get(NAME_OFFSET..reclen)?;
        let name = &field[..field.iter().position(|&b| b == 0)?];
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
        records = records.get(reclen..)?;
    }
    Some(())
}

fn fd_name(fd: &impl AsRawFd) -> String {
    format!("fd {}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    /// A fresh directory under the temp dir, removed on drop (sys has no tempfile dependency).
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(tag: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("agentbox-resolve-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir(&path).unwrap();
            Self(path)
        }

        fn fd(&self) -> OwnedFd {
            open(&self.0, OpenFlags::PATH.directory(), 0).unwrap()
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn absolute_symlinks_and_dotdot_resolve_inside_the_root() {
        let dir = TestDir::new("inside");
        std::fs::create_dir(dir.0.join("etc")).unwrap();
        std::fs::write(dir.0.join("etc/passwd"), "inside").unwrap();
        symlink("/", dir.0.join("up")).unwrap();
        symlink("../../../..", dir.0.join("dotdot")).unwrap();
        symlink("/etc", dir.0.join("etc-link")).unwrap();
        let root = dir.fd();
        let expected = std::fs::metadata(dir.0.join("etc/passwd")).unwrap();
        for path in [
            "/etc/passwd",
            "/up/etc/passwd",
            "/up/up/dotdot/etc/passwd",
            "/../../../etc/passwd",
            "/etc-link/passwd",
            "dotdot/etc-link/../etc/passwd",
        ] {
            let fd = open_in_root(&root, Path::new(path), OpenFlags::READ, 0).unwrap();
            let st = fstat(&fd).unwrap();
            assert_eq!(st.ino, expected.ino(), "{path}");
            assert_eq!(st.dev, expected.dev(), "{path}");
        }
    }

    #[test]
    fn magic_links_are_refused() {
        let host_root = open(Path::new("/"), OpenFlags::PATH.directory(), 0).unwrap();
        let fd_link = format!("/proc/self/fd/{}", host_root.as_raw_fd());
        for path in ["/proc/self/root/etc", "/proc/self/cwd", &fd_link] {
            let err = open_in_root(&host_root, Path::new(path), OpenFlags::PATH, 0).unwrap_err();
            assert_eq!(err.errno(), libc::ELOOP, "{path}: {err}");
        }
        // /proc/self is an ordinary symlink and still works.
        open_in_root(
            &host_root,
            Path::new("/proc/self/status"),
            OpenFlags::READ,
            0,
        )
        .unwrap();
    }

    #[test]
    fn no_follow_gives_the_symlink_itself_or_eloop() {
        let dir = TestDir::new("nofollow");
        std::fs::write(dir.0.join("file"), "x").unwrap();
        symlink("file", dir.0.join("link")).unwrap();
        let root = dir.fd();
        let handle =
            open_in_root(&root, Path::new("link"), OpenFlags::PATH.no_follow(), 0).unwrap();
        assert_eq!(fstat(&handle).unwrap().kind, FileKind::Symlink);
        assert_eq!(readlink(&handle).unwrap(), PathBuf::from("file"));
        let err =
            open_in_root(&root, Path::new("link"), OpenFlags::READ.no_follow(), 0).unwrap_err();
        assert_eq!(err.errno(), libc::ELOOP);
        let followed = open_in_root(&root, Path::new("link"), OpenFlags::READ, 0).unwrap();
        assert!(fstat(&followed).unwrap().is_file());
    }

    #[test]
    fn create_new_never_writes_through_an_existing_name() {
        let dir = TestDir::new("create");
        symlink("/nonexistent-target", dir.0.join("dangling")).unwrap();
        let root = dir.fd();
        let err = open_in_root(
            &root,
            Path::new("dangling"),
            OpenFlags::CREATE_NEW.no_follow(),
            0o600,
        )
        .unwrap_err();
        assert_eq!(err.errno(), libc::EEXIST);
        let fd = open_in_root(&root, Path::new("new"), OpenFlags::CREATE_NEW, 0o600).unwrap();
        fchown(&fd, 1234, 4321).unwrap();
        fchmod(&fd, 0o640).unwrap();
        let st = fstat(&fd).unwrap();
        assert_eq!((st.uid, st.gid, st.mode, st.size), (1234, 4321, 0o640, 0));
        assert!(st.is_file() && !st.is_dir());
    }

    #[test]
    fn directory_calls_work_on_names_relative_to_the_fd() {
        let dir = TestDir::new("dircalls");
        let root = open(&dir.0, OpenFlags::DIRECTORY, 0).unwrap();
        mkdirat(&root, Path::new("sub"), 0o700).unwrap();
        assert_eq!(
            mkdirat(&root, Path::new("sub"), 0o700).unwrap_err().errno(),
            libc::EEXIST
        );
        symlinkat(Path::new("/elsewhere"), &root, Path::new("s")).unwrap();
        let s = open_in_root(&root, Path::new("s"), OpenFlags::PATH.no_follow(), 0).unwrap();
        fchown(&s, 77, 78).unwrap();
        let meta = std::fs::symlink_metadata(dir.0.join("s")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (77, 78));
        renameat(&root, Path::new("s"), &root, Path::new("t")).unwrap();
        rename_exchange(&root, Path::new("t"), Path::new("sub")).unwrap();
        assert!(std::fs::symlink_metadata(dir.0.join("t")).unwrap().is_dir());
        assert!(std::fs::symlink_metadata(dir.0.join("sub"))
            .unwrap()
            .file_type()
            .is_symlink());
        unlinkat(&root, Path::new("sub")).unwrap();
        let sub = open_in_root(&root, Path::new("t"), OpenFlags::DIRECTORY, 0).unwrap();
        assert_eq!(fstat(&sub).unwrap().kind, FileKind::Directory);
        let mut names = read_dir_names(&root).unwrap();
        names.sort();
        assert_eq!(names, vec![OsString::from("t")]);
    }

    #[test]
    fn read_dir_names_reads_many_entries() {
        let dir = TestDir::new("many");
        for i in 0..2000 {
            std::fs::write(dir.0.join(format!("entry-with-a-longish-name-{i:04}")), "").unwrap();
        }
        let fd = open(&dir.0, OpenFlags::DIRECTORY, 0).unwrap();
        let mut names = read_dir_names(&fd).unwrap();
        names.sort();
        assert_eq!(names.len(), 2000);
        assert_eq!(names[0], OsString::from("entry-with-a-longish-name-0000"));
    }

    #[test]
    fn malformed_dirents_are_rejected() {
        let mut names = Vec::new();
        assert!(parse_dirents(&[0u8; 10], &mut names).is_none());
        let mut record = vec![0u8; 24];
        record[16] = 24;
        record[19] = b'a';
        assert!(parse_dirents(&record, &mut names).is_some());
        assert_eq!(names, vec![OsString::from("a")]);
        record[16] = 200;
        assert!(parse_dirents(&record, &mut names).is_none());
    }
}
