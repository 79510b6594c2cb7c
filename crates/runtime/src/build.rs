//! Executes a `MountPlan` inside the sandbox's fresh mount namespace: builds the new root at
//! `stage`, ready for pivot_root (ns tier) or chroot (chroot tier). Runs in the forked child only.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use agentbox_sys::mount::{self, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY};

use crate::launch::Failure;
use crate::plan::{Source, Step};

/// Where every sandbox builds its root, each in its own mount namespace, so they never collide.
pub const STAGE: &str = "/run/agentbox/.stage";

/// Builds the root described by `steps` and returns its path. `owner_offset` turns sandbox uids
/// into the ids this process must write (0 inside a user namespace; the host uid base for chroot).
pub fn build_root(
    steps: &[Step],
    opened: &[OwnedFd],
    owner_offset: u32,
) -> Result<PathBuf, Failure> {
    let stage = Path::new(STAGE);
    let mut root = stage.to_path_buf();
    let tree = |i: usize| -> Result<&OwnedFd, Failure> {
        opened
            .get(i)
            .ok_or_else(|| Failure::setup("plan", format!("no opened source {i}")))
    };
    for step in steps {
        match step {
            Step::RootTmpfs { size } => {
                tmpfs(stage, *size, 0o755, owner_offset)?;
            }
            Step::RootOverlay { lower, size } => {
                tmpfs(stage, *size, 0o755, owner_offset)?;
                for d in ["lower", "upper", "work", "root"] {
                    std::fs::DirBuilder::new()
                        .mode(0o755)
                        .create(stage.join(d))
                        .map_err(|e| Failure::setup(format!("mkdir {STAGE}/{d}"), e))?;
                }
                root = stage.join("root");
                let image = match lower {
                    Source::Opened(i) => tree(*i)?,
                    Source::Host(p) => {
                        return Err(Failure::setup(
                            "plan",
                            format!("image {} not opened", p.display()),
                        ))
                    }
                };
                mount::attach(image, &stage.join("lower"))
                    .map_err(|e| Failure::setup("attach image", e))?;
                let data = format!(
                    "lowerdir={STAGE}/lower,upperdir={STAGE}/upper,workdir={STAGE}/work,userxattr"
                );
                mount::mount(
                    Path::new("overlay"),
                    &root,
                    "overlay",
                    MS_NOSUID | MS_NODEV,
                    &data,
                )
                .map_err(|e| Failure::setup("mount overlay root", e))?;
            }
            Step::Dir { path, mode, owner } => {
                let full = inside(&root, path, true)?;
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| Failure::setup(format!("chmod {}", path.display()), e))?;
                if *owner != 0 || owner_offset != 0 {
                    std::os::unix::fs::chown(
                        &full,
                        Some(owner + owner_offset),
                        Some(owner + owner_offset),
                    )
                    .map_err(|e| Failure::setup(format!("chown {}", path.display()), e))?;
                }
            }
            Step::Symlink { path, target } => {
                let full = parent_inside(&root, path)?;
                symlink(target, &full)
                    .map_err(|e| Failure::setup(format!("symlink {}", path.display()), e))?;
            }
            Step::File {
                path,
                contents,
                mode,
            } => {
                let full = parent_inside(&root, path)?;
                std::fs::write(&full, contents)
                    .map_err(|e| Failure::setup(format!("write {}", path.display()), e))?;
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| Failure::setup(format!("chmod {}", path.display()), e))?;
            }
            Step::Bind {
                source,
                target,
                writable,
                is_dir,
            } => {
                let full = inside(&root, target, *is_dir)?;
                let src = match source {
                    // Detached trees already carry their flags (set by the supervisor).
                    Source::Opened(i) => {
                        mount::attach(tree(*i)?, &full)
                            .map_err(|e| Failure::setup(format!("bind {}", target.display()), e))?;
                        continue;
                    }
                    Source::Host(p) => p,
                };
                mount::bind(src, &full, false)
                    .map_err(|e| Failure::setup(format!("bind {}", target.display()), e))?;
                // A device node keeps its source's flags: it can be neither executed nor setuid,
                // and it must not be nodev; one remount less per device on the hot path.
                if target.starts_with("/dev") && !is_dir {
                    continue;
                }
                let flags = MS_NOSUID | MS_NODEV | if *writable { 0 } else { MS_RDONLY };
                restrict(&full, target, flags)?;
            }
            Step::Tmpfs { target, size, mode } => {
                let full = inside(&root, target, true)?;
                tmpfs(&full, *size, *mode, owner_offset)?;
            }
            Step::Proc => {
                let full = inside(&root, Path::new("/proc"), true)?;
                mount::mount(
                    Path::new("proc"),
                    &full,
                    "proc",
                    MS_NOSUID | MS_NODEV | MS_NOEXEC,
                    "",
                )
                .map_err(|e| Failure::setup("mount /proc", e))?;
            }
            Step::DevPts => {
                let full = inside(&root, Path::new("/dev/pts"), true)?;
                mount::mount(
                    Path::new("devpts"),
                    &full,
                    "devpts",
                    MS_NOSUID | MS_NOEXEC,
                    "newinstance,ptmxmode=0666,mode=0620",
                )
                .map_err(|e| Failure::setup("mount /dev/pts", e))?;
                symlink("pts/ptmx", root.join("dev/ptmx"))
                    .map_err(|e| Failure::setup("symlink /dev/ptmx", e))?;
            }
            Step::MaskFile(path) => {
                let full = root.join(relative(path));
                if full.exists() {
                    mount::bind(&root.join("dev/null"), &full, false)
                        .map_err(|e| Failure::setup(format!("mask {}", path.display()), e))?;
                }
            }
            Step::MaskDir(path) => {
                let full = root.join(relative(path));
                if full.is_dir() {
                    mount::mount(
                        Path::new("tmpfs"),
                        &full,
                        "tmpfs",
                        MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                        "size=4k,mode=0555",
                    )
                    .map_err(|e| Failure::setup(format!("mask {}", path.display()), e))?;
                }
            }
            Step::ReadOnly(path) => {
                let full = root.join(relative(path));
                if full.exists() {
                    mount::bind(&full, &full, true)
                        .map_err(|e| Failure::setup(format!("bind {}", path.display()), e))?;
                    restrict(&full, path, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)?;
                }
            }
        }
    }
    Ok(root)
}

/// Remounts the bind at `full` with `flags`. Inside a user namespace the kernel refuses (EPERM) a
/// remount that would clear a flag locked by the source mount (noexec, an atime mode...); only then
/// are the source's flags read and kept, so the common case costs one syscall.
fn restrict(full: &Path, shown: &Path, flags: mount::Flags) -> Result<(), Failure> {
    let fail = |e| Failure::setup(format!("remount {}", shown.display()), e);
    match mount::remount_bind(full, flags) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == agentbox_sys::errno::EPERM => {
            let locked = mount::locked_flags(full).map_err(fail)?;
            mount::remount_bind(full, flags | locked).map_err(fail)
        }
        Err(e) => Err(fail(e)),
    }
}

/// Inodes of a scratch tmpfs: one per 4 KiB of its size. Without a cap a tmpfs allows as many
/// inodes as half the host's RAM pages, so an inode flood (found by `agentbox eval`'s
/// `inode_fill`) would not be contained by `--disk`.
pub(crate) fn tmpfs_inodes(size: u64) -> u64 {
    (size / 4096).max(1024)
}

fn tmpfs(at: &Path, size: u64, mode: u32, owner: u32) -> Result<(), Failure> {
    let inodes = tmpfs_inodes(size);
    let data = format!("size={size},nr_inodes={inodes},mode={mode:o},uid={owner},gid={owner}");
    mount::mount(Path::new("tmpfs"), at, "tmpfs", MS_NOSUID | MS_NODEV, &data)
        .map_err(|e| Failure::setup(format!("mount tmpfs on {}", at.display()), e))
}

fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Creates `path` under `root` (a directory, or an empty file for a file mount point) with every
/// missing parent, refusing to cross a symlink: a mount target must not lead out of the new root.
fn inside(root: &Path, path: &Path, is_dir: bool) -> Result<PathBuf, Failure> {
    let rel = relative(path);
    let mut full = root.to_path_buf();
    let count = rel.components().count();
    for (i, part) in rel.components().enumerate() {
        full.push(part);
        let last = i + 1 == count;
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Failure::invalid(format!(
                    "mount target {}: crosses a symlink at {}",
                    path.display(),
                    full.strip_prefix(root).unwrap_or(&full).display()
                )))
            }
            Ok(_) => {}
            Err(_) if last && !is_dir => {
                std::fs::File::create(&full)
                    .map_err(|e| Failure::setup(format!("create {}", path.display()), e))?;
            }
            Err(_) => std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&full)
                .map_err(|e| Failure::setup(format!("mkdir {}", path.display()), e))?,
        }
    }
    Ok(full)
}

/// Like `inside` for the parent of `path`; returns the full path of `path` itself.
fn parent_inside(root: &Path, path: &Path) -> Result<PathBuf, Failure> {
    match path.parent() {
        Some(parent) if parent != Path::new("/") => {
            Ok(inside(root, parent, true)?.join(path.file_name().unwrap_or_default()))
        }
        _ => Ok(root.join(relative(path))),
    }
}
