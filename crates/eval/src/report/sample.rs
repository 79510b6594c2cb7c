//! A hand-built [`Report`] for the renderers' tests (unit and integration): two tiers, one
//! unavailable peer, six probes in three categories, benchmarks and claims. Never used by the
//! real `agentbox eval`; the numbers are illustrative, not measured.

use crate::model::{
    Bench, Claim, HostInfo, Posture, ProbeInfo, ProbeResult, Report, Row, RowKind, Stats, Verdict,
    SCHEMA_VERSION,
};

fn probe(id: &str, title: &str, category: &str) -> ProbeInfo {
    ProbeInfo {
        id: id.to_owned(),
        title: title.to_owned(),
        category: category.to_owned(),
    }
}

struct Outcome<'a> {
    verdict: Verdict,
    errno: Option<&'a str>,
    observation: &'a str,
    layer: Option<&'a str>,
}

fn outcome<'a>(
    verdict: Verdict,
    errno: Option<&'a str>,
    observation: &'a str,
    layer: Option<&'a str>,
) -> Outcome<'a> {
    Outcome {
        verdict,
        errno,
        observation,
        layer,
    }
}

/// What each probe attempts and checks on the host, in probe order.
const ATTEMPTS: [(&str, &str, Option<&str>); 6] = [
    (
        "filesystem.double-chroot-breakout",
        "mkdir(\"x\"); chroot(\"x\"); chdir(\"../../..\"); chroot(\".\")",
        Some("canary file /var/tmp/agentbox-canary-1 read back from the host"),
    ),
    (
        "filesystem.write-host-canary",
        "open(\"/host-canary\", O_WRONLY|O_CREAT)",
        Some("canary file content before and after"),
    ),
    (
        "processes.kill-host-sentinel",
        "kill(<sentinel pid>, SIGKILL)",
        Some("sentinel process liveness"),
    ),
    (
        "processes.ptrace-attach-sibling",
        "ptrace(PTRACE_ATTACH, <sibling pid>)",
        None,
    ),
    (
        "kernel.cgroup-v1-release-agent",
        "mount(\"cgroup\", \"/tmp/cg\", \"cgroup\", 0, \"rdma\") then write release_agent",
        Some("release_agent snapshot before and after"),
    ),
    (
        "kernel.sysctl-write-hostname",
        "write(\"/proc/sys/kernel/hostname\", \"pwned\")",
        Some("host kernel.hostname before and after"),
    ),
];

fn results(outcomes: [Outcome<'_>; 6]) -> Vec<ProbeResult> {
    ATTEMPTS
        .iter()
        .zip(outcomes)
        .map(|(&(probe, attempted, host_check), o)| ProbeResult {
            probe: probe.to_owned(),
            verdict: o.verdict,
            attempted: attempted.to_owned(),
            errno: o.errno.map(str::to_owned),
            observation: o.observation.to_owned(),
            layer: o.layer.map(str::to_owned),
            host_check: host_check.map(str::to_owned),
        })
        .collect()
}

/// Short decimals only, so that the JSON round trip is exact.
fn stats(median_ms: f64, mean_ms: f64, stddev_ms: f64, min_ms: f64, max_ms: f64) -> Stats {
    Stats {
        runs: 50,
        median_ms,
        mean_ms,
        stddev_ms,
        min_ms,
        max_ms,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn ns_row() -> Row {
    use Verdict::{Blocked, NotApplicable};
    Row {
        id: "ns".to_owned(),
        label: "agentbox ns".to_owned(),
        kind: RowKind::Tier,
        available: true,
        reason: None,
        version: Some("0.1.0".to_owned()),
        posture: Some(Posture {
            cap_eff: "0000000000000000".to_owned(),
            cap_prm: "0000000000000000".to_owned(),
            cap_bnd: "0000000000000000".to_owned(),
            no_new_privs: true,
            seccomp: 2,
            host_uid: 100_000,
            shared_namespaces: strings(&["time"]),
            own_namespaces: strings(&["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"]),
            extra_fds: Vec::new(),
            cgroup: strings(&["0::/agentbox/sb-1"]),
            threads: 1,
            thread_differences: Vec::new(),
            note: None,
        }),
        results: results([
            outcome(
                Blocked,
                Some("EPERM"),
                "chroot(\"x\") failed",
                Some("seccomp"),
            ),
            outcome(Blocked, Some("EACCES"), "open failed", Some("landlock")),
            outcome(
                Blocked,
                Some("ESRCH"),
                "no such process",
                Some("pid namespace"),
            ),
            outcome(Blocked, Some("EPERM"), "ptrace denied", Some("seccomp")),
            outcome(
                NotApplicable,
                None,
                "no cgroup v1 hierarchy on this host",
                None,
            ),
            outcome(
                Blocked,
                Some("EROFS"),
                "/proc/sys is read-only",
                Some("mount namespace"),
            ),
        ]),
        bench: Some(Bench {
            start_true: Some(stats(3.75, 4.35, 2.30, 3.18, 14.2)),
            start_python: Some(stats(21.4, 22.6, 3.1, 18.9, 35.0)),
            exec: Some(stats(1.92, 2.01, 0.41, 1.55, 3.9)),
            peak_memory_kib: Some(3276),
            syscall_slowdown: Some(1.18),
            start_rate_per_s: Some(412.0),
        }),
    }
}

fn chroot_row() -> Row {
    use Verdict::{Blocked, Escaped, Inconclusive};
    Row {
        id: "chroot".to_owned(),
        label: "agentbox chroot".to_owned(),
        kind: RowKind::Tier,
        available: true,
        reason: None,
        version: Some("0.1.0".to_owned()),
        posture: Some(Posture {
            cap_eff: "0000000000000000".to_owned(),
            cap_prm: "0000000000000000".to_owned(),
            cap_bnd: "000001ffffffffff".to_owned(),
            no_new_privs: true,
            seccomp: 0,
            host_uid: 65_534,
            shared_namespaces: strings(&["cgroup", "ipc", "mnt", "net", "pid", "time", "uts"]),
            own_namespaces: Vec::new(),
            extra_fds: strings(&["/dev/null"]),
            cgroup: strings(&["0::/user.slice"]),
            threads: 1,
            thread_differences: Vec::new(),
            note: None,
        }),
        results: results([
            outcome(
                Escaped,
                None,
                "read /etc/hostname of the host after the second chroot",
                None,
            ),
            outcome(Blocked, Some("EACCES"), "open failed", Some("capabilities")),
            outcome(
                Escaped,
                None,
                "sentinel <killed> by the probe: shared pid namespace",
                None,
            ),
            outcome(Blocked, Some("EPERM"), "ptrace denied", Some("kernel")),
            outcome(
                Inconclusive,
                Some("ETIMEDOUT"),
                "probe timed out after 10 s",
                None,
            ),
            outcome(
                Blocked,
                Some("EACCES"),
                "permission denied",
                Some("capabilities"),
            ),
        ]),
        bench: Some(Bench {
            start_true: Some(stats(2.68, 2.88, 0.54, 2.37, 5.1)),
            start_python: Some(stats(19.8, 20.4, 2.2, 17.6, 29.3)),
            exec: None,
            peak_memory_kib: Some(1180),
            syscall_slowdown: Some(1.01),
            start_rate_per_s: Some(655.5),
        }),
    }
}

/// The sample report the renderers' tests use.
#[doc(hidden)]
pub fn sample_report() -> Report {
    Report {
        schema: SCHEMA_VERSION,
        host: HostInfo {
            started: "2026-11-26T10:15:00Z".to_owned(),
            kernel: "6.18.44-fc-v669".to_owned(),
            cpus: 2,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            agentbox_version: "0.1.0".to_owned(),
            quick: false,
        },
        probes: vec![
            probe(ATTEMPTS[0].0, "double chroot break-out", "filesystem"),
            probe(ATTEMPTS[1].0, "write a host canary file", "filesystem"),
            probe(
                ATTEMPTS[2].0,
                "kill the host's sentinel process",
                "processes",
            ),
            probe(ATTEMPTS[3].0, "ptrace a sibling process", "processes"),
            probe(ATTEMPTS[4].0, "cgroup v1 release_agent escape", "kernel"),
            probe(
                ATTEMPTS[5].0,
                "change the host's hostname via sysctl",
                "kernel",
            ),
        ],
        rows: vec![
            ns_row(),
            chroot_row(),
            Row {
                id: "peer:bwrap".to_owned(),
                label: "bubblewrap".to_owned(),
                kind: RowKind::Peer,
                available: false,
                reason: Some("bwrap not found on PATH".to_owned()),
                version: None,
                posture: None,
                results: Vec::new(),
                bench: None,
            },
        ],
        claims: vec![
            Claim {
                claim: "The ns tier blocks every escape probe that applies to it.".to_owned(),
                evidence: "5 of 5 decided probes blocked; 1 not applicable (no cgroup v1)."
                    .to_owned(),
                holds: Some(true),
            },
            Claim {
                claim: "The chroot tier starts /bin/true in under 2 ms.".to_owned(),
                evidence: "Median 2.68 ms ± 0.54 ms over 50 runs.".to_owned(),
                holds: Some(false),
            },
            Claim {
                claim: "agentbox ns starts faster than bubblewrap.".to_owned(),
                evidence: "bubblewrap is not installed on this host.".to_owned(),
                holds: None,
            },
        ],
    }
}
