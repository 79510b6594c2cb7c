//! Escape suite, process side: from inside a real `ns` sandbox, probes call the kernel directly
//! (python3 + ctypes) and report exact errnos; where the host can tell, the verdict is checked on
//! the host too (namespace ids, the sandboxed process's fds and cgroup, a sentinel process).
//! Every assertion here fails if the protection it names is missing. File-system side: `denials_fs.rs`.
#![cfg(target_arch = "x86_64")]
// Helpers outside #[test] fns (here and in `common`) are test code too: a failed expect is a
// failed test.
#![allow(clippy::expect_used)]

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Calls each syscall named in argv with arguments that the kernel itself would answer with
/// something other than EPERM (EFAULT, EINVAL, EBADF, ENOSYS, success...), and prints
/// `{name: "OK" | errno name}` as JSON. x86_64 syscall numbers. Calls that would change the
/// caller (namespaces, tracing) run in a forked child.
const SYSCALL_PROBE: &str = r#"
import ctypes, errno, json, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER = 0x10000000
PTRACE_TRACEME, PTRACE_ATTACH, TIOCSTI = 0, 16, 0x5412

def call(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "OK" if r != -1 else errno.errorcode[ctypes.get_errno()]

def in_child(f):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, f().encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    return os.read(r, 64).decode()

def clone_newuser():
    r = libc.syscall(ctypes.c_long(56), ctypes.c_long(CLONE_NEWUSER | signal.SIGCHLD), *[ctypes.c_long(0)] * 4)
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
        return "OK"
    return errno.errorcode[ctypes.get_errno()]

def attach_to_own_child():
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    try:
        return call(101, PTRACE_ATTACH, pid, 0, 0)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

def tiocsti():
    c = ctypes.c_char(b"x")
    return call(16, 0, TIOCSTI, ctypes.addressof(c))

PROBES = {
    "keyctl": lambda: call(250, 9999),
    "add_key": lambda: call(248, 0, 0, 0, 0, 0),
    "request_key": lambda: call(249, 0, 0, 0, 0),
    "bpf": lambda: call(321, 0, 0, 0x10000),
    "perf_event_open": lambda: call(298, 0, 0, -1, -1, 0xffff),
    "userfaultfd": lambda: call(323, 1 | 4),
    "io_uring_setup": lambda: call(425, 1, 0),
    "kexec_load": lambda: call(246, 0, 0, 0, 0),
    "init_module": lambda: call(175, 0, 0, 0),
    "finit_module": lambda: call(313, -1, 0, 0),
    "mount": lambda: call(165, 0, 0, 0, 0, 0),
    "umount2": lambda: call(166, 0, 0),
    "fsopen": lambda: call(430, 0, 0xffff),
    "open_tree": lambda: call(428, -1, 0, 0xffffff),
    "move_mount": lambda: call(429, -1, 0, -1, 0, 0xffffff),
    "pivot_root": lambda: call(155, 0, 0),
    "ptrace_traceme": lambda: in_child(lambda: call(101, PTRACE_TRACEME, 0, 0, 0)),
    "ptrace_attach_pid1": lambda: call(101, PTRACE_ATTACH, 1, 0, 0),
    "ptrace_attach_own_child": attach_to_own_child,
    "process_vm_readv": lambda: call(310, os.getpid(), 0, 1, 0, 1, 0),
    "open_by_handle_at": lambda: call(304, -1, 0, 0),
    "setns": lambda: call(308, -1, 0),
    "unshare_newuser": lambda: in_child(lambda: call(272, CLONE_NEWUSER)),
    "clone_newuser": clone_newuser,
    "clone3": lambda: call(435, 0, 0),
    "ioctl_tiocsti": tiocsti,
}
print(json.dumps({name: PROBES[name]() for name in sys.argv[1:]}))
"#;

/// Probes the kernel answers with EPERM by itself for an unprivileged caller (capability checks
/// come first): inside they prove the combined denial, but not seccomp alone.
const KERNEL_EPERM_PROBES: &[&str] = &["fsopen", "move_mount", "pivot_root", "ptrace_attach_pid1"];

fn probe_names() -> Vec<String> {
    let start = SYSCALL_PROBE.find("PROBES = {").expect("PROBES table");
    SYSCALL_PROBE[start..]
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix('"')?
                .split_once('"')
                .map(|(n, _)| n.to_string())
        })
        .collect()
}

fn parse_verdicts(out: &str) -> BTreeMap<String, String> {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("probe output {out:?}: {e}"))
}

/// The errno (or "OK") the sandbox's kernel view gives for one probe.
fn verdict_inside(probe: &str) -> String {
    let out = ok(run(&["--", "python3", "-c", SYSCALL_PROBE, probe]));
    parse_verdicts(&out).remove(probe).expect("verdict")
}

#[test]
fn probes_reach_the_kernel_when_not_filtered() {
    // Control: on the host, unprivileged (uid 65534, no capabilities, no seccomp), each probe
    // gets the kernel's own answer, so an EPERM inside is the sandbox's verdict, not the probe's.
    let names = probe_names();
    assert!(names.len() >= 25, "probe table parsed: {names:?}");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .args([
            "--bounding-set=-all",
            "--no-new-privs",
            "/usr/bin/python3",
            "-c",
            SYSCALL_PROBE,
        ])
        .args(&names)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("spawn setpriv");
    let verdicts = parse_verdicts(&ok(out));
    for name in names
        .iter()
        .filter(|n| !KERNEL_EPERM_PROBES.contains(&n.as_str()))
    {
        assert_ne!(
            verdicts[name], "EPERM",
            "{name} is refused even without seccomp: {verdicts:?}"
        );
    }
    assert_eq!(verdicts["clone3"], "EINVAL", "{verdicts:?}");
    assert_eq!(verdicts["ioctl_tiocsti"], "ENOTTY", "{verdicts:?}");
}

macro_rules! denied {
    ($($test:ident: $probe:literal => $errno:literal;)*) => {$(
        #[test]
        fn $test() {
            assert_eq!(verdict_inside($probe), $errno, "probe {}", $probe);
        }
    )*};
}

denied! {
    keyctl_is_denied_with_eperm: "keyctl" => "EPERM";
    add_key_is_denied_with_eperm: "add_key" => "EPERM";
    request_key_is_denied_with_eperm: "request_key" => "EPERM";
    bpf_is_denied_with_eperm: "bpf" => "EPERM";
    perf_event_open_is_denied_with_eperm: "perf_event_open" => "EPERM";
    userfaultfd_is_denied_with_eperm: "userfaultfd" => "EPERM";
    io_uring_setup_is_denied_with_eperm: "io_uring_setup" => "EPERM";
    kexec_load_is_denied_with_eperm: "kexec_load" => "EPERM";
    init_module_is_denied_with_eperm: "init_module" => "EPERM";
    finit_module_is_denied_with_eperm: "finit_module" => "EPERM";
    mount_is_denied_with_eperm: "mount" => "EPERM";
    umount2_is_denied_with_eperm: "umount2" => "EPERM";
    fsopen_is_denied_with_eperm: "fsopen" => "EPERM";
    open_tree_is_denied_with_eperm: "open_tree" => "EPERM";
    move_mount_is_denied_with_eperm: "move_mount" => "EPERM";
    pivot_root_is_denied_with_eperm: "pivot_root" => "EPERM";
    ptrace_traceme_is_denied_with_eperm: "ptrace_traceme" => "EPERM";
    ptrace_attach_to_pid1_is_denied_with_eperm: "ptrace_attach_pid1" => "EPERM";
    ptrace_attach_to_own_child_is_denied_with_eperm: "ptrace_attach_own_child" => "EPERM";
    process_vm_readv_is_denied_with_eperm: "process_vm_readv" => "EPERM";
    open_by_handle_at_is_denied_with_eperm: "open_by_handle_at" => "EPERM";
    setns_is_denied_with_eperm: "setns" => "EPERM";
    unshare_of_a_user_namespace_is_denied_with_eperm: "unshare_newuser" => "EPERM";
    clone_of_a_user_namespace_is_denied_with_eperm: "clone_newuser" => "EPERM";
    clone3_is_denied_with_enosys: "clone3" => "ENOSYS";
    ioctl_tiocsti_is_denied_with_eperm_not_enotty: "ioctl_tiocsti" => "EPERM";
}

const ORDINARY_PROCESSES: &str = r#"
import os, subprocess, threading
results = []
threads = [threading.Thread(target=lambda i=i: results.append(i * i)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print("threads", sum(results))
print("subprocess", subprocess.run(["echo", "hi"], capture_output=True, text=True, check=True).stdout.strip())
pid = os.fork()
if pid == 0:
    os._exit(7)
print("fork", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#;

#[test]
fn python_threads_subprocess_and_fork_still_work() {
    let out = ok(python(&[], ORDINARY_PROCESSES));
    assert_eq!(out, "threads 140\nsubprocess hi\nfork 7\n");
}

const LOOPBACK_ECHO: &str = r#"
import socket
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind(("127.0.0.1", 0))
server.listen(1)
client = socket.create_connection(server.getsockname(), timeout=5)
conn, _ = server.accept()
client.sendall(b"ping")
print(conn.recv(4).decode())
"#;

#[test]
fn loopback_tcp_connect_to_itself_works() {
    assert_eq!(ok(python(&[], LOOPBACK_ECHO)), "ping\n");
}

#[test]
fn shell_pipelines_still_work() {
    let out = ok(sh(
        &[],
        "echo c a b | tr ' ' '\\n' | sort | tail -n 1 | wc -c",
    ));
    assert_eq!(out.trim(), "2");
}

/// The `Name:\tvalue` lines of a /proc/<pid>/status.
fn status_fields(status: &str) -> BTreeMap<String, String> {
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn assert_unprivileged(status: &str) {
    let f = status_fields(status);
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(f[cap], "0000000000000000", "{cap} in:\n{status}");
    }
    assert_eq!(f["NoNewPrivs"], "1", "{status}");
    assert_eq!(f["Seccomp"], "2", "{status}");
}

#[test]
fn every_capability_is_dropped_with_no_new_privs_and_seccomp_filter() {
    let status = ok(run(&["--", "cat", "/proc/self/status"]));
    assert_eq!(status_fields(&status)["Uid"], "0\t0\t0\t0", "{status}");
    assert_unprivileged(&status);
}

#[test]
fn user_1000_runs_as_uid_1000_with_every_capability_dropped() {
    let status = ok(run(&["--user", "1000", "--", "cat", "/proc/self/status"]));
    let f = status_fields(&status);
    assert_eq!(f["Uid"], "1000\t1000\t1000\t1000", "{status}");
    assert_eq!(f["Gid"], "1000\t1000\t1000\t1000", "{status}");
    assert_unprivileged(&status);
}

const NAMESPACES: &[&str] = &["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"];

#[test]
fn every_namespace_differs_from_the_host() {
    let script: String = NAMESPACES
        .iter()
        .map(|ns| format!("readlink /proc/self/ns/{ns}; "))
        .collect();
    let inside = ok(sh(&[], &script));
    let inside: Vec<&str> = inside.lines().collect();
    assert_eq!(inside.len(), NAMESPACES.len(), "{inside:?}");
    for (ns, link) in NAMESPACES.iter().zip(inside) {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("host ns link");
        assert!(link.starts_with(&format!("{ns}:[")), "{ns}: {link}");
        assert_ne!(link, host.to_string_lossy(), "{ns} namespace is the host's");
    }
}

#[test]
fn hostname_is_agentbox_in_its_own_uts_namespace() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host hostname");
    assert_ne!(
        host.trim(),
        "agentbox",
        "the host itself is called agentbox: test cannot tell"
    );
    assert_eq!(ok(run(&["--", "hostname"])), "agentbox\n");
}

fn interfaces(net_dev: &str) -> Vec<String> {
    net_dev
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split_once(':')?.0.trim().to_string()))
        .collect()
}

#[test]
fn network_namespace_has_only_loopback() {
    let inside = ok(run(&["--", "cat", "/proc/net/dev"]));
    assert_eq!(interfaces(&inside), ["lo"], "{inside}");
    let host = std::fs::read_to_string("/proc/net/dev").expect("host /proc/net/dev");
    assert!(
        interfaces(&host).len() > 1,
        "host has only lo: test cannot tell\n{host}"
    );
}

/// A sandbox kept alive on `sleep MARKER` so that the host can inspect its process. It is started
/// by bash with fd 7 open without close-on-exec, to be leaked if agentbox let it through.
struct Sleeper {
    agentbox: Child,
    /// Host pid of the sandboxed `sleep`.
    pid: u32,
    /// What the script printed before it started sleeping.
    printed: String,
}

impl Sleeper {
    fn start(script: &str) -> Sleeper {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let marker = format!(
            "300.{}{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let script = format!("{script}; echo READY; exec sleep {marker}");
        let mut agentbox = Command::new("bash")
            .args([
                "-c",
                r#"exec 7</etc/hostname; exec "$0" run --timeout 60s -- sh -c "$1""#,
                BIN,
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn bash");
        let mut lines = BufReader::new(agentbox.stdout.take().expect("stdout"));
        let mut printed = String::new();
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).expect("read sandbox stdout") == 0 {
                let _ = agentbox.kill();
                panic!("sandbox ended before READY; printed: {printed}");
            }
            if line == "READY\n" {
                break;
            }
            printed.push_str(&line);
        }
        let wanted = format!("sleep\0{marker}\0");
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let found = std::fs::read_dir("/proc")
                .expect("/proc")
                .filter_map(|e| e.ok())
                .find_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    (std::fs::read(e.path().join("cmdline")).ok()? == wanted.as_bytes())
                        .then_some(pid)
                });
            if let Some(pid) = found {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "sandboxed sleep {marker} not found on the host"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Sleeper {
            agentbox,
            pid,
            printed,
        }
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.agentbox.wait();
    }
}

fn numeric_entries(dir: &str) -> Vec<u32> {
    let mut fds: Vec<u32> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort();
    fds
}

#[test]
fn inherited_host_fds_do_not_reach_the_command() {
    // Control: the same bash line leaks fd 7 into a command it execs directly.
    let leak = r#"exec 7</etc/hostname; exec "$@""#;
    let direct = Command::new("bash")
        .args(["-c", leak, "bash", "ls", "/proc/self/fd"])
        .output()
        .expect("bash");
    assert!(
        ok(direct).lines().any(|l| l == "7"),
        "control: fd 7 is not inherited"
    );
    let sandboxed = Command::new("bash")
        .args(["-c", leak, "bash", BIN, "run", "--", "ls", "/proc/self/fd"])
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    // 3 is the directory handle ls itself opens to list /proc/self/fd.
    assert_eq!(ok(sandboxed), "0\n1\n2\n3\n");
}

#[test]
fn sandboxed_process_seen_from_the_host_holds_only_fds_0_1_2() {
    let sleeper = Sleeper::start("true");
    // Right after the exec, the dynamic loader of `sleep` briefly holds its libraries open (fd 3):
    // give it time to finish before looking.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        numeric_entries(&format!("/proc/{}/fd", sleeper.pid)),
        [0, 1, 2]
    );
}

#[test]
fn cgroup_namespace_roots_the_sandbox_at_its_own_cgroup() {
    let sleeper = Sleeper::start("cat /proc/self/cgroup");
    let inside = &sleeper.printed;
    assert!(
        inside.lines().any(|l| l.starts_with("0::")),
        "no cgroup v2 line: {inside}"
    );
    for line in inside.lines() {
        assert!(line.ends_with(":/"), "cgroup path visible inside: {line}");
    }
    let host = std::fs::read_to_string(format!("/proc/{}/cgroup", sleeper.pid)).expect("host view");
    assert!(
        host.lines().any(|l| !l.ends_with(":/")),
        "sandbox sits in the host's root cgroups:\n{host}"
    );
}

const HOST_PID_PROBE: &str = r#"
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
pid = int(sys.argv[1])
def err(f):
    try:
        f()
        return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]
def ptrace_attach():
    if libc.syscall(ctypes.c_long(101), ctypes.c_long(16), ctypes.c_long(pid), ctypes.c_long(0), ctypes.c_long(0)) == -1:
        raise OSError(ctypes.get_errno(), "ptrace")
print(json.dumps({
    "kill": err(lambda: os.kill(pid, 9)),
    "pidfd_open": err(lambda: os.pidfd_open(pid)),
    "ptrace_attach": err(ptrace_attach),
    "proc_entry": os.path.lexists(f"/proc/{pid}"),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
}))
"#;

#[test]
fn host_processes_are_invisible_and_a_host_sentinel_survives() {
    let mut sentinel = Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("spawn sentinel");
    let pid = sentinel.id().to_string();
    let out = run(&["--", "python3", "-c", HOST_PID_PROBE, &pid]);
    let alive = sentinel.try_wait().expect("try_wait").is_none();
    let _ = sentinel.kill();
    let _ = sentinel.wait();
    let v: serde_json::Value = serde_json::from_str(&ok(out)).expect("probe JSON");
    assert!(alive, "the sandbox killed a host process");
    assert_eq!(v["kill"], "ESRCH", "{v}");
    assert_eq!(v["pidfd_open"], "ESRCH", "{v}");
    assert_eq!(v["ptrace_attach"], "EPERM", "{v}");
    assert_eq!(v["proc_entry"], false, "{v}");
    let pids = v["pids"].as_array().expect("pids");
    assert!(
        pids.len() <= 4,
        "more than the sandbox's own processes in /proc: {v}"
    );
    let host_pids = numeric_entries("/proc").len();
    assert!(
        host_pids > 10,
        "host has only {host_pids} processes: test cannot tell"
    );
}
