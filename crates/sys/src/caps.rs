//! Dropping every capability: bounding, ambient, effective, permitted and inheritable sets.

use crate::{check, SysError};

/// Drops every capability for good. After this the process and anything it execs hold none.
pub fn drop_all() -> Result<(), SysError> {
    drop_bounding_set()?;
    clear_sets()
}

/// Empties the bounding set (needs CAP_SETPCAP), so no later execve can regain a capability.
pub fn drop_bounding_set() -> Result<(), SysError> {
    // The bounding set: drop until the kernel says the capability number does not exist.
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number; no pointers.
        let ret = unsafe {
            libc::prctl(
                libc::PR_CAPBSET_DROP,
                cap as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if ret == -1 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(SysError::last("prctl", format!("PR_CAPBSET_DROP {cap}")));
        }
    }
    Ok(())
}

/// Empties the ambient, effective, permitted and inheritable sets.
pub fn clear_sets() -> Result<(), SysError> {
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check(ret as libc::c_long, "prctl", || {
        "PR_CAP_AMBIENT_CLEAR_ALL".into()
    })?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    }; // _LINUX_CAPABILITY_VERSION_3
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a version-3 header and two data structs, laid out as the kernel's
    // __user_cap_header_struct and __user_cap_data_struct[2]; both live for the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    check(ret, "capset", || "all zero".into())?;
    Ok(())
}
