//! A container's life: create (image imported first), attach, start, pump stdio, enforce the
//! timeout, wait, read the exit state, remove. It must never leave a container behind: `run`
//! removes its container on every path, also after errors and timeouts.

use std::cell::Cell;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use agentbox_oci::{EngineError, Outcome, Sandbox};
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, InspectContainerOptions, KillContainerOptions,
    RemoveContainerOptions, StartContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::endpoint::connect;
use crate::spec::{self, Stdin};
use crate::{image, setup, signals, ExecProcess, ENGINE};

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, DockerError>> + Send>>;
type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// The three descriptors a process is given.
pub(crate) struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Stdio {
    /// Duplicates of the caller's fds 0, 1 and 2.
    pub fn inherited() -> Result<Stdio, EngineError> {
        let dup = |fd: std::io::Result<OwnedFd>, n: u32| {
            fd.map_err(|e| EngineError::Io {
                path: format!("/proc/self/fd/{n}").into(),
                source: e,
            })
        };
        Ok(Stdio {
            stdin: dup(std::io::stdin().as_fd().try_clone_to_owned(), 0)?,
            stdout: dup(std::io::stdout().as_fd().try_clone_to_owned(), 1)?,
            stderr: dup(std::io::stderr().as_fd().try_clone_to_owned(), 2)?,
        })
    }
}

pub(crate) async fn run(
    socket: &Path,
    sandbox: &Sandbox,
    stdio: Stdio,
) -> Result<Outcome, EngineError> {
    let docker = connect(socket)?;
    create_container(&docker, sandbox, Stdin::Attached).await?;
    let result = run_created(&docker, sandbox, stdio).await;
    let removed = remove(&docker, &sandbox.id).await;
    let outcome = result?;
    removed?;
    Ok(outcome)
}

async fn run_created(
    docker: &Docker,
    sandbox: &Sandbox,
    stdio: Stdio,
) -> Result<Outcome, EngineError> {
    let id = sandbox.id.as_str();
    let options = AttachContainerOptions {
        stream: true,
        stdin: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let attached = docker
        .attach_container(id, Some(options))
        .await
        .map_err(|e| setup(format!("attaching to container {id}"), e))?;
    docker
        .start_container(id, None::<StartContainerOptions>)
        .await
        .map_err(|e| start_error(id, e))?;
    // A signal carried out with SIGKILL on the command's behalf; the supervisor's death ends the
    // run as its timeout does.
    let killed_for = Cell::new(None);
    let timed_out = tokio::select! {
        pumped = pump(attached.output, attached.input, stdio, sandbox.limits.timeout) => pumped?,
        () = signals::watch(docker, id, &killed_for) => true,
    };
    if timed_out {
        let kill = KillContainerOptions {
            signal: "SIGKILL".into(),
        };
        match docker.kill_container(id, Some(kill)).await {
            // 409: it ended meanwhile.
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => return Err(setup(format!("killing container {id} at its timeout"), e)),
        }
    }
    let wait = WaitContainerOptions {
        condition: "not-running".into(),
    };
    let mut waiting = docker.wait_container(id, Some(wait));
    match waiting.next().await {
        // bollard reports a non-zero exit code as this error; the code is read below.
        None | Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => {}
        Some(Err(e)) => return Err(setup(format!("waiting for container {id}"), e)),
    }
    let state = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| setup(format!("inspecting container {id}"), e))?
        .state
        .unwrap_or_default();
    let oom = state.oom_killed.unwrap_or(false);
    let code = state.exit_code.and_then(|c| i32::try_from(c).ok());
    if let (Some(signo), Some(137), false) = (killed_for.get(), code, timed_out) {
        return Ok(Outcome {
            code: None,
            signal: Some(signo),
            timed_out,
            oom,
        });
    }
    Ok(outcome(code, timed_out, oom))
}

/// Docker reports a process killed by signal N as exit code 128+N; only kills agentbox knows of
/// (its timeout, the memory limit) are reported as signals, so `exit 137` stays an exit code.
fn outcome(code: Option<i32>, timed_out: bool, oom: bool) -> Outcome {
    if timed_out {
        return Outcome {
            code: None,
            signal: Some(9),
            timed_out,
            oom,
        };
    }
    match code {
        Some(c) if oom && c > 128 => Outcome {
            code: None,
            signal: Some(c - 128),
            timed_out,
            oom,
        },
        _ => Outcome {
            code,
            signal: None,
            timed_out,
            oom,
        },
    }
}

/// Creates the container `sandbox.id` (not started). Any daemon warning (a limit the kernel
/// cannot apply, which Docker would silently drop) removes it again and fails the run.
async fn create_container(
    docker: &Docker,
    sandbox: &Sandbox,
    stdin: Stdin,
) -> Result<(), EngineError> {
    let tag = match &sandbox.image {
        Some(store_image) => image::ensure_image(docker, store_image).await?,
        None => image::ensure_host_image(docker, sandbox).await?,
    };
    let profile = agentbox_oci::seccomp::docker_profile(&sandbox.seccomp);
    let body = spec::container_body(sandbox, &tag, &profile, stdin)?;
    let options = CreateContainerOptions {
        name: Some(sandbox.id.clone()),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| setup(format!("creating container {}", sandbox.id), e))?;
    if !created.warnings.is_empty() {
        remove(docker, &sandbox.id).await?;
        return Err(EngineError::Unenforceable {
            engine: ENGINE,
            field: "limits",
            reason: format!(
                "the daemon would run the container weaker than asked: {}",
                created.warnings.join("; ")
            ),
        });
    }
    Ok(())
}

/// Copies stdin to the container and its output to stdout/stderr until the output ends or the
/// timeout passes (returns whether it passed).
async fn pump(
    mut output: Output,
    mut input: Input,
    stdio: Stdio,
    timeout: Option<Duration>,
) -> Result<bool, EngineError> {
    let stdin = stdio.stdin;
    let feeder = tokio::spawn(async move {
        let mut source = tokio::fs::File::from_std(File::from(stdin));
        // A closed container stdin ends the copy early; either way stdin is then closed.
        let _ = tokio::io::copy(&mut source, &mut input).await;
        let _ = input.shutdown().await;
    });
    let mut stdout = Sink::new(stdio.stdout);
    let mut stderr = Sink::new(stdio.stderr);
    let drain = async {
        while let Some(frame) = output.next().await {
            match frame {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    stdout.write(&message).await;
                }
                Ok(LogOutput::StdErr { message }) => stderr.write(&message).await,
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => return Err(setup("reading the container's output", e)),
            }
        }
        Ok(())
    };
    let timed_out = match timeout {
        Some(limit) => match tokio::time::timeout(limit, drain).await {
            Ok(drained) => drained.map(|()| false),
            Err(_) => Ok(true),
        },
        None => drain.await.map(|()| false),
    };
    feeder.abort();
    stdout.flush().await;
    stderr.flush().await;
    timed_out
}

/// One of the caller's output descriptors; write errors (a reader gone) stop the copy to it
/// but not the run.
struct Sink {
    file: tokio::fs::File,
    broken: bool,
}

impl Sink {
    fn new(fd: OwnedFd) -> Sink {
        Sink {
            file: tokio::fs::File::from_std(File::from(fd)),
            broken: false,
        }
    }

    async fn write(&mut self, data: &[u8]) {
        if !self.broken && self.file.write_all(data).await.is_err() {
            self.broken = true;
        }
    }

    async fn flush(&mut self) {
        if !self.broken && self.file.flush().await.is_err() {
            self.broken = true;
        }
    }
}

/// A start error of the command itself (missing, not executable) or of the setup.
fn start_error(id: &str, error: DockerError) -> EngineError {
    let message = match &error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    command_error(&message).unwrap_or_else(|| setup(format!("starting container {id}"), error))
}

/// runc's words for a command it could not execute.
fn command_error(message: &str) -> Option<EngineError> {
    let exec_failed = message.contains("exec:") || message.contains("exec failed");
    if message.contains("executable file not found")
        || (exec_failed && message.contains("no such file or directory"))
    {
        return Some(EngineError::Command {
            not_found: true,
            message: message.to_string(),
        });
    }
    if exec_failed && message.contains("permission denied") {
        return Some(EngineError::Command {
            not_found: false,
            message: message.to_string(),
        });
    }
    None
}

async fn remove(docker: &Docker, id: &str) -> Result<(), EngineError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    // 409: another client's removal is in progress. It may still be abandoned (a client killed
    // mid-request), so ask again until the container is gone.
    let mut conflicts = 0;
    loop {
        match docker.remove_container(id, Some(options.clone())).await {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) if conflicts < REMOVE_CONFLICT_RETRIES => {
                conflicts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(setup(format!("removing container {id}"), e)),
        }
    }
}

/// How many times (100 ms apart) a removal that conflicts with one in progress is asked again.
const REMOVE_CONFLICT_RETRIES: u32 = 100;

pub(crate) async fn create(socket: &Path, sandbox: &Sandbox) -> Result<(), EngineError> {
    let docker = connect(socket)?;
    create_container(&docker, sandbox, Stdin::Closed).await?;
    if let Err(e) = docker
        .start_container(&sandbox.id, None::<StartContainerOptions>)
        .await
    {
        let error = start_error(&sandbox.id, e);
        remove(&docker, &sandbox.id).await?;
        return Err(error);
    }
    Ok(())
}

pub(crate) async fn destroy(socket: &Path, sandbox_id: &str) -> Result<(), EngineError> {
    let docker = connect(socket)?;
    remove(&docker, sandbox_id).await
}

pub(crate) async fn exec(
    socket: &Path,
    sandbox_id: &str,
    process: &ExecProcess,
    stdio: Stdio,
) -> Result<Outcome, EngineError> {
    let docker = connect(socket)?;
    let cwd = process.cwd.to_str().ok_or_else(|| EngineError::Setup {
        step: format!("exec in {sandbox_id}"),
        message: format!("{}: not a UTF-8 path", process.cwd.display()),
    })?;
    let config = CreateExecOptions {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        cmd: Some(process.argv.clone()),
        env: Some(
            process
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        user: Some(format!("{}:{}", process.uid, process.uid)),
        working_dir: Some(cwd.to_string()),
        privileged: Some(false),
        ..Default::default()
    };
    let created = docker
        .create_exec(sandbox_id, config)
        .await
        .map_err(|e| setup(format!("creating an exec in {sandbox_id}"), e))?;
    let start = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: None,
    };
    let (output, input) = match docker.start_exec(&created.id, Some(start)).await {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        Ok(StartExecResults::Detached) => {
            return Err(setup(
                format!("starting an exec in {sandbox_id}"),
                "the daemon detached the exec",
            ))
        }
        Err(e) => return Err(start_error(sandbox_id, e)),
    };
    let (output, failure) = split_exec_failure(output).await;
    if let Some(message) = failure {
        return Err(command_error(&message).unwrap_or(EngineError::Setup {
            step: format!("starting an exec in {sandbox_id}"),
            message,
        }));
    }
    pump(output, input, stdio, None).await?;
    // The stream ends as the process exits; the daemon records the code just after.
    for _ in 0..200 {
        let inspected = docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| setup(format!("inspecting an exec in {sandbox_id}"), e))?;
        if inspected.running != Some(true) {
            let code = inspected.exit_code.and_then(|c| i32::try_from(c).ok());
            return Ok(outcome(code, false, false));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(setup(
        format!("waiting for an exec in {sandbox_id}"),
        "its output ended but the daemon still reports it running after 2 s",
    ))
}

/// Docker reports an exec that runc could not start (`OCI runtime exec failed: ...`) as the
/// first output frame rather than as an error: peel it off.
async fn split_exec_failure(mut output: Output) -> (Output, Option<String>) {
    let first = output.next().await;
    if let Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) = &first {
        let text = String::from_utf8_lossy(message);
        if text.starts_with("OCI runtime exec failed") {
            return (output, Some(text.trim().to_string()));
        }
    }
    let head = futures_util::stream::iter(first);
    (Box::pin(head.chain(output)), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_messages_map_to_command_errors() {
        let missing = "OCI runtime create failed: runc create failed: unable to start container \
                       process: exec: \"nope\": executable file not found in $PATH: unknown";
        assert!(matches!(
            command_error(missing),
            Some(EngineError::Command {
                not_found: true,
                ..
            })
        ));
        let absolute = "unable to start container process: exec: \"/nope\": stat /nope: no such \
                        file or directory: unknown";
        assert!(matches!(
            command_error(absolute),
            Some(EngineError::Command {
                not_found: true,
                ..
            })
        ));
        let denied = "unable to start container process: exec: \"/etc\": permission denied";
        assert!(matches!(
            command_error(denied),
            Some(EngineError::Command {
                not_found: false,
                ..
            })
        ));
        assert!(command_error("no such image").is_none());
    }

    #[test]
    fn only_known_kills_become_signals() {
        assert_eq!(outcome(Some(137), false, false).code, Some(137));
        assert_eq!(outcome(Some(137), false, true).signal, Some(9));
        let timed = outcome(None, true, false);
        assert!(timed.timed_out && timed.signal == Some(9));
    }
}
