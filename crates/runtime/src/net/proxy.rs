//! `allow` mode: the egress proxy of one sandbox, a process of its own forked from the (single-
//! threaded) supervisor. It holds the listening socket that lives in the sandbox's network
//! namespace, makes its outbound connections from the host's, and runs without privilege: a uid of
//! the sandbox's slot that no sandbox process has (the slot's last), no capabilities, no_new_privs.
//! It dies with its supervisor (parent-death signal) and is killed when the sandbox ends.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use agentbox_policy::Policy;
use agentbox_proxy::ProxyConfig;
use agentbox_sys::process::{self, Fork};
use agentbox_sys::{caps, creds, fd, signal};

use super::NetContext;
use crate::RunError;

#[derive(Debug)]
pub(crate) struct ProxyProcess {
    pid: i32,
}

impl ProxyProcess {
    pub(crate) fn stop(self) {
        let _ = process::kill(self.pid, signal::SIGKILL);
        let _ = process::wait(self.pid, false);
    }
}

pub(crate) fn config(policy: &Policy, context: &NetContext) -> ProxyConfig {
    let network = &policy.network;
    ProxyConfig {
        sandbox: context.sandbox.clone(),
        allow: network.allow.iter().map(|r| r.to_string()).collect(),
        deny: network.deny.iter().map(|r| r.to_string()).collect(),
        cidrs: network.cidrs.iter().map(|c| c.to_string()).collect(),
        hosts_file: network.hosts_file.clone(),
        audit: network
            .audit
            .clone()
            .or_else(|| context.dir.as_ref().map(|d| d.join("net-audit.jsonl"))),
        control: context.dir.as_deref().map(super::control_socket),
    }
}

pub(super) fn start(
    policy: &Policy,
    context: &NetContext,
    listener: OwnedFd,
    uid: u32,
) -> Result<ProxyProcess, RunError> {
    let config = config(policy, context);
    let supervisor = process::getpid();
    let (ready_read, ready_write) = fd::pipe().map_err(|e| RunError::setup("pipe", e))?;
    match process::fork_with_namespaces(0).map_err(|e| RunError::setup("fork proxy", e))? {
        Fork::Child => {
            drop(ready_read);
            let code = match serve(config, listener, uid, supervisor, ready_write) {
                Ok(()) => 0,
                Err(message) => {
                    eprintln!("agentbox proxy: {message}");
                    1
                }
            };
            process::exit_now(code)
        }
        Fork::Parent(pid) => {
            drop(ready_write);
            drop(listener);
            let proxy = ProxyProcess { pid };
            // "ok" once it is ready to serve; otherwise why it is not.
            let mut answer = String::new();
            let _ = std::fs::File::from(ready_read).read_to_string(&mut answer);
            match answer.strip_prefix("ok") {
                Some(_) => Ok(proxy),
                None => {
                    proxy.stop();
                    let reason = if answer.is_empty() {
                        "the proxy exited before it was ready".to_string()
                    } else {
                        answer
                    };
                    Err(RunError::setup("network: egress proxy", reason))
                }
            }
        }
    }
}

/// The proxy process: keeps only the listener and stderr, binds what needs root, then drops every
/// privilege before it reads a byte from the sandbox.
fn serve(
    config: ProxyConfig,
    listener: OwnedFd,
    uid: u32,
    supervisor: i32,
    ready: OwnedFd,
) -> Result<(), String> {
    let mut ready = std::fs::File::from(ready);
    let prepared = (|| -> Result<agentbox_proxy::Prepared, String> {
        process::set_parent_death_signal(signal::SIGKILL).map_err(|e| e.to_string())?;
        if process::getppid() != supervisor {
            return Err("the supervisor is gone".into());
        }
        fd::close_all_except(&[2, listener.as_raw_fd(), ready.as_raw_fd()])
            .map_err(|e| e.to_string())?;
        let prepared = agentbox_proxy::prepare(std::net::TcpListener::from(listener), config)
            .map_err(|e| e.to_string())?;
        caps::drop_bounding_set().map_err(|e| e.to_string())?;
        creds::become_user(uid, uid).map_err(|e| e.to_string())?;
        caps::clear_sets().map_err(|e| e.to_string())?;
        process::set_no_new_privs().map_err(|e| e.to_string())?;
        Ok(prepared)
    })();
    match prepared {
        Ok(prepared) => {
            let _ = ready.write_all(b"ok");
            drop(ready);
            prepared.serve().map_err(|e| e.to_string())
        }
        Err(message) => {
            let _ = ready.write_all(message.as_bytes());
            process::exit_now(1)
        }
    }
}
