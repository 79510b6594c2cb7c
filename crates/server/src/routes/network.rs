//! `/v1/sandboxes/{id}/network`: a sandbox's egress allowlist (network mode `allow`), read and
//! changed at run time; a change applies to the sandbox's next connection.

use agentbox_runtime::persistent;
use axum::extract::Path;
use axum::Json;

use super::{blocking, sandbox_error};
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::model::{NetworkChange, NetworkLists};
use crate::tenancy::resolve;

/// The allowlist in force.
#[utoipa::path(
    get, path = "/v1/sandboxes/{id}/network", tag = "network",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "The lists in force", body = NetworkLists),
        (status = 400, description = "invalid_request: the sandbox has no egress proxy", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn show(tenant: Tenant, Path(id): Path<String>) -> Result<Json<NetworkLists>, ApiError> {
    change_lists(tenant, id, NetworkChange::default()).await
}

/// Adds names to the allow or deny list (a name moves from one to the other) and returns the lists.
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/network", tag = "network",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = NetworkChange,
    responses(
        (status = 200, description = "The lists now in force", body = NetworkLists),
        (status = 400, description = "invalid_request: a malformed name, or no egress proxy", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn change(
    tenant: Tenant,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NetworkChange>,
) -> Result<Json<NetworkLists>, ApiError> {
    change_lists(tenant, id, body).await
}

pub(crate) async fn change_lists(
    tenant: Tenant,
    id: String,
    body: NetworkChange,
) -> Result<Json<NetworkLists>, ApiError> {
    blocking(move || {
        let sandbox = resolve(&tenant, &id)?;
        persistent::network(&sandbox.id, &body.allow, &body.deny)
            .map(|l| Json(NetworkLists::from(l)))
            .map_err(|e| sandbox_error(&e, &sandbox))
    })
    .await
}
