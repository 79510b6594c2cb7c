//! Syscalls only the microVM guest agent (PID 1 of the guest) needs: spawning a command without
//! copying the agent's address space, reaping any child with its resource use, flushing disks and
//! rebooting. Thin wrappers; the agent decides when.

use std::ffi::{c_void, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use crate::process::Exit;
use crate::SysError;

/// Resource use of a reaped child (and of the descendants it waited for), from wait4's rusage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildUsage {
    pub max_rss_kb: u64,
    pub user: Duration,
    pub system: Duration,
}

/// Waits until some child has exited and returns its pid **without reaping it** (waitid with
/// WNOWAIT), so the caller can decide who reaps it. `Ok(None)` when there are no children.
pub fn wait_exited_any() -> Result<Option<i32>, SysError> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `info`, which outlives the call.
        let ret = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::__WALL,
            )
        };
        if ret == -1 {
            let err = SysError::last("waitid", "any child");
            match err.errno() {
                libc::EINTR => continue,
                libc::ECHILD => return Ok(None),
                _ => return Err(err),
            }
        }
        // SAFETY: waitid succeeded with WEXITED, so `info` describes a child and si_pid is set.
        let pid = unsafe { info.si_pid() };
        return Ok(Some(pid));
    }
}

/// Reaps `pid` if it has exited (never blocks) and returns how it ended with its resource use.
/// `Ok(None)` when it has not exited or is not (or no longer) our child.
pub fn reap_with_usage(pid: i32) -> Result<Option<(Exit, ChildUsage)>, SysError> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 writes only into `status` and `usage`, both owned by this frame.
        let ret =
            unsafe { libc::wait4(pid, &mut status, libc::WNOHANG | libc::__WALL, &mut usage) };
        if ret == -1 {
            let err = SysError::last("wait4", pid.to_string());
            match err.errno() {
                libc::EINTR => continue,
                libc::ECHILD => return Ok(None),
                _ => return Err(err),
            }
        }
        if ret == 0 {
            return Ok(None);
        }
        let exit = Exit::from_status(status);
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        return Ok(Some((
            exit,
            ChildUsage {
                max_rss_kb: usage.ru_maxrss.max(0) as u64,
                user: time(usage.ru_utime),
                system: time(usage.ru_stime),
            },
        )));
    }
}

/// Flushes every filesystem's dirty data to its device.
pub fn sync_all() {
    // SAFETY: sync has no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// reboot(RB_AUTOBOOT): restarts the machine at once (a microVM started with `reboot=t` and QEMU
/// `-no-reboot` ends). Needs CAP_SYS_BOOT; returns only on failure. Call [`sync_all`] first.
pub fn reboot_now() -> SysError {
    // SAFETY: reboot with RB_AUTOBOOT takes no pointers; on success it does not return.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    SysError::last("reboot", "RB_AUTOBOOT")
}

/// What [`spawn_in_own_group`] starts. `program` is a path (no PATH search); `env` is the whole
/// environment; the three fds become the child's 0, 1 and 2 (they may be close-on-exec here).
pub struct Spawn<'a> {
    pub program: &'a CString,
    /// `argv[0]` first.
    pub argv: &'a [CString],
    pub env: &'a [CString],
    pub cwd: &'a CString,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub stdio: [&'a OwnedFd; 3],
}

/// Everything the child reads, prepared before the clone, and the slot it reports a failure in.
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    env: *const *const libc::c_char,
    cwd: *const libc::c_char,
    uid: Option<u32>,
    gid: Option<u32>,
    drop_groups: bool,
    stdio: [i32; 3],
    /// (step, errno) of the step that failed; untouched on success.
    failed: Option<(&'static str, i32)>,
}

/// Starts `spawn` as a child in a process group of its own (its pid is the group's id), like
/// `posix_spawn`: `clone(CLONE_VM | CLONE_VFORK)`, so the agent's page tables are not copied (a
/// fork costs milliseconds under TCG) and this thread resumes once the child has exec'd. The child
/// resets its signal mask and SIGPIPE, joins its own group, drops supplementary groups and sets
/// gid/uid (when asked, with raw syscalls: glibc's wrappers would broadcast the change to the
/// agent's threads), changes directory, places stdio and execs. A failed step is reported here
/// (the child is reaped before returning, so the caller must keep other reapers off it, e.g. under
/// a lock). Returns the child's pid.
pub fn spawn_in_own_group(spawn: &Spawn<'_>) -> Result<i32, SysError> {
    let ptrs = |strings: &[CString]| -> Vec<*const libc::c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let argv = ptrs(spawn.argv);
    let env = ptrs(spawn.env);
    // SAFETY: getuid has no arguments and cannot fail.
    let root = unsafe { libc::getuid() } == 0;
    let mut args = ChildArgs {
        program: spawn.program.as_ptr(),
        argv: argv.as_ptr(),
        env: env.as_ptr(),
        cwd: spawn.cwd.as_ptr(),
        uid: spawn.uid,
        gid: spawn.gid,
        drop_groups: root && spawn.uid.is_some(),
        stdio: spawn.stdio.map(|fd| fd.as_raw_fd()),
        failed: None,
    };
    if args.stdio.iter().any(|&fd| fd < 3) {
        // dup2 onto 0..2 in order would clobber a source that is itself one of 0..2.
        return Err(SysError::new("spawn", "stdio fds below 3", libc::EINVAL));
    }
    // The child's stack: it only calls syscalls (a few frames), and lives until the child has
    // exec'd or exited, which is before clone returns (CLONE_VFORK).
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the pointer is one past the end of `stack`, which outlives the child's use of it.
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) };
    let top = (top as usize & !15) as *mut c_void;
    // SAFETY: `child` runs on `stack` (its own, 16-byte aligned top) in our address space while
    // this thread is suspended (CLONE_VFORK) until it execs or exits; it reads `args` and the
    // string arrays it points into, all alive in this frame until clone returns, and writes only
    // `args.failed`. It allocates nothing and takes no locks (raw syscalls and libc wrappers that
    // are single syscalls), so the agent's other threads, running meanwhile, cannot deadlock it.
    let pid = unsafe {
        libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut args as *mut ChildArgs).cast(),
        )
    };
    drop(stack);
    if pid == -1 {
        return Err(SysError::last("clone", "CLONE_VM|CLONE_VFORK"));
    }
    if let Some((step, errno)) = args.failed {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`; `pid` is our child that has exited.
        while unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        let what = match step {
            "execve" | "chdir" => String::new(),
            _ => "in the child".to_string(),
        };
        return Err(SysError::new(step, what, errno));
    }
    Ok(pid)
}

/// The child of [`spawn_in_own_group`]: on `arg`'s stack-free data only, then exec.
extern "C" fn child(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` of the suspended parent frame (see spawn_in_own_group), and
    // nothing else touches it until this child execs or exits.
    let args = unsafe { &mut *arg.cast::<ChildArgs>() };
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    macro_rules! step {
        ($name:literal, $ret:expr) => {
            if $ret == -1 {
                args.failed = Some(($name, errno()));
                // SAFETY: _exit ends this child at once, running nothing of the parent's.
                unsafe { libc::_exit(127) };
            }
        };
    }
    // SAFETY: an all-zero sigset is a valid value for sigemptyset to initialise; sigprocmask
    // reads it on this stack.
    let mask = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    step!("sigprocmask", mask);
    // SAFETY: an all-zero sigaction with SIG_DFL is valid and needs no handler; the signal
    // dispositions are this child's own (no CLONE_SIGHAND), so the agent's stay as they are.
    let pipe = unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut())
    };
    step!("sigaction", pipe);
    // SAFETY: setpgid takes integers only.
    step!("setpgid", unsafe { libc::setpgid(0, 0) });
    if args.drop_groups {
        // SAFETY: raw setgroups with an empty list reads no memory; raw so that glibc does not
        // signal the agent's threads (whose credentials are not this child's).
        step!("setgroups", unsafe {
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>())
        });
    }
    if let Some(gid) = args.gid {
        // SAFETY: raw setgid takes an integer (raw for the reason above).
        step!("setgid", unsafe { libc::syscall(libc::SYS_setgid, gid) });
    }
    if let Some(uid) = args.uid {
        // SAFETY: raw setuid takes an integer (raw for the reason above).
        step!("setuid", unsafe { libc::syscall(libc::SYS_setuid, uid) });
    }
    // SAFETY: `cwd` is a NUL-terminated string alive in the parent's frame.
    step!("chdir", unsafe { libc::chdir(args.cwd) });
    for (target, fd) in args.stdio.into_iter().enumerate() {
        // SAFETY: dup2 takes integers; every source is >= 3, so no earlier dup2 replaced it, and
        // the copy on 0..2 is not close-on-exec.
        step!("dup2", unsafe { libc::dup2(fd, target as i32) });
    }
    // SAFETY: program, argv and env are NUL-terminated strings and NULL-terminated arrays of
    // them, alive in the parent's frame; execve returns only on failure.
    unsafe { libc::execve(args.program, args.argv, args.env) };
    step!("execve", -1);
    127
}
