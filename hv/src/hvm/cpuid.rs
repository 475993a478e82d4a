//! The CPUID an HVM guest sees.
//!
//! Policy: the host's values pass through, except
//! - features the guest must not use or that hv does not virtualise are hidden: VMX and SMX
//!   (no nested virtualisation), MONITOR/MWAIT (not intercepted), the local APIC, x2APIC and
//!   the TSC deadline timer (hv emulates no local APIC: `rdmsr IA32_APIC_BASE` raises #GP,
//!   see [`super::msr`]), machine-check architecture (no MCi banks are emulated), the
//!   thermal/performance-monitoring features whose MSRs would #GP (DS, ACPI thermal, TM,
//!   TM2, PBE, EST, PDCM, DTES64, DS-CPL, leaf 0xA), TSC_ADJUST and the speculation-control
//!   and capability MSRs of leaf 7 EDX, and the instructions that #UD in a guest unless a
//!   VM-execution control enables them ([`CpuidConfig`]): RDTSCP, INVPCID, UMWAIT/TPAUSE;
//!   CET and protection keys, user and supervisor (hv neither switches PKRU between
//!   domains nor virtualises IA32_PKRS: one guest could read or change another's keys);
//! - XSAVE and everything whose state lives only in XSAVE areas (AVX, FMA, F16C, AVX2,
//!   AVX-512, leaf 0xD): hv switches FPU state between domains with FXSAVE, which keeps
//!   x87 and SSE only, and does not switch XCR0; a guest that saw XSAVE could leave its YMM
//!   state to the next domain. Guests use FXSAVE/FXRSTOR and SSE. (CR4.OSXSAVE is refused
//!   to match, see [`super::msr`].)
//! - CPUID.1:ECX bit 31 ("running on a hypervisor") is set;
//! - the CR4 bits a guest may set follow what this view announces
//!   ([`guest_cr4_valid_bits`], as Xen's `hvm_cr4_guest_valid_bits`);
//! - Xen's leaves appear at 0x40000000: the signature "XenVMMXenVMM", version 4.17, one
//!   hypercall page through MSR 0x40000000 (leaf +2), and the vCPU and domain ids
//!   (leaf +4); every other leaf in 0x40000000..0x40010000 is zero, so a guest scanning in
//!   0x100 steps finds exactly one Xen.

use hypercall_abi::hvm::{
    XEN_CPUID_FIRST_LEAF, XEN_CPUID_LEAF_HVM, XEN_CPUID_LEAF_HYPERCALL, XEN_CPUID_LEAF_VERSION,
    XEN_CPUID_SCAN_END, XEN_CPUID_SIGNATURE_EBX, XEN_CPUID_SIGNATURE_ECX, XEN_CPUID_SIGNATURE_EDX,
    XEN_HVM_CPUID_DOMID_PRESENT, XEN_HVM_CPUID_VCPU_ID_PRESENT, XEN_HYPERCALL_MSR,
};

/// Xen's version as HVM guests see it: 4.17.
pub const XEN_VERSION: (u32, u32) = (4, 17);

/// CPUID.1:ECX bits.
mod leaf1_ecx {
    pub const DTES64: u32 = 1 << 2;
    pub const MONITOR: u32 = 1 << 3;
    pub const DS_CPL: u32 = 1 << 4;
    pub const VMX: u32 = 1 << 5;
    pub const SMX: u32 = 1 << 6;
    pub const EST: u32 = 1 << 7;
    pub const TM2: u32 = 1 << 8;
    pub const PDCM: u32 = 1 << 15;
    pub const FMA: u32 = 1 << 12;
    pub const X2APIC: u32 = 1 << 21;
    pub const TSC_DEADLINE: u32 = 1 << 24;
    pub const XSAVE: u32 = 1 << 26;
    pub const OSXSAVE: u32 = 1 << 27;
    pub const AVX: u32 = 1 << 28;
    pub const F16C: u32 = 1 << 29;
    pub const HYPERVISOR: u32 = 1 << 31;
}

/// CPUID.1:EDX bits.
mod leaf1_edx {
    pub const MCE: u32 = 1 << 7;
    pub const APIC: u32 = 1 << 9;
    pub const MCA: u32 = 1 << 14;
    pub const DS: u32 = 1 << 21;
    pub const ACPI: u32 = 1 << 22;
    pub const TM: u32 = 1 << 29;
    pub const PBE: u32 = 1 << 31;
}

/// CPUID.(7,0) bits.
mod leaf7 {
    pub const EBX_TSC_ADJUST: u32 = 1 << 1;
    pub const EBX_INVPCID: u32 = 1 << 10;
    /// AVX2 and the AVX-512 families (F, DQ, IFMA, PF, ER, CD, BW, VL).
    pub const EBX_XSAVE_STATE: u32 = 1 << 5 | 0xdc23_0000;
    /// AVX512_VBMI, AVX512_VBMI2, VAES and VPCLMULQDQ (VEX/EVEX forms), AVX512_VNNI,
    /// AVX512_BITALG, AVX512_VPOPCNTDQ.
    pub const ECX_XSAVE_STATE: u32 =
        1 << 1 | 1 << 6 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 14;
    /// AVX512_4VNNIW, AVX512_4FMAPS, AVX512_VP2INTERSECT, AMX-BF16, AVX512_FP16, AMX-TILE,
    /// AMX-INT8.
    pub const EDX_XSAVE_STATE: u32 =
        1 << 2 | 1 << 3 | 1 << 8 | 1 << 22 | 1 << 23 | 1 << 24 | 1 << 25;
    pub const ECX_WAITPKG: u32 = 1 << 5;
    /// Protection keys for user pages: PKRU is not switched between domains.
    pub const ECX_PKU: u32 = 1 << 3;
    pub const ECX_OSPKE: u32 = 1 << 4;
    /// CET shadow stacks (ECX) and indirect-branch tracking (EDX): their state is managed
    /// through XSAVES and MSRs hv does not virtualise, and CR4.CET is refused.
    pub const ECX_CET_SS: u32 = 1 << 7;
    pub const EDX_CET_IBT: u32 = 1 << 20;
    /// Protection keys for supervisor pages: IA32_PKRS is not virtualised, CR4.PKS refused.
    pub const ECX_PKS: u32 = 1 << 31;
    /// IBRS/IBPB, STIBP, L1D_FLUSH, ARCH_CAPABILITIES, CORE_CAPABILITIES, SSBD.
    pub const EDX_MSR_FEATURES: u32 = 0xfc00_0000;
}

/// CR4 bits (SDM Vol. 3A 2.5).
pub mod cr4 {
    pub const VME: u64 = 1 << 0;
    pub const PVI: u64 = 1 << 1;
    pub const TSD: u64 = 1 << 2;
    pub const DE: u64 = 1 << 3;
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const MCE: u64 = 1 << 6;
    pub const PGE: u64 = 1 << 7;
    pub const PCE: u64 = 1 << 8;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const UMIP: u64 = 1 << 11;
    pub const LA57: u64 = 1 << 12;
    pub const VMXE: u64 = 1 << 13;
    pub const SMXE: u64 = 1 << 14;
    pub const FSGSBASE: u64 = 1 << 16;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
    pub const PKE: u64 = 1 << 22;
    pub const CET: u64 = 1 << 23;
    pub const PKS: u64 = 1 << 24;
}

/// CPUID.0x80000001 bits.
const EXT1_ECX_SVM: u32 = 1 << 2;
const EXT1_EDX_RDTSCP: u32 = 1 << 27;

/// Which optional instructions the backend enabled for the guest (secondary controls
/// "enable RDTSCP", "enable INVPCID", "enable user wait and pause"); hidden otherwise,
/// because they #UD in the guest without them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidConfig {
    /// RDTSCP works.
    pub rdtscp: bool,
    /// INVPCID works.
    pub invpcid: bool,
    /// UMWAIT/TPAUSE work.
    pub user_wait: bool,
}

/// The vCPU asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidContext {
    /// The vCPU's id within its domain.
    pub vcpu_id: u32,
    /// The domain's id.
    pub domid: u16,
}

/// The guest's view of `leaf`/`subleaf`, from the host's answer `raw` (EAX, EBX, ECX, EDX).
pub fn hvm_cpuid(
    leaf: u32,
    subleaf: u32,
    raw: [u32; 4],
    config: CpuidConfig,
    ctx: CpuidContext,
) -> [u32; 4] {
    let [mut a, mut b, mut c, mut d] = raw;
    match leaf {
        1 => {
            use leaf1_ecx as e;
            use leaf1_edx as x;
            c &= !(e::DTES64
                | e::MONITOR
                | e::DS_CPL
                | e::VMX
                | e::SMX
                | e::EST
                | e::TM2
                | e::PDCM
                | e::X2APIC
                | e::TSC_DEADLINE
                | e::XSAVE
                | e::OSXSAVE
                | e::AVX
                | e::FMA
                | e::F16C);
            c |= e::HYPERVISOR;
            d &= !(x::MCE | x::APIC | x::MCA | x::DS | x::ACPI | x::TM | x::PBE);
        }
        // MONITOR/MWAIT, thermal and power, architectural performance monitoring: hidden
        // along with the features that announce them.
        // XSAVE's leaf goes with XSAVE.
        5 | 6 | 0xa | 0xd => [a, b, c, d] = [0; 4],
        7 if subleaf == 0 => {
            b &= !(leaf7::EBX_TSC_ADJUST | leaf7::EBX_XSAVE_STATE);
            c &= !leaf7::ECX_XSAVE_STATE;
            d &= !leaf7::EDX_XSAVE_STATE;
            if !config.invpcid {
                b &= !leaf7::EBX_INVPCID;
            }
            if !config.user_wait {
                c &= !leaf7::ECX_WAITPKG;
            }
            c &= !(leaf7::ECX_PKU | leaf7::ECX_OSPKE | leaf7::ECX_CET_SS | leaf7::ECX_PKS);
            d &= !leaf7::EDX_CET_IBT;
            d &= !leaf7::EDX_MSR_FEATURES;
        }
        0x8000_0001 => {
            c &= !EXT1_ECX_SVM;
            if !config.rdtscp {
                d &= !EXT1_EDX_RDTSCP;
            }
        }
        XEN_CPUID_FIRST_LEAF => {
            [a, b, c, d] = [
                XEN_CPUID_FIRST_LEAF + XEN_CPUID_LEAF_HVM,
                XEN_CPUID_SIGNATURE_EBX,
                XEN_CPUID_SIGNATURE_ECX,
                XEN_CPUID_SIGNATURE_EDX,
            ]
        }
        l if l > XEN_CPUID_FIRST_LEAF && l < XEN_CPUID_SCAN_END => {
            [a, b, c, d] = match l - XEN_CPUID_FIRST_LEAF {
                XEN_CPUID_LEAF_VERSION => [(XEN_VERSION.0 << 16) | XEN_VERSION.1, 0, 0, 0],
                XEN_CPUID_LEAF_HYPERCALL => [1, XEN_HYPERCALL_MSR, 0, 0],
                XEN_CPUID_LEAF_HVM => [
                    XEN_HVM_CPUID_VCPU_ID_PRESENT | XEN_HVM_CPUID_DOMID_PRESENT,
                    ctx.vcpu_id,
                    u32::from(ctx.domid),
                    0,
                ],
                _ => [0; 4],
            }
        }
        _ => {}
    }
    [a, b, c, d]
}

/// The CR4 bits a guest may set: each one whose feature the guest's CPUID view (what
/// [`hvm_cpuid`] makes of the host's answers `raw(leaf, subleaf)` with `config`) announces
/// (SDM Vol. 3A 2.5 and the CPUID feature tables): VME and PVI (1:EDX.VME), TSD (TSC), DE,
/// PSE, PAE, MCE (hidden), PGE, OSFXSR (FXSR), OSXMMEXCPT (SSE), VMXE and SMXE (hidden),
/// PCIDE (1:ECX.PCID), OSXSAVE (hidden), FSGSBASE, SMEP, SMAP (7:EBX), UMIP and PKE
/// (7:ECX; PKU is hidden); PCE always. Everything else is refused: LA57 (hv's guest page walk has no
/// 5-level paging), CET and PKS (hidden), Key Locker, user interrupts, LAM, and bits no
/// processor defines yet.
pub fn guest_cr4_valid_bits(raw: impl Fn(u32, u32) -> [u32; 4], config: CpuidConfig) -> u64 {
    let ctx = CpuidContext {
        vcpu_id: 0,
        domid: 0,
    };
    let view = |leaf: u32| hvm_cpuid(leaf, 0, raw(leaf, 0), config, ctx);
    let max = view(0)[0];
    let [_, _, c1, d1] = if max >= 1 { view(1) } else { [0; 4] };
    let [_, b7, c7, _] = if max >= 7 { view(7) } else { [0; 4] };
    let has = |reg: u32, bit: u32| reg & (1 << bit) != 0;
    [
        (cr4::VME | cr4::PVI, has(d1, 1)),
        (cr4::TSD, has(d1, 4)),
        (cr4::DE, has(d1, 2)),
        (cr4::PSE, has(d1, 3)),
        (cr4::PAE, has(d1, 6)),
        (cr4::MCE, has(d1, 7)),
        (cr4::PGE, has(d1, 13)),
        (cr4::PCE, true),
        (cr4::OSFXSR, has(d1, 24)),
        (cr4::OSXMMEXCPT, has(d1, 25)),
        (cr4::UMIP, has(c7, 2)),
        (cr4::VMXE, has(c1, 5)),
        (cr4::SMXE, has(c1, 6)),
        (cr4::FSGSBASE, has(b7, 0)),
        (cr4::PCIDE, has(c1, 17)),
        (cr4::OSXSAVE, has(c1, 26)),
        (cr4::SMEP, has(b7, 7)),
        (cr4::SMAP, has(b7, 20)),
        (cr4::PKE, has(c7, 3)),
    ]
    .into_iter()
    .filter(|&(_, announced)| announced)
    .fold(0, |mask, (bits, _)| mask | bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: CpuidContext = CpuidContext {
        vcpu_id: 1,
        domid: 3,
    };

    fn q(leaf: u32, subleaf: u32, raw: [u32; 4]) -> [u32; 4] {
        hvm_cpuid(leaf, subleaf, raw, CpuidConfig::default(), CTX)
    }

    #[test]
    fn leaf_1_hides_vmx_and_the_apic_and_says_hypervisor() {
        let [_, _, c, d] = q(1, 0, [0x306a9, 0x0010_0800, 0x7fba_e3ff, 0xbfeb_fbff]);
        assert_eq!(c & (1 << 5), 0, "VMX visible");
        assert_eq!(c & (1 << 3), 0, "MONITOR visible");
        assert_eq!(c & (1 << 21), 0, "x2APIC visible");
        assert_ne!(c & (1 << 31), 0, "hypervisor bit clear");
        assert_ne!(c & (1 << 0), 0, "SSE3 lost");
        assert_eq!(d & (1 << 9), 0, "APIC visible");
        assert_eq!(d & (1 << 14), 0, "MCA visible");
        assert_ne!(d & (1 << 25), 0, "SSE lost");
        assert_ne!(d & (1 << 12), 0, "MTRR lost");
        // XSAVE and the AVX family are hidden.
        let r = hvm_cpuid(1, 0, [u32::MAX; 4], CpuidConfig::default(), CTX);
        for (bit, name) in [
            (26, "XSAVE"),
            (27, "OSXSAVE"),
            (28, "AVX"),
            (12, "FMA"),
            (29, "F16C"),
        ] {
            assert_eq!(r[2] & (1 << bit), 0, "{name} visible");
        }
        assert_ne!(r[2] & (1 << 19), 0, "SSE4.1 lost");
        // SVM is hidden in the extended leaf.
        assert_eq!(q(0x8000_0001, 0, [0, 0, 0xffff_ffff, 0])[2] & (1 << 2), 0);
    }

    #[test]
    fn optional_instructions_follow_the_config() {
        let all = [u32::MAX; 4];
        assert_eq!(q(0x8000_0001, 0, all)[3] & (1 << 27), 0);
        assert_eq!(q(7, 0, all)[1] & (1 << 10), 0);
        assert_eq!(q(7, 0, all)[2] & (1 << 5), 0);
        let on = CpuidConfig {
            rdtscp: true,
            invpcid: true,
            user_wait: true,
        };
        assert_ne!(hvm_cpuid(0x8000_0001, 0, all, on, CTX)[3] & (1 << 27), 0);
        assert_ne!(hvm_cpuid(7, 0, all, on, CTX)[1] & (1 << 10), 0);
        assert_ne!(hvm_cpuid(7, 0, all, on, CTX)[2] & (1 << 5), 0);
        // Leaf 7's other subleaves pass through; XSAVE's leaf 0xD is gone.
        assert_eq!(q(7, 1, all), all);
        assert_eq!(q(0xd, 0, all), [0; 4]);
        assert_eq!(hvm_cpuid(0xd, 1, all, on, CTX), [0; 4]);
        // Leaf 7 loses AVX2 and AVX-512 but keeps BMI1/BMI2 (VEX on general registers) and
        // SMEP; its MSR-backed and XSAVE-state features of EDX go, the rest is kept.
        let [_, b, _, d] = q(7, 0, all);
        assert_eq!(b & (1 << 5 | 1 << 16 | 1 << 31), 0, "AVX2 / AVX-512");
        assert_eq!(b & (1 << 3 | 1 << 8 | 1 << 7), 1 << 3 | 1 << 8 | 1 << 7);
        assert_eq!(
            d,
            0x03ff_ffff
                & !(1 << 2 | 1 << 3 | 1 << 8 | 1 << 20 | 1 << 22 | 1 << 23 | 1 << 24 | 1 << 25)
        );
        assert_eq!(q(7, 0, all)[2] & (1 << 4), 0, "OSPKE from the host");
        assert_eq!(q(0xa, 0, all), [0; 4]);
    }

    #[test]
    fn xen_leaves() {
        let [a, b, c, d] = q(0x4000_0000, 0, [7; 4]);
        assert_eq!(a, 0x4000_0004);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&b.to_le_bytes());
        sig[4..8].copy_from_slice(&c.to_le_bytes());
        sig[8..].copy_from_slice(&d.to_le_bytes());
        assert_eq!(&sig, b"XenVMMXenVMM");
        assert_eq!(q(0x4000_0001, 0, [7; 4]), [0x0004_0011, 0, 0, 0]);
        assert_eq!(q(0x4000_0002, 0, [7; 4]), [1, 0x4000_0000, 0, 0]);
        assert_eq!(q(0x4000_0003, 0, [7; 4]), [0; 4]);
        assert_eq!(q(0x4000_0004, 0, [7; 4]), [0x18, 1, 3, 0]);
        // A guest scanning for a second base finds nothing.
        for base in (0x4000_0100..0x4001_0000).step_by(0x100) {
            assert_eq!(q(base, 0, [7; 4]), [0; 4]);
        }
        // Outside the range, and ordinary leaves, pass through.
        assert_eq!(q(0x4001_0000, 0, [7; 4]), [7; 4]);
        assert_eq!(q(0, 0, [0xd, 1, 2, 3]), [0xd, 1, 2, 3]);
        assert_eq!(q(0x8000_0008, 0, [0x3028, 0, 0, 0]), [0x3028, 0, 0, 0]);
    }

    /// A host answering every leaf up to `max` with `regs`, and leaf 0 with `max`.
    fn host(max: u32, regs: [u32; 4]) -> impl Fn(u32, u32) -> [u32; 4] {
        move |leaf, _| match leaf {
            0 => [max, 0, 0, 0],
            l if l <= max => regs,
            _ => [0; 4],
        }
    }

    #[test]
    fn cr4_bits_follow_the_guests_cpuid() {
        let all = guest_cr4_valid_bits(host(0xd, [u32::MAX; 4]), CpuidConfig::default());
        let allowed = cr4::VME
            | cr4::PVI
            | cr4::TSD
            | cr4::DE
            | cr4::PSE
            | cr4::PAE
            | cr4::PGE
            | cr4::PCE
            | cr4::OSFXSR
            | cr4::OSXMMEXCPT
            | cr4::UMIP
            | cr4::FSGSBASE
            | cr4::PCIDE
            | cr4::SMEP
            | cr4::SMAP;
        // Even a host announcing everything gives no hidden feature's bit (PKE among them),
        // nor LA57, CET, PKS, Key Locker (19), UINTR (25) or anything undefined.
        assert_eq!(all, allowed);
        for refused in [
            cr4::MCE,
            cr4::VMXE,
            cr4::SMXE,
            cr4::OSXSAVE,
            cr4::PKE,
            cr4::LA57,
            cr4::CET,
            cr4::PKS,
            1 << 15,
            1 << 19,
            1 << 25,
            1 << 32,
        ] {
            assert_eq!(all & refused, 0, "{refused:#x} allowed");
        }
        // A host without leaf 7 gives none of its bits; without leaf 1, only PCE.
        let no7 = guest_cr4_valid_bits(host(6, [u32::MAX; 4]), CpuidConfig::default());
        assert_eq!(
            no7,
            allowed & !(cr4::UMIP | cr4::FSGSBASE | cr4::SMEP | cr4::SMAP)
        );
        assert_eq!(
            guest_cr4_valid_bits(host(0, [u32::MAX; 4]), CpuidConfig::default()),
            cr4::PCE
        );
    }

    #[test]
    fn each_cr4_bit_needs_its_own_feature() {
        // (CPUID leaf, register index, bit) for each bit that follows one feature flag.
        let cases = [
            (cr4::VME | cr4::PVI, 1, 3, 1),
            (cr4::TSD, 1, 3, 4),
            (cr4::DE, 1, 3, 2),
            (cr4::PSE, 1, 3, 3),
            (cr4::PAE, 1, 3, 6),
            (cr4::PGE, 1, 3, 13),
            (cr4::OSFXSR, 1, 3, 24),
            (cr4::OSXMMEXCPT, 1, 3, 25),
            (cr4::PCIDE, 1, 2, 17),
            (cr4::FSGSBASE, 7, 1, 0),
            (cr4::SMEP, 7, 1, 7),
            (cr4::SMAP, 7, 1, 20),
            (cr4::UMIP, 7, 2, 2),
        ];
        let full = guest_cr4_valid_bits(host(0xd, [u32::MAX; 4]), CpuidConfig::default());
        for (bits, leaf, reg, bit) in cases {
            let without = move |l: u32, _| {
                let mut r = host(0xd, [u32::MAX; 4])(l, 0);
                if l == leaf {
                    r[reg] &= !(1 << bit);
                }
                r
            };
            let mask = guest_cr4_valid_bits(without, CpuidConfig::default());
            assert_eq!(mask, full & !bits, "leaf {leaf} reg {reg} bit {bit}");
        }
    }

    #[test]
    fn leaf_7_hides_cet_and_pks() {
        let [_, _, c, d] = q(7, 0, [u32::MAX; 4]);
        assert_eq!(c & (1 << 7 | 1 << 31), 0);
        assert_eq!(d & (1 << 20), 0);
    }
}
