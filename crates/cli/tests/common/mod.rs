//! Shared helpers of the integration tests: run the real `agentbox` binary as root, and take
//! snapshots of what a run could leave behind on the host (mounts, cgroups, uid slots, temp dirs).
#![allow(dead_code)]

pub mod busybox;
pub mod oci_layout;
pub mod testnet;
pub mod tiers;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_agentbox");

/// `agentbox` with the given arguments, stdin closed.
pub fn agentbox(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).stdin(Stdio::null());
    c
}

/// Runs `agentbox run ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    agentbox(&full).output().expect("spawn agentbox")
}

/// Runs `sh -c SCRIPT` in a default ns sandbox with extra flags before `--`.
pub fn sh(flags: &[&str], script: &str) -> Output {
    let mut args: Vec<&str> = flags.to_vec();
    args.extend_from_slice(&["--", "sh", "-c", script]);
    run(&args)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Everything a sandbox might leave on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    pub mounts: BTreeSet<String>,
    pub cgroups: BTreeSet<String>,
    pub slots: BTreeSet<String>,
    pub run_dir: BTreeSet<String>,
    pub tmp: BTreeSet<String>,
}

fn list(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Entries of the host that belong to agentbox runs (other tests may run in parallel, so the
/// comparison is on agentbox-named objects owned by runs of this process's children only where
/// that can be told; callers compare before/after around one run).
pub fn host_state() -> HostState {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("agentbox"))
        .map(|l| l.split_whitespace().nth(4).unwrap_or("").to_string())
        .collect();
    let mut cgroups = BTreeSet::new();
    for controller in ["memory", "pids", "cpu", "unified"] {
        let dir = Path::new("/sys/fs/cgroup").join(controller);
        for name in list(&dir) {
            // The OCI containers' shared parent (`agentbox_oci::cgroups::CGROUP_PARENT`) stays
            // between runs (`agentbox gc` removes it):
            // what counts is a container's cgroup left in it.
            if name == "agentbox-oci" {
                for child in list(&dir.join(&name))
                    .into_iter()
                    .filter(|c| c.starts_with("agentbox"))
                {
                    cgroups.insert(format!("{controller}/{name}/{child}"));
                }
            } else if name.starts_with("agentbox") {
                cgroups.insert(format!("{controller}/{name}"));
            }
        }
    }
    HostState {
        mounts,
        cgroups,
        slots: list(Path::new("/run/agentbox/slots")),
        // Per-boot probe caches (gVisor's platform, the microVM accelerator) and the lock for
        // taking over dead owners' uid slots are not a run's.
        run_dir: list(Path::new("/run/agentbox"))
            .into_iter()
            .filter(|n| !["gvisor-platform", "microvm-accel", "slots.lock"].contains(&n.as_str()))
            .collect(),
        tmp: list(&std::env::temp_dir())
            .into_iter()
            .filter(|n| n.contains("agentbox"))
            .collect(),
    }
}

/// The host state once no other sandbox of the test binary is running: waits briefly for
/// parallel tests' sandboxes to finish so the comparison is about this run only.
pub fn assert_nothing_left(before: &HostState) {
    let after = host_state();
    assert!(
        after.mounts.is_subset(&before.mounts),
        "mounts left: {:?}",
        after.mounts.difference(&before.mounts)
    );
    assert!(
        after.cgroups.is_subset(&before.cgroups),
        "cgroups left: {:?}",
        after.cgroups.difference(&before.cgroups)
    );
    assert!(
        after.slots.is_subset(&before.slots),
        "uid slots left: {:?}",
        after.slots.difference(&before.slots)
    );
    assert!(
        after.run_dir.is_subset(&before.run_dir),
        "/run/agentbox entries left: {:?}",
        after.run_dir.difference(&before.run_dir)
    );
    assert!(
        after.tmp.is_subset(&before.tmp),
        "temp dirs left: {:?}",
        after.tmp.difference(&before.tmp)
    );
}

/// A python3 snippet run in a default sandbox; returns stdout.
pub fn python(flags: &[&str], code: &str) -> Output {
    let mut args: Vec<&str> = flags.to_vec();
    args.extend_from_slice(&["--", "python3", "-c", code]);
    run(&args)
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serialises the tests of one test binary that compare host state before and after a run.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A sandbox started in the background that printed its `ready` line.
pub struct Running {
    pub child: std::process::Child,
    pub stdout: std::io::BufReader<std::process::ChildStdout>,
}

/// Starts `agentbox run ARGS` with stdout piped and waits until the sandbox prints a line `ready`.
/// The caller owns the returned child and waits for it; only a failed read of its stdout (a test
/// failure anyway) leaves it unreaped.
#[allow(clippy::zombie_processes)]
pub fn spawn_ready(args: &[&str]) -> Running {
    use std::io::BufRead;
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let mut child = agentbox(&full)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn agentbox");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = stdout.read_line(&mut line).expect("read stdout");
        if n == 0 {
            let status = child.wait();
            panic!("sandbox ended before printing ready: {status:?}");
        }
        if line.trim() == "ready" {
            return Running { child, stdout };
        }
    }
}

/// Parent pid of `pid`, from /proc/PID/stat.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every live process descending from `root` (children, grandchildren...).
pub fn descendants(root: u32) -> Vec<u32> {
    let all: Vec<u32> = list(Path::new("/proc"))
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let mut found = vec![root];
    let mut changed = true;
    while changed {
        changed = false;
        for &pid in &all {
            if !found.contains(&pid) && parent_of(pid).is_some_and(|p| found.contains(&p)) {
                found.push(pid);
                changed = true;
            }
        }
    }
    found.retain(|&p| p != root);
    found
}

/// Live processes whose command line is exactly `argv` (for example `["sleep", "961.5"]`).
pub fn pids_running(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    list(Path::new("/proc"))
        .iter()
        .filter_map(|n| n.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

/// A line of /proc/PID/status, without its key (`Uid` → "268435456\t268435456\t...").
pub fn status_field(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}:"))
            .map(|v| v.trim().to_string())
    })
}

/// The cgroup leaf dirs of the sandbox whose supervisor (`agentbox run` process) has `pid`.
pub fn sandbox_cgroups(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("agentbox-{pid}-");
    let mut dirs = Vec::new();
    for controller in ["memory", "pids", "cpu", "unified"] {
        let base = Path::new("/sys/fs/cgroup").join(controller);
        for name in list(&base) {
            if name.starts_with(&prefix) {
                dirs.push(base.join(name));
            }
        }
    }
    dirs
}

/// `agentbox serve` started as a process on a free loopback port with one token; killed on drop.
pub struct ServeProcess {
    pub child: std::process::Child,
    /// Reaped already (by `stop`): nothing to kill on drop.
    stopped: bool,
    pub base: String,
    pub config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Writes a configuration (one token for `tenant`) and starts the server on it.
    pub fn start(token: &str, tenant: &str, max_sandboxes: u32, max_memory: u64) -> ServeProcess {
        let dir = tempfile::Builder::new()
            .prefix("serve-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("server.toml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nagentbox = \"{BIN}\"\n[[tokens]]\ntoken = \"{token}\"\ntenant = \"{tenant}\"\nmax_sandboxes = {max_sandboxes}\nmax_memory = {max_memory}\n"
            ),
        )
        .expect("write config");
        let mut server = ServeProcess {
            child: spawn_serve(&config),
            stopped: false,
            base: format!("http://127.0.0.1:{port}"),
            config,
            _dir: dir,
        };
        server.wait_healthy();
        server
    }

    /// Starts the server again on the same configuration (after it was killed).
    pub fn restart(&mut self) {
        self.child = spawn_serve(&self.config);
        self.stopped = false;
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while reqwest::blocking::get(format!("{}/health", self.base)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server never answered"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Sends `signal` (e.g. "-TERM", "-KILL") and reaps the server.
    pub fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
        self.stopped = true;
        self.child.wait().expect("wait server")
    }
}

fn spawn_serve(config: &Path) -> std::process::Child {
    agentbox(&["serve", "--config", config.to_str().expect("utf-8 path")])
        .spawn()
        .expect("spawn agentbox serve")
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// `agentbox_server::serve_on` on 127.0.0.1:0 in a thread of its own runtime; stopped on drop.
pub struct InProcessServer {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessServer {
    pub fn start(config: agentbox_server::Config) -> InProcessServer {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, addr) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .expect("tokio runtime")
                .block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind");
                    bound
                        .send(listener.local_addr().expect("addr"))
                        .expect("report address");
                    let shutdown = async move { stopped.await.unwrap_or_default() };
                    agentbox_server::serve_on(listener, config, shutdown)
                        .await
                        .expect("serve");
                });
        });
        InProcessServer {
            addr: addr.recv().expect("server address"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = self.thread.take().map(|t| t.join());
    }
}
