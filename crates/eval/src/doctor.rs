//! `agentbox doctor`: what this host can do for agentbox. It reads kernel settings, mounts and
//! binaries, asks the kernel a few read-only questions (`agentbox_sys::host_probe`), runs each peer
//! runtime's `--version`, and says which tiers can run here and how to fix what is missing.
//!
//! It never changes the host: no sysctl is written, nothing is mounted, no cgroup is created and no
//! guest is booted. What cannot be known without doing so is reported as unknown, not claimed.

#[path = "doctor_cgroup.rs"]
mod cgroup;
#[path = "doctor_kernel.rs"]
mod kernel;
#[path = "doctor_runtimes.rs"]
mod runtimes;

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// How a host feature stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Usable, but weaker or narrower than it could be (or only needed by an optional mode).
    Warn,
    Missing,
}

/// One kernel feature or host setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// A concrete command or step, whenever `status` is not `Ok`.
    pub fix: Option<String>,
}

/// Whether one isolation tier can run here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierStatus {
    pub tier: String,
    pub available: bool,
    pub reason: String,
    pub fix: Option<String>,
}

/// A peer runtime or tool found (or not) on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    /// What it is called (`bubblewrap`, `gVisor`).
    pub name: String,
    /// The command looked up (`bwrap`, `runsc`).
    pub binary: String,
    /// Where it was found, in `PATH` or an sbin directory.
    pub path: Option<String>,
    /// From the first line of `--version`.
    pub version: Option<String>,
    /// Found, and (docker) its daemon answers.
    pub available: bool,
    /// What was observed, e.g. whether the docker daemon answers.
    pub detail: String,
    pub fix: Option<String>,
}

/// Everything `agentbox doctor` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doctor {
    pub checks: Vec<Check>,
    pub tiers: Vec<TierStatus>,
    pub runtimes: Vec<Runtime>,
    /// The strongest tier that can run here (what `--tier auto` picks for a policy every tier
    /// enforces).
    pub strongest: Option<String>,
}

/// The checks the `ns` tier cannot run without (a `Warn` is enough; a `Missing` is not).
const NS_NEEDS: [&str; 7] = [
    "user namespaces",
    "seccomp",
    "landlock",
    "cgroups",
    "overlayfs",
    "idmapped mounts",
    "pidfd",
];

/// The tiers that drive an external engine: probed by the runtime (binary, version, daemon,
/// platform), never hanging.
const ENGINE_TIERS: [agentbox_policy::Tier; 4] = [
    agentbox_policy::Tier::Oci,
    agentbox_policy::Tier::Gvisor,
    agentbox_policy::Tier::Nspawn,
    agentbox_policy::Tier::Docker,
];

/// Reads the host and reports what it can do. Read-only apart from the engines' probes (gVisor's
/// platform probe runs a trivial container once per boot); takes a few hundred milliseconds
/// (each `--version` is given at most two seconds). `wasm`: whether this build embeds wasmtime.
pub fn examine(wasm: bool) -> Doctor {
    let probes = kernel::SyscallProbes::run();
    let checks = kernel::checks(Path::new("/"), &probes);
    let runtimes = runtimes::examine();
    let mut engines: Vec<TierStatus> = ENGINE_TIERS.iter().map(|t| engine_tier(*t)).collect();
    engines.push(microvm_tier());
    assemble(checks, runtimes, engines, wasm)
}

fn engine_tier(tier: agentbox_policy::Tier) -> TierStatus {
    match agentbox_runtime::engine::availability(tier) {
        Some(a) => {
            let mut reason = match (&a.found, &a.reason) {
                (_, Some(why)) if !a.available => why.clone(),
                (Some(found), _) => found.clone(),
                (None, _) => "available".into(),
            };
            for note in &a.notes {
                let _ = write!(reason, "; {note}");
            }
            TierStatus {
                tier: tier.name().into(),
                available: a.available,
                reason,
                fix: if a.available { None } else { a.fix },
            }
        }
        None => TierStatus {
            tier: tier.name().into(),
            available: false,
            reason: "not an engine tier".into(),
            fix: None,
        },
    }
}

/// The microvm tier: a guest kernel, the guest agent and QEMU present, and the accelerator the
/// runs use (the KVM probe boots a guest once per boot: a few seconds at most).
fn microvm_tier() -> TierStatus {
    use agentbox_runtime::microvm;
    if let Some(why) = microvm::unavailable() {
        return TierStatus {
            tier: "microvm".into(),
            available: false,
            fix: Some(if why.contains("kernel") {
                "scripts/build-guest-kernel.sh (or AGENTBOX_KERNEL=PATH)".into()
            } else if why.contains("agent") {
                "cargo build -p agentbox-guest --release (or AGENTBOX_GUEST_AGENT=PATH)".into()
            } else {
                "apt-get install qemu-system-x86 qemu-utils".into()
            }),
            reason: why,
        };
    }
    let accel = match microvm::accel() {
        Ok((agentbox_microvm::Accel::Kvm, _)) => "KVM".to_string(),
        Ok((_, verdict)) => format!(
            "TCG emulation, slower ({})",
            verdict.trim_start_matches("tcg:").trim()
        ),
        Err(e) => format!("accelerator unknown: {e}"),
    };
    TierStatus {
        tier: "microvm".into(),
        available: true,
        reason: format!(
            "kernel {}; accelerator: {accel}; needs an image (not host); microvm+ns (the ns tier \
             inside the guest) too",
            microvm::kernel().display()
        ),
        fix: None,
    }
}

fn wasm_tier(built: bool) -> TierStatus {
    TierStatus {
        tier: "wasm".into(),
        available: built,
        reason: if built {
            "wasmtime embedded; runs WASI modules (not commands)".into()
        } else {
            "this build has no wasm engine".into()
        },
        fix: (!built).then(|| "build agentbox with the `wasm` feature (the default)".into()),
    }
}

/// Derives the tiers and the strongest one from the checks, runtimes and engines.
fn assemble(
    checks: Vec<Check>,
    runtimes: Vec<Runtime>,
    engines: Vec<TierStatus>,
    wasm: bool,
) -> Doctor {
    let mut tiers = vec![ns_tier(&checks), chroot_tier(), wasm_tier(wasm)];
    tiers.extend(engines);
    // The order `--tier auto` picks in (see agentbox_runtime::select).
    let strongest = agentbox_runtime::select::STRENGTH
        .iter()
        .map(|t| t.name())
        .find(|name| tiers.iter().any(|t| t.tier == *name && t.available))
        .map(str::to_string);
    Doctor {
        checks,
        tiers,
        runtimes,
        strongest,
    }
}

fn ns_tier(checks: &[Check]) -> TierStatus {
    let needed: Vec<&Check> = NS_NEEDS
        .iter()
        .filter_map(|name| checks.iter().find(|c| c.name == *name))
        .collect();
    let missing: Vec<&Check> = needed
        .iter()
        .copied()
        .filter(|c| c.status == Status::Missing)
        .collect();
    let unknown: Vec<&str> = NS_NEEDS
        .iter()
        .copied()
        .filter(|name| !checks.iter().any(|c| c.name == *name))
        .collect();
    if missing.is_empty() && unknown.is_empty() {
        return TierStatus {
            tier: "ns".into(),
            available: true,
            reason: format!("has everything it needs: {}", NS_NEEDS.join(", ")),
            fix: None,
        };
    }
    let mut lacks: Vec<String> = missing.iter().map(|c| c.name.clone()).collect();
    lacks.extend(unknown.iter().map(|n| format!("{n} (not checked)")));
    let fixes: Vec<String> = missing.iter().filter_map(|c| c.fix.clone()).collect();
    TierStatus {
        tier: "ns".into(),
        available: false,
        reason: format!("lacks {}", lacks.join(", ")),
        fix: (!fixes.is_empty()).then(|| fixes.join("; ")),
    }
}

fn chroot_tier() -> TierStatus {
    TierStatus {
        tier: "chroot".into(),
        available: true,
        reason: "always available (chroot, a mount namespace and dropped privileges); not a \
                 security boundary"
            .into(),
        fix: None,
    }
}

/// The terminal rendering: sections "Kernel features", "Tiers", "Runtimes", one line per item
/// (`✓`, `!` or `✗`, the name, the detail and any fix), then the strongest tier.
pub fn render_text(d: &Doctor) -> String {
    let mut out = String::new();
    let checks: Vec<(char, &str, String)> = d
        .checks
        .iter()
        .map(|c| {
            let mark = match c.status {
                Status::Ok => '✓',
                Status::Warn => '!',
                Status::Missing => '✗',
            };
            (mark, c.name.as_str(), with_fix(&c.detail, c.fix.as_deref()))
        })
        .collect();
    section(&mut out, "Kernel features", &checks);
    let tiers: Vec<(char, &str, String)> = d
        .tiers
        .iter()
        .map(|t| {
            let mark = if t.available { '✓' } else { '✗' };
            (mark, t.tier.as_str(), with_fix(&t.reason, t.fix.as_deref()))
        })
        .collect();
    section(&mut out, "Tiers", &tiers);
    let runtimes: Vec<(char, &str, String)> = d
        .runtimes
        .iter()
        .map(|r| {
            let (mark, detail) = match &r.path {
                None => ('✗', "not found".to_string()),
                Some(path) => {
                    let mut detail = path.clone();
                    if let Some(v) = &r.version {
                        let _ = write!(detail, " {v}");
                    }
                    if !r.detail.is_empty() {
                        let _ = write!(detail, "; {}", r.detail);
                    }
                    (if r.available { '✓' } else { '!' }, detail)
                }
            };
            (mark, r.name.as_str(), with_fix(&detail, r.fix.as_deref()))
        })
        .collect();
    section(&mut out, "Runtimes", &runtimes);
    let _ = writeln!(
        out,
        "Strongest tier here: {}",
        d.strongest.as_deref().unwrap_or("none")
    );
    out
}

fn with_fix(detail: &str, fix: Option<&str>) -> String {
    match fix {
        Some(fix) => format!("{detail} (fix: {fix})"),
        None => detail.to_string(),
    }
}

fn section(out: &mut String, title: &str, lines: &[(char, &str, String)]) {
    let width = lines.iter().map(|(_, n, _)| n.len()).max().unwrap_or(0);
    let _ = writeln!(out, "{title}");
    for (mark, name, detail) in lines {
        let _ = writeln!(out, "  {mark} {name:<width$}  {detail}");
    }
    out.push('\n');
}

#[cfg(test)]
#[path = "doctor_tests.rs"]
mod tests;
