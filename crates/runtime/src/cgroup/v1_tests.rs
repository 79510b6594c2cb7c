//! `Cgroup` on a fake cgroup v1 tree (see `fakefs_tests.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::fakefs_tests::{expected, make_files, read, FakeKernel};
use super::{Cgroup, CgroupError, CgroupEvents, CgroupLimits, Features, Hierarchy};

const MIB64: u64 = 64 << 20;
const LIMITS: CgroupLimits = CgroupLimits {
    memory: MIB64,
    pids: 32,
    cpu_millis: Some(500),
};

fn leaves(base: &Path) -> [PathBuf; 3] {
    [
        base.join("memory/sb"),
        base.join("pids/sb"),
        base.join("cpu,cpuacct/sb"),
    ]
}

#[test]
fn create_writes_every_limit_in_kernel_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    let [memory, pids, cpu] = leaves(tmp.path());

    assert_eq!(cg.dirs(), &[memory.clone(), pids.clone(), cpu.clone()]);
    assert_eq!(
        cg.features(),
        Features {
            swap_accounting: true,
            oom_group: false
        }
    );
    // memory.limit_in_bytes strictly before memsw: the kernel refuses memsw < limit.
    let want = expected(&[
        (&memory, "memory.limit_in_bytes", "67108864"),
        (&memory, "memory.memsw.limit_in_bytes", "67108864"),
        (&pids, "pids.max", "32"),
        (&cpu, "cpu.cfs_period_us", "100000"),
        (&cpu, "cpu.cfs_quota_us", "50000"),
    ]);
    assert_eq!(fake.writes(), want);
    assert_eq!(read(&memory, "memory.limit_in_bytes"), "67108864");
    assert_eq!(read(&memory, "memory.memsw.limit_in_bytes"), "67108864");
    assert_eq!(
        read(&memory, "memory.swappiness"),
        "60",
        "swappiness untouched with swap accounting"
    );
    assert_eq!(read(&pids, "pids.max"), "32");
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");

    cg.remove().unwrap();
    for dir in leaves(tmp.path()) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn without_swap_accounting_sets_swappiness_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &["memory.memsw.limit_in_bytes"]);
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    let [memory, ..] = leaves(tmp.path());

    assert!(!cg.features().swap_accounting);
    let writes = fake.writes();
    assert_eq!(
        writes[..2],
        expected(&[
            (&memory, "memory.limit_in_bytes", "67108864"),
            (&memory, "memory.swappiness", "0")
        ])
    );
    assert_eq!(read(&memory, "memory.swappiness"), "0");
}

#[test]
fn no_cpu_limit_creates_no_cpu_leaf() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let limits = CgroupLimits {
        cpu_millis: None,
        ..LIMITS
    };
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &limits).unwrap();
    let [memory, pids, cpu] = leaves(tmp.path());

    assert_eq!(cg.dirs(), &[memory, pids]);
    assert!(!cpu.exists());
    assert!(fake
        .writes()
        .iter()
        .all(|(path, _)| !path.starts_with(tmp.path().join("cpu,cpuacct"))));
}

#[test]
fn comounted_controllers_share_one_leaf() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("memory,pids");
    make_files(&root, &[("cgroup.procs", "")]);
    let fake = FakeKernel::new(vec![(root.clone(), vec!["memory", "pids"])], &[]);
    let h = Hierarchy::V1 {
        memory: root.clone(),
        pids: root.clone(),
        cpu: None,
    };
    let limits = CgroupLimits {
        cpu_millis: None,
        ..LIMITS
    };
    let cg = Cgroup::create_with(fake, &h, "sb", &limits).unwrap();

    assert_eq!(cg.dirs(), &[root.join("sb")]);
    assert_eq!(read(&root.join("sb"), "pids.max"), "32");
    cg.remove().unwrap();
    assert!(!root.join("sb").exists());
}

#[test]
fn missing_controller_file_fails_naming_it_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &["pids.max"]);
    let err = Cgroup::create_with(fake, &h, "sb", &LIMITS).err().unwrap();
    let [_, pids, _] = leaves(tmp.path());

    match &err {
        CgroupError::ControllerFileMissing { path, value } => {
            assert_eq!(path, &pids.join("pids.max"));
            assert_eq!(value, "32");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("pids.max"), "{err}");
    for dir in leaves(tmp.path()) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn refused_write_fails_naming_file_and_value_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    fake.refuse("cpu.cfs_quota_us");
    let err = Cgroup::create_with(fake, &h, "sb", &LIMITS).err().unwrap();
    let [_, _, cpu] = leaves(tmp.path());

    match &err {
        CgroupError::Write {
            path,
            value,
            source,
        } => {
            assert_eq!(path, &cpu.join("cpu.cfs_quota_us"));
            assert_eq!(value, "50000");
            assert_eq!(source.raw_os_error(), Some(22));
        }
        other => panic!("unexpected error {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("cpu.cfs_quota_us") && message.contains("\"50000\""),
        "{message}"
    );
    for dir in leaves(tmp.path()) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn cpu_limit_without_cpu_mount_fails_before_creating_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let Hierarchy::V1 { memory, pids, .. } = h else {
        unreachable!()
    };
    let h = Hierarchy::V1 {
        memory,
        pids,
        cpu: None,
    };
    let err = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS)
        .err()
        .unwrap();

    assert!(matches!(err, CgroupError::NotMounted("cpu")), "{err:?}");
    assert!(fake.writes().is_empty());
    for dir in leaves(tmp.path()) {
        assert!(!dir.exists());
    }
}

#[test]
fn existing_leaf_is_an_error_and_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let [memory, pids, _] = leaves(tmp.path());
    make_files(&pids, &[("pids.max", "7")]);
    let err = Cgroup::create_with(fake, &h, "sb", &LIMITS).err().unwrap();

    assert!(
        matches!(&err, CgroupError::CreateDir { dir, .. } if *dir == pids),
        "{err:?}"
    );
    assert_eq!(
        read(&pids, "pids.max"),
        "7",
        "someone else's leaf untouched"
    );
    assert!(!memory.exists(), "our own leaf removed");
}

#[test]
fn events_read_oom_control_pids_events_and_max_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap();
    let [memory, pids, _] = leaves(tmp.path());
    assert_eq!(
        cg.events(),
        CgroupEvents {
            oom_kills: 0,
            pids_limit_hits: 0,
            memory_peak: Some(0)
        }
    );

    std::fs::write(
        memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )
    .unwrap();
    std::fs::write(memory.join("memory.max_usage_in_bytes"), "12345\n").unwrap();
    std::fs::write(pids.join("pids.events"), "max 7\n").unwrap();
    assert_eq!(
        cg.events(),
        CgroupEvents {
            oom_kills: 2,
            pids_limit_hits: 7,
            memory_peak: Some(12345)
        }
    );

    // An old kernel without `oom_kill` in oom_control, and unreadable files, count as 0 / None.
    std::fs::write(
        memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\n",
    )
    .unwrap();
    std::fs::remove_file(memory.join("memory.max_usage_in_bytes")).unwrap();
    std::fs::remove_file(pids.join("pids.events")).unwrap();
    assert_eq!(cg.events(), CgroupEvents::default());
}

#[test]
fn attach_writes_every_leaf_and_pids_lists_the_union() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap();
    cg.attach(4321).unwrap();
    for dir in cg.dirs() {
        assert_eq!(read(dir, "cgroup.procs"), "4321");
    }
    std::fs::write(cg.dirs()[1].join("cgroup.procs"), "4321\n99\n").unwrap();
    assert_eq!(cg.pids().unwrap(), vec![99, 4321]);
}

#[test]
fn kill_all_kills_until_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap();
    cg.attach(10).unwrap();
    cg.attach(11).unwrap();
    let dirs = cg.dirs().to_vec();
    let mut killed = Vec::new();
    // The "kernel" removes a killed pid; 10 forks 12 before dying, which the next round catches.
    cg.kill_all(&mut |pid| {
        killed.push(pid);
        for dir in &dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
            let mut left: Vec<String> = procs
                .lines()
                .filter(|p| *p != pid.to_string())
                .map(str::to_string)
                .collect();
            if pid == 10 {
                left.push("12".to_string());
            }
            std::fs::write(dir.join("cgroup.procs"), left.join("\n")).unwrap();
        }
    })
    .unwrap();
    assert_eq!(killed, vec![10, 11, 12]);
    assert!(cg.pids().unwrap().is_empty());
    cg.remove().unwrap();
}

#[test]
fn kill_all_gives_up_naming_the_survivors() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap();
    cg.attach(10).unwrap();
    let err = cg.kill_all(&mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, CgroupError::KillTimedOut { pids, .. } if *pids == vec![10]),
        "{err:?}"
    );
    for dir in cg.dirs() {
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
    }
}

#[test]
fn remove_retries_while_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake.clone(), &h, "sb", &LIMITS).unwrap();
    fake.busy.store(5, Ordering::SeqCst);
    cg.remove().unwrap();
    assert_eq!(fake.busy.load(Ordering::SeqCst), 0);
    for dir in leaves(tmp.path()) {
        assert!(!dir.exists());
    }
}

#[test]
fn remove_fails_naming_a_leaf_that_stays_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    let cg = Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap();
    let [memory, pids, cpu] = leaves(tmp.path());
    std::fs::write(pids.join("cgroup.procs"), "77\n").unwrap();
    let err = cg.remove().unwrap_err();

    assert!(
        matches!(&err, CgroupError::RemoveDir { dir, .. } if *dir == pids),
        "{err:?}"
    );
    assert!(err.to_string().contains("pids/sb"), "{err}");
    assert!(pids.exists());
    assert!(
        !memory.exists() && !cpu.exists(),
        "the other leaves are still removed"
    );
}

#[test]
fn drop_removes_empty_leaves() {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, h) = FakeKernel::v1(tmp.path(), &[]);
    drop(Cgroup::create_with(fake, &h, "sb", &LIMITS).unwrap());
    for dir in leaves(tmp.path()) {
        assert!(!dir.exists());
    }
    assert_eq!(
        read(&tmp.path().join("memory"), "cgroup.procs"),
        "",
        "root untouched"
    );
}
