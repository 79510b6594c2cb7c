//! A process joining its cgroup itself (`join.rs`), on the fake cgroupfs (`fakefs_tests.rs`).

use std::time::Duration;

use super::fakefs_tests::{read, FakeKernel};
use super::join::join_self_with;
use super::{Cgroup, CgroupError, CgroupLimits};

const LIMITS: CgroupLimits = CgroupLimits {
    memory: 64 << 20,
    pids: 32,
    cpu_millis: Some(500),
};

fn own_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap()
}

#[test]
fn v1_self_join_files_are_each_leafs_tasks_and_joining_puts_the_caller_in_every_leaf() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    let files = cg.self_join_files();
    let expected: Vec<_> = ["memory", "pids", "cpu,cpuacct"]
        .iter()
        .map(|root| tmp.path().join(root).join("sb/tasks"))
        .collect();
    assert_eq!(files, expected);
    assert_eq!(
        cg.leaf_without(own_pid()).unwrap(),
        Some(cg.dirs()[0].as_path())
    );

    join_self_with(fake.as_ref(), &files).unwrap();
    for dir in cg.dirs() {
        assert_eq!(read(dir, "cgroup.procs"), own_pid().to_string());
    }
    assert_eq!(cg.leaf_without(own_pid()).unwrap(), None);
    cg.wait_until_holds(own_pid(), Duration::ZERO, &mut || false)
        .unwrap();
}

#[test]
fn v2_has_no_self_join_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v2(tmp.path(), "cpu memory pids", "", &[]);
    let cg = Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap();
    assert!(cg.self_join_files().is_empty());
}

#[test]
fn join_refuses_anything_but_a_tasks_file_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    let before = fake.writes().len();
    let procs = cg.dirs()[0].join("cgroup.procs");
    let err = join_self_with(fake.as_ref(), std::slice::from_ref(&procs)).unwrap_err();
    assert!(
        matches!(&err, CgroupError::NotTasksFile(p) if *p == procs),
        "{err:?}"
    );
    assert_eq!(fake.writes().len(), before);
}

#[test]
fn wait_until_holds_returns_once_a_late_process_joined() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    let files = cg.self_join_files();
    let joiner = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        join_self_with(fake.as_ref(), &files).unwrap();
    });
    cg.wait_until_holds(own_pid(), Duration::from_secs(10), &mut || false)
        .unwrap();
    joiner.join().unwrap();
}

#[test]
fn wait_until_holds_fails_naming_the_missing_leaf_when_the_process_exited() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    // In the memory leaf only: the pids leaf is the first one without it.
    join_self_with(fake.as_ref(), &cg.self_join_files()[..1]).unwrap();
    let err = cg
        .wait_until_holds(own_pid(), Duration::from_secs(10), &mut || true)
        .unwrap_err();
    assert!(
        matches!(&err, CgroupError::NotJoined { pid, dir, reason: "it exited first" }
            if *pid == own_pid() && *dir == cg.dirs()[1]),
        "{err:?}"
    );
}

#[test]
fn wait_until_holds_gives_up_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap();
    let mut looks = 0;
    let err = cg
        .wait_until_holds(own_pid(), Duration::from_millis(20), &mut || {
            looks += 1;
            false
        })
        .unwrap_err();
    assert!(
        matches!(&err, CgroupError::NotJoined { dir, .. } if *dir == cg.dirs()[0]),
        "{err:?}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(looks > 1, "looked {looks} times");
}
