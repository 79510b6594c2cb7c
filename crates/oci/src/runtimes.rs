//! Which OCI runtime runs a sandbox: the closed set of runtimes, their probes (binary, version, and
//! whether they work on this host), the choice between runc and crun, gVisor's platform choice
//! (cached once per boot) and the mount-namespace fix crun needs on a cgroup-v1 hybrid host.
//! Probes never hang: every command they start has a hard timeout and is killed after it.
//!
//! crun on a hybrid host: crun 1.8 refuses to run when a cgroup2 file system is mounted at
//! `/sys/fs/cgroup/unified` beside the v1 controllers ("cgroups in hybrid mode not supported").
//! When that mount holds no controller it carries nothing crun needs, so inside the private mount
//! namespace that the agentbox runtime gives every engine, [`prepare_mount_namespace`] unmounts it;
//! crun then sees a pure v1 host. The host's own mount table is never touched (it refuses to run in
//! the host's mount namespace).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentbox_policy::OciRuntime;

use crate::process::{capture, kill_mentioning};
use crate::{Availability, EngineError};

/// Where the gVisor platform choice is cached (tmpfs: once per boot).
pub const GVISOR_PLATFORM_CACHE: &str = "/run/agentbox/gvisor-platform";
/// The cgroup2 mount of a hybrid host that crun refuses (agentbox unmounts it only when no
/// controller is enabled in it).
pub const UNIFIED_MOUNT: &str = "/sys/fs/cgroup/unified";
/// How long a `--version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a trivial gVisor sandbox may take to start and end on one platform (kvm hangs on some
/// hosts: it is killed then).
const PLATFORM_TIMEOUT: Duration = Duration::from_secs(5);

/// An OCI runtime.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Runtime {
    Runc,
    Crun,
    /// gVisor, with its platform (`ptrace`, `kvm`, `systrap`): see [`gvisor_platform_probe`].
    Runsc {
        platform: String,
    },
}

impl Runtime {
    /// The runtime's name, also its binary's name.
    pub fn name(&self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
            Runtime::Runsc { .. } => "runsc",
        }
    }

    pub fn from_policy(runtime: OciRuntime) -> Runtime {
        match runtime {
            OciRuntime::Runc => Runtime::Runc,
            OciRuntime::Crun => Runtime::Crun,
        }
    }

    /// `Command` for this runtime with its global flags: state under `root`, its own errors (not
    /// the container's) logged as JSON lines to `log`.
    pub fn command(&self, root: &Path, log: &Path) -> Command {
        let mut cmd = Command::new(program(self.name()));
        cmd.arg("--root").arg(root);
        match self {
            Runtime::Runc => {
                cmd.arg("--log").arg(log).args(["--log-format", "json"]);
            }
            Runtime::Crun => {
                let mut target = std::ffi::OsString::from("--log=file:");
                target.push(log);
                cmd.arg(target)
                    .args(["--log-format=json", "--cgroup-manager=cgroupfs"]);
            }
            Runtime::Runsc { platform } => {
                cmd.arg("--platform")
                    .arg(platform)
                    .args(["--network", "none", "--oci-seccomp"])
                    .arg("--log")
                    .arg(log)
                    .args(["--log-format", "json"]);
            }
        }
        cmd
    }
}

/// Whether `runtime`'s binary is here, its version, and what running it here takes.
pub fn probe(runtime: &Runtime) -> Availability {
    let name = runtime.name();
    let fix = Some(format!("apt-get install {}", package(runtime)));
    let version = capture(
        Command::new(program(name)).arg("--version"),
        VERSION_TIMEOUT,
    );
    let found = match version {
        Ok(out) if out.success() => out
            .stdout
            .lines()
            .next()
            .map(|l| l.trim().to_string())
            .unwrap_or_else(|| name.to_string()),
        Ok(out) if out.status.is_none() => {
            return unavailable(format!("`{name} --version` did not answer in 5 s"), fix)
        }
        Ok(out) => {
            return unavailable(
                format!("`{name} --version` failed: {}", out.stderr.trim()),
                fix,
            )
        }
        Err(e) => return unavailable(format!("{name} not found ({e})"), fix),
    };
    let mut notes = Vec::new();
    if *runtime == Runtime::Crun {
        match hybrid_unified() {
            Unified::Absent => {}
            Unified::Empty => notes.push(format!(
                "cgroup: hybrid host; crun runs once {UNIFIED_MOUNT} is unmounted in the engine's private mount namespace"
            )),
            Unified::WithControllers => {
                return Availability {
                    available: false,
                    found: Some(found),
                    reason: Some(format!(
                        "crun refuses hybrid cgroups and {UNIFIED_MOUNT} holds controllers"
                    )),
                    fix: Some("use runc (oci.runtime = \"runc\")".into()),
                    notes,
                }
            }
        }
    }
    if let Runtime::Runsc { platform } = runtime {
        notes.push(format!("platform {platform}"));
    }
    Availability {
        available: true,
        found: Some(found),
        reason: None,
        fix: None,
        notes,
    }
}

/// Whether `name` is an executable file along PATH or in the sbin directories (looked up once:
/// the spawn that follows uses the same [`program`]).
fn installed(name: &'static str) -> bool {
    program(name).is_absolute()
}

/// Where the runtime `name` is: the first executable file of that name along PATH, then in the
/// sbin directories (runc is in /usr/sbin, which a user's PATH may lack).
fn resolve(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .filter(|d| d.starts_with('/'))
        .map(|dir| Path::new(dir).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    found
}

/// The program to start for the runtime `name`: its path as [`resolve`] finds it, looked up once
/// per process (a run starts the runtime, and may start it again to delete; spawning by bare name
/// would walk PATH with an `execve` per directory each time), else the bare name, whose spawn
/// then fails with the usual "not found".
pub(crate) fn program(name: &'static str) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static FOUND: OnceLock<Mutex<HashMap<&'static str, PathBuf>>> = OnceLock::new();
    let mut found = FOUND
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = found.get(name) {
        return path.clone();
    }
    match resolve(name) {
        Some(path) => found.entry(name).or_insert(path).clone(),
        None => PathBuf::from(name),
    }
}

fn unavailable(reason: String, fix: Option<String>) -> Availability {
    Availability {
        available: false,
        found: None,
        reason: Some(reason),
        fix,
        notes: Vec::new(),
    }
}

fn package(runtime: &Runtime) -> &'static str {
    match runtime {
        Runtime::Runc => "runc",
        Runtime::Crun => "crun",
        Runtime::Runsc { .. } => "runsc (gVisor)",
    }
}

/// The runc-class runtime to use: the policy's, or crun when it works here, else runc.
pub fn pick_oci(preferred: Option<OciRuntime>) -> Result<Runtime, EngineError> {
    let candidates = match preferred {
        Some(p) => vec![Runtime::from_policy(p)],
        None => vec![Runtime::Crun, Runtime::Runc],
    };
    let mut reasons = Vec::new();
    for runtime in candidates {
        // Every run picks: a look along PATH, not `--version` (a process per run). `doctor`
        // runs the full probe.
        if installed(runtime.name())
            && !(runtime == Runtime::Crun && hybrid_unified() == Unified::WithControllers)
        {
            return Ok(runtime);
        }
        let availability = probe(&runtime);
        if availability.available {
            return Ok(runtime);
        }
        reasons.push(format!(
            "{}: {}",
            runtime.name(),
            availability.reason.unwrap_or_default()
        ));
    }
    Err(EngineError::Unavailable {
        engine: "oci",
        reason: reasons.join("; "),
    })
}

/// What is mounted at `/sys/fs/cgroup/unified`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unified {
    Absent,
    Empty,
    WithControllers,
}

fn hybrid_unified() -> Unified {
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(mountinfo) => hybrid_unified_in(&mountinfo),
        Err(_) => Unified::Absent,
    }
}

/// [`hybrid_unified`] with this mount namespace's `/proc/self/mountinfo` already read.
fn hybrid_unified_in(mountinfo: &str) -> Unified {
    let mounted = mountinfo.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let fstype = line
            .split(" - ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next());
        fields.get(4) == Some(&UNIFIED_MOUNT) && fstype == Some("cgroup2")
    });
    if !mounted {
        return Unified::Absent;
    }
    // Controllers may be *available* there (hugetlb when v1 does not mount it) without being in
    // use: only one enabled for children would carry limits that unmounting could lose.
    match std::fs::read_to_string(Path::new(UNIFIED_MOUNT).join("cgroup.subtree_control")) {
        Ok(c) if c.trim().is_empty() => Unified::Empty,
        _ => Unified::WithControllers,
    }
}

/// Whether unmounting [`UNIFIED_MOUNT`] here stays here: this process is not in init's mount
/// namespace (when /proc/1 is readable) and the mount has no shared peer group, so the unmount
/// cannot propagate to the host's namespace.
fn unmount_stays_private(mountinfo: &str) -> bool {
    let read = |p: &str| std::fs::read_link(p).ok();
    if let (Some(mine), Some(init)) = (read("/proc/self/ns/mnt"), read("/proc/1/ns/mnt")) {
        if mine == init {
            return false;
        }
    }
    let shared = mountinfo.lines().any(|line| {
        let (before, _) = line.split_once(" - ").unwrap_or((line, ""));
        let fields: Vec<&str> = before.split(' ').collect();
        fields.get(4) == Some(&UNIFIED_MOUNT)
            && fields.iter().skip(6).any(|f| f.starts_with("shared:"))
    });
    !shared
}

/// Prepares the engine's private mount namespace for `runtime`; returns notes on what it did.
/// For crun on a hybrid host, unmounts the empty cgroup2 at `/sys/fs/cgroup/unified` (only in a
/// private mount namespace: refused in the host's). Nothing to do for runc and runsc.
pub fn prepare_mount_namespace(runtime: &Runtime) -> Result<Vec<String>, EngineError> {
    if *runtime != Runtime::Crun {
        return Ok(Vec::new());
    }
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| EngineError::Io {
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
    match hybrid_unified_in(&mountinfo) {
        Unified::Absent => Ok(Vec::new()),
        Unified::WithControllers => Err(EngineError::Unavailable {
            engine: "crun",
            reason: format!(
                "crun refuses hybrid cgroups and {UNIFIED_MOUNT} holds controllers: use runc"
            ),
        }),
        Unified::Empty => {
            if !unmount_stays_private(&mountinfo) {
                return Err(EngineError::Setup {
                    step: "preparing crun's mount namespace".into(),
                    message: format!(
                        "refusing to unmount {UNIFIED_MOUNT}: this is the host's mount namespace or the mount is shared with it (call this inside the engine's private namespace, propagation private)"
                    ),
                });
            }
            agentbox_sys::attempt_kernel::unmount_detach(Path::new(UNIFIED_MOUNT)).map_err(
                |e| EngineError::Setup {
                    step: format!("unmounting {UNIFIED_MOUNT} for crun"),
                    message: e.to_string(),
                },
            )?;
            // crun then takes the directory for a v1 controller and makes its cgroups there as
            // plain directories: on a tmpfs of this namespace they vanish with it, instead of
            // piling up, hidden, on the host's /sys/fs/cgroup under its cgroup2 mount.
            agentbox_sys::mount::mount(
                Path::new("tmpfs"),
                Path::new(UNIFIED_MOUNT),
                "tmpfs",
                agentbox_sys::mount::MS_NOSUID
                    | agentbox_sys::mount::MS_NODEV
                    | agentbox_sys::mount::MS_NOEXEC,
                "mode=0755,size=1m",
            )
            .map_err(|e| EngineError::Setup {
                step: format!("a private tmpfs on {UNIFIED_MOUNT} for crun"),
                message: e.to_string(),
            })?;
            Ok(vec![format!(
                "cgroup: unmounted the empty cgroup2 at {UNIFIED_MOUNT} in the engine's mount namespace (crun refuses hybrid mode)"
            )])
        }
    }
}

/// The fastest gVisor platform that runs a trivial sandbox here: kvm, then systrap (when this
/// runsc has it), then ptrace; each try is killed after 5 s and everything it left is removed.
/// The answer is cached in [`GVISOR_PLATFORM_CACHE`] (so once per boot).
pub fn gvisor_platform_probe() -> Result<String, EngineError> {
    if let Ok(cached) = std::fs::read_to_string(GVISOR_PLATFORM_CACHE) {
        let cached = cached.trim();
        if !cached.is_empty() {
            return Ok(cached.to_string());
        }
    }
    let (platform, _tried) = probe_platforms()?;
    let cache = Path::new(GVISOR_PLATFORM_CACHE);
    if let Some(dir) = cache.parent() {
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Io {
            path: dir.into(),
            source,
        })?;
    }
    std::fs::write(cache, format!("{platform}\n")).map_err(|source| EngineError::Io {
        path: cache.into(),
        source,
    })?;
    Ok(platform)
}

/// Tries every platform in order without the cache: the first that works, and what each try gave.
pub fn probe_platforms() -> Result<(String, Vec<String>), EngineError> {
    let help = capture(Command::new(program("runsc")).arg("flags"), VERSION_TIMEOUT)?;
    let flags = format!("{}{}", help.stdout, help.stderr);
    let mut platforms = Vec::new();
    if Path::new("/dev/kvm").exists() {
        platforms.push("kvm");
    }
    if flags.contains("systrap") {
        platforms.push("systrap");
    }
    platforms.push("ptrace");
    let mut tried = Vec::new();
    for platform in platforms {
        match try_platform(platform) {
            Ok(()) => {
                tried.push(format!("{platform}: works"));
                return Ok((platform.to_string(), tried));
            }
            Err(why) => tried.push(format!("{platform}: {why}")),
        }
    }
    Err(EngineError::Unavailable {
        engine: "runsc",
        reason: format!("no gVisor platform works here ({})", tried.join("; ")),
    })
}

fn try_platform(platform: &str) -> Result<(), String> {
    let root = unique_dir("gvisor-probe")?;
    let mut cmd = Command::new(program("runsc"));
    cmd.arg("--root")
        .arg(&root)
        .arg(format!("--platform={platform}"))
        .args(["--network=none", "--ignore-cgroups", "do", "--quiet"])
        .args(["--root", "/", "/bin/true"])
        .current_dir("/");
    let result = capture(&mut cmd, PLATFORM_TIMEOUT);
    // Whatever the outcome: no sandbox, gofer or state of this try survives it.
    let needle = root.to_string_lossy().into_owned();
    kill_mentioning(&needle);
    if let Ok(list) = capture(
        Command::new(program("runsc"))
            .arg("--root")
            .arg(&root)
            .args(["list", "-quiet"]),
        VERSION_TIMEOUT,
    ) {
        for id in list.stdout.split_whitespace() {
            let _ = capture(
                Command::new(program("runsc"))
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "-force", id]),
                VERSION_TIMEOUT,
            );
            crate::cgroups::remove_cgroups_named(id);
        }
    }
    kill_mentioning(&needle);
    let _ = std::fs::remove_dir_all(&root);
    match result {
        Ok(out) if out.success() => Ok(()),
        Ok(out) if out.status.is_none() => Err(format!(
            "hangs (killed after {} s)",
            PLATFORM_TIMEOUT.as_secs()
        )),
        Ok(out) => Err(format!(
            "fails: {}",
            out.stderr.lines().last().unwrap_or("no message").trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// A new directory under /run/agentbox/oci for one probe.
fn unique_dir(prefix: &str) -> Result<PathBuf, String> {
    let base = Path::new("/run/agentbox/oci");
    std::fs::create_dir_all(base).map_err(|e| format!("{}: {e}", base.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = base.join(format!("{prefix}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
