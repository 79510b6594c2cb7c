//! Descriptors inherited from the sandbox runtime: the list taken when the probe program starts
//! (before the runner opens its own pipes), and the `leaked_fds` probe that reports it.

use agentbox_sys::attempt_fs;

use crate::{Context, Outcome, Verdict};

/// The descriptors above stderr open in this process, with their `/proc/self/fd` link targets.
/// The scan of 3..1024 opens nothing itself; higher numbers come from listing /proc/self/fd.
pub(crate) fn open_fds() -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = (3..1024)
        .filter(|&fd| attempt_fs::fd_is_open(fd))
        .map(|fd| (fd, link_target(fd)))
        .collect();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let own = format!("/proc/{}/fd", agentbox_sys::process::getpid());
        for fd in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            let target = link_target(fd);
            // The listing's own descriptor shows as the directory being listed.
            if fd >= 1024 && attempt_fs::fd_is_open(fd) && target != own {
                fds.push((fd, target));
            }
        }
    }
    fds.sort_unstable();
    fds
}

fn link_target(fd: i32) -> String {
    match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(target) => target.display().to_string(),
        Err(e) => format!("? ({})", super::errno::of_io(&e).unwrap_or_default()),
    }
}

/// The descriptors above stderr that the probe program inherited, as listed at its start.
pub(super) fn inherited() -> Vec<(i32, String)> {
    crate::runner::INHERITED_FDS
        .get()
        .cloned()
        .unwrap_or_else(open_fds)
}

pub(super) fn leaked_fds(_context: &Context) -> Outcome {
    let fds = inherited();
    let outcome = Outcome::new(
        "leaked_fds",
        Verdict::Blocked,
        "list the descriptors open at the probe program's start (fcntl F_GETFD on 3..1024, \
         /proc/self/fd)",
    );
    if fds.is_empty() {
        return outcome.observed("only 0, 1 and 2 were inherited");
    }
    Outcome {
        verdict: Verdict::Escaped,
        ..outcome
    }
    .observed(format!(
        "{} descriptor(s) beyond 0-2 inherited from the sandbox runtime",
        fds.len()
    ))
    .evidence(describe(&fds))
}

/// `fd 3 -> /path; fd 4 -> pipe:[123]`.
pub(super) fn describe(fds: &[(i32, String)]) -> String {
    fds.iter()
        .map(|(fd, target)| format!("fd {fd} -> {target}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_descriptors() {
        let fds = vec![(3, "/etc".to_string()), (7, "pipe:[12]".to_string())];
        assert_eq!(describe(&fds), "fd 3 -> /etc; fd 7 -> pipe:[12]");
    }

    #[test]
    fn lists_a_descriptor_opened_here() {
        let file = std::fs::File::open("/").unwrap_or_else(|e| panic!("{e}"));
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        assert!(open_fds().iter().any(|(n, t)| *n == fd && t == "/"));
    }
}
