//! KVM or TCG. `/dev/kvm` can exist and open yet not run guests (a nested PVM variant here: the
//! guest hangs or faults), so the verdict comes from booting the real kernel + agent under KVM
//! with a hard deadline; it is cached in [`VERDICT_FILE`].

use std::path::Path;
use std::time::Duration;

use crate::qemu::Accel;
use crate::vm::{Vm, VmSpec};

/// The cached verdict: `kvm` or `tcg: <reason>`.
pub const VERDICT_FILE: &str = "/run/agentbox/microvm-accel";

/// How long a KVM probe boot may take before KVM is declared unusable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Parses a cached verdict.
pub fn parse_verdict(s: &str) -> Option<Accel> {
    let s = s.trim();
    if s == "kvm" {
        Some(Accel::Kvm)
    } else if s == "tcg" || s.starts_with("tcg:") {
        Some(Accel::Tcg)
    } else {
        None
    }
}

/// The accelerator to use, from [`VERDICT_FILE`] when present, else probed and cached.
pub fn probe_kvm(kernel: &Path, initramfs: &Path) -> Accel {
    probe_kvm_cached(kernel, initramfs, Path::new(VERDICT_FILE))
}

/// [`probe_kvm`] with the verdict cached at `verdict_file`.
pub fn probe_kvm_cached(kernel: &Path, initramfs: &Path, verdict_file: &Path) -> Accel {
    if let Some(accel) = std::fs::read_to_string(verdict_file)
        .ok()
        .and_then(|s| parse_verdict(&s))
    {
        return accel;
    }
    let (accel, verdict) = match probe(kernel, initramfs) {
        Ok(()) => (Accel::Kvm, "kvm".to_string()),
        Err(reason) => (Accel::Tcg, format!("tcg: {}", reason.replace('\n', " "))),
    };
    if let Some(dir) = verdict_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(verdict_file, format!("{verdict}\n"));
    accel
}

/// Boots the agent from the initramfs alone under KVM; Ok when it says hello within
/// [`PROBE_TIMEOUT`]. The VM is killed and its state removed either way (by `Vm`'s drop).
fn probe(kernel: &Path, initramfs: &Path) -> Result<(), String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Err(format!("/dev/kvm: {e}"));
    }
    let mut spec = VmSpec::new(
        &format!("kvm-probe-{}", std::process::id()),
        kernel,
        initramfs,
    );
    spec.accel = Accel::Kvm;
    spec.memory_mib = 128;
    spec.boot_timeout = PROBE_TIMEOUT;
    match Vm::boot(spec) {
        Ok(mut vm) => {
            vm.kill();
            Ok(())
        }
        Err(e) => {
            let mut reason: String = e
                .to_string()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("---"))
                .collect::<Vec<_>>()
                .join("; ");
            reason.truncate(400);
            Err(format!("KVM boot failed: {reason}"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn verdicts_parse() {
        assert_eq!(parse_verdict("kvm\n"), Some(Accel::Kvm));
        assert_eq!(
            parse_verdict("tcg: /dev/kvm: No such file"),
            Some(Accel::Tcg)
        );
        assert_eq!(parse_verdict("tcg"), Some(Accel::Tcg));
        assert_eq!(parse_verdict(""), None);
        assert_eq!(parse_verdict("hvf"), None);
    }

    #[test]
    fn cached_verdict_is_used_without_probing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("accel");
        std::fs::write(&f, "tcg: test\n").unwrap();
        assert_eq!(
            probe_kvm_cached(Path::new("/nonexistent"), Path::new("/nonexistent"), &f),
            Accel::Tcg
        );
        std::fs::write(&f, "kvm\n").unwrap();
        assert_eq!(
            probe_kvm_cached(Path::new("/nonexistent"), Path::new("/nonexistent"), &f),
            Accel::Kvm
        );
    }
}
