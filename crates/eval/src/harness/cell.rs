//! One row's evaluation, run as `agentbox __eval-cell` inside a throwaway pid and mount namespace
//! of its own (`unshare --fork --pid --mount --mount-proc`): the cell is that namespace's pid 1.
//! It prepares the row's root, starts the sentinel, runs the probes in the row's sandbox while it
//! reads the sandboxed process's posture from /proc, checks the sentinel, runs the benchmarks, and
//! prints one JSON `CellResult`. Whatever a probe of a weak row does to processes or mounts stays
//! inside this namespace and dies with it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentbox_probe::{Context, Outcome};
use serde::{Deserialize, Serialize};

use super::bench::{self, BenchSpec};
use super::posture;
use super::rows::{self, RowId, PROBE_IN_SANDBOX};
use crate::model::{Bench, Posture};

/// The argument of the sentinel's command line that marks it (`agentbox __sentinel MARKER`).
pub const SENTINEL_SUBCOMMAND: &str = "__sentinel";
pub const CELL_SUBCOMMAND: &str = "__eval-cell";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellSpec {
    pub row: RowId,
    /// The agentbox binary on the host: the probe, the sentinel and the `run` of agentbox rows.
    pub agentbox: String,
    /// The host work directory of this row (canaries, the root of `peer:chroot`).
    pub workdir: String,
    /// The probes' context; the cell fills in the sentinel's pid and the scratch dir.
    pub context: Context,
    pub only: Option<Vec<String>>,
    pub bench: Option<BenchSpec>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CellResult {
    pub outcomes: Vec<Outcome>,
    /// The probe program's exit code and stderr (bounded), for diagnostics.
    pub exit: Option<i32>,
    pub stderr: String,
    pub posture: Option<Posture>,
    /// Alive after the probes, and whether anything was tracing it at the end.
    pub sentinel_alive: bool,
    pub sentinel_traced: bool,
    pub bench: Option<Bench>,
    /// Set when the cell itself failed (the row is then inconclusive).
    pub error: Option<String>,
}

/// `agentbox __sentinel MARKER`: sleeps until killed.
pub fn sentinel_main() -> i32 {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// `agentbox __eval-cell`: reads a `CellSpec` on stdin, prints a `CellResult`.
pub fn cell_main() -> i32 {
    // The cell stands for the host: the sandbox must inherit no descriptor but 0-2 from it (the
    // caller of `agentbox eval` may hold others, which peers without fd hygiene would pass on).
    let _ = agentbox_sys::fd::close_all_except(&[0, 1, 2]);
    let mut text = String::new();
    let result = match std::io::stdin().read_to_string(&mut text) {
        Err(e) => CellResult {
            error: Some(format!("read spec: {e}")),
            ..Default::default()
        },
        Ok(_) => match serde_json::from_str::<CellSpec>(&text) {
            Err(e) => CellResult {
                error: Some(format!("spec: {e}")),
                ..Default::default()
            },
            Ok(spec) => run_cell(&spec).unwrap_or_else(|e| CellResult {
                error: Some(e),
                ..Default::default()
            }),
        },
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string(&result).unwrap_or_default()
    );
    0
}

fn sh(step: &str, argv: &[&str]) -> Result<(), String> {
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{step}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step}: {argv:?} failed ({status})"))
    }
}

/// The root of `peer:chroot`: the host's /usr read-only, fresh /proc, /dev and /tmp, the probe.
fn prepare_root(spec: &CellSpec, root: &str) -> Result<(), String> {
    for dir in ["usr", "proc", "dev", "tmp", "opt", "etc"] {
        std::fs::create_dir_all(format!("{root}/{dir}")).map_err(|e| format!("mkdir: {e}"))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        let _ = std::os::unix::fs::symlink(target, format!("{root}/{link}"));
    }
    std::fs::write(format!("{root}{PROBE_IN_SANDBOX}"), b"")
        .map_err(|e| format!("probe file: {e}"))?;
    sh(
        "bind /usr",
        &[
            "mount",
            "--bind",
            "-o",
            "ro",
            "/usr",
            &format!("{root}/usr"),
        ],
    )?;
    sh(
        "proc",
        &["mount", "-t", "proc", "proc", &format!("{root}/proc")],
    )?;
    sh(
        "tmp",
        &[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=1g",
            "tmpfs",
            &format!("{root}/tmp"),
        ],
    )?;
    sh(
        "dev",
        &[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            &format!("{root}/dev"),
        ],
    )?;
    for (name, minor) in [("null", "3"), ("zero", "5"), ("urandom", "9")] {
        sh(
            "dev node",
            &[
                "mknod",
                "-m",
                "666",
                &format!("{root}/dev/{name}"),
                "c",
                "1",
                minor,
            ],
        )?;
    }
    sh(
        "probe",
        &[
            "mount",
            "--bind",
            "-o",
            "ro",
            &spec.agentbox,
            &format!("{root}{PROBE_IN_SANDBOX}"),
        ],
    )
}

fn run_cell(spec: &CellSpec) -> Result<CellResult, String> {
    let root = format!("{}/root", spec.workdir);
    let scratch = rows::scratch(spec.row, &spec.workdir);
    match spec.row {
        RowId::PeerChroot => prepare_root(spec, &root)?,
        RowId::PeerUnshare => {
            std::fs::create_dir_all(&scratch).map_err(|e| format!("mkdir scratch: {e}"))?;
            sh(
                "scratch",
                &["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", &scratch],
            )?;
        }
        _ => {}
    }
    let marker = spec.context.sentinel_marker.clone();
    let mut sentinel = Command::new(&spec.agentbox)
        .args([SENTINEL_SUBCOMMAND, &marker])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("sentinel: {e}"))?;
    let mut context = spec.context.clone();
    context.sentinel_pid = i32::try_from(sentinel.id()).unwrap_or(0);
    context.scratch = scratch.clone().into();
    let context_json = serde_json::to_string(&context).map_err(|e| e.to_string())?;
    let mut argv = vec![PROBE_IN_SANDBOX, "__probe", "--context", &context_json];
    let only = spec.only.as_ref().map(|o| o.join(","));
    if let Some(only) = &only {
        argv.extend(["--only", only]);
    }
    let command = rows::command(spec.row, &spec.agentbox, &root, &argv);
    let result = probe_run(&command);
    let sentinel_alive = matches!(sentinel.try_wait(), Ok(None));
    let sentinel_traced = posture::tracer_of(sentinel.id()).is_some_and(|t| t != 0);
    let _ = sentinel.kill();
    let _ = sentinel.wait();
    let (outcomes, exit, stderr, posture) = result?;
    let bench = spec
        .bench
        .as_ref()
        .map(|b| bench::measure(spec.row, &spec.agentbox, &root, b));
    reap_orphans();
    Ok(CellResult {
        outcomes,
        exit,
        stderr,
        posture,
        sentinel_alive,
        sentinel_traced,
        bench,
        error: None,
    })
}

type ProbeRun = (Vec<Outcome>, Option<i32>, String, Option<Posture>);

/// Runs the probe command, reading the sandboxed probe's posture while it runs.
fn probe_run(command: &[String]) -> Result<ProbeRun, String> {
    // A terminal the cell owns, as the probe's stdin: TIOCSTI has something to aim at.
    let pty = agentbox_sys::pty::open_pair(Path::new("/dev/ptmx")).ok();
    let stdin = match &pty {
        Some((_, slave)) => slave
            .try_clone()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null()),
        None => Stdio::null(),
    };
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", command[0]))?;
    let root = child.id();
    let watcher = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(p) = posture::find_probe(root).and_then(posture::read) {
                return Some(p);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    });
    let stderr_reader = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    });
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let mut stderr = stderr_reader
        .and_then(|t| t.join().ok())
        .unwrap_or_default();
    let status = child.wait().map_err(|e| e.to_string())?;
    let posture = watcher.join().ok().flatten();
    drop(pty);
    let outcomes = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Outcome>(l).ok())
        .collect();
    stderr.truncate(4000);
    Ok((outcomes, status.code(), stderr, posture))
}

/// As pid 1 of the cell's namespace, reap whatever was reparented here.
fn reap_orphans() {
    while let Ok(Some(_)) = agentbox_sys::process::wait(-1, true) {}
}
