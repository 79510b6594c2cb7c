//! Measuring a tree: its size, and for built images a digest over a deterministic listing.
//!
//! The listing is, for every entry below the root in byte order of its path, one record
//! `TYPE MODE UID GID MTIME SIZE DETAIL PATH\0` where TYPE is `d`/`f`/`l`/`h` (a hard link to an
//! earlier file)/`c`/`b`/`p`/`s`, MODE is octal, DETAIL is the sha256 of a file's content, a
//! symlink's target, the earlier path of a hard link, or the device number. The digest is the
//! sha256 of the concatenated records.

use crate::ImageError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub(crate) struct Measure {
    pub size: u64,
    pub digest: Option<String>,
}

pub(crate) fn measure(root: &Path, with_digest: bool) -> Result<Measure, ImageError> {
    let mut walk = Walk {
        root: root.to_path_buf(),
        with_digest,
        size: 0,
        seen: HashMap::new(),
        hasher: Sha256::new(),
    };
    walk.dir(root)?;
    Ok(Measure {
        size: walk.size,
        digest: with_digest.then(|| format!("sha256:{}", hex::encode(walk.hasher.finalize()))),
    })
}

struct Walk {
    root: PathBuf,
    with_digest: bool,
    size: u64,
    /// (dev, ino) of files with several links → their first path.
    seen: HashMap<(u64, u64), Vec<u8>>,
    hasher: Sha256,
}

impl Walk {
    fn dir(&mut self, dir: &Path) -> Result<(), ImageError> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(ImageError::io(dir))?
            .collect::<Result<_, _>>()
            .map_err(ImageError::io(dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(ImageError::io(&path))?;
            let rel = path
                .strip_prefix(&self.root)
                .unwrap_or(&path)
                .as_os_str()
                .as_bytes()
                .to_vec();
            let ft = meta.file_type();
            let (kind, detail) = if ft.is_dir() {
                ("d", String::new())
            } else if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.seen.get(&key) {
                        let first = String::from_utf8_lossy(first).into_owned();
                        self.record("h", &meta, &first, &rel);
                        continue;
                    }
                    self.seen.insert(key, rel.clone());
                }
                self.size += meta.len();
                let detail = if self.with_digest {
                    file_hash(&path)?
                } else {
                    String::new()
                };
                ("f", detail)
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(ImageError::io(&path))?;
                (
                    "l",
                    String::from_utf8_lossy(target.as_os_str().as_bytes()).into_owned(),
                )
            } else if ft.is_char_device() {
                ("c", meta.rdev().to_string())
            } else if ft.is_block_device() {
                ("b", meta.rdev().to_string())
            } else if ft.is_fifo() {
                ("p", String::new())
            } else {
                ("s", String::new())
            };
            self.record(kind, &meta, &detail, &rel);
            if ft.is_dir() {
                self.dir(&path)?;
            }
        }
        Ok(())
    }

    fn record(&mut self, kind: &str, meta: &fs::Metadata, detail: &str, rel: &[u8]) {
        if !self.with_digest {
            return;
        }
        let size = if kind == "f" { meta.len() } else { 0 };
        let head = format!(
            "{kind} {:o} {} {} {} {size} {detail} ",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            meta.mtime()
        );
        self.hasher.update(head.as_bytes());
        self.hasher.update(rel);
        self.hasher.update([0u8]);
    }
}

fn file_hash(path: &Path) -> Result<String, ImageError> {
    let mut file = File::open(path).map_err(ImageError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(buf.get(..n).unwrap_or(&[])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::io(path)(e)),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}
