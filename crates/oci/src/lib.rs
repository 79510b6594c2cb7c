//! agentbox's external engines: industry runtimes driven from agentbox's one policy. The runtime
//! crate turns a validated policy into a [`Sandbox`] description (resolved host paths, a prepared
//! root file system, limits); each engine translates that description into its own format and runs
//! it. Safe Rust only: processes are started with `std::process`.

pub mod desc;
pub mod engine;

pub use desc::{Bind, Limits, Sandbox, Tmpfs};
pub use engine::{Availability, EngineError, Outcome};
