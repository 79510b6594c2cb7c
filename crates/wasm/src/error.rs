//! Why a run could not start. How a started run ended is a `WasmExit`, never an error.

use std::path::PathBuf;

/// A run that could not start, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The module file does not exist.
    #[error("wasm module not found: {}", .0.display())]
    NotFound(PathBuf),
    /// The file is not a valid WebAssembly module or component (one line).
    #[error("not a valid WebAssembly module or component: {0}")]
    Malformed(String),
    /// A preopen (or the cwd, which must lie inside one) cannot be given to the guest.
    #[error("wasm preopen {guest}: {reason}")]
    Preopen { guest: String, reason: String },
    /// Anything else that failed before the guest ran: reading the module, the engine, the cache,
    /// linking, instantiation.
    #[error("wasm setup: {0}")]
    Setup(String),
}

/// `err` and its causes on one line.
pub(crate) fn one_line(err: &impl std::fmt::Display) -> String {
    let text = format!("{err:#}");
    text.split('\n')
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(one_line(&"a\n  b\n\nc"), "a; b; c");
        let err = wasmtime::Error::msg("inner").context("outer");
        assert_eq!(one_line(&err), "outer: inner");
    }
}
