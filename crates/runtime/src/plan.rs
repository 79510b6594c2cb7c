//! The mount plan: the ordered steps that build a sandbox root from a validated policy, and the
//! Landlock rules that follow from the same mounts. Pure: the host facts it needs come in as a
//! `HostLayout`, and nothing here touches the file system.

use std::path::{Path, PathBuf};

use agentbox_policy::{Access, Image, MountKind, Policy};
use agentbox_sys::landlock::{FsAccess, LandlockRule};

/// Host system directories the `host` image shows read-only (or recreates as symlinks).
pub const HOST_SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// The minimal /etc subset the `host` image shows read-only: enough for the dynamic loader, name
/// service lookups of local files, time zone and CA certificates.
pub const HOST_ETC_ENTRIES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/os-release",
    "/etc/ssl",
];
/// What every tier hides of /proc: `agentbox_policy::proc_view`, shared with the OCI bundle.
pub use agentbox_policy::proc_view::{
    MASKED_DIRS as PROC_MASKED_DIRS, MASKED_FILES as PROC_MASKED_FILES, READ_ONLY as PROC_READ_ONLY,
};
/// Device nodes bound from the host into the sandbox's /dev.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Directories the command may write, besides writable mounts.
pub const SCRATCH_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];

/// What a host path is, as far as the plan cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    Dir,
    File,
    Symlink(PathBuf),
    Missing,
}

/// Facts about the host that the `host` image needs: what each of `HOST_SYSTEM_DIRS` and
/// `HOST_ETC_ENTRIES` is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLayout {
    pub entries: Vec<(PathBuf, HostEntry)>,
    /// `/etc/resolv.conf` for a sandbox with a network of its own (open mode): the host's
    /// resolvers that the sandbox can reach.
    pub resolv_conf: Option<String>,
}

/// Where a bind mount's source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A fixed host path chosen by agentbox (system directories).
    Host(PathBuf),
    /// The n-th path the user named, opened by the supervisor as an O_PATH fd before the fork, so
    /// that what is mounted is what was checked.
    Opened(usize),
}

/// One step of building the root. Paths are absolute paths inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The root is a fresh tmpfs (the `host` image).
    RootTmpfs {
        size: u64,
    },
    /// The root is an overlay: the image as lower layer, an ephemeral tmpfs as upper.
    RootOverlay {
        lower: Source,
        size: u64,
    },
    Dir {
        path: PathBuf,
        mode: u32,
        owner: u32,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    File {
        path: PathBuf,
        contents: String,
        mode: u32,
    },
    Bind {
        source: Source,
        target: PathBuf,
        writable: bool,
        is_dir: bool,
    },
    Tmpfs {
        target: PathBuf,
        size: u64,
        mode: u32,
    },
    /// A fresh procfs of the sandbox's pid namespace, with masked and read-only paths.
    Proc,
    /// A private devpts instance at /dev/pts and /dev/ptmx pointing into it.
    DevPts,
    /// Hide a file behind /dev/null.
    MaskFile(PathBuf),
    /// Hide a directory behind an empty read-only tmpfs.
    MaskDir(PathBuf),
    /// Bind a path onto itself read-only.
    ReadOnly(PathBuf),
}

/// The whole plan: steps in order, then the Landlock rules derived from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    pub steps: Vec<Step>,
    pub landlock: Vec<LandlockRule>,
}

/// Which parts of the plan a tier wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Full isolation: own /proc with masks, devpts.
    Namespaces,
    /// chroot: no pid namespace of its own, so no /proc at all rather than the host's.
    Chroot,
    /// The engine tiers: as chroot, and no /dev either (only its mount point): every engine mounts
    /// its own /dev (a tmpfs with the usual nodes and links, /dev/pts, /dev/shm) over it.
    Engine,
}

/// Builds the plan for `policy`. `is_dir(i)` says whether the i-th user-named source (workspace
/// and bind mounts, in order, as `Source::Opened(i)`) is a directory; the image source is opened
/// after them.
pub fn plan(
    policy: &Policy,
    layout: &HostLayout,
    source_is_dir: &[bool],
    flavour: Flavour,
) -> MountPlan {
    let mut steps = Vec::new();
    let disk = policy.limits.disk;
    let user = policy.user;
    let bind_count = policy
        .mounts
        .iter()
        .filter(|m| matches!(m.kind, MountKind::Bind { .. }))
        .count();
    match &policy.image {
        Image::Host => {
            steps.push(Step::RootTmpfs { size: disk });
            for (path, entry) in &layout.entries {
                match entry {
                    HostEntry::Missing => {}
                    HostEntry::Symlink(target) => steps.push(Step::Symlink {
                        path: path.clone(),
                        target: target.clone(),
                    }),
                    HostEntry::Dir | HostEntry::File => steps.push(Step::Bind {
                        source: Source::Host(path.clone()),
                        target: path.clone(),
                        writable: false,
                        is_dir: *entry == HostEntry::Dir,
                    }),
                }
            }
            steps.extend(generated_etc(user));
            if let Some(contents) = &layout.resolv_conf {
                steps.push(Step::File {
                    path: "/etc/resolv.conf".into(),
                    contents: contents.clone(),
                    mode: 0o644,
                });
            }
        }
        Image::Dir(_) | Image::Named(_) => steps.push(Step::RootOverlay {
            lower: Source::Opened(bind_count),
            size: disk,
        }),
    }
    let dir = |path: &str, mode: u32, owner: u32| Step::Dir {
        path: PathBuf::from(path),
        mode,
        owner,
    };
    steps.push(dir("/tmp", 0o1777, 0));
    steps.push(dir("/var/tmp", 0o1777, 0));
    steps.push(dir("/root", 0o700, 0));
    steps.push(dir("/dev", 0o755, 0));
    if flavour != Flavour::Engine {
        steps.extend(dev_steps());
    }
    if flavour == Flavour::Namespaces {
        steps.push(Step::DevPts);
        steps.push(Step::Proc);
        steps.extend(PROC_MASKED_FILES.iter().map(|p| Step::MaskFile(p.into())));
        steps.extend(PROC_MASKED_DIRS.iter().map(|p| Step::MaskDir(p.into())));
        steps.extend(PROC_READ_ONLY.iter().map(|p| Step::ReadOnly(p.into())));
    }
    if !policy
        .mounts
        .iter()
        .any(|m| m.target == Path::new("/workspace"))
    {
        steps.push(dir("/workspace", 0o755, user));
    }
    let mut opened = 0;
    for m in &policy.mounts {
        match &m.kind {
            MountKind::Bind { access, .. } => {
                steps.push(Step::Bind {
                    source: Source::Opened(opened),
                    target: m.target.clone(),
                    writable: *access == Access::ReadWrite,
                    is_dir: source_is_dir.get(opened).copied().unwrap_or(true),
                });
                opened += 1;
            }
            MountKind::Tmpfs { size } => steps.push(Step::Tmpfs {
                target: m.target.clone(),
                size: *size,
                mode: 0o1777,
            }),
        }
    }
    let landlock = landlock_rules(&steps, user);
    MountPlan { steps, landlock }
}

/// /dev/shm, the device nodes bound from the host and the /dev links.
fn dev_steps() -> Vec<Step> {
    let mut steps = vec![Step::Dir {
        path: "/dev/shm".into(),
        mode: 0o1777,
        owner: 0,
    }];
    for dev in DEVICES {
        let path = Path::new("/dev").join(dev);
        steps.push(Step::Bind {
            source: Source::Host(path.clone()),
            target: path,
            writable: true,
            is_dir: false,
        });
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink {
            path: link.into(),
            target: target.into(),
        });
    }
    steps
}

fn generated_etc(user: u32) -> Vec<Step> {
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    if user != 0 {
        passwd.push_str(&format!("user:x:{user}:{user}:user:/tmp:/bin/sh\n"));
        group.push_str(&format!("user:x:{user}:\n"));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    let file = |path: &str, contents: String| Step::File {
        path: path.into(),
        contents,
        mode: 0o644,
    };
    vec![
        file("/etc/passwd", passwd),
        file("/etc/group", group),
        file("/etc/hostname", "agentbox\n".into()),
        file(
            "/etc/hosts",
            "127.0.0.1\tlocalhost agentbox\n::1\tlocalhost ip6-localhost ip6-loopback\n".into(),
        ),
    ]
}

/// Landlock rules mirroring the mounts: everything readable and executable, writable only where a
/// writable mount or a scratch directory is, device nodes usable.
fn landlock_rules(steps: &[Step], user: u32) -> Vec<LandlockRule> {
    let rule = |path: &Path, access| LandlockRule {
        path: path.to_path_buf(),
        access,
    };
    let mut rules = vec![rule(Path::new("/"), FsAccess::ReadExec)];
    for dir in SCRATCH_DIRS {
        rules.push(rule(Path::new(dir), FsAccess::ReadWrite));
    }
    if user == 0 {
        rules.push(rule(Path::new("/root"), FsAccess::ReadWrite));
    }
    for step in steps {
        match step {
            Step::Bind {
                target,
                writable: true,
                is_dir,
                ..
            } => {
                let access = if !*is_dir && target.starts_with("/dev") {
                    FsAccess::Device
                } else {
                    FsAccess::ReadWrite
                };
                rules.push(rule(target, access));
            }
            Step::Tmpfs { target, .. } => rules.push(rule(target, FsAccess::ReadWrite)),
            Step::DevPts => rules.push(rule(Path::new("/dev/pts"), FsAccess::ReadWrite)),
            Step::Dir { path, .. } if path == Path::new("/workspace") => {
                rules.push(rule(path, FsAccess::ReadWrite))
            }
            _ => {}
        }
    }
    rules.dedup();
    rules
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
