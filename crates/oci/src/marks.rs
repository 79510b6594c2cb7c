//! Phase marks for start-up profiling. The caller installs a hook once (agentbox's runtime prints
//! the marks with `AGENTBOX_TIMING=1`); without one a mark costs one atomic load and prints nothing.

use std::sync::OnceLock;

static HOOK: OnceLock<fn(&str)> = OnceLock::new();

/// Sends every later [`mark`] to `hook` (the first hook set stays).
pub fn set_hook(hook: fn(&str)) {
    let _ = HOOK.set(hook);
}

/// Marks the end of a phase named `label`.
pub fn mark(label: &str) {
    if let Some(hook) = HOOK.get() {
        hook(label);
    }
}
