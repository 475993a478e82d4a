//! Filling a new VMCS: the controls (from the capability MSRs), the host state (hv's GDT, IDT,
//! TSS and control registers) and the guest state (a [`VcpuStartState`]), per SDM Vol. 3C
//! chapter 24 and the entry checks of 26.2-26.3.

use super::instructions::{vmwrite, VmFail};
use crate::arch::x86_64::cpu::rdmsr;
use crate::arch::x86_64::gdt::{HV_CS, HV_DS, TSS_SEL};
use crate::hvm::vmcs::{
    self, adjust, adjust_optional, control, guest, host, msr, ControlWord, EntryControls,
    ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased, UnsupportedControls, VmxBasic,
};
use crate::hvm::{SegmentState, VcpuStartState};

/// What this CPU's VMX supports, read once.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// IA32_VMX_BASIC.
    pub basic: VmxBasic,
    /// IA32_VMX_EPT_VPID_CAP (0 without secondary controls).
    pub ept_vpid: vmcs::EptVpidCap,
    /// CR0 fixed-0 / fixed-1.
    pub cr0_fixed: (u64, u64),
    /// CR4 fixed-0 / fixed-1.
    pub cr4_fixed: (u64, u64),
    /// The control words hv runs guests with.
    pub controls: Controls,
    /// The VMX-preemption timer's rate (it counts once every 2^n TSC ticks), when hv uses it.
    pub preemption_shift: Option<u8>,
}

/// The adjusted control words.
#[derive(Clone, Copy, Debug)]
pub struct Controls {
    /// Pin-based.
    pub pin: u32,
    /// Primary processor-based.
    pub primary: u32,
    /// Secondary processor-based.
    pub secondary: u32,
    /// VM-exit.
    pub exit: u32,
    /// VM-entry, without "IA-32e mode guest" (set per entry from the guest's EFER.LMA).
    pub entry: u32,
}

impl Controls {
    /// Whether VPIDs are in use.
    pub fn vpid(&self) -> bool {
        self.secondary & SecondaryProcBased::ENABLE_VPID.bits() != 0
    }
}

/// Why VMX cannot run hv's guests on this CPU.
#[derive(Clone, Copy, Debug)]
pub enum CapsError {
    /// A required control is missing from this control word.
    Missing(ControlWord, UnsupportedControls),
    /// EPT lacks a 4-level walk or write-back paging structures.
    EptUnsupported,
}

/// Reads the capability MSRs and computes the controls.
///
/// # Safety
/// The CPU must support VMX (CPUID.1:ECX.VMX), so the capability MSRs exist.
pub unsafe fn read_caps() -> Result<Caps, CapsError> {
    // SAFETY: VMX is supported, so these MSRs exist (SDM Appendix A).
    let rd = |m: u32| unsafe { rdmsr(m) };
    let basic = VmxBasic(rd(msr::IA32_VMX_BASIC));
    let cap = |w: ControlWord| rd(w.capability_msr(basic));
    // The preemption timer, where there is one, ends a guest's run just after the tick even
    // when the tick's external-interrupt exit does not come (Bochs 2.7 leaves the local
    // APIC's interrupt masked in a guest entered with RFLAGS.IF clear).
    let pin = adjust_optional(
        (PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::NMI_EXITING).bits(),
        PinBased::PREEMPTION_TIMER.bits(),
        cap(ControlWord::PinBased),
    )
    .map_err(|e| CapsError::Missing(ControlWord::PinBased, e))?;
    let primary = adjust(
        (PrimaryProcBased::HLT_EXITING
            | PrimaryProcBased::USE_IO_BITMAPS
            | PrimaryProcBased::USE_MSR_BITMAPS
            | PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS)
            .bits(),
        cap(ControlWord::PrimaryProcBased),
    )
    .map_err(|e| CapsError::Missing(ControlWord::PrimaryProcBased, e))?;
    let secondary = adjust_optional(
        (SecondaryProcBased::ENABLE_EPT | SecondaryProcBased::UNRESTRICTED_GUEST).bits(),
        SecondaryProcBased::ENABLE_VPID.bits(),
        cap(ControlWord::SecondaryProcBased),
    )
    .map_err(|e| CapsError::Missing(ControlWord::SecondaryProcBased, e))?;
    let exit = adjust(
        (ExitControls::HOST_ADDRESS_SPACE_SIZE | ExitControls::SAVE_EFER | ExitControls::LOAD_EFER)
            .bits(),
        cap(ControlWord::Exit),
    )
    .map_err(|e| CapsError::Missing(ControlWord::Exit, e))?;
    let entry_msr = cap(ControlWord::Entry);
    let entry = adjust(EntryControls::LOAD_EFER.bits(), entry_msr)
        .map_err(|e| CapsError::Missing(ControlWord::Entry, e))?;
    // "IA-32e mode guest" must be allowed to be 1 for 64-bit guests.
    adjust(EntryControls::IA32E_MODE_GUEST.bits(), entry_msr)
        .map_err(|e| CapsError::Missing(ControlWord::Entry, e))?;
    let ept_vpid = vmcs::EptVpidCap(rd(msr::IA32_VMX_EPT_VPID_CAP));
    if !ept_vpid.page_walk_4() || !ept_vpid.memory_type_wb() {
        return Err(CapsError::EptUnsupported);
    }
    let mut secondary = secondary;
    if secondary & SecondaryProcBased::ENABLE_VPID.bits() != 0
        && !(ept_vpid.invvpid() && ept_vpid.invvpid_single_context())
    {
        // VPIDs without single-context INVVPID could not be retired safely.
        secondary &= !SecondaryProcBased::ENABLE_VPID.bits();
    }
    Ok(Caps {
        basic,
        ept_vpid,
        cr0_fixed: (rd(msr::IA32_VMX_CR0_FIXED0), rd(msr::IA32_VMX_CR0_FIXED1)),
        cr4_fixed: (rd(msr::IA32_VMX_CR4_FIXED0), rd(msr::IA32_VMX_CR4_FIXED1)),
        preemption_shift: (pin & PinBased::PREEMPTION_TIMER.bits() != 0)
            .then(|| (rd(msr::IA32_VMX_MISC) & 0x1f) as u8),
        controls: Controls {
            pin,
            primary,
            secondary,
            exit,
            entry,
        },
    })
}

/// Physical addresses of the bitmaps a VMCS points at.
#[derive(Clone, Copy, Debug)]
pub struct Bitmaps {
    /// I/O bitmap A (ports 0-0x7fff).
    pub io_a: u64,
    /// I/O bitmap B (ports 0x8000-0xffff).
    pub io_b: u64,
    /// The MSR bitmaps (4 KiB).
    pub msr: u64,
}

/// Everything a new VMCS needs besides the capabilities.
pub struct VmcsParams<'a> {
    /// The guest's first state.
    pub start: &'a VcpuStartState,
    /// EPT pointer.
    pub eptp: u64,
    /// VPID (ignored without VPIDs).
    pub vpid: u16,
    /// Bitmaps.
    pub bitmaps: Bitmaps,
    /// The VM-exit handler's entry point (host RIP).
    pub host_rip: u64,
}

/// Exceptions that exit: none. The guest owns its IDT; a fault it cannot handle ends as a
/// triple fault, which exits by itself (SDM 25.2).
pub const EXCEPTION_BITMAP: u32 = 0;

/// Every CR0 and CR4 bit is host-owned, so each guest write exits and goes through the
/// checks of `hvm::msr::HvmMsrs` (long-mode activation, hidden VMXE); reads see the shadow.
const CR_MASK_ALL: u64 = u64::MAX;

/// The descriptor-table register's (base, limit) from `sgdt` / `sidt`.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct DescPtr {
    limit: u16,
    base: u64,
}

/// hv's GDTR.
pub fn sgdt() -> (u64, u16) {
    let mut p = DescPtr::default();
    // SAFETY: SGDT stores 10 bytes at the operand, which is `p`.
    unsafe { core::arch::asm!("sgdt [{}]", in(reg) &mut p, options(nostack)) };
    (p.base, p.limit)
}

/// hv's IDTR.
pub fn sidt() -> (u64, u16) {
    let mut p = DescPtr::default();
    // SAFETY: SIDT stores 10 bytes at the operand, which is `p`.
    unsafe { core::arch::asm!("sidt [{}]", in(reg) &mut p, options(nostack)) };
    (p.base, p.limit)
}

/// Reloads GDTR and IDTR with their real limits: a VM exit sets both limits to 0xffff
/// (SDM 27.5.2), which would let a PV guest load selectors from beyond hv's GDT.
///
/// # Safety
/// `gdt` and `idt` must be what `sgdt` / `sidt` returned in hv before the VM entry.
pub unsafe fn restore_tables(gdt: (u64, u16), idt: (u64, u16)) {
    let g = DescPtr {
        limit: gdt.1,
        base: gdt.0,
    };
    let i = DescPtr {
        limit: idt.1,
        base: idt.0,
    };
    // SAFETY: the same tables hv was running with, only the limits differ.
    unsafe {
        core::arch::asm!("lgdt [{}]", in(reg) &g, options(nostack));
        core::arch::asm!("lidt [{}]", in(reg) &i, options(nostack));
    }
}

/// The TSS base from its 16-byte descriptor in hv's GDT.
fn tss_base(gdt_base: u64) -> u64 {
    let at = gdt_base + u64::from(TSS_SEL);
    // SAFETY: hv's GDT holds the 16-byte TSS descriptor at TSS_SEL (gdt.rs), mapped and
    // readable for as long as hv runs.
    let (lo, hi) = unsafe { ((at as *const u64).read(), ((at + 8) as *const u64).read()) };
    ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | ((hi & 0xffff_ffff) << 32)
}

fn cr0() -> u64 {
    x86_64::registers::control::Cr0::read_raw()
}
fn cr3() -> u64 {
    x86_64::registers::control::Cr3::read_raw()
        .0
        .start_address()
        .as_u64()
}
fn cr4() -> u64 {
    x86_64::registers::control::Cr4::read_raw()
}

/// Writes the host-state fields that change while hv runs (CR0.TS, CR3 when a PV guest's
/// tables are live, FS base); called before every VM entry.
///
/// # Safety
/// A VMCS must be current.
pub unsafe fn refresh_host_state() -> Result<(), VmFail> {
    // SAFETY: the caller guarantees a current VMCS; the values are this CPU's own.
    unsafe {
        vmwrite(host::CR0, cr0())?;
        vmwrite(host::CR3, cr3())?;
        vmwrite(host::FS_BASE, rdmsr(0xc000_0100))?;
        vmwrite(host::GS_BASE, rdmsr(0xc000_0101))?;
    }
    Ok(())
}

fn write_segment(
    s: &SegmentState,
    sel: crate::hvm::vmcs::Field<vmcs::W16>,
    base: crate::hvm::vmcs::Field<vmcs::WNatural>,
    limit: crate::hvm::vmcs::Field<vmcs::W32>,
    ar: crate::hvm::vmcs::Field<vmcs::W32>,
) -> Result<(), VmFail> {
    // SAFETY: called from `init_vmcs`, whose caller guarantees a current VMCS.
    unsafe {
        vmwrite(sel, s.selector)?;
        vmwrite(base, s.base)?;
        vmwrite(limit, s.limit)?;
        vmwrite(ar, s.vmx_access_rights())?;
    }
    Ok(())
}

/// Fills the current VMCS.
///
/// # Safety
/// The VMCS to fill must be current (VMPTRLD), and `p` must describe hv-owned bitmaps and
/// EPT tables that outlive the VMCS.
pub unsafe fn init_vmcs(caps: &Caps, p: &VmcsParams<'_>) -> Result<(), VmFail> {
    let c = &caps.controls;
    let s = p.start;
    let gdt = sgdt();
    let idt = sidt();
    // SAFETY: a VMCS is current (the caller's guarantee); every value is derived from hv's
    // own state or checked guest state as SDM 26.2-26.3 require.
    unsafe {
        // Controls (24.6-24.8).
        vmwrite(control::PIN_BASED, c.pin)?;
        vmwrite(control::PRIMARY_PROC_BASED, c.primary)?;
        vmwrite(control::SECONDARY_PROC_BASED, c.secondary)?;
        vmwrite(control::EXIT_CONTROLS, c.exit)?;
        let lma = s.efer & crate::hvm::msr::efer::LMA != 0;
        let entry = if lma {
            c.entry | EntryControls::IA32E_MODE_GUEST.bits()
        } else {
            c.entry
        };
        vmwrite(control::ENTRY_CONTROLS, entry)?;
        vmwrite(control::EXCEPTION_BITMAP, EXCEPTION_BITMAP)?;
        vmwrite(control::PF_ERROR_CODE_MASK, 0)?;
        vmwrite(control::PF_ERROR_CODE_MATCH, 0)?;
        vmwrite(control::CR3_TARGET_COUNT, 0)?;
        vmwrite(control::EXIT_MSR_STORE_COUNT, 0)?;
        vmwrite(control::EXIT_MSR_LOAD_COUNT, 0)?;
        vmwrite(control::ENTRY_MSR_LOAD_COUNT, 0)?;
        vmwrite(control::ENTRY_INTR_INFO, 0)?;
        vmwrite(control::IO_BITMAP_A, p.bitmaps.io_a)?;
        vmwrite(control::IO_BITMAP_B, p.bitmaps.io_b)?;
        vmwrite(control::MSR_BITMAP, p.bitmaps.msr)?;
        vmwrite(control::EPTP, p.eptp)?;
        if c.vpid() {
            vmwrite(control::VPID, p.vpid)?;
        }
        vmwrite(control::CR0_GUEST_HOST_MASK, CR_MASK_ALL)?;
        vmwrite(control::CR4_GUEST_HOST_MASK, CR_MASK_ALL)?;
        vmwrite(control::CR0_READ_SHADOW, s.cr0)?;
        vmwrite(control::CR4_READ_SHADOW, s.cr4)?;

        // Host state (24.5): hv's own.
        vmwrite(host::CS_SELECTOR, HV_CS)?;
        vmwrite(host::SS_SELECTOR, HV_DS)?;
        vmwrite(host::DS_SELECTOR, 0)?;
        vmwrite(host::ES_SELECTOR, 0)?;
        vmwrite(host::FS_SELECTOR, 0)?;
        vmwrite(host::GS_SELECTOR, 0)?;
        vmwrite(host::TR_SELECTOR, TSS_SEL)?;
        vmwrite(host::CR4, cr4())?;
        vmwrite(host::TR_BASE, tss_base(gdt.0))?;
        vmwrite(host::GDTR_BASE, gdt.0)?;
        vmwrite(host::IDTR_BASE, idt.0)?;
        vmwrite(host::IA32_SYSENTER_CS, 0)?;
        vmwrite(host::IA32_SYSENTER_ESP, 0)?;
        vmwrite(host::IA32_SYSENTER_EIP, 0)?;
        vmwrite(host::IA32_EFER, rdmsr(crate::hvm::msr::index::EFER))?;
        vmwrite(host::RIP, p.host_rip)?;
        refresh_host_state()?;

        // Guest state (24.4).
        let (f0, f1) = caps.cr0_fixed;
        vmwrite(guest::CR0, vmcs::apply_fixed(s.cr0, f0, f1, true))?;
        let (f0, f1) = caps.cr4_fixed;
        vmwrite(guest::CR4, vmcs::apply_fixed(s.cr4, f0, f1, false))?;
        vmwrite(guest::CR3, s.cr3)?;
        vmwrite(guest::DR7, 0x400)?;
        vmwrite(guest::RSP, s.gprs.get(crate::hvm::Gpr::Rsp))?;
        vmwrite(guest::RIP, s.rip)?;
        vmwrite(guest::RFLAGS, s.rflags)?;
        write_segment(
            &s.cs,
            guest::CS_SELECTOR,
            guest::CS_BASE,
            guest::CS_LIMIT,
            guest::CS_AR,
        )?;
        write_segment(
            &s.ds,
            guest::DS_SELECTOR,
            guest::DS_BASE,
            guest::DS_LIMIT,
            guest::DS_AR,
        )?;
        write_segment(
            &s.es,
            guest::ES_SELECTOR,
            guest::ES_BASE,
            guest::ES_LIMIT,
            guest::ES_AR,
        )?;
        write_segment(
            &s.ss,
            guest::SS_SELECTOR,
            guest::SS_BASE,
            guest::SS_LIMIT,
            guest::SS_AR,
        )?;
        write_segment(
            &s.fs,
            guest::FS_SELECTOR,
            guest::FS_BASE,
            guest::FS_LIMIT,
            guest::FS_AR,
        )?;
        write_segment(
            &s.gs,
            guest::GS_SELECTOR,
            guest::GS_BASE,
            guest::GS_LIMIT,
            guest::GS_AR,
        )?;
        write_segment(
            &s.tr,
            guest::TR_SELECTOR,
            guest::TR_BASE,
            guest::TR_LIMIT,
            guest::TR_AR,
        )?;
        write_segment(
            &s.ldtr,
            guest::LDTR_SELECTOR,
            guest::LDTR_BASE,
            guest::LDTR_LIMIT,
            guest::LDTR_AR,
        )?;
        vmwrite(guest::GDTR_BASE, s.gdtr.base)?;
        vmwrite(guest::GDTR_LIMIT, u32::from(s.gdtr.limit))?;
        vmwrite(guest::IDTR_BASE, s.idtr.base)?;
        vmwrite(guest::IDTR_LIMIT, u32::from(s.idtr.limit))?;
        vmwrite(guest::IA32_DEBUGCTL, 0)?;
        vmwrite(guest::IA32_EFER, s.efer)?;
        vmwrite(guest::IA32_SYSENTER_CS, 0)?;
        vmwrite(guest::IA32_SYSENTER_ESP, 0)?;
        vmwrite(guest::IA32_SYSENTER_EIP, 0)?;
        vmwrite(guest::INTERRUPTIBILITY, 0)?;
        vmwrite(guest::ACTIVITY_STATE, 0)?;
        vmwrite(guest::PENDING_DBG_EXCEPTIONS, 0)?;
        vmwrite(guest::VMCS_LINK_POINTER, u64::MAX)?;
    }
    Ok(())
}
