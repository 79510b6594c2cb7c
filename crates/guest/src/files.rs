//! File transfers and guest facts: writes assembled from file-data frames, reads streamed as
//! file-data frames, directory listings, stat, and the guest's memory/load/uptime. Paths are the
//! guest's own: the agent is the guest's root, there is nothing to confine here.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use agentbox_protocol::{
    DataKind, DirEntry, ErrorCode, FileInfo, FileKind, Reply, ResourceUse, DATA_CHUNK,
};

use crate::sink::{io_code, Sink};

enum Upload {
    Open {
        file: File,
        path: String,
        mode: u32,
        size: u64,
    },
    Failed(ErrorCode, String),
}

/// Uploads in progress, by request id.
#[derive(Default)]
pub struct Uploads {
    open: HashMap<u32, Upload>,
}

impl Uploads {
    /// Opens `path`; a failure is reported at the end, so each upload gets exactly one answer.
    pub fn begin(&mut self, id: u32, path: String, mode: u32) -> Result<(), (ErrorCode, String)> {
        if self.open.contains_key(&id) {
            return Err((
                ErrorCode::BadRequest,
                format!("upload {id} is already open"),
            ));
        }
        let upload = match OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode & 0o7777)
            .open(&path)
        {
            Ok(file) => Upload::Open {
                file,
                path,
                mode,
                size: 0,
            },
            Err(e) => Upload::Failed(io_code(&e), format!("{path}: {e}")),
        };
        self.open.insert(id, upload);
        Ok(())
    }

    pub fn chunk(&mut self, id: u32, bytes: &[u8]) -> Result<(), (ErrorCode, String)> {
        let upload = self
            .open
            .get_mut(&id)
            .ok_or_else(|| (ErrorCode::BadRequest, format!("no open upload {id}")))?;
        if let Upload::Open {
            file, path, size, ..
        } = upload
        {
            match file.write_all(bytes) {
                Ok(()) => *size += bytes.len() as u64,
                Err(e) => *upload = Upload::Failed(io_code(&e), format!("{path}: {e}")),
            }
        }
        Ok(())
    }

    pub fn end(&mut self, id: u32) -> Reply {
        let error = |code, message| Reply::Error {
            id: Some(id),
            code,
            message,
        };
        match self.open.remove(&id) {
            None => error(ErrorCode::BadRequest, format!("no open upload {id}")),
            Some(Upload::Failed(code, message)) => error(code, message),
            Some(Upload::Open {
                file,
                path,
                mode,
                size,
            }) => {
                // The mode given at creation passes through the umask and misses existing files.
                let done = file
                    .set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
                    .and_then(|()| file.sync_data());
                match done {
                    Ok(()) => Reply::Written { id, size },
                    Err(e) => error(io_code(&e), format!("{path}: {e}")),
                }
            }
        }
    }
}

/// Streams `path` as file-data frames then `read_done` (on its own thread: a big file must not
/// stall the channel's reader).
pub fn read_file(id: u32, path: String, sink: Sink) {
    std::thread::spawn(move || {
        let result = (|| {
            let mut file = File::open(&path)?;
            if file.metadata()?.is_dir() {
                return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
            }
            let mut buf = vec![0u8; DATA_CHUNK];
            let mut size = 0u64;
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => return Ok(size),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                sink.data(DataKind::FileData, id, &buf[..n]);
                size += n as u64;
            }
        })();
        match result {
            Ok(size) => sink.reply(&Reply::ReadDone { id, size }),
            Err(e) => sink.error(Some(id), io_code(&e), format!("{path}: {e}")),
        }
    });
}

fn kind_of(meta: &std::fs::Metadata) -> FileKind {
    let t = meta.file_type();
    if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

pub fn list_dir(path: &str) -> std::io::Result<Vec<DirEntry>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue; // Removed while listing.
        };
        entries.push(DirEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            kind: kind_of(&meta),
            size: meta.len(),
            mode: meta.mode() & 0o7777,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

pub fn stat(path: &str) -> std::io::Result<FileInfo> {
    let meta = Path::new(path).symlink_metadata()?;
    Ok(FileInfo {
        kind: kind_of(&meta),
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        mtime_ms: meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
    })
}

/// The guest's uptime in ms, from /proc/uptime (0 when unreadable).
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |secs| (secs * 1000.0) as u64)
}

/// Parses the `Key:   123 kB` lines of /proc/meminfo.
pub fn meminfo_kb(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

pub fn resource_use(running: u32) -> ResourceUse {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut loads = loadavg
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    ResourceUse {
        mem_total_kb: meminfo_kb(&meminfo, "MemTotal"),
        mem_available_kb: meminfo_kb(&meminfo, "MemAvailable"),
        load_1: loads.next().unwrap_or(0.0),
        load_5: loads.next().unwrap_or(0.0),
        load_15: loads.next().unwrap_or(0.0),
        uptime_ms: uptime_ms(),
        running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_lines_parse() {
        let text =
            "MemTotal:        2017124 kB\nMemFree:          123 kB\nMemAvailable:    1500000 kB\n";
        assert_eq!(meminfo_kb(text, "MemTotal"), 2_017_124);
        assert_eq!(meminfo_kb(text, "MemAvailable"), 1_500_000);
        assert_eq!(meminfo_kb(text, "Missing"), 0);
    }
}
