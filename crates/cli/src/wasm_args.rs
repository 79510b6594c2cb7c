//! `agentbox __wasm`: runs one WebAssembly module, with the given directories preopened. It is what
//! an exec in a persistent wasm sandbox runs, inside that (ns) sandbox; see
//! `agentbox_runtime::persistent::wasm`.

use std::path::PathBuf;

use clap::Args;

use agentbox_runtime::exit_code;

use crate::run_args::fail;

#[derive(Debug, Args)]
pub struct WasmArgs {
    /// Linear memory cap, bytes.
    #[arg(long)]
    memory: u64,
    /// CPU budget in wasmtime fuel units.
    #[arg(long)]
    fuel: Option<u64>,
    /// Wall-clock limit, milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Compilation cache directory.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// A directory to preopen, GUEST:rw or GUEST:ro (the same path on both sides).
    #[arg(long = "preopen", value_name = "DIR:MODE")]
    preopens: Vec<String>,
    /// The module's working directory (inside a preopen).
    #[arg(long)]
    cwd: Option<String>,
    /// The module's environment, K=V (nothing else).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// The module and its arguments.
    #[arg(last = true, required = true, value_name = "MODULE")]
    command: Vec<String>,
}

#[cfg(feature = "wasm")]
pub fn wasm(args: WasmArgs) -> i32 {
    use agentbox_wasm::{Preopen, WasmError, WasmExit, WasmRun};
    let mut preopens = Vec::new();
    for p in &args.preopens {
        let (dir, mode) = p.rsplit_once(':').unwrap_or((p.as_str(), "ro"));
        // Directories that do not exist in this sandbox are simply not offered.
        if std::path::Path::new(dir).is_dir() {
            preopens.push(Preopen {
                host: dir.into(),
                guest: dir.into(),
                writable: mode == "rw",
            });
        }
    }
    let env = args
        .env
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let module = PathBuf::from(&args.command[0]);
    if !module.exists() {
        return fail(
            exit_code::NOT_FOUND,
            format!("module not found: {}", module.display()),
        );
    }
    if !agentbox_wasm::is_wasm_file(&module) {
        return fail(
            exit_code::CANNOT_EXECUTE,
            format!("{}: not a WebAssembly module", module.display()),
        );
    }
    let name = module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let run = WasmRun {
        module,
        args: std::iter::once(name)
            .chain(args.command[1..].iter().cloned())
            .collect(),
        env,
        preopens,
        cwd: args.cwd,
        memory_limit: args.memory,
        timeout: args.timeout_ms.map(std::time::Duration::from_millis),
        fuel: args.fuel,
        cache_dir: args.cache,
    };
    match agentbox_wasm::run(&run) {
        Ok(WasmExit::Code(c)) => c,
        Ok(WasmExit::Timeout) => fail(exit_code::TIMEOUT, "the module timed out"),
        Ok(WasmExit::FuelExhausted) => fail(
            exit_code::TIMEOUT,
            "the module ran out of fuel (limits.fuel) and was stopped",
        ),
        Ok(WasmExit::Trap(m)) => fail(
            agentbox_runtime::wasm::TRAP_EXIT,
            format!("the module trapped: {m}"),
        ),
        Err(WasmError::NotFound(p)) => fail(
            exit_code::NOT_FOUND,
            format!("module not found: {}", p.display()),
        ),
        Err(WasmError::Malformed(m)) => fail(exit_code::CANNOT_EXECUTE, m),
        Err(e @ WasmError::Preopen { .. }) => fail(exit_code::INVALID_INPUT, e),
        Err(e) => fail(exit_code::SETUP_FAILED, e),
    }
}

#[cfg(not(feature = "wasm"))]
pub fn wasm(_args: WasmArgs) -> i32 {
    fail(
        exit_code::SETUP_FAILED,
        "this agentbox was built without the `wasm` feature",
    )
}
