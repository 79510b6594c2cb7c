//! The agent's request loop: decode frames from the channel, dispatch each request, answer. A
//! bad frame gets an `error` and the loop goes on; framing loss is answered once and then the
//! decoder waits for the host's sync frame. Nothing the host sends can end the loop, only the
//! end of the channel or `power_off`.

use std::io::Read;
use std::time::Instant;

use agentbox_protocol::{
    AgentInfo, DataKind, Decoder, ErrorCode, Frame, Hello, Reply, Request, PROTOCOL_VERSION,
};

use crate::commands::Commands;
use crate::files::{self, Uploads};
use crate::sink::{io_code, Sink};

/// Why serving stopped.
pub enum Stopped {
    /// The channel reached its end (the host went away).
    ChannelClosed,
    /// The host asked for a power-off (already acknowledged).
    PowerOff,
}

pub struct Agent {
    pub pid1: bool,
    pub commands: Commands,
}

impl Agent {
    pub fn hello(&self) -> Reply {
        let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Reply::Hello(Hello {
            version: PROTOCOL_VERSION,
            agent: AgentInfo {
                kernel_release,
                boot_time_ms: files::uptime_ms(),
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                pid1: self.pid1,
            },
        })
    }

    /// Serves the channel until it ends or the host powers the guest off (saying hello first
    /// when `hello`).
    pub fn serve(
        &self,
        reader: &mut dyn Read,
        sink: &Sink,
        hello: bool,
    ) -> std::io::Result<Stopped> {
        if hello {
            sink.reply(&self.hello());
        }
        let mut decoder = Decoder::<Request>::new();
        let mut uploads = Uploads::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(Stopped::ChannelClosed),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let received = crate::trace::now();
            decoder.feed(&buf[..n]);
            while let Some(frame) = decoder.next_frame() {
                match frame {
                    Ok(frame) => {
                        if let Some(stopped) = self.handle(frame, &mut uploads, sink, received) {
                            return Ok(stopped);
                        }
                    }
                    Err(e) => sink.error(
                        e.id(),
                        if e.is_fatal() {
                            ErrorCode::Framing
                        } else {
                            ErrorCode::BadRequest
                        },
                        e.to_string(),
                    ),
                }
            }
        }
    }

    fn handle(
        &self,
        frame: Frame<Request>,
        uploads: &mut Uploads,
        sink: &Sink,
        received: Option<Instant>,
    ) -> Option<Stopped> {
        let answer = |result: Result<(), (ErrorCode, String)>, id: u32| {
            if let Err((code, message)) = result {
                sink.error(Some(id), code, message);
            }
        };
        match frame {
            Frame::Sync => sink.reply(&self.hello()),
            Frame::Data {
                kind: DataKind::Stdin,
                id,
                bytes,
            } => answer(self.commands.stdin(id, bytes), id),
            Frame::Data {
                kind: DataKind::FileData,
                id,
                bytes,
            } => answer(uploads.chunk(id, &bytes), id),
            Frame::Data { kind, id, .. } => sink.error(
                Some(id),
                ErrorCode::BadRequest,
                format!("{kind:?} frames only go from the agent to the host"),
            ),
            Frame::Control(request) => return self.request(request, uploads, sink, received),
        }
        None
    }

    fn request(
        &self,
        request: Request,
        uploads: &mut Uploads,
        sink: &Sink,
        received: Option<Instant>,
    ) -> Option<Stopped> {
        let fail =
            |id: u32, (code, message): (ErrorCode, String)| sink.error(Some(id), code, message);
        match request {
            Request::Run { id, run } => self.commands.start(id, run, sink, received),
            Request::StdinEof { id } => {
                if let Err(e) = self.commands.stdin_eof(id) {
                    fail(id, e);
                }
            }
            Request::Kill { id, signo } => {
                if let Err(e) = self.commands.kill(id, signo) {
                    fail(id, e);
                }
            }
            Request::WriteFile { id, path, mode } => {
                if let Err(e) = uploads.begin(id, path, mode) {
                    fail(id, e);
                }
            }
            Request::WriteFileEnd { id } => sink.reply(&uploads.end(id)),
            Request::ReadFile { id, path } => files::read_file(id, path, sink.clone()),
            Request::ListDir { id, path } => match files::list_dir(&path) {
                Ok(entries) => sink.reply(&Reply::DirEntries { id, entries }),
                Err(e) => fail(id, (io_code(&e), format!("{path}: {e}"))),
            },
            Request::Stat { id, path } => match files::stat(&path) {
                Ok(info) => sink.reply(&Reply::StatResult { id, info }),
                Err(e) => fail(id, (io_code(&e), format!("{path}: {e}"))),
            },
            Request::ResourceUse { id } => sink.reply(&Reply::Resources {
                id,
                resources: files::resource_use(self.commands.running()),
            }),
            Request::PowerOff { id } => {
                sink.reply(&Reply::PoweringOff { id });
                return Some(Stopped::PowerOff);
            }
        }
        None
    }
}
