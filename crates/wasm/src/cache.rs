//! wasmtime's compilation cache for a run: a directory of compiled artifacts keyed by the module's
//! bytes and the engine's settings, written and reloaded by wasmtime itself (this crate never
//! deserializes compiled code). This module only creates the directory, owner-only, and hands it
//! to wasmtime; it must never read or write the artifacts.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use wasmtime::{Cache, CacheConfig};

use crate::error::{one_line, WasmError};

/// A wasmtime cache in `dir`, created with mode 0700 (and its missing parents) when absent.
pub(crate) fn compilation_cache(dir: &Path) -> Result<Cache, WasmError> {
    let setup = |what: &str, err: &dyn std::fmt::Display| {
        WasmError::Setup(format!("{what} {}: {}", dir.display(), one_line(&err)))
    };
    let dir = std::path::absolute(dir).map_err(|err| setup("cache directory", &err))?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|err| setup("create cache directory", &err))?;
    let mut config = CacheConfig::new();
    config.with_directory(&dir);
    // No re-compression of often-used artifacts at a higher zstd level: that runs on a
    // background thread of whichever short-lived process crosses the usage count, which exits
    // before it finishes, so every later run would start it over.
    config.with_optimized_compression_usage_counter_threshold(u64::MAX);
    Cache::new(config).map_err(|err| setup("compilation cache", &err))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_cache_directory_is_created_owner_only() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("a/b/cache");
        let cache = compilation_cache(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(cache.directory(), &dir.canonicalize().unwrap());
    }

    #[test]
    fn a_file_in_the_way_is_a_setup_error() {
        let parent = tempfile::tempdir().unwrap();
        let file = parent.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(compilation_cache(&file), Err(WasmError::Setup(_))));
    }
}
