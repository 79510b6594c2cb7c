//! agentbox's `docker` tier: a [`Sandbox`] run by a Docker Engine through its HTTP API on a unix
//! socket (API 1.41, Docker 20.10 and later; the `docker` CLI is never used). It owns the
//! translation of a sandbox into a container (`spec`; the seccomp allowlist becomes Docker's
//! profile through `agentbox_oci::seccomp::docker_profile`), the import of agentbox's image
//! directories (`image`), the policy fields Docker cannot enforce (`check`), and the
//! container's life: create, attach, start, wait, remove (`session`). It never starts or configures a daemon and never leaves a
//! container behind: every container it creates is removed, also on error and on timeout.
//!
//! Each public function builds its own current-thread tokio runtime: the caller is a
//! single-threaded process and must stay one (blocking file I/O of the stdio pumps runs on
//! tokio's blocking pool).
//!
//! Trust: the daemon runs as host root, so a container's root is host root unless the daemon
//! itself runs with `--userns-remap` (a daemon-wide setting no API call can choose; [`probe`]
//! reports it in its notes). Capabilities are all dropped, `no-new-privileges` and agentbox's
//! seccomp filter are set, and the root file system is read-only, but the uid is not remapped.

#![forbid(unsafe_code)]

mod check;
mod endpoint;
mod image;
mod session;
mod signals;
mod spec;

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentbox_oci::desc::ImageRef;
use agentbox_oci::{Availability, EngineError, Outcome, Sandbox};

pub use check::check;
pub use endpoint::endpoint;
pub use image::image_tag;
pub use spec::{container_body, Stdin};

/// The engine's name in errors and reports.
pub const ENGINE: &str = "docker";
/// The API version spoken: Docker 20.10's, which every later daemon still serves.
pub const API_VERSION: &str = "1.41";

/// One process to run in a persistent sandbox made by [`create`]. Its `env` is added to (and
/// overrides) the sandbox's environment: Docker's exec has no way to clear it.
pub use agentbox_oci::ExecProcess;

/// A Docker daemon at one unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    socket: PathBuf,
}

impl Engine {
    pub fn new(socket: impl Into<PathBuf>) -> Engine {
        Engine {
            socket: socket.into(),
        }
    }

    /// The daemon of [`endpoint`] (`DOCKER_HOST` or `/var/run/docker.sock`).
    pub fn from_env() -> Result<Engine, EngineError> {
        endpoint().map(Engine::new)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the daemon answers (within 2 s) and speaks API 1.41 or later.
    pub fn probe(&self) -> Availability {
        match endpoint::probe(&self.socket) {
            Ok(availability) => availability,
            Err(e) => endpoint::unavailable(e.to_string(), None),
        }
    }

    /// The daemon's tag for an image of agentbox's store, imported first if the daemon lacks it.
    pub fn ensure_image(&self, image: &ImageRef) -> Result<String, EngineError> {
        block_on(async {
            let docker = endpoint::connect(&self.socket)?;
            image::ensure_image(&docker, image).await
        })?
    }

    /// Runs `sandbox.argv` in a fresh container with the caller's stdin, stdout and stderr, and
    /// removes the container.
    pub fn run(&self, sandbox: &Sandbox) -> Result<Outcome, EngineError> {
        let stdio = session::Stdio::inherited()?;
        block_on(session::run(&self.socket, sandbox, stdio))?
    }

    /// [`Engine::run`] with the given descriptors as the command's stdin, stdout and stderr.
    pub fn run_with_stdio(
        &self,
        sandbox: &Sandbox,
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<Outcome, EngineError> {
        let stdio = session::Stdio {
            stdin,
            stdout,
            stderr,
        };
        block_on(session::run(&self.socket, sandbox, stdio))?
    }

    /// Starts a persistent sandbox running `sandbox.argv` (a long-running init) with no stdio,
    /// for [`Engine::exec`]; [`Engine::destroy`] removes it.
    pub fn create(&self, sandbox: &Sandbox) -> Result<(), EngineError> {
        block_on(session::create(&self.socket, sandbox))?
    }

    /// Runs one process in the persistent sandbox `sandbox_id`, as `process.uid`, with its
    /// capabilities, seccomp filter and no-new-privileges inherited from the container.
    pub fn exec(
        &self,
        sandbox_id: &str,
        process: &ExecProcess,
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<Outcome, EngineError> {
        let stdio = session::Stdio {
            stdin,
            stdout,
            stderr,
        };
        block_on(session::exec(&self.socket, sandbox_id, process, stdio))?
    }

    /// Kills and removes the persistent sandbox `sandbox_id` (done when it is already gone).
    pub fn destroy(&self, sandbox_id: &str) -> Result<(), EngineError> {
        block_on(session::destroy(&self.socket, sandbox_id))?
    }
}

/// [`Engine::probe`] of the daemon at [`endpoint`].
pub fn probe() -> Availability {
    match endpoint() {
        Ok(socket) => Engine::new(socket).probe(),
        Err(e) => endpoint::unavailable(e.to_string(), None),
    }
}

/// [`Engine::run`] on the daemon at [`endpoint`].
pub fn run(sandbox: &Sandbox) -> Result<Outcome, EngineError> {
    Engine::from_env()?.run(sandbox)
}

/// [`Engine::create`] on the daemon at [`endpoint`].
pub fn create(sandbox: &Sandbox) -> Result<(), EngineError> {
    Engine::from_env()?.create(sandbox)
}

/// [`Engine::exec`] on the daemon at [`endpoint`].
pub fn exec(
    sandbox_id: &str,
    process: &ExecProcess,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Outcome, EngineError> {
    Engine::from_env()?.exec(sandbox_id, process, stdin, stdout, stderr)
}

/// [`Engine::destroy`] on the daemon at [`endpoint`].
pub fn destroy(sandbox_id: &str) -> Result<(), EngineError> {
    Engine::from_env()?.destroy(sandbox_id)
}

/// Runs `future` to completion on a fresh current-thread runtime, then drops the runtime without
/// waiting for blocking reads still parked on the caller's stdin.
fn block_on<F: Future>(future: F) -> Result<F::Output, EngineError> {
    // I/O and timers only: the signal driver would need the process's signal globals, whose
    // descriptors a sandbox child has closed.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| setup("starting the tokio runtime", e))?;
    let output = runtime.block_on(future);
    runtime.shutdown_timeout(Duration::from_millis(50));
    Ok(output)
}

pub(crate) fn setup(step: impl Into<String>, error: impl std::fmt::Display) -> EngineError {
    EngineError::Setup {
        step: step.into(),
        message: error.to_string(),
    }
}
