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
            // One write per line: the supervisor and its child print at the same time.
            let line = format!(
                "[agentbox timing] {:>8.3} ms  {label}\n",
                origin.elapsed().as_secs_f64() * 1000.0
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        }
    }
}
