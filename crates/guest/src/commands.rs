//! Running the host's commands: spawn (each in its own process group), stream their output, feed
//! their stdin, enforce their timeout, and reap every child of the agent, orphans included (as
//! PID 1 the agent inherits them all). It never blocks the channel's reader: stdin goes through a
//! queue to a writer thread per command that has stdin.
//!
//! Threads are few because each costs a lot under TCG: one I/O thread polls the output pipes of
//! every command (and sends `exited` once a command has exited and its output has ended), and one
//! reaper thread reaps. A command itself starts no thread unless it has stdin.
//!
//! Reaping: the reaper peeks at exited children (waitid WNOWAIT) and reaps them under the table
//! lock. `spawn` holds that lock from the clone to registration, so a child is always registered
//! before it can be reaped, and a child whose exec failed is reaped by `spawn` itself, never
//! stolen from under it. The reaper hands each registered exit to the I/O thread.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agentbox_protocol::{DataKind, ErrorCode, ExitRecord, Reply, RunRequest, Usage, DATA_CHUNK};
use agentbox_sys::guest::{
    reap_with_usage, spawn_in_own_group, wait_exited_any, ChildUsage, Spawn,
};
use agentbox_sys::process::Exit;

use crate::launch;
use crate::sink::Sink;
use crate::trace::Stamps;

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

/// What the I/O thread is handed, in order.
enum Event {
    /// A command whose `started` is sent: watch its output.
    Watch(Box<Watched>),
    /// The reaper reaped the command `id` at `at`.
    Exited {
        id: u32,
        exit: Exit,
        usage: ChildUsage,
        at: Instant,
    },
}

#[derive(Default)]
struct Table {
    /// Request ids of the registered children, by pid, for the reaper.
    by_pid: HashMap<i32, u32>,
    /// Live commands by request id.
    running: HashMap<u32, Running>,
    /// Bumped at each spawn: wakes a reaper that found no children.
    spawned: u64,
    /// For the I/O thread.
    inbox: Vec<Event>,
}

struct Shared {
    table: Mutex<Table>,
    spawned: Condvar,
    /// The write end of the I/O thread's wake-up pipe, and whether a byte is already in it.
    wake: File,
    wake_pending: AtomicBool,
}

#[derive(Clone)]
pub struct Commands {
    shared: Arc<Shared>,
    /// The mounted tools disk (holding `agentbox`), which layered requests need.
    tools: Option<std::path::PathBuf>,
}

/// One command as the I/O thread sees it.
struct Watched {
    id: u32,
    pid: i32,
    sink: Sink,
    /// Open until their end of file.
    stdout: Option<File>,
    stderr: Option<File>,
    started: Instant,
    /// When to kill the group, until the command has exited or been killed.
    deadline: Option<Instant>,
    timed_out: bool,
    exit: Option<(Exit, ChildUsage, Instant)>,
    /// Set once `exited` is sent: later output is read and dropped.
    exited_sent: bool,
    stamps: Option<Stamps>,
}

impl Watched {
    fn output_open(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }
}

impl Commands {
    /// Starts the reaper and I/O threads. `tools`: where the tools disk is mounted, if it is.
    pub fn new(tools: Option<std::path::PathBuf>) -> std::io::Result<Self> {
        let (wake_rx, wake_tx) = agentbox_sys::fd::pipe().map_err(|e| e.source)?;
        let commands = Self {
            shared: Arc::new(Shared {
                table: Mutex::new(Table::default()),
                spawned: Condvar::new(),
                wake: File::from(wake_tx),
                wake_pending: AtomicBool::new(false),
            }),
            tools,
        };
        let reaper = commands.clone();
        std::thread::spawn(move || reaper.reap_forever());
        let io = commands.clone();
        std::thread::spawn(move || io.watch_forever(File::from(wake_rx)));
        Ok(commands)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        match self.shared.table.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Hands `event` to the I/O thread (under the table lock, which the caller holds).
    fn post(&self, table: &mut Table, event: Event) {
        table.inbox.push(event);
        if !self.shared.wake_pending.swap(true, Ordering::SeqCst) {
            let _ = (&self.shared.wake).write(&[1]);
        }
    }

    fn reap_forever(&self) {
        loop {
            let generation = self.table().spawned;
            match wait_exited_any() {
                Ok(Some(pid)) => {
                    let mut table = self.table();
                    match reap_with_usage(pid) {
                        Ok(Some((exit, usage))) => {
                            if let Some(id) = table.by_pid.remove(&pid) {
                                let at = Instant::now();
                                self.post(
                                    &mut table,
                                    Event::Exited {
                                        id,
                                        exit,
                                        usage,
                                        at,
                                    },
                                );
                            }
                        }
                        Ok(None) => {}
                        Err(e) => eprintln!("agentbox-guest: reaping {pid}: {e}"),
                    }
                }
                Ok(None) => {
                    let table = self.table();
                    let _ = self.shared.spawned.wait_timeout_while(
                        table,
                        Duration::from_secs(1),
                        |t| t.spawned == generation,
                    );
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
    /// `received`: when its request was read (tracing only).
    pub fn start(&self, id: u32, run: RunRequest, sink: &Sink, received: Option<Instant>) {
        if let Err((code, message)) = self.try_start(id, run, sink, received) {
            sink.error(Some(id), code, message);
        }
    }

    fn try_start(
        &self,
        id: u32,
        run: RunRequest,
        sink: &Sink,
        received: Option<Instant>,
    ) -> Result<(), (ErrorCode, String)> {
        let mut stamps = Stamps::new(received);
        let launch = launch::plan(&run, self.tools.as_deref())?;
        // Names what could not be spawned: the command, or in layered mode the helper.
        let program = launch.arg0.as_str();
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                (
                    ErrorCode::BadRequest,
                    format!("{program}: a NUL byte in an argument, variable or path"),
                )
            })
        };
        let path = c(launch.program.as_os_str().as_bytes())?;
        let mut argv = vec![c(launch.arg0.as_bytes())?];
        for arg in &launch.args {
            argv.push(c(arg.as_bytes())?);
        }
        let env = launch
            .env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let cwd = c(launch.cwd.as_os_str().as_bytes())?;
        let io_error = |e: std::io::Error| (ErrorCode::Io, format!("{program}: {e}"));
        let pipe = || agentbox_sys::fd::pipe().map_err(|e| io_error(e.source));
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin_w, stdin_r): (Option<OwnedFd>, OwnedFd) = if run.stdin {
            let (r, w) = pipe()?;
            (Some(w), r)
        } else {
            (None, File::open("/dev/null").map_err(io_error)?.into())
        };
        let spawn = Spawn {
            program: &path,
            argv: &argv,
            env: &env,
            cwd: &cwd,
            uid: launch.uid,
            gid: launch.gid,
            stdio: [&stdin_r, &out_w, &err_w],
        };
        Stamps::mark(&mut stamps, "plan");
        let started = Instant::now();
        let pid = {
            let mut table = self.table();
            if table.running.contains_key(&id) {
                return Err((ErrorCode::BadRequest, format!("id {id} is already running")));
            }
            let pid = spawn_in_own_group(&spawn).map_err(|e| spawn_error(&e, program))?;
            let (stdin_tx, stdin_rx) = mpsc::channel();
            table.by_pid.insert(pid, id);
            table.running.insert(
                id,
                Running {
                    pgid: pid,
                    stdin: run.stdin.then_some(stdin_tx),
                },
            );
            table.spawned += 1;
            self.shared.spawned.notify_all();
            if let Some(stdin) = stdin_w {
                let stdin = File::from(stdin);
                std::thread::spawn(move || feed_stdin(stdin, stdin_rx));
            }
            pid
        };
        Stamps::mark(&mut stamps, "spawn");
        // The child's ends: only the child holds them now, so its exit ends the output.
        drop((stdin_r, out_w, err_w));
        sink.reply(&Reply::Started { id, pid });
        Stamps::mark(&mut stamps, "started_sent");
        let watched = Watched {
            id,
            pid,
            sink: sink.clone(),
            stdout: Some(File::from(out_r)),
            stderr: Some(File::from(err_r)),
            started,
            deadline: run.timeout_ms.map(|ms| started + Duration::from_millis(ms)),
            timed_out: false,
            exit: None,
            exited_sent: false,
            stamps,
        };
        let mut table = self.table();
        self.post(&mut table, Event::Watch(Box::new(watched)));
        Ok(())
    }

    /// The I/O thread: polls every command's output (and `wake` for new events), streams it,
    /// kills groups at their timeout and sends `exited` once a command has exited and its output
    /// has ended (or [`DRAIN_GRACE`] after its exit).
    fn watch_forever(&self, mut wake: File) {
        let mut watched: Vec<Watched> = Vec::new();
        // Exits reaped before their command reached this thread, by id.
        let mut early: HashMap<u32, (Exit, ChildUsage, Instant)> = HashMap::new();
        let mut buf = vec![0u8; DATA_CHUNK];
        let mut fds = Vec::new();
        let mut which = Vec::new();
        loop {
            fds.clear();
            which.clear();
            fds.push(wake.as_raw_fd());
            for (i, w) in watched.iter().enumerate() {
                if let Some(f) = &w.stdout {
                    fds.push(f.as_raw_fd());
                    which.push((i, DataKind::Stdout));
                }
                if let Some(f) = &w.stderr {
                    fds.push(f.as_raw_fd());
                    which.push((i, DataKind::Stderr));
                }
            }
            let next = watched
                .iter()
                .filter_map(|w| match w.exit {
                    None => w.deadline,
                    Some((_, _, at)) if !w.exited_sent => Some(at + DRAIN_GRACE),
                    Some(_) => None,
                })
                .min();
            let timeout = next.map_or(-1, |at| {
                let left = at.saturating_duration_since(Instant::now());
                (left.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
            });
            let ready = match agentbox_sys::msg::poll_readable(&fds, timeout) {
                Ok(ready) => ready,
                Err(e) => {
                    eprintln!("agentbox-guest: poll: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            for (&(i, kind), _) in which.iter().zip(&ready[1..]).filter(|(_, r)| **r) {
                let w = &mut watched[i];
                let pipe = match kind {
                    DataKind::Stdout => &mut w.stdout,
                    _ => &mut w.stderr,
                };
                let Some(from) = pipe else { continue };
                match from.read(&mut buf) {
                    Ok(0) => *pipe = None,
                    Ok(_) if w.exited_sent => {}
                    Ok(n) => {
                        Stamps::mark_once(&mut w.stamps, "first_output_read");
                        w.sink.data(kind, w.id, &buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => *pipe = None,
                }
            }
            if ready[0] {
                let mut drain = [0u8; 64];
                let _ = wake.read(&mut drain);
            }
            self.shared.wake_pending.store(false, Ordering::SeqCst);
            let events = std::mem::take(&mut self.table().inbox);
            for event in events {
                match event {
                    Event::Watch(w) => {
                        let mut w = *w;
                        w.exit = early.remove(&w.id);
                        watched.push(w);
                    }
                    Event::Exited {
                        id,
                        exit,
                        usage,
                        at,
                    } => match watched.iter_mut().find(|w| w.id == id && w.exit.is_none()) {
                        Some(w) => w.exit = Some((exit, usage, at)),
                        None => {
                            early.insert(id, (exit, usage, at));
                        }
                    },
                }
            }
            let now = Instant::now();
            for w in &mut watched {
                match w.exit {
                    None => {
                        if w.deadline.is_some_and(|d| now >= d) {
                            w.timed_out = true;
                            w.deadline = None;
                            let _ = agentbox_sys::process::kill(-w.pid, libc::SIGKILL);
                        }
                    }
                    Some((_, _, at)) => {
                        if !w.exited_sent && (!w.output_open() || now >= at + DRAIN_GRACE) {
                            self.finish(w);
                        }
                    }
                }
            }
            watched.retain(|w| !w.exited_sent || w.output_open());
        }
    }

    /// Sends the `exited` of `w` (whose exit is known) and forgets it as running.
    fn finish(&self, w: &mut Watched) {
        let Some((exit, usage, at)) = w.exit else {
            return;
        };
        Stamps::mark_at(&mut w.stamps, "reaped", at);
        let (code, signal) = match exit {
            Exit::Code(c) => (Some(c), None),
            Exit::Signal(s) => (None, Some(s)),
        };
        let record = ExitRecord {
            code,
            signal,
            timed_out: w.timed_out,
            usage: Usage {
                max_rss_kb: usage.max_rss_kb,
                user_ms: usage.user.as_millis() as u64,
                sys_ms: usage.system.as_millis() as u64,
                wall_ms: at.saturating_duration_since(w.started).as_millis() as u64,
            },
        };
        w.sink.reply(&Reply::Exited {
            id: w.id,
            exit: record,
        });
        // Only now: a request for the command that comes meanwhile (a stdin end, a kill the host
        // sent before it saw the exit) is answered "no running command", and that error must
        // not reach the host before the exit, which the host takes for the command's end.
        self.table().running.remove(&w.id);
        w.exited_sent = true;
        Stamps::mark(&mut w.stamps, "exited_sent");
        Stamps::report(w.stamps.take(), w.id);
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

fn feed_stdin(mut stdin: File, queue: Receiver<StdinChunk>) {
    for StdinChunk::Bytes(bytes) in queue {
        if stdin.write_all(&bytes).is_err() {
            return; // The command closed its stdin: drop the rest.
        }
    }
}

fn spawn_error(e: &agentbox_sys::SysError, program: &str) -> (ErrorCode, String) {
    let code = match e.source.raw_os_error() {
        Some(libc::ENOENT) => ErrorCode::NotFound,
        Some(libc::EACCES | libc::ENOEXEC | libc::ETXTBSY | libc::EISDIR) => {
            ErrorCode::CannotExecute
        }
        Some(libc::EPERM) => ErrorCode::PermissionDenied,
        _ => ErrorCode::Io,
    };
    (code, format!("{program}: {}", e.source))
}
