//! `Cgroup` on a fake cgroup v2 tree (see `fakefs_tests.rs`).

use std::path::{Path, PathBuf};

use super::fakefs_tests::{expected, read, FakeKernel};
use super::{Cgroup, CgroupError, CgroupEvents, CgroupLimits, Features};

const ALL: &str = "cpuset cpu io memory hugetlb pids rdma misc";
const LIMITS: CgroupLimits = CgroupLimits {
    memory: 64 << 20,
    pids: 32,
    cpu_millis: Some(500),
};

fn root(base: &Path) -> PathBuf {
    base.join("unified")
}

#[test]
fn create_enables_controllers_then_writes_every_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v2(tmp.path(), ALL, "", &[]);
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    let root = root(tmp.path());
    let leaf = root.join("sb");

    assert_eq!(cg.dirs(), std::slice::from_ref(&leaf));
    assert_eq!(
        cg.features(),
        Features {
            swap_accounting: true,
            oom_group: true
        }
    );
    let want = expected(&[
        (&root, "cgroup.subtree_control", "+memory +pids +cpu"),
        (&leaf, "memory.max", "67108864"),
        (&leaf, "memory.swap.max", "0"),
        (&leaf, "memory.oom.group", "1"),
        (&leaf, "pids.max", "32"),
        (&leaf, "cpu.max", "50000 100000"),
    ]);
    assert_eq!(fake.writes(), want);
    assert_eq!(read(&root, "cgroup.subtree_control"), "cpu memory pids");
    assert_eq!(read(&leaf, "memory.max"), "67108864");
    assert_eq!(read(&leaf, "memory.swap.max"), "0");
    assert_eq!(read(&leaf, "memory.oom.group"), "1");
    assert_eq!(read(&leaf, "pids.max"), "32");
    assert_eq!(read(&leaf, "cpu.max"), "50000 100000");

    cg.remove().unwrap();
    assert!(!leaf.exists());
    assert_eq!(
        read(&root, "cgroup.subtree_control"),
        "cpu memory pids",
        "controllers stay enabled"
    );
}

#[test]
fn enables_only_the_missing_controllers() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v2(tmp.path(), ALL, "io memory", &[]);
    let limits = CgroupLimits {
        cpu_millis: None,
        ..LIMITS
    };
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &limits).unwrap();
    let root = root(tmp.path());

    assert_eq!(
        fake.writes()[0],
        (root.join("cgroup.subtree_control"), "+pids".to_string())
    );
    assert_eq!(read(&root, "cgroup.subtree_control"), "io memory pids");
    assert!(
        fake.writes()
            .iter()
            .all(|(path, _)| !path.ends_with("cpu.max")),
        "no cpu write without a cpu limit"
    );
    cg.remove().unwrap();
}

#[test]
fn no_subtree_control_write_when_all_enabled() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v2(tmp.path(), ALL, "cpu memory pids", &[]);
    let _cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    assert!(fake
        .writes()
        .iter()
        .all(|(path, _)| !path.ends_with("cgroup.subtree_control")));
}

#[test]
fn controller_not_offered_fails_before_any_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v2(tmp.path(), "memory pids", "", &[]);
    let err = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS)
        .err()
        .unwrap();

    assert!(
        matches!(
            &err,
            CgroupError::ControllerUnavailable {
                controller: "cpu",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("`cpu`"), "{err}");
    assert!(fake.writes().is_empty());
    assert!(!root(tmp.path()).join("sb").exists());
}

#[test]
fn old_kernel_without_swap_accounting_or_oom_group() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v2(
        tmp.path(),
        ALL,
        "",
        &["memory.swap.max", "memory.oom.group"],
    );
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    let leaf = root(tmp.path()).join("sb");

    assert_eq!(
        cg.features(),
        Features {
            swap_accounting: false,
            oom_group: false
        }
    );
    let files: Vec<PathBuf> = fake.writes().into_iter().map(|(path, _)| path).collect();
    assert_eq!(
        files[1..],
        [
            leaf.join("memory.max"),
            leaf.join("pids.max"),
            leaf.join("cpu.max")
        ]
    );
}

#[test]
fn missing_controller_file_fails_naming_it_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v2(tmp.path(), ALL, "", &["pids.max"]);
    let err = Cgroup::create_with(fake, &h, "sb", &LIMITS).err().unwrap();
    let leaf = root(tmp.path()).join("sb");

    assert!(
        matches!(&err, CgroupError::ControllerFileMissing { path, value } if *path == leaf.join("pids.max") && value == "32"),
        "{err:?}"
    );
    assert!(err.to_string().contains("sb/pids.max"), "{err}");
    assert!(!leaf.exists());
}

#[test]
fn events_read_memory_events_pids_events_and_peak() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v2(tmp.path(), ALL, "", &[]);
    let cg = Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap();
    let leaf = root(tmp.path()).join("sb");
    assert_eq!(
        cg.events(),
        CgroupEvents {
            oom_kills: 0,
            pids_limit_hits: 0,
            memory_peak: Some(0)
        }
    );

    let memory_events = "low 0\nhigh 0\nmax 12\noom 4\noom_kill 3\noom_group_kill 1\n";
    std::fs::write(leaf.join("memory.events"), memory_events).unwrap();
    std::fs::write(leaf.join("pids.events"), "max 5\n").unwrap();
    std::fs::write(leaf.join("memory.peak"), "67100000\n").unwrap();
    assert_eq!(
        cg.events(),
        CgroupEvents {
            oom_kills: 3,
            pids_limit_hits: 5,
            memory_peak: Some(67_100_000)
        }
    );

    std::fs::remove_file(leaf.join("memory.peak")).unwrap(); // before Linux 5.19
    assert_eq!(cg.events().memory_peak, None);
}

#[test]
fn kill_all_uses_cgroup_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v2(tmp.path(), ALL, "", &[]);
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    cg.attach(10).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![10]);

    cg.kill_all(&mut |pid| panic!("cgroup.kill should have killed {pid}"))
        .unwrap();
    assert_eq!(
        fake.writes().last().unwrap(),
        &(cg.dirs()[0].join("cgroup.kill"), "1".to_string())
    );
    cg.remove().unwrap();
}

#[test]
fn kill_all_falls_back_to_signals_without_cgroup_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v2(tmp.path(), ALL, "", &["cgroup.kill"]);
    let cg = Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap();
    cg.attach(10).unwrap();
    let procs = cg.dirs()[0].join("cgroup.procs");
    let mut killed = Vec::new();
    cg.kill_all(&mut |pid| {
        killed.push(pid);
        std::fs::write(&procs, "").unwrap();
    })
    .unwrap();
    assert_eq!(killed, vec![10]);
}
