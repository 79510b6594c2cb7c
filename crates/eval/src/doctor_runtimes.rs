//! The peer runtimes and tools `agentbox doctor` looks for: where each binary is, what its
//! `--version` says (within two seconds, killed otherwise), and whether the docker daemon answers
//! on its socket (connect only; nothing is sent).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Runtime;

/// How long one `--version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(2);
/// Directories searched after `PATH` (root's tools often live there and `PATH` may lack them).
const SBIN_DIRS: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// At most this much of each output stream is read.
const OUTPUT_LIMIT: u64 = 64 * 1024;

/// A runtime to look for: display name, binary, and how to install it on Debian.
struct Wanted {
    name: &'static str,
    binary: &'static str,
    install: &'static str,
}

const WANTED: [Wanted; 10] = [
    Wanted {
        name: "bubblewrap",
        binary: "bwrap",
        install: "apt-get install bubblewrap",
    },
    Wanted {
        name: "runc",
        binary: "runc",
        install: "apt-get install runc",
    },
    Wanted {
        name: "crun",
        binary: "crun",
        install: "apt-get install crun",
    },
    Wanted {
        name: "gVisor",
        binary: "runsc",
        install: "install runsc from https://gvisor.dev/docs/user_guide/install/",
    },
    Wanted {
        name: "systemd-nspawn",
        binary: "systemd-nspawn",
        install: "apt-get install systemd-container",
    },
    Wanted {
        name: "docker",
        binary: "docker",
        install: "apt-get install docker.io",
    },
    Wanted {
        name: "firejail",
        binary: "firejail",
        install: "apt-get install firejail",
    },
    Wanted {
        name: "qemu",
        binary: "qemu-system-x86_64",
        install: "apt-get install qemu-system-x86",
    },
    Wanted {
        name: "wasmtime",
        binary: "wasmtime",
        install: "curl https://wasmtime.dev/install.sh -sSf | bash",
    },
    Wanted {
        name: "hyperfine",
        binary: "hyperfine",
        install: "apt-get install hyperfine",
    },
];

/// Looks for every wanted runtime, running the `--version`s side by side.
pub(super) fn examine() -> Vec<Runtime> {
    let dirs = search_dirs(std::env::var_os("PATH").as_deref());
    std::thread::scope(|scope| {
        let handles: Vec<_> = WANTED
            .iter()
            .map(|w| {
                let dirs = &dirs;
                scope.spawn(move || examine_one(w, dirs))
            })
            .collect();
        handles
            .into_iter()
            .zip(WANTED.iter())
            .map(|(h, w)| h.join().unwrap_or_else(|_| not_found(w)))
            .collect()
    })
}

fn not_found(w: &Wanted) -> Runtime {
    Runtime {
        name: w.name.into(),
        binary: w.binary.into(),
        path: None,
        version: None,
        available: false,
        detail: String::new(),
        fix: Some(w.install.into()),
    }
}

fn examine_one(w: &Wanted, dirs: &[PathBuf]) -> Runtime {
    let Some(path) = find_in(dirs, w.binary) else {
        return not_found(w);
    };
    let (version, mut detail) = match run_version(&path) {
        Ok(output) => match version_from_output(&output) {
            Some(v) => (Some(v), String::new()),
            None => (None, "no version in --version output".to_string()),
        },
        Err(e) => (None, e),
    };
    let mut available = true;
    let mut fix = None;
    if w.binary == "docker" {
        let socket = docker_socket(std::env::var("DOCKER_HOST").ok().as_deref());
        let answer = match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(_) => format!("daemon answers at {}", socket.display()),
            Err(e) => {
                available = false;
                fix = Some("start the daemon: systemctl start docker (or dockerd &)".to_string());
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "no socket".to_string(),
                    std::io::ErrorKind::ConnectionRefused => "nothing listening".to_string(),
                    std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                    _ => e.to_string(),
                };
                format!("daemon not answering at {}: {why}", socket.display())
            }
        };
        detail = if detail.is_empty() {
            answer
        } else {
            format!("{detail}; {answer}")
        };
    }
    Runtime {
        name: w.name.into(),
        binary: w.binary.into(),
        path: Some(path.display().to_string()),
        version,
        available,
        detail,
        fix,
    }
}

/// `PATH`'s directories, then the sbin directories it lacks.
pub(super) fn search_dirs(path: Option<&std::ffi::OsStr>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path
        .map(|p| {
            std::env::split_paths(p)
                .filter(|d| d.is_absolute())
                .collect()
        })
        .unwrap_or_default();
    for sbin in SBIN_DIRS {
        if !dirs.iter().any(|d| d == Path::new(sbin)) {
            dirs.push(PathBuf::from(sbin));
        }
    }
    dirs
}

/// The first executable regular file named `binary` in `dirs`.
pub(super) fn find_in(dirs: &[PathBuf], binary: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(binary)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The daemon socket: `DOCKER_HOST` when it names a unix socket, else the default.
pub(super) fn docker_socket(docker_host: Option<&str>) -> PathBuf {
    docker_host
        .and_then(|h| h.strip_prefix("unix://"))
        .map_or_else(|| PathBuf::from(DOCKER_SOCKET), PathBuf::from)
}

/// Runs `path --version` and returns stdout followed by stderr. A command that has not exited
/// after `VERSION_TIMEOUT` is killed (it is our own child, not yet reaped, so its pid is still ours).
fn run_version(path: &Path) -> Result<String, String> {
    let mut child = Command::new(path)
        .arg("--version")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("--version could not start: {e}"))?;
    // Each stream is drained by its own thread, so a chatty command cannot block on a full pipe.
    // A grandchild that keeps a pipe open only keeps its reader thread waiting, never us.
    let (tx, rx) = mpsc::channel();
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for (index, stream) in streams.into_iter().enumerate() {
        let Some(stream) = stream else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stream.take(OUTPUT_LIMIT).read_to_end(&mut buf);
            let _ = tx.send((index, buf));
        });
    }
    drop(tx);
    let deadline = Instant::now() + VERSION_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "--version gave no answer within {} s",
                    VERSION_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("--version: {e}")),
        }
    }
    let mut outputs = [Vec::new(), Vec::new()];
    let grace = Instant::now() + Duration::from_millis(200);
    for _ in 0..2 {
        let wait = deadline
            .max(grace)
            .saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok((index, buf)) => outputs[index] = buf,
            Err(_) => break,
        }
    }
    let [stdout, stderr] = outputs;
    Ok(format!(
        "{}\n{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    ))
}

/// The version in the first non-empty line of a `--version` output: the first word that starts
/// with a digit (a leading `v` dropped), or a gVisor-style `release-...`.
/// `Docker version 24.0.7, build afdd53b` gives `24.0.7`; `systemd 252 (252.22-1)` gives `252`.
pub(super) fn version_from_output(output: &str) -> Option<String> {
    let line = output.lines().map(str::trim).find(|l| !l.is_empty())?;
    line.split_whitespace()
        .map(|word| word.trim_matches(|c: char| matches!(c, ',' | ';' | '(' | ')' | '"' | '\'')))
        .find_map(|word| {
            let bare = word.strip_prefix('v').unwrap_or(word);
            if bare.starts_with(|c: char| c.is_ascii_digit()) || word.starts_with("release-") {
                Some(bare.trim_end_matches(['.', ':']).to_string())
            } else {
                None
            }
        })
}
