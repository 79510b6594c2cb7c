//! Probes of the host-wide kernel files core_pattern, sysrq-trigger and uevent_helper: each is
//! opened write-only and closed without a byte written. When the sandbox does not mount the
//! filesystem holding one, the probe looks in a fresh mount of it under the scratch directory.

use std::path::Path;

use super::kernel::{errno_name, io_errno, masked, open_for_writing, with_fresh_mount};
use super::kernel_env::{errno, refused_open_by};
use super::kernel_mounts::not_applicable;
use crate::{Context, Outcome, Verdict};

/// A host-wide kernel file that must not be writable from the sandbox.
struct KernelFile {
    id: &'static str,
    /// Where its filesystem is normally mounted (`/proc`), and the file below it.
    fs_root: &'static str,
    relative: &'static str,
    /// A directory below `fs_root` whose presence shows the filesystem is mounted.
    marker: &'static str,
    fstype: &'static str,
    /// What the file's absence from a mounted filesystem means.
    absent_means: &'static str,
}

/// Whether the file opens for writing; when it is absent because its filesystem is not mounted
/// in the sandbox, looks in a fresh mount of that filesystem under scratch instead.
fn writable_file_probe(context: &Context, f: &KernelFile) -> Outcome {
    let path = Path::new(f.fs_root).join(f.relative);
    let attempted = format!(
        "open(\"{}\", O_WRONLY), closed without writing",
        path.display()
    );
    let judge = |result: std::io::Result<std::fs::Metadata>, place: &str| -> Outcome {
        match result {
            Ok(meta) => match masked(&meta) {
                None => Outcome::new(f.id, Verdict::Escaped, attempted.clone())
                    .observed(format!("opened for writing{place}; nothing written")),
                Some(why) => Outcome::new(f.id, Verdict::Blocked, attempted.clone()).observed(
                    format!("opened, but it is not the kernel's file: {why}{place}"),
                ),
            },
            Err(e) if io_errno(&e) == errno::ENOENT => not_applicable(
                f.id,
                attempted.clone(),
                format!("{}{place}", f.absent_means),
            ),
            Err(e) => {
                let n = io_errno(&e);
                let verdict = if matches!(n, errno::EACCES | errno::EPERM | errno::EROFS) {
                    Verdict::Blocked
                } else {
                    Verdict::Inconclusive
                };
                Outcome::new(f.id, verdict, attempted.clone())
                    .errno(Some(errno_name(n)))
                    .observed(format!("refused{place}: {}", refused_open_by(n)))
            }
        }
    };
    let direct = open_for_writing(&path);
    let missing = matches!(&direct, Err(e) if io_errno(e) == errno::ENOENT);
    if !missing || Path::new(f.fs_root).join(f.marker).is_dir() {
        return judge(direct, "");
    }
    match with_fresh_mount(context, f.fstype, |dir| {
        open_for_writing(&dir.join(f.relative))
    }) {
        Ok(result) => judge(
            result,
            &format!(
                " (in a fresh {} mount under scratch, {} being absent)",
                f.fstype, f.fs_root
            ),
        ),
        Err((why, errno)) => not_applicable(
            f.id,
            attempted.clone(),
            format!(
                "{} is absent and {} is not mountable: {why}",
                path.display(),
                f.fstype
            ),
        )
        .errno(errno.map(errno_name)),
    }
}

pub(super) fn core_pattern(context: &Context) -> Outcome {
    let outcome = writable_file_probe(
        context,
        &KernelFile {
            id: "core_pattern",
            fs_root: "/proc",
            relative: "sys/kernel/core_pattern",
            marker: "sys/kernel",
            fstype: "proc",
            absent_means: "this kernel has no core_pattern",
        },
    );
    match std::fs::read_to_string("/proc/sys/kernel/core_pattern") {
        Ok(v) => outcome.evidence(format!("core_pattern = {}", v.trim())),
        Err(_) => outcome,
    }
}

pub(super) fn sysrq_trigger(context: &Context) -> Outcome {
    writable_file_probe(
        context,
        &KernelFile {
            id: "sysrq_trigger",
            fs_root: "/proc",
            relative: "sysrq-trigger",
            marker: "sys",
            fstype: "proc",
            absent_means: "this kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ unset)",
        },
    )
}

pub(super) fn uevent_helper(context: &Context) -> Outcome {
    writable_file_probe(
        context,
        &KernelFile {
            id: "uevent_helper",
            fs_root: "/sys",
            relative: "kernel/uevent_helper",
            marker: "kernel",
            fstype: "sysfs",
            absent_means: "this kernel has no uevent_helper (CONFIG_UEVENT_HELPER unset)",
        },
    )
}
