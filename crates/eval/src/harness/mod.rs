//! `agentbox eval`: every probe on every row (agentbox's tiers and the peers installed here), each
//! row in a cell of its own (a throwaway pid and mount namespace), with host-side verdicts, then the
//! benchmarks and the seed's claims.

pub mod bench;
pub mod cell;
mod claims;
pub mod host;
pub mod oci;
pub mod posture;
pub mod rows;
pub mod sandbox;
pub mod verdict;
mod wasm_row;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentbox_probe::Context;

use self::bench::BenchSpec;
use self::cell::{CellResult, CellSpec, CELL_SUBCOMMAND};
use self::rows::RowId;
use self::verdict::HostEvidence;
use crate::model::{HostInfo, ProbeInfo, Report, Row, SCHEMA_VERSION};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Row ids (`ns`, `chroot`, `peer:bwrap`, or a peer's short name `bwrap`); all when None.
    pub rows: Option<Vec<String>>,
    /// Probe ids; all when None.
    pub probes: Option<Vec<String>>,
    /// Fewer benchmark runs and no resource probes.
    pub quick: bool,
    /// Skip the benchmarks entirely (tests of the verdicts).
    pub no_bench: bool,
    /// A progress line on stderr.
    pub progress: bool,
}

/// A cell taking longer than this is killed and its row judged inconclusive.
const CELL_LIMIT: Duration = Duration::from_secs(900);

fn agentbox() -> Result<String, String> {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .map_err(|e| format!("this binary's path: {e}"))
}

/// The probes the binary knows, from `agentbox __probe --list`.
pub fn probe_list(agentbox: &str) -> Result<Vec<ProbeInfo>, String> {
    let out = Command::new(agentbox)
        .args(["__probe", "--list"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{agentbox} __probe --list: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn select_rows(wanted: Option<&Vec<String>>) -> Result<Vec<RowId>, String> {
    match wanted {
        None => Ok(RowId::ALL.to_vec()),
        Some(names) => names
            .iter()
            .map(|n| {
                RowId::parse(n)
                    .or_else(|| RowId::parse(&format!("peer:{n}")))
                    .ok_or_else(|| {
                        let known: Vec<&str> = RowId::ALL.iter().map(|r| r.id()).collect();
                        format!("--tiers {n}: unknown (known: {})", known.join(", "))
                    })
            })
            .collect(),
    }
}

fn find_tool(name: &str) -> Option<String> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

fn tool_version(path: &str) -> Option<String> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

/// Whether an engine tier row can run here, as `agentbox doctor` and `agentbox run` decide it
/// (`agentbox_runtime::engine::availability`), with the engine's version; the reason when not.
fn engine_availability(row: RowId) -> (Result<(), String>, Option<String>) {
    use agentbox_oci::Runtime;
    use agentbox_policy::Tier;
    let availability = match row {
        // The oci tier picks crun, then runc; each row pins its runtime, as `--runtime` does.
        RowId::OciRunc => agentbox_oci::probe(&Runtime::Runc),
        RowId::OciCrun => agentbox_oci::probe(&Runtime::Crun),
        _ => {
            let tier = match row {
                RowId::Gvisor => Tier::Gvisor,
                RowId::Nspawn => Tier::Nspawn,
                _ => Tier::Docker,
            };
            match agentbox_runtime::engine::availability(tier) {
                Some(a) => a,
                None => return (Err("not an engine tier".into()), None),
            }
        }
    };
    let version = availability.found.clone();
    if !availability.available {
        let mut reason = availability
            .reason
            .unwrap_or_else(|| "not available".into());
        if let Some(fix) = availability.fix {
            reason = format!("{reason} ({fix})");
        }
        return (Err(reason), version);
    }
    // A daemon without userns-remap is available to `doctor`, but the docker tier refuses to run
    // on it (uid 0 in its containers is the host's root): the row could run nothing.
    if row == RowId::Docker
        && !availability
            .notes
            .iter()
            .any(|n| n.starts_with("userns-remap:"))
    {
        return (
            Err("the Docker daemon runs without userns-remap, which agentbox's docker tier requires (uid 0 in a container would be the host's root); start dockerd with --userns-remap".into()),
            version,
        );
    }
    (Ok(()), version)
}

/// Whether a microVM row can run here, as `agentbox doctor`'s microvm tier says (a guest kernel,
/// the guest agent, QEMU), and `mkfs.ext4`, which makes the image's base disk.
fn vm_availability() -> Result<(), String> {
    if let Some(why) = agentbox_runtime::microvm::unavailable() {
        return Err(format!("the microvm tier is not available here: {why}"));
    }
    if find_tool("mkfs.ext4").is_none() {
        return Err("mkfs.ext4 is not installed (apt-get install e2fsprogs): the microvm tier builds its disks with it".into());
    }
    Ok(())
}

/// Whether the row can run here, with its version; the reason when not.
fn availability(row: RowId) -> (Result<(), String>, Option<String>) {
    if row.engine().is_some() {
        return engine_availability(row);
    }
    if row.vm() {
        return (
            vm_availability(),
            Some(env!("CARGO_PKG_VERSION").to_string()),
        );
    }
    match row.tool() {
        None => (Ok(()), Some(env!("CARGO_PKG_VERSION").to_string())),
        Some((tool, package)) => match find_tool(tool) {
            None => (
                Err(format!(
                    "{tool} is not installed (apt-get install {package})"
                )),
                None,
            ),
            Some(path) => {
                let version = tool_version(&path);
                if row.driven() {
                    (Ok(()), version)
                } else {
                    (
                        Err(format!(
                            "{tool} is installed, but this version of agentbox does not drive it yet (its tier is not built)"
                        )),
                        version,
                    )
                }
            }
        },
    }
}

fn host_info(quick: bool) -> HostInfo {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    HostInfo {
        started: utc_now(),
        kernel,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes,
        agentbox_version: env!("CARGO_PKG_VERSION").to_string(),
        quick,
    }
}

/// RFC 3339 UTC, to the second.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn progress(on: bool, text: &str) {
    if on {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
    }
}

/// Runs the evaluation.
pub fn run(options: &Options) -> Result<Report, String> {
    let agentbox = agentbox()?;
    let mut probes = probe_list(&agentbox)?;
    if let Some(wanted) = &options.probes {
        for id in wanted {
            if !probes.iter().any(|p| &p.id == id) {
                let known: Vec<&str> = probes.iter().map(|p| p.id.as_str()).collect();
                return Err(format!(
                    "--probes {id}: unknown probe (known: {})",
                    known.join(", ")
                ));
            }
        }
        probes.retain(|p| wanted.contains(&p.id));
    }
    let selected = select_rows(options.rows.as_ref())?;
    let host = host_info(options.quick);
    let mut rows = Vec::new();
    let total = selected.len();
    for (i, row) in selected.into_iter().enumerate() {
        progress(
            options.progress,
            &format!(
                "[{}/{total}] {}: probes and benchmarks...",
                i + 1,
                row.label()
            ),
        );
        rows.push(evaluate_row(row, &agentbox, &probes, options));
    }
    progress(options.progress, "");
    if options.progress {
        eprintln!();
    }
    let claims = claims::claims(&rows);
    Ok(Report {
        schema: SCHEMA_VERSION,
        host,
        probes,
        rows,
        claims,
    })
}

fn evaluate_row(row: RowId, agentbox: &str, probes: &[ProbeInfo], options: &Options) -> Row {
    let (available, version) = availability(row);
    let mut result = Row {
        id: row.id().to_string(),
        label: row.label().to_string(),
        kind: row.kind(),
        available: available.is_ok(),
        reason: available.err(),
        version,
        posture: None,
        results: Vec::new(),
        bench: None,
    };
    if !result.available {
        return result;
    }
    if row == RowId::Wasm {
        return evaluate_wasm(result, agentbox, probes, options);
    }
    match run_cell(row, agentbox, probes, options) {
        Ok((cell, evidence)) => {
            result.results = verdict::decide(row, probes, &cell.outcomes, &evidence);
            result.posture = cell.posture;
            result.bench = cell.bench;
            if let Some(error) = cell.error {
                result.reason = Some(format!("the evaluation failed: {error}"));
            } else if cell.outcomes.is_empty() {
                result.reason = Some(format!(
                    "the probes produced no result (exit {:?}): {}",
                    cell.exit,
                    cell.stderr.lines().last().unwrap_or("")
                ));
            }
        }
        Err(e) => {
            result.reason = Some(format!("the evaluation failed: {e}"));
            result.results = verdict::decide(row, probes, &[], &HostEvidence::default());
        }
    }
    result
}

/// The wasm row runs modules, not a process to attack: no cell, no sentinel (see `wasm_row`).
fn evaluate_wasm(mut result: Row, agentbox: &str, probes: &[ProbeInfo], options: &Options) -> Row {
    let planted = match host::Planted::new() {
        Ok(p) => p,
        Err(e) => {
            result.reason = Some(format!("plant: {e}"));
            return result;
        }
    };
    match wasm_row::probe(
        agentbox,
        probes,
        &planted.workdir,
        &planted.canary_read,
        &planted.canary_write,
    ) {
        Ok(results) => result.results = results,
        Err(e) => {
            result.reason = Some(format!("the evaluation failed: {e}"));
            result.results = verdict::decide(RowId::Wasm, probes, &[], &HostEvidence::default());
        }
    }
    if planted.connections() > 0 {
        result.reason = Some("the host listener got a connection during the wasm row".into());
    }
    if !options.no_bench {
        let (runs, rate) = if options.quick { (10, 1.0) } else { (40, 3.0) };
        result.bench = wasm_row::bench(agentbox, &planted.workdir, runs, rate);
    }
    planted.remove();
    result
}

fn run_cell(
    row: RowId,
    agentbox: &str,
    probes: &[ProbeInfo],
    options: &Options,
) -> Result<(CellResult, HostEvidence), String> {
    let planted = host::Planted::new().map_err(|e| format!("plant: {e}"))?;
    let outcome = run_cell_planted(row, agentbox, probes, options, &planted);
    planted.remove();
    outcome
}

fn run_cell_planted(
    row: RowId,
    agentbox: &str,
    probes: &[ProbeInfo],
    options: &Options,
    planted: &host::Planted,
) -> Result<(CellResult, HostEvidence), String> {
    let (hostname, boot_id) = host::identity();
    let resources = !options.quick;
    let context = Context {
        sentinel_pid: 0,
        sentinel_marker: planted.marker.clone(),
        canary_read: planted.canary_read.clone(),
        canary_write: planted.canary_write.clone(),
        listener: planted.listener.local_addr().ok().map(|a| a.to_string()),
        host_hostname: hostname,
        host_boot_id: boot_id,
        host_paths: host::host_paths(&planted.workdir),
        scratch: "/tmp".into(),
        resources,
        max_processes: 1000,
        max_memory_mib: 1024,
        max_disk_mib: 512,
        max_inodes: 100_000,
    };
    let spec = CellSpec {
        row,
        agentbox: agentbox.to_string(),
        workdir: planted.workdir.display().to_string(),
        context,
        only: Some(probes.iter().map(|p| p.id.clone()).collect()),
        bench: (!options.no_bench).then_some(BenchSpec {
            runs: if options.quick { 10 } else { 40 },
            rate_seconds: if options.quick { 1.0 } else { 3.0 },
        }),
    };
    let before = host::snapshot();
    let cell = spawn_cell(&spec);
    let after = host::snapshot();
    let changes = host::restore(&before, &after);
    let cell = cell?;
    let evidence = HostEvidence {
        secret: planted.secret.clone(),
        canary_intact: planted.canary_intact(),
        sentinel_alive: cell.sentinel_alive,
        sentinel_traced: cell.sentinel_traced,
        listener_connections: planted.connections(),
        changes,
        sandbox_host_uid: cell.posture.as_ref().map(|p| p.host_uid),
    };
    Ok((cell, evidence))
}

/// Runs `agentbox __eval-cell` as pid 1 of a new pid and mount namespace.
fn spawn_cell(spec: &CellSpec) -> Result<CellResult, String> {
    let unshare = find_tool("unshare").ok_or("unshare (util-linux) is not installed")?;
    let mut child = Command::new(unshare)
        .args([
            "--fork",
            "--pid",
            "--mount",
            "--mount-proc",
            "--propagation",
            "private",
            "--",
        ])
        .arg(&spec.agentbox)
        .arg(CELL_SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    let input = serde_json::to_string(spec).map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("cell spec: {e}"))?;
    }
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < CELL_LIMIT {
            std::thread::sleep(Duration::from_millis(200));
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let stderr = child.stderr.take().map(|mut e| {
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
    let status = child.wait().map_err(|e| e.to_string())?;
    let _ = watchdog.join();
    let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    serde_json::from_str(out.trim()).map_err(|e| {
        format!(
            "the cell ended ({status}) without a result ({e}): {}",
            err.lines().last().unwrap_or("")
        )
    })
}
