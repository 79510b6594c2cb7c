//! The sandbox's file system as the payload will see it, looked at from the host before the start:
//! the rootfs, with binds and tmpfs laid over it in nspawn's order. Used to refuse what nspawn
//! would only report as text on the payload's stderr (a missing command, an unknown user). Reads
//! only; symbolic links are followed inside the view, never on the host.

use std::ffi::OsStr;
use std::io;
use std::path::{Component, Path, PathBuf};

use agentbox_oci::Sandbox;

/// Symbolic links followed before giving up (the kernel's limit).
const MAX_LINKS: usize = 40;

/// Where a path of the view lives on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPath {
    /// This host path (which may or may not exist).
    At(PathBuf),
    /// Inside a fresh tmpfs: empty at the start.
    InTmpfs,
}

pub(crate) struct View<'a> {
    sandbox: &'a Sandbox,
}

impl<'a> View<'a> {
    pub(crate) fn new(sandbox: &'a Sandbox) -> View<'a> {
        View { sandbox }
    }

    /// The host location of the absolute, normalised `inner` path, without following links: the
    /// last mount (binds, then tmpfs: nspawn's order) whose target contains it wins.
    pub(crate) fn host_path(&self, inner: &Path) -> HostPath {
        let mut found = HostPath::At(join_rest(&self.sandbox.rootfs, inner));
        for bind in &self.sandbox.binds {
            if let Ok(rest) = inner.strip_prefix(&bind.target) {
                found = HostPath::At(join_rest(&bind.source, rest));
            }
        }
        if self
            .sandbox
            .tmpfs
            .iter()
            .any(|t| inner.starts_with(&t.target))
        {
            found = HostPath::InTmpfs;
        }
        found
    }

    /// Resolves `inner` (absolute, or relative to the sandbox's cwd), following symbolic links as
    /// the payload would. `Ok(None)`: it does not exist (or is in a tmpfs, empty at the start).
    pub(crate) fn resolve(&self, inner: &Path) -> io::Result<Option<PathBuf>> {
        let start = if inner.is_absolute() {
            inner.to_path_buf()
        } else {
            self.sandbox.cwd.join(inner)
        };
        let mut pending: Vec<PathBuf> = components_reversed(&start);
        let mut current = PathBuf::from("/");
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part.as_os_str() == ".." {
                current.pop();
                continue;
            }
            let next = current.join(&part);
            let host = match self.host_path(&next) {
                HostPath::At(p) => p,
                HostPath::InTmpfs => return Ok(None),
            };
            let meta = match std::fs::symlink_metadata(&host) {
                Ok(m) => m,
                // nspawn creates the directories leading to its mount points.
                Err(_) if self.leads_to_mount(&next) => {
                    current = next;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
                Err(e) => return Err(e),
            };
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Ok(None);
                }
                let target = std::fs::read_link(&host)?;
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
                pending.extend(components_reversed(&target));
            } else {
                current = next;
            }
        }
        match self.host_path(&current) {
            HostPath::At(p) if p.exists() => Ok(Some(p)),
            HostPath::At(_) | HostPath::InTmpfs => Ok(None),
        }
    }

    /// Whether `inner` is a proper ancestor of a bind or tmpfs target.
    fn leads_to_mount(&self, inner: &Path) -> bool {
        let targets = self.sandbox.binds.iter().map(|b| &b.target);
        let targets = targets.chain(self.sandbox.tmpfs.iter().map(|t| &t.target));
        targets
            .into_iter()
            .any(|t| t.starts_with(inner) && t.as_path() != inner)
    }

    /// Finds a command as `execvp` would, with the sandbox's PATH (or nspawn's default).
    pub(crate) fn find_command(&self, name: &str) -> io::Result<Lookup> {
        if name.contains('/') {
            return self.executable(Path::new(name));
        }
        let path = self
            .sandbox
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(NSPAWN_DEFAULT_PATH);
        let mut best = Lookup::Missing;
        for dir in path.split(':').filter(|d| !d.is_empty()) {
            match self.executable(&Path::new(dir).join(name))? {
                Lookup::Executable(p) => return Ok(Lookup::Executable(p)),
                Lookup::NotExecutable(p) => best = Lookup::NotExecutable(p),
                Lookup::Missing => {}
            }
        }
        Ok(best)
    }

    fn executable(&self, inner: &Path) -> io::Result<Lookup> {
        use std::os::unix::fs::PermissionsExt;
        let Some(host) = self.resolve(inner)? else {
            return Ok(Lookup::Missing);
        };
        let meta = std::fs::metadata(&host)?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            Ok(Lookup::Executable(host))
        } else {
            Ok(Lookup::NotExecutable(host))
        }
    }

    /// Whether the sandbox's `/etc/passwd` has an entry for `uid`.
    pub(crate) fn has_passwd_entry(&self, uid: u32) -> io::Result<bool> {
        let Some(host) = self.resolve(Path::new("/etc/passwd"))? else {
            return Ok(false);
        };
        let text = match std::fs::read_to_string(&host) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let wanted = uid.to_string();
        Ok(text
            .lines()
            .any(|line| line.split(':').nth(2) == Some(wanted.as_str())))
    }
}

/// What a command lookup found, as host paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    Executable(PathBuf),
    NotExecutable(PathBuf),
    Missing,
}

/// nspawn's PATH when the sandbox's environment has none.
pub(crate) const NSPAWN_DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `base` joined with the relative `rest` (an empty `rest` is `base` itself).
fn join_rest(base: &Path, rest: &Path) -> PathBuf {
    let rest = rest.strip_prefix("/").unwrap_or(rest);
    if rest.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(rest)
    }
}

/// The normal and `..` components of `path`, last first (a stack to pop from).
fn components_reversed(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from(OsStr::new(".."))),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    out.reverse();
    out
}
