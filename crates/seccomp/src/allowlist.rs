//! The allowlist data model: the serde shape of `allowlist.toml` and its validation into an [`Allowlist`] the
//! compiler trusts (whys present, names known on some architecture, no duplicates, errnos and symbolic
//! constants resolved, argument values that can match). It never resolves syscall numbers for one
//! architecture: that is the compiler's job, since a name may exist on one architecture and not another.

use std::collections::HashSet;

use serde::Deserialize;

use crate::{Arch, SeccompError};

/// Errno values the allowlist may name. The numbers are the same on x86_64 and aarch64 (asm-generic).
const ERRNOS: &[(&str, u16)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("EACCES", 13),
    ("EINVAL", 22),
    ("ENOSYS", 38),
    ("EOPNOTSUPP", 95),
    ("EAFNOSUPPORT", 97),
];

/// Symbolic argument constants the allowlist may use. Only values that are identical on every supported
/// architecture belong here (the ioctl numbers below come from asm-generic on both x86_64 and aarch64).
const ARG_CONSTANTS: &[(&str, u64)] = &[
    // <linux/sched.h> clone and unshare namespace flags.
    ("CLONE_NEWTIME", 0x0000_0080),
    ("CLONE_NEWNS", 0x0002_0000),
    ("CLONE_NEWCGROUP", 0x0200_0000),
    ("CLONE_NEWUTS", 0x0400_0000),
    ("CLONE_NEWIPC", 0x0800_0000),
    ("CLONE_NEWUSER", 0x1000_0000),
    ("CLONE_NEWPID", 0x2000_0000),
    ("CLONE_NEWNET", 0x4000_0000),
    // <linux/socket.h> address families and <linux/netlink.h> protocols.
    ("AF_UNIX", 1),
    ("AF_INET", 2),
    ("AF_INET6", 10),
    ("AF_NETLINK", 16),
    ("AF_PACKET", 17),
    ("NETLINK_ROUTE", 0),
    // <asm-generic/ioctls.h> terminal ioctls.
    ("TCGETS", 0x5401),
    ("TIOCSTI", 0x5412),
    ("TIOCLINUX", 0x541C),
    // <linux/personality.h>.
    ("PER_LINUX", 0x0000),
    ("PER_LINUX32", 0x0008),
    ("UNAME26", 0x0002_0000),
    ("ADDR_NO_RANDOMIZE", 0x0004_0000),
    // <linux/stat.h> mode bits.
    ("S_ISUID", 0o4000),
    ("S_ISGID", 0o2000),
    // <asm-generic/fcntl.h> open flags, which x86_64 and aarch64 share for these two. `O_TMPFILE` itself is
    // `__O_TMPFILE|O_DIRECTORY`, and O_DIRECTORY differs between them, so only its own bit is named.
    ("O_CREAT", 0o100),
    ("__O_TMPFILE", 0o2000_0000),
];

/// An errno the filter returns, by name and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno {
    name: &'static str,
    number: u16,
}

impl Errno {
    /// Looks up an errno by its C name (`"EPERM"`).
    pub fn from_name(name: &str) -> Option<Errno> {
        ERRNOS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(name, number)| Errno { name, number })
    }

    /// An errno [`parse_allowlist`] accepted, written out by a build script: see
    /// [`Allowlist::from_validated_parts`].
    #[doc(hidden)]
    pub const fn from_validated(name: &'static str, number: u16) -> Errno {
        Errno { name, number }
    }

    pub fn name(self) -> &'static str {
        self.name
    }

    pub fn number(self) -> u16 {
        self.number
    }
}

/// How much of a 64-bit syscall argument a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgWidth {
    /// Both 32-bit halves: the default, for arguments the kernel reads as 64-bit (and the strictest choice
    /// for `eq`/`in`).
    Bits64,
    /// The low 32 bits only, for arguments the kernel truncates to `int`/`unsigned int` (ioctl's `cmd`,
    /// personality's `persona`). Required wherever a `ne` must not be bypassed by setting the high bits.
    Low32,
}

/// The comparison a condition makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgOp {
    Eq(u64),
    Ne(u64),
    /// `arg & mask == value`.
    MaskedEq {
        mask: u64,
        value: u64,
    },
    /// `arg` equals one of the values.
    In(Vec<u64>),
}

/// One condition on one syscall argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgCheck {
    /// Argument index, 0..=5.
    pub index: u8,
    pub width: ArgWidth,
    pub op: ArgOp,
    /// The condition as written in the data file (`arg1 != TIOCSTI`), for docs and error messages.
    pub text: String,
}

/// Syscalls allowed unconditionally, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowGroup {
    pub syscalls: Vec<String>,
    pub why: String,
}

/// One syscall allowed only when every check holds. Several entries for one syscall are alternatives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionalAllow {
    pub syscall: String,
    pub why: String,
    pub checks: Vec<ArgCheck>,
}

/// Syscalls denied explicitly with their own errno, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyGroup {
    pub syscalls: Vec<String>,
    pub errno: Errno,
    pub why: String,
}

/// A validated allowlist. Only [`parse_allowlist`] builds one, so the compiler can trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    default_errno: Errno,
    allow: Vec<AllowGroup>,
    allow_if: Vec<ConditionalAllow>,
    deny: Vec<DenyGroup>,
}

/// One syscall the program denies, for docs and for the probes of tests and `agentbox eval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub syscall: String,
    pub errno: Errno,
    /// For conditionally allowed syscalls, the condition under which the call is allowed after all.
    pub unless: Option<String>,
    pub why: String,
}

impl Allowlist {
    /// Puts back together a list that [`parse_allowlist`] validated and a build script wrote out
    /// as code (`agentbox-runtime`'s embeds the default list so that a run parses no TOML). Not
    /// for anything else: nothing here is checked again, and that build script's output is
    /// compared with a fresh parse by a test.
    #[doc(hidden)]
    pub fn from_validated_parts(
        default_errno: Errno,
        allow: Vec<AllowGroup>,
        allow_if: Vec<ConditionalAllow>,
        deny: Vec<DenyGroup>,
    ) -> Allowlist {
        Allowlist {
            default_errno,
            allow,
            allow_if,
            deny,
        }
    }

    /// The errno of every syscall the list does not mention.
    pub fn default_errno(&self) -> Errno {
        self.default_errno
    }

    pub fn allow(&self) -> &[AllowGroup] {
        &self.allow
    }

    pub fn allow_if(&self) -> &[ConditionalAllow] {
        &self.allow_if
    }

    pub fn deny(&self) -> &[DenyGroup] {
        &self.deny
    }

    /// Everything the list denies by name: the `[[deny]]` syscalls, then each conditionally allowed syscall
    /// (with its alternatives joined by `or`). Syscalls the list simply does not mention are not included.
    pub fn denials(&self) -> Vec<Denial> {
        let mut out: Vec<Denial> = self
            .deny
            .iter()
            .flat_map(|group| {
                group.syscalls.iter().map(|name| Denial {
                    syscall: name.clone(),
                    errno: group.errno,
                    unless: None,
                    why: group.why.clone(),
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for entry in &self.allow_if {
            if !seen.insert(entry.syscall.as_str()) {
                continue;
            }
            let alternatives: Vec<&ConditionalAllow> = self
                .allow_if
                .iter()
                .filter(|e| e.syscall == entry.syscall)
                .collect();
            let describe = |e: &ConditionalAllow| {
                let all = e
                    .checks
                    .iter()
                    .map(|c| c.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" && ");
                if alternatives.len() > 1 && e.checks.len() > 1 {
                    format!("({all})")
                } else {
                    all
                }
            };
            out.push(Denial {
                syscall: entry.syscall.clone(),
                errno: self.default_errno,
                unless: Some(
                    alternatives
                        .iter()
                        .map(|e| describe(e))
                        .collect::<Vec<_>>()
                        .join(" or "),
                ),
                why: alternatives
                    .iter()
                    .map(|e| e.why.as_str())
                    .collect::<Vec<_>>()
                    .join(" / "),
            });
        }
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowlistFile {
    default_errno: String,
    #[serde(default)]
    allow: Vec<AllowFile>,
    #[serde(default)]
    allow_if: Vec<AllowIfFile>,
    #[serde(default)]
    deny: Vec<DenyFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowFile {
    syscalls: Vec<String>,
    why: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowIfFile {
    syscall: String,
    why: String,
    args: Vec<ArgCheckFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyFile {
    syscalls: Vec<String>,
    errno: String,
    why: String,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum ArgCheckFile {
    Eq {
        index: u8,
        value: ValueFile,
        width: Option<u8>,
    },
    Ne {
        index: u8,
        value: ValueFile,
        width: Option<u8>,
    },
    MaskedEq {
        index: u8,
        mask: ValueFile,
        value: ValueFile,
        width: Option<u8>,
    },
    In {
        index: u8,
        values: Vec<ValueFile>,
        width: Option<u8>,
    },
}

/// A number, or a string: `"0x5412"`, `"TIOCSTI"`, `"CLONE_NEWNS|CLONE_NEWUSER"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ValueFile {
    Number(u64),
    Expr(String),
}

impl ValueFile {
    fn text(&self) -> String {
        match self {
            ValueFile::Number(n) if *n < 10 => n.to_string(),
            ValueFile::Number(n) => format!("{n:#x}"),
            ValueFile::Expr(s) => s.clone(),
        }
    }

    fn resolve(&self, syscall: &str) -> Result<u64, SeccompError> {
        let text = match self {
            ValueFile::Number(n) => return Ok(*n),
            ValueFile::Expr(text) => text,
        };
        let invalid = || SeccompError::InvalidValue {
            syscall: syscall.to_owned(),
            text: text.clone(),
        };
        let mut acc = 0u64;
        for part in text.split('|').map(str::trim) {
            let value =
                if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                    u64::from_str_radix(&hex.replace('_', ""), 16).map_err(|_| invalid())?
                } else if part.starts_with(|c: char| c.is_ascii_digit()) {
                    part.replace('_', "")
                        .parse::<u64>()
                        .map_err(|_| invalid())?
                } else if part.is_empty() {
                    return Err(invalid());
                } else {
                    ARG_CONSTANTS
                        .iter()
                        .find(|(n, _)| *n == part)
                        .map(|&(_, v)| v)
                        .ok_or_else(|| SeccompError::UnknownConstant {
                            syscall: syscall.to_owned(),
                            name: part.to_owned(),
                            text: text.clone(),
                        })?
                };
            acc |= value;
        }
        Ok(acc)
    }
}

/// Parses and validates an allowlist file.
pub fn parse_allowlist(text: &str) -> Result<Allowlist, SeccompError> {
    let file: AllowlistFile = toml::from_str(text)?;
    let default_errno = errno(&file.default_errno)?;
    let mut listed = HashSet::new();

    let mut allow = Vec::with_capacity(file.allow.len());
    for (i, group) in file.allow.into_iter().enumerate() {
        let entry = format!("allow[{i}]");
        check_group(&entry, &group.syscalls, &group.why, &mut listed)?;
        allow.push(AllowGroup {
            syscalls: group.syscalls,
            why: group.why,
        });
    }

    let mut deny = Vec::with_capacity(file.deny.len());
    for (i, group) in file.deny.into_iter().enumerate() {
        let entry = format!("deny[{i}]");
        check_group(&entry, &group.syscalls, &group.why, &mut listed)?;
        deny.push(DenyGroup {
            syscalls: group.syscalls,
            errno: errno(&group.errno)?,
            why: group.why,
        });
    }

    let mut allow_if = Vec::with_capacity(file.allow_if.len());
    for (i, entry) in file.allow_if.into_iter().enumerate() {
        let name = entry.syscall;
        check_why(&format!("allow_if[{i}] ({name})"), &entry.why)?;
        check_known(&name)?;
        if listed.contains(&name) {
            return Err(SeccompError::DuplicateSyscall { name });
        }
        if entry.args.is_empty() {
            return Err(SeccompError::NoConditions { syscall: name });
        }
        let checks = entry
            .args
            .into_iter()
            .map(|c| arg_check(&name, c))
            .collect::<Result<Vec<_>, _>>()?;
        allow_if.push(ConditionalAllow {
            syscall: name,
            why: entry.why,
            checks,
        });
    }

    Ok(Allowlist {
        default_errno,
        allow,
        allow_if,
        deny,
    })
}

fn errno(name: &str) -> Result<Errno, SeccompError> {
    Errno::from_name(name).ok_or_else(|| SeccompError::UnknownErrno {
        name: name.to_owned(),
    })
}

fn check_why(entry: &str, why: &str) -> Result<(), SeccompError> {
    if why.trim().is_empty() {
        return Err(SeccompError::MissingWhy {
            entry: entry.to_owned(),
        });
    }
    Ok(())
}

fn check_known(name: &str) -> Result<(), SeccompError> {
    if Arch::ALL
        .iter()
        .all(|arch| arch.syscall_number(name).is_none())
    {
        return Err(SeccompError::UnknownSyscall {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn check_group(
    entry: &str,
    syscalls: &[String],
    why: &str,
    listed: &mut HashSet<String>,
) -> Result<(), SeccompError> {
    check_why(entry, why)?;
    if syscalls.is_empty() {
        return Err(SeccompError::EmptyEntry {
            entry: entry.to_owned(),
        });
    }
    for name in syscalls {
        check_known(name)?;
        if !listed.insert(name.clone()) {
            return Err(SeccompError::DuplicateSyscall { name: name.clone() });
        }
    }
    Ok(())
}

fn arg_check(syscall: &str, file: ArgCheckFile) -> Result<ArgCheck, SeccompError> {
    let (index, width) = match &file {
        ArgCheckFile::Eq { index, width, .. }
        | ArgCheckFile::Ne { index, width, .. }
        | ArgCheckFile::MaskedEq { index, width, .. }
        | ArgCheckFile::In { index, width, .. } => (*index, *width),
    };
    if index > 5 {
        return Err(SeccompError::ArgIndexOutOfRange {
            syscall: syscall.to_owned(),
            index,
        });
    }
    let (width, bits, suffix) = match width {
        None | Some(64) => (ArgWidth::Bits64, 64, ""),
        Some(32) => (ArgWidth::Low32, 32, " (low 32 bits)"),
        Some(other) => {
            return Err(SeccompError::InvalidWidth {
                syscall: syscall.to_owned(),
                width: other,
            })
        }
    };
    let fits = |value: u64| {
        if width == ArgWidth::Low32 && value > u64::from(u32::MAX) {
            Err(SeccompError::ValueTooWide {
                syscall: syscall.to_owned(),
                index,
                value,
                width: bits,
            })
        } else {
            Ok(value)
        }
    };
    let (op, text) = match file {
        ArgCheckFile::Eq { value, .. } => (
            ArgOp::Eq(fits(value.resolve(syscall)?)?),
            format!("== {}", value.text()),
        ),
        ArgCheckFile::Ne { value, .. } => (
            ArgOp::Ne(fits(value.resolve(syscall)?)?),
            format!("!= {}", value.text()),
        ),
        ArgCheckFile::MaskedEq { mask, value, .. } => {
            let (mask_n, value_n) = (
                fits(mask.resolve(syscall)?)?,
                fits(value.resolve(syscall)?)?,
            );
            if value_n & !mask_n != 0 {
                return Err(SeccompError::ValueOutsideMask {
                    syscall: syscall.to_owned(),
                    index,
                    value: value_n,
                    mask: mask_n,
                });
            }
            (
                ArgOp::MaskedEq {
                    mask: mask_n,
                    value: value_n,
                },
                format!("& ({}) == {}", mask.text(), value.text()),
            )
        }
        ArgCheckFile::In { values, .. } => {
            if values.is_empty() {
                return Err(SeccompError::EmptyValueSet {
                    syscall: syscall.to_owned(),
                    index,
                });
            }
            let numbers = values
                .iter()
                .map(|v| fits(v.resolve(syscall)?))
                .collect::<Result<Vec<_>, _>>()?;
            let list = values
                .iter()
                .map(ValueFile::text)
                .collect::<Vec<_>>()
                .join(", ");
            (ArgOp::In(numbers), format!("in [{list}]"))
        }
    };
    Ok(ArgCheck {
        index,
        width,
        op,
        text: format!("arg{index} {text}{suffix}"),
    })
}
