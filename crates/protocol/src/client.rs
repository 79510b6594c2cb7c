//! The blocking host-side client over any `Read + Write` (the QEMU chardev's unix socket). It
//! owns the id space of its connection; it never spawns threads and never panics on what the
//! agent sends.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use crate::decoder::{DecodeError, Decoder};
use crate::frame::{encode_control, encode_data, DataKind, EncodeError, Frame, SYNC_FRAME};
use crate::message::{
    DirEntry, ErrorCode, ExitRecord, FileInfo, Hello, Reply, Request, ResourceUse, RunRequest,
    Version,
};
use crate::{DATA_CHUNK, MAX_FRAME_LEN, PROTOCOL_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("guest channel: {0}")]
    Io(#[from] io::Error),
    #[error("guest channel closed")]
    Closed,
    #[error("encoding a frame: {0}")]
    Encode(#[from] EncodeError),
    /// The agent's bytes lost framing; [`Client::resync`] recovers.
    #[error("decoding the agent's frames: {0}")]
    Decode(DecodeError),
    #[error("agent speaks protocol {agent}, this host {host}: major versions differ")]
    VersionMismatch { agent: Version, host: Version },
    #[error("agent error ({code:?}): {message}")]
    Agent { code: ErrorCode, message: String },
    #[error("unexpected reply from the agent: {0}")]
    Unexpected(String),
}

/// One connection to a guest agent.
pub struct Client<S> {
    stream: S,
    decoder: Decoder<Reply>,
    hello: Hello,
    next_id: u32,
    /// Frames read while waiting for another request's, in arrival order.
    pending: VecDeque<Frame<Reply>>,
}

impl<S: Read + Write> Client<S> {
    /// Waits for the agent's first `Hello` and checks its major version.
    pub fn connect(stream: S) -> Result<Self, ClientError> {
        let mut client = Self::unchecked(stream);
        client.hello = client.wait_hello()?;
        Ok(client)
    }

    /// For a channel whose agent already said hello (a host reconnecting to a running guest):
    /// resynchronises, then checks the `Hello` the agent answers with.
    pub fn attach(stream: S) -> Result<Self, ClientError> {
        let mut client = Self::unchecked(stream);
        client.resync()?;
        Ok(client)
    }

    fn unchecked(stream: S) -> Self {
        Self {
            stream,
            decoder: Decoder::new(),
            hello: Hello {
                version: PROTOCOL_VERSION,
                agent: crate::AgentInfo {
                    kernel_release: String::new(),
                    boot_time_ms: 0,
                    agent_version: String::new(),
                    pid1: false,
                },
            },
            next_id: 1,
            pending: VecDeque::new(),
        }
    }

    /// The agent's last `Hello`.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The underlying stream (tests write raw bytes through it).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Brings the agent's decoder back in step: `MAX_FRAME_LEN + 4` zero bytes finish any frame a
    /// garbage length started and then lose framing on purpose; the sync frame ends the agent's
    /// scan, and it answers with `Hello`. Every frame before that `Hello` is dropped.
    pub fn resync(&mut self) -> Result<(), ClientError> {
        let zeros = vec![0u8; 64 * 1024];
        let mut left = MAX_FRAME_LEN as usize + 4;
        while left > 0 {
            let n = left.min(zeros.len());
            self.stream.write_all(&zeros[..n])?;
            left -= n;
        }
        self.stream.write_all(&SYNC_FRAME)?;
        self.stream.flush()?;
        self.pending.clear();
        self.hello = self.wait_hello()?;
        Ok(())
    }

    fn wait_hello(&mut self) -> Result<Hello, ClientError> {
        loop {
            match self.read_frame() {
                Ok(Frame::Control(Reply::Hello(hello))) => {
                    if hello.version.major != PROTOCOL_VERSION.major {
                        return Err(ClientError::VersionMismatch {
                            agent: hello.version,
                            host: PROTOCOL_VERSION,
                        });
                    }
                    return Ok(hello);
                }
                Ok(_) | Err(ClientError::Decode(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let mut out = Vec::new();
        encode_control(request, &mut out)?;
        self.stream.write_all(&out)?;
        self.stream.flush()?;
        Ok(())
    }

    /// Sends `bytes` as data frames of at most [`DATA_CHUNK`] bytes each.
    pub fn send_data(&mut self, kind: DataKind, id: u32, bytes: &[u8]) -> Result<(), ClientError> {
        let mut out = Vec::new();
        for chunk in bytes.chunks(DATA_CHUNK) {
            out.clear();
            encode_data(kind, id, chunk, &mut out)?;
            self.stream.write_all(&out)?;
        }
        self.stream.flush()?;
        Ok(())
    }

    /// Starts a command and returns its id without waiting; follow with [`Client::wait`] (or
    /// [`Client::next_frame`] to multiplex several).
    pub fn spawn(&mut self, run: RunRequest) -> Result<u32, ClientError> {
        let id = self.next_id();
        self.send(&Request::Run { id, run })?;
        Ok(id)
    }

    pub fn write_stdin(&mut self, id: u32, bytes: &[u8]) -> Result<(), ClientError> {
        self.send_data(DataKind::Stdin, id, bytes)
    }

    pub fn close_stdin(&mut self, id: u32) -> Result<(), ClientError> {
        self.send(&Request::StdinEof { id })
    }

    /// Signals the command's process group; its `exited` follows as usual.
    pub fn kill(&mut self, id: u32, signo: i32) -> Result<(), ClientError> {
        self.send(&Request::Kill { id, signo })
    }

    /// Runs a command to completion: `stdin` (when given) is sent in full then closed, output is
    /// streamed to `stdout`/`stderr` as it arrives.
    pub fn run(
        &mut self,
        mut run: RunRequest,
        stdin: Option<&mut dyn Read>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<ExitRecord, ClientError> {
        run.stdin = stdin.is_some();
        let id = self.spawn(run)?;
        if let Some(input) = stdin {
            let mut buf = vec![0u8; DATA_CHUNK];
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                self.write_stdin(id, &buf[..n])?;
            }
            self.close_stdin(id)?;
        }
        self.wait(id, stdout, stderr)
    }

    /// Streams the output of the command `id` until it exits.
    pub fn wait(
        &mut self,
        id: u32,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<ExitRecord, ClientError> {
        self.wait_for(id, |frame| match frame {
            Frame::Data {
                kind: DataKind::Stdout,
                bytes,
                ..
            } => stdout.write_all(&bytes).map(|()| None).map_err(Into::into),
            Frame::Data {
                kind: DataKind::Stderr,
                bytes,
                ..
            } => stderr.write_all(&bytes).map(|()| None).map_err(Into::into),
            Frame::Control(Reply::Started { .. }) => Ok(None),
            Frame::Control(Reply::Exited { exit, .. }) => Ok(Some(exit)),
            other => Err(unexpected(other)),
        })
    }

    /// Writes `data` to `path` in the guest (created or truncated, with `mode`); returns the size.
    pub fn write_file(
        &mut self,
        path: &str,
        mode: u32,
        data: &mut dyn Read,
    ) -> Result<u64, ClientError> {
        let id = self.next_id();
        self.send(&Request::WriteFile {
            id,
            path: path.to_string(),
            mode,
        })?;
        let mut buf = vec![0u8; DATA_CHUNK];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.send_data(DataKind::FileData, id, &buf[..n])?;
        }
        self.send(&Request::WriteFileEnd { id })?;
        self.wait_for(id, |frame| match frame {
            Frame::Control(Reply::Written { size, .. }) => Ok(Some(size)),
            other => Err(unexpected(other)),
        })
    }

    /// Copies the guest file `path` into `out`; returns its size.
    pub fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64, ClientError> {
        let id = self.next_id();
        self.send(&Request::ReadFile {
            id,
            path: path.to_string(),
        })?;
        self.wait_for(id, |frame| match frame {
            Frame::Data {
                kind: DataKind::FileData,
                bytes,
                ..
            } => out.write_all(&bytes).map(|()| None).map_err(Into::into),
            Frame::Control(Reply::ReadDone { size, .. }) => Ok(Some(size)),
            other => Err(unexpected(other)),
        })
    }

    pub fn list_dir(&mut self, path: &str) -> Result<Vec<DirEntry>, ClientError> {
        let id = self.next_id();
        self.send(&Request::ListDir {
            id,
            path: path.to_string(),
        })?;
        self.wait_for(id, |frame| match frame {
            Frame::Control(Reply::DirEntries { entries, .. }) => Ok(Some(entries)),
            other => Err(unexpected(other)),
        })
    }

    pub fn stat(&mut self, path: &str) -> Result<FileInfo, ClientError> {
        let id = self.next_id();
        self.send(&Request::Stat {
            id,
            path: path.to_string(),
        })?;
        self.wait_for(id, |frame| match frame {
            Frame::Control(Reply::StatResult { info, .. }) => Ok(Some(info)),
            other => Err(unexpected(other)),
        })
    }

    pub fn resource_use(&mut self) -> Result<ResourceUse, ClientError> {
        let id = self.next_id();
        self.send(&Request::ResourceUse { id })?;
        self.wait_for(id, |frame| match frame {
            Frame::Control(Reply::Resources { resources, .. }) => Ok(Some(resources)),
            other => Err(unexpected(other)),
        })
    }

    /// Asks the guest to power off and waits for its acknowledgement (the channel closes after).
    pub fn power_off(&mut self) -> Result<(), ClientError> {
        let id = self.next_id();
        self.send(&Request::PowerOff { id })?;
        self.wait_for(id, |frame| match frame {
            Frame::Control(Reply::PoweringOff { .. }) => Ok(Some(())),
            other => Err(unexpected(other)),
        })
    }

    /// The next frame from the agent (frames set aside by a `wait_for` first). Frames the decoder
    /// rejects with its length intact are skipped.
    pub fn next_frame(&mut self) -> Result<Frame<Reply>, ClientError> {
        match self.pending.pop_front() {
            Some(frame) => Ok(frame),
            None => self.read_frame(),
        }
    }

    /// A frame already received but not handed out yet (set aside by a wait, or decodable from
    /// bytes already read), without reading: for callers that poll the stream themselves, which
    /// must drain these before waiting for the stream to become readable.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame<Reply>>, ClientError> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(Some(frame));
        }
        loop {
            match self.decoder.next_frame() {
                Some(Ok(frame)) => return Ok(Some(frame)),
                Some(Err(e)) if e.is_fatal() => return Err(ClientError::Decode(e)),
                Some(Err(_)) => continue,
                None => return Ok(None),
            }
        }
    }

    fn read_frame(&mut self) -> Result<Frame<Reply>, ClientError> {
        let mut buf = vec![0u8; DATA_CHUNK];
        loop {
            match self.decoder.next_frame() {
                Some(Ok(frame)) => return Ok(frame),
                Some(Err(e)) if e.is_fatal() => return Err(ClientError::Decode(e)),
                Some(Err(_)) => continue,
                None => {}
            }
            let n = match self.stream.read(&mut buf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.decoder.feed(&buf[..n]);
        }
    }

    /// Feeds the frames about `id` to `on_frame` until it returns a value; an `error` about `id`
    /// ends the wait. Frames about other ids are kept for later, id-less ones dropped.
    fn wait_for<T>(
        &mut self,
        id: u32,
        mut on_frame: impl FnMut(Frame<Reply>) -> Result<Option<T>, ClientError>,
    ) -> Result<T, ClientError> {
        let mut others = Vec::new();
        let result = loop {
            let frame = match self.next_frame() {
                Ok(frame) => frame,
                Err(e) => break Err(e),
            };
            match frame_id(&frame) {
                Some(fid) if fid == id => {}
                Some(_) => {
                    others.push(frame);
                    continue;
                }
                None => continue,
            }
            if let Frame::Control(Reply::Error { code, message, .. }) = frame {
                break Err(ClientError::Agent { code, message });
            }
            match on_frame(frame) {
                Ok(Some(value)) => break Ok(value),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        };
        for frame in others.into_iter().rev() {
            self.pending.push_front(frame);
        }
        result
    }
}

fn frame_id(frame: &Frame<Reply>) -> Option<u32> {
    match frame {
        Frame::Control(reply) => reply.id(),
        Frame::Data { id, .. } => Some(*id),
        Frame::Sync => None,
    }
}

fn unexpected(frame: Frame<Reply>) -> ClientError {
    ClientError::Unexpected(match frame {
        Frame::Control(reply) => format!("{reply:?}"),
        Frame::Data { kind, id, bytes } => {
            format!("{kind:?} data for {id} ({} bytes)", bytes.len())
        }
        Frame::Sync => "sync".to_string(),
    })
}
