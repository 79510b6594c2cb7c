//! `POST /v1/sandboxes/{id}/exec/stream`: runs one command and streams its output as server-sent
//! events while it runs: `stdout` and `stderr` events carry `{"data": "..."}` chunks in order, then
//! one `exit` event `{"exit_code", "duration_ms"}` (or one `error` event `{"code", "message"}`).

use std::convert::Infallible;

use agentbox_runtime::persistent::{self, Health, Stream};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use serde_json::json;
use tokio_stream::wrappers::ReceiverStream;

use super::exec::request_of;
use super::sandbox_error;
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorCode};
use crate::extract::ApiJson;
use crate::model::ExecBody;
use crate::tenancy::resolve;
use crate::AppState;

/// Events buffered between the command and a slow client before output waits for it.
const BUFFERED_EVENTS: usize = 256;

fn event(name: &str, data: serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// Runs a command in a sandbox of the caller's tenant, streaming its output.
#[utoipa::path(
    post, path = "/v1/sandboxes/{id}/exec/stream", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = ExecBody,
    responses(
        (status = 200, description = "text/event-stream: stdout, stderr, then exit (or error) events"),
    ),
    security(("bearer" = []))
)]
pub async fn exec_stream(
    State(app): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExecBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (request, stdin) = request_of(body)?;
    // Resolve before answering, so a bad id is an HTTP error rather than an event.
    let sandbox = super::blocking({
        let id = id.clone();
        move || resolve(&tenant, &id)
    })
    .await?;
    if sandbox.health() == Health::Failed {
        return Err(ApiError::new(
            ErrorCode::SandboxFailed,
            format!("sandbox {id}: its supervisor died; DELETE it to reclaim it"),
        ));
    }
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<Event, Infallible>>(BUFFERED_EVENTS);
    tokio::task::spawn_blocking(move || {
        let send = |e: Event| {
            let _ = sender.blocking_send(Ok(e));
        };
        let result =
            persistent::exec_streaming(&sandbox.id, request, &stdin, &mut |stream, chunk| {
                let name = match stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                };
                send(event(
                    name,
                    json!({ "data": String::from_utf8_lossy(chunk) }),
                ));
            });
        match result {
            Ok((exit_code, duration)) => {
                app.metrics.record_exec(duration);
                send(event(
                    "exit",
                    json!({ "exit_code": exit_code, "duration_ms": duration.as_millis() as u64 }),
                ));
            }
            Err(e) => {
                let error = sandbox_error(&e, &sandbox);
                send(event(
                    "error",
                    json!({ "code": error.code.as_str(), "message": e.to_string() }),
                ));
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(receiver)).keep_alive(KeepAlive::default()))
}
