//! Credentials: uid, gid, supplementary groups.

use crate::{check, SysError};

/// Sets real, effective and saved gid, then uid, and clears supplementary groups.
pub fn become_user(uid: u32, gid: u32) -> Result<(), SysError> {
    // SAFETY: setgroups with size 0 reads no memory; setresgid/setresuid take plain integers.
    unsafe {
        check(
            libc::setgroups(0, std::ptr::null()) as libc::c_long,
            "setgroups",
            || "[]".into(),
        )?;
        check(
            libc::setresgid(gid, gid, gid) as libc::c_long,
            "setresgid",
            || gid.to_string(),
        )?;
        check(
            libc::setresuid(uid, uid, uid) as libc::c_long,
            "setresuid",
            || uid.to_string(),
        )?;
    }
    Ok(())
}
