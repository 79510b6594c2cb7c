//! The proxy's connection loop: accept (at most [`MAX_CONNECTIONS`] at once), read one request
//! head, decide, then tunnel (CONNECT) or forward one plain-HTTP request, and audit the outcome.
//! Every refusal is an HTTP response naming the reason, followed by closing the connection.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use agentbox_policy::net::normalize_host;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::allowlist::Rules;
use crate::audit::{utc_timestamp, AuditLog, Record, Verdict};
use crate::decide::{decide, Denial};
use crate::http::{origin_form_head, parse_request, read_head, HeadError, Target};
use crate::relay::{connect_first, Counted};
use crate::resolve::Resolver;

/// Most client connections served at once; further ones wait in the listen backlog.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// After a refusal, how long (and how much) unread client input is drained before closing, so
/// the client reads the response instead of a connection reset.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const DRAIN_LIMIT: usize = 256 * 1024;
/// Relay buffer, each way.
const RELAY_BUFFER: usize = 64 * 1024;

/// State shared by every connection of one proxy.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) sandbox: String,
    /// Current lists; replaced as a whole by the control socket.
    pub(crate) rules: RwLock<Arc<Rules>>,
    pub(crate) resolver: Resolver,
    pub(crate) audit: Option<AuditLog>,
}

impl Shared {
    /// The lists in force now; a connection keeps the snapshot it started with.
    pub(crate) fn rules(&self) -> Arc<Rules> {
        let guard = self.rules.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&guard)
    }
}

/// Accepts and serves connections until the listener fails with a non-transient error.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            handle(client, &shared).await;
            drop(permit);
        });
    }
}

/// Accept errors that concern one connection or a passing shortage, not the listener.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    // ENFILE, EMFILE, ENOMEM, ENOBUFS, EPROTO, EPERM (firewall)
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut
    ) || matches!(e.raw_os_error(), Some(23 | 24 | 12 | 105 | 71 | 1))
}

/// What is known about a request so far, for its audit line.
struct Attempt {
    started: Instant,
    host: String,
    port: u16,
    method: String,
}

impl Attempt {
    fn record(&self, shared: &Shared, verdict: Verdict, reason: &str) -> Record {
        Record {
            time: utc_timestamp(SystemTime::now()),
            sandbox: shared.sandbox.clone(),
            host: self.host.clone(),
            port: self.port,
            method: self.method.clone(),
            verdict,
            reason: reason.to_string(),
            address: None,
            bytes_up: 0,
            bytes_down: 0,
            ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Serves one client connection from request head to close.
async fn handle(mut client: TcpStream, shared: &Shared) {
    let mut attempt = Attempt {
        started: Instant::now(),
        host: String::new(),
        port: 0,
        method: String::new(),
    };
    let (head, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(read)) => read,
        Ok(Err(e @ HeadError::TooLarge)) => {
            return refuse(
                &mut client,
                shared,
                &attempt,
                &Denial::new(431, e.to_string()),
            )
            .await;
        }
        Ok(Err(_)) | Err(_) => return,
    };
    let request = match parse_request(&head) {
        Ok(request) => request,
        Err(reason) => {
            return refuse(&mut client, shared, &attempt, &Denial::new(400, reason)).await;
        }
    };
    attempt.method.clone_from(&request.method);
    let Some((host, port)) = request.target.host_port() else {
        let reason = "this is an HTTP proxy: send absolute URLs (GET http://host/path) or \
                      CONNECT host:port, e.g. via HTTP_PROXY/HTTPS_PROXY";
        return refuse(&mut client, shared, &attempt, &Denial::new(400, reason)).await;
    };
    attempt.host = host.to_string();
    attempt.port = port;
    let rules = shared.rules();
    let allowed = match decide(host, port, &rules, &shared.resolver).await {
        Ok(allowed) => allowed,
        Err(denial) => return refuse(&mut client, shared, &attempt, &denial).await,
    };
    let (upstream, address) = match connect_first(&allowed.addrs).await {
        Ok(connected) => connected,
        Err(e) => {
            let denial = Denial::new(502, format!("cannot connect to {host}:{port}: {e}"));
            return refuse(&mut client, shared, &attempt, &denial).await;
        }
    };
    let mut upstream = Counted::new(upstream);
    let relayed = relay(&mut client, &mut upstream, &request, &rest).await;
    let mut reason = allowed.reason;
    if let Err(e) = relayed {
        reason.push_str(&format!("; relay ended: {e}"));
    }
    let mut record = attempt.record(shared, Verdict::Allow, &reason);
    record.address = Some(address.to_string());
    record.bytes_up = upstream.written;
    record.bytes_down = upstream.read;
    audit(shared, &record);
}

/// Sends the opening bytes (the CONNECT reply, or the rewritten request head), forwards what
/// the client sent after its head, then copies both ways until both sides are done.
async fn relay(
    client: &mut TcpStream,
    upstream: &mut Counted<TcpStream>,
    request: &crate::http::Request,
    rest: &[u8],
) -> std::io::Result<()> {
    match &request.target {
        Target::Connect { .. } => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
        }
        Target::Absolute { host, port, path } => {
            let host = normalize_host(host).unwrap_or_else(|| host.clone());
            upstream
                .write_all(&origin_form_head(request, &host, *port, path))
                .await?;
        }
        Target::Origin => return Ok(()),
    }
    upstream.write_all(rest).await?;
    // 64 KiB buffers each way (the default 8 KiB costs half the throughput of bulk transfers).
    tokio::io::copy_bidirectional_with_sizes(client, upstream, RELAY_BUFFER, RELAY_BUFFER).await?;
    Ok(())
}

/// Answers with the denial, audits it, and closes after draining a little unread input.
async fn refuse(client: &mut TcpStream, shared: &Shared, attempt: &Attempt, denial: &Denial) {
    let reason: String = denial
        .reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    audit(shared, &attempt.record(shared, Verdict::Deny, &reason));
    let response = denial_response(denial.status, &reason);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        client.write_all(&response).await?;
        client.shutdown().await?;
        let mut sink = [0u8; 8192];
        let mut drained = 0;
        while drained < DRAIN_LIMIT {
            match client.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// The full response for a refusal: status line, fixed headers, one-line body.
pub(crate) fn denial_response(status: u16, reason: &str) -> Vec<u8> {
    let phrase = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        _ => "Error",
    };
    let body = format!("agentbox proxy: {reason}\n");
    format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         X-Agentbox-Proxy: denied\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn audit(shared: &Shared, record: &Record) {
    if let Some(log) = &shared.audit {
        log.write(record);
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
