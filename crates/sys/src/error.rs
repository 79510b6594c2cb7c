//! The error of every wrapper: the operation, its object and the errno.

use std::io;

/// A failed syscall: `op` names the operation (`mount`, `pivot_root`), `what` its object.
#[derive(Debug, thiserror::Error)]
#[error("{op} {what}: {source}")]
pub struct SysError {
    pub op: &'static str,
    pub what: String,
    #[source]
    pub source: io::Error,
}

impl SysError {
    pub fn new(op: &'static str, what: impl Into<String>, errno: i32) -> Self {
        Self {
            op,
            what: what.into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// Captures `errno` right after a failed call.
    pub fn last(op: &'static str, what: impl Into<String>) -> Self {
        Self {
            op,
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }

    pub fn errno(&self) -> i32 {
        self.source.raw_os_error().unwrap_or(0)
    }
}
