//! Landlock: restricting the file hierarchies a process (and everything it execs) may touch.
//! The rule list is derived from the mount plan by `agentbox-runtime`; this module applies it.

use std::path::PathBuf;

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};

use crate::SysError;

/// The newest ABI whose rights we have reviewed. Older kernels get the subset they support.
const REVIEWED_ABI: ABI = ABI::V6;

/// What a rule grants beneath its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsAccess {
    /// Read files, list directories, execute.
    ReadExec,
    /// Everything: create, write, remove, rename, truncate, ioctl on devices.
    ReadWrite,
    /// A device node: read, write, truncate, ioctl.
    Device,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockRule {
    pub path: PathBuf,
    pub access: FsAccess,
}

/// How much of the ruleset the running kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    Full,
    Partial,
    None,
}

fn landlock_error(what: &str, e: impl std::fmt::Display) -> SysError {
    SysError {
        op: "landlock",
        what: what.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Restricts the calling thread to `rules` (and sets no_new_privs). File-system accesses not
/// granted by a rule are denied; signals and abstract unix sockets are scoped to the sandbox.
pub fn restrict_self(rules: &[LandlockRule]) -> Result<Enforcement, SysError> {
    let abi = REVIEWED_ABI;
    let mut created = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .map_err(|e| landlock_error("create ruleset", e))?;
    for rule in rules {
        let fd = PathFd::new(&rule.path)
            .map_err(|e| landlock_error(&rule.path.display().to_string(), e))?;
        let is_dir = std::fs::metadata(&rule.path)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        let mut access = match rule.access {
            FsAccess::ReadExec => AccessFs::from_read(abi),
            FsAccess::ReadWrite => AccessFs::from_all(abi),
            FsAccess::Device => {
                AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev
            }
        };
        if !is_dir {
            access &= AccessFs::from_file(abi);
        }
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| landlock_error(&rule.path.display().to_string(), e))?;
    }
    let status = created
        .restrict_self()
        .map_err(|e| landlock_error("restrict_self", e))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::None,
    })
}
