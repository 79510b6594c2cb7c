//! A small classic-BPF interpreter over a fake `seccomp_data`, so the compiled programs can be tested without
//! installing them. It checks programs the way the kernel's loader does (`bpf_check_classic` and
//! `seccomp_check_filter`) before running them, and covers the classic instruction set except the packet
//! loads seccomp forbids.

use crate::Instruction;

/// `struct seccomp_data`, as the kernel fills it for one syscall.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    pub fn new(arch: super::Arch, nr: u32, args: &[u64]) -> Self {
        let mut all = [0u64; 6];
        all[..args.len()].copy_from_slice(args);
        SeccompData {
            nr,
            arch: arch.audit_arch(),
            instruction_pointer: 0x7f00_dead_beef,
            args: all,
        }
    }

    /// The little-endian bytes the filter's absolute loads read.
    fn bytes(&self) -> [u8; SECCOMP_DATA_LEN] {
        let mut out = [0u8; SECCOMP_DATA_LEN];
        out[0..4].copy_from_slice(&self.nr.to_le_bytes());
        out[4..8].copy_from_slice(&self.arch.to_le_bytes());
        out[8..16].copy_from_slice(&self.instruction_pointer.to_le_bytes());
        for (i, arg) in self.args.iter().enumerate() {
            out[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        out
    }
}

/// The decoded outcome of a seccomp filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    KillProcess,
    KillThread,
    Trap,
    Errno(u16),
    Allow,
    Other(u32),
}

impl Action {
    pub fn from_ret(ret: u32) -> Action {
        match ret & 0xffff_0000 {
            0x8000_0000 => Action::KillProcess,
            0x0000_0000 => Action::KillThread,
            0x0003_0000 => Action::Trap,
            0x0005_0000 => Action::Errno((ret & 0xffff) as u16),
            0x7fff_0000 => Action::Allow,
            _ => Action::Other(ret),
        }
    }
}

const SECCOMP_DATA_LEN: usize = 64;
const BPF_MEMWORDS: usize = 16;

/// Checks what the kernel checks when a filter is attached; `Err` names the first offending instruction.
pub(super) fn check(program: &[Instruction]) -> Result<(), String> {
    if program.is_empty() || program.len() > super::BPF_MAXINSNS {
        return Err(format!(
            "length {} outside 1..={}",
            program.len(),
            super::BPF_MAXINSNS
        ));
    }
    for (pc, insn) in program.iter().enumerate() {
        let remaining = program.len() - pc - 1;
        let bad = |why: &str| Err(format!("insn {pc} {insn:?}: {why}"));
        match insn.code & 0x07 {
            // LD / LDX
            0x00 | 0x01 => match insn.code {
                0x20 => {
                    // LD W ABS: seccomp only allows aligned 32-bit loads inside seccomp_data.
                    if insn.k % 4 != 0 || insn.k as usize >= SECCOMP_DATA_LEN {
                        return bad("absolute load outside seccomp_data or unaligned");
                    }
                }
                0x00 | 0x01 => {}                                     // LD/LDX IMM
                0x60 | 0x61 if (insn.k as usize) < BPF_MEMWORDS => {} // LD/LDX MEM
                0x80 | 0x81 => {}                                     // LD/LDX W LEN
                _ => return bad("load mode not allowed in seccomp"),
            },
            0x02 | 0x03 if (insn.k as usize) < BPF_MEMWORDS => {} // ST / STX
            0x04 => {
                let op = insn.code & 0xf0;
                if !matches!(
                    op,
                    0x00 | 0x10 | 0x20 | 0x30 | 0x40 | 0x50 | 0x60 | 0x70 | 0x80 | 0x90 | 0xa0
                ) {
                    return bad("unknown ALU op");
                }
                if insn.code & 0x08 == 0 && matches!(op, 0x30 | 0x90) && insn.k == 0 {
                    return bad("division by constant zero");
                }
            }
            0x05 => {
                let op = insn.code & 0xf0;
                if op == 0x00 {
                    if insn.code != 0x05 || insn.k as usize >= remaining {
                        return bad("ja out of range");
                    }
                } else if !matches!(op, 0x10 | 0x20 | 0x30 | 0x40) {
                    return bad("unknown jump op");
                } else if usize::from(insn.jt) >= remaining || usize::from(insn.jf) >= remaining {
                    return bad("conditional jump out of range");
                }
            }
            0x06 => {
                if !matches!(insn.code, 0x06 | 0x16) {
                    return bad("unknown return source");
                }
            }
            0x07 => {
                if !matches!(insn.code, 0x07 | 0x87) {
                    return bad("unknown misc op");
                }
            }
            _ => return bad("instruction class not allowed in seccomp"),
        }
    }
    match program.last() {
        Some(last) if last.code & 0x07 == 0x06 => Ok(()),
        _ => Err("program does not end with a return".to_owned()),
    }
}

/// Runs `program` over `data` and returns the filter's return value. Panics on a program [`check`] rejects.
pub(super) fn run(program: &[Instruction], data: &SeccompData) -> u32 {
    if let Err(e) = check(program) {
        panic!("invalid program: {e}");
    }
    let bytes = data.bytes();
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; BPF_MEMWORDS];
    let mut pc = 0usize;
    loop {
        let insn = program[pc];
        pc += 1;
        let src = if insn.code & 0x08 != 0 { x } else { insn.k };
        match insn.code & 0x07 {
            0x00 => {
                a = match insn.code {
                    0x20 => {
                        let at = insn.k as usize;
                        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                    }
                    0x00 => insn.k,
                    0x60 => mem[insn.k as usize],
                    0x80 => SECCOMP_DATA_LEN as u32,
                    _ => unreachable!(),
                }
            }
            0x01 => {
                x = match insn.code {
                    0x01 => insn.k,
                    0x61 => mem[insn.k as usize],
                    0x81 => SECCOMP_DATA_LEN as u32,
                    _ => unreachable!(),
                }
            }
            0x02 => mem[insn.k as usize] = a,
            0x03 => mem[insn.k as usize] = x,
            0x04 => {
                a = match insn.code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 => a.checked_div(src).unwrap_or(0),
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.checked_shl(src).unwrap_or(0),
                    0x70 => a.checked_shr(src).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(src).unwrap_or(0),
                    0xa0 => a ^ src,
                    _ => unreachable!(),
                }
            }
            0x05 => {
                let taken = match insn.code & 0xf0 {
                    0x00 => {
                        pc += insn.k as usize;
                        continue;
                    }
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    _ => unreachable!(),
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            0x06 => return if insn.code == 0x16 { a } else { insn.k },
            0x07 => {
                if insn.code == 0x07 {
                    x = a;
                } else {
                    a = x;
                }
            }
            _ => unreachable!(),
        }
    }
}

/// Runs `program` and decodes the result.
pub(super) fn action(program: &[Instruction], data: &SeccompData) -> Action {
    Action::from_ret(run(program, data))
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Instruction {
    Instruction { code, jt, jf, k }
}

#[test]
fn interpreter_follows_jumps_loads_and_alu() {
    // if (args[0].lo & 0xf0) == 0x30 allow, else if nr >= 10 errno(7) else kill.
    let program = [
        insn(0x20, 0, 0, 16),          // A = args[0].lo
        insn(0x54, 0, 0, 0xf0),        // A &= 0xf0
        insn(0x15, 0, 1, 0x30),        // A == 0x30 ?
        insn(0x06, 0, 0, 0x7fff_0000), // allow
        insn(0x20, 0, 0, 0),           // A = nr
        insn(0x35, 1, 0, 10),          // A >= 10 ? -> +1
        insn(0x06, 0, 0, 0x8000_0000), // kill
        insn(0x05, 0, 0, 1),           // ja +1
        insn(0x06, 0, 0, 0),           // (skipped)
        insn(0x06, 0, 0, 0x0005_0007), // errno 7
    ];
    let arch = super::Arch::X86_64;
    assert_eq!(
        action(&program, &SeccompData::new(arch, 1, &[0x1234_5639])),
        Action::Allow
    );
    assert_eq!(
        action(&program, &SeccompData::new(arch, 12, &[0])),
        Action::Errno(7)
    );
    assert_eq!(
        action(&program, &SeccompData::new(arch, 3, &[0])),
        Action::KillProcess
    );
}

#[test]
fn interpreter_reads_high_halves_and_arch() {
    let program = [
        insn(0x20, 0, 0, 4),  // A = arch
        insn(0x07, 0, 0, 0),  // X = A
        insn(0x20, 0, 0, 28), // A = args[1].hi
        insn(0x16, 0, 0, 0),  // return A
    ];
    let data = SeccompData::new(super::Arch::Aarch64, 0, &[0, 0xabcd_0123_0000_0000]);
    assert_eq!(run(&program, &data), 0xabcd_0123);
    let program = [insn(0x20, 0, 0, 4), insn(0x16, 0, 0, 0)];
    assert_eq!(run(&program, &data), super::Arch::AUDIT_ARCH_AARCH64);
}

#[test]
fn checker_rejects_what_the_kernel_rejects() {
    assert!(check(&[]).is_err());
    assert!(check(&[insn(0x20, 0, 0, 0)]).is_err(), "no final return");
    assert!(
        check(&[insn(0x20, 0, 0, 2), insn(0x06, 0, 0, 0)]).is_err(),
        "unaligned load"
    );
    assert!(
        check(&[insn(0x20, 0, 0, 64), insn(0x06, 0, 0, 0)]).is_err(),
        "load past seccomp_data"
    );
    assert!(
        check(&[insn(0x28, 0, 0, 0), insn(0x06, 0, 0, 0)]).is_err(),
        "half-word load"
    );
    assert!(
        check(&[insn(0x15, 1, 0, 0), insn(0x06, 0, 0, 0)]).is_err(),
        "jump past the end"
    );
    assert!(
        check(&[insn(0x05, 0, 0, 1), insn(0x06, 0, 0, 0)]).is_err(),
        "ja past the end"
    );
    assert!(check(&vec![insn(0x06, 0, 0, 0); super::BPF_MAXINSNS + 1]).is_err());
    assert!(check(&[insn(0x15, 0, 0, 0), insn(0x06, 0, 0, 0)]).is_ok());
}
