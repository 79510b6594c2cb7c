//! A row's sandbox as the cell drives it: what the row needs prepared inside the cell (a root of
//! the host's /usr, a scratch tmpfs, a /run of the cell's own, OCI bundles, nspawn's cgroup
//! scope), the host command of each run, and the removal of what the runtimes made (containers,
//! cgroups). It runs only inside the cell's private mount namespace and must never change a
//! mount or a cgroup outside what the cell made for itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::cell::CellSpec;
use super::host;
use super::oci;
use super::rows::{self, RowId, PROBE_IN_SANDBOX, PROBE_IN_VM};

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

/// The microVM rows' image: a copy of the probe at `PROBE_IN_VM` (a bind does not reach a
/// guest) and of `/bin/true` with the libraries it loads, on the host's usr-merged layout. No
/// python3: the benchmarks that need it are not taken for these rows. The cell's work directory
/// holds the planted secret beside it, never in it. Returns the base disk `agentbox run` will
/// build of it (`agentbox_microvm::disk::base_disk`'s key: the directory's identity and mtime),
/// which the row removes afterwards.
fn prepare_vm_image(agentbox: &str, image: &str) -> Result<PathBuf, String> {
    for dir in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "etc",
        "proc",
        "sys",
        "dev",
        "root",
        "tmp",
        "run",
        "workspace",
    ] {
        std::fs::create_dir_all(format!("{image}/{dir}")).map_err(|e| format!("mkdir: {e}"))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(target, format!("{image}/{link}"))
            .map_err(|e| format!("symlink {link}: {e}"))?;
    }
    std::fs::set_permissions(
        format!("{image}/tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .map_err(|e| format!("chmod tmp: {e}"))?;
    std::fs::copy(agentbox, format!("{image}{PROBE_IN_VM}"))
        .map_err(|e| format!("copy the probe into the image: {e}"))?;
    let truth = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or("no /bin/true on the host")?;
    copy_with_libraries(truth, image)?;
    // The cache key is taken last: it covers the directory's mtime.
    let key = agentbox_microvm::disk::cache_key(Path::new(image), None)
        .map_err(|e| format!("disk key: {e}"))?;
    Ok(Path::new(agentbox_microvm::disk::DEFAULT_CACHE).join(format!("{key}.ext4")))
}

/// Copies the host binary `path` into `image` at the same path, with every library `ldd` says it
/// loads (each at the path `ldd` names, through the image's usr-merge links).
fn copy_with_libraries(path: &str, image: &str) -> Result<(), String> {
    let out = Command::new("ldd")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ldd {path}: {e}"))?;
    let mut files = vec![path.to_string()];
    files.extend(ldd_paths(&String::from_utf8_lossy(&out.stdout)));
    for file in files {
        let target = format!("{image}{file}");
        if let Some(parent) = Path::new(&target).parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("mkdir for {file}: {e}"))?;
        }
        std::fs::copy(&file, &target).map_err(|e| format!("copy {file} into the image: {e}"))?;
    }
    Ok(())
}

/// The absolute paths of the libraries in `ldd`'s output (`libc.so.6 => /lib/.../libc.so.6
/// (0x...)`, `/lib64/ld-linux-x86-64.so.2 (0x...)`; not the vdso).
pub(super) fn ldd_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
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
/// (its mount namespace is private), so crun sees a pure v1 layout. A tmpfs of the cell takes its
/// place: crun makes its cgroups there as plain directories, which would otherwise pile up on the
/// host's /sys/fs/cgroup, hidden under the cgroup2 mount.
fn drop_hybrid_cgroup2() -> Result<(), String> {
    let mounts = cgroup_mounts();
    if !mounts.iter().any(|(fstype, ..)| fstype == "cgroup") {
        return Ok(());
    }
    for (fstype, _, _, mount_point) in mounts {
        if fstype == "cgroup2" {
            sh("unmount the hybrid cgroup2", &["umount", &mount_point])?;
            sh(
                "a cell tmpfs in its place",
                &[
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    "nosuid,nodev,noexec,mode=0755,size=1m",
                    "tmpfs",
                    &mount_point,
                ],
            )?;
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
    /// microVM rows: the base disk `agentbox run` builds of the row's image, in agentbox's
    /// shared disk cache; removed with the row (its image never serves again).
    vm_disk: Option<PathBuf>,
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
            vm_disk: None,
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
                sandbox.template = Some(oci::spec_template(runtime, &spec.workdir)?);
            }
            RowId::PeerNspawn => {
                prepare_tree(&spec.agentbox, &root, NSPAWN_DIRS)?;
                private_run()?;
                let name = format!("{}nspawn", rows::container_prefix(&spec.workdir));
                join_nspawn_scope(&name, &mut sandbox.scope)?;
            }
            RowId::Microvm | RowId::MicrovmNs => {
                let image = rows::vm_image_dir(&spec.workdir);
                sandbox.vm_disk = Some(prepare_vm_image(&spec.agentbox, &image)?);
            }
            // agentbox's tiers prepare their sandboxes themselves, engine tiers included (their
            // root, /run/systemd/nspawn, crun's cgroup layout: in agentbox's private mount
            // namespace); `agentbox run` removes its container whatever happens.
            RowId::Ns
            | RowId::Chroot
            | RowId::Wasm
            | RowId::OciRunc
            | RowId::OciCrun
            | RowId::Gvisor
            | RowId::Nspawn
            | RowId::Docker
            | RowId::PeerBwrap => {}
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
                let value = oci::oci_config(template, &rows::root_dir(&self.workdir), argv)?;
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
        if let Some(disk) = self.vm_disk.take() {
            let _ = std::fs::remove_file(disk);
        }
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

/// As pid 1 of the cell's namespace, reap whatever was reparented here.
pub(super) fn reap_orphans() {
    while let Ok(Some(_)) = agentbox_sys::process::wait(-1, true) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_libraries_to_copy() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_paths(text),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(ldd_paths("\tnot a dynamic executable\n").is_empty());
    }
}
