//! The incremental frame decoder: bytes in, frames out. It never panics, whatever the input, and
//! holds at most one partial frame (≤ 4 + [`MAX_FRAME_LEN`] bytes) plus the bytes of the last
//! [`Decoder::feed`]. Its error policy is the crate's (see the crate docs): a bad frame with an
//! intact length is skipped; a bad length makes it drop bytes until the sync frame.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::frame::{DataKind, Frame, FrameKind, SYNC_FRAME};
use crate::MAX_FRAME_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fatal: a zero length (a frame has at least its kind byte).
    #[error("frame length 0: framing lost, waiting for a sync frame")]
    EmptyFrame,
    /// Fatal: a length above the maximum.
    #[error("frame length {len} above the maximum of {MAX_FRAME_LEN}: framing lost, waiting for a sync frame")]
    TooLarge { len: u32 },
    #[error("unknown frame kind {kind:#04x}")]
    UnknownKind { kind: u8 },
    /// A control frame whose JSON is not a message of this direction. `id` is its `"id"` field
    /// when the JSON had one, so the peer can answer about the right request.
    #[error("bad control message: {error}")]
    BadMessage { id: Option<u32>, error: String },
    #[error("data frame of kind {kind:#04x} has {len} payload bytes, fewer than its 4-byte id")]
    ShortData { kind: u8, len: usize },
    #[error("sync frame with a wrong payload")]
    BadSync,
}

impl DecodeError {
    /// Fatal errors mean framing is lost: the decoder now discards bytes until a sync frame.
    pub fn is_fatal(&self) -> bool {
        matches!(self, DecodeError::EmptyFrame | DecodeError::TooLarge { .. })
    }

    /// The request id the bad frame was about, when it can be known.
    pub fn id(&self) -> Option<u32> {
        match self {
            DecodeError::BadMessage { id, .. } => *id,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Framed,
    /// Framing lost: scanning for [`SYNC_FRAME`].
    Resync,
}

/// Decodes frames whose control messages are `M` ([`crate::Request`] on the agent,
/// [`crate::Reply`] on the host).
#[derive(Debug)]
pub struct Decoder<M> {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    state: State,
    _message: PhantomData<fn() -> M>,
}

impl<M: DeserializeOwned> Default for Decoder<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: DeserializeOwned> Decoder<M> {
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            state: State::Framed,
            _message: PhantomData,
        }
    }

    /// Appends received bytes. Drain [`Decoder::next_frame`] until `None` before the next feed.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Whether framing was lost and the decoder is waiting for a sync frame.
    pub fn is_resyncing(&self) -> bool {
        self.state == State::Resync
    }

    /// Bytes held and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame or error; `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame<M>, DecodeError>> {
        let avail = &self.buf[self.start..];
        if self.state == State::Resync {
            return match find(avail, &SYNC_FRAME) {
                Some(at) => {
                    self.start += at + SYNC_FRAME.len();
                    self.state = State::Framed;
                    Some(Ok(Frame::Sync))
                }
                None => {
                    // Keep only what could be the start of a sync frame.
                    let keep = avail.len().min(SYNC_FRAME.len() - 1);
                    self.start = self.buf.len() - keep;
                    None
                }
            };
        }
        let header: [u8; 4] = avail.get(..4)?.try_into().ok()?;
        let len = u32::from_be_bytes(header);
        if len == 0 || len > MAX_FRAME_LEN {
            self.state = State::Resync;
            // Step past the first byte so the scan always makes progress; a sync frame cannot
            // start here, since its length is valid.
            self.start += 1;
            return Some(Err(if len == 0 {
                DecodeError::EmptyFrame
            } else {
                DecodeError::TooLarge { len }
            }));
        }
        let end = 4 + len as usize;
        let frame = avail.get(4..end)?;
        let (kind, payload) = (frame[0], &frame[1..]);
        let decoded = decode_body(kind, payload);
        self.start += end;
        Some(decoded)
    }
}

fn decode_body<M: DeserializeOwned>(kind: u8, payload: &[u8]) -> Result<Frame<M>, DecodeError> {
    let data = |data_kind: DataKind| {
        let (id, bytes) = payload
            .split_first_chunk::<4>()
            .ok_or(DecodeError::ShortData {
                kind,
                len: payload.len(),
            })?;
        Ok(Frame::Data {
            kind: data_kind,
            id: u32::from_be_bytes(*id),
            bytes: bytes.to_vec(),
        })
    };
    match FrameKind::from_byte(kind) {
        None => Err(DecodeError::UnknownKind { kind }),
        Some(FrameKind::Control) => serde_json::from_slice::<M>(payload)
            .map(Frame::Control)
            .map_err(|e| DecodeError::BadMessage {
                id: id_of(payload),
                error: e.to_string(),
            }),
        Some(FrameKind::Stdin) => data(DataKind::Stdin),
        Some(FrameKind::Stdout) => data(DataKind::Stdout),
        Some(FrameKind::Stderr) => data(DataKind::Stderr),
        Some(FrameKind::FileData) => data(DataKind::FileData),
        Some(FrameKind::Sync) if payload == &SYNC_FRAME[5..] => Ok(Frame::Sync),
        Some(FrameKind::Sync) => Err(DecodeError::BadSync),
    }
}

/// The `"id"` of a JSON object that is not a valid message.
fn id_of(payload: &[u8]) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    u32::try_from(value.get("id")?.as_u64()?).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[path = "decoder_tests.rs"]
mod tests;
