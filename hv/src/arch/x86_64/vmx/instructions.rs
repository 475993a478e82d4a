//! The VMX instructions (SDM Vol. 3C chapter 30), one `unsafe fn` each.
//!
//! Every VMX instruction reports its result in RFLAGS (30.2): CF = 1 is VMfailInvalid (no
//! current VMCS, or a bad operand before one is known), ZF = 1 is VMfailValid (the reason is
//! in the current VMCS's VM-instruction error field), both clear is success. The wrappers
//! turn that into `Result<_, VmFail>`. VMLAUNCH / VMRESUME are not here: they need the
//! guest's registers around them and live in the exit stub (`super::hv_vmx_enter`).

use core::arch::asm;

use crate::hvm::exit::VmInstructionError;
use crate::hvm::vmcs::{exit_info, Field, Width};

/// Why a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// VMfailInvalid (CF = 1).
    Invalid,
    /// VMfailValid (ZF = 1) with the VM-instruction error, or its raw number if the SDM
    /// names none.
    Valid(Result<VmInstructionError, u32>),
}

/// The result of an instruction from its CF and ZF.
fn result(cf: u8, zf: u8) -> Result<(), VmFail> {
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        // SAFETY: VMfailValid means a current VMCS exists, whose error field is readable.
        let raw = unsafe { vmread_raw(exit_info::VM_INSTRUCTION_ERROR.encoding()) }.unwrap_or(0);
        Err(VmFail::Valid(VmInstructionError::try_from(raw as u32)))
    } else {
        Ok(())
    }
}

/// Enters VMX operation with the VMXON region at physical `region`.
///
/// # Safety
/// CR4.VMXE must be set, CR0/CR4 must satisfy the VMX fixed bits, IA32_FEATURE_CONTROL must
/// allow VMXON, and `region` must be a 4 KiB-aligned page of RAM holding the VMCS revision
/// identifier that hv never uses for anything else while VMX is on.
pub unsafe fn vmxon(region: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees the preconditions; the operand is a pointer to a u64 on
    // the stack holding the physical address.
    unsafe {
        asm!("vmxon [{}]", "setc {}", "setz {}", in(reg) &region, out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    result(cf, zf)
}

/// Makes the VMCS at physical `vmcs` clear (not current, not launched) and writes its cached
/// state back to memory.
///
/// # Safety
/// VMX operation must be on and `vmcs` must be a VMCS region hv allocated (not the VMXON
/// region).
pub unsafe fn vmclear(vmcs: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: as the caller guarantees; the operand points at a u64 on the stack.
    unsafe {
        asm!("vmclear [{}]", "setc {}", "setz {}", in(reg) &vmcs, out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    result(cf, zf)
}

/// Makes the VMCS at physical `vmcs` current on this CPU.
///
/// # Safety
/// VMX operation must be on and `vmcs` must be a VMCS region hv allocated and initialised
/// with the revision identifier.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: as the caller guarantees; the operand points at a u64 on the stack.
    unsafe {
        asm!("vmptrld [{}]", "setc {}", "setz {}", in(reg) &vmcs, out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    result(cf, zf)
}

/// VMREAD of a raw encoding.
///
/// # Safety
/// VMX operation must be on with a current VMCS.
unsafe fn vmread_raw(encoding: u32) -> Result<u64, VmFail> {
    let value: u64;
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees a current VMCS; VMREAD only reads it.
    unsafe {
        asm!("vmread {}, {}", "setc {}", "setz {}", out(reg) value, in(reg) u64::from(encoding), out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    if cf != 0 || zf != 0 {
        // Not `result`: reading the error field could recurse.
        return Err(VmFail::Invalid);
    }
    Ok(value)
}

/// Reads `field` of the current VMCS.
///
/// # Safety
/// VMX operation must be on with a current VMCS.
pub unsafe fn vmread<W: Width>(field: Field<W>) -> Result<W::Value, VmFail> {
    // SAFETY: as the caller guarantees.
    unsafe { vmread_raw(field.encoding()) }.map(W::from_u64)
}

/// Writes `field` of the current VMCS.
///
/// # Safety
/// VMX operation must be on with a current VMCS, and `value` must be one hv means: host
/// state and controls decide what the CPU does on the next VM entry and exit.
pub unsafe fn vmwrite<W: Width>(field: Field<W>, value: W::Value) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    let v: u64 = value.into();
    // SAFETY: as the caller guarantees; VMWRITE only writes the current VMCS.
    unsafe {
        asm!("vmwrite {}, {}", "setc {}", "setz {}", in(reg) u64::from(field.encoding()), in(reg) v, out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    result(cf, zf)
}

/// INVEPT types (SDM 30.3, INVEPT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InveptType {
    /// Translations derived from one EPTP.
    SingleContext = 1,
    /// All EPT-derived translations.
    AllContext = 2,
}

/// Invalidates EPT-derived translations.
///
/// # Safety
/// VMX operation must be on and the CPU must support INVEPT with `kind`.
pub unsafe fn invept(kind: InveptType, eptp: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [eptp, 0];
    let (cf, zf): (u8, u8);
    // SAFETY: as the caller guarantees; the descriptor is 16 bytes on the stack.
    unsafe {
        asm!("invept {}, [{}]", "setc {}", "setz {}", in(reg) kind as u64, in(reg) &desc, out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    result(cf, zf)
}

/// INVVPID types (SDM 30.3, INVVPID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvvpidType {
    /// Translations tagged with one VPID.
    SingleContext = 1,
    /// Translations of every VPID but 0.
    AllContext = 2,
}

/// Invalidates translations tagged with `vpid`.
///
/// # Safety
/// VMX operation must be on and the CPU must support INVVPID with `kind`.
pub unsafe fn invvpid(kind: InvvpidType, vpid: u16) -> Result<(), VmFail> {
    let desc: [u64; 2] = [u64::from(vpid), 0];
    let (cf, zf): (u8, u8);
    // SAFETY: as the caller guarantees; the descriptor is 16 bytes on the stack.
    unsafe {
        asm!("invvpid {}, [{}]", "setc {}", "setz {}", in(reg) kind as u64, in(reg) &desc, out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    result(cf, zf)
}

/// Reads the field with raw `encoding` of the current VMCS (for dumps over field tables).
///
/// # Safety
/// VMX operation must be on with a current VMCS.
pub unsafe fn vmread_any(encoding: u32) -> Result<u64, VmFail> {
    // SAFETY: as the caller guarantees.
    unsafe { vmread_raw(encoding) }
}
