//! `agentbox image import | ls | rm` against a temporary store (AGENTBOX_IMAGES).
//! Archives are made with the system `tar` and `sha256sum`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn agentbox(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentbox"))
        .args(args)
        .env("AGENTBOX_IMAGES", store)
        .output()
        .unwrap()
}

/// An OCI layout tarball holding one layer with `etc/greeting`, named `greeter:1`.
fn oci_tarball(work: &Path) -> (std::path::PathBuf, String) {
    let tree = work.join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/greeting"), "hello\n").unwrap();
    let (layout, digest) = common::oci_layout::layout(work, &tree, "greeter:1");
    let tarball = work.join("image.tar");
    common::oci_layout::tar(&layout, &tarball);
    (tarball, digest)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit 125 with exactly one `agentbox: image: ` line on stderr and nothing on stdout.
fn assert_bad_input(o: &Output, needle: &str) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.starts_with("agentbox: image: "), "{err}");
    assert!(err.contains(needle), "{err} should mention {needle}");
    assert!(o.stdout.is_empty());
}

#[test]
fn import_ls_rm() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let (tarball, digest) = oci_tarball(tmp.path());

    let o = agentbox(&store, &["image", "import", tarball.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), format!("greeter:1 {digest}"));
    let o = agentbox(
        &store,
        &[
            "image",
            "import",
            tarball.to_str().unwrap(),
            "--name",
            "copy",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));

    let o = agentbox(&store, &["image", "ls"]);
    assert_eq!(o.status.code(), Some(0));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("DIGEST") && lines[0].contains("SOURCE")
    );
    assert!(
        lines[1].starts_with("copy ") && lines[1].contains(&digest[7..19]),
        "{out}"
    );
    assert!(
        lines[2].starts_with("greeter:1 ") && lines[2].contains("oci-layout"),
        "{out}"
    );

    let o = agentbox(&store, &["image", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[1]["name"], "greeter:1");
    assert_eq!(list[1]["digest"], digest.as_str());
    let rootfs = list[1]["rootfs"].as_str().unwrap().to_string();
    assert_eq!(
        fs::read_to_string(Path::new(&rootfs).join("etc/greeting")).unwrap(),
        "hello\n"
    );

    // --store overrides AGENTBOX_IMAGES.
    let other = tmp.path().join("other");
    let o = agentbox(
        &store,
        &["image", "ls", "--json", "--store", other.to_str().unwrap()],
    );
    assert_eq!(text(&o.stdout).trim(), "[]");

    let o = agentbox(&store, &["image", "rm", "greeter:1", "copy"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    assert!(!Path::new(&rootfs).exists());
    let o = agentbox(&store, &["image", "ls", "--json"]);
    assert_eq!(text(&o.stdout).trim(), "[]");

    let o = agentbox(&store, &["image", "rm", "greeter:1"]);
    assert_bad_input(&o, "greeter:1");
}

#[test]
fn bad_input_exits_125_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let missing = tmp.path().join("missing.tar");
    let o = agentbox(&store, &["image", "import", missing.to_str().unwrap()]);
    assert_bad_input(&o, "missing.tar");

    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, vec![b'x'; 2000]).unwrap();
    let o = agentbox(&store, &["image", "import", junk.to_str().unwrap()]);
    assert_bad_input(&o, "junk.tar");

    let (tarball, _) = oci_tarball(tmp.path());
    let o = agentbox(
        &store,
        &[
            "image",
            "import",
            tarball.to_str().unwrap(),
            "--name",
            "no/slash",
        ],
    );
    assert_bad_input(&o, "no/slash");

    let o = agentbox(
        &store,
        &["image", "build", "x", "--debian", "bookworm;reboot"],
    );
    assert_bad_input(&o, "suite");

    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(store.join("content/sha256")).unwrap().count(),
        0
    );
}
