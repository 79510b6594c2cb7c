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
    // The VM rows: the plain microVM first (its boot id is the guest kernel's own, with nothing
    // between), then the ns tier inside one.
    let vms: Vec<&Row> = ["microvm", "microvm+ns"]
        .iter()
        .filter_map(|id| row(rows, id))
        .collect();
    let own_kernel: Vec<&str> = vms
        .iter()
        .filter(|v| verdict(v, "leak_boot_id") == Some(Verdict::Blocked))
        .map(|v| v.label.as_str())
        .collect();
    out.push(Claim {
        claim: "containers share the host kernel, while a VM has its own".into(),
        evidence: format!(
            "{}; {}",
            if ns_rows.is_empty() {
                "no namespace row was evaluated".to_string()
            } else {
                format!(
                    "the host's boot id was visible in {} of {} namespace rows (one kernel)",
                    shared.len(),
                    ns_rows.len()
                )
            },
            if vms.is_empty() {
                "no VM row on this host, so the second half is not measured".to_string()
            } else if own_kernel.len() == vms.len() {
                format!(
                    "every VM row showed a boot id of its own ({})",
                    own_kernel.join(", ")
                )
            } else {
                format!(
                    "{} of {} VM rows showed a boot id of their own ({})",
                    own_kernel.len(),
                    vms.len(),
                    own_kernel.join(", ")
                )
            }
        ),
        // Half of the claim measured: true as far as it goes; false only on a measured half.
        holds: match (ns_rows.is_empty(), vms.is_empty()) {
            (true, true) => None,
            (false, true) => (shared.len() == ns_rows.len()).then_some(true),
            (true, false) => Some(own_kernel.len() == vms.len()),
            (false, false) => Some(shared.len() == ns_rows.len() && own_kernel.len() == vms.len()),
        },
    });
    // 5. VMs and gVisor cost start time and memory: every such row measured, against ns.
    const HEAVY: &str = "VMs and gVisor cost start time and memory";
    let heavy: Vec<(&Row, f64)> = ["gvisor", "peer:runsc", "microvm", "microvm+ns"]
        .iter()
        .filter_map(|id| row(rows, id))
        .filter_map(|r| Some((r, median_true(r)?)))
        .collect();
    let light = row(rows, "ns").and_then(median_true);
    out.push(match light {
        Some(ns) if !heavy.is_empty() => Claim {
            claim: HEAVY.into(),
            evidence: format!(
                "{} against {ns:.1} ms for agentbox ns",
                heavy
                    .iter()
                    .map(|(r, ms)| format!("{} starts in {ms:.1} ms ({:.1}×)", r.label, ms / ns))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            holds: Some(heavy.iter().all(|(_, ms)| *ms > ns)),
        },
        _ => unmeasured(HEAVY, "ns and a runsc or microvm"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Bench, ProbeResult, RowKind, Stats};

    fn row(id: &str, boot_id: Verdict, start_ms: f64) -> Row {
        Row {
            id: id.into(),
            label: id.into(),
            kind: RowKind::Tier,
            available: true,
            reason: None,
            version: None,
            posture: None,
            results: vec![ProbeResult {
                probe: "leak_boot_id".into(),
                verdict: boot_id,
                attempted: String::new(),
                errno: None,
                observation: String::new(),
                layer: None,
                host_check: None,
            }],
            bench: Some(Bench {
                start_true: Stats::of(&[start_ms]),
                start_python: None,
                exec: None,
                peak_memory_kib: None,
                syscall_slowdown: None,
                start_rate_per_s: None,
            }),
        }
    }

    fn claim<'a>(claims: &'a [Claim], start: &str) -> &'a Claim {
        claims
            .iter()
            .find(|c| c.claim.starts_with(start))
            .unwrap_or_else(|| panic!("no claim {start}"))
    }

    #[test]
    fn the_vm_rows_measure_the_second_half_of_the_kernel_claim() {
        let ns = row("ns", Verdict::Escaped, 5.0);
        let vm = row("microvm", Verdict::Blocked, 700.0);
        let layered = row("microvm+ns", Verdict::Blocked, 900.0);
        let all = claims(&[ns.clone(), vm.clone(), layered.clone()]);
        let kernel = claim(&all, "containers share the host kernel");
        assert_eq!(kernel.holds, Some(true), "{kernel:?}");
        assert!(kernel.evidence.contains("every VM row"), "{kernel:?}");
        let heavy = claim(&all, "VMs and gVisor");
        assert_eq!(heavy.holds, Some(true), "{heavy:?}");
        assert!(
            heavy.evidence.contains("microvm+ns starts in 900.0 ms"),
            "{heavy:?}"
        );
        // A VM showing the host's boot id breaks the claim.
        let leaky = row("microvm", Verdict::Escaped, 700.0);
        let all = claims(&[ns.clone(), leaky.clone()]);
        assert_eq!(claim(&all, "containers share").holds, Some(false));
        // Only the VM rows evaluated: the measured half decides.
        assert_eq!(claim(&claims(&[vm]), "containers share").holds, Some(true));
        assert_eq!(
            claim(&claims(&[leaky]), "containers share").holds,
            Some(false)
        );
        // No VM row: the first half alone, as before.
        let ns_only = claims(&[ns]);
        let kernel = claim(&ns_only, "containers share");
        assert_eq!(kernel.holds, Some(true));
        assert!(kernel.evidence.contains("no VM row"), "{kernel:?}");
    }
}
