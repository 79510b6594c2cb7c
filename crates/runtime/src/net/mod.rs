//! The sandbox's way out, per `network.mode`. `none`: the empty network namespace the child makes
//! anyway. `allow`: that namespace plus a listening socket on its loopback (127.0.0.1:3128), made by
//! the child and passed to the supervisor, which hands it to a host-side egress proxy process: the
//! sandbox has no route anywhere, the proxy is its only exit. `open`: a veth pair into the host's
//! network namespace, with NAT and a per-sandbox nftables table (see `open`).
//!
//! Order with the child (see `supervise`): the child joins its network namespace, then sends one
//! message on the net channel (with the listener for `allow`); the supervisor then attaches the
//! network before it lets the child run the command.

mod open;
mod proxy;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use agentbox_policy::{NetMode, Policy, PROXY_PORT};
use agentbox_sys::msg;

pub use open::{collect_orphans, OpenAddresses};

use crate::RunError;

/// Who the sandbox is, for the proxy's audit lines and control socket.
#[derive(Debug, Clone, Default)]
pub(crate) struct NetContext {
    /// The sandbox id (persistent) or `run-<pid>`.
    pub sandbox: String,
    /// A persistent sandbox's state directory: the default audit log and the control socket live
    /// there.
    pub dir: Option<PathBuf>,
}

impl NetContext {
    pub(crate) fn for_run() -> NetContext {
        NetContext {
            sandbox: format!("run-{}", std::process::id()),
            dir: None,
        }
    }
}

/// The proxy's control socket of a persistent sandbox.
pub fn control_socket(dir: &std::path::Path) -> PathBuf {
    dir.join("proxy.sock")
}

/// Checks, before anything is created, that this host can give the sandbox its network mode.
pub(crate) fn precheck(policy: &Policy) -> Result<(), RunError> {
    let network = &policy.network;
    if let Some(hosts) = &network.hosts_file {
        std::fs::File::open(hosts)
            .map_err(|e| RunError::invalid("network.hosts_file", hosts, e))?;
    }
    if let Some(audit) = &network.audit {
        let parent = audit.parent().unwrap_or(std::path::Path::new("/"));
        if !parent.is_dir() || audit.is_dir() {
            return Err(RunError::invalid(
                "network.audit",
                audit,
                "its directory does not exist, or it is a directory",
            ));
        }
    }
    match network.mode {
        NetMode::None | NetMode::Allow => Ok(()),
        NetMode::Open => open::precheck(policy.tier.name()),
    }
}

/// The sandbox's `/etc/resolv.conf` in open mode: the host's resolvers it may reach (none in the
/// other modes: `allow` resolves in the proxy, `none` has nothing to resolve).
pub(crate) fn resolv_conf(policy: &Policy) -> Option<String> {
    match policy.network.mode {
        NetMode::Open => open::resolv_conf(),
        NetMode::None | NetMode::Allow => None,
    }
}

/// Whether the child must report its network namespace (and for `allow`, its listener).
pub(crate) fn needs_channel(policy: &Policy) -> bool {
    policy.network.mode != NetMode::None
}

/// Child side, right after joining its network namespace: for `allow`, listens on the proxy port
/// of its loopback and passes the socket on; then says the namespace is ready.
pub(crate) fn announce(channel: &OwnedFd, mode: NetMode) -> Result<(), String> {
    let listener = match mode {
        NetMode::Allow => Some(
            std::net::TcpListener::bind(("127.0.0.1", PROXY_PORT))
                .map_err(|e| format!("proxy listener on 127.0.0.1:{PROXY_PORT}: {e}"))?,
        ),
        _ => None,
    };
    let fds: Vec<i32> = listener.iter().map(|l| l.as_raw_fd()).collect();
    msg::send(channel, b"n", &fds).map_err(|e| format!("network ready: {e}"))
}

/// What the supervisor set up for the sandbox's network; undone by `tear_down`.
#[derive(Debug)]
pub(crate) enum Attached {
    Proxy(proxy::ProxyProcess),
    Open(open::OpenNet),
}

impl Attached {
    pub(crate) fn tear_down(self) -> Result<(), RunError> {
        match self {
            Attached::Proxy(p) => {
                p.stop();
                Ok(())
            }
            Attached::Open(o) => o.remove(),
        }
    }
}

/// Supervisor side: waits for the child's network namespace and attaches the way out. `None` when
/// the child closed the channel without announcing (it failed; its report says why).
pub(crate) fn attach(
    policy: &Policy,
    context: &NetContext,
    channel: &OwnedFd,
    child: i32,
    slot_index: u32,
    proxy_uid: u32,
) -> Result<Option<Attached>, RunError> {
    let mut buf = [0u8; 8];
    let (n, mut fds) = msg::recv(channel, &mut buf).map_err(|e| RunError::setup("network", e))?;
    if n == 0 {
        return Ok(None);
    }
    match policy.network.mode {
        NetMode::None => Ok(None),
        NetMode::Allow => {
            let listener = fds
                .pop()
                .ok_or_else(|| RunError::setup("network", "the sandbox sent no proxy listener"))?;
            proxy::start(policy, context, listener, proxy_uid).map(|p| Some(Attached::Proxy(p)))
        }
        NetMode::Open => {
            open::attach(slot_index, child, &policy.network.cidrs).map(|o| Some(Attached::Open(o)))
        }
    }
}
