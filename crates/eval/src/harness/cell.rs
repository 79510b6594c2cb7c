//! One row's evaluation, run as `agentbox __eval-cell` inside a throwaway pid and mount namespace
//! of its own (`unshare --fork --pid --mount --mount-proc`): the cell is that namespace's pid 1.
//! It prepares what the row's sandbox needs (a root, OCI bundles, a /run and a cgroup of its
//! own), starts the sentinel, runs the probes in the row's sandbox while it reads the sandboxed
//! process's posture from /proc, checks the sentinel, runs the benchmarks, removes what the
//! runtimes made (containers, cgroups), and prints one JSON `CellResult`. Whatever a probe of a
//! weak row does to processes or mounts stays inside this namespace and dies with it; the cell
//! changes mounts only inside it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentbox_probe::{Context, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::bench::{self, BenchSpec};
use super::host;
use super::posture;
use super::rows::{self, RowId, EVAL_MEMORY_BYTES, EVAL_PIDS, PROBE_IN_SANDBOX};
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

/// The directories of a root: the mount points of `prepare_root` and, for nspawn's read-only
/// root, those nspawn mounts on itself.
const ROOT_DIRS: &[&str] = &["usr", "proc", "dev", "tmp", "opt", "etc"];
const NSPAWN_DIRS: &[&str] = &["run", "sys", "root", "var/tmp"];

/// A root of the host's /usr read-only, its usr-merge links, and the probe at `PROBE_IN_SANDBOX`.
fn prepare_tree(agentbox: &str, root: &str, extra_dirs: &[&str]) -> Result<(), String> {
    for dir in ROOT_DIRS.iter().chain(extra_dirs) {
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
        "probe",
        &[
            "mount",
            "--bind",
            "-o",
            "ro",
            agentbox,
            &format!("{root}{PROBE_IN_SANDBOX}"),
        ],
    )
}

/// The root of `peer:chroot`: `prepare_kernel_root`'s, with a 1g tmpfs /tmp.
fn prepare_root(agentbox: &str, root: &str) -> Result<(), String> {
    prepare_kernel_root(agentbox, root)?;
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
    )
}

/// The root of the OCI rows: `prepare_tree`'s, with a fresh /proc and a /dev of null, zero and
/// urandom (the runtimes mount their own over them). Its /tmp stays a directory of the root, on
/// the host's disk, as in the runtimes' default container (a rootfs directory): a tmpfs there
/// would be charged to the container's memory limit, and filling it would kill the container.
fn prepare_kernel_root(agentbox: &str, root: &str) -> Result<(), String> {
    prepare_tree(agentbox, root, &[])?;
    sh(
        "proc",
        &["mount", "-t", "proc", "proc", &format!("{root}/proc")],
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
    Ok(())
}

/// A tmpfs the sandbox writes to, mounted in the cell only.
fn mount_scratch(scratch: &str) -> Result<(), String> {
    std::fs::create_dir_all(scratch).map_err(|e| format!("mkdir scratch: {e}"))?;
    sh(
        "scratch",
        &["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", scratch],
    )
}

/// A /run of the cell's own, so the state firejail and nspawn keep there (/run/firejail,
/// /run/systemd/nspawn) dies with the cell.
fn private_run() -> Result<(), String> {
    sh(
        "private /run",
        &[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=16m,mode=755",
            "tmpfs",
            "/run",
        ],
    )
}

/// The mount points of this mount namespace's cgroup hierarchies: (fstype, super options,
/// mount root, mount point).
fn cgroup_mounts() -> Vec<(String, String, String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split_whitespace().collect();
            let right: Vec<&str> = right.split_whitespace().collect();
            let fstype = *right.first()?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| {
                (
                    fstype.to_string(),
                    right.get(2).copied().unwrap_or("").to_string(),
                    left.get(3).copied().unwrap_or("/").to_string(),
                    left.get(4).copied().unwrap_or("").to_string(),
                )
            })
        })
        .collect()
}

/// crun 1.8 refuses a hybrid layout ("cgroups in hybrid mode not supported, drop all controllers
/// from cgroupv2"): the cgroup2 mount beside the v1 hierarchies is unmounted, in the cell only
/// (its mount namespace is private), so crun sees a pure v1 layout.
fn drop_hybrid_cgroup2() -> Result<(), String> {
    let mounts = cgroup_mounts();
    if !mounts.iter().any(|(fstype, ..)| fstype == "cgroup") {
        return Ok(());
    }
    for (fstype, _, _, mount_point) in mounts {
        if fstype == "cgroup2" {
            sh("unmount the hybrid cgroup2", &["umount", &mount_point])?;
        }
    }
    Ok(())
}

/// A cgroup made for the cell in one hierarchy, and the one the cell came from.
#[derive(Debug)]
struct ScopeDir {
    made: PathBuf,
    home: PathBuf,
}

/// nspawn `--keep-unit` runs in its caller's cgroup and makes `payload` and `supervisor` groups
/// in it, which it never removes: the cell moves itself into a group of its own, in the
/// name=systemd and the cgroup2 hierarchy (those nspawn uses), and removes it afterwards.
fn join_nspawn_scope(name: &str, dirs: &mut Vec<ScopeDir>) -> Result<(), String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for (fstype, options, mount_root, mount_point) in cgroup_mounts() {
        let key = match fstype.as_str() {
            "cgroup2" => "",
            _ if options.split(',').any(|o| o == "name=systemd") => "name=systemd",
            _ => continue,
        };
        let Some(path) = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (controllers == key).then_some(path)
        }) else {
            continue;
        };
        let relative = path.strip_prefix(mount_root.as_str()).unwrap_or(path);
        let home = Path::new(&mount_point).join(relative.trim_start_matches('/'));
        let made = home.join(name);
        std::fs::create_dir(&made).map_err(|e| format!("cgroup {}: {e}", made.display()))?;
        dirs.push(ScopeDir {
            made: made.clone(),
            home,
        });
        std::fs::write(made.join("cgroup.procs"), "0")
            .map_err(|e| format!("join cgroup {}: {e}", made.display()))?;
    }
    Ok(())
}

/// Removes a cgroup and the groups below it, deepest first (a group still holding a process
/// stays).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Cgroups whose name starts with `prefix`, anywhere in the first levels of every hierarchy.
fn cgroups_named(prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut level: Vec<PathBuf> = cgroup_mounts()
        .into_iter()
        .map(|(.., mount_point)| PathBuf::from(mount_point))
        .collect();
    for _ in 0..6 {
        let mut next = Vec::new();
        for dir in &level {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if entry.file_name().to_string_lossy().starts_with(prefix) {
                    found.push(entry.path());
                } else {
                    next.push(entry.path());
                }
            }
        }
        level = next;
    }
    found
}

/// The `config.json` of one command: `runc spec`'s default container (its namespaces,
/// capabilities, masked and read-only paths, no-new-privileges, device rules) running `argv`
/// without a terminal in /tmp, on the cell's prepared root, with a network namespace of its own,
/// under agentbox's eval limits. Pure.
pub fn oci_config(template: &Value, root: &str, argv: &[&str]) -> Result<Value, String> {
    fn object<'a>(
        map: &'a mut Map<String, Value>,
        key: &str,
    ) -> Result<&'a mut Map<String, Value>, String> {
        map.entry(key)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| format!("the OCI spec's {key} is not an object"))
    }
    let mut config = template.clone();
    let top = config
        .as_object_mut()
        .ok_or("the OCI spec is not an object")?;
    let process = object(top, "process")?;
    process.insert("args".into(), json!(argv));
    process.insert("terminal".into(), json!(false));
    process.insert("cwd".into(), json!("/tmp"));
    top.insert("root".into(), json!({ "path": root, "readonly": false }));
    let linux = object(top, "linux")?;
    let namespaces = linux
        .entry("namespaces")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or("the OCI spec's namespaces are not a list")?;
    if !namespaces.iter().any(|n| n["type"] == "network") {
        namespaces.push(json!({ "type": "network" }));
    }
    let resources = object(linux, "resources")?;
    resources.insert("pids".into(), json!({ "limit": EVAL_PIDS }));
    resources.insert("memory".into(), json!({ "limit": EVAL_MEMORY_BYTES }));
    Ok(config)
}

/// The default container spec, from `runc spec` (the same as crun's), else the row's own runtime's.
fn spec_template(runtime: &str, workdir: &str) -> Result<Value, String> {
    let dir = format!("{workdir}/bundles/spec");
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {dir}: {e}"))?;
    let mut tried = Vec::new();
    for tool in ["runc", runtime] {
        let _ = std::fs::remove_file(format!("{dir}/config.json"));
        let made = Command::new(tool)
            .arg("spec")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if made {
            let text = std::fs::read_to_string(format!("{dir}/config.json"))
                .map_err(|e| format!("{tool} spec: {e}"))?;
            return serde_json::from_str(&text).map_err(|e| format!("{tool} spec: {e}"));
        }
        tried.push(tool);
    }
    Err(format!(
        "no default OCI spec: {} spec failed",
        tried.join(" spec and ")
    ))
}

/// A row's sandbox as the cell drives it: what the row needs prepared, the host command of each
/// run, and the removal of what the runtime made. Dropping it removes that too.
pub struct Sandbox {
    pub row: RowId,
    pub agentbox: String,
    pub workdir: String,
    /// OCI rows: the default spec each command's config.json is made from.
    template: Option<Value>,
    /// nspawn: the cgroups the cell moved into.
    scope: Vec<ScopeDir>,
    cleaned: bool,
}

impl Sandbox {
    /// Prepares what `spec.row` needs in this cell.
    pub fn prepare(spec: &CellSpec) -> Result<Sandbox, String> {
        let mut sandbox = Sandbox {
            row: spec.row,
            agentbox: spec.agentbox.clone(),
            workdir: spec.workdir.clone(),
            template: None,
            scope: Vec::new(),
            cleaned: false,
        };
        let root = rows::root_dir(&spec.workdir);
        let scratch = rows::scratch(spec.row, &spec.workdir);
        match spec.row {
            RowId::PeerChroot => prepare_root(&spec.agentbox, &root)?,
            RowId::PeerUnshare => mount_scratch(&scratch)?,
            RowId::PeerFirejail => {
                mount_scratch(&scratch)?;
                private_run()?;
            }
            RowId::PeerRunc | RowId::PeerCrun | RowId::PeerRunsc => {
                prepare_kernel_root(&spec.agentbox, &root)?;
                if spec.row == RowId::PeerCrun {
                    drop_hybrid_cgroup2()?;
                }
                let state = rows::oci_state_dir(&spec.workdir);
                std::fs::create_dir_all(&state).map_err(|e| format!("mkdir {state}: {e}"))?;
                let runtime = spec.row.oci_runtime().unwrap_or("runc");
                sandbox.template = Some(spec_template(runtime, &spec.workdir)?);
            }
            RowId::PeerNspawn => {
                prepare_tree(&spec.agentbox, &root, NSPAWN_DIRS)?;
                private_run()?;
                let name = format!("{}nspawn", rows::container_prefix(&spec.workdir));
                join_nspawn_scope(&name, &mut sandbox.scope)?;
            }
            RowId::Ns | RowId::Chroot | RowId::Wasm | RowId::PeerBwrap => {}
        }
        Ok(sandbox)
    }

    /// The host argv that runs `argv` in the sandbox (`rows::command`); for OCI rows, after
    /// writing the bundle of `argv` (once per distinct argv).
    pub fn command(&self, argv: &[&str]) -> Result<Vec<String>, String> {
        if let Some(template) = &self.template {
            let bundle = rows::bundle_dir(&self.workdir, argv);
            let config = format!("{bundle}/config.json");
            if !Path::new(&config).exists() {
                let value = oci_config(template, &rows::root_dir(&self.workdir), argv)?;
                let text = serde_json::to_vec_pretty(&value).map_err(|e| e.to_string())?;
                std::fs::create_dir_all(&bundle).map_err(|e| format!("mkdir {bundle}: {e}"))?;
                std::fs::write(&config, text).map_err(|e| format!("write {config}: {e}"))?;
            }
        }
        Ok(rows::command(self.row, &self.agentbox, &self.workdir, argv))
    }

    /// The process of one run of a `command` argv: a fresh container id (OCI rows, returned too)
    /// and the row's environment. Stdio is the caller's to set.
    pub fn process(&self, argv: &[String]) -> (Command, Option<String>) {
        let (argv, id) = rows::instance(argv, &host::random_hex(6));
        let mut command = Command::new(argv.first().map_or("", String::as_str));
        command
            .args(argv.iter().skip(1))
            .envs(self.row.environment().iter().copied());
        (command, id)
    }

    fn runtime(&self, args: &[&str]) -> Option<Command> {
        let runtime = self.row.oci_runtime()?;
        let mut command = Command::new(runtime);
        command
            .args(rows::oci_flags(self.row, &self.workdir))
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        Some(command)
    }

    /// `delete --force` of one container (`run` deletes its container itself when it ends; this
    /// is for the runs that did not end that way).
    pub fn delete(&self, id: &str) {
        if let Some(mut delete) = self.runtime(&["delete", "--force", id]) {
            let _ = delete.stdout(Stdio::null()).status();
        }
    }

    /// Removes what the runtime made and left: containers still in its state directory, their
    /// cgroups (a runtime killed mid-run leaves them), nspawn's cgroups. Idempotent.
    pub fn clean_up(&mut self) {
        if std::mem::replace(&mut self.cleaned, true) {
            return;
        }
        let prefix = rows::container_prefix(&self.workdir);
        if let Some(out) = self
            .runtime(&["list", "--quiet"])
            .and_then(|mut list| list.output().ok())
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                if id.starts_with(&prefix) {
                    self.delete(id.trim());
                }
            }
        }
        if self.row.oci_runtime().is_some() {
            for dir in cgroups_named(&prefix) {
                remove_cgroup_tree(&dir);
            }
        }
        reap_orphans();
        for dir in self.scope.drain(..) {
            let _ = std::fs::write(dir.home.join("cgroup.procs"), "0");
            remove_cgroup_tree(&dir.made);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.clean_up();
    }
}

fn run_cell(spec: &CellSpec) -> Result<CellResult, String> {
    let mut sandbox = Sandbox::prepare(spec)?;
    let scratch = rows::scratch(spec.row, &spec.workdir);
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
    let result = probes_run(&sandbox, &context_json, spec.only.as_deref());
    let sentinel_alive = matches!(sentinel.try_wait(), Ok(None));
    let sentinel_traced = posture::tracer_of(sentinel.id()).is_some_and(|t| t != 0);
    let _ = sentinel.kill();
    let _ = sentinel.wait();
    let (outcomes, exit, stderr, posture) = result?;
    let bench = spec.bench.as_ref().map(|b| bench::measure(&sandbox, b));
    sandbox.clean_up();
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

/// Fresh sandboxes for the probes after the sandbox died under one.
const RESTARTS: usize = 4;

/// Runs the probes (`only`, in order). When the sandbox dies under one before the others ran (a
/// runtime that ends the whole sandbox at its pids or memory limit), the remaining ones run in a
/// fresh sandbox: the probe that was running stays without a result (inconclusive), the others
/// still get theirs. The posture is the first run's; stderr is every run's.
fn probes_run(
    sandbox: &Sandbox,
    context_json: &str,
    only: Option<&[String]>,
) -> Result<ProbeRun, String> {
    let mut pending = only.map(<[String]>::to_vec);
    let (mut all, mut exit, mut stderr, mut posture) = (Vec::new(), None, String::new(), None);
    for round in 0..=RESTARTS {
        let joined = pending.as_ref().map(|p| p.join(","));
        let mut argv = vec![PROBE_IN_SANDBOX, "__probe", "--context", context_json];
        if let Some(joined) = &joined {
            argv.extend(["--only", joined]);
        }
        let command = sandbox.command(&argv)?;
        let (outcomes, code, err, seen) = probe_run(sandbox, &command)?;
        posture = posture.or(seen);
        exit = code;
        stderr.push_str(&err);
        let produced = !outcomes.is_empty();
        let Some(list) = pending.as_mut() else {
            all.extend(outcomes);
            break;
        };
        list.retain(|id| !outcomes.iter().any(|o| &o.id == id));
        all.extend(outcomes);
        // Ran to the end, or never started: nothing to resume.
        if code == Some(0) || list.is_empty() || (round == 0 && !produced) {
            break;
        }
        let died_under = list.remove(0);
        stderr.push_str(&format!(
            "\n[the sandbox ended during {died_under} (exit {code:?}); the remaining probes run in a fresh one]\n"
        ));
        if list.is_empty() {
            break;
        }
    }
    bound(&mut stderr, 4000);
    Ok((all, exit, stderr, posture))
}

/// Runs the probe command, reading the sandboxed probe's posture while it runs; then deletes its
/// container (OCI rows).
fn probe_run(sandbox: &Sandbox, command: &[String]) -> Result<ProbeRun, String> {
    // A terminal the cell owns, as the probe's stdin: TIOCSTI has something to aim at.
    let pty = agentbox_sys::pty::open_pair(Path::new("/dev/ptmx")).ok();
    let stdin = match &pty {
        Some((_, slave)) => slave
            .try_clone()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null()),
        None => Stdio::null(),
    };
    let (mut process, container) = sandbox.process(command);
    let mut child = process
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", command.first().map_or("", String::as_str)))?;
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
    let status = child.wait().map_err(|e| e.to_string());
    if let Some(id) = &container {
        sandbox.delete(id);
    }
    let status = status?;
    let posture = watcher.join().ok().flatten();
    drop(pty);
    let outcomes = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Outcome>(l).ok())
        .collect();
    bound(&mut stderr, 2000);
    Ok((outcomes, status.code(), stderr, posture))
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn bound(text: &mut String, max: usize) {
    if text.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
}

/// As pid 1 of the cell's namespace, reap whatever was reparented here.
fn reap_orphans() {
    while let Ok(Some(_)) = agentbox_sys::process::wait(-1, true) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runc_spec() -> Value {
        json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": true,
                "args": ["sh"],
                "cwd": "/",
                "noNewPrivileges": true,
                "capabilities": { "bounding": ["CAP_KILL"] }
            },
            "root": { "path": "rootfs", "readonly": true },
            "linux": {
                "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
                "namespaces": [{ "type": "pid" }, { "type": "mount" }],
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"]
            }
        })
    }

    #[test]
    fn an_oci_config_runs_the_command_on_the_prepared_root_under_the_eval_limits() {
        let argv = [PROBE_IN_SANDBOX, "__probe", "--list"];
        let config = oci_config(&runc_spec(), "/w/root", &argv).unwrap();
        assert_eq!(config["process"]["args"], json!(argv));
        assert_eq!(config["process"]["terminal"], false);
        assert_eq!(config["process"]["cwd"], "/tmp");
        assert_eq!(
            config["root"],
            json!({ "path": "/w/root", "readonly": false })
        );
        assert_eq!(config["linux"]["resources"]["pids"]["limit"], 256);
        assert_eq!(config["linux"]["resources"]["memory"]["limit"], 536_870_912);
        let namespaces: Vec<&str> = config["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert_eq!(namespaces, ["pid", "mount", "network"]);
        // The defaults stay: no user namespace added, capabilities and paths as runc gives them.
        let spec = runc_spec();
        assert_eq!(
            config["process"]["capabilities"],
            spec["process"]["capabilities"]
        );
        assert_eq!(config["process"]["noNewPrivileges"], true);
        assert_eq!(config["linux"]["maskedPaths"], spec["linux"]["maskedPaths"]);
        assert_eq!(
            config["linux"]["readonlyPaths"],
            spec["linux"]["readonlyPaths"]
        );
        assert_eq!(
            config["linux"]["resources"]["devices"],
            spec["linux"]["resources"]["devices"]
        );
        // A network namespace already there is not doubled.
        let again = oci_config(&config, "/w/root", &argv).unwrap();
        assert_eq!(again["linux"]["namespaces"], config["linux"]["namespaces"]);
    }

    #[test]
    fn diagnostics_are_cut_at_a_character_boundary() {
        let mut text = "ab\u{e9}".repeat(3);
        bound(&mut text, 3);
        assert_eq!(text, "ab");
        let mut short = "ok".to_string();
        bound(&mut short, 10);
        assert_eq!(short, "ok");
    }

    #[test]
    fn a_malformed_spec_is_refused_naming_the_field() {
        let err = oci_config(&json!({ "process": [] }), "/r", &["/bin/true"]).unwrap_err();
        assert!(err.contains("process"), "{err}");
        assert!(oci_config(&json!([]), "/r", &["/bin/true"]).is_err());
    }
}
