//! Resource limits of one sandbox as a cgroup: memory (no swap), number of tasks, CPU bandwidth, on
//! cgroup v1 (one leaf per controller mount) and cgroup v2 (one leaf under the unified root).
//!
//! Deciding what to write is pure (`detect`, `plan`); `Cgroup` applies a plan and owns the leaf
//! directories until `remove`. This module only reads and writes cgroupfs files: it never sends
//! signals (the caller kills the pids it is given) and never touches a cgroup it did not create,
//! except to enable controllers in the v2 root's `cgroup.subtree_control`.

mod detect;
mod enter;
mod join;
mod v1;
mod v2;

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use detect::{detect, detect_host, detect_host_with_mounts};
pub use enter::Entered;
pub use join::join_self;

/// CFS period used for every CPU limit, in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// How long `remove` retries an rmdir that fails with EBUSY, and `kill_all` waits for an empty cgroup.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(1);
const SETTLE_STEP: Duration = Duration::from_millis(5);

/// Where the cgroup controllers agentbox needs are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One mount per controller (or several comounted, in which case paths repeat). `cpu` is absent
    /// when the v1 cpu controller is not mounted; a CPU limit then fails closed in `create`.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
    },
    /// The unified hierarchy; leaves are created directly under `root`.
    V2 { root: PathBuf },
}

/// The limits of one sandbox, already validated by the policy layer (re-checked by `plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Bytes of memory; swap is not allowed on top of it.
    pub memory: u64,
    /// Maximum number of tasks (processes and threads).
    pub pids: u64,
    /// CPU bandwidth in thousandths of a CPU (1500 = 1.5 CPUs); `None` leaves CPU unlimited and
    /// creates no cpu cgroup at all.
    pub cpu_millis: Option<u64>,
}

/// Optional kernel features, probed in the freshly created leaf; they change the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// Swap is accounted per cgroup (v1 `memory.memsw.*`, v2 `memory.swap.max`). Without it, v1 sets
    /// `memory.swappiness` to 0 instead; v2 has no per-cgroup fallback.
    pub swap_accounting: bool,
    /// v2 `memory.oom.group` exists (Linux 4.19+): an OOM kill takes the whole sandbox down.
    pub oom_group: bool,
}

/// One file write of a plan: `value` into `dir/file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub dir: PathBuf,
    pub file: &'static str,
    pub value: String,
}

impl Write {
    fn new(dir: &Path, file: &'static str, value: impl ToString) -> Self {
        Self {
            dir: dir.to_path_buf(),
            file,
            value: value.to_string(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(self.file)
    }
}

/// What the kernel counted while the sandbox ran. Counters that cannot be read are 0 / `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CgroupEvents {
    /// Processes killed by the OOM killer because of the memory limit.
    pub oom_kills: u64,
    /// Forks refused because of the pids limit.
    pub pids_limit_hits: u64,
    /// Highest memory usage in bytes (v1 `memory.max_usage_in_bytes`, v2 `memory.peak` on 5.19+).
    pub memory_peak: Option<u64>,
}

/// Errors of this layer; each names the operation, the path and, for writes, the value.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy: {0}")]
    NoHierarchy(String),
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "cgroup controller `{controller}` is not available under {} (hint: mount it (v1) or enable it in the parent's cgroup.subtree_control (v2))",
        root.display()
    )]
    ControllerUnavailable {
        controller: &'static str,
        root: PathBuf,
    },
    #[error("cgroup v1 controller `{0}` is not mounted (needed for the {0} limit)")]
    NotMounted(&'static str),
    #[error("cgroup limit {field} = {value}: {reason}")]
    InvalidLimit {
        field: &'static str,
        value: u64,
        reason: &'static str,
    },
    #[error(
        "cgroup name {0:?}: must be one non-empty path component without '/' or control characters"
    )]
    InvalidName(String),
    #[error("creating cgroup {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("writing {value:?} to {}: the file does not exist (controller not enabled for this cgroup?)", path.display())]
    ControllerFileMissing { path: PathBuf, value: String },
    #[error("writing {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("processes still in {} 1 s after killing them: {pids:?}", dir.display())]
    KillTimedOut { dir: PathBuf, pids: Vec<i32> },
    #[error("removing cgroup {}: {source}", dir.display())]
    RemoveDir { dir: PathBuf, source: io::Error },
    #[error("{}: not a cgroup v1 `tasks` file (a process joins a leaf by writing 0 to its `tasks`)", .0.display())]
    NotTasksFile(PathBuf),
    #[error("{}: a cgroup v2 leaf cannot be entered for a fork (only v1 moves a thread by itself without the threadgroup lock)", .0.display())]
    NotEnterable(PathBuf),
    #[error("cannot find the calling process's own cgroup under {}: {reason}", root.display())]
    NotLocated { root: PathBuf, reason: String },
    #[error("the calling process is not back in its cgroups: {before:?} before, {now:?} now")]
    NotBack { before: String, now: String },
    #[error("process {pid} did not join cgroup {}: {reason}", dir.display())]
    NotJoined {
        pid: i32,
        dir: PathBuf,
        reason: &'static str,
    },
}

/// The mutating cgroupfs operations, whose side effects are the kernel's: `mkdir` populates the new
/// directory with the controllers' files, `rmdir` removes a directory that still lists them (EBUSY
/// while tasks remain), and a write may be refused or, for `cgroup.subtree_control`, merged. The
/// real implementation is three plain syscalls; the tests swap in a fake kernel over a tempdir
/// (`fakefs_tests.rs`) because a plain directory does none of that. Reads need no seam.
pub(crate) trait CgroupFs: Send + Sync {
    fn mkdir(&self, dir: &Path) -> io::Result<()>;
    fn rmdir(&self, dir: &Path) -> io::Result<()>;
    /// Writes `value` to an existing file in one write(2); never creates the file.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
}

struct KernelFs;

impl CgroupFs for KernelFs {
    fn mkdir(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir(dir)
    }

    fn rmdir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // create(false): on cgroupfs a missing file means a missing controller; creating it would
        // hide that (and is refused anyway).
        let mut file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)?;
        file.write_all(value.as_bytes())
    }
}

/// Checks `limits` against what the kernel accepts, so that no write fails on a range error.
/// Ranges are those of the policy layer (`limits.pids` 1..=4194304, `limits.cpus` 0.01..=1024).
pub fn validate(limits: &CgroupLimits) -> Result<(), CgroupError> {
    let invalid = |field, value, reason| {
        Err(CgroupError::InvalidLimit {
            field,
            value,
            reason,
        })
    };
    if limits.memory == 0 {
        return invalid("memory", limits.memory, "must be at least 1 byte");
    }
    if !(1..=4_194_304).contains(&limits.pids) {
        return invalid("pids", limits.pids, "out of range 1 to 4194304");
    }
    if let Some(millis) = limits.cpu_millis {
        // quota = millis * period / 1000; the kernel refuses a quota under 1 ms.
        if !(10..=1_024_000).contains(&millis) {
            return invalid(
                "cpu_millis",
                millis,
                "out of range 10 (0.01 CPU) to 1024000 (1024 CPUs)",
            );
        }
    }
    Ok(())
}

/// CFS quota in microseconds per `CPU_PERIOD_US` for `millis` thousandths of a CPU.
fn cpu_quota_us(millis: u64) -> u64 {
    millis * CPU_PERIOD_US / 1000
}

/// Pure: the writes that apply `limits` to the leaves named `name`, in the order they must happen.
/// Fails on out-of-range limits and on a CPU limit without a cpu controller (v1; v2 checks the
/// root's `cgroup.controllers` in `Cgroup::create`).
pub fn plan(
    h: &Hierarchy,
    name: &str,
    limits: &CgroupLimits,
    features: &Features,
) -> Result<Vec<Write>, CgroupError> {
    validate(limits)?;
    check_name(name)?;
    match h {
        Hierarchy::V1 { memory, pids, cpu } => {
            let cpu = v1_cpu_root(cpu.as_deref(), limits)?;
            Ok(v1::plan(
                &memory.join(name),
                &pids.join(name),
                cpu.map(|c| c.join(name)).as_deref(),
                limits,
                features,
            ))
        }
        Hierarchy::V2 { root } => Ok(v2::plan(&root.join(name), limits, features)),
    }
}

fn check_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_string()))
    }
}

/// The v1 cpu root to use: none without a CPU limit, an error when one is asked for but unmounted.
fn v1_cpu_root<'a>(
    cpu: Option<&'a Path>,
    limits: &CgroupLimits,
) -> Result<Option<&'a Path>, CgroupError> {
    match (limits.cpu_millis, cpu) {
        (None, _) => Ok(None),
        (Some(_), Some(root)) => Ok(Some(root)),
        (Some(_), None) => Err(CgroupError::NotMounted("cpu")),
    }
}

/// The leaf directories of one sandbox, created by `create` and removed by `remove` (or, best
/// effort and without waiting, on drop).
pub struct Cgroup {
    version: Version,
    /// Created leaves, deduplicated, in creation order.
    dirs: Vec<PathBuf>,
    features: Features,
    fs: Arc<dyn CgroupFs>,
}

/// Where each controller's files of the sandbox live.
#[derive(Debug, Clone)]
enum Version {
    V1 { memory: PathBuf, pids: PathBuf },
    V2 { dir: PathBuf },
}

impl Cgroup {
    /// Creates the leaves named `name` (e.g. `agentbox-<id>`) directly under each controller root
    /// (v1) or under the v2 root, after enabling the missing controllers in the root's
    /// `cgroup.subtree_control`, then applies `plan`. On any failure removes the leaves it created
    /// and returns the error, which names the file and the value. An existing leaf is an error.
    pub fn create(h: &Hierarchy, name: &str, limits: &CgroupLimits) -> Result<Cgroup, CgroupError> {
        Self::create_with(Arc::new(KernelFs), h, name, limits)
    }

    pub(crate) fn create_with(
        fs: Arc<dyn CgroupFs>,
        h: &Hierarchy,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<Cgroup, CgroupError> {
        validate(limits)?;
        check_name(name)?;
        let (version, roots) = match h {
            Hierarchy::V1 { memory, pids, cpu } => {
                let cpu = v1_cpu_root(cpu.as_deref(), limits)?;
                let version = Version::V1 {
                    memory: memory.join(name),
                    pids: pids.join(name),
                };
                let roots: Vec<&Path> = [Some(memory.as_path()), Some(pids.as_path()), cpu]
                    .into_iter()
                    .flatten()
                    .collect();
                (version, roots)
            }
            Hierarchy::V2 { root } => {
                v2::enable_controllers(fs.as_ref(), root, limits)?;
                (
                    Version::V2 {
                        dir: root.join(name),
                    },
                    vec![root.as_path()],
                )
            }
        };
        let mut cgroup = Cgroup {
            version,
            dirs: Vec::new(),
            features: Features::default(),
            fs,
        };
        for root in roots {
            let dir = root.join(name);
            if cgroup.dirs.contains(&dir) {
                continue; // comounted controllers share one leaf
            }
            // On error `cgroup` drops here, which removes the (still empty) leaves made so far.
            cgroup
                .fs
                .mkdir(&dir)
                .map_err(|source| CgroupError::CreateDir {
                    dir: dir.clone(),
                    source,
                })?;
            cgroup.dirs.push(dir);
        }
        cgroup.features = match &cgroup.version {
            Version::V1 { memory, .. } => v1::probe(memory),
            Version::V2 { dir } => v2::probe(dir),
        };
        for write in plan(h, name, limits, &cgroup.features)? {
            cgroup.write(&write.path(), &write.value)?;
        }
        Ok(cgroup)
    }

    fn write(&self, path: &Path, value: &str) -> Result<(), CgroupError> {
        write_file(self.fs.as_ref(), path, value)
    }

    /// Moves `pid` (0: the calling process) with all its threads into every leaf.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            self.write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in any of the leaves, sorted.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = BTreeSet::new();
        for dir in &self.dirs {
            let path = dir.join("cgroup.procs");
            let text =
                fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        Ok(pids.into_iter().collect())
    }

    /// Kills every process of the sandbox and waits (up to 1 s) until the leaves are empty. On v2
    /// with `cgroup.kill` (5.14+) the kernel does it atomically; otherwise `kill` (the caller's
    /// SIGKILL) is called on each listed pid, again and again, so that children forked meanwhile
    /// are caught too (the pids limit bounds how many there can be).
    pub fn kill_all(&self, kill: &mut dyn FnMut(i32)) -> Result<(), CgroupError> {
        if let Version::V2 { dir } = &self.version {
            let path = dir.join("cgroup.kill");
            if path.exists() {
                // A refused write is not fatal: the signal loop below still empties the cgroup or
                // reports who is left.
                let _ = self.write(&path, "1");
            }
        }
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let dir = self.dirs.first().cloned().unwrap_or_default();
                return Err(CgroupError::KillTimedOut { dir, pids });
            }
            pids.into_iter().for_each(&mut *kill);
            std::thread::sleep(SETTLE_STEP);
        }
    }

    /// What the kernel counted so far. Unreadable counters read as 0 / `None`.
    pub fn events(&self) -> CgroupEvents {
        match &self.version {
            Version::V1 { memory, pids } => v1::events(memory, pids),
            Version::V2 { dir } => v2::events(dir),
        }
    }

    /// Removes the leaves. A leaf whose processes were just killed may stay busy for a moment, so
    /// EBUSY is retried for up to 1 s; a leaf already gone is not an error.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        let dirs = std::mem::take(&mut self.dirs);
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut first_error = None;
        for dir in dirs.iter().rev() {
            if let Err(e) = remove_leaf(self.fs.as_ref(), dir, deadline) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The leaf directories, one per distinct controller mount (one on v2).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// What the kernel offered when the leaves were created.
    pub fn features(&self) -> Features {
        self.features
    }
}

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cgroup")
            .field("dirs", &self.dirs)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl Drop for Cgroup {
    /// Best effort, no waiting: leaves that still hold processes stay behind.
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let _ = self.fs.rmdir(dir);
        }
    }
}

fn write_file(fs: &dyn CgroupFs, path: &Path, value: &str) -> Result<(), CgroupError> {
    fs.write(path, value).map_err(|source| {
        let (path, value) = (path.to_path_buf(), value.to_string());
        if source.kind() == io::ErrorKind::NotFound {
            CgroupError::ControllerFileMissing { path, value }
        } else {
            CgroupError::Write {
                path,
                value,
                source,
            }
        }
    })
}

fn remove_leaf(fs: &dyn CgroupFs, dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    loop {
        match fs.rmdir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && Instant::now() < deadline => {
                std::thread::sleep(SETTLE_STEP);
            }
            Err(source) => {
                return Err(CgroupError::RemoveDir {
                    dir: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// The number after `key` in a flat-keyed cgroup file (`oom_kill 3`, `max 0`).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key)).then(|| words.next()?.parse().ok())?
    })
}

/// A single-number cgroup file (`memory.peak`), `None` when missing or not a number.
fn read_number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_keyed(path: &Path, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| keyed_value(&t, key))
        .unwrap_or(0)
}

#[cfg(test)]
mod enter_tests;
#[cfg(test)]
mod fakefs_tests;
#[cfg(test)]
mod host_tests;
#[cfg(test)]
mod join_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod v1_tests;
#[cfg(test)]
mod v2_tests;
