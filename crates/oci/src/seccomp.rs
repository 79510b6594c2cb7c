//! agentbox's reviewed seccomp allowlist translated into the OCI `linux.seccomp` object and into
//! Docker's seccomp profile JSON (the same shape). Pure: no runtime is started here.
//!
//! The translation keeps the allowlist's meaning under libseccomp's rules:
//! - `defaultAction` is `SCMP_ACT_ERRNO` with the allowlist's default errno; `[[deny]]` groups become
//!   explicit `SCMP_ACT_ERRNO` rules with their own errno.
//! - Only `SCMP_ARCH_X86_64` (or `SCMP_ARCH_AARCH64`) is listed, so every other ABI (i386, and x32,
//!   whose numbers carry bit 30) gets the runtime's bad-architecture action: never allowed.
//! - Names that do not exist on the native architecture are left out. Runtimes whose libseccomp does
//!   not know a name (runc 1.1 and crun 1.8 skip unknown names) lose that *allow*, which makes the
//!   filter stricter, never weaker: the default action is a denial.
//! - libseccomp accepts one comparison per argument in a rule, compares all 64 bits, and ORs the
//!   rules of one syscall. So each `[[allow_if]]` entry becomes one or more rules: conditions are
//!   first written as bit patterns ("cubes": `arg & mask == value`), patterns on one argument are
//!   intersected, and the rules are the cross product over the arguments. A 32-bit comparison
//!   (`width = 32`) is a pattern whose mask has no high bits, so high bits can never bypass it;
//!   `arg != v` on 32 bits becomes the patterns of every value that differs from `v` in its low 32
//!   bits (at most 32 rules per excluded value).

use agentbox_seccomp::{Allowlist, Arch, ArgCheck, ArgOp, ArgWidth};
use oci_spec::runtime::{
    Arch as OciArch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::EngineError;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Errno(u16),
}

/// One comparison of a rule, in OCI terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq(u64),
    Ne(u64),
    /// `arg & mask == value`.
    Masked {
        mask: u64,
        value: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    names: Vec<String>,
    action: Action,
    /// (argument index, comparison), at most one per index.
    args: Vec<(u8, Cmp)>,
}

/// A bit pattern: `arg & mask == value`.
type Cube = (u64, u64);

/// The OCI seccomp object for the native architecture.
pub fn linux_seccomp(list: &Allowlist) -> Result<LinuxSeccomp, EngineError> {
    let invalid = |e: oci_spec::OciSpecError| EngineError::Setup {
        step: "building the OCI seccomp profile".into(),
        message: e.to_string(),
    };
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for rule in rules(list) {
        let mut builder =
            LinuxSyscallBuilder::default()
                .names(rule.names)
                .action(match rule.action {
                    Action::Allow => LinuxSeccompAction::ScmpActAllow,
                    Action::Errno(_) => LinuxSeccompAction::ScmpActErrno,
                });
        if let Action::Errno(errno) = rule.action {
            builder = builder.errno_ret(u32::from(errno));
        }
        if !rule.args.is_empty() {
            let args = rule
                .args
                .iter()
                .map(|&(index, cmp)| oci_arg(index, cmp))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
            builder = builder.args(args);
        }
        syscalls.push(builder.build().map_err(invalid)?);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(u32::from(list.default_errno().number()))
        .architectures(vec![native_oci_arch()])
        .syscalls(syscalls)
        .build()
        .map_err(invalid)
}

/// The same rules as Docker's seccomp profile JSON (`docker run --security-opt seccomp=FILE`):
/// `defaultAction`, `defaultErrnoRet`, `architectures`, `syscalls[{names, action, args, errnoRet}]`.
pub fn docker_profile(list: &Allowlist) -> serde_json::Value {
    let syscalls: Vec<serde_json::Value> = rules(list)
        .into_iter()
        .map(|rule| {
            let mut entry = serde_json::Map::new();
            entry.insert("names".into(), serde_json::json!(rule.names));
            match rule.action {
                Action::Allow => {
                    entry.insert("action".into(), "SCMP_ACT_ALLOW".into());
                }
                Action::Errno(errno) => {
                    entry.insert("action".into(), "SCMP_ACT_ERRNO".into());
                    entry.insert("errnoRet".into(), errno.into());
                }
            }
            if !rule.args.is_empty() {
                let args: Vec<serde_json::Value> = rule
                    .args
                    .iter()
                    .map(|&(index, cmp)| {
                        let (op, value, value_two) = cmp_parts(cmp);
                        serde_json::json!({
                            "index": index, "value": value, "valueTwo": value_two, "op": op,
                        })
                    })
                    .collect();
                entry.insert("args".into(), args.into());
            }
            serde_json::Value::Object(entry)
        })
        .collect();
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": list.default_errno().number(),
        "architectures": [native_arch_name()],
        "syscalls": syscalls,
    })
}

fn native_oci_arch() -> OciArch {
    match Arch::native() {
        Arch::X86_64 => OciArch::ScmpArchX86_64,
        Arch::Aarch64 => OciArch::ScmpArchAarch64,
    }
}

fn native_arch_name() -> &'static str {
    match Arch::native() {
        Arch::X86_64 => "SCMP_ARCH_X86_64",
        Arch::Aarch64 => "SCMP_ARCH_AARCH64",
    }
}

fn cmp_parts(cmp: Cmp) -> (&'static str, u64, u64) {
    match cmp {
        Cmp::Eq(v) => ("SCMP_CMP_EQ", v, 0),
        Cmp::Ne(v) => ("SCMP_CMP_NE", v, 0),
        Cmp::Masked { mask, value } => ("SCMP_CMP_MASKED_EQ", mask, value),
    }
}

fn oci_arg(index: u8, cmp: Cmp) -> Result<LinuxSeccompArg, oci_spec::OciSpecError> {
    let builder = LinuxSeccompArgBuilder::default().index(usize::from(index));
    match cmp {
        Cmp::Eq(v) => builder.value(v).op(LinuxSeccompOperator::ScmpCmpEq),
        Cmp::Ne(v) => builder.value(v).op(LinuxSeccompOperator::ScmpCmpNe),
        Cmp::Masked { mask, value } => builder
            .value(mask)
            .value_two(value)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq),
    }
    .build()
}

/// Every rule, in order: unconditional allows, conditional allows, explicit denials.
fn rules(list: &Allowlist) -> Vec<Rule> {
    let native = Arch::native();
    let known = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|n| native.syscall_number(n).is_some())
            .cloned()
            .collect()
    };
    let mut out = Vec::new();
    for group in list.allow() {
        let names = known(&group.syscalls);
        if !names.is_empty() {
            out.push(Rule {
                names,
                action: Action::Allow,
                args: Vec::new(),
            });
        }
    }
    for entry in list.allow_if() {
        if native.syscall_number(&entry.syscall).is_none() {
            continue;
        }
        for args in alternatives(&entry.checks) {
            out.push(Rule {
                names: vec![entry.syscall.clone()],
                action: Action::Allow,
                args,
            });
        }
    }
    for group in list.deny() {
        let names = known(&group.syscalls);
        if !names.is_empty() {
            out.push(Rule {
                names,
                action: Action::Errno(group.errno.number()),
                args: Vec::new(),
            });
        }
    }
    out
}

/// The rules (each a list of per-argument comparisons) whose union is exactly the AND of `checks`.
fn alternatives(checks: &[ArgCheck]) -> Vec<Vec<(u8, Cmp)>> {
    let mut indices: Vec<u8> = checks.iter().map(|c| c.index).collect();
    indices.sort_unstable();
    indices.dedup();
    let mut rules: Vec<Vec<(u8, Cmp)>> = vec![Vec::new()];
    for index in indices {
        let on_index: Vec<&ArgCheck> = checks.iter().filter(|c| c.index == index).collect();
        let choices = comparisons(&on_index);
        let mut next = Vec::with_capacity(rules.len() * choices.len());
        for rule in &rules {
            for &cmp in &choices {
                let mut r = rule.clone();
                r.push((index, cmp));
                next.push(r);
            }
        }
        rules = next;
    }
    rules
}

/// The comparisons (alternatives) on one argument equivalent to the AND of `checks`.
fn comparisons(checks: &[&ArgCheck]) -> Vec<Cmp> {
    if let [single] = checks {
        match (&single.op, single.width) {
            (ArgOp::Eq(v), ArgWidth::Bits64) => return vec![Cmp::Eq(*v)],
            (ArgOp::Ne(v), ArgWidth::Bits64) => return vec![Cmp::Ne(*v)],
            _ => {}
        }
    }
    // Several `ne` of one width: the complement of one set, which is far smaller than the
    // intersection of the complements.
    let all_ne = checks.iter().all(|c| matches!(c.op, ArgOp::Ne(_)));
    let cubes = if all_ne && checks.windows(2).all(|w| w[0].width == w[1].width) {
        let excluded: Vec<u64> = checks
            .iter()
            .filter_map(|c| match c.op {
                ArgOp::Ne(v) => Some(v),
                _ => None,
            })
            .collect();
        complement(
            &excluded,
            bits(checks.first().map_or(ArgWidth::Bits64, |c| c.width)),
        )
    } else {
        let mut acc: Vec<Cube> = vec![(0, 0)];
        for check in checks {
            let mine = cubes_of(check);
            let mut next = Vec::new();
            for &a in &acc {
                for &b in &mine {
                    if let Some(c) = intersect(a, b) {
                        if !next.contains(&c) {
                            next.push(c);
                        }
                    }
                }
            }
            acc = next;
        }
        acc
    };
    cubes
        .into_iter()
        .map(|(mask, value)| {
            if mask == u64::MAX {
                Cmp::Eq(value)
            } else {
                Cmp::Masked { mask, value }
            }
        })
        .collect()
}

fn bits(width: ArgWidth) -> u32 {
    match width {
        ArgWidth::Bits64 => 64,
        ArgWidth::Low32 => 32,
    }
}

fn width_mask(width: ArgWidth) -> u64 {
    match width {
        ArgWidth::Bits64 => u64::MAX,
        ArgWidth::Low32 => u64::from(u32::MAX),
    }
}

/// The bit patterns whose union is the set of values `check` accepts.
fn cubes_of(check: &ArgCheck) -> Vec<Cube> {
    let full = width_mask(check.width);
    match &check.op {
        ArgOp::Eq(v) => vec![(full, *v & full)],
        ArgOp::Ne(v) => complement(&[*v], bits(check.width)),
        ArgOp::MaskedEq { mask, value } => vec![(*mask & full, *value & *mask & full)],
        ArgOp::In(values) => values.iter().map(|v| (full, *v & full)).collect(),
    }
}

fn intersect(a: Cube, b: Cube) -> Option<Cube> {
    if (a.1 ^ b.1) & a.0 & b.0 != 0 {
        None
    } else {
        Some((a.0 | b.0, a.1 | b.1))
    }
}

/// Bit patterns over the low `bits` bits whose union is every value not in `excluded`: walk the
/// bits from the top; wherever a prefix leads to no excluded value, that prefix is one pattern.
fn complement(excluded: &[u64], bits: u32) -> Vec<Cube> {
    fn walk(set: &[u64], bit: u32, mask: u64, value: u64, out: &mut Vec<Cube>) {
        if set.is_empty() {
            out.push((mask, value));
            return;
        }
        if bit == 0 {
            return;
        }
        let b = bit - 1;
        for one in [false, true] {
            let sub: Vec<u64> = set
                .iter()
                .copied()
                .filter(|v| (v >> b) & 1 == u64::from(one))
                .collect();
            walk(&sub, b, mask | (1 << b), value | (u64::from(one) << b), out);
        }
    }
    let mut set: Vec<u64> = excluded.to_vec();
    set.sort_unstable();
    set.dedup();
    let mut out = Vec::new();
    walk(&set, bits, 0, 0, &mut out);
    out
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
