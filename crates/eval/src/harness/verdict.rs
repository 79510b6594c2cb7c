//! From what the probes said and what the host saw to one verdict per probe. The host's evidence
//! wins: a probe that says "blocked" while the canary changed has escaped; one that says "escaped"
//! while the host saw nothing is inconclusive. Pure.

use agentbox_probe::Outcome;

use super::rows::RowId;
use crate::model::{ProbeInfo, ProbeResult, Verdict};

/// What the host saw around one row's run.
#[derive(Debug, Clone, Default)]
pub struct HostEvidence {
    /// The planted secret (any output containing it was read through an escape).
    pub secret: String,
    pub canary_intact: bool,
    pub sentinel_alive: bool,
    pub sentinel_traced: bool,
    pub listener_connections: u32,
    /// Watched host files or mounts that changed (already restored).
    pub changes: Vec<String>,
    /// The host uid of the sandboxed process as the host saw it (its posture), when read; under
    /// gVisor, the sentry's, which runs the payload.
    pub sandbox_host_uid: Option<u32>,
}

/// gVisor rows: probes whose "escaped" rests on what gVisor's emulated kernel shows, corrected by
/// what the host saw. The new verdict, layer and a note for the observation.
fn gvisor_correction(
    probe: &str,
    observation: &str,
    host: &HostEvidence,
) -> Option<(Verdict, &'static str, String)> {
    match probe {
        // The sentry lets root in the sandbox make a node, but opening it reaches the sentry's
        // own emulation of the device (null, zero, ...), never a host device node.
        "mknod" => Some((
            Verdict::Blocked,
            "gvisor sentry",
            "[the node opens gVisor's emulated device: the sentry has no path to host device nodes (the host's disk, /dev/mem and /dev/kvm give ENXIO there)]".into(),
        )),
        // "root on the host" comes from gVisor's own /proc/self/uid_map (an identity map); the
        // host saw the sentry that runs the payload as another uid.
        "setuid_nnp" if observation.contains("already root on the host") => {
            let uid = host.sandbox_host_uid.filter(|u| *u != 0 && *u != u32::MAX)?;
            let verdict = if observation.contains("NoNewPrivs=1") {
                Verdict::Blocked
            } else {
                Verdict::Inconclusive
            };
            Some((
                verdict,
                "gvisor sentry",
                format!("[gVisor's uid_map is its own: the host saw the sentry running the payload as uid {uid}, not root]"),
            ))
        }
        _ => None,
    }
}

/// microVM rows: a probe that says "escaped" did what it did on the guest's own kernel, never the
/// host's. Where the probe has a host-side check, that check is the truth, and it saw nothing:
/// blocked, by the hypervisor. Where it has none (capabilities, new user namespaces, mounts
/// detached at once, a perf event...), what worked is the guest kernel's attack surface, which
/// the host evidence (QEMU running the guest as an unprivileged host uid) places behind the
/// hypervisor: not applicable to the host, said so, and counted neither way. Without that
/// evidence (QEMU's posture unread, or root), nothing is corrected.
fn vm_correction(
    has_check: bool,
    host: &HostEvidence,
) -> Option<(Verdict, Option<&'static str>, String)> {
    if has_check {
        return Some((
            Verdict::Blocked,
            Some("hypervisor"),
            "[this happened on the guest's own kernel: the host-side check saw no effect]".into(),
        ));
    }
    let uid = host
        .sandbox_host_uid
        .filter(|u| *u != 0 && *u != u32::MAX)?;
    Some((
        Verdict::NotApplicable,
        None,
        format!("[on the guest's own kernel, not the host's (the host saw QEMU run the guest as uid {uid}): the guest kernel's attack surface, behind the hypervisor; not a host escape]"),
    ))
}

/// The host-side check of a probe, if it has one: (what was checked, whether it shows an escape).
fn host_check(
    probe: &str,
    outcome: Option<&Outcome>,
    host: &HostEvidence,
) -> Option<(String, bool)> {
    let leaked = outcome.is_some_and(|o| {
        !host.secret.is_empty()
            && (o.observation.contains(&host.secret)
                || o.evidence
                    .as_deref()
                    .is_some_and(|e| e.contains(&host.secret)))
    });
    let changed = |needle: &str| host.changes.iter().any(|c| c.contains(needle));
    match probe {
        "chroot_double" | "chroot_fchdir" | "host_files" => {
            Some(("the planted secret in the probe's output".into(), leaked))
        }
        "canary_write" => Some(("the canary file unchanged".into(), !host.canary_intact)),
        "kill_sentinel" => Some(("the sentinel alive".into(), !host.sentinel_alive)),
        "ptrace_sentinel" if host.sentinel_traced => Some(("the sentinel untraced".into(), true)),
        "core_pattern" => Some(("core_pattern unchanged".into(), changed("core_pattern"))),
        "uevent_helper" => Some(("uevent_helper unchanged".into(), changed("uevent_helper"))),
        "release_agent" => Some((
            "every cgroup v1 release_agent unchanged".into(),
            changed("release_agent"),
        )),
        "net_loopback" => Some((
            "no connection to the host listener".into(),
            host.listener_connections > 0,
        )),
        "mount_proc" | "mount_sysfs" | "mount_cgroup" | "mount_blockdev" => {
            Some(("no new mount on the host".into(), changed("new host mount")))
        }
        _ => None,
    }
}

/// The layer that most likely stopped a blocked probe on `row`, from the row's mechanisms and the
/// errno.
pub fn layer(row: RowId, probe: &str, errno: Option<&str>, observation: &str) -> Option<String> {
    // agentbox's engine tiers install agentbox's seccomp filter too (gVisor's sentry applies it).
    let has_seccomp = matches!(
        row,
        RowId::Ns | RowId::PeerBwrap | RowId::OciRunc | RowId::OciCrun | RowId::Docker
    );
    let l = |s: &str| Some(s.to_string());
    const RESOURCES: &[&str] = &[
        "fork_bomb",
        "memory_hog",
        "disk_fill",
        "inode_fill",
        "cpu_hog",
    ];
    match row {
        // Nothing of the host is in a guest: whatever stopped a probe there, the first thing
        // between it and the host is the VM (for resources, its RAM, vCPUs and disk).
        RowId::Microvm if RESOURCES.contains(&probe) => return l("VM size"),
        RowId::Microvm => return l("hypervisor"),
        // The ns tier in the guest is the first layer; what it lets through (the guest's boot
        // id), the VM stops.
        RowId::MicrovmNs if probe == "leak_boot_id" => return l("hypervisor"),
        RowId::MicrovmNs => return layer(RowId::Ns, probe, errno, observation),
        _ => {}
    }
    if observation.contains("not visible") {
        return l("pid namespace");
    }

    if errno == Some("EIO") && probe == "tiocsti" {
        return l("host sysctl");
    }
    match probe {
        "fork_bomb" | "memory_hog" | "disk_fill" | "inode_fill" | "cpu_hog" => match row {
            RowId::Chroot => l("rlimit"),
            _ if row == RowId::Ns || row.engine().is_some() => l("cgroup"),
            _ => None,
        },
        "net_loopback" | "raw_socket" | "packet_socket" if errno != Some("EPERM") => {
            l("network namespace")
        }
        "leak_hostname" => l("uts namespace"),
        "host_files" | "chroot_double" | "chroot_fchdir" | "leak_mounts" => match row {
            RowId::Chroot | RowId::PeerChroot => l("chroot"),
            _ => l("mount namespace"),
        },
        // Under gVisor every syscall is the sentry's: what it refuses never reaches the host
        // kernel.
        _ if row.gvisor() && errno.is_some() => l("gvisor sentry"),
        _ => match errno {
            Some("ENOSYS") if has_seccomp => l("seccomp"),
            Some("EPERM") | Some("EACCES")
                if has_seccomp && (row == RowId::Ns || row.engine().is_some()) =>
            {
                l("seccomp or capabilities")
            }
            Some("EPERM") | Some("EACCES") => l("capabilities"),
            Some("ENOENT") | Some("ENODEV") | Some("ENXIO") => l("mount namespace (absent)"),
            _ => None,
        },
    }
}

/// One result per probe of `probes`, in order.
pub fn decide(
    row: RowId,
    probes: &[ProbeInfo],
    outcomes: &[Outcome],
    host: &HostEvidence,
) -> Vec<ProbeResult> {
    probes
        .iter()
        .map(|info| {
            let outcome = outcomes.iter().find(|o| o.id == info.id);
            let (mut verdict, attempted, errno, mut observation) = match outcome {
                Some(o) => (
                    o.verdict,
                    o.attempted.clone(),
                    o.errno.clone(),
                    o.observation.clone(),
                ),
                None => (
                    Verdict::Inconclusive,
                    String::new(),
                    None,
                    "no result from the probe".to_string(),
                ),
            };
            let check = host_check(&info.id, outcome, host);
            if let Some((_, escaped)) = &check {
                if *escaped {
                    if verdict != Verdict::Escaped {
                        observation = format!("{observation} [the host saw the effect]");
                    }
                    verdict = Verdict::Escaped;
                } else if verdict == Verdict::Escaped
                    && matches!(
                        info.id.as_str(),
                        "kill_sentinel" | "canary_write" | "net_loopback"
                    )
                {
                    observation = format!("{observation} [but the host saw no effect]");
                    verdict = Verdict::Inconclusive;
                }
            }
            let mut corrected_layer = None;
            if row.gvisor() && verdict == Verdict::Escaped && check.is_none() {
                if let Some((v, l, note)) = gvisor_correction(&info.id, &observation, host) {
                    verdict = v;
                    corrected_layer = (v == Verdict::Blocked).then(|| l.to_string());
                    observation = format!("{observation} {note}");
                }
            }
            if row.vm() && verdict == Verdict::Escaped {
                let seen = check.as_ref().is_some_and(|(_, escaped)| *escaped);
                if !seen {
                    if let Some((v, l, note)) = vm_correction(check.is_some(), host) {
                        verdict = v;
                        corrected_layer = l.map(str::to_string);
                        observation = format!("{observation} {note}");
                    }
                }
            }
            let layer = corrected_layer.or_else(|| {
                (verdict == Verdict::Blocked)
                    .then(|| layer(row, &info.id, errno.as_deref(), &observation))
                    .flatten()
            });
            // Never publish the planted secret.
            if !host.secret.is_empty() {
                observation = observation.replace(&host.secret, "<secret>");
            }
            ProbeResult {
                probe: info.id.clone(),
                verdict,
                attempted,
                errno,
                observation,
                layer,
                host_check: check.map(|(what, _)| what),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> ProbeInfo {
        ProbeInfo {
            id: id.into(),
            title: id.into(),
            category: "x".into(),
        }
    }

    fn said(id: &str, v: Verdict) -> Outcome {
        Outcome::new(id, v, "try").observed("saw")
    }

    #[test]
    fn the_host_evidence_wins_over_the_probe() {
        let probes = [
            info("canary_write"),
            info("kill_sentinel"),
            info("host_files"),
            info("bpf"),
        ];
        let host = HostEvidence {
            secret: "s3cret".into(),
            canary_intact: false,
            sentinel_alive: true,
            ..Default::default()
        };
        let outcomes = [
            said("canary_write", Verdict::Blocked),
            said("kill_sentinel", Verdict::Escaped),
            Outcome::new("host_files", Verdict::Blocked, "read").evidence("x s3cret y"),
        ];
        let r = decide(RowId::Ns, &probes, &outcomes, &host);
        assert_eq!(r[0].verdict, Verdict::Escaped, "{:?}", r[0]);
        assert_eq!(r[1].verdict, Verdict::Inconclusive, "{:?}", r[1]);
        assert_eq!(r[2].verdict, Verdict::Escaped, "{:?}", r[2]);
        assert_eq!(r[3].verdict, Verdict::Inconclusive);
        assert_eq!(r[3].observation, "no result from the probe");
        assert!(r.iter().all(|p| !p.observation.contains("s3cret")));
    }

    #[test]
    fn gvisor_escapes_seen_only_in_its_emulated_kernel_are_corrected_by_the_host() {
        let probes = [info("mknod"), info("setuid_nnp")];
        let outcomes = [
            said("mknod", Verdict::Escaped),
            Outcome::new("setuid_nnp", Verdict::Escaped, "try")
                .observed("already root on the host (euid 0, mapped to host uid 0); NoNewPrivs=1"),
        ];
        let host = HostEvidence {
            sandbox_host_uid: Some(65534),
            canary_intact: true,
            sentinel_alive: true,
            ..Default::default()
        };
        let r = decide(RowId::Gvisor, &probes, &outcomes, &host);
        assert_eq!(r[0].verdict, Verdict::Blocked, "{:?}", r[0]);
        assert_eq!(r[1].verdict, Verdict::Blocked, "{:?}", r[1]);
        assert_eq!(r[1].layer.as_deref(), Some("gvisor sentry"));
        assert!(r[1].observation.contains("uid 65534"), "{:?}", r[1]);
        // Not on other rows, and not when the host saw a root sentry (or saw nothing).
        let r = decide(RowId::OciRunc, &probes, &outcomes, &host);
        assert!(r.iter().all(|p| p.verdict == Verdict::Escaped), "{r:?}");
        let root = HostEvidence {
            sandbox_host_uid: Some(0),
            ..host.clone()
        };
        let r = decide(RowId::PeerRunsc, &probes, &outcomes, &root);
        assert_eq!(r[1].verdict, Verdict::Escaped, "{:?}", r[1]);
    }

    #[test]
    fn vm_escapes_reach_only_the_guest_kernel_and_the_host_checks_decide() {
        let probes = [
            info("mount_proc"),
            info("capabilities"),
            info("kill_sentinel"),
            info("leak_boot_id"),
            info("canary_write"),
        ];
        let outcomes = [
            said("mount_proc", Verdict::Escaped),
            said("capabilities", Verdict::Escaped),
            Outcome::new("kill_sentinel", Verdict::Blocked, "kill")
                .observed("not visible: pid namespace"),
            said("leak_boot_id", Verdict::Blocked),
            said("canary_write", Verdict::Blocked),
        ];
        let host = HostEvidence {
            sandbox_host_uid: Some(2_147_418_125),
            canary_intact: true,
            sentinel_alive: true,
            ..Default::default()
        };
        for row in [RowId::Microvm, RowId::MicrovmNs] {
            let r = decide(row, &probes, &outcomes, &host);
            // A host-side check that saw nothing: blocked, by the hypervisor.
            assert_eq!(r[0].verdict, Verdict::Blocked, "{:?}", r[0]);
            assert_eq!(r[0].layer.as_deref(), Some("hypervisor"));
            // No host-side check: the guest kernel's, said so, counted neither way.
            assert_eq!(r[1].verdict, Verdict::NotApplicable, "{:?}", r[1]);
            assert!(r[1].observation.contains("uid 2147418125"), "{:?}", r[1]);
            assert_eq!(r[3].layer.as_deref(), Some("hypervisor"), "{:?}", r[3]);
        }
        let plain = decide(RowId::Microvm, &probes, &outcomes, &host);
        assert_eq!(plain[2].layer.as_deref(), Some("hypervisor"));
        let layered = decide(RowId::MicrovmNs, &probes, &outcomes, &host);
        assert_eq!(layered[2].layer.as_deref(), Some("pid namespace"));
        // The host's evidence still wins: an effect seen on the host is an escape.
        let seen = HostEvidence {
            canary_intact: false,
            ..host.clone()
        };
        let r = decide(RowId::Microvm, &probes, &outcomes, &seen);
        assert_eq!(r[4].verdict, Verdict::Escaped, "{:?}", r[4]);
        // Without QEMU's posture there is no evidence to correct with.
        let unread = HostEvidence {
            sandbox_host_uid: None,
            ..host
        };
        let r = decide(RowId::Microvm, &probes, &outcomes, &unread);
        assert_eq!(r[1].verdict, Verdict::Escaped, "{:?}", r[1]);
        // Other rows are never corrected.
        let r = decide(
            RowId::Ns,
            &probes,
            &outcomes,
            &HostEvidence {
                sandbox_host_uid: Some(5),
                canary_intact: true,
                sentinel_alive: true,
                ..Default::default()
            },
        );
        assert_eq!(r[1].verdict, Verdict::Escaped);
    }

    #[test]
    fn blocked_probes_name_a_layer() {
        assert_eq!(
            layer(RowId::Ns, "bpf", Some("ENOSYS"), "").as_deref(),
            Some("seccomp")
        );
        assert_eq!(
            layer(RowId::PeerChroot, "bpf", Some("EPERM"), "").as_deref(),
            Some("capabilities")
        );
        assert_eq!(
            layer(RowId::Ns, "memory_hog", None, "").as_deref(),
            Some("cgroup")
        );
        assert_eq!(
            layer(RowId::Chroot, "fork_bomb", None, "").as_deref(),
            Some("rlimit")
        );
        assert_eq!(
            layer(
                RowId::Ns,
                "kill_sentinel",
                None,
                "not visible: pid namespace"
            )
            .as_deref(),
            Some("pid namespace")
        );
    }
}
