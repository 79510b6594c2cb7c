//! The MCP server: the sandbox operations of the HTTP API offered as Model Context Protocol
//! tools, over stdio (`agentbox mcp`, acting for one local tenant) or streamable HTTP (`/mcp`,
//! acting for the bearer token's tenant). One control plane: every tool calls the same handler
//! function as its HTTP route (tenancy, quotas, metrics and errors included), and its input and
//! output schemas are generated from the same types as the OpenAPI document.

mod tools;

use std::path::PathBuf;
use std::sync::Arc;

use rmcp::handler::server::ServerHandler;
use rmcp::model::{Implementation, InitializeResult, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool_handler, ServiceExt};

use crate::auth::Tenant;
use crate::config::{Config, Token};
use crate::AppState;

pub use tools::{
    Destroyed, ExecArgs, FileContent, FileListing, FileWriteArgs, FileWritten, NetworkArgs,
    PathArgs, SandboxId, SandboxList, MAX_TEXT,
};

const INSTRUCTIONS: &str = "agentbox runs commands in isolated Linux sandboxes. Create a \
sandbox with sandbox_create, run commands in it with sandbox_exec (files persist between \
commands: /tmp, /root, /workspace), move text files in and out with file_write and file_read, \
and destroy it with sandbox_destroy when done. A sandbox has no network unless its policy \
asks for one: {\"network\": {\"mode\": \"allow:pypi.org,*.github.com\"}} admits those host \
names through an HTTP(S) proxy (sandbox_network changes the list later).";

/// The MCP service: the HTTP API's state, and the tenant it acts for when the transport has no
/// bearer token (stdio).
#[derive(Clone)]
pub struct McpServer {
    app: AppState,
    local_tenant: Option<Tenant>,
}

impl McpServer {
    /// A server for streamable HTTP: each request acts for the tenant the auth layer found.
    pub fn for_http(app: AppState) -> McpServer {
        McpServer {
            app,
            local_tenant: None,
        }
    }

    /// A server acting for one tenant whatever the request (stdio).
    pub fn for_tenant(app: AppState, tenant: Tenant) -> McpServer {
        McpServer {
            app,
            local_tenant: Some(tenant),
        }
    }
}

#[tool_handler]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agentbox", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

/// `agentbox mcp`: who the stdio server acts for.
#[derive(Debug, Clone)]
pub struct StdioOptions {
    /// The `agentbox` binary whose hidden `__create` helper makes sandboxes.
    pub agentbox: PathBuf,
    /// The tenant recorded on the sandboxes it creates; it sees only that tenant's sandboxes.
    pub tenant: String,
    pub max_sandboxes: u32,
    /// Bytes: the sum of the tenant's sandboxes' memory limits.
    pub max_memory: u64,
    /// Largest file written or read back, in bytes.
    pub max_body: u64,
}

/// Serves MCP on stdin and stdout until the client closes them.
pub async fn serve_stdio(options: StdioOptions) -> std::io::Result<()> {
    if options
        .tenant
        .starts_with(crate::pool::RESERVED_TENANT_PREFIX)
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "tenants starting with '(' are reserved (the warm pools' sandboxes belong to them)",
        ));
    }
    let tenant = Tenant {
        name: options.tenant.clone(),
        max_sandboxes: options.max_sandboxes,
        max_memory: options.max_memory,
    };
    // The configuration only carries the tenant and the helper's path: nothing listens, and the
    // token is never compared with anything.
    let config = Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        agentbox: options.agentbox,
        max_body: options.max_body,
        tokens: vec![Token {
            token: String::new(),
            tenant: options.tenant,
            max_sandboxes: options.max_sandboxes,
            max_memory: options.max_memory,
        }],
        pool: Vec::new(),
    };
    let server = McpServer::for_tenant(AppState::new(config), tenant);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}

/// The `/mcp` endpoint (streamable HTTP, with sessions). It sits behind the bearer auth layer,
/// which puts the caller's `Tenant` into the request the tools read it from. The Host check
/// against DNS rebinding is off: a browser page cannot send the bearer token every request needs.
pub fn http_service(app: AppState) -> StreamableHttpService<McpServer, LocalSessionManager> {
    let max_body = usize::try_from(app.config.max_body).unwrap_or(usize::MAX);
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_max_request_body_bytes(max_body);
    StreamableHttpService::new(
        move || Ok(McpServer::for_http(app.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
