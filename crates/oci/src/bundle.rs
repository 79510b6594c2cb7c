//! A [`Sandbox`] description translated into an OCI runtime spec (`config.json`) with the same
//! confinement as agentbox's `ns` tier. Pure: it reads no file and starts nothing.
//!
//! What every runtime gets: pid, ipc, uts, mount, network (new and empty: no path) and cgroup
//! namespaces; the sandbox's argv, complete env, cwd, uid (= gid), hostname, `terminal: false`;
//! no capability in any set; `noNewPrivileges`; RLIMIT_NOFILE from the limits and RLIMIT_CORE 0;
//! the cgroup limits (memory with memory+swap equal, so no swap; CPU quota per 100 ms period;
//! pids); a minimal /dev (the runtime's default nodes on a tmpfs, /dev/pts, /dev/shm), /proc, a
//! read-only /sys; the masked and read-only /proc paths of the `ns` tier; the sandbox's binds
//! (rbind, nosuid, nodev, ro unless writable) and tmpfs; a writable root (the runtime made it an
//! ephemeral overlay); the seccomp profile of [`crate::seccomp`].
//!
//! runc and crun: a user namespace mapping container ids 0..count onto the sandbox's private
//! host range (`uid_range`, required: refused without one), and a device cgroup that denies every
//! device but the runtime's defaults.
//!
//! runsc (gVisor) differs, because its sentry (a user-space kernel) is the boundary:
//! - No user namespace in the spec: runsc runs the sentry and gofer in user namespaces of its
//!   own as an unprivileged host user with no capabilities; the container's uid 0 is root of the
//!   sentry's emulated kernel only. `uid_range` is not used.
//! - The capability sets, `noNewPrivileges`, rlimits, namespaces, /proc masking and the mounts are
//!   enforced by the sentry, not by the host kernel. gVisor's /proc has no kcore, kallsyms,
//!   sysrq-trigger, ...: the masked paths are still listed, and harmless.
//! - Seccomp is applied by the sentry to the emulated syscalls (runsc `--oci-seccomp`); the host
//!   kernel sees only the sentry's own fixed filter.
//! - No device cgroup rule: the sentry exposes no host device.
//! - Cgroup limits are applied by runsc to the host cgroup of the whole sandbox (sentry, gofer
//!   and the container's processes together): the pids limit gets [`GVISOR_PIDS_OVERHEAD`] more
//!   host tasks for the sandbox itself, so inside the container it holds only approximately;
//!   memory counts the sentry's own memory too.

use std::collections::HashSet;

use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, Process, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use crate::runtimes::Runtime;
use crate::{cgroups, EngineError, ExecProcess, Sandbox};
use agentbox_policy::proc_view;

/// Paths hidden from the command (bound to /dev/null, or an empty tmpfs for a directory, by the
/// runtime): the `ns` tier's (`agentbox_policy::proc_view`), and /sys/firmware, which the `ns`
/// tier does not mount at all.
pub fn masked_paths() -> Vec<String> {
    proc_view::MASKED_FILES
        .iter()
        .chain(proc_view::MASKED_DIRS)
        .chain(&["/sys/firmware"])
        .map(|s| s.to_string())
        .collect()
}

/// Paths made read-only: the `ns` tier's, and /proc/sysrq-trigger (masked as well; read-only
/// where a runtime cannot mask it).
pub fn readonly_paths() -> Vec<String> {
    proc_view::READ_ONLY
        .iter()
        .chain(&["/proc/sysrq-trigger"])
        .map(|s| s.to_string())
        .collect()
}

/// Host tasks of a gVisor sandbox itself (sentry threads, gofer), added to its pids limit.
pub const GVISOR_PIDS_OVERHEAD: u64 = 128;
/// The CPU bandwidth period (100 ms, the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

fn invalid(e: oci_spec::OciSpecError) -> EngineError {
    EngineError::Setup {
        step: "building the OCI spec".into(),
        message: e.to_string(),
    }
}

/// The OCI runtime spec of `sandbox` for `runtime`.
pub fn spec(sandbox: &Sandbox, runtime: &Runtime) -> Result<Spec, EngineError> {
    let gvisor = matches!(runtime, Runtime::Runsc { .. });
    if sandbox.argv.is_empty() {
        return Err(EngineError::Setup {
            step: "building the OCI spec".into(),
            message: "no command given".into(),
        });
    }
    let process = process(
        &ExecProcess {
            argv: sandbox.argv.clone(),
            env: sandbox.env.clone(),
            cwd: sandbox.cwd.clone(),
            uid: sandbox.uid,
        },
        sandbox.limits.nofile,
    )?;
    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Cgroup,
    ];
    let mut linux = LinuxBuilder::default();
    if !gvisor {
        let (host, count) = sandbox
            .uid_range
            .ok_or_else(|| EngineError::Unenforceable {
                engine: "oci",
                field: "uid_range",
                reason: "runc and crun need a private host uid range for the user namespace".into(),
            })?;
        if count == 0 || sandbox.uid >= count {
            return Err(EngineError::Unenforceable {
                engine: "oci",
                field: "user",
                reason: format!("uid {} is outside the mapped range of {count}", sandbox.uid),
            });
        }
        namespaces.push(LinuxNamespaceType::User);
        let mapping = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(host)
            .size(count)
            .build()
            .map_err(invalid)?;
        linux = linux
            .uid_mappings(vec![mapping])
            .gid_mappings(vec![mapping]);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;

    let mut resources = LinuxResourcesBuilder::default();
    if !gvisor {
        // Deny every device; the runtime adds its default nodes (null, zero, full, random,
        // urandom, tty, ptmx, pts) on top.
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(invalid)?;
        resources = resources.devices(vec![deny_all]);
    }
    if let Some(memory) = sandbox.limits.memory {
        let bytes = to_i64(memory, "limits.memory")?;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .swap(bytes)
                .build()
                .map_err(invalid)?,
        );
    }
    if let Some(milli) = sandbox.limits.cpus_milli {
        let quota = i64::from(milli) * 100;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(invalid)?,
        );
    }
    if let Some(pids) = sandbox.limits.pids {
        // runsc puts the whole sandbox (sentry threads, gofer, one ptrace stub per address
        // space) in this cgroup: the container's processes get the limit on top of that.
        let pids = if gvisor {
            pids.saturating_add(GVISOR_PIDS_OVERHEAD)
        } else {
            pids
        };
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(to_i64(pids, "limits.pids")?)
                .build()
                .map_err(invalid)?,
        );
    }
    let mut linux = linux
        .namespaces(namespaces)
        .resources(resources.build().map_err(invalid)?)
        .cgroups_path(cgroups::cgroups_path(&sandbox.id))
        .masked_paths(masked_paths())
        .readonly_paths(readonly_paths())
        .rootfs_propagation("rprivate");
    linux = linux.seccomp(crate::seccomp::linux_seccomp(&sandbox.seccomp)?);

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(&sandbox.rootfs)
                .readonly(false)
                .build()
                .map_err(invalid)?,
        )
        .hostname(sandbox.hostname.clone())
        .process(process)
        .mounts(mounts(sandbox, runtime)?)
        .linux(linux.build().map_err(invalid)?)
        .build()
        .map_err(invalid)
}

/// The process object of a sandbox process: `exec` with `nofile` and the fixed confinement.
pub fn process(exec: &ExecProcess, nofile: Option<u64>) -> Result<Process, EngineError> {
    let none = || Capabilities::from(HashSet::new());
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(none())
        .effective(none())
        .inheritable(none())
        .permitted(none())
        .ambient(none())
        .build()
        .map_err(invalid)?;
    let mut rlimits = vec![PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitCore)
        .soft(0u64)
        .hard(0u64)
        .build()
        .map_err(invalid)?];
    if let Some(n) = nofile {
        rlimits.push(
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(n)
                .hard(n)
                .build()
                .map_err(invalid)?,
        );
    }
    ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(exec.uid)
                .gid(exec.uid)
                .additional_gids(Vec::<u32>::new())
                .build()
                .map_err(invalid)?,
        )
        .args(exec.argv.clone())
        .env(
            exec.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(&exec.cwd)
        .capabilities(capabilities)
        .rlimits(rlimits)
        .no_new_privileges(true)
        .build()
        .map_err(invalid)
}

fn to_i64(value: u64, field: &'static str) -> Result<i64, EngineError> {
    i64::try_from(value).map_err(|_| EngineError::Unenforceable {
        engine: "oci",
        field,
        reason: format!("{value} is too large"),
    })
}

fn mount(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<Mount, EngineError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(invalid)
}

/// The kernel file systems, then the sandbox's tmpfs and binds in order.
fn mounts(sandbox: &Sandbox, runtime: &Runtime) -> Result<Vec<Mount>, EngineError> {
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ];
    // runsc mounts a tmpfs of its own (sentry memory, no size) at /tmp unless the spec mounts
    // something there: the root's own /tmp (bounded by the disk limit, as on every tier) is
    // bound instead.
    let root_tmp = sandbox.rootfs.join("tmp");
    let tmp_given = sandbox
        .tmpfs
        .iter()
        .any(|t| t.target == std::path::Path::new("/tmp"))
        || sandbox
            .binds
            .iter()
            .any(|b| b.target == std::path::Path::new("/tmp"));
    if matches!(runtime, Runtime::Runsc { .. }) && !tmp_given && root_tmp.is_dir() {
        out.push(
            MountBuilder::default()
                .destination("/tmp")
                .typ("bind")
                .source(&root_tmp)
                .options(
                    ["rbind", "rprivate", "nosuid", "nodev"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>(),
                )
                .build()
                .map_err(invalid)?,
        );
    }
    for t in &sandbox.tmpfs {
        let size = format!("size={}", t.size);
        let mode = format!("mode={:o}", t.mode);
        out.push(
            MountBuilder::default()
                .destination(&t.target)
                .typ("tmpfs")
                .source("tmpfs")
                .options(vec!["nosuid".to_string(), "nodev".to_string(), size, mode])
                .build()
                .map_err(invalid)?,
        );
    }
    for b in &sandbox.binds {
        let mut options = vec!["rbind", "rprivate", "nosuid", "nodev"];
        if !b.writable {
            options.push("ro");
        }
        out.push(
            MountBuilder::default()
                .destination(&b.target)
                .typ("bind")
                .source(&b.source)
                .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .build()
                .map_err(invalid)?,
        );
    }
    Ok(out)
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
