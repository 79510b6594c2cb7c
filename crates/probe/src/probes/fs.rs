//! Probes of filesystem, processes, devices, leaks, network and resources: the registry, and the
//! helpers they share (a grandchild for attempts that change the root, the scratch names, the
//! process list). The probes themselves live in the `fs_*` modules. Every probe acts only on what
//! the harness planted: the sentinel (after finding its marker), the canaries, the listener, and
//! files it creates under `context.scratch` and deletes again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentbox_sys::process::{self, Fork};
use agentbox_sys::{attempt_fs, fd, msg, signal};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{fs_chroot, fs_devices, fs_fds, fs_leaks, fs_procs, fs_resources, Probe};
use crate::{Context, Outcome, Verdict};

#[rustfmt::skip]
pub(super) fn probes() -> Vec<Probe> {
    let probe = |id, title, category, timeout_s, run| Probe {
        id,
        title,
        category,
        timeout_s,
        run,
    };
    vec![
        probe("chroot_double", "chroot inside a chroot, then climb out with ..", "filesystem", 10, fs_chroot::chroot_double),
        probe("chroot_fchdir", "fchdir to a directory fd outside the chroot, then climb out", "filesystem", 15, fs_chroot::chroot_fchdir),
        probe("host_files", "read a host file directly or through /proc/<pid>/root", "filesystem", 15, fs_chroot::host_files),
        probe("canary_write", "append to or delete a host file", "filesystem", 5, fs_chroot::canary_write),
        probe("host_processes", "see host processes in /proc", "processes", 10, fs_procs::host_processes),
        probe("ptrace_sentinel", "ptrace-attach to a host process", "processes", 5, fs_procs::ptrace_sentinel),
        probe("process_vm_readv", "read a host process's memory", "processes", 5, fs_procs::process_vm_readv),
        // Last of the sentinel probes: the others need it alive.
        probe("kill_sentinel", "SIGKILL a host process", "processes", 5, fs_procs::kill_sentinel),
        probe("mknod", "create and open a device node", "devices", 5, fs_devices::mknod),
        probe("dev_kmsg", "read the kernel log from /dev/kmsg", "devices", 5, fs_devices::dev_kmsg),
        probe("dev_mem", "open physical memory (/dev/mem)", "devices", 5, fs_devices::dev_mem),
        probe("dev_kvm", "open the hypervisor (/dev/kvm)", "devices", 5, fs_devices::dev_kvm),
        probe("leaked_fds", "descriptors inherited from the sandbox runtime", "filesystem", 5, fs_fds::leaked_fds),
        probe("leak_hostname", "the host's hostname is visible", "leaks", 5, fs_leaks::leak_hostname),
        probe("leak_boot_id", "the host's boot id is visible", "leaks", 5, fs_leaks::leak_boot_id),
        probe("leak_mounts", "host paths appear in the mount table", "leaks", 5, fs_leaks::leak_mounts),
        probe("net_loopback", "connect to a listener on the host's loopback", "network", 5, fs_leaks::net_loopback),
        probe("fork_bomb", "create processes without limit", "resources", 60, fs_resources::fork_bomb),
        probe("memory_hog", "allocate memory without limit", "resources", 60, fs_resources::memory_hog),
        probe("disk_fill", "fill the disk", "resources", 60, fs_resources::disk_fill),
        probe("inode_fill", "exhaust the inodes", "resources", 60, fs_resources::inode_fill),
        probe("cpu_hog", "use every CPU", "resources", 20, fs_resources::cpu_hog),
    ]
}

/// A path of this probe process under the scratch directory: `<scratch>/agentbox-probe-<what>-<pid>`;
/// `None` without an absolute scratch directory (a relative one would land wherever we are).
pub(super) fn scratch_path(context: &Context, what: &str) -> Option<PathBuf> {
    context.scratch.is_absolute().then(|| {
        context
            .scratch
            .join(format!("agentbox-probe-{what}-{}", process::getpid()))
    })
}

/// The outcome of a probe that needs a scratch directory and has none.
pub(super) fn no_scratch(id: &str, attempted: &str) -> Outcome {
    Outcome::new(id, Verdict::NotApplicable, attempted)
        .observed("no absolute scratch directory given")
}

/// Runs `attempt` in a forked grandchild (so that a chroot or a crash stays there) and returns its
/// result, or why there is none. The grandchild dies with its parent and is killed after `limit`.
pub(super) fn in_child<T: Serialize + DeserializeOwned>(
    limit: Duration,
    attempt: impl FnOnce() -> T,
) -> Result<T, String> {
    let (read, write) = fd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let pid = match process::fork_single_threaded_program().map_err(|e| format!("fork: {e}"))? {
        Fork::Child => {
            drop(read);
            let _ = process::set_parent_death_signal(signal::SIGKILL);
            let text = serde_json::to_vec(&attempt()).unwrap_or_default();
            let _ = fd::write_all(std::os::fd::AsRawFd::as_raw_fd(&write), &text);
            process::exit_now(0)
        }
        Fork::Parent(pid) => pid,
    };
    drop(write);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&read);
    let deadline = Instant::now() + limit;
    let mut text = Vec::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        match msg::poll_readable(&[raw], ms) {
            Ok(ready) if ready.first() == Some(&true) => {
                let mut buf = [0u8; 4096];
                match fd::read(raw, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => text.extend_from_slice(&buf[..n]),
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if timed_out {
        let _ = attempt_fs::kill_one(pid, signal::SIGKILL);
    }
    let exit = process::wait(pid, false).ok().flatten().map(|(_, e)| e);
    serde_json::from_slice(&text).map_err(|_| {
        if timed_out {
            format!("no result within {} s", limit.as_secs())
        } else {
            format!("the attempt ended without a result ({exit:?})")
        }
    })
}

/// The numeric entries of /proc: the pids this process can see.
pub(super) fn visible_pids() -> std::io::Result<Vec<i32>> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// `/proc/<pid>/cmdline` with its NUL separators; `None` when unreadable.
pub(super) fn cmdline(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

/// The sentinel's pid, if `/proc/<pid>/cmdline` shows that it is the sentinel.
pub(super) fn verified_sentinel_pid(context: &Context) -> Option<i32> {
    let pid = context.sentinel_pid;
    (pid > 1 && is_sentinel_cmdline(&cmdline(pid)?, &context.sentinel_marker)).then_some(pid)
}

/// The key the context JSON carries the marker under. Every process whose arguments hold the
/// context (this probe, its runner, the sandbox tool that launched it) also holds the marker; such
/// command lines are never the sentinel's.
const CONTEXT_KEY: &[u8] = b"sentinel_marker";

/// Whether a command line is the sentinel's: it holds `marker` and is not one of the processes
/// that carry the whole context.
pub(super) fn is_sentinel_cmdline(cmdline: &[u8], marker: &str) -> bool {
    let marker = marker.as_bytes();
    !marker.is_empty() && contains(cmdline, marker) && !contains(cmdline, CONTEXT_KEY)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A command line for a report: NULs as spaces, bounded.
pub(super) fn printable(bytes: &[u8], max: usize) -> String {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c == '\0' { ' ' } else { c })
        .take(max)
        .collect();
    text.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_is_told_from_processes_carrying_the_context() {
        assert!(is_sentinel_cmdline(b"sleep-MARK\x003600\x00", "MARK"));
        assert!(is_sentinel_cmdline(
            b"python3\x00-c\x00x\x00MARK\x00",
            "MARK"
        ));
        let probe =
            br#"/opt/probe\0__probe\0--context\0{"sentinel_pid":5,"sentinel_marker":"MARK"}"#;
        assert!(!is_sentinel_cmdline(probe, "MARK"));
        assert!(!is_sentinel_cmdline(b"sleep\x003600", "MARK"));
        assert!(!is_sentinel_cmdline(b"sleep\x003600", ""));
    }

    #[test]
    fn scratch_paths_only_under_an_absolute_scratch() {
        let mut context = Context::default();
        assert_eq!(scratch_path(&context, "x"), None);
        context.scratch = PathBuf::from("tmp");
        assert_eq!(scratch_path(&context, "x"), None);
        context.scratch = PathBuf::from("/tmp");
        let path = scratch_path(&context, "x").unwrap_or_default();
        assert!(path.to_string_lossy().starts_with("/tmp/agentbox-probe-x-"));
    }

    #[test]
    fn printable_cmdline() {
        assert_eq!(printable(b"sleep\x003600\x00", 100), "sleep 3600");
        assert_eq!(printable(b"abcdef", 3), "abc");
    }

    #[test]
    fn every_id_is_unique() {
        let ids: Vec<&str> = probes().iter().map(|p| p.id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(ids.len(), sorted.len());
        assert_eq!(ids.len(), 22);
    }
}
