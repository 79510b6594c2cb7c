//! Resource limits of the current process.

use crate::{check, SysError};

pub use libc::{RLIMIT_AS, RLIMIT_CORE, RLIMIT_NOFILE, RLIMIT_NPROC};

/// Sets soft and hard limit of `resource` to `value`.
pub fn set(resource: libc::__rlimit_resource_t, value: u64) -> Result<(), SysError> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit that outlives the call.
    let ret = unsafe { libc::setrlimit(resource, &limit) };
    check(ret as libc::c_long, "setrlimit", || {
        format!("{resource} = {value}")
    })?;
    Ok(())
}
