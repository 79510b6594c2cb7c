//! Signals the supervisor forwards to the engine child (blocked there, taken from a signalfd),
//! passed on to the container's command. The command is the init of its PID namespace, which the
//! kernel spares signals it has no handler for; as on the runc and crun tiers
//! (`agentbox_oci::run`), the init's disposition decides: a caught signal is sent to it through
//! the daemon, an ignored one is dropped, and one left at its default is carried out with SIGKILL,
//! so the run ends as it would on the `ns` tier (128 + the signal).

use std::cell::Cell;

use agentbox_oci::wait::{disposition, Disposition};
use agentbox_sys::process;
use agentbox_sys::signal::{self, FORWARDED};
use bollard::query_parameters::{InspectContainerOptions, KillContainerOptions};
use bollard::Docker;

/// Passes forwarded signals on to container `id` until the process that started this one (the
/// supervisor) dies; returns then. `killed_for` is set to a signal carried out with SIGKILL.
/// Never returns while no signal can be watched (no signalfd): the run goes on without.
///
/// The signalfd is looked at every [`LOOK_EVERY`] (registering it with tokio's reactor takes an
/// `unsafe` call, which has no place outside agentbox-sys): a signal is passed on that much late,
/// against the daemon's hundreds of ms per run.
pub(crate) async fn watch(docker: &Docker, id: &str, killed_for: &Cell<Option<i32>>) {
    let parent = process::getppid();
    let Ok(fd) = signal::signalfd() else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        if process::getppid() != parent {
            return;
        }
        while let Some(received) = signal::read_signalfd(&fd) {
            if process::getppid() != parent {
                return;
            }
            if FORWARDED.contains(&received.signo) {
                pass_on(docker, id, received.signo, killed_for).await;
            }
        }
        if process::getppid() != parent {
            return;
        }
    }
}

/// How often the signalfd is read.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Sends `signo` to the container's init per its disposition. When it is killed instead,
/// `killed_for` is set first: the run's end may cancel this future before the kill returns.
async fn pass_on(docker: &Docker, id: &str, signo: i32, killed_for: &Cell<Option<i32>>) {
    let pid = match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => info
            .state
            .and_then(|s| s.pid)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|&p| p > 0),
        Err(_) => None,
    };
    let signal = match pid.and_then(|pid| disposition(pid, signo)) {
        Some(Disposition::Caught) => signo,
        Some(Disposition::Default) => {
            if killed_for.get().is_none() {
                killed_for.set(Some(signo));
            }
            signal::SIGKILL
        }
        Some(Disposition::Ignored) | None => return,
    };
    let options = KillContainerOptions {
        signal: signal.to_string(),
    };
    let _ = docker.kill_container(id, Some(options)).await;
}
