//! The wire protocol between the host and agentbox's microVM guest agent (`agentbox-guest`, PID 1 of
//! the guest), spoken over a virtio-serial port. Pure: no I/O except through the caller's
//! `Read + Write` in [`client`], no unsafe, no async runtime.
//!
//! # Wire format (version 1)
//!
//! Every frame is
//!
//! ```text
//! +----------------------+-----------+---------------------------+
//! | len: u32 big-endian  | kind: u8  | payload: len - 1 bytes    |
//! +----------------------+-----------+---------------------------+
//! ```
//!
//! `len` counts the kind byte and the payload, so `1 <= len <= MAX_FRAME_LEN` (1 MiB).
//!
//! | kind | name      | payload                                                      |
//! |------|-----------|--------------------------------------------------------------|
//! | 0x01 | control   | one JSON object: a [`Request`] (host → agent) or [`Reply`]    |
//! | 0x02 | stdin     | `id: u32 BE` + raw bytes for the command `id`'s stdin         |
//! | 0x03 | stdout    | `id: u32 BE` + raw bytes the command `id` wrote to stdout     |
//! | 0x04 | stderr    | `id: u32 BE` + raw bytes the command `id` wrote to stderr     |
//! | 0x05 | file data | `id: u32 BE` + raw bytes of the file transfer `id`            |
//! | 0x7f | sync      | exactly the 8 bytes `AGBXSYNC` ([`SYNC_FRAME`] is the frame)  |
//!
//! Stream data is never JSON-escaped; the `id` (chosen by the host, one per live request)
//! multiplexes concurrent commands and transfers on the one channel.
//!
//! # Errors and resynchronisation
//!
//! A frame whose length is intact but whose content is bad (unknown kind, JSON that is not a
//! message, a data frame shorter than its id) is consumed and reported as a non-fatal
//! [`DecodeError`]: the agent answers `Error{code: bad_request}` and keeps serving. A length that
//! is 0 or above the maximum means framing is lost: the decoder reports a fatal error once, then
//! discards every byte until it sees [`SYNC_FRAME`], and resumes after it. The agent answers a
//! sync frame with a fresh `Hello`, so the host resynchronises with [`client::Client::resync`]
//! (which first sends `MAX_FRAME_LEN + 4` zero bytes, enough to finish any frame a garbage length
//! may have started, then the sync frame), and a host that reconnects to a running guest does the
//! same ([`client::Client::attach`]).
//!
//! # Versions
//!
//! The agent speaks first with `Hello{version}`. The host refuses an agent of another major
//! version; minor versions only add optional fields or new messages, so unknown fields are
//! ignored (not denied) when decoding.
//!
//! - 1.1: `RunRequest::layered_spec` (layered `microvm+ns` mode) replaces the reserved
//!   `layered_ns` flag.

pub mod client;
mod decoder;
mod frame;
mod message;

pub use decoder::{DecodeError, Decoder};
pub use frame::{encode_control, encode_data, DataKind, EncodeError, Frame, FrameKind, SYNC_FRAME};
pub use message::{
    AgentInfo, DirEntry, ErrorCode, ExitRecord, FileInfo, FileKind, Hello, Reply, Request,
    ResourceUse, RunRequest, Usage, Version,
};

/// The version this crate speaks.
pub const PROTOCOL_VERSION: Version = Version { major: 1, minor: 1 };

/// The largest `len` field accepted: kind byte + payload.
pub const MAX_FRAME_LEN: u32 = 1 << 20;

/// The largest data chunk a sender should put in one stdin/stdout/stderr/file-data frame.
pub const DATA_CHUNK: usize = 64 * 1024;
