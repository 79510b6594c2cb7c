//! The dispatch to each engine crate, and the translation of their errors into agentbox's.

use std::os::fd::OwnedFd;

use agentbox_oci::{Availability, EngineError, Outcome, Sandbox};
use agentbox_policy::{NetMode, Policy, Tier};

use crate::launch::{Failure, FailureKind};
use crate::RunError;

/// Policy checks shared by every engine, then the engine's own.
pub fn check(policy: &Policy) -> Result<(), EngineError> {
    let engine = policy.tier.name();
    if policy.network.mode != NetMode::None {
        return Err(EngineError::Unenforceable {
            engine,
            field: "network.mode",
            reason: "the engine tiers run with network none only in this version; use --tier ns for allow and open".into(),
        });
    }
    match policy.tier {
        Tier::Oci | Tier::Gvisor => agentbox_oci::check(policy),
        Tier::Nspawn => agentbox_nspawn::check(policy),
        Tier::Docker => {
            agentbox_docker::check(policy)?;
            docker_remaps_users()
        }
        Tier::Ns | Tier::Chroot | Tier::Wasm | Tier::Microvm => Ok(()),
    }
}

/// A policy's uids are unprivileged on the host (uid 0 included); a Docker daemon keeps that
/// promise only with userns-remap, so without it the docker tier refuses `user`.
fn docker_remaps_users() -> Result<(), EngineError> {
    let probe = agentbox_docker::probe();
    if !probe.available {
        return Err(EngineError::Unavailable {
            engine: "docker",
            reason: probe.reason.unwrap_or_else(|| "no daemon".into()),
        });
    }
    if probe.notes.iter().any(|n| n.starts_with("userns-remap:")) {
        return Ok(());
    }
    Err(EngineError::Unenforceable {
        engine: "docker",
        field: "user",
        reason: "the Docker daemon runs without userns-remap, so uid 0 in a container is the host's root; start dockerd with --userns-remap".into(),
    })
}

/// Runs the sandbox's command to completion.
pub fn run(tier: Tier, sandbox: &Sandbox) -> Result<Outcome, EngineError> {
    agentbox_oci::marks::set_hook(crate::timing::mark);
    match tier {
        Tier::Oci => {
            let runtime = oci_runtime(sandbox)?;
            agentbox_oci::prepare_mount_namespace(&runtime)?;
            crate::timing::mark("engine: runtime ready");
            agentbox_oci::run(sandbox, &runtime)
        }
        Tier::Gvisor => agentbox_oci::run(sandbox, &gvisor_runtime()?),
        Tier::Nspawn => {
            let root = private_nspawn_run_dir(sandbox)?;
            agentbox_nspawn::run(&Sandbox {
                rootfs: root,
                ..sandbox.clone()
            })
        }
        Tier::Docker => agentbox_docker::run(sandbox),
        Tier::Ns | Tier::Chroot | Tier::Wasm | Tier::Microvm => Err(not_an_engine(tier)),
    }
}

/// systemd-nspawn keeps per-machine files under /run/systemd/nspawn and refuses to remove them
/// from a /run that is not a tmpfs (as on hosts without systemd), and it locks its directory
/// with a `.#NAME.lck` file beside it: a tmpfs there, private to the child's mount namespace,
/// takes both and vanishes with it. Returns where the root is bound inside it.
fn private_nspawn_run_dir(sandbox: &Sandbox) -> Result<std::path::PathBuf, EngineError> {
    let dir = std::path::Path::new("/run/systemd/nspawn");
    std::fs::create_dir_all(dir).map_err(|source| EngineError::Io {
        path: dir.into(),
        source,
    })?;
    agentbox_sys::mount::mount(
        std::path::Path::new("tmpfs"),
        dir,
        "tmpfs",
        agentbox_sys::mount::MS_NOSUID | agentbox_sys::mount::MS_NODEV,
        "mode=0755,size=4m",
    )
    .map_err(|e| EngineError::Setup {
        step: "tmpfs on /run/systemd/nspawn".into(),
        message: e.to_string(),
    })?;
    let root = dir.join("root");
    std::fs::create_dir(&root).map_err(|source| EngineError::Io {
        path: root.clone(),
        source,
    })?;
    agentbox_sys::mount::bind(&sandbox.rootfs, &root, true).map_err(|e| EngineError::Setup {
        step: "bind the root for nspawn".into(),
        message: e.to_string(),
    })?;
    Ok(root)
}

/// Holds a persistent sandbox and serves the supervisor's requests until the channel closes.
pub fn serve(policy: &Policy, sandbox: &Sandbox, channel: OwnedFd) -> Result<Outcome, EngineError> {
    super::serve::serve(policy, sandbox, channel)
}

fn not_an_engine(tier: Tier) -> EngineError {
    EngineError::Setup {
        step: tier.name().into(),
        message: "not an engine tier".into(),
    }
}

pub(crate) fn oci_runtime(sandbox: &Sandbox) -> Result<agentbox_oci::Runtime, EngineError> {
    agentbox_oci::pick_oci(sandbox.oci_runtime)
}

pub(crate) fn gvisor_runtime() -> Result<agentbox_oci::Runtime, EngineError> {
    Ok(agentbox_oci::Runtime::Runsc {
        platform: agentbox_oci::gvisor_platform_probe()?,
    })
}

/// Whether the tier's engine can run here (never hangs).
pub fn availability(tier: Tier) -> Option<Availability> {
    match tier {
        Tier::Oci => {
            let crun = agentbox_oci::probe(&agentbox_oci::Runtime::Crun);
            let runc = agentbox_oci::probe(&agentbox_oci::Runtime::Runc);
            Some(if crun.available { crun } else { runc })
        }
        Tier::Gvisor => Some(match agentbox_oci::gvisor_platform_probe() {
            Ok(platform) => agentbox_oci::probe(&agentbox_oci::Runtime::Runsc { platform }),
            Err(e) => Availability {
                available: false,
                found: None,
                reason: Some(e.to_string()),
                fix: Some("apt-get install runsc".into()),
                notes: Vec::new(),
            },
        }),
        Tier::Nspawn => Some(agentbox_nspawn::probe()),
        Tier::Docker => Some(agentbox_docker::probe()),
        Tier::Ns | Tier::Chroot | Tier::Wasm | Tier::Microvm => None,
    }
}

/// Removes the container `name` of `tier` with everything its engine keeps for it; a container
/// that does not exist is not an error.
pub fn destroy(tier: Tier, name: &str) -> Result<(), RunError> {
    let result = match tier {
        Tier::Oci => {
            let mut result = Ok(());
            for runtime in [agentbox_oci::Runtime::Crun, agentbox_oci::Runtime::Runc] {
                result = result.and(agentbox_oci::destroy(name, &runtime));
            }
            result
        }
        Tier::Gvisor => agentbox_oci::destroy(
            name,
            &agentbox_oci::Runtime::Runsc {
                platform: String::new(),
            },
        ),
        Tier::Nspawn => Ok(()),
        Tier::Docker => agentbox_docker::destroy(name),
        Tier::Ns | Tier::Chroot | Tier::Wasm | Tier::Microvm => Ok(()),
    };
    let _ = std::fs::remove_dir_all(std::path::Path::new(super::child::ENGINE_DIR).join(name));
    result.map_err(|e| run_error(tier, e))
}

/// An engine's error as agentbox's error (and exit code).
pub fn run_error(tier: Tier, e: EngineError) -> RunError {
    match e {
        EngineError::Unenforceable { field, reason, .. } => RunError::Unenforceable {
            tier: tier.name(),
            field,
            reason,
        },
        EngineError::Unavailable { reason, .. } => RunError::Unenforceable {
            tier: tier.name(),
            field: "tier",
            reason: format!("not available here: {reason} (see agentbox doctor)"),
        },
        EngineError::Command {
            not_found: true,
            message,
        } => RunError::NotFound(message),
        EngineError::Command { message, .. } => RunError::CannotExecute(message),
        other => RunError::setup(tier.name(), other),
    }
}

/// An engine's error as the child's report to the supervisor.
pub fn failure(tier: Tier, e: EngineError) -> Failure {
    let kind = match &e {
        EngineError::Command {
            not_found: true, ..
        } => FailureKind::NotFound,
        EngineError::Command { .. } => FailureKind::CannotExecute,
        _ => FailureKind::Setup,
    };
    let message = match e {
        EngineError::Command { message, .. } => message,
        other => format!("{}: {other}", tier.name()),
    };
    Failure { kind, message }
}

/// Starts a persistent sandbox's container (its first process pauses).
pub fn create(tier: Tier, sandbox: &Sandbox) -> Result<(), EngineError> {
    match tier {
        Tier::Oci => {
            let runtime = oci_runtime(sandbox)?;
            agentbox_oci::prepare_mount_namespace(&runtime)?;
            agentbox_oci::create(sandbox, &runtime)
        }
        Tier::Gvisor => agentbox_oci::create(sandbox, &gvisor_runtime()?),
        Tier::Docker => agentbox_docker::create(sandbox),
        Tier::Nspawn => Err(EngineError::Unenforceable {
            engine: "nspawn",
            field: "tier",
            reason: "systemd-nspawn has no exec into a running container without a systemd host; create persistent sandboxes with --tier oci or ns".into(),
        }),
        Tier::Ns | Tier::Chroot | Tier::Wasm | Tier::Microvm => Err(not_an_engine(tier)),
    }
}

/// Removes a persistent sandbox's container from inside its child (the supervisor does it again
/// by name, in case the child died first).
pub fn destroy_engine(tier: Tier, name: &str) -> Result<(), EngineError> {
    match tier {
        Tier::Oci => agentbox_oci::destroy(name, &agentbox_oci::Runtime::Crun)
            .and(agentbox_oci::destroy(name, &agentbox_oci::Runtime::Runc)),
        Tier::Gvisor => agentbox_oci::destroy(
            name,
            &agentbox_oci::Runtime::Runsc {
                platform: String::new(),
            },
        ),
        Tier::Docker => agentbox_docker::destroy(name),
        _ => Ok(()),
    }
}

/// The engine's exec client for one command in a persistent sandbox.
pub fn exec_command(
    tier: Tier,
    sandbox: &Sandbox,
    exec: &agentbox_oci::ExecProcess,
) -> Result<std::process::Command, EngineError> {
    match tier {
        Tier::Oci => Ok(agentbox_oci::exec_command(
            &sandbox.id,
            &oci_runtime(sandbox)?,
            exec,
        )),
        Tier::Gvisor => Ok(agentbox_oci::exec_command(
            &sandbox.id,
            &gvisor_runtime()?,
            exec,
        )),
        _ => Err(not_an_engine(tier)),
    }
}
