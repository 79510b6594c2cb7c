//! The OpenAPI document, derived from the handlers' `#[utoipa::path]` annotations and the same
//! request and response types they use, so it cannot drift from what the server does.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorCode, ErrorDetail};
use crate::model::{
    CreateRequest, Created, DirEntry, ExecBody, ExecResult, HealthStatus, NetworkChange,
    NetworkLists, Sandbox, SandboxHealth,
};
use crate::routes::{exec, exec_stream, files, network, sandboxes, service};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentbox",
        description = "Persistent sandboxes for AI agents. Every path but /health needs \
                       `Authorization: Bearer <token>`; a token acts for one tenant, which sees \
                       only its own sandboxes."
    ),
    paths(
        sandboxes::create, sandboxes::list, sandboxes::show, sandboxes::delete,
        exec::exec, exec_stream::exec_stream, files::write, files::read, files::list,
        network::show, network::change,
        service::health, service::metrics, service::openapi,
    ),
    components(schemas(
        CreateRequest, Created, Sandbox, SandboxHealth, ExecBody, ExecResult, DirEntry,
        HealthStatus, ErrorBody, ErrorDetail, ErrorCode, NetworkChange, NetworkLists,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}
