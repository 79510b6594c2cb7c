//! The wall-clock deadline of a run, for code that never returns to the host: a thread that
//! sleeps until the deadline and then bumps the engine's epoch, which makes the guest trap with
//! `Trap::Interrupt` at its next epoch check (loop headers, function entries). It must never
//! outlive the run: dropping the timer stops and joins the thread.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use wasmtime::Engine;

use crate::error::WasmError;

/// A running deadline thread; drop it when the run is over.
pub(crate) struct EpochTimer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTimer {
    /// Interrupts every store of `engine` whose epoch deadline is 1 at `deadline`.
    pub(crate) fn start(engine: &Engine, deadline: Instant) -> Result<Self, WasmError> {
        let engine = engine.clone();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("wasm-deadline".to_owned())
            .spawn(move || {
                let wait = deadline.saturating_duration_since(Instant::now());
                if let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                    engine.increment_epoch();
                }
            })
            .map_err(|err| WasmError::Setup(format!("start the deadline thread: {err}")))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTimer {
    fn drop(&mut self) {
        // Disconnecting the channel wakes the thread before its deadline.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    #[test]
    fn dropping_the_timer_returns_before_the_deadline() {
        let engine = Engine::default();
        let started = Instant::now();
        let timer = EpochTimer::start(&engine, started + Duration::from_secs(60)).unwrap();
        drop(timer);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
