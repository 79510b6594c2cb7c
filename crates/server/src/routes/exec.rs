//! `POST /v1/sandboxes/{id}/exec`: runs one command to its end and answers with its exit code
//! and captured output. A command that does not exist (127) or cannot be executed (126) is a
//! command outcome, answered 200 like any other exit code, never an API error.

use std::time::Duration;

use agentbox_runtime::exit_code;
use agentbox_runtime::persistent::protocol::ExecRequest;
use agentbox_runtime::persistent::{self, Health};
use axum::extract::{Path, State};
use axum::Json;

use super::{blocking, sandbox_error};
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::ApiJson;
use crate::model::{ExecBody, ExecResult};
use crate::tenancy::resolve;
use crate::AppState;

/// Most bytes of stdout, and of stderr, kept from one command.
pub const MAX_OUTPUT: usize = 1 << 20;

pub(crate) fn request_of(body: ExecBody) -> Result<(ExecRequest, Vec<u8>), ApiError> {
    if body.command.is_empty() || body.command[0].is_empty() {
        return Err(ApiError::invalid("command: give at least the program"));
    }
    if body.timeout_s == Some(0) {
        return Err(ApiError::invalid("timeout_s: must be at least 1"));
    }
    let request = ExecRequest {
        argv: body.command,
        env: body.env.into_iter().collect(),
        cwd: body.cwd,
        timeout_ms: body.timeout_s.map(|s| s.saturating_mul(1000)),
        tty: false,
        tty_size: None,
        stdin: body.stdin.is_some(),
    };
    Ok((request, body.stdin.unwrap_or_default().into_bytes()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command in a sandbox of the caller's tenant.
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/exec", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = ExecBody,
    responses(
        (status = 200, description = "The command ran to its end", body = ExecResult),
        (status = 400, description = "invalid_request (a cwd that does not exist...)", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "sandbox_failed: its supervisor died", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn exec(
    State(app): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExecBody>,
) -> Result<Json<ExecResult>, ApiError> {
    let (request, stdin) = request_of(body)?;
    let result = blocking(move || {
        let sandbox = resolve(&tenant, &id)?;
        if sandbox.health() == Health::Failed {
            return Err(ApiError::new(
                ErrorCode::SandboxFailed,
                format!("sandbox {id}: its supervisor died; DELETE it to reclaim it"),
            ));
        }
        match persistent::exec_captured(&sandbox.id, request, &stdin, MAX_OUTPUT) {
            Ok(c) => Ok(ExecResult {
                exit_code: c.exit_code,
                stdout: text(&c.stdout),
                stderr: text(&c.stderr),
                truncated: c.truncated,
                duration_ms: u64::try_from(c.duration.as_millis()).unwrap_or(u64::MAX),
            }),
            Err(e)
                if [exit_code::NOT_FOUND, exit_code::CANNOT_EXECUTE].contains(&e.exit_code()) =>
            {
                Ok(ExecResult {
                    exit_code: e.exit_code(),
                    stdout: String::new(),
                    stderr: format!("agentbox: {e}\n"),
                    truncated: false,
                    duration_ms: 0,
                })
            }
            Err(e) => Err(sandbox_error(&e, &sandbox)),
        }
    })
    .await?;
    app.metrics
        .record_exec(Duration::from_millis(result.duration_ms));
    Ok(Json(result))
}
