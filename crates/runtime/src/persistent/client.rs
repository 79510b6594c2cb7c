//! The client side of a persistent sandbox: run a command in it (`exec`), or stop it (`rm`).

use std::os::fd::{AsRawFd, OwnedFd};

use agentbox_sys::{msg, signal};

use super::protocol::{decode, encode, ExecRequest, Reply, Request, MAX_MESSAGE};
use super::state::{self, Health, State};
use super::supervisor::error_from;
use crate::RunError;

/// Signals passed on to the command, as `agentbox run` does.
const FORWARDED: &[i32] = &[
    signal::SIGINT,
    signal::SIGTERM,
    signal::SIGHUP,
    signal::SIGQUIT,
    signal::SIGUSR1,
    signal::SIGUSR2,
];

fn connect(state: &State) -> Result<OwnedFd, RunError> {
    msg::connect(&state.socket()).map_err(|e| match state.health() {
        Health::Failed => RunError::setup(
            format!("sandbox {}", state.id),
            "its supervisor died; `agentbox rm` or `agentbox gc` reclaims it",
        ),
        Health::Running => RunError::setup(format!("sandbox {}", state.id), e),
    })
}

/// Runs `request` in the sandbox `target` (id or name) with this process's stdin, stdout and
/// stderr, forwarding signals; returns the command's exit code (`agentbox run`'s codes).
pub fn exec(target: &str, request: ExecRequest) -> Result<i32, RunError> {
    if request.argv.is_empty() {
        return Err(RunError::invalid("command", "", "no command given"));
    }
    let state = state::find(target)?;
    let conn = connect(&state)?;
    crate::supervise::give_stdio_pipes(state.uid_base + state.user)?;
    let mask = signal::block_all().map_err(|e| RunError::setup("block signals", e))?;
    let result = converse(&conn, request);
    let _ = signal::restore(mask);
    result
}

fn converse(conn: &OwnedFd, request: ExecRequest) -> Result<i32, RunError> {
    let signals = signal::signalfd().map_err(|e| RunError::setup("signalfd", e))?;
    msg::send(conn, &encode(&Request::Exec(request)), &[0, 1, 2])
        .map_err(|e| RunError::setup("send", e))?;
    let on_terminal = agentbox_sys::fd::is_terminal(0);
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let ready = msg::poll_readable(&[conn.as_raw_fd(), signals.as_raw_fd()], -1)
            .map_err(|e| RunError::setup("poll", e))?;
        if ready[1] {
            while let Some(r) = signal::read_signalfd(&signals) {
                // A terminal already signalled the whole foreground group, command included.
                if FORWARDED.contains(&r.signo) && !(on_terminal && r.pid == 0) {
                    let _ = msg::send(conn, &encode(&Request::Signal { signo: r.signo }), &[]);
                }
            }
        }
        if ready[0] {
            let (n, _) = msg::recv(conn, &mut buf).map_err(|e| RunError::setup("receive", e))?;
            return match decode::<Reply>(&buf[..n]) {
                Some(Reply::Exited { exit_code, .. }) => Ok(exit_code),
                Some(Reply::Error { exit_code, message }) => Err(error_from(exit_code, message)),
                Some(Reply::Stopped) | None => Err(RunError::setup(
                    "exec",
                    "the sandbox ended while the command ran",
                )),
            };
        }
    }
}

/// Stops the sandbox `target` and removes every trace of it; a sandbox whose supervisor died is
/// reclaimed instead.
pub fn stop(target: &str) -> Result<(), RunError> {
    let state = state::find(target)?;
    if state.health() == Health::Failed {
        return state::reclaim(&state);
    }
    let conn = connect(&state)?;
    msg::send(&conn, &encode(&Request::Stop), &[]).map_err(|e| RunError::setup("send", e))?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    // The reply (or the connection closing) comes after the teardown.
    let _ = msg::recv(&conn, &mut buf);
    Ok(())
}
