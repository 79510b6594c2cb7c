//! `agentbox eval` and `agentbox doctor`, and the hidden helpers of the evaluation (`__eval-cell`,
//! `__sentinel`).

use clap::Args;

use agentbox_eval::harness::{self, Options};
use agentbox_eval::{doctor, report};
use agentbox_runtime::exit_code;

use crate::run_args::fail;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Rows to evaluate, comma-separated: agentbox tiers (ns, chroot) and peers (peer:chroot,
    /// peer:unshare, peer:bwrap, ...; or their short names). Default: all.
    #[arg(long, value_delimiter = ',', value_name = "ROWS")]
    tiers: Option<Vec<String>>,
    /// Probes to run, comma-separated (see `agentbox __probe --list`). Default: all.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    probes: Option<Vec<String>>,
    /// Fewer benchmark runs, and no resource probes (fork, memory, disk, inode, CPU).
    #[arg(long)]
    quick: bool,
    /// No benchmarks at all: only the probes.
    #[arg(long)]
    no_bench: bool,
    /// Write the report as JSON (schema: docs/eval.md).
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Write a self-contained HTML page with the charts.
    #[arg(long, value_name = "FILE")]
    html: Option<std::path::PathBuf>,
}

pub fn eval(args: EvalArgs) -> i32 {
    let options = Options {
        rows: args.tiers,
        probes: args.probes,
        quick: args.quick,
        no_bench: args.no_bench,
        progress: agentbox_sys_is_terminal(2),
    };
    let report = match harness::run(&options) {
        Ok(r) => r,
        Err(e) => return fail(exit_code::INVALID_INPUT, e),
    };
    let color = agentbox_sys_is_terminal(1);
    print!("{}", report::text::render_text(&report, color));
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, report::json::to_json(&report)) {
            return fail(exit_code::SETUP_FAILED, format!("{}: {e}", path.display()));
        }
    }
    if let Some(path) = &args.html {
        if let Err(e) = std::fs::write(path, report::html::render_html(&report)) {
            return fail(exit_code::SETUP_FAILED, format!("{}: {e}", path.display()));
        }
    }
    0
}

fn agentbox_sys_is_terminal(fd: i32) -> bool {
    agentbox_sys::fd::is_terminal(fd)
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
}

pub fn doctor(args: DoctorArgs) -> i32 {
    let found = doctor::examine(cfg!(feature = "wasm"));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&found).unwrap_or_default()
        );
    } else {
        print!("{}", doctor::render_text(&found));
    }
    0
}
