//! Applying layer tars to a rootfs without ever writing outside it.
//!
//! Nobody else writes the work directory while we extract, so resolving a path component by
//! component with `symlink_metadata` and then acting on the resolved real path is race-free.

use crate::source::{copy_checked, Compression, Hashing};
use crate::ImageError;
use filetime::FileTime;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, FileTimes, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path before giving up (Linux uses 40).
const MAX_LINKS: u32 = 40;
const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What a layer blob's digest covers.
pub(crate) enum LayerDigest<'a> {
    /// The blob as stored (OCI descriptors).
    Stored(&'a str),
    /// The uncompressed tar (docker-save `rootfs.diff_ids`).
    Uncompressed(&'a str),
}

enum Whiteout {
    Opaque(Vec<OsString>),
    Remove(Vec<OsString>, OsString),
}

/// A rootfs being assembled in a work directory.
pub(crate) struct Rootfs {
    root: PathBuf,
    chown: bool,
    /// mtimes of directories from the archives, keyed by the path relative to the root; applied
    /// by [`Rootfs::finish`] once nothing more is written into them.
    dir_times: HashMap<PathBuf, FileTime>,
    /// Device nodes and FIFOs skipped.
    pub skipped: u64,
}

impl Rootfs {
    pub fn create(root: &Path) -> Result<Rootfs, ImageError> {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(root)
            .map_err(ImageError::io(root))?;
        // Ownership can only be restored as root; /proc/self belongs to our effective uid.
        let chown = fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        Ok(Rootfs {
            root: root.to_path_buf(),
            chown,
            dir_times: HashMap::new(),
            skipped: 0,
        })
    }

    /// Verifies one layer blob against `digest`, applies its whiteouts to the lower layers and
    /// writes its entries. `open` is called twice (verify + whiteouts, then entries).
    pub fn apply_layer(
        &mut self,
        open: &dyn Fn() -> Result<Box<dyn Read>, ImageError>,
        digest: LayerDigest<'_>,
    ) -> Result<(), ImageError> {
        let whiteouts = scan_and_verify(open()?, &digest)?;
        for w in &whiteouts {
            self.apply_whiteout(w)?;
        }
        let mut input = BufReader::new(open()?);
        let compression = Compression::of(input.fill_buf().map_err(bad_archive)?);
        let mut archive = tar::Archive::new(decoder(input, compression)?);
        for entry in archive.entries().map_err(bad_archive)? {
            let mut entry = entry.map_err(bad_archive)?;
            self.apply_entry(&mut entry)?;
        }
        Ok(())
    }

    /// Sets the recorded directory mtimes, walking only real directories (never a symlink).
    pub fn finish(self) -> Result<(), ImageError> {
        self.set_dir_times(&self.root.clone(), Path::new(""))
    }

    fn set_dir_times(&self, dir: &Path, rel: &Path) -> Result<(), ImageError> {
        for entry in fs::read_dir(dir).map_err(ImageError::io(dir))? {
            let entry = entry.map_err(ImageError::io(dir))?;
            if entry.file_type().map_err(ImageError::io(dir))?.is_dir() {
                self.set_dir_times(&entry.path(), &rel.join(entry.file_name()))?;
            }
        }
        if let Some(t) = self.dir_times.get(rel) {
            filetime::set_symlink_file_times(dir, *t, *t).map_err(ImageError::io(dir))?;
        }
        Ok(())
    }

    fn apply_whiteout(&self, w: &Whiteout) -> Result<(), ImageError> {
        match w {
            Whiteout::Opaque(dir) => {
                let Some(dir) = self.resolve_dir(dir, false)? else {
                    return Ok(());
                };
                for entry in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
                    let entry = entry.map_err(ImageError::io(&dir))?;
                    remove_any(&entry.path())?;
                }
            }
            Whiteout::Remove(dir, name) => {
                if let Some(dir) = self.resolve_dir(dir, false)? {
                    remove_any(&dir.join(name))?;
                }
            }
        }
        Ok(())
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw_path = entry.path().map_err(bad_archive)?.into_owned();
        let comps = clean_path(&raw_path)?;
        let Some((name, parent)) = comps.split_last() else {
            return Ok(()); // "./": the root itself keeps its 0755
        };
        if name.as_bytes().starts_with(WHITEOUT.as_bytes()) {
            return Ok(());
        }
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(bad_archive)? & 0o7777;
        let uid = id(header.uid(), "uid", &raw_path)?;
        let gid = id(header.gid(), "gid", &raw_path)?;
        let mtime = FileTime::from_unix_time(
            i64::try_from(header.mtime().map_err(bad_archive)?).unwrap_or(0),
            0,
        );
        let dir = self
            .resolve_dir(parent, true)?
            .ok_or_else(|| ImageError::invalid("archive", "parent not created"))?;
        let dst = dir.join(name);
        if kind.is_dir() {
            let existing = fs::symlink_metadata(&dst).ok();
            if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                remove_any(&dst)?;
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dst)
                    .map_err(ImageError::io(&dst))?;
            }
            self.chown(&dst, uid, gid)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode))
                .map_err(ImageError::io(&dst))?;
            let rel = dst.strip_prefix(&self.root).unwrap_or(&dst).to_path_buf();
            self.dir_times.insert(rel, mtime);
        } else if kind.is_file() {
            remove_any(&dst)?;
            // create_new is O_CREAT|O_EXCL: it never follows a symlink at dst.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&dst)
                .map_err(ImageError::io(&dst))?;
            copy_checked(entry, &mut file, &raw_path, &dst)?;
            if self.chown {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                    .map_err(ImageError::io(&dst))?;
            }
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(ImageError::io(&dst))?;
            file.set_times(
                FileTimes::new()
                    .set_modified(to_system(mtime))
                    .set_accessed(to_system(mtime)),
            )
            .map_err(ImageError::io(&dst))?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(bad_archive)?
                .ok_or_else(|| ImageError::invalid("archive", "symlink without a target"))?
                .into_owned();
            remove_any(&dst)?;
            std::os::unix::fs::symlink(&target, &dst).map_err(ImageError::io(&dst))?;
            self.chown(&dst, uid, gid)?;
            filetime::set_symlink_file_times(&dst, mtime, mtime).map_err(ImageError::io(&dst))?;
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(bad_archive)?
                .ok_or_else(|| ImageError::invalid("archive", "hard link without a target"))?
                .into_owned();
            let src = self.resolve_link_target(&target, &raw_path)?;
            if src == dst {
                return Ok(());
            }
            remove_any(&dst)?;
            // link(2) does not follow a symlink at src: the link is to the symlink itself.
            fs::hard_link(&src, &dst).map_err(ImageError::io(&dst))?;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            self.skipped += 1;
        }
        Ok(())
    }

    fn resolve_link_target(&self, target: &Path, entry: &Path) -> Result<PathBuf, ImageError> {
        let refuse = |why: &str| {
            ImageError::invalid(
                "archive",
                format!(
                    "hard link {} -> {}: {why}",
                    entry.display(),
                    target.display()
                ),
            )
        };
        let comps = clean_path(target)?;
        let (name, parent) = comps.split_last().ok_or_else(|| refuse("links the root"))?;
        let dir = self
            .resolve_dir(parent, false)?
            .ok_or_else(|| refuse("target does not exist in the image"))?;
        let src = dir.join(name);
        match fs::symlink_metadata(&src) {
            Ok(m) if m.is_dir() => Err(refuse("target is a directory")),
            Ok(_) => Ok(src),
            Err(_) => Err(refuse("target does not exist in the image")),
        }
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), ImageError> {
        if self.chown {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(ImageError::io(path))?;
        }
        Ok(())
    }

    /// Resolves directory components inside the root, following symlinks as if the root were `/`
    /// (an absolute target restarts at the root, `..` stops at the root). Missing directories are
    /// created (0755) when `create`, else `None` is returned. The result is a real directory under
    /// the root reached through real directories only.
    fn resolve_dir(&self, comps: &[OsString], create: bool) -> Result<Option<PathBuf>, ImageError> {
        let mut stack: Vec<OsString> = Vec::new();
        let mut queue: std::collections::VecDeque<OsString> = comps.iter().cloned().collect();
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            if c == ".." {
                stack.pop();
                continue;
            }
            if c == "." || c.is_empty() {
                continue;
            }
            let mut path = self.root.clone();
            path.extend(&stack);
            path.push(&c);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(c),
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(ImageError::invalid(
                            "archive",
                            format!("too many levels of symlinks at {}", path.display()),
                        ));
                    }
                    let target = fs::read_link(&path).map_err(ImageError::io(&path))?;
                    if target.is_absolute() {
                        stack.clear();
                    }
                    let mut front: Vec<OsString> = target
                        .components()
                        .filter_map(|t| match t {
                            Component::Normal(n) => Some(n.to_os_string()),
                            Component::ParentDir => Some(OsString::from("..")),
                            _ => None,
                        })
                        .collect();
                    front.extend(queue.drain(..));
                    queue = front.into();
                }
                Ok(_) => {
                    return Err(ImageError::invalid(
                        "archive",
                        format!("{} is not a directory", rel(&self.root, &path)),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .map_err(ImageError::io(&path))?;
                    stack.push(c);
                }
                Err(e) => return Err(ImageError::Io { path, source: e }),
            }
        }
        let mut path = self.root.clone();
        path.extend(&stack);
        Ok(Some(path))
    }
}

/// Pass 1: reads the whole blob, checks its digest and every entry path, returns the whiteouts.
fn scan_and_verify(
    raw: Box<dyn Read>,
    digest: &LayerDigest<'_>,
) -> Result<Vec<Whiteout>, ImageError> {
    let mut stored = BufReader::new(Hashing::new(raw));
    let compression = Compression::of(stored.fill_buf().map_err(bad_archive)?);
    let (expected, actual) = match digest {
        LayerDigest::Stored(d) => {
            let whiteouts = scan(decoder(&mut stored, compression)?)?;
            io::copy(&mut stored, &mut io::sink()).map_err(bad_archive)?;
            let hex = stored.into_inner().finish().map_err(bad_archive)?;
            (d, (hex, whiteouts))
        }
        LayerDigest::Uncompressed(d) => {
            let mut plain = Hashing::new(decoder(&mut stored, compression)?);
            let whiteouts = scan(&mut plain)?;
            let hex = plain.finish().map_err(bad_archive)?;
            (d, (hex, whiteouts))
        }
    };
    crate::source::verify(expected, &actual.0)?;
    Ok(actual.1)
}

fn scan(reader: impl Read) -> Result<Vec<Whiteout>, ImageError> {
    let mut archive = tar::Archive::new(reader);
    let mut whiteouts = Vec::new();
    for entry in archive.entries().map_err(bad_archive)? {
        let entry = entry.map_err(bad_archive)?;
        let path = entry.path().map_err(bad_archive)?.into_owned();
        let mut comps = clean_path(&path)?;
        if entry.header().entry_type().is_hard_link() {
            if let Some(target) = entry.link_name().map_err(bad_archive)? {
                clean_path(&target)?;
            }
        }
        let Some(name) = comps.pop() else { continue };
        let bytes = name.as_bytes();
        if bytes == OPAQUE.as_bytes() {
            whiteouts.push(Whiteout::Opaque(comps));
        } else if let Some(hidden) = bytes.strip_prefix(WHITEOUT.as_bytes()) {
            // `.wh..wh.*` other than the opaque marker is aufs bookkeeping: ignore it.
            if !hidden.starts_with(WHITEOUT.as_bytes()) && !hidden.is_empty() {
                whiteouts.push(Whiteout::Remove(
                    comps,
                    OsStr::from_bytes(hidden).to_os_string(),
                ));
            }
        }
    }
    Ok(whiteouts)
}

fn decoder<'a>(
    input: impl Read + 'a,
    compression: Compression,
) -> Result<Box<dyn Read + 'a>, ImageError> {
    match compression {
        Compression::None => Ok(Box::new(input)),
        Compression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(input))),
        Compression::Zstd => Err(ImageError::invalid(
            "layer",
            "zstd-compressed layers are not supported (re-save the image with gzip or uncompressed layers)",
        )),
    }
}

/// The normal components of an entry path (`/a/./b` → `a`,`b`); `..` anywhere is refused.
fn clean_path(path: &Path) -> Result<Vec<OsString>, ImageError> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ImageError::invalid(
                    "archive",
                    format!("entry `{}` points outside the image", path.display()),
                ))
            }
        }
    }
    Ok(out)
}

/// Removes whatever is at `path` (a directory recursively, without following symlinks).
fn remove_any(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(ImageError::io(path))
}

fn id(value: io::Result<u64>, what: &str, path: &Path) -> Result<u32, ImageError> {
    let value = value.map_err(bad_archive)?;
    u32::try_from(value).map_err(|_| {
        ImageError::invalid(
            "archive",
            format!("{what} {value} of {} is too large", path.display()),
        )
    })
}

fn to_system(t: FileTime) -> std::time::SystemTime {
    std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(t.unix_seconds()).unwrap_or(0))
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn bad_archive(e: io::Error) -> ImageError {
    ImageError::invalid("archive", e.to_string())
}
