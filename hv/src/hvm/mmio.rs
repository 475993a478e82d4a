//! Decoding the instruction behind an MMIO access.
//!
//! An EPT violation on an emulated device page gives the guest-physical address and whether
//! the access read or wrote, but not the data or the register; hv decodes the instruction at
//! the guest's RIP for those. Guests touch device registers with plain `mov`s, so only these
//! forms are accepted (SDM Vol. 2B, MOV / MOVZX / MOVSX):
//!
//! | opcode   | form                 | access                               |
//! |----------|----------------------|--------------------------------------|
//! | 88 /r    | `mov r/m8, r8`       | write 1 byte from a register         |
//! | 89 /r    | `mov r/m, r`         | write 2/4/8 bytes from a register    |
//! | 8A /r    | `mov r8, r/m8`       | read 1 byte into a register          |
//! | 8B /r    | `mov r, r/m`         | read 2/4/8 bytes into a register     |
//! | C6 /0 ib | `mov r/m8, imm8`     | write 1 byte immediate               |
//! | C7 /0 iw/id | `mov r/m, imm`    | write 2/4/8 bytes immediate          |
//! | A0 / A1  | `mov AL/eAX, moffs`  | read 1 or 2/4/8 bytes at an offset   |
//! | A2 / A3  | `mov moffs, AL/eAX`  | write 1 or 2/4/8 bytes at an offset  |
//! | 0F B6/B7 | `movzx r, r/m8/16`   | read 1/2 bytes, zero-extended        |
//! | 0F BE/BF | `movsx r, r/m8/16`   | read 1/2 bytes, sign-extended        |
//!
//! with the legacy prefixes 66 (operand size), 67 (address size) and segment overrides, and
//! in 64-bit mode REX (SDM Vol. 2A 2.1-2.2). The ModRM/SIB/displacement bytes, and the
//! `moffs` offset (as wide as the address size: 8 bytes in 64-bit mode, where `movabs` uses
//! it), are parsed only for their length: the address is already known from the exit. Anything else (another
//! opcode, a register operand, LOCK/REP prefixes, more than 15 bytes, bytes missing) is a
//! [`DecodeError`] and the caller crashes the domain.

use super::{CpuMode, Direction, Gpr, Gprs};

/// Longest x86 instruction (SDM Vol. 2A 2.3.11).
pub const MAX_INSN_LEN: usize = 15;

/// Why the bytes are not an MMIO `mov` hv emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// The instruction would be longer than 15 bytes.
    TooLong,
    /// An opcode (or `/reg` extension or prefix) outside the supported set; the opcode's
    /// first byte (after prefixes) or the prefix.
    Unsupported(u8),
    /// A supported opcode with a register, not memory, operand (ModRM.mod = 3).
    RegisterOperand,
}

/// A register operand of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegOperand {
    /// The register.
    pub reg: Gpr,
    /// AH, CH, DH or BH: bits 15:8 of RAX..RBX (8-bit operands without REX only).
    pub high_byte: bool,
    /// Operand size in bytes: 1, 2, 4 or 8.
    pub size: u8,
}

impl RegOperand {
    /// The operand's value within the full register `full`.
    pub const fn read(self, full: u64) -> u64 {
        if self.high_byte {
            (full >> 8) & 0xff
        } else {
            full & mask(self.size)
        }
    }

    /// The full register after writing `value` to the operand: 8- and 16-bit writes keep the
    /// other bits, 32-bit writes zero bits 63:32 (SDM Vol. 1 3.4.1.1), 64-bit writes replace.
    pub const fn merge(self, old: u64, value: u64) -> u64 {
        match self.size {
            1 if self.high_byte => (old & !0xff00) | ((value & 0xff) << 8),
            1 => (old & !0xff) | (value & 0xff),
            2 => (old & !0xffff) | (value & 0xffff),
            4 => value & 0xffff_ffff,
            _ => value,
        }
    }
}

/// How a loaded value widens into the destination register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    /// Same size (`mov`).
    None,
    /// `movzx`.
    Zero,
    /// `movsx`.
    Sign,
}

/// The source of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// A register.
    Reg(RegOperand),
    /// An immediate, already extended to the access size (and masked to it).
    Imm(u64),
}

/// What the instruction does with the memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioAccess {
    /// A store of `size` bytes from `src`.
    Write {
        /// Where the data comes from.
        src: Operand,
    },
    /// A load of `size` bytes into `dst`, widened by `extend`.
    Read {
        /// The destination register.
        dst: RegOperand,
        /// How the value widens.
        extend: Extension,
    },
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInsn {
    /// Instruction length in bytes (RIP advances by this).
    pub len: u8,
    /// Bytes of memory accessed: 1, 2, 4 or 8.
    pub size: u8,
    /// The access.
    pub access: MmioAccess,
}

impl MmioInsn {
    /// Whether the guest reads or writes the device.
    pub const fn direction(&self) -> Direction {
        match self.access {
            MmioAccess::Write { .. } => Direction::Write,
            MmioAccess::Read { .. } => Direction::Read,
        }
    }

    /// For a store: the `size` bytes to write, from the registers or the immediate.
    pub fn store_value(&self, gprs: &Gprs) -> Option<u64> {
        match self.access {
            MmioAccess::Write {
                src: Operand::Reg(r),
            } => Some(r.read(gprs.get(r.reg))),
            MmioAccess::Write {
                src: Operand::Imm(v),
            } => Some(v),
            MmioAccess::Read { .. } => None,
        }
    }

    /// For a load: puts `data` (the `size` bytes read; higher bits ignored) into the
    /// destination register, extended as the instruction says. Returns whether it was a load.
    pub fn complete_load(&self, gprs: &mut Gprs, data: u64) -> bool {
        let MmioAccess::Read { dst, extend } = self.access else {
            return false;
        };
        let data = data & mask(self.size);
        let value = match extend {
            Extension::None | Extension::Zero => data,
            Extension::Sign => {
                let shift = 64 - 8 * u32::from(self.size);
                (((data << shift) as i64) >> shift) as u64
            }
        };
        gprs.set(
            dst.reg,
            dst.merge(gprs.get(dst.reg), value & mask(dst.size)),
        );
        true
    }
}

/// The low `size` bytes set.
const fn mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// A cursor over the instruction bytes that never reads past the slice or byte 15.
struct Bytes<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// A little-endian immediate or displacement of `n` bytes.
    fn le(&mut self, n: u8) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..n {
            v |= u64::from(self.next()?) << (8 * i);
        }
        Ok(v)
    }

    fn skip(&mut self, n: u8) -> Result<(), DecodeError> {
        self.le(n).map(|_| ())
    }
}

/// REX prefix bits (SDM Vol. 2A 2.2.1).
#[derive(Clone, Copy, Default)]
struct Rex {
    present: bool,
    w: bool,
    r: bool,
}

/// Decodes the instruction in `bytes` (fetched from the guest's RIP; up to 15 are used)
/// executed in `mode`.
pub fn decode(bytes: &[u8], mode: CpuMode) -> Result<MmioInsn, DecodeError> {
    let mut b = Bytes { bytes, pos: 0 };
    let mut opsize_prefix = false;
    let mut addrsize_prefix = false;
    let mut rex = Rex::default();
    let opcode = loop {
        let byte = b.next()?;
        match byte {
            0x66 => opsize_prefix = true,
            0x67 => addrsize_prefix = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            0xf0 | 0xf2 | 0xf3 => return Err(DecodeError::Unsupported(byte)),
            0x40..=0x4f if mode == CpuMode::Bits64 => {
                rex = Rex {
                    present: true,
                    w: byte & 8 != 0,
                    r: byte & 4 != 0,
                };
                continue;
            }
            _ => break byte,
        }
        // A REX prefix counts only immediately before the opcode (SDM Vol. 2A 2.2.1).
        rex = Rex::default();
    };

    let default16 = mode == CpuMode::Bits16;
    let opsize: u8 = if rex.w {
        8
    } else if default16 != opsize_prefix {
        2
    } else {
        4
    };
    let addr16 = match mode {
        CpuMode::Bits16 => !addrsize_prefix,
        CpuMode::Bits32 => addrsize_prefix,
        CpuMode::Bits64 => false,
    };

    if let 0xa0..=0xa3 = opcode {
        let offset_bytes = match (mode, addr16, addrsize_prefix) {
            (_, true, _) => 2,
            (CpuMode::Bits64, _, false) => 8,
            _ => 4,
        };
        b.skip(offset_bytes)?;
        let size = if opcode & 1 == 0 { 1 } else { opsize };
        let rax = RegOperand {
            reg: Gpr::Rax,
            high_byte: false,
            size,
        };
        let access = if opcode < 0xa2 {
            MmioAccess::Read {
                dst: rax,
                extend: Extension::None,
            }
        } else {
            MmioAccess::Write {
                src: Operand::Reg(rax),
            }
        };
        return Ok(MmioInsn {
            len: b.pos as u8,
            size,
            access,
        });
    }

    // (access size, what happens, immediate bytes); the register comes from ModRM.reg.
    enum Form {
        Store,
        Load(Extension),
        StoreImm,
    }
    let (size, form, dst_size) = match opcode {
        0x88 => (1, Form::Store, 1),
        0x89 => (opsize, Form::Store, opsize),
        0x8a => (1, Form::Load(Extension::None), 1),
        0x8b => (opsize, Form::Load(Extension::None), opsize),
        0xc6 => (1, Form::StoreImm, 1),
        0xc7 => (opsize, Form::StoreImm, opsize),
        0x0f => match b.next()? {
            0xb6 => (1, Form::Load(Extension::Zero), opsize),
            0xb7 => (2, Form::Load(Extension::Zero), opsize),
            0xbe => (1, Form::Load(Extension::Sign), opsize),
            0xbf => (2, Form::Load(Extension::Sign), opsize),
            _ => return Err(DecodeError::Unsupported(0x0f)),
        },
        other => return Err(DecodeError::Unsupported(other)),
    };

    let modrm = b.next()?;
    let md = modrm >> 6;
    let reg_field = (modrm >> 3) & 7;
    let rm = modrm & 7;
    if md == 3 {
        return Err(DecodeError::RegisterOperand);
    }
    if matches!(form, Form::StoreImm) && reg_field != 0 {
        return Err(DecodeError::Unsupported(opcode));
    }
    skip_address(&mut b, md, rm, addr16)?;

    let reg_num = reg_field | if rex.r { 8 } else { 0 };
    let reg = |size: u8| {
        let high_byte = size == 1 && !rex.present && (4..8).contains(&reg_num);
        RegOperand {
            reg: Gpr::from_index(if high_byte { reg_num - 4 } else { reg_num }),
            high_byte,
            size,
        }
    };
    let access = match form {
        Form::Store => MmioAccess::Write {
            src: Operand::Reg(reg(size)),
        },
        Form::Load(extend) => MmioAccess::Read {
            dst: reg(dst_size),
            extend,
        },
        Form::StoreImm => {
            let imm = match size {
                1 => b.le(1)?,
                2 => b.le(2)?,
                4 => b.le(4)?,
                // imm32 sign-extended to 64 bits (REX.W C7).
                _ => b.le(4)? as u32 as i32 as i64 as u64,
            };
            MmioAccess::Write {
                src: Operand::Imm(imm),
            }
        }
    };
    Ok(MmioInsn {
        len: b.pos as u8,
        size,
        access,
    })
}

/// Skips the SIB byte and displacement of a memory operand (SDM Vol. 2A 2.1.5, Tables 2-1
/// to 2-3). REX.B does not change which forms need a SIB or a displacement.
fn skip_address(b: &mut Bytes<'_>, md: u8, rm: u8, addr16: bool) -> Result<(), DecodeError> {
    if addr16 {
        return match (md, rm) {
            (0, 6) | (2, _) => b.skip(2),
            (1, _) => b.skip(1),
            _ => Ok(()),
        };
    }
    let mut disp = match md {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    if rm == 4 {
        let sib = b.next()?;
        if md == 0 && sib & 7 == 5 {
            disp = 4;
        }
    } else if md == 0 && rm == 5 {
        // disp32: absolute in 32-bit addressing, RIP-relative in 64-bit mode.
        disp = 4;
    }
    b.skip(disp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CpuMode::*;

    fn reg(reg: Gpr, size: u8) -> RegOperand {
        RegOperand {
            reg,
            high_byte: false,
            size,
        }
    }

    fn store(len: u8, size: u8, src: RegOperand) -> MmioInsn {
        MmioInsn {
            len,
            size,
            access: MmioAccess::Write {
                src: Operand::Reg(src),
            },
        }
    }

    fn store_imm(len: u8, size: u8, imm: u64) -> MmioInsn {
        MmioInsn {
            len,
            size,
            access: MmioAccess::Write {
                src: Operand::Imm(imm),
            },
        }
    }

    fn load(len: u8, size: u8, dst: RegOperand, extend: Extension) -> MmioInsn {
        MmioInsn {
            len,
            size,
            access: MmioAccess::Read { dst, extend },
        }
    }

    #[test]
    fn plain_moves_in_32_bit_mode() {
        // mov %ecx,(%eax): ModRM 08 = mod 0, reg 1 (ECX), rm 0.
        assert_eq!(
            decode(&[0x89, 0x08], Bits32),
            Ok(store(2, 4, reg(Gpr::Rcx, 4)))
        );
        // mov 0xfee000b0,%edx: mod 0 rm 5 = disp32 absolute.
        assert_eq!(
            decode(&[0x8b, 0x15, 0xb0, 0x00, 0xe0, 0xfe], Bits32),
            Ok(load(6, 4, reg(Gpr::Rdx, 4), Extension::None))
        );
        // mov %ah,5(%eax): reg 4 without REX is AH; mod 1 = disp8.
        assert_eq!(
            decode(&[0x88, 0x60, 0x05], Bits32),
            Ok(store(
                3,
                1,
                RegOperand {
                    reg: Gpr::Rax,
                    high_byte: true,
                    size: 1
                }
            ))
        );
        // mov 0x10(%esi,%ebx,2),%bh: SIB + disp8, reg 7 = BH.
        assert_eq!(
            decode(&[0x8a, 0x7c, 0x5e, 0x10], Bits32),
            Ok(load(
                4,
                1,
                RegOperand {
                    reg: Gpr::Rbx,
                    high_byte: true,
                    size: 1
                },
                Extension::None
            ))
        );
        // movw %si,0x1000(%edi): 66 prefix, mod 2 = disp32.
        assert_eq!(
            decode(&[0x66, 0x89, 0xb7, 0x00, 0x10, 0x00, 0x00], Bits32),
            Ok(store(7, 2, reg(Gpr::Rsi, 2)))
        );
        // movb $0x41,0x1000(%eax).
        assert_eq!(
            decode(&[0xc6, 0x80, 0x00, 0x10, 0x00, 0x00, 0x41], Bits32),
            Ok(store_imm(7, 1, 0x41))
        );
        // movl $0x12345678,(%ebp+0) needs mod 1: C7 45 00 imm32.
        assert_eq!(
            decode(&[0xc7, 0x45, 0x00, 0x78, 0x56, 0x34, 0x12], Bits32),
            Ok(store_imm(7, 4, 0x1234_5678))
        );
        // movw $0x1234,(%eax).
        assert_eq!(
            decode(&[0x66, 0xc7, 0x00, 0x34, 0x12], Bits32),
            Ok(store_imm(5, 2, 0x1234))
        );
        // mov %fs:0x0,%eax with a SIB that has neither base nor index (SIB 25).
        assert_eq!(
            decode(&[0x64, 0x8b, 0x04, 0x25, 0, 0, 0, 0], Bits32),
            Ok(load(8, 4, reg(Gpr::Rax, 4), Extension::None))
        );
    }

    #[test]
    fn moffs_forms() {
        // movabs 0xfed00000, %rax (how the Xen Test Framework probes the HPET).
        assert_eq!(
            decode(&[0x48, 0xa1, 0, 0, 0xd0, 0xfe, 0, 0, 0, 0], Bits64),
            Ok(load(10, 8, reg(Gpr::Rax, 8), Extension::None))
        );
        assert_eq!(
            decode(&[0xa2, 0, 0, 0xd0, 0xfe, 0, 0, 0, 0], Bits64),
            Ok(store(9, 1, reg(Gpr::Rax, 1)))
        );
        // 67: a 4-byte offset in 64-bit mode.
        assert_eq!(
            decode(&[0x67, 0xa3, 0, 0, 0xd0, 0xfe], Bits64),
            Ok(store(6, 4, reg(Gpr::Rax, 4)))
        );
        assert_eq!(
            decode(&[0xa1, 0xb0, 0, 0xe0, 0xfe], Bits32),
            Ok(load(5, 4, reg(Gpr::Rax, 4), Extension::None))
        );
        assert_eq!(
            decode(&[0x66, 0xa1, 0xb0, 0, 0xe0, 0xfe], Bits32),
            Ok(load(6, 2, reg(Gpr::Rax, 2), Extension::None))
        );
        assert_eq!(
            decode(&[0xa0, 0x34, 0x12], Bits16),
            Ok(load(3, 1, reg(Gpr::Rax, 1), Extension::None))
        );
        assert_eq!(
            decode(&[0x67, 0xa1, 0, 0, 0, 0], Bits16),
            Ok(load(6, 2, reg(Gpr::Rax, 2), Extension::None))
        );
        // The offset must be all there.
        assert_eq!(
            decode(&[0x48, 0xa1, 0, 0, 0xd0, 0xfe], Bits64),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn movzx_and_movsx() {
        // movzbl 1(%eax),%ecx.
        assert_eq!(
            decode(&[0x0f, 0xb6, 0x48, 0x01], Bits32),
            Ok(load(4, 1, reg(Gpr::Rcx, 4), Extension::Zero))
        );
        // movzwl (%eax),%edi.
        assert_eq!(
            decode(&[0x0f, 0xb7, 0x38], Bits32),
            Ok(load(3, 2, reg(Gpr::Rdi, 4), Extension::Zero))
        );
        // movswl (%rbx),%ecx.
        assert_eq!(
            decode(&[0x0f, 0xbf, 0x0b], Bits64),
            Ok(load(3, 2, reg(Gpr::Rcx, 4), Extension::Sign))
        );
        // movsbq 0x0(,%rcx,4),%rax: SIB 8d has base 5 with mod 0, so a disp32 follows.
        assert_eq!(
            decode(&[0x48, 0x0f, 0xbe, 0x04, 0x8d, 0, 0, 0, 0], Bits64),
            Ok(load(9, 1, reg(Gpr::Rax, 8), Extension::Sign))
        );
        // movzwq (%rax),%rax.
        assert_eq!(
            decode(&[0x48, 0x0f, 0xb7, 0x00], Bits64),
            Ok(load(4, 2, reg(Gpr::Rax, 8), Extension::Zero))
        );
        // movzbw (%eax),%dx with 66.
        assert_eq!(
            decode(&[0x66, 0x0f, 0xb6, 0x10], Bits32),
            Ok(load(4, 1, reg(Gpr::Rdx, 2), Extension::Zero))
        );
    }

    #[test]
    fn rex_forms_in_64_bit_mode() {
        // mov 0xfee00010(%rip),%eax: mod 0 rm 5 is RIP-relative disp32.
        assert_eq!(
            decode(&[0x8b, 0x05, 0x10, 0x00, 0xe0, 0xfe], Bits64),
            Ok(load(6, 4, reg(Gpr::Rax, 4), Extension::None))
        );
        // mov %rax,(%rsp).
        assert_eq!(
            decode(&[0x48, 0x89, 0x04, 0x24], Bits64),
            Ok(store(4, 8, reg(Gpr::Rax, 8)))
        );
        // With any REX, reg 4 is SPL, not AH.
        assert_eq!(
            decode(&[0x40, 0x88, 0x60, 0x05], Bits64),
            Ok(store(4, 1, reg(Gpr::Rsp, 1)))
        );
        // mov -4(%rax),%r8b (REX.R).
        assert_eq!(
            decode(&[0x44, 0x8a, 0x40, 0xfc], Bits64),
            Ok(load(4, 1, reg(Gpr::R8, 1), Extension::None))
        );
        // mov %r9b,(%r12): REX.RB; r12 as base still needs a SIB.
        assert_eq!(
            decode(&[0x45, 0x88, 0x0c, 0x24], Bits64),
            Ok(store(4, 1, reg(Gpr::R9, 1)))
        );
        // mov 0x0(%rip),%eax with REX.B: rm 5 and mod 0 is RIP-relative, not r13.
        assert_eq!(
            decode(&[0x41, 0x8b, 0x05, 0, 0, 0, 0], Bits64),
            Ok(load(7, 4, reg(Gpr::Rax, 4), Extension::None))
        );
        // mov %r15,0x8(%r13): REX.WRB, mod 1.
        assert_eq!(
            decode(&[0x4d, 0x89, 0x7d, 0x08], Bits64),
            Ok(store(4, 8, reg(Gpr::R15, 8)))
        );
        // movl $0x12345678,0x0(%rip).
        assert_eq!(
            decode(&[0xc7, 0x05, 0, 0, 0, 0, 0x78, 0x56, 0x34, 0x12], Bits64),
            Ok(store_imm(10, 4, 0x1234_5678))
        );
        // movq $-1,(%rax): imm32 sign-extended.
        assert_eq!(
            decode(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], Bits64),
            Ok(store_imm(7, 8, u64::MAX))
        );
        assert_eq!(
            decode(&[0x48, 0xc7, 0x00, 0x00, 0x00, 0x00, 0x80], Bits64),
            Ok(store_imm(7, 8, 0xffff_ffff_8000_0000))
        );
        // 66 then REX.W: REX.W wins.
        assert_eq!(
            decode(&[0x66, 0x48, 0x89, 0x08], Bits64),
            Ok(store(4, 8, reg(Gpr::Rcx, 8)))
        );
        // REX then 66: the REX no longer precedes the opcode and is ignored.
        assert_eq!(
            decode(&[0x48, 0x66, 0x89, 0x08], Bits64),
            Ok(store(4, 2, reg(Gpr::Rcx, 2)))
        );
        // 67: 32-bit addressing, same ModRM forms.
        assert_eq!(
            decode(&[0x67, 0x89, 0x08], Bits64),
            Ok(store(3, 4, reg(Gpr::Rcx, 4)))
        );
    }

    #[test]
    fn real_mode_and_16_bit_addressing() {
        // mov %bx,[0x1234]: mod 0 rm 6 is disp16.
        assert_eq!(
            decode(&[0x89, 0x1e, 0x34, 0x12], Bits16),
            Ok(store(4, 2, reg(Gpr::Rbx, 2)))
        );
        // mov %eax,(%bx) with 66.
        assert_eq!(
            decode(&[0x66, 0x89, 0x07], Bits16),
            Ok(store(3, 4, reg(Gpr::Rax, 4)))
        );
        // mov 2(%bx),%al.
        assert_eq!(
            decode(&[0x8a, 0x47, 0x02], Bits16),
            Ok(load(3, 1, reg(Gpr::Rax, 1), Extension::None))
        );
        // mov 0x1000(%bp,%si),%cx: mod 2 is disp16, rm 2.
        assert_eq!(
            decode(&[0x8b, 0x8a, 0x00, 0x10], Bits16),
            Ok(load(4, 2, reg(Gpr::Rcx, 2), Extension::None))
        );
        // movw $0x1234,[0x1000].
        assert_eq!(
            decode(&[0xc7, 0x06, 0x00, 0x10, 0x34, 0x12], Bits16),
            Ok(store_imm(6, 2, 0x1234))
        );
        // movl $0x12345678,[0x1000].
        assert_eq!(
            decode(
                &[0x66, 0xc7, 0x06, 0x00, 0x10, 0x78, 0x56, 0x34, 0x12],
                Bits16
            ),
            Ok(store_imm(9, 4, 0x1234_5678))
        );
        // 67 in 16-bit mode: 32-bit addressing with SIB and disp32.
        assert_eq!(
            decode(&[0x67, 0x8b, 0x04, 0x85, 0x00, 0x10, 0x00, 0x00], Bits16),
            Ok(load(8, 2, reg(Gpr::Rax, 2), Extension::None))
        );
        // 67 in 32-bit mode: 16-bit addressing, [bp+disp8].
        assert_eq!(
            decode(&[0x67, 0x8b, 0x46, 0x04], Bits32),
            Ok(load(4, 4, reg(Gpr::Rax, 4), Extension::None))
        );
        // es: prefix before movzx in real mode.
        assert_eq!(
            decode(&[0x26, 0x0f, 0xb6, 0x05], Bits16),
            Ok(load(4, 1, reg(Gpr::Rax, 2), Extension::Zero))
        );
    }

    #[test]
    fn rejected_instructions() {
        use DecodeError::*;
        assert_eq!(decode(&[], Bits64), Err(Truncated));
        assert_eq!(decode(&[0x8b], Bits64), Err(Truncated));
        assert_eq!(decode(&[0x8b, 0x80, 0x00, 0x00], Bits32), Err(Truncated));
        assert_eq!(decode(&[0xc7, 0x00, 0x01], Bits32), Err(Truncated));
        assert_eq!(decode(&[0x0f], Bits32), Err(Truncated));
        // Register operands are not memory accesses.
        assert_eq!(decode(&[0x89, 0xc8], Bits32), Err(RegisterOperand));
        assert_eq!(decode(&[0x0f, 0xb7, 0xc0], Bits32), Err(RegisterOperand));
        // Other opcodes, extensions and prefixes.
        assert_eq!(decode(&[0xff, 0x00], Bits32), Err(Unsupported(0xff)));
        assert_eq!(decode(&[0xc6, 0x08, 0x01], Bits32), Err(Unsupported(0xc6)));
        assert_eq!(
            decode(&[0xc7, 0x38, 0, 0, 0, 0], Bits32),
            Err(Unsupported(0xc7))
        );
        assert_eq!(decode(&[0x0f, 0xaf, 0x00], Bits32), Err(Unsupported(0x0f)));
        assert_eq!(decode(&[0xf3, 0xa4], Bits32), Err(Unsupported(0xf3)));
        assert_eq!(decode(&[0xf0, 0x89, 0x08], Bits64), Err(Unsupported(0xf0)));
        // 0x40 is `inc %eax` outside 64-bit mode.
        assert_eq!(decode(&[0x40, 0x89, 0x08], Bits32), Err(Unsupported(0x40)));
        // Fifteen prefixes leave no room for the opcode.
        let mut long = [0x2e; 20];
        long[15] = 0x89;
        long[16] = 0x08;
        assert_eq!(decode(&long, Bits32), Err(TooLong));
        // Fourteen prefixes + opcode + ModRM is 16 bytes: too long as well.
        assert_eq!(decode(&long[1..], Bits32), Err(TooLong));
        // Thirteen prefixes + 89 08 is exactly 15.
        assert_eq!(
            decode(&long[2..], Bits32),
            Ok(store(15, 4, reg(Gpr::Rcx, 4)))
        );
    }

    #[test]
    fn every_short_byte_string_decodes_or_errs_without_panicking() {
        for mode in [Bits16, Bits32, Bits64] {
            for a in 0..=255u8 {
                for b in [0x00, 0x04, 0x05, 0x0f, 0x44, 0x66, 0x89, 0x8b, 0xb6, 0xc0] {
                    let _ = decode(&[a, b, 0x24, 0x01], mode);
                    let _ = decode(&[0x0f, a, b], mode);
                }
            }
        }
    }

    #[test]
    fn completing_loads_and_stores() {
        let mut g = Gprs::default();
        g.set(Gpr::Rax, 0x1122_3344_5566_7788);
        g.set(Gpr::Rcx, 0xaaaa_aaaa_bbbb_bbbb);
        // mov %ah,(%eax) stores 0x77.
        let i = decode(&[0x88, 0x20], Bits32).unwrap();
        assert_eq!(i.store_value(&g), Some(0x77));
        assert_eq!(i.direction(), Direction::Write);
        assert!(!i.complete_load(&mut g, 0));
        // mov %cx,(%eax) stores the low 16 bits.
        let i = decode(&[0x66, 0x89, 0x08], Bits32).unwrap();
        assert_eq!(i.store_value(&g), Some(0xbbbb));
        // movsbl (%eax),%ecx: 0x80 becomes 0xffffff80 and bits 63:32 clear.
        let i = decode(&[0x0f, 0xbe, 0x08], Bits64).unwrap();
        assert_eq!(i.direction(), Direction::Read);
        assert_eq!(i.store_value(&g), None);
        assert!(i.complete_load(&mut g, 0x1234_5680));
        assert_eq!(g.get(Gpr::Rcx), 0xffff_ff80);
        // mov (%eax),%ah keeps the other bytes.
        let i = decode(&[0x8a, 0x20], Bits32).unwrap();
        i.complete_load(&mut g, 0xee);
        assert_eq!(g.get(Gpr::Rax), 0x1122_3344_5566_ee88);
        // movzbw (%eax),%ax keeps bits 63:16.
        let i = decode(&[0x66, 0x0f, 0xb6, 0x00], Bits32).unwrap();
        i.complete_load(&mut g, 0xff);
        assert_eq!(g.get(Gpr::Rax), 0x1122_3344_5566_00ff);
        // movswq (%rax),%rdx.
        let i = decode(&[0x48, 0x0f, 0xbf, 0x10], Bits64).unwrap();
        i.complete_load(&mut g, 0x8001);
        assert_eq!(g.get(Gpr::Rdx), 0xffff_ffff_ffff_8001);
        // mov (%rax),%r8 takes all 64 bits.
        let i = decode(&[0x4c, 0x8b, 0x00], Bits64).unwrap();
        i.complete_load(&mut g, 0x0123_4567_89ab_cdef);
        assert_eq!(g.get(Gpr::R8), 0x0123_4567_89ab_cdef);
        // An immediate store.
        let i = decode(&[0xc6, 0x00, 0x5a], Bits16).unwrap();
        assert_eq!(i.store_value(&g), Some(0x5a));
    }
}
