//! What the agent executes for one run request: the command itself (found like execvp would), or
//! in layered mode (`layered_spec`) the `agentbox` binary of the tools disk, whose hidden
//! `__sandbox` helper runs the command inside agentbox's own `ns` tier in the guest kernel. Pure
//! apart from looking files up; it never spawns anything.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use agentbox_protocol::{ErrorCode, RunRequest};

/// The PATH used to find a program when the request's environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The binary the tools disk holds (at its root).
pub const TOOLS_BINARY: &str = "agentbox";
/// The hidden subcommand of `agentbox` that runs one sandbox from a spec (the same string as
/// `agentbox_runtime::HELPER_SUBCOMMAND`, which this small static binary does not link).
pub const HELPER_SUBCOMMAND: &str = "__sandbox";
/// The variable that carries the spec to the helper (`agentbox_runtime::SPEC_VARIABLE`).
pub const SPEC_VARIABLE: &str = "AGENTBOX_SPEC_JSON";

/// One process to spawn: everything `Command` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: PathBuf,
    pub arg0: String,
    pub args: Vec<String>,
    /// The complete environment (nothing is inherited from the agent).
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

type Refusal = (ErrorCode, String);

/// Turns a request into a [`Launch`]. `tools` is the mounted tools disk, if any: a layered
/// request without one is refused as `unsupported`.
pub fn plan(run: &RunRequest, tools: Option<&Path>) -> Result<Launch, Refusal> {
    if run.argv.is_empty() {
        return Err((ErrorCode::BadRequest, "argv is empty".into()));
    }
    let cwd = PathBuf::from(&run.cwd);
    if !cwd.is_dir() {
        return Err((
            ErrorCode::NotFound,
            format!("working directory {} is not a directory", run.cwd),
        ));
    }
    match &run.layered_spec {
        Some(spec) => plan_layered(run, spec, tools, cwd),
        None => plan_direct(run, cwd),
    }
}

fn plan_direct(run: &RunRequest, cwd: PathBuf) -> Result<Launch, Refusal> {
    let program = &run.argv[0];
    let path_var = run
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    Ok(Launch {
        program: resolve_program(program, path_var, &cwd)?,
        arg0: program.clone(),
        args: run.argv[1..].to_vec(),
        env: run.env.clone(),
        cwd,
        uid: run.uid,
        gid: run.gid.or(run.uid),
    })
}

/// `<tools>/agentbox __sandbox -- ARGV` with only the spec in its environment, as root (the
/// helper builds the namespaces; the command's user is the spec's `user`).
fn plan_layered(
    run: &RunRequest,
    spec: &str,
    tools: Option<&Path>,
    cwd: PathBuf,
) -> Result<Launch, Refusal> {
    if !run.env.is_empty() || run.uid.is_some() || run.gid.is_some() {
        return Err((
            ErrorCode::BadRequest,
            "a layered command's environment and user travel in its spec: env must be empty and uid/gid unset".into(),
        ));
    }
    if spec.trim().is_empty() {
        return Err((ErrorCode::BadRequest, "layered_spec is empty".into()));
    }
    let Some(tools) = tools else {
        return Err((
            ErrorCode::Unsupported,
            "layered mode needs the tools disk (agentbox.tools=DEV on the kernel command line), and this guest has none mounted".into(),
        ));
    };
    let helper = tools.join(TOOLS_BINARY);
    if !is_executable_file(&helper) {
        return Err((
            ErrorCode::Unsupported,
            format!(
                "layered mode: the tools disk has no executable {}",
                helper.display()
            ),
        ));
    }
    let mut args = vec![HELPER_SUBCOMMAND.to_string(), "--".to_string()];
    args.extend(run.argv.iter().cloned());
    Ok(Launch {
        program: helper,
        arg0: TOOLS_BINARY.to_string(),
        args,
        env: vec![(SPEC_VARIABLE.to_string(), spec.to_string())],
        cwd,
        uid: None,
        gid: None,
    })
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `program` like execvp would, so a missing or non-executable program is a typed error
/// before any fork.
fn resolve_program(program: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, Refusal> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![cwd.join(program)]
    } else {
        path_var
            .split(':')
            .map(|dir| {
                if dir.is_empty() {
                    Path::new(".")
                } else {
                    Path::new(dir)
                }
            })
            .map(|dir| cwd.join(dir).join(program))
            .collect()
    };
    let mut not_executable = None;
    for candidate in candidates {
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return Ok(candidate)
            }
            Ok(_) => not_executable = Some(candidate),
            Err(_) => {}
        }
    }
    Err(match not_executable {
        Some(path) => (
            ErrorCode::CannotExecute,
            format!("{} is not an executable file", path.display()),
        ),
        None => (ErrorCode::NotFound, format!("{program}: command not found")),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn request(argv: &[&str]) -> RunRequest {
        RunRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: "/".into(),
            stdin: false,
            timeout_ms: None,
            uid: None,
            gid: None,
            layered_spec: None,
        }
    }

    fn tools_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join(TOOLS_BINARY);
        std::fs::write(&helper, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn layered_runs_the_helper_with_only_the_spec() {
        let tools = tools_dir();
        let mut run = request(&["sh", "-c", "echo $0", "--"]);
        run.layered_spec = Some(r#"{"tier":"ns"}"#.into());
        let launch = plan(&run, Some(tools.path())).unwrap();
        assert_eq!(
            launch,
            Launch {
                program: tools.path().join("agentbox"),
                arg0: "agentbox".into(),
                args: ["__sandbox", "--", "sh", "-c", "echo $0", "--"]
                    .map(String::from)
                    .to_vec(),
                env: vec![("AGENTBOX_SPEC_JSON".into(), r#"{"tier":"ns"}"#.into())],
                cwd: "/".into(),
                uid: None,
                gid: None,
            }
        );
    }

    #[test]
    fn layered_refuses_without_tools_and_with_env_or_user() {
        let mut run = request(&["true"]);
        run.layered_spec = Some("{}".into());
        assert_eq!(plan(&run, None).unwrap_err().0, ErrorCode::Unsupported);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            plan(&run, Some(empty.path())).unwrap_err().0,
            ErrorCode::Unsupported
        );
        let tools = tools_dir();
        let mut with_env = run.clone();
        with_env.env = vec![("PATH".into(), "/bin".into())];
        assert_eq!(
            plan(&with_env, Some(tools.path())).unwrap_err().0,
            ErrorCode::BadRequest
        );
        let mut with_uid = run.clone();
        with_uid.uid = Some(1000);
        assert_eq!(
            plan(&with_uid, Some(tools.path())).unwrap_err().0,
            ErrorCode::BadRequest
        );
        run.layered_spec = Some(" ".into());
        assert_eq!(
            plan(&run, Some(tools.path())).unwrap_err().0,
            ErrorCode::BadRequest
        );
        run.layered_spec = Some("{}".into());
        run.argv.clear();
        assert_eq!(
            plan(&run, Some(tools.path())).unwrap_err().0,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn direct_resolves_the_program_and_keeps_env_and_user() {
        let tools = tools_dir();
        let mut run = request(&["agentbox", "x"]);
        run.env = vec![("PATH".into(), tools.path().display().to_string())];
        run.uid = Some(1000);
        let launch = plan(&run, None).unwrap();
        assert_eq!(launch.program, tools.path().join("agentbox"));
        assert_eq!(launch.arg0, "agentbox");
        assert_eq!(launch.args, ["x"]);
        assert_eq!(launch.env, run.env);
        assert_eq!((launch.uid, launch.gid), (Some(1000), Some(1000)));
        run.argv = vec!["no-such-program-here".into()];
        assert_eq!(plan(&run, None).unwrap_err().0, ErrorCode::NotFound);
        run.argv = vec!["/etc/hostname".into()];
        run.cwd = "/no/such/dir".into();
        assert_eq!(plan(&run, None).unwrap_err().0, ErrorCode::NotFound);
    }
}
