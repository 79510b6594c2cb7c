//! Errors of running a sandbox, each with the exit code `agentbox` reports for it.

use std::fmt::Display;
use std::path::Path;

/// Exit codes of agentbox's own failures (documented in docs/cli.md). A command's own exit code,
/// or 128+N when signal N killed it, is passed through unchanged.
pub mod exit_code {
    /// The sandbox did not start: the host refused a step (a kernel feature missing or denied).
    pub const SETUP_FAILED: i32 = 123;
    /// The wall-clock timeout ended the run (as GNU timeout).
    pub const TIMEOUT: i32 = 124;
    /// Invalid input: a policy field, a flag, a path.
    pub const INVALID_INPUT: i32 = 125;
    /// The command exists in the sandbox but cannot be executed.
    pub const CANNOT_EXECUTE: i32 = 126;
    /// The command does not exist in the sandbox.
    pub const NOT_FOUND: i32 = 127;
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A value the user gave is wrong; `field` names it.
    #[error("{field} {value}: {reason}")]
    InvalidInput {
        field: String,
        value: String,
        reason: String,
    },
    /// A value the user gave does not fit the sandbox as built (a cwd that does not exist there, a
    /// mount target that crosses a symlink of the image).
    #[error("{0}")]
    InvalidInSandbox(String),
    #[error("command not found in the sandbox: {0}")]
    NotFound(String),
    #[error("cannot execute {0}")]
    CannotExecute(String),
    /// A setup step failed on this host; `step` names it.
    #[error("sandbox setup failed: {step}: {reason}")]
    Setup { step: String, reason: String },
    /// The tier cannot enforce a policy field on this host (fail closed).
    #[error("tier {tier} cannot enforce {field}: {reason}")]
    Unenforceable {
        tier: &'static str,
        field: &'static str,
        reason: String,
    },
}

impl RunError {
    pub fn invalid(field: &str, value: impl AsRef<Path>, reason: impl Display) -> Self {
        RunError::InvalidInput {
            field: field.to_string(),
            value: value.as_ref().display().to_string(),
            reason: reason.to_string(),
        }
    }

    pub fn setup(step: impl Into<String>, reason: impl Display) -> Self {
        RunError::Setup {
            step: step.into(),
            reason: reason.to_string(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::InvalidInput { .. } | RunError::InvalidInSandbox(_) => {
                exit_code::INVALID_INPUT
            }
            RunError::NotFound(_) => exit_code::NOT_FOUND,
            RunError::CannotExecute(_) => exit_code::CANNOT_EXECUTE,
            RunError::Setup { .. } | RunError::Unenforceable { .. } => exit_code::SETUP_FAILED,
        }
    }
}
