//! The agentbox image store: root filesystems that sandboxes use as a read-only overlay lower layer.
//!
//! Images come from three sources: an OCI image layout (a directory or a tar of one), a `docker save`
//! tarball, or `debootstrap --variant=minbase` ([`Store::build_debian`]).
//!
//! # Layout
//!
//! ```text
//! <root>/lock                          flock(2): exclusive while the store changes, shared while read
//! <root>/content/sha256/<hex>/meta.json   {digest, size, created, source} (mode 0444)
//! <root>/content/sha256/<hex>/rootfs/     the tree; never written after it is renamed into place
//! <root>/names/<name>.json                {name, digest}: one file per name, replaced atomically
//! <root>/tmp/<pid>-<n>/                   work directories; renamed into content/ or deleted
//! ```
//!
//! An image is built or extracted in `tmp/` without holding the lock, then renamed into `content/`
//! (atomic, same file system) and named while holding the exclusive lock. A failure deletes the work
//! directory; work directories of dead processes are deleted by [`Store::open`].
//!
//! # Digests
//!
//! * OCI layout: the digest of the image **manifest** (what `docker pull`/registries call the digest).
//! * `docker save`: the digest of the image **config** (what Docker calls the image ID).
//! * debootstrap: sha256 over a deterministic listing of the tree (see `tree.rs`): every entry sorted
//!   by path with its type, mode, uid, gid, mtime, size and content hash / link target / device number.
//!   Builds are not reproducible (mtimes, generated files), so two builds get two digests.
//!
//! Importing content whose digest is already stored only adds the name.
//!
//! # Names
//!
//! `NAME[:TAG]` of letters, digits and `._-` ([`agentbox_policy::image_name`]). A missing tag and
//! `:latest` are the same: `bookworm` and `bookworm:latest` both name `names/bookworm.json` (the
//! stored, displayed form drops `:latest`). Naming a new digest with an existing name moves the
//! name; content that no name refers to any more is deleted.
//!
//! # Extraction
//!
//! Layers are applied in order, each in two passes: the first verifies the blob digest and collects
//! whiteouts (`.wh.NAME`, `.wh..wh..opq`), which are applied to the lower layers before the second
//! pass writes the layer's entries. Entry paths are resolved inside the rootfs, symlinks included
//! (a symlink to `/etc` planted by an earlier entry resolves to `<rootfs>/etc`), `..` in an entry or
//! hard-link path is refused as bad input, and files are created with `O_EXCL` after removing what was
//! there (so a planted symlink is replaced, never written through). Modes, numeric ownership (when
//! running as root), mtimes, symlinks and hard links are preserved; device nodes and FIFOs are
//! skipped, extended attributes (file capabilities, SELinux labels) are not restored.
#![forbid(unsafe_code)]

mod debian;
mod error;
mod extract;
mod import;
mod source;
mod store;
mod tree;

pub use error::ImageError;
pub use store::Store;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One named image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `bookworm` or `alpine:3.19` (`:latest` is not shown).
    pub name: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    /// The root filesystem (read-only by convention: mount it as an overlay lower layer).
    pub rootfs: PathBuf,
    /// Bytes of file content (hard links counted once).
    pub size: u64,
    /// Unix seconds when the content was stored.
    pub created: u64,
    /// `debootstrap bookworm`, `oci-layout FILE` or `docker-save FILE`.
    pub source: String,
}

impl ImageInfo {
    /// The first 12 hex digits of the digest.
    pub fn short_digest(&self) -> &str {
        let hex = self.digest.strip_prefix("sha256:").unwrap_or(&self.digest);
        hex.get(..12).unwrap_or(hex)
    }
}

/// What an import or build is doing, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A new phase started ("reading docker-save archive", "configuring packages").
    Stage(String),
    /// `done` of `total` units of the current phase (total is an estimate for debootstrap).
    Step { done: u64, total: u64, what: String },
}
