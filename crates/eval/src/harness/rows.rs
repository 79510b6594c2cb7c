//! The rows of an evaluation: agentbox's tiers and the peer tools they are compared with, each a
//! way to run one command in a sandbox. Pure: availability comes from a `Which` lookup, and a row
//! only builds argv vectors and names the paths under the row's work directory that the cell
//! prepares (the root, OCI bundles and runtime state); it never touches them.

use serde::{Deserialize, Serialize};

use crate::model::RowKind;

/// Where the probe binary (agentbox itself, statically linked) appears inside every sandbox.
pub const PROBE_IN_SANDBOX: &str = "/opt/agentbox-probe";

/// Where the probe binary is in the microVM rows' image: a copy (nothing of the host reaches a
/// guest), under /usr so that `microvm+ns`'s inner `ns` tier, whose root is the guest's /usr and
/// a generated /etc, sees it too.
pub const PROBE_IN_VM: &str = "/usr/bin/agentbox-probe";

/// The limits every agentbox tier runs the probes with: what a careful user would set.
pub const EVAL_LIMITS: &[&str] = &["--memory", "512M", "--pids", "256", "--disk", "256M"];

/// `EVAL_LIMITS`' memory and pids, as the OCI rows' `linux.resources` give them.
pub const EVAL_MEMORY_BYTES: u64 = 512 << 20;
pub const EVAL_PIDS: u64 = 256;

/// Ends the container id in an OCI row's argv; `instance` replaces it before every run, so runs
/// (parallel ones included) never share an id. Not valid in an id: an argv run as is fails.
pub const FRESH_ID: &str = "{fresh}";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowId {
    /// agentbox's `ns` tier.
    Ns,
    /// agentbox's `chroot` tier (not a security boundary, labelled so).
    Chroot,
    /// agentbox's `wasm` tier: WAT probe modules where a probe has a WASI form, a reason where not.
    Wasm,
    /// agentbox's engine tiers: `agentbox run --tier oci --runtime runc|crun`, `--tier gvisor`,
    /// `--tier nspawn`, `--tier docker`: the same engines as the peers below, driven from
    /// agentbox's policy (its mount plan, uid slot, limits and network `none`).
    OciRunc,
    OciCrun,
    Gvisor,
    Nspawn,
    Docker,
    /// agentbox's microVM tiers: `agentbox run --tier microvm|microvm+ns --image DIR`, DIR an
    /// image the cell makes (`vm_image_dir`). The plain tier refuses `--pids` (its guest agent
    /// caps no processes), so its row runs without it, and says so in its label.
    Microvm,
    MicrovmNs,
    /// `chroot` as root into a root with the host's /usr: the weak reference.
    PeerChroot,
    /// `unshare` with every namespace, mapped root, fresh /proc; the host's file system.
    PeerUnshare,
    /// bubblewrap with every namespace and read-only host /usr.
    PeerBwrap,
    /// firejail without a profile: private home, no network, no capabilities, its seccomp filter.
    PeerFirejail,
    /// The OCI runtimes, each with `runc spec`'s default container plus the eval limits.
    PeerRunc,
    PeerCrun,
    /// gVisor on its ptrace platform (its kvm platform hangs on this kind of host).
    PeerRunsc,
    /// systemd-nspawn with a user namespace, read-only root and no network.
    PeerNspawn,
}

impl RowId {
    pub const ALL: [RowId; 18] = [
        RowId::Ns,
        RowId::Chroot,
        RowId::Wasm,
        RowId::OciRunc,
        RowId::OciCrun,
        RowId::Gvisor,
        RowId::Nspawn,
        RowId::Docker,
        RowId::Microvm,
        RowId::MicrovmNs,
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
            RowId::Wasm => "wasm",
            RowId::OciRunc => "oci-runc",
            RowId::OciCrun => "oci-crun",
            RowId::Gvisor => "gvisor",
            RowId::Nspawn => "nspawn",
            RowId::Docker => "docker",
            RowId::Microvm => "microvm",
            RowId::MicrovmNs => "microvm+ns",
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
            RowId::Wasm => "agentbox wasm (wasmtime, WASI)",
            RowId::OciRunc => "agentbox oci (runc)",
            RowId::OciCrun => "agentbox oci (crun)",
            RowId::Gvisor => "agentbox gvisor (runsc)",
            RowId::Nspawn => "agentbox nspawn (systemd-nspawn)",
            RowId::Docker => "agentbox docker",
            RowId::Microvm => "agentbox microvm (QEMU, own kernel; no pids limit)",
            RowId::MicrovmNs => "agentbox microvm+ns (the ns tier in the VM)",
            RowId::PeerChroot => "chroot as root",
            RowId::PeerUnshare => "unshare -Ufpmn -r",
            RowId::PeerBwrap => "bubblewrap --unshare-all --cap-drop ALL",
            RowId::PeerFirejail => "firejail --private --net=none --caps.drop=all --seccomp",
            RowId::PeerRunc => "runc (runc spec, 512M, 256 pids)",
            RowId::PeerCrun => "crun (runc spec, 512M, 256 pids)",
            RowId::PeerRunsc => "runsc (gVisor, ptrace, --network=none)",
            RowId::PeerNspawn => "systemd-nspawn --private-users=pick --private-network",
        }
    }

    pub fn parse(text: &str) -> Option<RowId> {
        RowId::ALL.into_iter().find(|r| r.id() == text)
    }

    pub fn kind(self) -> RowKind {
        match self {
            RowId::Ns | RowId::Chroot | RowId::Wasm => RowKind::Tier,
            _ if self.engine().is_some() || self.vm() => RowKind::Tier,
            _ => RowKind::Peer,
        }
    }

    /// agentbox's engine tier rows: the `--tier` they run, and the `--runtime` of the oci ones.
    pub fn engine(self) -> Option<(&'static str, Option<&'static str>)> {
        match self {
            RowId::OciRunc => Some(("oci", Some("runc"))),
            RowId::OciCrun => Some(("oci", Some("crun"))),
            RowId::Gvisor => Some(("gvisor", None)),
            RowId::Nspawn => Some(("nspawn", None)),
            RowId::Docker => Some(("docker", None)),
            _ => None,
        }
    }

    /// The peer row that runs the same engine directly, without agentbox's policy.
    pub fn peer_of(self) -> Option<RowId> {
        match self {
            RowId::OciRunc => Some(RowId::PeerRunc),
            RowId::OciCrun => Some(RowId::PeerCrun),
            RowId::Gvisor => Some(RowId::PeerRunsc),
            RowId::Nspawn => Some(RowId::PeerNspawn),
            _ => None,
        }
    }

    /// Rows whose payload runs on gVisor's sentry: the host sees the sentry, never the payload.
    pub fn gvisor(self) -> bool {
        matches!(self, RowId::Gvisor | RowId::PeerRunsc)
    }

    /// Rows whose payload runs in a microVM: on a kernel of its own, no host process (the host
    /// sees QEMU), from an image the cell makes.
    pub fn vm(self) -> bool {
        matches!(self, RowId::Microvm | RowId::MicrovmNs)
    }

    /// Whether `agentbox create`/`exec` can hold a persistent sandbox of the row's tier.
    pub fn persistent(self) -> bool {
        matches!(
            self,
            RowId::Ns
                | RowId::OciRunc
                | RowId::OciCrun
                | RowId::Gvisor
                | RowId::Microvm
                | RowId::MicrovmNs
        )
    }

    /// The `agentbox run`/`create` flags that pick the row's tier (agentbox rows only).
    pub fn tier_args(self) -> Vec<&'static str> {
        match (self, self.engine()) {
            (_, Some((tier, Some(runtime)))) => vec!["--tier", tier, "--runtime", runtime],
            (_, Some((tier, None))) => vec!["--tier", tier],
            (RowId::Ns, None) => vec!["--tier", "ns"],
            (RowId::Chroot, None) => vec!["--tier", "chroot"],
            (RowId::Microvm, None) => vec!["--tier", "microvm"],
            (RowId::MicrovmNs, None) => vec!["--tier", "microvm+ns"],
            _ => Vec::new(),
        }
    }

    /// The host binary the row needs (None: agentbox itself, or an engine tier, whose availability
    /// is `agentbox doctor`'s).
    pub fn tool(self) -> Option<(&'static str, &'static str)> {
        match self {
            RowId::Ns | RowId::Chroot | RowId::Wasm => None,
            RowId::OciRunc | RowId::OciCrun | RowId::Gvisor | RowId::Nspawn | RowId::Docker => None,
            RowId::Microvm | RowId::MicrovmNs => None,
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

    /// Rows this version can drive (every row, now; a row that cannot run here says why).
    pub fn driven(self) -> bool {
        true
    }

    /// The OCI runtime of the row, whose `run` takes a bundle (its config.json holds the command).
    pub fn oci_runtime(self) -> Option<&'static str> {
        match self {
            RowId::PeerRunc => Some("runc"),
            RowId::PeerCrun => Some("crun"),
            RowId::PeerRunsc => Some("runsc"),
            _ => None,
        }
    }

    /// Environment the row's host command needs. firejail, run in the cell (a pid namespace whose
    /// /proc shows no kernel threads), takes itself for nested in another sandbox and runs the
    /// command with no sandbox at all, unless told that it runs in a container (its LXC case),
    /// in which case it builds its sandbox as on a host.
    pub fn environment(self) -> &'static [(&'static str, &'static str)] {
        match self {
            RowId::PeerFirejail => &[("container", "lxc")],
            _ => &[],
        }
    }

    /// The probes of a weak row really act on the host's kernel as root: its cell gets a throwaway
    /// outer pid and mount namespace (every row does, in fact; this says why it matters).
    pub fn weak(self) -> bool {
        matches!(self, RowId::Chroot | RowId::PeerChroot | RowId::PeerUnshare)
    }
}

/// The root directory the cell prepares for the rows that run in one (`peer:chroot`, the OCI
/// runtimes, nspawn).
pub fn root_dir(workdir: &str) -> String {
    format!("{workdir}/root")
}

/// The image directory the cell makes for the microVM rows (the probe copied in, `/bin/true`
/// with its libraries): `agentbox run --image` builds its base disk from it.
pub fn vm_image_dir(workdir: &str) -> String {
    format!("{workdir}/vm-image")
}

/// The limits an agentbox row runs with: `EVAL_LIMITS`, less `--pids` on the plain microvm tier,
/// which refuses it (its guest agent caps no processes; `microvm+ns` does, in the guest).
pub fn limits(row: RowId) -> Vec<&'static str> {
    let mut limits = EVAL_LIMITS.to_vec();
    if row == RowId::Microvm {
        if let Some(at) = limits.iter().position(|a| *a == "--pids") {
            limits.drain(at..at + 2);
        }
    }
    limits
}

/// `agentbox run`/`create`'s flags that make the row's sandbox, before its own (`--ro`, `--cwd`):
/// the tier, the microVM rows' image, the limits.
pub fn agentbox_flags(row: RowId, workdir: &str) -> Vec<String> {
    let mut flags: Vec<String> = row.tier_args().iter().map(|s| s.to_string()).collect();
    if row.vm() {
        flags.extend(["--image".to_string(), vm_image_dir(workdir)]);
    }
    flags.extend(limits(row).iter().map(|s| s.to_string()));
    flags
}

/// The OCI runtime's state directory (`--root`): in the work directory, so nothing is left in
/// /run/runc and the like.
pub fn oci_state_dir(workdir: &str) -> String {
    format!("{workdir}/oci-state")
}

/// The OCI bundle of one command (its config.json holds the command): one per distinct argv.
pub fn bundle_dir(workdir: &str, argv: &[&str]) -> String {
    // FNV-1a over the NUL-joined argv: stable, and distinct commands get distinct bundles.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in argv.iter().flat_map(|a| a.bytes().chain([0])) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{workdir}/bundles/{hash:016x}")
}

/// What every container id of this work directory starts with (`agentbox-eval-<hex>-`), so
/// whatever a killed runtime left (containers, cgroups) can be found by name.
pub fn container_prefix(workdir: &str) -> String {
    let name = workdir.rsplit('/').next().unwrap_or("agentbox-eval");
    format!("{name}-")
}

/// The runtime's global flags: its state directory, and gVisor's platform and network.
pub fn oci_flags(row: RowId, workdir: &str) -> Vec<String> {
    let mut flags = vec!["--root".to_string(), oci_state_dir(workdir)];
    if row == RowId::PeerRunsc {
        flags.extend([
            "--platform=ptrace".to_string(),
            "--network=none".to_string(),
        ]);
    }
    flags
}

/// `argv` with `FRESH_ID` replaced by `suffix`, and the container id it made (OCI rows).
pub fn instance(argv: &[String], suffix: &str) -> (Vec<String>, Option<String>) {
    let mut id = None;
    let argv = argv
        .iter()
        .map(|a| {
            if a.contains(FRESH_ID) {
                let made = a.replace(FRESH_ID, suffix);
                id = Some(made.clone());
                made
            } else {
                a.clone()
            }
        })
        .collect();
    (argv, id)
}

/// How to run `argv` in the row's sandbox. `probe_host` is the probe binary on the host;
/// `workdir` is the row's work directory, where the cell prepares the row's root (`root_dir`)
/// and, for the OCI rows, the bundle of this very argv (`bundle_dir`). An OCI row's argv ends in
/// a container id to be made fresh (`instance`) before each run.
pub fn command(row: RowId, probe_host: &str, workdir: &str, argv: &[&str]) -> Vec<String> {
    let probe_bind = format!("{probe_host}:{PROBE_IN_SANDBOX}");
    let root = root_dir(workdir);
    let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if let Some(runtime) = row.oci_runtime() {
        // The command is in the bundle's config.json; `run` creates, starts, waits for and
        // deletes the container, in the foreground with stdio inherited.
        let mut cmd = vec![runtime.to_string()];
        cmd.extend(oci_flags(row, workdir));
        cmd.extend(owned(&["run", "--bundle"]));
        cmd.push(bundle_dir(workdir, argv));
        cmd.push(format!("{}{FRESH_ID}", container_prefix(workdir)));
        return cmd;
    }
    let mut cmd: Vec<String> = match row {
        // The engine tiers exactly as the ns tier: the same binds, limits and working directory,
        // only `--tier` (and the oci runtime) differ.
        RowId::Ns
        | RowId::OciRunc
        | RowId::OciCrun
        | RowId::Gvisor
        | RowId::Nspawn
        | RowId::Docker => [probe_host, "run"]
            .into_iter()
            .chain(row.tier_args())
            .chain(["--ro", &probe_bind])
            .chain(EVAL_LIMITS.iter().copied())
            .chain(["--cpus", "1", "--cwd", "/tmp", "--"])
            .map(|s| s.to_string())
            .collect(),
        RowId::Chroot => [probe_host, "run", "--tier", "chroot", "--ro", &probe_bind]
            .iter()
            .chain(EVAL_LIMITS)
            .chain(&["--cwd", "/tmp", "--"])
            .map(|s| s.to_string())
            .collect(),
        RowId::PeerChroot => vec!["chroot".into(), root],
        RowId::PeerUnshare => owned(&[
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
        ]),
        RowId::PeerBwrap => owned(&[
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
        ]),
        // Its documented hardening flags that take effect as root (`--noroot` does not: "not
        // available" to root). No profile: the default one would add its own blacklists.
        RowId::PeerFirejail => owned(&[
            "firejail",
            "--noprofile",
            "--quiet",
            "--private",
            "--net=none",
            "--caps.drop=all",
            "--seccomp",
            "--nonewprivs",
            "--",
        ]),
        // What `-U` (the nspawn@.service default) means, minus the id-mapped mount of the root,
        // which this host refuses (EBUSY): the root's files show as nobody, which read-only
        // does not mind. Not systemd as pid 1: no unit, no machined (`--keep-unit
        // --register=no`). Read-only roots take a shared lock, so parallel runs may share one.
        RowId::PeerNspawn => {
            let mut cmd = owned(&["systemd-nspawn", "--quiet", "--directory"]);
            cmd.push(root);
            cmd.extend(owned(&[
                "--read-only",
                "--private-users=pick",
                "--private-users-ownership=off",
                "--private-network",
                "--as-pid2",
                "--keep-unit",
                "--register=no",
                "--timezone=off",
                "--chdir=/tmp",
                "--",
            ]));
            cmd
        }
        // A bind does not reach a guest: the probe is in the row's image (`PROBE_IN_VM`).
        RowId::Microvm | RowId::MicrovmNs => [probe_host.to_string(), "run".to_string()]
            .into_iter()
            .chain(agentbox_flags(row, workdir))
            .chain(owned(&["--cpus", "1", "--cwd", "/tmp", "--"]))
            .collect(),
        // The OCI runtimes take their command from the bundle; the wasm row runs no command here.
        RowId::PeerRunc | RowId::PeerCrun | RowId::PeerRunsc | RowId::Wasm => Vec::new(),
    };
    // unshare and firejail run on the host's own file system: the probe is found where it is.
    let probe = match row {
        RowId::PeerUnshare | RowId::PeerFirejail => probe_host,
        RowId::Microvm | RowId::MicrovmNs => PROBE_IN_VM,
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
        // unshare and firejail share the host's file system: their scratch is a tmpfs the cell
        // mounts privately.
        RowId::PeerUnshare | RowId::PeerFirejail => format!("{workdir}/scratch"),
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
    fn engine_rows_run_agentbox_like_the_ns_row_with_their_tier() {
        let argv = [PROBE_IN_SANDBOX, "__probe"];
        let ns = command(RowId::Ns, "/x/agentbox", "/w", &argv);
        for (row, tier) in [
            (RowId::OciRunc, &["--tier", "oci", "--runtime", "runc"][..]),
            (RowId::OciCrun, &["--tier", "oci", "--runtime", "crun"][..]),
            (RowId::Gvisor, &["--tier", "gvisor"][..]),
            (RowId::Nspawn, &["--tier", "nspawn"][..]),
            (RowId::Docker, &["--tier", "docker"][..]),
        ] {
            assert_eq!(row.kind(), RowKind::Tier, "{row:?}");
            assert!(row.engine().is_some() && row.oci_runtime().is_none());
            let cmd = command(row, "/x/agentbox", "/w", &argv);
            assert_eq!(cmd[..2], ["/x/agentbox", "run"]);
            assert_eq!(cmd[2..2 + tier.len()], *tier, "{cmd:?}");
            // Everything after the tier flags is the ns row's command.
            assert_eq!(cmd[2 + tier.len()..], ns[4..], "{cmd:?}");
            assert_eq!(scratch(row, "/w"), "/tmp");
            assert!(!row.weak());
        }
        assert_eq!(RowId::parse("nspawn"), Some(RowId::Nspawn));
        assert_eq!(RowId::OciRunc.peer_of(), Some(RowId::PeerRunc));
        assert_eq!(RowId::Gvisor.peer_of(), Some(RowId::PeerRunsc));
        assert!(RowId::Gvisor.gvisor() && RowId::PeerRunsc.gvisor() && !RowId::OciRunc.gvisor());
        assert!(RowId::Gvisor.persistent() && !RowId::Nspawn.persistent());
    }

    #[test]
    fn microvm_rows_boot_the_cells_image_with_the_probe_copied_in() {
        let argv = [PROBE_IN_SANDBOX, "__probe", "--list"];
        for (row, tier, pids) in [
            (RowId::Microvm, "microvm", false),
            (RowId::MicrovmNs, "microvm+ns", true),
        ] {
            assert!(row.vm() && row.kind() == RowKind::Tier && row.tool().is_none());
            assert_eq!(RowId::parse(row.id()), Some(row));
            let cmd = command(row, "/x/agentbox", "/w", &argv);
            assert_eq!(cmd[..4], ["/x/agentbox", "run", "--tier", tier], "{cmd:?}");
            let image = cmd.iter().position(|a| a == "--image").unwrap_or(0);
            assert_eq!(cmd[image + 1], vm_image_dir("/w"));
            // No bind (a VM refuses host mounts): the probe is the image's copy.
            assert!(!cmd
                .iter()
                .any(|a| a == "--ro" || a.contains(PROBE_IN_SANDBOX)));
            assert_eq!(cmd[cmd.len() - 3..], [PROBE_IN_VM, "__probe", "--list"]);
            // The plain tier refuses --pids: its row runs without it, and its label says so.
            assert_eq!(cmd.iter().any(|a| a == "--pids"), pids, "{cmd:?}");
            assert_eq!(row.label().contains("no pids limit"), !pids);
            assert!(cmd.contains(&"512M".to_string()) && cmd.contains(&"--cpus".to_string()));
            assert!(row.persistent() && !row.weak() && !row.gvisor());
            assert_eq!(agentbox_flags(row, "/w")[..2], ["--tier", tier]);
        }
        assert_eq!(
            agentbox_flags(RowId::Ns, "/w"),
            ["--tier", "ns"]
                .iter()
                .chain(EVAL_LIMITS)
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_probe_is_mapped_into_every_sandbox() {
        let argv = [PROBE_IN_SANDBOX, "__probe"];
        let ns = command(RowId::Ns, "/x/agentbox", "/w", &argv);
        assert_eq!(ns[0], "/x/agentbox");
        assert!(ns.contains(&"/x/agentbox:/opt/agentbox-probe".to_string()));
        assert_eq!(ns[ns.len() - 2..], ["/opt/agentbox-probe", "__probe"]);
        let chroot = command(RowId::PeerChroot, "/x/agentbox", "/w", &argv);
        assert_eq!(
            chroot,
            ["chroot", "/w/root", "/opt/agentbox-probe", "__probe"]
        );
        let unshare = command(RowId::PeerUnshare, "/x/agentbox", "/w", &argv);
        assert_eq!(unshare[unshare.len() - 2..], ["/x/agentbox", "__probe"]);
    }

    #[test]
    fn every_peer_runs_its_own_tool_with_the_probe_in_reach() {
        let workdir = "/tmp/agentbox-eval-0123abcd";
        let argv = [PROBE_IN_SANDBOX, "__probe"];
        for row in [
            RowId::PeerFirejail,
            RowId::PeerRunc,
            RowId::PeerCrun,
            RowId::PeerRunsc,
            RowId::PeerNspawn,
        ] {
            assert!(row.driven(), "{row:?}");
            let cmd = command(row, "/x/agentbox", workdir, &argv);
            let tool = row.tool().map(|(tool, _)| tool);
            assert_eq!(Some(cmd[0].as_str()), tool, "{cmd:?}");
            // The probe is on the argv, or (OCI) in the bundle the argv runs.
            let probe = if row == RowId::PeerFirejail {
                "/x/agentbox"
            } else {
                PROBE_IN_SANDBOX
            };
            let reached = cmd.iter().any(|a| a == probe)
                || (row.oci_runtime().is_some() && cmd.contains(&bundle_dir(workdir, &argv)));
            assert!(reached, "{row:?}: {cmd:?}");
            assert!(row.label().starts_with(cmd[0].as_str()), "{}", row.label());
        }
    }

    #[test]
    fn firejail_and_nspawn_run_the_probe_after_their_own_flags() {
        let argv = [PROBE_IN_SANDBOX, "__probe", "--list"];
        let firejail = command(RowId::PeerFirejail, "/x/agentbox", "/w", &argv);
        assert_eq!(firejail[0], "firejail");
        assert_eq!(
            firejail[firejail.len() - 4..],
            ["--", "/x/agentbox", "__probe", "--list"]
        );
        for flag in ["--net=none", "--caps.drop=all", "--seccomp", "--nonewprivs"] {
            assert!(firejail.contains(&flag.to_string()), "{flag}: {firejail:?}");
        }
        assert_eq!(scratch(RowId::PeerFirejail, "/w"), "/w/scratch");
        assert_eq!(RowId::PeerFirejail.environment(), [("container", "lxc")]);

        let nspawn = command(RowId::PeerNspawn, "/x/agentbox", "/w", &argv);
        assert_eq!(
            nspawn[..4],
            ["systemd-nspawn", "--quiet", "--directory", "/w/root"]
        );
        assert_eq!(
            nspawn[nspawn.len() - 4..],
            ["--", PROBE_IN_SANDBOX, "__probe", "--list"]
        );
        for flag in ["--private-users=pick", "--private-network", "--read-only"] {
            assert!(nspawn.contains(&flag.to_string()), "{flag}: {nspawn:?}");
        }
        assert!(
            !nspawn.iter().any(|a| a.contains("/x/agentbox")),
            "{nspawn:?}"
        );
        assert_eq!(scratch(RowId::PeerNspawn, "/w"), "/tmp");
    }

    #[test]
    fn oci_rows_run_the_bundle_of_their_command_under_a_fresh_id() {
        let workdir = "/tmp/agentbox-eval-0123abcd";
        let argv = [PROBE_IN_SANDBOX, "__probe", "--list"];
        for (row, runtime) in [
            (RowId::PeerRunc, "runc"),
            (RowId::PeerCrun, "crun"),
            (RowId::PeerRunsc, "runsc"),
        ] {
            let cmd = command(row, "/x/agentbox", workdir, &argv);
            assert_eq!(cmd[0], runtime);
            assert_eq!(cmd[1..3], ["--root", &oci_state_dir(workdir)]);
            let run = cmd.iter().position(|a| a == "run").unwrap_or(0);
            assert_eq!(cmd[run + 1], "--bundle");
            assert_eq!(cmd[run + 2], bundle_dir(workdir, &argv));
            assert_eq!(cmd.len(), run + 4, "{cmd:?}");
            let (first, id) = instance(&cmd, "1a");
            let (second, _) = instance(&cmd, "2b");
            assert_eq!(id.as_deref(), Some("agentbox-eval-0123abcd-1a"));
            assert_eq!(first.last(), id.as_ref());
            assert_ne!(first, second);
            assert_eq!(first[..run + 3], cmd[..run + 3]);
            assert_eq!(scratch(row, workdir), "/tmp");
        }
        let runsc = command(RowId::PeerRunsc, "/x/agentbox", workdir, &argv);
        assert!(
            runsc.contains(&"--platform=ptrace".to_string()),
            "{runsc:?}"
        );
        assert!(runsc.contains(&"--network=none".to_string()), "{runsc:?}");
    }

    #[test]
    fn bundles_differ_per_command_and_ids_are_never_made_for_other_rows() {
        let a = bundle_dir("/w", &["/bin/true"]);
        assert_eq!(a, bundle_dir("/w", &["/bin/true"]));
        assert_ne!(a, bundle_dir("/w", &["/bin/tru", "e"]));
        assert!(a.starts_with("/w/bundles/"), "{a}");
        let bwrap = command(RowId::PeerBwrap, "/x/agentbox", "/w", &["/bin/true"]);
        assert_eq!(instance(&bwrap, "1a"), (bwrap.clone(), None));
        assert!(EVAL_LIMITS.contains(&"512M") && EVAL_MEMORY_BYTES == 512 * 1024 * 1024);
        assert!(EVAL_LIMITS.contains(&EVAL_PIDS.to_string().as_str()));
    }
}
