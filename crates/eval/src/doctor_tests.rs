#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

use agentbox_sys::host_probe::LandlockSupport;

use super::cgroup::{cgroup_layout, CgroupLayout};
use super::kernel::{self, effective_uid, kernel_version, SyscallProbes};
use super::runtimes::{docker_socket, find_in, search_dirs, version_from_output};
use super::*;

const HYBRID: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const LEGACY_NO_CPU: &str = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime shared:16 master:3 - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
";

const UNIFIED: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

/// Only named v1 hierarchies and an empty cgroup2: nothing agentbox can use.
const NO_CONTROLLERS: &str = "\
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

fn write(root: &Path, path: &str, content: &str) {
    let full = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(full.parent().unwrap()).unwrap();
    fs::write(full, content).unwrap();
}

/// A fake host: everything agentbox needs, cgroups as given by `mountinfo`.
fn fake_host(mountinfo: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "/proc/self/mountinfo", mountinfo);
    write(
        root,
        "/proc/self/status",
        "Name:\tagentbox\nUid:\t1000\t0\t0\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n",
    );
    write(root, "/proc/self/ns/user", "");
    write(root, "/proc/sys/user/max_user_namespaces", "63419\n");
    write(root, "/proc/sys/kernel/osrelease", "6.8.0-45-generic\n");
    write(
        root,
        "/proc/sys/kernel/seccomp/actions_avail",
        "kill_process kill_thread trap errno user_notif trace log allow\n",
    );
    write(
        root,
        "/proc/filesystems",
        "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n",
    );
    write(root, "/proc/sys/net/ipv4/ip_forward", "0\n");
    write(root, "/usr/sbin/nft", "");
    write(root, "/usr/sbin/ip", "");
    dir
}

fn probes() -> SyscallProbes {
    SyscallProbes {
        landlock: Ok(LandlockSupport::Abi(6)),
        pidfd: Ok(true),
        mount_setattr: true,
    }
}

fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn version_lines() {
    let cases = [
        ("bubblewrap 0.8.0\n", Some("0.8.0")),
        (
            "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1\nspec: 1.0.2-dev\n",
            Some("1.1.5+ds1"),
        ),
        (
            "crun version 1.8.1\ncommit: f8a096be060b22ccd3d5f3ebe44108517fbf6c30\n",
            Some("1.8.1"),
        ),
        (
            "runsc version release-20240212.0\nspec: 1.1.0-rc.1\n",
            Some("release-20240212.0"),
        ),
        (
            "systemd 252 (252.22-1~deb12u1)\n+PAM +AUDIT +SELINUX\n",
            Some("252"),
        ),
        ("Docker version 24.0.7, build afdd53b\n", Some("24.0.7")),
        (
            "firejail version 0.9.72\n\nCompile time support:\n",
            Some("0.9.72"),
        ),
        (
            "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)\nCopyright (c)\n",
            Some("7.2.19"),
        ),
        ("wasmtime 25.0.1 (b4b8a3ac0 2024-09-24)\n", Some("25.0.1")),
        ("wasmtime-cli 14.0.4\n", Some("14.0.4")),
        ("hyperfine 1.16.1\n", Some("1.16.1")),
        ("nftables v1.0.6 (Lester Gooch #5)\n", Some("1.0.6")),
        ("\n\n  tool (v2.3)\n", Some("2.3")),
        ("\n", None),
        ("usage: tool [options]\n", None),
    ];
    for (output, want) in cases {
        assert_eq!(version_from_output(output).as_deref(), want, "{output:?}");
    }
}

#[test]
fn kernel_releases_and_uids() {
    assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
    assert_eq!(kernel_version("5.12-rc1"), Some((5, 12)));
    assert_eq!(kernel_version("5.4.0+"), Some((5, 4)));
    assert_eq!(kernel_version("garbage"), None);
    assert_eq!(effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(0));
    assert_eq!(effective_uid("Name:\tx\n"), None);
}

#[test]
fn cgroup_layouts_from_mountinfo() {
    assert_eq!(
        cgroup_layout(HYBRID),
        CgroupLayout::V1Hybrid {
            unified: "/sys/fs/cgroup/unified".into()
        }
    );
    assert_eq!(cgroup_layout(LEGACY_NO_CPU), CgroupLayout::V1Legacy);
    assert_eq!(cgroup_layout(UNIFIED), CgroupLayout::V2Unified);
    assert_eq!(cgroup_layout(""), CgroupLayout::None);
    // name=systemd is a named hierarchy, not a controller.
    assert_eq!(cgroup_layout(NO_CONTROLLERS), CgroupLayout::V2Unified,);
}

#[test]
fn hybrid_host_with_swap_accounting() {
    let host = fake_host(HYBRID);
    write(
        host.path(),
        "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
        "9223372036854771712\n",
    );
    write(
        host.path(),
        "/sys/fs/cgroup/unified/cgroup.controllers",
        "hugetlb\n",
    );
    let checks = kernel::checks(host.path(), &probes());
    let cgroups = find(&checks, "cgroups");
    assert_eq!(cgroups.status, Status::Ok, "{cgroups:?}");
    assert!(
        cgroups.detail.starts_with("v1 hybrid"),
        "{}",
        cgroups.detail
    );
    assert!(
        cgroups.detail.contains("cpu at /sys/fs/cgroup/cpu"),
        "{}",
        cgroups.detail
    );
    assert_eq!(find(&checks, "swap accounting").status, Status::Ok);
}

#[test]
fn legacy_host_without_cpu_or_memsw_warns() {
    let host = fake_host(LEGACY_NO_CPU);
    fs::create_dir_all(host.path().join("sys/fs/cgroup/memory")).unwrap();
    let checks = kernel::checks(host.path(), &probes());
    let cgroups = find(&checks, "cgroups");
    assert_eq!(cgroups.status, Status::Warn);
    assert!(
        cgroups.detail.starts_with("v1 legacy"),
        "{}",
        cgroups.detail
    );
    assert!(cgroups.fix.as_deref().unwrap().contains("-o cpu"));
    let swap = find(&checks, "swap accounting");
    assert_eq!(swap.status, Status::Warn);
    assert!(swap.fix.as_deref().unwrap().contains("swapaccount=1"));
}

#[test]
fn unified_host_reads_controllers_and_subtree_control() {
    let host = fake_host(UNIFIED);
    write(
        host.path(),
        "/sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory pids\n",
    );
    write(
        host.path(),
        "/sys/fs/cgroup/cgroup.subtree_control",
        "memory pids\n",
    );
    write(
        host.path(),
        "/sys/fs/cgroup/system.slice/memory.swap.max",
        "max\n",
    );
    let checks = kernel::checks(host.path(), &probes());
    let cgroups = find(&checks, "cgroups");
    assert_eq!(cgroups.status, Status::Ok, "{cgroups:?}");
    assert!(
        cgroups.detail.starts_with("v2 unified at /sys/fs/cgroup"),
        "{}",
        cgroups.detail
    );
    assert!(
        cgroups.detail.contains("subtree_control: memory pids"),
        "{}",
        cgroups.detail
    );
    assert_eq!(find(&checks, "swap accounting").status, Status::Ok);
}

#[test]
fn empty_cgroup2_is_missing_and_blocks_ns() {
    let host = fake_host(NO_CONTROLLERS);
    write(
        host.path(),
        "/sys/fs/cgroup/unified/cgroup.controllers",
        "\n",
    );
    let checks = kernel::checks(host.path(), &probes());
    let cgroups = find(&checks, "cgroups");
    assert_eq!(cgroups.status, Status::Missing);
    assert!(
        cgroups.detail.contains("offers no controllers"),
        "{}",
        cgroups.detail
    );
    let doctor = assemble(checks, Vec::new(), Vec::new(), true);
    let ns = doctor.tiers.iter().find(|t| t.tier == "ns").unwrap();
    assert!(!ns.available);
    assert!(ns.reason.contains("cgroups"), "{}", ns.reason);
    assert!(ns.fix.is_some());
    assert_eq!(doctor.strongest.as_deref(), Some("chroot"));
}

#[test]
fn kernel_knobs_and_probes() {
    let host = fake_host(HYBRID);
    write(
        host.path(),
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        "1\n",
    );
    let probes = SyscallProbes {
        landlock: Ok(LandlockSupport::Disabled),
        pidfd: Ok(false),
        mount_setattr: false,
    };
    let checks = kernel::checks(host.path(), &probes);
    // Effective uid 0: the AppArmor restriction is reported but does not matter.
    let userns = find(&checks, "user namespaces");
    assert_eq!(userns.status, Status::Ok);
    assert!(userns
        .detail
        .contains("apparmor_restrict_unprivileged_userns=1"));
    assert!(userns.detail.contains("do not matter"), "{}", userns.detail);
    let landlock = find(&checks, "landlock");
    assert_eq!(landlock.status, Status::Missing);
    assert!(landlock.fix.as_deref().unwrap().contains("lsm="));
    assert_eq!(find(&checks, "pidfd").status, Status::Missing);
    assert_eq!(find(&checks, "idmapped mounts").status, Status::Missing);
    assert_eq!(find(&checks, "ip forwarding").status, Status::Warn);
    assert_eq!(find(&checks, "nftables").status, Status::Ok);
    assert_eq!(find(&checks, "kvm").status, Status::Missing);
    for c in &checks {
        assert!(
            c.status == Status::Ok || c.fix.is_some(),
            "{c:?} has no fix"
        );
    }

    write(host.path(), "/proc/sys/user/max_user_namespaces", "0\n");
    let checks = kernel::checks(host.path(), &probes);
    assert_eq!(find(&checks, "user namespaces").status, Status::Missing);
}

#[test]
fn finds_executables_only() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::write(bin.join("plain"), "").unwrap();
    fs::write(bin.join("tool"), "").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(bin.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    let dirs = vec![bin.clone()];
    assert_eq!(find_in(&dirs, "tool"), Some(bin.join("tool")));
    assert_eq!(find_in(&dirs, "plain"), None);
    assert_eq!(find_in(&dirs, "absent"), None);

    let dirs = search_dirs(Some(std::ffi::OsStr::new("/usr/bin:relative:/usr/sbin")));
    let shown: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
    assert_eq!(shown, ["/usr/bin", "/usr/sbin", "/usr/local/sbin", "/sbin"]);

    assert_eq!(docker_socket(None), Path::new("/var/run/docker.sock"));
    assert_eq!(
        docker_socket(Some("tcp://1.2.3.4:2375")),
        Path::new("/var/run/docker.sock")
    );
    assert_eq!(
        docker_socket(Some("unix:///run/user/1000/docker.sock")),
        Path::new("/run/user/1000/docker.sock")
    );
}

#[test]
fn renders_sections_and_serializes() {
    let host = fake_host(HYBRID);
    let checks = kernel::checks(host.path(), &probes());
    let runtimes = vec![
        Runtime {
            name: "bubblewrap".into(),
            binary: "bwrap".into(),
            path: Some("/usr/bin/bwrap".into()),
            version: Some("0.8.0".into()),
            available: true,
            detail: String::new(),
            fix: None,
        },
        Runtime {
            name: "runc".into(),
            binary: "runc".into(),
            path: None,
            version: None,
            available: false,
            detail: String::new(),
            fix: Some("apt-get install runc".into()),
        },
    ];
    let doctor = assemble(checks, runtimes, Vec::new(), false);
    assert_eq!(doctor.strongest.as_deref(), Some("ns"));
    let text = render_text(&doctor);
    for heading in ["Kernel features\n", "Tiers\n", "Runtimes\n"] {
        assert!(text.contains(heading), "{text}");
    }
    assert!(
        text.contains("✓ bubblewrap  /usr/bin/bwrap 0.8.0\n"),
        "{text}"
    );
    assert!(
        text.contains("✗ runc        not found (fix: apt-get install runc)\n"),
        "{text}"
    );
    assert!(text.contains("! ip forwarding "), "{text}");
    assert!(text.contains("✗ wasm "), "{text}");
    assert!(text.ends_with("Strongest tier here: ns\n"), "{text}");

    let json = serde_json::to_value(&doctor).unwrap();
    assert_eq!(json["strongest"], "ns");
    assert_eq!(json["checks"][0]["status"], "ok");
    let back: Doctor = serde_json::from_value(json).unwrap();
    assert_eq!(back, doctor);
}

/// This host (the development machine): root, cgroup v1 hybrid, Landlock, so `ns` is available.
#[test]
fn examines_this_host() {
    let doctor = examine(true);
    let text = render_text(&doctor);
    let cgroups = find(&doctor.checks, "cgroups");
    assert!(cgroups.detail.starts_with("v1 hybrid"), "{text}");
    let ns = doctor.tiers.iter().find(|t| t.tier == "ns").unwrap();
    assert!(ns.available, "{text}");
    // gVisor, when its platform probe finds one that works here, is stronger than ns.
    let gvisor = doctor.tiers.iter().find(|t| t.tier == "gvisor").unwrap();
    let microvm = doctor.tiers.iter().find(|t| t.tier == "microvm").unwrap();
    let strongest = if microvm.available {
        "microvm"
    } else if gvisor.available {
        "gvisor"
    } else {
        "ns"
    };
    assert_eq!(doctor.strongest.as_deref(), Some(strongest), "{text}");
    let chroot = doctor.tiers.iter().find(|t| t.tier == "chroot").unwrap();
    assert!(chroot.available && chroot.reason.contains("not a security boundary"));
    // scripts/test.sh builds the guest kernel and agent: the microvm tier runs here, under TCG
    // (this host's KVM does not boot guests).
    let microvm = doctor.tiers.iter().find(|t| t.tier == "microvm").unwrap();
    assert!(microvm.available, "{microvm:?}");
    assert!(microvm.reason.contains("accelerator"), "{microvm:?}");
    assert!(doctor.tiers.iter().any(|t| t.tier == "wasm" && t.available));
    // install-deps.sh installs runc, crun, runsc and systemd-container: their tiers run here.
    for tier in ["oci", "gvisor", "nspawn"] {
        let t = doctor.tiers.iter().find(|t| t.tier == tier).unwrap();
        assert!(t.available, "{t:?}\n{text}");
    }
    // No Docker daemon runs on the test host (the docker tests start their own).
    let docker = doctor.tiers.iter().find(|t| t.tier == "docker").unwrap();
    assert!(docker.fix.is_some() || docker.available, "{docker:?}");
    assert_eq!(doctor.runtimes.len(), 10);
}
