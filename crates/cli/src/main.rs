//! The `agentbox` command. Parses flags and the policy file into one `PolicySpec`, validates it,
//! and hands it to the runtime. This process is single-threaded: it is the freshly exec'd process
//! that sets up the sandbox (the runtime refuses to fork from a threaded process).

mod eval_args;
mod image_cmd;
mod run_args;
mod sandbox_args;
mod wasm_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use agentbox_runtime::exit_code;

/// agentbox: run untrusted code in a sandbox, along a spectrum of isolation tiers behind one policy.
#[derive(Debug, Parser)]
#[command(name = "agentbox", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in a fresh sandbox and exit with its exit code.
    ///
    /// Exit codes: the command's own code, or 128+N when signal N killed it; 123 sandbox setup
    /// failed on this host; 124 the timeout ended the run; 125 invalid input (policy, flag, path);
    /// 126 the command cannot be executed; 127 the command does not exist in the sandbox.
    Run(Box<run_args::RunArgs>),
    /// Create a persistent sandbox (ns, oci, gvisor, docker or microvm tier) and print its id; its
    /// own supervisor holds it.
    Create(Box<sandbox_args::CreateArgs>),
    /// Run a command in a persistent sandbox, exactly as confined as every other command there.
    Exec(sandbox_args::ExecArgs),
    /// List persistent sandboxes: id, name, tier, state, age, memory in use.
    Ls,
    /// Stop and remove persistent sandboxes.
    Rm(sandbox_args::RmArgs),
    /// Copy a file or directory into (`cp HOSTPATH ID:/path`) or out of (`cp ID:/path HOSTPATH`) a
    /// persistent sandbox; paths resolve inside the sandbox's root, symlinks included.
    Cp(sandbox_args::CpArgs),
    /// Serve the HTTP API over persistent sandboxes (bearer tokens, tenants and quotas from the
    /// config file; see docs/api.md).
    Serve(ServeArgs),
    /// Serve the sandbox tools over MCP on stdin/stdout (Model Context Protocol, for agents),
    /// acting for one local tenant; see docs/api.md.
    Mcp(McpArgs),
    /// Show or change a persistent sandbox's egress allowlist (network mode allow); changes apply to
    /// its next connection.
    Net(sandbox_args::NetArgs),
    /// Attack every tier (and the peer tools installed here) with escape probes, checked from the
    /// host side, and measure their overhead: a table, and optionally JSON and an HTML page with
    /// the security-versus-overhead spectrum. See docs/eval.md.
    Eval(eval_args::EvalArgs),
    /// What this host can do: kernel features, tiers, runtimes, with a fix for each missing piece.
    Doctor(eval_args::DoctorArgs),
    /// Reclaim what sandboxes whose supervisor was killed left behind: cgroups (and any process
    /// still in them) and uid slots.
    Gc,
    /// Build, import, list and remove root filesystem images (Debian via debootstrap, OCI image
    /// layouts, docker save tarballs). Exit codes: 125 bad input, 127 debootstrap missing, 123 failure.
    Image {
        #[command(subcommand)]
        cmd: image_cmd::ImageCommand,
        /// The image store (default: $AGENTBOX_IMAGES, else /var/lib/agentbox/images).
        #[arg(long, global = true, value_name = "DIR")]
        store: Option<std::path::PathBuf>,
    },
    /// The set-up helper: runs a sandbox from a policy spec given as JSON in the environment
    /// variable AGENTBOX_SPEC_JSON. For callers that hold threads (the server), which must exec a
    /// fresh single-threaded process rather than fork themselves; see
    /// `agentbox_runtime::helper_command`.
    #[command(name = "__sandbox", hide = true)]
    Sandbox(SandboxArgs),
    /// The create helper: makes a persistent sandbox from a policy spec and create options given as
    /// JSON in AGENTBOX_SPEC_JSON and AGENTBOX_CREATE_JSON; prints its id. See
    /// `agentbox_runtime::persistent::create_with_helper`.
    #[command(name = "__create", hide = true)]
    CreateHelper,
    /// The escape probes of `agentbox eval`, run inside a sandbox: `__probe [--context JSON]
    /// [--only ID,ID] [--list]`; one JSON line per probe.
    #[command(name = "__probe", hide = true, disable_help_flag = true)]
    Probe {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// One row of `agentbox eval`, run as pid 1 of a throwaway pid and mount namespace: a cell spec
    /// (JSON) on stdin, the result on stdout.
    #[command(name = "__eval-cell", hide = true)]
    EvalCell,
    /// Runs one WebAssembly module with the given directories preopened: what an exec in a
    /// persistent wasm sandbox runs, inside that sandbox.
    #[command(name = "__wasm", hide = true)]
    Wasm(wasm_args::WasmArgs),
    /// The sentinel process of `agentbox eval`: sleeps until killed; MARKER identifies it.
    #[command(name = "__sentinel", hide = true)]
    Sentinel { marker: String },
    /// The first process of a persistent sandbox's container on an engine tier: reaps orphans
    /// until SIGTERM, SIGINT or SIGHUP.
    #[command(name = "__pause", hide = true)]
    Pause,
}

#[derive(Debug, clap::Args)]
struct SandboxArgs {
    #[arg(long, value_name = "FILE")]
    exit_record: Option<std::path::PathBuf>,
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The server's TOML configuration (listen address, agentbox binary, tokens and quotas).
    #[arg(long, value_name = "FILE")]
    config: std::path::PathBuf,
    /// Listen on this address instead of the configuration's (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, clap::Args)]
struct McpArgs {
    /// The tenant recorded on the sandboxes it creates; it sees only that tenant's sandboxes.
    #[arg(long, default_value = "local")]
    tenant: String,
    /// Sandboxes the tenant may hold at once.
    #[arg(long, default_value_t = 16)]
    max_sandboxes: u32,
    /// Bytes: the sum of the tenant's sandboxes' memory limits.
    #[arg(long, default_value_t = 64 << 30)]
    max_memory: u64,
    /// Bytes: the largest file written or read back.
    #[arg(long, default_value_t = agentbox_server::DEFAULT_MAX_BODY)]
    max_body: u64,
}

fn mcp(args: McpArgs) -> i32 {
    let agentbox = match std::env::current_exe() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("agentbox: this binary's path: {e}");
            return exit_code::SETUP_FAILED;
        }
    };
    let options = agentbox_server::mcp::StdioOptions {
        agentbox,
        tenant: args.tenant,
        max_sandboxes: args.max_sandboxes,
        max_memory: args.max_memory,
        max_body: args.max_body,
    };
    // Like `serve`, it holds threads from here on and never forks.
    run_async("mcp: ", agentbox_server::mcp::serve_stdio(options))
}

fn serve(args: ServeArgs) -> i32 {
    let mut config = match agentbox_server::Config::from_toml_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agentbox: {e}");
            return exit_code::INVALID_INPUT;
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    // The server holds threads from here on; it never forks (creates go through `__create`).
    run_async("", agentbox_server::serve(config))
}

/// Runs a server future on a multi-threaded tokio runtime; the exit code of `agentbox`.
fn run_async<E: std::fmt::Display>(
    context: &str,
    server: impl std::future::Future<Output = Result<(), E>>,
) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agentbox: tokio runtime: {e}");
            return exit_code::SETUP_FAILED;
        }
    };
    match runtime.block_on(server) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("agentbox: {context}{e}");
            exit_code::SETUP_FAILED
        }
    }
}

fn gc() -> i32 {
    match agentbox_runtime::gc::collect() {
        Ok(r) => {
            for dir in &r.cgroups {
                println!("removed cgroup {}", dir.display());
            }
            for id in &r.sandboxes {
                println!("reclaimed sandbox {id}");
            }
            for link in &r.networks {
                println!("removed network {link}");
            }
            for vm in &r.vms {
                println!("removed microVM state {vm}");
            }
            for name in &r.containers {
                println!("removed engine container {name}");
            }
            println!(
                "reclaimed {} sandbox(es), {} cgroup(s), {} uid slot(s), {} network(s), {} \
                 microVM(s) and {} engine container(s)",
                r.sandboxes.len(),
                r.cgroups.len(),
                r.slots,
                r.networks.len(),
                r.vms.len(),
                r.containers.len()
            );
            0
        }
        Err(e) => {
            eprintln!("agentbox: {e}");
            e.exit_code()
        }
    }
}

fn sandbox_helper(args: SandboxArgs) -> i32 {
    let json = std::env::var(agentbox_runtime::helper::SPEC_VARIABLE).unwrap_or_default();
    match agentbox_runtime::helper::parse_spec(&json) {
        Ok(spec) => run_args::run_spec(&spec, &args.command, args.exit_record.as_deref()),
        Err(e) => {
            eprintln!("agentbox: {e}");
            exit_code::INVALID_INPUT
        }
    }
}

fn pause() -> i32 {
    use agentbox_sys::{process, signal};
    if signal::block_all().is_err() {
        return 125;
    }
    loop {
        match signal::wait(None) {
            Ok(Some(r)) if [signal::SIGTERM, signal::SIGINT, signal::SIGHUP].contains(&r.signo) => {
                return 0
            }
            Ok(_) => while let Ok(Some(_)) = process::wait(-1, true) {},
            Err(_) => return 125,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("agentbox: {}", one_line(&e.to_string()));
            return ExitCode::from(exit_code::INVALID_INPUT as u8);
        }
    };
    let code = match cli.command {
        Command::Run(args) => run_args::run(*args),
        Command::Sandbox(args) => sandbox_helper(args),
        Command::CreateHelper => sandbox_args::create_from_environment(),
        Command::Probe { args } => agentbox_probe::main(&args),
        Command::EvalCell => agentbox_eval::harness::cell::cell_main(),
        Command::Wasm(args) => wasm_args::wasm(args),
        Command::Sentinel { .. } => agentbox_eval::harness::cell::sentinel_main(),
        Command::Pause => pause(),
        Command::Eval(args) => eval_args::eval(args),
        Command::Doctor(args) => eval_args::doctor(args),
        Command::Gc => gc(),
        Command::Image { cmd, store } => image_cmd::run(cmd, store),
        Command::Serve(args) => serve(args),
        Command::Mcp(args) => mcp(args),
        Command::Create(args) => sandbox_args::create(*args),
        Command::Exec(args) => sandbox_args::exec(args),
        Command::Ls => sandbox_args::ls(),
        Command::Rm(args) => sandbox_args::rm(args),
        Command::Cp(args) => sandbox_args::cp(args),
        Command::Net(args) => sandbox_args::net(args),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// clap's error text on one line: the message and its details, without the usage and help hints.
fn one_line(text: &str) -> String {
    let message: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let joined = message.join(" ");
    let joined = joined.trim_start_matches("error: ");
    if joined.is_empty() {
        "invalid arguments".to_string()
    } else {
        joined.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_errors_become_one_line() {
        let text = "error: the following required arguments were not provided:\n  <CMD>...\n\nUsage: agentbox run -- <CMD>...\n\nFor more information, try '--help'.\n";
        assert_eq!(
            super::one_line(text),
            "the following required arguments were not provided: <CMD>..."
        );
    }
}
