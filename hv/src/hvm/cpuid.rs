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
//! - XSAVE and everything whose state lives only in XSAVE areas (AVX, FMA, F16C, AVX2,
//!   AVX-512, leaf 0xD): hv switches FPU state between domains with FXSAVE, which keeps
//!   x87 and SSE only, and does not switch XCR0; a guest that saw XSAVE could leave its YMM
//!   state to the next domain. Guests use FXSAVE/FXRSTOR and SSE. (CR4.OSXSAVE is refused
//!   to match, see [`super::msr`].)
//! - CPUID.1:ECX bit 31 ("running on a hypervisor") is set;
//! - the OS-controlled bit OSPKE reflects the guest's CR4, not hv's;
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
    pub const ECX_OSPKE: u32 = 1 << 4;
    /// IBRS/IBPB, STIBP, L1D_FLUSH, ARCH_CAPABILITIES, CORE_CAPABILITIES, SSBD.
    pub const EDX_MSR_FEATURES: u32 = 0xfc00_0000;
}

/// CR4 bits that CPUID reflects.
const CR4_PKE: u64 = 1 << 22;

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
    /// The guest's CR4 (as it sees it).
    pub guest_cr4: u64,
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
            c &= !leaf7::ECX_OSPKE;
            if ctx.guest_cr4 & CR4_PKE != 0 {
                c |= leaf7::ECX_OSPKE;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: CpuidContext = CpuidContext {
        vcpu_id: 1,
        domid: 3,
        guest_cr4: 0,
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
        // XSAVE and the AVX family are hidden whatever the guest's CR4 says.
        let ctx = CpuidContext {
            guest_cr4: 1 << 18,
            ..CTX
        };
        let r = hvm_cpuid(1, 0, [u32::MAX; 4], CpuidConfig::default(), ctx);
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
            0x03ff_ffff & !(1 << 2 | 1 << 3 | 1 << 8 | 1 << 22 | 1 << 23 | 1 << 24 | 1 << 25)
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
}
