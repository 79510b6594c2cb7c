//! Escape probes: `agentbox __probe` runs inside a sandbox (or a peer tool's sandbox) and attempts,
//! one by one, the techniques of `probes::all()`, printing one JSON line per probe on stdout. Every
//! probe acts only on objects the harness planted for it (the sentinel process, named by a marker
//! in its command line; the canary paths; the test listener) and never on anything else: no
//! broadcast signals, no writes of new values to host sysctls. Each probe runs in a forked child with
//! a time limit, so a probe that crashes or hangs costs only its own result.
//!
//! The probe's verdict is a first opinion: `agentbox eval` checks the host side (canaries, sentinel,
//! sysctls, listener) and has the last word.

mod context;
mod outcome;
pub mod probes;
mod runner;

pub use context::Context;
pub use outcome::{Outcome, Verdict};
pub use probes::{all, Probe};
pub use runner::main;
