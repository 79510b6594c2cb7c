//! The creator stepping into its v1 cgroup for a fork (`enter.rs`): finding its own cgroups (pure)
//! and entering and leaving on the fake cgroupfs (`fakefs_tests.rs`).

use std::path::{Path, PathBuf};

use super::enter::own_leaf;
use super::fakefs_tests::{make_files, FakeKernel};
use super::{Cgroup, CgroupError, CgroupLimits};

const LIMITS: CgroupLimits = CgroupLimits {
    memory: 64 << 20,
    pids: 32,
    cpu_millis: Some(500),
};

const HOST_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const HOST_SELF: &str = "\
9:name=systemd:/user.slice/session-1.scope
8:pids:/user.slice/user-0.slice
4:memory:/process_api/a861
2:cpu,cpuacct:/
0::/user.slice/session-1.scope
";

#[test]
fn own_leaf_is_the_callers_cgroup_under_each_mount() {
    let leaf = |root: &str| own_leaf(HOST_MOUNTINFO, HOST_SELF, Path::new(root)).unwrap();
    assert_eq!(
        leaf("/sys/fs/cgroup/memory"),
        Path::new("/sys/fs/cgroup/memory/process_api/a861")
    );
    assert_eq!(
        leaf("/sys/fs/cgroup/pids"),
        Path::new("/sys/fs/cgroup/pids/user.slice/user-0.slice")
    );
    assert_eq!(
        leaf("/sys/fs/cgroup/cpu,cpuacct"),
        Path::new("/sys/fs/cgroup/cpu,cpuacct")
    );
}

#[test]
fn own_leaf_is_relative_to_a_mounted_sub_tree() {
    // A container that sees the host's cgroup namespace, with its own sub-tree mounted.
    let mountinfo = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    let root = Path::new("/sys/fs/cgroup/memory");
    assert_eq!(
        own_leaf(mountinfo, "4:memory:/docker/abc/job\n", root).unwrap(),
        root.join("job")
    );
    assert_eq!(
        own_leaf(mountinfo, "4:memory:/docker/abc\n", root).unwrap(),
        root
    );
    let err = own_leaf(mountinfo, "4:memory:/docker/other\n", root).unwrap_err();
    assert!(
        matches!(&err, CgroupError::NotLocated { reason, .. } if reason.contains("outside")),
        "{err:?}"
    );
}

#[test]
fn own_leaf_fails_without_a_mount_a_line_or_a_plain_path() {
    let memory = Path::new("/sys/fs/cgroup/memory");
    let not_located = |r: Result<PathBuf, CgroupError>| matches!(r, Err(CgroupError::NotLocated { root, .. }) if root == memory);
    assert!(not_located(own_leaf("", HOST_SELF, memory)));
    assert!(not_located(own_leaf(HOST_MOUNTINFO, "0::/\n", memory)));
    assert!(not_located(own_leaf(
        HOST_MOUNTINFO,
        "4:memory:/../elsewhere\n",
        memory
    )));
    // A cgroup2 mount is no v1 hierarchy.
    let unified = Path::new("/sys/fs/cgroup/unified");
    assert!(matches!(
        own_leaf(HOST_MOUNTINFO, "0::/\n", unified),
        Err(CgroupError::NotLocated { root, .. }) if root == unified
    ));
}

/// The fake v1 hierarchy, the caller in an `outer` leaf of each, and the matching texts.
fn fake_host(base: &Path) -> (std::sync::Arc<FakeKernel>, super::Hierarchy, String, String) {
    let (fake, h) = FakeKernel::v1(base, &[]);
    let mut mountinfo = String::new();
    let mut self_cgroup = String::new();
    for (i, (root, options)) in [
        ("memory", "rw,memory"),
        ("pids", "rw,pids"),
        ("cpu,cpuacct", "rw,cpu,cpuacct"),
    ]
    .iter()
    .enumerate()
    {
        make_files(
            &base.join(root).join("outer"),
            &[("tasks", ""), ("cgroup.procs", "")],
        );
        let point = base.join(root);
        mountinfo.push_str(&format!(
            "{i} 1 0:{i} / {} rw - cgroup cgroup {options}\n",
            point.display()
        ));
        let controllers = options.trim_start_matches("rw,");
        self_cgroup.push_str(&format!("{i}:{controllers}:/outer\n"));
    }
    (fake, h, mountinfo, self_cgroup)
}

fn zeros(fake: &FakeKernel) -> Vec<PathBuf> {
    fake.writes()
        .into_iter()
        .filter(|(path, value)| value == "0" && path.ends_with("tasks"))
        .map(|(path, _)| path)
        .collect()
}

#[test]
fn enter_joins_every_leaf_and_leave_goes_back_to_each_cgroup_it_came_from() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h, mountinfo, self_cgroup) = fake_host(tmp.path());
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    let entered = cg.enter_from(&mountinfo, self_cgroup.clone()).unwrap();
    let leaves: Vec<PathBuf> = cg.dirs().iter().map(|d| d.join("tasks")).collect();
    assert_eq!(zeros(&fake), leaves);

    entered.leave_checked(&|| Ok(self_cgroup.clone())).unwrap();
    let back: Vec<PathBuf> = ["memory", "pids", "cpu,cpuacct"]
        .iter()
        .map(|r| tmp.path().join(r).join("outer/tasks"))
        .collect();
    assert_eq!(zeros(&fake), [leaves, back].concat());
}

#[test]
fn leave_fails_when_the_caller_is_not_where_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h, mountinfo, self_cgroup) = fake_host(tmp.path());
    let cg = Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap();
    let entered = cg.enter_from(&mountinfo, self_cgroup).unwrap();
    let err = entered
        .leave_checked(&|| Ok("4:memory:/sb\n".into()))
        .unwrap_err();
    assert!(matches!(err, CgroupError::NotBack { .. }), "{err:?}");
}

#[test]
fn enter_checks_the_way_back_before_it_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h, mountinfo, self_cgroup) = fake_host(tmp.path());
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    std::fs::remove_file(tmp.path().join("pids/outer/tasks")).unwrap();
    let err = cg.enter_from(&mountinfo, self_cgroup).unwrap_err();
    assert!(
        matches!(&err, CgroupError::NotLocated { root, .. } if *root == tmp.path().join("pids")),
        "{err:?}"
    );
    assert!(zeros(&fake).is_empty());
}

#[test]
fn a_refused_join_goes_back_from_the_leaves_already_joined() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h, mountinfo, self_cgroup) = fake_host(tmp.path());
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    std::fs::remove_file(cg.dirs()[1].join("tasks")).unwrap();
    cg.enter_from(&mountinfo, self_cgroup).unwrap_err();
    assert_eq!(
        zeros(&fake),
        [
            cg.dirs()[0].join("tasks"),
            tmp.path().join("memory/outer/tasks")
        ]
    );
}

#[test]
fn a_refused_way_back_leaves_through_the_root_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h, mountinfo, self_cgroup) = fake_host(tmp.path());
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    let entered = cg.enter_from(&mountinfo, self_cgroup.clone()).unwrap();
    std::fs::remove_file(tmp.path().join("memory/outer/tasks")).unwrap();
    entered
        .leave_checked(&|| Ok(self_cgroup.clone()))
        .unwrap_err();
    let zeros = zeros(&fake);
    assert_eq!(zeros[3], tmp.path().join("memory/tasks"));
    assert_eq!(zeros.len(), 6);
}

#[test]
fn a_v2_leaf_cannot_be_entered() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v2(tmp.path(), "cpu memory pids", "", &[]);
    let cg = Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap();
    let err = cg.enter_from("", "0::/\n".into()).unwrap_err();
    assert!(matches!(err, CgroupError::NotEnterable(_)), "{err:?}");
}
