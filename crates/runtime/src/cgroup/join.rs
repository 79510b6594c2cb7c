//! A process joining a sandbox's cgroup itself. On cgroup v1 a single-threaded process moves
//! itself into a leaf by writing `0` to the leaf's `tasks` file, which the kernel does without
//! taking the threadgroup lock; a write of another process's pid to `cgroup.procs` takes it for
//! writing and waits for an RCU grace period (8-16 ms measured on a v1 host).
//!
//! The creator of the leaves hands their task files to the process (`self_join_files`), the
//! process joins (`join_self`), and the creator checks that it did (`wait_until_holds`) before
//! it lets the process run anything. cgroup v2 has no such path (`0` in `cgroup.procs` moves the
//! whole thread group, with the lock): there `attach` is the only way. This module never moves a
//! process other than the caller.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{write_file, Cgroup, CgroupError, CgroupFs, KernelFs, Version};

const TASKS: &str = "tasks";
/// First and longest pause between two looks in `wait_until_holds`.
const FIRST_PAUSE: Duration = Duration::from_micros(50);
const LONGEST_PAUSE: Duration = Duration::from_micros(250);

impl Cgroup {
    /// The files a single-threaded process writes `0` to, to join every leaf by itself: each v1
    /// leaf's `tasks`. Empty on v2.
    pub fn self_join_files(&self) -> Vec<PathBuf> {
        match self.version {
            Version::V1 { .. } => self.dirs.iter().map(|dir| dir.join(TASKS)).collect(),
            Version::V2 { .. } => Vec::new(),
        }
    }

    /// The first leaf whose `cgroup.procs` does not list `pid`, if any.
    pub fn leaf_without(&self, pid: i32) -> Result<Option<&Path>, CgroupError> {
        for dir in &self.dirs {
            let path = dir.join("cgroup.procs");
            let text =
                fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
            if !text.lines().any(|line| line.trim().parse() == Ok(pid)) {
                return Ok(Some(dir));
            }
        }
        Ok(None)
    }

    /// Waits until every leaf lists `pid` (which joins by itself), looking again after a short,
    /// growing pause. Fails naming a leaf `pid` is not in once `exited()` says the process is gone,
    /// or after `timeout`.
    pub fn wait_until_holds(
        &self,
        pid: i32,
        timeout: Duration,
        exited: &mut dyn FnMut() -> bool,
    ) -> Result<(), CgroupError> {
        let deadline = Instant::now() + timeout;
        let mut pause = FIRST_PAUSE;
        loop {
            let Some(dir) = self.leaf_without(pid)? else {
                return Ok(());
            };
            let reason = if exited() {
                "it exited first"
            } else if Instant::now() >= deadline {
                "it was still outside when the wait timed out"
            } else {
                std::thread::sleep(pause);
                pause = (pause * 2).min(LONGEST_PAUSE);
                continue;
            };
            return Err(CgroupError::NotJoined {
                pid,
                dir: dir.to_path_buf(),
                reason,
            });
        }
    }
}

/// Moves the calling thread into the leaf of each of `files` (from `Cgroup::self_join_files`).
/// The caller must be single-threaded, so that the thread is the whole process.
pub fn join_self(files: &[PathBuf]) -> Result<(), CgroupError> {
    join_self_with(&KernelFs, files)
}

pub(crate) fn join_self_with(fs: &dyn CgroupFs, files: &[PathBuf]) -> Result<(), CgroupError> {
    for file in files {
        if file.file_name() != Some(TASKS.as_ref()) {
            return Err(CgroupError::NotTasksFile(file.clone()));
        }
        write_file(fs, file, "0")?;
    }
    Ok(())
}
