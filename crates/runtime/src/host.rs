//! What the supervisor learns and opens on the host before the sandbox exists: the layout the
//! `host` image needs, and an O_PATH handle on every path the user named (bind sources, the image
//! directory). A missing or wrong path is reported here, before anything has been created.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use agentbox_policy::{Image, MountKind, Policy};
use agentbox_sys::fd::open_path;

use crate::plan::{HostEntry, HostLayout, HOST_ETC_ENTRIES, HOST_SYSTEM_DIRS};
use crate::RunError;

/// Host paths opened for the sandbox, in the order `plan::Source::Opened` counts them: bind
/// sources first, the image directory last.
pub struct Opened {
    pub fds: Vec<OwnedFd>,
    pub is_dir: Vec<bool>,
}

/// Reads what each host system path is (directory, file, symlink, missing).
pub fn layout(image: &Image) -> HostLayout {
    if *image != Image::Host {
        return HostLayout::default();
    }
    let entries = HOST_SYSTEM_DIRS
        .iter()
        .chain(HOST_ETC_ENTRIES)
        .map(|p| (PathBuf::from(p), entry(Path::new(p))))
        .collect();
    HostLayout { entries }
}

fn entry(path: &Path) -> HostEntry {
    match std::fs::symlink_metadata(path) {
        Err(_) => HostEntry::Missing,
        Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(path) {
            Ok(target) => HostEntry::Symlink(target),
            Err(_) => HostEntry::Missing,
        },
        Ok(m) if m.is_dir() => HostEntry::Dir,
        Ok(_) => HostEntry::File,
    }
}

/// Opens every user-named path. Errors name the policy field and the path.
pub fn open_sources(policy: &Policy) -> Result<Opened, RunError> {
    let mut opened = Opened {
        fds: Vec::new(),
        is_dir: Vec::new(),
    };
    let mut bind_index = 0;
    for m in &policy.mounts {
        if let MountKind::Bind { source, .. } = &m.kind {
            let field = if m.target == Path::new("/workspace")
                && bind_index == 0
                && policy.mounts[0].target == m.target
            {
                "workspace".to_string()
            } else {
                format!("bind {}", m.target.display())
            };
            let meta =
                std::fs::metadata(source).map_err(|e| RunError::invalid(&field, source, e))?;
            opened.fds.push(
                open_path(source, true).map_err(|e| RunError::invalid(&field, source, e.source))?,
            );
            opened.is_dir.push(meta.is_dir());
            bind_index += 1;
        }
    }
    if let Image::Dir(dir) = &policy.image {
        let meta = std::fs::metadata(dir).map_err(|e| RunError::invalid("image", dir, e))?;
        if !meta.is_dir() {
            return Err(RunError::invalid("image", dir, "not a directory"));
        }
        opened
            .fds
            .push(open_path(dir, true).map_err(|e| RunError::invalid("image", dir, e.source))?);
        opened.is_dir.push(true);
    }
    Ok(opened)
}
