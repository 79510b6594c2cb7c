//! Raw attempts of the escape probes on kernel interfaces (mounts, modules, raw sockets, keyrings,
//! bpf, perf, userfaultfd, io_uring, file handles, the terminal, the x32 ABI), each a thin wrapper
//! that reports the errno. Every attempt is built so that it cannot change the host even when it
//! succeeds: a module image of zero bytes, one-entry bpf maps and perf counters that are closed at
//! once, read-only detached mounts. The probe crate decides what to try and what it means.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::{check, cstring, SysError};

/// For `OpenOptions::custom_flags`: opening a terminal never makes it the controlling one.
pub const O_NOCTTY: i32 = libc::O_NOCTTY;

/// Takes ownership of a descriptor a successful syscall just returned.
fn owned(ret: libc::c_long) -> OwnedFd {
    // SAFETY: only called with the non-negative return of a syscall that creates a descriptor;
    // nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

/// umount2(target, MNT_DETACH): detaches the mount at `target` now, even if it is busy.
pub fn unmount_detach(target: &Path) -> Result<(), SysError> {
    let c = cstring(target)?;
    // SAFETY: `c` is a NUL-terminated string owned by this frame; the flag is an integer.
    let ret = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    check(ret as libc::c_long, "umount2", || {
        target.display().to_string()
    })?;
    Ok(())
}

/// Creates a block device node `path` (mode 0600) for device `major:minor`.
pub fn mknod_block(path: &Path, major: u32, minor: u32) -> Result<(), SysError> {
    let c = cstring(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a NUL-terminated string owned by this frame; mode and dev are integers.
    let ret = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, dev) };
    check(ret as libc::c_long, "mknod", || {
        format!("{} b {major} {minor}", path.display())
    })?;
    Ok(())
}

/// statfs(path).f_type: the magic number of the filesystem holding `path` (0xef53 for ext2/3/4).
pub fn filesystem_magic(path: &Path) -> Result<u64, SysError> {
    let c = cstring(path)?;
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated; statfs writes only into `st`, owned by this frame.
    let ret = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    check(ret as libc::c_long, "statfs", || path.display().to_string())?;
    Ok(st.f_type as u64)
}

const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;

/// A detached, read-only, nosuid, nodev, noexec mount of the filesystem `fstype` on block device
/// `source` (fsopen, fsconfig "source", FSCONFIG_CMD_CREATE, fsmount), attached nowhere: dropping
/// the descriptor drops the mount.
///
/// The filesystem context itself is read-write, because the kernel refuses (EBUSY) to hand a
/// read-only context the superblock of a filesystem already mounted read-write, while it reuses
/// that superblock as it is for a read-write context; the mount made from it is read-only. So the
/// caller MUST hold a file on that very superblock (an open directory whose `st_dev` is the
/// device) for the whole call: otherwise the kernel would create a new, read-write superblock and
/// the filesystem driver could write to the device (a journal replay, for one).
pub fn mount_live_superblock_readonly(fstype: &str, source: &Path) -> Result<OwnedFd, SysError> {
    let fst = std::ffi::CString::new(fstype)
        .map_err(|_| SysError::new("fsopen", fstype, libc::EINVAL))?;
    let src = cstring(source)?;
    // SAFETY: `fst` is a NUL-terminated string owned by this frame; fsopen returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_fsopen, fst.as_ptr(), FSOPEN_CLOEXEC) };
    let context = owned(check(ret, "fsopen", || fstype.to_string())?);
    let key = c"source";
    // SAFETY: key and value are NUL-terminated strings owned by this frame; aux is 0 for strings.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            src.as_ptr(),
            0,
        )
    };
    check(ret, "fsconfig", || format!("source={}", source.display()))?;
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux (null pointers, 0).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    check(ret, "fsconfig", || "FSCONFIG_CMD_CREATE".into())?;
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    // SAFETY: fsmount takes the context fd and integer flags; it returns a new fd or -1.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attrs,
        )
    };
    Ok(owned(check(ret, "fsmount", || {
        format!("{fstype} read-only")
    })?))
}

/// init_module with a null, zero-length image and empty parameters: nothing can be loaded. The
/// capability (and seccomp) checks come first, so EPERM means refused there, and ENOEXEC (the image
/// is shorter than an ELF header) means they passed.
pub fn init_module_empty() -> Result<(), SysError> {
    let params = c"";
    // SAFETY: the image pointer is null with length 0, so the kernel reads no image memory; the
    // parameter string is an empty NUL-terminated string owned by this frame.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<libc::c_void>(),
            0usize,
            params.as_ptr(),
        )
    };
    check(ret, "init_module", || "empty image".into())?;
    Ok(())
}

fn socket(domain: i32, ty: i32, protocol: i32, what: &'static str) -> Result<OwnedFd, SysError> {
    // SAFETY: socket takes integers; it returns a new fd or -1.
    let ret = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    Ok(owned(check(ret as libc::c_long, "socket", || what.into())?))
}

/// socket(AF_INET, SOCK_RAW, IPPROTO_ICMP). Nothing is sent.
pub fn raw_icmp_socket() -> Result<OwnedFd, SysError> {
    socket(
        libc::AF_INET,
        libc::SOCK_RAW,
        libc::IPPROTO_ICMP,
        "AF_INET SOCK_RAW IPPROTO_ICMP",
    )
}

/// socket(AF_PACKET, SOCK_RAW, 0): protocol 0 receives nothing until bound. Nothing is sent.
pub fn packet_socket() -> Result<OwnedFd, SysError> {
    socket(libc::AF_PACKET, libc::SOCK_RAW, 0, "AF_PACKET SOCK_RAW 0")
}

/// `struct clone_args` of clone3, size CLONE_ARGS_SIZE_VER0.
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// clone3 with `flags` (CLONE_NEW* from `process::ns`) and exit signal SIGCHLD, fork-style (no new
/// stack). The child exits with status 0 at once; the parent gets its pid and must wait for it.
pub fn clone3_exit_at_once(flags: u64) -> Result<i32, SysError> {
    let args = CloneArgs {
        flags,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
    };
    // SAFETY: `args` is a CLONE_ARGS_SIZE_VER0 struct that outlives the call, and its size is
    // passed with it; no pidfd/tid pointers are requested. Without CLONE_VM and with no stack the
    // child runs on a copy of this address space, and its first action is _exit, which takes no
    // locks, so it is sound even if this process has other threads.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        // SAFETY: this is the new child; _exit has no preconditions and never returns.
        unsafe { libc::_exit(0) }
    }
    Ok(check(ret, "clone3", || format!("flags {flags:#x}"))? as i32)
}

/// The x32 ABI marker bit of x86_64 syscall numbers.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;

/// unshare(flags) through its x32 syscall number (272 | the x32 bit). A seccomp filter that kills
/// x32 calls kills the whole process: call this in a child made for it.
#[cfg(target_arch = "x86_64")]
pub fn unshare_x32(flags: u64) -> Result<(), SysError> {
    // SAFETY: unshare takes only integer flags, whatever the ABI it is entered through.
    let ret = unsafe { libc::syscall(X32_SYSCALL_BIT | 272, flags as libc::c_long) };
    check(ret, "unshare (x32)", || format!("{flags:#x}"))?;
    Ok(())
}

/// getpid through its x32 syscall number (39 | the x32 bit): tells whether the kernel has the x32
/// ABI at all (ENOSYS without CONFIG_X86_X32_ABI). Same caveat as [`unshare_x32`].
#[cfg(target_arch = "x86_64")]
pub fn getpid_x32() -> Result<i32, SysError> {
    // SAFETY: getpid takes no arguments.
    let ret = unsafe { libc::syscall(X32_SYSCALL_BIT | 39) };
    Ok(check(ret, "getpid (x32)", String::new)? as i32)
}

const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEYCTL_UNLINK: libc::c_long = 9;
const KEY_SPEC_SESSION_KEYRING: i32 = -3;

/// keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): the session keyring's serial,
/// without creating one.
pub fn session_keyring_id() -> Result<i32, SysError> {
    // SAFETY: KEYCTL_GET_KEYRING_ID takes two integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING as libc::c_long,
            0 as libc::c_long,
        )
    };
    Ok(check(ret, "keyctl", || "KEYCTL_GET_KEYRING_ID session".into())? as i32)
}

/// add_key("user", `description`, `payload`, KEY_SPEC_SESSION_KEYRING): the new key's serial.
pub fn add_user_key_to_session(description: &str, payload: &[u8]) -> Result<i32, SysError> {
    let desc = std::ffi::CString::new(description)
        .map_err(|_| SysError::new("add_key", description, libc::EINVAL))?;
    let ty = c"user";
    // SAFETY: type and description are NUL-terminated strings owned by this frame; the payload
    // pointer and length describe `payload`, which the kernel only reads.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_SESSION_KEYRING as libc::c_long,
        )
    };
    Ok(check(ret, "add_key", || format!("user {description}"))? as i32)
}

/// keyctl(KEYCTL_UNLINK, key, KEY_SPEC_SESSION_KEYRING): removes `key` from the session keyring.
pub fn unlink_from_session(key: i32) -> Result<(), SysError> {
    // SAFETY: KEYCTL_UNLINK takes two integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_UNLINK,
            key as libc::c_long,
            KEY_SPEC_SESSION_KEYRING as libc::c_long,
        )
    };
    check(ret, "keyctl", || format!("KEYCTL_UNLINK {key}"))?;
    Ok(())
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// bpf(BPF_MAP_CREATE) of an array map with 4-byte keys and values and one entry.
pub fn bpf_array_map_create() -> Result<OwnedFd, SysError> {
    // The leading fields of `union bpf_attr` for BPF_MAP_CREATE (map_type, key_size, value_size,
    // max_entries, map_flags, inner_map_fd, numa_node, map_name[16]), the rest zero.
    let mut attr = [0u32; 18];
    attr[0] = BPF_MAP_TYPE_ARRAY;
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    // SAFETY: the kernel reads `size_of_val(&attr)` bytes of `attr`, which outlives the call;
    // BPF_MAP_CREATE writes nothing back.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    Ok(owned(check(ret, "bpf", || {
        "BPF_MAP_CREATE array 4/4/1".into()
    })?))
}

const UFFD_USER_MODE_ONLY: libc::c_int = 1;

/// userfaultfd(O_CLOEXEC | O_NONBLOCK), with UFFD_USER_MODE_ONLY when `user_mode_only` (faults in
/// kernel mode are then not handled, which is what vm.unprivileged_userfaultfd=0 still allows).
pub fn userfaultfd(user_mode_only: bool) -> Result<OwnedFd, SysError> {
    let mut flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    if user_mode_only {
        flags |= UFFD_USER_MODE_ONLY;
    }
    // SAFETY: userfaultfd takes integer flags; it returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    Ok(owned(check(ret, "userfaultfd", || {
        format!("flags {flags:#x}")
    })?))
}

/// `struct perf_event_attr` up to PERF_ATTR_SIZE_VER7 (128 bytes): the leading fields, then zeros.
#[repr(C)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// The bit fields: disabled (bit 0), exclude_kernel (bit 5), exclude_hv (bit 6), ...
    bits: u64,
    rest: [u64; 10],
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// perf_event_open of a disabled software CPU-clock counter on this process (pid 0, cpu -1),
/// excluding kernel and hypervisor: the least privileged event there is.
pub fn perf_event_open_cpu_clock() -> Result<OwnedFd, SysError> {
    let mut attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_CPU_CLOCK,
        sample_period: 0,
        sample_type: 0,
        read_format: 0,
        bits: 1 | (1 << 5) | (1 << 6),
        rest: [0; 10],
    };
    // SAFETY: `attr` is a zero-padded perf_event_attr of the size stated in it, owned by this
    // frame; the kernel reads it and, on E2BIG, writes only its `size` field.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &mut attr as *mut PerfEventAttr,
            0 as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    Ok(owned(check(ret, "perf_event_open", || {
        "SOFTWARE CPU_CLOCK self".into()
    })?))
}

/// io_uring_setup(1, zeroed params): a ring of one entry. The kernel fills in `struct
/// io_uring_params` (120 bytes); nothing is mapped or submitted.
pub fn io_uring_setup_one() -> Result<OwnedFd, SysError> {
    let mut params = [0u64; 15];
    // SAFETY: `params` is a zeroed buffer of sizeof(struct io_uring_params) = 120 bytes, 8-byte
    // aligned, owned by this frame; the kernel reads it and writes the ring offsets back into it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1 as libc::c_uint,
            params.as_mut_ptr(),
        )
    };
    Ok(owned(check(ret, "io_uring_setup", || "1 entry".into())?))
}

/// `struct file_handle` with room for MAX_HANDLE_SZ bytes of handle.
#[repr(C)]
pub struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 128],
}

impl FileHandle {
    /// The filesystem's handle type and the handle's length in bytes.
    pub fn describe(&self) -> (i32, u32) {
        (self.handle_type, self.handle_bytes)
    }
}

/// name_to_handle_at(AT_FDCWD, path, ..., 0): the file handle of `path` and its mount id.
pub fn name_to_handle(path: &Path) -> Result<(FileHandle, i32), SysError> {
    let c = cstring(path)?;
    let mut handle = FileHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `handle` has room for the 128 bytes its handle_bytes field announces, `mount_id`
    // is an int; both are owned by this frame, and the kernel writes only into them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            &mut handle as *mut FileHandle,
            &mut mount_id as *mut libc::c_int,
            0 as libc::c_int,
        )
    };
    check(ret, "name_to_handle_at", || path.display().to_string())?;
    Ok((handle, mount_id))
}

/// open_by_handle_at(mount_fd, handle, O_RDONLY): opens the inode a handle names, with no path
/// walk. Needs CAP_DAC_READ_SEARCH in the initial user namespace.
pub fn open_by_handle(mount_fd: &impl AsRawFd, handle: &FileHandle) -> Result<OwnedFd, SysError> {
    // SAFETY: `handle` is a file_handle whose handle_bytes fit its buffer, and the kernel only
    // reads it; the other arguments are integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            handle as *const FileHandle,
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    Ok(owned(check(ret, "open_by_handle_at", || {
        format!(
            "type {} ({} bytes)",
            handle.handle_type, handle.handle_bytes
        )
    })?))
}

/// ioctl(fd, TIOCSTI, &byte): pushes `byte` into the input queue of terminal `fd`.
pub fn inject_terminal_byte(fd: i32, byte: u8) -> Result<(), SysError> {
    // SAFETY: TIOCSTI reads one byte through the pointer, which points at `byte` on this frame.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSTI, &byte as *const u8) };
    check(ret as libc::c_long, "ioctl", || format!("TIOCSTI fd {fd}"))?;
    Ok(())
}

/// The capability sets of the calling thread, as bit masks (bit N = capability N).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapabilitySets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub bounding: u64,
    pub ambient: u64,
}

fn prctl_query(
    option: libc::c_int,
    arg2: libc::c_ulong,
    arg3: libc::c_ulong,
    what: &'static str,
) -> Result<i32, SysError> {
    // SAFETY: the options passed here (PR_CAPBSET_READ, PR_CAP_AMBIENT with IS_SET,
    // PR_GET_NO_NEW_PRIVS, PR_GET_SECCOMP) take integers only and return an integer.
    let ret = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    Ok(check(ret as libc::c_long, "prctl", || what.into())? as i32)
}

/// capget (version 3) for the effective, permitted and inheritable sets; prctl for the bounding
/// and ambient sets (for every capability the kernel knows).
pub fn capability_sets() -> Result<CapabilitySets, SysError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes a version-3 header and two data structs, laid out as the kernel's
    // __user_cap_header_struct and __user_cap_data_struct[2]; both are owned by this frame.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    check(ret, "capget", || "self".into())?;
    let join = |low: u32, high: u32| u64::from(low) | (u64::from(high) << 32);
    let mut sets = CapabilitySets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
        bounding: 0,
        ambient: 0,
    };
    for cap in 0..64u32 {
        match prctl_query(libc::PR_CAPBSET_READ, cap.into(), 0, "PR_CAPBSET_READ") {
            Ok(1) => sets.bounding |= 1 << cap,
            Ok(_) => {}
            Err(e) if e.errno() == libc::EINVAL => break,
            Err(e) => return Err(e),
        }
        let ambient = libc::PR_CAP_AMBIENT_IS_SET as libc::c_ulong;
        if prctl_query(
            libc::PR_CAP_AMBIENT,
            ambient,
            cap.into(),
            "PR_CAP_AMBIENT_IS_SET",
        )? == 1
        {
            sets.ambient |= 1 << cap;
        }
    }
    Ok(sets)
}

/// Whether no_new_privs is set on the calling thread.
pub fn no_new_privs() -> Result<bool, SysError> {
    Ok(prctl_query(libc::PR_GET_NO_NEW_PRIVS, 0, 0, "PR_GET_NO_NEW_PRIVS")? == 1)
}

/// The seccomp mode of the calling thread: 0 none, 2 filter (mode 1, strict, could not run this).
pub fn seccomp_mode() -> Result<i32, SysError> {
    prctl_query(libc::PR_GET_SECCOMP, 0, 0, "PR_GET_SECCOMP")
}

/// The effective uid of the calling process (in its user namespace).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}
