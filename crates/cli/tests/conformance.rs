//! One conformance suite for every tier that runs commands: the same checks, through the same
//! `agentbox run` flags, against ns, chroot and each engine tier (oci with runc and with crun,
//! gvisor, nspawn, docker). Each policy field is either enforced (proven from inside the sandbox
//! and from the host) or refused with a typed error naming it: never silently ignored. A tier whose
//! software cannot run here is reported as skipped with the reason (in the test output), never as
//! passed; the tiers whose software `scripts/install-deps.sh` installs must run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::tiers::*;
use common::*;

#[test]
fn exit_codes_pass_through_and_a_missing_command_is_127() {
    each(|row| {
        expect(&with(row, &[], &["sh", "-c", "exit 7"]), 7, "exit 7")?;
        // The signal death of a process that is not the sandbox's first (a first process that
        // is pid 1, as under runc, ignores signals it has no handler for).
        expect(
            &with(row, &[], &["sh", "-c", "sh -c 'kill -TERM $$'"]),
            128 + 15,
            "killed by SIGTERM",
        )?;
        let o = with(row, &[], &["/no/such/command"]);
        expect(&o, 127, "missing command")?;
        // agentbox's own line comes last (gVisor's runsc prints its error first).
        let last = stderr(&o).lines().last().unwrap_or_default().to_string();
        if !last.starts_with("agentbox: ") || !last.contains("/no/such/command") {
            return Err(format!("no agentbox error line: {:?}", stderr(&o)));
        }
        Ok(())
    });
}

#[test]
fn host_processes_and_files_are_out_of_reach() {
    let sentinel = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let pid = sentinel.id().to_string();
    let canary = tempfile::Builder::new()
        .prefix("conformance-canary")
        .tempdir()
        .unwrap();
    std::fs::write(canary.path().join("secret"), "host secret").unwrap();
    let secret = canary.path().join("secret");
    let script = format!(
        "test -e /proc/{pid} && echo SEES_PID; kill -9 {pid} 2>/dev/null && echo KILLED; \
         cat {} 2>/dev/null && echo READ; echo done",
        secret.display()
    );
    each(|row| {
        let o = with(row, &[], &["sh", "-c", &script]);
        let out = stdout(&o);
        if !out.contains("done") {
            return Err(format!("script did not run: {out:?} {:?}", stderr(&o)));
        }
        for leak in ["SEES_PID", "KILLED", "READ", "host secret"] {
            if out.contains(leak) {
                return Err(format!("{leak}: {out:?}"));
            }
        }
        Ok(())
    });
    let mut sentinel = sentinel;
    assert!(
        sentinel.try_wait().unwrap().is_none(),
        "the sentinel was killed"
    );
    let _ = sentinel.kill();
    let _ = sentinel.wait();
}

#[test]
fn the_system_is_read_only_and_the_root_is_ephemeral() {
    each(|row| {
        let o = with(
            row,
            &[],
            &[
                "sh",
                "-c",
                "touch /usr/bin/agentbox-conformance 2>/dev/null && echo WROTE_USR; \
                 echo data > /tmp/f && cat /tmp/f",
            ],
        );
        let out = stdout(&o);
        if out.contains("WROTE_USR") || !out.contains("data") {
            return Err(format!("{out:?} {:?}", stderr(&o)));
        }
        if std::path::Path::new("/usr/bin/agentbox-conformance").exists() {
            let _ = std::fs::remove_file("/usr/bin/agentbox-conformance");
            return Err("a write reached the host's /usr".into());
        }
        Ok(())
    });
}

#[test]
fn no_capabilities_no_new_privileges_and_seccomp_where_claimed() {
    each(|row| {
        if !row.proc {
            eprintln!(
                "{}: no /proc in this tier: posture checked by the eval",
                row.name
            );
            return Ok(());
        }
        let o = with(row, &[], &["cat", "/proc/self/status"]);
        let status = stdout(&o);
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("{key}:"))
                        .map(|v| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        for key in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
            // gVisor's /proc of 2022 has no CapAmb line (and no NoNewPrivs).
            if row.name == "gvisor" && field(key).is_empty() {
                eprintln!("gvisor: no {key} line in its /proc");
                continue;
            }
            if field(key) != "0000000000000000" {
                return Err(format!("{key} = {:?}\n{status}", field(key)));
            }
        }
        if row.name == "gvisor" && field("NoNewPrivs").is_empty() {
            eprintln!(
                "gvisor: no NoNewPrivs line in its /proc (runsc sets it on its own processes)"
            );
        } else if field("NoNewPrivs") != "1" {
            return Err(format!("NoNewPrivs = {:?}", field("NoNewPrivs")));
        }
        if row.seccomp && field("Seccomp") != "2" {
            return Err(format!("Seccomp = {:?}", field("Seccomp")));
        }
        Ok(())
    });
}

#[test]
fn the_wall_clock_limit_ends_the_run_with_124() {
    each(|row| {
        let started = std::time::Instant::now();
        let o = with(row, &["--timeout", "1s"], &["sleep", "30"]);
        expect(&o, 124, "timeout")?;
        if started.elapsed().as_secs() >= 25 {
            return Err("the command was not stopped".into());
        }
        if !pids_running(&["sleep", "30"]).is_empty() {
            return Err("sleep 30 survived".into());
        }
        Ok(())
    });
}

#[test]
fn the_pids_limit_holds() {
    each(|row| {
        if !row.pids {
            return Ok(());
        }
        // Each started process is counted on stdout; the shell dies at the first refused fork.
        let o = with(
            row,
            &["--pids", "16"],
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 64 ]; do sleep 3 & i=$((i+1)); echo $i; done",
            ],
        );
        let out = stdout(&o);
        let started: usize = out
            .lines()
            .last()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        if started == 0 || started >= 64 {
            return Err(format!(
                "64 processes started under pids 16: {out:?} {:?}",
                stderr(&o)
            ));
        }
        Ok(())
    });
}

#[test]
fn the_memory_limit_holds() {
    each(|row| {
        let o = with(
            row,
            &["--memory", "64M"],
            &[
                "python3",
                "-c",
                "b = bytearray(256 << 20); b[::4096] = b'x' * len(b[::4096]); print('ALLOCATED')",
            ],
        );
        if stdout(&o).contains("ALLOCATED") || o.status.success() {
            return Err(format!(
                "256 MiB allocated under 64M: exit {:?} {:?}",
                o.status.code(),
                stderr(&o)
            ));
        }
        Ok(())
    });
}

#[test]
fn fields_an_engine_cannot_enforce_are_refused_by_name() {
    let _guard = serial();
    for tier in ["oci", "gvisor", "nspawn", "docker"] {
        let o = run(&[
            "--tier",
            tier,
            "--net",
            "allow:example.test",
            "--",
            "/bin/true",
        ]);
        assert_eq!(o.status.code(), Some(123), "{tier}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("network.mode"),
            "{tier}: {}",
            stderr(&o)
        );
    }
    // A runtime the oci tier does not know is bad input.
    let o = run(&["--tier", "oci", "--runtime", "nope", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("runtime"), "{}", stderr(&o));
}

#[test]
fn auto_picks_the_strongest_tier_that_enforces_the_policy() {
    let _guard = serial();
    let record = tempfile::NamedTempFile::new().unwrap();
    let path = record.path().to_str().unwrap();
    let o = run(&["--tier", "auto", "--exit-record", path, "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(json["tier"], "gvisor", "{json}");
    // An allowlist only the ns tier enforces: auto falls to ns.
    let o = run(&[
        "--tier",
        "auto",
        "--net",
        "allow:example.test",
        "--exit-record",
        path,
        "--",
        "/bin/true",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(json["tier"], "ns", "{json}");
}

#[test]
fn nothing_is_left_behind() {
    let _guard = serial();
    // A first run of each tier creates the engines' long-lived directories.
    let rows = available();
    let before = host_state();
    for row in &rows {
        let _ = with(row, &[], &["/bin/true"]);
        let _ = with(row, &["--timeout", "1s"], &["sleep", "30"]);
        let _ = with(row, &[], &["/no/such/command"]);
    }
    assert_nothing_left(&before);
    let engines = std::fs::read_dir("/run/agentbox/engines")
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(engines, 0, "engine state left in /run/agentbox/engines");
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| {
            [
                "runc",
                "crun",
                "runsc",
                "runsc-sandbox",
                "runsc-gofer",
                "systemd-nspawn",
            ]
            .contains(&c.as_str())
                || c.starts_with("exe")
        })
        .collect();
    assert!(left.is_empty(), "engine processes left: {left:?}");
}

#[test]
fn user_environment_directory_binds_open_files_and_disk_hold() {
    let shared = tempfile::Builder::new()
        .prefix("conformance-rw")
        .tempdir()
        .unwrap();
    // The sandbox user (uid 1000 inside) writes into the bind as its owner (idmapped).
    std::os::unix::fs::chown(shared.path(), Some(1000), Some(1000)).unwrap();
    let rw = format!("{}:/data", shared.path().display());
    each(|row| {
        let o = with(
            row,
            &[
                "--user",
                "1000",
                "--env",
                "GREETING=hi there",
                "--cwd",
                "/tmp",
                "--rw",
                &rw,
                "--nofile",
                "64",
            ],
            &[
                "sh",
                "-c",
                "echo uid=$(id -u) env=$GREETING cwd=$(pwd) nofile=$(ulimit -n); \
                 echo from-sandbox > /data/out",
            ],
        );
        let out = stdout(&o);
        if row.name == "chroot" {
            // No user namespace: the command runs as the slot's host uid (never 0), which owns
            // nothing of the bind. Only the rest is checked.
            let rest = out.split_once(' ').map(|(_, r)| r).unwrap_or_default();
            if rest != "env=hi there cwd=/tmp nofile=64\n" || out.starts_with("uid=0 ") {
                return Err(format!("{out:?}; stderr {:?}", stderr(&o)));
            }
            eprintln!("chroot: runs as host uid {out:?}");
            return Ok(());
        }
        let want = "uid=1000 env=hi there cwd=/tmp nofile=64\n";
        if out != want {
            return Err(format!("{out:?} != {want:?}; stderr {:?}", stderr(&o)));
        }
        let written = std::fs::read_to_string(shared.path().join("out")).unwrap_or_default();
        if written != "from-sandbox\n" {
            return Err(format!("the bind did not receive the write: {written:?}"));
        }
        std::fs::remove_file(shared.path().join("out")).unwrap();
        // The ephemeral root's writable space is the disk limit.
        let o = with(
            row,
            &["--disk", "16M"],
            &[
                "sh",
                "-c",
                "dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>/dev/null; \
                 echo size=$(($(wc -c < /tmp/fill) / 1048576))",
            ],
        );
        let size: u64 = stdout(&o)
            .trim()
            .strip_prefix("size=")
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        if size > 16 {
            return Err(format!(
                "wrote {size} MiB under --disk 16M: {:?}",
                stderr(&o)
            ));
        }
        Ok(())
    });
}
