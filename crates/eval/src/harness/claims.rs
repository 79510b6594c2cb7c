//! The seed's claims, each restated with the evidence of this run. Pure.

use crate::model::{Claim, Row, Verdict};

fn row<'a>(rows: &'a [Row], id: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.id == id && r.available)
}

fn verdict(row: &Row, probe: &str) -> Option<Verdict> {
    row.results
        .iter()
        .find(|r| r.probe == probe)
        .map(|r| r.verdict)
}

fn median_true(row: &Row) -> Option<f64> {
    row.bench.as_ref()?.start_true.as_ref().map(|s| s.median_ms)
}

pub fn claims(rows: &[Row]) -> Vec<Claim> {
    let mut out = Vec::new();
    let chroot = row(rows, "peer:chroot");
    // 1. chroot is escapable by root.
    out.push(match chroot {
        Some(c) => {
            let escapes: Vec<&str> = ["chroot_double", "chroot_fchdir"]
                .into_iter()
                .filter(|p| verdict(c, p) == Some(Verdict::Escaped))
                .collect();
            Claim {
                claim: "chroot is escapable by root".into(),
                evidence: if escapes.is_empty() {
                    "neither the double-chroot nor the fchdir break-out escaped a root chroot here"
                        .into()
                } else {
                    format!(
                        "as root in a chroot, {} reached the planted host secret",
                        escapes.join(" and ")
                    )
                },
                holds: Some(!escapes.is_empty()),
            }
        }
        None => unmeasured("chroot is escapable by root", "peer:chroot"),
    });
    // 2. chroot shows host processes.
    out.push(match chroot {
        Some(c) => {
            let seen = verdict(c, "host_processes") == Some(Verdict::Escaped);
            Claim {
                claim: "chroot shows host processes in /proc".into(),
                evidence: format!(
                    "in a root chroot with /proc mounted, the host's sentinel process was {}",
                    if seen { "visible" } else { "not visible" }
                ),
                holds: Some(seen),
            }
        }
        None => unmeasured("chroot shows host processes in /proc", "peer:chroot"),
    });
    // 3. Namespace containers show only their own processes.
    let ns_rows: Vec<&Row> = [
        "ns",
        "peer:bwrap",
        "peer:unshare",
        "peer:runc",
        "peer:crun",
        "peer:nspawn",
        "peer:firejail",
        "oci-runc",
        "oci-crun",
        "nspawn",
        "docker",
    ]
    .iter()
    .filter_map(|id| row(rows, id))
    .collect();
    out.push(if ns_rows.is_empty() {
        unmeasured("namespace containers show only their own processes", "ns")
    } else {
        let hidden: Vec<&str> = ns_rows
            .iter()
            .filter(|r| verdict(r, "host_processes") == Some(Verdict::Blocked))
            .map(|r| r.label.as_str())
            .collect();
        Claim {
            claim: "namespace containers show only their own processes".into(),
            evidence: format!(
                "the host's sentinel was hidden from {} of {} namespace rows ({})",
                hidden.len(),
                ns_rows.len(),
                hidden.join(", ")
            ),
            holds: Some(hidden.len() == ns_rows.len()),
        }
    });
    // 4. Containers share the host kernel; a VM has its own.
    let shared: Vec<&str> = ns_rows
        .iter()
        .filter(|r| verdict(r, "leak_boot_id") == Some(Verdict::Escaped))
        .map(|r| r.label.as_str())
        .collect();
    let vm = row(rows, "microvm");
    out.push(Claim {
        claim: "containers share the host kernel, while a VM has its own".into(),
        evidence: format!(
            "the host's boot id was visible in {} of {} namespace rows (one kernel); {}",
            shared.len(),
            ns_rows.len(),
            match vm {
                Some(v) if verdict(v, "leak_boot_id") == Some(Verdict::Blocked) =>
                    "the microVM showed a boot id of its own".to_string(),
                Some(_) => "the microVM row did not show a boot id of its own".to_string(),
                None => "no VM row on this host yet, so the second half is not measured".into(),
            }
        ),
        holds: if ns_rows.is_empty() {
            None
        } else if vm.is_none() {
            (shared.len() == ns_rows.len()).then_some(true)
        } else {
            Some(
                shared.len() == ns_rows.len()
                    && vm.is_some_and(|v| verdict(v, "leak_boot_id") == Some(Verdict::Blocked)),
            )
        },
    });
    // 5. VMs and gVisor cost start time and memory.
    let heavy: Vec<&Row> = ["gvisor", "peer:runsc", "microvm"]
        .iter()
        .filter_map(|id| row(rows, id))
        .collect();
    let light = row(rows, "ns").and_then(median_true);
    out.push(match (heavy.first(), light) {
        (Some(h), Some(ns)) => match median_true(h) {
            Some(hm) => Claim {
                claim: "VMs and gVisor cost start time and memory".into(),
                evidence: format!(
                    "{} starts in {hm:.1} ms against {ns:.1} ms for agentbox ns ({:.1}×)",
                    h.label,
                    hm / ns
                ),
                holds: Some(hm > ns),
            },
            None => unmeasured(
                "VMs and gVisor cost start time and memory",
                "runsc or microvm",
            ),
        },
        _ => unmeasured(
            "VMs and gVisor cost start time and memory",
            "runsc or microvm",
        ),
    });
    // 6. gVisor's syscall overhead.
    let gvisor = row(rows, "peer:runsc").or_else(|| row(rows, "gvisor"));
    out.push(
        match gvisor.and_then(|g| g.bench.as_ref()?.syscall_slowdown) {
            Some(s) => Claim {
                claim: "gVisor adds syscall overhead".into(),
                evidence: format!(
                    "100 000 stat calls took {s:.1}× as long under gVisor as on the host"
                ),
                holds: Some(s > 1.2),
            },
            None => unmeasured("gVisor adds syscall overhead", "runsc"),
        },
    );
    // 7. agentbox driving an engine from its policy keeps what the engine gives on its own.
    out.push(engines_keep_their_peers(rows));
    out
}

/// agentbox's engine rows against the peer rows running the same engine directly: every probe
/// the raw engine blocks, the agentbox row blocks too.
fn engines_keep_their_peers(rows: &[Row]) -> Claim {
    const CLAIM: &str = "agentbox driving an engine blocks at least what the engine blocks alone";
    let pairs = [
        ("oci-runc", "peer:runc"),
        ("oci-crun", "peer:crun"),
        ("gvisor", "peer:runsc"),
        ("nspawn", "peer:nspawn"),
    ];
    let mut compared = Vec::new();
    let mut lost = Vec::new();
    for (ours, peer) in pairs {
        let (Some(a), Some(p)) = (row(rows, ours), row(rows, peer)) else {
            continue;
        };
        compared.push(ours);
        for result in &p.results {
            if result.verdict == Verdict::Blocked {
                match verdict(a, &result.probe) {
                    Some(Verdict::Blocked) | Some(Verdict::NotApplicable) => {}
                    v => lost.push(format!(
                        "{} ({ours}: {}, {peer}: blocked)",
                        result.probe,
                        v.map_or("no result", verdict_word)
                    )),
                }
            }
        }
    }
    if compared.is_empty() {
        return unmeasured(CLAIM, "an engine tier row and its peer");
    }
    Claim {
        claim: CLAIM.into(),
        evidence: if lost.is_empty() {
            format!(
                "every probe the raw engine blocked was blocked by agentbox's row too ({})",
                compared.join(", ")
            )
        } else {
            format!(
                "blocked by the raw engine but not by agentbox's row: {}",
                lost.join("; ")
            )
        },
        holds: Some(lost.is_empty()),
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Blocked => "blocked",
        Verdict::Escaped => "escaped",
        Verdict::NotApplicable => "not applicable",
        Verdict::Inconclusive => "inconclusive",
    }
}

fn unmeasured(claim: &str, needs: &str) -> Claim {
    Claim {
        claim: claim.into(),
        evidence: format!(
            "not measured on this host: needs the {needs} row, which is not available"
        ),
        holds: None,
    }
}
