//! OCI image layouts made by the tests from a directory tree, with the system `tar` and
//! `sha256sum` (one uncompressed layer).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Stores `path` as a blob of the layout at `dir`; returns its digest and size.
fn blob(dir: &Path, path: &Path) -> (String, u64) {
    let hex = sha256(path);
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::copy(path, dir.join("blobs/sha256").join(&hex)).unwrap();
    (format!("sha256:{hex}"), fs::metadata(path).unwrap().len())
}

fn json_blob(dir: &Path, value: serde_json::Value) -> (String, u64) {
    let tmp = dir.join("tmp.json");
    fs::write(&tmp, serde_json::to_vec(&value).unwrap()).unwrap();
    let out = blob(dir, &tmp);
    fs::remove_file(tmp).unwrap();
    out
}

/// Tars the contents of `dir` (numeric owners) into `out`.
pub fn tar(dir: &Path, out: &Path) {
    let ok = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("--numeric-owner")
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
}

/// An OCI image layout at `work/layout` whose one layer is `tree`, named `ref_name`; returns the
/// layout directory and the manifest digest (the image's digest in agentbox's store).
pub fn layout(work: &Path, tree: &Path, ref_name: &str) -> (PathBuf, String) {
    let layer = work.join("layer.tar");
    tar(tree, &layer);
    let layout = work.join("layout");
    let (layer_digest, layer_size) = blob(&layout, &layer);
    let (config_digest, config_size) = json_blob(
        &layout,
        serde_json::json!({"os": "linux", "architecture": "amd64",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}),
    );
    let (manifest_digest, manifest_size) = json_blob(
        &layout,
        serde_json::json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]}),
    );
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": ref_name}}]});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    (layout, manifest_digest)
}
