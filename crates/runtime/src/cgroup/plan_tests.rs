//! `plan` and `validate`: pure, no filesystem.

use std::path::{Path, PathBuf};

use super::{plan, validate, CgroupError, CgroupLimits, Features, Hierarchy, Write};

const LIMITS: CgroupLimits = CgroupLimits {
    memory: 1 << 30,
    pids: 1024,
    cpu_millis: Some(1500),
};

fn v1() -> Hierarchy {
    Hierarchy::V1 {
        memory: PathBuf::from("/sys/fs/cgroup/memory"),
        pids: PathBuf::from("/sys/fs/cgroup/pids"),
        cpu: Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")),
    }
}

fn v2() -> Hierarchy {
    Hierarchy::V2 {
        root: PathBuf::from("/sys/fs/cgroup"),
    }
}

fn writes(list: &[(&str, &'static str, &str)]) -> Vec<Write> {
    list.iter()
        .map(|(dir, file, value)| Write::new(Path::new(dir), file, value))
        .collect()
}

#[test]
fn v1_plan_with_swap_accounting() {
    let features = Features {
        swap_accounting: true,
        oom_group: false,
    };
    let got = plan(&v1(), "agentbox-1", &LIMITS, &features).unwrap();
    let want = writes(&[
        (
            "/sys/fs/cgroup/memory/agentbox-1",
            "memory.limit_in_bytes",
            "1073741824",
        ),
        (
            "/sys/fs/cgroup/memory/agentbox-1",
            "memory.memsw.limit_in_bytes",
            "1073741824",
        ),
        ("/sys/fs/cgroup/pids/agentbox-1", "pids.max", "1024"),
        (
            "/sys/fs/cgroup/cpu,cpuacct/agentbox-1",
            "cpu.cfs_period_us",
            "100000",
        ),
        (
            "/sys/fs/cgroup/cpu,cpuacct/agentbox-1",
            "cpu.cfs_quota_us",
            "150000",
        ),
    ]);
    assert_eq!(got, want);
    assert_eq!(
        got[4].path(),
        Path::new("/sys/fs/cgroup/cpu,cpuacct/agentbox-1/cpu.cfs_quota_us")
    );
}

#[test]
fn v1_plan_without_swap_accounting_or_cpu() {
    let limits = CgroupLimits {
        cpu_millis: None,
        ..LIMITS
    };
    let got = plan(&v1(), "agentbox-1", &limits, &Features::default()).unwrap();
    let want = writes(&[
        (
            "/sys/fs/cgroup/memory/agentbox-1",
            "memory.limit_in_bytes",
            "1073741824",
        ),
        ("/sys/fs/cgroup/memory/agentbox-1", "memory.swappiness", "0"),
        ("/sys/fs/cgroup/pids/agentbox-1", "pids.max", "1024"),
    ]);
    assert_eq!(got, want);
}

#[test]
fn v1_cpu_limit_needs_cpu_mount() {
    let Hierarchy::V1 { memory, pids, .. } = v1() else {
        unreachable!()
    };
    let h = Hierarchy::V1 {
        memory,
        pids,
        cpu: None,
    };
    assert!(matches!(
        plan(&h, "x", &LIMITS, &Features::default()),
        Err(CgroupError::NotMounted("cpu"))
    ));
    let limits = CgroupLimits {
        cpu_millis: None,
        ..LIMITS
    };
    assert_eq!(
        plan(&h, "x", &limits, &Features::default()).unwrap().len(),
        3
    );
}

#[test]
fn v2_plan_all_features() {
    let features = Features {
        swap_accounting: true,
        oom_group: true,
    };
    let got = plan(&v2(), "agentbox-1", &LIMITS, &features).unwrap();
    let leaf = "/sys/fs/cgroup/agentbox-1";
    let want = writes(&[
        (leaf, "memory.max", "1073741824"),
        (leaf, "memory.swap.max", "0"),
        (leaf, "memory.oom.group", "1"),
        (leaf, "pids.max", "1024"),
        (leaf, "cpu.max", "150000 100000"),
    ]);
    assert_eq!(got, want);
}

#[test]
fn v2_plan_minimal() {
    let limits = CgroupLimits {
        cpu_millis: None,
        ..LIMITS
    };
    let got = plan(&v2(), "a", &limits, &Features::default()).unwrap();
    assert_eq!(
        got,
        writes(&[
            ("/sys/fs/cgroup/a", "memory.max", "1073741824"),
            ("/sys/fs/cgroup/a", "pids.max", "1024")
        ])
    );
}

#[test]
fn cpu_quota_is_exact_at_the_edges() {
    for (millis, quota) in [
        (10, "1000 100000"),
        (1000, "100000 100000"),
        (1_024_000, "102400000 100000"),
    ] {
        let limits = CgroupLimits {
            cpu_millis: Some(millis),
            ..LIMITS
        };
        let got = plan(&v2(), "a", &limits, &Features::default()).unwrap();
        assert_eq!(got.last().unwrap().value, quota);
    }
}

#[test]
fn out_of_range_limits_are_refused_naming_the_field() {
    let cases = [
        (
            CgroupLimits {
                memory: 0,
                ..LIMITS
            },
            "memory",
        ),
        (CgroupLimits { pids: 0, ..LIMITS }, "pids"),
        (
            CgroupLimits {
                pids: 4_194_305,
                ..LIMITS
            },
            "pids",
        ),
        (
            CgroupLimits {
                cpu_millis: Some(9),
                ..LIMITS
            },
            "cpu_millis",
        ),
        (
            CgroupLimits {
                cpu_millis: Some(1_024_001),
                ..LIMITS
            },
            "cpu_millis",
        ),
    ];
    for (limits, field) in cases {
        let err = validate(&limits).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidLimit { field: f, .. } if f == field),
            "{err:?}"
        );
        assert!(plan(&v2(), "a", &limits, &Features::default()).is_err());
    }
    validate(&LIMITS).unwrap();
}

#[test]
fn names_must_be_one_component() {
    for name in ["", ".", "..", "a/b", "/abs", "a\nb"] {
        let err = plan(&v2(), name, &LIMITS, &Features::default()).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName(_)),
            "{name:?}: {err:?}"
        );
    }
    assert!(plan(&v2(), "agentbox-0123abcd", &LIMITS, &Features::default()).is_ok());
}
