//! The cgroup checks of `agentbox doctor`: how the cgroup file systems are mounted (v1 legacy, v1
//! hybrid, v2 unified), which hierarchy `agentbox run` will use (found by the runtime's own
//! `cgroup::detect`, so the two agree), its controllers and whether swap is accounted. Read-only.

use std::path::{Path, PathBuf};

use agentbox_runtime::cgroup::{self, Hierarchy};

use super::kernel::{check, HostFiles};
use super::{Check, Status};

/// The v1 controllers (anything else in a cgroup mount's options is a mount option or `name=`).
const V1_CONTROLLERS: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// How the cgroup file systems are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CgroupLayout {
    /// Controllers on v1, no cgroup2 mount.
    V1Legacy,
    /// Controllers on v1, and a cgroup2 mount (usually /sys/fs/cgroup/unified) beside them.
    V1Hybrid {
        unified: PathBuf,
    },
    /// Only cgroup2.
    V2Unified,
    None,
}

impl CgroupLayout {
    fn describe(&self) -> String {
        match self {
            Self::V1Legacy => "v1 legacy".into(),
            Self::V1Hybrid { unified } => {
                format!("v1 hybrid (cgroup2 also at {})", unified.display())
            }
            Self::V2Unified => "v2 unified".into(),
            Self::None => "none mounted".into(),
        }
    }
}

/// Classifies the mounts in a mountinfo text. v1 mounts that carry only a named hierarchy
/// (`name=systemd`) do not count as controllers.
pub(super) fn cgroup_layout(mountinfo: &str) -> CgroupLayout {
    let mut v1_controllers = false;
    let mut unified = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(point), Some(fstype)) = (fields.get(4), fields.get(dash + 1)) else {
            continue;
        };
        match *fstype {
            "cgroup" => {
                let options = fields.get(dash + 3).copied().unwrap_or("");
                v1_controllers |= options.split(',').any(|o| V1_CONTROLLERS.contains(&o));
            }
            "cgroup2" if unified.is_none() => {
                unified = Some(PathBuf::from(point.replace("\\040", " ")));
            }
            _ => {}
        }
    }
    match (v1_controllers, unified) {
        (true, Some(unified)) => CgroupLayout::V1Hybrid { unified },
        (true, None) => CgroupLayout::V1Legacy,
        (false, Some(_)) => CgroupLayout::V2Unified,
        (false, None) => CgroupLayout::None,
    }
}

/// The `cgroups` and `swap accounting` checks. The hierarchy is found by the runtime's own
/// `cgroup::detect`, so that the doctor agrees with what `agentbox run` will use.
pub(super) fn checks(files: &HostFiles<'_>, mountinfo: &str) -> (Check, Check) {
    let layout = cgroup_layout(mountinfo).describe();
    let read_controllers = |root: &Path| files.read(root.join("cgroup.controllers"));
    let hierarchy = match cgroup::detect(mountinfo, &read_controllers) {
        Ok(h) => h,
        Err(e) => {
            let fix = "v2: boot with systemd.unified_cgroup_hierarchy=1 and make sure memory and \
                       pids are in /sys/fs/cgroup/cgroup.controllers; v1: mount -t cgroup -o memory \
                       cgroup /sys/fs/cgroup/memory (and likewise pids, cpu)";
            return (
                check(
                    "cgroups",
                    Status::Missing,
                    format!("{layout}: {e}"),
                    Some(fix),
                ),
                check(
                    "swap accounting",
                    Status::Missing,
                    "no usable cgroup hierarchy",
                    Some("see cgroups"),
                ),
            );
        }
    };
    match hierarchy {
        Hierarchy::V1 { memory, pids, cpu } => {
            let mut detail = format!(
                "{layout}; agentbox uses v1: memory at {}, pids at {}",
                memory.display(),
                pids.display()
            );
            let cgroups = match cpu {
                Some(cpu) => {
                    detail.push_str(&format!(", cpu at {}", cpu.display()));
                    check("cgroups", Status::Ok, detail, None)
                }
                None => check(
                    "cgroups",
                    Status::Warn,
                    format!("{detail}; the cpu controller is not mounted, so --cpus is refused"),
                    Some("mkdir -p /sys/fs/cgroup/cpu && mount -t cgroup -o cpu cgroup /sys/fs/cgroup/cpu"),
                ),
            };
            let swap = if files.exists(memory.join("memory.memsw.limit_in_bytes")) {
                check(
                    "swap accounting",
                    Status::Ok,
                    "memory.memsw.* present: the memory limit covers swap too",
                    None,
                )
            } else {
                check(
                    "swap accounting",
                    Status::Warn,
                    "no memory.memsw.*: the memory limit caps RAM only (agentbox sets \
                     memory.swappiness=0 instead)",
                    Some("boot with swapaccount=1 (kernel built with CONFIG_MEMCG_SWAP)"),
                )
            };
            (cgroups, swap)
        }
        Hierarchy::V2 { root } => {
            let controllers = files.value(root.join("cgroup.controllers"));
            let subtree = files.value(root.join("cgroup.subtree_control"));
            let mut detail =
                format!(
                "{layout} at {}; controllers: {}; subtree_control: {} (agentbox enables memory, \
                 pids and cpu there itself)",
                root.display(),
                controllers.as_deref().unwrap_or("unreadable"),
                subtree.as_deref().map_or("unreadable", |s| if s.is_empty() { "empty" } else { s }),
            );
            let has_cpu = controllers
                .as_deref()
                .is_some_and(|c| c.split_whitespace().any(|c| c == "cpu"));
            let cgroups = if has_cpu {
                check("cgroups", Status::Ok, detail, None)
            } else {
                detail.push_str("; no cpu controller, so --cpus is refused");
                check(
                    "cgroups",
                    Status::Warn,
                    detail,
                    Some("make the cpu controller available at the cgroup2 root (it is held by v1 or disabled with cgroup_disable=cpu)"),
                )
            };
            (cgroups, v2_swap(files, &root))
        }
    }
}

/// v2 has no `memory.swap.max` in the root cgroup: look for it in the root's children.
fn v2_swap(files: &HostFiles<'_>, root: &Path) -> Check {
    let children = std::fs::read_dir(files.path(root))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if children
        .iter()
        .any(|c| c.path().join("memory.swap.max").exists())
    {
        return check(
            "swap accounting",
            Status::Ok,
            "memory.swap.max present: agentbox sets it to 0",
            None,
        );
    }
    let detail = if children.is_empty() {
        "unknown: no child cgroup to look for memory.swap.max in"
    } else {
        "no memory.swap.max in the child cgroups: the memory limit caps RAM only"
    };
    check(
        "swap accounting",
        Status::Warn,
        detail,
        Some("boot with swapaccount=1 (kernel built with CONFIG_MEMCG_SWAP)"),
    )
}
