//! Messages between agentbox processes: SOCK_SEQPACKET unix sockets (one send is one message, so no
//! framing), with file descriptors passed alongside (SCM_RIGHTS), and poll(2).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::{check, SysError};

/// Largest number of descriptors one message carries.
pub const MAX_FDS: usize = 4;

/// A connected pair of SOCK_SEQPACKET unix sockets (close-on-exec).
pub fn pair() -> Result<(OwnedFd, OwnedFd), SysError> {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two fds into `fds`, an array of two i32s.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    check(ret as libc::c_long, "socketpair", String::new)?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn unix_address(path: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t), SysError> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(SysError::new(
            "socket path",
            path.display().to_string(),
            libc::ENAMETOOLONG,
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn seqpacket_socket() -> Result<OwnedFd, SysError> {
    // SAFETY: socket takes integers only.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    check(fd as libc::c_long, "socket", || "AF_UNIX SEQPACKET".into())?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A listening SOCK_SEQPACKET socket bound at `path`.
pub fn listen(path: &Path) -> Result<OwnedFd, SysError> {
    let fd = seqpacket_socket()?;
    let (addr, len) = unix_address(path)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes for the call.
    let ret = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    };
    check(ret as libc::c_long, "bind", || path.display().to_string())?;
    // SAFETY: listen takes integers only.
    let ret = unsafe { libc::listen(fd.as_raw_fd(), 64) };
    check(ret as libc::c_long, "listen", || path.display().to_string())?;
    Ok(fd)
}

/// Connects to the SOCK_SEQPACKET socket at `path`.
pub fn connect(path: &Path) -> Result<OwnedFd, SysError> {
    let fd = seqpacket_socket()?;
    let (addr, len) = unix_address(path)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes for the call.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    };
    check(ret as libc::c_long, "connect", || {
        path.display().to_string()
    })?;
    Ok(fd)
}

/// Accepts one connection (close-on-exec).
pub fn accept(listener: &OwnedFd) -> Result<OwnedFd, SysError> {
    // SAFETY: null address pointers ask for no peer address.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    check(fd as libc::c_long, "accept", String::new)?;
    // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one message with up to MAX_FDS descriptors.
pub fn send(socket: &OwnedFd, data: &[u8], fds: &[RawFd]) -> Result<(), SysError> {
    if fds.len() > MAX_FDS {
        return Err(SysError::new("sendmsg", "too many fds", libc::EINVAL));
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = [0u64; 8]; // CMSG_SPACE(4 * 4) fits in 64 bytes, 8-byte aligned.
                                 // SAFETY: an all-zero msghdr is valid; the fields set below point at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as u32;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(payload) } as usize;
        // SAFETY: msg_control points at `control`, large enough for one header and `fds`;
        // CMSG_FIRSTHDR/CMSG_DATA stay within it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: `msg` and everything it points at live for the call.
    let ret = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    check(ret as libc::c_long, "sendmsg", String::new)?;
    Ok(())
}

/// Receives one message into `buf`: its length (0 when the peer closed) and the descriptors it
/// carried (close-on-exec).
pub fn recv(socket: &OwnedFd, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), SysError> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; the fields set below point at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` and its buffers live for the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    let n = check(n as libc::c_long, "recvmsg", String::new)? as usize;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` with msg_controllen bytes of well-formed cmsgs; the
    // CMSG_* walkers stay within them, and every SCM_RIGHTS fd is new and owned by us.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count =
                    ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n, fds))
}

/// poll(2) on `fds` (each with POLLIN interest); returns which are readable (or hung up), at most
/// `timeout_ms` later (-1: forever).
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> Result<Vec<bool>, SysError> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `pfds` is a valid array of pollfd of the given length.
        let ret = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if ret == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        check(ret as libc::c_long, "poll", String::new)?;
        return Ok(pfds.iter().map(|p| p.revents != 0).collect());
    }
}

/// Makes `fd` the descriptor number `target` (dup2), clearing close-on-exec on it.
pub fn place(fd: &OwnedFd, target: RawFd) -> Result<(), SysError> {
    if fd.as_raw_fd() == target {
        // SAFETY: fcntl F_SETFD with integer flags.
        let ret = unsafe { libc::fcntl(target, libc::F_SETFD, 0) };
        check(ret as libc::c_long, "fcntl", || target.to_string())?;
        return Ok(());
    }
    // SAFETY: dup2 takes integers only; `target` is replaced atomically.
    let ret = unsafe { libc::dup2(fd.as_raw_fd(), target) };
    check(ret as libc::c_long, "dup2", || target.to_string())?;
    Ok(())
}
