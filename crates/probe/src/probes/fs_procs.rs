//! Reaching the sentinel process: seeing it, killing it, tracing it, reading its memory. Every
//! action on a pid comes after `/proc/<pid>/cmdline` was found to be the sentinel's (it holds the
//! marker and is not a process carrying the whole context); nothing is sent to any other process.

use std::path::Path;
use std::time::Duration;

use agentbox_sys::{attempt_fs, signal};

use super::errno;
use super::fs::{cmdline, is_sentinel_cmdline, printable, visible_pids};
use crate::{Context, Outcome, Verdict};

pub(super) fn host_processes(context: &Context) -> Outcome {
    const ID: &str = "host_processes";
    let attempted = "list /proc and look for the sentinel's marker in every cmdline";
    if context.sentinel_marker.is_empty() {
        return Outcome::new(ID, Verdict::NotApplicable, attempted)
            .observed("no sentinel_marker given");
    }
    let pids = match visible_pids() {
        Ok(p) => p,
        Err(e) => {
            return Outcome::new(ID, Verdict::Blocked, attempted)
                .errno(errno::of_io(&e))
                .observed("/proc cannot be listed");
        }
    };
    let found = pids.iter().find_map(|&pid| {
        let line = cmdline(pid)?;
        is_sentinel_cmdline(&line, &context.sentinel_marker).then_some((pid, line))
    });
    match found {
        Some((pid, line)) => Outcome::new(ID, Verdict::Escaped, attempted)
            .observed(format!(
                "the sentinel is visible as pid {pid}; {} processes visible",
                pids.len()
            ))
            .evidence(format!(
                "pid {pid}: {}; {} processes visible",
                printable(&line, 200),
                pids.len()
            )),
        None => Outcome::new(ID, Verdict::Blocked, attempted).observed(format!(
            "{} processes visible, the sentinel not among them",
            pids.len()
        )),
    }
}

/// The sentinel's pid if `/proc/<pid>/cmdline` shows it is the sentinel; otherwise the outcome
/// that says why nothing may be attempted.
fn verified_sentinel(context: &Context, id: &str, attempted: &str) -> Result<i32, Box<Outcome>> {
    let pid = context.sentinel_pid;
    if pid <= 1 || context.sentinel_marker.is_empty() {
        return Err(Box::new(
            Outcome::new(id, Verdict::NotApplicable, attempted)
                .observed("no sentinel given (sentinel_pid, sentinel_marker)"),
        ));
    }
    if !Path::new("/proc/self").exists() {
        return Err(Box::new(
            Outcome::new(id, Verdict::Inconclusive, attempted)
                .observed("no /proc: cannot verify the sentinel, so nothing was attempted"),
        ));
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(line) if is_sentinel_cmdline(&line, &context.sentinel_marker) => Ok(pid),
        Ok(line) => Err(Box::new(
            Outcome::new(id, Verdict::Blocked, attempted).observed(format!(
                "not visible: pid namespace (pid {pid} here is {:?}, not the sentinel)",
                printable(&line, 60)
            )),
        )),
        Err(e) => Err(Box::new(
            Outcome::new(id, Verdict::Blocked, attempted)
                .errno(errno::of_io(&e))
                .observed("not visible: pid namespace"),
        )),
    }
}

pub(super) fn kill_sentinel(context: &Context) -> Outcome {
    const ID: &str = "kill_sentinel";
    let attempted = "kill(sentinel_pid, SIGKILL) after finding the marker in its cmdline";
    let pid = match verified_sentinel(context, ID, attempted) {
        Ok(pid) => pid,
        Err(outcome) => return *outcome,
    };
    match attempt_fs::kill_one(pid, signal::SIGKILL) {
        Ok(()) => Outcome::new(ID, Verdict::Escaped, attempted)
            .observed(format!("kill({pid}, SIGKILL) returned 0")),
        Err(e) => Outcome::new(ID, Verdict::Blocked, attempted)
            .errno(errno::of_sys(&e))
            .observed(format!(
                "the sentinel is visible as pid {pid}, but kill failed"
            )),
    }
}

pub(super) fn ptrace_sentinel(context: &Context) -> Outcome {
    const ID: &str = "ptrace_sentinel";
    let attempted = "ptrace(PTRACE_SEIZE, sentinel_pid) then PTRACE_DETACH";
    let pid = match verified_sentinel(context, ID, attempted) {
        Ok(pid) => pid,
        Err(outcome) => return *outcome,
    };
    if let Err(e) = attempt_fs::ptrace_seize(pid) {
        return Outcome::new(ID, Verdict::Blocked, attempted)
            .errno(errno::of_sys(&e))
            .observed(format!(
                "the sentinel is visible as pid {pid}, but PTRACE_SEIZE failed"
            ));
    }
    let detach = detach(pid);
    Outcome::new(ID, Verdict::Escaped, attempted)
        .observed(format!("PTRACE_SEIZE of pid {pid} succeeded; {detach}"))
}

/// Detaches from a seized (running) tracee: PTRACE_DETACH needs a ptrace stop, so interrupt it
/// first if needed. Whatever fails here, the tracee is detached when this process exits.
fn detach(pid: i32) -> String {
    if attempt_fs::ptrace_detach(pid).is_ok() {
        return "detached".into();
    }
    let stopped = attempt_fs::ptrace_interrupt(pid)
        .and_then(|()| attempt_fs::wait_tracee(pid, Duration::from_secs(1)));
    match stopped.and_then(|_| attempt_fs::ptrace_detach(pid)) {
        Ok(()) => "interrupted and detached".into(),
        Err(e) => format!("detach failed ({e}); detached when the probe exits"),
    }
}

/// The start address of the first readable mapping in a `/proc/<pid>/maps` text.
fn first_readable(maps: &str) -> Option<(u64, &str)> {
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let perms = fields.next()?;
        if !perms.starts_with('r') {
            return None;
        }
        let start = range.split('-').next()?;
        Some((u64::from_str_radix(start, 16).ok()?, line))
    })
}

pub(super) fn process_vm_readv(context: &Context) -> Outcome {
    const ID: &str = "process_vm_readv";
    let attempted = "process_vm_readv(sentinel_pid, 8 bytes at its first readable mapping)";
    let pid = match verified_sentinel(context, ID, attempted) {
        Ok(pid) => pid,
        Err(outcome) => return *outcome,
    };
    let maps = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(m) => m,
        Err(e) => return unmapped_attempt(pid, attempted, &e),
    };
    let Some((address, line)) = first_readable(&maps) else {
        return Outcome::new(ID, Verdict::Inconclusive, attempted)
            .observed(format!("no readable mapping in /proc/{pid}/maps"));
    };
    match attempt_fs::read_process_memory(pid, address, 8) {
        Ok(bytes) if !bytes.is_empty() => Outcome::new(ID, Verdict::Escaped, attempted)
            .observed(format!(
                "read {} bytes of pid {pid} at {address:#x}",
                bytes.len()
            ))
            .evidence(format!("{}: {}", line.trim(), hex(&bytes))),
        Ok(_) => Outcome::new(ID, Verdict::Inconclusive, attempted)
            .observed(format!("process_vm_readv of pid {pid} returned 0 bytes")),
        Err(e) => Outcome::new(ID, Verdict::Blocked, attempted)
            .errno(errno::of_sys(&e))
            .observed(format!(
                "the sentinel is visible as pid {pid}, but reading failed"
            )),
    }
}

/// When the maps are unreadable, still try the call at an address that is never mapped (below
/// `mmap_min_addr`): EFAULT means the access check passed, EPERM/ESRCH that it did not.
fn unmapped_attempt(pid: i32, attempted: &str, maps_error: &std::io::Error) -> Outcome {
    const ID: &str = "process_vm_readv";
    let maps_errno = errno::of_io(maps_error).unwrap_or_default();
    match attempt_fs::read_process_memory(pid, 0x1000, 8) {
        Err(e)
            if matches!(
                errno::of_sys(&e).as_deref(),
                Some("EPERM" | "ESRCH" | "EACCES")
            ) =>
        {
            Outcome::new(ID, Verdict::Blocked, attempted)
                .errno(errno::of_sys(&e))
                .observed(format!(
                    "/proc/{pid}/maps unreadable ({maps_errno}); process_vm_readv refused"
                ))
        }
        Err(e) => Outcome::new(ID, Verdict::Inconclusive, attempted)
            .errno(errno::of_sys(&e))
            .observed(format!(
                "/proc/{pid}/maps unreadable ({maps_errno}); process_vm_readv at an unmapped \
                 address failed with another error, so access may be permitted"
            )),
        Ok(_) => Outcome::new(ID, Verdict::Escaped, attempted).observed(format!(
            "/proc/{pid}/maps unreadable ({maps_errno}), yet process_vm_readv read memory"
        )),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_first_readable_mapping() {
        let maps = "\
00400000-00401000 ---p 00000000 00:00 0
55d0c2a00000-55d0c2a02000 r--p 00000000 fd:00 1234 /usr/bin/sleep
55d0c2a02000-55d0c2a06000 r-xp 00002000 fd:00 1234 /usr/bin/sleep
";
        let (addr, line) = first_readable(maps).unwrap_or((0, ""));
        assert_eq!(addr, 0x55d0_c2a0_0000);
        assert!(line.ends_with("/usr/bin/sleep"));
        assert_eq!(first_readable("garbage\n"), None);
        assert_eq!(first_readable(""), None);
    }

    #[test]
    fn hex_bytes() {
        assert_eq!(hex(&[0x7f, b'E', b'L', b'F']), "7f454c46");
    }

    #[test]
    fn refuses_without_a_sentinel() {
        let context = Context::default();
        for probe in [kill_sentinel, ptrace_sentinel, process_vm_readv] {
            assert_eq!(probe(&context).verdict, Verdict::NotApplicable);
        }
    }
}
