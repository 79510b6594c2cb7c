//! Importing an OCI image layout or a `docker save` tarball.

use crate::extract::{LayerDigest, Rootfs};
use crate::source::{digest_hex, parse_json, sha256_hex, Source};
use crate::store::{canonical_name, now_secs, Meta};
use crate::{ImageError, ImageInfo, Progress, Store};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DockerConfig {
    rootfs: DockerRootfs,
}

#[derive(Debug, Deserialize)]
struct DockerRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// What to extract: the image digest, its default name and the layers in order.
struct Plan {
    digest: String,
    default_name: Option<String>,
    source: String,
    /// (member path, digest, whether the digest covers the uncompressed tar)
    layers: Vec<(String, String, bool)>,
}

pub(crate) fn import(
    store: &Store,
    source: &Path,
    name: Option<&str>,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImageInfo, ImageError> {
    let name = name.map(canonical_name).transpose()?;
    let scratch = store.work_dir()?;
    let src = Source::open(source, &scratch.path)?;
    let plan = if src.exists("oci-layout") && src.exists("index.json") {
        oci_plan(&src, source)?
    } else if src.exists("manifest.json") {
        docker_plan(&src, source)?
    } else {
        return Err(ImageError::invalid(
            "archive",
            format!(
                "{} is neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)",
                source.display()
            ),
        ));
    };
    let hex = digest_hex(&plan.digest)?;
    let name = match name.or(plan.default_name) {
        Some(n) => n,
        None => hex.get(..12).unwrap_or(hex).to_string(),
    };
    progress(Progress::Stage(format!(
        "importing {} ({} layers) from {}",
        plan.digest,
        plan.layers.len(),
        source.display()
    )));
    if store.has_content(&plan.digest) {
        progress(Progress::Stage(format!(
            "{} is already stored",
            plan.digest
        )));
        return store.name_existing(&name, &plan.digest);
    }
    let work = store.work_dir()?;
    let rootfs_dir = work.path.join("rootfs");
    let mut rootfs = Rootfs::create(&rootfs_dir)?;
    let total = plan.layers.len() as u64;
    for (i, (path, digest, uncompressed)) in plan.layers.iter().enumerate() {
        progress(Progress::Step {
            done: i as u64,
            total,
            what: format!("layer {}", short(digest)),
        });
        let open = || src.open_member(path).map(|(reader, _)| reader);
        let digest = if *uncompressed {
            LayerDigest::Uncompressed(digest)
        } else {
            LayerDigest::Stored(digest)
        };
        rootfs.apply_layer(&open, digest)?;
    }
    progress(Progress::Step {
        done: total,
        total,
        what: "layers applied".into(),
    });
    if rootfs.skipped > 0 {
        progress(Progress::Stage(format!(
            "skipped {} device nodes and FIFOs",
            rootfs.skipped
        )));
    }
    rootfs.finish()?;
    drop(src);
    drop(scratch);
    let size = crate::tree::measure(&rootfs_dir, false)?.size;
    let meta = Meta {
        digest: plan.digest,
        size,
        created: now_secs(),
        source: plan.source,
    };
    store.commit(work, &meta, &name)
}

fn oci_plan(src: &Source, path: &Path) -> Result<Plan, ImageError> {
    let index: Index = src.read_json("index.json")?;
    let top = pick(&index.manifests)?.clone();
    let mut desc = top.clone();
    let mut manifest_bytes = src.read_blob(&desc.digest)?;
    // Follow nested indexes (multi-platform images) to the image manifest.
    for _ in 0..4 {
        let value: serde_json::Value = parse_json(&desc.digest, &manifest_bytes)?;
        if value.get("manifests").is_none() {
            break;
        }
        let nested: Index = parse_json(&desc.digest, &manifest_bytes)?;
        desc = pick(&nested.manifests)?.clone();
        manifest_bytes = src.read_blob(&desc.digest)?;
    }
    let manifest: Manifest = parse_json(&desc.digest, &manifest_bytes)?;
    if manifest.layers.is_empty() {
        return Err(ImageError::invalid(
            "archive",
            "the image manifest has no layers",
        ));
    }
    let mut layers = Vec::new();
    for layer in &manifest.layers {
        layers.push((
            crate::source::blob_path(&layer.digest)?,
            layer.digest.clone(),
            false,
        ));
    }
    let default_name = [CONTAINERD_NAME, REF_NAME]
        .iter()
        .filter_map(|key| top.annotations.get(*key))
        .find_map(|r| name_from_ref(r));
    Ok(Plan {
        digest: desc.digest,
        default_name,
        source: format!("oci-layout {}", path.display()),
        layers,
    })
}

fn docker_plan(src: &Source, path: &Path) -> Result<Plan, ImageError> {
    let entries: Vec<DockerEntry> = src.read_json("manifest.json")?;
    let entry = entries
        .first()
        .ok_or_else(|| ImageError::invalid("archive", "manifest.json lists no image"))?;
    let config_bytes = src.read_small(&entry.config)?;
    let config_hex = sha256_hex(&config_bytes);
    // The config file is named after its digest (`<hex>.json` or `blobs/sha256/<hex>`).
    let file_hex = entry
        .config
        .rsplit('/')
        .next()
        .unwrap_or("")
        .trim_end_matches(".json");
    if file_hex.len() == 64
        && file_hex.bytes().all(|b| b.is_ascii_hexdigit())
        && file_hex != config_hex
    {
        return Err(ImageError::invalid(
            "blob",
            format!("digest mismatch: {} has sha256:{config_hex}", entry.config),
        ));
    }
    let config: DockerConfig = parse_json(&entry.config, &config_bytes)?;
    if entry.layers.is_empty() || config.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(ImageError::invalid(
            "archive",
            format!(
                "manifest.json lists {} layers but the config has {} rootfs.diff_ids",
                entry.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let layers = entry
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(layer, diff_id)| (layer.clone(), diff_id.clone(), true))
        .collect();
    let default_name = entry
        .repo_tags
        .iter()
        .flatten()
        .find_map(|t| name_from_ref(t));
    Ok(Plan {
        digest: format!("sha256:{config_hex}"),
        default_name,
        source: format!("docker-save {}", path.display()),
        layers,
    })
}

/// The manifest for this machine: the only one, else the one for linux/<our arch>, else the first
/// without a platform.
fn pick(manifests: &[Descriptor]) -> Result<&Descriptor, ImageError> {
    if let [only] = manifests {
        return Ok(only);
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| {
            manifests
                .iter()
                .find(|d| d.platform.is_none() && !d.media_type.contains("index"))
        })
        .ok_or_else(|| {
            ImageError::invalid(
                "archive",
                format!("index.json has no image manifest for linux/{arch}"),
            )
        })
}

/// `docker.io/library/alpine:3.19@sha256:…` → `alpine:3.19`; `None` when that is not a valid name.
fn name_from_ref(reference: &str) -> Option<String> {
    let reference = reference.split('@').next()?;
    let last = reference.rsplit('/').next()?;
    canonical_name(last).ok()
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}
