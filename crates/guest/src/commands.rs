//! Running the host's commands: spawn (each in its own process group), stream their output, feed
//! their stdin, enforce their timeout, and reap every child of the agent, orphans included (as
//! PID 1 the agent inherits them all). It never blocks the channel's reader: stdin goes through a
//! queue to a writer thread per command.
//!
//! Reaping: one reaper thread peeks at exited children (waitid WNOWAIT) and reaps them under the
//! table lock. `spawn` holds that lock from fork to registration, so a child is always registered
//! before it can be reaped, and a child whose exec failed is reaped by `std` itself (which waits
//! for it inside `spawn`), never stolen from under it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agentbox_protocol::{DataKind, ErrorCode, ExitRecord, Reply, RunRequest, Usage, DATA_CHUNK};
use agentbox_sys::guest::{reap_with_usage, wait_exited_any, ChildUsage};
use agentbox_sys::process::Exit;

use crate::launch;
use crate::sink::Sink;

/// How long after a command exits its output may still drain (a background child can hold the
/// pipes open forever).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

enum StdinChunk {
    Bytes(Vec<u8>),
}

struct Running {
    pgid: i32,
    stdin: Option<Sender<StdinChunk>>,
}

#[derive(Default)]
struct Table {
    /// Exit notifications by pid, for the reaper.
    by_pid: HashMap<i32, Sender<(Exit, ChildUsage)>>,
    /// Live commands by request id.
    running: HashMap<u32, Running>,
    /// Bumped at each spawn: wakes a reaper that found no children.
    spawned: u64,
}

#[derive(Clone, Default)]
pub struct Commands {
    shared: Arc<(Mutex<Table>, Condvar)>,
    /// The mounted tools disk (holding `agentbox`), which layered requests need.
    tools: Option<PathBuf>,
}

impl Commands {
    /// Starts the reaper thread. `tools`: where the tools disk is mounted, if it is.
    pub fn new(tools: Option<PathBuf>) -> Self {
        let commands = Self {
            tools,
            ..Self::default()
        };
        let reaper = commands.clone();
        std::thread::spawn(move || reaper.reap_forever());
        commands
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        match self.shared.0.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn reap_forever(&self) {
        loop {
            let generation = self.table().spawned;
            match wait_exited_any() {
                Ok(Some(pid)) => {
                    let mut table = self.table();
                    match reap_with_usage(pid) {
                        Ok(Some(status)) => {
                            if let Some(notify) = table.by_pid.remove(&pid) {
                                let _ = notify.send(status);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => eprintln!("agentbox-guest: reaping {pid}: {e}"),
                    }
                }
                Ok(None) => {
                    let table = self.table();
                    let cv = &self.shared.1;
                    let _ = cv.wait_timeout_while(table, Duration::from_secs(1), |t| {
                        t.spawned == generation
                    });
                }
                Err(e) => {
                    eprintln!("agentbox-guest: waitid: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    pub fn running(&self) -> u32 {
        self.table().running.len() as u32
    }

    /// Starts the command `id`; answers `started` (then output and `exited`) or one `error`.
    pub fn start(&self, id: u32, run: RunRequest, sink: &Sink) {
        if let Err((code, message)) = self.try_start(id, run, sink) {
            sink.error(Some(id), code, message);
        }
    }

    fn try_start(&self, id: u32, run: RunRequest, sink: &Sink) -> Result<(), (ErrorCode, String)> {
        let launch = launch::plan(&run, self.tools.as_deref())?;
        let mut command = Command::new(&launch.program);
        command
            .arg0(&launch.arg0)
            .args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.cwd)
            .stdin(if run.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(uid) = launch.uid {
            command.uid(uid);
        }
        if let Some(gid) = launch.gid {
            command.gid(gid);
        }
        // Names what could not be spawned: the command, or in layered mode the helper.
        let program = launch.arg0.as_str();

        let (exit_tx, exit_rx) = mpsc::channel();
        let started = Instant::now();
        let (mut child, pid) = {
            let mut table = self.table();
            if table.running.contains_key(&id) {
                return Err((ErrorCode::BadRequest, format!("id {id} is already running")));
            }
            let mut child = command.spawn().map_err(|e| spawn_error(&e, program))?;
            let pid = child.id() as i32;
            let (stdin_tx, stdin_rx) = mpsc::channel();
            table.by_pid.insert(pid, exit_tx);
            table.running.insert(
                id,
                Running {
                    pgid: pid,
                    stdin: run.stdin.then_some(stdin_tx),
                },
            );
            table.spawned += 1;
            self.shared.1.notify_all();
            if let Some(stdin) = child.stdin.take() {
                std::thread::spawn(move || feed_stdin(stdin, stdin_rx));
            }
            (child, pid)
        };
        sink.reply(&Reply::Started { id, pid });

        let (done_tx, done_rx) = mpsc::channel();
        let exited = Arc::new(AtomicBool::new(false));
        if let Some(out) = child.stdout.take() {
            let to = Pumped {
                kind: DataKind::Stdout,
                id,
                sink: sink.clone(),
                done: done_tx.clone(),
                exited: exited.clone(),
            };
            pump(out, to);
        }
        if let Some(err) = child.stderr.take() {
            let to = Pumped {
                kind: DataKind::Stderr,
                id,
                sink: sink.clone(),
                done: done_tx.clone(),
                exited: exited.clone(),
            };
            pump(err, to);
        }
        drop(done_tx);
        let this = self.clone();
        let sink = sink.clone();
        let timeout = run.timeout_ms.map(Duration::from_millis);
        std::thread::spawn(move || {
            let exit = this.supervise(id, pid, started, timeout, exit_rx, done_rx);
            // Output after `exited` (from a background child holding the pipes) is dropped.
            exited.store(true, Ordering::SeqCst);
            sink.reply(&Reply::Exited { id, exit });
        });
        Ok(())
    }

    /// Waits for the command's exit (killing its group at the timeout) and for its output to end.
    fn supervise(
        &self,
        id: u32,
        pid: i32,
        started: Instant,
        timeout: Option<Duration>,
        exit_rx: Receiver<(Exit, ChildUsage)>,
        done_rx: Receiver<()>,
    ) -> ExitRecord {
        let mut timed_out = false;
        let status = match timeout {
            Some(limit) => match exit_rx.recv_timeout(limit) {
                Ok(status) => Some(status),
                Err(RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    let _ = agentbox_sys::process::kill(-pid, libc::SIGKILL);
                    exit_rx.recv().ok()
                }
                Err(RecvTimeoutError::Disconnected) => None,
            },
            None => exit_rx.recv().ok(),
        };
        let wall = started.elapsed();
        // Both pumps end when every holder of the pipes is gone; wait a little for late output.
        let deadline = Instant::now() + DRAIN_GRACE;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        self.table().running.remove(&id);
        let (exit, usage) = status.unwrap_or((Exit::Signal(libc::SIGKILL), ChildUsage::default()));
        let (code, signal) = match exit {
            Exit::Code(c) => (Some(c), None),
            Exit::Signal(s) => (None, Some(s)),
        };
        ExitRecord {
            code,
            signal,
            timed_out,
            usage: Usage {
                max_rss_kb: usage.max_rss_kb,
                user_ms: usage.user.as_millis() as u64,
                sys_ms: usage.system.as_millis() as u64,
                wall_ms: wall.as_millis() as u64,
            },
        }
    }

    /// Queues stdin bytes for the command `id`.
    pub fn stdin(&self, id: u32, bytes: Vec<u8>) -> Result<(), (ErrorCode, String)> {
        let table = self.table();
        match table.running.get(&id).map(|r| &r.stdin) {
            Some(Some(tx)) => {
                let _ = tx.send(StdinChunk::Bytes(bytes));
                Ok(())
            }
            Some(None) => Err((
                ErrorCode::BadRequest,
                format!("command {id} has no stdin (or it was closed)"),
            )),
            None => Err((ErrorCode::NotFound, format!("no running command {id}"))),
        }
    }

    /// Closes the stdin of the command `id` once the queued bytes are written.
    pub fn stdin_eof(&self, id: u32) -> Result<(), (ErrorCode, String)> {
        match self.table().running.get_mut(&id) {
            Some(running) => {
                running.stdin = None;
                Ok(())
            }
            None => Err((ErrorCode::NotFound, format!("no running command {id}"))),
        }
    }

    pub fn kill(&self, id: u32, signo: i32) -> Result<(), (ErrorCode, String)> {
        let pgid = match self.table().running.get(&id) {
            Some(running) => running.pgid,
            None => return Err((ErrorCode::NotFound, format!("no running command {id}"))),
        };
        agentbox_sys::process::kill(-pgid, signo)
            .map_err(|e| (ErrorCode::BadRequest, e.to_string()))
    }

    /// SIGKILLs every running command's process group.
    pub fn kill_all(&self) {
        for running in self.table().running.values() {
            let _ = agentbox_sys::process::kill(-running.pgid, libc::SIGKILL);
        }
    }
}

fn feed_stdin(mut stdin: std::process::ChildStdin, queue: Receiver<StdinChunk>) {
    for StdinChunk::Bytes(bytes) in queue {
        if stdin.write_all(&bytes).is_err() {
            return; // The command closed its stdin: drop the rest.
        }
    }
}

/// Where a pump sends a command's output.
struct Pumped {
    kind: DataKind,
    id: u32,
    sink: Sink,
    done: Sender<()>,
    /// Set once `exited` is on its way: later output is read and dropped.
    exited: Arc<AtomicBool>,
}

fn pump(mut from: impl Read + Send + 'static, to: Pumped) {
    let Pumped {
        kind,
        id,
        sink,
        done,
        exited,
    } = to;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; DATA_CHUNK];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(_) if exited.load(Ordering::SeqCst) => {}
                Ok(n) => sink.data(kind, id, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

fn spawn_error(e: &std::io::Error, program: &str) -> (ErrorCode, String) {
    let code = match e.raw_os_error() {
        Some(libc::ENOENT) => ErrorCode::NotFound,
        Some(libc::EACCES | libc::ENOEXEC | libc::ETXTBSY | libc::EISDIR) => {
            ErrorCode::CannotExecute
        }
        Some(libc::EPERM) => ErrorCode::PermissionDenied,
        _ => ErrorCode::Io,
    };
    (code, format!("{program}: {e}"))
}
