//! agentbox's external engines: industry runtimes driven from agentbox's one policy. The runtime
//! crate turns a validated policy into a [`Sandbox`] description (resolved host paths, a prepared
//! root file system, limits); each engine translates that description into its own format and runs
//! it. Safe Rust only: processes are started with `std::process`.
//!
//! This crate's own engine is the OCI runtimes: [`bundle`] (description → `config.json`),
//! [`seccomp`] (allowlist → OCI / Docker seccomp), [`runtimes`] (runc, crun, runsc: probes and
//! choice), [`run`] (the driver), [`cgroups`] (OOM and leftovers).

pub mod bundle;
pub mod cgroups;
pub mod desc;
pub mod engine;
pub mod marks;
mod process;
pub mod run;
pub mod runtimes;
pub mod seccomp;
pub mod wait;

pub use desc::{Bind, ExecProcess, Limits, Sandbox, Tmpfs};
pub use engine::{Availability, EngineError, Outcome};
pub use run::{check, create, destroy, exec_command, kill, run, state};
pub use runtimes::{gvisor_platform_probe, pick_oci, prepare_mount_namespace, probe, Runtime};
pub use seccomp::docker_profile;
