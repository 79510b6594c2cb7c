//! Validation of a `PolicySpec` into a `Policy`: defaults applied, every value range-checked, every
//! path normalised. Pure: existence of host paths is checked later, by the runtime that opens them.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::{parse_cpus, parse_duration, parse_size, MountSpec, Network, PolicyError, PolicySpec};

/// PATH given to every sandboxed command unless the policy sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Paths agentbox builds itself; a user mount may not replace them.
const RESERVED_TARGETS: &[&str] = &["/", "/proc", "/dev", "/sys"];

/// The isolation tier. A closed enum: dispatch is static and exhaustive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Every Linux namespace, pivot_root, seccomp, Landlock, cgroups: the default.
    Ns,
    /// chroot and dropped privileges: fast, not a security boundary.
    Chroot,
    /// A WebAssembly module under wasmtime with WASI: no system calls, only the capabilities the
    /// policy hands in (preopened directories, environment, stdio).
    Wasm,
    /// An OCI bundle run by runc or crun (`runtime` picks which).
    Oci,
    /// The same OCI bundle run by gVisor's runsc: a user-space kernel.
    Gvisor,
    /// systemd-nspawn with the policy translated to its flags.
    Nspawn,
    /// A Docker Engine reached through its API.
    Docker,
    /// A QEMU microVM with agentbox's own guest kernel and agent: the command runs on a kernel of
    /// its own.
    Microvm,
}

impl Tier {
    /// Every tier, in the order `doctor` lists them.
    pub const ALL: [Tier; 8] = [
        Tier::Ns,
        Tier::Chroot,
        Tier::Wasm,
        Tier::Oci,
        Tier::Gvisor,
        Tier::Nspawn,
        Tier::Docker,
        Tier::Microvm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Ns => "ns",
            Tier::Chroot => "chroot",
            Tier::Wasm => "wasm",
            Tier::Oci => "oci",
            Tier::Gvisor => "gvisor",
            Tier::Nspawn => "nspawn",
            Tier::Docker => "docker",
            Tier::Microvm => "microvm",
        }
    }

    pub fn from_name(name: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The OCI runtime of the `oci` tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OciRuntime {
    Runc,
    Crun,
}

impl OciRuntime {
    pub fn name(self) -> &'static str {
        match self {
            OciRuntime::Runc => "runc",
            OciRuntime::Crun => "crun",
        }
    }
}

/// Policy fields a tier that cannot enforce them may ignore instead of refusing the run, when the
/// policy lists them in `optional`.
pub const OPTIONAL_FIELDS: &[&str] = &[
    "limits.cpus",
    "limits.pids",
    "limits.disk",
    "limits.nofile",
    "limits.fuel",
    "user",
];

/// Root filesystem of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// Read-only views of the host's system directories and a minimal /etc.
    Host,
    /// A root filesystem directory on the host, used as the lower layer of an overlay.
    Dir(PathBuf),
    /// An image of agentbox's store (`agentbox image ls`), by name or `sha256:` digest; the
    /// runtime resolves it to the store's read-only root filesystem.
    Named(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// Bind of a host path (absolute, normalised; existence checked by the runtime).
    Bind { source: PathBuf, access: Access },
    /// A fresh tmpfs of the given size in bytes.
    Tmpfs { size: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute, normalised path inside the sandbox.
    pub target: PathBuf,
    pub kind: MountKind,
}

/// CPU bandwidth in thousandths of a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpus(pub u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory: u64,
    pub cpus: Option<Cpus>,
    pub pids: u64,
    pub timeout: Option<Duration>,
    pub disk: u64,
    pub nofile: u64,
    /// wasm tier: a CPU budget in wasmtime fuel units (None: unlimited).
    pub fuel: Option<u64>,
}

/// Environment as ordered `KEY=VALUE` pairs; keys are unique.
pub type Env = Vec<(String, String)>;

/// A validated policy: the type every tier trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub tier: Tier,
    /// The `oci` tier's runtime (None: whichever is installed, crun first).
    pub runtime: Option<OciRuntime>,
    pub image: Image,
    /// Workspace bind first (when given), then the user's mounts in order.
    pub mounts: Vec<Mount>,
    pub network: Network,
    pub limits: Limits,
    pub env: Env,
    pub cwd: PathBuf,
    pub user: u32,
    /// The fields the policy set itself (dotted names: `limits.pids`, `user`, `cwd`, ...), so a
    /// tier can refuse what it cannot enforce without refusing defaults.
    pub given: Vec<&'static str>,
    /// Fields a tier may ignore rather than refuse (a subset of `OPTIONAL_FIELDS`).
    pub optional: Vec<String>,
    /// The environment exactly as the policy gave it, without agentbox's defaults (tiers with no
    /// host environment at all, such as wasm, use only this).
    pub env_given: Env,
    /// `microvm+ns`: the microVM's guest agent runs the command inside agentbox's `ns` tier in
    /// the guest (a sandbox inside a VM). Only with `tier = microvm`.
    pub layered: bool,
}

impl Policy {
    /// Whether the policy set `field` and did not mark it optional: a tier that cannot enforce
    /// such a field must refuse it.
    pub fn insists_on(&self, field: &str) -> bool {
        self.given.contains(&field) && !self.optional.iter().any(|o| o == field)
    }

    /// The tier as users name it: `microvm+ns` for the layered microVM, else the tier's name.
    pub fn tier_label(&self) -> &'static str {
        if self.layered {
            LAYERED_TIER
        } else {
            self.tier.name()
        }
    }
}

/// The name of the layered tier: the `ns` tier inside a microVM.
pub const LAYERED_TIER: &str = "microvm+ns";

impl PolicySpec {
    /// Validates the whole spec. `host_term` is the caller's TERM, the one variable passed through.
    pub fn validate(&self, host_term: Option<&str>) -> Result<Policy, PolicyError> {
        let tier_name = self.tier.as_deref().unwrap_or("ns");
        let layered = tier_name == LAYERED_TIER;
        let tier = if layered {
            Some(Tier::Microvm)
        } else {
            Tier::from_name(tier_name)
        };
        let tier = tier.ok_or_else(|| {
            let mut known: Vec<&str> = Tier::ALL.iter().map(|t| t.name()).collect();
            known.push(LAYERED_TIER);
            let hint = if tier_name == "auto" {
                "`auto` is resolved before validation (see agentbox_runtime::select)".to_string()
            } else {
                format!("unknown tier (known: {}, auto)", known.join(", "))
            };
            PolicyError::new("tier", tier_name, hint)
        })?;
        let runtime = match self.runtime.as_deref() {
            None => None,
            Some("runc") => Some(OciRuntime::Runc),
            Some("crun") => Some(OciRuntime::Crun),
            Some(other) => {
                return Err(PolicyError::new(
                    "runtime",
                    other,
                    "unknown OCI runtime (known: runc, crun)",
                ))
            }
        };
        if runtime.is_some() && tier != Tier::Oci {
            return Err(PolicyError::new(
                "runtime",
                self.runtime.as_deref().unwrap_or_default(),
                "only the oci tier takes a runtime",
            ));
        }
        let image = match self.image.as_deref().unwrap_or("host") {
            "host" => Image::Host,
            path if path.starts_with('/') => Image::Dir(absolute("image", path)?),
            name => Image::Named(image_name(name)?),
        };
        let network = crate::network::validate(self.network.as_ref())?;
        let limits = self.validate_limits()?;
        let mut mounts = Vec::new();
        if let Some(ws) = &self.workspace {
            mounts.push(Mount {
                target: PathBuf::from("/workspace"),
                kind: MountKind::Bind {
                    source: absolute("workspace", ws)?,
                    access: Access::ReadWrite,
                },
            });
        }
        for (i, m) in self.mounts.iter().enumerate() {
            mounts.push(validate_mount(i, m)?);
        }
        for (i, m) in mounts.iter().enumerate() {
            if mounts[..i].iter().any(|earlier| earlier.target == m.target) {
                return Err(PolicyError::new(
                    "mounts.target",
                    m.target.display().to_string(),
                    "mounted twice",
                ));
            }
        }
        let cwd = absolute("cwd", self.cwd.as_deref().unwrap_or("/workspace"))?;
        let user = self.user.unwrap_or(0);
        if user >= 65534 {
            return Err(PolicyError::new(
                "user",
                user.to_string(),
                "must be below 65534 (the sandbox maps uids 0-65535)",
            ));
        }
        let mut env = build_env(&self.env, user, host_term)?;
        crate::network::add_proxy_env(&network, &mut env);
        for field in &self.optional {
            if !OPTIONAL_FIELDS.contains(&field.as_str()) {
                return Err(PolicyError::new(
                    "optional",
                    field,
                    format!(
                        "not a field a tier may ignore (those are: {})",
                        OPTIONAL_FIELDS.join(", ")
                    ),
                ));
            }
        }
        let l = &self.limits;
        let given: Vec<&'static str> = [
            ("limits.memory", l.memory.is_some()),
            ("limits.cpus", l.cpus.is_some()),
            ("limits.pids", l.pids.is_some()),
            ("limits.timeout", l.timeout.is_some()),
            ("limits.disk", l.disk.is_some()),
            ("limits.nofile", l.nofile.is_some()),
            ("limits.fuel", l.fuel.is_some()),
            ("user", self.user.is_some()),
            ("cwd", self.cwd.is_some()),
            ("image", self.image.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect();
        Ok(Policy {
            tier,
            runtime,
            image,
            mounts,
            network,
            limits,
            env,
            cwd,
            user,
            given,
            optional: self.optional.clone(),
            layered,
            env_given: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    fn validate_limits(&self) -> Result<Limits, PolicyError> {
        let l = &self.limits;
        let memory = size_in("limits.memory", l.memory.as_deref(), GIB, 4 * MIB, 1 << 40)?;
        let disk = size_in("limits.disk", l.disk.as_deref(), GIB, MIB, 1 << 40)?;
        let cpus = match l.cpus.as_deref() {
            None => None,
            Some(text) => {
                let milli = parse_cpus(text).ok_or_else(|| {
                    PolicyError::new("limits.cpus", text, "not a number of CPUs (e.g. 1.5)")
                })?;
                if !(10..=1_024_000).contains(&milli) {
                    return Err(PolicyError::new(
                        "limits.cpus",
                        text,
                        "out of range 0.01 to 1024",
                    ));
                }
                Some(Cpus(milli))
            }
        };
        let pids = l.pids.unwrap_or(1024);
        if !(1..=4_194_304).contains(&pids) {
            return Err(PolicyError::new(
                "limits.pids",
                pids.to_string(),
                "out of range 1 to 4194304",
            ));
        }
        let timeout = match l.timeout.as_deref() {
            None => None,
            Some(text) => {
                let d = parse_duration(text).ok_or_else(|| {
                    PolicyError::new(
                        "limits.timeout",
                        text,
                        "not a duration (e.g. 30s, 5m, 200ms)",
                    )
                })?;
                if d < Duration::from_millis(1) || d > Duration::from_secs(30 * 24 * 3600) {
                    return Err(PolicyError::new(
                        "limits.timeout",
                        text,
                        "out of range 1ms to 30 days",
                    ));
                }
                Some(d)
            }
        };
        let fuel = match l.fuel {
            Some(0) => {
                return Err(PolicyError::new(
                    "limits.fuel",
                    "0",
                    "must be at least 1 (wasmtime fuel units)",
                ))
            }
            f => f,
        };
        let nofile = l.nofile.unwrap_or(1024);
        if !(16..=1_048_576).contains(&nofile) {
            return Err(PolicyError::new(
                "limits.nofile",
                nofile.to_string(),
                "out of range 16 to 1048576",
            ));
        }
        Ok(Limits {
            memory,
            cpus,
            pids,
            timeout,
            disk,
            nofile,
            fuel,
        })
    }
}

fn size_in(
    field: &str,
    text: Option<&str>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, PolicyError> {
    let Some(text) = text else { return Ok(default) };
    let bytes = parse_size(text)
        .ok_or_else(|| PolicyError::new(field, text, "not a size (e.g. 512M, 2G)"))?;
    if bytes < min || bytes > max {
        return Err(PolicyError::new(
            field,
            text,
            format!("out of range {}M to {}G", min / MIB, max / GIB),
        ));
    }
    Ok(bytes)
}

/// An absolute path without `..`, normalised (`.` and repeated slashes removed).
/// An image name as the store knows it: `NAME[:TAG]` of letters, digits and `._-`, or a
/// `sha256:` digest (or a unique prefix of one, at least 12 hex digits).
pub fn image_name(text: &str) -> Result<String, PolicyError> {
    let bad = |why: &str| Err(PolicyError::new("image", text, why));
    if let Some(hex) = text.strip_prefix("sha256:") {
        if hex.len() < 12 || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("a digest is sha256: and 12 to 64 hex digits");
        }
        return Ok(text.to_ascii_lowercase());
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-:".contains(c);
    if text.is_empty()
        || text.len() > 128
        || !text.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !text.chars().all(ok_char)
        || text.matches(':').count() > 1
        || text.ends_with(':')
    {
        return bad("not an image name: `host`, an absolute directory, or NAME[:TAG] of letters, digits and ._- (see `agentbox image ls`)");
    }
    Ok(text.to_string())
}

fn absolute(field: &str, text: &str) -> Result<PathBuf, PolicyError> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(PolicyError::new(field, text, "must be an absolute path"));
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(PolicyError::new(field, text, "must not contain '..'"))
            }
        }
    }
    if text.contains('\0') {
        return Err(PolicyError::new(field, text, "must not contain NUL"));
    }
    Ok(out)
}

fn validate_mount(index: usize, spec: &MountSpec) -> Result<Mount, PolicyError> {
    let field = |name: &str| format!("mounts[{index}].{name}");
    let (target, kind) = match spec {
        MountSpec::Bind {
            source,
            target,
            writable,
        } => {
            let access = if *writable {
                Access::ReadWrite
            } else {
                Access::ReadOnly
            };
            (
                target,
                MountKind::Bind {
                    source: absolute(&field("source"), source)?,
                    access,
                },
            )
        }
        MountSpec::Tmpfs { target, size } => (
            target,
            MountKind::Tmpfs {
                size: size_in(&field("size"), size.as_deref(), 64 * MIB, MIB, 1 << 40)?,
            },
        ),
    };
    let target = absolute(&field("target"), target)?;
    if RESERVED_TARGETS.iter().any(|r| {
        let r = Path::new(r);
        target == r || (r != Path::new("/") && target.starts_with(r))
    }) {
        return Err(PolicyError::new(
            field("target"),
            target.display().to_string(),
            "reserved: agentbox builds this path itself",
        ));
    }
    Ok(Mount { target, kind })
}

fn build_env(
    extra: &std::collections::BTreeMap<String, String>,
    user: u32,
    host_term: Option<&str>,
) -> Result<Env, PolicyError> {
    let home = if user == 0 {
        "/root".to_string()
    } else {
        "/tmp".to_string()
    };
    let mut env: Env = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), home),
        ("LANG".into(), "C.UTF-8".into()),
        (
            "TERM".into(),
            host_term
                .filter(|t| valid_value(t))
                .unwrap_or("xterm")
                .into(),
        ),
    ];
    for (key, value) in extra {
        let valid_key = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(PolicyError::new("env", key, "not a valid variable name"));
        }
        if !valid_value(value) {
            return Err(PolicyError::new(
                format!("env.{key}"),
                value,
                "must not contain NUL",
            ));
        }
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => env.push((key.clone(), value.clone())),
        }
    }
    Ok(env)
}

fn valid_value(v: &str) -> bool {
    !v.contains('\0')
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
