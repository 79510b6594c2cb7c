//! `agentbox run`: its flags, their merge over a policy file, and the run itself.

use std::path::PathBuf;

use clap::Args;

use agentbox_policy::{MountSpec, NetworkSpec, PolicySpec};
use agentbox_runtime::exit_code;

#[derive(Debug, Args)]
#[command(
    after_help = "Flags override the policy file. The chroot tier is NOT a security boundary: \
it only changes the root directory and drops to an unprivileged uid; use it for speed with trusted code."
)]
pub struct RunArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Write the exit record (how and why the run ended, peak memory, limits hit) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    exit_record: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// The policy flags, shared by `run` and `create`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Read the policy from this TOML file (unknown fields are refused); flags override it.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Isolation tier: ns (namespaces, seccomp, Landlock, cgroups: the default), chroot (chroot
    /// and an unprivileged uid only: not a security boundary), wasm (WASI modules), oci (runc or
    /// crun), gvisor (runsc), nspawn (systemd-nspawn), docker (a Docker daemon), microvm (QEMU and
    /// a kernel of its own), microvm+ns (the ns tier inside that VM), or auto (the strongest
    /// available here that enforces the whole policy). `agentbox doctor` lists them.
    #[arg(long, value_name = "TIER")]
    tier: Option<String>,
    /// The microvm tiers: boot this guest kernel (an uncompressed vmlinux that boots with PVH)
    /// instead of agentbox's own build (scripts/build-guest-kernel.sh).
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// Say on stderr what the run does: the tier (what `auto` picked), and for a microVM the
    /// accelerator (KVM or TCG, and why), the kernel and the boot time.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// The oci tier's runtime: runc or crun (default: whichever works here, crun first).
    #[arg(long, value_name = "runc|crun")]
    runtime: Option<String>,
    /// Root filesystem: host (read-only views of the host's /usr, /bin, /lib* and a minimal /etc),
    /// an image of the store (`agentbox image ls`), or the absolute path of a root filesystem
    /// directory; an image is the read-only lower layer of an ephemeral overlay.
    #[arg(long, value_name = "host|NAME|DIR")]
    image: Option<String>,
    /// Bind this host directory read-write at /workspace (default: an empty, ephemeral /workspace).
    #[arg(long, value_name = "HOSTDIR")]
    workspace: Option<String>,
    /// Bind a host path read-only into the sandbox (repeatable).
    #[arg(long = "ro", value_name = "HOST:SANDBOX")]
    read_only: Vec<String>,
    /// Bind a host path read-write into the sandbox (repeatable).
    #[arg(long = "rw", value_name = "HOST:SANDBOX")]
    read_write: Vec<String>,
    /// Network: none (loopback only; the default), allow:NAME[,NAME...] (only an egress proxy that
    /// admits these host names; `*.example.com` for subdomains), or open (NAT; private, link-local
    /// and host addresses still dropped).
    #[arg(long, value_name = "MODE")]
    net: Option<String>,
    /// A network reachable although private or link-local: IP literals through the proxy (allow
    /// mode), or a destination the firewall would drop (open mode). Repeatable.
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    allow_cidr: Vec<String>,
    /// Host names the proxy refuses even when the allowlist matches them (repeatable).
    #[arg(long = "deny-host", value_name = "NAME")]
    deny_host: Vec<String>,
    /// allow mode: append one JSON line per proxy decision to this host file.
    #[arg(long = "net-audit", value_name = "FILE")]
    net_audit: Option<String>,
    /// allow mode: a hosts file (/etc/hosts format) the proxy consults before DNS.
    #[arg(long = "net-hosts", value_name = "FILE")]
    net_hosts: Option<String>,
    /// Memory limit of the whole sandbox, without swap (e.g. 512M, 2G; default 1G).
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// CPU bandwidth in CPUs (e.g. 1.5; default unlimited).
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// Maximum number of processes and threads in the sandbox (default 1024).
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// Maximum number of open files per process (default 1024).
    #[arg(long, value_name = "N")]
    nofile: Option<u64>,
    /// Wall-clock limit; at the limit the whole sandbox is killed and agentbox exits 124 (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Size of the writable scratch space: the root's ephemeral layer, /tmp, /workspace (default 1G).
    #[arg(long, value_name = "SIZE")]
    disk: Option<String>,
    /// Set an environment variable in the sandbox (repeatable). Nothing else is inherited from the
    /// host but PATH, HOME, LANG and TERM defaults.
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    env: Vec<String>,
    /// Working directory inside the sandbox (default /workspace).
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Numeric uid (and gid) of the command inside the sandbox (default 0, never root on the host).
    #[arg(long, value_name = "UID")]
    user: Option<u32>,
}

pub fn fail(code: i32, message: impl std::fmt::Display) -> i32 {
    eprintln!("agentbox: {message}");
    code
}

/// `--kernel`: only for the microvm tiers, and only a file that exists. The runtime reads the
/// kernel from `AGENTBOX_KERNEL` (what a create's supervisor inherits too).
fn use_kernel(kernel: &std::path::Path, tier: Option<&str>) -> Result<(), String> {
    if !matches!(tier, Some("microvm" | "microvm+ns")) {
        return Err("--kernel: only the microvm tiers boot a kernel (give --tier microvm)".into());
    }
    if !kernel.is_file() {
        return Err(format!("--kernel {}: no such file", kernel.display()));
    }
    // The CLI is single-threaded here: nothing reads the environment concurrently.
    std::env::set_var("AGENTBOX_KERNEL", kernel);
    Ok(())
}

/// Builds the spec: the policy file (if any), then every flag on top.
pub fn spec_from(args: &PolicyArgs) -> Result<PolicySpec, String> {
    let mut spec = match &args.policy {
        None => PolicySpec::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("policy file {}: {e}", path.display()))?;
            PolicySpec::from_toml(&path.display().to_string(), &text).map_err(|e| e.to_string())?
        }
    };
    let set = |slot: &mut Option<String>, value: &Option<String>| {
        if value.is_some() {
            slot.clone_from(value);
        }
    };
    set(&mut spec.tier, &args.tier);
    if args.verbose {
        // The CLI is single-threaded here; a create's supervisor inherits it.
        std::env::set_var(agentbox_runtime::VERBOSE_VARIABLE, "1");
    }
    if let Some(kernel) = &args.kernel {
        use_kernel(kernel, spec.tier.as_deref())?;
    }
    set(&mut spec.runtime, &args.runtime);
    set(&mut spec.image, &args.image);
    set(&mut spec.workspace, &args.workspace);
    set(&mut spec.cwd, &args.cwd);
    set(&mut spec.limits.memory, &args.memory);
    set(&mut spec.limits.cpus, &args.cpus);
    set(&mut spec.limits.timeout, &args.timeout);
    set(&mut spec.limits.disk, &args.disk);
    if args.pids.is_some() {
        spec.limits.pids = args.pids;
    }
    if args.nofile.is_some() {
        spec.limits.nofile = args.nofile;
    }
    if args.user.is_some() {
        spec.user = args.user;
    }
    if args.net.is_some()
        || !args.allow_cidr.is_empty()
        || !args.deny_host.is_empty()
        || args.net_audit.is_some()
        || args.net_hosts.is_some()
    {
        let network = spec.network.get_or_insert_with(|| NetworkSpec {
            mode: "none".into(),
            ..Default::default()
        });
        if let Some(mode) = &args.net {
            network.mode.clone_from(mode);
        }
        network.cidrs.extend(args.allow_cidr.iter().cloned());
        network.deny.extend(args.deny_host.iter().cloned());
        set(&mut network.audit, &args.net_audit);
        set(&mut network.hosts_file, &args.net_hosts);
    }
    for (flag, list, writable) in [
        ("--ro", &args.read_only, false),
        ("--rw", &args.read_write, true),
    ] {
        for item in list {
            let (source, target) = match item.split_once(':') {
                Some((s, t)) => (s.to_string(), t.to_string()),
                None => (item.clone(), item.clone()),
            };
            if source.is_empty() || target.is_empty() {
                return Err(format!("{flag} {item:?}: expected HOST:SANDBOX"));
            }
            spec.mounts.push(MountSpec::Bind {
                source,
                target,
                writable,
            });
        }
    }
    for item in &args.env {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("--env {item:?}: expected K=V"))?;
        spec.env.insert(k.to_string(), v.to_string());
    }
    Ok(spec)
}

pub fn run(args: RunArgs) -> i32 {
    match spec_from(&args.policy) {
        Ok(spec) => run_spec(&spec, &args.command, args.exit_record.as_deref()),
        Err(message) => fail(exit_code::INVALID_INPUT, message),
    }
}

/// Validates `spec` and runs `command` under it; returns agentbox's exit code. Shared by `run` and
/// the hidden helper subcommand.
pub fn run_spec(
    spec: &PolicySpec,
    command: &[String],
    exit_record: Option<&std::path::Path>,
) -> i32 {
    let term = std::env::var("TERM").ok();
    let policy = match agentbox_runtime::select::validate(spec, term.as_deref()) {
        Ok(p) => p,
        Err(e) => return fail(e.exit_code(), format!("policy: {e}")),
    };
    if agentbox_runtime::verbose() {
        eprintln!("agentbox: tier {}", policy.tier_label());
    }
    match agentbox_runtime::run(&policy, command) {
        Ok(record) => {
            if let Some(notice) = record.notice(policy.limits.timeout) {
                eprintln!("agentbox: {notice}");
            }
            if let Some(path) = exit_record {
                if let Err(e) = std::fs::write(path, agentbox_runtime::record::to_json(&record)) {
                    eprintln!("agentbox: exit record {}: {e}", path.display());
                }
            }
            record.exit_code
        }
        Err(e) => fail(e.exit_code(), e),
    }
}
