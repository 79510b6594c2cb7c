//! Loading a classic-BPF seccomp program into the current thread. Building the program is pure code
//! in `agentbox-runtime`; this module only installs it.

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

use crate::{check, SysError};

/// Installs `program` as a seccomp filter of the calling thread. `no_new_privs` must already be set
/// (or the caller hold CAP_SYS_ADMIN). The filter is inherited across fork and execve, forever.
pub fn install(program: &[SockFilter]) -> Result<(), SysError> {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        // SockFilter is #[repr(C)] with the exact layout of libc::sock_filter.
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    if program.len() > u16::MAX as usize {
        return Err(SysError::new("seccomp", "program too long", libc::EINVAL));
    }
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies the program.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &prog as *const libc::sock_fprog,
        )
    };
    check(ret, "seccomp", || {
        format!("SET_MODE_FILTER ({} instructions)", program.len())
    })?;
    Ok(())
}
