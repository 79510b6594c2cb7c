//! The sandboxed process as the host sees it: capabilities, no_new_privs, seccomp mode, host uid,
//! namespaces shared with the cell (which stands for the host), open descriptors, cgroups.

use std::collections::HashMap;

use crate::model::Posture;

const NAMESPACES: &[&str] = &["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];

/// The value of `key:` in a /proc/<pid>/status text.
pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// Parent pid from a /proc/<pid>/stat text (the field after the parenthesised command).
pub fn parent_from_stat(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` is the probe program itself (`<binary> __probe ...`), not a wrapper that has
/// `__probe` among its arguments (`agentbox run ... -- /opt/agentbox-probe __probe`).
fn is_probe(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).nth(1) == Some(b"__probe"))
        .unwrap_or(false)
}

/// The probe program's main process among the descendants of `root`: a `__probe` process whose
/// parent is not one (the probe forks a child per probe).
pub fn find_probe(root: u32) -> Option<u32> {
    let parents = parent_map();
    // `root` itself too: a wrapper that execs the probe (chroot) is the probe.
    descendants(&parents, root)
        .into_iter()
        .chain([root])
        .filter(|p| is_probe(*p) && !parents.get(p).is_some_and(|parent| is_probe(*parent)))
        .min()
}

/// The argv of `pid`.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// gVisor's processes among the descendants of `root`: its sentry (`runsc-sandbox`, which runs
/// the payload: the host never sees the payload itself) once it runs something (a child: a stub
/// of the ptrace or systrap platform) or `settled` says to stop waiting for one, and its gofer
/// (`runsc-gofer`, which serves the sentry's files).
pub fn find_sentry(root: u32, settled: bool) -> Option<(u32, Option<u32>)> {
    let parents = parent_map();
    let tree = descendants(&parents, root);
    let named = |name: &str| {
        tree.iter()
            .copied()
            .filter(|p| cmdline(*p).first().is_some_and(|a| a.ends_with(name)))
            .min()
    };
    let sentry = named("runsc-sandbox")?;
    let running = parents.values().any(|parent| *parent == sentry);
    (running || settled).then(|| (sentry, named("runsc-gofer")))
}

/// The QEMU of a microVM row among the descendants of `root` (`agentbox run`, its jail, QEMU):
/// the guest's processes are no host processes, QEMU is what the host has.
pub fn find_qemu(root: u32) -> Option<u32> {
    let parents = parent_map();
    descendants(&parents, root)
        .into_iter()
        .filter(|p| {
            cmdline(*p).first().is_some_and(|a| {
                a.rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("qemu-system"))
            })
        })
        .min()
}

/// The posture of a microVM row's QEMU, noted as such.
pub fn read_qemu(qemu: u32) -> Option<Posture> {
    let mut posture = read(qemu)?;
    posture.note = Some(format!(
        "microVM: the payload runs on the guest's own kernel and is no host process; this is QEMU (pid {qemu}), jailed by agentbox, as the host sees it"
    ));
    Some(posture)
}

impl Posture {
    /// Whether the note carries the gofer's reading (`read_sentry` found it alive).
    pub fn note_names_gofer(&self) -> bool {
        self.note
            .as_deref()
            .is_some_and(|n| n.contains("runsc-gofer"))
    }
}

/// The posture of gVisor's sentry, noted as such, with the gofer's in the note.
pub fn read_sentry(sentry: u32, gofer: Option<u32>) -> Option<Posture> {
    let mut posture = read(sentry)?;
    let mut note = format!(
        "gVisor: the payload runs on gVisor's sentry and is no host process; this is the sentry (runsc-sandbox, pid {sentry}) as the host sees it"
    );
    if let Some(g) = gofer.and_then(|g| read(g).map(|p| (g, p))) {
        let (pid, p) = g;
        note.push_str(&format!(
            "; its gofer (runsc-gofer, pid {pid}): host uid {}, CapEff {}, seccomp {}, no_new_privs {}, own namespaces {}",
            if p.host_uid == u32::MAX { "?".to_string() } else { p.host_uid.to_string() },
            p.cap_eff,
            p.seccomp,
            u8::from(p.no_new_privs),
            if p.own_namespaces.is_empty() { "none".to_string() } else { p.own_namespaces.join(",") }
        ));
    }
    posture.note = Some(note);
    Some(posture)
}

fn parent_map() -> HashMap<u32, u32> {
    pids()
        .into_iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            Some((p, parent_from_stat(&stat)?))
        })
        .collect()
}

/// Every descendant of `root` (not `root` itself), at any depth: the payload of an engine tier is
/// a grandchild or deeper (agentbox, its engine child, the runtime, the container's init).
fn descendants(parents: &HashMap<u32, u32>, root: u32) -> Vec<u32> {
    parents
        .keys()
        .copied()
        .filter(|&p| {
            let mut p = p;
            for _ in 0..64 {
                match parents.get(&p) {
                    Some(&parent) if parent == root => return true,
                    Some(&parent) if parent != 0 => p = parent,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// The confinement fields of every thread of `pid` that differ from the main thread's `status`.
fn thread_differences(pid: u32, status: &str) -> Vec<String> {
    const FIELDS: &[&str] = &["CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp", "Uid"];
    let mut differences = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return differences;
    };
    for task in tasks.flatten() {
        let Ok(theirs) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for field in FIELDS {
            let (a, b) = (status_field(status, field), status_field(&theirs, field));
            if a != b {
                differences.push(format!(
                    "thread {}: {field} {} (main thread {})",
                    task.file_name().to_string_lossy(),
                    b.unwrap_or("?"),
                    a.unwrap_or("?")
                ));
            }
        }
    }
    differences
}

/// The tracer pid of `pid` (0 when untraced), if it still exists.
pub fn tracer_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, "TracerPid")?.parse().ok()
}

/// Reads the posture of `pid`; None if it vanished meanwhile.
pub fn read(pid: u32) -> Option<Posture> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| status_field(&status, k).unwrap_or("").to_string();
    let (mut own, mut shared) = (Vec::new(), Vec::new());
    for ns in NAMESPACES {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).ok();
        match (theirs, ours) {
            (Some(t), Some(o)) if t == o => shared.push(ns.to_string()),
            (Some(_), Some(_)) => own.push(ns.to_string()),
            _ => {}
        }
    }
    let extra_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            let mut fds: Vec<(u32, String)> = d
                .flatten()
                .filter_map(|e| {
                    let n: u32 = e.file_name().to_str()?.parse().ok()?;
                    (n > 2).then(|| {
                        let target = std::fs::read_link(e.path())
                            .map(|t| t.display().to_string())
                            .unwrap_or_default();
                        (n, target)
                    })
                })
                .collect();
            fds.sort();
            fds.into_iter()
                .map(|(n, t)| format!("{n} -> {t}"))
                .collect()
        })
        .unwrap_or_default();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let posture = Posture {
        cap_eff: field("CapEff"),
        cap_prm: field("CapPrm"),
        cap_bnd: field("CapBnd"),
        no_new_privs: field("NoNewPrivs") == "1",
        seccomp: field("Seccomp").parse().unwrap_or(0),
        host_uid: field("Uid")
            .split_whitespace()
            .nth(1)
            .and_then(|u| u.parse().ok())
            .unwrap_or(u32::MAX),
        shared_namespaces: shared,
        own_namespaces: own,
        extra_fds,
        cgroup,
        threads: field("Threads").parse().unwrap_or(0),
        thread_differences: Vec::new(),
        note: None,
    };
    let mut posture = posture;
    posture.thread_differences = thread_differences(pid, &status);
    // A process caught between fork and exec has no status worth keeping.
    (!posture.cap_eff.is_empty()).then_some(posture)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_and_parents_parse() {
        let status = "Name:\tx\nUid:\t0\t268435456\t0\t0\nCapEff:\t0000000000000000\nSeccomp:\t2\n";
        assert_eq!(status_field(status, "CapEff"), Some("0000000000000000"));
        assert_eq!(status_field(status, "Seccomp"), Some("2"));
        assert_eq!(status_field(status, "Cap"), None);
        assert_eq!(parent_from_stat("42 (a b) c) S 17 42 42"), Some(17));
        assert_eq!(parent_from_stat("garbage"), None);
    }

    #[test]
    fn this_process_reads_as_sharing_every_namespace() {
        let me = read(std::process::id()).unwrap_or_else(|| panic!("own posture"));
        assert!(me.own_namespaces.is_empty(), "{me:?}");
        assert!(me.shared_namespaces.contains(&"pid".to_string()), "{me:?}");
        assert!(me.threads >= 1);
    }
}
