//! The evaluation's data: what `agentbox eval --json` writes (schema documented in docs/eval.md)
//! and what the terminal table and the HTML page are rendered from. Plain serde data, no behaviour
//! beyond small summaries.

use serde::{Deserialize, Serialize};

/// Version of the JSON schema below; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// One evaluation run on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub host: HostInfo,
    /// Every probe that was run, in order (the columns of the matrix).
    pub probes: Vec<ProbeInfo>,
    /// agentbox's tiers first, then the peers (the rows of the matrix).
    pub rows: Vec<Row>,
    /// The seed's claims, each with the measured evidence.
    pub claims: Vec<Claim>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// RFC 3339 UTC time the run started.
    pub started: String,
    pub kernel: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub agentbox_version: String,
    /// Whether `--quick` shortened the run (fewer benchmark runs, no resource probes).
    pub quick: bool,
}

/// What a probe tries. `id` is stable (used by `--probes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeInfo {
    pub id: String,
    /// Short human title, e.g. "double chroot break-out".
    pub title: String,
    /// Group: "filesystem", "processes", "devices", "kernel", "syscalls", "privilege", "leaks",
    /// "network", "resources".
    pub category: String,
}

/// Whether the row is one of agentbox's tiers or a peer tool run for reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    Tier,
    Peer,
}

/// One tier or peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Stable id: `ns`, `chroot` for tiers; `peer:chroot`, `peer:unshare`, `peer:bwrap`, ...
    pub id: String,
    /// Display label, e.g. "agentbox ns" or "bubblewrap 0.8.0".
    pub label: String,
    pub kind: RowKind,
    /// Not available here (missing binary, unusable on this host): no results, `reason` says why.
    pub available: bool,
    pub reason: Option<String>,
    pub version: Option<String>,
    /// The sandboxed process's posture, read from /proc on the host side.
    pub posture: Option<Posture>,
    /// One per probe of `Report::probes`, in the same order (empty when not available).
    pub results: Vec<ProbeResult>,
    pub bench: Option<Bench>,
}

impl Row {
    /// Counts of each verdict.
    pub fn score(&self) -> Score {
        let mut s = Score::default();
        for r in &self.results {
            match r.verdict {
                Verdict::Blocked => s.blocked += 1,
                Verdict::Escaped => s.escaped += 1,
                Verdict::NotApplicable => s.not_applicable += 1,
                Verdict::Inconclusive => s.inconclusive += 1,
            }
        }
        s
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    pub blocked: u32,
    pub escaped: u32,
    pub not_applicable: u32,
    pub inconclusive: u32,
}

impl Score {
    /// Blocked among the probes that had a verdict (0.0-1.0); None when none had.
    pub fn blocked_fraction(&self) -> Option<f64> {
        let decided = self.blocked + self.escaped;
        (decided > 0).then(|| f64::from(self.blocked) / f64::from(decided))
    }
}

/// One verdict type from the probe to the report: blocked, escaped, not applicable, inconclusive.
pub use agentbox_probe::Verdict;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub probe: String,
    pub verdict: Verdict,
    /// What the probe did, e.g. "mount(\"proc\", \"/tmp/p\", \"proc\")".
    pub attempted: String,
    /// The errno name the attempt failed with (EPERM, ENOSYS...), if it failed with one.
    pub errno: Option<String>,
    /// What was observed, one line.
    pub observation: String,
    /// The layer that stopped it, where that can be known: "seccomp", "capabilities", "landlock",
    /// "user namespace", "pid namespace", "mount namespace", "network namespace", "cgroup",
    /// "rlimit", "no_new_privs", "host sysctl", "kernel".
    pub layer: Option<String>,
    /// What the harness checked on the host side (canary, sentinel, sysctl, listener), if any.
    pub host_check: Option<String>,
}

/// The sandboxed process as the host sees it (from /proc/<pid>), taken while the probe ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posture {
    /// Hex masks as in /proc/<pid>/status.
    pub cap_eff: String,
    pub cap_prm: String,
    pub cap_bnd: String,
    pub no_new_privs: bool,
    /// 0 none, 1 strict, 2 filter.
    pub seccomp: u8,
    /// The process's uid on the host.
    pub host_uid: u32,
    /// Namespace kinds the process shares with the host (e.g. ["net", "time"]).
    pub shared_namespaces: Vec<String>,
    /// Namespace kinds of its own.
    pub own_namespaces: Vec<String>,
    /// Open file descriptors other than 0-2 (targets as the host sees them).
    pub extra_fds: Vec<String>,
    /// Its cgroup path(s) from /proc/<pid>/cgroup.
    pub cgroup: Vec<String>,
    pub threads: u32,
    /// Threads whose capabilities, no_new_privs or seccomp mode differ from the main thread's
    /// (every thread is read; a confinement applied to one thread only shows here).
    #[serde(default)]
    pub thread_differences: Vec<String>,
    /// Which process this is when it is not the sandboxed payload itself (gVisor: the host sees
    /// only the sentry, which runs the payload, and the gofer, which serves its files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Timings of one row; each set of runs summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bench {
    /// `/bin/true` start to exit.
    pub start_true: Option<Stats>,
    /// `python3 -c pass` start to exit.
    pub start_python: Option<Stats>,
    /// A command in an existing sandbox (tiers with persistent sandboxes).
    pub exec: Option<Stats>,
    /// Peak memory of the sandbox machinery per sandbox (KiB), excluding the command.
    pub peak_memory_kib: Option<u64>,
    /// A syscall-heavy workload's time inside over its time on the host (1.0 = no slowdown).
    pub syscall_slowdown: Option<f64>,
    /// Sandboxes started and finished per second, several at once.
    pub start_rate_per_s: Option<f64>,
}

/// A summary of repeated timings, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub runs: u32,
    pub median_ms: f64,
    pub mean_ms: f64,
    pub stddev_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    /// Summarises `samples_ms` (None when empty).
    pub fn of(samples_ms: &[f64]) -> Option<Stats> {
        if samples_ms.is_empty() {
            return None;
        }
        let mut sorted = samples_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let var = sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        Some(Stats {
            runs: n as u32,
            median_ms: median,
            mean_ms: mean,
            stddev_ms: var.sqrt(),
            min_ms: sorted[0],
            max_ms: sorted[n - 1],
        })
    }
}

/// One claim of the seed, restated with what this run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub claim: String,
    /// The measured evidence, one or two sentences with numbers.
    pub evidence: String,
    /// Whether the measurements support the claim; None when this host could not tell (the rows
    /// it needs were not available).
    pub holds: Option<bool>,
}
