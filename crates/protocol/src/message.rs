//! The control messages: what the host asks ([`Request`]) and what the agent answers ([`Reply`]),
//! as serde data (JSON objects tagged by `"type"`). Bulk bytes never travel here: they go in data
//! frames (see the crate docs).

use serde::{Deserialize, Serialize};

/// A protocol version: hosts refuse agents of another `major`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What the agent says about itself and its guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
    /// The guest's uptime when the agent became ready: kernel start to serving, in ms.
    pub boot_time_ms: u64,
    /// The agent's own version (its crate version).
    pub agent_version: String,
    /// Whether the agent runs as PID 1 (a microVM guest) or as a plain process (tests).
    pub pid1: bool,
}

/// The agent's first frame, and its answer to every sync frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: Version,
    pub agent: AgentInfo,
}

/// One command to run. `env` is the complete environment (nothing is inherited from the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Absolute working directory.
    pub cwd: String,
    /// true: the host sends stdin data frames then `stdin_eof`; false: stdin is /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// Kill the command's process group with SIGKILL after this long.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Run as this uid (and `gid`, default the same number); default: the agent's (root).
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    /// Layered mode (`microvm+ns`, since 1.1): run `argv` inside agentbox's own `ns` tier within
    /// the guest, sandboxed as this `PolicySpec` JSON (chosen by the host) describes. The agent
    /// executes `agentbox __sandbox -- argv` from the guest's tools disk with the spec in
    /// `AGENTBOX_SPEC_JSON` and nothing else in its environment, so the command's environment,
    /// working directory and user travel in the spec: `env` must then be empty and `uid`/`gid`
    /// unset (else `bad_request`). Exit codes 123-127 are the helper's (setup failure, timeout,
    /// invalid spec, cannot execute, not found). An agent without a tools disk answers
    /// `Error{code: unsupported}`. (Replaces 1.0's reserved `layered_ns: bool`, which no agent
    /// accepted.)
    #[serde(default)]
    pub layered_spec: Option<String>,
}

/// Host → agent. Every request carries an `id` chosen by the host, unique among its live
/// requests; everything the agent sends about it carries the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Answer: `started`, then stdout/stderr data frames, then `exited`; or one `error`.
    Run {
        id: u32,
        #[serde(flatten)]
        run: RunRequest,
    },
    /// No more stdin for the command `id` (stdin bytes go in stdin data frames).
    StdinEof {
        id: u32,
    },
    /// Sends `signo` to the command's process group. No answer unless `id` is unknown.
    Kill {
        id: u32,
        signo: i32,
    },
    /// Creates/truncates `path` with `mode`; the content follows in file-data frames with this
    /// id, then `write_file_end`. Answer (to the end): `written` or `error`.
    WriteFile {
        id: u32,
        path: String,
        mode: u32,
    },
    WriteFileEnd {
        id: u32,
    },
    /// Answer: file-data frames, then `read_done`; or `error`.
    ReadFile {
        id: u32,
        path: String,
    },
    /// Answer: `dir_entries` or `error`.
    ListDir {
        id: u32,
        path: String,
    },
    /// Answer: `stat_result` or `error` (lstat: a symlink is reported as such).
    Stat {
        id: u32,
        path: String,
    },
    /// Answer: `resources`.
    ResourceUse {
        id: u32,
    },
    /// Answer: `powering_off`, then the guest syncs its disks and reboots (which ends QEMU).
    PowerOff {
        id: u32,
    },
}

impl Request {
    pub fn id(&self) -> u32 {
        match self {
            Request::Run { id, .. }
            | Request::StdinEof { id }
            | Request::Kill { id, .. }
            | Request::WriteFile { id, .. }
            | Request::WriteFileEnd { id }
            | Request::ReadFile { id, .. }
            | Request::ListDir { id, .. }
            | Request::Stat { id, .. }
            | Request::ResourceUse { id }
            | Request::PowerOff { id } => *id,
        }
    }
}

/// Resource use of one finished command (from wait4's rusage and the agent's clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub max_rss_kb: u64,
    pub user_ms: u64,
    pub sys_ms: u64,
    pub wall_ms: u64,
}

/// How a command ended: `code` when it exited, `signal` when a signal killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub mtime_ms: i64,
}

/// The guest as a whole: memory, load and uptime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceUse {
    pub mem_total_kb: u64,
    pub mem_available_kb: u64,
    pub load_1: f64,
    pub load_5: f64,
    pub load_15: f64,
    pub uptime_ms: u64,
    /// Commands the agent is running.
    pub running: u32,
}

/// The few kinds of failure a host branches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A frame or message the agent cannot use (also an unexpected or duplicate id).
    BadRequest,
    /// Framing was lost (bad length): the agent waits for a sync frame.
    Framing,
    NotFound,
    PermissionDenied,
    /// The program exists but cannot be executed (not executable, bad format).
    CannotExecute,
    Io,
    /// Valid but not supported by this agent or guest (e.g. `layered_spec` without a tools disk).
    Unsupported,
}

/// Agent → host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Hello(Hello),
    Started {
        id: u32,
        pid: i32,
    },
    Exited {
        id: u32,
        #[serde(flatten)]
        exit: ExitRecord,
    },
    Written {
        id: u32,
        size: u64,
    },
    ReadDone {
        id: u32,
        size: u64,
    },
    DirEntries {
        id: u32,
        entries: Vec<DirEntry>,
    },
    StatResult {
        id: u32,
        info: FileInfo,
    },
    Resources {
        id: u32,
        #[serde(flatten)]
        resources: ResourceUse,
    },
    PoweringOff {
        id: u32,
    },
    /// `id` is absent when the failed frame had none (garbage, framing errors).
    Error {
        id: Option<u32>,
        code: ErrorCode,
        message: String,
    },
}

impl Reply {
    /// The request id this reply is about (none for `hello` and id-less errors).
    pub fn id(&self) -> Option<u32> {
        match self {
            Reply::Hello(_) => None,
            Reply::Error { id, .. } => *id,
            Reply::Started { id, .. }
            | Reply::Exited { id, .. }
            | Reply::Written { id, .. }
            | Reply::ReadDone { id, .. }
            | Reply::DirEntries { id, .. }
            | Reply::StatResult { id, .. }
            | Reply::Resources { id, .. }
            | Reply::PoweringOff { id } => Some(*id),
        }
    }
}
