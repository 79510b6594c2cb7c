//! Replacing the process image.

use std::ffi::CString;

use crate::SysError;

/// Executes `path` with `argv` and `envp`. Returns only on failure.
pub fn execve(path: &CString, argv: &[CString], envp: &[CString]) -> SysError {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: `path`, every argv/envp string and both null-terminated pointer arrays outlive the
    // call; on success execve does not return.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    SysError::last("execve", path.to_string_lossy().into_owned())
}
