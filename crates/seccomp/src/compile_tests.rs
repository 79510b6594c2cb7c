//! Compiler tests: small allowlists compiled for both architectures and run through the test interpreter,
//! compared with a direct reading of the allowlist ([`expected`]).

use std::collections::HashMap;

use super::interpreter_tests::{action, check, Action, SeccompData};
use super::{compile, parse_allowlist, Allowlist, Arch, ArgCheck, ArgOp, ArgWidth};

/// What the allowlist says must happen to a syscall, read directly from the data model without BPF.
pub(super) struct Reference<'a> {
    arch: Arch,
    default: Action,
    returns: HashMap<u32, Action>,
    conditional: HashMap<u32, Vec<&'a [ArgCheck]>>,
}

impl<'a> Reference<'a> {
    pub fn new(list: &'a Allowlist, arch: Arch) -> Self {
        let nr = |name: &str| arch.syscall_number(name);
        let mut returns = HashMap::new();
        for group in list.allow() {
            returns.extend(
                group
                    .syscalls
                    .iter()
                    .filter_map(|n| nr(n))
                    .map(|nr| (nr, Action::Allow)),
            );
        }
        for group in list.deny() {
            let errno = Action::Errno(group.errno.number());
            returns.extend(
                group
                    .syscalls
                    .iter()
                    .filter_map(|n| nr(n))
                    .map(|nr| (nr, errno)),
            );
        }
        let mut conditional: HashMap<u32, Vec<&'a [ArgCheck]>> = HashMap::new();
        for entry in list.allow_if() {
            if let Some(nr) = nr(&entry.syscall) {
                conditional.entry(nr).or_default().push(&entry.checks);
            }
        }
        Reference {
            arch,
            default: Action::Errno(list.default_errno().number()),
            returns,
            conditional,
        }
    }

    pub fn expected(&self, data: &SeccompData) -> Action {
        if data.arch != self.arch.audit_arch()
            || (self.arch == Arch::X86_64 && data.nr & 0x4000_0000 != 0)
        {
            return Action::KillProcess;
        }
        if let Some(action) = self.returns.get(&data.nr) {
            return *action;
        }
        let alternatives = self
            .conditional
            .get(&data.nr)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if alternatives
            .iter()
            .any(|checks| checks.iter().all(|c| holds(c, &data.args)))
        {
            return Action::Allow;
        }
        self.default
    }
}

/// [`Reference::expected`] for one call.
pub(super) fn expected(list: &Allowlist, arch: Arch, data: &SeccompData) -> Action {
    Reference::new(list, arch).expected(data)
}

fn holds(check: &ArgCheck, args: &[u64; 6]) -> bool {
    let arg = args[usize::from(check.index)];
    let arg = match check.width {
        ArgWidth::Bits64 => arg,
        ArgWidth::Low32 => arg & 0xffff_ffff,
    };
    match &check.op {
        ArgOp::Eq(v) => arg == *v,
        ArgOp::Ne(v) => arg != *v,
        ArgOp::MaskedEq { mask, value } => arg & mask == *value,
        ArgOp::In(values) => values.contains(&arg),
    }
}

/// A deterministic xorshift generator, so "random" inputs are reproducible.
pub(super) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Argument values worth trying against conditions that use `constants`: each constant, its neighbours,
/// with and without high bits, and random values.
pub(super) fn interesting_values(constants: &[u64], rng: &mut Rng) -> Vec<u64> {
    let mut out = vec![
        0,
        1,
        u64::from(u32::MAX),
        u64::MAX,
        0xffff_ffff_0000_0000,
        1 << 32,
    ];
    for &c in constants {
        for v in [
            c,
            c.wrapping_add(1),
            c.wrapping_sub(1),
            c | 0xffff_ffff_0000_0000,
            c | (1 << 32),
            c & 0xffff_ffff,
        ] {
            out.push(v);
        }
    }
    out.extend((0..8).map(|_| rng.next()));
    out.extend((0..8).map(|_| rng.next() & 0xffff_ffff));
    // Conditions repeat constants (S_ISUID|S_ISGID on every mode-setting call): try each value once.
    out.sort_unstable();
    out.dedup();
    out
}

/// Every constant a condition in `list` mentions.
pub(super) fn constants_of(list: &Allowlist) -> Vec<u64> {
    let mut out = Vec::new();
    for entry in list.allow_if() {
        for check in &entry.checks {
            match &check.op {
                ArgOp::Eq(v) | ArgOp::Ne(v) => out.push(*v),
                ArgOp::MaskedEq { mask, value } => {
                    out.extend([*mask, *value, mask | value, mask ^ 0xffff_ffff]);
                    out.extend((0..64).filter(|b| mask & (1 << b) != 0).map(|b| 1u64 << b));
                }
                ArgOp::In(values) => out.extend(values),
            }
        }
    }
    out
}

/// Compares the compiled program with [`expected`] for every syscall the list names, over argument
/// combinations built from `values` in each argument position the conditions use.
pub(super) fn assert_matches_reference(list: &Allowlist, arch: Arch, values: &[u64]) {
    let program = compile(list, arch).unwrap();
    check(&program).unwrap();
    let reference = Reference::new(list, arch);
    for entry in list.allow_if() {
        let Some(nr) = arch.syscall_number(&entry.syscall) else {
            continue;
        };
        let indexes: Vec<usize> = entry.checks.iter().map(|c| usize::from(c.index)).collect();
        for &v in values {
            for &w in values.iter().step_by(7) {
                let mut args = [0u64; 6];
                for (i, &index) in indexes.iter().enumerate() {
                    args[index] = if i % 2 == 0 { v } else { w };
                }
                let data = SeccompData {
                    args,
                    ..SeccompData::new(arch, nr, &[])
                };
                assert_eq!(
                    action(&program, &data),
                    reference.expected(&data),
                    "{} {args:x?} on {arch:?}",
                    entry.syscall
                );
            }
        }
    }
}

fn list(text: &str) -> Allowlist {
    parse_allowlist(text).unwrap()
}

#[test]
fn program_checks_arch_first_and_kills_on_mismatch() {
    let list = list("default_errno = \"EPERM\"\n[[allow]]\nsyscalls = [\"read\"]\nwhy = \"r\"\n");
    for arch in Arch::ALL {
        let program = compile(&list, arch).unwrap();
        assert_eq!(
            (program[0].code, program[0].k),
            (0x20, 4),
            "first instruction loads seccomp_data.arch"
        );
        assert_eq!((program[1].code, program[1].k), (0x15, arch.audit_arch()));
        let read = arch.syscall_number("read").unwrap();
        assert_eq!(
            action(&program, &SeccompData::new(arch, read, &[])),
            Action::Allow
        );
        for other in [
            0,
            0x4000_0003,
            Arch::AUDIT_ARCH_X86_64 ^ Arch::AUDIT_ARCH_AARCH64 ^ arch.audit_arch(),
        ] {
            let data = SeccompData {
                arch: other,
                ..SeccompData::new(arch, read, &[])
            };
            assert_eq!(
                action(&program, &data),
                Action::KillProcess,
                "arch {other:#x}"
            );
        }
    }
}

#[test]
fn x32_numbers_are_killed_on_x86_64() {
    let list = list(
        "default_errno = \"EPERM\"\n[[allow]]\nsyscalls = [\"read\", \"write\"]\nwhy = \"io\"\n",
    );
    let program = compile(&list, Arch::X86_64).unwrap();
    for nr in [0x4000_0000, 0x4000_0001, 0xffff_ffff] {
        assert_eq!(
            action(&program, &SeccompData::new(Arch::X86_64, nr, &[])),
            Action::KillProcess,
            "{nr:#x}"
        );
    }
    // On aarch64 there is no x32: such numbers are merely unknown.
    let program = compile(&list, Arch::Aarch64).unwrap();
    assert_eq!(
        action(&program, &SeccompData::new(Arch::Aarch64, 0x4000_0000, &[])),
        Action::Errno(1)
    );
}

#[test]
fn every_number_gets_its_rule_on_both_arches() {
    let list = list(
        r#"
default_errno = "EACCES"
[[allow]]
syscalls = ["read", "write", "open", "getpid", "exit_group", "file_setattr"]
why = "w"
[[deny]]
syscalls = ["clone3", "mount"]
errno = "ENOSYS"
why = "w"
[[allow_if]]
syscall = "ioctl"
why = "w"
args = [{ index = 1, op = "ne", value = "TIOCSTI", width = 32 }]
"#,
    );
    for arch in Arch::ALL {
        let program = compile(&list, arch).unwrap();
        for nr in (0..1100).chain([0x3fff_ffff, 0x8000_0000, u32::MAX]) {
            let data = SeccompData::new(arch, nr, &[3, 0x5401]);
            assert_eq!(
                action(&program, &data),
                expected(&list, arch, &data),
                "nr {nr} on {arch:?}"
            );
        }
    }
}

#[test]
fn comparisons_use_both_halves_unless_width_32() {
    let list = list(
        r#"
default_errno = "EPERM"
[[allow_if]]
syscall = "read"
why = "eq 64"
args = [{ index = 0, op = "eq", value = "0x1_0000_0005" }]
[[allow_if]]
syscall = "write"
why = "ne 64"
args = [{ index = 2, op = "ne", value = 5 }]
[[allow_if]]
syscall = "ioctl"
why = "ne 32"
args = [{ index = 1, op = "ne", value = "TIOCSTI", width = 32 }, { index = 1, op = "ne", value = "TIOCLINUX", width = 32 }]
[[allow_if]]
syscall = "close"
why = "masked 64"
args = [{ index = 0, op = "masked_eq", mask = "0xff00_0000_0000_00ff", value = "0x1200_0000_0000_0034" }]
[[allow_if]]
syscall = "clone"
why = "masked 32"
args = [{ index = 0, op = "masked_eq", mask = "CLONE_NEWUSER|CLONE_NEWNS", value = 0, width = 32 }]
[[allow_if]]
syscall = "socket"
why = "in 64"
args = [{ index = 0, op = "in", values = ["AF_UNIX", "AF_INET", "0x7_0000_0000"] }]
[[allow_if]]
syscall = "socket"
why = "second alternative"
args = [{ index = 0, op = "eq", value = "AF_NETLINK" }, { index = 2, op = "eq", value = "NETLINK_ROUTE" }]
[[allow_if]]
syscall = "personality"
why = "in 32"
args = [{ index = 0, op = "in", values = [0, 8, "0xffffffff"], width = 32 }]
[[allow_if]]
syscall = "lseek"
why = "zero mask always matches"
args = [{ index = 3, op = "masked_eq", mask = 0, value = 0 }]
"#,
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let values = interesting_values(&constants_of(&list), &mut rng);
    for arch in Arch::ALL {
        assert_matches_reference(&list, arch, &values);
        let program = compile(&list, arch).unwrap();
        let ioctl = arch.syscall_number("ioctl").unwrap();
        let run = |nr, args: &[u64]| action(&program, &SeccompData::new(arch, nr, args));
        assert_eq!(run(ioctl, &[1, 0xffff_ffff_0000_5412]), Action::Errno(1));
        assert_eq!(run(ioctl, &[1, 0x5401]), Action::Allow);
        let read = arch.syscall_number("read").unwrap();
        assert_eq!(
            run(read, &[5]),
            Action::Errno(1),
            "high half must be compared too"
        );
        assert_eq!(run(read, &[0x1_0000_0005]), Action::Allow);
    }
}

#[test]
fn far_jumps_go_through_trampolines() {
    // One `in` with 400 values makes a conditional block far longer than an 8-bit jump can cross, and
    // 150 allowed syscalls with gaps make a deep search tree.
    let values: Vec<String> = (0..400u64)
        .map(|i| format!("\"{:#x}\"", i * 0x1_0000_0001 + 3))
        .collect();
    let mut names = Vec::new();
    for (i, nr) in (0..450u32).step_by(3).enumerate() {
        if let Some(name) = syscalls::x86_64::Sysno::new(nr as usize) {
            if i % 2 == 0 && name.name() != "ioctl" && name.name() != "socket" {
                names.push(format!("\"{}\"", name.name()));
            }
        }
    }
    let text = format!(
        "default_errno = \"EPERM\"\n[[allow]]\nsyscalls = [{}]\nwhy = \"many\"\n\
         [[allow_if]]\nsyscall = \"ioctl\"\nwhy = \"long\"\nargs = [{{ index = 1, op = \"in\", values = [{}] }}]\n\
         [[allow_if]]\nsyscall = \"socket\"\nwhy = \"after\"\nargs = [{{ index = 0, op = \"eq\", value = 2 }}]\n",
        names.join(", "),
        values.join(", ")
    );
    let list = list(&text);
    for arch in Arch::ALL {
        let program = compile(&list, arch).unwrap();
        check(&program).unwrap();
        assert!(
            program.iter().any(|i| i.code == 0x05),
            "expected at least one ja trampoline"
        );
        for nr in 0..500 {
            let data = SeccompData::new(arch, nr, &[2, 3]);
            assert_eq!(
                action(&program, &data),
                expected(&list, arch, &data),
                "nr {nr}"
            );
        }
        let ioctl = arch.syscall_number("ioctl").unwrap();
        for i in [0u64, 1, 199, 398, 399, 400] {
            let arg = i * 0x1_0000_0001 + 3;
            let data = SeccompData::new(arch, ioctl, &[0, arg]);
            let want = if i < 400 {
                Action::Allow
            } else {
                Action::Errno(1)
            };
            assert_eq!(action(&program, &data), want, "value {arg:#x}");
            let data = SeccompData::new(arch, ioctl, &[0, arg ^ (1 << 40)]);
            assert_eq!(
                action(&program, &data),
                Action::Errno(1),
                "value {:#x}",
                arg ^ (1 << 40)
            );
        }
    }
}

#[test]
fn names_missing_on_one_arch_are_skipped() {
    let list = list("default_errno = \"EPERM\"\n[[allow]]\nsyscalls = [\"open\", \"fork\", \"openat\"]\nwhy = \"w\"\n");
    let program = compile(&list, Arch::Aarch64).unwrap();
    let openat = Arch::Aarch64.syscall_number("openat").unwrap();
    assert_eq!(
        action(&program, &SeccompData::new(Arch::Aarch64, openat, &[])),
        Action::Allow
    );
    let program = compile(&list, Arch::X86_64).unwrap();
    for name in ["open", "fork", "openat"] {
        let nr = Arch::X86_64.syscall_number(name).unwrap();
        assert_eq!(
            action(&program, &SeccompData::new(Arch::X86_64, nr, &[])),
            Action::Allow,
            "{name}"
        );
    }
}

#[test]
fn jumps_reach_targets_at_every_distance_around_the_8_bit_limit() {
    use super::compile::{Emitter, BPF_JEQ, OFFSET_NR};
    const FILLER: u32 = 0x0005_0063; // ERRNO(99): reaching it means a wrong jump
    const NEAR: u32 = 0x0005_0005;
    const FAR: u32 = 0x0005_0006;
    for x in [0, 1, 2, 200, 300] {
        for y in 250..260 {
            for near_if_equal in [true, false] {
                // Program order: load nr; jeq 7; [y fillers]; near; [x fillers]; far.
                let mut e = Emitter::default();
                let far = e.ret(FAR);
                for _ in 0..x {
                    e.ret(FILLER);
                }
                let near = e.ret(NEAR);
                for _ in 0..y {
                    e.ret(FILLER);
                }
                let (jt, jf) = if near_if_equal {
                    (near, far)
                } else {
                    (far, near)
                };
                let jeq = e.jump(BPF_JEQ, 7, jt, jf).unwrap();
                e.load(OFFSET_NR, jeq).unwrap();
                let program = e.finish();
                check(&program).unwrap();
                let run = |nr| action(&program, &SeccompData::new(Arch::X86_64, nr, &[]));
                let (equal, differ) = if near_if_equal {
                    (NEAR, FAR)
                } else {
                    (FAR, NEAR)
                };
                assert_eq!(run(7), Action::from_ret(equal), "x={x} y={y}");
                assert_eq!(run(8), Action::from_ret(differ), "x={x} y={y}");
            }
        }
    }
}
