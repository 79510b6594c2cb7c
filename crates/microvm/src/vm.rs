//! One running microVM: its state directory, its QEMU process and the agent connection.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentbox_protocol::client::{Client, ClientError};
use agentbox_protocol::{ExitRecord, RunRequest};

use crate::cgroup::{self, CgroupError, QemuLimits, VmCgroup};
use crate::disk::{self, DiskError};
use crate::qemu::{Accel, Disk, VmConfig, QEMU};

/// Where state directories live (`<dir>/<name>`).
pub const DEFAULT_RUN_DIR: &str = "/run/agentbox/vms";

/// Runs QEMU as an unprivileged uid inside fresh namespaces (see [`Jail::wrap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jail {
    pub uid: u32,
    pub gid: u32,
}

impl Jail {
    /// The first uid of the range jailed QEMUs run as (`JAIL_UID_BASE + n`); no user has it.
    pub const UID_BASE: u32 = 0x7fff_0000;

    pub fn nth(n: u16) -> Self {
        Self {
            uid: Self::UID_BASE + u32::from(n),
            gid: Self::UID_BASE + u32::from(n),
        }
    }

    /// The argv prefix: `setpriv --pdeathsig KILL` ties the jail to the thread that spawns it
    /// (the owner of the `Vm` must keep that thread alive: a one-shot run's main thread, the
    /// single-threaded VM host, a pool's refill thread), so a killed agentbox takes its VM along;
    /// `unshare` (util-linux) gives QEMU its own mount, PID, network, IPC and
    /// UTS namespaces (`--fork`: QEMU is PID 1 of the new PID namespace; `--kill-child`: it gets
    /// SIGKILL when `unshare` dies; mounts are private to it); inside, `sh` first moves itself
    /// into QEMU's cgroup by writing `0` to each of `cgroup_procs` (still single-threaded, so
    /// every thread QEMU starts is born inside; a failed write stops the jail before QEMU runs),
    /// bind-mounts each `(source, target)` of `binds` (files QEMU must read from root-only
    /// directories), then `setpriv` drops to `uid:gid` with no supplementary groups, an empty
    /// capability bounding set and `no_new_privs` before exec'ing QEMU (which then cannot write
    /// the root-owned cgroup files). The paths travel as arguments, never through the script text.
    pub fn wrap(&self, cgroup_procs: &[PathBuf], binds: &[(PathBuf, PathBuf)]) -> Vec<String> {
        let mut argv: Vec<String> = [
            "setpriv",
            "--pdeathsig",
            "KILL",
            "--",
            "unshare",
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--net",
            "--ipc",
            "--uts",
            "--",
            "sh",
            "-c",
            BIND_SCRIPT,
            "agentbox-jail",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(
            cgroup_procs
                .iter()
                .map(|p| p.to_string_lossy().into_owned()),
        );
        argv.push("--".to_string());
        for (source, target) in binds {
            argv.push(source.to_string_lossy().into_owned());
            argv.push(target.to_string_lossy().into_owned());
        }
        argv.extend([
            "--".to_string(),
            "setpriv".to_string(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".to_string(),
            "--bounding-set=-all".to_string(),
            "--no-new-privs".to_string(),
            // Changing the uid clears the parent-death signal `unshare --kill-child` gave: set
            // again after the drop, so QEMU still dies with `unshare`.
            "--pdeathsig".to_string(),
            "KILL".to_string(),
            "--".to_string(),
        ]);
        argv
    }
}

/// `sh -c` script of the jail: writes `0` (itself) to each cgroup.procs file until `--`,
/// bind-mounts argument pairs until the next `--`, then execs the rest.
const BIND_SCRIPT: &str =
    "set -e; while [ \"$1\" != -- ]; do echo 0 > \"$1\"; shift; done; shift; \
while [ \"$1\" != -- ]; do mount --bind \"$1\" \"$2\"; shift 2; done; shift; exec \"$@\"";

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Names the state directory `run_dir/<name>`; must be a plain file name.
    pub name: String,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The read-only base disk (see [`disk::base_disk`]); an overlay is made per VM.
    pub base_disk: Option<PathBuf>,
    /// The read-only tools disk (see [`disk::tools_disk`]): the guest agent mounts it and runs
    /// layered requests with its `agentbox`. Attached as is (never written), no overlay.
    pub tools_disk: Option<PathBuf>,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    pub extra_cmdline: String,
    /// From spawning QEMU to the agent's hello.
    pub boot_timeout: Duration,
    pub run_dir: PathBuf,
    pub jail: Option<Jail>,
}

impl VmSpec {
    /// Defaults: 256 MiB, 1 vCPU, TCG, 30 s boot deadline, [`DEFAULT_RUN_DIR`], no jail.
    pub fn new(name: &str, kernel: &Path, initramfs: &Path) -> Self {
        Self {
            name: name.to_string(),
            kernel: kernel.to_path_buf(),
            initramfs: initramfs.to_path_buf(),
            base_disk: None,
            tools_disk: None,
            memory_mib: 256,
            vcpus: 1,
            accel: Accel::Tcg,
            extra_cmdline: String::new(),
            boot_timeout: Duration::from_secs(30),
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            jail: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("invalid VM name {0:?}")]
    BadName(String),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("the guest did not say hello within {timeout:?}\n{log_tail}")]
    BootTimeout { timeout: Duration, log_tail: String },
    #[error("the VM died\n{log_tail}")]
    Died { log_tail: String },
    #[error(transparent)]
    Client(ClientError),
    #[error("QEMU's cgroup (no VM started): {0}")]
    Cgroup(#[from] CgroupError),
}

fn io(what: impl std::fmt::Display, e: std::io::Error) -> VmError {
    VmError::Io(what.to_string(), e)
}

/// A booted microVM. Dropping it kills QEMU and removes its state directory.
pub struct Vm {
    name: String,
    state_dir: PathBuf,
    child: Option<Child>,
    exit_status: Option<std::process::ExitStatus>,
    client: Option<Client<UnixStream>>,
    /// The jailed QEMU's cgroup; removed on drop, after QEMU is killed.
    cgroup: Option<VmCgroup>,
    boot_to_hello: Duration,
    kernel_release: String,
    guest_boot_ms: u64,
}

impl Vm {
    /// Creates the state directory, the overlay, spawns QEMU and waits for the agent's hello.
    pub fn boot(spec: VmSpec) -> Result<Vm, VmError> {
        if spec.name.is_empty()
            || spec.name.contains('/')
            || spec.name.starts_with('.')
            || spec.name.contains(',')
        {
            return Err(VmError::BadName(spec.name));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&spec.run_dir)
            .map_err(|e| io(spec.run_dir.display(), e))?;
        let state_dir = spec.run_dir.join(&spec.name);
        if state_dir.exists() {
            // A leftover of a crashed host: nothing can be using it under the same name.
            std::fs::remove_dir_all(&state_dir).map_err(|e| io(state_dir.display(), e))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&state_dir)
            .map_err(|e| io(state_dir.display(), e))?;
        // From here on, `vm` owns the directory: every early return cleans it up.
        let mut vm = Vm {
            name: spec.name.clone(),
            state_dir: state_dir.clone(),
            child: None,
            exit_status: None,
            client: None,
            cgroup: None,
            boot_to_hello: Duration::ZERO,
            kernel_release: String::new(),
            guest_boot_ms: 0,
        };
        // A jailed QEMU cannot traverse root-only cache directories: its private mount
        // namespace gets the kernel, initramfs and base disk bind-mounted onto placeholders in
        // the state dir (which it owns), and it opens them there.
        let mut binds: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut seen = |real: &Path, name: &str| -> Result<PathBuf, VmError> {
            if spec.jail.is_none() {
                return Ok(real.to_path_buf());
            }
            let staged = state_dir.join(name);
            File::create(&staged).map_err(|e| io(staged.display(), e))?;
            binds.push((real.to_path_buf(), staged.clone()));
            Ok(staged)
        };
        let kernel = seen(&spec.kernel, "vmlinux")?;
        let initramfs = seen(&spec.initramfs, "initramfs.cpio")?;
        let disk = match &spec.base_disk {
            Some(base) => {
                let base_seen = seen(base, "base.ext4")?;
                Some(disk::overlay(base, &base_seen, &state_dir)?)
            }
            None => None,
        };
        let tools_disk = match &spec.tools_disk {
            Some(tools) => Some(seen(tools, "tools.ext4")?),
            None => None,
        };
        let config = VmConfig {
            kernel,
            initramfs,
            disk: disk.clone(),
            tools_disk,
            memory_mib: spec.memory_mib,
            vcpus: spec.vcpus,
            accel: spec.accel,
            socket: state_dir.join("agent.sock"),
            console_log: state_dir.join("console.log"),
            extra_cmdline: spec.extra_cmdline.clone(),
        };
        let qemu_log = state_dir.join("qemu.log");
        let log = File::create(&qemu_log).map_err(|e| io(qemu_log.display(), e))?;
        let log2 = log.try_clone().map_err(|e| io(qemu_log.display(), e))?;
        if let Some(jail) = spec.jail {
            let mut owned = vec![state_dir.clone()];
            if let Some(Disk::Qcow2(p)) = &disk {
                owned.push(p.clone());
            }
            for p in owned {
                std::os::unix::fs::chown(&p, Some(jail.uid), Some(jail.gid))
                    .map_err(|e| io(format!("chown {}", p.display()), e))?;
            }
            // Fail closed: no cgroup, no QEMU (an error here drops `vm`, which removes the
            // state dir and whatever part of the cgroup was made).
            let limits = QemuLimits::for_vm(spec.memory_mib, spec.vcpus);
            let hierarchy = cgroup::detect_host()?;
            vm.cgroup = Some(VmCgroup::create(
                &hierarchy,
                &cgroup::leaf_name(&spec.name),
                &limits,
            )?);
        }
        let procs = vm
            .cgroup
            .as_ref()
            .map(VmCgroup::procs_files)
            .unwrap_or_default();
        let mut argv = spec
            .jail
            .map(|j| j.wrap(&procs, &binds))
            .unwrap_or_default();
        argv.push(QEMU.to_string());
        argv.extend(config.args());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env("TMPDIR", &state_dir)
            .process_group(0);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| io(format!("spawning {}", argv[0]), e))?;
        vm.child = Some(child);
        let deadline = started + spec.boot_timeout;
        let stream = vm.connect_socket(&config.socket, deadline, spec.boot_timeout)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
            .map_err(|e| io("socket timeout", e))?;
        let mut client = match Client::connect(stream) {
            Ok(client) => client,
            Err(e) => return Err(vm.classify(e, Some(spec.boot_timeout))),
        };
        vm.boot_to_hello = started.elapsed();
        client
            .get_mut()
            .set_read_timeout(None)
            .map_err(|e| io("socket timeout", e))?;
        vm.kernel_release = client.hello().agent.kernel_release.clone();
        vm.guest_boot_ms = client.hello().agent.boot_time_ms;
        vm.client = Some(client);
        Ok(vm)
    }

    fn connect_socket(
        &mut self,
        socket: &Path,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<UnixStream, VmError> {
        loop {
            match UnixStream::connect(socket) {
                Ok(stream) => return Ok(stream),
                Err(_) if !self.alive() => {
                    return Err(VmError::Died {
                        log_tail: self.log_tail(),
                    })
                }
                Err(_) if Instant::now() >= deadline => {
                    return Err(VmError::BootTimeout {
                        timeout,
                        log_tail: self.log_tail(),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Turns a client error into `Died` when QEMU is gone (or the channel ended), a
    /// `BootTimeout` when a boot read timed out.
    fn classify(&mut self, e: ClientError, boot_timeout: Option<Duration>) -> VmError {
        let timed_out = matches!(&e, ClientError::Io(io) if matches!(io.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        if let (true, Some(timeout)) = (timed_out, boot_timeout) {
            return VmError::BootTimeout {
                timeout,
                log_tail: self.log_tail(),
            };
        }
        let channel_gone = matches!(&e, ClientError::Closed)
            || matches!(&e, ClientError::Io(io) if matches!(io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::UnexpectedEof));
        if channel_gone || !self.alive() {
            // Give QEMU a moment to finish exiting so the log is complete.
            let until = Instant::now() + Duration::from_millis(500);
            while self.alive() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            return VmError::Died {
                log_tail: self.log_tail(),
            };
        }
        VmError::Client(e)
    }

    /// Whether the QEMU process (or its jail wrapper) is still running.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                Ok(Some(status)) => {
                    self.exit_status = Some(status);
                    false
                }
                Err(_) => false,
            },
            None => false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The pid of the process we spawned (QEMU, or `unshare` when jailed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The jailed QEMU's cgroup (None without a jail).
    pub fn cgroup(&self) -> Option<&VmCgroup> {
        self.cgroup.as_ref()
    }

    /// From spawning QEMU to the agent's hello.
    pub fn boot_to_hello(&self) -> Duration {
        self.boot_to_hello
    }

    /// The guest kernel's release, from the hello.
    pub fn kernel_release(&self) -> &str {
        &self.kernel_release
    }

    /// The guest's uptime when it said hello.
    pub fn guest_boot_ms(&self) -> u64 {
        self.guest_boot_ms
    }

    /// The agent connection, for the requests `Vm` does not wrap (files, resources).
    pub fn client(&mut self) -> Result<&mut Client<UnixStream>, VmError> {
        if self.client.is_none() {
            return Err(VmError::Died {
                log_tail: self.log_tail(),
            });
        }
        self.client.as_mut().ok_or(VmError::Died {
            log_tail: String::new(),
        })
    }

    /// Runs one command to completion in the guest.
    pub fn run(
        &mut self,
        run: RunRequest,
        stdin: Option<&mut dyn Read>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<ExitRecord, VmError> {
        let result = self.client()?.run(run, stdin, stdout, stderr);
        self.check(result)
    }

    /// Maps a client result, dropping the connection when the VM died.
    pub fn check<T>(&mut self, result: Result<T, ClientError>) -> Result<T, VmError> {
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                let e = self.classify(e, None);
                if matches!(e, VmError::Died { .. }) {
                    self.client = None;
                }
                Err(e)
            }
        }
    }

    /// Asks the guest to power off, waits up to `timeout` for QEMU to exit, then kills it.
    pub fn power_off(&mut self, timeout: Duration) -> Result<(), VmError> {
        let acked = match self.client.as_mut() {
            Some(client) => client.power_off(),
            None => Ok(()),
        };
        self.client = None;
        let deadline = Instant::now() + timeout;
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let clean = !self.alive();
        self.kill();
        match acked {
            Ok(()) if clean => Ok(()),
            Ok(()) => Err(VmError::Io(
                "power-off".to_string(),
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "QEMU did not exit in time; killed",
                ),
            )),
            // The guest may close the channel before its ack arrives: fine if it went down.
            Err(_) if clean => Ok(()),
            Err(e) => Err(VmError::Client(e)),
        }
    }

    /// The QEMU process itself: the spawned process, or under the jail the descendant of
    /// `unshare` running QEMU (None once it is gone).
    pub fn qemu_pid(&self) -> Option<u32> {
        let mut pid = self.pid()?;
        for _ in 0..4 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            if comm.starts_with("qemu-system") {
                return Some(pid);
            }
            let children =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
            pid = children.split_whitespace().next()?.parse().ok()?;
        }
        None
    }

    /// SIGKILLs QEMU's whole process group (QEMU and, jailed, its `unshare`/`sh` wrappers: the
    /// drop to the jail uid clears QEMU's parent-death signal) and reaps the spawned process.
    pub fn kill(&mut self) {
        self.client = None;
        if let Some(mut child) = self.child.take() {
            if let Ok(pgid) = i32::try_from(child.id()) {
                // The group is ours (process_group(0) at spawn) until we reap its leader.
                let _ = agentbox_sys::process::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of QEMU's own log and the guest console.
    pub fn log_tail(&self) -> String {
        let mut out = match self.exit_status {
            Some(status) => format!("QEMU exited: {status}\n"),
            None => String::new(),
        };
        for (label, file) in [("qemu", "qemu.log"), ("console", "console.log")] {
            let tail = tail(&self.state_dir.join(file), 4096);
            if !tail.trim().is_empty() {
                out.push_str(&format!("--- {label} ---\n{}\n", tail.trim_end()));
            }
        }
        out
    }
}

fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
        // QEMU is dead (or its leftovers get SIGKILL from the cgroup's own list) before its
        // cgroup goes.
        if let Some(cgroup) = self.cgroup.take() {
            let _ = cgroup.remove();
        }
        // The state dir may be owned by a jail uid with mode 0700: root removes it regardless.
        let _ = std::fs::set_permissions(&self.state_dir, std::fs::Permissions::from_mode(0o700));
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
