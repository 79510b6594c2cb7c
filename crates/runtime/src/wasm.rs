//! The wasm tier: a WebAssembly module (WASI preview 1, or a preview 2 component) run by the
//! embedded wasmtime, in this process. The policy becomes WASI capabilities: binds and the
//! workspace are the only preopened directories (read-only ones with read-only permissions), the
//! policy's own environment is the only environment, memory caps linear memories, the timeout
//! interrupts the module, fuel budgets its CPU. There is no socket, no other file, no process.

#[cfg(feature = "wasm")]
use std::time::Instant;

use agentbox_policy::Policy;
#[cfg(feature = "wasm")]
use agentbox_policy::{Access, MountKind};

#[cfg(feature = "wasm")]
use crate::exit_code;
use crate::record::ExitRecord;
#[cfg(feature = "wasm")]
use crate::record::Reason;
use crate::RunError;

/// Compiled modules are cached here (wasmtime's own cache): a second run starts without compiling.
pub const CACHE_DIR: &str = "/var/cache/agentbox/wasm";

/// Exit status of a module that trapped, as for a process killed by SIGILL.
pub const TRAP_EXIT: i32 = 128 + 4;

#[cfg(feature = "wasm")]
pub fn run(policy: &Policy, argv: &[String]) -> Result<ExitRecord, RunError> {
    use agentbox_wasm::{Preopen, WasmError, WasmExit, WasmRun};
    crate::tier::check_enforceable(policy)?;
    let Some(module) = argv.first() else {
        return Err(RunError::invalid("command", "", "no module given"));
    };
    let path = std::path::Path::new(module);
    if !path.exists() {
        return Err(RunError::NotFound(module.clone()));
    }
    if !agentbox_wasm::is_wasm_file(path) {
        return Err(RunError::CannotExecute(format!(
            "{module}: not a WebAssembly module (the wasm tier runs .wasm files)"
        )));
    }
    let preopens = policy
        .mounts
        .iter()
        .filter_map(|m| match &m.kind {
            MountKind::Bind { source, access } => Some(Preopen {
                host: source.clone(),
                guest: m.target.display().to_string(),
                writable: *access == Access::ReadWrite,
            }),
            MountKind::Tmpfs { .. } => None,
        })
        .collect();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| module.clone());
    let spec = WasmRun {
        module: path.to_path_buf(),
        args: std::iter::once(name)
            .chain(argv[1..].iter().cloned())
            .collect(),
        env: policy.env_given.clone(),
        preopens,
        cwd: policy
            .insists_on("cwd")
            .then(|| policy.cwd.display().to_string()),
        memory_limit: policy.limits.memory,
        timeout: policy.limits.timeout,
        fuel: policy.limits.fuel,
        cache_dir: Some(CACHE_DIR.into()),
    };
    let started = Instant::now();
    let exit = agentbox_wasm::run(&spec).map_err(|e| match e {
        WasmError::NotFound(p) => RunError::NotFound(p.display().to_string()),
        WasmError::Malformed(m) => RunError::CannotExecute(format!("{module}: {m}")),
        WasmError::Preopen { guest, reason } => RunError::invalid("mounts", guest, reason),
        WasmError::Setup(m) => RunError::setup("wasm", m),
    })?;
    let took = started.elapsed();
    Ok(match exit {
        WasmExit::Code(c) => ExitRecord::of_module("wasm", Reason::Exited, Some(c), c, took),
        WasmExit::Timeout => {
            ExitRecord::of_module("wasm", Reason::Timeout, None, exit_code::TIMEOUT, took)
        }
        WasmExit::FuelExhausted => ExitRecord::of_module(
            "wasm",
            Reason::FuelExhausted,
            None,
            exit_code::TIMEOUT,
            took,
        ),
        WasmExit::Trap(message) => {
            eprintln!("agentbox: the module trapped: {message}");
            ExitRecord::of_module("wasm", Reason::Trapped, None, TRAP_EXIT, took)
        }
    })
}

#[cfg(not(feature = "wasm"))]
pub fn run(policy: &Policy, _argv: &[String]) -> Result<ExitRecord, RunError> {
    Err(RunError::Unenforceable {
        tier: policy.tier.name(),
        field: "tier",
        reason: "this agentbox was built without the `wasm` feature".into(),
    })
}
