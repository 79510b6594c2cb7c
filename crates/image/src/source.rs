//! Reading members of an import source: a directory, or an (optionally gzip'd) tar read in place.

use crate::ImageError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 16 << 20;

pub(crate) enum Source {
    Dir(PathBuf),
    Tar {
        file: PathBuf,
        members: HashMap<String, Member>,
    },
}

pub(crate) enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

impl Source {
    /// Opens `path`: a directory as is; a tar (gzip'd tars are first decompressed to `scratch`) is
    /// indexed so members are read in place.
    pub fn open(path: &Path, scratch: &Path) -> Result<Source, ImageError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| ImageError::invalid("source", format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        let mut file = path.to_path_buf();
        if Compression::sniff(path)? == Compression::Gzip {
            let tar = scratch.join("source.tar");
            let input = File::open(path).map_err(ImageError::io(path))?;
            let mut out = File::create(&tar).map_err(ImageError::io(&tar))?;
            let mut decoder = flate2::read::MultiGzDecoder::new(BufReader::new(input));
            copy_checked(&mut decoder, &mut out, path, &tar)?;
            file = tar;
        }
        let bad = |e: io::Error| ImageError::invalid("archive", format!("{}: {e}", path.display()));
        let input = File::open(&file).map_err(ImageError::io(&file))?;
        let mut archive = tar::Archive::new(BufReader::new(input));
        let mut members = HashMap::new();
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let Some(key) = member_key(&entry.path().map_err(bad)?) else {
                continue;
            };
            let kind = entry.header().entry_type();
            if kind.is_file() {
                members.insert(
                    key,
                    Member::File {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    },
                );
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name().map_err(bad)? else {
                    continue;
                };
                let target = if kind.is_symlink() {
                    Path::new(&key)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(target)
                } else {
                    target.into_owned()
                };
                members.insert(key, Member::Link(target.to_string_lossy().into_owned()));
            }
        }
        Ok(Source::Tar { file, members })
    }

    pub fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir(dir) => member_key(Path::new(name)).is_some_and(|k| dir.join(k).is_file()),
            Source::Tar { members, .. } => self.lookup(members, name).is_some(),
        }
    }

    fn lookup(&self, members: &HashMap<String, Member>, name: &str) -> Option<(u64, u64)> {
        let mut key = member_key(Path::new(name))?;
        for _ in 0..16 {
            match members.get(&key)? {
                Member::File { offset, size } => return Some((*offset, *size)),
                Member::Link(target) => key = member_key(Path::new(target))?,
            }
        }
        None
    }

    /// A reader of member `name` (a path inside the layout) and its size.
    pub fn open_member(&self, name: &str) -> Result<(Box<dyn Read>, u64), ImageError> {
        let missing = || ImageError::invalid("archive", format!("`{name}` is missing"));
        match self {
            Source::Dir(dir) => {
                let key = member_key(Path::new(name)).ok_or_else(missing)?;
                let path = dir.join(key);
                let file = File::open(&path).map_err(|_| missing())?;
                let size = file.metadata().map_err(ImageError::io(&path))?.len();
                Ok((Box::new(BufReader::new(file)), size))
            }
            Source::Tar { file, members } => {
                let (offset, size) = self.lookup(members, name).ok_or_else(missing)?;
                let mut f = File::open(file).map_err(ImageError::io(file))?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(ImageError::io(file))?;
                Ok((Box::new(BufReader::new(f).take(size)), size))
            }
        }
    }

    /// A JSON member, parsed.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, ImageError> {
        let bytes = self.read_small(name)?;
        parse_json(name, &bytes)
    }

    /// A small member (at most 16 MiB) read into memory.
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let (reader, size) = self.open_member(name)?;
        if size > MAX_JSON {
            return Err(ImageError::invalid(
                "archive",
                format!("`{name}` is {size} bytes, more than expected for metadata"),
            ));
        }
        let mut bytes = Vec::new();
        reader
            .take(MAX_JSON)
            .read_to_end(&mut bytes)
            .map_err(|e| ImageError::invalid("archive", format!("reading `{name}`: {e}")))?;
        Ok(bytes)
    }

    /// A blob `blobs/sha256/<hex>` read into memory, its digest verified.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let name = blob_path(digest)?;
        let bytes = self.read_small(&name)?;
        verify(digest, &sha256_hex(&bytes))?;
        Ok(bytes)
    }
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    name: &str,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ImageError::invalid("archive", format!("`{name}` is not valid: {e}")))
}

/// `blobs/sha256/<hex>` for `sha256:<hex>`; other algorithms and malformed digests are refused.
pub(crate) fn blob_path(digest: &str) -> Result<String, ImageError> {
    let hex = digest_hex(digest)?;
    Ok(format!("blobs/sha256/{hex}"))
}

pub(crate) fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ => Err(ImageError::invalid(
            "digest",
            format!("`{digest}` is not sha256:<64 lowercase hex digits>"),
        )),
    }
}

pub(crate) fn verify(expected: &str, actual_hex: &str) -> Result<(), ImageError> {
    if digest_hex(expected)? != actual_hex {
        return Err(ImageError::invalid(
            "blob",
            format!("digest mismatch: expected {expected}, content is sha256:{actual_hex}"),
        ));
    }
    Ok(())
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Normalizes an archive member path (`./a/b`, `/a/b` → `a/b`); `None` for `..` or the root.
fn member_key(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn sniff(path: &Path) -> Result<Compression, ImageError> {
        let file = File::open(path)
            .map_err(|e| ImageError::invalid("source", format!("{}: {e}", path.display())))?;
        let mut reader = BufReader::new(file);
        Ok(Compression::of(
            reader.fill_buf().map_err(ImageError::io(path))?,
        ))
    }

    pub fn of(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Copies `from` (archive data: a read error is bad input) to `to` (a store file: an I/O error).
pub(crate) fn copy_checked(
    from: &mut dyn Read,
    to: &mut dyn io::Write,
    from_name: &Path,
    to_name: &Path,
) -> Result<u64, ImageError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ImageError::invalid(
                    "archive",
                    format!("reading {}: {e}", from_name.display()),
                ))
            }
        };
        to.write_all(buf.get(..n).unwrap_or(&[]))
            .map_err(ImageError::io(to_name))?;
        total += n as u64;
    }
}

/// A reader that hashes what passes through it.
pub(crate) struct Hashing<R> {
    pub inner: R,
    pub hasher: Sha256,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads the rest of the stream and returns the hex digest of everything read.
    pub fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or(&[]));
        Ok(n)
    }
}
