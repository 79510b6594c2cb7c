//! The MCP tools. Each one turns its arguments into the HTTP handler's own extractor values,
//! calls that handler, and turns its answer into a tool result: structured content (with a JSON
//! text copy) on success, a tool error whose text is `code: message` on failure, so that a model
//! reads why a call failed.

use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::McpServer;
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, RawBody, SandboxPath};
use crate::model::{
    CreateRequest, Created, DirEntry, ExecBody, ExecResult, NetworkChange, NetworkLists, Sandbox,
};
use crate::routes::{exec, files, network, sandboxes};

/// Most bytes of text one tool result carries per stream (stdout, stderr, a file's contents):
/// a model's context is smaller than what the HTTP API returns. Cut text ends with a note.
pub const MAX_TEXT: usize = 64 << 10;

/// `sandbox_exec`: the HTTP exec body and the sandbox it runs in. Read through a map so that the
/// body's own refusal of unknown fields holds (serde's `flatten` would let them through).
/// (The `serde` attributes here are read by the schema derive only.)
#[derive(Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecArgs {
    /// The sandbox's id (as returned by sandbox_create) or its name.
    pub id: String,
    #[serde(flatten)]
    pub body: ExecBody,
}

impl<'de> Deserialize<'de> for ExecArgs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ExecArgs, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        exec_args(map).map_err(serde::de::Error::custom)
    }
}

/// `ExecArgs` from its JSON object: `id` taken out, the rest read as the HTTP exec body.
fn exec_args(mut map: serde_json::Map<String, serde_json::Value>) -> Result<ExecArgs, String> {
    let id = match map.remove("id") {
        Some(serde_json::Value::String(id)) => id,
        Some(_) => return Err("id: must be a string".into()),
        None => return Err("missing field `id`".into()),
    };
    let body = serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())?;
    Ok(ExecArgs { id, body })
}

/// A sandbox, by id or name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxId {
    /// The sandbox's id (as returned by sandbox_create) or its name.
    pub id: String,
}

/// A change to a sandbox's egress allowlist.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkArgs {
    /// The sandbox's id (as returned by sandbox_create) or its name.
    pub id: String,
    /// Host names to admit from now on: exact (`pypi.org`) or `*.example.com` for subdomains.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Host names to refuse from now on.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A path inside a sandbox.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathArgs {
    /// The sandbox's id (as returned by sandbox_create) or its name.
    pub id: String,
    /// Absolute path inside the sandbox, e.g. /workspace/main.py.
    pub path: String,
}

/// `file_write`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileWriteArgs {
    /// The sandbox's id (as returned by sandbox_create) or its name.
    pub id: String,
    /// Absolute path inside the sandbox; its directory must exist.
    pub path: String,
    /// The whole new contents of the file, as text (UTF-8).
    pub content: String,
}

/// `file_write`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileWritten {
    pub path: String,
    /// Bytes written.
    pub bytes: u64,
}

/// `file_read`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileContent {
    pub path: String,
    /// The file's text (invalid UTF-8 replaced by U+FFFD), cut after MAX_TEXT bytes with a note.
    pub content: String,
    /// The file's size in bytes.
    pub size: u64,
    /// Whether `content` was cut.
    pub truncated: bool,
}

/// `file_list`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileListing {
    pub path: String,
    pub entries: Vec<DirEntry>,
}

/// `sandbox_list`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<Sandbox>,
}

/// `sandbox_destroy`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Destroyed {
    pub id: String,
    pub destroyed: bool,
}

/// What a tool answers when it fails: a tool error a model can read.
type Failure = CallToolResult;

fn failure(error: ApiError) -> Failure {
    CallToolResult::error(vec![ContentBlock::text(format!(
        "{}: {}",
        error.code.as_str(),
        error.message
    ))])
}

/// Cuts `text` to at most `max` bytes (on a character boundary) and says how much was left out;
/// `more` when the text had already been cut before it got here.
fn cut(text: &mut String, max: usize, more: bool) -> bool {
    if text.len() <= max && !more {
        return false;
    }
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = text.len() - end;
    text.truncate(end);
    let at_least = if more { "at least " } else { "" };
    text.push_str(&format!(
        "\n[agentbox: output truncated: {at_least}{dropped} more bytes not shown]\n"
    ));
    true
}

/// The same check as the HTTP API's `?path=` extractor.
fn sandbox_path(path: &str) -> Result<SandboxPath, ApiError> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(ApiError::invalid(format!(
            "path {path:?}: must be an absolute path"
        )));
    }
    Ok(SandboxPath(PathBuf::from(path)))
}

impl McpServer {
    /// The tenant this call acts for: the stdio server's, or the one the HTTP auth layer put
    /// into the request.
    fn tenant(&self, context: &RequestContext<RoleServer>) -> Result<Tenant, Failure> {
        if let Some(tenant) = &self.local_tenant {
            return Ok(tenant.clone());
        }
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Tenant>())
            .cloned()
            .ok_or_else(|| {
                failure(ApiError::new(
                    ErrorCode::Unauthorized,
                    "no bearer token on this request",
                ))
            })
    }
}

#[tool_router(vis = "pub(super)")]
impl McpServer {
    #[tool(
        name = "sandbox_create",
        description = "Create a new isolated Linux sandbox and return its id. Pass that id to \
            the other tools. The sandbox keeps its files between commands and lives until \
            sandbox_destroy (or its ttl_s/idle_s expires). All fields are optional: `policy` \
            (JSON, e.g. {\"limits\": {\"memory\": \"512M\", \"pids\": 256}, \"env\": \
            {\"K\": \"V\"}, \"network\": {\"mode\": \"allow:pypi.org\"}}; default 1G of memory, \
            no network), `name` (a unique name usable \
            instead of the id), `ttl_s`, `idle_s` (seconds). Destroy sandboxes you no \
            longer need: they count against a quota."
    )]
    async fn sandbox_create(
        &self,
        Parameters(request): Parameters<CreateRequest>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<Created>, Failure> {
        let tenant = self.tenant(&context)?;
        sandboxes::create(State(self.app.clone()), tenant, ApiJson(request))
            .await
            .map(|(_, axum::Json(created))| Json(created))
            .map_err(failure)
    }

    #[tool(
        name = "sandbox_exec",
        description = "Run a command in a sandbox and wait for it to finish. `command` is an \
            argv array, not a shell string: use [\"sh\", \"-c\", \"...\"] for pipes and \
            redirections, or e.g. [\"python3\", \"-c\", \"print(6*7)\"]. Optional: `stdin` \
            (text), `cwd`, `env` (object of strings), `timeout_s` (the command is killed and \
            exit_code is 124). Returns exit_code, stdout, stderr and whether output was \
            truncated (each stream is cut after 64 KiB, with a note saying how much was cut). A \
            non-zero exit_code is the command's own failure, not the tool's."
    )]
    async fn sandbox_exec(
        &self,
        Parameters(args): Parameters<ExecArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ExecResult>, Failure> {
        let tenant = self.tenant(&context)?;
        let axum::Json(mut result) = exec::exec(
            State(self.app.clone()),
            tenant,
            Path(args.id),
            ApiJson(args.body),
        )
        .await
        .map_err(failure)?;
        let already = result.truncated;
        // The runtime cut a stream it filled up to its limit; this tool cuts it shorter still.
        let full_out = already && result.stdout.len() >= exec::MAX_OUTPUT;
        let full_err = already && result.stderr.len() >= exec::MAX_OUTPUT;
        let out = cut(&mut result.stdout, MAX_TEXT, full_out);
        let err = cut(&mut result.stderr, MAX_TEXT, full_err);
        result.truncated = already || out || err;
        Ok(Json(result))
    }

    #[tool(
        name = "file_write",
        description = "Write a text file inside a sandbox, creating it or replacing its whole \
            contents. `path` is absolute (e.g. /workspace/main.py); its directory must already \
            exist (create one with sandbox_exec [\"mkdir\", \"-p\", DIR])."
    )]
    async fn file_write(
        &self,
        Parameters(args): Parameters<FileWriteArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<FileWritten>, Failure> {
        let tenant = self.tenant(&context)?;
        let path = sandbox_path(&args.path).map_err(failure)?;
        let bytes = Bytes::from(args.content.into_bytes());
        let size = bytes.len() as u64;
        if size > self.app.config.max_body {
            return Err(failure(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("content: larger than {} bytes", self.app.config.max_body),
            )));
        }
        files::write(tenant, Path(args.id), path, RawBody(bytes))
            .await
            .map_err(failure)?;
        Ok(Json(FileWritten {
            path: args.path,
            bytes: size,
        }))
    }

    #[tool(
        name = "file_read",
        description = "Read a file inside a sandbox as text (invalid UTF-8 is replaced). `path` \
            is absolute. Contents past 64 KiB are cut, with a note saying how much; use \
            sandbox_exec with head, tail or grep to look at parts of larger files."
    )]
    async fn file_read(
        &self,
        Parameters(args): Parameters<PathArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<FileContent>, Failure> {
        let tenant = self.tenant(&context)?;
        let path = sandbox_path(&args.path).map_err(failure)?;
        let response = files::read(State(self.app.clone()), tenant, Path(args.id), path)
            .await
            .map_err(failure)?
            .into_response();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| failure(ApiError::internal(format!("file body: {e}"))))?;
        let mut content = String::from_utf8_lossy(&bytes).into_owned();
        let truncated = cut(&mut content, MAX_TEXT, false);
        Ok(Json(FileContent {
            path: args.path,
            content,
            size: bytes.len() as u64,
            truncated,
        }))
    }

    #[tool(
        name = "file_list",
        description = "List a directory inside a sandbox: each entry's name, kind (file, dir, \
            symlink or other) and size in bytes. `path` is absolute, e.g. /workspace."
    )]
    async fn file_list(
        &self,
        Parameters(args): Parameters<PathArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<FileListing>, Failure> {
        let tenant = self.tenant(&context)?;
        let path = sandbox_path(&args.path).map_err(failure)?;
        let axum::Json(entries) = files::list(tenant, Path(args.id), path)
            .await
            .map_err(failure)?;
        Ok(Json(FileListing {
            path: args.path,
            entries,
        }))
    }

    #[tool(
        name = "sandbox_list",
        description = "List your sandboxes, oldest first: id, name, tier, state (running, or \
            failed when its supervisor died; destroy a failed one to reclaim it), created (Unix \
            seconds) and memory in use (bytes)."
    )]
    async fn sandbox_list(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<SandboxList>, Failure> {
        let tenant = self.tenant(&context)?;
        let axum::Json(sandboxes) = sandboxes::list(tenant).await.map_err(failure)?;
        Ok(Json(SandboxList { sandboxes }))
    }

    #[tool(
        name = "sandbox_network",
        description = "Show or change the egress allowlist of a sandbox created with network \
            mode allow (policy {\"network\": {\"mode\": \"allow:pypi.org\"}}): names in `allow` \
            are admitted by its proxy from the next connection on, names in `deny` refused. With \
            neither, returns the lists in force."
    )]
    async fn sandbox_network(
        &self,
        Parameters(args): Parameters<NetworkArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<NetworkLists>, Failure> {
        let tenant = self.tenant(&context)?;
        let change = NetworkChange {
            allow: args.allow,
            deny: args.deny,
        };
        let axum::Json(lists) = network::change_lists(tenant, args.id, change)
            .await
            .map_err(failure)?;
        Ok(Json(lists))
    }

    #[tool(
        name = "sandbox_destroy",
        description = "Destroy a sandbox: kill its processes and delete its files. `id` is its \
            id or name. It cannot be undone."
    )]
    async fn sandbox_destroy(
        &self,
        Parameters(args): Parameters<SandboxId>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<Destroyed>, Failure> {
        let tenant = self.tenant(&context)?;
        sandboxes::delete(tenant, Path(args.id.clone()))
            .await
            .map_err(failure)?;
        Ok(Json(Destroyed {
            id: args.id,
            destroyed: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exec_args_are_the_http_body_plus_an_id_and_refuse_unknown_fields() {
        let args: ExecArgs =
            serde_json::from_str(r#"{"id":"a","command":["ls"],"cwd":"/tmp"}"#).unwrap();
        assert_eq!((args.id.as_str(), args.body.command.len()), ("a", 1));
        assert_eq!(args.body.cwd.as_deref(), Some("/tmp"));
        let unknown = serde_json::from_str::<ExecArgs>(r#"{"id":"a","command":["ls"],"x":1}"#);
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
        assert!(serde_json::from_str::<ExecArgs>(r#"{"command":["ls"]}"#).is_err());
        let schema = serde_json::to_value(schemars::schema_for!(ExecArgs)).unwrap();
        assert_eq!(schema["additionalProperties"], false, "{schema}");
    }

    #[test]
    fn cut_keeps_short_text_and_says_how_much_it_drops() {
        let mut short = "abc".to_string();
        assert!(!cut(&mut short, 10, false));
        assert_eq!(short, "abc");
        let mut long = "é".repeat(10);
        assert!(cut(&mut long, 5, false));
        assert!(long.starts_with("éé\n"), "{long}");
        assert!(long.contains("16 more bytes"), "{long}");
        let mut already = "abcdef".to_string();
        assert!(cut(&mut already, 3, true));
        assert!(already.contains("at least 3 more bytes"), "{already}");
    }
}
