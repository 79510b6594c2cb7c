//! The store: layout, names, locking, commit and removal.

use crate::{ImageError, ImageInfo, Progress};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The image store under one root directory (see the crate documentation for the layout).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    tool_path: Option<OsString>,
}

/// `content/sha256/<hex>/meta.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub digest: String,
    pub size: u64,
    pub created: u64,
    pub source: String,
}

/// `names/<name>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct NameFile {
    name: String,
    digest: String,
}

impl Store {
    /// `$AGENTBOX_IMAGES` if set, else `/var/lib/agentbox/images`.
    pub fn default_root() -> PathBuf {
        match std::env::var_os("AGENTBOX_IMAGES") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from("/var/lib/agentbox/images"),
        }
    }

    /// Opens the store at `root`, creating its layout, and deletes work directories of dead processes.
    pub fn open(root: &Path) -> Result<Store, ImageError> {
        for dir in [
            root.join("content/sha256"),
            root.join("names"),
            root.join("tmp"),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&dir)
                .map_err(ImageError::io(&dir))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            tool_path: None,
        };
        store.remove_stale_work_dirs();
        Ok(store)
    }

    /// Looks tools (debootstrap) up in this `PATH` instead of the process's `PATH` plus the sbin dirs.
    pub fn with_tool_path(mut self, path: impl Into<OsString>) -> Store {
        self.tool_path = Some(path.into());
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn tool_path(&self) -> Option<&OsString> {
        self.tool_path.as_ref()
    }

    /// Finds an image by name (`bookworm`, `alpine:3.19`), digest (`sha256:<hex>`) or a unique
    /// digest prefix of at least 12 hex digits (with or without `sha256:`).
    pub fn resolve(&self, name: &str) -> Result<ImageInfo, ImageError> {
        let _lock = self.lock(false)?;
        self.resolve_locked(name)
    }

    /// All names, sorted.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let _lock = self.lock(false)?;
        let mut out = Vec::new();
        for name in self.names()? {
            if let Some(digest) = self.name_digest(&name)? {
                out.push(self.info(&name, &digest)?);
            }
        }
        Ok(out)
    }

    /// Removes a name (or, given a digest, every name of that content); content that no name refers
    /// to any more is deleted. Returns the removed image.
    pub fn remove(&self, name: &str) -> Result<ImageInfo, ImageError> {
        let _lock = self.lock(true)?;
        let info = self.resolve_locked(name)?;
        let by_name = canonical_name(name)
            .ok()
            .filter(|n| self.name_path(n).exists());
        let names = match by_name {
            Some(n) => vec![n],
            None => self.names_of(&info.digest)?,
        };
        for n in &names {
            let path = self.name_path(n);
            fs::remove_file(&path).map_err(ImageError::io(&path))?;
        }
        self.collect_garbage(&info.digest)?;
        Ok(info)
    }

    /// Imports an OCI image layout (directory or tar) or a `docker save` tarball.
    pub fn import(
        &self,
        source: &Path,
        name: Option<&str>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ImageInfo, ImageError> {
        crate::import::import(self, source, name, progress)
    }

    /// Builds a Debian image with `debootstrap --variant=minbase`.
    pub fn build_debian(
        &self,
        name: &str,
        suite: &str,
        packages: &[String],
        mirror: Option<&str>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ImageInfo, ImageError> {
        crate::debian::build(self, name, suite, packages, mirror, progress)
    }

    // ----- internals shared by import and build -----

    pub(crate) fn content_dir(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("content/sha256").join(hex)
    }

    pub(crate) fn has_content(&self, digest: &str) -> bool {
        self.content_dir(digest).join("meta.json").is_file()
    }

    /// A fresh work directory under `tmp/`, deleted on drop unless it was renamed away.
    pub(crate) fn work_dir(&self) -> Result<WorkDir, ImageError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = self.root.join("tmp").join(format!(
            "{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(ImageError::io(&path))?;
        Ok(WorkDir { path })
    }

    /// Writes `meta.json` into `work`, renames `work` to the content dir (unless that content is
    /// already stored) and points `name` at it.
    pub(crate) fn commit(
        &self,
        work: WorkDir,
        meta: &Meta,
        name: &str,
    ) -> Result<ImageInfo, ImageError> {
        let meta_path = work.path.join("meta.json");
        write_json(&meta_path, meta)?;
        fs::set_permissions(&meta_path, fs::Permissions::from_mode(0o444))
            .map_err(ImageError::io(&meta_path))?;
        let _lock = self.lock(true)?;
        let dest = self.content_dir(&meta.digest);
        if !self.has_content(&meta.digest) {
            if dest.exists() {
                // A directory without meta.json is debris of an interrupted removal.
                remove_tree(&dest)?;
            }
            fs::rename(&work.path, &dest).map_err(ImageError::io(&dest))?;
        }
        drop(work);
        self.set_name_locked(name, &meta.digest)?;
        self.info(name, &meta.digest)
    }

    /// Points an existing content at `name` (idempotent import).
    pub(crate) fn name_existing(&self, name: &str, digest: &str) -> Result<ImageInfo, ImageError> {
        let _lock = self.lock(true)?;
        if !self.has_content(digest) {
            return Err(ImageError::NotFound {
                name: digest.to_string(),
            });
        }
        self.set_name_locked(name, digest)?;
        self.info(name, digest)
    }

    fn set_name_locked(&self, name: &str, digest: &str) -> Result<(), ImageError> {
        let previous = self.name_digest(name)?;
        let path = self.name_path(name);
        let tmp = self.root.join("names").join(format!(".{name}.json.tmp"));
        write_json(
            &tmp,
            &NameFile {
                name: name.to_string(),
                digest: digest.to_string(),
            },
        )?;
        fs::rename(&tmp, &path).map_err(ImageError::io(&path))?;
        if let Some(old) = previous.filter(|old| old != digest) {
            self.collect_garbage(&old)?;
        }
        Ok(())
    }

    /// Deletes the content of `digest` when no name refers to it. Caller holds the exclusive lock.
    fn collect_garbage(&self, digest: &str) -> Result<(), ImageError> {
        if !self.names_of(digest)?.is_empty() {
            return Ok(());
        }
        let dir = self.content_dir(digest);
        if !dir.exists() {
            return Ok(());
        }
        // Rename first so a crash mid-delete never leaves a half tree that looks like an image.
        let work = self.work_dir()?;
        let trash = work.path.join("old");
        fs::rename(&dir, &trash).map_err(ImageError::io(&dir))?;
        drop(work);
        Ok(())
    }

    fn resolve_locked(&self, text: &str) -> Result<ImageInfo, ImageError> {
        let not_found = || ImageError::NotFound {
            name: text.to_string(),
        };
        if let Some(hex) = text.strip_prefix("sha256:") {
            if hex.len() < 12 || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ImageError::invalid(
                    "image",
                    format!("`{text}`: a digest is sha256: and 12 to 64 hex digits"),
                ));
            }
            return self.resolve_digest(text, &hex.to_ascii_lowercase());
        }
        let name = canonical_name(text)?;
        if let Some(digest) = self.name_digest(&name)? {
            return self.info(&name, &digest);
        }
        if text.len() >= 12 && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.resolve_digest(text, &text.to_ascii_lowercase());
        }
        Err(not_found())
    }

    fn resolve_digest(&self, text: &str, prefix: &str) -> Result<ImageInfo, ImageError> {
        let dir = self.root.join("content/sha256");
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
            let entry = entry.map_err(ImageError::io(&dir))?;
            let hex = entry.file_name().to_string_lossy().into_owned();
            if hex.starts_with(prefix) && self.has_content(&hex) {
                found.push(hex);
            }
        }
        found.sort();
        match found.as_slice() {
            [] => Err(ImageError::NotFound {
                name: text.to_string(),
            }),
            [hex] => {
                let digest = format!("sha256:{hex}");
                let name = self
                    .names_of(&digest)?
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| hex.get(..12).unwrap_or(hex).to_string());
                self.info(&name, &digest)
            }
            many => Err(ImageError::Ambiguous {
                prefix: text.to_string(),
                matches: many
                    .iter()
                    .map(|h| h.get(..12).unwrap_or(h))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    fn info(&self, name: &str, digest: &str) -> Result<ImageInfo, ImageError> {
        let dir = self.content_dir(digest);
        let meta_path = dir.join("meta.json");
        let text = fs::read_to_string(&meta_path).map_err(ImageError::io(&meta_path))?;
        let meta: Meta = serde_json::from_str(&text).map_err(|e| ImageError::Io {
            path: meta_path.clone(),
            source: std::io::Error::other(e),
        })?;
        Ok(ImageInfo {
            name: name.to_string(),
            digest: meta.digest,
            rootfs: dir.join("rootfs"),
            size: meta.size,
            created: meta.created,
            source: meta.source,
        })
    }

    fn name_path(&self, name: &str) -> PathBuf {
        self.root.join("names").join(format!("{name}.json"))
    }

    fn name_digest(&self, name: &str) -> Result<Option<String>, ImageError> {
        let path = self.name_path(name);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let file: NameFile = serde_json::from_str(&text).map_err(|e| ImageError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e),
                })?;
                Ok(Some(file.digest))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::Io { path, source: e }),
        }
    }

    fn names(&self) -> Result<Vec<String>, ImageError> {
        let dir = self.root.join("names");
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
            let entry = entry.map_err(ImageError::io(&dir))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".json") {
                if !name.starts_with('.') {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn names_of(&self, digest: &str) -> Result<Vec<String>, ImageError> {
        let mut out = Vec::new();
        for name in self.names()? {
            if self.name_digest(&name)?.as_deref() == Some(digest) {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn lock(&self, exclusive: bool) -> Result<File, ImageError> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(ImageError::io(&path))?;
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(ImageError::io(&path))?;
        Ok(file)
    }

    fn remove_stale_work_dirs(&self) {
        let dir = self.root.join("tmp");
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let pid = file.split('-').next().unwrap_or("");
            let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
            if !alive {
                let _ = remove_tree(&entry.path());
            }
        }
    }
}

/// A directory under `<root>/tmp`, deleted (after unmounting anything below it) on drop.
pub(crate) struct WorkDir {
    pub path: PathBuf,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.path.exists() {
            let _ = remove_tree(&self.path);
        }
    }
}

/// Deletes a tree, first lazily unmounting anything mounted below it (debootstrap mounts /proc and
/// /sys in its target); refuses when a mount is still there rather than delete through it.
pub(crate) fn remove_tree(path: &Path) -> Result<(), ImageError> {
    let mounted = mounts_below(path);
    for mount in mounted.iter().rev() {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(mount)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    if !mounts_below(path).is_empty() {
        return Err(ImageError::Failed {
            step: "cleanup".into(),
            message: format!("{} still has file systems mounted below it", path.display()),
        });
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn mounts_below(path: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    let base = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(&base))
        .collect();
    out.sort();
    out
}

fn unescape_mount(text: &str) -> String {
    text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Validates a name and returns its stored form (`NAME` for `NAME` and `NAME:latest`).
pub(crate) fn canonical_name(text: &str) -> Result<String, ImageError> {
    let name = agentbox_policy::image_name(text)
        .map_err(|e| ImageError::invalid("image name", e.to_string()))?;
    if name.starts_with("sha256:") {
        return Err(ImageError::invalid(
            "image name",
            format!("`{text}` is a digest, not a name"),
        ));
    }
    Ok(name.strip_suffix(":latest").unwrap_or(&name).to_string())
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ImageError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| ImageError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let mut file = File::create(path).map_err(ImageError::io(path))?;
    file.write_all(&text).map_err(ImageError::io(path))?;
    file.sync_all().map_err(ImageError::io(path))
}
