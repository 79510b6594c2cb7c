//! Errors: `ApiError`, the one error shape every endpoint answers with
//! (`{"error": {"code", "message"}}`, a stable code per HTTP status), the mapping of the runtime's
//! `RunError` exit codes onto it, and `ServerError` for starting the server. Never leaks whether a
//! sandbox of another tenant exists: that is always `not_found`.

use std::net::SocketAddr;
use std::path::PathBuf;

use agentbox_runtime::{exit_code, RunError};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Failure to start or run the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("read {0}: {1}")]
    ReadConfig(PathBuf, std::io::Error),
    #[error("config {0}: {1}")]
    InvalidConfig(PathBuf, String),
    #[error("listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("serve: {0}")]
    Serve(std::io::Error),
}

/// The stable error codes of the API, one per kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    NotFound,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    QuotaExceeded,
    SandboxFailed,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::SandboxFailed => StatusCode::CONFLICT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::SandboxFailed => "sandbox_failed",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// One line for a person: what was wrong, naming the field or value.
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// The answer for a sandbox that does not exist or belongs to another tenant.
    pub fn no_sandbox(target: &str) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("no sandbox {target}"))
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    /// A runtime failure of an operation on a sandbox; `failed` says whether its supervisor is
    /// dead, which makes a setup failure the sandbox's state rather than the server's fault.
    pub fn from_run(error: &RunError, failed: bool) -> ApiError {
        match error.exit_code() {
            exit_code::INVALID_INPUT => ApiError::invalid(error.to_string()),
            _ if failed => ApiError::new(ErrorCode::SandboxFailed, error.to_string()),
            _ => ApiError::internal(error.to_string()),
        }
    }
}

/// Marks a response as an API error of this code, for the metrics layer.
#[derive(Debug, Clone, Copy)]
pub struct Recorded(pub ErrorCode);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if self.code == ErrorCode::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response.extensions_mut().insert(Recorded(self.code));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_errors_map_onto_stable_codes() {
        let invalid = RunError::invalid("cwd", "/nope", "no such directory");
        assert_eq!(
            ApiError::from_run(&invalid, false).code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            ApiError::from_run(&invalid, true).code,
            ErrorCode::InvalidRequest
        );
        let setup = RunError::setup("connect", "refused");
        assert_eq!(ApiError::from_run(&setup, false).code, ErrorCode::Internal);
        assert_eq!(
            ApiError::from_run(&setup, true).code,
            ErrorCode::SandboxFailed
        );
        for code in [ErrorCode::QuotaExceeded, ErrorCode::SandboxFailed] {
            let json = serde_json::to_value(code).unwrap_or_default();
            assert_eq!(json, code.as_str());
        }
    }
}
