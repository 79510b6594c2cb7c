//! The docker tier against a real daemon started for this test binary (no mocks): image import,
//! exit codes, a missing command, the timeout, what a process sees from inside (capabilities,
//! no-new-privileges, seccomp, a read-only root, loopback only, pids and memory limits), the
//! persistent create/exec/destroy primitives, and that nothing is left behind: no container, no
//! daemon process, no mount.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/dockerd.rs"]
mod dockerd;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentbox_docker::{Engine, ExecProcess};
use agentbox_oci::desc::ImageRef;
use agentbox_oci::{Bind, EngineError, Limits, Outcome, Sandbox};
use dockerd::Dockerd;

fn host_sandbox(id: &str, argv: &[&str]) -> Sandbox {
    let link = |p: &str, t: &str| (PathBuf::from(p), PathBuf::from(t));
    Sandbox {
        id: id.into(),
        rootfs: PathBuf::from("/nonexistent"),
        image: None,
        symlinks: vec![
            link("/bin", "usr/bin"),
            link("/lib", "usr/lib"),
            link("/lib64", "usr/lib64"),
            link("/sbin", "usr/sbin"),
        ],
        binds: vec![Bind {
            source: PathBuf::from("/usr"),
            target: PathBuf::from("/usr"),
            writable: false,
        }],
        tmpfs: Vec::new(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: PathBuf::from("/tmp"),
        uid: 0,
        uid_range: None,
        hostname: "agentbox".into(),
        limits: Limits {
            memory: Some(256 << 20),
            cpus_milli: Some(1000),
            pids: Some(64),
            nofile: Some(256),
            disk: Some(16 << 20),
            timeout: Some(Duration::from_secs(60)),
        },
        seccomp: agentbox_seccomp::default_allowlist().unwrap(),
        state_dir: PathBuf::from("/nonexistent"),
        oci_runtime: None,
    }
}

/// Output captured in files.
struct Captured {
    dir: tempfile::TempDir,
}

impl Captured {
    fn new() -> Captured {
        Captured {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn fds(&self, stdin: &[u8]) -> (OwnedFd, OwnedFd, OwnedFd) {
        std::fs::write(self.dir.path().join("in"), stdin).unwrap();
        let open = |name: &str| OwnedFd::from(File::create(self.dir.path().join(name)).unwrap());
        (
            OwnedFd::from(File::open(self.dir.path().join("in")).unwrap()),
            open("out"),
            open("err"),
        )
    }
    fn out(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out")).unwrap()
    }
    fn err(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("err")).unwrap()
    }
}

fn run(
    engine: &Engine,
    sandbox: &Sandbox,
    stdin: &[u8],
) -> (Result<Outcome, EngineError>, Captured) {
    let cap = Captured::new();
    let (i, o, e) = cap.fds(stdin);
    (engine.run_with_stdio(sandbox, i, o, e), cap)
}

fn code(outcome: &Result<Outcome, EngineError>) -> Option<i32> {
    match outcome {
        Ok(o) => o.code,
        Err(e) => panic!("{e}"),
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn containers(socket: &Path) -> Vec<String> {
    block_on(async {
        let docker = bollard::Docker::connect_with_unix(
            socket.to_str().unwrap(),
            30,
            &bollard::ClientVersion {
                major_version: 1,
                minor_version: 41,
            },
        )
        .unwrap();
        let options = bollard::query_parameters::ListContainersOptions {
            all: true,
            ..Default::default()
        };
        docker
            .list_containers(Some(options))
            .await
            .unwrap()
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .collect()
    })
}

/// create + start + wait + remove through the raw API, for comparison with `run`.
fn raw_true(socket: &Path, image: &str, name: &str) -> Duration {
    block_on(async {
        use futures_util::StreamExt;
        let docker = bollard::Docker::connect_with_unix(
            socket.to_str().unwrap(),
            30,
            &bollard::ClientVersion {
                major_version: 1,
                minor_version: 41,
            },
        )
        .unwrap();
        let begun = Instant::now();
        let body = bollard::models::ContainerCreateBody {
            image: Some(image.into()),
            cmd: Some(vec!["/bin/true".into()]),
            host_config: Some(bollard::models::HostConfig {
                binds: Some(vec!["/usr:/usr:ro".into()]),
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = bollard::query_parameters::CreateContainerOptions {
            name: Some(name.into()),
            ..Default::default()
        };
        docker.create_container(Some(options), body).await.unwrap();
        docker
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .unwrap();
        let _ = docker
            .wait_container(
                name,
                None::<bollard::query_parameters::WaitContainerOptions>,
            )
            .next()
            .await;
        let remove = bollard::query_parameters::RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        docker.remove_container(name, Some(remove)).await.unwrap();
        begun.elapsed()
    })
}

fn busybox_image() -> Option<(tempfile::TempDir, ImageRef)> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        eprintln!("busybox-static not installed: skipping the image-directory checks");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    std::fs::hard_link(root.join("bin/busybox"), root.join("bin/sh")).unwrap();
    for applet in ["true", "echo", "ls", "cat", "stat", "id"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/marker"), b"from the image\n").unwrap();
    let image = ImageRef {
        dir: root.to_path_buf(),
        digest: format!("sha256:{:0>64}", format!("{:x}", std::process::id())),
    };
    Some((dir, image))
}

#[test]
fn probe_without_a_daemon_says_why() {
    let engine = Engine::new("/nonexistent/docker.sock");
    let availability = engine.probe();
    assert!(!availability.available);
    assert!(availability.reason.unwrap().contains("no Docker socket"));
    assert!(availability.fix.is_some());
}

#[test]
fn docker_engine_end_to_end() {
    if !Path::new(dockerd::DOCKERD).exists() {
        eprintln!("no {}: skipped", dockerd::DOCKERD);
        return;
    }
    let daemon = Dockerd::start(&[]);
    let dir = daemon.dir().to_path_buf();
    eprintln!("dockerd up in {:?}", daemon.started_in);
    let engine = Engine::new(&daemon.socket);
    let availability = engine.probe();
    assert!(availability.available, "{availability:?}");
    eprintln!("probe: {availability:?}");

    // Exit codes (the first run imports the host image).
    let begun = Instant::now();
    let (outcome, _) = run(
        &engine,
        &host_sandbox("agentbox-000000000001", &["/bin/true"]),
        b"",
    );
    assert_eq!(code(&outcome), Some(0));
    eprintln!("first run (with import): {:?}", begun.elapsed());
    let mut runs = Vec::new();
    for i in 0..5 {
        let begun = Instant::now();
        let (outcome, _) = run(
            &engine,
            &host_sandbox(&format!("agentbox-00000000010{i}"), &["/bin/true"]),
            b"",
        );
        assert_eq!(code(&outcome), Some(0));
        runs.push(begun.elapsed());
    }
    let (outcome, _) = run(
        &engine,
        &host_sandbox("agentbox-000000000002", &["sh", "-c", "exit 7"]),
        b"",
    );
    assert_eq!(code(&outcome), Some(7));

    // stdin in, stdout and stderr out, separately.
    let (outcome, cap) = run(
        &engine,
        &host_sandbox("agentbox-000000000003", &["sh", "-c", "cat; echo oops >&2"]),
        b"hello from stdin\n",
    );
    assert_eq!(code(&outcome), Some(0));
    assert_eq!(cap.out(), "hello from stdin\n");
    assert_eq!(cap.err(), "oops\n");

    // A missing command.
    let (outcome, _) = run(
        &engine,
        &host_sandbox("agentbox-000000000004", &["/no/such/command"]),
        b"",
    );
    assert!(
        matches!(
            outcome,
            Err(EngineError::Command {
                not_found: true,
                ..
            })
        ),
        "{outcome:?}"
    );
    let (outcome, _) = run(
        &engine,
        &host_sandbox("agentbox-000000000005", &["no-such-command"]),
        b"",
    );
    assert!(
        matches!(
            outcome,
            Err(EngineError::Command {
                not_found: true,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(containers(&daemon.socket).is_empty());

    // The timeout.
    let mut sleeper = host_sandbox("agentbox-000000000006", &["sleep", "30"]);
    sleeper.limits.timeout = Some(Duration::from_secs(1));
    let begun = Instant::now();
    let (outcome, _) = run(&engine, &sleeper, b"");
    let outcome = outcome.unwrap();
    assert!(outcome.timed_out, "{outcome:?}");
    assert!(
        begun.elapsed() < Duration::from_secs(10),
        "{:?}",
        begun.elapsed()
    );
    assert!(containers(&daemon.socket).is_empty());

    // From inside.
    let script = "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
                  touch /rootfs-probe 2>/dev/null && echo root-writable || echo root-readonly; \
                  touch /tmp/ok && echo tmp-writable; \
                  echo net: $(ls /sys/class/net); echo uid: $(id -u):$(id -g); \
                  echo host: $(hostname); \
                  perl -e 'my $b = \"x\" x 64; ioctl(STDIN, 0x5412, $b) or print \"tiocsti: $!\\n\"; \
                           ioctl(STDIN, 0x5401, $b) or print \"tcgets: $!\\n\"'; \
                  unshare -U true 2>/dev/null && echo unshare-allowed || echo unshare-denied";
    let mut inside = host_sandbox("agentbox-000000000007", &["sh", "-c", script]);
    inside.uid = 1000;
    let (outcome, cap) = run(&engine, &inside, b"");
    let out = cap.out();
    eprintln!("inside:\n{out}{}", cap.err());
    assert_eq!(code(&outcome), Some(0));
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("root-readonly"), "{out}");
    assert!(out.contains("tmp-writable"), "{out}");
    assert!(out.contains("net: lo\n"), "{out}");
    assert!(out.contains("uid: 1000:1000"), "{out}");
    assert!(out.contains("host: agentbox"), "{out}");
    assert!(out.contains("tiocsti: Operation not permitted"), "{out}");
    assert!(
        out.contains("tcgets: Inappropriate ioctl for device"),
        "{out}"
    );
    assert!(out.contains("unshare-denied"), "{out}");

    // The pids limit holds.
    let mut forks = host_sandbox(
        "agentbox-000000000008",
        &[
            "sh",
            "-c",
            "for i in $(seq 40); do sleep 5 & done; wait; echo all-forked",
        ],
    );
    forks.limits.pids = Some(10);
    forks.limits.timeout = Some(Duration::from_secs(30));
    let (outcome, cap) = run(&engine, &forks, b"");
    let outcome = outcome.unwrap();
    assert!(
        !cap.out().contains("all-forked"),
        "{outcome:?} {}",
        cap.out()
    );
    assert!(cap.err().to_lowercase().contains("fork"), "{}", cap.err());

    // The memory limit holds, and the kill is reported as an OOM.
    let mut hog = host_sandbox(
        "agentbox-000000000009",
        &[
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    hog.limits.memory = Some(32 << 20);
    let (outcome, cap) = run(&engine, &hog, b"");
    let outcome = outcome.unwrap();
    assert!(outcome.oom, "{outcome:?}");
    assert!(!cap.out().contains("survived"));

    // An image directory (static busybox), imported once and cached.
    if let Some((_keep, image)) = busybox_image() {
        let mut boxed = host_sandbox(
            "agentbox-00000000000a",
            &[
                "/bin/sh",
                "-c",
                "cat /etc/marker; ls /bin; stat -c %h /bin/sh; id -u",
            ],
        );
        boxed.image = Some(image.clone());
        boxed.symlinks.clear();
        boxed.binds.clear();
        boxed.cwd = PathBuf::from("/");
        boxed.env = vec![("PATH".into(), "/bin".into())];
        boxed.uid = 4242;
        let begun = Instant::now();
        let (outcome, cap) = run(&engine, &boxed, b"");
        eprintln!(
            "busybox image, first run (with import): {:?}",
            begun.elapsed()
        );
        assert_eq!(code(&outcome), Some(0), "{}", cap.err());
        let out = cap.out();
        assert!(out.starts_with("from the image\n"), "{out}");
        assert!(out.contains("busybox"), "{out}");
        assert!(out.contains("\n2\n"), "hard link kept: {out}");
        assert!(out.ends_with("4242\n"), "{out}");
        let begun = Instant::now();
        let (outcome, _) = run(&engine, &boxed, b"");
        assert_eq!(code(&outcome), Some(0));
        eprintln!("busybox image, cached: {:?}", begun.elapsed());
        assert_eq!(
            engine.ensure_image(&image).unwrap(),
            agentbox_docker::image_tag(&image).unwrap()
        );
    }

    // Persistent: create, exec, exec (state visible), destroy.
    let id = "agentbox-00000000000b";
    let pause = host_sandbox(id, &["sleep", "infinity"]);
    engine.create(&pause).unwrap();
    let exec = |argv: &[&str]| {
        let cap = Captured::new();
        let (i, o, e) = cap.fds(b"");
        let process = ExecProcess {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hi".into())],
            cwd: PathBuf::from("/tmp"),
            uid: 0,
        };
        (engine.exec(id, &process, i, o, e), cap)
    };
    let (outcome, _) = exec(&["sh", "-c", "echo $GREETING > /tmp/state"]);
    assert_eq!(code(&outcome), Some(0));
    let (outcome, cap) = exec(&[
        "sh",
        "-c",
        "cat /tmp/state; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; exit 3",
    ]);
    assert_eq!(code(&outcome), Some(3));
    let out = cap.out();
    assert!(out.starts_with("hi\n"), "{out}");
    assert!(
        out.contains("CapEff:\t0000000000000000")
            && out.contains("NoNewPrivs:\t1")
            && out.contains("Seccomp:\t2"),
        "{out}"
    );
    let (outcome, _) = exec(&["/no/such/command"]);
    assert!(
        matches!(
            outcome,
            Err(EngineError::Command {
                not_found: true,
                ..
            })
        ),
        "{outcome:?}"
    );
    engine.destroy(id).unwrap();
    engine.destroy(id).unwrap();

    // Timing: run() against a raw create + start + wait + remove on the same daemon.
    let host_tag = block_on(async {
        let docker = bollard::Docker::connect_with_unix(
            daemon.socket.to_str().unwrap(),
            30,
            &bollard::ClientVersion {
                major_version: 1,
                minor_version: 41,
            },
        )
        .unwrap();
        docker
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .find(|t| t.starts_with("agentbox/host:"))
            .unwrap()
    });
    let raw: Vec<Duration> = (0..5)
        .map(|i| raw_true(&daemon.socket, &host_tag, &format!("raw-{i}")))
        .collect();
    eprintln!("TIMING run(/bin/true): {runs:?}");
    eprintln!("TIMING raw create+start+wait+remove: {raw:?}");

    assert_eq!(containers(&daemon.socket), Vec::<String>::new());
    drop(daemon);
    assert_eq!(dockerd::processes_under(&dir), Vec::<u32>::new());
    assert_eq!(dockerd::mounts_under(&dir), Vec::<String>::new());
    assert!(!dir.exists());
}
