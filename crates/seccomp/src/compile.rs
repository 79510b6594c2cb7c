//! The compiler from a validated [`Allowlist`] to a classic BPF seccomp program for one architecture. Pure:
//! it returns instructions and never installs them.
//!
//! Program shape:
//! 1. load `seccomp_data.arch`; anything but the expected `AUDIT_ARCH` is `SECCOMP_RET_KILL_PROCESS`;
//! 2. load `seccomp_data.nr`; on x86_64 a set x32 bit (`nr & 0x40000000`) is killed as well: we do not run
//!    x32 binaries, and the x32 numbering would otherwise alias the rules below;
//! 3. a balanced binary search (`jge`) over ranges of syscall numbers that share one outcome, whose leaves
//!    return `SECCOMP_RET_ALLOW` / `SECCOMP_RET_ERRNO(n)` or run a conditional block: the argument checks
//!    of each alternative, `RET_ALLOW` if one passes, otherwise the default errno.
//!
//! The program is emitted backwards (last instruction first), so every jump target already has a known
//! position when its jump is written; a conditional jump whose target is too far for its 8-bit offset goes
//! through a `ja` trampoline (32-bit offset). A lookup costs about log2(number of ranges) ≈ 9 comparisons.

use std::collections::BTreeMap;

use crate::{Allowlist, Arch, ArgCheck, ArgOp, ArgWidth, Instruction, SeccompError};

/// The kernel's limit on the length of a classic BPF program.
pub const BPF_MAXINSNS: usize = 4096;

// Instruction classes, sizes, modes and operations of classic BPF (<linux/bpf_common.h>).
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_K: u16 = 0x00;
const BPF_AND: u16 = 0x50;
const BPF_JA: u16 = 0x00;
pub(super) const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_JSET: u16 = 0x40;

// Seccomp return actions (<linux/seccomp.h>).
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

// Offsets into `struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }`.
pub(super) const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

/// The x32 ABI marker bit in syscall numbers on x86_64 (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Compiles `list` for `arch`. Syscall names that do not exist on `arch` are skipped.
pub fn compile(list: &Allowlist, arch: Arch) -> Result<Vec<Instruction>, SeccompError> {
    let default_ret = SECCOMP_RET_ERRNO | u32::from(list.default_errno().number());
    let rules = resolve(list, arch)?;
    let segments = segments(&rules, default_ret);

    let mut out = Emitter::default();
    let tree = out.tree(&segments, default_ret)?;
    let kill = out.ret(SECCOMP_RET_KILL_PROCESS);
    let after_nr = match arch {
        Arch::X86_64 => out.jump(BPF_JSET, X32_SYSCALL_BIT, kill, tree)?,
        Arch::Aarch64 => tree,
    };
    let load_nr = out.load(OFFSET_NR, after_nr)?;
    let check_arch = out.jump(BPF_JEQ, arch.audit_arch(), load_nr, kill)?;
    out.load(OFFSET_ARCH, check_arch)?;

    let program = out.finish();
    if program.len() > BPF_MAXINSNS {
        return Err(SeccompError::ProgramTooLong {
            len: program.len(),
            max: BPF_MAXINSNS,
        });
    }
    Ok(program)
}

/// What one syscall number does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule<'a> {
    /// Return this value.
    Return(u32),
    /// Allow if any alternative's checks all hold, else the default errno.
    Conditional(Vec<&'a [ArgCheck]>),
}

fn resolve(list: &Allowlist, arch: Arch) -> Result<BTreeMap<u32, Rule<'_>>, SeccompError> {
    let allowed = list.allow().iter().flat_map(|group| {
        group
            .syscalls
            .iter()
            .map(|name| (name.as_str(), Rule::Return(SECCOMP_RET_ALLOW)))
    });
    let denied = list.deny().iter().flat_map(|group| {
        let ret = SECCOMP_RET_ERRNO | u32::from(group.errno.number());
        group
            .syscalls
            .iter()
            .map(move |name| (name.as_str(), Rule::Return(ret)))
    });
    let conditional = list.allow_if().iter().map(|entry| {
        (
            entry.syscall.as_str(),
            Rule::Conditional(vec![entry.checks.as_slice()]),
        )
    });

    let mut rules: BTreeMap<u32, (&str, Rule<'_>)> = BTreeMap::new();
    for (name, rule) in allowed.chain(denied).chain(conditional) {
        let Some(nr) = arch.syscall_number(name) else {
            continue;
        };
        match (rules.get_mut(&nr), rule) {
            (None, rule) => {
                rules.insert(nr, (name, rule));
            }
            // Several `allow_if` entries for one syscall are alternatives.
            (Some((first, Rule::Conditional(alternatives))), Rule::Conditional(more))
                if *first == name =>
            {
                alternatives.extend(more);
            }
            (Some((first, _)), _) => {
                return Err(SeccompError::NumberCollision {
                    first: (*first).to_owned(),
                    second: name.to_owned(),
                    nr,
                    arch,
                })
            }
        }
    }
    Ok(rules
        .into_iter()
        .map(|(nr, (_, rule))| (nr, rule))
        .collect())
}

/// A range of syscall numbers from `start` up to the next segment's start, sharing one rule.
#[derive(Debug)]
struct Segment<'a> {
    start: u32,
    rule: Rule<'a>,
}

/// Splits the whole `u32` range of syscall numbers into segments, filling the gaps with the default and
/// merging neighbours that return the same value.
fn segments<'a>(rules: &BTreeMap<u32, Rule<'a>>, default_ret: u32) -> Vec<Segment<'a>> {
    let mut out: Vec<Segment<'a>> = vec![Segment {
        start: 0,
        rule: Rule::Return(default_ret),
    }];
    let mut push = |start: u32, rule: Rule<'a>| {
        let extends_last = matches!(
            (out.last().map(|s| &s.rule), &rule),
            (Some(Rule::Return(a)), Rule::Return(b)) if a == b
        );
        if extends_last {
            return;
        }
        if out.last().is_some_and(|s| s.start == start) {
            out.pop();
        }
        out.push(Segment { start, rule });
    };
    for (&nr, rule) in rules {
        push(nr, rule.clone());
        if let Some(next) = nr.checked_add(1) {
            if !rules.contains_key(&next) {
                push(next, Rule::Return(default_ret));
            }
        }
    }
    out
}

/// A position in the program: an index into the reversed instruction buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Label(usize);

/// Builds a program backwards: each emitted instruction precedes, in program order, all earlier-emitted ones.
#[derive(Default)]
pub(super) struct Emitter {
    reversed: Vec<Instruction>,
}

impl Emitter {
    fn push(&mut self, code: u16, jt: u8, jf: u8, k: u32) -> Label {
        self.reversed.push(Instruction { code, jt, jf, k });
        Label(self.reversed.len() - 1)
    }

    /// The forward distance from an instruction about to be placed at reversed index `at` to `target`.
    fn distance(at: usize, target: Label) -> usize {
        at.saturating_sub(target.0 + 1)
    }

    pub(super) fn ret(&mut self, value: u32) -> Label {
        self.push(BPF_RET | BPF_K, 0, 0, value)
    }

    /// `A = seccomp_data[offset]` (32 bits), then continue at `next`.
    pub(super) fn load(&mut self, offset: u32, next: Label) -> Result<Label, SeccompError> {
        let next = self.reachable(next, 0)?;
        debug_assert_eq!(next.0 + 1, self.reversed.len());
        Ok(self.push(BPF_LD | BPF_W | BPF_ABS, 0, 0, offset))
    }

    /// `A &= mask`, then continue at `next`.
    fn and(&mut self, mask: u32, next: Label) -> Result<Label, SeccompError> {
        let next = self.reachable(next, 0)?;
        debug_assert_eq!(next.0 + 1, self.reversed.len());
        Ok(self.push(BPF_ALU | BPF_AND | BPF_K, 0, 0, mask))
    }

    /// Makes `target` reachable within `max` instructions from the next instruction emitted, inserting a
    /// `ja` trampoline when it is farther.
    fn reachable(&mut self, target: Label, max: usize) -> Result<Label, SeccompError> {
        let at = self.reversed.len();
        let distance = Self::distance(at, target);
        if distance <= max {
            return Ok(target);
        }
        let k =
            u32::try_from(distance).map_err(|_| SeccompError::JumpTooFar { offset: distance })?;
        Ok(self.push(BPF_JMP | BPF_JA, 0, 0, k))
    }

    /// `if (A <op> k) goto jt else goto jf`.
    pub(super) fn jump(
        &mut self,
        op: u16,
        k: u32,
        jt: Label,
        jf: Label,
    ) -> Result<Label, SeccompError> {
        let short = usize::from(u8::MAX);
        // Leave room for the second trampoline when placing the first.
        let jt = self.reachable(jt, short - 1)?;
        let jf = self.reachable(jf, short)?;
        let at = self.reversed.len();
        let offset = |target: Label| {
            let d = Self::distance(at, target);
            u8::try_from(d).map_err(|_| SeccompError::JumpTooFar { offset: d })
        };
        let (jt, jf) = (offset(jt)?, offset(jf)?);
        Ok(self.push(BPF_JMP | op | BPF_K, jt, jf, k))
    }

    /// The binary search over `segments`; returns its entry.
    fn tree(&mut self, segments: &[Segment<'_>], default_ret: u32) -> Result<Label, SeccompError> {
        match segments {
            [] => Ok(self.ret(default_ret)),
            [one] => match &one.rule {
                Rule::Return(value) => Ok(self.ret(*value)),
                Rule::Conditional(alternatives) => self.conditional(alternatives, default_ret),
            },
            _ => {
                let mid = segments.len() / 2;
                let upper = self.tree(&segments[mid..], default_ret)?;
                let lower = self.tree(&segments[..mid], default_ret)?;
                self.jump(BPF_JGE, segments[mid].start, upper, lower)
            }
        }
    }

    /// Alternatives tried in order; the first whose checks all pass allows, otherwise `fallback`.
    fn conditional(
        &mut self,
        alternatives: &[&[ArgCheck]],
        fallback: u32,
    ) -> Result<Label, SeccompError> {
        let mut next = self.ret(fallback);
        for checks in alternatives.iter().rev() {
            let mut pass = self.ret(SECCOMP_RET_ALLOW);
            for check in checks.iter().rev() {
                pass = self.check(check, pass, next)?;
            }
            next = pass;
        }
        Ok(next)
    }

    /// One argument condition: continues at `pass` or `fail`. Returns its entry.
    fn check(&mut self, check: &ArgCheck, pass: Label, fail: Label) -> Result<Label, SeccompError> {
        let low = OFFSET_ARGS + 8 * u32::from(check.index);
        let high = low + 4;
        let both = check.width == ArgWidth::Bits64;
        match &check.op {
            ArgOp::Eq(value) => self.equals(low, both.then_some(high), *value, pass, fail),
            ArgOp::Ne(value) => self.equals(low, both.then_some(high), *value, fail, pass),
            ArgOp::In(values) => {
                let mut next = fail;
                for value in values.iter().rev() {
                    next = self.equals(low, both.then_some(high), *value, pass, next)?;
                }
                Ok(next)
            }
            ArgOp::MaskedEq { mask, value } => {
                let (mask_lo, mask_hi) = split(*mask);
                let (value_lo, value_hi) = split(*value);
                // Validation guarantees `value & !mask == 0`, so a zero mask half always matches.
                let mut entry = pass;
                if mask_lo != 0 {
                    entry = self.masked_half(low, mask_lo, value_lo, entry, fail)?;
                }
                if both && mask_hi != 0 {
                    entry = self.masked_half(high, mask_hi, value_hi, entry, fail)?;
                }
                Ok(entry)
            }
        }
    }

    /// `arg == value` (on the low half, or on both halves when `high` is given).
    fn equals(
        &mut self,
        low: u32,
        high: Option<u32>,
        value: u64,
        equal: Label,
        differ: Label,
    ) -> Result<Label, SeccompError> {
        let (value_lo, value_hi) = split(value);
        let cmp = self.jump(BPF_JEQ, value_lo, equal, differ)?;
        let mut entry = self.load(low, cmp)?;
        if let Some(high) = high {
            let cmp = self.jump(BPF_JEQ, value_hi, entry, differ)?;
            entry = self.load(high, cmp)?;
        }
        Ok(entry)
    }

    /// `(half & mask) == value` on one 32-bit half.
    fn masked_half(
        &mut self,
        offset: u32,
        mask: u32,
        value: u32,
        pass: Label,
        fail: Label,
    ) -> Result<Label, SeccompError> {
        let cmp = self.jump(BPF_JEQ, value, pass, fail)?;
        let masked = if mask == u32::MAX {
            cmp
        } else {
            self.and(mask, cmp)?
        };
        self.load(offset, masked)
    }

    pub(super) fn finish(mut self) -> Vec<Instruction> {
        self.reversed.reverse();
        self.reversed
    }
}

/// Splits a 64-bit argument value into its (low, high) 32-bit halves.
fn split(value: u64) -> (u32, u32) {
    (value as u32, (value >> 32) as u32)
}
