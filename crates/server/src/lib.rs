//! `agentbox serve`: the HTTP API over persistent sandboxes. A thin transport: every operation
//! is one call of `agentbox_runtime::persistent` (the same the CLI makes), run on tokio's blocking
//! pool; sandboxes are created by the `agentbox` binary's helper, so this threaded process never
//! forks. It keeps no state of its own: sandboxes, their tenants and their health are read from
//! /run/agentbox at each request, so a restarted server finds every sandbox again. The one
//! exception is the warm pools' list of idle sandboxes (`pool`), which it removes when it stops.

mod auth;
mod config;
mod error;
mod extract;
pub mod mcp;
mod metrics;
mod model;
mod openapi;
mod pool;
mod routes;
mod tenancy;

#[cfg(test)]
mod router_tests;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;

pub use auth::Tenant;
pub use config::{Config, PoolConfig, Token, DEFAULT_MAX_BODY};
pub use error::{ApiError, ErrorCode, ServerError};
pub use model::{
    CreateRequest, Created, DirEntry, ExecBody, ExecResult, HealthStatus, Sandbox, SandboxHealth,
};
pub use openapi::ApiDoc;

use crate::metrics::Metrics;
use crate::pool::Pools;
use crate::routes::{exec, exec_stream, files, network, sandboxes, service};

/// What every handler shares: the configuration, the counters, one create lock per tenant, and
/// the warm pools (filled only once `serve_on` starts them).
#[derive(Clone)]
pub struct AppState {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    create_locks: Arc<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pools: Arc<Pools>,
}

impl AppState {
    pub fn new(config: Config) -> AppState {
        let create_locks = config
            .tokens
            .iter()
            .map(|t| (t.tenant.clone(), Arc::default()))
            .collect();
        AppState {
            pools: Arc::new(Pools::new(&config.pool)),
            config: Arc::new(config),
            metrics: Arc::default(),
            create_locks: Arc::new(create_locks),
        }
    }

    /// The lock a tenant's creates take in turn (every tenant has one: tenants come from the
    /// configuration).
    fn create_lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.create_locks.get(tenant).cloned().unwrap_or_default()
    }
}

async fn no_route() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

/// Every route of the API, with auth, the body limit and error accounting.
pub fn router(state: AppState) -> Router {
    let limit = usize::try_from(state.config.max_body).unwrap_or(usize::MAX);
    let authenticated = Router::new()
        .route(
            "/v1/sandboxes",
            get(sandboxes::list).post(sandboxes::create),
        )
        .route(
            "/v1/sandboxes/{id}",
            get(sandboxes::show).delete(sandboxes::delete),
        )
        .route("/v1/sandboxes/{id}/exec", axum::routing::post(exec::exec))
        .route(
            "/v1/sandboxes/{id}/exec/stream",
            axum::routing::post(exec_stream::exec_stream),
        )
        .route(
            "/v1/sandboxes/{id}/files",
            get(files::read).put(files::write),
        )
        .route("/v1/sandboxes/{id}/dir", get(files::list))
        .route(
            "/v1/sandboxes/{id}/network",
            get(network::show).post(network::change),
        )
        .route("/metrics", get(service::metrics))
        .route("/openapi.json", get(service::openapi))
        .route_service("/mcp", mcp::http_service(state.clone()))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/health", get(service::health))
        .merge(authenticated)
        .fallback(no_route)
        // The limit is tower-http's alone (axum's default of 2 MB would cut files short).
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_errors,
        ))
        .with_state(state)
}

/// Serves the API on `config.listen` until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServerError> {
    let listen = config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ServerError::Bind(listen, e))?;
    serve_on(listener, config, shutdown_signal()).await
}

/// Serves the API on a bound listener until `shutdown` completes (tests bind port 0). The warm
/// pools fill in the background from the start; their idle sandboxes are removed at the end.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = AppState::new(config);
    state.pools.start(state.config.agentbox.clone()).await;
    let served = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve);
    state.pools.shutdown().await;
    served
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, SIGINT alone ends the server.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
