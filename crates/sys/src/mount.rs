//! Mounts, pivot_root and chroot.

use std::ffi::CString;
use std::path::Path;

use crate::{check, cstring, SysError};

pub use libc::{
    MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, MS_SLAVE,
};

/// Mount flags (`MS_*`).
pub type Flags = libc::c_ulong;

/// mount(2). `source`/`fstype`/`data` may be empty for "none".
pub fn mount(
    source: &Path,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), SysError> {
    let src = cstring(source)?;
    let tgt = cstring(target)?;
    let fst = CString::new(fstype).map_err(|_| SysError::new("mount", fstype, libc::EINVAL))?;
    let dat = CString::new(data).map_err(|_| SysError::new("mount", data, libc::EINVAL))?;
    let opt = |c: &CString, empty: bool| if empty { std::ptr::null() } else { c.as_ptr() };
    // SAFETY: every pointer is either null or a NUL-terminated string owned by this frame.
    let ret = unsafe {
        libc::mount(
            opt(&src, source.as_os_str().is_empty()),
            tgt.as_ptr(),
            opt(&fst, fstype.is_empty()),
            flags,
            opt(&dat, data.is_empty()).cast(),
        )
    };
    check(ret as libc::c_long, "mount", || {
        let details: Vec<String> = [
            fstype.to_string(),
            format!("flags {flags:#x}"),
            data.to_string(),
        ]
        .into_iter()
        .filter(|d| !d.is_empty())
        .collect();
        format!(
            "{} on {} ({})",
            source.display(),
            target.display(),
            details.join(", ")
        )
    })?;
    Ok(())
}

/// Bind-mounts `source` onto `target` (recursively when `recursive`).
pub fn bind(source: &Path, target: &Path, recursive: bool) -> Result<(), SysError> {
    mount(
        source,
        target,
        "",
        MS_BIND | if recursive { MS_REC } else { 0 },
        "",
    )
}

/// Re-applies a bind mount's flags (MS_RDONLY, MS_NOSUID, MS_NODEV...): a bind mount ignores them
/// at creation; only a remount sets them.
pub fn remount_bind(target: &Path, flags: libc::c_ulong) -> Result<(), SysError> {
    mount(Path::new(""), target, "", MS_REMOUNT | MS_BIND | flags, "")
}

/// Makes every mount under `/` private to this mount namespace, so nothing propagates to the host.
pub fn make_private_recursive() -> Result<(), SysError> {
    mount(Path::new(""), Path::new("/"), "", MS_REC | MS_PRIVATE, "")
}

/// Makes `new_root` the root of this mount namespace and detaches the old root (pivot_root(".", ".")).
pub fn pivot_into(new_root: &Path) -> Result<(), SysError> {
    chdir(new_root)?;
    let dot = cstring(Path::new("."))?;
    // SAFETY: both arguments are the NUL-terminated string "." owned by this frame.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(ret, "pivot_root", || new_root.display().to_string())?;
    // The old root is now stacked under the new one at "."; detach it.
    // SAFETY: "." is a valid string; MNT_DETACH lazily unmounts the old root.
    let ret = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    check(ret as libc::c_long, "umount2", || "old root".into())?;
    chdir(Path::new("/"))
}

pub fn chdir(path: &Path) -> Result<(), SysError> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated string owned by this frame.
    let ret = unsafe { libc::chdir(c.as_ptr()) };
    check(ret as libc::c_long, "chdir", || path.display().to_string())?;
    Ok(())
}

pub fn chroot(path: &Path) -> Result<(), SysError> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated string owned by this frame.
    let ret = unsafe { libc::chroot(c.as_ptr()) };
    check(ret as libc::c_long, "chroot", || path.display().to_string())?;
    Ok(())
}

/// The flags of the mount holding `path` that a remount inside a user namespace must keep (the
/// kernel locks them): read-only, nosuid, nodev, noexec and the atime mode.
pub fn locked_flags(path: &Path) -> Result<libc::c_ulong, SysError> {
    let c = cstring(path)?;
    // SAFETY: an all-zero statvfs is a valid out-parameter; `c` is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes only into `st`.
    let ret = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    check(ret as libc::c_long, "statvfs", || {
        path.display().to_string()
    })?;
    // The ST_* bits below have the same values as the MS_* mount flags.
    let keep = libc::ST_RDONLY
        | libc::ST_NOSUID
        | libc::ST_NODEV
        | libc::ST_NOEXEC
        | libc::ST_NOATIME
        | libc::ST_NODIRATIME
        | libc::ST_RELATIME;
    Ok(st.f_flag & keep)
}

/// Sets the file mode creation mask; returns the previous one.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask takes an integer and cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

const OPEN_TREE_CLONE: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// A detached copy of the mount tree at `path` (open_tree with OPEN_TREE_CLONE, recursive): it
/// belongs to no mount namespace until [`attach`] moves it somewhere, so a process in another
/// mount namespace (the sandbox) can mount exactly what was checked here.
pub fn clone_tree(path: &Path) -> Result<std::os::fd::OwnedFd, SysError> {
    use std::os::fd::FromRawFd;
    let c = cstring(path)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE;
    // SAFETY: `c` is a NUL-terminated string for the call; open_tree returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    let fd = check(ret, "open_tree", || path.display().to_string())?;
    // SAFETY: `fd` was just returned by open_tree and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets nosuid and nodev (and read-only when `read_only`) on every mount of the detached tree
/// `tree`, and, with `userns`, makes it idmapped through that user namespace: files owned by host
/// uid N appear owned by the uid `userns` maps N to, and files created through it get the host uid
/// behind their creator's.
pub fn set_tree_attrs(
    tree: &impl std::os::fd::AsRawFd,
    read_only: bool,
    userns: Option<&std::os::fd::OwnedFd>,
) -> Result<(), SysError> {
    use std::os::fd::AsRawFd;
    let mut attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if read_only {
        attr_set |= MOUNT_ATTR_RDONLY;
    }
    if userns.is_some() {
        attr_set |= MOUNT_ATTR_IDMAP;
    }
    let userns_fd = userns.map_or(0, |u| u.as_raw_fd() as u64);
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd,
    };
    let empty = c"";
    // SAFETY: `empty` and `attr` outlive the call; the size passed is the size of `attr`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH as libc::c_uint) | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret, "mount_setattr", || format!("{attr_set:#x}"))?;
    Ok(())
}

/// Attaches the detached mount `tree` at `target` (move_mount).
pub fn attach(tree: &impl std::os::fd::AsRawFd, target: &Path) -> Result<(), SysError> {
    let t = cstring(target)?;
    let empty = c"";
    // SAFETY: both strings outlive the call; `tree` is an open mount fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(ret, "move_mount", || target.display().to_string())?;
    Ok(())
}
