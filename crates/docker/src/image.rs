//! agentbox's images as Docker images: an image directory of the store streamed as a tar to the
//! import endpoint (`POST /images/create?fromSrc=-`) once, under a tag derived from its digest;
//! and the `host` image, a tar holding only the sandbox's symlinks and mount points. It only
//! reads the image directory (never writes it) and only imports (never pulls).

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use agentbox_oci::desc::ImageRef;
use agentbox_oci::{EngineError, Sandbox};
use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt;
use tar::{EntryType, Header, HeaderMode};
use tokio::sync::mpsc;

use crate::setup;

/// The daemon's tag of a store image: `agentbox/<first 12 hex digits of the digest>:latest`.
pub fn image_tag(image: &ImageRef) -> Result<String, EngineError> {
    let hex = image
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&image.digest);
    if hex.len() < 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(setup(
            format!("tagging image {}", image.dir.display()),
            format!("digest {:?} is not sha256:HEX", image.digest),
        ));
    }
    Ok(format!(
        "agentbox/{}:latest",
        hex[..12].to_ascii_lowercase()
    ))
}

/// Imports `image.dir` unless the daemon already has its tag; returns the tag.
pub(crate) async fn ensure_image(docker: &Docker, image: &ImageRef) -> Result<String, EngineError> {
    let tag = image_tag(image)?;
    if has_image(docker, &tag).await? {
        return Ok(tag);
    }
    let dir = image.dir.clone();
    import(docker, &tag, move |out| write_tree(&dir, out)).await?;
    Ok(tag)
}

/// The `host` image of `sandbox`: its symlinks and empty mount points, tagged
/// `agentbox/host:<hash of both>`, imported unless the daemon has it.
pub(crate) async fn ensure_host_image(
    docker: &Docker,
    sandbox: &Sandbox,
) -> Result<String, EngineError> {
    let skeleton = HostSkeleton::of(sandbox);
    let tag = format!("agentbox/host:{:016x}", skeleton.hash());
    if has_image(docker, &tag).await? {
        return Ok(tag);
    }
    import(docker, &tag, move |out| skeleton.write(out)).await?;
    Ok(tag)
}

async fn has_image(docker: &Docker, tag: &str) -> Result<bool, EngineError> {
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(setup(format!("inspecting image {tag}"), e)),
    }
}

/// Streams the tar written by `produce` (on a blocking thread) to the import endpoint.
async fn import<F>(docker: &Docker, tag: &str, produce: F) -> Result<(), EngineError>
where
    F: FnOnce(&mut ChannelWriter) -> io::Result<()> + Send + 'static,
{
    let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let producer = tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        produce(&mut out)?;
        out.flush()
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.into()),
        tag: Some(version.into()),
        ..Default::default()
    };
    let mut progress = docker.create_image(Some(options), Some(bollard::body_stream(body)), None);
    let mut failure = None;
    while let Some(item) = progress.next().await {
        if let Err(e) = item {
            failure.get_or_insert(e.to_string());
        }
    }
    let produced = producer
        .await
        .map_err(|e| setup(format!("writing the tar of {tag}"), e))?;
    if let Err(e) = produced {
        return Err(setup(format!("writing the tar of {tag}"), e));
    }
    if let Some(message) = failure {
        return Err(setup(format!("importing {tag}"), message));
    }
    Ok(())
}

const CHUNK: usize = 256 * 1024;

/// A `Write` that sends chunks to the request body; fails once the request is gone.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the daemon closed the import"))
    }
}

/// Writes `root` as a tar: numeric owners, modes and mtimes as they are, symlinks as symlinks,
/// hard links as links to the first path, device nodes and fifos as such; sockets are skipped.
pub(crate) fn write_tree(root: &Path, out: &mut dyn Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.mode(HeaderMode::Complete);
    builder.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path)?;
        let name = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel.clone()
        };
        if meta.is_dir() {
            append_header(&mut builder, &meta, &name, EntryType::Directory)?;
            let mut children: Vec<PathBuf> = fs::read_dir(&path)?
                .map(|e| e.map(|e| rel.join(e.file_name())))
                .collect::<io::Result<_>>()?;
            children.sort();
            pending.extend(children.into_iter().rev());
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)?;
            let mut header = header(&meta, EntryType::Symlink);
            builder.append_link(&mut header, &name, &target)?;
        } else if meta.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    let mut header = header(&meta, EntryType::Link);
                    header.set_size(0);
                    builder.append_link(&mut header, &name, first)?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), name.clone());
            }
            let mut header = header(&meta, EntryType::Regular);
            builder.append_data(&mut header, &name, File::open(&path)?)?;
        } else {
            let file_type = meta.file_type();
            let kind = if file_type.is_char_device() {
                EntryType::Char
            } else if file_type.is_block_device() {
                EntryType::Block
            } else if file_type.is_fifo() {
                EntryType::Fifo
            } else {
                continue;
            };
            let mut header = header(&meta, kind);
            let rdev = meta.rdev();
            let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0fff);
            let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x00ff);
            header.set_device_major(u32::try_from(major).unwrap_or(0))?;
            header.set_device_minor(u32::try_from(minor).unwrap_or(0))?;
            header.set_size(0);
            builder.append_data(&mut header, &name, io::empty())?;
        }
    }
    builder.into_inner()?.flush()
}

fn header(meta: &Metadata, kind: EntryType) -> Header {
    let mut header = Header::new_gnu();
    header.set_metadata_in_mode(meta, HeaderMode::Complete);
    header.set_entry_type(kind);
    header
}

fn append_header<W: Write>(
    builder: &mut tar::Builder<W>,
    meta: &Metadata,
    name: &Path,
    kind: EntryType,
) -> io::Result<()> {
    let mut header = header(meta, kind);
    header.set_size(0);
    builder.append_data(&mut header, name, io::empty())
}

/// What the `host` image holds: directories (mount points and their parents) and symlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostSkeleton {
    dirs: BTreeSet<PathBuf>,
    symlinks: Vec<(PathBuf, PathBuf)>,
}

impl HostSkeleton {
    fn of(sandbox: &Sandbox) -> HostSkeleton {
        let symlinks: Vec<(PathBuf, PathBuf)> = sandbox
            .symlinks
            .iter()
            .map(|(path, target)| (relative(path), target.clone()))
            .collect();
        let mut dirs = BTreeSet::new();
        let mut points: Vec<&Path> = vec![Path::new("/tmp"), Path::new("/proc")];
        points.extend(["/dev", "/sys", "/etc"].iter().map(Path::new));
        points.extend(
            sandbox
                .binds
                .iter()
                .filter(|b| b.source.is_dir())
                .map(|b| b.target.as_path()),
        );
        points.extend(sandbox.tmpfs.iter().map(|t| t.target.as_path()));
        for point in points {
            let rel = relative(point);
            // Never a directory under (or at) a symlink: Docker resolves those in the rootfs.
            if symlinks.iter().any(|(link, _)| rel.starts_with(link)) {
                continue;
            }
            for ancestor in rel.ancestors() {
                if !ancestor.as_os_str().is_empty() {
                    dirs.insert(ancestor.to_path_buf());
                }
            }
        }
        HostSkeleton { dirs, symlinks }
    }

    /// FNV-1a over the contents: stable across builds, so the cached tag stays valid.
    fn hash(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in bytes.iter().chain([0u8].iter()) {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for dir in &self.dirs {
            feed(b"d");
            feed(dir.as_os_str().as_encoded_bytes());
        }
        for (link, target) in &self.symlinks {
            feed(b"l");
            feed(link.as_os_str().as_encoded_bytes());
            feed(target.as_os_str().as_encoded_bytes());
        }
        hash
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut builder = tar::Builder::new(out);
        for dir in &self.dirs {
            let mut header = Header::new_gnu();
            header.set_entry_type(EntryType::Directory);
            header.set_mode(if dir == Path::new("tmp") {
                0o1777
            } else {
                0o755
            });
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(0);
            builder.append_data(&mut header, dir, io::empty())?;
        }
        for (link, target) in &self.symlinks {
            if let Some(parent) = link.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !self.dirs.contains(parent) {
                    let mut header = Header::new_gnu();
                    header.set_entry_type(EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    builder.append_data(&mut header, parent, io::empty())?;
                }
            }
            let mut header = Header::new_gnu();
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder.append_link(&mut header, link, target)?;
        }
        builder.into_inner()?.flush()
    }
}

/// `path` without its root, `.` and `..` components (sandbox paths are absolute and normalised).
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tags_come_from_the_digest() {
        let image = ImageRef {
            dir: PathBuf::from("/x"),
            digest: format!("sha256:{}", "AB".repeat(32)),
        };
        assert_eq!(image_tag(&image).unwrap(), "agentbox/abababababab:latest");
        let bad = ImageRef {
            dir: PathBuf::from("/x"),
            digest: "sha256:xyz".into(),
        };
        assert!(image_tag(&bad).is_err());
    }

    #[test]
    fn a_tree_keeps_owners_modes_symlinks_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("bin")).unwrap();
        fs::write(root.join("bin/a"), b"hello").unwrap();
        fs::hard_link(root.join("bin/a"), root.join("bin/b")).unwrap();
        std::os::unix::fs::symlink("bin/a", root.join("link")).unwrap();
        let mut tar_bytes = Vec::new();
        write_tree(root, &mut tar_bytes).unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entries: Vec<(String, EntryType, Option<PathBuf>)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                    e.link_name().unwrap().map(|l| l.into_owned()),
                )
            })
            .collect();
        assert_eq!(entries[0].1, EntryType::Directory);
        assert!(entries.contains(&("bin/a".into(), EntryType::Regular, None)));
        assert!(entries.contains(&(
            "bin/b".into(),
            EntryType::Link,
            Some(PathBuf::from("bin/a"))
        )));
        assert!(entries.contains(&(
            "link".into(),
            EntryType::Symlink,
            Some(PathBuf::from("bin/a"))
        )));
    }
}
