//! Every tier accepts `--image NAME`: an image imported into agentbox's store (here a busybox
//! root made by the test, as an OCI layout) is the read-only lower layer of each sandbox's root,
//! the host's system is not visible, and writes never reach the stored image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// An OCI layout directory with one layer: Debian's static busybox as /bin/busybox, the applets
/// the test uses linked to it, and /etc/marker.
fn busybox_layout(work: &Path) -> PathBuf {
    let tree = work.join("tree");
    for dir in ["bin", "usr/bin", "etc", "tmp"] {
        fs::create_dir_all(tree.join(dir)).unwrap();
    }
    fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "ls", "id", "test", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).unwrap();
    }
    std::os::unix::fs::symlink("/bin/busybox", tree.join("usr/bin/env")).unwrap();
    fs::write(tree.join("etc/marker"), "from the image\n").unwrap();
    fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let mut perms = fs::metadata(tree.join("tmp")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o1777);
    fs::set_permissions(tree.join("tmp"), perms).unwrap();
    common::oci_layout::layout(work, &tree, "busybox-test:1").0
}

fn with_store(store: &Path, args: &[&str]) -> Output {
    agentbox(args)
        .env("AGENTBOX_IMAGES", store)
        .output()
        .unwrap()
}

#[test]
fn every_tier_runs_an_image_of_the_store_and_never_writes_it() {
    let _guard = serial();
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let layout = busybox_layout(work.path());
    let o = with_store(&store, &["image", "import", layout.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("busybox-test:1 sha256:"),
        "{}",
        stdout(&o)
    );

    // The root is read-only on every tier except where the ns tier's is writable (/tmp...).
    let script = "cat /etc/marker; test -e /usr/bin/python3 || echo NO_HOST_SYSTEM; \
                  (echo written > /etc/marker) 2>/dev/null || echo READ_ONLY; \
                  echo tmp > /tmp/t && cat /tmp/t";
    let tiers: &[&[&str]] = &[
        &["--tier", "ns"],
        &["--tier", "chroot"],
        &["--tier", "oci", "--runtime", "runc"],
        &["--tier", "oci", "--runtime", "crun"],
        &["--tier", "gvisor"],
        &["--tier", "nspawn"],
    ];
    let mut failures = Vec::new();
    for flags in tiers {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--image", "busybox-test:1", "--", "sh", "-c", script]);
        let o = with_store(&store, &args);
        let out = stdout(&o);
        if !(o.status.success() && out == "from the image\nNO_HOST_SYSTEM\nREAD_ONLY\ntmp\n") {
            failures.push(format!(
                "{flags:?}: exit {:?} stdout {out:?} stderr {:?}",
                o.status.code(),
                stderr(&o)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The stored image is as imported: every write went to the sandboxes' upper layers.
    let ls = with_store(&store, &["image", "ls", "--json"]);
    let images: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let rootfs = images[0]["rootfs"].as_str().unwrap();
    assert_eq!(
        fs::read_to_string(Path::new(rootfs).join("etc/marker")).unwrap(),
        "from the image\n"
    );
    assert!(!Path::new(rootfs).join("tmp/t").exists());

    // A name the store does not have is bad input, on every tier.
    for tier in ["ns", "oci", "nspawn"] {
        let o = with_store(
            &store,
            &["run", "--tier", tier, "--image", "nope:1", "--", "true"],
        );
        assert_eq!(o.status.code(), Some(125), "{tier}: {}", stderr(&o));
        assert!(stderr(&o).contains("nope:1"), "{}", stderr(&o));
    }
    ok(with_store(&store, &["image", "rm", "busybox-test:1"]));
}
