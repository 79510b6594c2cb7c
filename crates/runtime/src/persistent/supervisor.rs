//! The supervisor of one persistent sandbox: a small process of its own (no central daemon), which
//! holds the sandbox (init, cgroup, uid slot), serves `ctl.sock`, relays commands to the init and
//! their exits back, enforces per-command timeouts and the sandbox's TTL, and tears everything down
//! on `Stop`, on SIGTERM, or when the init dies. One sandbox's crash harms no other.

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentbox_policy::Policy;
use agentbox_sys::process::{self, Exit, Fork};
use agentbox_sys::{fd, msg, signal};

use super::held::{self, Held};
use super::protocol::{decode, encode, InitEvent, InitRequest, Reply, Request, MAX_MESSAGE};
use super::state::{self, State};
use super::wasm::{self, WasmExec};
use crate::net::NetContext;
use crate::{exit_code, RunError};

/// How long an engine tier's child may take to remove its container itself once its channel
/// closes (a Docker daemon's removal of a running container takes about a second) before it is
/// killed and the supervisor removes the container by name.
const ENGINE_END_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `agentbox create` beyond the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOptions {
    pub name: Option<String>,
    /// The sandbox is removed this long after its creation.
    pub ttl: Option<Duration>,
    /// The sandbox is removed after this long without a command running.
    pub idle: Option<Duration>,
    /// The API tenant it belongs to.
    pub tenant: Option<String>,
}

/// Creates a persistent sandbox and returns its id once it is ready to run commands. The
/// supervisor is a detached grandchild of the caller, which must be single-threaded.
pub fn create(policy: &Policy, options: &CreateOptions) -> Result<String, RunError> {
    if let Some(name) = &options.name {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(RunError::invalid(
                "name",
                name,
                "use 1-64 letters, digits, '-', '_' or '.'",
            ));
        }
        if state::looks_like_id(name) {
            return Err(RunError::invalid(
                "name",
                name,
                "must not look like a sandbox id (12 hex digits)",
            ));
        }
        if state::list()
            .iter()
            .any(|s| s.name.as_deref() == Some(name))
        {
            return Err(RunError::invalid(
                "name",
                name,
                "a sandbox of that name exists",
            ));
        }
    }
    if policy.tier == agentbox_policy::Tier::Nspawn {
        return Err(RunError::Unenforceable {
            tier: "nspawn",
            field: "tier",
            reason: "systemd-nspawn cannot run a second command in a running container without a \
                     systemd host; create persistent sandboxes with --tier oci, gvisor, docker or ns"
                .into(),
        });
    }
    // A wasm sandbox is an ns sandbox whose execs run modules (see `wasm`).
    let (layered, wasm) = match policy.tier {
        agentbox_policy::Tier::Wasm => {
            let (ns, exec) = super::wasm::layered(policy)?;
            (Some(ns), Some(exec))
        }
        _ => (None, None),
    };
    let tier = policy.tier_label();
    let policy = layered.as_ref().unwrap_or(policy);
    let id = state::new_id()?;
    let dir = state::dir_of(&id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| RunError::setup(format!("mkdir {}", dir.display()), e))?;
    let (ready_read, ready_write) = fd::pipe().map_err(|e| RunError::setup("pipe", e))?;
    match process::fork_with_namespaces(0).map_err(|e| RunError::setup("fork supervisor", e))? {
        Fork::Child => {
            drop(ready_read);
            // Detach: a new session, no terminal, and a grandchild so the caller reaps nothing.
            let _ = process::setsid();
            match process::fork_with_namespaces(0) {
                Ok(Fork::Child) => {}
                _ => process::exit_now(0),
            }
            detach_stdio();
            log_stderr_to(&dir.join("supervisor.log"));
            supervise(policy, &id, options, ready_write, tier, wasm.as_ref())
        }
        Fork::Parent(pid) => {
            drop(ready_write);
            let _ = process::wait(pid, false);
            // One line: the supervisor's processes may hold the pipe long after.
            let mut answer = String::new();
            let _ = std::io::BufReader::new(std::fs::File::from(ready_read)).read_line(&mut answer);
            match answer.split_once('\t') {
                Some(("ok", _)) => Ok(id),
                Some((code, message)) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    Err(error_from(
                        code.parse().unwrap_or(exit_code::SETUP_FAILED),
                        message.trim().to_string(),
                    ))
                }
                None => {
                    let _ = std::fs::remove_dir_all(&dir);
                    Err(RunError::setup(
                        "create",
                        "the supervisor exited before the sandbox was ready",
                    ))
                }
            }
        }
    }
}

/// The exit code of a failure an init reported by kind (`launch::Failure`'s names).
fn code_of_kind(kind: &str) -> i32 {
    match kind {
        "invalid" => exit_code::INVALID_INPUT,
        "not-found" => exit_code::NOT_FOUND,
        "cannot-execute" => exit_code::CANNOT_EXECUTE,
        _ => exit_code::SETUP_FAILED,
    }
}

/// An error an init reported by kind.
pub(crate) fn error_from_kind(kind: &str, message: String) -> RunError {
    error_from(code_of_kind(kind), message)
}

/// An error that crossed a process boundary as (exit code, message).
pub(crate) fn error_from(code: i32, message: String) -> RunError {
    match code {
        exit_code::INVALID_INPUT => RunError::InvalidInSandbox(message),
        exit_code::NOT_FOUND => RunError::NotFound(message),
        exit_code::CANNOT_EXECUTE => RunError::CannotExecute(message),
        _ => RunError::Setup {
            step: "sandbox".into(),
            reason: message,
        },
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let null: OwnedFd = null.into();
        for target in 0..=2 {
            let _ = msg::place(&null, target);
        }
    }
}

/// The supervisor's (and its sandbox driver's) stderr: what an engine prints when it fails lands
/// in the sandbox's state directory, for as long as the sandbox exists.
fn log_stderr_to(path: &std::path::Path) {
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
    {
        let _ = msg::place(&OwnedFd::from(log), 2);
    }
}

struct Client {
    conn: OwnedFd,
    exec: Option<u64>,
    deadline: Option<Instant>,
    timed_out: bool,
}

fn reply(conn: &OwnedFd, message: &Reply) {
    let _ = msg::send(conn, &encode(message), &[]);
}

fn supervise(
    policy: &Policy,
    id: &str,
    options: &CreateOptions,
    ready: OwnedFd,
    tier: &str,
    wasm: Option<&WasmExec>,
) -> ! {
    let mut ready = std::fs::File::from(ready);
    let (ours, theirs) = match msg::pair() {
        Ok(p) => p,
        Err(e) => fail_start(&mut ready, &RunError::setup("socketpair", e)),
    };
    let net_context = NetContext {
        sandbox: id.to_string(),
        dir: Some(state::dir_of(id)),
    };
    let (mut held, ours) = match held::start(policy, ours, theirs, &net_context) {
        Ok(h) => h,
        Err(e) => fail_start(&mut ready, &e),
    };
    if crate::tier::mechanisms(policy.tier).is_some_and(|m| m.engine) && !engine_ready(&ours) {
        // The child reported why on the report pipe: `finish` turns that into the error.
        let Held::Sandbox(launched) = held else {
            process::exit_now(1)
        };
        let e = (*launched)
            .finish(policy, Ok((Exit::Code(0), false)))
            .err()
            .unwrap_or_else(|| RunError::setup("engine", "the container did not start"));
        fail_start(&mut ready, &e);
    }
    let started = Instant::now();
    let state = State {
        id: id.to_string(),
        name: options.name.clone(),
        tier: tier.to_string(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        supervisor: std::process::id(),
        init: held.init_pid(),
        uid_base: held.uid_base(),
        user: policy.user,
        cgroups: held.cgroups(),
        tenant: options.tenant.clone(),
        root: crate::engine::root_seen_by_init(policy),
    };
    let listener = match msg::listen(&state.socket()).and_then(|l| {
        std::fs::set_permissions(
            state.socket(),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|e| {
            agentbox_sys::SysError::new("chmod", "ctl.sock", e.raw_os_error().unwrap_or(1))
        })?;
        Ok(l)
    }) {
        Ok(l) => l,
        Err(e) => {
            held.finish(policy);
            fail_start(&mut ready, &RunError::setup("control socket", e))
        }
    };
    if let Err(e) = state::write(&state) {
        held.finish(policy);
        fail_start(&mut ready, &e);
    }
    let signals = match signal::signalfd() {
        Ok(s) => s,
        Err(e) => {
            held.finish(policy);
            fail_start(&mut ready, &RunError::setup("signalfd", e))
        }
    };
    let _ = ready.write_all(b"ok\t\n");
    drop(ready);
    let ttl_deadline = options.ttl.map(|t| started + t);
    let stopper = serve_clients(
        &mut held,
        &listener,
        &ours,
        &signals,
        ttl_deadline,
        options.idle,
        wasm,
    );
    drop(ours);
    held.let_engine_child_end(ENGINE_END_TIMEOUT);
    held.finish(policy);
    let _ = std::fs::remove_dir_all(state.dir());
    if let Some(conn) = stopper {
        reply(&conn, &Reply::Stopped);
    }
    process::exit_now(0)
}

/// Waits for an engine tier's child to report its container up (it may take the engine seconds:
/// an image import, gVisor's boot). False if the child ended or said something else.
fn engine_ready(init: &OwnedFd) -> bool {
    let mut buf = vec![0u8; MAX_MESSAGE];
    match msg::poll_readable(&[init.as_raw_fd()], 120_000) {
        Ok(r) if r[0] => {}
        _ => return false,
    }
    match msg::recv(init, &mut buf) {
        Ok((n, _)) if n > 0 => decode::<InitEvent>(&buf[..n]) == Some(InitEvent::Ready),
        _ => false,
    }
}

fn fail_start(ready: &mut std::fs::File, e: &RunError) -> ! {
    let _ = ready
        .write_all(format!("{}\t{}\n", e.exit_code(), e.to_string().replace('\n', " ")).as_bytes());
    process::exit_now(1)
}

/// The event loop. Returns when the sandbox must end, with the connection that asked for it.
fn serve_clients(
    held: &mut Held,
    listener: &OwnedFd,
    init: &OwnedFd,
    signals: &OwnedFd,
    ttl_deadline: Option<Instant>,
    idle: Option<Duration>,
    wasm: Option<&WasmExec>,
) -> Option<OwnedFd> {
    let mut clients: Vec<Client> = Vec::new();
    let mut last_active = Instant::now();
    let mut next_exec: u64 = 0;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let now = Instant::now();
        if clients.iter().any(|c| c.exec.is_some()) {
            last_active = now;
        }
        let idle_deadline = idle.map(|i| last_active + i);
        if ttl_deadline.is_some_and(|d| now >= d) || idle_deadline.is_some_and(|d| now >= d) {
            return None;
        }
        for client in clients.iter_mut() {
            if let (Some(exec), Some(deadline)) = (client.exec, client.deadline) {
                if now >= deadline && !client.timed_out {
                    client.timed_out = true;
                    signal_exec(init, exec, signal::SIGKILL);
                }
            }
        }
        let next_deadline = clients
            .iter()
            .filter(|c| !c.timed_out)
            .filter_map(|c| c.deadline)
            .chain(ttl_deadline)
            .chain(idle_deadline)
            .min();
        let timeout_ms = next_deadline.map_or(-1, |d| {
            d.saturating_duration_since(now)
                .as_millis()
                .min(i32::MAX as u128) as i32
                + 1
        });
        let mut fds = vec![listener.as_raw_fd(), init.as_raw_fd(), signals.as_raw_fd()];
        fds.extend(clients.iter().map(|c| c.conn.as_raw_fd()));
        let Ok(ready) = msg::poll_readable(&fds, timeout_ms) else {
            return None;
        };
        // Readiness of clients by descriptor: the init's events below may remove clients, which
        // would shift positions.
        let ready_clients: Vec<i32> = fds[3..]
            .iter()
            .zip(&ready[3..])
            .filter(|(_, r)| **r)
            .map(|(fd, _)| *fd)
            .collect();
        if ready[2] {
            while let Some(received) = signal::read_signalfd(signals) {
                match received.signo {
                    signal::SIGCHLD if held.init_exited() => return None,
                    signal::SIGTERM | signal::SIGINT | signal::SIGHUP => return None,
                    _ => {}
                }
            }
        }
        if ready[1] {
            match msg::recv(init, &mut buf) {
                Ok((0, _)) | Err(_) => return None,
                Ok((n, fds)) => match decode::<InitEvent>(&buf[..n]) {
                    Some(InitEvent::Exited { id, code, signal }) => {
                        if let Some(i) = clients.iter().position(|c| c.exec == Some(id)) {
                            let client = clients.remove(i);
                            let exit_code = match (client.timed_out, code, signal) {
                                (true, _, _) => exit_code::TIMEOUT,
                                (false, Some(c), _) => c,
                                (false, None, Some(s)) => 128 + s,
                                (false, None, None) => exit_code::SETUP_FAILED,
                            };
                            reply(
                                &client.conn,
                                &Reply::Exited {
                                    exit_code,
                                    signal,
                                    timed_out: client.timed_out,
                                },
                            );
                        }
                    }
                    Some(InitEvent::Started { id }) => {
                        if let Some(client) = clients.iter().find(|c| c.exec == Some(id)) {
                            let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
                            let _ = msg::send(&client.conn, &encode(&Reply::Started), &raw);
                        }
                    }
                    Some(InitEvent::Failed { id, kind, message }) => {
                        if let Some(i) = clients.iter().position(|c| c.exec == Some(id)) {
                            let client = clients.remove(i);
                            let exit_code = code_of_kind(&kind);
                            reply(&client.conn, &Reply::Error { exit_code, message });
                        }
                    }
                    Some(InitEvent::FileDone { id, size, entries }) => {
                        if let Some(i) = clients.iter().position(|c| c.exec == Some(id)) {
                            let client = clients.remove(i);
                            reply(&client.conn, &Reply::FileDone { size, entries });
                        }
                    }
                    Some(InitEvent::Ready | InitEvent::VmReady { .. }) | None => {}
                },
            }
        }
        // Client messages. (New connections are accepted after this loop, so a descriptor number
        // seen ready always belongs to the client that was polled.)
        let mut gone = Vec::new();
        for (i, client) in clients.iter_mut().enumerate() {
            if !ready_clients.contains(&client.conn.as_raw_fd()) {
                continue;
            }
            let (n, stdio) = msg::recv(&client.conn, &mut buf).unwrap_or_default();
            if n == 0 {
                // The client went away: its command goes too.
                if let Some(exec) = client.exec {
                    signal_exec(init, exec, signal::SIGKILL);
                }
                gone.push(i);
                continue;
            }
            match decode::<Request>(&buf[..n]) {
                Some(Request::Exec(mut request)) if client.exec.is_none() => {
                    if let Some(w) = wasm {
                        wasm::rewrite(w, &mut request);
                    }
                    next_exec += 1;
                    client.exec = Some(next_exec);
                    client.deadline = request
                        .timeout_ms
                        .map(|ms| Instant::now() + Duration::from_millis(ms));
                    let raw: Vec<i32> = stdio.iter().map(|f| f.as_raw_fd()).collect();
                    let message = encode(&InitRequest::Exec {
                        id: next_exec,
                        request,
                    });
                    if msg::send(init, &message, &raw).is_err() {
                        return None;
                    }
                }
                Some(Request::File(operation))
                    if client.exec.is_none() && matches!(held, Held::Vm(_)) =>
                {
                    next_exec += 1;
                    client.exec = Some(next_exec);
                    let raw: Vec<i32> = stdio.iter().map(|f| f.as_raw_fd()).collect();
                    let message = encode(&InitRequest::File {
                        id: next_exec,
                        operation,
                    });
                    if msg::send(init, &message, &raw).is_err() {
                        return None;
                    }
                }
                Some(Request::File(_)) => reply(
                    &client.conn,
                    &Reply::Error {
                        exit_code: exit_code::INVALID_INPUT,
                        message: "file requests go to a microVM's supervisor only, one per \
                                  connection"
                            .into(),
                    },
                ),
                Some(Request::Exec(_)) => reply(
                    &client.conn,
                    &Reply::Error {
                        exit_code: exit_code::INVALID_INPUT,
                        message: "one command per connection".into(),
                    },
                ),
                Some(Request::Signal { signo }) => {
                    if let Some(exec) = client.exec {
                        signal_exec(init, exec, signo);
                    }
                }
                Some(Request::Stop) => {
                    let conn = clients.swap_remove(i).conn;
                    return Some(conn);
                }
                None => reply(
                    &client.conn,
                    &Reply::Error {
                        exit_code: exit_code::INVALID_INPUT,
                        message: "malformed request".into(),
                    },
                ),
            }
        }
        for i in gone.into_iter().rev() {
            clients.remove(i);
        }
        if ready[0] {
            if let Ok(conn) = msg::accept(listener) {
                clients.push(Client {
                    conn,
                    exec: None,
                    deadline: None,
                    timed_out: false,
                });
            }
        }
    }
}

/// Asks the init to deliver `signo` to the command of exec `id` (SIGKILL takes its process group).
fn signal_exec(init: &OwnedFd, id: u64, signo: i32) {
    let _ = msg::send(init, &encode(&InitRequest::Kill { id, signo }), &[]);
}
