//! From a `.wasm` file to compiled code: reads the file, builds the engine a run needs (fuel and
//! epoch checks only when the run asks for them, since both cost speed) and compiles the bytes as
//! a core module or a component, through wasmtime's compilation cache when one is given. It never
//! runs guest code.

use std::path::Path;

use wasmtime::component::Component;
use wasmtime::{Config, Engine, Module};

use crate::cache::compilation_cache;
use crate::error::{one_line, WasmError};
use crate::{WasmRun, WASM_MAGIC};

/// Compiled code, ready to instantiate.
pub(crate) enum Program {
    /// A core module: WASI preview 1, entered at `_start`.
    Core(Module),
    /// A component: WASI preview 2, entered at `wasi:cli/run`.
    Component(Component),
}

/// The bytes of the module file; `NotFound` when it is missing, `Malformed` without the magic.
pub(crate) fn read_module(path: &Path) -> Result<Vec<u8>, WasmError> {
    let bytes = std::fs::read(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => WasmError::NotFound(path.to_owned()),
        _ => WasmError::Setup(format!("read {}: {err}", path.display())),
    })?;
    if !bytes.starts_with(&WASM_MAGIC) {
        return Err(WasmError::Malformed(format!(
            "{} does not start with the \\0asm magic",
            path.display()
        )));
    }
    Ok(bytes)
}

/// An engine for `run`: fuel metering if it has a fuel budget, epoch checks if it has a
/// deadline, its compilation cache if it has one.
pub(crate) fn engine_for(run: &WasmRun) -> Result<Engine, WasmError> {
    let mut config = Config::new();
    config.consume_fuel(run.fuel.is_some());
    config.epoch_interruption(run.timeout.is_some());
    // Traps are reported on one line: no backtrace to capture.
    config.wasm_backtrace_max_frames(None);
    if let Some(dir) = &run.cache_dir {
        config.cache(Some(compilation_cache(dir)?));
    }
    Engine::new(&config).map_err(|err| WasmError::Setup(format!("engine: {}", one_line(&err))))
}

/// Compiles `bytes`, a component or a core module (told apart by the header's layer field).
pub(crate) fn compile(engine: &Engine, bytes: &[u8]) -> Result<Program, WasmError> {
    let malformed = |err: wasmtime::Error| WasmError::Malformed(one_line(&err));
    if wasmtime::wasmparser::Parser::is_component(bytes) {
        Component::new(engine, bytes)
            .map(Program::Component)
            .map_err(malformed)
    } else {
        Module::new(engine, bytes)
            .map(Program::Core)
            .map_err(malformed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn read_module_tells_missing_from_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.wasm");
        assert!(matches!(read_module(&missing), Err(WasmError::NotFound(p)) if p == missing));
        let text = dir.path().join("text.wasm");
        std::fs::write(&text, "(module)").unwrap();
        assert!(matches!(read_module(&text), Err(WasmError::Malformed(_))));
        assert!(matches!(read_module(dir.path()), Err(WasmError::Setup(_))));
    }

    #[test]
    fn compile_tells_components_from_modules() {
        let engine = Engine::default();
        let module = wat::parse_str("(module)").unwrap();
        assert!(matches!(compile(&engine, &module), Ok(Program::Core(_))));
        let component = wat::parse_str("(component)").unwrap();
        assert!(matches!(
            compile(&engine, &component),
            Ok(Program::Component(_))
        ));
        let truncated = &module[..6];
        assert!(matches!(
            compile(&engine, truncated),
            Err(WasmError::Malformed(_))
        ));
    }
}
