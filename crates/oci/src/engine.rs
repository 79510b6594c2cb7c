//! What every engine reports back: whether it can run here, how a command ended, and why it could
//! not run.

use std::path::PathBuf;

/// Whether an engine can run on this host, found by a probe that never hangs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Availability {
    pub available: bool,
    /// The binary or daemon found, with its version (`runc 1.1.5`).
    pub found: Option<String>,
    /// Why it cannot run (None when available).
    pub reason: Option<String>,
    /// How to make it available (`apt-get install runc`).
    pub fix: Option<String>,
    /// Extra facts worth showing (`platform ptrace (kvm hangs here)`, `cgroup: private namespace`).
    pub notes: Vec<String>,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// The memory limit killed it (when the engine can tell).
    pub oom: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine is not usable here (missing binary, no daemon, version too old).
    #[error("{engine} is not available: {reason}")]
    Unavailable {
        engine: &'static str,
        reason: String,
    },
    /// A policy field this engine cannot enforce: refused, never run weaker.
    #[error("the {engine} tier cannot enforce {field}: {reason}")]
    Unenforceable {
        engine: &'static str,
        field: &'static str,
        reason: String,
    },
    /// The command does not exist or cannot be executed inside the sandbox.
    #[error("{message}")]
    Command { not_found: bool, message: String },
    /// Setting the sandbox up failed; `step` names what was being done.
    #[error("{step}: {message}")]
    Setup { step: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
