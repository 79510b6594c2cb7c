//! Read-only questions to the running kernel, for `agentbox doctor`: which Landlock ABI it speaks,
//! whether `pidfd_open` and `mount_setattr` exist. Nothing here changes the host: no ruleset, mount
//! or process outlives a call, and the only fd opened (a pidfd on ourselves) is closed on return.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::{check, SysError};

/// `LANDLOCK_CREATE_RULESET_VERSION`: ask for the ABI version instead of creating a ruleset.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// What the kernel says about Landlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockSupport {
    /// The highest ABI version it supports (1 for Linux 5.13, 6 for 6.12...).
    Abi(u32),
    /// Built in but not enabled at boot (missing from `lsm=`): `EOPNOTSUPP`.
    Disabled,
    /// The kernel was built without Landlock (or is older than 5.13): `ENOSYS`.
    NotBuilt,
}

/// Asks the kernel for its Landlock ABI version (`landlock_create_ruleset(NULL, 0, VERSION)`).
pub fn landlock_support() -> Result<LandlockSupport, SysError> {
    // SAFETY: with the VERSION flag the kernel requires a NULL attr and a zero size and only returns
    // a number: no memory is read or written and no fd is created.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    match check(ret, "landlock_create_ruleset", || "version".to_string()) {
        Ok(v) => u32::try_from(v)
            .map(LandlockSupport::Abi)
            .map_err(|_| SysError::new("landlock_create_ruleset", "version", libc::ERANGE)),
        Err(e) if e.errno() == libc::EOPNOTSUPP => Ok(LandlockSupport::Disabled),
        Err(e) if e.errno() == libc::ENOSYS => Ok(LandlockSupport::NotBuilt),
        Err(e) => Err(e),
    }
}

/// Whether `pidfd_open` works (Linux 5.3+): opens a pidfd on the calling process and closes it
/// again. `Ok(false)` when the syscall does not exist.
pub fn pidfd_open_works() -> Result<bool, SysError> {
    let pid = crate::process::getpid();
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; it reads no memory.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = match check(ret, "pidfd_open", || pid.to_string()) {
        Ok(fd) => fd,
        Err(e) if e.errno() == libc::ENOSYS => return Ok(false),
        Err(e) => return Err(e),
    };
    let fd =
        i32::try_from(fd).map_err(|_| SysError::new("pidfd_open", pid.to_string(), libc::EBADF))?;
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else; dropping closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(true)
}

/// Whether the kernel has `mount_setattr` (Linux 5.12+, the syscall behind idmapped mounts). It is
/// called with an attribute size of zero, which the kernel rejects with `EINVAL` before it resolves
/// any path or fd; only `ENOSYS` means the syscall is missing.
pub fn mount_setattr_exists() -> bool {
    let empty = c"";
    // SAFETY: `empty` outlives the call; the NULL attr is never read because its size is zero, and
    // the kernel checks that size before touching the fd, the path or any mount.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1 as libc::c_int,
            empty.as_ptr(),
            0 as libc::c_uint,
            std::ptr::null::<libc::c_void>(),
            0usize,
        )
    };
    ret != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}
