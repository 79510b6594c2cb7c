#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const STATUS: &str = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\n\
Uid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n\
CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000200001\n\
CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n\
Seccomp_filters:\t1\n";

#[test]
fn status_fields() {
    let s = parse_status(STATUS);
    assert_eq!(s.cap_eff, Some(0x20_0001));
    assert_eq!(s.cap_prm, Some(0x1ff_ffff_ffff));
    assert_eq!(s.cap_inh, Some(0));
    assert_eq!(s.cap_amb, Some(0));
    assert_eq!(s.no_new_privs, Some(true));
    assert_eq!(s.seccomp, Some(2));
    assert_eq!(s.uids, Some([1000, 0, 0, 0]));
    assert_eq!(parse_status("garbage\n"), Status::default());
}

#[test]
fn capability_masks_decode_to_names() {
    assert_eq!(cap_names(0), Vec::<String>::new());
    assert_eq!(cap_names(0x20_0001), ["CAP_CHOWN", "CAP_SYS_ADMIN"]);
    assert_eq!(cap_names(1 << 40), ["CAP_CHECKPOINT_RESTORE"]);
    assert_eq!(cap_names(1 << 41), ["cap 41"]);
    assert_eq!(cap_names(0x1ff_ffff_ffff).len(), 41);
    // Only the listed ones are dangerous; CAP_CHOWN and CAP_NET_RAW are not on the list.
    assert_eq!(dangerous_caps(0x20_0001), ["CAP_SYS_ADMIN"]);
    assert!(dangerous_caps((1 << 0) | (1 << 13)).is_empty());
    assert_eq!(dangerous_caps(0x1ff_ffff_ffff).len(), DANGEROUS_CAPS.len());
    assert_eq!(
        dangerous_caps((1 << 7) | (1 << 2)),
        ["CAP_DAC_READ_SEARCH", "CAP_SETUID"]
    );
}

const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 27 254:0 /home/a\\040b /mnt/my\\040dir ro,nosuid,relatime master:3 - ext4 /dev/vda rw,errors=remount-ro
31 27 0:40 / /usr/bin ro,nosuid - tmpfs tmpfs ro
32 31 0:41 / /usr/bin rw - tmpfs none rw
40 27 0:25 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

#[test]
fn mountinfo_lines_parse() {
    let m = parse_mountinfo(MOUNTINFO);
    assert_eq!(m.len(), 6);
    assert_eq!((m[1].major, m[1].minor), (254, 0));
    assert_eq!(m[1].mount_point, "/");
    assert_eq!(m[1].fstype, "ext4");
    assert_eq!(m[1].source, "/dev/vda");
    // Optional fields (shared:1, master:3) do not shift the rest; octal escapes are decoded.
    assert_eq!(m[2].root, "/home/a b");
    assert_eq!(m[2].mount_point, "/mnt/my dir");
    assert_eq!(m[2].options, ["ro", "nosuid", "relatime"]);
    assert_eq!(m[2].super_options, ["rw", "errors=remount-ro"]);
    assert!(parse_mountinfo("not a mountinfo line\n").is_empty());
    assert_eq!(unescape("a\\134b\\"), "a\\b\\");
    assert_eq!(unescape("\\04"), "\\04");
}

#[test]
fn the_mount_of_a_path_is_the_longest_and_latest() {
    let m = parse_mountinfo(MOUNTINFO);
    assert_eq!(mount_of(&m, "/etc/passwd").unwrap().mount_point, "/");
    assert_eq!(mount_of(&m, "/proc/self").unwrap().mount_point, "/proc");
    // Component-wise: /procfoo is not under /proc.
    assert_eq!(mount_of(&m, "/procfoo").unwrap().mount_point, "/");
    // Stacked at /usr/bin: the one mounted last wins.
    assert_eq!(mount_of(&m, "/usr/bin/su").unwrap().source, "none");
    assert!(mount_of(&[], "/x").is_none());
}

#[test]
fn chroot_is_seen_as_no_mount_at_root() {
    let m = parse_mountinfo(MOUNTINFO);
    assert!(!looks_chrooted(&m));
    let chrooted: Vec<MountEntry> = m.into_iter().filter(|e| e.mount_point != "/").collect();
    assert!(looks_chrooted(&chrooted));
    assert!(!looks_chrooted(&[]));
}

#[test]
fn cgroup2_flags_are_kept() {
    let m = parse_mountinfo(MOUNTINFO);
    assert_eq!(
        cgroup2_root_flag_options(&m[5].super_options),
        "nsdelegate,memory_recursiveprot"
    );
    assert_eq!(cgroup2_root_flag_options(&["rw".to_string()]), "");
}

#[test]
fn device_numbers_split() {
    assert_eq!(split_dev(0xfe00), (254, 0));
    assert_eq!(split_dev(0x0801), (8, 1));
    // Large minors and majors use the high bits.
    let dev = (0x123u64 << 8) | 0x45 | (0xabcu64 << 12 << 8) | (0x1u64 << 32 << 12);
    assert_eq!(split_dev(dev).1 & 0xff, 0x45);
    assert_eq!(split_dev((259u64 << 8) | 3), (259, 3));
}

#[test]
fn uid_maps() {
    assert_eq!(host_uid("0 0 4294967295\n", 0), Some(0));
    let map = "         0       1000          1\n         1     100000      65536\n";
    assert_eq!(host_uid(map, 0), Some(1000));
    assert_eq!(host_uid(map, 5), Some(100_004));
    assert_eq!(host_uid(map, 70_000), None);
    assert_eq!(host_uid("", 0), None);
}

#[test]
fn refusals_name_their_layer() {
    let filtered = Guards {
        seccomp_filter: Some(true),
        cap_eff: Some(0),
        init_user_ns: Some(false),
    };
    let bare = Guards {
        seccomp_filter: Some(false),
        cap_eff: Some(0),
        init_user_ns: Some(true),
    };
    let root = Guards {
        seccomp_filter: Some(true),
        cap_eff: Some(u64::MAX),
        init_user_ns: Some(true),
    };
    assert!(refused_by(errno::ENOSYS, None, &filtered).contains("seccomp"));
    assert!(refused_by(errno::ENOSYS, None, &bare).contains("lacks this syscall"));
    assert!(refused_by(errno::EPERM, Some(cap::SYS_ADMIN), &bare)
        .contains("CAP_SYS_ADMIN is not effective"));
    assert!(
        refused_by(errno::EPERM, Some(cap::SYS_ADMIN), &filtered).contains("or the seccomp filter")
    );
    assert!(refused_by(errno::EPERM, Some(cap::SYS_ADMIN), &root)
        .starts_with("probably the seccomp filter"));
    assert!(refused_by(errno::EROFS, None, &bare).contains("read-only"));
    assert!(refused_by(errno::EPERM, None, &filtered).starts_with("the seccomp filter"));
    assert!(refused_by(errno::EPERM, None, &bare).contains("other than capabilities"));
    assert_eq!(
        verdict_of_refusal(errno::EPERM, &filtered),
        Verdict::Blocked
    );
    assert_eq!(
        verdict_of_refusal(errno::ENOSYS, &filtered),
        Verdict::Blocked
    );
    // ENOSYS with no filter at all: the kernel has no such syscall.
    assert_eq!(
        verdict_of_refusal(errno::ENOSYS, &bare),
        Verdict::NotApplicable
    );
    assert_eq!(
        verdict_of_refusal(errno::EBUSY, &filtered),
        Verdict::Inconclusive
    );
}

#[test]
fn module_load_reads_the_errno_of_an_empty_image() {
    assert_eq!(module_load_verdict(errno::EPERM), Verdict::Blocked);
    assert_eq!(module_load_verdict(errno::ENOSYS), Verdict::Blocked);
    assert_eq!(module_load_verdict(errno::ENOEXEC), Verdict::Escaped);
    assert_eq!(module_load_verdict(errno::EFAULT), Verdict::Escaped);
    assert_eq!(module_load_verdict(errno::EBUSY), Verdict::Inconclusive);
}

fn file(path: &str, nosuid: bool, host_root: bool) -> SetuidFile {
    SetuidFile {
        path: path.into(),
        executable: true,
        nosuid,
        noexec: false,
        host_root,
    }
}

#[test]
fn setuid_decisions() {
    let su = [file("/usr/bin/su", false, true)];
    assert_eq!(setuid_verdict(false, Some(false), &su).0, Verdict::Escaped);
    assert_eq!(setuid_verdict(false, Some(true), &su).0, Verdict::Blocked);
    assert!(setuid_verdict(false, Some(true), &su)
        .1
        .contains("NoNewPrivs=1"));
    let nosuid = [file("/usr/bin/su", true, true)];
    assert_eq!(
        setuid_verdict(false, Some(false), &nosuid).0,
        Verdict::Blocked
    );
    assert!(setuid_verdict(false, Some(false), &nosuid)
        .1
        .contains("nosuid"));
    // Owned by root of a user namespace only: no host privilege to gain.
    let ns_root = [file("/usr/bin/su", false, false)];
    assert_eq!(
        setuid_verdict(false, Some(false), &ns_root).0,
        Verdict::Blocked
    );
    assert_eq!(setuid_verdict(false, Some(false), &[]).0, Verdict::Blocked);
    assert!(setuid_verdict(false, Some(false), &[])
        .1
        .contains("no setuid"));
    // Already host root: escaped whatever else holds.
    assert_eq!(setuid_verdict(true, Some(true), &[]).0, Verdict::Escaped);
    assert_eq!(setuid_verdict(false, None, &su).0, Verdict::Inconclusive);
}

#[test]
fn partitions_and_magic() {
    let text = "major minor  #blocks  name\n\n 253        0          0 zram0\n 254        0  268435456 vda\n 254        1     524288 vda1\n";
    assert_eq!(partition_name(text, 254, 0).as_deref(), Some("vda"));
    assert_eq!(partition_name(text, 254, 1).as_deref(), Some("vda1"));
    assert_eq!(partition_name(text, 8, 0), None);
    assert_eq!(fstype_of_magic(0xef53), Some("ext4"));
    assert_eq!(fstype_of_magic(0x0102_1994), None); // tmpfs
}

#[test]
fn controlling_terminal_from_stat() {
    let stat = "4242 (a (weird) name) S 1 4242 4242 34816 4242 4194560 0 0";
    assert_eq!(tty_nr_of_stat(stat), Some(34816));
    assert_eq!(split_dev(34816), (136, 0));
    assert_eq!(tty_nr_of_stat("1 (init) S 0 1 1 0 -1"), Some(0));
    assert_eq!(tty_nr_of_stat("garbage"), None);
}
