//! A real debootstrap build (needs network access to deb.debian.org and a few minutes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agentbox_image::{ImageError, Progress, Store};
use std::fs;
use std::time::Instant;

#[test]
fn build_bookworm_minbase() {
    assert!(
        std::path::Path::new("/usr/sbin/debootstrap").exists()
            || std::process::Command::new("debootstrap")
                .arg("--version")
                .output()
                .is_ok(),
        "debootstrap is not installed: run scripts/install-deps.sh (apt-get install debootstrap)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let mut steps = 0u64;
    let mut stages = Vec::new();
    let started = Instant::now();
    let info = store
        .build_debian("test-bookworm", "bookworm", &[], None, &mut |p| match p {
            Progress::Step { .. } => steps += 1,
            Progress::Stage(s) => stages.push(s),
        })
        .unwrap();
    eprintln!(
        "debootstrap took {:?}, {steps} steps, {} stages",
        started.elapsed(),
        stages.len()
    );
    assert!(steps > 50, "progress steps: {steps}");
    assert!(!stages.is_empty());
    assert_eq!(info.name, "test-bookworm");
    assert_eq!(info.source, "debootstrap bookworm");
    assert!(info.digest.starts_with("sha256:") && info.digest.len() == 71);
    assert!(info.size > 50 << 20, "size {}", info.size);
    let r = &info.rootfs;
    assert!(fs::read_to_string(r.join("etc/debian_version"))
        .unwrap()
        .starts_with("12"));
    assert!(r.join("usr/bin/dpkg").is_file());
    let debs = fs::read_dir(r.join("var/cache/apt/archives"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".deb")
        })
        .count();
    assert_eq!(debs, 0, "apt archives not cleaned");
    let lists = fs::read_dir(r.join("var/lib/apt/lists"))
        .map(|d| d.filter(|e| e.as_ref().unwrap().path().is_file()).count())
        .unwrap_or(0);
    assert_eq!(lists, 0, "apt lists not cleaned");
    assert!(!r.join("debootstrap").exists());
    assert_eq!(store.resolve("test-bookworm").unwrap(), info);
    assert_eq!(
        fs::read_dir(tmp.path().join("store/tmp")).unwrap().count(),
        0
    );
    assert!(!fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .contains(tmp.path().to_str().unwrap()));
}

#[test]
fn missing_debootstrap_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path())
        .unwrap()
        .with_tool_path(tmp.path().join("no-bin"));
    let err = store
        .build_debian("x", "bookworm", &[], None, &mut |_| {})
        .unwrap_err();
    match &err {
        ImageError::Missing { tool, fix } => {
            assert_eq!(tool, "debootstrap");
            assert!(fix.contains("apt-get install debootstrap"));
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    assert!(!err.is_bad_input());
}

#[test]
fn bad_arguments_are_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let none: &[String] = &[];
    for (name, suite, packages, mirror) in [
        ("ok", "bookworm; rm -rf /", none, None),
        ("ok", "--foreign", none, None),
        ("bad name", "bookworm", none, None),
        ("ok", "bookworm", &["curl,evil".to_string()][..], None),
        ("ok", "bookworm", &["--no-check-gpg".to_string()][..], None),
        ("ok", "bookworm", none, Some("http://x y")),
    ] {
        let err = store
            .build_debian(name, suite, packages, mirror, &mut |_| {})
            .unwrap_err();
        assert!(
            matches!(err, ImageError::Invalid { .. }),
            "{suite} {packages:?}: {err:?}"
        );
        assert!(err.is_bad_input());
    }
    assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn failed_build_reports_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let err = store
        .build_debian("x", "no-such-suite", &[], None, &mut |_| {})
        .unwrap_err();
    match &err {
        ImageError::Failed { step, message } => {
            assert_eq!(step, "debootstrap");
            eprintln!("debootstrap failure message: {message}");
            assert!(message.contains("no-such-suite"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(tmp.path().join("names")).unwrap().count(), 0);
}
