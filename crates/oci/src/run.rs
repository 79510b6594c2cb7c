//! The driver: writes a sandbox's bundle, runs it with runc, crun or runsc, maps how it ended,
//! and always removes what the runtime made (container state, cgroups, processes). Also the
//! persistent-sandbox primitives: create, exec, kill, state, destroy.
//!
//! Layout: each runtime keeps its state under `/run/agentbox/oci/<runtime>` (so a container can
//! be destroyed knowing only its name); the bundle (`config.json`) and the runtime's own error log
//! are in the sandbox's `state_dir`; exec process files in `/run/agentbox/oci/exec/<id>`.
//! A runtime's own failure (as opposed to the command's exit status) is read from its JSON log,
//! so the caller's stdin/stdout/stderr go to the container untouched.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentbox_policy::{NetMode, Policy};

use crate::process::{capture, kill_mentioning, wait_with_timeout};
use crate::runtimes::Runtime;
use crate::wait::{self, ChildWait, Disposition, Waited};
use crate::{bundle, cgroups, EngineError, ExecProcess, Outcome, Sandbox};

/// Where the runtimes keep their state and agentbox its exec process files.
pub const STATE_BASE: &str = "/run/agentbox/oci";
/// How long a runtime's helper command (`kill`, `delete`, `state`) may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long starting a detached container may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The state directory (`--root`) of `runtime`.
pub fn runtime_root(runtime: &Runtime) -> PathBuf {
    Path::new(STATE_BASE).join(runtime.name())
}

fn exec_dir(id: &str) -> PathBuf {
    Path::new(STATE_BASE).join("exec").join(id)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Policy fields no OCI runtime can enforce here.
pub fn check(policy: &Policy) -> Result<(), EngineError> {
    let engine = policy.tier.name();
    if policy.network.mode != NetMode::None {
        return Err(EngineError::Unenforceable {
            engine,
            field: "network.mode",
            reason: "the OCI runtimes run with an empty network namespace only".into(),
        });
    }
    if policy.insists_on("limits.fuel") {
        return Err(EngineError::Unenforceable {
            engine,
            field: "limits.fuel",
            reason: "fuel is a wasm-tier CPU budget; OCI runtimes run native code".into(),
        });
    }
    Ok(())
}

/// Runs `sandbox.argv` to completion with the caller's stdio; removes the container after.
pub fn run(sandbox: &Sandbox, runtime: &Runtime) -> Result<Outcome, EngineError> {
    let bundle = write_bundle(sandbox, runtime)?;
    crate::marks::mark("oci: bundle written");
    let log = bundle.join("runtime.log");
    let result = run_container(sandbox, runtime, &bundle, &log);
    crate::marks::mark("oci: runtime exited");
    let cleaned = cleanup(&sandbox.id, runtime);
    crate::marks::mark("oci: cleaned up");
    let _ = std::fs::remove_file(bundle.join("config.json"));
    let outcome = result?;
    cleaned?;
    Ok(outcome)
}

fn run_container(
    sandbox: &Sandbox,
    runtime: &Runtime,
    bundle: &Path,
    log: &Path,
) -> Result<Outcome, EngineError> {
    let root = runtime_root(runtime);
    std::fs::create_dir_all(&root).map_err(io_error(&root))?;
    let _ = std::fs::remove_file(log);
    let pid_file = bundle.join("init.pid");
    let _ = std::fs::remove_file(&pid_file);
    let mut cmd = runtime.command(&root, log);
    cmd.arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&sandbox.id);
    let starting = cgroups::parent_lock();
    if let Some(lock) = &starting {
        let _ = lock.lock_shared();
    }
    let mut child = cmd.spawn().map_err(|e| EngineError::Unavailable {
        engine: runtime.name(),
        reason: e.to_string(),
    })?;
    let ended = wait_container(&mut child, sandbox, runtime, &pid_file);
    let _ = std::fs::remove_file(&pid_file);
    let (status, ended_by) = ended?;
    let oom = cgroups::oom_killed(&sandbox.id);
    let Some(status) = status else {
        return Ok(Outcome {
            code: None,
            signal: Some(9),
            timed_out: true,
            oom,
        });
    };
    use std::os::unix::process::ExitStatusExt;
    if let Some(EndedBy::Signal(signo)) = ended_by {
        // Killed on behalf of a forwarded signal the command does not handle: it ends as it
        // would have, had it not been its PID namespace's init (see `deliver`).
        return Ok(Outcome {
            code: None,
            signal: Some(signo),
            timed_out: false,
            oom,
        });
    }
    if let Some(signal) = status.signal() {
        return Ok(Outcome {
            code: None,
            signal: Some(signal),
            timed_out: false,
            oom,
        });
    }
    let code = status.code().unwrap_or(-1);
    if code != 0 {
        if let Some(message) = runtime_error(log) {
            return Err(classify(runtime, &message));
        }
    }
    Ok(Outcome {
        code: Some(code),
        // The runtimes report a command killed by signal N as exit status 128+N, like a shell;
        // only the OOM killer's SIGKILL is known for sure.
        signal: (oom && code == 137).then_some(9),
        timed_out: false,
        oom,
    })
}

/// Why agentbox ended a container before its command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndedBy {
    /// The wall-clock limit, or the supervisor's death: the outcome is a timeout.
    Kill,
    /// A forwarded signal the command's init does not handle.
    Signal(i32),
}

/// How long the runtime client may take to exit once its container is killed.
const CLIENT_GRACE: Duration = Duration::from_secs(5);

/// Waits for the runtime client, passing forwarded signals on to the command and killing the
/// container at the deadline or when the supervisor dies. `None` status: ended by the deadline
/// (or the supervisor's death).
fn wait_container(
    child: &mut std::process::Child,
    sandbox: &Sandbox,
    runtime: &Runtime,
    pid_file: &Path,
) -> Result<(Option<std::process::ExitStatus>, Option<EndedBy>), EngineError> {
    let wait = ChildWait::new(child)?;
    let mut deadline = sandbox.limits.timeout.map(|t| Instant::now() + t);
    let mut killed = false;
    let mut signals = Forwarding {
        id: &sandbox.id,
        runtime,
        pid_file,
        pending: None,
        killed_for: None,
    };
    loop {
        let retry = signals.pending.map(|_| Instant::now() + SIGNAL_RETRY);
        let until = match (deadline, retry) {
            (Some(d), Some(r)) => Some(d.min(r)),
            (d, r) => d.or(r),
        };
        let waited = wait.next(child, until)?;
        if let Some(signo) = signals.pending.take() {
            if !matches!(waited, Waited::Exited(_)) {
                signals.pass_on(signo, child);
            }
        }
        match waited {
            Waited::Exited(_) if killed => return Ok((None, Some(EndedBy::Kill))),
            Waited::Exited(status) => {
                return Ok((Some(status), signals.killed_for.map(EndedBy::Signal)))
            }
            // Only the retry's wake-up.
            Waited::Deadline if deadline.is_none_or(|d| Instant::now() < d) => {}
            Waited::Deadline if killed => {
                // The client did not exit after its container was killed: kill it too.
                let _ = child.kill();
                let _ = child.wait();
                return Ok((None, Some(EndedBy::Kill)));
            }
            Waited::Deadline | Waited::ParentDied => {
                let _ = kill(&sandbox.id, runtime, 9);
                killed = true;
                deadline = Some(Instant::now() + CLIENT_GRACE);
            }
            Waited::Signal(signo) => signals.pass_on(signo, child),
        }
    }
}

/// How often a signal that found no init yet is tried again.
const SIGNAL_RETRY: Duration = Duration::from_millis(5);

/// The signals of one container's run.
struct Forwarding<'a> {
    id: &'a str,
    runtime: &'a Runtime,
    pid_file: &'a Path,
    /// A signal that came before the runtime wrote the init's pid (runc writes it once the command
    /// runs): tried again every [`SIGNAL_RETRY`].
    pending: Option<i32>,
    /// The first signal carried out with SIGKILL on the command's behalf.
    killed_for: Option<i32>,
}

impl Forwarding<'_> {
    fn pass_on(&mut self, signo: i32, child: &std::process::Child) {
        match deliver(signo, self.id, child, self.runtime, self.pid_file) {
            Delivered::Killed => {
                self.killed_for.get_or_insert(signo);
            }
            Delivered::NoInitYet => self.pending = Some(signo),
            Delivered::Sent => {}
        }
    }
}

/// What [`deliver`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivered {
    /// Sent (or dropped: the init ignores it).
    Sent,
    /// The init was killed on the signal's behalf.
    Killed,
    /// No init to send it to yet.
    NoInitYet,
}

/// Passes a forwarded signal on to the command. runc and crun run it as the init of its PID
/// namespace, to which the kernel delivers only the signals it has a handler for: a SIGTERM the
/// command does not catch would be dropped, where on the `ns` tier (whose init is agentbox's) it
/// ends the command. So the init's disposition is read: a caught signal is sent to it, an ignored
/// one is dropped, and one left at its default (which, for the forwarded signals, terminates) is
/// carried out with SIGKILL. Under runsc the sentry delivers it with the usual effect (`runsc kill
/// ID SIGNAL`; its `run` client, sent a signal, would kill the container instead of passing it on).
fn deliver(
    signo: i32,
    id: &str,
    child: &std::process::Child,
    runtime: &Runtime,
    pid_file: &Path,
) -> Delivered {
    let client = child.id() as i32;
    if matches!(runtime, Runtime::Runsc { .. }) {
        let _ = send_signal(id, runtime, signo, false);
        return Delivered::Sent;
    }
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|&pid| pid > 1)
    else {
        return Delivered::NoInitYet;
    };
    // The init is the client's child while the client runs (runc is a subreaper; both reap it
    // before they exit), which also rules out a recycled pid.
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Delivered::NoInitYet;
    };
    let parent = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse::<i32>().ok());
    if parent != Some(client) {
        return Delivered::NoInitYet;
    }
    match wait::disposition_in(&status, signo) {
        Disposition::Caught => {
            let _ = agentbox_sys::process::kill(pid, signo);
            Delivered::Sent
        }
        Disposition::Ignored => Delivered::Sent,
        Disposition::Default => {
            match agentbox_sys::process::kill(pid, agentbox_sys::signal::SIGKILL) {
                Ok(()) => Delivered::Killed,
                Err(_) => Delivered::NoInitYet,
            }
        }
    }
}

/// The runtime's own error, from its JSON log (`{"level":"error","msg":...}` lines).
fn runtime_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let messages: Vec<String> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| {
            matches!(
                v.get("level").and_then(|l| l.as_str()),
                Some("error" | "fatal")
            )
        })
        .filter_map(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_string))
        .collect();
    messages.last().cloned()
}

/// A runtime failure as the engine's error: a command that does not exist or cannot run is a
/// `Command` error (agentbox exits 127 / 126), anything else a setup failure.
fn classify(runtime: &Runtime, message: &str) -> EngineError {
    let lower = message.to_lowercase();
    let not_found = lower.contains("executable file not found")
        || lower.contains("no such file or directory")
        || lower.contains("not found in $path");
    let cannot_execute = lower.contains("permission denied")
        || lower.contains("exec format error")
        || lower.contains("is a directory");
    let exec_step = lower.contains("exec")
        || lower.contains("executable")
        // runsc: "creating process: failed to load /x: no such file or directory".
        || lower.contains("failed to load")
        || lower.contains("start container process");
    if exec_step && (not_found || cannot_execute) {
        return EngineError::Command {
            not_found,
            message: message.to_string(),
        };
    }
    EngineError::Setup {
        step: format!("{} run", runtime.name()),
        message: message.to_string(),
    }
}

/// Writes `config.json` into the sandbox's state directory and makes the root ready: the
/// symlinks and every mount point exist, and the root directory belongs to the sandbox's user
/// (runc and crun: the mapped uid), so it can write there as on the `ns` tier.
fn write_bundle(sandbox: &Sandbox, runtime: &Runtime) -> Result<PathBuf, EngineError> {
    let spec = bundle::spec(sandbox, runtime)?;
    let dir = sandbox.state_dir.clone();
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    prepare_rootfs(sandbox, runtime)?;
    let json = serde_json::to_vec(&spec).map_err(|e| EngineError::Setup {
        step: "writing config.json".into(),
        message: e.to_string(),
    })?;
    let config = dir.join("config.json");
    std::fs::write(&config, json).map_err(io_error(&config))?;
    Ok(dir)
}

/// `path` (absolute, inside the sandbox) under the root directory.
fn inside(root: &Path, path: &Path) -> Result<PathBuf, EngineError> {
    let mut out = root.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(EngineError::Setup {
                    step: "preparing the root".into(),
                    message: format!("{}: `..` is not allowed", path.display()),
                })
            }
        }
    }
    Ok(out)
}

fn prepare_rootfs(sandbox: &Sandbox, runtime: &Runtime) -> Result<(), EngineError> {
    let root = &sandbox.rootfs;
    for (path, target) in &sandbox.symlinks {
        let link = inside(root, path)?;
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        std::os::unix::fs::symlink(target, &link).map_err(io_error(&link))?;
    }
    let mut dirs: Vec<PathBuf> = ["/proc", "/dev", "/sys", "/tmp"]
        .iter()
        .map(PathBuf::from)
        .collect();
    dirs.extend(sandbox.tmpfs.iter().map(|t| t.target.clone()));
    for b in &sandbox.binds {
        if b.source.is_dir() {
            dirs.push(b.target.clone());
        } else {
            let file = inside(root, &b.target)?;
            if file.symlink_metadata().is_err() {
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
                }
                std::fs::write(&file, b"").map_err(io_error(&file))?;
            }
        }
    }
    for d in dirs {
        let dir = inside(root, &d)?;
        // A symlink there (e.g. /bin -> usr/bin) is resolved by the runtime inside the root.
        if dir.symlink_metadata().is_err() {
            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        }
    }
    let tmp = inside(root, Path::new("/tmp"))?;
    if tmp.is_dir() {
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777));
    }
    if let (Some((host, _)), false) = (sandbox.uid_range, matches!(runtime, Runtime::Runsc { .. }))
    {
        let owner = host.saturating_add(sandbox.uid);
        // agentbox's runtime hands over a read-only root (writable only where its ns tier's is:
        // scratch dirs and mounts) that its mapping already owns: leave that one as it is.
        let owned =
            std::fs::metadata(root).is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == host);
        if !owned {
            std::os::unix::fs::chown(root, Some(owner), Some(owner)).map_err(io_error(root))?;
        }
    }
    Ok(())
}

/// Starts `sandbox.argv` as a detached container's init (a pause program): later processes join
/// it with [`exec_command`]. Its stdio is /dev/null.
pub fn create(sandbox: &Sandbox, runtime: &Runtime) -> Result<(), EngineError> {
    let bundle = write_bundle(sandbox, runtime)?;
    let log = bundle.join("runtime.log");
    let root = runtime_root(runtime);
    std::fs::create_dir_all(&root).map_err(io_error(&root))?;
    // The template of every exec'd process: the init's confinement.
    let template = bundle::process(
        &ExecProcess {
            argv: sandbox.argv.clone(),
            env: sandbox.env.clone(),
            cwd: sandbox.cwd.clone(),
            uid: sandbox.uid,
        },
        sandbox.limits.nofile,
    )?;
    let dir = exec_dir(&sandbox.id);
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let template_file = dir.join("template.json");
    let json = serde_json::to_vec(&template).map_err(|e| EngineError::Setup {
        step: "writing the exec template".into(),
        message: e.to_string(),
    })?;
    std::fs::write(&template_file, json).map_err(io_error(&template_file))?;

    let mut cmd = runtime.command(&root, &log);
    cmd.arg("run")
        .arg("--detach")
        .arg("--bundle")
        .arg(&bundle)
        .arg(&sandbox.id);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let starting = cgroups::parent_lock();
    if let Some(lock) = &starting {
        let _ = lock.lock_shared();
    }
    let mut child = cmd.spawn().map_err(|e| EngineError::Unavailable {
        engine: runtime.name(),
        reason: e.to_string(),
    })?;
    let status = wait_with_timeout(&mut child, CREATE_TIMEOUT)?;
    drop(starting);
    if status.is_some_and(|s| s.success()) && state(&sandbox.id, runtime).unwrap_or(false) {
        return Ok(());
    }
    let message = runtime_error(&log).unwrap_or_else(|| match status {
        None => format!("did not start within {} s", CREATE_TIMEOUT.as_secs()),
        Some(s) => format!("exited with {s} and the container is not running"),
    });
    let _ = destroy(&sandbox.id, runtime);
    Err(classify(runtime, &message))
}

/// The client command that runs one more process in the persistent sandbox `id` with the init's
/// confinement (capabilities none, no new privileges, rlimits from the template written by
/// [`create`]; seccomp, namespaces and cgroups from the container). The caller sets its stdio and
/// waits; its exit status is the process's (a process the runtime could not start: non-zero, with
/// the runtime's message on stderr).
pub fn exec_command(id: &str, runtime: &Runtime, exec: &ExecProcess) -> Command {
    let dir = exec_dir(id);
    let root = runtime_root(runtime);
    let log = dir.join("runtime.log");
    let mut cmd = runtime.command(&root, &log);
    match exec_process_file(&dir, exec) {
        Ok(file) => {
            cmd.arg("exec").arg("--process").arg(file).arg(id);
        }
        Err(e) => {
            // Without the process file the client is refused before it touches the container.
            cmd = Command::new("/bin/sh");
            cmd.args(["-c", "echo \"agentbox: $0\" >&2; exit 126"])
                .arg(format!("cannot prepare the exec of {id}: {e}"));
        }
    }
    cmd
}

fn exec_process_file(dir: &Path, exec: &ExecProcess) -> Result<PathBuf, EngineError> {
    let template_file = dir.join("template.json");
    let text = std::fs::read(&template_file).map_err(io_error(&template_file))?;
    let template: oci_spec::runtime::Process =
        serde_json::from_slice(&text).map_err(|e| EngineError::Setup {
            step: "reading the exec template".into(),
            message: e.to_string(),
        })?;
    let nofile = template
        .rlimits()
        .as_ref()
        .and_then(|r| {
            r.iter()
                .find(|l| l.typ() == oci_spec::runtime::PosixRlimitType::RlimitNofile)
        })
        .map(|l| l.hard());
    let process = bundle::process(exec, nofile)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let file = dir.join(format!("process-{nanos}.json"));
    let json = serde_json::to_vec(&process).map_err(|e| EngineError::Setup {
        step: "writing the exec process".into(),
        message: e.to_string(),
    })?;
    std::fs::write(&file, json).map_err(io_error(&file))?;
    Ok(file)
}

/// Sends `signal` to every process of container `id`.
pub fn kill(id: &str, runtime: &Runtime, signal: i32) -> Result<(), EngineError> {
    send_signal(id, runtime, signal, true)
}

/// `RUNTIME kill [--all] ID SIGNAL`: to every process of the container, or to its init only.
fn send_signal(id: &str, runtime: &Runtime, signal: i32, all: bool) -> Result<(), EngineError> {
    let root = runtime_root(runtime);
    let log = std::env::temp_dir().join(format!("agentbox-oci-kill-{id}.log"));
    let mut cmd = runtime.command(&root, &log);
    cmd.arg("kill");
    if all {
        cmd.arg("--all");
    }
    cmd.arg(id).arg(signal.to_string());
    let out = capture(&mut cmd, HELPER_TIMEOUT);
    let _ = std::fs::remove_file(&log);
    let out = out?;
    if out.success() {
        Ok(())
    } else {
        Err(EngineError::Setup {
            step: format!("{} kill {id}", runtime.name()),
            message: out.stderr.trim().to_string(),
        })
    }
}

/// Whether container `id` exists and is running.
pub fn state(id: &str, runtime: &Runtime) -> Result<bool, EngineError> {
    let root = runtime_root(runtime);
    let log = std::env::temp_dir().join(format!("agentbox-oci-state-{id}.log"));
    let mut cmd = runtime.command(&root, &log);
    cmd.arg("state").arg(id);
    let out = capture(&mut cmd, HELPER_TIMEOUT);
    let _ = std::fs::remove_file(&log);
    let out = out?;
    if !out.success() {
        return Ok(false);
    }
    let value: serde_json::Value =
        serde_json::from_str(&out.stdout).map_err(|e| EngineError::Setup {
            step: format!("{} state {id}", runtime.name()),
            message: e.to_string(),
        })?;
    Ok(value.get("status").and_then(|s| s.as_str()) == Some("running"))
}

/// Removes container `id` with everything it had: its processes, the runtime's state, its
/// cgroups, agentbox's exec files. A container that does not exist is not an error.
pub fn destroy(id: &str, runtime: &Runtime) -> Result<(), EngineError> {
    let result = cleanup(id, runtime);
    let _ = std::fs::remove_dir_all(exec_dir(id));
    result
}

/// `delete --force`, then whatever the runtime left: processes naming the container, its state
/// directory, its cgroups. Errors only if something is still there afterwards.
fn cleanup(id: &str, runtime: &Runtime) -> Result<(), EngineError> {
    let root = runtime_root(runtime);
    // The runtime's state for `id` (runc, crun: a directory `id`; runsc: files `id_sandbox:...`).
    // A container that ended by itself has none left, and needs no `delete` (a process per run).
    let state: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name == id || name.starts_with(&format!("{id}_"))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    // runsc keeps its state files after a container that ran to its end; with no process of the
    // container left (its sandbox and gofer name the id on their command lines), they are only
    // files: no `runsc delete` (a Go start-up, ~20 ms) is needed.
    let runsc = matches!(runtime, Runtime::Runsc { .. });
    let processes = if runsc { kill_mentioning(id) } else { 0 };
    if !state.is_empty() && (!runsc || processes > 0) {
        // Its log is not read; and a log file by path was seen to be re-created after its
        // removal (by a process of the runtime still exiting).
        let mut cmd = runtime.command(&root, Path::new("/dev/null"));
        cmd.arg("delete").arg("--force").arg(id);
        let _ = capture(&mut cmd, HELPER_TIMEOUT);
    }
    for path in &state {
        let _ = std::fs::remove_dir_all(path);
        let _ = std::fs::remove_file(path);
    }
    // Whatever still names the container (runsc's sandbox and gofer; a runtime killed half-way).
    if !state.is_empty() || runsc {
        let start = Instant::now();
        while kill_mentioning(id) > 0 && start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let state_dir = root.join(id);
    if state_dir.exists() {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    let left = cgroups::remove_container_cgroups(id);
    if !left.is_empty() {
        return Err(EngineError::Setup {
            step: format!("removing the cgroups of {id}"),
            message: format!(
                "still there: {}",
                left.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(())
}
