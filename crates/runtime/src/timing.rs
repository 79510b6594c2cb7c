//! Phase timestamps for start-up profiling: with `AGENTBOX_TIMING=1` in the environment of
//! `agentbox run`, each phase prints its offset from the start to stderr. Off by default, and then
//! a single relaxed atomic load per mark.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Reads the switch once; call at the start of a run.
pub fn init() {
    ORIGIN.get_or_init(Instant::now);
    if std::env::var_os("AGENTBOX_TIMING").is_some() {
        ENABLED.store(true, Ordering::Relaxed);
    }
}

/// Prints `label` with the time since `init`, when enabled.
pub fn mark(label: &str) {
    if ENABLED.load(Ordering::Relaxed) {
        if let Some(origin) = ORIGIN.get() {
            eprintln!(
                "[agentbox timing] {:>8.3} ms  {label}",
                origin.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}
