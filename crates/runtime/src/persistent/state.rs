//! Where persistent sandboxes live on the host: one directory per sandbox under /run/agentbox,
//! holding `state.json` (written once by its supervisor) and `ctl.sock` (the supervisor's socket).
//! There is no daemon: `ls` reads these directories, and a dead supervisor is seen as a dead pid.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::RunError;

pub const ROOT: &str = "/run/agentbox";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub id: String,
    pub name: Option<String>,
    pub tier: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub supervisor: u32,
    /// Host pid of the sandbox init.
    pub init: i32,
    pub uid_base: u32,
    pub user: u32,
    pub cgroups: Vec<PathBuf>,
    /// The API tenant that created it (none from the CLI).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Where the sandbox's root is, seen from its init: `/` for the ns tier (the init's own
    /// root); on an engine tier the init is agentbox's driver, whose private mount namespace
    /// holds the root it built at this path. None: the files are out of agentbox's reach (a
    /// Docker daemon's container).
    #[serde(default = "slash")]
    pub root: Option<PathBuf>,
}

fn slash() -> Option<PathBuf> {
    Some(PathBuf::from("/"))
}

/// Whether the sandbox's supervisor still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Running,
    /// The supervisor died (killed): the sandbox is gone, its remains wait for `rm` or `gc`.
    Failed,
}

impl State {
    /// The sandbox's root directory, for file transfer (every path is then resolved inside it).
    pub fn open_root(&self) -> Result<std::os::fd::OwnedFd, RunError> {
        let Some(root) = &self.root else {
            return Err(RunError::Unenforceable {
                tier: if self.tier == "gvisor" {
                    "gvisor"
                } else {
                    "docker"
                },
                field: "files",
                reason: "agentbox cannot reach this engine's container files safely (gVisor \
                         caches them, a Docker daemon owns them): copy with exec (cat, tar)"
                    .into(),
            });
        };
        let relative = root.strip_prefix("/").unwrap_or(root);
        let path = PathBuf::from(format!("/proc/{}/root", self.init)).join(relative);
        agentbox_sys::resolve::open(&path, agentbox_sys::resolve::OpenFlags::PATH.directory(), 0)
            .map_err(|e| RunError::setup(format!("sandbox {} root", self.id), e))
    }

    pub fn dir(&self) -> PathBuf {
        dir_of(&self.id)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir().join("ctl.sock")
    }

    pub fn health(&self) -> Health {
        if Path::new(&format!("/proc/{}", self.supervisor)).exists() {
            Health::Running
        } else {
            Health::Failed
        }
    }

    /// Memory the sandbox's cgroup is charged with now, when it can be read.
    pub fn memory_in_use(&self) -> Option<u64> {
        self.cgroups.iter().find_map(|dir| {
            ["memory.usage_in_bytes", "memory.current"]
                .iter()
                .find_map(|f| {
                    std::fs::read_to_string(dir.join(f))
                        .ok()?
                        .trim()
                        .parse()
                        .ok()
                })
        })
    }
}

pub fn dir_of(id: &str) -> PathBuf {
    Path::new(ROOT).join(id)
}

/// A new random id: 12 hex digits.
pub fn new_id() -> Result<String, RunError> {
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| RunError::setup("random id", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn is_id(name: &str) -> bool {
    name.len() == 12 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every persistent sandbox on this host, oldest first.
pub fn list() -> Vec<State> {
    let Ok(entries) = std::fs::read_dir(ROOT) else {
        return Vec::new();
    };
    let mut states: Vec<State> = entries
        .flatten()
        .filter(|e| is_id(&e.file_name().to_string_lossy()))
        .filter_map(|e| {
            serde_json::from_slice(&std::fs::read(e.path().join("state.json")).ok()?).ok()
        })
        .collect();
    states.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    states
}

/// The sandbox with this id or name.
pub fn find(target: &str) -> Result<State, RunError> {
    let all = list();
    let by_id = all.iter().position(|s| s.id == target);
    let found = by_id.or_else(|| all.iter().position(|s| s.name.as_deref() == Some(target)));
    found
        .map(|i| all[i].clone())
        .ok_or_else(|| RunError::invalid("sandbox", target, "no such sandbox (see agentbox ls)"))
}

/// Whether `name` has the shape of an id (names must not, so that an id is never ambiguous).
pub fn looks_like_id(name: &str) -> bool {
    is_id(name)
}

pub fn write(state: &State) -> Result<(), RunError> {
    let path = state.dir().join("state.json");
    let tmp = state.dir().join("state.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state).unwrap_or_default())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| RunError::setup(format!("write {}", path.display()), e))
}

/// Hands a sandbox created ahead (a warm pool's, recorded under tenant `from`) to its first
/// owner: its state.json is rewritten with `tenant`, `name` and the claim time as its creation
/// time, atomically (a rename: a reader sees the old owner or the new one, never a mix). Refused
/// when the sandbox no longer belongs to `from` (claimed already: it is handed out once), when
/// its supervisor died, or when another sandbox has `name`. The caller serialises claims.
pub fn claim(id: &str, from: &str, tenant: &str, name: Option<&str>) -> Result<State, RunError> {
    let path = dir_of(id).join("state.json");
    let mut state: State = std::fs::read(&path)
        .map_err(|e| RunError::setup(format!("read {}", path.display()), e))
        .and_then(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| RunError::setup(format!("parse {}", path.display()), e))
        })?;
    if state.tenant.as_deref() != Some(from) {
        return Err(RunError::invalid(
            "sandbox",
            id,
            "not an unclaimed pooled sandbox",
        ));
    }
    if state.health() == Health::Failed {
        return Err(RunError::setup(
            format!("sandbox {id}"),
            "its supervisor died",
        ));
    }
    if let Some(name) = name {
        if list().iter().any(|s| s.name.as_deref() == Some(name)) {
            return Err(RunError::invalid(
                "name",
                name,
                "a sandbox of that name exists",
            ));
        }
    }
    state.tenant = Some(tenant.to_string());
    state.name = name.map(str::to_string);
    state.created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(state.created);
    write(&state)?;
    Ok(state)
}

/// Removes what a sandbox whose supervisor died left: processes still in its cgroups, the
/// cgroups, its uid slot, its directory.
pub fn reclaim(state: &State) -> Result<(), RunError> {
    for dir in &state.cgroups {
        if dir.exists() {
            crate::gc::empty_and_remove(dir)
                .map_err(|e| RunError::setup(format!("remove {}", dir.display()), e))?;
        }
    }
    crate::uidmap::free_stale_slots(&crate::gc::reclaim_engines);
    match std::fs::remove_dir_all(state.dir()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RunError::setup(
            format!("remove {}", state.dir().display()),
            e,
        )),
        _ => Ok(()),
    }
}
