//! The supervisor side of a one-shot run: prepare everything that can be prepared before the fork,
//! fork into the tier's namespaces, map ids and attach cgroups, then wait for the command while
//! forwarding signals and enforcing the wall-clock timeout, and finally clean up every trace
//! (processes, cgroups, uid slot). The calling process must be single-threaded.

use std::io::Read;
use std::time::{Duration, Instant};

use agentbox_policy::{Policy, Tier};
use agentbox_sys::process::{self, ns, Exit, Fork};
use agentbox_sys::{fd, signal};

use crate::cgroup::{self, Cgroup, CgroupLimits};
use crate::launch::{self, ChildSpec, ExecSpec, Failure, FailureKind};
use crate::plan::{self, Flavour};
use crate::record::ExitRecord;
use crate::uidmap::{self, Slot};
use crate::{host, seccomp, RunError};

/// Signals a user or a caller may send to `agentbox run`, passed on to the command.
const FORWARDED: &[i32] = &[
    signal::SIGINT,
    signal::SIGTERM,
    signal::SIGHUP,
    signal::SIGQUIT,
    signal::SIGUSR1,
    signal::SIGUSR2,
];

/// Runs `argv` under `policy` to completion.
pub fn run(policy: &Policy, argv: &[String]) -> Result<ExitRecord, RunError> {
    if argv.is_empty() {
        return Err(RunError::invalid("command", "", "no command given"));
    }
    let started = Instant::now();
    let (flavour, flags) = match policy.tier {
        Tier::Ns => (
            Flavour::Namespaces,
            ns::USER | ns::MOUNT | ns::PID | ns::NET | ns::IPC | ns::UTS,
        ),
        Tier::Chroot => (Flavour::Chroot, ns::MOUNT),
    };
    let exec = ExecSpec::new(argv, &policy.env)?;
    let layout = host::layout(&policy.image);
    let opened = host::open_sources(policy)?;
    let mount_plan = plan::plan(policy, &layout, &opened.is_dir, flavour);
    let program = match policy.tier {
        Tier::Ns => {
            seccomp::default_program().map_err(|e| RunError::setup("seccomp program", e))?
        }
        Tier::Chroot => Vec::new(),
    };
    std::fs::create_dir_all(crate::build::STAGE)
        .map_err(|e| RunError::setup(format!("mkdir {}", crate::build::STAGE), e))?;
    let slot = Slot::acquire()?;
    let hierarchy = cgroup::detect_host().map_err(|e| RunError::setup("cgroups", e))?;
    let limits = CgroupLimits {
        memory: policy.limits.memory,
        pids: policy.limits.pids,
        cpu_millis: policy.limits.cpus.map(|c| c.0),
    };
    let name = format!(
        "agentbox-{}-{}",
        std::process::id(),
        started.elapsed().as_nanos()
    );
    let cgroup =
        Cgroup::create(&hierarchy, &name, &limits).map_err(|e| RunError::setup("cgroup", e))?;
    let (go_read, go_write) = fd::pipe().map_err(|e| RunError::setup("pipe", e))?;
    let (report_read, report_write) = fd::pipe().map_err(|e| RunError::setup("pipe", e))?;
    let mask = signal::block_all().map_err(|e| RunError::setup("block signals", e))?;
    let host_uid = slot.base + policy.user;
    let child = match process::fork_with_namespaces(flags) {
        Err(e) => {
            let _ = signal::restore(mask);
            return Err(RunError::setup("clone", e));
        }
        Ok(Fork::Child) => {
            drop(go_write);
            drop(report_read);
            let spec = ChildSpec {
                policy,
                plan: &mount_plan,
                opened: opened.fds,
                seccomp: &program,
                exec: &exec,
                mask,
                go: go_read,
                report: report_write,
                host_uid,
            };
            match policy.tier {
                Tier::Ns => launch::ns_child(spec),
                Tier::Chroot => launch::chroot_child(spec),
            }
        }
        Ok(Fork::Parent(pid)) => pid,
    };
    drop(go_read);
    drop(report_write);
    drop(opened.fds);
    let result = start_and_wait(policy, child, slot.base, &cgroup, go_write, started);
    // Whatever happened: no process of the sandbox survives, its cgroup goes, its uid slot frees.
    let _ = process::kill(child, signal::SIGKILL);
    let _ = process::wait(child, false);
    let _ = cgroup.kill_all(&mut |pid| {
        let _ = process::kill(pid, signal::SIGKILL);
    });
    let events = cgroup.events();
    let removed = cgroup.remove();
    drop(slot);
    let _ = signal::restore(mask);
    let (exit, timed_out) = result?;
    let mut report = String::new();
    let _ = std::fs::File::from(report_read).read_to_string(&mut report);
    let mut exit = exit;
    for line in report.lines() {
        match Failure::decode(line) {
            Some(Failure {
                kind: FailureKind::Signal,
                message,
            }) => {
                if let Ok(signo) = message.parse() {
                    exit = Exit::Signal(signo);
                }
            }
            Some(failure) if !timed_out => return Err(failure_to_error(failure)),
            _ => {}
        }
    }
    removed.map_err(|e| RunError::setup("remove cgroup", e))?;
    Ok(ExitRecord::new(
        policy.tier.name(),
        exit,
        timed_out,
        started.elapsed(),
        events,
    ))
}

fn failure_to_error(f: Failure) -> RunError {
    match f.kind {
        FailureKind::Invalid => RunError::InvalidInput {
            field: "sandbox".into(),
            value: String::new(),
            reason: f.message,
        },
        FailureKind::NotFound => RunError::NotFound(f.message),
        FailureKind::CannotExecute => RunError::CannotExecute(f.message),
        FailureKind::Unenforceable => RunError::Unenforceable {
            tier: "ns",
            field: "landlock",
            reason: f.message,
        },
        FailureKind::Setup | FailureKind::Signal => RunError::Setup {
            step: "child".into(),
            reason: f.message,
        },
    }
}

/// Maps ids, attaches the cgroup, releases the child, then waits for it: forwards signals and
/// kills the whole sandbox at the timeout. Returns how the child ended and whether it timed out.
fn start_and_wait(
    policy: &Policy,
    child: i32,
    uid_base: u32,
    cgroup: &Cgroup,
    go: std::os::fd::OwnedFd,
    started: Instant,
) -> Result<(Exit, bool), RunError> {
    if policy.tier == Tier::Ns {
        uidmap::write_maps(child, uid_base)?;
    }
    cgroup
        .attach(child)
        .map_err(|e| RunError::setup("cgroup attach", e))?;
    std::fs::File::from(go)
        .write_all_byte()
        .map_err(|e| RunError::setup("release child", e))?;
    let deadline = policy.limits.timeout.map(|t| started + t);
    let on_terminal = fd::is_terminal(0);
    let mut timed_out = false;
    loop {
        let remaining = match deadline {
            Some(d) if !timed_out => Some(d.saturating_duration_since(Instant::now())),
            _ => None,
        };
        if remaining == Some(Duration::ZERO) {
            timed_out = true;
            let _ = process::kill(child, signal::SIGKILL);
            let _ = cgroup.kill_all(&mut |pid| {
                let _ = process::kill(pid, signal::SIGKILL);
            });
            continue;
        }
        let received =
            signal::wait(remaining).map_err(|e| RunError::setup("wait for signals", e))?;
        match received {
            None => {}
            Some(r) if r.signo == signal::SIGCHLD || r.signo == 0 => {
                if let Some((_, exit)) =
                    process::wait(child, true).map_err(|e| RunError::setup("waitpid", e))?
                {
                    return Ok((exit, timed_out));
                }
            }
            // A terminal already sent keyboard signals to the whole foreground group, sandbox
            // included; forwarding them again would deliver them twice.
            Some(r) if FORWARDED.contains(&r.signo) && !(on_terminal && r.pid == 0) => {
                let _ = process::kill(child, r.signo);
            }
            Some(_) => {}
        }
    }
}

trait WriteByte {
    fn write_all_byte(self) -> std::io::Result<()>;
}

impl WriteByte for std::fs::File {
    fn write_all_byte(mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.write_all(b"g")
    }
}
