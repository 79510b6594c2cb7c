//! Device access: creating a device node, and opening the kernel log, physical memory and the
//! hypervisor. A device missing from the sandbox's /dev is tried again as a node made under the
//! scratch directory; every node made here is removed at once. Nothing is read from /dev/mem.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use agentbox_sys::{attempt_fs, fd};

use super::errno;
use super::fs::{no_scratch, scratch_path};
use crate::{Context, Outcome, Verdict};

/// How a device open went: the file and the path it was opened as, or the failures.
struct DeviceOpen {
    file: Option<(File, String)>,
    /// The errno that decided a failure (the direct open's, or the node's when there is no device).
    errno: Option<String>,
    /// What was tried, one line.
    notes: Vec<String>,
}

#[derive(Clone, Copy)]
enum Access {
    Read,
    ReadNonBlocking,
    ReadWrite,
}

fn open_as(path: &Path, access: Access) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    match access {
        Access::Read => {}
        Access::ReadNonBlocking => {
            options.custom_flags(attempt_fs::O_NONBLOCK);
        }
        Access::ReadWrite => {
            options.write(true);
        }
    }
    options.open(path)
}

/// Opens `device`; when that fails, makes a node `major:minor` under the scratch directory and
/// opens that (removing the node right after).
fn open_device(
    context: &Context,
    device: &str,
    (major, minor): (u32, u32),
    access: Access,
) -> DeviceOpen {
    let mut result = DeviceOpen {
        file: None,
        errno: None,
        notes: Vec::new(),
    };
    let direct_missing = match open_as(Path::new(device), access) {
        Ok(file) => {
            result.file = Some((file, device.to_string()));
            return result;
        }
        Err(e) => {
            result.errno = errno::of_io(&e);
            result.notes.push(format!(
                "open {device}: {}",
                result.errno.clone().unwrap_or_default()
            ));
            e.kind() == std::io::ErrorKind::NotFound
        }
    };
    let Some(node) = scratch_path(context, &format!("dev-{major}-{minor}")) else {
        return result;
    };
    let what = format!("mknod {} c {major} {minor}", node.display());
    let (step, node_errno) = match attempt_fs::mknod_char(&node, major, minor) {
        Err(e) => ("mknod", errno::of_sys(&e)),
        Ok(()) => {
            let opened = open_as(&node, access);
            let _ = std::fs::remove_file(&node);
            match opened {
                Ok(file) => {
                    result.file = Some((file, format!("a node made with {what}")));
                    return result;
                }
                Err(e) => ("open of the node", errno::of_io(&e)),
            }
        }
    };
    result.notes.push(format!(
        "{what}: {step} failed with {}",
        node_errno.clone().unwrap_or_default()
    ));
    if direct_missing {
        result.errno = node_errno;
    }
    result
}

/// The outcome of a device that could not be opened. ENXIO/ENODEV mean the kernel has no driver
/// behind the number: nothing to block.
fn failed(id: &str, attempted: &str, open: DeviceOpen) -> Outcome {
    let no_driver = matches!(open.errno.as_deref(), Some("ENXIO" | "ENODEV"));
    let (verdict, suffix) = if no_driver {
        (
            Verdict::NotApplicable,
            "; the kernel has no driver for this device",
        )
    } else {
        (Verdict::Blocked, "")
    };
    let observation = format!("{}{suffix}", open.notes.join("; "));
    Outcome::new(id, verdict, attempted)
        .errno(open.errno)
        .observed(observation)
}

pub(super) fn mknod(context: &Context) -> Outcome {
    const ID: &str = "mknod";
    let attempted = "mknod(<scratch>/null, S_IFCHR, 1:3) and open it read-write";
    let Some(node) = scratch_path(context, "null") else {
        return no_scratch(ID, attempted);
    };
    if let Err(e) = attempt_fs::mknod_char(&node, 1, 3) {
        return Outcome::new(ID, Verdict::Blocked, attempted)
            .errno(errno::of_sys(&e))
            .observed("mknod failed");
    }
    let opened = open_as(&node, Access::ReadWrite);
    let _ = std::fs::remove_file(&node);
    match opened {
        Ok(_) => Outcome::new(ID, Verdict::Escaped, attempted)
            .observed("made a device node and opened it"),
        Err(e) => Outcome::new(ID, Verdict::Blocked, attempted)
            .errno(errno::of_io(&e))
            .observed("the node was made but cannot be opened (nodev or device cgroup)"),
    }
}

pub(super) fn dev_kmsg(context: &Context) -> Outcome {
    const ID: &str = "dev_kmsg";
    let attempted =
        "open /dev/kmsg (or a node 1:11 under scratch) O_RDONLY|O_NONBLOCK, read one record";
    let open = open_device(context, "/dev/kmsg", (1, 11), Access::ReadNonBlocking);
    let Some((file, via)) = open.file else {
        return failed(ID, attempted, open);
    };
    let mut buf = vec![0u8; 8192];
    let mut last = None;
    // EPIPE: the record at our position was overwritten; the next read returns the next one.
    for _ in 0..3 {
        match fd::read(file.as_raw_fd(), &mut buf) {
            Ok(n) if n > 0 => {
                let record = String::from_utf8_lossy(&buf[..n]);
                let record: String = record.trim_end().chars().take(200).collect();
                return Outcome::new(ID, Verdict::Escaped, attempted)
                    .observed(format!("read a kernel log record through {via}"))
                    .evidence(record);
            }
            Ok(_) => break,
            Err(e) if errno::of_sys(&e).as_deref() == Some("EPIPE") => last = errno::of_sys(&e),
            Err(e) => {
                last = errno::of_sys(&e);
                break;
            }
        }
    }
    Outcome::new(ID, Verdict::Inconclusive, attempted)
        .errno(last)
        .observed(format!("opened {via}, but read no record"))
}

pub(super) fn dev_mem(context: &Context) -> Outcome {
    const ID: &str = "dev_mem";
    let attempted = "open /dev/mem (or a node 1:1 under scratch) O_RDONLY; nothing is read";
    let open = open_device(context, "/dev/mem", (1, 1), Access::Read);
    match open.file {
        Some((_, via)) => Outcome::new(ID, Verdict::Escaped, attempted)
            .observed(format!("opened {via} (physical memory; not read)")),
        None => failed(ID, attempted, open),
    }
}

pub(super) fn dev_kvm(context: &Context) -> Outcome {
    const ID: &str = "dev_kvm";
    let attempted = "open /dev/kvm (or a node 10:232 under scratch) O_RDWR";
    let open = open_device(context, "/dev/kvm", (10, 232), Access::ReadWrite);
    match open.file {
        Some((_, via)) => {
            Outcome::new(ID, Verdict::Escaped, attempted).observed(format!("opened {via}"))
        }
        None => failed(ID, attempted, open),
    }
}
