//! HTTP/1.x request heads as a forward proxy sees them: reading one head off a stream (bounded),
//! parsing its request line and headers, and rewriting an absolute-form request into the
//! origin-form request sent upstream. Never trusts the client: every malformed input is an error
//! naming what is wrong, never a panic.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest request head accepted, terminator included.
pub(crate) const HEAD_LIMIT: usize = 16 * 1024;

/// Why no request head could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    /// No blank line within [`HEAD_LIMIT`] bytes.
    #[error("request head is larger than {HEAD_LIMIT} bytes")]
    TooLarge,
    /// The client closed before finishing the head.
    #[error("client closed the connection before the end of the request head")]
    Closed,
    /// Reading from the client failed.
    #[error("reading the request head: {0}")]
    Read(#[from] std::io::Error),
}

/// Reads up to the end of the request head. Returns the head (terminator included) and any bytes
/// the client sent after it, which belong to the body or the tunnel and must be forwarded.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<(Vec<u8>, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let searched_from = buf.len().saturating_sub(3);
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf, searched_from) {
            if end > HEAD_LIMIT {
                return Err(HeadError::TooLarge);
            }
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() >= HEAD_LIMIT {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Index just past the first blank line (`\r\n\r\n` or a bare `\n\n`) at or after `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| {
        let tail = &buf[i..];
        if tail.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if tail.starts_with(b"\n\n") {
            Some(i + 2)
        } else if tail.starts_with(b"\n\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

/// Where a request wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `CONNECT host:port`: a tunnel.
    Connect { host: String, port: u16 },
    /// `GET http://host[:port]/path`: plain HTTP through the proxy.
    Absolute {
        host: String,
        port: u16,
        path: String,
    },
    /// `GET /path`: a request meant for an origin server, not a proxy.
    Origin,
}

impl Target {
    /// Host (IPv6 literals without brackets) and port, if the request names them.
    pub(crate) fn host_port(&self) -> Option<(&str, u16)> {
        match self {
            Self::Connect { host, port } | Self::Absolute { host, port, .. } => {
                Some((host.as_str(), *port))
            }
            Self::Origin => None,
        }
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) target: Target,
    pub(crate) version: String,
    /// Header fields in order, names as sent, values with surrounding white space removed.
    pub(crate) headers: Vec<(String, String)>,
}

/// Parses a request head read by [`read_head`]. The error is a one-line reason for a 400.
pub(crate) fn parse_request(head: &[u8]) -> Result<Request, String> {
    let text =
        std::str::from_utf8(head).map_err(|_| "request head is not valid UTF-8".to_string())?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line".to_string());
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err("malformed method".to_string());
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!("unsupported HTTP version {version:?}"));
    }
    let target = if method == "CONNECT" {
        let (host, port) = parse_authority(target)?;
        let port = port.ok_or_else(|| "CONNECT target needs a port (host:port)".to_string())?;
        Target::Connect { host, port }
    } else if target.starts_with('/') || target == "*" {
        Target::Origin
    } else {
        parse_absolute(target)?
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            return Err("folded header lines are not supported".to_string());
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| "malformed header line".to_string())?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err("malformed header name".to_string());
        }
        if value.contains(['\r', '\0']) {
            return Err("malformed header value".to_string());
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Request {
        method: method.to_string(),
        target,
        version: version.to_string(),
        headers,
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `http://authority[/path][?query]` into an [`Target::Absolute`].
fn parse_absolute(target: &str) -> Result<Target, String> {
    let scheme_end = target
        .find("://")
        .ok_or_else(|| "request target is neither a path nor an absolute URL".to_string())?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "unsupported URL scheme {scheme:?}: use CONNECT for https, http:// for plain HTTP"
        ));
    }
    let rest = &target[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (host, port) = parse_authority(authority)?;
    let tail = tail.split('#').next().unwrap_or_default();
    let path = match tail.chars().next() {
        None => "/".to_string(),
        Some('?') => format!("/{tail}"),
        Some(_) => tail.to_string(),
    };
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("malformed path".to_string());
    }
    Ok(Target::Absolute {
        host,
        port: port.unwrap_or(80),
        path,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`. The host is returned without brackets; port 0
/// and non-numeric ports are refused.
fn parse_authority(authority: &str) -> Result<(String, Option<u16>), String> {
    if authority.contains('@') {
        return Err("credentials in the URL are refused".to_string());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unterminated [IPv6] address".to_string())?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("malformed authority after [IPv6] address".to_string()),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err("IPv6 addresses must be written in brackets ([::1]:443)".to_string())
            }
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("empty host".to_string());
    }
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    Ok((host.to_string(), port))
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port {text:?}"));
    }
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 is not a destination".to_string()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("invalid port {text:?}")),
    }
}

/// Headers a proxy must not forward: hop-by-hop fields and proxy credentials. `Host` and
/// `Connection` are written by [`origin_form_head`] itself.
const DROPPED: &[&str] = &[
    "host",
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "keep-alive",
    "upgrade",
];

/// The head sent upstream for an absolute-form request: origin-form request line, `Host` taken
/// from the URL (never from the client's `Host` header), hop-by-hop and `Proxy-*` fields dropped
/// along with every field the client's `Connection` header names, and `Connection: close` so
/// the upstream connection serves this one request only.
pub(crate) fn origin_form_head(req: &Request, host: &str, port: u16, path: &str) -> Vec<u8> {
    let named: Vec<String> = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let host_text = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let authority = if port == 80 {
        host_text
    } else {
        format!("{host_text}:{port}")
    };
    let mut out = format!(
        "{} {path} {}\r\nHost: {authority}\r\n",
        req.method, req.version
    );
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if DROPPED.contains(&lower.as_str()) || named.contains(&lower) {
            continue;
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
