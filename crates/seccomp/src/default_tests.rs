//! Tests of the embedded default allowlist, compiled for both architectures and run through the test
//! interpreter: what the workload needs is allowed, what must be denied is denied.

use super::compile_tests::{
    assert_matches_reference, constants_of, interesting_values, Reference, Rng,
};
use super::interpreter_tests::{action, check, Action, SeccompData};
use super::{compile, default_allowlist, Arch, Instruction};

pub(super) const EPERM: Action = Action::Errno(1);
pub(super) const ENOSYS: Action = Action::Errno(38);

// <linux/sched.h>
const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_PARENT: u64 = 0x8000;
const CLONE_THREAD: u64 = 0x10000;
const CLONE_NEWNS: u64 = 0x20000;
const CLONE_SYSVSEM: u64 = 0x40000;
const CLONE_SETTLS: u64 = 0x80000;
const CLONE_PARENT_SETTID: u64 = 0x100000;
const CLONE_CHILD_CLEARTID: u64 = 0x200000;
const CLONE_CHILD_SETTID: u64 = 0x0100_0000;
const CLONE_NEWCGROUP: u64 = 0x0200_0000;
const CLONE_NEWUTS: u64 = 0x0400_0000;
const CLONE_NEWIPC: u64 = 0x0800_0000;
const CLONE_NEWUSER: u64 = 0x1000_0000;
const CLONE_NEWPID: u64 = 0x2000_0000;
const CLONE_NEWNET: u64 = 0x4000_0000;
const SIGCHLD: u64 = 17;
const TCGETS: u64 = 0x5401;
const TIOCGWINSZ: u64 = 0x5413;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const AF_NETLINK: u64 = 16;
const AF_PACKET: u64 = 17;
const AF_VSOCK: u64 = 40;
const SOCK_STREAM: u64 = 1;
const SOCK_RAW: u64 = 3;
const NETLINK_ROUTE: u64 = 0;
const NETLINK_AUDIT: u64 = 9;

/// Every syscall the issue requires the program to deny (with all-zero arguments).
const MUST_DENY: &[&str] = &[
    "unshare",
    "setns",
    "clone3",
    "openat2",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "open_by_handle_at",
    "name_to_handle_at",
    "chroot",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "lookup_dcookie",
    "quotactl",
    "vhangup",
    "syslog",
    "iopl",
    "ioperm",
    "nfsservctl",
    "uselib",
    "fanotify_init",
    "move_pages",
    "mbind",
    "set_mempolicy",
];

pub(super) struct Filter {
    pub arch: Arch,
    pub program: Vec<Instruction>,
}

impl Filter {
    pub fn new(arch: Arch) -> Filter {
        Filter {
            arch,
            program: compile(&default_allowlist().unwrap(), arch).unwrap(),
        }
    }

    pub fn call(&self, name: &str, args: &[u64]) -> Action {
        let nr = self
            .arch
            .syscall_number(name)
            .unwrap_or_else(|| panic!("{name} on {:?}", self.arch));
        action(&self.program, &SeccompData::new(self.arch, nr, args))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.arch.syscall_number(name).is_some()
    }
}

pub(super) fn filters() -> [Filter; 2] {
    [Filter::new(Arch::X86_64), Filter::new(Arch::Aarch64)]
}

#[test]
fn default_list_parses_and_every_entry_says_why() {
    let list = default_allowlist().unwrap();
    let whys = list
        .allow()
        .iter()
        .map(|g| &g.why)
        .chain(list.allow_if().iter().map(|e| &e.why))
        .chain(list.deny().iter().map(|g| &g.why));
    for why in whys {
        assert!(
            why.trim().len() > 10,
            "a `why` this short explains nothing: {why:?}"
        );
    }
    assert_eq!(list.default_errno().name(), "EPERM");
}

#[test]
fn default_program_is_valid_and_short() {
    for filter in filters() {
        check(&filter.program).unwrap();
        assert!(
            filter.program.len() < 4096,
            "{} instructions",
            filter.program.len()
        );
        assert!(
            filter.program.len() < 1024,
            "grew unexpectedly: {} instructions",
            filter.program.len()
        );
    }
}

#[test]
fn everyday_syscalls_are_allowed() {
    for f in filters() {
        for name in [
            "read",
            "write",
            "openat",
            "close",
            "mmap",
            "mprotect",
            "munmap",
            "brk",
            "futex",
            "execve",
            "exit_group",
            "wait4",
            "rt_sigaction",
            "rt_sigreturn",
            "getrandom",
            "statx",
            "getdents64",
            "pipe2",
            "dup3",
            "set_robust_list",
            "rseq",
            "prlimit64",
            "sched_getaffinity",
            "clock_nanosleep",
            "epoll_pwait",
            "ppoll",
            "connect",
            "sendmsg",
            "recvmsg",
            "unlinkat",
            "renameat2",
            "fchmodat",
            "utimensat",
            "copy_file_range",
            "memfd_create",
            "prctl",
            "seccomp",
            "landlock_restrict_self",
        ] {
            assert_eq!(
                f.call(name, &[0, 0, 0]),
                Action::Allow,
                "{name} on {:?}",
                f.arch
            );
        }
    }
    let x86 = Filter::new(Arch::X86_64);
    for name in [
        "open",
        "stat",
        "fork",
        "vfork",
        "arch_prctl",
        "newfstatat",
        "poll",
        "select",
        "pipe",
    ] {
        assert_eq!(x86.call(name, &[0, 0, 0]), Action::Allow, "{name}");
    }
    assert_eq!(
        Filter::new(Arch::Aarch64).call("fstatat", &[0, 0, 0]),
        Action::Allow
    );
}

#[test]
fn must_deny_list_is_denied() {
    for f in filters() {
        for name in MUST_DENY.iter().filter(|n| f.exists(n)) {
            let want = if matches!(*name, "clone3" | "openat2") {
                ENOSYS
            } else {
                EPERM
            };
            assert_eq!(f.call(name, &[0; 6]), want, "{name} on {:?}", f.arch);
        }
    }
    // Each must-deny name exists on some architecture (so the list above has no typo) and is documented.
    let denied: Vec<String> = default_allowlist()
        .unwrap()
        .denials()
        .into_iter()
        .map(|d| d.syscall)
        .collect();
    for name in MUST_DENY {
        assert!(
            Arch::ALL.iter().any(|a| a.syscall_number(name).is_some()),
            "{name}"
        );
        assert!(
            denied.iter().any(|d| d == name),
            "{name} should be an explicit [[deny]]"
        );
    }
}

#[test]
fn clone_allows_threads_and_forks_but_no_namespaces() {
    let thread = CLONE_VM
        | CLONE_FS
        | CLONE_FILES
        | CLONE_SIGHAND
        | CLONE_THREAD
        | CLONE_SYSVSEM
        | CLONE_SETTLS
        | CLONE_PARENT_SETTID
        | CLONE_CHILD_CLEARTID;
    let fork = CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD;
    let spawn = CLONE_VM | CLONE_VFORK | SIGCHLD;
    for f in filters() {
        assert_eq!(
            f.call("clone", &[thread, 0x7f00_0000_1000, 0, 0, 0x7f00_0000_2000]),
            Action::Allow
        );
        assert_eq!(f.call("clone", &[SIGCHLD]), Action::Allow, "plain fork");
        assert_eq!(f.call("clone", &[fork]), Action::Allow, "glibc fork");
        assert_eq!(f.call("clone", &[spawn]), Action::Allow, "posix_spawn");
        assert_eq!(f.call("clone", &[CLONE_PARENT | SIGCHLD]), Action::Allow);
        for ns in [
            CLONE_NEWUSER,
            CLONE_NEWNS,
            CLONE_NEWPID,
            CLONE_NEWNET,
            CLONE_NEWUTS,
            CLONE_NEWIPC,
            CLONE_NEWCGROUP,
        ] {
            assert_eq!(
                f.call("clone", &[ns | SIGCHLD]),
                EPERM,
                "{ns:#x} on {:?}",
                f.arch
            );
            assert_eq!(
                f.call("clone", &[ns | thread]),
                EPERM,
                "{ns:#x} on {:?}",
                f.arch
            );
        }
        assert_eq!(f.call("clone3", &[0x7f00_0000_1000, 88]), ENOSYS);
    }
}

#[test]
fn ioctl_denies_terminal_injection_only() {
    for f in filters() {
        assert_eq!(
            f.call("ioctl", &[0, TCGETS, 0x7ffc_0000_0000]),
            Action::Allow
        );
        assert_eq!(
            f.call("ioctl", &[1, TIOCGWINSZ, 0x7ffc_0000_0000]),
            Action::Allow
        );
        for cmd in [TIOCSTI, TIOCLINUX] {
            assert_eq!(
                f.call("ioctl", &[0, cmd, 0x7ffc_0000_0000]),
                EPERM,
                "{cmd:#x}"
            );
            // The kernel truncates cmd to unsigned int: high bits must not smuggle it through.
            assert_eq!(
                f.call("ioctl", &[0, 0xffff_ffff_0000_0000 | cmd]),
                EPERM,
                "{cmd:#x} with high bits"
            );
            assert_eq!(
                f.call("ioctl", &[0, (1 << 32) | cmd]),
                EPERM,
                "{cmd:#x} with bit 32"
            );
        }
    }
}

#[test]
fn socket_families_are_filtered() {
    for f in filters() {
        for family in [AF_UNIX, AF_INET, AF_INET6] {
            assert_eq!(
                f.call("socket", &[family, SOCK_STREAM, 0]),
                Action::Allow,
                "family {family}"
            );
        }
        assert_eq!(
            f.call("socket", &[AF_NETLINK, SOCK_RAW, NETLINK_ROUTE]),
            Action::Allow
        );
        assert_eq!(
            f.call("socket", &[AF_NETLINK, SOCK_RAW, NETLINK_AUDIT]),
            EPERM
        );
        for family in [AF_PACKET, AF_VSOCK, 0, 3, 38, 0xffff_ffff_0000_0002] {
            assert_eq!(
                f.call("socket", &[family, SOCK_RAW, 0]),
                EPERM,
                "family {family:#x}"
            );
        }
        assert_eq!(
            f.call("socketpair", &[AF_UNIX, SOCK_STREAM, 0, 0x7ffc_0000_0000]),
            Action::Allow
        );
        assert_eq!(
            f.call("socketpair", &[AF_INET, SOCK_STREAM, 0, 0x7ffc_0000_0000]),
            EPERM
        );
    }
}

#[test]
fn personality_allows_docker_values_only() {
    for f in filters() {
        for persona in [0, 8, 0x20000, 0x20008, 0xffff_ffff, 0xffff_ffff_0000_0000] {
            assert_eq!(
                f.call("personality", &[persona]),
                Action::Allow,
                "{persona:#x}"
            );
        }
        // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, PER_SVR4.
        for persona in [0x0004_0000, 0x0040_0000, 0x0010_0000, 0x0410_0001] {
            assert_eq!(f.call("personality", &[persona]), EPERM, "{persona:#x}");
        }
    }
}

#[test]
fn wrong_arch_and_x32_are_killed() {
    let x86 = Filter::new(Arch::X86_64);
    let read = Arch::X86_64.syscall_number("read").unwrap();
    let data = SeccompData {
        arch: 0x4000_0003,
        ..SeccompData::new(Arch::X86_64, read, &[])
    }; // AUDIT_ARCH_I386
    assert_eq!(action(&x86.program, &data), Action::KillProcess);
    for nr in [0x4000_0000 | read, 0x4000_0000 | 59, 0x4000_0200] {
        assert_eq!(
            action(&x86.program, &SeccompData::new(Arch::X86_64, nr, &[])),
            Action::KillProcess
        );
    }
    let arm = Filter::new(Arch::Aarch64);
    let data = SeccompData::new(Arch::X86_64, 63, &[]);
    assert_eq!(
        action(&arm.program, &data),
        Action::KillProcess,
        "x86_64 call into an aarch64 filter"
    );
}

#[test]
fn unlisted_syscalls_get_the_default_errno() {
    for f in filters() {
        for name in [
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "lsm_set_self_attr",
        ] {
            assert_eq!(f.call(name, &[0; 6]), EPERM, "{name}");
        }
        for nr in [1000, 0x3fff_ffff, u32::MAX >> 2] {
            assert_eq!(
                action(&f.program, &SeccompData::new(f.arch, nr, &[])),
                EPERM,
                "{nr:#x}"
            );
        }
    }
}

#[test]
fn compiled_default_matches_the_data_for_every_number_and_condition() {
    let list = default_allowlist().unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let values = interesting_values(&constants_of(&list), &mut rng);
    for f in filters() {
        let reference = Reference::new(&list, f.arch);
        for nr in (0..1024).chain([0x3fff_ffff, 0x4000_0000, 0x8000_0000, u32::MAX]) {
            for args in [
                [0u64; 6],
                [
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next(),
                ],
            ] {
                let data = SeccompData {
                    args,
                    ..SeccompData::new(f.arch, nr, &[])
                };
                assert_eq!(
                    action(&f.program, &data),
                    reference.expected(&data),
                    "nr {nr} on {:?}",
                    f.arch
                );
            }
        }
        assert_matches_reference(&list, f.arch, &values);
    }
}
