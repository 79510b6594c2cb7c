//! agentbox's seccomp allowlist expressed in nspawn's `--system-call-filter=` terms. Pure.
//!
//! nspawn always installs its own allowlist (the `@default`, `@basic-io`, `@file-system`,
//! `@process`, `@mount`, `@network-io`, ... groups plus single calls; everything else fails with
//! EPERM, or ENOSYS for calls libseccomp does not know). `--system-call-filter=NAMES` *adds* names
//! to that list and `--system-call-filter=~NAMES` removes names from it, one by one, groups
//! included. So "only agentbox's list" is expressed as:
//!
//! * allow: every name agentbox allows (unconditionally or under argument conditions) that exists
//!   on this architecture and is not in nspawn's base list already ([`crate::base_filter`]). nspawn
//!   compiles each name it is given into one more libseccomp rule per architecture, base list or
//!   not: the ~290 names of the whole allowlist cost ~25 ms per start, the ~20 it lacks nothing
//!   measurable. The result is the same filter: a base name agentbox allows stays allowed by the
//!   base list (and a name the base list of some other nspawn version lacks is denied: stricter);
//! * deny (`~`): every syscall name known on x86_64 or aarch64 that agentbox does not allow, which
//!   removes from nspawn's base list everything agentbox does not mention and everything it denies.
//!
//! The gap, honestly:
//! * **Argument conditions are lost**: nspawn's filter matches names only, so `clone` with
//!   namespace flags (including `CLONE_NEWUSER`), `ioctl(TIOCSTI)`/`TIOCLINUX`, `socket` of any
//!   family (nspawn itself still refuses `NETLINK_AUDIT`), `chmod`/`open`/`mknod` with
//!   S_ISUID/S_ISGID and every `personality` are allowed. Mitigations that remain: no
//!   capabilities in the container's user namespace, no_new_privs (setuid bits do not elevate on
//!   exec), read-only system binds.
//! * **Errnos differ**: every denial is EPERM (ENOSYS for names libseccomp does not know).
//!   agentbox's ENOSYS-denials (`clone3`, `openat2`) exist to force a fallback to their
//!   argument-filtered siblings; as those siblings are unfiltered here, they are left to nspawn's
//!   base list (which allows both) rather than broken with EPERM (glibc's `pthread_create` falls
//!   back from `clone3` only on ENOSYS).
//! * Syscalls newer than the `syscalls` crate's table are not named in the deny list; nspawn's
//!   base list does not allow them either unless its groups do.

use std::collections::BTreeSet;

use agentbox_seccomp::{Allowlist, Arch};

use crate::base_filter::NSPAWN_BASE;

/// The two lists for `--system-call-filter=`: names to add to nspawn's base list and names to
/// remove from it (with the base list: exactly agentbox's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallFilter {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// The errno whose denials only force a fallback (see the module doc): left to nspawn's base list.
const FALLBACK_ERRNO: &str = "ENOSYS";

/// Translates agentbox's allowlist for the native architecture.
pub fn syscall_filter(list: &Allowlist) -> SyscallFilter {
    syscall_filter_for(list, Arch::native())
}

/// Translates agentbox's allowlist for `arch`.
pub fn syscall_filter_for(list: &Allowlist, arch: Arch) -> SyscallFilter {
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
        .filter(|g| g.errno.name() == FALLBACK_ERRNO)
        .flat_map(|g| g.syscalls.iter().map(String::as_str))
        .collect();
    let allow = allowed
        .iter()
        .filter(|name| arch.syscall_number(name).is_some() && !in_nspawn_base(name))
        .map(|name| name.to_string())
        .collect();
    let deny = known_syscalls()
        .into_iter()
        .filter(|name| !allowed.contains(name.as_str()) && !fallback.contains(name.as_str()))
        .collect();
    SyscallFilter { allow, deny }
}

/// Whether nspawn's base list allows `name` already.
pub(crate) fn in_nspawn_base(name: &str) -> bool {
    NSPAWN_BASE.binary_search(&name).is_ok()
}

/// Every syscall name of x86_64 and aarch64, sorted.
fn known_syscalls() -> BTreeSet<String> {
    let x86 = syscalls::x86_64::Sysno::iter().map(|s| s.name().to_string());
    let arm = syscalls::aarch64::Sysno::iter().map(|s| s.name().to_string());
    x86.chain(arm).collect()
}

impl SyscallFilter {
    /// The two `--system-call-filter=` arguments (allow first, then the `~` deny list).
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.allow.is_empty() {
            out.push(format!("--system-call-filter={}", self.allow.join(" ")));
        }
        if !self.deny.is_empty() {
            out.push(format!("--system-call-filter=~{}", self.deny.join(" ")));
        }
        out
    }
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
