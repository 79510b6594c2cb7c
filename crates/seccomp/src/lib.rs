//! agentbox's seccomp-bpf allowlist and its compiler. The allowlist is reviewed data
//! (`crates/seccomp/allowlist.toml`, every entry with a `why`); this crate parses and validates it
//! ([`parse_allowlist`]) and turns it into a classic BPF program ([`compile`]) for one architecture.
//! Everything here is pure and safe: it never installs a filter, never reads a file and never issues a
//! syscall. `agentbox-runtime`'s build script runs it at build time and embeds the program; installing
//! it is `agentbox_sys::seccomp`'s job. This crate depends on neither, so it can run on the build host.

#![forbid(unsafe_code)]

mod allowlist;
mod compile;

#[cfg(test)]
mod allowlist_tests;
#[cfg(test)]
mod compile_tests;
#[cfg(test)]
mod default_tests;
#[cfg(test)]
mod interpreter_tests;
#[cfg(test)]
mod setuid_tests;

use std::str::FromStr;

pub use allowlist::{
    parse_allowlist, AllowGroup, Allowlist, ArgCheck, ArgOp, ArgWidth, ConditionalAllow, Denial,
    DenyGroup, Errno,
};
pub use compile::{compile, BPF_MAXINSNS};

/// The reviewed default allowlist (`crates/seccomp/allowlist.toml`), embedded at build time.
pub const DEFAULT_ALLOWLIST: &str = include_str!("../allowlist.toml");

/// One classic BPF instruction, field for field the kernel's `struct sock_filter`: opcode, jump offsets
/// when the condition is true / false, and the operand. Plain data, so this crate stays free of the
/// installing crate; `agentbox-runtime` turns it into `agentbox_sys::seccomp::SockFilter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Instruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// An architecture the allowlist can be compiled for. Syscall numbers, and whether a syscall exists at all,
/// depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// Every architecture agentbox supports. A syscall name unknown on all of them is a typo.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// `AUDIT_ARCH_X86_64`: `EM_X86_64` (62) | `__AUDIT_ARCH_64BIT` | `__AUDIT_ARCH_LE`.
    pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    /// `AUDIT_ARCH_AARCH64`: `EM_AARCH64` (183) | `__AUDIT_ARCH_64BIT` | `__AUDIT_ARCH_LE`.
    pub const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

    /// The architecture named by a `target_arch` cfg value (`CARGO_CFG_TARGET_ARCH` in a build script),
    /// or `None` for one agentbox does not support.
    pub fn from_target_arch(name: &str) -> Option<Arch> {
        match name {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// The architecture this binary was built for. Defined on the supported architectures only: the crate
    /// itself builds anywhere (it may run on a build host), agentbox does not.
    #[cfg(target_arch = "x86_64")]
    pub fn native() -> Arch {
        Arch::X86_64
    }

    /// The architecture this binary was built for.
    #[cfg(target_arch = "aarch64")]
    pub fn native() -> Arch {
        Arch::Aarch64
    }

    /// The value the kernel puts in `seccomp_data.arch` for this architecture.
    pub fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => Self::AUDIT_ARCH_X86_64,
            Arch::Aarch64 => Self::AUDIT_ARCH_AARCH64,
        }
    }

    /// The syscall number of `name` on this architecture, or `None` if the architecture has no such syscall
    /// (e.g. `open` or `fork` on aarch64).
    pub fn syscall_number(self, name: &str) -> Option<u32> {
        let id = match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::from_str(name).ok()?.id(),
            Arch::Aarch64 => syscalls::aarch64::Sysno::from_str(name).ok()?.id(),
        };
        u32::try_from(id).ok()
    }
}

/// Why an allowlist was refused or could not be compiled. Each variant names the entry or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("parsing the seccomp allowlist: {0}")]
    ParseAllowlist(#[from] toml::de::Error),
    #[error("seccomp allowlist entry {entry} has an empty `why`: say why the workload needs it (or why it is denied)")]
    MissingWhy { entry: String },
    #[error("seccomp allowlist entry {entry} lists no syscalls")]
    EmptyEntry { entry: String },
    #[error("syscall `{name}` is unknown on every supported architecture (typo?)")]
    UnknownSyscall { name: String },
    #[error("syscall `{name}` appears in more than one allow/deny entry (only several `allow_if` for one syscall may)")]
    DuplicateSyscall { name: String },
    #[error("unknown errno name `{name}` (known: EPERM, EACCES, ENOSYS, EINVAL, ...)")]
    UnknownErrno { name: String },
    #[error("`{syscall}`: unknown symbolic constant `{name}` in `{text}`")]
    UnknownConstant {
        syscall: String,
        name: String,
        text: String,
    },
    #[error(
        "`{syscall}`: `{text}` is not a non-negative number or `A|B` expression of known constants"
    )]
    InvalidValue { syscall: String, text: String },
    #[error("`{syscall}`: argument index {index} is out of range (0..=5)")]
    ArgIndexOutOfRange { syscall: String, index: u8 },
    #[error("`{syscall}`: width {width} is not 32 or 64")]
    InvalidWidth { syscall: String, width: u8 },
    #[error("`{syscall}` arg{index}: {value:#x} does not fit the {width}-bit comparison")]
    ValueTooWide {
        syscall: String,
        index: u8,
        value: u64,
        width: u8,
    },
    #[error("`{syscall}` arg{index}: value {value:#x} has bits outside mask {mask:#x}, so it can never match")]
    ValueOutsideMask {
        syscall: String,
        index: u8,
        value: u64,
        mask: u64,
    },
    #[error("`{syscall}` arg{index}: `in` needs at least one value")]
    EmptyValueSet { syscall: String, index: u8 },
    #[error("`{syscall}`: an `allow_if` entry needs at least one argument condition (use [[allow]] otherwise)")]
    NoConditions { syscall: String },
    #[error("syscalls `{first}` and `{second}` share number {nr} on {arch:?}")]
    NumberCollision {
        first: String,
        second: String,
        nr: u32,
        arch: Arch,
    },
    #[error("compiled seccomp program has {len} instructions, over the kernel's limit of {max}")]
    ProgramTooLong { len: usize, max: usize },
    #[error("internal error: BPF jump of {offset} instructions does not fit its field")]
    JumpTooFar { offset: usize },
}

/// The embedded default allowlist, parsed and validated.
pub fn default_allowlist() -> Result<Allowlist, SeccompError> {
    parse_allowlist(DEFAULT_ALLOWLIST)
}
