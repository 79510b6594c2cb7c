//! A persistent sandbox on an engine tier: the child starts the container with a pausing first
//! process, then answers the supervisor's requests like the `ns` tier's init does (same protocol,
//! `persistent::protocol`), running each command through the engine's own exec with the caller's
//! stdio descriptors. When the supervisor's channel closes, the container goes.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Stdio};

use agentbox_oci::{EngineError, Outcome, Sandbox};
use agentbox_policy::{Policy, Tier};
use agentbox_sys::process::{self, Exit, Fork};
use agentbox_sys::{msg, signal};

use crate::persistent::protocol::{
    decode, encode, ExecRequest, InitEvent, InitRequest, MAX_MESSAGE,
};

/// One running command: a host process that relays it (the engine's exec client, or a forked
/// agentbox process talking to the Docker daemon).
enum Running {
    Client(Child),
    Forked(i32),
}

pub fn serve(policy: &Policy, sandbox: &Sandbox, channel: OwnedFd) -> Result<Outcome, EngineError> {
    let tier = policy.tier;
    super::drivers::create(tier, sandbox)?;
    send(&channel, &InitEvent::Ready);
    let result = serve_requests(policy, sandbox, &channel);
    let destroyed = super::drivers::destroy_engine(tier, &sandbox.id);
    result.and(destroyed).map(|()| Outcome {
        code: Some(0),
        signal: None,
        timed_out: false,
        oom: false,
    })
}

fn serve_requests(
    policy: &Policy,
    sandbox: &Sandbox,
    channel: &OwnedFd,
) -> Result<(), EngineError> {
    let signals = signal::signalfd().map_err(|e| EngineError::Setup {
        step: "signalfd".into(),
        message: e.to_string(),
    })?;
    let mut running: BTreeMap<u64, Running> = BTreeMap::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let ready =
            msg::poll_readable(&[channel.as_raw_fd(), signals.as_raw_fd()], -1).map_err(|e| {
                EngineError::Setup {
                    step: "poll".into(),
                    message: e.to_string(),
                }
            })?;
        if ready[1] {
            while signal::read_signalfd(&signals).is_some() {}
            reap(&mut running, channel);
        }
        if !ready[0] {
            continue;
        }
        let (n, fds) = match msg::recv(channel, &mut buf) {
            Ok(r) => r,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            for (_, r) in running.iter_mut() {
                kill(r, signal::SIGKILL);
            }
            return Ok(());
        }
        match decode::<InitRequest>(&buf[..n]) {
            Some(InitRequest::Exec { id, request }) => {
                match start(policy, sandbox, &request, fds) {
                    Ok(r) => {
                        running.insert(id, r);
                    }
                    Err((kind, message)) => send(
                        channel,
                        &InitEvent::Failed {
                            id,
                            kind: kind.into(),
                            message,
                        },
                    ),
                }
            }
            Some(InitRequest::Kill { id, signo }) => {
                if let Some(r) = running.get_mut(&id) {
                    kill(r, signo);
                }
            }
            // File requests go only to a VM host.
            Some(InitRequest::File { .. }) | None => {}
        }
    }
}

fn send(channel: &OwnedFd, event: &InitEvent) {
    let _ = msg::send(channel, &encode(event), &[]);
}

fn kill(running: &mut Running, signo: i32) {
    let pid = match running {
        Running::Client(child) => child.id() as i32,
        Running::Forked(pid) => *pid,
    };
    let _ = process::kill(pid, signo);
}

/// Reports every command whose relay has exited.
fn reap(running: &mut BTreeMap<u64, Running>, channel: &OwnedFd) {
    let mut done = Vec::new();
    for (id, r) in running.iter_mut() {
        let exit = match r {
            Running::Client(child) => match child.try_wait() {
                Ok(Some(status)) => {
                    use std::os::unix::process::ExitStatusExt;
                    Some(match status.code() {
                        Some(c) => Exit::Code(c),
                        None => Exit::Signal(status.signal().unwrap_or(signal::SIGKILL)),
                    })
                }
                _ => None,
            },
            Running::Forked(pid) => process::wait(*pid, true).ok().flatten().map(|(_, e)| e),
        };
        if let Some(exit) = exit {
            let (code, signal) = match exit {
                Exit::Code(c) => (Some(c), None),
                Exit::Signal(s) => (None, Some(s)),
            };
            send(
                channel,
                &InitEvent::Exited {
                    id: *id,
                    code,
                    signal,
                },
            );
            done.push(*id);
        }
    }
    for id in done {
        running.remove(&id);
    }
}

/// Starts one command through the engine; on failure, (kind, message) as the init reports them.
fn start(
    policy: &Policy,
    sandbox: &Sandbox,
    request: &ExecRequest,
    stdio: Vec<OwnedFd>,
) -> Result<Running, (&'static str, String)> {
    if request.tty {
        return Err((
            "invalid",
            format!(
                "the {} tier runs commands without a terminal in this version",
                policy.tier.name()
            ),
        ));
    }
    if request.argv.is_empty() {
        return Err(("invalid", "no command given".into()));
    }
    let [stdin, stdout, stderr]: [OwnedFd; 3] = stdio.try_into().map_err(|v: Vec<OwnedFd>| {
        (
            "setup",
            format!("expected 3 stdio descriptors, got {}", v.len()),
        )
    })?;
    let mut env = policy.env.clone();
    for (key, value) in &request.env {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1.clone_from(value),
            None => env.push((key.clone(), value.clone())),
        }
    }
    let cwd = match &request.cwd {
        Some(c) if !c.starts_with('/') => {
            return Err(("invalid", format!("cwd {c}: must be an absolute path")))
        }
        Some(c) => c.into(),
        None => policy.cwd.clone(),
    };
    if policy.tier != Tier::Docker && !command_exists(&sandbox.rootfs, &request.argv[0], &env, &cwd)
    {
        return Err(("not-found", request.argv[0].clone()));
    }
    let exec = agentbox_oci::ExecProcess {
        argv: request.argv.clone(),
        env,
        cwd,
        uid: policy.user,
    };
    match policy.tier {
        Tier::Docker => {
            match process::fork_with_namespaces(0).map_err(|e| ("setup", e.to_string()))? {
                Fork::Child => {
                    let code =
                        match agentbox_docker::exec(&sandbox.id, &exec, stdin, stdout, stderr) {
                            Ok(o) => o.code.unwrap_or(128 + o.signal.unwrap_or(9)),
                            Err(EngineError::Command {
                                not_found: true,
                                message,
                            }) => {
                                eprintln_to(&message);
                                127
                            }
                            Err(e) => {
                                eprintln_to(&e.to_string());
                                126
                            }
                        };
                    process::exit_now(code)
                }
                Fork::Parent(pid) => Ok(Running::Forked(pid)),
            }
        }
        tier => {
            let mut command = super::drivers::exec_command(tier, sandbox, &exec)
                .map_err(|e| ("setup", e.to_string()))?;
            command
                .stdin(Stdio::from(stdin))
                .stdout(Stdio::from(stdout))
                .stderr(Stdio::from(stderr));
            command
                .spawn()
                .map(Running::Client)
                .map_err(|e| ("setup", format!("{}: {e}", tier.name())))
        }
    }
}

/// Whether `command` names a file in the sandbox's root, looked up as execve's caller would (a
/// path as it is, relative to `cwd`, a name along the environment's PATH). The engines' exec
/// clients report a missing command only in their own words and exit codes; this gives it
/// agentbox's (127). Every lookup is resolved inside the root.
fn command_exists(
    rootfs: &std::path::Path,
    command: &str,
    env: &[(String, String)],
    cwd: &std::path::Path,
) -> bool {
    use agentbox_sys::resolve::{self, OpenFlags};
    let Ok(root) = resolve::open(rootfs, OpenFlags::PATH.directory(), 0) else {
        // The root cannot be looked at: let the engine report.
        return true;
    };
    let exists =
        |path: &std::path::Path| resolve::open_in_root(&root, path, OpenFlags::PATH, 0).is_ok();
    if command.contains('/') {
        return exists(&cwd.join(command));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(agentbox_policy::DEFAULT_PATH, |(_, v)| v.as_str());
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .any(|dir| exists(&cwd.join(dir).join(command)))
}

fn eprintln_to(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "agentbox: {message}");
}
