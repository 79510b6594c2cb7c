//! The engine tiers: `oci` (runc, crun), `gvisor` (runsc), `nspawn` (systemd-nspawn) and
//! `docker`. agentbox prepares the sandbox exactly as for its own tiers (the same mount plan, built
//! by the same code into a root file system, the same cgroup where the engine leaves the payload
//! in its caller's, the same uid slot), then hands a [`agentbox_oci::Sandbox`] description to the
//! engine, which translates it into its own format and runs it.
//!
//! The process that drives the engine is the sandbox's child, in a private mount namespace of its
//! own: the root file system it builds (an overlay of the image, or the `host` image's binds) is
//! visible to the engine it starts and to nothing else, and vanishes with it. The supervisor
//! enforces the wall-clock limit and, whatever happens to that child, removes the container by
//! name afterwards (`destroy`), so nothing outlives a run.

mod child;
mod drivers;
mod serve;

use agentbox_policy::{Policy, Tier};

use crate::RunError;

pub use child::{child, ENGINE_DIR};
pub use drivers::{availability, destroy};

/// The container name of the sandbox holding the uid slot starting at `base`: unique while the
/// slot is held, and derivable by both the supervisor and its child.
pub fn container_name(base: u32) -> String {
    format!("agentbox-{base:x}")
}

/// Whether the engine puts the payload in a user namespace with the slot's mapping.
pub fn maps_slot(tier: Tier) -> bool {
    matches!(tier, Tier::Oci | Tier::Nspawn)
}

/// Whether agentbox idmaps the root it builds (binds, image, created files) through the slot's
/// mapping itself (the engine is then told the root is owned already).
pub fn idmaps_root(tier: Tier) -> bool {
    maps_slot(tier)
}

/// Whether the payload stays in the cgroup of the engine's caller (so agentbox's own cgroup
/// enforces memory, CPU and pids); the other engines apply the limits themselves.
pub fn payload_in_caller_cgroup(tier: Tier) -> bool {
    tier == Tier::Nspawn
}

/// Where a persistent sandbox's root is, seen from its init (see `persistent::State::root`).
pub fn root_seen_by_init(policy: &Policy) -> Option<std::path::PathBuf> {
    let stage = std::path::Path::new(crate::build::STAGE);
    match policy.tier {
        Tier::Ns | Tier::Chroot | Tier::Wasm => Some("/".into()),
        // gVisor's sentry caches the files it serves and would not see a host-side write; a
        // microVM's files are in the guest (its init, the VM host, runs on the host's root).
        Tier::Docker | Tier::Gvisor | Tier::Microvm => None,
        Tier::Oci | Tier::Nspawn => Some(match policy.image {
            agentbox_policy::Image::Host => stage.to_path_buf(),
            _ => stage.join("root"),
        }),
    }
}

/// Refuses what the policy's engine cannot enforce (fields marked optional excepted), and
/// network modes other than `none`, which no engine tier attaches yet.
pub fn check(policy: &Policy) -> Result<(), RunError> {
    drivers::check(policy).map_err(|e| drivers::run_error(policy.tier, e))
}
