//! Errno values as the names a report shows (`EPERM`), from a `SysError` or an `io::Error`.

use std::io;

use agentbox_sys::attempt_fs::errno_name;
use agentbox_sys::SysError;

/// The name of errno `n`, or `errno N` for one without a name here.
pub(crate) fn name(n: i32) -> String {
    errno_name(n).map_or_else(|| format!("errno {n}"), str::to_string)
}

pub(crate) fn of_sys(e: &SysError) -> Option<String> {
    Some(name(e.errno()))
}

/// The errno of an I/O error; a timeout raised by std itself (no OS error) is `ETIMEDOUT`.
pub(crate) fn of_io(e: &io::Error) -> Option<String> {
    match e.raw_os_error() {
        Some(n) => Some(name(n)),
        None if e.kind() == io::ErrorKind::TimedOut => Some("ETIMEDOUT".into()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_and_unknown() {
        assert_eq!(name(1), "EPERM");
        assert_eq!(name(28), "ENOSPC");
        assert_eq!(name(9999), "errno 9999");
    }

    #[test]
    fn io_errors() {
        assert_eq!(
            of_io(&io::Error::from_raw_os_error(13)).as_deref(),
            Some("EACCES")
        );
        assert_eq!(
            of_io(&io::Error::new(io::ErrorKind::TimedOut, "t")).as_deref(),
            Some("ETIMEDOUT")
        );
        assert_eq!(of_io(&io::Error::other("x")), None);
    }
}
