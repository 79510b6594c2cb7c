//! The microvm tier: the command runs on a kernel of its own. QEMU (`-M microvm`, jailed: an
//! unprivileged uid in its own namespaces, QEMU's own seccomp sandbox) boots agentbox's guest
//! kernel (`scripts/build-guest-kernel.sh`) with agentbox's guest agent as PID 1; the image
//! becomes a read-only base disk (built once per image) under a per-VM overlay, and the command
//! runs through the agent over virtio-serial (`agentbox-microvm`, `agentbox-protocol`).
//!
//! KVM is used when a probe really boots a guest with it (once per boot, cached); otherwise TCG,
//! which works everywhere and is slower: `doctor` and `run --verbose` say which.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentbox_microvm::{Accel, Jail, Vm, VmError, VmSpec};
use agentbox_policy::{Image, NetMode, Policy};
use agentbox_protocol::client::ClientError;
use agentbox_protocol::ErrorCode;
use agentbox_sys::process::Exit;

mod attached;
pub(crate) mod host;
pub mod layered;
pub mod pool;

use crate::persistent::protocol::ExecRequest;
use crate::record::ExitRecord;
use crate::uidmap::Slot;
use crate::RunError;

/// The guest kernel: `$AGENTBOX_KERNEL`, else what `scripts/build-guest-kernel.sh` cached.
pub fn kernel() -> PathBuf {
    std::env::var_os("AGENTBOX_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(agentbox_microvm::DEFAULT_KERNEL))
}

/// The guest agent binary: `$AGENTBOX_GUEST_AGENT`, else `agentbox-guest` beside this binary,
/// else the release build of a source checkout (`target/<triple>/release`, beside `debug`).
pub fn agent() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AGENTBOX_GUEST_AGENT") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let candidates = [
        dir.join("agentbox-guest"),
        dir.parent()?.join("release").join("agentbox-guest"),
        dir.parent()?
            .parent()?
            .join("release")
            .join("agentbox-guest"),
    ];
    candidates.into_iter().find(|p| p.is_file())
}

const INITRAMFS_CACHE: &str = "/var/cache/agentbox/initramfs";
const DISK_CACHE: &str = "/var/cache/agentbox/disks";
const ACCEL_VERDICT: &str = "/run/agentbox/microvm-accel";
const MIB: u64 = 1 << 20;

fn refuse(field: &'static str, reason: &str) -> Result<(), RunError> {
    Err(RunError::Unenforceable {
        tier: "microvm",
        field,
        reason: reason.into(),
    })
}

/// The policy fields a microVM cannot be given (fields marked optional are ignored instead).
pub fn check(policy: &Policy) -> Result<(), RunError> {
    if policy.image == Image::Host {
        return refuse(
            "image",
            "the host's system cannot be shared into a guest: give an image (agentbox image build / import)",
        );
    }
    if !policy.mounts.is_empty() {
        return refuse(
            "mounts",
            "the guest has no shared file system in this version: copy files in with create/cp",
        );
    }
    if policy.network.mode != NetMode::None {
        return refuse(
            "network.mode",
            "the guest has no network device in this version",
        );
    }
    // Layered, the ns tier inside the guest enforces processes and descriptors.
    let refused: &[(&str, &str)] = if policy.layered {
        &[("limits.fuel", "fuel is the wasm tier's CPU budget")]
    } else {
        &[
            (
                "limits.pids",
                "the guest agent does not cap processes (microvm+ns does: the ns tier in the guest)",
            ),
            (
                "limits.nofile",
                "the guest agent does not set rlimits (microvm+ns does: the ns tier in the guest)",
            ),
            ("limits.fuel", "fuel is the wasm tier's CPU budget"),
        ]
    };
    for &(field, reason) in refused {
        if policy.insists_on(field) {
            return refuse(field, reason);
        }
    }
    if let Some(cpus) = policy.limits.cpus {
        if cpus.0 % 1000 != 0 && policy.insists_on("limits.cpus") {
            return refuse(
                "limits.cpus",
                "a VM gets whole vCPUs: give a whole number of CPUs",
            );
        }
    }
    Ok(())
}

/// Why the tier cannot run here, or None.
pub fn unavailable() -> Option<String> {
    let kernel = kernel();
    if !kernel.is_file() {
        return Some(format!(
            "no guest kernel at {} (build it: scripts/build-guest-kernel.sh)",
            kernel.display()
        ));
    }
    if agent().is_none() {
        return Some(
            "no guest agent (cargo build -p agentbox-guest --release, or set AGENTBOX_GUEST_AGENT)"
                .into(),
        );
    }
    if agentbox_microvm::disk::find_tool("qemu-system-x86_64").is_none() {
        return Some("qemu-system-x86_64 not found (apt-get install qemu-system-x86)".into());
    }
    None
}

/// The accelerator runs will use (probed once per boot; TCG when KVM does not really boot).
pub fn accel() -> Result<(Accel, String), RunError> {
    let kernel = kernel();
    let agent = agent().ok_or_else(|| unavailable_error(unavailable()))?;
    let initramfs =
        agentbox_microvm::initramfs::cached_initramfs(&agent, Path::new(INITRAMFS_CACHE))
            .map_err(|e| RunError::setup("initramfs", e))?;
    let accel =
        agentbox_microvm::accel::probe_kvm_cached(&kernel, &initramfs, Path::new(ACCEL_VERDICT));
    let verdict = std::fs::read_to_string(ACCEL_VERDICT).unwrap_or_default();
    Ok((accel, verdict.trim().to_string()))
}

fn unavailable_error(why: Option<String>) -> RunError {
    RunError::Unenforceable {
        tier: "microvm",
        field: "tier",
        reason: format!(
            "not available here: {} (see agentbox doctor)",
            why.unwrap_or_else(|| "unknown".into())
        ),
    }
}

/// A VM booted for a policy, with the uid slot that names it and its jail (freed on drop, after
/// the VM).
pub struct Booted {
    pub vm: Vm,
    pub slot: Slot,
}

/// Checks `policy` against the tier, then boots a VM for it: the image's base disk under a
/// fresh overlay, the policy's memory and vCPUs, QEMU jailed as the slot's uid.
pub fn boot(policy: &Policy) -> Result<Booted, RunError> {
    crate::tier::check_enforceable(policy)?;
    if let Some(why) = unavailable() {
        return Err(unavailable_error(Some(why)));
    }
    let Image::Dir(image) = &policy.image else {
        return Err(RunError::invalid(
            "image",
            "host",
            "the microvm tier needs an image",
        ));
    };
    let kernel = kernel();
    let agent = agent().ok_or_else(|| unavailable_error(unavailable()))?;
    let initramfs =
        agentbox_microvm::initramfs::cached_initramfs(&agent, Path::new(INITRAMFS_CACHE))
            .map_err(|e| RunError::setup("initramfs", e))?;
    let base = agentbox_microvm::disk::base_disk(image, None, Path::new(DISK_CACHE))
        .map_err(|e| RunError::setup("base disk", e))?;
    let (accel, verdict) = accel()?;
    let verbose = crate::verbose();
    if verbose {
        eprintln!(
            "agentbox: microvm: accelerator {} (probe: {verdict}), kernel {}",
            accel.as_str().to_uppercase(),
            kernel.display()
        );
    }
    // The slot names the VM and its jail uid, unique while it runs.
    let slot = Slot::acquire()?;
    let index = slot.index();
    let mut spec = VmSpec::new(&format!("vm-{index}"), &kernel, &initramfs);
    spec.base_disk = Some(base);
    spec.memory_mib = u32::try_from((policy.limits.memory / MIB).max(64)).unwrap_or(u32::MAX);
    spec.vcpus = policy
        .limits
        .cpus
        .map(|c| u32::try_from(c.0.div_ceil(1000).max(1)).unwrap_or(1))
        .unwrap_or(1);
    spec.accel = accel;
    spec.extra_cmdline = format!("agentbox.disk={}", policy.limits.disk);
    spec.jail = Some(Jail::nth(u16::try_from(index % 0xffff).unwrap_or(0)));
    if policy.layered {
        spec.tools_disk = Some(layered::tools_disk()?);
    }
    let vm = Vm::boot(spec).map_err(vm_error)?;
    if verbose {
        eprintln!(
            "agentbox: microvm: guest {} answered {} ms after QEMU started (guest uptime {} ms)",
            vm.kernel_release(),
            vm.boot_to_hello().as_millis(),
            vm.guest_boot_ms()
        );
    }
    Ok(Booted { vm, slot })
}

/// The command's working directory in the guest: the policy's when it sets one, else `/`.
pub(crate) fn guest_cwd(policy: &Policy) -> String {
    if policy.insists_on("cwd") {
        policy.cwd.display().to_string()
    } else {
        "/".into()
    }
}

/// Boots a VM for `policy`, runs `argv` in it with this process's stdio, powers it off.
pub fn run(policy: &Policy, argv: &[String]) -> Result<ExitRecord, RunError> {
    // Signals wait until the command runs (then they are forwarded to it): a ^C during the boot
    // must not kill this process between spawning QEMU and cleaning up after it.
    let mask =
        agentbox_sys::signal::block_all().map_err(|e| RunError::setup("block signals", e))?;
    let result = run_blocked(policy, argv);
    let _ = agentbox_sys::signal::restore(mask);
    result
}

fn run_blocked(policy: &Policy, argv: &[String]) -> Result<ExitRecord, RunError> {
    let started = Instant::now();
    let Booted { mut vm, slot } = boot(policy)?;
    // The wall-clock limit, from the host: the guest enforces it per command, and a guest that
    // stops answering is killed at the limit plus a grace.
    let timeout = policy.limits.timeout;
    let watchdog = timeout.and_then(|t| vm.pid().map(|pid| (pid, t + Duration::from_secs(5))));
    if let Some((pid, after)) = watchdog {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            let _ = agentbox_sys::process::kill(-(pid as i32), agentbox_sys::signal::SIGKILL);
        });
    }
    let request = host::run_request(
        policy,
        &ExecRequest {
            argv: argv.to_vec(),
            stdin: true,
            ..ExecRequest::default()
        },
    );
    let result = attached::run(&mut vm, request);
    let _ = vm.power_off(Duration::from_secs(5));
    drop(vm);
    drop(slot);
    let record = result?;
    let exit = match (record.code, record.signal) {
        (_, Some(s)) => Exit::Signal(s),
        (Some(c), None) => Exit::Code(c),
        (None, None) => Exit::Code(crate::exit_code::SETUP_FAILED),
    };
    Ok(ExitRecord::new(
        policy.tier_label(),
        exit,
        record.timed_out,
        started.elapsed(),
        crate::cgroup::CgroupEvents::default(),
    ))
}

pub(crate) fn vm_error(e: VmError) -> RunError {
    match e {
        VmError::Client(ClientError::Agent { code, message }) => match code {
            ErrorCode::NotFound => RunError::NotFound(message),
            ErrorCode::CannotExecute | ErrorCode::PermissionDenied => {
                RunError::CannotExecute(message)
            }
            ErrorCode::BadRequest => RunError::InvalidInSandbox(message),
            _ => RunError::setup("guest agent", message),
        },
        other => RunError::setup("microvm", one_line(&other.to_string())),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
