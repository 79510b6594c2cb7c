//! The child side of a run: what happens between the fork and the command's execve. Runs only in
//! the freshly forked, single-threaded child; every failure is written to the report pipe as one
//! `Failure` line for the supervisor, and the child exits.
//!
//! ns tier: the child is pid 1 of the new pid namespace (the sandbox init). It builds the root,
//! pivots into it, forks the command, then drops every capability and only reaps zombies and
//! forwards signals until the command exits. chroot tier: the child builds the root, chroots,
//! drops privileges and execs the command itself.

use std::convert::Infallible;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use agentbox_policy::Policy;
use agentbox_sys::landlock::Enforcement;
use agentbox_sys::process::{self, ns, Exit, Fork};
use agentbox_sys::seccomp::SockFilter;
use agentbox_sys::signal::{self, SavedMask};
use agentbox_sys::{caps, creds, fd, landlock, mount, net, rlimit, SysError};

use crate::build::build_root;
use crate::plan::MountPlan;
use crate::supervise::{ATTACHED, MAPPED};

/// Why the child could not run the command. Crosses the report pipe as `kind\tmessage\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Invalid,
    Setup,
    NotFound,
    CannotExecute,
    Unenforceable,
    /// Not a failure: the sandbox init reports that the command died of this signal.
    Signal,
    /// Not a failure: an engine child reports that it removed its container and everything its
    /// engine kept for it, and checked that nothing is left (`engine::child`), so the supervisor
    /// need not do it again. Without this line the supervisor does.
    EngineCleaned,
}

impl FailureKind {
    fn tag(self) -> &'static str {
        match self {
            FailureKind::Invalid => "invalid",
            FailureKind::Setup => "setup",
            FailureKind::NotFound => "not-found",
            FailureKind::CannotExecute => "cannot-execute",
            FailureKind::Unenforceable => "unenforceable",
            FailureKind::Signal => "signal",
            FailureKind::EngineCleaned => "engine-cleaned",
        }
    }
}

impl Failure {
    pub fn setup(step: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Failure {
            kind: FailureKind::Setup,
            message: format!("{}: {err}", step.into()),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Invalid,
            message: message.into(),
        }
    }
    fn sys(step: &str, e: SysError) -> Self {
        Failure::setup(step, e)
    }

    pub fn encode(&self) -> String {
        format!("{}\t{}\n", self.kind.tag(), self.message.replace('\n', " "))
    }

    pub fn decode(line: &str) -> Option<Failure> {
        let (tag, message) = line.split_once('\t')?;
        let kind = [
            FailureKind::Invalid,
            FailureKind::Setup,
            FailureKind::NotFound,
            FailureKind::CannotExecute,
            FailureKind::Unenforceable,
            FailureKind::Signal,
            FailureKind::EngineCleaned,
        ]
        .into_iter()
        .find(|k| k.tag() == tag)?;
        Some(Failure {
            kind,
            message: message.trim_end().to_string(),
        })
    }
}

/// Everything the child needs, prepared by the supervisor before the fork (nothing is computed
/// between fork and exec that could have been computed before).
pub struct ChildSpec<'a> {
    pub policy: &'a Policy,
    pub plan: &'a MountPlan,
    pub opened: Vec<OwnedFd>,
    pub seccomp: &'a [SockFilter],
    pub purpose: ChildPurpose<'a>,
    pub mask: SavedMask,
    pub go: OwnedFd,
    pub report: OwnedFd,
    /// chroot tier only: the host uid the command runs as.
    pub host_uid: u32,
    /// Network modes other than `none`: where the child announces its network namespace.
    pub net: Option<OwnedFd>,
}

/// What the sandbox's first process does once the sandbox is built.
pub enum ChildPurpose<'a> {
    /// Run this command; the sandbox ends with it (`agentbox run`).
    Command(&'a ExecSpec),
    /// Stay up and run commands on request over this channel (persistent sandboxes; ns tier).
    Serve(OwnedFd),
}

/// The command, resolved to C strings before the fork.
pub struct ExecSpec {
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub search_path: Vec<PathBuf>,
}

impl ExecSpec {
    pub fn new(argv: &[String], env: &[(String, String)]) -> Result<ExecSpec, crate::RunError> {
        let argv = argv
            .iter()
            .map(|a| {
                CString::new(a.as_bytes())
                    .map_err(|_| crate::RunError::invalid("command", a, "contains NUL"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let envp = env
            .iter()
            .map(|(k, v)| {
                CString::new(format!("{k}={v}"))
                    .map_err(|_| crate::RunError::invalid("env", k, "contains NUL"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(agentbox_policy::DEFAULT_PATH);
        let search_path = path
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(ExecSpec {
            argv,
            envp,
            search_path,
        })
    }
}

pub(crate) fn report_and_exit(report: &OwnedFd, failure: &Failure) -> ! {
    let mut f = std::fs::File::from(
        report
            .try_clone()
            .unwrap_or_else(|_| process::exit_now(125)),
    );
    let _ = f.write_all(failure.encode().as_bytes());
    process::exit_now(125)
}

/// Blocks until the supervisor sends `expected` on the go pipe (see `supervise`). Exits quietly if
/// the supervisor died or gave up instead.
pub(crate) fn wait_for(go: &OwnedFd, expected: u8) {
    let mut byte = [0u8; 1];
    let mut f = match go.try_clone() {
        Ok(fd) => std::fs::File::from(fd),
        Err(_) => process::exit_now(125),
    };
    if !matches!(f.read(&mut byte), Ok(1)) || byte[0] != expected {
        process::exit_now(125);
    }
}

/// Closes every descriptor the child does not own (the supervisor's ends of pipes and sockets, the
/// caller's stray fds), so that only the supervisor holds them and their EOF means what it says.
pub(crate) fn keep_only_own_fds(spec: &ChildSpec) {
    let mut keep: Vec<i32> = vec![spec.go.as_raw_fd(), spec.report.as_raw_fd()];
    keep.extend(spec.opened.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(spec.net.iter().map(|fd| fd.as_raw_fd()));
    if let ChildPurpose::Serve(channel) = &spec.purpose {
        keep.push(channel.as_raw_fd());
    }
    if fd::close_all_except(&keep).is_err() {
        process::exit_now(125);
    }
}

/// ns tier: runs as pid 1 of the new namespaces. Never returns.
pub fn ns_child(spec: ChildSpec) -> ! {
    keep_only_own_fds(&spec);
    let report = match spec.report.try_clone() {
        Ok(r) => r,
        Err(_) => process::exit_now(125),
    };
    match ns_init(spec) {
        Ok(never) => match never {},
        Err(failure) => report_and_exit(&report, &failure),
    }
}

fn ns_init(spec: ChildSpec) -> Result<Infallible, Failure> {
    // The network namespace is the costliest to create (per-namespace IPv4/IPv6 set-up): a helper
    // starts on it at once, on the other core, while the ids are mapped and the root is built.
    // (Capabilities in the new user namespace exist before its maps do.)
    let network = NetworkHelper::start()?;
    wait_for(&spec.go, MAPPED);
    crate::timing::mark("child: mapped");
    mount::set_umask(0);
    creds::become_user(0, 0).map_err(|e| Failure::sys("become sandbox root", e))?;
    // After the credential change, which clears it. Should the supervisor die before this, the
    // wait for ATTACHED below sees the pipe closed and the child exits.
    process::set_parent_death_signal(signal::SIGKILL).map_err(|e| Failure::sys("pdeathsig", e))?;
    mount::make_private_recursive().map_err(|e| Failure::sys("make mounts private", e))?;
    let root = build_root(&spec.plan.steps, &spec.opened, 0)?;
    network.join()?;
    announce_network(&spec)?;
    crate::timing::mark("child: root built");
    mount::pivot_into(&root).map_err(|e| Failure::sys("pivot_root", e))?;
    drop(spec.opened);
    process::set_hostname("agentbox").map_err(|e| Failure::sys("hostname", e))?;
    wait_for(&spec.go, ATTACHED);
    drop(spec.go);
    // Now in the sandbox's cgroup: make it the root of the cgroup namespace.
    process::unshare(ns::CGROUP).map_err(|e| Failure::sys("cgroup namespace", e))?;
    let exec = match spec.purpose {
        ChildPurpose::Serve(channel) => {
            crate::serve::serve(spec.policy, spec.plan, spec.seccomp, spec.mask, channel)
        }
        ChildPurpose::Command(exec) => exec,
    };
    let command =
        match process::fork_with_namespaces(0).map_err(|e| Failure::sys("fork command", e))? {
            Fork::Child => {
                let failure = match exec_command(
                    spec.policy,
                    spec.plan,
                    spec.seccomp,
                    exec,
                    spec.mask,
                    Confinement::Full,
                ) {
                    Ok(never) => match never {},
                    Err(f) => f,
                };
                report_and_exit(&spec.report, &failure)
            }
            Fork::Parent(pid) => pid,
        };
    // From here on the init holds no privilege at all: it only reaps and forwards signals.
    caps::drop_all().map_err(|e| Failure::sys("init: drop capabilities", e))?;
    process::set_no_new_privs().map_err(|e| Failure::sys("init: no_new_privs", e))?;
    process::set_dumpable(false).map_err(|e| Failure::sys("init: dumpable", e))?;
    let exit = reap_and_forward(command);
    crate::timing::mark("init: command exited");
    if let Exit::Signal(signo) = exit {
        let note = Failure {
            kind: FailureKind::Signal,
            message: signo.to_string(),
        };
        let mut f = std::fs::File::from(spec.report);
        let _ = f.write_all(note.encode().as_bytes());
    }
    // Exiting pid 1 makes the kernel kill every other process of the namespace.
    process::exit_now(exit.shell_code())
}

/// Tells the supervisor the network namespace is ready (passing the proxy's listener for `allow`).
fn announce_network(spec: &ChildSpec) -> Result<(), Failure> {
    match &spec.net {
        Some(channel) => crate::net::announce(channel, spec.policy.network.mode)
            .map_err(|m| Failure::setup("network", m)),
        None => Ok(()),
    }
}

/// The init loop: reap every child, forward every other signal to the command, return when the
/// command has exited.
fn reap_and_forward(command: i32) -> Exit {
    loop {
        let received = match signal::wait(None) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(_) => process::exit_now(125),
        };
        if received.signo == signal::SIGCHLD || received.signo == 0 {
            while let Ok(Some((pid, exit))) = process::wait(-1, true) {
                if pid == command {
                    return exit;
                }
            }
        } else {
            let _ = process::kill(command, received.signo);
        }
    }
}

/// chroot tier: builds the root, chroots, drops to the host uid, execs. Never returns.
pub fn chroot_child(spec: ChildSpec) -> ! {
    keep_only_own_fds(&spec);
    let report = match spec.report.try_clone() {
        Ok(r) => r,
        Err(_) => process::exit_now(125),
    };
    let supervisor = process::getppid();
    let result = (|| -> Result<Infallible, Failure> {
        // `network = none` holds on this tier too: an empty network namespace, made in parallel.
        let network = NetworkHelper::start()?;
        wait_for(&spec.go, MAPPED);
        mount::set_umask(0);
        mount::make_private_recursive().map_err(|e| Failure::sys("make mounts private", e))?;
        let root = build_root(&spec.plan.steps, &spec.opened, spec.host_uid)?;
        network.join()?;
        announce_network(&spec)?;
        mount::chroot(&root).map_err(|e| Failure::sys("chroot", e))?;
        mount::chdir(Path::new("/")).map_err(|e| Failure::sys("chdir /", e))?;
        drop(spec.opened);
        wait_for(&spec.go, ATTACHED);
        drop(spec.go);
        caps::drop_bounding_set().map_err(|e| Failure::sys("drop bounding set", e))?;
        // The chroot tier's limits are rlimits: processes per uid (the uid is this sandbox's alone)
        // and address space per process.
        rlimit::set(rlimit::RLIMIT_NPROC, spec.policy.limits.pids)
            .map_err(|e| Failure::sys("rlimit nproc", e))?;
        rlimit::set(rlimit::RLIMIT_AS, spec.policy.limits.memory)
            .map_err(|e| Failure::sys("rlimit as", e))?;
        creds::become_user(spec.host_uid, spec.host_uid)
            .map_err(|e| Failure::sys("drop to unprivileged uid", e))?;
        // Set after the last credential change, which would clear it; it survives the execve.
        // A supervisor that died before that has left this process to another parent.
        process::set_parent_death_signal(signal::SIGKILL)
            .map_err(|e| Failure::sys("pdeathsig", e))?;
        if process::getppid() != supervisor {
            process::exit_now(125);
        }
        let ChildPurpose::Command(exec) = spec.purpose else {
            return Err(Failure::setup(
                "chroot tier",
                "persistent sandboxes need the ns tier",
            ));
        };
        exec_command(
            spec.policy,
            spec.plan,
            spec.seccomp,
            exec,
            spec.mask,
            Confinement::Chroot,
        )
    })();
    match result {
        Ok(never) => match never {},
        Err(failure) => report_and_exit(&report, &failure),
    }
}

/// The last steps before execve, in the order that keeps each one possible: session, cwd, limits,
/// bounding set (needs CAP_SETPCAP), uid, no_new_privs, capabilities, Landlock, fds, seccomp (last,
/// so it need not allow set-up).
/// How much of the confinement the last steps before execve apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confinement {
    /// ns tier, one-shot: bounding set, uid, no_new_privs, capabilities, Landlock, seccomp.
    Full,
    /// ns tier, persistent: the serving init already emptied the bounding set and took the
    /// policy's uid; no_new_privs, capabilities, Landlock and seccomp are applied here.
    InitDropped,
    /// chroot tier: no_new_privs and capabilities only (uid and rlimits set by the caller).
    Chroot,
}

pub(crate) fn exec_command(
    policy: &Policy,
    plan: &MountPlan,
    seccomp: &[SockFilter],
    exec: &ExecSpec,
    mask: SavedMask,
    confinement: Confinement,
) -> Result<Infallible, Failure> {
    crate::timing::mark("command: forked");
    signal::prepare_exec(mask).map_err(|e| Failure::sys("signal mask", e))?;
    if !fd::is_terminal(0) {
        process::setsid().map_err(|e| Failure::sys("setsid", e))?;
    }
    mount::set_umask(0o022);
    mount::chdir(&policy.cwd)
        .map_err(|e| Failure::invalid(format!("cwd {}: {}", policy.cwd.display(), e.source)))?;
    rlimit::set(rlimit::RLIMIT_NOFILE, policy.limits.nofile)
        .map_err(|e| Failure::sys("rlimit nofile", e))?;
    rlimit::set(rlimit::RLIMIT_CORE, 0).map_err(|e| Failure::sys("rlimit core", e))?;
    if confinement == Confinement::Full {
        caps::drop_bounding_set().map_err(|e| Failure::sys("drop bounding set", e))?;
        if policy.user != 0 {
            creds::become_user(policy.user, policy.user)
                .map_err(|e| Failure::sys("become user", e))?;
        }
    }
    process::set_no_new_privs().map_err(|e| Failure::sys("no_new_privs", e))?;
    caps::clear_sets().map_err(|e| Failure::sys("drop capabilities", e))?;
    crate::timing::mark("command: caps dropped");
    if confinement != Confinement::Chroot {
        match landlock::restrict_self(&plan.landlock).map_err(|e| Failure::sys("landlock", e))? {
            Enforcement::None => {
                return Err(Failure {
                    kind: FailureKind::Unenforceable,
                    message: "landlock: the kernel enforces no Landlock ruleset".into(),
                })
            }
            Enforcement::Full | Enforcement::Partial => {}
        }
    }
    crate::timing::mark("command: confined");
    let program = resolve(exec)?;
    fd::cloexec_from(3).map_err(|e| Failure::sys("close fds", e))?;
    if !seccomp.is_empty() {
        agentbox_sys::seccomp::install(seccomp).map_err(|e| Failure::sys("seccomp", e))?;
    }
    crate::timing::mark("command: execve");
    let err = agentbox_sys::exec::execve(&program, &exec.argv, &exec.envp);
    let name = program.to_string_lossy().into_owned();
    Err(match err.errno() {
        agentbox_sys::errno::ENOENT => Failure {
            kind: FailureKind::NotFound,
            message: format!("{name}: {}", err.source),
        },
        _ => Failure {
            kind: FailureKind::CannotExecute,
            message: format!("{name}: {}", err.source),
        },
    })
}

/// Finds the command as execvp would, but tells "not found" from "not executable".
fn resolve(exec: &ExecSpec) -> Result<CString, Failure> {
    let name = exec
        .argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let not_found = || Failure {
        kind: FailureKind::NotFound,
        message: name.clone(),
    };
    if name.contains('/') {
        let path = Path::new(&name);
        return match std::fs::metadata(path) {
            Err(_) => Err(not_found()),
            Ok(m) if m.is_dir() || m.permissions().mode() & 0o111 == 0 => Err(Failure {
                kind: FailureKind::CannotExecute,
                message: format!("{name}: permission denied"),
            }),
            Ok(_) => CString::new(name.as_bytes()).map_err(|_| not_found()),
        };
    }
    let mut denied = None;
    for dir in &exec.search_path {
        let candidate = dir.join(&name);
        if let Ok(m) = std::fs::metadata(&candidate) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                use std::os::unix::ffi::OsStrExt;
                return CString::new(candidate.as_os_str().as_bytes()).map_err(|_| not_found());
            }
            denied.get_or_insert(candidate);
        }
    }
    match denied {
        Some(p) => Err(Failure {
            kind: FailureKind::CannotExecute,
            message: format!("{}: permission denied", p.display()),
        }),
        None => Err(not_found()),
    }
}

/// A child of the sandbox init that creates the sandbox's network namespace (loopback up) in
/// parallel with the root's construction, then holds it until the init has joined it.
struct NetworkHelper {
    pid: i32,
    ready: OwnedFd,
    release: OwnedFd,
}

impl NetworkHelper {
    fn start() -> Result<NetworkHelper, Failure> {
        let (ready_read, ready_write) = fd::pipe().map_err(|e| Failure::sys("pipe", e))?;
        let (release_read, release_write) = fd::pipe().map_err(|e| Failure::sys("pipe", e))?;
        match process::fork_with_namespaces(0)
            .map_err(|e| Failure::sys("fork network helper", e))?
        {
            Fork::Child => {
                drop(ready_read);
                drop(release_write);
                let made = process::unshare(ns::NET).and_then(|()| net::loopback_up());
                if made.is_ok() {
                    let _ = std::fs::File::from(ready_write).write_all(b"n");
                    let _ = std::fs::File::from(release_read).read(&mut [0u8; 1]);
                }
                process::exit_now(i32::from(made.is_err()))
            }
            Fork::Parent(pid) => Ok(NetworkHelper {
                pid,
                ready: ready_read,
                release: release_write,
            }),
        }
    }

    /// Waits until the namespace is ready, moves into it, and lets the helper go.
    fn join(self) -> Result<(), Failure> {
        let ready = std::fs::File::from(self.ready).read(&mut [0u8; 1]);
        let joined = match ready {
            Ok(1) => process::join_namespaces_of(self.pid, ns::NET)
                .map_err(|e| Failure::sys("join network namespace", e)),
            _ => Err(Failure::setup(
                "network namespace",
                "the helper could not create it",
            )),
        };
        drop(self.release);
        let _ = process::wait(self.pid, false);
        joined
    }
}
