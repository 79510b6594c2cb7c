//! The sandbox's child on an engine tier: builds the root file system with the same plan and code
//! as the `ns` and `chroot` tiers, in a private mount namespace, then hands the sandbox to the
//! engine and reports how its command ended.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use agentbox_oci::Sandbox;
use agentbox_policy::{Policy, Tier};
use agentbox_sys::{mount, process, signal};

use super::{container_name, drivers, idmaps_root, maps_slot};
use crate::build::build_root;
use crate::launch::{
    keep_only_own_fds, report_and_exit, wait_for, ChildPurpose, ChildSpec, Failure, FailureKind,
};
use crate::plan::{Source, Step};
use crate::supervise::{ATTACHED, JOIN, MAPPED};

/// Where engines keep their per-sandbox files (bundles, runtime state).
pub const ENGINE_DIR: &str = "/run/agentbox/engines";

/// The child of an engine tier. Never returns: exits with the command's code, after reporting a
/// signal or a failure on the report pipe.
pub fn child(spec: ChildSpec) -> ! {
    keep_only_own_fds(&spec);
    let report = match spec.report.try_clone() {
        Ok(r) => r,
        Err(_) => process::exit_now(125),
    };
    let result = (|| -> Result<i32, Failure> {
        // Should the supervisor die, this process removes the container itself: the signal is
        // blocked (as in the supervisor that forked it) and taken by the engine's wait
        // (`agentbox_oci::wait`), which then kills the container. A supervisor that dies before
        // this closes the pipe `wait_for` reads, which ends this process.
        process::set_parent_death_signal(signal::SIGTERM)
            .map_err(|e| Failure::setup("pdeathsig", e))?;
        wait_for(&spec.go, MAPPED);
        mount::set_umask(0);
        mount::make_private_recursive().map_err(|e| Failure::setup("make mounts private", e))?;
        let base = spec.host_uid - spec.policy.user;
        let owner_offset = if idmaps_root(spec.policy.tier) {
            base
        } else {
            0
        };
        let root = build_root(&spec.plan.steps, &spec.opened, owner_offset)?;
        crate::timing::mark("engine: root built");
        // cgroup v1: join the sandbox's cgroup ourselves (single-threaded, host root), which is
        // fast where the supervisor's write of our pid is not; the supervisor checks we did.
        let join_files = receive_join(&spec.go);
        if !join_files.is_empty() {
            crate::cgroup::join_self(&join_files)
                .map_err(|e| Failure::setup("join the sandbox's cgroup", e))?;
            crate::timing::mark("engine: joined cgroup");
        }
        mount::set_umask(0o022);
        let argv = match &spec.purpose {
            ChildPurpose::Command(exec) => exec
                .argv
                .iter()
                .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
                .collect(),
            ChildPurpose::Serve(_) => pause_argv(&root)?,
        };
        if idmaps_root(spec.policy.tier) {
            // The root directory belongs to the container's root, as on the ns tier (an
            // overlay's root otherwise shows its upper directory's host owner).
            std::os::unix::fs::chown(&root, Some(base), Some(base))
                .map_err(|e| Failure::setup("chown the root", e))?;
        }
        if spec.policy.tier != Tier::Docker {
            read_only_root(&root, spec.policy, &spec.plan.steps)?;
        }
        let mut sandbox = describe(spec.policy, &spec.plan.steps, root, base, argv)?;
        if matches!(spec.purpose, ChildPurpose::Serve(_)) && spec.policy.tier == Tier::Docker {
            // The daemon cannot see the root built here: it binds the pausing binary itself.
            let exe =
                std::env::current_exe().map_err(|e| Failure::setup("find agentbox's binary", e))?;
            sandbox.binds.push(agentbox_oci::Bind {
                source: exe,
                target: PAUSE.into(),
                writable: false,
            });
        }
        std::fs::create_dir_all(&sandbox.state_dir)
            .map_err(|e| Failure::setup(format!("mkdir {}", sandbox.state_dir.display()), e))?;
        crate::timing::mark("engine: described");
        // Nothing above forks: the engine, and every process it makes, starts in the cgroup.
        wait_for(&spec.go, ATTACHED);
        drop(spec.go);
        let one_shot = matches!(spec.purpose, ChildPurpose::Command(_));
        let ended = match spec.purpose {
            ChildPurpose::Command(_) => drivers::run(spec.policy.tier, &sandbox),
            ChildPurpose::Serve(channel) => drivers::serve(spec.policy, &sandbox, channel),
        };
        crate::timing::mark("engine: ended");
        let _ = std::fs::remove_dir_all(&sandbox.state_dir);
        let outcome = ended.map_err(|e| drivers::failure(spec.policy.tier, e))?;
        // runc and crun: the run's clean-up succeeded, so the runtime's state and the
        // container's cgroups are checked gone, and its processes died with their pid namespace's
        // init, which the runtime waited for. The supervisor then skips its own pass (~0.4 ms).
        // Not said for runsc (its sandbox and gofer are only waited for) nor the other engines.
        if one_shot && spec.policy.tier == Tier::Oci && !sandbox.state_dir.exists() {
            report_line(&report, FailureKind::EngineCleaned, String::new());
        }
        match (outcome.code, outcome.signal) {
            (_, Some(signo)) => {
                report_signal(&report, signo);
                Ok(128 + signo)
            }
            (Some(code), None) => Ok(code),
            (None, None) => Err(Failure::setup(
                spec.policy.tier.name(),
                "the engine reported neither an exit code nor a signal",
            )),
        }
    })();
    match result {
        Ok(code) => process::exit_now(code),
        Err(failure) => report_and_exit(&report, &failure),
    }
}

/// The `JOIN` message (`supervise::join_message`): the cgroup files to join through, none when
/// the supervisor attaches this process itself. Exits like `wait_for` on anything else.
fn receive_join(go: &OwnedFd) -> Vec<PathBuf> {
    match go.try_clone().map(std::fs::File::from).map(read_join) {
        Ok(Some(files)) => files,
        _ => process::exit_now(125),
    }
}

fn read_join(mut go: impl Read) -> Option<Vec<PathBuf>> {
    let mut head = [0u8; 2];
    go.read_exact(&mut head).ok()?;
    if head[0] != JOIN {
        return None;
    }
    let mut files = Vec::with_capacity(usize::from(head[1]));
    for _ in 0..head[1] {
        let mut len = [0u8; 2];
        go.read_exact(&mut len).ok()?;
        let mut path = vec![0u8; usize::from(u16::from_le_bytes(len))];
        go.read_exact(&mut path).ok()?;
        files.push(PathBuf::from(std::ffi::OsStr::from_bytes(&path)));
    }
    Some(files)
}

fn report_signal(report: &OwnedFd, signo: i32) {
    report_line(report, FailureKind::Signal, signo.to_string());
}

/// One line on the report pipe that is not a failure (a signal, the engine's clean-up).
fn report_line(report: &OwnedFd, kind: FailureKind, message: String) {
    use std::io::Write;
    if let Ok(fd) = report.try_clone() {
        let line = Failure { kind, message };
        let _ = std::fs::File::from(fd).write_all(line.encode().as_bytes());
    }
}

/// Mount points the engines mount over (they cannot create them in a read-only root).
const ENGINE_MOUNT_POINTS: &[&str] = &["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run"];

/// Makes the root read-only except where the ns tier's Landlock rules let the command write
/// (`plan::landlock_rules`: the scratch dirs, /root for uid 0, the workspace, writable binds and
/// tmpfs, which are mounts of their own already): the same file system, with the same writable
/// places, on every tier.
fn read_only_root(root: &Path, policy: &Policy, steps: &[Step]) -> Result<(), Failure> {
    for point in ENGINE_MOUNT_POINTS {
        let dir = root.join(point.trim_start_matches('/'));
        if dir.symlink_metadata().is_err() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Failure::setup(format!("mkdir {point}"), e))?;
        }
    }
    let mut writable: Vec<&str> = crate::plan::SCRATCH_DIRS.to_vec();
    if policy.user == 0 {
        writable.push("/root");
    }
    let workspace_is_a_dir = steps
        .iter()
        .any(|s| matches!(s, Step::Dir { path, .. } if path == Path::new("/workspace")));
    if workspace_is_a_dir {
        writable.push("/workspace");
    }
    for path in writable {
        let dir = root.join(path.trim_start_matches('/'));
        let is_dir = dir.symlink_metadata().is_ok_and(|m| m.file_type().is_dir());
        if is_dir {
            mount::bind(&dir, &dir, false)
                .map_err(|e| Failure::setup(format!("bind {path} writable"), e))?;
        }
    }
    mount::remount_bind(root, mount::MS_RDONLY | mount::MS_NOSUID | mount::MS_NODEV)
        .map_err(|e| Failure::setup("make the root read-only", e))
}

/// Where agentbox's own binary is bound in a persistent sandbox's container.
const PAUSE: &str = "/.agentbox/agentbox";

/// A persistent sandbox's container needs a first process that waits: agentbox's own static
/// binary, bound read-only into the root, running its `__pause` subcommand.
fn pause_argv(root: &Path) -> Result<Vec<String>, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::setup("find agentbox's binary", e))?;
    let dir = root.join(".agentbox");
    std::fs::create_dir_all(&dir).map_err(|e| Failure::setup("mkdir /.agentbox", e))?;
    let target = dir.join("agentbox");
    std::fs::write(&target, b"").map_err(|e| Failure::setup("create /.agentbox/agentbox", e))?;
    mount::bind(&exe, &target, false).map_err(|e| Failure::setup("bind agentbox", e))?;
    mount::remount_bind(
        &target,
        mount::MS_RDONLY | mount::MS_NOSUID | mount::MS_NODEV,
    )
    .map_err(|e| Failure::setup("bind agentbox read-only", e))?;
    Ok(vec![PAUSE.into(), "__pause".into()])
}

/// The engine's view of the sandbox. The root is complete (binds, tmpfs, generated /etc, all
/// idmapped like the ns tier's), so engines that run in this mount namespace get no binds to
/// make; the Docker daemon, which cannot see it, gets the binds and the image instead.
fn describe(
    policy: &Policy,
    steps: &[Step],
    root: PathBuf,
    base: u32,
    argv: Vec<String>,
) -> Result<Sandbox, Failure> {
    let name = container_name(base);
    let (binds, tmpfs, symlinks) = if policy.tier == Tier::Docker {
        daemon_mounts(policy, steps)
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    let image = match &policy.image {
        agentbox_policy::Image::Dir(dir) => Some(agentbox_oci::desc::ImageRef {
            dir: dir.clone(),
            digest: String::new(),
        }),
        _ => None,
    };
    let seccomp = crate::seccomp::default_allowlist();
    Ok(Sandbox {
        id: name.clone(),
        rootfs: root,
        image,
        symlinks,
        binds,
        tmpfs,
        argv,
        env: policy.env.clone(),
        cwd: policy.cwd.clone(),
        uid: policy.user,
        uid_range: maps_slot(policy.tier).then_some((base, crate::uidmap::RANGE)),
        hostname: "agentbox".into(),
        limits: agentbox_oci::Limits {
            memory: Some(policy.limits.memory),
            cpus_milli: policy
                .limits
                .cpus
                .map(|c| u32::try_from(c.0).unwrap_or(u32::MAX)),
            pids: Some(policy.limits.pids),
            nofile: Some(policy.limits.nofile),
            disk: Some(policy.limits.disk),
            // The supervisor enforces the wall-clock limit and removes the container.
            timeout: None,
        },
        seccomp,
        state_dir: Path::new(ENGINE_DIR).join(&name),
        oci_runtime: policy.runtime,
    })
}

type DaemonMounts = (
    Vec<agentbox_oci::Bind>,
    Vec<agentbox_oci::Tmpfs>,
    Vec<(PathBuf, PathBuf)>,
);

/// The binds, tmpfs and symlinks of the plan with host paths, for a daemon in the host's mount
/// namespace.
fn daemon_mounts(policy: &Policy, steps: &[Step]) -> DaemonMounts {
    let sources: Vec<PathBuf> = policy
        .mounts
        .iter()
        .filter_map(|m| match &m.kind {
            agentbox_policy::MountKind::Bind { source, .. } => Some(source.clone()),
            agentbox_policy::MountKind::Tmpfs { .. } => None,
        })
        .collect();
    let mut binds = Vec::new();
    let mut tmpfs = Vec::new();
    let mut symlinks = Vec::new();
    for step in steps {
        match step {
            Step::Bind {
                source,
                target,
                writable,
                ..
            } => {
                let source = match source {
                    Source::Host(p) => p.clone(),
                    Source::Opened(i) => match sources.get(*i) {
                        Some(p) => p.clone(),
                        None => continue,
                    },
                };
                // /dev nodes come from the daemon's own /dev.
                if target.starts_with("/dev") {
                    continue;
                }
                binds.push(agentbox_oci::Bind {
                    source,
                    target: target.clone(),
                    writable: *writable,
                });
            }
            Step::Tmpfs { target, size, mode } => tmpfs.push(agentbox_oci::Tmpfs {
                target: target.clone(),
                size: *size,
                mode: *mode,
            }),
            Step::Symlink { path, target } if !path.starts_with("/dev") => {
                symlinks.push((path.clone(), target.clone()));
            }
            _ => {}
        }
    }
    (binds, tmpfs, symlinks)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::read_join;
    use crate::supervise::join_message;

    #[test]
    fn join_message_round_trips() {
        for files in [
            vec![],
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/agentbox-1-2/tasks"),
                PathBuf::from("/sys/fs/cgroup/pids/agentbox-1-2/tasks"),
            ],
        ] {
            let message = join_message(&files).unwrap();
            assert_eq!(read_join(message.as_slice()), Some(files));
        }
    }

    #[test]
    fn anything_but_a_whole_join_message_is_refused() {
        let message = join_message(&[PathBuf::from("/a/tasks")]).unwrap();
        assert_eq!(read_join(&message[..message.len() - 1]), None);
        assert_eq!(read_join(&[crate::supervise::ATTACHED, 0][..]), None);
        assert!(join_message(&vec![PathBuf::from("/a/tasks"); 256]).is_err());
    }
}
