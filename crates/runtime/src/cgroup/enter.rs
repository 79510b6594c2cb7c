//! The creator of a v1 cgroup stepping into it for the length of one fork, so that the child is
//! born inside, with the limits already in place, and nobody has to move it. A move of the caller
//! itself (`0` written to a leaf's `tasks`) takes no threadgroup lock; a move of another process
//! (its pid written to `cgroup.procs`, `Cgroup::attach`) waits for an RCU grace period (8-16 ms
//! measured on a v1 host), which the child would wait for before it may run anything.
//!
//! `Cgroup::enter` first finds where the calling thread is in each hierarchy of the leaves (from
//! `/proc/thread-self/cgroup` and the mounts) and checks that it can go back there, then joins the
//! leaves; `Entered::leave` goes back and checks from `/proc/thread-self/cgroup` that it is where
//! it was. Neither ever moves a process other than the caller. cgroup v2 has no lock-free move of
//! oneself (`0` in `cgroup.procs` moves the whole thread group, with the lock): `enter` refuses it.

use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::detect::parse_line;
use super::{write_file, Cgroup, CgroupError, CgroupFs, Version};

const TASKS: &str = "tasks";
const SELF_CGROUP: &str = "/proc/thread-self/cgroup";

/// Where the calling thread was before `Cgroup::enter`, to go back to with `leave`, right after
/// the fork: until then the caller is counted in the sandbox's memory and pids.
#[must_use = "the caller stays in the sandbox's cgroup until it leaves"]
pub struct Entered {
    /// The `tasks` file of the leaf the thread was in, one per leaf entered, in the same order.
    back: Vec<PathBuf>,
    /// The same hierarchies' root `tasks` files: the way out if the way back is refused.
    roots: Vec<PathBuf>,
    /// `/proc/thread-self/cgroup` before entering.
    before: String,
    fs: Arc<dyn CgroupFs>,
}

impl Cgroup {
    /// Moves the calling thread into every leaf (v1 only), after checking that it can come back:
    /// each leaf's hierarchy must be mounted with the thread's current cgroup under the mount, and
    /// that cgroup must have a `tasks` file. The caller must be single-threaded if what it forks
    /// is to be the only new member. On failure the thread is back where it was (or, if that was
    /// refused, in the hierarchy's root), never in a leaf.
    /// `mountinfo` is the text of `/proc/self/mountinfo` the hierarchy was detected from
    /// (`detect_host_with_mounts`).
    pub fn enter(&self, mountinfo: &str) -> Result<Entered, CgroupError> {
        let before = read_proc(SELF_CGROUP).map_err(|source| CgroupError::Read {
            path: SELF_CGROUP.into(),
            source,
        })?;
        self.enter_from(mountinfo, before)
    }

    /// `enter`, given the text of the caller's mountinfo and of its `/proc/thread-self/cgroup`.
    pub(crate) fn enter_from(
        &self,
        mountinfo: &str,
        before: String,
    ) -> Result<Entered, CgroupError> {
        if let Version::V2 { dir } = &self.version {
            return Err(CgroupError::NotEnterable(dir.clone()));
        }
        let mut back = Vec::with_capacity(self.dirs.len());
        let mut roots = Vec::with_capacity(self.dirs.len());
        for dir in &self.dirs {
            let root = dir.parent().unwrap_or(Path::new("/"));
            let tasks = own_leaf(mountinfo, &before, root)?.join(TASKS);
            if !tasks.is_file() {
                return Err(CgroupError::NotLocated {
                    root: root.to_path_buf(),
                    reason: format!("{} does not exist", tasks.display()),
                });
            }
            back.push(tasks);
            roots.push(root.join(TASKS));
        }
        let entered = Entered {
            back,
            roots,
            before,
            fs: Arc::clone(&self.fs),
        };
        for (i, dir) in self.dirs.iter().enumerate() {
            if let Err(e) = write_file(self.fs.as_ref(), &dir.join(TASKS), "0") {
                let _ = entered.go_back(i);
                return Err(e);
            }
        }
        Ok(entered)
    }
}

impl std::fmt::Debug for Entered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entered")
            .field("back", &self.back)
            .finish_non_exhaustive()
    }
}

impl Entered {
    /// Moves the calling thread back to the cgroups it was in, then checks that
    /// `/proc/thread-self/cgroup` reads as it did before `enter`.
    pub fn leave(self) -> Result<(), CgroupError> {
        self.leave_checked(&|| read_proc(SELF_CGROUP))
    }

    pub(crate) fn leave_checked(
        self,
        now: &dyn Fn() -> io::Result<String>,
    ) -> Result<(), CgroupError> {
        self.go_back(self.back.len())?;
        let now = now().map_err(|source| CgroupError::Read {
            path: SELF_CGROUP.into(),
            source,
        })?;
        if now == self.before {
            Ok(())
        } else {
            Err(CgroupError::NotBack {
                before: self.before,
                now,
            })
        }
    }

    /// Writes `0` to the first `count` cgroups the thread came from. A refused write is followed by
    /// a write to that hierarchy's root, so that the thread is out of the sandbox's leaf whatever
    /// happens, and reported.
    fn go_back(&self, count: usize) -> Result<(), CgroupError> {
        let mut first_error = None;
        for (back, root) in self.back.iter().zip(&self.roots).take(count) {
            if let Err(e) = write_file(self.fs.as_ref(), back, "0") {
                let _ = write_file(self.fs.as_ref(), root, "0");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A /proc file in one or two reads (`fs::read_to_string` starts with 32-byte reads on files
/// whose size reads as 0): this runs on the sandbox's critical path.
fn read_proc(path: &str) -> io::Result<String> {
    let mut text = String::with_capacity(8192);
    fs::File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Pure: the directory of the cgroup the caller is in, in the v1 hierarchy mounted at `root`, from
/// the texts of its mountinfo and its `/proc/thread-self/cgroup` (`4:memory:/user.slice`, a path
/// relative to the mount's own root, which is `/` unless a sub-tree was mounted).
pub(crate) fn own_leaf(
    mountinfo: &str,
    self_cgroup: &str,
    root: &Path,
) -> Result<PathBuf, CgroupError> {
    let not_located = |reason: String| CgroupError::NotLocated {
        root: root.to_path_buf(),
        reason,
    };
    let mount = mountinfo
        .lines()
        .filter_map(parse_line)
        .find(|m| m.version == 1 && m.point == root)
        .ok_or_else(|| not_located("no cgroup v1 mount there".into()))?;
    let path = self_cgroup
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let in_mount = !controllers.is_empty()
                && controllers
                    .split(',')
                    .all(|c| mount.options.iter().any(|o| o == c));
            in_mount.then_some(path)
        })
        .ok_or_else(|| not_located("the caller's cgroups do not name its controllers".into()))?;
    let relative = Path::new(path).strip_prefix(&mount.root).map_err(|_| {
        not_located(format!(
            "the caller's cgroup {path} is outside the mounted {}",
            mount.root.display()
        ))
    })?;
    if relative
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(not_located(format!("unexpected cgroup path {path}")));
    }
    Ok(root.join(relative))
}
