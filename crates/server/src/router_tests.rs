//! The router without sockets or sandboxes: auth, error shapes, the body limit, the OpenAPI
//! document and the metrics, each request answered before any runtime operation runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::{to_bytes, Body};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use crate::{router, AppState, Config};

const TOKEN: &str = "test-token-0123456789";

fn app() -> Router {
    let config = Config::from_toml(&format!(
        "listen = \"127.0.0.1:0\"\nagentbox = \"/nonexistent/agentbox\"\nmax_body = 1024\n\
         [[tokens]]\ntoken = \"{TOKEN}\"\ntenant = \"t\"\nmax_sandboxes = 1\nmax_memory = 1\n"
    ))
    .unwrap();
    router(AppState::new(config))
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let www = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, www, json)
}

fn code(json: &Value) -> &str {
    json["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn health_needs_no_token_and_everything_else_does() {
    let app = app();
    let (status, _, json) = call(&app, Method::GET, "/health", None, "").await;
    assert_eq!(
        (status, json["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    for uri in [
        "/v1/sandboxes",
        "/v1/sandboxes/abc",
        "/metrics",
        "/openapi.json",
    ] {
        for token in [None, Some("wrong-token-0123456789")] {
            let (status, www, json) = call(&app, Method::GET, uri, token, "").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
            assert_eq!(code(&json), "unauthorized");
            assert_eq!(www, "Bearer");
        }
    }
}

#[tokio::test]
async fn bad_bodies_get_stable_codes() {
    let app = app();
    let tok = Some(TOKEN);
    for (body, needle) in [
        ("{\"nmae\": \"x\"}", "nmae"),
        ("{\"policy\": {\"memroy\": \"1G\"}}", "memroy"),
        ("{not json", "request body"),
        ("{\"policy\": {\"workspace\": \"/etc\"}}", "workspace"),
        ("{\"name\": \"0123456789ab\"}", "hex"),
    ] {
        let (status, _, json) = call(&app, Method::POST, "/v1/sandboxes", tok, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        assert_eq!(code(&json), "invalid_request");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
    let big = format!("{{\"name\": \"{}\"}}", "a".repeat(2000));
    let (status, _, json) = call(&app, Method::POST, "/v1/sandboxes", tok, &big).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let (status, _, json) =
        call(&app, Method::GET, "/v1/sandboxes/x/files?path=rel", tok, "").await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (status, _, json) = call(&app, Method::GET, "/v2/nothing", tok, "").await;
    assert_eq!((status, code(&json)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, _, json) = call(&app, Method::PATCH, "/v1/sandboxes", tok, "").await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn openapi_and_metrics_describe_the_server() {
    let app = app();
    let (status, _, doc) = call(&app, Method::GET, "/openapi.json", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/sandboxes",
        "/v1/sandboxes/{id}",
        "/v1/sandboxes/{id}/exec",
        "/v1/sandboxes/{id}/files",
        "/v1/sandboxes/{id}/dir",
        "/health",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["ExecBody"].is_object());
    let _ = call(&app, Method::GET, "/v1/sandboxes", None, "").await;
    let (status, _, text) = call(&app, Method::GET, "/metrics", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(
        text.contains("agentbox_errors_total{code=\"unauthorized\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("agentbox_exec_duration_seconds_bucket"),
        "{text}"
    );
}
