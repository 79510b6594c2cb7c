//! Network interface set-up inside a fresh network namespace.

use crate::{check, SysError};

/// Brings the loopback interface up (a new network namespace has it down).
pub fn loopback_up() -> Result<(), SysError> {
    // SAFETY: socket takes integers; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(fd as libc::c_long, "socket", || "AF_INET".into())?;
    // SAFETY: an all-zero ifreq is valid; the name "lo" fits IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read/write the ifreq we own; union access to
    // ifru_flags matches the ioctl's contract.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == -1 {
            Err(SysError::last("ioctl", "SIOCGIFFLAGS lo"))
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) == -1 {
                Err(SysError::last("ioctl", "SIOCSIFFLAGS lo up"))
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: `fd` is the socket opened above and not used after this.
    unsafe { libc::close(fd) };
    result
}
