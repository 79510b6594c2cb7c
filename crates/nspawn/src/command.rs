//! The systemd-nspawn command line for one sandbox. Pure: nothing here touches the host, so every
//! flag is unit-tested (`command_tests.rs`). What each flag enforces is in the crate doc.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use agentbox_oci::{EngineError, Sandbox};

use crate::seccomp::syscall_filter;

/// How the payload is started inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// nspawn execs the command itself, with `--setenv` for each variable. nspawn adds its own
    /// variables that cannot be removed: `container=systemd-nspawn`, `container_uuid`,
    /// `container_host_id`, `container_host_version_id` (the host's os-release ID and VERSION_ID),
    /// `NOTIFY_SOCKET=/run/host/notify`, and `PATH`, `HOME`, `USER`, `LOGNAME`, `TERM`, `LANG`
    /// defaults unless the sandbox sets them.
    Direct,
    /// Through the sandbox's own `env` binary (this path inside the container): `env -i --
    /// KEY=VALUE... argv`, so the command sees exactly the sandbox's environment. [`crate::run`]
    /// picks it when the root has `/usr/bin/env` and `argv[0]` has no `=` (which `env` would take
    /// for an assignment).
    ThroughEnv(PathBuf),
}

/// The arguments after `systemd-nspawn` for `sandbox`. The container's user namespace maps its
/// ids 0.. onto `sandbox.uid_range` (first host id, count), which nspawn requires here.
pub fn args(sandbox: &Sandbox, launch: &Launch) -> Result<Vec<OsString>, EngineError> {
    let Some((host_start, count)) = sandbox.uid_range else {
        return Err(setup(
            "user namespace",
            "the sandbox has no host id range (uid_range) for its user namespace".to_string(),
        ));
    };
    if host_start == 0 || count == 0 || sandbox.uid >= count {
        return Err(setup(
            "user namespace",
            format!(
                "host range {host_start}:{count} must start above 0, be non-empty and contain uid {}",
                sandbox.uid
            ),
        ));
    }
    let Some(command) = sandbox.argv.first() else {
        return Err(EngineError::Command {
            not_found: true,
            message: "empty command".to_string(),
        });
    };
    let mut out: Vec<OsString> = [
        "--quiet",
        "--keep-unit",
        "--register=no",
        "--as-pid2",
        "--console=pipe",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        "--kill-signal=SIGKILL",
        "--private-network",
        "--drop-capability=all",
        "--no-new-privileges=yes",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    out.push(format!("--machine={}", sandbox.id).into());
    out.push(flag("--directory=", sandbox.rootfs.as_os_str().as_bytes()));
    out.push(format!("--private-users={host_start}:{count}").into());
    // A root already owned by the range (agentbox's runtime builds it idmapped, binds included)
    // is used as it is: nspawn cannot idmap a tree whose mounts already are. Any other root is
    // idmapped by nspawn so that host root owns it inside.
    let owned_by_range = std::fs::metadata(&sandbox.rootfs)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == host_start)
        .unwrap_or(false);
    out.push(
        if owned_by_range {
            "--private-users-ownership=off"
        } else {
            "--private-users-ownership=map"
        }
        .into(),
    );
    if sandbox.hostname.is_empty() || sandbox.hostname.contains(char::is_whitespace) {
        return Err(setup(
            "hostname",
            format!("{:?} is not a hostname", sandbox.hostname),
        ));
    }
    out.push(format!("--hostname={}", sandbox.hostname).into());
    if sandbox.uid != 0 {
        // nspawn resolves it with getent inside the container; run() checks /etc/passwd first.
        out.push(format!("--user={}", sandbox.uid).into());
    }
    out.push(flag("--chdir=", absolute(&sandbox.cwd, "cwd")?));
    if let Some(nofile) = sandbox.limits.nofile {
        out.push(format!("--rlimit=NOFILE={nofile}").into());
    }
    for bind in &sandbox.binds {
        let name = if bind.writable {
            "--bind="
        } else {
            "--bind-ro="
        };
        let mut value = escape(absolute(&bind.source, "bind source")?);
        value.push(b':');
        value.extend(escape(absolute(&bind.target, "bind target")?));
        value.extend_from_slice(b":idmap");
        out.push(flag(name, &value));
    }
    for tmpfs in &sandbox.tmpfs {
        let mut value = escape(absolute(&tmpfs.target, "tmpfs target")?);
        value.extend(format!(":mode={:04o},size={}", tmpfs.mode & 0o7777, tmpfs.size).bytes());
        out.push(flag("--tmpfs=", &value));
    }
    for (key, value) in &sandbox.env {
        check_env(key, value)?;
        out.push(format!("--setenv={key}={value}").into());
    }
    out.extend(
        syscall_filter(&sandbox.seccomp)
            .to_args()
            .into_iter()
            .map(OsString::from),
    );
    out.push("--".into());
    match launch {
        Launch::Direct => {}
        Launch::ThroughEnv(env) => {
            if command.contains('=') {
                return Err(setup(
                    "environment",
                    format!("{command:?} contains `=`, which env would take for a variable"),
                ));
            }
            out.push(flag("", absolute(env, "env binary")?));
            out.push("-i".into());
            out.push("--".into());
            out.extend(
                sandbox
                    .env
                    .iter()
                    .map(|(k, v)| OsString::from(format!("{k}={v}"))),
            );
        }
    }
    out.extend(sandbox.argv.iter().map(OsString::from));
    Ok(out)
}

fn setup(step: &str, message: String) -> EngineError {
    EngineError::Setup {
        step: step.to_string(),
        message,
    }
}

fn flag(name: &str, value: &[u8]) -> OsString {
    let mut bytes = name.as_bytes().to_vec();
    bytes.extend_from_slice(value);
    OsString::from_vec(bytes)
}

/// The bytes of an absolute path without control characters (nspawn's parsers reject or mangle
/// them).
fn absolute<'p>(path: &'p Path, what: &str) -> Result<&'p [u8], EngineError> {
    let bytes = path.as_os_str().as_bytes();
    if !path.is_absolute() {
        return Err(setup(what, format!("{} is not absolute", path.display())));
    }
    if bytes.iter().any(|b| b.is_ascii_control()) {
        return Err(setup(
            what,
            format!("{:?} contains control characters", path.display()),
        ));
    }
    Ok(bytes)
}

/// nspawn splits `--bind=`/`--tmpfs=` values at `:` and drops the backslash of `\x`: so `\` and `:`
/// are escaped with a backslash.
pub(crate) fn escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b == b'\\' || b == b':' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn check_env(key: &str, value: &str) -> Result<(), EngineError> {
    let key_ok = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !key_ok {
        return Err(setup(
            "environment",
            format!("{key:?} is not a variable name"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\t' && c != '\n')
    {
        return Err(setup(
            "environment",
            format!("the value of {key} contains control characters"),
        ));
    }
    Ok(())
}
