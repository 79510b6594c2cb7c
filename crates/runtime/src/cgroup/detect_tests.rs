use std::path::{Path, PathBuf};

use super::{detect, unescape};
use crate::cgroup::{CgroupError, Hierarchy};

const ROOT_TMPFS: &str =
    "31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n";

/// One controller per mount, as on this development host (cpuset before cpu on purpose).
const V1_SEPARATE: &str = "\
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
";

/// systemd's legacy layout: cpu and cpuacct comounted, optional fields present, cgroup2 for systemd.
const V1_HYBRID_COMOUNTED: &str = "\
25 24 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate
26 24 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:6 - cgroup cgroup rw,xattr,name=systemd
29 24 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
35 24 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
36 24 0:31 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 master:3 - cgroup cgroup rw,pids
";

const V2_PURE: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

const ALL_V2: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

fn offering(text: &'static str) -> impl Fn(&Path) -> Option<String> {
    move |_| Some(text.to_string())
}

fn never_read(root: &Path) -> Option<String> {
    panic!(
        "v1 detection must not read cgroup2 controllers ({})",
        root.display()
    )
}

fn message(result: Result<Hierarchy, CgroupError>) -> String {
    match result {
        Err(CgroupError::NoHierarchy(m)) => m,
        other => panic!("expected NoHierarchy, got {other:?}"),
    }
}

#[test]
fn v1_separate_mounts() {
    let h = detect(&format!("{ROOT_TMPFS}{V1_SEPARATE}"), &never_read).unwrap();
    assert_eq!(
        h,
        Hierarchy::V1 {
            memory: PathBuf::from("/sys/fs/cgroup/memory"),
            pids: PathBuf::from("/sys/fs/cgroup/pids"),
            cpu: Some(PathBuf::from("/sys/fs/cgroup/cpu")),
        }
    );
}

#[test]
fn v1_hybrid_with_cpu_cpuacct_comounted_prefers_v1() {
    let h = detect(V1_HYBRID_COMOUNTED, &never_read).unwrap();
    assert_eq!(
        h,
        Hierarchy::V1 {
            memory: PathBuf::from("/sys/fs/cgroup/memory"),
            pids: PathBuf::from("/sys/fs/cgroup/pids"),
            cpu: Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")),
        }
    );
}

#[test]
fn v1_without_cpu_mount_leaves_cpu_out() {
    let text: String = V1_SEPARATE
        .lines()
        .filter(|l| !l.ends_with(" rw,cpu"))
        .map(|l| format!("{l}\n"))
        .collect();
    let Hierarchy::V1 { cpu, .. } = detect(&text, &never_read).unwrap() else {
        panic!("not v1")
    };
    assert_eq!(cpu, None);
}

#[test]
fn v1_memory_without_pids_names_pids() {
    let text: String = V1_SEPARATE
        .lines()
        .filter(|l| !l.ends_with("rw,pids"))
        .map(|l| format!("{l}\n"))
        .collect();
    let m = message(detect(&text, &never_read));
    assert!(
        m.contains("pids") && m.contains("/sys/fs/cgroup/memory"),
        "{m}"
    );
}

#[test]
fn pure_v2() {
    let h = detect(V2_PURE, &offering(ALL_V2)).unwrap();
    assert_eq!(
        h,
        Hierarchy::V2 {
            root: PathBuf::from("/sys/fs/cgroup")
        }
    );
}

#[test]
fn v2_prefers_sys_fs_cgroup_and_skips_roots_without_controllers() {
    let text = format!(
        "{}{V2_PURE}",
        "99 22 0:26 /sub /run/other\\040cg rw - cgroup2 cgroup2 rw\n"
    );
    let h = detect(&text, &offering(ALL_V2)).unwrap();
    assert_eq!(
        h,
        Hierarchy::V2 {
            root: PathBuf::from("/sys/fs/cgroup")
        }
    );

    // The preferred root offers nothing: the next cgroup2 mount that does is taken.
    let by_root = |root: &Path| {
        Some(
            if root == Path::new("/sys/fs/cgroup") {
                ""
            } else {
                "memory pids"
            }
            .to_string(),
        )
    };
    let h = detect(&text, &by_root).unwrap();
    assert_eq!(
        h,
        Hierarchy::V2 {
            root: PathBuf::from("/run/other cg")
        }
    );
}

#[test]
fn v2_lacking_pids_names_it() {
    let m = message(detect(V2_PURE, &offering("cpu io memory\n")));
    assert!(
        m.contains("/sys/fs/cgroup lacks pids (offers only cpu io memory)"),
        "{m}"
    );
}

#[test]
fn hybrid_with_empty_cgroup2_and_no_v1_memory_is_an_error() {
    let text = "25 24 0:23 / /sys/fs/cgroup/unified rw shared:5 - cgroup2 cgroup2 rw,nsdelegate\n\
                40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
    let m = message(detect(text, &offering("")));
    assert!(m.contains("v1 memory controller is not mounted"), "{m}");
    assert!(
        m.contains("/sys/fs/cgroup/unified lacks memory, pids (offers no controllers)"),
        "{m}"
    );

    let m = message(detect(text, &|_| None));
    assert!(m.contains("cgroup.controllers unreadable"), "{m}");
}

#[test]
fn no_cgroups_at_all_is_an_error() {
    let m = message(detect(
        "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n",
        &never_read,
    ));
    assert!(m.contains("not mounted and no cgroup2 mount"), "{m}");
    let m = message(detect("", &never_read));
    assert!(m.contains("no cgroup2 mount"), "{m}");
}

#[test]
fn escaped_mount_points_and_malformed_lines() {
    let text = "\
garbage
1 2 3 4
35 24 0:30 / /mnt/my\\040cgroups/mem\\134ory rw - cgroup cgroup rw,memory
36 24 0:31 / /mnt/my\\040cgroups/pids rw - cgroup cgroup rw,pids
";
    let Hierarchy::V1 { memory, pids, cpu } = detect(text, &never_read).unwrap() else {
        panic!("not v1")
    };
    assert_eq!(memory, PathBuf::from("/mnt/my cgroups/mem\\ory"));
    assert_eq!(pids, PathBuf::from("/mnt/my cgroups/pids"));
    assert_eq!(cpu, None);
}

#[test]
fn unescape_octal_sequences() {
    assert_eq!(unescape("/a\\040b\\011c\\012d\\134e"), "/a b\tc\nd\\e");
    assert_eq!(unescape("/plain"), "/plain");
    assert_eq!(unescape("/bad\\9z\\"), "/bad\\9z\\");
    assert_eq!(unescape("/sign\\+12"), "/sign\\+12");
}
