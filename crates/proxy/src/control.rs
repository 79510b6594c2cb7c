//! The control socket: run-time changes to the allowlist of a running proxy. One JSON request
//! line in, one JSON response line out, per connection. The server side lives in the proxy's
//! runtime; the client side ([`control_update`], [`control_show`]) is blocking std code for the
//! CLI. The socket is created 0600 and removed when the proxy exits.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::allowlist::Allowlist;
use crate::serve::Shared;

/// Longest request line accepted.
const REQUEST_LIMIT: u64 = 64 * 1024;
/// How long either side waits for the other.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum ControlRequest {
    /// Report the lists. (A struct variant, so that unknown fields are refused.)
    Show {},
    /// Add to allow (removing from deny), add to deny (removing from allow); all or nothing.
    Update {
        #[serde(default)]
        allow: Vec<String>,
        #[serde(default)]
        deny: Vec<String>,
    },
}

/// The answer: `{"ok":true,"allowlist":{...}}` or `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ControlResponse {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allowlist: Option<Allowlist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A bound control socket; its file is removed when this is dropped. Bound without a runtime
/// (so that it can be created before the proxy drops privileges), served inside one.
#[derive(Debug)]
pub(crate) struct ControlSocket {
    listener: StdUnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` (replacing a stale socket left by a killed proxy) and restricts it to 0600.
    pub(crate) fn bind(path: &Path) -> std::io::Result<Self> {
        let context =
            |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(context)?
            }
            Ok(_) => {
                return Err(context(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                )))
            }
            Err(_) => {}
        }
        let listener = StdUnixListener::bind(path).map_err(context)?;
        listener.set_nonblocking(true).map_err(context)?;
        let socket = Self {
            listener,
            path: path.to_path_buf(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(context)?;
        Ok(socket)
    }

    /// Serves requests, each connection in a task of its own, forever; a failed connection only
    /// ends itself.
    pub(crate) async fn serve(&self, shared: Arc<Shared>) -> std::io::Result<()> {
        let listener = UnixListener::from_std(self.listener.try_clone()?)?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(IO_TIMEOUT, answer(stream, &shared)).await;
            });
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(stream: UnixStream, shared: &Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(read.take(REQUEST_LIMIT))
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(request) => apply(shared, &request),
        Err(e) => ControlResponse {
            ok: false,
            allowlist: None,
            error: Some(format!("malformed control request: {e}")),
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Carries out one request against the shared lists; an update replaces them atomically.
fn apply(shared: &Shared, request: &ControlRequest) -> ControlResponse {
    let result = match request {
        ControlRequest::Show {} => Ok(shared.rules().to_allowlist()),
        ControlRequest::Update { allow, deny } => {
            let mut current = shared.rules.write().unwrap_or_else(|p| p.into_inner());
            current.updated(allow, deny).map(|next| {
                let list = next.to_allowlist();
                *current = Arc::new(next);
                list
            })
        }
    };
    match result {
        Ok(allowlist) => ControlResponse {
            ok: true,
            allowlist: Some(allowlist),
            error: None,
        },
        Err(error) => ControlResponse {
            ok: false,
            allowlist: None,
            error: Some(error),
        },
    }
}

/// Client side, used by `agentbox net ID --allow ... --deny ...`: applies the changes through
/// the proxy's control socket and returns the resulting lists. An invalid rule refuses the whole
/// change (error kind `InvalidInput`, message naming the value). Blocking.
pub fn control_update(
    socket: &Path,
    allow: &[String],
    deny: &[String],
) -> std::io::Result<Allowlist> {
    call(
        socket,
        &ControlRequest::Update {
            allow: allow.to_vec(),
            deny: deny.to_vec(),
        },
    )
}

/// Client side: the current lists of the proxy behind `socket`, unchanged. Blocking.
pub fn control_show(socket: &Path) -> std::io::Result<Allowlist> {
    call(socket, &ControlRequest::Show {})
}

fn call(socket: &Path, request: &ControlRequest) -> std::io::Result<Allowlist> {
    let context =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", socket.display()));
    let mut stream = StdUnixStream::connect(socket).map_err(context)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).map_err(context)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(context)?;
    let response: ControlResponse = serde_json::from_str(&reply).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: malformed control response: {e}", socket.display()),
        )
    })?;
    match response {
        ControlResponse {
            ok: true,
            allowlist: Some(list),
            ..
        } => Ok(list),
        ControlResponse { error, .. } => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            error.unwrap_or_else(|| "control request refused".to_string()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let update = ControlRequest::Update {
            allow: vec!["a.com".into()],
            deny: vec![],
        };
        assert_eq!(
            serde_json::to_string(&update).unwrap(),
            r#"{"op":"update","allow":["a.com"],"deny":[]}"#
        );
        assert_eq!(
            serde_json::from_str::<ControlRequest>(r#"{"op":"show"}"#).unwrap(),
            ControlRequest::Show {}
        );
        assert_eq!(
            serde_json::to_string(&ControlRequest::Show {}).unwrap(),
            r#"{"op":"show"}"#
        );
        assert!(serde_json::from_str::<ControlRequest>(r#"{"op":"show","x":1}"#).is_err());
        let refused = ControlResponse {
            ok: false,
            allowlist: None,
            error: Some("nope".into()),
        };
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"ok":false,"error":"nope"}"#
        );
        let ok = ControlResponse {
            ok: true,
            allowlist: Some(Allowlist {
                allow: vec!["a.com".into()],
                deny: vec![],
                cidrs: vec![],
            }),
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"ok":true,"allowlist":{"allow":["a.com"],"deny":[],"cidrs":[]}}"#
        );
    }

    #[test]
    fn socket_is_private_replaces_stale_ones_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        // A socket left behind (as after a SIGKILL) is replaced.
        let _stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let second = ControlSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(second);
        assert!(!path.exists());
        // A regular file is never removed.
        std::fs::write(&path, "data").unwrap();
        let err = ControlSocket::bind(&path).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }
}
