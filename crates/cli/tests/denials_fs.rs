//! Escape suite, file-system side: Landlock, the masked and read-only parts of /proc, the minimal
//! /dev, the absence of /sys and of host files. Probes (python3) report exact errnos from inside a
//! real `ns` sandbox; host-side facts (host files, devices, the host hostname) are the oracles.
//! Process side: `denials.rs`.
// Helpers outside #[test] fns (here and in `common`) are test code too: a failed expect is a
// failed test.
#![allow(clippy::expect_used)]

mod common;
use common::*;

use std::path::Path;

use serde_json::Value;

/// Python prelude: `err(f)` runs `f` and gives "OK" or the errno name; `mount_opts(path)` gives
/// the per-mount options of the topmost mount at `path` (None if nothing is mounted there).
const PRELUDE: &str = r#"
import errno, json, os, stat, sys
def err(f):
    try:
        f()
        return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]
def write(path, data="x"):
    with open(path, "w") as f:
        f.write(data)
def read_len(path):
    with open(path, "rb") as f:
        return len(f.read())
def mount_opts(path):
    found = [l.split()[5].split(",") for l in open("/proc/self/mountinfo") if l.split()[4] == path]
    return found[-1] if found else None
"#;

/// Runs PRELUDE + `code` (which prints one JSON value) in a default sandbox, with `args` as argv.
fn probe(flags: &[&str], code: &str, args: &[&str]) -> Value {
    let code = format!("{PRELUDE}\n{code}");
    let mut full: Vec<&str> = flags.to_vec();
    full.extend_from_slice(&["--", "python3", "-c", &code]);
    full.extend_from_slice(args);
    let out = ok(run(&full));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("probe output {out:?}: {e}"))
}

#[test]
fn creating_a_file_at_the_writable_tmpfs_root_is_denied_by_landlock() {
    let v = probe(
        &[],
        r#"print(json.dumps({"root_opts": mount_opts("/"), "file": err(lambda: write("/x")), "dir": err(lambda: os.mkdir("/d"))}))"#,
        &[],
    );
    // The root mount itself is writable, so the EACCES can only come from Landlock.
    assert!(
        v["root_opts"]
            .as_array()
            .expect("root mount")
            .contains(&"rw".into()),
        "{v}"
    );
    assert_eq!(v["file"], "EACCES", "{v}");
    assert_eq!(v["dir"], "EACCES", "{v}");
}

#[test]
fn writing_under_etc_is_denied_by_landlock() {
    let v = probe(
        &[],
        r#"print(json.dumps({"new": err(lambda: write("/etc/x")), "passwd": err(lambda: write("/etc/passwd", "evil::0:0::/:/bin/sh\n")), "passwd_mount": mount_opts("/etc/passwd")}))"#,
        &[],
    );
    assert_eq!(v["new"], "EACCES", "{v}");
    // /etc/passwd is a generated file on the writable tmpfs root, not a read-only mount.
    assert_eq!(v["passwd_mount"], Value::Null, "{v}");
    assert_eq!(v["passwd"], "EACCES", "{v}");
}

#[test]
fn scratch_dirs_workspace_and_root_home_are_writable() {
    let paths = [
        "/tmp/x",
        "/var/tmp/x",
        "/workspace/x",
        "/root/x",
        "/dev/shm/x",
    ];
    let v = probe(
        &[],
        r#"
def write_then_read(p):
    verdict = err(lambda: write(p, "data"))
    return verdict + ":" + open(p).read() if verdict == "OK" else verdict
print(json.dumps({p: write_then_read(p) for p in sys.argv[1:]}))
"#,
        &paths,
    );
    for path in paths {
        assert_eq!(v[path], "OK:data", "{path}: {v}");
    }
}

const MASKED_PROC_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/sysrq-trigger",
    "/proc/timer_list",
    "/proc/sched_debug",
];

#[test]
fn masked_proc_files_are_dev_null_or_absent() {
    let v = probe(
        &[],
        r#"
def describe(p):
    if not os.path.lexists(p):
        return {"exists": False}
    st = os.stat(p)
    rdev = [os.major(st.st_rdev), os.minor(st.st_rdev)] if stat.S_ISCHR(st.st_mode) else None
    try:
        n = read_len(p)
    except OSError as e:
        n = errno.errorcode[e.errno]
    return {"exists": True, "rdev": rdev, "read": n}
print(json.dumps({p: describe(p) for p in sys.argv[1:]}))
"#,
        MASKED_PROC_FILES,
    );
    let mut checked = 0;
    for path in MASKED_PROC_FILES {
        let inside = &v[*path];
        if Path::new(path).exists() {
            checked += 1;
            assert_eq!(
                inside["exists"], true,
                "{path} is on the host, masked inside: {v}"
            );
        }
        if inside["exists"] == true {
            assert_eq!(
                inside["rdev"],
                serde_json::json!([1, 3]),
                "{path} is not /dev/null: {v}"
            );
            assert_eq!(inside["read"], 0, "{path} reads data: {v}");
        }
    }
    assert!(
        checked > 0,
        "none of {MASKED_PROC_FILES:?} exists on the host: test cannot tell"
    );
}

#[test]
fn writing_proc_sysrq_trigger_does_not_reach_the_kernel() {
    let v = probe(
        &[],
        r#"
p = "/proc/sysrq-trigger"
rdev = None
if os.path.exists(p) and stat.S_ISCHR(os.stat(p).st_mode):
    rdev = [os.major(os.stat(p).st_rdev), os.minor(os.stat(p).st_rdev)]
# "m" only prints memory info to the kernel log, harmless if it ever got through.
print(json.dumps({"write": err(lambda: write(p, "m")), "rdev": rdev}))
"#,
        &[],
    );
    // Either the write fails, or it goes to /dev/null.
    if v["write"] == "OK" {
        assert_eq!(
            v["rdev"],
            serde_json::json!([1, 3]),
            "sysrq-trigger writable: {v}"
        );
    } else if !Path::new("/proc/sysrq-trigger").exists() {
        assert_eq!(v["write"], "ENOENT", "{v}");
    }
}

#[test]
fn masked_proc_dirs_are_empty_read_only_tmpfs() {
    let dirs = ["/proc/acpi", "/proc/scsi"];
    let v = probe(
        &[],
        r#"
def describe(p):
    if not os.path.isdir(p):
        return None
    fstype = [l.split(" - ")[1].split()[0] for l in open("/proc/self/mountinfo") if l.split()[4] == p]
    return {"entries": sorted(os.listdir(p)), "fstype": fstype[-1] if fstype else None, "opts": mount_opts(p)}
print(json.dumps({p: describe(p) for p in sys.argv[1:]}))
"#,
        &dirs,
    );
    let mut checked = 0;
    for dir in dirs {
        let inside = &v[dir];
        if Path::new(dir).is_dir() {
            checked += 1;
            // Even when the host's directory is empty now, hardware can populate it later:
            // what proves the mask is the empty read-only tmpfs over it.
            assert_eq!(inside["fstype"], "tmpfs", "{dir} is not masked: {v}");
            assert!(
                inside["opts"]
                    .as_array()
                    .is_some_and(|o| o.contains(&"ro".into())),
                "{dir}: {v}"
            );
        }
        assert!(
            inside.is_null() || inside["entries"] == serde_json::json!([]),
            "{dir} shows entries: {v}"
        );
    }
    assert!(
        checked > 0,
        "none of {dirs:?} exists on the host: test cannot tell"
    );
}

#[test]
fn writing_proc_sys_fails_with_erofs_and_leaves_the_host_hostname_unchanged() {
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host hostname");
    let v = probe(
        &[],
        r#"
p = "/proc/sys/kernel/hostname"
print(json.dumps({"write": err(lambda: write(p, "pwned")), "after": open(p).read().strip()}))
"#,
        &[],
    );
    let host_after = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host hostname");
    assert_eq!(v["write"], "EROFS", "{v}");
    assert_eq!(v["after"], "agentbox", "{v}");
    assert_eq!(host_after, host_before, "host hostname changed");
}

#[test]
fn proc_sys_bus_fs_and_irq_are_mounted_read_only() {
    let paths = ["/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"];
    let v = probe(
        &[],
        r#"print(json.dumps({p: mount_opts(p) for p in sys.argv[1:]}))"#,
        &paths,
    );
    for path in paths {
        if path == "/proc/sys" || Path::new(path).exists() {
            let opts = v[path]
                .as_array()
                .unwrap_or_else(|| panic!("{path} is not a mount: {v}"));
            assert!(opts.contains(&"ro".into()), "{path} is writable: {v}");
        }
    }
}

#[test]
fn sys_is_absent() {
    assert!(
        Path::new("/sys/kernel").exists(),
        "host has no /sys: test cannot tell"
    );
    let v = probe(
        &[],
        r#"print(json.dumps({"sys": os.path.lexists("/sys"), "sysfs": [l for l in open("/proc/self/mountinfo") if " - sysfs " in l]}))"#,
        &[],
    );
    assert_eq!(v["sys"], false, "{v}");
    assert_eq!(v["sysfs"], serde_json::json!([]), "{v}");
}

#[test]
fn dev_holds_exactly_the_expected_entries() {
    let v = probe(&[], r#"print(json.dumps(sorted(os.listdir("/dev"))))"#, &[]);
    let expected = [
        "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
        "urandom", "zero",
    ];
    assert_eq!(v, serde_json::json!(expected));
}

/// The host's root file system device: its path under /dev and its "major:minor".
fn host_root_device() -> (String, String) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("host mountinfo");
    let line = mountinfo
        .lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("root mount");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let majmin = fields[2].to_string();
    let source = line
        .split(" - ")
        .nth(1)
        .and_then(|s| s.split_whitespace().nth(1))
        .unwrap_or("");
    let path = if source.starts_with("/dev/") {
        source.to_string()
    } else {
        let uevent =
            std::fs::read_to_string(format!("/sys/dev/block/{majmin}/uevent")).unwrap_or_default();
        let name = uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .expect("root device name");
        format!("/dev/{name}")
    };
    (path, majmin)
}

#[test]
fn host_root_block_device_is_absent_inside() {
    let (device, _) = host_root_device();
    assert!(
        Path::new(&device).exists(),
        "host root device {device} not found on the host"
    );
    let v = probe(
        &[],
        r#"print(json.dumps(err(lambda: open(sys.argv[1], "rb").read(512))))"#,
        &[&device],
    );
    assert_eq!(v, "ENOENT", "{device}");
}

#[test]
fn mknod_of_devices_is_denied_with_eperm() {
    let (_, majmin) = host_root_device();
    let (major, minor) = majmin.split_once(':').expect("major:minor");
    let v = probe(
        &[],
        r#"
major, minor = int(sys.argv[1]), int(sys.argv[2])
print(json.dumps({
    "block": err(lambda: os.mknod("/tmp/disk", stat.S_IFBLK | 0o600, os.makedev(major, minor))),
    "char": err(lambda: os.mknod("/tmp/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))),
    "left": [p for p in ["/tmp/disk", "/tmp/null"] if os.path.lexists(p)],
    "fifo": err(lambda: os.mkfifo("/tmp/fifo")),
}))
"#,
        &[major, minor],
    );
    assert_eq!(v["block"], "EPERM", "{v}");
    assert_eq!(v["char"], "EPERM", "{v}");
    assert_eq!(v["left"], serde_json::json!([]), "{v}");
    assert_eq!(v["fifo"], "OK", "control: /tmp is writable: {v}");
}

/// A directory with a secret file on the host, removed when dropped.
struct Canary(std::path::PathBuf);

impl Drop for Canary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn host_files_outside_the_image_are_invisible() {
    let canary = Canary(format!("/opt/agentbox-canary-{}", std::process::id()).into());
    std::fs::create_dir_all(&canary.0).expect("create canary dir");
    let secret = canary.0.join("secret");
    std::fs::write(&secret, "host secret\n").expect("write canary");
    let v = probe(
        &[],
        r#"print(json.dumps({"ls": err(lambda: os.listdir("/opt")), "dir": err(lambda: os.stat(sys.argv[1])), "cat": err(lambda: open(sys.argv[2]).read())}))"#,
        &[
            canary.0.to_str().expect("utf-8"),
            secret.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(v["ls"], "ENOENT", "{v}");
    assert_eq!(v["dir"], "ENOENT", "{v}");
    assert_eq!(v["cat"], "ENOENT", "{v}");
    assert_eq!(
        std::fs::read_to_string(&secret).expect("canary"),
        "host secret\n"
    );
}

#[test]
fn host_root_home_is_not_visible() {
    assert!(
        Path::new("/root/.bashrc").exists(),
        "host has no /root/.bashrc: test cannot tell"
    );
    let v = probe(
        &[],
        r#"print(json.dumps({"ls": sorted(os.listdir("/root")), "cat": err(lambda: open("/root/.bashrc").read())}))"#,
        &[],
    );
    assert_eq!(v["ls"], serde_json::json!([]), "{v}");
    assert_eq!(v["cat"], "ENOENT", "{v}");
}

#[test]
fn host_etc_shadow_is_absent() {
    assert!(
        Path::new("/etc/shadow").exists(),
        "host has no /etc/shadow: test cannot tell"
    );
    let v = probe(
        &[],
        r#"print(json.dumps(err(lambda: open("/etc/shadow").read())))"#,
        &[],
    );
    assert_eq!(v, "ENOENT");
}
