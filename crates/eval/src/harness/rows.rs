//! The rows of an evaluation: agentbox's tiers and the peer tools they are compared with, each a
//! way to run one command in a sandbox. Pure: availability comes from a `Which` lookup, and a row
//! only builds argv vectors.

use serde::{Deserialize, Serialize};

use crate::model::RowKind;

/// Where the probe binary (agentbox itself, statically linked) appears inside every sandbox.
pub const PROBE_IN_SANDBOX: &str = "/opt/agentbox-probe";

/// The limits every agentbox tier runs the probes with: what a careful user would set.
pub const EVAL_LIMITS: &[&str] = &["--memory", "512M", "--pids", "256", "--disk", "256M"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowId {
    /// agentbox's `ns` tier.
    Ns,
    /// agentbox's `chroot` tier (not a security boundary, labelled so).
    Chroot,
    /// `chroot` as root into a root with the host's /usr: the weak reference.
    PeerChroot,
    /// `unshare` with every namespace, mapped root, fresh /proc; the host's file system.
    PeerUnshare,
    /// bubblewrap with every namespace and read-only host /usr.
    PeerBwrap,
    PeerFirejail,
    PeerRunc,
    PeerCrun,
    PeerRunsc,
    PeerNspawn,
}

impl RowId {
    pub const ALL: [RowId; 10] = [
        RowId::Ns,
        RowId::Chroot,
        RowId::PeerChroot,
        RowId::PeerUnshare,
        RowId::PeerBwrap,
        RowId::PeerFirejail,
        RowId::PeerRunc,
        RowId::PeerCrun,
        RowId::PeerRunsc,
        RowId::PeerNspawn,
    ];

    pub fn id(self) -> &'static str {
        match self {
            RowId::Ns => "ns",
            RowId::Chroot => "chroot",
            RowId::PeerChroot => "peer:chroot",
            RowId::PeerUnshare => "peer:unshare",
            RowId::PeerBwrap => "peer:bwrap",
            RowId::PeerFirejail => "peer:firejail",
            RowId::PeerRunc => "peer:runc",
            RowId::PeerCrun => "peer:crun",
            RowId::PeerRunsc => "peer:runsc",
            RowId::PeerNspawn => "peer:nspawn",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RowId::Ns => "agentbox ns",
            RowId::Chroot => "agentbox chroot (not a boundary)",
            RowId::PeerChroot => "chroot as root",
            RowId::PeerUnshare => "unshare -Ufpmn -r",
            RowId::PeerBwrap => "bubblewrap --unshare-all --cap-drop ALL",
            RowId::PeerFirejail => "firejail",
            RowId::PeerRunc => "runc",
            RowId::PeerCrun => "crun",
            RowId::PeerRunsc => "runsc (gVisor)",
            RowId::PeerNspawn => "systemd-nspawn",
        }
    }

    pub fn parse(text: &str) -> Option<RowId> {
        RowId::ALL.into_iter().find(|r| r.id() == text)
    }

    pub fn kind(self) -> RowKind {
        match self {
            RowId::Ns | RowId::Chroot => RowKind::Tier,
            _ => RowKind::Peer,
        }
    }

    /// The host binary the row needs (None: agentbox itself).
    pub fn tool(self) -> Option<(&'static str, &'static str)> {
        match self {
            RowId::Ns | RowId::Chroot => None,
            RowId::PeerChroot => Some(("chroot", "coreutils")),
            RowId::PeerUnshare => Some(("unshare", "util-linux")),
            RowId::PeerBwrap => Some(("bwrap", "bubblewrap")),
            RowId::PeerFirejail => Some(("firejail", "firejail")),
            RowId::PeerRunc => Some(("runc", "runc")),
            RowId::PeerCrun => Some(("crun", "crun")),
            RowId::PeerRunsc => Some(("runsc", "runsc")),
            RowId::PeerNspawn => Some(("systemd-nspawn", "systemd-container")),
        }
    }

    /// Rows this version can drive. The OCI runtimes and nspawn need bundles that the `oci` and
    /// `nspawn` tiers will build; until then they are listed, not run.
    pub fn driven(self) -> bool {
        matches!(
            self,
            RowId::Ns | RowId::Chroot | RowId::PeerChroot | RowId::PeerUnshare | RowId::PeerBwrap
        )
    }

    /// The probes of a weak row really act on the host's kernel as root: its cell gets a throwaway
    /// outer pid and mount namespace (every row does, in fact; this says why it matters).
    pub fn weak(self) -> bool {
        matches!(self, RowId::Chroot | RowId::PeerChroot | RowId::PeerUnshare)
    }
}

/// How to run `argv` in the row's sandbox. `probe_host` is the probe binary on the host; `root` is
/// the prepared root directory for rows that chroot into one (`peer:chroot`).
pub fn command(row: RowId, probe_host: &str, root: &str, argv: &[&str]) -> Vec<String> {
    let probe_bind = format!("{probe_host}:{PROBE_IN_SANDBOX}");
    let mut cmd: Vec<String> = match row {
        RowId::Ns => [probe_host, "run", "--tier", "ns", "--ro", &probe_bind]
            .iter()
            .chain(EVAL_LIMITS)
            .chain(&["--cpus", "1", "--cwd", "/tmp", "--"])
            .map(|s| s.to_string())
            .collect(),
        RowId::Chroot => [probe_host, "run", "--tier", "chroot", "--ro", &probe_bind]
            .iter()
            .chain(EVAL_LIMITS)
            .chain(&["--cwd", "/tmp", "--"])
            .map(|s| s.to_string())
            .collect(),
        RowId::PeerChroot => vec!["chroot".into(), root.into()],
        RowId::PeerUnshare => [
            "unshare",
            "--user",
            "--map-root-user",
            "--fork",
            "--pid",
            "--mount",
            "--net",
            "--ipc",
            "--uts",
            "--cgroup",
            "--mount-proc",
            "--",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        RowId::PeerBwrap => [
            "bwrap",
            "--unshare-all",
            // Run as root, bwrap keeps every capability unless told otherwise.
            "--cap-drop",
            "ALL",
            "--die-with-parent",
            "--new-session",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--ro-bind",
            probe_host,
            PROBE_IN_SANDBOX,
            "--chdir",
            "/tmp",
            "--",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        _ => Vec::new(),
    };
    // unshare runs on the host's own file system: the probe is found where it is.
    let probe = match row {
        RowId::PeerUnshare => probe_host,
        _ => PROBE_IN_SANDBOX,
    };
    cmd.extend(argv.iter().map(|a| {
        if *a == PROBE_IN_SANDBOX {
            probe.to_string()
        } else {
            a.to_string()
        }
    }));
    cmd
}

/// The writable scratch directory inside the row's sandbox.
pub fn scratch(row: RowId, workdir: &str) -> String {
    match row {
        // unshare shares the host's file system: its scratch is a tmpfs the cell mounts privately.
        RowId::PeerUnshare => format!("{workdir}/scratch"),
        _ => "/tmp".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_only_tiers_are_tiers() {
        for row in RowId::ALL {
            assert_eq!(RowId::parse(row.id()), Some(row));
            assert_eq!(row.kind() == RowKind::Tier, row.tool().is_none());
        }
    }

    #[test]
    fn the_probe_is_mapped_into_every_sandbox() {
        let argv = [PROBE_IN_SANDBOX, "__probe"];
        let ns = command(RowId::Ns, "/x/agentbox", "/r", &argv);
        assert_eq!(ns[0], "/x/agentbox");
        assert!(ns.contains(&"/x/agentbox:/opt/agentbox-probe".to_string()));
        assert_eq!(ns[ns.len() - 2..], ["/opt/agentbox-probe", "__probe"]);
        let chroot = command(RowId::PeerChroot, "/x/agentbox", "/r", &argv);
        assert_eq!(chroot, ["chroot", "/r", "/opt/agentbox-probe", "__probe"]);
        let unshare = command(RowId::PeerUnshare, "/x/agentbox", "/r", &argv);
        assert_eq!(unshare[unshare.len() - 2..], ["/x/agentbox", "__probe"]);
    }
}
