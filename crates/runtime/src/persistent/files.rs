//! Files into and out of a persistent sandbox (`agentbox cp`), through its init's root and
//! `transfer` (every path resolved inside the root).

use std::path::Path;

use agentbox_sys::creds;

use super::{agent_files, state};
use crate::{transfer, RunError};

fn transfer_error(e: transfer::TransferError) -> RunError {
    RunError::InvalidInSandbox(format!("cp: {e}"))
}

/// Copies a host file or tree to `sandbox_dst` in sandbox `target`; returns the bytes copied.
/// Files are created with the sandbox user's ids (a host root's id is not mapped inside).
pub fn copy_in(target: &str, host_src: &Path, sandbox_dst: &Path) -> Result<u64, RunError> {
    let state = state::find(target)?;
    if agent_files::behind_agent(&state) {
        return agent_files::copy_in(&state, host_src, sandbox_dst);
    }
    let root = state.open_root()?;
    let owner = state.uid_base + state.user;
    // The host side is read with the same ids: a file only host root may read is refused, which
    // also keeps a sandbox from being handed what its user could not read.
    let previous = creds::set_fs_ids(owner, owner);
    let result = transfer::copy_in(&root, host_src, sandbox_dst, (owner, owner));
    creds::set_fs_ids(previous.0, previous.1);
    result.map_err(transfer_error)
}

/// Copies `sandbox_src` of sandbox `target` to a host path; returns the bytes copied.
pub fn copy_out(target: &str, sandbox_src: &Path, host_dst: &Path) -> Result<u64, RunError> {
    let state = state::find(target)?;
    if agent_files::behind_agent(&state) {
        return agent_files::copy_out(&state, sandbox_src, host_dst);
    }
    let root = state.open_root()?;
    transfer::copy_out(&root, sandbox_src, host_dst).map_err(transfer_error)
}
