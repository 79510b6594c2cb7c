//! Per-command timestamps for measuring the agent (`agentbox.trace` on the kernel command line,
//! or `AGENTBOX_GUEST_TRACE=1` when not PID 1): off by default, and then free (no clock reads).
//! Each traced command prints one line to the agent's stderr (the guest console) after its
//! `exited` is sent: `agentbox-guest: trace id=N KEY=MICROS ...`, every time counted from the
//! moment its request was read from the channel. It never changes what the host is sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The moment a request was read, when tracing is on.
pub fn now() -> Option<Instant> {
    ENABLED.load(Ordering::Relaxed).then(Instant::now)
}

/// The marks of one command, in the order they happened.
pub struct Stamps {
    start: Instant,
    marks: Vec<(&'static str, u128)>,
}

impl Stamps {
    pub fn new(start: Option<Instant>) -> Option<Stamps> {
        start.map(|start| Stamps {
            start,
            marks: Vec::with_capacity(8),
        })
    }

    /// Records `key` now.
    pub fn mark(stamps: &mut Option<Stamps>, key: &'static str) {
        if let Some(s) = stamps {
            s.marks.push((key, s.start.elapsed().as_micros()));
        }
    }

    /// Records `key` now unless it is recorded already.
    pub fn mark_once(stamps: &mut Option<Stamps>, key: &'static str) {
        if stamps
            .as_ref()
            .is_some_and(|s| s.marks.iter().any(|(k, _)| *k == key))
        {
            return;
        }
        Stamps::mark(stamps, key);
    }

    /// Records `key` at `at` (a moment taken elsewhere).
    pub fn mark_at(stamps: &mut Option<Stamps>, key: &'static str, at: Instant) {
        if let Some(s) = stamps {
            s.marks
                .push((key, at.saturating_duration_since(s.start).as_micros()));
        }
    }

    pub fn report(stamps: Option<Stamps>, id: u32) {
        if let Some(s) = stamps {
            let mut line = format!("agentbox-guest: trace id={id}");
            for (key, us) in s.marks {
                line.push_str(&format!(" {key}={us}"));
            }
            eprintln!("{line}");
        }
    }
}
