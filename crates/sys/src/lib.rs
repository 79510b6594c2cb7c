//! The only crate of agentbox that holds `unsafe` code and raw syscalls. Every block states why it is
//! sound in a `// SAFETY:` comment. Everything here is a thin, typed wrapper: policy decisions live in
//! `agentbox-runtime`, never here.

/// Raw attempts for the escape probes of `agentbox eval` (filesystem, processes, devices).
pub mod attempt_fs;
/// Raw attempts for the escape probes of `agentbox eval` (kernel interfaces, syscalls).
pub mod attempt_kernel;
pub mod caps;
pub mod creds;
mod error;
pub mod exec;
pub mod fd;
/// Reaping with resource use, sync and reboot for the microVM guest agent.
pub mod guest;
pub mod host_probe;
pub mod landlock;
pub mod mount;
pub mod msg;
pub mod net;
pub mod process;
pub mod pty;
pub mod resolve;
pub mod rlimit;
pub mod seccomp;
pub mod signal;

pub use error::SysError;

/// errno values callers branch on.
pub mod errno {
    pub use libc::{EACCES, EBADF, EBUSY, EINVAL, ENOENT, ENOEXEC, EPERM};
}

/// Converts a -1/errno return into a `SysError` naming the operation.
fn check(
    ret: libc::c_long,
    op: &'static str,
    what: impl FnOnce() -> String,
) -> Result<libc::c_long, SysError> {
    if ret == -1 {
        Err(SysError::last(op, what()))
    } else {
        Ok(ret)
    }
}

fn cstring(path: &std::path::Path) -> Result<std::ffi::CString, SysError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SysError::new("path", path.display().to_string(), libc::EINVAL))
}
