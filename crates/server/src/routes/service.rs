//! The service's own endpoints: `/health` (no auth: it reveals nothing), `/metrics` (Prometheus
//! text) and `/openapi.json` (generated from the handlers' own types).

use agentbox_runtime::persistent::state;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use utoipa::OpenApi;

use super::blocking;
use crate::error::ApiError;
use crate::model::HealthStatus;
use crate::openapi::ApiDoc;
use crate::AppState;

/// Whether the server answers.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, body = HealthStatus)))]
pub async fn health() -> Json<HealthStatus> {
    Json(HealthStatus {
        status: "ok".into(),
    })
}

/// Metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text exposition", body = String,
               content_type = "text/plain")),
    security(("bearer" = [])))]
pub async fn metrics(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = blocking(move || {
        let mut text = app.metrics.render(&state::list());
        text.push_str(&crate::metrics::render_pools(&app.pools.stats()));
        Ok(text)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
    security(("bearer" = [])))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
