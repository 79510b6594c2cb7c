//! A private Docker daemon for the tests: its own data root (on the real disk: overlay2 needs
//! it), exec root, pidfile and socket; no bridge, no iptables, its own managed containerd. Drop
//! stops it (SIGTERM, then SIGKILL), kills any process still naming its directory (containerd,
//! shims), unmounts what is left under it and removes it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DOCKERD: &str = "/usr/sbin/dockerd";

pub struct Dockerd {
    root: Option<tempfile::TempDir>,
    child: Child,
    pub socket: PathBuf,
    pub started_in: Duration,
}

impl Dockerd {
    pub fn start(extra: &[&str]) -> Dockerd {
        let root = tempfile::Builder::new()
            .prefix("agentbox-dockerd-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let dir = root.path().to_path_buf();
        let socket = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let begun = Instant::now();
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                // Or dockerd turns on the host's net.ipv4.ip_forward and leaves it on.
                "--ip-forward=false",
                "--group=root",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut daemon = Dockerd {
            root: Some(root),
            child,
            socket,
            started_in: Duration::ZERO,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ping(&daemon.socket) {
            if Instant::now() > deadline || daemon.child.try_wait().unwrap().is_some() {
                let log = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
                panic!("dockerd did not come up:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon.started_in = begun.elapsed();
        daemon
    }

    pub fn dir(&self) -> &Path {
        self.root.as_ref().unwrap().path()
    }
}

/// `GET /_ping` answered with `OK`.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// Pids of processes whose command line names `dir`.
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            out.push(pid);
        }
    }
    out
}

/// Mount points under `dir` in our mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&needle))
        .map(str::to_string)
        .collect()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        signal(self.child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let dir = self.dir().to_path_buf();
        // The managed containerd stops with dockerd; give it a moment, then force.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_under(&dir).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in processes_under(&dir) {
            eprintln!("dockerd helper: killing leftover process {pid}");
            signal(pid, "-KILL");
        }
        let mut leftovers = mounts_under(&dir);
        leftovers.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in leftovers {
            eprintln!("dockerd helper: unmounting leftover {mount}");
            let _ = Command::new("umount").args(["-l", &mount]).status();
        }
        if let Some(root) = self.root.take() {
            if let Err(e) = root.close() {
                eprintln!("dockerd helper: removing {}: {e}", dir.display());
            }
        }
    }
}
