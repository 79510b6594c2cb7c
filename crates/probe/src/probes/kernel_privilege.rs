//! Probes of privilege: typing into the terminal (TIOCSTI), setuid-root programs with
//! no_new_privs off, and dangerous capabilities. Only the harness's own pty is written to (one
//! space); setuid programs are looked at, never run.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use agentbox_sys::{attempt_kernel, fd, mount};

use super::kernel::{
    errno_name, in_init_user_ns, mountinfo, read_value, status, sys_refusal, sysctl_note, uid_map,
};
use super::kernel_env::{
    cap, cap_names, dangerous_caps, errno, host_uid, mount_of, setuid_verdict, split_dev,
    tty_nr_of_stat, SetuidFile,
};
use crate::{Context, Outcome, Verdict};

pub(super) fn tiocsti(_: &Context) -> Outcome {
    let id = "tiocsti";
    let attempted = "ioctl(0, TIOCSTI, \" \"): push one space into the terminal's input";
    if !fd::is_terminal(0) {
        return Outcome::new(id, Verdict::NotApplicable, attempted)
            .observed("fd 0 is not a terminal");
    }
    let note = sysctl_note("dev.tty.legacy_tiocsti", "/proc/sys/dev/tty/legacy_tiocsti");
    let legacy = read_value("/proc/sys/dev/tty/legacy_tiocsti").as_deref() == Some("1");
    match attempt_kernel::inject_terminal_byte(0, b' ') {
        Ok(()) => Outcome::new(id, Verdict::Escaped, attempted).observed(format!(
            "a space was pushed into the input of the terminal on fd 0: on a terminal shared with the host this types commands there; {note}"
        )),
        Err(e) if e.errno() == errno::EIO => Outcome::new(id, Verdict::Blocked, attempted)
            .errno(Some(errno_name(errno::EIO)))
            .observed(format!("EIO: refused by the host's dev.tty.legacy_tiocsti=0 (layer: host sysctl); {note}")),
        Err(e) if e.errno() == errno::EPERM && is_controlling_terminal_of_fd0() && legacy => {
            Outcome::new(id, Verdict::Blocked, attempted)
                .errno(Some(errno_name(errno::EPERM)))
                .observed(format!(
                    "refused by the seccomp filter (or an LSM): fd 0 is the controlling terminal and legacy TIOCSTI is on, so the kernel itself would allow it; {note}"
                ))
        }
        Err(e) => sys_refusal(
            id,
            attempted,
            &e,
            Some(cap::SYS_ADMIN),
            &format!("without CAP_SYS_ADMIN TIOCSTI works only on the caller's controlling terminal; {note}"),
        ),
    }
}

/// Whether fd 0 is this process's controlling terminal (TIOCSTI's own check without
/// CAP_SYS_ADMIN).
fn is_controlling_terminal_of_fd0() -> bool {
    let Some(tty) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| tty_nr_of_stat(&s))
    else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/0")
        .is_ok_and(|m| tty != 0 && split_dev(m.rdev()) == split_dev(tty))
}

/// The directories searched for setuid programs; those marked `true` one level down as well.
const SETUID_DIRS: [(&str, bool); 6] = [
    ("/usr/bin", false),
    ("/bin", false),
    ("/usr/sbin", false),
    ("/sbin", false),
    ("/usr/lib", true),
    ("/usr/libexec", true),
];

/// Whether the mount holding `path` is nosuid and noexec: from statvfs, else from mountinfo.
fn mount_flags(path: &Path) -> (bool, bool) {
    if let Ok(flags) = mount::locked_flags(path) {
        return (flags & mount::MS_NOSUID != 0, flags & mount::MS_NOEXEC != 0);
    }
    let entries = mountinfo().unwrap_or_default();
    match mount_of(&entries, &path.to_string_lossy()) {
        Some(m) => (
            m.options.iter().any(|o| o == "nosuid"),
            m.options.iter().any(|o| o == "noexec"),
        ),
        None => (false, false),
    }
}

/// The setuid files owned by uid 0 (as this user namespace sees it) in [`SETUID_DIRS`], and the
/// number of setuid files of other owners (including unmapped ones, shown as the overflow uid:
/// the kernel ignores their setuid bit here).
fn find_setuid_root(euid: u32, owner_is_host_root: bool) -> (Vec<SetuidFile>, usize) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (dir, deeper) in SETUID_DIRS {
        dirs.push(PathBuf::from(dir));
        if deeper {
            if let Ok(entries) = std::fs::read_dir(dir) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }
    let mut seen_dirs = HashSet::new();
    let mut seen_files = HashSet::new();
    let mut found = Vec::new();
    let mut others = 0;
    for dir in dirs {
        // /bin is often a link to /usr/bin: list each directory once.
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if !seen_dirs.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(m) = entry.metadata() else { continue };
            if !m.file_type().is_file() || m.mode() & 0o4000 == 0 {
                continue;
            }
            if !seen_files.insert((m.dev(), m.ino())) {
                continue;
            }
            if m.uid() != 0 {
                others += 1;
                continue;
            }
            let path = entry.path();
            let mode = m.mode();
            let executable = mode & 0o001 != 0
                || (euid == 0 && mode & 0o111 != 0)
                || (m.uid() == euid && mode & 0o100 != 0);
            let (nosuid, noexec) = mount_flags(&path);
            found.push(SetuidFile {
                path: path.display().to_string(),
                executable,
                nosuid,
                noexec,
                host_root: owner_is_host_root,
            });
        }
    }
    (found, others)
}

pub(super) fn setuid_nnp(_: &Context) -> Outcome {
    let id = "setuid_nnp";
    let attempted = "read NoNewPrivs and the euid; list setuid-root files in /usr/bin, /bin, /usr/sbin, /sbin, /usr/lib/*, /usr/libexec/* and the nosuid/noexec flags of their mounts (nothing is run)";
    let status = status();
    let nnp = status
        .as_ref()
        .and_then(|s| s.no_new_privs)
        .or_else(|| attempt_kernel::no_new_privs().ok());
    let euid = status
        .as_ref()
        .and_then(|s| s.uids)
        .map_or_else(attempt_kernel::effective_uid, |u| u[1]);
    let map = uid_map();
    // Without a uid_map (no /proc), ids are taken as the host's.
    let to_host = |uid: u32| match &map {
        Some(m) => host_uid(m, uid),
        None => Some(uid),
    };
    let host_root = euid == 0 && to_host(0) == Some(0);
    let (files, others) = find_setuid_root(euid, to_host(0) == Some(0));
    let (verdict, why) = setuid_verdict(host_root, nnp, &files);
    let nnp_text = nnp.map_or("unknown".to_string(), |v| u8::from(v).to_string());
    let host_text = to_host(euid).map_or("unmapped".to_string(), |u| u.to_string());
    let evidence: Vec<String> = files
        .iter()
        .map(|f| {
            let mut flags = Vec::new();
            if f.nosuid {
                flags.push("nosuid");
            }
            if f.noexec {
                flags.push("noexec");
            }
            if !f.executable {
                flags.push("not executable");
            }
            if !f.host_root {
                flags.push("owner not host root");
            }
            if flags.is_empty() {
                f.path.clone()
            } else {
                format!("{} ({})", f.path, flags.join(", "))
            }
        })
        .collect();
    Outcome::new(id, verdict, attempted)
        .observed(format!(
            "{why}; {others} setuid file(s) of other or unmapped owners; euid {euid} (host uid {host_text}), NoNewPrivs={nnp_text}{}",
            if map.is_none() {
                ", uid_map unreadable"
            } else {
                ""
            }
        ))
        .evidence(evidence.join("\n"))
}

pub(super) fn capabilities(_: &Context) -> Outcome {
    let id = "capabilities";
    let attempted =
        "read CapEff/CapPrm/CapBnd/CapAmb from /proc/self/status (capget/prctl without /proc)";
    let from_status = status().and_then(|s| {
        Some((
            s.cap_eff?,
            s.cap_prm?,
            s.cap_bnd?,
            s.cap_amb.unwrap_or(0),
            "/proc/self/status",
        ))
    });
    let sets = from_status.or_else(|| {
        attempt_kernel::capability_sets().ok().map(|c| {
            (
                c.effective,
                c.permitted,
                c.bounding,
                c.ambient,
                "capget/prctl",
            )
        })
    });
    let Some((eff, prm, bnd, amb, source)) = sets else {
        return Outcome::new(id, Verdict::Inconclusive, attempted)
            .observed("neither /proc/self/status nor capget could be read");
    };
    let list = |mask: u64| {
        let names = cap_names(mask);
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(",")
        }
    };
    let evidence = format!(
        "CapEff {eff:016x}: {}\nCapPrm {prm:016x}: {}\nCapBnd {bnd:016x}: {}\nCapAmb {amb:016x}: {}",
        list(eff),
        list(prm),
        list(bnd),
        list(amb)
    );
    let scope = match in_init_user_ns() {
        Some(true) => "in the initial user namespace (they act on the host)",
        Some(false) => "in a child user namespace (they act only on what it owns)",
        None => "user namespace unknown",
    };
    let danger = dangerous_caps(eff);
    let outcome = if danger.is_empty() {
        Outcome::new(id, Verdict::Blocked, attempted).observed(format!(
            "no dangerous capability is effective ({} effective, from {source}); {scope}",
            cap_names(eff).len()
        ))
    } else {
        Outcome::new(id, Verdict::Escaped, attempted).observed(format!(
            "effective: {} (from {source}); {scope}",
            danger.join(", ")
        ))
    };
    outcome.evidence(evidence)
}
