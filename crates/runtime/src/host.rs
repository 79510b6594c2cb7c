//! What the supervisor learns and opens on the host before the sandbox exists: the layout the
//! `host` image needs, and an O_PATH handle on every path the user named (bind sources, the image
//! directory). A missing or wrong path is reported here, before anything has been created.

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use agentbox_policy::{Access, Image, MountKind, Policy};
use agentbox_sys::mount::{clone_tree, set_tree_attrs};

use crate::plan::{HostEntry, HostLayout, HOST_ETC_ENTRIES, HOST_SYSTEM_DIRS};
use crate::RunError;

/// Host paths opened for the sandbox, in the order `plan::Source::Opened` counts them: bind
/// sources first, the image directory last.
pub struct Opened {
    /// Detached mount trees (open_tree clones), attached by the child where the plan says.
    pub fds: Vec<OwnedFd>,
    pub is_dir: Vec<bool>,
    pub read_only: Vec<bool>,
    /// Owner (uid, gid) of each source on the host.
    pub owner: Vec<(u32, u32)>,
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
    HostLayout {
        entries,
        resolv_conf: None,
    }
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

/// Clones every user-named path as a detached mount tree. Errors name the policy field and path.
pub fn open_sources(policy: &Policy) -> Result<Opened, RunError> {
    let mut opened = Opened {
        fds: Vec::new(),
        is_dir: Vec::new(),
        read_only: Vec::new(),
        owner: Vec::new(),
    };
    let mut first = true;
    for m in &policy.mounts {
        if let MountKind::Bind { source, access } = &m.kind {
            // The workspace, when given, is the first mount (see Policy::mounts).
            let field = if first && m.target == Path::new("/workspace") {
                "workspace".to_string()
            } else {
                format!("bind {}", m.target.display())
            };
            first = false;
            let meta =
                std::fs::metadata(source).map_err(|e| RunError::invalid(&field, source, e))?;
            if field == "workspace" && !meta.is_dir() {
                return Err(RunError::invalid(&field, source, "not a directory"));
            }
            opened
                .fds
                .push(clone_tree(source).map_err(|e| RunError::invalid(&field, source, e.source))?);
            opened.is_dir.push(meta.is_dir());
            opened.read_only.push(*access == Access::ReadOnly);
            opened.owner.push((meta.uid(), meta.gid()));
        }
    }
    if let Image::Named(name) = &policy.image {
        return Err(RunError::invalid(
            "image",
            name,
            "an image name must be resolved through the image store first",
        ));
    }
    if let Image::Dir(dir) = &policy.image {
        let meta = std::fs::metadata(dir).map_err(|e| RunError::invalid("image", dir, e))?;
        if !meta.is_dir() {
            return Err(RunError::invalid("image", dir, "not a directory"));
        }
        opened
            .fds
            .push(clone_tree(dir).map_err(|e| RunError::invalid("image", dir, e.source))?);
        opened.is_dir.push(true);
        opened.read_only.push(true);
        opened.owner.push((meta.uid(), meta.gid()));
    }
    Ok(opened)
}

impl Opened {
    /// Sets the mount attributes of every tree: nosuid and nodev everywhere, read-only where the
    /// policy says so, and with `sandbox` (the sandbox's user namespace and the host uid/gid its
    /// command runs as) an idmap:
    /// - read-only trees and the image are idmapped through the sandbox's own namespace, so their
    ///   files show the same owners inside as on the host (root as root);
    /// - a read-write tree is idmapped so that the command owns its owner's files, and what it
    ///   creates belongs to that owner on the host (see `uidmap::owner_userns`).
    ///
    /// A file system that cannot be idmapped is still mounted, without the idmap: its files then
    /// show as owned by nobody, and only world-writable directories are writable.
    pub fn restrict(&self, sandbox: Option<(&OwnedFd, (u32, u32))>) -> Result<(), RunError> {
        let mut owner_namespaces: Vec<((u32, u32), OwnedFd)> = Vec::new();
        for (i, fd) in self.fds.iter().enumerate() {
            let read_only = self.read_only[i];
            let userns = match sandbox {
                None => None,
                Some((own, _)) if read_only => Some(own),
                Some((_, writer)) => {
                    let owner = self.owner[i];
                    if !owner_namespaces.iter().any(|(o, _)| *o == owner) {
                        owner_namespaces.push((owner, crate::uidmap::owner_userns(owner, writer)?));
                    }
                    owner_namespaces
                        .iter()
                        .find(|(o, _)| *o == owner)
                        .map(|(_, fd)| fd)
                }
            };
            let result = match set_tree_attrs(fd, read_only, userns) {
                Err(e) if userns.is_some() && e.errno() == agentbox_sys::errno::EINVAL => {
                    set_tree_attrs(fd, read_only, None)
                }
                other => other,
            };
            result.map_err(|e| RunError::setup("mount attributes", e))?;
        }
        Ok(())
    }
}
