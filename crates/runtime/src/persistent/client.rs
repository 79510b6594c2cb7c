//! The client side of a persistent sandbox: run a command in it (`exec`), or stop it (`rm`).

use std::os::fd::{AsRawFd, OwnedFd};

use agentbox_sys::{msg, pty, signal};

use super::protocol::{decode, encode, ExecRequest, Reply, Request, MAX_MESSAGE};
use super::state::{self, Health, State};
use super::supervisor::error_from;
use crate::supervise::FORWARDED;
use crate::RunError;

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
    let tty = request.tty;
    let null = std::fs::File::open("/dev/null").map_err(|e| RunError::setup("/dev/null", e))?;
    let stdin = if request.stdin { 0 } else { null.as_raw_fd() };
    let stdio: Vec<i32> = if tty { Vec::new() } else { vec![stdin, 1, 2] };
    let forward_stdin = request.stdin;
    msg::send(conn, &encode(&Request::Exec(request)), &stdio)
        .map_err(|e| RunError::setup("send", e))?;
    drop(null);
    let on_terminal = agentbox_sys::fd::is_terminal(0);
    // With a terminal of the sandbox's own, keys go to it raw (^C included, as a byte).
    let _raw = if tty && on_terminal {
        pty::raw_mode(0).ok()
    } else {
        None
    };
    let mut master: Option<OwnedFd> = None;
    let mut master_open = true;
    let mut stdin_open = tty && forward_stdin;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let mut fds = vec![conn.as_raw_fd(), signals.as_raw_fd()];
        // Slots 2 and 3, always present so indices stay fixed (-1 is ignored by poll).
        let master_fd = master
            .as_ref()
            .filter(|_| master_open)
            .map_or(-1, |m| m.as_raw_fd());
        fds.push(master_fd);
        fds.push(if master.is_some() && stdin_open {
            0
        } else {
            -1
        });
        let ready = msg::poll_readable(&fds, -1).map_err(|e| RunError::setup("poll", e))?;
        if ready[1] {
            while let Some(r) = signal::read_signalfd(&signals) {
                if r.signo == signal::SIGWINCH {
                    if let (Some(m), Some((rows, cols))) = (&master, pty::window_size(0)) {
                        let _ = pty::set_window_size(m.as_raw_fd(), rows, cols);
                    }
                } else if FORWARDED.contains(&r.signo) && !(on_terminal && r.pid == 0) {
                    // A terminal already signalled the whole foreground group, command included.
                    let _ = msg::send(conn, &encode(&Request::Signal { signo: r.signo }), &[]);
                }
            }
        }
        if let Some(m) = &master {
            if ready[2] && !relay(m.as_raw_fd(), 1) {
                master_open = false;
            }
            if ready[3] && !relay(0, m.as_raw_fd()) {
                stdin_open = false;
            }
        }
        if ready[0] {
            let (n, mut passed) =
                msg::recv(conn, &mut buf).map_err(|e| RunError::setup("receive", e))?;
            match decode::<Reply>(&buf[..n]) {
                Some(Reply::Started) if !passed.is_empty() => master = Some(passed.remove(0)),
                Some(Reply::Exited { exit_code, .. }) => {
                    // What the command wrote last may still sit in the terminal.
                    if let Some(m) = master.as_ref().filter(|_| master_open) {
                        while msg::poll_readable(&[m.as_raw_fd()], 0).is_ok_and(|r| r[0])
                            && relay(m.as_raw_fd(), 1)
                        {}
                    }
                    return Ok(exit_code);
                }
                Some(Reply::Error { exit_code, message }) => {
                    return Err(error_from(exit_code, message))
                }
                _ => {
                    return Err(RunError::setup(
                        "exec",
                        "the sandbox ended while the command ran",
                    ))
                }
            }
        }
    }
}

/// Copies what is available from `from` to `to`; false at end of file or on an error.
fn relay(from: i32, to: i32) -> bool {
    let mut chunk = [0u8; 16384];
    match agentbox_sys::fd::read(from, &mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => agentbox_sys::fd::write_all(to, &chunk[..n]).is_ok(),
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

/// The window size of this process's terminal, if stdin is one: (rows, columns).
pub fn terminal_size() -> Option<(u16, u16)> {
    pty::window_size(0)
}
