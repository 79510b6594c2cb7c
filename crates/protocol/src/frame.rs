//! Frames: the kinds, the decoded form and the encoders. Encoders refuse what a decoder would
//! refuse (a frame above [`MAX_FRAME_LEN`]), so a well-behaved peer never loses framing.

use serde::Serialize;

use crate::MAX_FRAME_LEN;

/// The byte after the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Control = 0x01,
    Stdin = 0x02,
    Stdout = 0x03,
    Stderr = 0x04,
    FileData = 0x05,
    Sync = 0x7f,
}

impl FrameKind {
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x01 => FrameKind::Control,
            0x02 => FrameKind::Stdin,
            0x03 => FrameKind::Stdout,
            0x04 => FrameKind::Stderr,
            0x05 => FrameKind::FileData,
            0x7f => FrameKind::Sync,
            _ => return None,
        })
    }
}

/// The kinds of data frame (`id: u32 BE` + raw bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    Stdin,
    Stdout,
    Stderr,
    FileData,
}

impl DataKind {
    pub fn frame_kind(self) -> FrameKind {
        match self {
            DataKind::Stdin => FrameKind::Stdin,
            DataKind::Stdout => FrameKind::Stdout,
            DataKind::Stderr => FrameKind::Stderr,
            DataKind::FileData => FrameKind::FileData,
        }
    }
}

/// The sync frame, byte for byte: `len = 9`, kind 0x7f, `AGBXSYNC`.
pub const SYNC_FRAME: [u8; 13] = [
    0, 0, 0, 9, 0x7f, b'A', b'G', b'B', b'X', b'S', b'Y', b'N', b'C',
];

/// One decoded frame; `M` is the control message type of this direction.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<M> {
    Control(M),
    Data {
        kind: DataKind,
        id: u32,
        bytes: Vec<u8>,
    },
    Sync,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("frame of {len} bytes is above the maximum of {MAX_FRAME_LEN}")]
    TooLarge { len: usize },
    #[error("serializing a control message: {0}")]
    Json(#[from] serde_json::Error),
}

fn header(out: &mut Vec<u8>, len: usize, kind: FrameKind) -> Result<(), EncodeError> {
    let len32 = u32::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_FRAME_LEN)
        .ok_or(EncodeError::TooLarge { len })?;
    out.extend_from_slice(&len32.to_be_bytes());
    out.push(kind as u8);
    Ok(())
}

/// Appends a control frame holding `message` as JSON to `out`.
pub fn encode_control<M: Serialize>(message: &M, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let json = serde_json::to_vec(message)?;
    header(out, 1 + json.len(), FrameKind::Control)?;
    out.extend_from_slice(&json);
    Ok(())
}

/// Appends a data frame (`id` + `bytes`) to `out`. Keep `bytes` at most [`crate::DATA_CHUNK`].
pub fn encode_data(
    kind: DataKind,
    id: u32,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    header(out, 1 + 4 + bytes.len(), kind.frame_kind())?;
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

impl<M: Serialize> Frame<M> {
    /// Appends this frame's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Frame::Control(m) => encode_control(m, out),
            Frame::Data { kind, id, bytes } => encode_data(*kind, *id, bytes, out),
            Frame::Sync => {
                out.extend_from_slice(&SYNC_FRAME);
                Ok(())
            }
        }
    }
}
