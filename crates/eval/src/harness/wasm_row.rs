//! The `wasm` row: the probes that mean something to a WASI module run as small modules written in
//! WAT (no toolchain needed), under `agentbox run --tier wasm`; every other probe is marked not
//! applicable with the reason (a WASI module has no syscall to attempt it with). Never a silent gap.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::model::{Bench, ProbeInfo, ProbeResult, Stats, Verdict};

/// Tries, relative to the first preopen (fd 3), to read `../secret`, to read the planted symlink
/// `link` (which points at the host secret), to read the planted absolute symlink `abs`, and to
/// create `../escape`. Exit code: bit 0, 1, 2, 3 set for each that succeeded.
const FILES_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "../secret")
  (data (i32.const 32) "link")
  (data (i32.const 48) "abs")
  (data (i32.const 64) "../escape")
  (func $try (param $ptr i32) (param $len i32) (param $oflags i32) (param $rights i64) (result i32)
    (i32.eqz (call $open (i32.const 3) (i32.const 1) (local.get $ptr) (local.get $len)
      (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 200))))
  (func (export "_start")
    (local $bits i32)
    (if (call $try (i32.const 16) (i32.const 9) (i32.const 0) (i64.const 2))
      (then (local.set $bits (i32.or (local.get $bits) (i32.const 1)))))
    (if (call $try (i32.const 32) (i32.const 4) (i32.const 0) (i64.const 2))
      (then (local.set $bits (i32.or (local.get $bits) (i32.const 2)))))
    (if (call $try (i32.const 48) (i32.const 3) (i32.const 0) (i64.const 2))
      (then (local.set $bits (i32.or (local.get $bits) (i32.const 4)))))
    (if (call $try (i32.const 64) (i32.const 9) (i32.const 1) (i64.const 64))
      (then (local.set $bits (i32.or (local.get $bits) (i32.const 8)))))
    (call $exit (local.get $bits))))
"#;

/// Grows memory a page (64 KiB) at a time up to 1 GiB: exit 1 if a grow failed first (contained),
/// 0 if the bound was reached.
const MEMORY_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
        (then (call $exit (i32.const 1))))
      (br_if $grow (i32.lt_u (memory.size) (i32.const 16384))))
    (call $exit (i32.const 0))))
"#;

/// Spins forever.
const SPIN_WAT: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;

/// Prints "hello" and exits 0: the start-latency workload.
const HELLO_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 100)))))
"#;

/// Why a probe cannot even be expressed by a WASI module.
fn not_applicable(probe: &str) -> Option<&'static str> {
    Some(match probe {
        "chroot_double" | "chroot_fchdir" => {
            "WASI has no chroot or fchdir: the preopens are the whole file system"
        }
        "leaked_fds" => {
            "a module holds only stdio and its preopens; there is no descriptor to inherit"
        }
        "host_processes" | "ptrace_sentinel" | "process_vm_readv" | "kill_sentinel" => {
            "WASI has no processes, signals or tracing"
        }
        "mknod" | "dev_kmsg" | "dev_mem" | "dev_kvm" => {
            "no device exists outside the preopens, and WASI cannot create one"
        }
        "leak_hostname" => "WASI has no uname",
        "leak_boot_id" => "no /proc: nothing outside the preopens exists",
        "leak_mounts" => "WASI has no mount table",
        "raw_socket" | "packet_socket" => {
            "WASI preview 1 cannot create sockets, and none is granted"
        }
        "fork_bomb" => "WASI has no fork",
        "disk_fill" | "inode_fill" => {
            "the module writes only to the preopened host directories the policy chose"
        }
        "mount_proc" | "mount_sysfs" | "mount_cgroup" | "mount_blockdev" | "release_agent" => {
            "WASI has no mount"
        }
        "core_pattern" | "sysrq_trigger" | "uevent_helper" => {
            "no /proc or /sys exists for a module"
        }
        "module_load" | "userns_nested" | "clone3" | "keyctl" | "bpf" | "userfaultfd"
        | "perf_event_open" | "io_uring_setup" | "open_by_handle_at" | "seccomp_x32" => {
            "a module has no system calls: only the WASI functions wasmtime provides"
        }
        "tiocsti" => "WASI has no ioctl",
        "setuid_nnp" | "capabilities" => "WASI has no users, setuid files or capabilities",
        _ => return None,
    })
}

fn result(probe: &str, verdict: Verdict, attempted: &str, observation: String) -> ProbeResult {
    ProbeResult {
        probe: probe.to_string(),
        verdict,
        attempted: attempted.to_string(),
        errno: None,
        observation,
        layer: (verdict == Verdict::Blocked).then(|| "WASI capabilities".to_string()),
        host_check: None,
    }
}

fn write_module(dir: &Path, name: &str, wat: &str) -> Result<String, String> {
    let bytes = wat::parse_str(wat).map_err(|e| format!("{name}: {e}"))?;
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).map_err(|e| format!("{name}: {e}"))?;
    Ok(path.display().to_string())
}

fn run_module(agentbox: &str, flags: &[&str], module: &str) -> Option<i32> {
    let mut cmd = Command::new(agentbox);
    cmd.args(["run", "--tier", "wasm"])
        .args(flags)
        .arg("--")
        .arg(module)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.status().ok()?.code()
}

/// The probe results of the wasm row. `workdir` holds the planted secret and canary; a preopen
/// directory is made in it, with the two symlinks the file probe follows.
pub fn probe(
    agentbox: &str,
    probes: &[ProbeInfo],
    workdir: &Path,
    secret: &Path,
    canary: &Path,
) -> Result<Vec<ProbeResult>, String> {
    let preopen = workdir.join("preopen");
    std::fs::create_dir_all(&preopen).map_err(|e| e.to_string())?;
    let _ = std::os::unix::fs::symlink("../secret", preopen.join("link"));
    let _ = std::os::unix::fs::symlink(secret, preopen.join("abs"));
    let files = write_module(workdir, "files", FILES_WAT)?;
    let memory = write_module(workdir, "memory", MEMORY_WAT)?;
    let spin = write_module(workdir, "spin", SPIN_WAT)?;
    let ws = preopen.display().to_string();
    let canary_before = std::fs::read(canary).ok();
    let bits = run_module(agentbox, &["--workspace", &ws], &files);
    let canary_intact =
        std::fs::read(canary).ok() == canary_before && !workdir.join("escape").exists();
    let mem = run_module(agentbox, &["--memory", "64M"], &memory);
    let started = Instant::now();
    let spun = run_module(agentbox, &["--timeout", "1s"], &spin);
    let spin_ms = started.elapsed().as_millis();
    let mut out = Vec::new();
    for info in probes {
        let id = info.id.as_str();
        if let Some(reason) = not_applicable(id) {
            out.push(result(id, Verdict::NotApplicable, "", reason.to_string()));
            continue;
        }
        out.push(match (id, bits) {
            ("host_files", Some(b)) if b & 0b111 == 0 => result(id, Verdict::Blocked,
                "path_open of ../secret, of a planted symlink to it (relative and absolute) from the preopen",
                "every path outside the preopen was refused".into()),
            ("host_files", Some(b)) => result(id, Verdict::Escaped, "path_open outside the preopen",
                format!("opened outside the preopen (bits {b:#05b})")),
            ("canary_write", Some(b)) if b & 0b1000 == 0 && canary_intact => result(id, Verdict::Blocked,
                "path_open(../escape, O_CREAT) from the preopen", "creating a file outside the preopen was refused; the canary is unchanged".into()),
            ("canary_write", Some(_)) => result(id, Verdict::Escaped, "path_open(../escape, O_CREAT)",
                "a file outside the preopen was created, or the canary changed".into()),
            ("net_loopback", _) => result(id, Verdict::Blocked, "reach the host's loopback listener",
                "the module has no socket: WASI preview 1 cannot create one and agentbox grants none".into()),
            ("memory_hog", _) => match mem {
                Some(1) => result(id, Verdict::Blocked, "memory.grow up to 1 GiB under --memory 64M",
                    "memory.grow returned -1 at the limit".into()),
                Some(0) => result(id, Verdict::Escaped, "memory.grow up to 1 GiB under --memory 64M",
                    "grew to 1 GiB: not limited".into()),
                other => result(id, Verdict::Inconclusive, "memory.grow", format!("exit {other:?}")),
            },
            ("cpu_hog", _) => match spun {
                Some(124) => result(id, Verdict::Blocked, "spin forever under --timeout 1s",
                    format!("interrupted at the timeout after {spin_ms} ms; a module runs on one thread")),
                other => result(id, Verdict::Inconclusive, "spin forever", format!("exit {other:?}")),
            },
            (_, None) => result(id, Verdict::Inconclusive, "run the file probe module", "the module did not run".into()),
            _ => result(id, Verdict::NotApplicable, "", "no WASI form of this probe yet".into()),
        });
    }
    Ok(out)
}

/// Start latency of a hello-world module (warm: compiled once before), and sandboxes per second.
pub fn bench(agentbox: &str, workdir: &Path, runs: u32, rate_seconds: f64) -> Option<Bench> {
    let hello = write_module(workdir, "hello", HELLO_WAT).ok()?;
    for _ in 0..3 {
        run_module(agentbox, &[], &hello)?;
    }
    let mut samples = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        if run_module(agentbox, &[], &hello)? != 0 {
            return None;
        }
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed().as_secs_f64() < rate_seconds {
        run_module(agentbox, &[], &hello)?;
        n += 1;
    }
    Some(Bench {
        start_true: Stats::of(&samples),
        start_python: None,
        exec: None,
        peak_memory_kib: None,
        syscall_slowdown: None,
        start_rate_per_s: Some(f64::from(n) / t.elapsed().as_secs_f64()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_modules_are_valid_wat() {
        for wat in [FILES_WAT, MEMORY_WAT, SPIN_WAT, HELLO_WAT] {
            wat::parse_str(wat).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn every_probe_has_a_wasi_form_or_a_reason() {
        for id in [
            "host_files",
            "canary_write",
            "net_loopback",
            "memory_hog",
            "cpu_hog",
        ] {
            assert!(not_applicable(id).is_none(), "{id}");
        }
        assert!(not_applicable("bpf").is_some());
        assert!(not_applicable("kill_sentinel").is_some());
    }
}
