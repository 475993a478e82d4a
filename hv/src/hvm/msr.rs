//! The MSRs an HVM guest reaches through RDMSR/WRMSR exits, EFER's long-mode rules, and the
//! HVM hypercall page.
//!
//! The backend's MSR bitmap lets the guest touch the MSRs in [`PASSTHROUGH`] directly (the
//! VMCS guest-state area holds some of them; the backend swaps the others on a vCPU switch);
//! every other RDMSR/WRMSR exits to [`HvmMsrs::rdmsr`] / [`HvmMsrs::wrmsr`]:
//!
//! | MSR | read | write |
//! |-----|------|-------|
//! | IA32_PLATFORM_ID (0x17) | 0 | #GP |
//! | IA32_APIC_BASE (0x1b) | #GP: no local APIC (CPUID.1:EDX.APIC is clear) | #GP |
//! | IA32_FEATURE_CONTROL (0x3a) | 1: locked, VMX off | #GP |
//! | IA32_BIOS_SIGN_ID (0x8b) | 0 (no microcode revision) | ignored |
//! | IA32_MTRRCAP (0xfe) | 0: no variable or fixed ranges, no WC | #GP |
//! | IA32_MISC_ENABLE (0x1a0) | fast strings, BTS and PEBS unavailable | ignored |
//! | IA32_DEBUGCTL (0x1d9) | 0 | 0 only (no LBR or BTF is virtualised) |
//! | IA32_PAT (0x277) | kept | checked: every entry a valid type |
//! | IA32_MTRR_DEF_TYPE (0x2ff) | E=1, type WB (`pvh.pandoc`: WB default, enabled) | checked |
//! | Xen hypercall page (0x40000000) | #GP | page GPA: fill it ([`MsrWrite::HypercallPage`]) |
//! | IA32_EFER (0xc0000080) | kept | SCE/LME/NXE; LME frozen while paging; LMA read-only |
//! | anything else | #GP | #GP |
//!
//! EFER.LMA follows CR0.PG as on hardware (SDM Vol. 3A 9.8.5): [`HvmMsrs::set_cr0`] sets it
//! when paging turns on with LME (CR4.PAE required) and clears it when paging turns off; the
//! backend mirrors it into the "IA-32e mode guest" VM-entry control.

use hypercall_abi::hvm::{VMCALL, VMMCALL, XEN_HYPERCALL_MSR};
use hypercall_abi::xen::{Hypercall, HYPERCALL_PAGE_SLOTS, HYPERCALL_STUB_SIZE};

use super::Gfn;

/// MSR indices (SDM Vol. 4, Table 2-2).
pub mod index {
    /// IA32_PLATFORM_ID.
    pub const PLATFORM_ID: u32 = 0x17;
    /// IA32_APIC_BASE.
    pub const APIC_BASE: u32 = 0x1b;
    /// IA32_FEATURE_CONTROL.
    pub const FEATURE_CONTROL: u32 = 0x3a;
    /// IA32_BIOS_SIGN_ID.
    pub const BIOS_SIGN_ID: u32 = 0x8b;
    /// IA32_DEBUGCTL.
    pub const DEBUGCTL: u32 = 0x1d9;
    /// IA32_MTRRCAP.
    pub const MTRRCAP: u32 = 0xfe;
    /// IA32_SYSENTER_CS.
    pub const SYSENTER_CS: u32 = 0x174;
    /// IA32_SYSENTER_ESP.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// IA32_MISC_ENABLE.
    pub const MISC_ENABLE: u32 = 0x1a0;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
    /// IA32_MTRR_DEF_TYPE.
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    /// IA32_EFER.
    pub const EFER: u32 = 0xc000_0080;
    /// IA32_STAR.
    pub const STAR: u32 = 0xc000_0081;
    /// IA32_LSTAR.
    pub const LSTAR: u32 = 0xc000_0082;
    /// IA32_CSTAR.
    pub const CSTAR: u32 = 0xc000_0083;
    /// IA32_FMASK.
    pub const FMASK: u32 = 0xc000_0084;
    /// IA32_FS_BASE.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// IA32_GS_BASE.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// IA32_KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
}

/// MSRs the guest reads and writes without exits. FS/GS base and SYSENTER are VMCS guest
/// state; STAR, LSTAR, CSTAR, FMASK and KERNEL_GS_BASE are not, so the backend saves and
/// restores them when it switches vCPUs.
pub const PASSTHROUGH: &[u32] = &[
    index::SYSENTER_CS,
    index::SYSENTER_ESP,
    index::SYSENTER_EIP,
    index::STAR,
    index::LSTAR,
    index::CSTAR,
    index::FMASK,
    index::FS_BASE,
    index::GS_BASE,
    index::KERNEL_GS_BASE,
];

/// EFER bits (SDM Vol. 3A 2.2.1).
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active (read-only).
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
}

/// CR0 bits.
const CR0_PE: u64 = 1 << 0;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
/// CR4 bits.
const CR4_PAE: u64 = super::cpuid::cr4::PAE;
const CR4_PCIDE: u64 = super::cpuid::cr4::PCIDE;

/// IA32_MISC_ENABLE as guests read it: fast strings (0), BTS unavailable (11), PEBS
/// unavailable (12).
pub const MISC_ENABLE_VALUE: u64 = (1 << 0) | (1 << 11) | (1 << 12);
/// IA32_PAT's power-on value (SDM Vol. 3A 11.12.4): WB, WT, UC-, UC, twice.
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// IA32_MTRR_DEF_TYPE at start of day: MTRRs enabled (bit 11), default type WB (6).
pub const MTRR_DEF_TYPE_WB: u64 = (1 << 11) | 6;

/// The access must raise #GP(0) in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpFault;

/// What the backend does after a successful WRMSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrWrite {
    /// Nothing more (state kept here; EFER changes are read back with [`HvmMsrs::efer`]).
    Done,
    /// Fill the guest page `gfn` with hypercall stubs ([`fill_hypercall_page`]); a page
    /// outside the guest's RAM crashes the domain.
    HypercallPage(Gfn),
}

/// One vCPU's emulated MSR state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HvmMsrs {
    efer: u64,
    pat: u64,
    mtrr_def_type: u64,
    /// The CR4 bits the guest may set ([`super::cpuid::guest_cr4_valid_bits`], less what
    /// the processor cannot set in VMX operation).
    cr4_valid: u64,
}

/// Whether `t` is a memory type PAT accepts (UC, WC, WT, WP, WB, UC-).
const fn valid_pat_type(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6 | 7)
}

impl HvmMsrs {
    /// The state at start of day (EFER 0, PAT and MTRR default type as above) of a vCPU
    /// that may set the CR4 bits `cr4_valid`.
    pub const fn new(cr4_valid: u64) -> Self {
        HvmMsrs {
            efer: 0,
            pat: PAT_RESET,
            mtrr_def_type: MTRR_DEF_TYPE_WB,
            cr4_valid,
        }
    }

    /// The guest's EFER (for the VMCS guest EFER field).
    pub const fn efer(&self) -> u64 {
        self.efer
    }

    /// The guest's PAT (for the VMCS guest PAT field).
    pub const fn pat(&self) -> u64 {
        self.pat
    }

    /// RDMSR `index`.
    pub fn rdmsr(&self, index: u32) -> Result<u64, GpFault> {
        use index::*;
        match index {
            PLATFORM_ID | BIOS_SIGN_ID | MTRRCAP | DEBUGCTL => Ok(0),
            FEATURE_CONTROL => Ok(1),
            MISC_ENABLE => Ok(MISC_ENABLE_VALUE),
            PAT => Ok(self.pat),
            MTRR_DEF_TYPE => Ok(self.mtrr_def_type),
            EFER => Ok(self.efer),
            _ => Err(GpFault),
        }
    }

    /// WRMSR `index` with `value` while the guest's CR0 is `cr0`.
    pub fn wrmsr(&mut self, index: u32, value: u64, cr0: u64) -> Result<MsrWrite, GpFault> {
        use index::*;
        match index {
            BIOS_SIGN_ID | MISC_ENABLE => {}
            DEBUGCTL if value == 0 => {}
            PAT => {
                if !(0..8).all(|i| valid_pat_type((value >> (8 * i)) & 0xff)) {
                    return Err(GpFault);
                }
                self.pat = value;
            }
            MTRR_DEF_TYPE => {
                // Only E (bit 11) and the type; FE needs fixed ranges, which MTRRCAP denies.
                if value & !0x8ff != 0 || !matches!(value & 0xff, 0 | 1 | 4 | 5 | 6) {
                    return Err(GpFault);
                }
                self.mtrr_def_type = value;
            }
            EFER => self.write_efer(value, cr0)?,
            XEN_HYPERCALL_MSR => {
                // Bits 11:0 pick the page of a multi-page area; there is one page.
                if value & 0xfff != 0 {
                    return Err(GpFault);
                }
                return Ok(MsrWrite::HypercallPage(Gfn::from_gpa(value)));
            }
            _ => return Err(GpFault),
        }
        Ok(MsrWrite::Done)
    }

    fn write_efer(&mut self, value: u64, cr0: u64) -> Result<(), GpFault> {
        let writable = efer::SCE | efer::LME | efer::NXE;
        if value & !(writable | efer::LMA) != 0 {
            return Err(GpFault);
        }
        if cr0 & CR0_PG != 0 && (value ^ self.efer) & efer::LME != 0 {
            return Err(GpFault);
        }
        // LMA is the processor's: the written bit is ignored.
        self.efer = (value & writable) | (self.efer & efer::LMA);
        Ok(())
    }

    /// A guest write of CR0 from `old` to `new` with CR4 `cr4`: checks what the processor
    /// checks (SDM Vol. 3A 2.5, 9.8.5; paging cannot be turned off with CR4.PCIDE set) and
    /// activates or deactivates long mode.
    pub fn set_cr0(&mut self, old: u64, new: u64, cr4: u64) -> Result<(), GpFault> {
        if new >> 32 != 0
            || (new & CR0_PG != 0 && new & CR0_PE == 0)
            || (new & CR0_NW != 0 && new & CR0_CD == 0)
            || (old & CR0_PG != 0 && new & CR0_PG == 0 && cr4 & CR4_PCIDE != 0)
        {
            return Err(GpFault);
        }
        let paging_on = old & CR0_PG == 0 && new & CR0_PG != 0;
        let paging_off = old & CR0_PG != 0 && new & CR0_PG == 0;
        if paging_on && self.efer & efer::LME != 0 {
            if cr4 & CR4_PAE == 0 {
                return Err(GpFault);
            }
            self.efer |= efer::LMA;
        } else if paging_off {
            self.efer &= !efer::LMA;
        }
        Ok(())
    }

    /// A guest write of CR4 from `old` to `new` with CR3 `cr3`: only the bits the guest may
    /// set (its CPUID announces their features), PAE not cleared in long mode, and PCIDE
    /// turned on only in long mode with CR3[11:0] clear (SDM Vol. 3A 2.5, 4.10.1).
    pub fn check_cr4(&self, old: u64, new: u64, cr3: u64) -> Result<(), GpFault> {
        let long_mode = self.efer & efer::LMA != 0;
        let pcide_on = old & CR4_PCIDE == 0 && new & CR4_PCIDE != 0;
        if new & !self.cr4_valid != 0
            || (long_mode && new & CR4_PAE == 0)
            || (pcide_on && (!long_mode || cr3 & 0xfff != 0))
        {
            return Err(GpFault);
        }
        Ok(())
    }
}

/// The instruction a hypercall stub traps with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallInsn {
    /// Intel `vmcall`.
    Vmcall,
    /// AMD `vmmcall`.
    Vmmcall,
}

/// Fills an HVM hypercall page as Xen does: slot `n` (32 bytes each) holds
/// `mov $n, %eax; vmcall; ret` (`b8 n32 0f 01 c1 c3`; `0f 01 d9` for `vmmcall`), the rest of
/// each slot is `int3` (0xcc), and slot 23 (`iret`, which HVM guests do not have) starts with
/// `ud2` (`0f 0b`).
pub fn fill_hypercall_page(page: &mut [u8; 4096], insn: HypercallInsn) {
    let trap = match insn {
        HypercallInsn::Vmcall => VMCALL,
        HypercallInsn::Vmmcall => VMMCALL,
    };
    page.fill(0xcc);
    let iret = Hypercall::Iret as usize;
    for (n, slot) in page
        .chunks_exact_mut(HYPERCALL_STUB_SIZE)
        .take(HYPERCALL_PAGE_SLOTS)
        .enumerate()
    {
        if n == iret {
            slot[..2].copy_from_slice(&[0x0f, 0x0b]);
            continue;
        }
        slot[0] = 0xb8;
        slot[1..5].copy_from_slice(&(n as u32).to_le_bytes());
        slot[5..8].copy_from_slice(&trap);
        slot[8] = 0xc3;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG_PE: u64 = CR0_PG | CR0_PE;
    /// What a typical guest may set: everything of a Sandy Bridge's CPUID view.
    const CR4_VALID: u64 = {
        use crate::hvm::cpuid::cr4::*;
        VME | PVI | TSD | DE | PSE | PAE | PGE | PCE | OSFXSR | OSXMMEXCPT | PCIDE
    };

    #[test]
    fn reads_of_known_and_unknown_msrs() {
        let m = HvmMsrs::new(CR4_VALID);
        assert_eq!(m.rdmsr(index::APIC_BASE), Err(GpFault));
        assert_eq!(m.rdmsr(index::FEATURE_CONTROL), Ok(1));
        assert_eq!(m.rdmsr(index::MISC_ENABLE), Ok(0x1801));
        assert_eq!(m.rdmsr(index::MTRRCAP), Ok(0));
        assert_eq!(m.rdmsr(index::MTRR_DEF_TYPE), Ok(0x806));
        assert_eq!(m.rdmsr(index::PAT), Ok(0x0007_0406_0007_0406));
        assert_eq!(m.rdmsr(index::EFER), Ok(0));
        assert_eq!(m.rdmsr(index::PLATFORM_ID), Ok(0));
        assert_eq!(m.rdmsr(index::BIOS_SIGN_ID), Ok(0));
        assert_eq!(m.rdmsr(index::DEBUGCTL), Ok(0));
        assert_eq!(m.rdmsr(XEN_HYPERCALL_MSR), Err(GpFault));
        for unknown in [
            0,
            0x10,
            0x179,
            0x200,
            0x250,
            0x4000_0001,
            0xc000_0103,
            u32::MAX,
        ] {
            assert_eq!(m.rdmsr(unknown), Err(GpFault), "{unknown:#x}");
        }
    }

    #[test]
    fn writes_are_checked() {
        let mut m = HvmMsrs::new(CR4_VALID);
        assert_eq!(m.wrmsr(index::APIC_BASE, 0xfee0_0900, 0), Err(GpFault));
        assert_eq!(m.wrmsr(index::FEATURE_CONTROL, 5, 0), Err(GpFault));
        assert_eq!(m.wrmsr(index::MTRRCAP, 0, 0), Err(GpFault));
        assert_eq!(m.wrmsr(index::DEBUGCTL, 0, 0), Ok(MsrWrite::Done));
        for lbr_or_btf in [1, 2, 1 << 63] {
            assert_eq!(m.wrmsr(index::DEBUGCTL, lbr_or_btf, 0), Err(GpFault));
        }
        assert_eq!(m.wrmsr(0x1234, 0, 0), Err(GpFault));
        assert_eq!(m.wrmsr(index::BIOS_SIGN_ID, 0, 0), Ok(MsrWrite::Done));
        assert_eq!(m.wrmsr(index::MISC_ENABLE, 0, 0), Ok(MsrWrite::Done));
        assert_eq!(m.rdmsr(index::MISC_ENABLE), Ok(0x1801));
        // PAT: types 2 and 3 are reserved.
        assert_eq!(
            m.wrmsr(index::PAT, 0x0007_0406_0007_0401, 0),
            Ok(MsrWrite::Done)
        );
        assert_eq!(m.pat(), 0x0007_0406_0007_0401);
        assert_eq!(m.wrmsr(index::PAT, 0x0007_0406_0007_0402, 0), Err(GpFault));
        assert_eq!(m.wrmsr(index::PAT, 0x0300_0000_0000_0000, 0), Err(GpFault));
        assert_eq!(m.pat(), 0x0007_0406_0007_0401);
        // MTRR default type: UC with MTRRs off is fine; FE, reserved bits, type 7 are not.
        assert_eq!(m.wrmsr(index::MTRR_DEF_TYPE, 0, 0), Ok(MsrWrite::Done));
        assert_eq!(m.rdmsr(index::MTRR_DEF_TYPE), Ok(0));
        assert_eq!(m.wrmsr(index::MTRR_DEF_TYPE, 0xc06, 0), Err(GpFault));
        assert_eq!(m.wrmsr(index::MTRR_DEF_TYPE, 0x1_0006, 0), Err(GpFault));
        assert_eq!(m.wrmsr(index::MTRR_DEF_TYPE, 0x807, 0), Err(GpFault));
    }

    #[test]
    fn hypercall_page_msr() {
        let mut m = HvmMsrs::new(CR4_VALID);
        assert_eq!(
            m.wrmsr(XEN_HYPERCALL_MSR, 0x12_3000, 0),
            Ok(MsrWrite::HypercallPage(Gfn(0x123)))
        );
        // Page index 1 of a one-page area.
        assert_eq!(m.wrmsr(XEN_HYPERCALL_MSR, 0x12_3001, 0), Err(GpFault));
        assert_eq!(m.wrmsr(XEN_HYPERCALL_MSR + 1, 0x12_3000, 0), Err(GpFault));
    }

    #[test]
    fn efer_and_long_mode_activation() {
        let mut m = HvmMsrs::new(CR4_VALID);
        // Reserved bits and SVME fault.
        assert_eq!(m.wrmsr(index::EFER, 1 << 12, 0x11), Err(GpFault));
        assert_eq!(m.wrmsr(index::EFER, 1 << 1, 0x11), Err(GpFault));
        // Set LME and NXE with paging off; a written LMA is ignored.
        let v = efer::LME | efer::NXE | efer::LMA | efer::SCE;
        assert_eq!(m.wrmsr(index::EFER, v, 0x11), Ok(MsrWrite::Done));
        assert_eq!(m.efer(), efer::LME | efer::NXE | efer::SCE);
        // Paging on without PAE: #GP, nothing changes.
        assert_eq!(m.set_cr0(0x11, PG_PE, 0), Err(GpFault));
        assert_eq!(m.efer() & efer::LMA, 0);
        // With PAE: long mode is active.
        assert_eq!(m.set_cr0(0x11, PG_PE | 0x10, CR4_PAE), Ok(()));
        assert_eq!(m.rdmsr(index::EFER), Ok(0xd01));
        // LME cannot change while paging is on; other bits can, and LMA stays.
        assert_eq!(m.wrmsr(index::EFER, efer::NXE, PG_PE), Err(GpFault));
        assert_eq!(m.wrmsr(index::EFER, efer::LME, PG_PE), Ok(MsrWrite::Done));
        assert_eq!(m.efer(), efer::LME | efer::LMA);
        // PAE cannot be cleared in long mode.
        assert_eq!(m.check_cr4(CR4_PAE, 0, 0), Err(GpFault));
        assert_eq!(m.check_cr4(CR4_PAE, CR4_PAE, 0), Ok(()));
        // Paging off leaves long mode.
        assert_eq!(m.set_cr0(PG_PE, CR0_PE, CR4_PAE), Ok(()));
        assert_eq!(m.efer(), efer::LME);
        assert_eq!(m.check_cr4(CR4_PAE, 0, 0), Ok(()));
        // Paging on without LME is 32-bit paging: no LMA.
        let mut m = HvmMsrs::new(CR4_VALID);
        assert_eq!(m.set_cr0(0x11, PG_PE, 0), Ok(()));
        assert_eq!(m.efer(), 0);
    }

    #[test]
    fn invalid_cr0_values_fault() {
        let mut m = HvmMsrs::new(CR4_VALID);
        assert_eq!(m.set_cr0(0, CR0_PG, 0), Err(GpFault));
        assert_eq!(m.set_cr0(0, CR0_NW | CR0_PE, 0), Err(GpFault));
        assert_eq!(m.set_cr0(0, CR0_NW | CR0_CD | CR0_PE, 0), Ok(()));
        assert_eq!(m.set_cr0(0, 1 << 32, 0), Err(GpFault));
    }

    #[test]
    fn hypercall_page_matches_xen() {
        let mut page = [0u8; 4096];
        fill_hypercall_page(&mut page, HypercallInsn::Vmcall);
        assert_eq!(
            &page[..32],
            &[
                0xb8, 0, 0, 0, 0, 0x0f, 0x01, 0xc1, 0xc3, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc,
                0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc,
                0xcc, 0xcc
            ]
        );
        // console_io (18).
        assert_eq!(
            &page[18 * 32..18 * 32 + 9],
            &[0xb8, 18, 0, 0, 0, 0x0f, 0x01, 0xc1, 0xc3]
        );
        // Slot 127, the last.
        assert_eq!(
            &page[127 * 32..127 * 32 + 9],
            &[0xb8, 127, 0, 0, 0, 0x0f, 0x01, 0xc1, 0xc3]
        );
        // iret (23): ud2, then int3.
        assert_eq!(&page[23 * 32..23 * 32 + 3], &[0x0f, 0x0b, 0xcc]);
        assert!(page[23 * 32 + 2..24 * 32].iter().all(|&b| b == 0xcc));
        fill_hypercall_page(&mut page, HypercallInsn::Vmmcall);
        assert_eq!(
            &page[34 * 32..34 * 32 + 9],
            &[0xb8, 34, 0, 0, 0, 0x0f, 0x01, 0xd9, 0xc3]
        );
    }

    #[test]
    fn cr4_takes_only_the_valid_bits() {
        use crate::hvm::cpuid::cr4;
        let m = HvmMsrs::new(CR4_VALID);
        assert_eq!(m.check_cr4(0, CR4_VALID & !CR4_PCIDE, 0), Ok(()));
        for bit in (0..64).map(|b| 1u64 << b).filter(|b| CR4_VALID & b == 0) {
            assert_eq!(m.check_cr4(0, bit, 0), Err(GpFault), "{bit:#x}");
            assert_eq!(m.check_cr4(0, cr4::PAE | bit, 0), Err(GpFault), "{bit:#x}");
        }
        // UMIP follows the mask it was given, not a fixed list.
        let umip = HvmMsrs::new(CR4_VALID | cr4::UMIP);
        assert_eq!(umip.check_cr4(0, cr4::UMIP, 0), Ok(()));
        assert_eq!(m.check_cr4(0, cr4::UMIP, 0), Err(GpFault));
    }

    #[test]
    fn pcide_needs_long_mode_and_a_clean_cr3() {
        let mut m = HvmMsrs::new(CR4_VALID);
        // Outside long mode PCIDE cannot be turned on.
        assert_eq!(m.check_cr4(0, CR4_PCIDE, 0x1000), Err(GpFault));
        assert_eq!(m.wrmsr(index::EFER, efer::LME, 0x11), Ok(MsrWrite::Done));
        assert_eq!(m.set_cr0(0x11, PG_PE | 0x10, CR4_PAE), Ok(()));
        let (pae, both) = (CR4_PAE, CR4_PAE | CR4_PCIDE);
        assert_eq!(
            m.check_cr4(pae, both, 0x1001),
            Err(GpFault),
            "CR3[11:0] set"
        );
        assert_eq!(m.check_cr4(pae, both, 0x1000), Ok(()));
        // Once on, CR3's low bits are the PCID and may be anything; it may be turned off.
        assert_eq!(m.check_cr4(both, both, 0x1fff), Ok(()));
        assert_eq!(m.check_cr4(both, pae, 0x1fff), Ok(()));
        // Paging cannot be turned off while PCIDE is set.
        assert_eq!(m.set_cr0(PG_PE | 0x10, 0x11, both), Err(GpFault));
        assert_eq!(m.set_cr0(PG_PE | 0x10, 0x11, pae), Ok(()));
    }
}
