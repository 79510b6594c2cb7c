//! Files of a sandbox that agentbox reaches only through its init (a microVM: the files are in
//! the guest). `cp` and the API's file calls become `Request::File` to the supervisor, which the
//! VM host turns into the guest agent's file requests; host files travel as descriptors.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use agentbox_sys::msg;

use super::protocol::{decode, encode, Entry, FileOp, Reply, Request, MAX_MESSAGE};
use super::state::{Health, State};
use super::supervisor::error_from;
use crate::RunError;

/// Whether `state`'s files are reached through its init rather than through a root directory.
pub(crate) fn behind_agent(state: &State) -> bool {
    state.tier == agentbox_policy::Tier::Microvm.name()
        || state.tier == agentbox_policy::LAYERED_TIER
}

fn request(state: &State, op: FileOp, fd: Option<&File>) -> Result<(u64, Vec<Entry>), RunError> {
    let conn = msg::connect(&state.socket()).map_err(|e| match state.health() {
        Health::Failed => RunError::setup(format!("sandbox {}", state.id), "its supervisor died"),
        Health::Running => RunError::setup(format!("sandbox {}", state.id), e),
    })?;
    let fds: Vec<i32> = fd.iter().map(|f| f.as_raw_fd()).collect();
    msg::send(&conn, &encode(&Request::File(op)), &fds).map_err(|e| RunError::setup("send", e))?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (n, _) = msg::recv(&conn, &mut buf).map_err(|e| RunError::setup("receive", e))?;
    match decode::<Reply>(&buf[..n]) {
        Some(Reply::FileDone { size, entries }) => Ok((size, entries)),
        Some(Reply::Error { exit_code, message }) => Err(error_from(exit_code, message)),
        _ => Err(RunError::setup(
            format!("sandbox {}", state.id),
            "the supervisor ended the file request without an answer (the VM died?)",
        )),
    }
}

/// Copies the host file `host_src` to `sandbox_dst` (the exact path it becomes).
pub(crate) fn copy_in(state: &State, host_src: &Path, sandbox_dst: &Path) -> Result<u64, RunError> {
    let meta = std::fs::symlink_metadata(host_src)
        .map_err(|e| RunError::InvalidInSandbox(format!("cp: {}: {e}", host_src.display())))?;
    if !meta.is_file() {
        return Err(RunError::Unenforceable {
            tier: "microvm",
            field: "files",
            reason: format!(
                "{}: only regular files are copied into a microVM in this version (pack a tree \
                 with tar and unpack it with exec)",
                host_src.display()
            ),
        });
    }
    let dst = guest_path(sandbox_dst)?;
    let source = File::open(host_src)
        .map_err(|e| RunError::InvalidInSandbox(format!("cp: {}: {e}", host_src.display())))?;
    let mode = meta.permissions().mode() & 0o7777;
    request(state, FileOp::Write { path: dst, mode }, Some(&source)).map(|(size, _)| size)
}

/// Copies the guest file `sandbox_src` to `host_dst` (the exact path it becomes). A failed copy
/// leaves no file behind.
pub(crate) fn copy_out(
    state: &State,
    sandbox_src: &Path,
    host_dst: &Path,
) -> Result<u64, RunError> {
    let src = guest_path(sandbox_src)?;
    let target = host_dst;
    let out = File::create(target)
        .map_err(|e| RunError::InvalidInSandbox(format!("cp: {}: {e}", target.display())))?;
    let result = request(state, FileOp::Read { path: src }, Some(&out)).map(|(size, _)| size);
    if result.is_err() {
        let _ = std::fs::remove_file(target);
    }
    result
}

/// Writes `contents` to the guest file `path`.
pub(crate) fn write(state: &State, path: &Path, contents: &[u8]) -> Result<(), RunError> {
    let scratch = scratch_file(state)?;
    std::io::Write::write_all(&mut &scratch, contents)
        .and_then(|()| std::io::Seek::rewind(&mut &scratch))
        .map_err(|e| RunError::setup("scratch file", e))?;
    let op = FileOp::Write {
        path: guest_path(path)?,
        mode: 0o644,
    };
    request(state, op, Some(&scratch)).map(|_| ())
}

/// Reads at most `max` bytes of the guest file `path`.
pub(crate) fn read(state: &State, path: &Path, max: usize) -> Result<Vec<u8>, RunError> {
    let scratch = scratch_file(state)?;
    request(
        state,
        FileOp::Read {
            path: guest_path(path)?,
        },
        Some(&scratch),
    )?;
    let mut data = Vec::new();
    std::io::Seek::rewind(&mut &scratch)
        .and_then(|_| {
            std::io::Read::read_to_end(&mut std::io::Read::take(&scratch, max as u64), &mut data)
        })
        .map_err(|e| RunError::setup("scratch file", e))?;
    Ok(data)
}

/// Lists the guest directory `path`.
pub(crate) fn list(state: &State, path: &Path) -> Result<Vec<Entry>, RunError> {
    let (_, mut entries) = request(
        state,
        FileOp::List {
            path: guest_path(path)?,
        },
        None,
    )?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// An unlinked file in the sandbox's state directory (on /run: memory), for bytes in transit.
fn scratch_file(state: &State) -> Result<File, RunError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = state
        .dir()
        .join(format!("scratch-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| RunError::setup(format!("scratch file {}", path.display()), e))?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

fn guest_path(path: &Path) -> Result<String, RunError> {
    if !path.is_absolute() {
        return Err(RunError::invalid("path", path, "must be absolute"));
    }
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| RunError::invalid("path", path, "is not UTF-8"))
}
