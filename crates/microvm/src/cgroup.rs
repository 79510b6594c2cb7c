//! The cgroup of one jailed QEMU (Firecracker's jailer pattern): a leaf of its own per controller
//! (cgroup v1) or under the unified root (v2), created and limited before QEMU starts, joined by
//! the jail's wrapper shell before it execs QEMU (so every QEMU thread is born inside), removed
//! when the VM goes.
//!
//! Deciding what to write is pure ([`detect`], [`QemuLimits::for_vm`], [`plan`]); [`VmCgroup`]
//! applies a plan and owns its leaves until [`VmCgroup::remove`] or drop. It only touches
//! cgroups named `agentbox-qemu-<vm>` (and, on v2, enables controllers in the root's
//! `cgroup.subtree_control`); it signals only processes inside its own leaves.
//!
//! A small self-contained sibling of `agentbox-runtime`'s `cgroup` module: the runtime depends
//! on this crate, so this crate cannot use that one.

use std::collections::BTreeSet;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// CFS period of the CPU limit, in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Host memory QEMU itself may use on top of guest RAM, in MiB. Measured with QEMU 7.2 under TCG
/// (`-M microvm`, 256 MiB guest, 1 vCPU, the agent and a busybox image; `tests/cgroup.rs` prints
/// it): QEMU's RSS beyond the guest RAM mapping is ~77 MiB after boot and ~87 MiB after a shell
/// loop plus a 64 MiB disk write, of which TCG's translation cache is 22 then 32 MiB, QEMU's heap
/// and anonymous memory ~10 MiB, and file pages (QEMU, its libraries, the mapped kernel) ~45 MiB,
/// mostly charged to whichever cgroup read them first; what the cgroup itself charged beyond the
/// guest's resident RAM was 41 then 51 MiB. The translation cache, flushed only when full, is
/// capped at 128 MiB (`-accel tcg,tb-size=128`, qemu.rs; QEMU's default here is 1 GiB), so 256
/// MiB covers it with the rest. A QEMU over the limit is OOM-killed (the VM dies), never the host.
pub const QEMU_OVERHEAD_MIB: u64 = 256;

/// Tasks for QEMU's own threads besides the vCPUs: the main loop, RCU, the signal and
/// call_rcu helpers and up to 64 block-layer worker threads (QEMU's thread pool maximum; more
/// are not created, and a refused thread creation would abort QEMU), with room to spare.
pub const QEMU_THREADS: u64 = 96;

/// CPU for QEMU's own threads (device emulation, I/O) on top of one CPU per vCPU, in
/// thousandths of a CPU.
pub const QEMU_CPU_MILLIS: u64 = 500;

/// The leaf name of a VM's cgroup. Not of the runtime's `agentbox-<pid>-<n>` form, so the
/// runtime's garbage collector leaves it alone.
pub fn leaf_name(vm: &str) -> String {
    format!("agentbox-qemu-{vm}")
}

/// Where the controllers are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One mount per controller (paths repeat when comounted). `cpu` is `None` when the v1 cpu
    /// controller is not mounted: `create` then fails (the CPU limit is not optional).
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
    },
    /// The unified hierarchy; the leaf goes directly under `root`.
    V2 { root: PathBuf },
}

/// The limits of one QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuLimits {
    /// Bytes of memory (guest RAM + [`QEMU_OVERHEAD_MIB`]); no swap on top (where accounted).
    pub memory: u64,
    /// Tasks: vCPU threads + [`QEMU_THREADS`].
    pub pids: u64,
    /// CPU bandwidth in thousandths of a CPU: 1000 per vCPU + [`QEMU_CPU_MILLIS`].
    pub cpu_millis: u64,
}

impl QemuLimits {
    /// Pure: the limits for a VM with `memory_mib` of guest RAM and `vcpus` vCPUs.
    pub fn for_vm(memory_mib: u32, vcpus: u32) -> Self {
        let vcpus = u64::from(vcpus.max(1));
        Self {
            memory: (u64::from(memory_mib) + QEMU_OVERHEAD_MIB) << 20,
            pids: vcpus + QEMU_THREADS,
            cpu_millis: vcpus * 1000 + QEMU_CPU_MILLIS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy for QEMU's cgroup: {0}")]
    NoHierarchy(String),
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cgroup name {0:?}: must be one path component without control characters")]
    InvalidName(String),
    #[error(
        "cgroup {} already exists and holds processes {pids:?} (a QEMU of an earlier VM of this name?)",
        dir.display()
    )]
    Busy { dir: PathBuf, pids: Vec<i32> },
    #[error("creating cgroup {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("writing {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("removing cgroup {}: {source}", dir.display())]
    RemoveDir { dir: PathBuf, source: io::Error },
}

/// Reads `/proc/self/mountinfo` (and each cgroup2 candidate's `cgroup.controllers`).
pub fn detect_host() -> Result<Hierarchy, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    detect(&mountinfo, &|root| {
        std::fs::read_to_string(root.join("cgroup.controllers")).ok()
    })
}

/// Pure: the hierarchy described by a mountinfo text. v1 when its `memory` controller is mounted
/// (hybrid hosts keep the controllers there), `pids` then being required too; otherwise the first
/// cgroup2 mount (`/sys/fs/cgroup` first) whose `cgroup.controllers` offers memory, pids and cpu.
pub fn detect(
    mountinfo: &str,
    read_controllers: &dyn Fn(&Path) -> Option<String>,
) -> Result<Hierarchy, CgroupError> {
    // (version, mount point, super options)
    let mounts: Vec<(u8, PathBuf, Vec<&str>)> = mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            let version = match *fields.get(dash + 1)? {
                "cgroup" => 1,
                "cgroup2" => 2,
                _ => return None,
            };
            let options = fields
                .get(dash + 3)
                .map_or(Vec::new(), |o| o.split(',').collect());
            Some((version, PathBuf::from(unescape(fields.get(4)?)), options))
        })
        .collect();
    let v1 = |controller: &str| {
        mounts
            .iter()
            .find(|(v, _, opts)| *v == 1 && opts.contains(&controller))
            .map(|(_, point, _)| point.clone())
    };
    if let Some(memory) = v1("memory") {
        let pids = v1("pids").ok_or_else(|| {
            CgroupError::NoHierarchy(format!(
                "the v1 memory controller is mounted at {} but the v1 pids controller is not",
                memory.display()
            ))
        })?;
        return Ok(Hierarchy::V1 {
            memory,
            pids,
            cpu: v1("cpu"),
        });
    }
    let mut v2: Vec<&PathBuf> = mounts
        .iter()
        .filter(|(v, _, _)| *v == 2)
        .map(|(_, p, _)| p)
        .collect();
    v2.sort_by_key(|p| p.as_path() != Path::new("/sys/fs/cgroup"));
    let mut rejected = Vec::new();
    for root in v2 {
        let offered = read_controllers(root).unwrap_or_default();
        let missing: Vec<&str> = ["memory", "pids", "cpu"]
            .into_iter()
            .filter(|c| !offered.split_whitespace().any(|o| o == *c))
            .collect();
        if missing.is_empty() {
            return Ok(Hierarchy::V2 { root: root.clone() });
        }
        rejected.push(format!(
            "cgroup2 at {} lacks {}",
            root.display(),
            missing.join(", ")
        ));
    }
    if rejected.is_empty() {
        rejected.push("no cgroup2 mount".to_string());
    }
    Err(CgroupError::NoHierarchy(format!(
        "the v1 memory controller is not mounted and {}",
        rejected.join("; ")
    )))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let code = (bytes[i] == b'\\')
            .then(|| field.get(i + 1..i + 4))
            .flatten()
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One file write of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub path: PathBuf,
    pub value: String,
}

fn write(dir: &Path, file: &str, value: impl ToString) -> Write {
    Write {
        path: dir.join(file),
        value: value.to_string(),
    }
}

/// The leaf directories of `name`: one per distinct controller mount (v1), one on v2.
pub fn leaves(h: &Hierarchy, name: &str) -> Result<Vec<PathBuf>, CgroupError> {
    check_name(name)?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    let roots: Vec<&Path> = match h {
        Hierarchy::V1 { memory, pids, cpu } => {
            vec![memory, pids, cpu.as_deref().ok_or_else(no_v1_cpu)?]
        }
        Hierarchy::V2 { root } => vec![root],
    };
    for root in roots {
        let dir = root.join(name);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

/// Pure: the limit writes for the leaves of `name`, in order. `memsw` says whether v1 accounts
/// swap (`memory.memsw.limit_in_bytes` exists; it must follow the memory limit), `swap_max`
/// whether v2 has `memory.swap.max`.
pub fn plan(
    h: &Hierarchy,
    name: &str,
    limits: &QemuLimits,
    swap_accounted: bool,
) -> Result<Vec<Write>, CgroupError> {
    check_name(name)?;
    let quota = limits.cpu_millis * CPU_PERIOD_US / 1000;
    Ok(match h {
        Hierarchy::V1 { memory, pids, cpu } => {
            let (memory, pids) = (memory.join(name), pids.join(name));
            let cpu = cpu.as_deref().ok_or_else(no_v1_cpu)?.join(name);
            let mut w = vec![write(&memory, "memory.limit_in_bytes", limits.memory)];
            if swap_accounted {
                w.push(write(&memory, "memory.memsw.limit_in_bytes", limits.memory));
            } else {
                w.push(write(&memory, "memory.swappiness", 0));
            }
            w.push(write(&pids, "pids.max", limits.pids));
            w.push(write(&cpu, "cpu.cfs_period_us", CPU_PERIOD_US));
            w.push(write(&cpu, "cpu.cfs_quota_us", quota));
            w
        }
        Hierarchy::V2 { root } => {
            let leaf = root.join(name);
            let mut w = vec![write(&leaf, "memory.max", limits.memory)];
            if swap_accounted {
                w.push(write(&leaf, "memory.swap.max", 0));
            }
            w.push(write(&leaf, "pids.max", limits.pids));
            w.push(write(&leaf, "cpu.max", format!("{quota} {CPU_PERIOD_US}")));
            w
        }
    })
}

fn no_v1_cpu() -> CgroupError {
    CgroupError::NoHierarchy(
        "the v1 cpu controller is not mounted (needed for QEMU's CPU limit)".into(),
    )
}

fn check_name(name: &str) -> Result<(), CgroupError> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(CgroupError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// The leaves of one VM's QEMU. Dropping it removes them (killing what is left inside).
#[derive(Debug)]
pub struct VmCgroup {
    dirs: Vec<PathBuf>,
}

/// How long removal waits for killed tasks to leave and for an rmdir refused with EBUSY.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
const SETTLE_STEP: Duration = Duration::from_millis(5);

impl VmCgroup {
    /// Creates the leaves named `name` and applies `limits`. A leftover leaf of the same name (a
    /// crashed host's) is removed first when empty, refused when it holds processes. On any
    /// failure the leaves made so far are removed and the error names the path (and value).
    pub fn create(h: &Hierarchy, name: &str, limits: &QemuLimits) -> Result<VmCgroup, CgroupError> {
        let dirs = leaves(h, name)?;
        if let Hierarchy::V2 { root } = h {
            enable_v2_controllers(root)?;
        }
        let mut cgroup = VmCgroup { dirs: Vec::new() };
        for dir in &dirs {
            if dir.exists() {
                let pids = procs_of(dir)?;
                if !pids.is_empty() {
                    return Err(CgroupError::Busy {
                        dir: dir.clone(),
                        pids,
                    });
                }
                std::fs::remove_dir(dir).map_err(|source| CgroupError::RemoveDir {
                    dir: dir.clone(),
                    source,
                })?;
            }
            // On error `cgroup` drops here and removes the leaves made so far.
            std::fs::create_dir(dir).map_err(|source| CgroupError::CreateDir {
                dir: dir.clone(),
                source,
            })?;
            cgroup.dirs.push(dir.clone());
        }
        let swap_accounted = match h {
            Hierarchy::V1 { memory, .. } => memory
                .join(name)
                .join("memory.memsw.limit_in_bytes")
                .exists(),
            Hierarchy::V2 { root } => root.join(name).join("memory.swap.max").exists(),
        };
        for w in plan(h, name, limits, swap_accounted)? {
            write_file(&w.path, &w.value)?;
        }
        Ok(cgroup)
    }

    /// The leaf directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The `cgroup.procs` file of each leaf: writing `0` to each moves the writer in.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The processes in any leaf (host pids), sorted.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for dir in &self.dirs {
            all.extend(procs_of(dir)?);
        }
        Ok(all.into_iter().collect())
    }

    /// SIGKILLs whatever is still inside (only this VM's QEMU can be), waits for the leaves to
    /// empty and removes them. EBUSY is retried for a while; a leaf already gone is fine.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.remove_leaves()
    }

    fn remove_leaves(&mut self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut first_error = None;
        while let Some(dir) = self.dirs.pop() {
            if let Err(e) = remove_leaf(&dir, deadline) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for VmCgroup {
    fn drop(&mut self) {
        let _ = self.remove_leaves();
    }
}

fn remove_leaf(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    loop {
        if let Ok(pids) = procs_of(dir) {
            for pid in pids {
                let _ = agentbox_sys::process::kill(pid, libc::SIGKILL);
            }
        }
        match std::fs::remove_dir(dir) {
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

fn procs_of(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

/// Writes `+memory +pids +cpu` (those not yet enabled) to the v2 root's `cgroup.subtree_control`.
fn enable_v2_controllers(root: &Path) -> Result<(), CgroupError> {
    let path = root.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&path).map_err(|source| CgroupError::Read {
        path: path.clone(),
        source,
    })?;
    let missing: Vec<String> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(&path, &missing.join(" "))
}

/// One write(2) to an existing cgroupfs file (never created: a missing file is a missing
/// controller).
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const UNIFIED: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    fn v1() -> Hierarchy {
        Hierarchy::V1 {
            memory: "/sys/fs/cgroup/memory".into(),
            pids: "/sys/fs/cgroup/pids".into(),
            cpu: Some("/sys/fs/cgroup/cpu".into()),
        }
    }

    #[test]
    fn detects_hybrid_as_v1_and_unified_as_v2() {
        assert_eq!(detect(HYBRID, &|_| None).unwrap(), v1());
        let all = |_: &Path| Some("cpuset cpu io memory pids\n".to_string());
        assert_eq!(
            detect(UNIFIED, &all).unwrap(),
            Hierarchy::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
        let no_cpu = |_: &Path| Some("memory pids\n".to_string());
        let err = detect(UNIFIED, &no_cpu).unwrap_err().to_string();
        assert!(err.contains("lacks cpu"), "{err}");
        let err = detect("", &all).unwrap_err().to_string();
        assert!(err.contains("no cgroup2 mount"), "{err}");
    }

    #[test]
    fn limits_are_guest_ram_plus_overhead() {
        let l = QemuLimits::for_vm(256, 2);
        assert_eq!(l.memory, (256 + QEMU_OVERHEAD_MIB) << 20);
        assert_eq!(l.pids, 2 + QEMU_THREADS);
        assert_eq!(l.cpu_millis, 2000 + QEMU_CPU_MILLIS);
        assert_eq!(QemuLimits::for_vm(64, 0).pids, 1 + QEMU_THREADS);
    }

    #[test]
    fn v1_plan_writes_each_controller_in_order() {
        let limits = QemuLimits {
            memory: 1 << 30,
            pids: 97,
            cpu_millis: 1500,
        };
        let got: Vec<(String, String)> = plan(&v1(), "agentbox-qemu-vm-1", &limits, false)
            .unwrap()
            .into_iter()
            .map(|w| (w.path.display().to_string(), w.value))
            .collect();
        let want = [
            ("memory", "memory.limit_in_bytes", "1073741824"),
            ("memory", "memory.swappiness", "0"),
            ("pids", "pids.max", "97"),
            ("cpu", "cpu.cfs_period_us", "100000"),
            ("cpu", "cpu.cfs_quota_us", "150000"),
        ]
        .map(|(c, f, v)| {
            (
                format!("/sys/fs/cgroup/{c}/agentbox-qemu-vm-1/{f}"),
                v.to_string(),
            )
        });
        assert_eq!(got, want);
        let with_swap = plan(&v1(), "x", &limits, true).unwrap();
        assert!(with_swap[1].path.ends_with("memory.memsw.limit_in_bytes"));
    }

    #[test]
    fn v2_plan_uses_one_leaf() {
        let h = Hierarchy::V2 {
            root: "/sys/fs/cgroup".into(),
        };
        let limits = QemuLimits::for_vm(128, 1);
        let got: Vec<(String, String)> = plan(&h, "q", &limits, true)
            .unwrap()
            .into_iter()
            .map(|w| (w.path.display().to_string(), w.value))
            .collect();
        assert_eq!(
            got,
            [
                ("/sys/fs/cgroup/q/memory.max", limits.memory.to_string()),
                ("/sys/fs/cgroup/q/memory.swap.max", "0".into()),
                ("/sys/fs/cgroup/q/pids.max", (1 + QEMU_THREADS).to_string()),
                ("/sys/fs/cgroup/q/cpu.max", "150000 100000".into()),
            ]
            .map(|(p, v)| (p.to_string(), v))
        );
        assert_eq!(
            leaves(&h, "q").unwrap(),
            [PathBuf::from("/sys/fs/cgroup/q")]
        );
    }

    #[test]
    fn refuses_bad_names_and_a_missing_v1_cpu_controller() {
        for bad in ["", ".", "..", "a/b", "a\nb"] {
            assert!(matches!(
                leaves(&v1(), bad),
                Err(CgroupError::InvalidName(_))
            ));
        }
        let h = Hierarchy::V1 {
            memory: "/m".into(),
            pids: "/m".into(),
            cpu: None,
        };
        let err = leaves(&h, "x").unwrap_err().to_string();
        assert!(err.contains("cpu controller is not mounted"), "{err}");
        assert!(plan(&h, "x", &QemuLimits::for_vm(64, 1), false).is_err());
        // Comounted controllers share a leaf.
        let h = Hierarchy::V1 {
            memory: "/m".into(),
            pids: "/m".into(),
            cpu: Some("/c".into()),
        };
        assert_eq!(
            leaves(&h, "x").unwrap(),
            [PathBuf::from("/m/x"), PathBuf::from("/c/x")]
        );
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\b"), r"/a\b");
    }
}
