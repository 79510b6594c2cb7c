//! Bearer authentication: the middleware that turns `Authorization: Bearer <token>` into the
//! caller's `Tenant` (a request extension handlers extract), or answers 401 `unauthorized`.
//! It never says whether a token exists for another tenant, nor logs a presented token.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::{ApiError, ErrorCode};
use crate::AppState;

/// The tenant a request acts for, with its quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    pub max_sandboxes: u32,
    pub max_memory: u64,
}

/// Admits requests carrying a configured token; every other one gets 401.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing header Authorization: Bearer <token>",
            )
        })?;
    let token = state
        .config
        .token(presented)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown token"))?;
    // Quotas are the tenant's, whichever of its tokens was used.
    let quotas = state.config.quotas(&token.tenant).unwrap_or(token);
    let tenant = Tenant {
        name: token.tenant.clone(),
        max_sandboxes: quotas.max_sandboxes,
        max_memory: quotas.max_memory,
    };
    request.extensions_mut().insert(tenant);
    Ok(next.run(request).await)
}
