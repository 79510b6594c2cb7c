//! Tests of the default allowlist's "no setuid/setgid files" rule, through the test interpreter on both
//! architectures: every call that sets a file mode is allowed without S_ISUID/S_ISGID and denied with
//! either, high bits of a 64-bit argument do not hide them, and openat2 (mode in memory) is ENOSYS.

use super::default_tests::{filters, ENOSYS, EPERM};
use super::interpreter_tests::Action;
use super::{default_allowlist, Arch};

const S_ISUID: u64 = 0o4000;
const S_ISGID: u64 = 0o2000;
const S_ISVTX: u64 = 0o1000;
const S_IFREG: u64 = 0o100000;
const S_IFIFO: u64 = 0o010000;
const S_IFSOCK: u64 = 0o140000;
const O_RDONLY: u64 = 0;
const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_EXCL: u64 = 0o200;
const O_TRUNC: u64 = 0o1000;
const O_CLOEXEC: u64 = 0o2000000;
const __O_TMPFILE: u64 = 0o20000000;
const AT_FDCWD: u64 = -100i64 as u64;
const PATH: u64 = 0x7ffc_1234_5000;

/// `O_TMPFILE` is `__O_TMPFILE | O_DIRECTORY`, and O_DIRECTORY differs between the architectures.
fn o_tmpfile(arch: Arch) -> u64 {
    __O_TMPFILE
        | match arch {
            Arch::X86_64 => 0o200000,
            Arch::Aarch64 => 0o40000,
        }
}

/// Modes that must be allowed wherever a mode is set, and modes that must be denied.
const SAFE_MODES: &[u64] = &[0, 0o644, 0o755, 0o777, S_ISVTX | 0o777, 0o700];
const SETID_MODES: &[u64] = &[
    S_ISUID | 0o755,
    S_ISGID | 0o755,
    S_ISUID | S_ISGID | 0o755,
    S_ISUID,
    S_ISGID,
    0o7777,
];

/// A 64-bit mode argument as a caller may pass it: the kernel keeps only the low 16 bits (umode_t).
fn with_high_bits(mode: u64) -> [u64; 4] {
    [
        mode,
        mode | 0xffff_ffff_0000_0000,
        mode | (1 << 32),
        mode | 0xffff_0000,
    ]
}

/// `(syscall, arguments before the mode)` for every call whose mode is an argument.
const MODE_SETTERS: &[(&str, &[u64])] = &[
    ("chmod", &[PATH]),
    ("fchmod", &[3]),
    ("fchmodat", &[AT_FDCWD, PATH]),
    ("fchmodat2", &[AT_FDCWD, PATH]),
    ("creat", &[PATH]),
];

fn args(before: &[u64], mode: u64, after: &[u64]) -> Vec<u64> {
    let mut out = before.to_vec();
    out.push(mode);
    out.extend_from_slice(after);
    out
}

#[test]
fn chmod_family_and_creat_allow_plain_modes_and_deny_setid_bits() {
    for f in filters() {
        for &(name, before) in MODE_SETTERS.iter().filter(|(n, _)| f.exists(n)) {
            for &mode in SAFE_MODES {
                assert_eq!(
                    f.call(name, &args(before, mode, &[0])),
                    Action::Allow,
                    "{name}({mode:#o}) on {:?}",
                    f.arch
                );
            }
            for &mode in SETID_MODES {
                for arg in with_high_bits(mode) {
                    assert_eq!(
                        f.call(name, &args(before, arg, &[0])),
                        EPERM,
                        "{name}({arg:#x}) on {:?}",
                        f.arch
                    );
                }
            }
        }
        // High bits alone are truncated away by the kernel, so they change nothing either way.
        assert_eq!(
            f.call("fchmodat", &[AT_FDCWD, PATH, 0xffff_ffff_0000_0000 | 0o755]),
            Action::Allow
        );
    }
    // Every one of them exists on x86_64, and the *at forms on aarch64 too.
    let x86 = &filters()[0];
    assert!(MODE_SETTERS.iter().all(|(n, _)| x86.exists(n)));
}

#[test]
fn mknod_makes_fifos_and_sockets_but_no_setid_files() {
    for f in filters() {
        for (name, before) in [("mknod", &[PATH][..]), ("mknodat", &[AT_FDCWD, PATH][..])] {
            if !f.exists(name) {
                continue;
            }
            for kind in [S_IFIFO, S_IFSOCK, S_IFREG] {
                assert_eq!(
                    f.call(name, &args(before, kind | 0o644, &[0])),
                    Action::Allow,
                    "{name}({:#o}) on {:?}",
                    kind | 0o644,
                    f.arch
                );
                for &mode in SETID_MODES {
                    for arg in with_high_bits(kind | mode) {
                        assert_eq!(
                            f.call(name, &args(before, arg, &[0])),
                            EPERM,
                            "{name}({arg:#x}) on {:?}",
                            f.arch
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn open_ignores_the_mode_unless_it_creates() {
    for f in filters() {
        let tmpfile = o_tmpfile(f.arch);
        for (name, before) in [("open", &[PATH][..]), ("openat", &[AT_FDCWD, PATH][..])] {
            if !f.exists(name) {
                continue;
            }
            let call = |flags: u64, mode: u64| f.call(name, &args(before, flags, &[mode]));
            let at =
                |flags: u64, mode: u64| format!("{name}({flags:#o}, {mode:#x}) on {:?}", f.arch);
            // Not creating: the mode argument is garbage the kernel ignores.
            for flags in [O_RDONLY, O_WRONLY | O_TRUNC, O_RDWR | O_CLOEXEC, O_EXCL] {
                for mode in [0, 0o644, S_ISUID | 0o755, 0o7777, u64::MAX] {
                    assert_eq!(call(flags, mode), Action::Allow, "{}", at(flags, mode));
                }
            }
            // Creating: plain modes only.
            for flags in [
                O_CREAT | O_WRONLY,
                O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC,
                O_CREAT | O_EXCL | O_RDWR,
                tmpfile | O_RDWR,
                __O_TMPFILE | O_WRONLY,
            ] {
                for &mode in SAFE_MODES {
                    assert_eq!(call(flags, mode), Action::Allow, "{}", at(flags, mode));
                }
                for &mode in SETID_MODES {
                    for arg in with_high_bits(mode) {
                        assert_eq!(call(flags, arg), EPERM, "{}", at(flags, arg));
                    }
                }
            }
            // The kernel reads flags as int: high bits neither hide O_CREAT nor stand in for it.
            for high in [1 << 32, 0xffff_ffff_0000_0000] {
                assert_eq!(call(high | O_CREAT, S_ISUID | 0o755), EPERM);
                assert_eq!(call(high | __O_TMPFILE, S_ISGID | 0o755), EPERM);
                assert_eq!(call(high | O_RDONLY, S_ISUID | 0o755), Action::Allow);
            }
        }
    }
}

#[test]
fn openat2_is_enosys_so_callers_fall_back_to_openat() {
    for f in filters() {
        assert_eq!(
            f.call("openat2", &[AT_FDCWD, PATH, PATH + 0x100, 24]),
            ENOSYS
        );
        assert_eq!(f.call("openat2", &[0; 6]), ENOSYS);
    }
}

#[test]
fn the_conditions_are_documented_as_denials() {
    let denials = default_allowlist().unwrap().denials();
    let unless = |name: &str| {
        denials
            .iter()
            .find(|d| d.syscall == name)
            .and_then(|d| d.unless.clone())
            .unwrap_or_else(|| panic!("{name} is not documented"))
    };
    assert_eq!(
        unless("chmod"),
        "arg1 & (S_ISUID|S_ISGID) == 0 (low 32 bits)"
    );
    assert_eq!(
        unless("openat"),
        "arg2 & (O_CREAT|__O_TMPFILE) == 0 (low 32 bits) or arg3 & (S_ISUID|S_ISGID) == 0 (low 32 bits)"
    );
    let openat2 = denials.iter().find(|d| d.syscall == "openat2").unwrap();
    assert_eq!(openat2.errno.name(), "ENOSYS");
}
