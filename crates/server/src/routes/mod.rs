//! The handlers, one module per resource, and the one way they reach the runtime: on tokio's
//! blocking pool (every runtime operation reads files or waits on a sandbox's socket). Handlers
//! only translate HTTP to runtime calls and back; the sandboxes' behaviour lives in the runtime.

pub mod exec;
pub mod exec_stream;
pub mod files;
pub mod network;
pub mod sandboxes;
pub mod service;

use agentbox_runtime::persistent::{Health, State as SandboxState};
use agentbox_runtime::RunError;

use crate::error::ApiError;

/// Runs `work` on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("worker: {e}")))?
}

/// The answer for a runtime failure on `sandbox`: `not_found` when it vanished meanwhile (its
/// TTL, a concurrent delete), `sandbox_failed` when its supervisor died, else by exit code.
pub fn sandbox_error(error: &RunError, sandbox: &SandboxState) -> ApiError {
    if !sandbox.dir().exists() {
        return ApiError::no_sandbox(&sandbox.id);
    }
    ApiError::from_run(error, sandbox.health() == Health::Failed)
}
