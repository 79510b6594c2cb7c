//! Validation tests: what `parse_allowlist` refuses, and what it resolves.

use super::{parse_allowlist, ArgOp, ArgWidth, SeccompError};

fn err(text: &str) -> SeccompError {
    match parse_allowlist(text) {
        Ok(list) => panic!("accepted: {list:?}"),
        Err(e) => e,
    }
}

const HEAD: &str = "default_errno = \"EPERM\"\n";

#[test]
fn every_entry_needs_a_why() {
    let e = err(&format!(
        "{HEAD}[[allow]]\nsyscalls = [\"read\"]\nwhy = \"  \"\n"
    ));
    assert!(
        matches!(e, SeccompError::MissingWhy { ref entry } if entry == "allow[0]"),
        "{e}"
    );
    let e = err(&format!(
        "{HEAD}[[deny]]\nsyscalls = [\"bpf\"]\nerrno = \"EPERM\"\nwhy = \"\"\n"
    ));
    assert!(matches!(e, SeccompError::MissingWhy { .. }), "{e}");
    let e = err(&format!(
        "{HEAD}[[allow_if]]\nsyscall = \"clone\"\nwhy = \"\"\nargs = [{{ index = 0, op = \"eq\", value = 0 }}]\n"
    ));
    assert!(matches!(e, SeccompError::MissingWhy { .. }), "{e}");
    // A missing `why` key is a parse error.
    let e = err(&format!("{HEAD}[[allow]]\nsyscalls = [\"read\"]\n"));
    assert!(matches!(e, SeccompError::ParseAllowlist(_)), "{e}");
}

#[test]
fn typos_are_refused_but_arch_specific_names_are_not() {
    let e = err(&format!(
        "{HEAD}[[allow]]\nsyscalls = [\"raed\"]\nwhy = \"w\"\n"
    ));
    assert!(
        matches!(e, SeccompError::UnknownSyscall { ref name } if name == "raed"),
        "{e}"
    );
    assert!(e.to_string().contains("typo"));
    // `fork` exists only on x86_64, `fstatat` (the name of aarch64's newfstatat) only on aarch64.
    parse_allowlist(&format!(
        "{HEAD}[[allow]]\nsyscalls = [\"fork\", \"fstatat\"]\nwhy = \"w\"\n"
    ))
    .unwrap();
}

#[test]
fn unknown_fields_ops_errnos_and_constants_are_refused() {
    let e = err(&format!(
        "{HEAD}[[allow]]\nsyscalls = [\"read\"]\nwhy = \"w\"\ncomment = \"x\"\n"
    ));
    assert!(matches!(e, SeccompError::ParseAllowlist(_)), "{e}");
    let e = err(&format!(
        "{HEAD}[[allow_if]]\nsyscall = \"clone\"\nwhy = \"w\"\nargs = [{{ index = 0, op = \"lt\", value = 0 }}]\n"
    ));
    assert!(matches!(e, SeccompError::ParseAllowlist(_)), "{e}");
    let e = err(&format!(
        "{HEAD}[[allow_if]]\nsyscall = \"clone\"\nwhy = \"w\"\nargs = [{{ index = 0, op = \"eq\", value = 0, mask = 1 }}]\n"
    ));
    assert!(matches!(e, SeccompError::ParseAllowlist(_)), "{e}");
    let e = err("default_errno = \"EWHATEVER\"\n");
    assert!(matches!(e, SeccompError::UnknownErrno { .. }), "{e}");
    let e = err(&format!(
        "{HEAD}[[allow_if]]\nsyscall = \"clone\"\nwhy = \"w\"\nargs = [{{ index = 0, op = \"eq\", value = \"CLONE_NEWFOO\" }}]\n"
    ));
    assert!(
        matches!(e, SeccompError::UnknownConstant { ref name, .. } if name == "CLONE_NEWFOO"),
        "{e}"
    );
    for bad in ["\"\"", "\"AF_UNIX|\"", "\"0xzz\"", "-1"] {
        let e = err(&format!(
            "{HEAD}[[allow_if]]\nsyscall = \"clone\"\nwhy = \"w\"\nargs = [{{ index = 0, op = \"eq\", value = {bad} }}]\n"
        ));
        assert!(
            matches!(
                e,
                SeccompError::InvalidValue { .. } | SeccompError::ParseAllowlist(_)
            ),
            "{bad}: {e}"
        );
    }
}

#[test]
fn duplicates_are_refused_except_alternative_conditions() {
    let e = err(&format!(
        "{HEAD}[[allow]]\nsyscalls = [\"read\"]\nwhy = \"w\"\n[[deny]]\nsyscalls = [\"read\"]\nerrno = \"EPERM\"\nwhy = \"w\"\n"
    ));
    assert!(
        matches!(e, SeccompError::DuplicateSyscall { ref name } if name == "read"),
        "{e}"
    );
    let e = err(&format!(
        "{HEAD}[[allow]]\nsyscalls = [\"ioctl\"]\nwhy = \"w\"\n\
         [[allow_if]]\nsyscall = \"ioctl\"\nwhy = \"w\"\nargs = [{{ index = 1, op = \"ne\", value = 1 }}]\n"
    ));
    assert!(matches!(e, SeccompError::DuplicateSyscall { .. }), "{e}");
    let two = "[[allow_if]]\nsyscall = \"socket\"\nwhy = \"w\"\nargs = [{ index = 0, op = \"eq\", value = 1 }]\n";
    let list = parse_allowlist(&format!("{HEAD}{two}{two}")).unwrap();
    assert_eq!(list.allow_if().len(), 2);
}

#[test]
fn argument_conditions_are_checked() {
    let cond = |args: &str| {
        format!("{HEAD}[[allow_if]]\nsyscall = \"ioctl\"\nwhy = \"w\"\nargs = [{args}]\n")
    };
    let e = err(&cond("{ index = 6, op = \"eq\", value = 0 }"));
    assert!(
        matches!(e, SeccompError::ArgIndexOutOfRange { index: 6, .. }),
        "{e}"
    );
    let e = err(&cond("{ index = 1, op = \"eq\", value = 0, width = 16 }"));
    assert!(
        matches!(e, SeccompError::InvalidWidth { width: 16, .. }),
        "{e}"
    );
    let e = err(&cond(
        "{ index = 1, op = \"ne\", value = \"0x1_0000_5412\", width = 32 }",
    ));
    assert!(matches!(e, SeccompError::ValueTooWide { .. }), "{e}");
    let e = err(&cond(
        "{ index = 1, op = \"masked_eq\", mask = \"0xff\", value = \"0x100\" }",
    ));
    assert!(matches!(e, SeccompError::ValueOutsideMask { .. }), "{e}");
    let e = err(&cond("{ index = 1, op = \"in\", values = [] }"));
    assert!(matches!(e, SeccompError::EmptyValueSet { .. }), "{e}");
    let e = err(&format!(
        "{HEAD}[[allow_if]]\nsyscall = \"ioctl\"\nwhy = \"w\"\nargs = []\n"
    ));
    assert!(matches!(e, SeccompError::NoConditions { .. }), "{e}");
    let e = err(&format!("{HEAD}[[allow]]\nsyscalls = []\nwhy = \"w\"\n"));
    assert!(matches!(e, SeccompError::EmptyEntry { .. }), "{e}");
}

#[test]
fn values_resolve_symbols_hex_and_or_expressions() {
    let list = parse_allowlist(&format!(
        "{HEAD}[[allow_if]]\nsyscall = \"clone\"\nwhy = \"w\"\n\
         args = [{{ index = 0, op = \"masked_eq\", mask = \"CLONE_NEWUSER | CLONE_NEWNS|0x1\", value = 1, width = 32 }},\n\
                 {{ index = 1, op = \"in\", values = [\"0xffff_ffff_0000_0000\", 42, \"AF_INET6\"] }}]\n"
    ))
    .unwrap();
    let checks = &list.allow_if()[0].checks;
    assert_eq!(
        checks[0].op,
        ArgOp::MaskedEq {
            mask: 0x1002_0001,
            value: 1
        }
    );
    assert_eq!(checks[0].width, ArgWidth::Low32);
    assert_eq!(
        checks[0].text,
        "arg0 & (CLONE_NEWUSER | CLONE_NEWNS|0x1) == 1 (low 32 bits)"
    );
    assert_eq!(checks[1].op, ArgOp::In(vec![0xffff_ffff_0000_0000, 42, 10]));
    assert_eq!(checks[1].width, ArgWidth::Bits64);
}

#[test]
fn denials_list_deny_entries_and_conditions() {
    let list = parse_allowlist(&format!(
        "{HEAD}[[deny]]\nsyscalls = [\"clone3\"]\nerrno = \"ENOSYS\"\nwhy = \"flags in memory\"\n\
         [[allow_if]]\nsyscall = \"socket\"\nwhy = \"inet\"\nargs = [{{ index = 0, op = \"eq\", value = \"AF_INET\" }}]\n\
         [[allow_if]]\nsyscall = \"socket\"\nwhy = \"netlink\"\n\
         args = [{{ index = 0, op = \"eq\", value = \"AF_NETLINK\" }}, {{ index = 2, op = \"eq\", value = \"NETLINK_ROUTE\" }}]\n"
    ))
    .unwrap();
    let denials = list.denials();
    assert_eq!(denials.len(), 2);
    assert_eq!(
        (
            denials[0].syscall.as_str(),
            denials[0].errno.name(),
            denials[0].unless.as_deref()
        ),
        ("clone3", "ENOSYS", None)
    );
    assert_eq!(denials[1].syscall, "socket");
    assert_eq!(denials[1].errno.name(), "EPERM");
    assert_eq!(
        denials[1].unless.as_deref(),
        Some("arg0 == AF_INET or (arg0 == AF_NETLINK && arg2 == NETLINK_ROUTE)")
    );
    assert_eq!(denials[1].why, "inet / netlink");
}
