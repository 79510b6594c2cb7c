//! Finding the cgroup hierarchy from `/proc/self/mountinfo`. Pure except `detect_host`, which
//! only reads files; nothing here mounts or creates anything.

use std::path::{Path, PathBuf};

use super::{CgroupError, Hierarchy};

/// Controllers a v2 root must offer; `cpu` is only needed for a CPU limit and checked at create.
const V2_REQUIRED: [&str; 2] = ["memory", "pids"];

/// Reads `/proc/self/mountinfo` and, for each cgroup2 candidate, its `cgroup.controllers`.
pub fn detect_host() -> Result<Hierarchy, CgroupError> {
    detect_host_with_mounts().map(|(hierarchy, _)| hierarchy)
}

/// [`detect_host`], also returning the mountinfo text it read (what `Cgroup::enter` needs too:
/// a sandbox start reads it once).
pub fn detect_host_with_mounts() -> Result<(Hierarchy, String), CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let hierarchy = detect(&mountinfo, &|root| {
        std::fs::read_to_string(root.join("cgroup.controllers")).ok()
    })?;
    Ok((hierarchy, mountinfo))
}

/// Pure: picks the hierarchy from the text of a mountinfo file. v1 wins when its `memory`
/// controller is mounted (hybrid hosts keep the controllers on v1 and leave cgroup2 empty); then
/// `pids` must be mounted too. Otherwise the first cgroup2 mount (the one at `/sys/fs/cgroup`
/// first) whose `cgroup.controllers`, as returned by `read_controllers`, lists memory and pids.
/// The error names what is missing.
pub fn detect(
    mountinfo: &str,
    read_controllers: &dyn Fn(&Path) -> Option<String>,
) -> Result<Hierarchy, CgroupError> {
    let mounts: Vec<CgroupMount> = mountinfo.lines().filter_map(parse_line).collect();
    let v1_root = |controller: &str| {
        mounts
            .iter()
            .find(|m| m.version == 1 && m.options.iter().any(|o| o == controller))
            .map(|m| m.point.clone())
    };
    if let Some(memory) = v1_root("memory") {
        let pids = v1_root("pids").ok_or_else(|| {
            CgroupError::NoHierarchy(format!(
                "cgroup v1 memory controller is mounted at {} but the v1 pids controller is not mounted",
                memory.display()
            ))
        })?;
        return Ok(Hierarchy::V1 {
            memory,
            pids,
            cpu: v1_root("cpu"),
        });
    }

    let mut v2: Vec<&PathBuf> = mounts
        .iter()
        .filter(|m| m.version == 2)
        .map(|m| &m.point)
        .collect();
    v2.sort_by_key(|point| point.as_path() != Path::new("/sys/fs/cgroup")); // stable: keeps mount order otherwise
    let mut rejected = Vec::new();
    for root in v2 {
        let controllers = read_controllers(root);
        let offered: Vec<&str> = controllers
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let missing: Vec<&str> = V2_REQUIRED
            .iter()
            .copied()
            .filter(|c| !offered.contains(c))
            .collect();
        if missing.is_empty() {
            return Ok(Hierarchy::V2 { root: root.clone() });
        }
        let offered = match &controllers {
            None => "cgroup.controllers unreadable".to_string(),
            Some(_) if offered.is_empty() => "offers no controllers".to_string(),
            Some(_) => format!("offers only {}", offered.join(" ")),
        };
        rejected.push(format!(
            "cgroup2 at {} lacks {} ({offered})",
            root.display(),
            missing.join(", ")
        ));
    }
    let detail = if rejected.is_empty() {
        "no cgroup2 mount".to_string()
    } else {
        rejected.join("; ")
    };
    Err(CgroupError::NoHierarchy(format!(
        "the cgroup v1 memory controller is not mounted and {detail}"
    )))
}

/// A cgroup or cgroup2 mount: where, the cgroup it shows at that point (`/` unless a sub-tree was
/// mounted), and its super options (the v1 controllers, e.g. `cpu,cpuacct`).
pub(super) struct CgroupMount {
    pub(super) version: u8,
    pub(super) point: PathBuf,
    pub(super) root: PathBuf,
    pub(super) options: Vec<String>,
}

/// `36 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct`:
/// the root is field 4, the mount point field 5; after the `-` separator come fs type, source,
/// super options.
pub(super) fn parse_line(line: &str) -> Option<CgroupMount> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let root = fields.get(3)?;
    let point = fields.get(4)?;
    let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let version = match *fields.get(dash + 1)? {
        "cgroup" => 1,
        "cgroup2" => 2,
        _ => return None,
    };
    let options = fields
        .get(dash + 3)
        .map_or(Vec::new(), |o| o.split(',').map(str::to_string).collect());
    Some(CgroupMount {
        version,
        point: PathBuf::from(unescape(point)),
        root: PathBuf::from(unescape(root)),
        options,
    })
}

/// Undoes mountinfo's octal escapes of space, tab, newline and backslash (`\040`).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .filter(|d| d.bytes().all(|b| (b'0'..=b'7').contains(&b)))
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(byte) if byte.is_ascii() => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            _ => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
