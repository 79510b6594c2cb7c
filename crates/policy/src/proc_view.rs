//! What every tier hides of /proc (and /sys) from the command: one list, which the `ns` tier's
//! mount plan and the OCI bundle both use, so the tiers cannot drift apart.

/// /proc files hidden behind /dev/null: kernel memory, keyrings, sysrq, scheduler internals.
pub const MASKED_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/sysrq-trigger",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/kallsyms",
    "/proc/kmsg",
    "/proc/kpagecount",
    "/proc/kpageflags",
    "/proc/kpagecgroup",
    "/proc/latency_stats",
    "/proc/timer_stats",
];
/// /proc directories hidden behind an empty read-only tmpfs.
pub const MASKED_DIRS: &[&str] = &["/proc/acpi", "/proc/scsi", "/proc/asound"];
/// /proc subtrees made read-only.
pub const READ_ONLY: &[&str] = &["/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"];
