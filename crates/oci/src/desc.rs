//! The tier-neutral description of one sandbox that every external engine receives. The runtime
//! builds it from a validated policy after checking that the tier can enforce every field; an
//! engine only translates it and never weakens it.

use std::path::PathBuf;
use std::time::Duration;

use agentbox_policy::OciRuntime;

/// One sandbox, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Unique name for the container (`agentbox-` + 12 hex digits): safe as a runc/nspawn/docker
    /// container name and a host path component.
    pub id: String,
    /// The root file system, already prepared by the runtime: a writable, ephemeral overlay of the
    /// image (or an empty directory for the `host` image, whose system comes from `binds`). It is
    /// a mount point inside the caller's private mount namespace.
    pub rootfs: PathBuf,
    /// The read-only image directory under the rootfs overlay (None for the `host` image). Engines
    /// that cannot use `rootfs` (a Docker daemon, in another mount namespace) import this.
    pub image: Option<ImageRef>,
    /// Symbolic links to create in the root before the start (`/bin` -> `usr/bin` on a merged-/usr
    /// host image): (path inside the sandbox, target).
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    /// Bind mounts, in order: host system directories of the `host` image first, then the policy's.
    pub binds: Vec<Bind>,
    pub tmpfs: Vec<Tmpfs>,
    /// The command, with its environment (complete: nothing else is inherited) and directory.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// uid and gid of the command inside the sandbox (0 is root of a user namespace where the
    /// engine has one, never the host's root).
    pub uid: u32,
    /// The host ids the sandbox's user namespace maps its ids 0.. onto: (first host id, count),
    /// a range private to this sandbox (the runtime's slot allocator gives 65536 ids). Required
    /// by runc and crun (they refuse to run without one: no container root is ever host root);
    /// runsc does not use it (gVisor's sentry has its own user namespace).
    pub uid_range: Option<(u32, u32)>,
    pub hostname: String,
    pub limits: Limits,
    /// The reviewed allowlist (`agentbox_seccomp::DEFAULT_ALLOWLIST`), to translate into the
    /// engine's own filter format. Always present: engines that cannot load it refuse to run.
    pub seccomp: agentbox_seccomp::Allowlist,
    /// A directory private to this sandbox for the engine's files (bundle, config, logs); the
    /// runtime creates it and removes it after the engine's `cleanup`.
    pub state_dir: PathBuf,
    /// The `oci` tier's runtime, when the policy chose one.
    pub oci_runtime: Option<OciRuntime>,
}

/// An image of agentbox's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Its root file system (read-only, shared).
    pub dir: PathBuf,
    /// `sha256:...`: the store's content address.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub target: PathBuf,
    pub size: u64,
    pub mode: u32,
}

/// Resource limits; None means unlimited. Every field set here must be enforced or the engine's
/// `check` must have refused it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory: Option<u64>,
    /// CPU bandwidth in thousandths of a CPU.
    pub cpus_milli: Option<u32>,
    pub pids: Option<u64>,
    pub nofile: Option<u64>,
    /// Size of the writable layer (already applied by the runtime to `rootfs`'s upper tmpfs).
    pub disk: Option<u64>,
    /// Wall-clock limit of the command.
    pub timeout: Option<Duration>,
}

/// One more process in a persistent sandbox: it gets the same confinement as the sandbox's first
/// process (no capabilities, no new privileges, seccomp, rlimits), only these fields differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecProcess {
    pub argv: Vec<String>,
    /// Complete environment: nothing else is inherited.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub uid: u32,
}
