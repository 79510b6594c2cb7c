//! The messages of persistent sandboxes, as JSON, one per SOCK_SEQPACKET message.
//! - client (`agentbox exec`, `rm`, the server) ↔ supervisor, over `/run/agentbox/<id>/ctl.sock`;
//! - supervisor ↔ sandbox init, over the socket pair inherited at clone.
//!
//! Stdio descriptors travel with an `Exec` request (SCM_RIGHTS): the command writes straight into
//! the caller's pipes or terminal, with no copy through agentbox.

use serde::{Deserialize, Serialize};

/// Largest message accepted.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// What a client asks the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Run a command; carries the caller's stdin, stdout and stderr.
    Exec(ExecRequest),
    /// Deliver a signal to the command this connection started.
    Signal { signo: i32 },
    /// Tear the sandbox down.
    Stop,
    /// A file operation done by the sandbox's own agent (the microvm tier, whose files live in
    /// the guest): `Write` carries the source descriptor, `Read` the destination's.
    File(FileOp),
}

/// A file operation in a sandbox whose files agentbox reaches only through its init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "file", rename_all = "snake_case", deny_unknown_fields)]
pub enum FileOp {
    /// Creates or truncates `path` with `mode` from the descriptor sent along.
    Write { path: String, mode: u32 },
    /// Copies `path` into the descriptor sent along.
    Read { path: String },
    /// Lists directory `path`.
    List { path: String },
}

/// An entry of a directory listing done by an init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Added to (and overriding) the policy's environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory (default: the policy's).
    pub cwd: Option<String>,
    /// Wall-clock limit of this command, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Run the command on a new pseudo-terminal of the sandbox (its master comes back in
    /// `Reply::Started`) instead of the caller's stdio.
    #[serde(default)]
    pub tty: bool,
    /// Initial window size (rows, columns) of that terminal.
    pub tty_size: Option<(u16, u16)>,
    /// Whether the caller's stdin reaches the command (otherwise it reads /dev/null).
    #[serde(default)]
    pub stdin: bool,
}

/// What the supervisor answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// A `tty` command started; the message carries the terminal's master.
    Started,
    /// The command ended; `exit_code` follows `agentbox run`'s codes (124 on timeout).
    Exited {
        exit_code: i32,
        signal: Option<i32>,
        timed_out: bool,
    },
    /// The request failed; `exit_code` is agentbox's code for the failure.
    Error {
        exit_code: i32,
        message: String,
    },
    Stopped,
    /// A file operation finished: the bytes moved, or a directory's entries.
    FileDone {
        size: u64,
        entries: Vec<Entry>,
    },
}

/// What the supervisor asks the init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum InitRequest {
    Exec {
        id: u64,
        request: ExecRequest,
    },
    Kill {
        id: u64,
        signo: i32,
    },
    /// A file operation (only inits that hold their files behind an agent take these).
    File {
        id: u64,
        operation: FileOp,
    },
}

/// What the init reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum InitEvent {
    /// An engine tier's container is up (the ns init is ready as soon as it runs).
    Ready,
    /// A `tty` command started; the message carries the terminal's master.
    Started { id: u64 },
    Exited {
        id: u64,
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// A microVM is up: QEMU's process group and the VM's state directory, for the supervisor
    /// to clean up if the VM host itself dies.
    VmReady { qemu_group: i32, state_dir: String },
    /// A file operation finished.
    FileDone {
        id: u64,
        size: u64,
        entries: Vec<Entry>,
    },
    /// The command could not start; `kind` and `message` as in `launch::Failure`.
    Failed {
        id: u64,
        kind: String,
        message: String,
    },
}

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    serde_json::to_vec(message).unwrap_or_default()
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}
