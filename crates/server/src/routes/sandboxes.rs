//! `/v1/sandboxes` and `/v1/sandboxes/{id}`: create (quotas checked under the tenant's create
//! lock), list, show and delete the caller tenant's sandboxes. Another tenant's sandbox is
//! `not_found` here, whatever the operation.

use std::time::Duration;

use agentbox_runtime::persistent::{self, CreateOptions};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::{blocking, sandbox_error};
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::model::{CreateRequest, Created, Sandbox};
use crate::tenancy::{check_name, check_policy, check_quota, owned, resolve};
use crate::AppState;

fn seconds(field: &str, value: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match value {
        Some(0) => Err(ApiError::invalid(format!("{field}: must be at least 1"))),
        v => Ok(v.map(Duration::from_secs)),
    }
}

/// Creates a sandbox for the caller's tenant: a pooled microVM when a warm pool of the server
/// has exactly this policy (and no TTL or idle timeout is asked), else a new one.
#[utoipa::path(
    post, path = "/v1/sandboxes", tag = "sandboxes",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Created and ready to run commands", body = Created),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 429, description = "quota_exceeded", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiJson(body): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let spec = body.policy.unwrap_or_default();
    let policy = check_policy(&spec)?;
    let memory = policy.limits.memory;
    // A pooled sandbox has no TTL nor idle timeout (its supervisor's are fixed at its start).
    let claimable = body.ttl_s.is_none() && body.idle_s.is_none();
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    let options = CreateOptions {
        name: body.name,
        ttl: seconds("ttl_s", body.ttl_s)?,
        idle: seconds("idle_s", body.idle_s)?,
        tenant: Some(tenant.name.clone()),
    };
    // One create at a time per tenant: the quota check sees every sandbox created before it.
    let lock = app.create_lock(&tenant.name);
    let _held = lock.lock().await;
    let agentbox = app.config.agentbox.clone();
    let pools = app.pools.clone();
    let id = blocking(move || {
        check_quota(&tenant, &owned(&tenant), memory)?;
        if claimable {
            let claimed = pools
                .claim(&policy, &tenant.name, options.name.as_deref())
                .map_err(|e| ApiError::from_run(&e, false))?;
            if let Some(id) = claimed {
                return Ok(id);
            }
        }
        persistent::create_with_helper(&agentbox, &spec, &options)
            .map_err(|e| ApiError::from_run(&e, false))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

/// The caller tenant's sandboxes, oldest first.
#[utoipa::path(
    get, path = "/v1/sandboxes", tag = "sandboxes",
    responses((status = 200, body = Vec<Sandbox>)),
    security(("bearer" = []))
)]
pub async fn list(tenant: Tenant) -> Result<Json<Vec<Sandbox>>, ApiError> {
    blocking(move || Ok(owned(&tenant).iter().map(Sandbox::from).collect()))
        .await
        .map(Json)
}

/// One sandbox of the caller's tenant, by id or name.
#[utoipa::path(
    get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, body = Sandbox),
        (status = 404, description = "not_found", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn show(tenant: Tenant, Path(id): Path<String>) -> Result<Json<Sandbox>, ApiError> {
    blocking(move || resolve(&tenant, &id).map(|s| Sandbox::from(&s)))
        .await
        .map(Json)
}

/// Tears a sandbox down (or reclaims what a failed one left).
#[utoipa::path(
    delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "not_found", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(tenant: Tenant, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let sandbox = resolve(&tenant, &id)?;
        persistent::stop(&sandbox.id).map_err(|e| sandbox_error(&e, &sandbox))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
