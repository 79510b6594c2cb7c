//! cgroup v1: one leaf per controller mount. Knows the v1 file names and their ordering rules;
//! never writes anything itself (the plan is applied by `Cgroup`).

use std::path::Path;

use super::CPU_PERIOD_US;
use super::{cpu_quota_us, read_keyed, read_number, CgroupEvents, CgroupLimits, Features, Write};

/// Present only when the kernel accounts swap (`CONFIG_MEMCG_SWAP` and `swapaccount=1`).
const MEMSW_LIMIT: &str = "memory.memsw.limit_in_bytes";

pub(super) fn probe(memory_leaf: &Path) -> Features {
    Features {
        swap_accounting: memory_leaf.join(MEMSW_LIMIT).exists(),
        oom_group: false,
    }
}

/// The writes for the v1 leaves. `memory.limit_in_bytes` goes first: the kernel refuses a memsw
/// limit below the memory limit, and a fresh leaf starts with both unlimited. Without swap
/// accounting, swappiness 0 is the closest v1 offers to "no swap". The OOM killer stays enabled
/// (`memory.oom_control` untouched): a sandbox over its limit is killed, not frozen.
pub(super) fn plan(
    memory: &Path,
    pids: &Path,
    cpu: Option<&Path>,
    limits: &CgroupLimits,
    features: &Features,
) -> Vec<Write> {
    let mut writes = vec![Write::new(memory, "memory.limit_in_bytes", limits.memory)];
    if features.swap_accounting {
        writes.push(Write::new(memory, MEMSW_LIMIT, limits.memory));
    } else {
        writes.push(Write::new(memory, "memory.swappiness", 0));
    }
    writes.push(Write::new(pids, "pids.max", limits.pids));
    if let (Some(cpu), Some(millis)) = (cpu, limits.cpu_millis) {
        writes.push(Write::new(cpu, "cpu.cfs_period_us", CPU_PERIOD_US));
        writes.push(Write::new(cpu, "cpu.cfs_quota_us", cpu_quota_us(millis)));
    }
    writes
}

/// `memory.oom_control` has an `oom_kill N` line since Linux 4.13; `pids.events` is `max N`.
pub(super) fn events(memory: &Path, pids: &Path) -> CgroupEvents {
    CgroupEvents {
        oom_kills: read_keyed(&memory.join("memory.oom_control"), "oom_kill"),
        pids_limit_hits: read_keyed(&pids.join("pids.events"), "max"),
        memory_peak: read_number(&memory.join("memory.max_usage_in_bytes")),
    }
}
