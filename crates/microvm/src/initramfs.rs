//! The guest's initramfs: a cpio "newc" archive holding the agent as `/init` plus the few
//! directories and the console node PID 1 needs before it mounts anything. Written in Rust (no
//! `cpio` tool) and cached by the agent binary's sha256.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where built initramfs archives are cached (`<sha256 of the agent>.cpio`).
pub const DEFAULT_CACHE: &str = "/var/cache/agentbox/initramfs";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    Dir {
        path: &'a str,
        mode: u32,
    },
    File {
        path: &'a str,
        mode: u32,
        data: &'a [u8],
    },
    CharDev {
        path: &'a str,
        mode: u32,
        major: u32,
        minor: u32,
    },
}

/// Writes the "newc" archive of `entries` (paths without a leading `/`, parents before children)
/// followed by the `TRAILER!!!` record.
pub fn write_newc(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match entry {
            Entry::Dir { path, mode } => header(&mut out, ino, path, S_IFDIR | mode, 2, &[], 0, 0),
            Entry::File { path, mode, data } => {
                header(&mut out, ino, path, S_IFREG | mode, 1, data, 0, 0)
            }
            Entry::CharDev {
                path,
                mode,
                major,
                minor,
            } => header(&mut out, ino, path, S_IFCHR | mode, 1, &[], *major, *minor),
        }
    }
    header(&mut out, 0, "TRAILER!!!", 0, 1, &[], 0, 0);
    out
}

#[allow(clippy::too_many_arguments)]
fn header(
    out: &mut Vec<u8>,
    ino: u32,
    path: &str,
    mode: u32,
    nlink: u32,
    data: &[u8],
    rmajor: u32,
    rminor: u32,
) {
    let name = path.trim_start_matches('/');
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime: fixed, so the archive is reproducible
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rmajor,
        rminor,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The archive for the agent binary `agent`.
pub fn agent_initramfs(agent: &[u8]) -> Vec<u8> {
    write_newc(&[
        Entry::File {
            path: "init",
            mode: 0o755,
            data: agent,
        },
        Entry::Dir {
            path: "dev",
            mode: 0o755,
        },
        Entry::CharDev {
            path: "dev/console",
            mode: 0o600,
            major: 5,
            minor: 1,
        },
        Entry::Dir {
            path: "proc",
            mode: 0o555,
        },
        Entry::Dir {
            path: "sys",
            mode: 0o555,
        },
        Entry::Dir {
            path: "tmp",
            mode: 0o1777,
        },
        Entry::Dir {
            path: "mnt",
            mode: 0o755,
        },
    ])
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Returns the cached initramfs for the agent binary at `agent`, building it into
/// `cache_dir/<sha256>.cpio` (temp file + rename) when missing.
pub fn cached_initramfs(agent: &Path, cache_dir: &Path) -> io::Result<PathBuf> {
    let binary = std::fs::read(agent)?;
    let path = cache_dir.join(format!("{}.cpio", sha256_hex(&binary)));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache_dir)?;
    let tmp = cache_dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, agent_initramfs(&binary))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A minimal newc reader: (name, mode, rdev major, minor, data).
    fn parse(mut a: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 0usize;
        loop {
            assert_eq!(&a[..6], b"070701", "magic at {off}");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name_end = 110 + namesize as usize;
            let name = std::str::from_utf8(&a[110..name_end - 1])
                .unwrap()
                .to_string();
            assert_eq!(a[name_end - 1], 0);
            let data_start = name_end.div_ceil(4) * 4;
            let data_end = data_start + size as usize;
            let next = data_end.div_ceil(4) * 4;
            let data = a[data_start..data_end].to_vec();
            off += next;
            a = &a[next..];
            if name == "TRAILER!!!" {
                assert!(a.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push((name, mode, rmaj, rmin, data));
        }
    }

    #[test]
    fn agent_archive_has_the_expected_members() {
        let archive = agent_initramfs(b"\x7fELF-ish binary");
        assert_eq!(archive.len() % 4, 0);
        let members = parse(&archive);
        let names: Vec<_> = members.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            names,
            ["init", "dev", "dev/console", "proc", "sys", "tmp", "mnt"]
        );
        assert_eq!(members[0].1, 0o100_755);
        assert_eq!(members[0].4, b"\x7fELF-ish binary");
        assert_eq!(members[1].1, 0o040_755);
        assert_eq!(
            (members[2].1, members[2].2, members[2].3),
            (0o020_600, 5, 1)
        );
        assert_eq!(members[5].1, 0o041_777);
    }

    #[test]
    fn padding_is_right_for_every_name_and_size_mod_4() {
        for n in 0..4 {
            for len in 0..5 {
                let name = "a".repeat(n + 1);
                let data = vec![7u8; len];
                let archive = write_newc(&[Entry::File {
                    path: &name,
                    mode: 0o644,
                    data: &data,
                }]);
                let members = parse(&archive);
                assert_eq!(members.len(), 1);
                assert_eq!(members[0].0, name);
                assert_eq!(members[0].4, data);
            }
        }
    }

    #[test]
    fn archive_is_reproducible_and_cached_by_hash() {
        assert_eq!(agent_initramfs(b"x"), agent_initramfs(b"x"));
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"binary").unwrap();
        let cache = dir.path().join("cache");
        let a = cached_initramfs(&agent, &cache).unwrap();
        assert_eq!(
            a.file_name().unwrap().to_str().unwrap(),
            format!("{}.cpio", sha256_hex(b"binary"))
        );
        assert_eq!(std::fs::read(&a).unwrap(), agent_initramfs(b"binary"));
        assert_eq!(cached_initramfs(&agent, &cache).unwrap(), a);
    }
}
