//! agentbox policy: the plain serde data a user writes (`PolicySpec`) and the validated form the rest
//! of agentbox trusts (`Policy`). This crate is pure: no I/O, no unsafe, no knowledge of mechanisms.
//! Validation happens once, at the edge, in [`PolicySpec::validate`].

mod error;
pub mod net;
mod network;
pub mod proc_view;
mod spec;
mod units;
mod validate;

pub use error::PolicyError;
pub use network::{NetMode, Network, PROXY_PORT};
pub use spec::{LimitsSpec, MountSpec, NetworkSpec, PolicySpec};
pub use units::{parse_cpus, parse_duration, parse_size};
pub use validate::{
    image_name, Access, Cpus, Env, Image, Limits, Mount, MountKind, OciRuntime, Policy, Tier,
    DEFAULT_PATH, LAYERED_TIER, OPTIONAL_FIELDS,
};
