#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use agentbox_seccomp::{parse_allowlist, DEFAULT_ALLOWLIST};

fn default_list() -> Allowlist {
    parse_allowlist(DEFAULT_ALLOWLIST).unwrap()
}

/// What the allowlist itself says about one call (the reference semantics).
fn reference(list: &Allowlist, name: &str, args: &[u64; 6]) -> Action {
    if list
        .allow()
        .iter()
        .any(|g| g.syscalls.iter().any(|s| s == name))
    {
        return Action::Allow;
    }
    if let Some(g) = list
        .deny()
        .iter()
        .find(|g| g.syscalls.iter().any(|s| s == name))
    {
        return Action::Errno(g.errno.number());
    }
    let holds = |c: &ArgCheck| {
        let a = args[usize::from(c.index)] & width_mask(c.width);
        match &c.op {
            ArgOp::Eq(v) => a == *v,
            ArgOp::Ne(v) => a != *v,
            ArgOp::MaskedEq { mask, value } => a & mask == *value,
            ArgOp::In(vs) => vs.contains(&a),
        }
    };
    if list
        .allow_if()
        .iter()
        .any(|e| e.syscall == name && e.checks.iter().all(holds))
    {
        return Action::Allow;
    }
    Action::Errno(list.default_errno().number())
}

/// What libseccomp does with the translated rules: any matching rule's action (allow rules and
/// errno rules never overlap here), else the default.
fn translated(rules: &[Rule], default: u16, name: &str, args: &[u64; 6]) -> Action {
    for rule in rules.iter().filter(|r| r.names.iter().any(|n| n == name)) {
        let ok = rule.args.iter().all(|&(i, cmp)| {
            let a = args[usize::from(i)];
            match cmp {
                Cmp::Eq(v) => a == v,
                Cmp::Ne(v) => a != v,
                Cmp::Masked { mask, value } => a & mask == value,
            }
        });
        if ok {
            return rule.action;
        }
    }
    Action::Errno(default)
}

fn interesting_values(list: &Allowlist) -> Vec<u64> {
    let mut values = vec![0, 1, 2, 3, 0xffff_ffff, u64::MAX, 1 << 32, 0x8000_0000];
    for e in list.allow_if() {
        for c in &e.checks {
            let mut vs = match &c.op {
                ArgOp::Eq(v) | ArgOp::Ne(v) => vec![*v],
                ArgOp::MaskedEq { mask, value } => vec![*mask, *value, mask | 1, *value ^ 1],
                ArgOp::In(vs) => vs.clone(),
            };
            let high: Vec<u64> = vs.iter().map(|v| v | (1 << 40)).collect();
            let near: Vec<u64> = vs.iter().flat_map(|v| [v ^ 1, v ^ 8, v + 1]).collect();
            vs.extend(high);
            vs.extend(near);
            values.extend(vs);
        }
    }
    values.sort_unstable();
    values.dedup();
    values
}

#[test]
fn translation_agrees_with_the_allowlist_on_every_conditional_syscall() {
    let list = default_list();
    let rules = rules(&list);
    let default = list.default_errno().number();
    let values = interesting_values(&list);
    for entry in list.allow_if() {
        for index in 0..6 {
            for &v in &values {
                let mut args = [0u64; 6];
                args[index] = v;
                // Also the other arguments at a value that satisfies other conditions.
                for other in [0u64, 0x1c, 16] {
                    for (i, a) in args.iter_mut().enumerate() {
                        if i != index {
                            *a = other;
                        }
                    }
                    assert_eq!(
                        translated(&rules, default, &entry.syscall, &args),
                        reference(&list, &entry.syscall, &args),
                        "{} with {args:x?}",
                        entry.syscall
                    );
                }
            }
        }
    }
}

#[test]
fn ioctl_denies_tiocsti_even_with_high_bits() {
    let list = default_list();
    let rules = rules(&list);
    let call = |cmd: u64| translated(&rules, 1, "ioctl", &[0, cmd, 0, 0, 0, 0]);
    assert_eq!(call(0x5401), Action::Allow);
    assert_eq!(call(0x5412), Action::Errno(1));
    assert_eq!(call(0x5412 | (1 << 33)), Action::Errno(1));
    assert_eq!(call(0x541C), Action::Errno(1));
    assert_eq!(call(0x5413), Action::Allow);
    // One comparison per argument per rule, as libseccomp demands.
    for rule in &rules {
        let mut idx: Vec<u8> = rule.args.iter().map(|a| a.0).collect();
        idx.dedup();
        assert_eq!(idx.len(), rule.args.len(), "{rule:?}");
    }
}

#[test]
fn unconditional_names_and_denials() {
    let list = default_list();
    let rules = rules(&list);
    assert_eq!(translated(&rules, 1, "read", &[0; 6]), Action::Allow);
    assert_eq!(translated(&rules, 1, "clone3", &[0; 6]), Action::Errno(38));
    assert_eq!(translated(&rules, 1, "mount", &[0; 6]), Action::Errno(1));
    // No name foreign to the native architecture is emitted.
    for rule in &rules {
        for name in &rule.names {
            assert!(Arch::native().syscall_number(name).is_some(), "{name}");
        }
    }
}

#[test]
fn complement_covers_exactly_the_other_values() {
    let cubes = complement(&[0x5412, 0x541c], 32);
    let hit = |v: u64| cubes.iter().any(|&(m, x)| v & m == x);
    for v in [
        0u64,
        0x5412,
        0x541c,
        0x5413,
        0x1_0000_5412,
        u64::MAX,
        0xffff_ffff,
    ] {
        let low = v & 0xffff_ffff;
        assert_eq!(hit(v), low != 0x5412 && low != 0x541c, "{v:#x}");
    }
    assert!(cubes.len() <= 64);
    assert_eq!(complement(&[], 32), vec![(0, 0)]);
}

#[test]
fn oci_object_shape() {
    let list = default_list();
    let seccomp = linux_seccomp(&list).unwrap();
    let json = serde_json::to_value(&seccomp).unwrap();
    assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(json["defaultErrnoRet"], 1);
    assert_eq!(
        json["architectures"],
        serde_json::json!([native_arch_name()])
    );
    let syscalls = json["syscalls"].as_array().unwrap();
    let clone = syscalls
        .iter()
        .find(|s| s["names"] == serde_json::json!(["clone"]))
        .unwrap();
    assert_eq!(clone["action"], "SCMP_ACT_ALLOW");
    assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(clone["args"][0]["valueTwo"], 0);
    let clone3 = syscalls
        .iter()
        .find(|s| s["names"] == serde_json::json!(["clone3"]))
        .unwrap();
    assert_eq!(clone3["errnoRet"], 38);
}

#[test]
fn docker_profile_matches_the_oci_object() {
    let list = default_list();
    let oci = serde_json::to_value(linux_seccomp(&list).unwrap()).unwrap();
    let docker = docker_profile(&list);
    assert_eq!(docker["defaultAction"], oci["defaultAction"]);
    assert_eq!(docker["defaultErrnoRet"], oci["defaultErrnoRet"]);
    assert_eq!(docker["architectures"], oci["architectures"]);
    let (d, o) = (
        docker["syscalls"].as_array().unwrap(),
        oci["syscalls"].as_array().unwrap(),
    );
    assert_eq!(d.len(), o.len());
    for (d, o) in d.iter().zip(o) {
        assert_eq!(d["names"], o["names"]);
        assert_eq!(d["action"], o["action"]);
        assert_eq!(
            d["args"].as_array().map(Vec::len),
            o["args"].as_array().map(Vec::len)
        );
    }
}
