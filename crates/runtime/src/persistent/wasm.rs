//! Persistent wasm sandboxes, layered: the sandbox is an `ns` sandbox (every namespace, seccomp,
//! Landlock, cgroup) into which the agentbox binary is bound read-only, and each `exec` runs
//! `agentbox __wasm` there, which runs the module under wasmtime with the sandbox's directories
//! preopened. A module escaping wasmtime lands in the ns sandbox, not on the host. Files written by
//! one exec (in /workspace, /tmp, binds) are there for the next, and a module compiled once is
//! cached in the sandbox for the next exec.

use std::path::PathBuf;

use agentbox_policy::{Access, Mount, MountKind, Policy, Tier};

use super::protocol::ExecRequest;
use crate::RunError;

/// Where the agentbox binary appears inside a wasm sandbox.
pub const AGENTBOX_IN_SANDBOX: &str = "/opt/agentbox/agentbox";
/// The hidden subcommand that runs one module.
pub const WASM_SUBCOMMAND: &str = "__wasm";
/// The sandbox's own compilation cache.
const CACHE_IN_SANDBOX: &str = "/tmp/.agentbox-wasm-cache";

/// What every exec of a wasm sandbox runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmExec {
    /// Guest directories preopened for the module, with write access or not.
    pub preopens: Vec<(String, bool)>,
    pub memory: u64,
    pub fuel: Option<u64>,
}

/// The `ns` policy that holds a wasm sandbox, and what its execs run with. Fails for what the
/// wasm tier cannot enforce, as `agentbox run --tier wasm` does.
pub fn layered(policy: &Policy) -> Result<(Policy, WasmExec), RunError> {
    crate::tier::check_enforceable(policy)?;
    let agentbox =
        std::env::current_exe().map_err(|e| RunError::setup("wasm: this binary's path", e))?;
    let mut ns = policy.clone();
    ns.tier = Tier::Ns;
    // The module's budget is enforced by wasmtime in `__wasm`; the ns layer must not see it.
    ns.given.retain(|f| *f != "limits.fuel");
    ns.limits.fuel = None;
    ns.mounts.push(Mount {
        target: PathBuf::from(AGENTBOX_IN_SANDBOX),
        kind: MountKind::Bind {
            source: agentbox,
            access: Access::ReadOnly,
        },
    });
    // The sandbox's scratch directories, and every bind of the policy.
    let mut preopens: Vec<(String, bool)> =
        vec![("/workspace".into(), true), ("/tmp".into(), true)];
    for m in &policy.mounts {
        let guest = m.target.display().to_string();
        let writable = match &m.kind {
            MountKind::Bind { access, .. } => *access == Access::ReadWrite,
            MountKind::Tmpfs { .. } => true,
        };
        match preopens.iter_mut().find(|(g, _)| *g == guest) {
            Some(p) => p.1 = writable,
            None => preopens.push((guest, writable)),
        }
    }
    let exec = WasmExec {
        preopens,
        memory: policy.limits.memory,
        fuel: policy.limits.fuel,
    };
    Ok((ns, exec))
}

/// The argv that runs the module of `request` in the sandbox.
pub fn rewrite(exec: &WasmExec, request: &mut ExecRequest) {
    let mut argv = vec![
        AGENTBOX_IN_SANDBOX.to_string(),
        WASM_SUBCOMMAND.to_string(),
        "--memory".into(),
        exec.memory.to_string(),
        "--cache".into(),
        CACHE_IN_SANDBOX.into(),
    ];
    if let Some(fuel) = exec.fuel {
        argv.extend(["--fuel".into(), fuel.to_string()]);
    }
    for (guest, writable) in &exec.preopens {
        argv.extend([
            "--preopen".into(),
            format!("{guest}:{}", if *writable { "rw" } else { "ro" }),
        ]);
    }
    if let Some(cwd) = &request.cwd {
        argv.extend(["--cwd".into(), cwd.clone()]);
    }
    // The module's environment is what the exec gives, nothing of agentbox's defaults.
    for (k, v) in &request.env {
        argv.extend(["--env".into(), format!("{k}={v}")]);
    }
    argv.push("--".into());
    argv.append(&mut request.argv);
    request.argv = argv;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_becomes_a_run_of_agentbox_wasm_with_the_preopens() {
        let exec = WasmExec {
            preopens: vec![("/workspace".into(), true), ("/data".into(), false)],
            memory: 1 << 26,
            fuel: Some(1000),
        };
        let mut request = ExecRequest {
            argv: vec!["/workspace/app.wasm".into(), "x".into()],
            env: vec![("K".into(), "V".into())],
            cwd: Some("/workspace".into()),
            ..Default::default()
        };
        rewrite(&exec, &mut request);
        let argv = request.argv.join(" ");
        assert!(
            argv.starts_with("/opt/agentbox/agentbox __wasm --memory 67108864"),
            "{argv}"
        );
        assert!(argv.contains("--fuel 1000"), "{argv}");
        assert!(
            argv.contains("--preopen /workspace:rw --preopen /data:ro"),
            "{argv}"
        );
        assert!(
            argv.contains("--cwd /workspace --env K=V -- /workspace/app.wasm x"),
            "{argv}"
        );
    }
}
