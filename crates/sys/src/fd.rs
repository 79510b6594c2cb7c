//! File descriptors: close-on-exec pipes, O_PATH handles, closing everything above stderr.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::{check, SysError};

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), SysError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into `fds`, an array of two i32s.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(ret as libc::c_long, "pipe2", String::new)?;
    // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Marks every fd from `first` upward close-on-exec, so the exec'd program inherits only 0..first.
pub fn cloexec_from(first: u32) -> Result<(), SysError> {
    // SAFETY: close_range takes integers only; CLOSE_RANGE_CLOEXEC changes flags, closes nothing.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    check(ret, "close_range", || format!("{first}.. CLOEXEC"))?;
    Ok(())
}

/// Whether fd `fd` of this process refers to a terminal.
pub fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty takes an integer and only queries it.
    unsafe { libc::isatty(fd) == 1 }
}

/// If fd `fd` is a pipe or FIFO, makes `uid`/`gid` its owner and returns true. A process that
/// reopens the pipe through /proc/self/fd (as `/dev/stdout` does) is checked against the pipe's
/// owner and mode, 0600 for an anonymous pipe.
pub fn give_pipe(fd: i32, uid: u32, gid: u32) -> Result<bool, SysError> {
    // SAFETY: an all-zero stat is a valid out-parameter; fstat writes only into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` outlives the call.
    let ret = unsafe { libc::fstat(fd, &mut st) };
    check(ret as libc::c_long, "fstat", || fd.to_string())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Ok(false);
    }
    // SAFETY: fchown takes integers only.
    let ret = unsafe { libc::fchown(fd, uid, gid) };
    check(ret as libc::c_long, "fchown", || format!("fd {fd}"))?;
    Ok(true)
}

/// Closes every descriptor of this process except 0, 1, 2 and `keep`.
pub fn close_all_except(keep: &[i32]) -> Result<(), SysError> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd > 2)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    for fd in keep.into_iter().chain([u32::MAX]) {
        if fd > first {
            // SAFETY: close_range takes integers only; it closes descriptors nobody here uses
            // (the kept ones are outside the range).
            let ret = unsafe { libc::syscall(libc::SYS_close_range, first, fd - 1, 0u32) };
            check(ret, "close_range", || format!("{first}..{}", fd - 1))?;
        }
        first = fd.saturating_add(1);
    }
    Ok(())
}

/// read(2) on a raw descriptor; retries EINTR.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, SysError> {
    loop {
        // SAFETY: `buf` is a writable buffer of its length for the call.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return check(n as libc::c_long, "read", || fd.to_string()).map(|n| n as usize);
    }
}

/// Writes all of `data` to a raw descriptor.
pub fn write_all(fd: i32, mut data: &[u8]) -> Result<(), SysError> {
    while !data.is_empty() {
        // SAFETY: `data` is a readable buffer of its length for the call.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        let n = check(n as libc::c_long, "write", || fd.to_string())? as usize;
        data = &data[n..];
    }
    Ok(())
}
