//! `--tier auto`: the strongest tier that is available on this host and enforces the whole
//! policy. Strength order, strongest first:
//! - `microvm+ns`, then `microvm`: a kernel of its own under QEMU, with agentbox's `ns` tier inside
//!   the guest first (needs an image: the `host` image cannot be shared into a guest);
//! - `gvisor`: a user-space kernel between the command and the host's (a kernel bug the command
//!   reaches is gVisor's, not the host's);
//! - `ns`: agentbox's own namespaces with seccomp, Landlock, no capabilities and cgroups (in
//!   `agentbox eval` it blocks the most probes of any shared-kernel row);
//! - `oci`: runc or crun with the same namespaces, seccomp profile and no capabilities, but no
//!   Landlock;
//! - `docker`: the same container confinement through a daemon (root in the container is the
//!   host's root unless the daemon remaps users);
//! - `nspawn`: namespaces, capability drop and a system call filter that extends nspawn's own;
//! - `chroot`: not a security boundary; picked only when nothing else can run.
//!
//! The `wasm` tier runs WebAssembly modules, not commands, and is never picked.

use agentbox_policy::{Policy, PolicySpec, Tier};

use crate::RunError;

/// Strongest first.
pub const STRENGTH: [Tier; 7] = [
    Tier::Microvm,
    Tier::Gvisor,
    Tier::Ns,
    Tier::Oci,
    Tier::Docker,
    Tier::Nspawn,
    Tier::Chroot,
];

/// Validates `spec`, resolving `tier = "auto"`. Policy errors are input errors (125); no tier
/// able to run the policy is a setup failure naming each tier's reason.
pub fn validate(spec: &PolicySpec, term: Option<&str>) -> Result<Policy, RunError> {
    if spec.tier.as_deref() != Some("auto") {
        return spec
            .validate(term)
            .map_err(policy_error)
            .and_then(resolve_image);
    }
    let mut reasons = Vec::new();
    // A microVM is tried layered first: the ns tier inside the guest is a second boundary (and
    // enforces the process and descriptor limits the plain guest refuses).
    let candidates = STRENGTH.iter().flat_map(|&tier| match tier {
        Tier::Microvm => vec![(tier, agentbox_policy::LAYERED_TIER), (tier, tier.name())],
        _ => vec![(tier, tier.name())],
    });
    for (tier, name) in candidates {
        let mut candidate = spec.clone();
        candidate.tier = Some(name.into());
        let policy = match candidate.validate(term) {
            Ok(p) => resolve_image(p)?,
            // `runtime` is an oci-only field: other tiers are skipped, not an input error.
            Err(e) if e.field == "runtime" => {
                reasons.push(format!("{name}: {e}"));
                continue;
            }
            Err(e) => return Err(policy_error(e)),
        };
        if let Some(why) = unavailable(tier) {
            reasons.push(format!("{name}: {why}"));
            continue;
        }
        match crate::tier::check_enforceable(&policy) {
            Ok(()) => return Ok(policy),
            Err(e) => reasons.push(format!("{name}: {e}")),
        }
    }
    Err(RunError::Unenforceable {
        tier: "auto",
        field: "tier",
        reason: format!("no tier here can run this policy ({})", reasons.join("; ")),
    })
}

fn policy_error(e: agentbox_policy::PolicyError) -> RunError {
    RunError::InvalidInput {
        field: e.field,
        value: format!("= {:?}", e.value),
        reason: e.reason,
    }
}

/// An image named in the store becomes its read-only root file system directory.
pub fn resolve_image(mut policy: Policy) -> Result<Policy, RunError> {
    if let agentbox_policy::Image::Named(name) = &policy.image {
        let root = agentbox_image::Store::default_root();
        let store = agentbox_image::Store::open(&root)
            .map_err(|e| RunError::setup(format!("image store {}", root.display()), e))?;
        let info = store
            .resolve(name)
            .map_err(|e| RunError::invalid("image", name, e))?;
        policy.image = agentbox_policy::Image::Dir(info.rootfs);
    }
    Ok(policy)
}

/// Why `tier` cannot run here, or None.
pub fn unavailable(tier: Tier) -> Option<String> {
    if tier == Tier::Microvm {
        return crate::microvm::unavailable();
    }
    match crate::engine::availability(tier) {
        Some(a) if !a.available => Some(a.reason.unwrap_or_else(|| "not available".into())),
        _ => None,
    }
}
