//! Starting a sandbox under systemd-nspawn, its timeout and the clean-up of what nspawn leaves
//! behind. It must never leave a process of the sandbox running, and never signal a process it
//! did not identify as the container's (by parentage or by its root directory).
//!
//! Exit statuses: nspawn passes the payload's exit code through. A payload killed by a signal is
//! reported by nspawn 252's stub init as exit code 255 (the signal number is lost), so it shows as
//! `code: Some(255)`. Errors nspawn would only print (missing command, unknown user) are found
//! before the start by looking at the sandbox's file system ([`crate::view`]).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentbox_oci::wait::{ChildWait, Disposition, Waited};
use agentbox_oci::{EngineError, Outcome, Sandbox};

use crate::command::{args, Launch};
use crate::view::{Lookup, View};
use crate::{BINARY, ENGINE};

/// How long nspawn may take to exit once its container's init was killed.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// The `env` binary used to give the payload exactly the sandbox's environment.
const ENV_BINARY: &str = "/usr/bin/env";

/// Runs the sandbox's command under systemd-nspawn with the caller's stdio and returns how it
/// ended. The container's user namespace is mapped onto `sandbox.uid_range`.
pub fn run(sandbox: &Sandbox) -> Result<Outcome, EngineError> {
    prepare_root(sandbox)?;
    let view = View::new(sandbox);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::Io { path, source }
    };
    if sandbox.uid != 0
        && !view
            .has_passwd_entry(sandbox.uid)
            .map_err(io_err(&sandbox.rootfs))?
    {
        return Err(EngineError::Unenforceable {
            engine: ENGINE,
            field: "user",
            reason: format!(
                "nspawn runs a command as a user of the container's /etc/passwd, which has no uid {}",
                sandbox.uid
            ),
        });
    }
    let command = sandbox.argv.first().map(String::as_str).unwrap_or_default();
    match view
        .find_command(command)
        .map_err(io_err(&sandbox.rootfs))?
    {
        Lookup::Executable(_) => {}
        Lookup::Missing => {
            return Err(EngineError::Command {
                not_found: true,
                message: format!("{command}: no such file or directory in the sandbox"),
            })
        }
        Lookup::NotExecutable(_) => {
            return Err(EngineError::Command {
                not_found: false,
                message: format!("{command}: not an executable file"),
            })
        }
    }
    let launch = match view.find_command(ENV_BINARY) {
        Ok(Lookup::Executable(_)) if !command.contains('=') => {
            Launch::ThroughEnv(PathBuf::from(ENV_BINARY))
        }
        _ => Launch::Direct,
    };
    let argv = args(sandbox, &launch)?;
    agentbox_oci::marks::mark("nspawn: command line built");
    let mut child = Command::new(BINARY)
        .args(&argv)
        .env_clear()
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| EngineError::Unavailable {
            engine: ENGINE,
            reason: format!("starting {BINARY}: {e}"),
        })?;
    let cgroups = own_cgroups(child.id());
    let outcome = wait(&mut child, sandbox.limits.timeout);
    agentbox_oci::marks::mark("nspawn: exited");
    for pid in survivors(&sandbox.rootfs) {
        let _ = agentbox_sys::process::kill(pid, libc::SIGKILL);
    }
    remove_subcgroups(&cgroups);
    agentbox_oci::marks::mark("nspawn: cleaned up");
    outcome
}

/// Creates the sandbox's symbolic links and the `/usr` nspawn insists on (it refuses a directory
/// without one as "not an OS tree", before it mounts any bind).
fn prepare_root(sandbox: &Sandbox) -> Result<(), EngineError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EngineError::Io { path, source }
    };
    for (link, target) in &sandbox.symlinks {
        let host = sandbox.rootfs.join(link.strip_prefix("/").unwrap_or(link));
        match std::fs::read_link(&host) {
            Ok(existing) if existing == *target => continue,
            _ => {}
        }
        if let Some(parent) = host.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::os::unix::fs::symlink(target, &host).map_err(io(&host))?;
    }
    let usr = sandbox.rootfs.join("usr");
    if std::fs::symlink_metadata(&usr).is_err() {
        std::fs::create_dir(&usr).map_err(io(&usr))?;
    }
    Ok(())
}

/// Waits for nspawn (a pidfd: its exit is seen at once), passing forwarded signals on to the
/// payload and killing the container at the timeout or when the supervisor dies.
///
/// A forwarded signal goes to the payload itself, PID 2 of the container (`--as-pid2`), where it
/// has its usual effect, as on the `ns` tier. (Sent to nspawn, a SIGTERM would make it kill the
/// whole container and exit 1, printing "Trying to halt container".) A payload that dies of a
/// signal it did not catch is reported by nspawn's stub init as 255: with such a signal
/// forwarded, 255 is reported as that signal.
fn wait(child: &mut Child, timeout: Option<Duration>) -> Result<Outcome, EngineError> {
    let waiter = ChildWait::new(child)?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut fatal_signal = None;
    loop {
        match waiter.next(child, deadline)? {
            Waited::Exited(status) => {
                let mut out = outcome(status, false);
                if let (Some(signo), Some(255)) = (fatal_signal, out.code) {
                    out.code = None;
                    out.signal = Some(signo);
                }
                return Ok(out);
            }
            Waited::Signal(signo) => {
                let Ok(nspawn) = i32::try_from(child.id()) else {
                    continue;
                };
                let Some(payload) = payload_of(nspawn) else {
                    continue;
                };
                if agentbox_oci::wait::disposition(payload, signo) == Some(Disposition::Default) {
                    fatal_signal = Some(signo);
                }
                let _ = agentbox_sys::process::kill(payload, signo);
            }
            Waited::Deadline | Waited::ParentDied => break,
        }
    }
    kill_container(child);
    let status = child.wait().map_err(|e| EngineError::Setup {
        step: format!("waiting for {BINARY}"),
        message: format!("{e}"),
    })?;
    let mut out = outcome(status, true);
    out.code = None;
    out.signal = Some(libc::SIGKILL);
    Ok(out)
}

/// Kills the container's init (PID 1 of its PID namespace: the kernel then kills every process in
/// it), lets nspawn notice and clean up, and kills nspawn if it does not exit in time. nspawn
/// itself is still unreaped here, so its pid cannot have been reused.
fn kill_container(child: &mut Child) {
    let Ok(nspawn) = i32::try_from(child.id()) else {
        let _ = child.kill();
        return;
    };
    for pid in children_of(nspawn) {
        let _ = agentbox_sys::process::kill(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + KILL_GRACE;
    let exited = ChildWait::exit_only(child)
        .and_then(|w| w.next(child, Some(deadline)))
        .is_ok_and(|w| matches!(w, Waited::Exited(_)));
    if !exited {
        let _ = child.kill();
    }
}

fn outcome(status: std::process::ExitStatus, timed_out: bool) -> Outcome {
    Outcome {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        oom: false,
    }
}

/// Processes whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: i32) -> Vec<i32> {
    processes().filter(|&p| parent_of(p) == Some(pid)).collect()
}

/// The payload of the container nspawn runs: PID 2 of its PID namespace, a child of nspawn's stub
/// init, itself nspawn's child.
fn payload_of(nspawn: i32) -> Option<i32> {
    children_of(nspawn)
        .into_iter()
        .flat_map(children_of)
        .find(|&pid| innermost_pid(pid) == Some(2))
}

/// A process's pid in its own PID namespace (the last `NSpid:` field).
fn innermost_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

fn processes() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| p > 1)
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Processes whose root directory is `rootfs` (the same inode, seen through `/proc/PID/root`):
/// what of a sandbox is still running. Empty once [`run`] returned.
pub fn survivors(rootfs: &Path) -> Vec<i32> {
    let Ok(root) = std::fs::metadata(rootfs) else {
        return Vec::new();
    };
    processes()
        .filter(|p| {
            std::fs::metadata(format!("/proc/{p}/root/"))
                .is_ok_and(|m| m.dev() == root.dev() && m.ino() == root.ino())
        })
        .collect()
}

/// The cgroup directories nspawn makes under its own cgroup (`payload`, `supervisor`) in the
/// name=systemd and unified hierarchies, found from nspawn's `/proc/PID/cgroup` at the start.
fn own_cgroups(pid: u32) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return Vec::new();
    };
    let mounts = cgroup_mounts();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let key = if controllers == "name=systemd" {
            "name=systemd"
        } else if controllers.is_empty() {
            ""
        } else {
            continue;
        };
        let Some((_, mount)) = mounts.iter().find(|(k, _)| k == key) else {
            continue;
        };
        let base = path.strip_suffix("/supervisor").unwrap_or(path);
        if base == "/" || base.is_empty() {
            // The root cgroup is shared by every nspawn started there: removing its `payload`
            // could race with another sandbox's start. The caller should give each nspawn its own.
            continue;
        }
        let dir = mount.join(base.trim_start_matches('/'));
        out.push(dir.join("payload"));
        out.push(dir.join("supervisor"));
    }
    out
}

/// Mount points of the name=systemd (`"name=systemd"`) and unified (`""`) cgroup hierarchies.
fn cgroup_mounts() -> Vec<(String, PathBuf)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let options = right.nth(1).unwrap_or_default();
        if fstype == "cgroup2" {
            out.push((String::new(), PathBuf::from(mount_point)));
        } else if fstype == "cgroup" && options.split(',').any(|o| o == "name=systemd") {
            out.push(("name=systemd".to_string(), PathBuf::from(mount_point)));
        }
    }
    out
}

/// Removes the cgroups nspawn left. rmdir fails on a cgroup that still has processes (another
/// sandbox's nspawn sharing the parent), which is left alone.
fn remove_subcgroups(dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}
