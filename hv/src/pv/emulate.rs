//! Instructions a PV guest kernel executes at CPL 3 that fault and that hv carries out for it:
//! decoded here from the bytes at the faulting RIP (never from the error code: QEMU 7.2
//! reports a wrong one for `int N`).

use hypercall_abi::hvm::{
    XEN_CPUID_FIRST_LEAF as XEN_CPUID_BASE, XEN_CPUID_SIGNATURE_EBX, XEN_CPUID_SIGNATURE_ECX,
    XEN_CPUID_SIGNATURE_EDX,
};

/// `ud2; .ascii "xen"`: Xen's forced-emulation prefix, followed by the instruction to emulate.
pub const FORCED_EMULATION_PREFIX: [u8; 5] = [0x0f, 0x0b, b'x', b'e', b'n'];

/// The longest instruction this module decodes, in bytes.
pub const MAX_INSN: usize = 8;

/// A decoded instruction hv emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// `cpuid` (behind the forced-emulation prefix): `len` covers prefix and instruction.
    Cpuid {
        /// Bytes to skip.
        len: u8,
    },
    /// `int N` / `int3` / `into` / `int1`: a software interrupt of `vector`.
    Int {
        /// The interrupt vector.
        vector: u8,
        /// Instruction length.
        len: u8,
    },
    /// `mov %cr3, %reg`: `reg` is the general register number (0 = rax ... 15 = r15).
    MovFromCr3 {
        /// Destination register number.
        reg: u8,
        /// Instruction length.
        len: u8,
    },
}

/// Decodes what raised #UD at the guest's RIP.
pub fn decode_ud(bytes: &[u8]) -> Option<Insn> {
    let rest = bytes.strip_prefix(&FORCED_EMULATION_PREFIX[..])?;
    match rest {
        [0x0f, 0xa2, ..] => Some(Insn::Cpuid { len: 7 }),
        _ => None,
    }
}

/// Decodes what raised #GP at the guest's RIP.
pub fn decode_gp(bytes: &[u8]) -> Option<Insn> {
    match bytes {
        [0xcd, n, ..] => Some(Insn::Int { vector: *n, len: 2 }),
        [0xcc, ..] => Some(Insn::Int { vector: 3, len: 1 }),
        [0xce, ..] => Some(Insn::Int { vector: 4, len: 1 }),
        [0xf1, ..] => Some(Insn::Int { vector: 1, len: 1 }),
        [0x0f, 0x20, modrm, ..] => mov_from_cr3(*modrm, 0, 3),
        [rex @ 0x40..=0x4f, 0x0f, 0x20, modrm, ..] => mov_from_cr3(*modrm, *rex, 4),
        _ => None,
    }
}

fn mov_from_cr3(modrm: u8, rex: u8, len: u8) -> Option<Insn> {
    let (md, creg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if md != 3 || creg != 3 || rex & 0x4 != 0 {
        return None;
    }
    Some(Insn::MovFromCr3 {
        reg: rm | ((rex & 1) << 3),
        len,
    })
}

/// Xen's version as hv reports it (4.17).
pub const XEN_VERSION: (u32, u32) = (4, 17);
/// The CPUID values a PV guest sees for `leaf`, from the real ones `raw`
/// (eax, ebx, ecx, edx): hardware virtualisation hidden, the hypervisor bit set, and Xen's
/// leaves at 0x40000000.
pub fn pv_cpuid(leaf: u32, raw: [u32; 4]) -> [u32; 4] {
    let [mut a, mut b, mut c, mut d] = raw;
    match leaf {
        1 => {
            c &= !(1 << 5); // VMX
            c |= 1 << 31; // running on a hypervisor
        }
        0x8000_0001 => c &= !(1 << 2), // SVM
        XEN_CPUID_BASE => {
            a = XEN_CPUID_BASE + 2;
            b = XEN_CPUID_SIGNATURE_EBX;
            c = XEN_CPUID_SIGNATURE_ECX;
            d = XEN_CPUID_SIGNATURE_EDX;
        }
        0x4000_0001 => [a, b, c, d] = [(XEN_VERSION.0 << 16) | XEN_VERSION.1, 0, 0, 0],
        // One hypercall page; PV guests get theirs from the builder, so no MSR.
        0x4000_0002 => [a, b, c, d] = [1, 0, 0, 0],
        l if l > XEN_CPUID_BASE && l < XEN_CPUID_BASE + 0x1_0000 => [a, b, c, d] = [0; 4],
        _ => {}
    }
    [a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_emulation_cpuid() {
        assert_eq!(
            decode_ud(&[0x0f, 0x0b, b'x', b'e', b'n', 0x0f, 0xa2, 0x90]),
            Some(Insn::Cpuid { len: 7 })
        );
        assert_eq!(decode_ud(&[0x0f, 0x0b, b'x', b'e', b'n', 0x90]), None);
        assert_eq!(decode_ud(&[0x0f, 0x0b, 0x90]), None);
        assert_eq!(decode_ud(&[]), None);
    }

    #[test]
    fn software_interrupts() {
        assert_eq!(
            decode_gp(&[0xcd, 0x80]),
            Some(Insn::Int {
                vector: 0x80,
                len: 2
            })
        );
        assert_eq!(decode_gp(&[0xcc]), Some(Insn::Int { vector: 3, len: 1 }));
        assert_eq!(decode_gp(&[0xcd]), None);
        assert_eq!(decode_gp(&[0x0f, 0x01, 0xf8]), None);
    }

    #[test]
    fn mov_from_cr3_registers() {
        assert_eq!(
            decode_gp(&[0x0f, 0x20, 0xd8]),
            Some(Insn::MovFromCr3 { reg: 0, len: 3 })
        );
        assert_eq!(
            decode_gp(&[0x0f, 0x20, 0xdf]),
            Some(Insn::MovFromCr3 { reg: 7, len: 3 })
        );
        assert_eq!(
            decode_gp(&[0x41, 0x0f, 0x20, 0xd9]),
            Some(Insn::MovFromCr3 { reg: 9, len: 4 })
        );
        // cr0, memory operand and REX.R (cr11) are not emulated.
        assert_eq!(decode_gp(&[0x0f, 0x20, 0xc0]), None);
        assert_eq!(decode_gp(&[0x0f, 0x20, 0x18]), None);
        assert_eq!(decode_gp(&[0x44, 0x0f, 0x20, 0xd8]), None);
    }

    #[test]
    fn cpuid_policy() {
        let l1 = pv_cpuid(1, [0, 0, 1 << 5, 0]);
        assert_eq!(l1[2] & (1 << 5), 0);
        assert_ne!(l1[2] & (1 << 31), 0);
        let sig = pv_cpuid(XEN_CPUID_BASE, [0; 4]);
        let mut s = Vec::new();
        for r in &sig[1..] {
            s.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&s, b"XenVMMXenVMM");
        assert!(sig[0] >= XEN_CPUID_BASE + 2);
        assert_eq!(pv_cpuid(0x4000_0001, [0; 4])[0], 0x0004_0011);
        assert_eq!(pv_cpuid(0x8000_0001, [0, 0, 4, 0])[2], 0);
    }
}
