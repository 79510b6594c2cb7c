//! The supervisor side of a one-shot run: prepare everything that can be prepared before the fork,
//! fork into the tier's namespaces, map ids and attach cgroups, then wait for the command while
//! forwarding signals and enforcing the wall-clock timeout, and finally clean up every trace
//! (processes, cgroups, uid slot). The calling process must be single-threaded.
//!
//! On cgroup v1 (ns tier) the child is born in the sandbox's cgroup: the supervisor creates the
//! cgroup with its limits, steps into it (`Cgroup::enter`: `0` written to each leaf's `tasks`, no
//! lock), clones the child and steps back out at once. Moving the child in afterwards (its pid
//! written to `cgroup.procs`) would wait for an RCU grace period, 8-16 ms, on the critical path.
//!
//! Hand-shake with the child over the `go` pipe, so that set-up on both sides overlaps:
//! 1. supervisor: clone → write uid/gid maps → send `MAPPED`;
//! 2. child builds the root while the supervisor, unless the child was born inside, creates the
//!    cgroup and attaches the child (cgroup v2);
//! 3. supervisor sends `ATTACHED`; only then may the child fork or exec the command, so every
//!    process of the sandbox starts inside the cgroup.
//!
//! Engine tiers send a `JOIN` message between the two: on cgroup v1 it names the leaves' `tasks`
//! files and the child, once its root is built, writes `0` to each to join the cgroup itself; the
//! supervisor waits until every leaf lists the child before it sends `ATTACHED`. On v2, or without
//! a cgroup, it names no file and the supervisor attaches the child itself.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agentbox_policy::Policy;
use agentbox_sys::process::{self, Exit, Fork};
use agentbox_sys::{fd, msg, signal};

use crate::cgroup::{self, Cgroup, CgroupError, CgroupEvents, CgroupLimits, Entered, Hierarchy};
use crate::launch::{ChildPurpose, ChildSpec, ExecSpec, Failure, FailureKind};
use crate::net::{self, NetContext};
use crate::plan;
use crate::record::ExitRecord;
use crate::uidmap::{self, Slot};
use crate::{host, tier, timing, RunError};

/// First byte on the go pipe: uid/gid maps are written.
pub const MAPPED: u8 = b'm';
/// Second byte: the child is in the sandbox's cgroup.
pub const ATTACHED: u8 = b'a';
/// Engine tiers, between the two: the cgroup files the child joins through (`join_message`).
pub const JOIN: u8 = b'j';
/// How long the supervisor waits for an engine child to join its cgroup (it builds its root
/// first: a few ms).
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The `<n>` of the next cgroup leaf `agentbox-<supervisor pid>-<n>` this process creates.
static NEXT_LEAF: AtomicU32 = AtomicU32::new(1);
/// How many leaf names `create_cgroup` tries past ones that exist already.
const LEAF_NAME_TRIES: u32 = 16;

pub(crate) use signal::FORWARDED;

/// What the sandbox is launched for.
pub(crate) enum Purpose<'a> {
    /// `agentbox run`: this command, then the sandbox ends.
    Command(&'a [String]),
    /// A persistent sandbox: the init serves requests over this channel (`persistent`).
    Serve(OwnedFd),
}

/// A launched sandbox as its supervisor holds it, until `finish`.
pub(crate) struct Launched {
    pub sandbox: Sandbox,
    slot: Slot,
    mask: signal::SavedMask,
    report: OwnedFd,
    pid_namespace: bool,
    pub started: Instant,
}

/// Runs `argv` under `policy` to completion.
pub fn run(policy: &Policy, argv: &[String]) -> Result<ExitRecord, RunError> {
    if argv.is_empty() {
        return Err(RunError::invalid("command", "", "no command given"));
    }
    if policy.tier == agentbox_policy::Tier::Wasm {
        return crate::wasm::run(policy, argv);
    }
    if policy.tier == agentbox_policy::Tier::Microvm {
        return crate::microvm::run(policy, argv);
    }
    let mut launched = launch(policy, Purpose::Command(argv), &NetContext::for_run())?;
    let outcome = launched
        .sandbox
        .wait(policy.limits.timeout.map(|t| launched.started + t));
    launched.finish(policy, outcome)
}

/// Prepares, forks and starts a sandbox for `purpose`. On failure nothing is left behind.
pub(crate) fn launch(
    policy: &Policy,
    purpose: Purpose,
    net_context: &NetContext,
) -> Result<Launched, RunError> {
    let started = Instant::now();
    timing::init();
    // A threaded caller is refused before anything (slot, cgroup) exists.
    process::require_single_thread().map_err(|e| RunError::setup("clone", e))?;
    tier::check_enforceable(policy)?;
    net::precheck(policy)?;
    let mechanisms = tier::mechanisms(policy.tier).ok_or_else(|| RunError::Unenforceable {
        tier: policy.tier.name(),
        field: "tier",
        reason: "a wasm sandbox runs WebAssembly modules, not processes".into(),
    })?;
    let exec = match &purpose {
        Purpose::Command(argv) => Some(ExecSpec::new(argv, &policy.env)?),
        Purpose::Serve(_) if !mechanisms.pid_namespace && !mechanisms.engine => {
            return Err(RunError::Unenforceable {
                tier: policy.tier.name(),
                field: "tier",
                reason: "persistent sandboxes need a tier with a pid namespace (ns)".into(),
            })
        }
        Purpose::Serve(_) => None,
    };
    let mut layout = host::layout(&policy.image);
    layout.resolv_conf = net::resolv_conf(policy);
    let opened = host::open_sources(policy)?;
    let mount_plan = plan::plan(policy, &layout, &opened.is_dir, mechanisms.flavour);
    // Probe the cgroup hierarchy before anything exists, so a host without one fails cleanly.
    let (hierarchy, mountinfo) = if mechanisms.cgroups {
        let (h, mounts) =
            cgroup::detect_host_with_mounts().map_err(|e| RunError::setup("cgroups", e))?;
        (Some(h), mounts)
    } else {
        (None, String::new())
    };
    std::fs::create_dir_all(crate::build::STAGE)
        .map_err(|e| RunError::setup(format!("mkdir {}", crate::build::STAGE), e))?;
    let slot = Slot::acquire()?;
    if matches!(purpose, Purpose::Command(_)) {
        give_stdio_pipes(slot.base + policy.user)?;
    }
    timing::mark("prepared");
    let (go_read, go_write) = fd::pipe().map_err(|e| RunError::setup("pipe", e))?;
    let (report_read, report_write) = fd::pipe().map_err(|e| RunError::setup("pipe", e))?;
    let (net_ours, net_theirs) = if net::needs_channel(policy) {
        let (ours, theirs) = msg::pair().map_err(|e| RunError::setup("socketpair", e))?;
        (Some(ours), Some(theirs))
    } else {
        (None, None)
    };
    if mechanisms.engine {
        // The engine's processes (runc, nspawn...) outlive a killed child: they come back here.
        process::set_child_subreaper().map_err(|e| RunError::setup("subreaper", e))?;
    }
    let mask = signal::block_all().map_err(|e| RunError::setup("block signals", e))?;
    let (cgroup, entered) =
        match cgroup_to_be_born_in(policy, hierarchy.as_ref(), &mountinfo, &mechanisms) {
            Ok(made) => made,
            Err(e) => {
                let _ = signal::restore(mask);
                return Err(e);
            }
        };
    let child = match process::fork_with_namespaces(mechanisms.clone_flags) {
        Err(e) => {
            // Inside, a pids limit of 1 leaves no room for the child (EAGAIN).
            let step = match entered {
                Some(_) => "clone into the sandbox's cgroup",
                None => "clone",
            };
            let left = entered.map_or(Ok(()), Entered::leave);
            let removed = cgroup.map_or(Ok(()), Cgroup::remove);
            let _ = signal::restore(mask);
            left.map_err(|e| RunError::setup("cgroup leave", e))?;
            removed.map_err(|e| RunError::setup("remove cgroup", e))?;
            return Err(RunError::setup(step, e));
        }
        Ok(Fork::Child) => {
            drop(go_write);
            drop(report_read);
            drop(net_ours);
            let purpose = match (purpose, &exec) {
                (Purpose::Serve(channel), _) => ChildPurpose::Serve(channel),
                (Purpose::Command(_), Some(exec)) => ChildPurpose::Command(exec),
                (Purpose::Command(_), None) => process::exit_now(125),
            };
            let spec = ChildSpec {
                policy,
                plan: &mount_plan,
                opened: opened.fds,
                seccomp: mechanisms.seccomp,
                purpose,
                mask,
                go: go_read,
                report: report_write,
                host_uid: slot.base + policy.user,
                net: net_theirs,
            };
            (mechanisms.child)(spec)
        }
        Ok(Fork::Parent(pid)) => pid,
    };
    // Out of the sandbox's cgroup at once: it must not count the supervisor, nor kill it on OOM.
    let born_inside = entered.is_some();
    let left = entered.map_or(Ok(()), |e| {
        e.leave().map_err(|e| RunError::setup("cgroup leave", e))
    });
    // The supervisor keeps no copy of the child's end of a persistent sandbox's channel.
    drop(purpose);
    timing::mark("forked");
    drop(go_read);
    drop(report_write);
    drop(net_theirs);
    let mut launched = Launched {
        sandbox: Sandbox {
            child,
            reaped: false,
            cgroup,
            net: None,
            uid_sweep: (!mechanisms.pid_namespace && !mechanisms.cgroups && !mechanisms.engine)
                .then_some(slot.base + policy.user),
            engine: mechanisms
                .engine
                .then(|| (policy.tier, crate::engine::container_name(slot.base))),
        },
        slot,
        mask,
        report: report_read,
        pid_namespace: mechanisms.pid_namespace,
        started,
    };
    let base = launched.slot.base;
    let network = net_ours.map(|channel| NetStart {
        channel,
        context: net_context,
        slot_index: launched.slot.index(),
        // The last uid of the slot: no sandbox process has it (users stop below 65534).
        proxy_uid: base + uidmap::RANGE - 1,
    });
    let ids = if mechanisms.user_namespace {
        Ids::ChildNamespace(base)
    } else if mechanisms.engine && crate::engine::idmaps_root(policy.tier) {
        Ids::SlotMapping(base)
    } else {
        Ids::Host
    };
    let placement = match &hierarchy {
        _ if born_inside => Placement::BornInside,
        Some(hierarchy) => Placement::MoveIn(hierarchy),
        None => Placement::Outside,
    };
    let result = left.and_then(|()| {
        launched
            .sandbox
            .start(policy, ids, &opened, placement, go_write, network)
    });
    drop(opened);
    match result {
        Ok(()) => {
            timing::mark("released child");
            Ok(launched)
        }
        Err(e) => Err(launched
            .finish(policy, Err(e))
            .err()
            .unwrap_or(RunError::setup("start", "failed"))),
    }
}

/// cgroup v1, tiers other than the engines: creates the sandbox's cgroup, limits in place, and
/// moves the supervisor into it for the fork (`Cgroup::enter`), so that the child is born inside.
/// Where the supervisor cannot find its own cgroups to come back to, only creates it (the child is
/// moved in after the fork, as on v2). On any other failure nothing is left.
fn cgroup_to_be_born_in(
    policy: &Policy,
    hierarchy: Option<&Hierarchy>,
    mountinfo: &str,
    mechanisms: &tier::Mechanisms,
) -> Result<(Option<Cgroup>, Option<Entered>), RunError> {
    let hierarchy = match hierarchy {
        Some(h @ Hierarchy::V1 { .. }) if !mechanisms.engine => h,
        _ => return Ok((None, None)),
    };
    let cgroup = create_cgroup(hierarchy, policy)?;
    timing::mark("cgroup created");
    match cgroup.enter(mountinfo) {
        Ok(entered) => Ok((Some(cgroup), Some(entered))),
        Err(CgroupError::NotLocated { .. }) => Ok((Some(cgroup), None)),
        Err(e) => {
            let _ = cgroup.remove();
            Err(RunError::setup("cgroup enter", e))
        }
    }
}

/// Creates the leaves `agentbox-<supervisor pid>-<n>` (what `gc` parses) with the policy's limits.
/// `n` counts this process's sandboxes; a name a dead process with the same pid left behind is
/// skipped, never reused.
fn create_cgroup(hierarchy: &Hierarchy, policy: &Policy) -> Result<Cgroup, RunError> {
    let limits = CgroupLimits {
        memory: policy.limits.memory,
        pids: policy.limits.pids,
        cpu_millis: policy.limits.cpus.map(|c| c.0),
    };
    let mut tries = 0;
    loop {
        let n = NEXT_LEAF.fetch_add(1, Ordering::Relaxed);
        let name = format!("agentbox-{}-{n}", std::process::id());
        match Cgroup::create(hierarchy, &name, &limits) {
            Err(CgroupError::CreateDir { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists
                    && tries + 1 < LEAF_NAME_TRIES =>
            {
                tries += 1;
            }
            created => return created.map_err(|e| RunError::setup("cgroup", e)),
        }
    }
}

impl Launched {
    /// First host uid of the sandbox's slot.
    pub(crate) fn uid_base(&self) -> u32 {
        self.slot.base
    }

    /// Tears the sandbox down (no process survives, the cgroup goes, the slot frees) and turns
    /// the outcome into the run's record. The child's own failure report wins over a supervisor
    /// error it caused (a refused cwd or mount target makes the supervisor's next step fail).
    pub(crate) fn finish(
        self,
        policy: &Policy,
        outcome: Result<(Exit, bool), RunError>,
    ) -> Result<ExitRecord, RunError> {
        // An engine child that ended by itself has written its whole report (it starts other
        // programs only by exec, which closes the pipe's close-on-exec write end): read it first,
        // for its word that its container is gone. Otherwise, and on the other tiers (nothing to
        // learn early there), the report is read once everything is killed, as it always was.
        let mut report = String::new();
        let mut report_pipe = std::fs::File::from(self.report);
        let ended_by_itself = self.sandbox.engine.is_some()
            && self.sandbox.reaped
            && matches!(outcome, Ok((Exit::Code(_), false)));
        if ended_by_itself {
            let _ = report_pipe.read_to_string(&mut report);
        }
        let engine_cleaned = ended_by_itself && engine_cleaned(&report);
        let (events, removed) = self.sandbox.tear_down(self.pid_namespace, engine_cleaned);
        drop(self.slot);
        let _ = signal::restore(self.mask);
        timing::mark("cleaned up");
        let _ = report_pipe.read_to_string(&mut report);
        let timed_out = matches!(outcome, Ok((_, true)));
        let mut signal = None;
        for failure in report.lines().filter_map(Failure::decode) {
            match failure.kind {
                FailureKind::Signal => signal = failure.message.parse().ok(),
                FailureKind::EngineCleaned => {}
                _ if timed_out => {}
                _ => return Err(failure_to_error(failure)),
            }
        }
        let (mut exit, timed_out) = outcome?;
        if let Some(signo) = signal {
            exit = Exit::Signal(signo);
        }
        removed?;
        Ok(ExitRecord::new(
            policy.tier.name(),
            exit,
            timed_out,
            self.started.elapsed(),
            events,
        ))
    }
}

/// Whether an engine child's report says its container is removed, and nothing went wrong.
fn engine_cleaned(report: &str) -> bool {
    let lines: Vec<Failure> = report.lines().filter_map(Failure::decode).collect();
    lines
        .iter()
        .any(|f| matches!(f.kind, FailureKind::EngineCleaned))
        && lines
            .iter()
            .all(|f| matches!(f.kind, FailureKind::EngineCleaned | FailureKind::Signal))
}

pub(crate) fn failure_to_error(f: Failure) -> RunError {
    match f.kind {
        FailureKind::Invalid => RunError::InvalidInSandbox(f.message),
        FailureKind::NotFound => RunError::NotFound(f.message),
        FailureKind::CannotExecute => RunError::CannotExecute(f.message),
        FailureKind::Unenforceable => RunError::Unenforceable {
            tier: "ns",
            field: "landlock",
            reason: f.message,
        },
        FailureKind::Setup | FailureKind::Signal | FailureKind::EngineCleaned => RunError::Setup {
            step: "child".into(),
            reason: f.message,
        },
    }
}

/// What the supervisor needs to attach the sandbox's network once the child announces it.
pub(crate) struct NetStart<'a> {
    channel: OwnedFd,
    context: &'a NetContext,
    slot_index: u32,
    proxy_uid: u32,
}

/// The running sandbox as the supervisor holds it.
pub(crate) struct Sandbox {
    /// The child: the sandbox init (ns tier) or the command itself (chroot tier).
    pub(crate) child: i32,
    /// Once reaped, the pid may belong to another process: never signal it again.
    reaped: bool,
    cgroup: Option<Cgroup>,
    /// The proxy, or the veth and firewall table, of a sandbox with a network.
    net: Option<net::Attached>,
    /// Without a pid namespace or cgroup (chroot tier), the host uid that only this sandbox's
    /// processes hold: killing "every process of that uid" is killing the sandbox.
    uid_sweep: Option<u32>,
    /// An engine tier's container (tier, name): removed by name at the end, whatever happened to
    /// the child that started it.
    engine: Option<(agentbox_policy::Tier, String)>,
}

/// How the child gets into the sandbox's cgroup.
#[derive(Clone, Copy)]
enum Placement<'a> {
    /// The tier uses no cgroup of agentbox's.
    Outside,
    /// The child was cloned inside `Sandbox::cgroup` (cgroup v1).
    BornInside,
    /// The child is moved into the cgroup, which `start` creates unless it exists already.
    MoveIn(&'a Hierarchy),
}

/// How the sandbox's ids relate to the host's.
enum Ids {
    /// The child is in a user namespace of its own, mapped to the slot starting here.
    ChildNamespace(u32),
    /// An engine maps the payload to the slot starting here; binds and the image are idmapped
    /// through a namespace with the same mapping.
    SlotMapping(u32),
    /// Host ids (chroot; engines without a user namespace).
    Host,
}

impl Sandbox {
    /// The cgroup leaf directories, if the tier uses cgroups.
    pub(crate) fn cgroup_dirs(&self) -> Vec<std::path::PathBuf> {
        self.cgroup
            .as_ref()
            .map(|c| c.dirs().to_vec())
            .unwrap_or_default()
    }

    /// Reaps the child if it has exited; true then.
    /// Whether this is an engine tier's child (it drives a runtime or a daemon).
    pub(crate) fn is_engine(&self) -> bool {
        self.engine.is_some()
    }

    /// Waits up to `timeout` for the child to end by itself, without signalling it; reaps it if it
    /// did. Returns whether it has ended.
    pub(crate) fn await_exit(&mut self, timeout: Duration) -> bool {
        if !self.reaped {
            if let Ok(pidfd) = process::pidfd_open(self.child) {
                let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
                let _ = agentbox_sys::msg::poll_readable(&[pidfd.as_raw_fd()], ms);
            }
        }
        self.init_exited()
    }

    pub(crate) fn init_exited(&mut self) -> bool {
        if !self.reaped && matches!(process::wait(self.child, true), Ok(Some(_))) {
            self.reaped = true;
        }
        self.reaped
    }

    /// Maps ids, releases the child to build its root, creates and attaches the cgroup meanwhile
    /// (unless the child was born inside), then lets the child go on to the command.
    fn start(
        &mut self,
        policy: &Policy,
        ids: Ids,
        opened: &host::Opened,
        placement: Placement,
        go: OwnedFd,
        network: Option<NetStart>,
    ) -> Result<(), RunError> {
        let mut go = std::fs::File::from(go);
        match ids {
            Ids::ChildNamespace(uid_base) => {
                uidmap::write_maps(self.child, uid_base)?;
                let userns: OwnedFd = std::fs::File::open(format!("/proc/{}/ns/user", self.child))
                    .map_err(|e| RunError::setup("open user namespace", e))?
                    .into();
                let writer = uid_base + policy.user;
                opened.restrict(Some((&userns, (writer, writer))))?;
            }
            // The slot's namespace serves only to idmap the policy's own mounts: without any,
            // none is made (a fork and two map writes, ~0.3 ms of every plain engine run).
            Ids::SlotMapping(_) if opened.fds.is_empty() => {}
            Ids::SlotMapping(uid_base) => {
                let userns = uidmap::slot_userns(uid_base)?;
                let writer = uid_base + policy.user;
                opened.restrict(Some((&userns, (writer, writer))))?;
            }
            Ids::Host => opened.restrict(None)?,
        }
        go.write_all(&[MAPPED])
            .map_err(|e| RunError::setup("release child", e))?;
        if let Placement::MoveIn(hierarchy) = placement {
            if self.cgroup.is_none() {
                self.cgroup = Some(create_cgroup(hierarchy, policy)?);
            }
        }
        if self.engine.is_some() {
            self.let_engine_child_join(&mut go)?;
        } else if let (Placement::MoveIn(_), Some(cgroup)) = (placement, &self.cgroup) {
            cgroup
                .attach(self.child)
                .map_err(|e| RunError::setup("cgroup attach", e))?;
        }
        if let Some(start) = network {
            self.net = net::attach(
                policy,
                start.context,
                &start.channel,
                self.child,
                start.slot_index,
                start.proxy_uid,
            )?;
        }
        // The child may have failed and exited already: then the write fails, and the report says why.
        let _ = go.write_all(&[ATTACHED]);
        Ok(())
    }

    /// Engine tiers: sends the child its `JOIN` message. On cgroup v1 the child joins the cgroup
    /// itself and this waits until every leaf lists it (fails closed: a child that exits or does
    /// not join in time fails the run, before `ATTACHED`); on v2 this attaches the child.
    fn let_engine_child_join(&mut self, go: &mut std::fs::File) -> Result<(), RunError> {
        let files = self
            .cgroup
            .as_ref()
            .map(Cgroup::self_join_files)
            .unwrap_or_default();
        go.write_all(&join_message(&files)?)
            .map_err(|e| RunError::setup("send the cgroup to the child", e))?;
        let Some(cgroup) = &self.cgroup else {
            return Ok(());
        };
        let child = self.child;
        if files.is_empty() {
            return cgroup
                .attach(child)
                .map_err(|e| RunError::setup("cgroup attach", e));
        }
        let reaped = &mut self.reaped;
        cgroup
            .wait_until_holds(child, JOIN_TIMEOUT, &mut || {
                *reaped = *reaped || matches!(process::wait(child, true), Ok(Some(_)));
                *reaped
            })
            .map_err(|e| RunError::setup("cgroup join", e))?;
        timing::mark("child joined cgroup");
        Ok(())
    }

    /// Waits for the child, forwarding signals and killing the sandbox at `deadline`. Returns how the
    /// child ended and whether the timeout ended it.
    fn wait(&mut self, deadline: Option<Instant>) -> Result<(Exit, bool), RunError> {
        let on_terminal = fd::is_terminal(0);
        let mut timed_out = false;
        loop {
            let remaining = match deadline {
                Some(d) if !timed_out => Some(d.saturating_duration_since(Instant::now())),
                _ => None,
            };
            if remaining == Some(Duration::ZERO) {
                timed_out = true;
                self.kill_everything();
                continue;
            }
            let received =
                signal::wait(remaining).map_err(|e| RunError::setup("wait for signals", e))?;
            match received {
                None => {}
                Some(r) if r.signo == signal::SIGCHLD || r.signo == 0 => {
                    if let Some((_, exit)) = process::wait(self.child, true)
                        .map_err(|e| RunError::setup("waitpid", e))?
                    {
                        self.reaped = true;
                        timing::mark("child reaped");
                        return Ok((exit, timed_out));
                    }
                }
                // A terminal already sent keyboard signals to the whole foreground group, sandbox
                // included; forwarding them again would deliver them twice.
                Some(r) if FORWARDED.contains(&r.signo) && !(on_terminal && r.pid == 0) => {
                    let _ = process::kill(self.child, r.signo);
                }
                Some(_) => {}
            }
        }
    }

    /// SIGKILL to the child (in the ns tier its death takes the whole pid namespace with it) and to
    /// every process left in the cgroup (the chroot tier has no pid namespace).
    fn kill_everything(&mut self) {
        if !self.reaped {
            let _ = process::kill(self.child, signal::SIGKILL);
        }
        if let Some(uid) = self.uid_sweep {
            kill_every_process_of(uid);
        }
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.kill_all(&mut |pid| {
                let _ = process::kill(pid, signal::SIGKILL);
            });
        }
    }

    /// Kills and reaps whatever is left, reads the cgroup's counters, removes the cgroup. An
    /// engine's container is removed by name too, unless `engine_cleaned`: the engine child
    /// ended by itself and reported it had removed it and checked.
    fn tear_down(
        mut self,
        own_pid_namespace: bool,
        engine_cleaned: bool,
    ) -> (CgroupEvents, Result<(), RunError>) {
        if !self.reaped {
            let _ = process::kill(self.child, signal::SIGKILL);
            let _ = process::wait(self.child, false);
            self.reaped = true;
        }
        // A reaped pid-namespace init means an empty sandbox (the kernel reaps every process of
        // the namespace before its init finishes exiting); otherwise sweep by uid and cgroup.
        if !own_pid_namespace {
            self.kill_everything();
        }
        let engine = self.engine.take().map_or(Ok(()), |(tier, name)| {
            let destroyed = if engine_cleaned {
                Ok(())
            } else {
                crate::engine::destroy(tier, &name)
            };
            // The engine's orphans were reparented here (subreaper): reap them.
            while let Ok(Some(_)) = process::wait(-1, true) {}
            destroyed
        });
        let network = self.net.take().map_or(Ok(()), net::Attached::tear_down);
        let (events, removed) = match self.cgroup.take() {
            None => (CgroupEvents::default(), Ok(())),
            Some(cgroup) => {
                let events = cgroup.events();
                (
                    events,
                    cgroup
                        .remove()
                        .map_err(|e| RunError::setup("remove cgroup", e)),
                )
            }
        };
        (events, removed.and(network).and(engine))
    }
}

/// The `JOIN` message: the byte, the number of files (one byte), then each file's path as a
/// two-byte little-endian length and the bytes. Read by the engine child (`engine::child`).
pub(crate) fn join_message(files: &[PathBuf]) -> Result<Vec<u8>, RunError> {
    let too_many = || RunError::setup("cgroup join", "too many cgroup files or too long a path");
    let mut message = vec![JOIN, u8::try_from(files.len()).map_err(|_| too_many())?];
    for file in files {
        let bytes = file.as_os_str().as_bytes();
        let len = u16::try_from(bytes.len()).map_err(|_| too_many())?;
        message.extend_from_slice(&len.to_le_bytes());
        message.extend_from_slice(bytes);
    }
    Ok(message)
}

/// SIGKILLs every process whose uid is `uid`, from a short-lived child that takes that uid (kill(-1)
/// reaches exactly the processes the sender's uid may signal). Used where the sandbox has no pid
/// namespace and no cgroup but a host uid of its own.
fn kill_every_process_of(uid: u32) {
    match process::fork_with_namespaces(0) {
        Ok(Fork::Child) => {
            let code = match agentbox_sys::creds::become_user(uid, uid) {
                Ok(()) => i32::from(process::kill(-1, signal::SIGKILL).is_err()),
                Err(_) => 1,
            };
            process::exit_now(code)
        }
        Ok(Fork::Parent(pid)) => {
            let _ = process::wait(pid, false);
        }
        Err(_) => {}
    }
}

/// Pipes on stdin, stdout and stderr (a caller capturing output, a shell pipeline) become the
/// command's own, so that reopening them by path (`echo x > /dev/stderr`, `cat /dev/stdin`) works
/// inside the sandbox, where the caller's uid is not mapped. Terminals and /dev/null are usable by
/// anyone already; a regular file keeps its owner (reopen it by fd, not by path).
pub(crate) fn give_stdio_pipes(uid: u32) -> Result<(), RunError> {
    for fd in 0..=2 {
        match agentbox_sys::fd::give_pipe(fd, uid, uid) {
            Ok(_) => {}
            // A closed stdio descriptor is the caller's choice, not an error.
            Err(e) if e.errno() == agentbox_sys::errno::EBADF => {}
            Err(e) => return Err(RunError::setup("stdio", e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::engine_cleaned;
    use crate::launch::{Failure, FailureKind};

    fn line(kind: FailureKind, message: &str) -> String {
        Failure {
            kind,
            message: message.into(),
        }
        .encode()
    }

    #[test]
    fn only_a_clean_up_report_without_failures_skips_the_destroy() {
        let cleaned = line(FailureKind::EngineCleaned, "");
        let signal = line(FailureKind::Signal, "15");
        let failed = line(FailureKind::Setup, "runtime: boom");
        assert!(engine_cleaned(&cleaned));
        assert!(engine_cleaned(&format!("{signal}{cleaned}")));
        assert!(!engine_cleaned(""));
        assert!(!engine_cleaned(&signal));
        assert!(!engine_cleaned(&format!("{cleaned}{failed}")));
        assert!(!engine_cleaned(&format!("{failed}{cleaned}")));
    }
}
