//! Leaving the root: the double chroot, fchdir through a directory descriptor, host files through
//! /proc/<pid>/root, and writing the planted canary. The attempts that change the root run in a
//! grandchild; the scratch directory they chroot into is removed afterwards.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentbox_sys::{attempt_fs, mount};
use serde::{Deserialize, Serialize};

use super::errno;
use super::fs::{in_child, no_scratch, scratch_path, verified_sentinel_pid, visible_pids};
use super::fs_fds::{describe, inherited};
use crate::{Context, Outcome, Verdict};

/// How many `..` steps to climb: deeper than any sandbox root.
const CLIMB: usize = 64;
/// At most this many bytes of a canary go into a report.
const CANARY_MAX: usize = 1024;

/// Where a climb starts.
enum Start<'a> {
    /// chroot into the directory, keeping the working directory outside it.
    Chroot(&'a Path),
    /// chroot into the directory, then fchdir to the descriptor (open before the chroot).
    ChrootThenFd(&'a Path, i32),
    /// fchdir to the descriptor (inherited), no chroot first.
    Fd(i32),
}

/// What one climb did.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Climb {
    /// The step that failed before the climb could start, and its errno.
    failed: Option<(String, Option<String>)>,
    /// The canary's content, if it was read, and the path it was read as.
    read: Option<(String, String)>,
    /// Why the canary was not read (errno of the last read or chroot).
    errno: Option<String>,
}

fn climb(start: Start, canary: &Path) -> Climb {
    let step = |name: &str, r: Result<(), agentbox_sys::SysError>| {
        r.map_err(|e| (name.to_string(), errno::of_sys(&e)))
    };
    let started = match start {
        Start::Chroot(dir) => step("chroot", mount::chroot(dir)),
        Start::ChrootThenFd(dir, fd) => {
            step("chroot", mount::chroot(dir)).and_then(|()| step("fchdir", attempt_fs::fchdir(fd)))
        }
        Start::Fd(fd) => step("fchdir", attempt_fs::fchdir(fd)),
    };
    if let Err(failed) = started {
        return Climb {
            failed: Some(failed),
            ..Climb::default()
        };
    }
    for _ in 0..CLIMB {
        let _ = mount::chdir(Path::new(".."));
    }
    let mut result = Climb::default();
    // Relative to the top reached: needs no privilege once the working directory is outside.
    let relative = PathBuf::from(".").join(canary.strip_prefix("/").unwrap_or(canary));
    match read_bounded(&relative) {
        Ok(text) => {
            result.read = Some((relative.display().to_string(), text));
            return result;
        }
        Err(e) => result.errno = errno::of_io(&e),
    }
    match mount::chroot(Path::new(".")) {
        Err(e) => result.errno = errno::of_sys(&e),
        Ok(()) => match read_bounded(canary) {
            Ok(text) => {
                result.read = Some((format!("{} after chroot(\".\")", canary.display()), text))
            }
            Err(e) => result.errno = errno::of_io(&e),
        },
    }
    result
}

/// Reads at most `CANARY_MAX` bytes of a file, as text.
pub(super) fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    File::open(path)?
        .take(CANARY_MAX as u64)
        .read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn no_canary(id: &str, attempted: &str) -> Outcome {
    Outcome::new(id, Verdict::NotApplicable, attempted).observed("no canary_read given")
}

pub(super) fn chroot_double(context: &Context) -> Outcome {
    const ID: &str = "chroot_double";
    let attempted = format!(
        "mkdir <scratch>/d; chroot(d); chdir(\"..\") x{CLIMB}; read canary_read, or chroot(\".\") \
         and read it"
    );
    if context.canary_read.as_os_str().is_empty() {
        return no_canary(ID, &attempted);
    }
    let Some(dir) = scratch_path(context, "chroot") else {
        return no_scratch(ID, &attempted);
    };
    if let Err(e) = std::fs::create_dir(&dir) {
        return Outcome::new(ID, Verdict::Inconclusive, attempted)
            .errno(errno::of_io(&e))
            .observed(format!("cannot create {}", dir.display()));
    }
    let result = in_child(Duration::from_secs(5), || {
        climb(Start::Chroot(&dir), &context.canary_read)
    });
    let _ = std::fs::remove_dir(&dir);
    match result {
        Err(why) => Outcome::new(ID, Verdict::Inconclusive, attempted).observed(why),
        Ok(climb) => judge(ID, attempted, &climb),
    }
}

/// The verdict of a single climb.
fn judge(id: &str, attempted: String, climb: &Climb) -> Outcome {
    if let Some((via, text)) = &climb.read {
        return Outcome::new(id, Verdict::Escaped, attempted)
            .observed(format!("read canary_read outside the root as {via}"))
            .evidence(text.clone());
    }
    if let Some((step, e)) = &climb.failed {
        return Outcome::new(id, Verdict::Blocked, attempted)
            .errno(e.clone())
            .observed(format!("{step} failed"));
    }
    Outcome::new(id, Verdict::Blocked, attempted)
        .errno(climb.errno.clone())
        .observed("climbed, but canary_read is not reachable afterwards")
}

pub(super) fn chroot_fchdir(context: &Context) -> Outcome {
    const ID: &str = "chroot_fchdir";
    // Taken before anything below opens a descriptor.
    let fds = inherited();
    let attempted = format!(
        "open(\"/\"); chroot(<scratch>/d); fchdir(fd); chdir(\"..\") x{CLIMB}; read canary_read, \
         or chroot(\".\") and read it; the same through each inherited directory descriptor"
    );
    if context.canary_read.as_os_str().is_empty() {
        return no_canary(ID, &attempted);
    }
    let canary = &context.canary_read;
    let limit = Duration::from_secs(3);
    let mut notes = Vec::new();
    // Through each inherited descriptor first: they need no chroot at all.
    for &(fd, ref target) in fds.iter().take(64) {
        match in_child(limit, || climb(Start::Fd(fd), canary)) {
            Err(why) => notes.push(format!("fd {fd}: {why}")),
            Ok(Climb {
                failed: Some((step, e)),
                ..
            }) => {
                // ENOTDIR: not a directory, nothing to climb from.
                if e.as_deref() != Some("ENOTDIR") {
                    notes.push(format!(
                        "fd {fd} ({target}): {step} {}",
                        e.unwrap_or_default()
                    ));
                }
            }
            Ok(c) => {
                if let Some((via, text)) = c.read {
                    return Outcome::new(ID, Verdict::Escaped, attempted)
                        .observed(format!(
                            "read canary_read as {via} from inherited fd {fd} ({target})"
                        ))
                        .evidence(text);
                }
                notes.push(format!(
                    "fd {fd} ({target}): {}",
                    c.errno.unwrap_or_default()
                ));
            }
        }
    }
    let root = match File::open("/") {
        Ok(f) => f,
        Err(e) => {
            return Outcome::new(ID, Verdict::Inconclusive, attempted)
                .errno(errno::of_io(&e))
                .observed("cannot open /");
        }
    };
    let Some(dir) = scratch_path(context, "fchdir") else {
        return no_scratch(ID, &attempted);
    };
    if let Err(e) = std::fs::create_dir(&dir) {
        return Outcome::new(ID, Verdict::Inconclusive, attempted)
            .errno(errno::of_io(&e))
            .observed(format!("cannot create {}", dir.display()));
    }
    let result = in_child(limit, || {
        climb(Start::ChrootThenFd(&dir, root.as_raw_fd()), canary)
    });
    let _ = std::fs::remove_dir(&dir);
    let outcome = match result {
        Err(why) => Outcome::new(ID, Verdict::Inconclusive, attempted).observed(why),
        Ok(c) => {
            let outcome = judge(ID, attempted, &c);
            let observation = format!(
                "through a descriptor of / opened before the chroot: {}",
                outcome.observation
            );
            outcome.observed(observation)
        }
    };
    if outcome.verdict == Verdict::Escaped || notes.is_empty() {
        let inherited = if fds.is_empty() {
            "no descriptors inherited".to_string()
        } else {
            format!("inherited: {}", describe(&fds))
        };
        let observation = format!("{}; {inherited}", outcome.observation);
        return outcome.observed(observation);
    }
    let observation = format!(
        "{}; through inherited descriptors: {}",
        outcome.observation,
        notes.join(", ")
    );
    outcome.observed(observation)
}

pub(super) fn host_files(context: &Context) -> Outcome {
    const ID: &str = "host_files";
    let attempted = "read canary_read directly, as /proc/1/root<path>, /proc/self/root<path> and \
                     /proc/<pid>/root<path> for every visible pid";
    if context.canary_read.as_os_str().is_empty() {
        return no_canary(ID, attempted);
    }
    let canary = &context.canary_read;
    let through = |root: &str| under_root(root, canary);
    let mut paths = vec![
        canary.clone(),
        through("/proc/1/root"),
        through("/proc/self/root"),
    ];
    let pids = visible_pids().unwrap_or_default();
    paths.extend(
        pids.iter()
            .filter(|&&p| p != 1)
            .take(4096)
            .map(|p| through(&format!("/proc/{p}/root"))),
    );
    let mut failures: Vec<String> = Vec::new();
    let mut first_errno = None;
    for path in &paths {
        match read_bounded(path) {
            Ok(text) => {
                return Outcome::new(ID, Verdict::Escaped, attempted)
                    .observed(format!("read {}", path.display()))
                    .evidence(text);
            }
            Err(e) => {
                let name = errno::of_io(&e);
                if first_errno.is_none() {
                    first_errno = name.clone();
                }
                if failures.len() < 3 {
                    failures.push(format!("{}: {}", path.display(), name.unwrap_or_default()));
                }
            }
        }
    }
    Outcome::new(ID, Verdict::Blocked, attempted)
        .errno(first_errno)
        .observed(format!(
            "none of {} paths readable ({} pids visible); {}",
            paths.len(),
            pids.len(),
            failures.join(", ")
        ))
}

pub(super) fn canary_write(context: &Context) -> Outcome {
    const ID: &str = "canary_write";
    let attempted = "open(canary_write, O_WRONLY|O_APPEND) and append a line, then unlink it; \
                     directly, as /proc/1/root<path> and as /proc/<sentinel>/root<path>";
    let canary = &context.canary_write;
    if canary.as_os_str().is_empty() {
        return Outcome::new(ID, Verdict::NotApplicable, attempted)
            .observed("no canary_write given");
    }
    // Only routes that name the planted file: the path itself, through pid 1's root, and through
    // the root of the sentinel (a host process) once its command line has been checked.
    let mut paths = vec![canary.clone(), under_root("/proc/1/root", canary)];
    if let Some(pid) = verified_sentinel_pid(context) {
        paths.push(under_root(&format!("/proc/{pid}/root"), canary));
    }
    let mut done = Vec::new();
    let mut failed = Vec::new();
    let mut first_errno = None;
    let mut note = |what: String, e: &std::io::Error| {
        let name = errno::of_io(e);
        if first_errno.is_none() {
            first_errno.clone_from(&name);
        }
        failed.push(format!("{what}: {}", name.unwrap_or_default()));
    };
    for path in &paths {
        match std::fs::OpenOptions::new().append(true).open(path) {
            Ok(mut file) => {
                match file.write_all(b"agentbox-probe-was-here\n") {
                    Ok(()) => done.push(format!("appended a line as {}", path.display())),
                    Err(e) => {
                        done.push(format!("opened {} for writing", path.display()));
                        note(format!("write {}", path.display()), &e);
                    }
                }
                break;
            }
            Err(e) => note(format!("open {}", path.display()), &e),
        }
    }
    for path in &paths {
        match std::fs::remove_file(path) {
            Ok(()) => {
                done.push(format!("unlinked it as {}", path.display()));
                break;
            }
            Err(e) => note(format!("unlink {}", path.display()), &e),
        }
    }
    if done.is_empty() {
        Outcome::new(ID, Verdict::Blocked, attempted)
            .errno(first_errno)
            .observed(failed.join(", "))
    } else {
        Outcome::new(ID, Verdict::Escaped, attempted)
            .observed(done.join(", "))
            .evidence(done.join(", "))
    }
}

/// `<root><path>`: `path` seen through a /proc/<pid>/root link.
fn under_root(root: &str, path: &Path) -> PathBuf {
    Path::new(root).join(path.strip_prefix("/").unwrap_or(path))
}
