//! A one-shot run's command, attached to this process's stdio: stdin is forwarded only while the
//! command runs (a terminal that never closes does not hold the run once the command exited),
//! output is streamed as it arrives, and the signals a user sends `agentbox run` (^C, `kill`)
//! reach the command in the guest, as on the other tiers.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use agentbox_microvm::{Vm, VmError};
use agentbox_protocol::client::ClientError;
use agentbox_protocol::{DataKind, ExitRecord, Frame, Reply, RunRequest, DATA_CHUNK};
use agentbox_sys::{msg, signal};

use crate::RunError;

/// Runs `request` in `vm` with this process's stdin (when the request takes it), stdout and
/// stderr; returns the command's exit.
pub(crate) fn run(vm: &mut Vm, request: RunRequest) -> Result<ExitRecord, RunError> {
    let mask = signal::block_all().map_err(|e| RunError::setup("block signals", e))?;
    let result = signal::signalfd()
        .map_err(|e| RunError::setup("signalfd", e))
        .and_then(|signals| converse(vm, request, &signals));
    let _ = signal::restore(mask);
    result
}

fn converse(
    vm: &mut Vm,
    request: RunRequest,
    signals: &std::os::fd::OwnedFd,
) -> Result<ExitRecord, RunError> {
    let mut stdin_open = request.stdin;
    let spawned = vm.client().map(|c| c.spawn(request));
    let id = match spawned {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return Err(lost(vm, e)),
        Err(e) => return Err(super::vm_error(e)),
    };
    let agent_fd = vm
        .client()
        .map(|c| c.get_mut().as_raw_fd())
        .map_err(super::vm_error)?;
    let mut input = vec![0u8; DATA_CHUNK];
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        // Frames already received come before waiting for more.
        loop {
            let buffered = vm.client().map(|c| c.buffered_frame());
            let frame = match buffered {
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(lost(vm, e)),
                Err(e) => return Err(super::vm_error(e)),
            };
            if let Some(done) = on_frame(frame, id, &mut stdout, &mut stderr) {
                return done.map_err(super::vm_error);
            }
        }
        let mut fds = vec![agent_fd, signals.as_raw_fd()];
        if stdin_open {
            fds.push(0);
        }
        let ready = msg::poll_readable(&fds, -1).map_err(|e| RunError::setup("poll", e))?;
        if ready[1] {
            while let Some(received) = signal::read_signalfd(signals) {
                // All of them, keyboard ones included: the guest's command is not in this
                // terminal's foreground group.
                if crate::supervise::FORWARDED.contains(&received.signo) {
                    if let Ok(client) = vm.client() {
                        let _ = client.kill(id, received.signo);
                    }
                }
            }
        }
        if stdin_open && ready[2] {
            // A read error (a terminal gone away) ends the input like an end of file.
            let n = std::io::stdin().lock().read(&mut input).unwrap_or(0);
            let client = vm.client().map_err(super::vm_error)?;
            let sent = if n == 0 {
                stdin_open = false;
                client.close_stdin(id)
            } else {
                client.write_stdin(id, &input[..n])
            };
            if let Err(e) = sent {
                return Err(lost(vm, e));
            }
        }
        if ready[0] {
            let next = vm.client().map(|c| c.next_frame());
            let frame = match next {
                Ok(Ok(frame)) => frame,
                Ok(Err(e)) => return Err(lost(vm, e)),
                Err(e) => return Err(super::vm_error(e)),
            };
            if let Some(done) = on_frame(frame, id, &mut stdout, &mut stderr) {
                return done.map_err(super::vm_error);
            }
        }
    }
}

/// A client error, classified by the VM (a dead QEMU is "the VM died", with its log).
fn lost(vm: &mut Vm, e: ClientError) -> RunError {
    let e = vm
        .check::<()>(Err(e))
        .err()
        .unwrap_or(VmError::Client(ClientError::Closed));
    super::vm_error(e)
}

/// Handles one frame of the command `id`; `Some` once it ended.
fn on_frame(
    frame: Frame<Reply>,
    id: u32,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Option<Result<ExitRecord, VmError>> {
    match frame {
        Frame::Data {
            kind,
            id: fid,
            bytes,
        } if fid == id => {
            // A reader that went away (`| head`) stops the output, not the run.
            let _ = match kind {
                DataKind::Stdout => stdout.write_all(&bytes).and_then(|()| stdout.flush()),
                DataKind::Stderr => stderr.write_all(&bytes),
                _ => Ok(()),
            };
            None
        }
        Frame::Control(Reply::Exited { id: fid, exit }) if fid == id => Some(Ok(exit)),
        Frame::Control(Reply::Error {
            id: Some(fid),
            code,
            message,
        }) if fid == id => Some(Err(VmError::Client(ClientError::Agent { code, message }))),
        _ => None,
    }
}
