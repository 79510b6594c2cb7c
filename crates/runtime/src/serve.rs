//! The sandbox init of a persistent sandbox: pid 1 of its namespaces, inside its cgroup, it runs
//! commands on request from the supervisor. Every command is forked from this process and goes
//! through the same last steps as the command of a one-shot run (`launch::exec_command`), so an
//! exec'd process is exactly as confined as the first: same namespaces, cgroup, uid, capabilities
//! (none), no_new_privs, Landlock rules and seccomp program. The init itself holds no capability.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use agentbox_policy::Policy;
use agentbox_sys::process::{self, Exit, Fork};
use agentbox_sys::seccomp::SockFilter;
use agentbox_sys::signal::{self, SavedMask};
use agentbox_sys::{caps, creds, msg, pty};

use crate::launch::{exec_command, Confinement, ExecSpec, FailureKind};
use crate::persistent::protocol::{
    decode, encode, ExecRequest, InitEvent, InitRequest, MAX_MESSAGE,
};
use crate::plan::MountPlan;

/// Serves requests on `channel` until the supervisor closes it. Never returns.
pub fn serve(
    policy: &Policy,
    plan: &MountPlan,
    seccomp: &[SockFilter],
    mask: SavedMask,
    channel: OwnedFd,
) -> ! {
    if drop_privileges(policy).is_err() {
        process::exit_now(125);
    }
    let Ok(signals) = signal::signalfd() else {
        process::exit_now(125)
    };
    let mut running: BTreeMap<i32, u64> = BTreeMap::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let ready = match msg::poll_readable(&[channel.as_raw_fd(), signals.as_raw_fd()], -1) {
            Ok(r) => r,
            Err(_) => process::exit_now(125),
        };
        if ready[1] {
            while let Some(received) = signal::read_signalfd(&signals) {
                if received.signo == signal::SIGCHLD {
                    reap(&mut running, &channel);
                }
            }
        }
        if ready[0] {
            let (n, fds) = match msg::recv(&channel, &mut buf) {
                Ok(r) => r,
                Err(_) => process::exit_now(125),
            };
            if n == 0 {
                // The supervisor is gone: so is the sandbox (exiting pid 1 ends the namespace).
                process::exit_now(0);
            }
            match decode::<InitRequest>(&buf[..n]) {
                Some(InitRequest::Exec { id, request }) => {
                    if let Some(pid) =
                        start(policy, plan, seccomp, mask, &channel, id, &request, fds)
                    {
                        running.insert(pid, id);
                    }
                }
                Some(InitRequest::Kill { id, signo }) => {
                    if let Some((&pid, _)) = running.iter().find(|(_, &v)| v == id) {
                        if signo == signal::SIGKILL {
                            // The whole process group the command leads (it starts a session).
                            let _ = process::kill(-pid, signo);
                        }
                        let _ = process::kill(pid, signo);
                    }
                }
                // File requests go only to a VM host.
                Some(InitRequest::File { .. }) | None => {}
            }
        }
    }
}

/// The privileged steps of the commands' confinement, done once: afterwards this process cannot
/// regain a capability, and neither can anything it forks.
fn drop_privileges(policy: &Policy) -> Result<(), agentbox_sys::SysError> {
    caps::drop_bounding_set()?;
    if policy.user != 0 {
        creds::become_user(policy.user, policy.user)?;
    }
    process::set_no_new_privs()?;
    caps::clear_sets()?;
    process::set_dumpable(false)
}

fn send(channel: &OwnedFd, event: &InitEvent) {
    let _ = msg::send(channel, &encode(event), &[]);
}

/// Forks the command of one request with the caller's stdio; returns its pid.
#[allow(clippy::too_many_arguments)]
fn start(
    policy: &Policy,
    plan: &MountPlan,
    seccomp: &[SockFilter],
    mask: SavedMask,
    channel: &OwnedFd,
    id: u64,
    request: &ExecRequest,
    stdio: Vec<OwnedFd>,
) -> Option<i32> {
    let failed = |kind: &str, message: String| {
        send(
            channel,
            &InitEvent::Failed {
                id,
                kind: kind.into(),
                message,
            },
        );
        None
    };
    let (stdio, master) = if request.tty {
        match open_terminal(request.tty_size) {
            Ok((master, slave)) => (vec![slave], Some(master)),
            Err(e) => return failed("setup", format!("terminal: {e}")),
        }
    } else if stdio.len() == 3 {
        (stdio, None)
    } else {
        return failed(
            "setup",
            format!("expected 3 stdio descriptors, got {}", stdio.len()),
        );
    };
    let mut policy = policy.clone();
    if let Some(cwd) = &request.cwd {
        if !cwd.starts_with('/') {
            return failed("invalid", format!("cwd {cwd}: must be an absolute path"));
        }
        policy.cwd = PathBuf::from(cwd);
    }
    for (key, value) in &request.env {
        match policy.env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1.clone_from(value),
            None => policy.env.push((key.clone(), value.clone())),
        }
    }
    let exec = match ExecSpec::new(&request.argv, &policy.env) {
        Ok(e) if !request.argv.is_empty() => e,
        Ok(_) => return failed("invalid", "no command given".into()),
        Err(e) => return failed("invalid", e.to_string()),
    };
    match process::fork_with_namespaces(0) {
        Err(e) => failed("setup", e.to_string()),
        Ok(Fork::Parent(pid)) => {
            if let Some(master) = master {
                let _ = msg::send(
                    channel,
                    &encode(&InitEvent::Started { id }),
                    &[master.as_raw_fd()],
                );
            }
            Some(pid)
        }
        Ok(Fork::Child) => {
            drop(master);
            for target in 0..3 {
                let fd = &stdio[if stdio.len() == 1 { 0 } else { target }];
                if msg::place(fd, target as i32).is_err() {
                    process::exit_now(125);
                }
            }
            if request.tty && (process::setsid().is_err() || pty::make_controlling(0).is_err()) {
                process::exit_now(125);
            }
            drop(stdio);
            let failure = match exec_command(
                &policy,
                plan,
                seccomp,
                &exec,
                mask,
                Confinement::InitDropped,
            ) {
                Ok(never) => match never {},
                Err(f) => f,
            };
            let kind = match failure.kind {
                FailureKind::Invalid => "invalid",
                FailureKind::NotFound => "not-found",
                FailureKind::CannotExecute => "cannot-execute",
                FailureKind::Unenforceable => "unenforceable",
                FailureKind::Setup | FailureKind::Signal | FailureKind::EngineCleaned => "setup",
            };
            send(
                channel,
                &InitEvent::Failed {
                    id,
                    kind: kind.into(),
                    message: failure.message,
                },
            );
            process::exit_now(125)
        }
    }
}

/// A new terminal of the sandbox's own devpts: (master, slave).
fn open_terminal(size: Option<(u16, u16)>) -> Result<(OwnedFd, OwnedFd), agentbox_sys::SysError> {
    let (master, slave) = pty::open_pair(std::path::Path::new("/dev/ptmx"))?;
    if let Some((rows, cols)) = size {
        pty::set_window_size(master.as_raw_fd(), rows, cols)?;
    }
    Ok((master, slave))
}

/// Reaps every exited child; reports the commands among them.
fn reap(running: &mut BTreeMap<i32, u64>, channel: &OwnedFd) {
    while let Ok(Some((pid, exit))) = process::wait(-1, true) {
        if let Some(id) = running.remove(&pid) {
            let (code, signal) = match exit {
                Exit::Code(c) => (Some(c), None),
                Exit::Signal(s) => (None, Some(s)),
            };
            send(channel, &InitEvent::Exited { id, code, signal });
        }
    }
}
