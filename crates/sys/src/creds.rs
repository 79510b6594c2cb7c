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

/// Sets the file-system uid and gid (the ids new files get and permission checks use) and returns
/// the previous ones. Changing them away from 0 also clears the file-system capabilities until they
/// are set back.
pub fn set_fs_ids(uid: u32, gid: u32) -> (u32, u32) {
    // SAFETY: setfsgid/setfsuid take integers and return the previous id; they cannot fail in a
    // way that needs handling here (the caller checks the effect through the files it makes).
    unsafe { (libc::setfsuid(uid) as u32, libc::setfsgid(gid) as u32) }
}
