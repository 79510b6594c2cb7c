//! A persistent microVM: on this tier the supervisor's "init" is a process of its own, the VM
//! host, which boots the VM and owns it (QEMU, the agent connection, the uid slot). It answers
//! the supervisor's requests like the `ns` tier's init (`persistent::protocol`): each command runs
//! through the guest agent, its stdin read from the caller's descriptor and its output written to
//! the caller's descriptors, several at once over the one channel; file requests become the
//! agent's file requests. When the supervisor's channel closes the VM powers off; when the VM
//! dies the host fails what was running and exits, and the supervisor tears the sandbox down.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use agentbox_microvm::Vm;
use agentbox_policy::Policy;
use agentbox_protocol::client::ClientError;
use agentbox_protocol::{DataKind, ErrorCode, Frame, Reply, RunRequest, DATA_CHUNK};
use agentbox_sys::{msg, process};

use super::Booted;
use crate::persistent::protocol::{
    decode, encode, Entry, ExecRequest, FileOp, InitEvent, InitRequest, MAX_MESSAGE,
};
use crate::RunError;

/// The supervisor's handle on its VM host.
pub(crate) struct VmHost {
    pub pid: i32,
    qemu_group: i32,
    state_dir: String,
    reaped: bool,
}

impl VmHost {
    /// Forks the VM host (the caller must be single-threaded; the child never returns) and
    /// waits for it to report the VM booted, or why it did not.
    pub(crate) fn start(
        policy: &Policy,
        ours: OwnedFd,
        theirs: OwnedFd,
    ) -> Result<(VmHost, OwnedFd), RunError> {
        let pid = match process::fork_with_namespaces(0)
            .map_err(|e| RunError::setup("fork VM host", e))?
        {
            process::Fork::Child => {
                drop(ours);
                serve(policy, theirs)
            }
            process::Fork::Parent(pid) => pid,
        };
        drop(theirs);
        let mut host = VmHost {
            pid,
            qemu_group: 0,
            state_dir: String::new(),
            reaped: false,
        };
        let mut buf = vec![0u8; MAX_MESSAGE];
        // The boot has its own deadline (VmSpec::boot_timeout); this one only guards a host that
        // hangs before it.
        let event = match msg::poll_readable(&[ours.as_raw_fd()], 120_000) {
            Ok(r) if r[0] => match msg::recv(&ours, &mut buf) {
                Ok((n, _)) if n > 0 => decode::<InitEvent>(&buf[..n]),
                _ => None,
            },
            _ => None,
        };
        match event {
            Some(InitEvent::VmReady {
                qemu_group,
                state_dir,
            }) => {
                host.qemu_group = qemu_group;
                host.state_dir = state_dir;
                Ok((host, ours))
            }
            Some(InitEvent::Failed { kind, message, .. }) => {
                host.finish();
                Err(crate::persistent::error_from_kind(&kind, message))
            }
            _ => {
                host.finish();
                Err(RunError::setup(
                    "microvm",
                    "the VM host ended before the VM booted",
                ))
            }
        }
    }

    /// Whether the VM host has exited (it is reaped then).
    pub(crate) fn exited(&mut self) -> bool {
        if !self.reaped && matches!(process::wait(self.pid, true), Ok(Some(_))) {
            self.reaped = true;
        }
        self.reaped
    }

    /// Waits for the VM host to power the VM off (its channel must be closed by now), then makes
    /// sure: QEMU's group and the host are killed, the VM's state directory removed.
    pub(crate) fn finish(mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.exited() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !self.reaped {
            let _ = process::kill(self.pid, agentbox_sys::signal::SIGKILL);
            let _ = process::wait(self.pid, false);
        }
        if self.qemu_group > 0 {
            let _ = process::kill(-self.qemu_group, agentbox_sys::signal::SIGKILL);
        }
        if !self.state_dir.is_empty() {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}

/// How long a guest has to report the end of a SIGKILLed command.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// One command running in the guest, seen from the host.
struct Running {
    /// The supervisor's id for it.
    id: u64,
    /// When the supervisor had it SIGKILLed: a guest that has not reported its end a grace later
    /// stopped answering.
    killed_at: Option<Instant>,
    stdin: Option<File>,
    stdout: File,
    stderr: File,
}

/// Runs in the freshly forked VM host (single-threaded): boots the VM, reports `VmReady` (or
/// `Failed`), serves until the channel closes or the VM dies, powers the VM off.
pub(crate) fn serve(policy: &Policy, channel: OwnedFd) -> ! {
    let booted = match super::boot(policy) {
        Ok(b) => b,
        Err(e) => {
            send(
                &channel,
                &InitEvent::Failed {
                    id: 0,
                    kind: failure_kind(&e).into(),
                    message: e.to_string().replace('\n', " "),
                },
            );
            process::exit_now(1)
        }
    };
    let Booted { mut vm, slot } = booted;
    send(
        &channel,
        &InitEvent::VmReady {
            qemu_group: vm.pid().and_then(|p| i32::try_from(p).ok()).unwrap_or(0),
            state_dir: vm.state_dir().display().to_string(),
        },
    );
    let mut host = Host {
        policy,
        running: BTreeMap::new(),
    };
    let vm_alive = host.serve(&mut vm, &channel);
    for (_, r) in std::mem::take(&mut host.running) {
        send(&channel, &failed(r.id, "setup", "the VM died".into()));
    }
    if vm_alive {
        let _ = vm.power_off(Duration::from_secs(5));
    }
    drop(vm);
    drop(slot);
    process::exit_now(0)
}

struct Host<'a> {
    policy: &'a Policy,
    /// By the guest's id of the command.
    running: BTreeMap<u32, Running>,
}

impl Host<'_> {
    /// The event loop; returns whether the VM is still there (false: it died).
    fn serve(&mut self, vm: &mut Vm, channel: &OwnedFd) -> bool {
        let Ok(agent_fd) = vm.client().map(|c| c.get_mut().as_raw_fd()) else {
            return false;
        };
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut input = vec![0u8; DATA_CHUNK];
        loop {
            // Frames the client already holds (set aside during a file request) come first.
            loop {
                match vm.client().map(|c| c.buffered_frame()) {
                    Ok(Ok(Some(frame))) => self.on_frame(frame, channel),
                    Ok(Ok(None)) => break,
                    Ok(Err(ClientError::Decode(_))) => {
                        let resynced = vm.client().map(|c| c.resync());
                        if !matches!(resynced, Ok(Ok(()))) {
                            return false;
                        }
                    }
                    _ => return false,
                }
            }
            let stdin_ids: Vec<u32> = self
                .running
                .iter()
                .filter(|(_, r)| r.stdin.is_some())
                .map(|(gid, _)| *gid)
                .collect();
            let mut fds = vec![channel.as_raw_fd(), agent_fd];
            for gid in &stdin_ids {
                if let Some(stdin) = self.running.get(gid).and_then(|r| r.stdin.as_ref()) {
                    fds.push(stdin.as_raw_fd());
                }
            }
            let kill_deadline = self
                .running
                .values()
                .filter_map(|r| r.killed_at)
                .min()
                .map(|t| t + KILL_GRACE);
            if kill_deadline.is_some_and(|d| Instant::now() >= d) {
                // The guest did not end a SIGKILLed command: it no longer answers. Fail closed:
                // the VM goes (the caller sees "the VM died").
                eprintln!("agentbox: the guest stopped answering; killing the VM");
                return false;
            }
            let timeout_ms = kill_deadline.map_or(-1, |d| {
                i32::try_from(d.saturating_duration_since(Instant::now()).as_millis())
                    .unwrap_or(i32::MAX)
                    .saturating_add(1)
            });
            let Ok(ready) = msg::poll_readable(&fds, timeout_ms) else {
                return true;
            };
            if ready[1] {
                let frame = vm.client().map(|c| c.next_frame());
                match frame {
                    Ok(Ok(frame)) => self.on_frame(frame, channel),
                    Ok(Err(ClientError::Decode(_))) => {
                        let resynced = vm.client().map(|c| c.resync());
                        if !matches!(resynced, Ok(Ok(()))) {
                            return false;
                        }
                    }
                    _ => return false,
                }
            }
            for (i, gid) in stdin_ids.iter().enumerate() {
                if ready[2 + i] && !self.forward_stdin(vm, *gid, &mut input) {
                    return false;
                }
            }
            if ready[0] {
                let (n, fds) = msg::recv(channel, &mut buf).unwrap_or_default();
                if n == 0 {
                    // The supervisor is tearing the sandbox down.
                    return vm.alive();
                }
                if !self.on_request(vm, channel, decode::<InitRequest>(&buf[..n]), fds) {
                    return false;
                }
            }
        }
    }

    /// Relays what the caller typed to the guest; false when the VM is gone.
    fn forward_stdin(&mut self, vm: &mut Vm, gid: u32, input: &mut [u8]) -> bool {
        let Some(stdin) = self.running.get_mut(&gid).and_then(|r| r.stdin.as_mut()) else {
            return true;
        };
        let n = std::io::Read::read(stdin, input).unwrap_or(0);
        let Ok(client) = vm.client() else {
            return false;
        };
        let sent = if n == 0 {
            if let Some(r) = self.running.get_mut(&gid) {
                r.stdin = None;
            }
            client.close_stdin(gid)
        } else {
            client.write_stdin(gid, &input[..n])
        };
        sent.is_ok()
    }

    /// One request of the supervisor; false when the VM is gone.
    fn on_request(
        &mut self,
        vm: &mut Vm,
        channel: &OwnedFd,
        request: Option<InitRequest>,
        fds: Vec<OwnedFd>,
    ) -> bool {
        match request {
            Some(InitRequest::Exec { id, request }) => self.start(vm, channel, id, request, fds),
            Some(InitRequest::Kill { id, signo }) => {
                let gid = self
                    .running
                    .iter()
                    .find(|(_, r)| r.id == id)
                    .map(|(gid, _)| *gid);
                if let (Some(gid), true) = (gid, signo == agentbox_sys::signal::SIGKILL) {
                    if let Some(r) = self.running.get_mut(&gid) {
                        r.killed_at.get_or_insert_with(Instant::now);
                    }
                }
                match (gid, vm.client()) {
                    (Some(gid), Ok(client)) => client.kill(gid, signo).is_ok(),
                    (None, _) => true,
                    (_, Err(_)) => false,
                }
            }
            Some(InitRequest::File { id, operation }) => {
                let event = match file_op(vm, operation, fds) {
                    Ok((size, entries)) => InitEvent::FileDone { id, size, entries },
                    // A path the guest refuses is bad input, whatever the agent's reason.
                    Err(FileError::Agent(message)) => failed(id, "invalid", message),
                    Err(FileError::Local(message)) => failed(id, "invalid", message),
                    Err(FileError::Vm) => {
                        send(channel, &failed(id, "setup", "the VM died".into()));
                        return false;
                    }
                };
                send(channel, &event);
                true
            }
            None => true,
        }
    }

    fn start(
        &mut self,
        vm: &mut Vm,
        channel: &OwnedFd,
        id: u64,
        request: ExecRequest,
        fds: Vec<OwnedFd>,
    ) -> bool {
        if request.tty {
            send(
                channel,
                &failed(
                    id,
                    "invalid",
                    "the microvm tier has no terminals yet: exec without --tty".into(),
                ),
            );
            return true;
        }
        let mut stdio = fds.into_iter().map(File::from);
        let (Some(stdin), Some(stdout), Some(stderr)) = (stdio.next(), stdio.next(), stdio.next())
        else {
            send(
                channel,
                &failed(id, "invalid", "exec without stdio descriptors".into()),
            );
            return true;
        };
        let run = run_request(self.policy, &request);
        let Ok(client) = vm.client() else {
            return false;
        };
        match client.spawn(run) {
            Ok(gid) => {
                self.running.insert(
                    gid,
                    Running {
                        id,
                        killed_at: None,
                        stdin: request.stdin.then_some(stdin),
                        stdout,
                        stderr,
                    },
                );
                true
            }
            Err(_) => false,
        }
    }

    fn on_frame(&mut self, frame: Frame<Reply>, channel: &OwnedFd) {
        match frame {
            Frame::Data { kind, id, bytes } => {
                if let Some(r) = self.running.get_mut(&id) {
                    // A caller that stopped reading loses the rest of its output, not the VM.
                    let _ = match kind {
                        DataKind::Stdout => r.stdout.write_all(&bytes),
                        DataKind::Stderr => r.stderr.write_all(&bytes),
                        _ => Ok(()),
                    };
                }
            }
            Frame::Control(Reply::Exited { id, exit }) => {
                if let Some(r) = self.running.remove(&id) {
                    // The guest's own timer may fire first: still agentbox's timeout code.
                    let (code, signal) = if exit.timed_out {
                        (Some(crate::exit_code::TIMEOUT), None)
                    } else {
                        (exit.code, exit.signal)
                    };
                    send(
                        channel,
                        &InitEvent::Exited {
                            id: r.id,
                            code,
                            signal,
                        },
                    );
                }
            }
            Frame::Control(Reply::Error {
                id: Some(id),
                code,
                message,
            }) => {
                if let Some(r) = self.running.remove(&id) {
                    send(channel, &failed(r.id, kind_of(code), message));
                }
            }
            _ => {}
        }
    }
}

/// The guest command for an exec: the policy's environment, user and working directory under
/// what the request adds; layered, all of that goes into the inner `ns` policy instead.
pub(crate) fn run_request(policy: &Policy, request: &ExecRequest) -> RunRequest {
    let timeout_ms = request.timeout_ms.or(policy
        .limits
        .timeout
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
    if policy.layered {
        return RunRequest {
            argv: request.argv.clone(),
            env: Vec::new(),
            cwd: "/".into(),
            stdin: request.stdin,
            timeout_ms,
            uid: None,
            gid: None,
            layered_spec: Some(super::layered::exec_spec_json(policy, request)),
        };
    }
    let mut env = policy.env.clone();
    for (key, value) in &request.env {
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }
    RunRequest {
        argv: request.argv.clone(),
        env,
        cwd: request
            .cwd
            .clone()
            .unwrap_or_else(|| super::guest_cwd(policy)),
        stdin: request.stdin,
        timeout_ms,
        uid: (policy.user != 0).then_some(policy.user),
        gid: None,
        layered_spec: None,
    }
}

enum FileError {
    Agent(String),
    Local(String),
    Vm,
}

fn file_op(vm: &mut Vm, op: FileOp, fds: Vec<OwnedFd>) -> Result<(u64, Vec<Entry>), FileError> {
    let mut fd = fds.into_iter().next().map(File::from);
    let result = match (op, fd.as_mut()) {
        (FileOp::Write { path, mode }, Some(source)) => {
            let result = vm.client().map(|c| c.write_file(&path, mode, source));
            result.map(|r| r.map(|size| (size, Vec::new())))
        }
        (FileOp::Read { path }, Some(out)) => {
            let result = vm.client().map(|c| c.read_file(&path, out));
            result.map(|r| r.map(|size| (size, Vec::new())))
        }
        (FileOp::List { path }, _) => {
            let result = vm.client().map(|c| c.list_dir(&path));
            result.map(|r| {
                r.map(|entries| {
                    let entries = entries
                        .into_iter()
                        .map(|e| Entry {
                            name: e.name,
                            kind: match e.kind {
                                agentbox_protocol::FileKind::File => "file",
                                agentbox_protocol::FileKind::Dir => "dir",
                                agentbox_protocol::FileKind::Symlink => "symlink",
                                agentbox_protocol::FileKind::Other => "other",
                            }
                            .into(),
                            size: e.size,
                        })
                        .collect();
                    (0, entries)
                })
            })
        }
        (_, None) => return Err(FileError::Local("no descriptor sent with the file".into())),
    };
    match result {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(ClientError::Agent { message, .. })) => Err(FileError::Agent(message)),
        // The host side of the copy failed (a full disk, a closed pipe) while the VM is fine.
        Ok(Err(e)) if vm.alive() => Err(FileError::Local(e.to_string())),
        _ => Err(FileError::Vm),
    }
}

fn kind_of(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NotFound => "not-found",
        ErrorCode::CannotExecute | ErrorCode::PermissionDenied => "cannot-execute",
        ErrorCode::BadRequest | ErrorCode::Unsupported => "invalid",
        _ => "setup",
    }
}

fn failure_kind(e: &RunError) -> &'static str {
    match e.exit_code() {
        crate::exit_code::INVALID_INPUT => "invalid",
        crate::exit_code::NOT_FOUND => "not-found",
        crate::exit_code::CANNOT_EXECUTE => "cannot-execute",
        _ => "setup",
    }
}

fn failed(id: u64, kind: &str, message: String) -> InitEvent {
    InitEvent::Failed {
        id,
        kind: kind.into(),
        message,
    }
}

fn send(channel: &OwnedFd, event: &InitEvent) {
    let _ = msg::send(channel, &encode(event), &[]);
}
