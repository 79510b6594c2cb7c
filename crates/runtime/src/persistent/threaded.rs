//! The operations on persistent sandboxes for callers that hold threads (the HTTP and MCP servers):
//! nothing here forks, changes the signal mask, or touches this process's stdio. `create` runs the
//! `agentbox` binary's hidden `__create` subcommand (a fresh single-threaded process does the
//! set-up); exec talks to the supervisor with pipes made here; files go through `openat2` in the
//! sandbox's root with this thread's file-system ids switched to the sandbox user's.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agentbox_policy::PolicySpec;
use agentbox_sys::resolve::{self, FileKind, OpenFlags};
use agentbox_sys::{creds, fd, msg};

use super::agent_files;
use super::protocol::{decode, encode, ExecRequest, Reply, Request, MAX_MESSAGE};
use super::state::{self, Health, State};
use super::supervisor::{error_from, CreateOptions};
use crate::helper::SPEC_VARIABLE;
use crate::RunError;

/// The hidden subcommand that creates a persistent sandbox from the environment.
pub const CREATE_SUBCOMMAND: &str = "__create";
/// The environment variable carrying the `CreateOptions` (JSON).
pub const OPTIONS_VARIABLE: &str = "AGENTBOX_CREATE_JSON";

/// Creates a sandbox by running `agentbox __create` (the binary at `agentbox`); returns its id.
pub fn create_with_helper(
    agentbox: &Path,
    spec: &PolicySpec,
    options: &CreateOptions,
) -> Result<String, RunError> {
    let output = Command::new(agentbox)
        .env_clear()
        .env(
            SPEC_VARIABLE,
            serde_json::to_string(spec).unwrap_or_default(),
        )
        .env(
            OPTIONS_VARIABLE,
            serde_json::to_string(options).unwrap_or_default(),
        )
        .arg(CREATE_SUBCOMMAND)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| RunError::setup(format!("run {}", agentbox.display()), e))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_string());
    }
    let message = String::from_utf8_lossy(&output.stderr)
        .trim()
        .trim_start_matches("agentbox: ")
        .to_string();
    Err(error_from(
        output
            .status
            .code()
            .unwrap_or(crate::exit_code::SETUP_FAILED),
        message,
    ))
}

/// Reads the options written by [`create_with_helper`]. Unknown fields are refused.
pub fn parse_options(json: &str) -> Result<CreateOptions, RunError> {
    serde_json::from_str(json).map_err(|e| RunError::invalid(OPTIONS_VARIABLE, json, e))
}

/// The outcome of a command whose output was captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output beyond `max_output` was dropped.
    pub truncated: bool,
    pub duration: Duration,
}

fn running(target: &str) -> Result<State, RunError> {
    let state = state::find(target)?;
    if state.health() == Health::Failed {
        return Err(RunError::setup(
            format!("sandbox {}", state.id),
            "its supervisor died",
        ));
    }
    Ok(state)
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Runs `request` in sandbox `target` with `stdin` as input; captures up to `max_output` bytes
/// of stdout and of stderr each.
pub fn exec_captured(
    target: &str,
    request: ExecRequest,
    stdin: &[u8],
    max_output: usize,
) -> Result<Captured, RunError> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut truncated = false;
    let (exit_code, duration) = exec_streaming(target, request, stdin, &mut |stream, chunk| {
        let sink = match stream {
            Stream::Stdout => &mut stdout,
            Stream::Stderr => &mut stderr,
        };
        let room = max_output.saturating_sub(sink.len());
        sink.extend_from_slice(&chunk[..chunk.len().min(room)]);
        truncated |= chunk.len() > room;
    })?;
    Ok(Captured {
        exit_code,
        stdout,
        stderr,
        truncated,
        duration,
    })
}

/// Runs `request` in sandbox `target` with `stdin` as input, handing each chunk of output to
/// `on_output` as it arrives; returns the exit code and the duration.
pub fn exec_streaming(
    target: &str,
    request: ExecRequest,
    stdin: &[u8],
    on_output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<(i32, Duration), RunError> {
    let started = Instant::now();
    let state = running(target)?;
    let conn = msg::connect(&state.socket())
        .map_err(|e| RunError::setup(format!("sandbox {}", state.id), e))?;
    let pipe = || fd::pipe().map_err(|e| RunError::setup("pipe", e));
    let (in_read, in_write) = pipe()?;
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let owner = state.uid_base + state.user;
    for end in [&in_read, &out_write, &err_write] {
        fd::give_pipe(end.as_raw_fd(), owner, owner)
            .map_err(|e| RunError::setup("pipe owner", e))?;
    }
    let request = ExecRequest {
        tty: false,
        stdin: true,
        ..request
    };
    msg::send(
        &conn,
        &encode(&Request::Exec(request)),
        &[
            in_read.as_raw_fd(),
            out_write.as_raw_fd(),
            err_write.as_raw_fd(),
        ],
    )
    .map_err(|e| RunError::setup("send", e))?;
    drop((in_read, out_write, err_write));
    let mut out = Some(out_read);
    let mut err = Some(err_read);
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut reply = None;
    // stdin is written by a thread of its own, so a command that writes before it reads cannot
    // deadlock against us; the pipe closes when all of it is written (or the command stops reading).
    let result: Result<(), RunError> = std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = fd::write_all(in_write.as_raw_fd(), stdin);
        });
        while reply.is_none() || out.is_some() || err.is_some() {
            let raw = |p: &Option<OwnedFd>| p.as_ref().map_or(-1, |p| p.as_raw_fd());
            let fds = [
                if reply.is_none() {
                    conn.as_raw_fd()
                } else {
                    -1
                },
                raw(&out),
                raw(&err),
            ];
            let ready = msg::poll_readable(&fds, -1).map_err(|e| RunError::setup("poll", e))?;
            for (slot, stream, is_ready) in [
                (&mut out, Stream::Stdout, ready[1]),
                (&mut err, Stream::Stderr, ready[2]),
            ] {
                if is_ready {
                    pull(slot, stream, on_output);
                }
            }
            if ready[0] {
                let (n, _) =
                    msg::recv(&conn, &mut buf).map_err(|e| RunError::setup("receive", e))?;
                reply = Some(decode::<Reply>(&buf[..n]));
            }
        }
        Ok(())
    });
    result?;
    match reply.flatten() {
        Some(Reply::Exited { exit_code, .. }) => Ok((exit_code, started.elapsed())),
        Some(Reply::Error { exit_code, message }) => Err(error_from(exit_code, message)),
        _ => Err(RunError::setup(
            "exec",
            "the sandbox ended while the command ran",
        )),
    }
}

/// Reads what is available on `pipe` and hands it on; closes the slot at end of file.
fn pull(pipe: &mut Option<OwnedFd>, stream: Stream, on_output: &mut dyn FnMut(Stream, &[u8])) {
    let mut chunk = [0u8; 65536];
    match pipe.as_ref().map(|p| fd::read(p.as_raw_fd(), &mut chunk)) {
        Some(Ok(n)) if n > 0 => on_output(stream, &chunk[..n]),
        _ => *pipe = None,
    }
}

/// Runs `f` with this thread's file-system ids set to the sandbox user's (files it creates belong
/// to that user; permission checks are that user's), then restores them.
fn as_sandbox_user<T>(state: &State, f: impl FnOnce() -> T) -> T {
    let owner = state.uid_base + state.user;
    let previous = creds::set_fs_ids(owner, owner);
    let result = f();
    creds::set_fs_ids(previous.0, previous.1);
    result
}

fn root_of(state: &State) -> Result<OwnedFd, RunError> {
    state.open_root()
}

fn in_sandbox(path: &Path, op: &str, e: agentbox_sys::SysError) -> RunError {
    RunError::InvalidInSandbox(format!("{op} {}: {}", path.display(), e.source))
}

fn absolute(path: &Path) -> Result<(), RunError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(RunError::invalid("path", path, "must be absolute"))
    }
}

/// Writes `contents` to `path` in sandbox `target` (created or truncated; the parent must exist).
pub fn write_file(target: &str, path: &Path, contents: &[u8]) -> Result<(), RunError> {
    absolute(path)?;
    let state = running(target)?;
    if agent_files::behind_agent(&state) {
        return agent_files::write(&state, path, contents);
    }
    let root = root_of(&state)?;
    as_sandbox_user(&state, || {
        let file = resolve::open_in_root(
            &root,
            path,
            OpenFlags::WRITE_CREATE_TRUNCATE.no_follow(),
            0o644,
        )
        .map_err(|e| in_sandbox(path, "write", e))?;
        fd::write_all(file.as_raw_fd(), contents).map_err(|e| in_sandbox(path, "write", e))
    })
}

/// Reads at most `max` bytes of `path` in sandbox `target`.
pub fn read_file(target: &str, path: &Path, max: usize) -> Result<Vec<u8>, RunError> {
    absolute(path)?;
    let state = running(target)?;
    if agent_files::behind_agent(&state) {
        return agent_files::read(&state, path, max);
    }
    let root = root_of(&state)?;
    as_sandbox_user(&state, || {
        let file = resolve::open_in_root(&root, path, OpenFlags::READ.non_blocking(), 0)
            .map_err(|e| in_sandbox(path, "read", e))?;
        let stat = resolve::fstat(&file).map_err(|e| in_sandbox(path, "read", e))?;
        if !stat.is_file() {
            return Err(RunError::InvalidInSandbox(format!(
                "read {}: not a regular file",
                path.display()
            )));
        }
        let mut data = Vec::new();
        std::fs::File::from(file)
            .take(max as u64)
            .read_to_end(&mut data)
            .map_err(|e| RunError::InvalidInSandbox(format!("read {}: {e}", path.display())))?;
        Ok(data)
    })
}

/// An entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
}

/// Lists directory `path` of sandbox `target`.
pub fn list_dir(target: &str, path: &Path) -> Result<Vec<DirEntry>, RunError> {
    absolute(path)?;
    let state = running(target)?;
    if agent_files::behind_agent(&state) {
        let entries = agent_files::list(&state, path)?;
        return Ok(entries
            .into_iter()
            .map(|e| DirEntry {
                name: e.name,
                kind: e.kind,
                size: e.size,
            })
            .collect());
    }
    let root = root_of(&state)?;
    as_sandbox_user(&state, || {
        let dir = resolve::open_in_root(&root, path, OpenFlags::DIRECTORY, 0)
            .map_err(|e| in_sandbox(path, "list", e))?;
        let names = resolve::read_dir_names(&dir).map_err(|e| in_sandbox(path, "list", e))?;
        let mut entries = Vec::new();
        for name in names {
            let Ok(entry) =
                resolve::open_in_root(&dir, Path::new(&name), OpenFlags::PATH.no_follow(), 0)
            else {
                continue;
            };
            let Ok(stat) = resolve::fstat(&entry) else {
                continue;
            };
            let kind = match stat.kind {
                FileKind::File => "file",
                FileKind::Directory => "dir",
                FileKind::Symlink => "symlink",
                _ => "other",
            };
            entries.push(DirEntry {
                name: name.to_string_lossy().into_owned(),
                kind: kind.into(),
                size: stat.size,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    })
}
