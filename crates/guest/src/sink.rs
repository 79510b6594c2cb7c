//! The agent's side of the channel for sending: whole frames written under one lock, so the
//! threads of concurrent commands never interleave bytes of two frames.

use std::io::Write;
use std::sync::{Arc, Mutex};

use agentbox_protocol::{encode_control, encode_data, DataKind, ErrorCode, Reply, DATA_CHUNK};

#[derive(Clone)]
pub struct Sink {
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Sink {
    pub fn new(writer: Box<dyn Write + Send>) -> Self {
        Self {
            writer: Arc::new(Mutex::new(writer)),
        }
    }

    fn write_frame(&self, frame: &[u8]) {
        let mut writer = match self.writer.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        // A failed write means the host is gone; the reader sees the end of the channel.
        if let Err(e) = writer.write_all(frame).and_then(|()| writer.flush()) {
            eprintln!("agentbox-guest: writing to the channel: {e}");
        }
    }

    pub fn reply(&self, reply: &Reply) {
        let mut out = Vec::new();
        match encode_control(reply, &mut out) {
            Ok(()) => self.write_frame(&out),
            Err(e) => eprintln!("agentbox-guest: encoding a reply: {e}"),
        }
    }

    pub fn error(&self, id: Option<u32>, code: ErrorCode, message: impl Into<String>) {
        self.reply(&Reply::Error {
            id,
            code,
            message: message.into(),
        });
    }

    /// Sends `bytes` as data frames of at most [`DATA_CHUNK`] bytes.
    pub fn data(&self, kind: DataKind, id: u32, bytes: &[u8]) {
        let mut out = Vec::with_capacity(bytes.len().min(DATA_CHUNK) + 9);
        for chunk in bytes.chunks(DATA_CHUNK) {
            out.clear();
            if encode_data(kind, id, chunk, &mut out).is_ok() {
                self.write_frame(&out);
            }
        }
    }
}

/// The protocol's code for an I/O error.
pub fn io_code(e: &std::io::Error) -> ErrorCode {
    match e.kind() {
        std::io::ErrorKind::NotFound => ErrorCode::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        _ => ErrorCode::Io,
    }
}
