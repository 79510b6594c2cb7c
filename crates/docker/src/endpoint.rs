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

/// Pings the daemon and reads its version and security options, all within [`PROBE_TIMEOUT`].
pub(crate) async fn probe(socket: &Path) -> Result<Availability, EngineError> {
    if !socket.exists() {
        return Ok(unavailable(
            format!("no Docker socket at {}", socket.display()),
            None,
        ));
    }
    let docker = connect(socket)?;
    let exchange = async {
        docker.ping().await?;
        let version = docker.version().await?;
        let info = docker.info().await?;
        Ok::<_, bollard::errors::Error>((version, info))
    };
    let (version, info) = match tokio::time::timeout(PROBE_TIMEOUT, exchange).await {
        Err(_) => {
            return Ok(unavailable(
                format!(
                    "the daemon at {} did not answer within {} s",
                    socket.display(),
                    PROBE_TIMEOUT.as_secs()
                ),
                None,
            ))
        }
        Ok(Err(e)) => {
            return Ok(unavailable(
                format!("the daemon at {} is not answering: {e}", socket.display()),
                None,
            ))
        }
        Ok(Ok(answers)) => answers,
    };
    let server = version.version.unwrap_or_else(|| "unknown".into());
    let api = version.api_version.unwrap_or_default();
    let found = Some(format!("dockerd {server} (API {api})"));
    if !api_at_least(&api, 1, 41) {
        let mut out = unavailable(
            format!("the daemon's API {api} is older than 1.41 (Docker 20.10)"),
            found,
        );
        out.fix = Some("upgrade Docker to 20.10 or later".into());
        return Ok(out);
    }
    let security = info.security_options.unwrap_or_default();
    let mut notes = vec![format!("socket {}", socket.display())];
    if let Some(driver) = info.driver {
        notes.push(format!("storage driver {driver}"));
    }
    if let Some(cgroup) = info.cgroup_version {
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
