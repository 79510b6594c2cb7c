//! Real runs of runc, crun and runsc (as root, no mocks), serially: this harness re-executes
//! itself in a private mount namespace (as agentbox's runtime runs every engine), prepares it for
//! crun, then runs every case on every runtime and checks that nothing is left after each.
//! runc must work here; crun and runsc are reported (and fail the run) when present and broken,
//! and reported as unavailable, loudly, when absent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentbox_oci::runtimes::probe_platforms;
use agentbox_oci::{Bind, EngineError, ExecProcess, Limits, Runtime, Sandbox, Tmpfs};

const IN_NS: &str = "AGENTBOX_OCI_TEST_PRIVATE_NS";

type Check = Result<(), String>;

struct Env {
    root: tempfile::TempDir,
    out: PathBuf,
    sandbox: Sandbox,
}

fn env(runtime: &Runtime, n: u32, argv: &[&str]) -> Env {
    let dir = tempfile::Builder::new()
        .prefix("agentbox-oci-test")
        .tempdir()
        .unwrap();
    let root = dir.path().join("root");
    let out = dir.path().join("out");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = 1_000_000_000 + n * 65536;
    std::os::unix::fs::chown(&out, Some(host), Some(host)).unwrap();
    // A file that is there but not executable.
    std::fs::write(root.join("notexec"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("notexec"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut binds = vec![Bind {
        source: "/usr".into(),
        target: "/usr".into(),
        writable: false,
    }];
    for f in ["/etc/ld.so.cache", "/etc/passwd", "/etc/group"] {
        if Path::new(f).exists() {
            binds.push(Bind {
                source: f.into(),
                target: f.into(),
                writable: false,
            });
        }
    }
    binds.push(Bind {
        source: out.clone(),
        target: "/out".into(),
        writable: true,
    });
    let id = format!(
        "agentbox-{:012x}",
        (std::process::id() as u64) << 16 | u64::from(n)
    );
    let sandbox = Sandbox {
        id,
        rootfs: root,
        image: None,
        symlinks: ["bin", "sbin", "lib", "lib64"]
            .iter()
            .filter(|d| Path::new("/").join(d).is_symlink())
            .map(|d| (Path::new("/").join(d), PathBuf::from(format!("usr/{d}"))))
            .collect(),
        binds,
        tmpfs: vec![Tmpfs {
            target: "/tmp".into(),
            size: 16 << 20,
            mode: 0o1777,
        }],
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![
            (
                "PATH".into(),
                "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
            ),
            ("HOME".into(), "/tmp".into()),
        ],
        cwd: "/".into(),
        uid: 0,
        uid_range: Some((host, 65536)),
        hostname: "agentbox".into(),
        limits: Limits {
            memory: Some(256 << 20),
            cpus_milli: Some(1000),
            pids: Some(64),
            nofile: Some(1024),
            disk: None,
            timeout: Some(Duration::from_secs(60)),
        },
        seccomp: agentbox_seccomp::parse_allowlist(agentbox_seccomp::DEFAULT_ALLOWLIST).unwrap(),
        state_dir: state,
        oci_runtime: None,
    };
    let _ = runtime;
    Env {
        root: dir,
        out,
        sandbox,
    }
}

/// Nothing of container `id` is left: no state, no cgroup, no process naming it.
fn nothing_left(id: &str, runtime: &Runtime) -> Check {
    let state = agentbox_oci::run::runtime_root(runtime).join(id);
    if state.exists() {
        return Err(format!("runtime state left: {}", state.display()));
    }
    let cgroups = agentbox_oci::cgroups::container_cgroups(id);
    if !cgroups.is_empty() {
        return Err(format!("cgroups left: {cgroups:?}"));
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(id) {
            return Err(format!("process left: {}", entry.path().display()));
        }
    }
    Ok(())
}

fn sh(script: &str) -> Vec<&str> {
    vec!["/bin/sh", "-c", script]
}

fn run_ok(e: &Env, rt: &Runtime) -> Result<agentbox_oci::Outcome, String> {
    let r = agentbox_oci::run(&e.sandbox, rt).map_err(|e| format!("run: {e}"));
    nothing_left(&e.sandbox.id, rt)?;
    r
}

fn read_out(e: &Env, name: &str) -> Result<String, String> {
    std::fs::read_to_string(e.out.join(name)).map_err(|err| format!("/out/{name}: {err}"))
}

fn true_exits_0(rt: &Runtime, n: u32) -> Check {
    let e = env(rt, n, &["/bin/true"]);
    let start = Instant::now();
    let o = run_ok(&e, rt)?;
    println!(
        "    timing: {} /bin/true took {:?}",
        rt.name(),
        start.elapsed()
    );
    (o.code == Some(0) && !o.timed_out)
        .then_some(())
        .ok_or(format!("{o:?}"))
}

fn exit_7(rt: &Runtime, n: u32) -> Check {
    let e = env(rt, n, &sh("exit 7"));
    let o = run_ok(&e, rt)?;
    (o.code == Some(7)).then_some(()).ok_or(format!("{o:?}"))
}

fn missing_command(rt: &Runtime, n: u32) -> Check {
    let e = env(rt, n, &["no-such-command-xyz"]);
    let r = agentbox_oci::run(&e.sandbox, rt);
    nothing_left(&e.sandbox.id, rt)?;
    match r {
        Err(EngineError::Command {
            not_found: true,
            message,
        }) => {
            println!("    message: {message}");
            Ok(())
        }
        other => Err(format!(
            "expected Command{{not_found: true}}, got {other:?}"
        )),
    }
}

fn not_executable(rt: &Runtime, n: u32) -> Check {
    let e = env(rt, n, &["/notexec"]);
    let r = agentbox_oci::run(&e.sandbox, rt);
    nothing_left(&e.sandbox.id, rt)?;
    match r {
        Err(EngineError::Command {
            not_found: false,
            message,
        }) => {
            println!("    message: {message}");
            Ok(())
        }
        other => Err(format!(
            "expected Command{{not_found: false}}, got {other:?}"
        )),
    }
}

fn timeout_kills(rt: &Runtime, n: u32) -> Check {
    let mut e = env(rt, n, &["/bin/sleep", "30"]);
    e.sandbox.limits.timeout = Some(Duration::from_secs(1));
    let start = Instant::now();
    let o = run_ok(&e, rt)?;
    let took = start.elapsed();
    if !o.timed_out || took > Duration::from_secs(15) {
        return Err(format!("{o:?} after {took:?}"));
    }
    Ok(())
}

fn status_confinement(rt: &Runtime, n: u32) -> Check {
    let e = env(
        rt,
        n,
        &sh("cat /proc/self/status > /out/status; cat /proc/self/uid_map > /out/uid_map"),
    );
    let o = run_ok(&e, rt)?;
    if o.code != Some(0) {
        return Err(format!("{o:?}"));
    }
    let status = read_out(&e, "status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
        if !field(cap).trim_start_matches('0').is_empty() {
            problems.push(format!("{cap} {}", field(cap)));
        }
    }
    let gvisor = matches!(rt, Runtime::Runsc { .. });
    if field("NoNewPrivs") != "1" && !(gvisor && field("NoNewPrivs").is_empty()) {
        problems.push(format!("NoNewPrivs {}", field("NoNewPrivs")));
    }
    if field("Seccomp") != "2" {
        let msg = format!("Seccomp {:?}", field("Seccomp"));
        if gvisor {
            println!("    note: gVisor reports {msg} (the sentry applies the OCI filter itself)");
        } else {
            problems.push(msg);
        }
    }
    let uid_map = read_out(&e, "uid_map")?;
    let first: Vec<&str> = uid_map.split_whitespace().collect();
    if first.get(1) == Some(&"0") && !gvisor {
        problems.push(format!("uid map maps host root: {uid_map}"));
    }
    println!("    uid_map: {}", uid_map.trim());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn pids_limit(rt: &Runtime, n: u32) -> Check {
    let mut e = env(
        rt,
        n,
        &sh("(for i in $(seq 100); do sleep 5 & done) 2>/dev/null; \
             set -- /proc/[0-9]*; echo $# > /out/n; exit 0"),
    );
    e.sandbox.limits.pids = Some(20);
    let gvisor = matches!(rt, Runtime::Runsc { .. });
    let o = run_ok(&e, rt)?;
    let written = read_out(&e, "n");
    if gvisor && written.is_err() {
        // On the ptrace platform every task of the sandbox is a host process: at the limit the
        // sentry itself cannot make one and the whole sandbox ends. The limit held.
        println!("    gVisor's sandbox ended at the pids limit ({o:?})");
        return Ok(());
    }
    let count: u32 = written?.trim().parse().map_err(|x| format!("{x}"))?;
    println!("    processes seen with pids=20: {count} ({o:?})");
    let bound = if gvisor {
        20 + agentbox_oci::bundle::GVISOR_PIDS_OVERHEAD as u32
    } else {
        20
    };
    if count > bound || (gvisor && count >= 101) {
        return Err(format!("{count} processes with a limit of 20"));
    }
    Ok(())
}

fn memory_limit(rt: &Runtime, n: u32) -> Check {
    let mut e = env(
        rt,
        n,
        &sh("head -c 300000000 /dev/zero | tail > /dev/null; echo $? > /out/rc"),
    );
    e.sandbox.limits.memory = Some(64 << 20);
    let o = run_ok(&e, rt)?;
    let rc = read_out(&e, "rc").unwrap_or_default();
    println!("    outcome {o:?}, tail status {}", rc.trim());
    // The allocation must not succeed: tail killed (status 137) or the container OOM-killed.
    if rc.trim() == "0" {
        return Err("300 MB allocated under a 64 MiB limit".into());
    }
    Ok(())
}

fn hidden_processes(rt: &Runtime, n: u32) -> Check {
    let e = env(
        rt,
        n,
        // A glob, not `ls`: Debian's runsc (2022) answers coreutils' statx with EINVAL, and a
        // failed `ls` counted no process at all.
        &sh(
            "n=0; for p in /proc/[0-9]*; do [ -d \"$p\" ] && n=$((n+1)); done; \
             echo $n > /out/n; echo seen $n >&2",
        ),
    );
    run_ok(&e, rt)?;
    let count: u32 = read_out(&e, "n")?
        .trim()
        .parse()
        .map_err(|x| format!("{x}"))?;
    // At least the shell itself: none seen means /proc could not be listed.
    if count == 0 || count > 4 {
        return Err(format!("{count} processes visible"));
    }
    Ok(())
}

fn root_writable_host_untouched(rt: &Runtime, n: u32) -> Check {
    let e = env(
        rt,
        n,
        &sh(
            "echo x > /newfile && echo ok > /out/root; \
             if echo y > /usr/agentbox-oci-probe 2>/dev/null; then echo bad > /out/usr; fi; exit 0",
        ),
    );
    let o = run_ok(&e, rt)?;
    if read_out(&e, "root").map(|s| s.trim().to_string()) != Ok("ok".into()) {
        return Err(format!("root not writable ({o:?})"));
    }
    if e.out.join("usr").exists() || Path::new("/usr/agentbox-oci-probe").exists() {
        let _ = std::fs::remove_file("/usr/agentbox-oci-probe");
        return Err("wrote into the host's /usr".into());
    }
    if !e.sandbox.rootfs.join("newfile").exists() && !matches!(rt, Runtime::Runsc { .. }) {
        return Err("the write did not land in the sandbox's root".into());
    }
    Ok(())
}

fn persistent(rt: &Runtime, n: u32) -> Check {
    let e = env(rt, n, &["/bin/sleep", "1000000"]);
    let id = e.sandbox.id.clone();
    let result = (|| -> Check {
        agentbox_oci::create(&e.sandbox, rt).map_err(|x| format!("create: {x}"))?;
        if !agentbox_oci::state(&id, rt).map_err(|x| x.to_string())? {
            return Err("not running after create".into());
        }
        let exec = |script: &str| {
            let p = ExecProcess {
                argv: sh(script).iter().map(|s| s.to_string()).collect(),
                env: e.sandbox.env.clone(),
                cwd: "/".into(),
                uid: 0,
            };
            agentbox_oci::exec_command(&id, rt, &p)
                .status()
                .map_err(|x| x.to_string())
        };
        let s = exec("echo shared > /tmp/f")?;
        let s2 = exec("cat /tmp/f > /out/r; grep -E 'NoNewPrivs|Seccomp|CapEff' /proc/self/status > /out/st; exit 3")?;
        if !s.success() || s2.code() != Some(3) {
            return Err(format!("exec statuses {s} {s2}"));
        }
        let r = read_out(&e, "r")?;
        if r.trim() != "shared" {
            return Err(format!("second exec read {r:?}"));
        }
        println!(
            "    exec'd process: {}",
            read_out(&e, "st")?.replace('\n', " ")
        );
        Ok(())
    })();
    let destroyed = agentbox_oci::destroy(&id, rt).map_err(|x| format!("destroy: {x}"));
    let state = agentbox_oci::state(&id, rt).unwrap_or(true);
    result?;
    destroyed?;
    if state {
        return Err("still running after destroy".into());
    }
    nothing_left(&id, rt)
}

type Case = (&'static str, fn(&Runtime, u32) -> Check);

const CASES: &[Case] = &[
    ("true_exits_0", true_exits_0),
    ("exit_7", exit_7),
    ("missing_command_is_not_found", missing_command),
    ("not_executable_is_not_not_found", not_executable),
    ("timeout_kills_and_leaves_nothing", timeout_kills),
    (
        "status_shows_no_caps_nnp_seccomp_userns",
        status_confinement,
    ),
    ("pids_limit_holds", pids_limit),
    ("memory_limit_holds", memory_limit),
    ("host_processes_hidden", hidden_processes),
    ("root_writable_host_untouched", root_writable_host_untouched),
    ("persistent_create_exec_destroy", persistent),
];

fn main() {
    if std::env::var_os(IN_NS).is_none() {
        // Re-run in a private mount namespace, as agentbox's runtime runs every engine.
        let exe = std::env::current_exe().unwrap();
        let status = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(IN_NS, "1")
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut runtimes = vec![Runtime::Runc, Runtime::Crun];
    match probe_platforms() {
        Ok((platform, tried)) => {
            println!("runsc platforms: {}", tried.join("; "));
            runtimes.push(Runtime::Runsc { platform });
        }
        Err(e) => println!("RUNSC UNAVAILABLE: {e}"),
    }
    match agentbox_oci::prepare_mount_namespace(&Runtime::Crun) {
        Ok(notes) => notes.iter().for_each(|n| println!("crun: {n}")),
        Err(e) => println!("crun: prepare_mount_namespace: {e}"),
    }
    let mut failed = Vec::new();
    let mut n = 0;
    for rt in &runtimes {
        let a = agentbox_oci::probe(rt);
        println!("== {} {:?} notes {:?}", rt.name(), a.found, a.notes);
        if !a.available {
            println!("   {} UNAVAILABLE: {:?}", rt.name(), a.reason);
            if *rt == Runtime::Runc {
                failed.push("runc unavailable".to_string());
            }
            continue;
        }
        for (name, case) in CASES {
            let full = format!("{}::{name}", rt.name());
            if !filter.is_empty() && !filter.iter().any(|f| full.contains(f.as_str())) {
                continue;
            }
            n += 1;
            let start = Instant::now();
            let result = case(rt, n);
            match &result {
                Ok(()) => println!("test {full} ... ok ({:?})", start.elapsed()),
                Err(why) => {
                    println!("test {full} ... FAILED: {why}");
                    failed.push(full);
                }
            }
        }
    }
    if failed.is_empty() {
        println!("all passed");
    } else {
        println!("FAILED: {failed:?}");
        std::process::exit(1);
    }
}

#[allow(dead_code)]
fn keep(e: &Env) -> &Path {
    e.root.path()
}
