//! Persistent sandboxes: `agentbox create`, `exec`, `ls`, `rm`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;

use agentbox_policy::parse_duration;
use agentbox_runtime::exit_code;
use agentbox_runtime::persistent::{self, protocol::ExecRequest, CreateOptions, Health};

use crate::run_args::{fail, spec_from, PolicyArgs};

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// A name to use instead of the id in exec, rm and ls (letters, digits, '-', '_', '.').
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Remove the sandbox this long after its creation (e.g. 30m, 2h).
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// Remove the sandbox after this long without a command running in it (e.g. 10m).
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Pass this terminal's stdin to the command (without it the command reads /dev/null).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Run the command on a terminal of the sandbox's own (bash, python REPL, top): keys are passed
    /// raw, the window size follows this terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// The sandbox's id or name.
    #[arg(value_name = "ID")]
    target: String,
    /// Set an environment variable for this command (repeatable), on top of the sandbox's.
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    env: Vec<String>,
    /// Working directory inside the sandbox (default: the sandbox's).
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// Wall-clock limit of this command; at the limit it is killed and exec exits 124.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Ids or names of the sandboxes to remove.
    #[arg(value_name = "ID")]
    targets: Vec<String>,
    /// Remove every persistent sandbox.
    #[arg(long)]
    all: bool,
}

pub fn create(args: CreateArgs) -> i32 {
    let spec = match spec_from(&args.policy) {
        Ok(spec) => spec,
        Err(message) => return fail(exit_code::INVALID_INPUT, message),
    };
    let policy =
        match agentbox_runtime::select::validate(&spec, std::env::var("TERM").ok().as_deref()) {
            Ok(p) => p,
            Err(e) => return fail(e.exit_code(), format!("policy: {e}")),
        };
    let duration = |flag: &str, text: Option<&str>| -> Result<Option<Duration>, i32> {
        match text.map(|t| (t, parse_duration(t))) {
            None => Ok(None),
            Some((_, Some(d))) if d > Duration::ZERO => Ok(Some(d)),
            Some((text, _)) => Err(fail(
                exit_code::INVALID_INPUT,
                format!("{flag} {text:?}: not a duration (e.g. 30m)"),
            )),
        }
    };
    let ttl = match duration("--ttl", args.ttl.as_deref()) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let idle = match duration("--idle-timeout", args.idle_timeout.as_deref()) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match persistent::create(
        &policy,
        &CreateOptions {
            name: args.name,
            ttl,
            idle,
            tenant: None,
        },
    ) {
        Ok(id) => {
            println!("{id}");
            0
        }
        Err(e) => fail(e.exit_code(), e),
    }
}

pub fn exec(args: ExecArgs) -> i32 {
    let mut env = Vec::new();
    for item in &args.env {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
            _ => {
                return fail(
                    exit_code::INVALID_INPUT,
                    format!("--env {item:?}: expected K=V"),
                )
            }
        }
    }
    let timeout_ms = match args.timeout.as_deref().map(|t| (t, parse_duration(t))) {
        None => None,
        Some((_, Some(d))) if d > Duration::ZERO => Some(d.as_millis() as u64),
        Some((text, _)) => {
            return fail(
                exit_code::INVALID_INPUT,
                format!("--timeout {text:?}: not a duration (e.g. 30s)"),
            )
        }
    };
    let request = ExecRequest {
        argv: args.command,
        env,
        cwd: args.cwd,
        tty: args.tty,
        tty_size: if args.tty {
            persistent::terminal_size()
        } else {
            None
        },
        stdin: args.interactive,
        timeout_ms,
    };
    match persistent::exec(&args.target, request) {
        Ok(code) => code,
        Err(e) => fail(e.exit_code(), e),
    }
}

pub fn ls() -> i32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!(
        "{:<12}  {:<16}  {:<6}  {:<7}  {:>8}  {:>10}",
        "ID", "NAME", "TIER", "STATE", "AGE", "MEMORY"
    );
    for s in persistent::state::list() {
        let state = match s.health() {
            Health::Running => "running",
            Health::Failed => "failed",
        };
        let memory = s.memory_in_use().map_or("-".to_string(), |m| {
            format!("{:.1}M", m as f64 / (1 << 20) as f64)
        });
        println!(
            "{:<12}  {:<16}  {:<6}  {:<7}  {:>8}  {:>10}",
            s.id,
            s.name.as_deref().unwrap_or("-"),
            s.tier,
            state,
            age(now.saturating_sub(s.created)),
            memory
        );
    }
    0
}

fn age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub fn rm(args: RmArgs) -> i32 {
    let targets: Vec<String> = if args.all {
        persistent::state::list()
            .into_iter()
            .map(|s| s.id)
            .collect()
    } else if args.targets.is_empty() {
        return fail(
            exit_code::INVALID_INPUT,
            "rm: name at least one sandbox, or --all",
        );
    } else {
        args.targets
    };
    let mut code = 0;
    for target in targets {
        if let Err(e) = persistent::stop(&target) {
            code = fail(e.exit_code(), e);
        }
    }
    code
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a host path, or ID:/path inside a sandbox.
    #[arg(value_name = "SRC")]
    source: String,
    /// Destination: a host path, or ID:/path inside a sandbox (the exact path the source becomes).
    #[arg(value_name = "DST")]
    destination: String,
}

/// `ID:/path` → (sandbox, path); anything else is a host path.
fn split_target(arg: &str) -> Option<(&str, &str)> {
    let (id, path) = arg.split_once(':')?;
    (!id.is_empty() && !id.contains('/') && path.starts_with('/')).then_some((id, path))
}

pub fn cp(args: CpArgs) -> i32 {
    use std::path::Path;
    let result = match (split_target(&args.source), split_target(&args.destination)) {
        (Some(_), Some(_)) | (None, None) => {
            return fail(
                exit_code::INVALID_INPUT,
                "cp: exactly one of SRC and DST must be ID:/path",
            )
        }
        (None, Some((target, path))) => {
            persistent::copy_in(target, Path::new(&args.source), Path::new(path))
        }
        (Some((target, path)), None) => {
            persistent::copy_out(target, Path::new(path), Path::new(&args.destination))
        }
    };
    match result {
        Ok(_) => 0,
        Err(e) => fail(e.exit_code(), e),
    }
}

/// `agentbox __create`: the create helper for callers that hold threads.
pub fn create_from_environment() -> i32 {
    let variable = |name: &str| std::env::var(name).unwrap_or_default();
    let spec = match agentbox_runtime::helper::parse_spec(&variable(
        agentbox_runtime::helper::SPEC_VARIABLE,
    )) {
        Ok(spec) => spec,
        Err(e) => return fail(exit_code::INVALID_INPUT, format!("policy: {e}")),
    };
    let options = match persistent::parse_options(&variable(persistent::OPTIONS_VARIABLE)) {
        Ok(options) => options,
        Err(e) => return fail(e.exit_code(), e),
    };
    let policy = match agentbox_runtime::select::validate(&spec, None) {
        Ok(p) => p,
        Err(e) => return fail(e.exit_code(), format!("policy: {e}")),
    };
    match persistent::create(&policy, &options) {
        Ok(id) => {
            println!("{id}");
            0
        }
        Err(e) => fail(e.exit_code(), e),
    }
}

#[derive(Debug, Args)]
pub struct NetArgs {
    /// The sandbox's id or name.
    target: String,
    /// Admit this host name (exact, or `*.example.com` for its subdomains); repeatable.
    #[arg(long, value_name = "NAME")]
    allow: Vec<String>,
    /// Refuse this host name even where an allow rule matches; repeatable.
    #[arg(long, value_name = "NAME")]
    deny: Vec<String>,
    /// Print the lists as JSON.
    #[arg(long)]
    json: bool,
}

pub fn net(args: NetArgs) -> i32 {
    match persistent::network(&args.target, &args.allow, &args.deny) {
        Ok(list) if args.json => {
            println!("{}", serde_json::to_string(&list).unwrap_or_default());
            0
        }
        Ok(list) => {
            let show = |v: &[String]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join(" ")
                }
            };
            println!("allow  {}", show(&list.allow));
            println!("deny   {}", show(&list.deny));
            println!("cidrs  {}", show(&list.cidrs));
            0
        }
        Err(e) => fail(e.exit_code(), e),
    }
}
