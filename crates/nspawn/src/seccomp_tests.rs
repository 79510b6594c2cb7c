use std::collections::BTreeSet;

use agentbox_seccomp::Arch;

use crate::base_filter::NSPAWN_BASE;
use crate::seccomp::{in_nspawn_base, syscall_filter_for};

#[test]
fn the_base_list_is_sorted_without_duplicates() {
    assert!(NSPAWN_BASE.windows(2).all(|w| w[0] < w[1]));
}

/// What nspawn allows given `filter`: its base list plus the added names, minus the removed ones.
fn nspawn_allows(filter: &crate::seccomp::SyscallFilter, name: &str) -> bool {
    (in_nspawn_base(name) || filter.allow.iter().any(|n| n == name))
        && !filter.deny.iter().any(|n| n == name)
}

#[test]
fn only_names_the_base_lacks_are_added_and_the_filter_is_the_allowlist() {
    let list = agentbox_seccomp::default_allowlist().unwrap();
    let mut allowed: BTreeSet<&str> = BTreeSet::new();
    for group in list.allow() {
        allowed.extend(group.syscalls.iter().map(String::as_str));
    }
    for entry in list.allow_if() {
        allowed.insert(entry.syscall.as_str());
    }
    let fallback: BTreeSet<&str> = list
        .deny()
        .iter()
        .filter(|g| g.errno.name() == "ENOSYS")
        .flat_map(|g| g.syscalls.iter().map(String::as_str))
        .collect();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let filter = syscall_filter_for(&list, arch);
        assert!(filter.allow.iter().all(|n| !in_nspawn_base(n)));
        assert!(filter.allow.len() < 40, "{:?}", filter.allow);
        let names = syscalls::x86_64::Sysno::iter()
            .map(|s| s.name())
            .chain(syscalls::aarch64::Sysno::iter().map(|s| s.name()));
        for name in names.filter(|n| arch.syscall_number(n).is_some()) {
            let expected =
                allowed.contains(name) || (fallback.contains(name) && in_nspawn_base(name));
            assert_eq!(nspawn_allows(&filter, name), expected, "{name} on {arch:?}");
        }
    }
}

/// The single calls nspawn 252 and later add to the groups (`src/nspawn/nspawn-seccomp.c`),
/// for a container without capabilities.
const SINGLE_CALLS: &[&str] = &[
    "brk",
    "capget",
    "capset",
    "copy_file_range",
    "fadvise64",
    "fadvise64_64",
    "flock",
    "get_mempolicy",
    "getcpu",
    "getpriority",
    "getrandom",
    "ioctl",
    "ioprio_get",
    "kcmp",
    "madvise",
    "mincore",
    "mprotect",
    "mremap",
    "name_to_handle_at",
    "oldolduname",
    "olduname",
    "personality",
    "readahead",
    "readdir",
    "remap_file_pages",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_yield",
    "sendfile",
    "sendfile64",
    "setdomainname",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "sethostname",
    "setpgid",
    "setsid",
    "splice",
    "sysinfo",
    "tee",
    "umask",
    "uname",
    "userfaultfd",
    "vmsplice",
];
const GROUPS: &[&str] = &[
    "@aio",
    "@basic-io",
    "@chown",
    "@default",
    "@file-system",
    "@io-event",
    "@ipc",
    "@mount",
    "@network-io",
    "@process",
    "@resources",
    "@setuid",
    "@signal",
    "@sync",
    "@timer",
];

/// Every name of the base list is in the groups as this host's systemd defines them, or one of
/// nspawn's single calls: the list assumes nothing this host's nspawn does not allow.
#[test]
fn the_base_list_matches_this_hosts_systemd() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager"])
        .output()
    else {
        eprintln!("skipped: no systemd-analyze here");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sets: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut current = None;
    for line in text.lines() {
        if line.starts_with('@') {
            let name = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            sets.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if let (Some(set), item) = (&current, line.trim()) {
            if !item.is_empty() && !item.starts_with('#') {
                sets.entry(set.clone()).or_default().push(item.to_string());
            }
        }
    }
    fn expand(
        sets: &std::collections::BTreeMap<String, Vec<String>>,
        set: &str,
        out: &mut BTreeSet<String>,
    ) {
        for item in sets.get(set).into_iter().flatten() {
            if item.starts_with('@') {
                expand(sets, item, out);
            } else {
                out.insert(item.clone());
            }
        }
    }
    let mut grouped = BTreeSet::new();
    for group in GROUPS {
        assert!(
            sets.contains_key(*group),
            "{group} unknown to systemd-analyze"
        );
        expand(&sets, group, &mut grouped);
    }
    let strays: Vec<&&str> = NSPAWN_BASE
        .iter()
        .filter(|n| !grouped.contains(**n) && !SINGLE_CALLS.contains(n))
        .collect();
    assert!(
        strays.is_empty(),
        "not in this host's nspawn base list: {strays:?}"
    );
}
