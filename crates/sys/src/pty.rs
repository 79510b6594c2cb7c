//! Pseudo-terminals: opening a pair inside the sandbox's devpts, making one the controlling
//! terminal, raw mode and window size for the client's side.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::{check, cstring, SysError};

/// Opens a new pty pair from the devpts instance behind `ptmx`: (master, slave).
pub fn open_pair(ptmx: &Path) -> Result<(OwnedFd, OwnedFd), SysError> {
    let c = cstring(ptmx)?;
    // SAFETY: `c` is a NUL-terminated path; open returns a new fd or -1.
    let master = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    check(master as libc::c_long, "open", || {
        ptmx.display().to_string()
    })?;
    // SAFETY: `master` was just opened and is owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the pointer, which outlives the call.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) };
    check(ret as libc::c_long, "ioctl", || "TIOCSPTLCK".into())?;
    // SAFETY: TIOCGPTPEER opens the slave of this master and returns its fd.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    check(slave as libc::c_long, "ioctl", || "TIOCGPTPEER".into())?;
    // SAFETY: `slave` was just returned by the kernel and is owned by nobody else.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// Makes fd 0 (a pty slave) the controlling terminal of the calling session leader.
pub fn make_controlling(fd: i32) -> Result<(), SysError> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    check(ret as libc::c_long, "ioctl", || "TIOCSCTTY".into())?;
    Ok(())
}

/// The window size of terminal `fd`: (rows, columns).
pub fn window_size(fd: i32) -> Option<(u16, u16)> {
    // SAFETY: an all-zero winsize is valid; TIOCGWINSZ writes into it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `ws` outlives the call.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (ret == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Sets the window size of terminal `fd`.
pub fn set_window_size(fd: i32, rows: u16, cols: u16) -> Result<(), SysError> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that outlives the call.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    check(ret as libc::c_long, "ioctl", || "TIOCSWINSZ".into())?;
    Ok(())
}

/// Saved terminal attributes, restored on drop.
pub struct RawMode {
    fd: i32,
    saved: libc::termios,
}

/// Puts terminal `fd` in raw mode (no echo, no line editing, no signals from keys: they go to the
/// sandbox's terminal instead).
pub fn raw_mode(fd: i32) -> Result<RawMode, SysError> {
    // SAFETY: an all-zero termios is valid; tcgetattr fills it.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `saved` outlives the call.
    let ret = unsafe { libc::tcgetattr(fd, &mut saved) };
    check(ret as libc::c_long, "tcgetattr", || fd.to_string())?;
    let mut raw = saved;
    // SAFETY: cfmakeraw only edits the struct we own.
    unsafe { libc::cfmakeraw(&mut raw) };
    // SAFETY: `raw` outlives the call.
    let ret = unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) };
    check(ret as libc::c_long, "tcsetattr", || fd.to_string())?;
    Ok(RawMode { fd, saved })
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores attributes read from this terminal; `saved` outlives the call.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}
