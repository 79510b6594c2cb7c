//! A fake cgroupfs kernel over a tempdir, for tests that need no privileges.
//!
//! A plain directory does not behave like cgroupfs: mkdir creates no control files, rmdir fails on
//! a directory that lists them, and writes are plain overwrites. So the fake implements exactly the
//! `CgroupFs` seam (mkdir, rmdir, write) with the kernel's side effects that the code relies on:
//! - mkdir populates the files a real kernel shows: v1 by the controllers of the mount the parent
//!   belongs to, v2 by the controllers enabled in the parent's `cgroup.subtree_control`; files named
//!   in `omit` are left out, as on a kernel without that feature;
//! - writes never create files (NotFound, like a missing controller), `cgroup.subtree_control`
//!   merges `+c`/`-c` and refuses a controller the parent does not offer, v1 refuses a memsw limit
//!   under the memory limit (and the reverse), `cgroup.procs` appends, `0` in a v1 `tasks` adds the
//!   calling process (`tasks` and `cgroup.procs`), `cgroup.kill` empties procs;
//! - writes to files named by `refuse` fail with EINVAL;
//! - rmdir refuses (EBUSY) while `cgroup.procs` lists a pid or `busy` is not yet exhausted.
//!
//! Reads go to the real files, as in production. Every successful write is logged in order.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{CgroupFs, Hierarchy};

/// Kernel order of v2 controllers in `cgroup.controllers` / `cgroup.subtree_control`.
const V2_ORDER: [&str; 8] = [
    "cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc",
];
const UNLIMITED_V1: &str = "9223372036854771712";

pub(super) struct FakeKernel {
    /// v1 mount roots and their controllers; a parent not listed here is taken as v2.
    v1_roots: Vec<(PathBuf, Vec<&'static str>)>,
    /// File names mkdir does not create.
    omit: Vec<&'static str>,
    /// rmdir answers EBUSY this many more times before looking at `cgroup.procs`.
    pub(super) busy: AtomicUsize,
    /// File names whose writes fail with EINVAL.
    refused: Mutex<Vec<&'static str>>,
    writes: Mutex<Vec<(PathBuf, String)>>,
}

impl FakeKernel {
    /// Separate v1 mounts `memory`, `pids`, `cpu,cpuacct` (comounted) under `base`.
    pub(super) fn v1(base: &Path, omit: &[&'static str]) -> (Arc<FakeKernel>, Hierarchy) {
        let roots = vec![
            (base.join("memory"), vec!["memory"]),
            (base.join("pids"), vec!["pids"]),
            (base.join("cpu,cpuacct"), vec!["cpu", "cpuacct"]),
        ];
        for (root, _) in &roots {
            make_files(root, &[("cgroup.procs", ""), ("tasks", "")]);
        }
        let h = Hierarchy::V1 {
            memory: base.join("memory"),
            pids: base.join("pids"),
            cpu: Some(base.join("cpu,cpuacct")),
        };
        (Self::new(roots, omit), h)
    }

    /// A v2 root under `base` offering `offered`, with `enabled` already in its subtree_control.
    pub(super) fn v2(
        base: &Path,
        offered: &str,
        enabled: &str,
        omit: &[&'static str],
    ) -> (Arc<FakeKernel>, Hierarchy) {
        let root = base.join("unified");
        make_files(
            &root,
            &[
                ("cgroup.controllers", offered),
                ("cgroup.subtree_control", enabled),
                ("cgroup.procs", ""),
            ],
        );
        (Self::new(Vec::new(), omit), Hierarchy::V2 { root })
    }

    pub(super) fn new(
        v1_roots: Vec<(PathBuf, Vec<&'static str>)>,
        omit: &[&'static str],
    ) -> Arc<FakeKernel> {
        Arc::new(FakeKernel {
            v1_roots,
            omit: omit.to_vec(),
            busy: AtomicUsize::new(0),
            refused: Mutex::new(Vec::new()),
            writes: Mutex::new(Vec::new()),
        })
    }

    /// Makes every write to a file named `file` fail with EINVAL, as the kernel does for a value it
    /// refuses.
    pub(super) fn refuse(&self, file: &'static str) {
        self.refused.lock().unwrap().push(file);
    }

    /// Successful writes so far, as (path, value).
    pub(super) fn writes(&self) -> Vec<(PathBuf, String)> {
        self.writes.lock().map(|w| w.clone()).unwrap_or_default()
    }

    fn leaf_files(&self, parent: &Path) -> io::Result<Vec<(&'static str, String)>> {
        let mut files: Vec<(&'static str, String)> = Vec::new();
        let mut add = |list: &[(&'static str, &str)]| {
            files.extend(list.iter().map(|(f, c)| (*f, c.to_string())))
        };
        if let Some((_, controllers)) = self.v1_roots.iter().find(|(root, _)| root == parent) {
            add(&[
                ("cgroup.procs", ""),
                ("tasks", ""),
                ("notify_on_release", "0"),
                ("cgroup.clone_children", "0"),
            ]);
            for controller in controllers {
                match *controller {
                    "memory" => add(&[
                        ("memory.limit_in_bytes", UNLIMITED_V1),
                        ("memory.memsw.limit_in_bytes", UNLIMITED_V1),
                        ("memory.swappiness", "60"),
                        (
                            "memory.oom_control",
                            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                        ),
                        ("memory.max_usage_in_bytes", "0"),
                        ("memory.usage_in_bytes", "0"),
                    ]),
                    "pids" => add(&[
                        ("pids.max", "max"),
                        ("pids.current", "0"),
                        ("pids.events", "max 0\n"),
                    ]),
                    "cpu" => add(&[
                        ("cpu.cfs_period_us", "100000"),
                        ("cpu.cfs_quota_us", "-1"),
                        ("cpu.shares", "1024"),
                    ]),
                    "cpuacct" => add(&[("cpuacct.usage", "0")]),
                    _ => {}
                }
            }
        } else {
            let enabled = fs::read_to_string(parent.join("cgroup.subtree_control"))?;
            add(&[
                ("cgroup.procs", ""),
                ("cgroup.controllers", enabled.as_str()),
                ("cgroup.subtree_control", ""),
                ("cgroup.events", "populated 0\nfrozen 0\n"),
                ("cgroup.kill", ""),
                ("cgroup.type", "domain"),
            ]);
            for controller in enabled.split_whitespace() {
                match controller {
                    "memory" => add(&[
                        ("memory.max", "max"),
                        ("memory.swap.max", "max"),
                        ("memory.oom.group", "0"),
                        (
                            "memory.events",
                            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
                        ),
                        ("memory.peak", "0"),
                        ("memory.current", "0"),
                    ]),
                    "pids" => add(&[
                        ("pids.max", "max"),
                        ("pids.current", "0"),
                        ("pids.events", "max 0\n"),
                    ]),
                    "cpu" => add(&[("cpu.max", "max 100000"), ("cpu.weight", "100")]),
                    _ => {}
                }
            }
        }
        files.retain(|(name, _)| !self.omit.contains(name));
        Ok(files)
    }

    fn apply(&self, path: &Path, value: &str) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        let read = |file: &str| fs::read_to_string(dir.join(file));
        let number = |text: &str| text.trim().parse::<u64>().map_err(|_| einval());
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if self.refused.lock().is_ok_and(|r| r.contains(&name)) {
            return Err(einval());
        }
        match name {
            "cgroup.subtree_control" => {
                let offered = read("cgroup.controllers")?;
                let mut enabled: Vec<String> = read("cgroup.subtree_control")?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                for token in value.split_whitespace() {
                    let (op, name) = token.split_at(1);
                    if !offered.split_whitespace().any(|o| o == name) {
                        return Err(io::Error::from(io::ErrorKind::NotFound));
                    }
                    enabled.retain(|e| e != name);
                    if op == "+" {
                        enabled.push(name.to_string());
                    }
                }
                let ordered: Vec<&str> = V2_ORDER
                    .iter()
                    .copied()
                    .filter(|c| enabled.iter().any(|e| e == c))
                    .collect();
                fs::write(path, ordered.join(" "))
            }
            "memory.memsw.limit_in_bytes"
                if number(value)? < number(&read("memory.limit_in_bytes")?)? =>
            {
                Err(einval())
            }
            "memory.limit_in_bytes"
                if read("memory.memsw.limit_in_bytes").is_ok_and(|m| {
                    number(&m).is_ok_and(|m| number(value).is_ok_and(|v| v > m))
                }) =>
            {
                Err(einval())
            }
            "cgroup.procs" => {
                let mut procs = read("cgroup.procs")?;
                procs.push_str(&format!("{value}\n"));
                fs::write(path, procs)
            }
            "tasks" if value == "0" => {
                // The caller is single-threaded in the tests that use this: thread = process.
                for file in ["tasks", "cgroup.procs"] {
                    let mut list = read(file)?;
                    list.push_str(&format!("{}\n", std::process::id()));
                    fs::write(dir.join(file), list)?;
                }
                Ok(())
            }
            "cgroup.kill" if value == "1" => fs::write(dir.join("cgroup.procs"), ""),
            _ => fs::write(path, value),
        }
    }
}

impl CgroupFs for FakeKernel {
    fn mkdir(&self, dir: &Path) -> io::Result<()> {
        let parent = dir.parent().unwrap_or(Path::new("/"));
        let files = self.leaf_files(parent)?;
        fs::create_dir(dir)?;
        for (name, content) in files {
            fs::write(dir.join(name), content)?;
        }
        Ok(())
    }

    fn rmdir(&self, dir: &Path) -> io::Result<()> {
        if !dir.exists() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let busy = self
            .busy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if busy || !procs.trim().is_empty() {
            return Err(io::Error::from(io::ErrorKind::ResourceBusy));
        }
        fs::remove_dir_all(dir)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        if !path.is_file() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        self.apply(path, value)?;
        if let Ok(mut writes) = self.writes.lock() {
            writes.push((path.to_path_buf(), value.to_string()));
        }
        Ok(())
    }
}

const EINVAL: i32 = 22;

fn einval() -> io::Error {
    io::Error::from_raw_os_error(EINVAL)
}

/// Creates `dir` (and parents) holding `files` with the given contents.
pub(super) fn make_files(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
    }
}

/// Contents of `dir/file`, trimmed.
pub(super) fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_string()
}

/// The writes a test expects, as (dir, file, value).
pub(super) fn expected(list: &[(&Path, &str, &str)]) -> Vec<(PathBuf, String)> {
    list.iter()
        .map(|(dir, file, value)| (dir.join(file), value.to_string()))
        .collect()
}

/// The fake's own ordering rule, which the v1 plan relies on: memsw never below the memory limit.
#[test]
fn fake_refuses_memsw_below_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, _) = FakeKernel::v1(tmp.path(), &[]);
    let leaf = tmp.path().join("memory/x");
    fake.mkdir(&leaf).unwrap();
    let memsw = leaf.join("memory.memsw.limit_in_bytes");
    let limit = leaf.join("memory.limit_in_bytes");
    assert_eq!(
        fake.write(&memsw, "1000").unwrap_err().raw_os_error(),
        Some(EINVAL)
    );
    fake.write(&limit, "1000").unwrap();
    fake.write(&memsw, "1000").unwrap();
    assert_eq!(
        fake.write(&limit, "2000").unwrap_err().raw_os_error(),
        Some(EINVAL)
    );
    assert_eq!(
        fake.writes(),
        expected(&[
            (&leaf, "memory.limit_in_bytes", "1000"),
            (&leaf, "memory.memsw.limit_in_bytes", "1000")
        ])
    );
}
