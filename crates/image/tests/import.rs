//! Import of synthetic OCI layouts and docker-save tarballs, including hostile archives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agentbox_image::{ImageError, Progress, Store};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

// ----- building archives -----

enum E {
    Dir(&'static str, u32),
    File(String, Vec<u8>, u32),
    Owned(&'static str, &'static [u8], u32, u64, u64, u64), // path, data, mode, uid, gid, mtime
    Symlink(String, String),
    Hardlink(String, String),
}

fn file(path: &str, data: &str) -> E {
    E::File(path.to_string(), data.as_bytes().to_vec(), 0o644)
}

/// A layer tar. Paths are written into the header raw, so `..` and absolute paths survive.
fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let (path, data): (&str, &[u8]) = match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                (p, &[])
            }
            E::File(p, d, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                (p.as_str(), d.as_slice())
            }
            E::Owned(p, d, mode, uid, gid, mtime) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_mtime(*mtime);
                (p, d)
            }
            E::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                raw_name(&mut h.as_gnu_mut().unwrap().linkname, target);
                (p.as_str(), &[])
            }
            E::Hardlink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                raw_name(&mut h.as_gnu_mut().unwrap().linkname, target);
                (p.as_str(), &[])
            }
        };
        raw_name(&mut h.as_gnu_mut().unwrap().name, path);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn raw_name(field: &mut [u8; 100], text: &str) {
    assert!(text.len() < 100);
    field.fill(0);
    field[..text.len()].copy_from_slice(text.as_bytes());
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn write_blob(dir: &Path, data: &[u8]) -> String {
    let hex = sha(data);
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("blobs/sha256").join(&hex), data).unwrap();
    format!("sha256:{hex}")
}

/// An OCI layout directory with these layer blobs (already compressed or not); returns the
/// manifest digest.
fn oci_layout(dir: &Path, layers: &[Vec<u8>], ref_name: Option<&str>) -> String {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha(l)))
        .collect();
    let config = serde_json::json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":diff_ids}});
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = write_blob(dir, &config);
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|l| {
            let media = if l.starts_with(&[0x1f, 0x8b]) {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            serde_json::json!({"mediaType": media, "digest": write_blob(dir, l), "size": l.len()})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":config_digest,"size":config.len()},
        "layers": layer_descs,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = write_blob(dir, &manifest);
    let mut desc = serde_json::json!({
        "mediaType":"application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest.len()
    });
    if let Some(r) = ref_name {
        desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": r});
    }
    let index = serde_json::json!({"schemaVersion":2,"manifests":[desc]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    manifest_digest
}

/// A tar of everything under `dir` (paths relative to it).
fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

/// A `docker save` tarball (legacy layout: `<n>/layer.tar`, `<hex>.json`); returns the config digest.
fn docker_save(out: &Path, layers: &[Vec<u8>], tags: &[&str]) -> String {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha(l)))
        .collect();
    let config = serde_json::to_vec(
        &serde_json::json!({"os":"linux","rootfs":{"type":"layers","diff_ids":diff_ids}}),
    )
    .unwrap();
    let config_hex = sha(&config);
    let layer_paths: Vec<String> = (0..layers.len())
        .map(|i| format!("{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{config_hex}.json"), "RepoTags": tags, "Layers": layer_paths
    }]))
    .unwrap();
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    };
    add("manifest.json", &manifest);
    add(&format!("{config_hex}.json"), &config);
    for (path, l) in layer_paths.iter().zip(layers) {
        add(path, l);
    }
    b.finish().unwrap();
    format!("sha256:{config_hex}")
}

// ----- store helpers -----

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    store: Store,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let work = tmp.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let store = Store::open(&root).unwrap();
    Env {
        root,
        work,
        store,
        _tmp: tmp,
    }
}

fn quiet() -> impl FnMut(Progress) {
    |_| {}
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Nothing half-done is left: no work dirs, and no content or names beyond `images`.
fn assert_clean(e: &Env, images: usize) {
    assert_eq!(count(&e.root.join("tmp")), 0, "work dirs left in tmp/");
    assert_eq!(count(&e.root.join("content/sha256")), images);
    assert_eq!(count(&e.root.join("names")), images);
}

fn import_err(e: &Env, layers: &[Vec<u8>]) -> ImageError {
    let dir = e.work.join(format!("bad-{}", count(&e.work)));
    oci_layout(&dir, layers, None);
    let err = e.store.import(&dir, Some("bad"), &mut quiet()).unwrap_err();
    assert!(err.is_bad_input(), "{err:?}");
    assert!(matches!(err, ImageError::Invalid { .. }), "{err:?}");
    err
}

/// Removes host canaries when the test ends, passed or failed.
struct Canaries(Vec<PathBuf>);

impl Drop for Canaries {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_dir_all(path);
            let _ = fs::remove_file(path);
        }
    }
}

fn canary(tag: &str) -> PathBuf {
    PathBuf::from(format!(
        "/tmp/agentbox-image-canary-{}-{tag}",
        std::process::id()
    ))
}

// ----- tests -----

#[test]
fn oci_layers_apply_in_order_with_whiteouts() {
    let e = env();
    let lower = layer(&[
        E::Dir("a", 0o755),
        file("a/f1", "one"),
        file("a/f2", "keep"),
        E::Dir("d", 0o755),
        file("d/x", "x"),
        E::Dir("d/sub", 0o755),
        file("d/sub/y", "y"),
        file("gone", "gone"),
        E::Dir("gonedir", 0o755),
        file("gonedir/z", "z"),
    ]);
    let upper = layer(&[
        E::Owned("a/f1", b"two", 0o4750, 1234, 4321, 1_500_000_000),
        file(".wh.gone", ""),
        file(".wh.gonedir", ""),
        E::Dir("d", 0o700),
        file("d/.wh..wh..opq", ""),
        file("d/new", "new"),
        E::Symlink("l".into(), "a/f1".into()),
        E::Hardlink("h".into(), "a/f1".into()),
    ]);
    let dir = e.work.join("oci");
    let digest = oci_layout(
        &dir,
        &[lower, gzip(&upper)],
        Some("docker.io/library/demo:1.0"),
    );
    let mut stages = 0;
    let info = e.store.import(&dir, None, &mut |_| stages += 1).unwrap();
    assert!(stages > 0);
    assert_eq!(info.name, "demo:1.0");
    assert_eq!(info.digest, digest);
    assert_eq!(info.source, format!("oci-layout {}", dir.display()));
    let r = &info.rootfs;
    assert_eq!(fs::read_to_string(r.join("a/f1")).unwrap(), "two");
    assert_eq!(fs::read_to_string(r.join("a/f2")).unwrap(), "keep");
    assert!(!r.join("gone").exists());
    assert!(!r.join("gonedir").exists());
    assert!(!r.join("d/x").exists());
    assert!(!r.join("d/sub").exists());
    assert_eq!(fs::read_to_string(r.join("d/new")).unwrap(), "new");
    let f1 = fs::metadata(r.join("a/f1")).unwrap();
    assert_eq!(f1.mode() & 0o7777, 0o4750);
    assert_eq!((f1.uid(), f1.gid()), (1234, 4321));
    assert_eq!(f1.mtime(), 1_500_000_000);
    assert_eq!(fs::metadata(r.join("d")).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::metadata(r.join("d")).unwrap().mtime(), 1_600_000_000);
    assert_eq!(fs::read_link(r.join("l")).unwrap(), Path::new("a/f1"));
    assert_eq!(fs::metadata(r.join("h")).unwrap().ino(), f1.ino());
    assert_eq!(info.size, 3 + 4 + 3); // f1 (and its hard link once), f2, d/new
    assert_clean(&e, 1);
}

#[test]
fn oci_layout_tar_and_gzipped_tar_import() {
    let e = env();
    let dir = e.work.join("oci");
    let digest = oci_layout(&dir, &[layer(&[file("etc/hello", "hi")])], Some("tarred"));
    let tarball = e.work.join("oci.tar");
    tar_dir(&dir, &tarball);
    let info = e.store.import(&tarball, None, &mut quiet()).unwrap();
    assert_eq!(
        (info.name.as_str(), info.digest.as_str()),
        ("tarred", digest.as_str())
    );
    assert_eq!(
        fs::read_to_string(info.rootfs.join("etc/hello")).unwrap(),
        "hi"
    );
    let gz = e.work.join("oci.tar.gz");
    fs::write(&gz, gzip(&fs::read(&tarball).unwrap())).unwrap();
    let again = e.store.import(&gz, Some("zipped"), &mut quiet()).unwrap();
    assert_eq!(again.digest, digest);
    assert_eq!(e.store.list().unwrap().len(), 2);
    assert_clean_content(&e, 1);
}

fn assert_clean_content(e: &Env, contents: usize) {
    assert_eq!(count(&e.root.join("tmp")), 0);
    assert_eq!(count(&e.root.join("content/sha256")), contents);
}

#[test]
fn docker_save_import() {
    let e = env();
    let tarball = e.work.join("save.tar");
    let l1 = layer(&[file("bin/tool", "v1"), file("etc/conf", "c")]);
    let l2 = layer(&[file("bin/tool", "v2"), file("etc/.wh.conf", "")]);
    let digest = docker_save(&tarball, &[l1, l2], &["registry.example:5000/team/tool:v2"]);
    let info = e.store.import(&tarball, None, &mut quiet()).unwrap();
    assert_eq!(info.name, "tool:v2");
    assert_eq!(info.digest, digest);
    assert!(info.source.starts_with("docker-save "));
    assert_eq!(
        fs::read_to_string(info.rootfs.join("bin/tool")).unwrap(),
        "v2"
    );
    assert!(!info.rootfs.join("etc/conf").exists());
    assert_clean(&e, 1);
}

#[test]
fn docker_save_layer_mismatch_is_refused() {
    let e = env();
    let tarball = e.work.join("save.tar");
    docker_save(&tarball, &[layer(&[file("a", "MARKER-CONTENT")])], &[]);
    // Change the layer's file content inside the outer tar (same length, so the tar stays valid).
    let mut bytes = fs::read(&tarball).unwrap();
    let pos = bytes
        .windows(14)
        .position(|w| w == b"MARKER-CONTENT")
        .unwrap();
    bytes[pos] = b'X';
    fs::write(&tarball, bytes).unwrap();
    let err = e.store.import(&tarball, None, &mut quiet()).unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert_clean(&e, 0);
}

#[test]
fn blob_digest_mismatch_is_refused() {
    let e = env();
    let dir = e.work.join("oci");
    oci_layout(&dir, &[layer(&[file("a", "original")])], None);
    // Replace the layer blob (the largest blob) by another tar under the same digest.
    let blobs = dir.join("blobs/sha256");
    let victim = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    fs::write(&victim, layer(&[file("a", "tampered")])).unwrap();
    let err = e.store.import(&dir, None, &mut quiet()).unwrap_err();
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert_clean(&e, 0);
}

#[test]
fn parent_dir_entries_are_refused_and_leave_nothing() {
    let e = env();
    let target = canary("dotdot");
    let deep = format!("../../../../../../../../..{}", target.display());
    for bad in [
        layer(&[file(&deep, "x")]),
        layer(&[file("ok", "ok"), file("a/../../x", "x")]),
        layer(&[
            file("a", "a"),
            E::Hardlink("h".into(), "../../../../../../etc/passwd".into()),
        ]),
    ] {
        import_err(&e, &[bad]);
        assert!(!target.exists());
        assert_clean(&e, 0);
    }
}

#[test]
fn absolute_paths_stay_inside_the_rootfs() {
    let e = env();
    let target = canary("abs");
    let dir = e.work.join("oci");
    oci_layout(
        &dir,
        &[layer(&[file(target.to_str().unwrap(), "inside")])],
        None,
    );
    let info = e.store.import(&dir, Some("abs"), &mut quiet()).unwrap();
    assert!(!target.exists());
    let inside = info.rootfs.join(target.strip_prefix("/").unwrap());
    assert_eq!(fs::read_to_string(inside).unwrap(), "inside");
}

#[test]
fn symlinks_are_never_written_through() {
    let e = env();
    let host_dir = canary("dir");
    let host_file = canary("file");
    let _cleanup = Canaries(vec![host_dir.clone(), host_file.clone()]);
    fs::create_dir_all(&host_dir).unwrap();
    fs::write(&host_file, "host").unwrap();
    let d = host_dir.display().to_string();
    let f = host_file.display().to_string();
    // Same layer: a symlink to a host dir, then a file through it; a relative escape; a symlink
    // to a host file, then a file at the symlink's own path.
    let same = layer(&[
        E::Symlink("evil".into(), d.clone()),
        file("evil/pwned", "1"),
        E::Symlink("up".into(), "../../../../../../../..".into()),
        file(&format!("up{}/pwned2", d), "2"),
        E::Symlink("victim".into(), f.clone()),
        file("victim", "image"),
    ]);
    // Across layers: plant in the lower layer, write in the upper one.
    let lower = layer(&[
        E::Symlink("evil2".into(), d.clone()),
        E::Symlink("victim2".into(), f.clone()),
    ]);
    let upper = layer(&[file("evil2/pwned3", "3"), file("victim2", "image2")]);
    let dir = e.work.join("oci");
    oci_layout(&dir, &[same, lower, upper], None);
    let info = e.store.import(&dir, Some("links"), &mut quiet()).unwrap();
    assert_eq!(
        count(&host_dir),
        0,
        "a file was written through a symlink to the host"
    );
    assert_eq!(fs::read_to_string(&host_file).unwrap(), "host");
    let r = &info.rootfs;
    let inside = r.join(host_dir.strip_prefix("/").unwrap());
    for name in ["pwned", "pwned2", "pwned3"] {
        assert!(
            inside.join(name).is_file(),
            "{name} should be inside the rootfs"
        );
    }
    assert_eq!(fs::read_to_string(r.join("victim")).unwrap(), "image");
    assert!(!fs::symlink_metadata(r.join("victim2"))
        .unwrap()
        .file_type()
        .is_symlink());
    fs::remove_dir_all(&host_dir).unwrap();
    fs::remove_file(&host_file).unwrap();
}

#[test]
fn hard_links_to_outside_are_refused() {
    let e = env();
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    // Absolute: means the image's /etc/passwd, which does not exist.
    import_err(
        &e,
        &[layer(&[E::Hardlink("h".into(), "/etc/passwd".into())])],
    );
    // Through a planted symlink to the host /etc.
    import_err(
        &e,
        &[layer(&[
            E::Symlink("s".into(), "/etc".into()),
            E::Hardlink("h".into(), "s/passwd".into()),
        ])],
    );
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);
    assert_clean(&e, 0);
}

#[test]
fn malformed_input_is_bad_input() {
    let e = env();
    let missing = e.work.join("nope.tar");
    assert!(e
        .store
        .import(&missing, None, &mut quiet())
        .unwrap_err()
        .is_bad_input());
    let junk = e.work.join("junk.tar");
    fs::write(&junk, b"this is not a tar archive at all").unwrap();
    assert!(e
        .store
        .import(&junk, None, &mut quiet())
        .unwrap_err()
        .is_bad_input());
    let not_image = e.work.join("plain.tar");
    fs::write(&not_image, layer(&[file("hello", "x")])).unwrap();
    assert!(e
        .store
        .import(&not_image, None, &mut quiet())
        .unwrap_err()
        .is_bad_input());
    let dir = e.work.join("oci");
    oci_layout(&dir, &[layer(&[file("a", "a")])], None);
    let err = e
        .store
        .import(&dir, Some("bad name!"), &mut quiet())
        .unwrap_err();
    assert!(matches!(err, ImageError::Invalid { .. }), "{err}");
    import_err(&e, &[b"\x28\xb5\x2f\xfdzstd".to_vec()]);
    import_err(&e, &[gzip(b"truncated tar inside gzip")[..20].to_vec()]);
    assert_clean(&e, 0);
}

#[test]
fn reimport_is_idempotent() {
    let e = env();
    let dir = e.work.join("oci");
    oci_layout(&dir, &[layer(&[file("a", "a")])], None);
    let first = e.store.import(&dir, None, &mut quiet()).unwrap();
    assert_eq!(first.name, first.short_digest());
    let meta = first.rootfs.parent().unwrap().join("meta.json");
    let before = fs::metadata(&meta).unwrap().mtime_nsec();
    let second = e.store.import(&dir, None, &mut quiet()).unwrap();
    assert_eq!(first, second);
    assert_eq!(fs::metadata(&meta).unwrap().mtime_nsec(), before);
    assert_clean(&e, 1);
}

#[test]
fn list_resolve_and_remove() {
    let e = env();
    let a = e.work.join("a");
    let b = e.work.join("b");
    let da = oci_layout(&a, &[layer(&[file("a", "a")])], None);
    let db = oci_layout(&b, &[layer(&[file("b", "b")])], None);
    e.store.import(&a, Some("one"), &mut quiet()).unwrap();
    e.store
        .import(&a, Some("two:latest"), &mut quiet())
        .unwrap();
    e.store.import(&b, Some("three:v1"), &mut quiet()).unwrap();
    let names: Vec<String> = e
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["one", "three:v1", "two"]);
    assert_eq!(e.store.resolve("one").unwrap().digest, da);
    assert_eq!(e.store.resolve("one:latest").unwrap().digest, da);
    assert_eq!(e.store.resolve("three:v1").unwrap().digest, db);
    assert_eq!(e.store.resolve(&db).unwrap().name, "three:v1");
    assert_eq!(e.store.resolve(&db[..7 + 12]).unwrap().digest, db);
    assert_eq!(e.store.resolve(&db[7..7 + 12]).unwrap().digest, db);
    assert!(matches!(
        e.store.resolve("three"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        e.store.resolve("sha256:12"),
        Err(ImageError::Invalid { .. })
    ));
    assert!(matches!(
        e.store.resolve("no/such"),
        Err(ImageError::Invalid { .. })
    ));
    // Renaming: `three:v1` moves to a's content, so b's content has no name and is deleted.
    e.store.import(&a, Some("three:v1"), &mut quiet()).unwrap();
    assert!(matches!(
        e.store.resolve(&db),
        Err(ImageError::NotFound { .. })
    ));
    assert_eq!(count(&e.root.join("content/sha256")), 1);
    let removed = e.store.remove("one").unwrap();
    assert_eq!(removed.digest, da);
    assert!(removed.rootfs.exists(), "still named two and three:v1");
    e.store.remove("two:latest").unwrap();
    e.store.remove(&da[..19]).unwrap();
    assert!(!removed.rootfs.exists());
    assert!(e.store.list().unwrap().is_empty());
    assert!(matches!(
        e.store.remove("one"),
        Err(ImageError::NotFound { .. })
    ));
    assert_clean(&e, 0);
}

#[test]
fn concurrent_imports_of_the_same_content() {
    let e = env();
    let dir = e.work.join("oci");
    let digest = oci_layout(&dir, &[layer(&[file("a", "a"), file("b", "b")])], None);
    std::thread::scope(|s| {
        for i in 0..4 {
            let (store, dir) = (&e.store, &dir);
            s.spawn(move || {
                store
                    .import(dir, Some(&format!("n{i}")), &mut quiet())
                    .unwrap()
            });
        }
    });
    assert_eq!(e.store.list().unwrap().len(), 4);
    assert!(e.store.list().unwrap().iter().all(|i| i.digest == digest));
    assert_clean_content(&e, 1);
}
