//! agentbox runtime: the tiers, the translation of a validated policy into mechanism (mount plan,
//! seccomp program, Landlock rules, cgroup writes; all pure and unit-tested), and the lifecycle of a
//! run. Safe Rust only: every syscall goes through `agentbox-sys`.

mod build;
pub mod cgroup;
pub mod engine;
mod error;
pub mod gc;
pub mod helper;
pub mod host;
mod launch;
pub mod microvm;
pub mod net;
pub mod persistent;
pub mod plan;
pub mod record;
pub mod seccomp;
pub mod select;
mod serve;
mod supervise;
pub mod tier;
pub mod timing;
pub mod transfer;
pub mod uidmap;
pub mod wasm;

pub use error::{exit_code, RunError};
pub use helper::helper_command;
pub use record::{ExitRecord, Reason};
pub use supervise::run;

/// Set (by `agentbox run --verbose`) to have the runtime say on stderr what it picked.
pub const VERBOSE_VARIABLE: &str = "AGENTBOX_VERBOSE";

/// Whether the run was asked to be verbose.
pub fn verbose() -> bool {
    std::env::var_os(VERBOSE_VARIABLE).is_some()
}
