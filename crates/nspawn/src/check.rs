//! Whether nspawn can run here ([`probe`]) and whether it can enforce a policy ([`check`]). Reads
//! only: it never starts a container.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentbox_oci::{Availability, EngineError};
use agentbox_policy::{NetMode, Policy};

use crate::{BINARY, ENGINE};

/// How long `systemd-nspawn --version` may take before the probe gives up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Policy fields nspawn leaves to its caller: the runtime places the nspawn process in a cgroup it
/// made (nspawn with `--keep-unit` stays there, and so does the container) and sizes the rootfs
/// overlay's upper layer. nspawn's own `--property=MemoryMax=` etc. need a systemd manager, which
/// this host does not run.
pub fn caller_enforces() -> &'static [&'static str] {
    &["limits.memory", "limits.cpus", "limits.pids", "limits.disk"]
}

/// Refuses the policy fields nspawn cannot enforce here (see the crate doc for each field).
/// `user` is accepted here and checked by [`crate::run`] against the sandbox's `/etc/passwd`.
pub fn check(policy: &Policy) -> Result<(), EngineError> {
    match policy.network.mode {
        NetMode::None => {}
        mode @ (NetMode::Allow | NetMode::Open) => {
            return Err(EngineError::Unenforceable {
                engine: ENGINE,
                field: "network.mode",
                reason: format!(
                    "`{}` needs agentbox's veth/proxy plumbing inside nspawn's network namespace, \
                     which is not wired up; only `none` (--private-network) is supported",
                    mode.name()
                ),
            });
        }
    }
    if policy.insists_on("limits.fuel") {
        return Err(EngineError::Unenforceable {
            engine: ENGINE,
            field: "limits.fuel",
            reason: "fuel is a wasm-tier CPU budget; nspawn runs native code".to_string(),
        });
    }
    Ok(())
}

/// Finds `systemd-nspawn` and its version. Never hangs: the version query is killed after a few
/// seconds.
pub fn probe() -> Availability {
    let unavailable = |reason: String, fix: Option<&str>| Availability {
        available: false,
        found: None,
        reason: Some(reason),
        fix: fix.map(str::to_string),
        notes: Vec::new(),
    };
    let version = match version_line() {
        Ok(v) => v,
        Err(reason) => return unavailable(reason, Some("apt-get install systemd-container")),
    };
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !root {
        return Availability {
            found: Some(version),
            ..unavailable(
                "systemd-nspawn needs root".to_string(),
                Some("run agentbox as root"),
            )
        };
    }
    Availability {
        available: true,
        found: Some(version),
        reason: None,
        fix: None,
        notes: vec![
            "run with --keep-unit --register=no (no systemd manager needed)".to_string(),
            format!("the caller enforces {}", caller_enforces().join(", ")),
        ],
    }
}

/// `systemd-nspawn 252 (252.39-1~deb12u2)` from the first line of `--version`.
fn version_line() -> Result<String, String> {
    let mut child = Command::new(BINARY)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{BINARY} not found: {e}"))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{BINARY} --version did not answer within 5 s"));
            }
            Err(e) => return Err(format!("waiting for {BINARY} --version: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if !status.success() {
        return Err(format!("{BINARY} --version failed ({status})"));
    }
    let first = out.lines().next().unwrap_or_default();
    // "systemd 252 (252.39-1~deb12u2)"
    let version = first.strip_prefix("systemd ").unwrap_or(first);
    Ok(format!("{BINARY} {version}"))
}
