//! agentbox's per-sandbox egress proxy. A sandbox's network namespace has only loopback; its
//! programs reach the outside world solely through this proxy (HTTP_PROXY/HTTPS_PROXY pointing at
//! a socket agentbox created inside the namespace). The proxy runs host-side, allows `CONNECT`
//! tunnels and plain absolute-form HTTP to allowlisted names only, refuses IP literals outside
//! allowed CIDRs and names resolving to internal addresses, connects only to the addresses it
//! checked, audits every decision, and accepts allowlist changes on a control socket.
//!
//! It never panics on client input and writes nothing to stdout.

mod allowlist;
mod audit;
mod config;
mod control;
mod decide;
mod http;
mod relay;
mod resolve;
mod serve;

use std::sync::{Arc, RwLock};

pub use allowlist::Allowlist;
pub use config::ProxyConfig;
pub use control::{control_show, control_update};

use crate::allowlist::Rules;
use crate::audit::AuditLog;
use crate::control::ControlSocket;
use crate::resolve::{Dns, Resolver};
use crate::serve::Shared;

/// Runs the proxy on `listener` (already bound and listening) until the process receives
/// SIGTERM or SIGINT (returns `Ok`, after removing the control socket) or the listener fails
/// fatally. Builds its own tokio runtime (multi-thread, 2 workers), so it must not be called from
/// inside one. Same as [`prepare`] then [`Prepared::serve`].
pub fn run(listener: std::net::TcpListener, config: ProxyConfig) -> std::io::Result<()> {
    prepare(listener, config)?.serve()
}

/// Checks the configuration and opens every file the proxy needs (hosts file, audit log, control
/// socket) without starting to serve, so that a caller can drop privileges in between. Errors
/// (a bad rule, an unreadable hosts file, an audit log or control socket that cannot be created)
/// name the value or path. Needs no runtime.
pub fn prepare(listener: std::net::TcpListener, config: ProxyConfig) -> std::io::Result<Prepared> {
    prepare_with(listener, config, Dns::System)
}

/// A proxy whose configuration is checked and whose files are open, ready to [`serve`](Self::serve).
#[derive(Debug)]
pub struct Prepared {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    /// Removes the socket file when dropped, i.e. when serving ends.
    control: Option<ControlSocket>,
}

impl Prepared {
    /// Serves until SIGTERM or SIGINT (then returns `Ok`, after removing the control socket) or
    /// until the listener fails fatally. Builds its own tokio runtime (multi-thread, 2 workers).
    pub fn serve(self) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let result = runtime.block_on(self.serve_async(true));
        // Do not wait for DNS lookups still running on blocking threads.
        runtime.shutdown_background();
        result
    }

    /// [`Self::serve`] inside a runtime; `stop_on_signals` installs the SIGTERM/SIGINT handlers.
    async fn serve_async(self, stop_on_signals: bool) -> std::io::Result<()> {
        let Self {
            listener,
            shared,
            control,
        } = self;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let control_loop = async {
            match &control {
                Some(socket) => socket.serve(Arc::clone(&shared)).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            r = serve::serve(listener, Arc::clone(&shared)) => r,
            r = control_loop => r,
            () = stop_signal(stop_on_signals) => Ok(()),
        };
        drop(control);
        result
    }
}

/// [`prepare`] with the DNS fallback chosen by the caller.
fn prepare_with(
    listener: std::net::TcpListener,
    config: ProxyConfig,
    dns: Dns,
) -> std::io::Result<Prepared> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let rules = Rules::compile(&config.allow, &config.deny, &config.cidrs).map_err(invalid)?;
    let resolver = Resolver::load(config.hosts_file.as_deref(), dns)?;
    let audit = config.audit.as_deref().map(AuditLog::open).transpose()?;
    listener.set_nonblocking(true)?;
    let control = config
        .control
        .as_deref()
        .map(ControlSocket::bind)
        .transpose()?;
    let shared = Arc::new(Shared {
        sandbox: config.sandbox,
        rules: RwLock::new(Arc::new(rules)),
        resolver,
        audit,
    });
    Ok(Prepared {
        listener,
        shared,
        control,
    })
}

/// Resolves on SIGTERM or SIGINT; never if `enabled` is false or the handlers cannot be set.
async fn stop_signal(enabled: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    if !enabled {
        return std::future::pending().await;
    }
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
