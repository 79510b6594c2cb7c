//! `/v1/sandboxes/{id}/files` and `/dir`: write, read and list files inside a sandbox of the
//! caller's tenant. Every path is resolved by the runtime inside the sandbox's root (a symlink
//! planted inside cannot lead to a host file); bodies are raw bytes, never JSON.

use agentbox_runtime::persistent;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use super::{blocking, sandbox_error};
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{PathQuery, RawBody, SandboxPath};
use crate::model::DirEntry;
use crate::tenancy::resolve;
use crate::AppState;

/// Writes the request body to a file of the sandbox (created or replaced, owned by its user).
#[utoipa::path(
    put, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "Written"),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn write(
    tenant: Tenant,
    Path(id): Path<String>,
    SandboxPath(path): SandboxPath,
    RawBody(contents): RawBody,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let sandbox = resolve(&tenant, &id)?;
        persistent::write_file(&sandbox.id, &path, &contents)
            .map_err(|e| sandbox_error(&e, &sandbox))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads a file of the sandbox (one larger than the server's `max_body` is refused).
#[utoipa::path(
    get, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses(
        (status = 200, description = "The file's bytes", body = Vec<u8>,
         content_type = "application/octet-stream"),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 413, description = "payload_too_large: the file exceeds max_body", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn read(
    State(app): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    SandboxPath(path): SandboxPath,
) -> Result<impl IntoResponse, ApiError> {
    let max = usize::try_from(app.config.max_body).unwrap_or(usize::MAX);
    let contents = blocking(move || {
        let sandbox = resolve(&tenant, &id)?;
        // One byte more than allowed tells a file that is too large from one that fits.
        let data = persistent::read_file(&sandbox.id, &path, max.saturating_add(1))
            .map_err(|e| sandbox_error(&e, &sandbox))?;
        if data.len() > max {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("{}: larger than {max} bytes", path.display()),
            ));
        }
        Ok(data)
    })
    .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Bytes::from(contents),
    ))
}

/// Lists a directory of the sandbox.
#[utoipa::path(
    get, path = "/v1/sandboxes/{id}/dir", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses(
        (status = 200, body = Vec<DirEntry>),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    tenant: Tenant,
    Path(id): Path<String>,
    SandboxPath(path): SandboxPath,
) -> Result<Json<Vec<DirEntry>>, ApiError> {
    let entries = blocking(move || {
        let sandbox = resolve(&tenant, &id)?;
        persistent::list_dir(&sandbox.id, &path).map_err(|e| sandbox_error(&e, &sandbox))
    })
    .await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| DirEntry {
                name: e.name,
                kind: e.kind,
                size: e.size,
            })
            .collect(),
    ))
}
