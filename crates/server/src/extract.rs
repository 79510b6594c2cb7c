//! Request extractors whose every rejection is an `ApiError`: a JSON body (unknown fields and
//! malformed JSON are `invalid_request`, an over-long body `payload_too_large`), a raw body, the
//! `?path=` query, and the caller's tenant put there by the auth layer. Axum's own rejections
//! (plain text, assorted statuses) never reach a client.

use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Tenant;
use crate::error::{ApiError, ErrorCode};

/// A JSON body. An empty body reads as `{}`, so that every field may be left out.
pub struct ApiJson<T>(pub T);

/// A raw body (a file's contents).
pub struct RawBody(pub Bytes);

fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
    } else {
        ApiError::invalid(format!("request body: {}", rejection.body_text()))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(ApiJson)
            .map_err(|e| ApiError::invalid(format!("request body: {e}")))
    }
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(body_error)
    }
}

/// `?path=`: an absolute path inside the sandbox.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// Absolute path inside the sandbox; resolved inside its root (symlinks cannot leave it).
    pub path: String,
}

/// The `path` query parameter, checked to be absolute.
pub struct SandboxPath(pub PathBuf);

impl<S: Send + Sync> FromRequestParts<S> for SandboxPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(query) = Query::<PathQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))?;
        if !query.path.starts_with('/') || query.path.contains('\0') {
            return Err(ApiError::invalid(format!(
                "path {:?}: must be an absolute path",
                query.path
            )));
        }
        Ok(SandboxPath(PathBuf::from(query.path)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Tenant>()
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "no bearer token"))
    }
}
