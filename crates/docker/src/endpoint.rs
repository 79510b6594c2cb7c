//! Where the daemon is (`DOCKER_HOST`, unix sockets only) and whether it answers: the probe never
//! hangs (2 s for the whole exchange) and never starts anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentbox_oci::{Availability, EngineError};
use bollard::{ClientVersion, Docker};

use crate::ENGINE;

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// bollard's per-request timeout: long, since a `wait` lasts as long as the command (the
/// sandbox's own timeout is enforced separately).
const REQUEST_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
const API: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// The daemon's socket: `DOCKER_HOST` when set (only `unix://PATH`: a TCP or SSH daemon would
/// see none of the host paths agentbox binds), else `/var/run/docker.sock` if it exists.
pub fn endpoint() -> Result<PathBuf, EngineError> {
    let unavailable = |reason: String| EngineError::Unavailable {
        engine: ENGINE,
        reason,
    };
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => match host.strip_prefix("unix://") {
            Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
            _ => Err(unavailable(format!(
                "DOCKER_HOST={host}: only a local daemon at unix:///ABSOLUTE/PATH is supported \
                 (the daemon must see the host paths agentbox binds)"
            ))),
        },
        _ if Path::new(DEFAULT_SOCKET).exists() => Ok(PathBuf::from(DEFAULT_SOCKET)),
        _ => Err(unavailable(format!(
            "no Docker socket at {DEFAULT_SOCKET} and DOCKER_HOST is not set"
        ))),
    }
}

pub(crate) fn connect(socket: &Path) -> Result<Docker, EngineError> {
    let path = socket.to_str().ok_or_else(|| EngineError::Unavailable {
        engine: ENGINE,
        reason: format!("{}: not a UTF-8 socket path", socket.display()),
    })?;
    Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, &API).map_err(|e| {
        EngineError::Unavailable {
            engine: ENGINE,
            reason: format!("{}: {e}", socket.display()),
        }
    })
}

pub(crate) fn unavailable(reason: String, found: Option<String>) -> Availability {
    let fix = if Path::new("/usr/sbin/dockerd").exists() || Path::new("/usr/bin/dockerd").exists() {
        "start dockerd (systemctl start docker, or run dockerd), or set DOCKER_HOST=unix://PATH"
    } else {
        "apt-get install docker.io, then start dockerd"
    };
    Availability {
        available: false,
        found,
        reason: Some(reason),
        fix: Some(fix.into()),
        notes: Vec::new(),
    }
}

/// One blocking `GET` over the daemon's socket (HTTP/1.0, so the body ends with the
/// connection), within `deadline`. Plain std: the probe runs in processes that fork sandboxes
/// afterwards, where a tokio runtime would leave process-wide state (its signal driver's
/// descriptors) that the forked child cannot use.
fn get_json(
    socket: &Path,
    path: &str,
    deadline: std::time::Instant,
) -> Result<serde_json::Value, String> {
    use std::io::{Read, Write};
    let remaining = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("did not answer within {} s", PROBE_TIMEOUT.as_secs()))
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("GET /v1.41{path} HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if answer.len() + n <= 4 << 20 => answer.extend_from_slice(&chunk[..n]),
            Ok(_) => return Err("answer too large".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not HTTP")?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("{path} answered {status}: {}", body.trim()));
    }
    serde_json::from_str(body).map_err(|e| format!("{path}: {e}"))
}

/// Reads the daemon's version and security options, all within [`PROBE_TIMEOUT`].
pub(crate) fn probe(socket: &Path) -> Result<Availability, EngineError> {
    if !socket.exists() {
        return Ok(unavailable(
            format!("no Docker socket at {}", socket.display()),
            None,
        ));
    }
    let deadline = std::time::Instant::now() + PROBE_TIMEOUT;
    let answers = get_json(socket, "/version", deadline)
        .and_then(|v| get_json(socket, "/info", deadline).map(|i| (v, i)));
    let (version, info) = match answers {
        Err(e) => {
            return Ok(unavailable(
                format!("the daemon at {} is not answering: {e}", socket.display()),
                None,
            ))
        }
        Ok(answers) => answers,
    };
    let text =
        |v: &serde_json::Value, key: &str| v.get(key).and_then(|s| s.as_str()).map(str::to_string);
    let server = text(&version, "Version").unwrap_or_else(|| "unknown".into());
    let api = text(&version, "ApiVersion").unwrap_or_default();
    let found = Some(format!("dockerd {server} (API {api})"));
    if !api_at_least(&api, 1, 41) {
        let mut out = unavailable(
            format!("the daemon's API {api} is older than 1.41 (Docker 20.10)"),
            found,
        );
        out.fix = Some("upgrade Docker to 20.10 or later".into());
        return Ok(out);
    }
    let security: Vec<String> = info
        .get("SecurityOptions")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|o| o.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut notes = vec![format!("socket {}", socket.display())];
    if let Some(driver) = text(&info, "Driver") {
        notes.push(format!("storage driver {driver}"));
    }
    if let Some(cgroup) = text(&info, "CgroupVersion") {
        notes.push(format!("cgroup v{cgroup}"));
    }
    if security.iter().any(|o| o.contains("name=userns")) {
        notes.push("userns-remap: container root is an unprivileged host uid".into());
    } else if security.iter().any(|o| o.contains("name=rootless")) {
        notes.push("rootless daemon: container root is the daemon's user".into());
    } else {
        notes.push(
            "no userns-remap: uid 0 in a container is host root (capabilities dropped, \
             seccomp and no-new-privileges set)"
                .into(),
        );
    }
    if !security.iter().any(|o| o.contains("name=seccomp")) {
        let mut out = unavailable("the daemon was built without seccomp support".into(), found);
        out.fix = Some("use a dockerd built with seccomp (Debian's docker.io is)".into());
        return Ok(out);
    }
    Ok(Availability {
        available: true,
        found,
        reason: None,
        fix: None,
        notes,
    })
}

fn api_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_compare_numerically() {
        assert!(api_at_least("1.41", 1, 41));
        assert!(api_at_least("1.100", 1, 41));
        assert!(!api_at_least("1.40", 1, 41));
        assert!(!api_at_least("", 1, 41));
    }
}
