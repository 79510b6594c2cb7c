//! What the harness tells the probes: the objects it planted, and the bounds of the resource probes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Context {
    /// The sentinel's pid as the harness sees it. A probe may signal or trace it only after
    /// checking that `/proc/<pid>/cmdline` contains `sentinel_marker` (in a pid namespace the
    /// number may be another process, or none).
    pub sentinel_pid: i32,
    pub sentinel_marker: String,
    /// A host file holding a secret the sandbox must not read (the probe prints what it reads;
    /// the harness looks for the secret in the output).
    pub canary_read: PathBuf,
    /// A host file the sandbox must not change or delete (the harness compares it afterwards).
    pub canary_write: PathBuf,
    /// A TCP listener on the host's loopback that the sandbox must not reach.
    pub listener: Option<String>,
    /// The host's hostname and boot id, to detect leaks.
    pub host_hostname: String,
    pub host_boot_id: String,
    /// Host directory paths that must not appear inside (in mountinfo, for example).
    pub host_paths: Vec<String>,
    /// A writable directory inside the sandbox for scratch files (mount points, fill probes).
    pub scratch: PathBuf,
    /// Run the resource probes (fork, memory, disk, inode, CPU).
    pub resources: bool,
    /// Bounds of the resource probes: never more than this, contained or not.
    pub max_processes: u32,
    pub max_memory_mib: u64,
    pub max_disk_mib: u64,
    pub max_inodes: u64,
}
