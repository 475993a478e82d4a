//! VT-x: the VMX backend for HVM domains (PVH kernels, and boot sectors started in real mode).
//!
//! What it owns: detection and VMXON on the CPU ([`enable`], lazily, when the first HVM
//! domain is built), each HVM domain's EPT and each vCPU's VMCS ([`build_pvh_domain`] for a
//! PVH kernel, [`build_boot_sector_domain`] for a boot sector started in real mode),
//! running an HVM vCPU until an exit needs the scheduler ([`run_vcpu`]), and tearing the
//! hardware state down ([`destroy_domain`]). The decisions are the portable ones in
//! [`crate::hvm`]; this module moves state in and out of the VMCS.
//!
//! The run loop (`pv.rs`) keeps choosing vCPUs with [`crate::sched`] as before; when the
//! chosen vCPU belongs to an HVM domain it calls [`run_vcpu`], which enters the guest with
//! VMLAUNCH / VMRESUME and handles exits in one `match` until the time slice ends, the vCPU
//! blocks (`hlt`, `SCHEDOP_block`), the domain shuts down or it must be crashed. A failed VM
//! entry is logged with the VM-instruction error or the entry-failure reason and a dump of
//! the guest-state area, and crashes only that domain.
//!
//! Limits of this first version (each refused or crashes the domain, never hv):
//! - one vCPU per HVM domain, on the one CPU hv runs on;
//! - guest pointers in hypercalls and fetched instructions are translated
//!   ([`crate::hvm::guest_walk`]) unpaged and with 32-bit, PAE and 4-level paging; 5-level
//!   paging gets `EFAULT`; in PAE paging outside long mode the PDPTEs are loaded into the
//!   VMCS after CR0/CR3/CR4 writes (the processor takes them from there under EPT);
//! - string I/O (`ins`/`outs`) is emulated a page per exit ([`hvm::string_io`]), with the
//!   address size of the execution mode;
//! - the only interrupt injected is the event-channel callback vector
//!   (`HVM_PARAM_CALLBACK_IRQ`, [`hvm::upcall_action`]); there is no emulated local APIC,
//!   IOAPIC or PIC; `hlt` blocks until an event is pending, and `hlt` with interrupts off
//!   (RFLAGS.IF clear) powers the domain off, as Xen does when every vCPU of an HVM domain
//!   is down;
//! - a boot sector gets no BIOS: the real-mode vector table is zeroed memory, so `int 0x10`,
//!   `int 0x13` and the like jump to address 0; it prints through COM1 or port 0xe9;
//! - `XENMEM_add_to_physmap` (shared info and grant-table frames) and grant mappings at
//!   guest-physical addresses ([`map_grant`]) are handled here, since they change the EPT;
//!   hypercalls that only make sense for PV guests return `ENOSYS`, and the reservation
//!   `memory_op`s (ballooning) are `ENOSYS` for HVM domains;
//! - a 32-bit guest's hypercalls are dispatched with `compat` set: `add_to_physmap` (here),
//!   `sched_poll`, the memory maps and `vcpu_op`'s runstate and timer read Xen's compat
//!   layouts; grant `setup_table` and `copy` are `ENOSYS` for it (their layouts are not
//!   translated); the rest have the same layout in both;
//! - the VMX-preemption timer (where the CPU has it) ends each run just after hv's next tick
//!   is due, so a guest computing with interrupts off is still preempted.

pub mod instructions;
pub mod vmcs_setup;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::errno::Errno;
use hypercall_abi::memory::XenMapSpace;
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::{SharedInfo, SIF_INITDOMAIN, SIF_PRIVILEGED};
use log::{error, info, warn};
use spin::Mutex;

use self::instructions::{invept, invvpid, vmclear, vmptrld, vmread, vmwrite, InveptType};
use self::instructions::{InvvpidType, VmFail};
use self::vmcs_setup::{Bitmaps, Caps, VmcsParams};
use super::cpu::{self, rdmsr, wrmsr};
use super::layout::HV_VIRT_OFFSET;
use super::paging::phys_to_virt;
use super::{console, start, traps};
use crate::bundle::DomainSpec;
use crate::console::{InputQueue, Sink};
use crate::domain::elf::XenImage;
use crate::domain::state::{Domain, DomainState, HvmParams, Peers, Vcpu, VcpuState, INVALID_MFN};
use crate::evtchn::EvtchnTable;
use crate::hvm::ept::{Ept, EptMemory, EptPerm};
use crate::hvm::exit::{
    BasicExitReason, CrAccessType, EntryFailure, EptViolation, ExitReason, InterruptionInfo,
    InterruptionType, IoQualification,
};
use crate::hvm::guest_walk::Access;
use crate::hvm::msr::{fill_hypercall_page, HvmMsrs, HypercallInsn, MsrWrite};
use crate::hvm::pvh_build::{
    build_pvh, build_real_mode, check_boot_sector, GuestMemmap, GuestPhysMemory, PvhKernel,
    PvhParams, RegionKind, BOOT_SECTOR_ADDR, LOW_RAM_END,
};
use crate::hvm::uart::{Uart16550, COM1_BASE};
use crate::hvm::vmcs::{self, control, exit_info, guest, EntryControls, PrimaryProcBased};
use crate::hvm::{
    self, CpuMode, Direction, Event, Exit, Gfn, Gpr, Gprs, SegmentAttrs, VcpuStartState,
};
use crate::hypercall::{self, Ctx, Outcome, Platform};
use crate::mm::guest_access::{self, GuestMem};
use crate::mm::{Mfn, Owner, PAGE_BYTES, PAGE_SIZE};

core::arch::global_asm!(
    r#"
    .text
    /* rdi = the guest's 16 GPRs (RSP's slot unused), rsi = 1 if launched.
       Returns 0 after a VM exit, 1 for VMfailInvalid, 2 for VMfailValid. */
    .globl hv_vmx_enter
hv_vmx_enter:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, {host_rsp}
    vmwrite rax, rsp
    jbe 3f
    test rsi, rsi
    mov rax, [rdi + 0]
    mov rcx, [rdi + 8]
    mov rdx, [rdi + 16]
    mov rbx, [rdi + 24]
    mov rbp, [rdi + 40]
    mov rsi, [rdi + 48]
    mov r8,  [rdi + 64]
    mov r9,  [rdi + 72]
    mov r10, [rdi + 80]
    mov r11, [rdi + 88]
    mov r12, [rdi + 96]
    mov r13, [rdi + 104]
    mov r14, [rdi + 112]
    mov r15, [rdi + 120]
    mov rdi, [rdi + 56]
    jnz 1f
    vmlaunch
    jmp 3f
1:  vmresume
3:  mov eax, 2
    jnc 4f
    mov eax, 1
4:  add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    /* Host RIP: RSP is as hv_vmx_enter left it, the GPR pointer on top. */
    .globl hv_vmx_exit
hv_vmx_exit:
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 0], rax
    mov [rdi + 8], rcx
    mov [rdi + 16], rdx
    mov [rdi + 24], rbx
    mov [rdi + 40], rbp
    mov [rdi + 48], rsi
    mov [rdi + 64], r8
    mov [rdi + 72], r9
    mov [rdi + 80], r10
    mov [rdi + 88], r11
    mov [rdi + 96], r12
    mov [rdi + 104], r13
    mov [rdi + 112], r14
    mov [rdi + 120], r15
    pop rax
    mov [rdi + 56], rax
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    xor eax, eax
    ret
    "#,
    host_rsp = const vmcs::host::RSP.encoding(),
);

unsafe extern "C" {
    fn hv_vmx_enter(gprs: *mut u64, launched: u64) -> u64;
    fn hv_vmx_exit();
}

/// A page-aligned page in hv's image.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The VMXON region.
static mut VMXON_REGION: Page = Page([0; 4096]);
/// I/O bitmaps A and B: all ones, every port exits.
static mut IO_BITMAPS: [Page; 2] = [Page([0xff; 4096]), Page([0xff; 4096])];
/// The MSR bitmaps: all ones except the MSRs the VMCS holds (see [`crate::hvm::msr`]).
static mut MSR_BITMAP: Page = Page([0xff; 4096]);

/// Physical address of a page in hv's image.
fn image_paddr<T>(p: *const T) -> u64 {
    p as u64 - HV_VIRT_OFFSET
}

/// The CPU's VMX state once on.
struct VmxCpu {
    caps: Caps,
    next_vpid: u16,
}

static VMX: Mutex<Option<VmxCpu>> = Mutex::new(None);
/// The VMCS current on this CPU (physical address; 0: none).
static CURRENT_VMCS: AtomicU64 = AtomicU64::new(0);

const CPUID1_ECX_VMX: u32 = 1 << 5;
const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
const CR4_VMXE: u64 = 1 << 13;
const CR0_PE: u64 = 1;
const CR0_TS: u64 = 1 << 3;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_DF: u64 = 1 << 10;

/// Turns VMX operation on (once): CPUID and IA32_FEATURE_CONTROL checks, the capability
/// MSRs, CR0/CR4 fixed bits, VMXON.
fn enable() -> Result<(), String> {
    let mut vmx = VMX.lock();
    if vmx.is_some() {
        return Ok(());
    }
    if cpu::cpuid(1, 0).ecx & CPUID1_ECX_VMX == 0 {
        return Err(String::from("this CPU has no VMX"));
    }
    // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX (SDM 23.7).
    let fc = unsafe { rdmsr(vmcs::msr::IA32_FEATURE_CONTROL) };
    if fc & FEATURE_CONTROL_LOCK != 0 && fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
        return Err(String::from("VMX is disabled by the firmware"));
    }
    if fc & FEATURE_CONTROL_LOCK == 0 {
        // SAFETY: unlocked, so writable; enabling VMX outside SMX and locking is what the
        // SDM asks of the software that uses VMX.
        unsafe {
            wrmsr(
                vmcs::msr::IA32_FEATURE_CONTROL,
                fc | FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
            )
        };
    }
    // SAFETY: VMX is supported (checked above).
    let caps = unsafe { vmcs_setup::read_caps() }
        .map_err(|e| fail(format_args!("VMX lacks what hv needs: {e:?}")))?;
    if caps.basic.region_size() as usize > PAGE_BYTES || caps.basic.memory_type() != 6 {
        return Err(String::from("unsupported VMCS region size or memory type"));
    }
    let (f0, f1) = caps.cr0_fixed;
    let cr0 = vmcs::apply_fixed(x86_64::registers::control::Cr0::read_raw(), f0, f1, false);
    let (f0, f1) = caps.cr4_fixed;
    let cr4 = vmcs::apply_fixed(
        x86_64::registers::control::Cr4::read_raw() | CR4_VMXE,
        f0,
        f1,
        false,
    );
    let rev = caps.basic.revision_id().to_le_bytes();
    let region = &raw mut VMXON_REGION;
    // SAFETY: the fixed bits only force what VMX operation requires of hv's own CR0/CR4
    // (PE, NE, PG, VMXE are already hv's mode); the VMXON region is hv's, used for nothing
    // else, and VMXON is executed once.
    unsafe {
        x86_64::registers::control::Cr0::write_raw(cr0);
        x86_64::registers::control::Cr4::write_raw(cr4);
        core::ptr::copy_nonoverlapping(rev.as_ptr(), region as *mut u8, 4);
        instructions::vmxon(image_paddr(region))
            .map_err(|e| fail(format_args!("VMXON failed: {e:?}")))?;
    }
    // The MSRs the VMCS guest-state area holds go straight to the guest (read-low bitmap at
    // offset 0, read-high at 1024, write-low at 2048, write-high at 3072).
    let bitmap = &raw mut MSR_BITMAP;
    for &m in &[
        crate::hvm::msr::index::SYSENTER_CS,
        crate::hvm::msr::index::SYSENTER_ESP,
        crate::hvm::msr::index::SYSENTER_EIP,
        crate::hvm::msr::index::FS_BASE,
        crate::hvm::msr::index::GS_BASE,
    ] {
        let (base, bit) = if m >= 0xc000_0000 {
            (1024, (m - 0xc000_0000) as usize)
        } else {
            (0, m as usize)
        };
        for off in [base, base + 2048] {
            // SAFETY: hv's own bitmap page, not yet referenced by any VMCS (VMX was off).
            unsafe { (*bitmap).0[off + bit / 8] &= !(1 << (bit % 8)) };
        }
    }
    info!(
        "VMX on: VMCS revision {:#x}, EPT{}, VPID {}, controls pin {:#x} proc {:#x}/{:#x} exit {:#x} entry {:#x}",
        caps.basic.revision_id(),
        if caps.ept_vpid.pages_2m() { " with 2M pages" } else { "" },
        if caps.controls.vpid() { "on" } else { "off" },
        caps.controls.pin,
        caps.controls.primary,
        caps.controls.secondary,
        caps.controls.exit,
        caps.controls.entry
    );
    *vmx = Some(VmxCpu { caps, next_vpid: 1 });
    Ok(())
}

/// EPT tables in frames owned by the domain (freed with its other frames at teardown).
struct EptFrames {
    domid: u16,
}

impl EptMemory for EptFrames {
    fn alloc_table(&mut self) -> Option<Mfn> {
        let mfn = start::FRAMES
            .lock()
            .as_mut()?
            .alloc(0, Owner::Domain(self.domid))
            .ok()?;
        // SAFETY: just allocated, in the direct map, referenced by nothing yet.
        unsafe { core::ptr::write_bytes(phys_to_virt(mfn.paddr()), 0, PAGE_BYTES) };
        Some(mfn)
    }
    fn read_entry(&self, table: Mfn, index: usize) -> u64 {
        // SAFETY: `table` is an EPT table frame of this domain in the direct map and
        // `index` < 512 (the EPT code's contract).
        unsafe {
            (phys_to_virt(table.paddr()) as *const u64)
                .add(index & 511)
                .read()
        }
    }
    fn write_entry(&mut self, table: Mfn, index: usize, value: u64) {
        // SAFETY: as in `read_entry`.
        unsafe {
            (phys_to_virt(table.paddr()) as *mut u64)
                .add(index & 511)
                .write(value)
        }
    }
}

/// Reads guest-physical memory of a domain through its EPT (no guest paging).
#[derive(Clone, Copy)]
struct GuestPhys {
    ept: Ept,
    domid: u16,
}

/// The data of a copy between hv and guest memory, and its direction.
enum Data<'a> {
    /// Into the guest.
    ToGuest(&'a [u8]),
    /// Out of the guest.
    FromGuest(&'a mut [u8]),
}

impl Data<'_> {
    fn len(&self) -> usize {
        match self {
            Data::ToGuest(b) => b.len(),
            Data::FromGuest(b) => b.len(),
        }
    }

    /// Bytes `from..to` of the data, same direction.
    fn part(&mut self, from: usize, to: usize) -> Data<'_> {
        match self {
            Data::ToGuest(b) => Data::ToGuest(&b[from..to]),
            Data::FromGuest(b) => Data::FromGuest(&mut b[from..to]),
        }
    }
}

impl GuestPhys {
    /// Copies `data` to or from guest-physical `gpa`.
    fn copy(&self, gpa: u64, mut data: Data<'_>) -> Result<(), guest_access::Fault> {
        let mem = EptFrames { domid: self.domid };
        let need = match data {
            Data::ToGuest(_) => EptPerm::WRITE,
            Data::FromGuest(_) => EptPerm::READ,
        };
        let len = data.len();
        let mut done = 0;
        while done < len {
            let at = gpa.checked_add(done as u64).ok_or(guest_access::Fault)?;
            let t = self.ept.lookup(&mem, at).ok_or(guest_access::Fault)?;
            if !t.perm.contains(need) {
                return Err(guest_access::Fault);
            }
            let n = (len - done).min((PAGE_SIZE - at % PAGE_SIZE) as usize);
            let host = phys_to_virt(t.maddr);
            // SAFETY: `t.maddr` is a frame the domain's EPT maps (its RAM or shared-info
            // page), in the direct map; the copy stays inside that 4 KiB page.
            unsafe {
                match data.part(done, done + n) {
                    Data::ToGuest(src) => core::ptr::copy_nonoverlapping(src.as_ptr(), host, n),
                    Data::FromGuest(dst) => {
                        core::ptr::copy_nonoverlapping(host as *const u8, dst.as_mut_ptr(), n)
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.copy(gpa, Data::FromGuest(&mut b)).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// An HVM guest's virtual memory for hypercall arguments: translated through its own page
/// tables (walked in guest-physical memory), then through EPT.
///
/// The guest's paging registers are read from the current VMCS when an address is
/// translated, so a hypercall that touches no memory costs no VMREADs for them.
struct HvmGuestMem {
    phys: GuestPhys,
}

impl crate::hvm::guest_walk::GuestPhysRead for GuestPhys {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        GuestPhys::read_u64(self, gpa)
    }
}

impl HvmGuestMem {
    /// The guest-physical address of `gva`, walked by [`crate::hvm::guest_walk`].
    fn translate(&self, gva: u64, access: Access) -> Option<u64> {
        let st = crate::hvm::guest_walk::PagingState {
            cr0: rd(control::CR0_READ_SHADOW),
            cr3: rd(guest::CR3),
            cr4: rd(control::CR4_READ_SHADOW),
            efer: rd(guest::IA32_EFER),
        };
        crate::hvm::guest_walk::walk(&self.phys, &st, gva, access).ok()
    }

    /// Copies `data` to or from guest-virtual `gva`; reads walk as `read` says (a read or an
    /// instruction fetch), copies into the guest as writes.
    fn copy(&self, gva: u64, mut data: Data<'_>, read: Access) -> Result<(), guest_access::Fault> {
        let access = match data {
            Data::ToGuest(_) => Access::Write,
            Data::FromGuest(_) => read,
        };
        let len = data.len();
        let mut done = 0;
        while done < len {
            let va = gva.checked_add(done as u64).ok_or(guest_access::Fault)?;
            let n = (len - done).min((PAGE_SIZE - va % PAGE_SIZE) as usize);
            let gpa = self.translate(va, access).ok_or(guest_access::Fault)?;
            self.phys.copy(gpa, data.part(done, done + n))?;
            done += n;
        }
        Ok(())
    }
}

impl GuestMem for HvmGuestMem {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), guest_access::Fault> {
        self.copy(gva, Data::FromGuest(buf), Access::Read)
    }
    fn write(&mut self, gva: u64, buf: &[u8]) -> Result<(), guest_access::Fault> {
        self.copy(gva, Data::ToGuest(buf), Access::Write)
    }
}

/// One HVM vCPU's hardware state.
struct HvmVcpu {
    /// Physical address of its VMCS.
    vmcs: u64,
    launched: bool,
    gprs: Gprs,
    msrs: HvmMsrs,
    vpid: u16,
    /// hv left interrupt-window exiting on (an upcall waits for the guest to take it).
    window_armed: bool,
}

/// One HVM domain's hardware state.
struct HvmDomain {
    domid: u16,
    ept: Ept,
    uart: Uart16550,
    vcpus: Vec<HvmVcpu>,
}

static DOMAINS: Mutex<Vec<HvmDomain>> = Mutex::new(Vec::new());

/// Each HVM domain's EPT, apart from [`DOMAINS`] (which a running vCPU holds) so that
/// hypercalls can translate another domain's frame numbers.
static EPTS: Mutex<Vec<(u16, Ept)>> = Mutex::new(Vec::new());

/// HVM domain `domid`'s EPT (`None` for a PV domain, or one that is gone).
fn ept_of(domid: u16) -> Option<Ept> {
    EPTS.lock()
        .iter()
        .find(|(d, _)| *d == domid)
        .map(|&(_, e)| e)
}

/// What a domain's frame number means to code that handles frames of any domain (grants).
pub enum FrameNumber {
    /// A PV domain's frame numbers are machine frames.
    Machine,
    /// An HVM domain's guest frame, translated through its EPT (to RAM, or a page
    /// `XENMEM_add_to_physmap` placed).
    Guest(Mfn),
    /// An HVM domain's guest frame with nothing behind it.
    Unbacked,
}

/// Translates frame number `gfn` of domain `domid` (see [`FrameNumber`]).
pub fn frame_number(domid: u16, gfn: u64) -> FrameNumber {
    let Some(ept) = ept_of(domid) else {
        return FrameNumber::Machine;
    };
    let mem = EptFrames { domid };
    match gfn
        .checked_mul(PAGE_SIZE)
        .and_then(|gpa| ept.lookup(&mem, gpa))
    {
        Some(t) => FrameNumber::Guest(Mfn(t.maddr / PAGE_SIZE)),
        None => FrameNumber::Unbacked,
    }
}

/// Why a grant mapping could not be put into (or taken out of) an HVM domain's EPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantPhysmapError {
    /// The domain has no EPT (it is not HVM, or it is gone).
    NotHvm,
    /// The guest-physical address is not page aligned or beyond the guest's address width.
    BadAddress(u64),
    /// No frame for an EPT table.
    NoMemory,
    /// Unmap: the address does not map the grant's frame (the guest moved something over it).
    NotMapped(u64),
}

/// EPT tables of a domain, with new ones from `alloc` (a caller that holds the frame
/// allocator, which [`EptFrames`] would take).
struct TablesFrom<'a> {
    alloc: &'a mut dyn FnMut() -> Option<Mfn>,
}

impl EptMemory for TablesFrom<'_> {
    fn alloc_table(&mut self) -> Option<Mfn> {
        (self.alloc)()
    }
    fn read_entry(&self, table: Mfn, index: usize) -> u64 {
        EptFrames { domid: 0 }.read_entry(table, index)
    }
    fn write_entry(&mut self, table: Mfn, index: usize, value: u64) {
        EptFrames { domid: 0 }.write_entry(table, index, value)
    }
}

/// The EPT of HVM domain `domid` and the guest frame of `gpa` in it.
fn grant_target(domid: u16, gpa: u64) -> Result<(Ept, Gfn), GrantPhysmapError> {
    let ept = ept_of(domid).ok_or(GrantPhysmapError::NotHvm)?;
    if !gpa.is_multiple_of(PAGE_SIZE) || gpa >> crate::hvm::ept::GPA_BITS != 0 {
        return Err(GrantPhysmapError::BadAddress(gpa));
    }
    Ok((ept, Gfn(gpa / PAGE_SIZE)))
}

/// Invalidates `ept`'s cached translations.
fn flush_domain_ept(ept: Ept) {
    if let Some(caps) = VMX.lock().as_ref().map(|v| v.caps) {
        // SAFETY: VMX is on (its capabilities are recorded only once it is).
        unsafe { flush_ept(&caps, ept.eptp()) };
    }
}

/// An HVM domain's `GNTMAP_host_map`: as in Xen, `host_addr` is a guest-physical address,
/// where granted frame `mfn` now appears (read-only if `readonly`, never executable) in
/// place of whatever was there. `alloc` gives zeroed frames of the domain for EPT tables.
pub fn map_grant(
    domid: u16,
    gpa: u64,
    mfn: Mfn,
    readonly: bool,
    alloc: &mut dyn FnMut() -> Option<Mfn>,
) -> Result<(), GrantPhysmapError> {
    let (mut ept, gfn) = grant_target(domid, gpa)?;
    let perm = if readonly {
        EptPerm::READ
    } else {
        EptPerm::READ | EptPerm::WRITE
    };
    ept.map(&mut TablesFrom { alloc }, gfn, mfn, 1, perm)
        .map_err(|_| GrantPhysmapError::NoMemory)?;
    flush_domain_ept(ept);
    Ok(())
}

/// Takes grant `mfn`'s mapping at guest-physical `gpa` out of HVM domain `domid`'s EPT,
/// putting back `restore` (the domain's own RAM frame there, if any) or leaving a hole.
pub fn unmap_grant(
    domid: u16,
    gpa: u64,
    mfn: Mfn,
    restore: Option<Mfn>,
) -> Result<(), GrantPhysmapError> {
    let (mut ept, gfn) = grant_target(domid, gpa)?;
    let mapped = ept
        .lookup(&EptFrames { domid }, gpa)
        .is_some_and(|t| t.maddr / PAGE_SIZE == mfn.0 && t.page_size == PAGE_SIZE);
    if !mapped {
        return Err(GrantPhysmapError::NotMapped(gpa));
    }
    // The page table exists (the grant's leaf is in it): no table is allocated.
    let mut none = || None;
    let mut tables = TablesFrom { alloc: &mut none };
    let result = match restore {
        Some(ram) => ept.map(&mut tables, gfn, ram, 1, EptPerm::RWX),
        None => ept.map(&mut tables, gfn, mfn, 1, EptPerm::empty()),
    };
    result.map_err(|_| GrantPhysmapError::NoMemory)?;
    flush_domain_ept(ept);
    Ok(())
}

/// Hands HVM domain `domid`'s emulated UART to `feed` (serial console input for its receive
/// FIFO); nothing happens if `domid` is not an HVM domain.
pub fn with_uart(domid: u16, feed: impl FnOnce(&mut Uart16550)) {
    if let Some(d) = DOMAINS.lock().iter_mut().find(|d| d.domid == domid) {
        feed(&mut d.uart);
    }
}

fn fail(args: core::fmt::Arguments<'_>) -> String {
    let mut s = String::new();
    let _ = s.write_fmt(args);
    s
}

/// The domain being built: guest frame -> the frame's contents.
struct BuildPages<'a> {
    p2m: &'a [u64],
}

impl GuestPhysMemory for BuildPages<'_> {
    fn page_mut(&mut self, gfn: Gfn) -> Option<&mut [u8; PAGE_BYTES]> {
        let mfn = *self.p2m.get(usize::try_from(gfn.0).ok()?)?;
        if mfn == INVALID_MFN {
            return None;
        }
        // SAFETY: a frame just allocated to the domain being built, in the direct map; the
        // builder holds one page reference at a time and nothing else uses the frame yet.
        Some(unsafe { &mut *(phys_to_virt(mfn * PAGE_SIZE) as *mut [u8; PAGE_BYTES]) })
    }
}

/// Builds PVH domain `id` from its ELF image's `PHYS32_ENTRY` (see [`build_hvm_domain`]).
pub fn build_pvh_domain(
    id: u16,
    spec: &DomainSpec<'_>,
    ring_peer: Option<u16>,
) -> Result<Domain, String> {
    let image = XenImage::parse(spec.kernel).map_err(|e| fail(format_args!("kernel: {e}")))?;
    let kernel = PvhKernel::from_image(&image).map_err(|e| fail(format_args!("{e}")))?;
    let flags = if spec.privileged {
        SIF_PRIVILEGED | SIF_INITDOMAIN
    } else {
        0
    };
    let params = PvhParams {
        flags,
        cmdline: spec.cmdline,
        module: spec.module,
    };
    build_hvm_domain(id, spec, ring_peer, |mem, memmap| {
        let (layout, start) = build_pvh(mem, memmap, &kernel, &params)
            .map_err(|e| fail(format_args!("building: {e}")))?;
        let what = alloc::format!(
            "PVH: entry {:#x}, hvm_start_info {:#x}",
            start.rip,
            layout.start_info
        );
        Ok((start, what))
    })
}

/// Builds HVM domain `id` from a boot sector, started in real mode at 0x7c00 with no BIOS
/// (see [`build_hvm_domain`] and [`build_real_mode`]). It gets no xenstore or console rings:
/// boot code has no PV drivers to use them.
pub fn build_boot_sector_domain(id: u16, spec: &DomainSpec<'_>) -> Result<Domain, String> {
    check_boot_sector(spec.kernel).map_err(|e| fail(format_args!("kernel: {e}")))?;
    if spec.module.is_some() || !spec.cmdline.is_empty() {
        warn!("d{id}: a boot sector gets no command line or module: ignoring them");
    }
    build_hvm_domain(id, spec, None, |mem, memmap| {
        let start = build_real_mode(mem, memmap, spec.kernel)
            .map_err(|e| fail(format_args!("building: {e}")))?;
        let what = alloc::format!(
            "HVM: {}-byte boot sector at {BOOT_SECTOR_ADDR:#x}, real mode",
            spec.kernel.len()
        );
        Ok((start, what))
    })
}

/// Builds HVM domain `id`: its memory (the PC map of [`GuestMemmap::pc`]), EPT and shared-info
/// page, then `load` puts the guest's image in that memory and returns the boot vCPU's state
/// and a description for the log line, and the VMCS is set up from that state. The caller
/// queues the returned domain; on failure every frame taken so far belongs to `id` and the
/// caller's teardown (or the ownership check at the end) returns it.
fn build_hvm_domain(
    id: u16,
    spec: &DomainSpec<'_>,
    ring_peer: Option<u16>,
    load: impl FnOnce(&mut BuildPages<'_>, &GuestMemmap) -> Result<(VcpuStartState, String), String>,
) -> Result<Domain, String> {
    enable()?;
    if spec.vcpus != 1 {
        return Err(fail(format_args!(
            "HVM domains have exactly one vCPU in this version (asked for {})",
            spec.vcpus
        )));
    }
    let nr_pages = spec.memory_kib / 4;
    // A domU with a control domain gets its xenstore and console rings as two special pages
    // (reserved in its memory map, outside its RAM and its p2m, mapped by EPT alone).
    let special = if ring_peer.is_some() { 2 } else { 0 };
    let memmap = GuestMemmap::pc(nr_pages, special).map_err(|e| fail(format_args!("{e}")))?;
    let ram_end = memmap
        .regions()
        .iter()
        .filter(|r| r.kind == RegionKind::Ram)
        .map(|r| r.end)
        .max()
        .unwrap_or(0);
    if ram_end > LOW_RAM_END {
        return Err(fail(format_args!(
            "HVM domains are limited to {} MiB in this version",
            LOW_RAM_END >> 20
        )));
    }
    let owner = Owner::Domain(id);
    let mut p2m = alloc::vec![INVALID_MFN; (ram_end / PAGE_SIZE) as usize];
    let mut ept_mem = EptFrames { domid: id };
    let mut ept = Ept::new(&mut ept_mem).map_err(|e| fail(format_args!("EPT: {e:?}")))?;
    let shared_mfn;
    let mut special_pages = Vec::new();
    {
        let mut frames = start::FRAMES.lock();
        let frames = frames
            .as_mut()
            .ok_or_else(|| String::from("no frame allocator"))?;
        if frames.free_frames() < nr_pages + 8 {
            return Err(fail(format_args!("needs {} pages", nr_pages + 8)));
        }
        for r in memmap.regions().iter().filter(|r| r.backed()) {
            for gfn in r.start / PAGE_SIZE..r.end / PAGE_SIZE {
                let mfn = frames
                    .alloc(0, owner)
                    .map_err(|e| fail(format_args!("allocating memory: {e:?}")))?;
                match (r.kind, p2m.get_mut(gfn as usize)) {
                    (RegionKind::Ram, Some(slot)) => *slot = mfn.0,
                    _ => special_pages.push((gfn, mfn.0)),
                }
            }
        }
        shared_mfn = frames
            .alloc(0, owner)
            .map_err(|e| fail(format_args!("allocating shared info: {e:?}")))?
            .0;
    }
    let ram = p2m
        .iter()
        .enumerate()
        .filter(|(_, &m)| m != INVALID_MFN)
        .map(|(gfn, &mfn)| (gfn as u64, mfn));
    for (gfn, mfn) in ram.chain(special_pages.iter().copied()) {
        // SAFETY: a frame just allocated to this domain, in the direct map; scrubbed so a
        // previous owner's data cannot leak.
        unsafe { core::ptr::write_bytes(phys_to_virt(mfn * PAGE_SIZE), 0, PAGE_BYTES) };
        start::set_m2p(mfn, gfn);
        ept.map(&mut ept_mem, Gfn(gfn), Mfn(mfn), 1, EptPerm::RWX)
            .map_err(|e| fail(format_args!("EPT: {e:?}")))?;
    }
    // SAFETY: the shared-info frame belongs to this domain alone and lives as long as it.
    let shared: &'static mut SharedInfo = unsafe {
        let p = phys_to_virt(shared_mfn * PAGE_SIZE);
        core::ptr::write_bytes(p, 0, PAGE_BYTES);
        &mut *(p as *mut SharedInfo)
    };
    for v in shared.vcpu_info.iter_mut() {
        v.evtchn_upcall_mask = 1;
    }
    let (start_state, what) = load(&mut BuildPages { p2m: &p2m }, &memmap)?;

    let vmcs_mfn = EptFrames { domid: id }
        .alloc_table()
        .ok_or_else(|| String::from("no frame for the VMCS"))?;
    let (caps, vpid) = {
        let mut vmx = VMX.lock();
        let v = vmx.as_mut().ok_or_else(|| String::from("VMX is off"))?;
        let vpid = v.next_vpid;
        v.next_vpid = v.next_vpid.checked_add(1).unwrap_or(1);
        (v.caps, vpid)
    };
    let vmcs = vmcs_mfn.paddr();
    let rev = caps.basic.revision_id().to_le_bytes();
    // SAFETY: the VMCS frame was just allocated and zeroed; its first word is the revision.
    unsafe { core::ptr::copy_nonoverlapping(rev.as_ptr(), phys_to_virt(vmcs), 4) };
    let vmcs_params = VmcsParams {
        start: &start_state,
        eptp: ept.eptp(),
        vpid,
        bitmaps: Bitmaps {
            io_a: image_paddr(&raw const IO_BITMAPS),
            io_b: image_paddr(&raw const IO_BITMAPS) + PAGE_SIZE,
            msr: image_paddr(&raw const MSR_BITMAP),
        },
        host_rip: hv_vmx_exit as *const () as u64,
    };
    // SAFETY: VMX is on; the VMCS region is this domain's fresh frame with the revision id;
    // the bitmaps are hv's statics and the EPT lives as long as the VMCS.
    unsafe {
        vmclear(vmcs).map_err(|e| fail(format_args!("VMCLEAR: {e:?}")))?;
        vmptrld(vmcs).map_err(|e| fail(format_args!("VMPTRLD: {e:?}")))?;
        CURRENT_VMCS.store(vmcs, Ordering::Relaxed);
        vmcs_setup::init_vmcs(&caps, &vmcs_params)
            .map_err(|e| fail(format_args!("writing the VMCS: {e:?}")))?;
        flush_ept(&caps, ept.eptp());
    }

    let mut evtchn = EvtchnTable::new(1);
    let rings = match (ring_peer, special_pages.as_slice()) {
        (Some(peer), &[(store, _), (console, _)]) => {
            Some(super::pv::ring_ports(&mut evtchn, peer, store, console).map_err(|e| e.0)?)
        }
        _ => None,
    };
    let mut dom = Domain {
        id,
        name: String::from(spec.name),
        privileged: spec.privileged,
        state: DomainState::Running,
        p2m,
        tot_pages: nr_pages,
        max_pages: spec.max_memory_kib / 4,
        shared_info_mfn: shared_mfn,
        shared,
        vcpus: Vec::new(),
        evtchn,
        console_line: Vec::new(),
        rings,
        hvm: Some(HvmParams::default()),
        console_in: InputQueue::new(Sink::for_domain(spec.privileged, true, rings)),
    };
    dom.vcpus.push(Vcpu::new(0, crate::regs::Regs::default()));
    super::gnttab::add_domain(id, spec.privileged)
        .map_err(|e| fail(format_args!("creating the grant table: {e:?}")))?;
    if let (Some(peer), Some(r)) = (ring_peer, rings) {
        super::pv::grant_rings(id, peer, r).map_err(|e| e.0)?;
    }
    EPTS.lock().push((id, ept));
    DOMAINS.lock().push(HvmDomain {
        domid: id,
        ept,
        uart: Uart16550::new(),
        vcpus: alloc::vec![HvmVcpu {
            vmcs,
            launched: false,
            gprs: start_state.gprs,
            msrs: HvmMsrs::new(guest_cr4_valid(&caps)),
            vpid,
            window_armed: false,
        }],
    });
    info!(
        "d{id}: built {what}, {nr_pages} pages, EPTP {:#x}",
        ept.eptp()
    );
    Ok(dom)
}

/// Invalidates the EPT-derived translations of `eptp`.
///
/// # Safety
/// VMX must be on.
unsafe fn flush_ept(caps: &Caps, eptp: u64) {
    let kind = if caps.ept_vpid.invept_single_context() {
        InveptType::SingleContext
    } else {
        InveptType::AllContext
    };
    if caps.ept_vpid.invept() {
        // SAFETY: VMX is on and INVEPT of this type is supported.
        if let Err(e) = unsafe { invept(kind, eptp) } {
            warn!("INVEPT failed: {e:?}");
        }
    }
}

/// vCPU 0's registers of HVM domain `domid`, for a crash report (`None` for a PV domain or
/// if its VMCS cannot be made current).
pub fn guest_registers(domid: u16) -> Option<crate::regs::Regs> {
    let doms = DOMAINS.lock();
    let vcpu = doms.iter().find(|d| d.domid == domid)?.vcpus.first()?;
    if CURRENT_VMCS.load(Ordering::Relaxed) != vcpu.vmcs {
        // SAFETY: VMX is on (the domain exists) and the VMCS is this vCPU's region.
        unsafe { vmptrld(vcpu.vmcs) }.ok()?;
        CURRENT_VMCS.store(vcpu.vmcs, Ordering::Relaxed);
    }
    let g = |r| vcpu.gprs.get(r);
    Some(crate::regs::Regs {
        rax: g(Gpr::Rax),
        rbx: g(Gpr::Rbx),
        rcx: g(Gpr::Rcx),
        rdx: g(Gpr::Rdx),
        rsi: g(Gpr::Rsi),
        rdi: g(Gpr::Rdi),
        rbp: g(Gpr::Rbp),
        r8: g(Gpr::R8),
        r9: g(Gpr::R9),
        r10: g(Gpr::R10),
        r11: g(Gpr::R11),
        r12: g(Gpr::R12),
        r13: g(Gpr::R13),
        r14: g(Gpr::R14),
        r15: g(Gpr::R15),
        rsp: g(Gpr::Rsp),
        rip: rd(guest::RIP),
        rflags: rd(guest::RFLAGS),
        cs: rd(guest::CS_SELECTOR).into(),
        ss: rd(guest::SS_SELECTOR).into(),
        ..crate::regs::Regs::default()
    })
}

/// Releases domain `domid`'s VMX state (VMCLEAR of its VMCSes, retiring its VPIDs) before its
/// frames are freed. Does nothing for a PV domain.
pub fn destroy_domain(domid: u16) {
    let mut doms = DOMAINS.lock();
    let Some(i) = doms.iter().position(|d| d.domid == domid) else {
        return;
    };
    let d = doms.swap_remove(i);
    EPTS.lock().retain(|(domid_, _)| *domid_ != domid);
    let vpid_on = VMX.lock().as_ref().is_some_and(|v| v.caps.controls.vpid());
    for v in &d.vcpus {
        // SAFETY: VMX is on (the domain was built), and the VMCS is this vCPU's region.
        if let Err(e) = unsafe { vmclear(v.vmcs) } {
            warn!("d{domid}: VMCLEAR failed: {e:?}");
        }
        let _ = CURRENT_VMCS.compare_exchange(v.vmcs, 0, Ordering::Relaxed, Ordering::Relaxed);
        if vpid_on {
            // SAFETY: VPIDs are on only with single-context INVVPID (read_caps).
            let _ = unsafe { invvpid(InvvpidType::SingleContext, v.vpid) };
        }
    }
}

/// Reads a field of the current VMCS; 0 if it cannot be read.
fn rd<W: vmcs::Width>(f: vmcs::Field<W>) -> W::Value
where
    W::Value: Default,
{
    // SAFETY: only called while a vCPU's VMCS is current (inside `run_vcpu`, or after
    // `guest_registers` made one current); VMREAD without one just fails.
    unsafe { vmread(f) }.unwrap_or_default()
}

/// Writes a field of the current VMCS (failures are logged: they mean a bug in hv's field
/// tables, and the next entry will report the state).
fn wr<W: vmcs::Width>(f: vmcs::Field<W>, v: W::Value) {
    // SAFETY: only called while a vCPU's VMCS is current (inside `run_vcpu`), with values
    // the exit handlers derived and checked.
    if let Err(e) = unsafe { vmwrite(f, v) } {
        warn!("VMWRITE {:#x} failed: {e:?}", f.encoding());
    }
}

fn cpu_mode() -> CpuMode {
    let cs = rd(guest::CS_AR);
    CpuMode::from_state(
        rd(control::CR0_READ_SHADOW),
        rd(guest::IA32_EFER),
        SegmentAttrs(cs as u16),
    )
}

fn inject(event: Event) {
    let (info, code) = InterruptionInfo::for_event(event);
    wr(control::ENTRY_INTR_INFO, info.encode());
    if let Some(c) = code {
        wr(control::ENTRY_EXCEPTION_ERROR_CODE, c);
    }
}

fn skip_instruction() {
    let len = u64::from(rd(exit_info::EXIT_INSTRUCTION_LEN));
    wr(guest::RIP, rd(guest::RIP).wrapping_add(len));
    // Retiring the instruction ends STI / MOV SS blocking.
    let blocking = rd(guest::INTERRUPTIBILITY);
    if blocking & 3 != 0 {
        wr(guest::INTERRUPTIBILITY, blocking & !3);
    }
}

/// Logs the guest-state area and the controls after a failed VM entry.
fn dump_vmcs(domid: u16) {
    let mut line = String::new();
    for f in vmcs::guest::ALL.iter().chain(vmcs::control::ALL) {
        // SAFETY: a VMCS is current; VMREAD of a field the CPU lacks just fails.
        let Ok(v) = (unsafe { instructions::vmread_any(f.encoding) }) else {
            continue;
        };
        let _ = write!(line, " {}={v:#x}", f.name);
        if line.len() > 100 {
            error!("d{domid}:{line}");
            line.clear();
        }
    }
    if !line.is_empty() {
        error!("d{domid}:{line}");
    }
}

/// Runs vCPU `v` of HVM domain `domains[d]` until an exit needs the scheduler; returns what
/// the run loop does next.
pub fn run_vcpu(domains: &mut [Domain], d: usize, v: usize, hw: &mut dyn Platform) -> Outcome {
    let Some(domid) = domains.get(d).map(|x| x.id) else {
        return Outcome::Crash("no such domain");
    };
    let Some(caps) = VMX.lock().as_ref().map(|x| x.caps) else {
        return Outcome::Crash("VMX is off");
    };
    let mut doms = DOMAINS.lock();
    let Some(hd) = doms.iter_mut().find(|x| x.domid == domid) else {
        return Outcome::Crash("no HVM state");
    };
    let Some(vcpu) = hd.vcpus.get_mut(v) else {
        return Outcome::Crash("no HVM vCPU state");
    };
    if CURRENT_VMCS.load(Ordering::Relaxed) != vcpu.vmcs {
        // SAFETY: VMX is on and the VMCS is this vCPU's initialised region.
        if let Err(e) = unsafe { vmptrld(vcpu.vmcs) } {
            error!("d{domid}: VMPTRLD failed: {e:?}");
            return Outcome::Crash("VMPTRLD failed");
        }
        CURRENT_VMCS.store(vcpu.vmcs, Ordering::Relaxed);
    }
    let gdt = vmcs_setup::sgdt();
    let idt = vmcs_setup::sidt();
    // CR3 and the FS/GS bases stay as they are until this returns: exits are handled here
    // without switching address spaces.
    // SAFETY: this vCPU's VMCS is current.
    if let Err(e) = unsafe { vmcs_setup::refresh_host_state() } {
        error!("d{domid}: host state: {e:?}");
        return Outcome::Crash("cannot write the host state");
    }
    loop {
        wr(guest::RSP, vcpu.gprs.get(Gpr::Rsp));
        if let Some(shift) = caps.preemption_shift {
            // Until just after the next tick (see `read_caps`), whose exit then finds it
            // pending; soon if one is pending already.
            let margin = super::apic::tick_period_tsc() / PREEMPTION_MARGIN_PER_TICK;
            let count = hvm::preemption_timer_value(super::apic::tsc_until_tick() + margin, shift);
            wr(guest::PREEMPTION_TIMER, count);
        }
        if let Some(dom) = domains.get(d) {
            offer_upcall(dom, &mut vcpu.window_armed);
        }
        // SAFETY: the VMCS is current and complete (init_vmcs); hv_vmx_enter saves hv's
        // callee-saved registers and the VM exit returns through hv_vmx_exit onto this stack
        // with them restored; the GPR array outlives the call.
        let r = unsafe { hv_vmx_enter(vcpu.gprs.0.as_mut_ptr(), u64::from(vcpu.launched)) };
        // SAFETY: the tables hv ran with a moment ago.
        unsafe { vmcs_setup::restore_tables(gdt, idt) };
        if r != 0 {
            let err = if r == 1 {
                VmFail::Invalid
            } else {
                // SAFETY: VMfailValid: the VMCS is current.
                let raw = unsafe { vmread(exit_info::VM_INSTRUCTION_ERROR) }.unwrap_or(0);
                VmFail::Valid(crate::hvm::exit::VmInstructionError::try_from(raw))
            };
            match err {
                VmFail::Valid(Ok(e)) => {
                    error!(
                        "d{domid}: VM entry failed: {} ({})",
                        e.description(),
                        e as u32
                    )
                }
                other => error!("d{domid}: VM entry failed: {other:?}"),
            }
            dump_vmcs(domid);
            return Outcome::Crash("VM entry failed");
        }
        vcpu.launched = true;
        vcpu.gprs.set(Gpr::Rsp, rd(guest::RSP));
        redeliver_interrupted_event();
        let exit = decode_exit(ExitReason(rd(exit_info::EXIT_REASON)));
        let Some(dom) = domains.get_mut(d) else {
            return Outcome::Crash("no such domain");
        };
        let step = handle_exit(
            exit,
            hd_parts(&mut hd.uart, hd.ept, domid),
            vcpu,
            dom,
            &caps,
        );
        match step {
            Step::Resume => {}
            Step::Tick => {
                let Some(sched) = dom.vcpus.get_mut(v) else {
                    return Outcome::Crash("no such vCPU");
                };
                let slice = &mut sched.slice_left;
                *slice = slice.saturating_sub(1);
                if *slice == 0 {
                    return Outcome::Yield;
                }
            }
            Step::Hypercall => {
                let out = hypercall_exit(domains, d, v, vcpu, hd.ept, hw);
                if out != Outcome::Continue {
                    return out;
                }
            }
            Step::Out(o) => return o,
        }
    }
}

/// An exit that interrupted the delivery of an event (the guest's own exception or `int n`,
/// or one hv injected) leaves it in the IDT-vectoring field; it is queued again so the guest
/// does not lose it (SDM Vol. 3C 27.2.4, 28.2.3). The exit handler may replace it (a crash
/// or its own injection), which is what the hardware would have done next anyway.
fn redeliver_interrupted_event() {
    let raw = rd(exit_info::IDT_VECTORING_INFO);
    let Some(info) = InterruptionInfo::decode(raw) else {
        return;
    };
    wr(control::ENTRY_INTR_INFO, info.encode());
    if info.has_error_code {
        wr(
            control::ENTRY_EXCEPTION_ERROR_CODE,
            rd(exit_info::IDT_VECTORING_ERROR_CODE),
        );
    }
    if matches!(
        info.kind,
        InterruptionType::SoftwareInterrupt
            | InterruptionType::PrivilegedSoftwareException
            | InterruptionType::SoftwareException
    ) {
        wr(
            control::ENTRY_INSTRUCTION_LEN,
            rd(exit_info::EXIT_INSTRUCTION_LEN),
        );
    }
}

/// Raises the domain's event-channel callback vector if an upcall is pending and the guest
/// can take it now, or asks for an interrupt-window exit until it can
/// ([`hvm::upcall_action`]).
///
/// `window_armed` is whether hv left interrupt-window exiting on: with nothing pending and
/// no window to close, the entry needs no VMCS access at all (the common hypercall return).
fn offer_upcall(dom: &Domain, window_armed: &mut bool) {
    let vector = dom.hvm.and_then(|h| h.callback_vector());
    let pending = dom
        .shared
        .vcpu_info
        .first()
        .is_some_and(|i| i.evtchn_upcall_pending != 0);
    if !(*window_armed || pending && vector.is_some()) {
        return;
    }
    let injecting = InterruptionInfo::decode(rd(control::ENTRY_INTR_INFO)).is_some();
    let action = hvm::upcall_action(
        vector,
        pending,
        rd(guest::RFLAGS),
        rd(guest::INTERRUPTIBILITY),
        injecting,
    );
    let window = PrimaryProcBased::INTERRUPT_WINDOW_EXITING.bits();
    let procs = rd(control::PRIMARY_PROC_BASED);
    let want = match action {
        hvm::UpcallAction::Inject(v) => {
            inject(Event::Interrupt(v));
            false
        }
        hvm::UpcallAction::Wait => true,
        hvm::UpcallAction::Nothing => false,
    };
    let new = if want {
        procs | window
    } else {
        procs & !window
    };
    if new != procs {
        wr(control::PRIMARY_PROC_BASED, new);
    }
    *window_armed = want;
}

/// The parts of the domain's HVM state the exit handlers use.
struct DomParts<'a> {
    uart: &'a mut Uart16550,
    phys: GuestPhys,
}

fn hd_parts(uart: &mut Uart16550, ept: Ept, domid: u16) -> DomParts<'_> {
    DomParts {
        uart,
        phys: GuestPhys { ept, domid },
    }
}

/// What the loop does after an exit.
enum Step {
    /// Enter the guest again.
    Resume,
    /// hv's timer ticked: account the slice.
    Tick,
    /// A `vmcall`.
    Hypercall,
    /// Back to the scheduler.
    Out(Outcome),
}

/// The vendor-neutral exit for a VMX exit reason (its qualification is read only for the
/// reasons that have one).
fn decode_exit(reason: ExitReason) -> Exit {
    let qual = || rd(exit_info::EXIT_QUALIFICATION);
    if reason.entry_failure() {
        return match EntryFailure::decode(reason, qual()) {
            Some(f) => Exit::EntryFailed(f),
            None => Exit::Unhandled(reason.0),
        };
    }
    match reason.basic() {
        Ok(BasicExitReason::ExceptionOrNmi) => {
            match InterruptionInfo::decode(rd(exit_info::EXIT_INTR_INFO)) {
                Some(i) if i.kind == InterruptionType::Nmi => Exit::ExternalInterrupt,
                Some(i) => Exit::Exception {
                    vector: i.vector,
                    error_code: i
                        .has_error_code
                        .then(|| rd(exit_info::EXIT_INTR_ERROR_CODE)),
                },
                None => Exit::Unhandled(reason.0),
            }
        }
        Ok(BasicExitReason::ExternalInterrupt) => Exit::ExternalInterrupt,
        Ok(BasicExitReason::PreemptionTimer) => Exit::Preempted,
        Ok(BasicExitReason::InterruptWindow) => Exit::InterruptWindow,
        Ok(BasicExitReason::TripleFault) => Exit::TripleFault,
        Ok(BasicExitReason::Init) => Exit::Init,
        Ok(BasicExitReason::Cpuid) => Exit::Cpuid,
        Ok(BasicExitReason::Hlt) => Exit::Hlt,
        Ok(BasicExitReason::Vmcall) => Exit::Hypercall,
        Ok(r) if r.is_hidden_instruction() => Exit::HiddenInstruction,
        Ok(BasicExitReason::Rdmsr) => Exit::Rdmsr,
        Ok(BasicExitReason::Wrmsr) => Exit::Wrmsr,
        Ok(BasicExitReason::IoInstruction) => match IoQualification::decode(qual()) {
            Ok(io) => Exit::Io(io),
            Err(_) => Exit::Unhandled(reason.0),
        },
        Ok(BasicExitReason::CrAccess) => {
            Exit::CrAccess(crate::hvm::exit::CrQualification::decode(qual()))
        }
        Ok(BasicExitReason::EptViolation) => Exit::GpaFault {
            gpa: rd(exit_info::GUEST_PHYSICAL_ADDR),
            access: EptViolation::decode(qual()).access(),
        },
        _ => Exit::Unhandled(reason.0),
    }
}

fn crash_with(domid: u16, exit: &Exit, why: &'static str) -> Step {
    error!(
        "d{domid}: {why}: {exit:?} at rip {:#x} (cr0 {:#x} efer {:#x})",
        rd(guest::RIP),
        rd(control::CR0_READ_SHADOW),
        rd(guest::IA32_EFER)
    );
    Step::Out(Outcome::Crash(why))
}

/// One handler per exit.
fn handle_exit(
    exit: Exit,
    hd: DomParts<'_>,
    vcpu: &mut HvmVcpu,
    dom: &mut Domain,
    caps: &Caps,
) -> Step {
    let domid = dom.id;
    match exit {
        Exit::ExternalInterrupt | Exit::Preempted => {
            // The interrupt is still pending at the local APIC: let hv's handler take it.
            let before = traps::TIMER_TICKS.load(Ordering::Relaxed);
            x86_64::instructions::interrupts::enable();
            x86_64::instructions::nop();
            x86_64::instructions::interrupts::disable();
            if traps::TIMER_TICKS.load(Ordering::Relaxed) != before {
                Step::Tick
            } else {
                Step::Resume
            }
        }
        Exit::InterruptWindow => Step::Resume,
        Exit::Cpuid => {
            let g = &mut vcpu.gprs;
            let (leaf, sub) = (g.get(Gpr::Rax) as u32, g.get(Gpr::Rcx) as u32);
            let r = cpu::cpuid(leaf, sub);
            let out = hvm::cpuid::hvm_cpuid(
                leaf,
                sub,
                [r.eax, r.ebx, r.ecx, r.edx],
                hvm::cpuid::CpuidConfig::default(),
                hvm::cpuid::CpuidContext { vcpu_id: 0, domid },
            );
            for (reg, val) in [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx]
                .into_iter()
                .zip(out)
            {
                g.set(reg, u64::from(val));
            }
            skip_instruction();
            Step::Resume
        }
        Exit::Hlt => {
            skip_instruction();
            if rd(guest::RFLAGS) & RFLAGS_IF == 0 {
                // Nothing can wake it (hv sends HVM guests no NMI or INIT): as in Xen, a vCPU
                // halted with interrupts off is down, and a domain with every vCPU down
                // powers off.
                info!("d{domid}: vCPU 0 halted with interrupts off: powering the domain off");
                return Step::Out(Outcome::Shutdown(ShutdownReason::Poweroff));
            }
            match dom.vcpus.first_mut() {
                Some(v) => {
                    v.state = VcpuState::Blocked;
                    Step::Out(Outcome::Block)
                }
                None => Step::Out(Outcome::Crash("no such vCPU")),
            }
        }
        Exit::Hypercall => Step::Hypercall,
        Exit::HiddenInstruction => {
            inject(Event::UD);
            Step::Resume
        }
        Exit::Rdmsr => {
            let index = vcpu.gprs.get(Gpr::Rcx) as u32;
            match vcpu.msrs.rdmsr(index) {
                Ok(value) => {
                    vcpu.gprs.set(Gpr::Rax, value & 0xffff_ffff);
                    vcpu.gprs.set(Gpr::Rdx, value >> 32);
                    skip_instruction();
                }
                Err(_) => inject(Event::GP0),
            }
            Step::Resume
        }
        Exit::Wrmsr => {
            let g = &vcpu.gprs;
            let index = g.get(Gpr::Rcx) as u32;
            let value = (g.get(Gpr::Rdx) << 32) | (g.get(Gpr::Rax) & 0xffff_ffff);
            match vcpu.msrs.wrmsr(index, value, rd(control::CR0_READ_SHADOW)) {
                Ok(MsrWrite::Done) => {
                    wr(guest::IA32_EFER, vcpu.msrs.efer());
                    skip_instruction();
                }
                Ok(MsrWrite::HypercallPage(gfn)) => {
                    let mut page = [0u8; PAGE_BYTES];
                    fill_hypercall_page(&mut page, HypercallInsn::Vmcall);
                    if hd.phys.copy(gfn.gpa(), Data::ToGuest(&page)).is_err() {
                        return crash_with(domid, &exit, "hypercall page outside RAM");
                    }
                    skip_instruction();
                }
                Err(_) => inject(Event::GP0),
            }
            Step::Resume
        }
        Exit::Io(io) if io.string => string_io(&io, hd, vcpu, dom),
        Exit::Io(io) => {
            let mask = match io.size {
                1 => 0xff,
                2 => 0xffff,
                _ => 0xffff_ffff,
            };
            let rax = vcpu.gprs.get(Gpr::Rax);
            match io.direction {
                Direction::Write => port_out(hd.uart, dom, io.port, rax as u8),
                Direction::Read => {
                    let value = port_in(hd.uart, io.port);
                    let new = if io.size == 4 {
                        value & mask
                    } else {
                        (rax & !mask) | (value & mask)
                    };
                    vcpu.gprs.set(Gpr::Rax, new);
                }
            }
            skip_instruction();
            Step::Resume
        }
        Exit::CrAccess(q) => cr_access(q, vcpu, hd.phys, caps, domid, &exit),
        Exit::GpaFault { gpa, access } => {
            // MMIO: the legacy VGA/ROM hole and the hole below 4 GiB read as absent devices.
            let mmio =
                (0xa_0000..0x10_0000).contains(&gpa) || (LOW_RAM_END..1 << 32).contains(&gpa);
            if !mmio || access.fetch {
                return crash_with(domid, &exit, "access outside the guest's memory");
            }
            let mut bytes = [0u8; hvm::mmio::MAX_INSN_LEN];
            let n = fetch_instruction(hd.phys, &mut bytes);
            let mode = cpu_mode();
            match hvm::mmio::decode(&bytes[..n], mode) {
                Ok(insn) => {
                    if insn.direction() == Direction::Read
                        && !insn.complete_load(&mut vcpu.gprs, u64::MAX)
                    {
                        return crash_with(domid, &exit, "MMIO load not completed");
                    }
                    wr(guest::RIP, rd(guest::RIP).wrapping_add(u64::from(insn.len)));
                    Step::Resume
                }
                Err(_) => crash_with(domid, &exit, "MMIO instruction not emulated"),
            }
        }
        Exit::TripleFault => crash_with(domid, &exit, "triple fault"),
        Exit::Init => crash_with(domid, &exit, "INIT"),
        Exit::EntryFailed(f) => {
            error!(
                "d{domid}: VM entry failed: {f:?} (exit qualification {:#x})",
                rd(exit_info::EXIT_QUALIFICATION)
            );
            dump_vmcs(domid);
            Step::Out(Outcome::Crash("VM entry failed"))
        }
        Exit::Exception { .. } => crash_with(domid, &exit, "unexpected exception exit"),
        Exit::Unhandled(_) => crash_with(domid, &exit, "unhandled VM exit"),
    }
}

/// A guest's `out` of `byte` (the low byte of the value) to `port`: the emulated COM1 and
/// port 0xe9 print; other ports ignore writes.
fn port_out(uart: &mut Uart16550, dom: &mut Domain, port: u16, byte: u8) {
    let out = match port {
        p if (COM1_BASE..COM1_BASE + 8).contains(&p) => uart.write(p - COM1_BASE, byte),
        0xe9 => Some(byte),
        _ => None,
    };
    if let Some(b) = out {
        let domid = dom.id;
        dom.console_write(&[b], |line| console::guest_line(Some(domid), line));
    }
}

/// A guest's `in` from `port`: COM1's registers, 0xe9 (Bochs's and QEMU's answer), else
/// all ones (no device).
fn port_in(uart: &mut Uart16550, port: u16) -> u64 {
    match port {
        p if (COM1_BASE..COM1_BASE + 8).contains(&p) => u64::from(uart.read(p - COM1_BASE)),
        0xe9 => 0xe9,
        _ => u64::MAX,
    }
}

/// `ins` / `outs`, one chunk per exit ([`hvm::string_io`]): elements go between guest memory
/// (through its paging, one copy per chunk) and the port; a chunk that cannot be read or
/// written crashes the domain (hv does not inject the #PF the guest would take).
fn string_io(io: &IoQualification, hd: DomParts<'_>, vcpu: &mut HvmVcpu, dom: &mut Domain) -> Step {
    let outs = io.direction == Direction::Write;
    let index_reg = if outs { Gpr::Rsi } else { Gpr::Rdi };
    let down = rd(guest::RFLAGS) & RFLAGS_DF != 0;
    let linear = rd(exit_info::GUEST_LINEAR_ADDR);
    let c = hvm::string_io::chunk(
        io.size,
        io.rep,
        vcpu.gprs.get(Gpr::Rcx),
        vcpu.gprs.get(index_reg),
        down,
        linear,
        cpu_mode(),
    );
    let mem = HvmGuestMem { phys: hd.phys };
    let size = u64::from(io.size.clamp(1, 4));
    // The chunk lies in one page (or is one element): one copy for all its elements, which
    // sit at `first..first + elements * size` (counting down, `linear` is the last of them).
    let bytes = c.elements * size;
    let first = if down {
        linear.wrapping_sub(bytes.saturating_sub(size))
    } else {
        linear
    };
    let mut buf = [0u8; (hvm::string_io::MAX_ELEMENTS * 4) as usize];
    let buf = &mut buf[..bytes as usize];
    let offset = |i: u64| {
        let at = hvm::string_io::element_address(linear, i, io.size, down);
        at.wrapping_sub(first) as usize..(at.wrapping_sub(first) + size) as usize
    };
    let moved = if outs {
        mem.copy(first, Data::FromGuest(buf), Access::Read)
            .map(|()| {
                for i in 0..c.elements {
                    port_out(hd.uart, dom, io.port, buf[offset(i)][0]);
                }
            })
    } else {
        for i in 0..c.elements {
            let value = (port_in(hd.uart, io.port) as u32).to_le_bytes();
            buf[offset(i)].copy_from_slice(&value[..size as usize]);
        }
        mem.copy(first, Data::ToGuest(buf), Access::Write)
    };
    if moved.is_err() {
        return crash_with(dom.id, &Exit::Io(*io), "string I/O to unmapped memory");
    }
    vcpu.gprs.set(index_reg, c.index_after);
    vcpu.gprs.set(Gpr::Rcx, c.rcx_after);
    if c.retire {
        skip_instruction();
    }
    Step::Resume
}

/// Copies the bytes at the guest's CS:RIP (through its paging), as many as are readable.
fn fetch_instruction(phys: GuestPhys, buf: &mut [u8; hvm::mmio::MAX_INSN_LEN]) -> usize {
    let mem = HvmGuestMem { phys };
    let linear = rd(guest::CS_BASE).wrapping_add(rd(guest::RIP));
    (0..=buf.len())
        .rev()
        .find(|&n| {
            mem.copy(linear, Data::FromGuest(&mut buf[..n]), Access::Fetch)
                .is_ok()
        })
        .unwrap_or(0)
}

/// Where the VMX-preemption timer bounds an HVM guest's run, it ends at the latest this
/// fraction of a tick after the tick is due.
const PREEMPTION_MARGIN_PER_TICK: u64 = 64;

/// The CR4 bits a guest may set: those its CPUID view announces (the same policy and
/// configuration as its CPUID exits) that this processor also allows in VMX operation (CR4
/// fixed-1; a bit outside it would be dropped silently from the real CR4).
fn guest_cr4_valid(caps: &Caps) -> u64 {
    let host = |leaf, subleaf| {
        let r = cpu::cpuid(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    };
    hvm::cpuid::guest_cr4_valid_bits(host, hvm::cpuid::CpuidConfig::default()) & caps.cr4_fixed.1
}

/// A control-register access (CR0 and CR4 are fully host-owned, see `vmcs_setup`).
fn cr_access(
    q: crate::hvm::exit::CrQualification,
    vcpu: &mut HvmVcpu,
    phys: GuestPhys,
    caps: &Caps,
    domid: u16,
    exit: &Exit,
) -> Step {
    let cr0 = rd(control::CR0_READ_SHADOW);
    let new_cr0 = match (q.cr, q.access) {
        (0, CrAccessType::MovToCr(r)) => Some(vcpu.gprs.get(r)),
        (_, CrAccessType::Clts) => Some(cr0 & !CR0_TS),
        (_, CrAccessType::Lmsw { source, .. }) => {
            Some((cr0 & !0xe) | (u64::from(source) & 0xf) | (cr0 & CR0_PE))
        }
        _ => None,
    };
    if let Some(new) = new_cr0 {
        let cr4 = rd(control::CR4_READ_SHADOW);
        if vcpu.msrs.set_cr0(cr0, new, cr4).is_err() {
            inject(Event::GP0);
            return Step::Resume;
        }
        let (f0, f1) = caps.cr0_fixed;
        wr(control::CR0_READ_SHADOW, new);
        wr(guest::CR0, vmcs::apply_fixed(new, f0, f1, true));
        let efer = vcpu.msrs.efer();
        wr(guest::IA32_EFER, efer);
        let entry = rd(control::ENTRY_CONTROLS) & !EntryControls::IA32E_MODE_GUEST.bits();
        let lma = if efer & EFER_LMA != 0 {
            EntryControls::IA32E_MODE_GUEST.bits()
        } else {
            0
        };
        wr(control::ENTRY_CONTROLS, entry | lma);
        skip_instruction();
        paging_changed(phys, caps, vcpu.vpid);
        return Step::Resume;
    }
    match (q.cr, q.access) {
        (4, CrAccessType::MovToCr(r)) => {
            let new = vcpu.gprs.get(r);
            let old = rd(control::CR4_READ_SHADOW);
            if vcpu.msrs.check_cr4(old, new, rd(guest::CR3)).is_err() {
                inject(Event::GP0);
                return Step::Resume;
            }
            let (f0, f1) = caps.cr4_fixed;
            wr(control::CR4_READ_SHADOW, new);
            wr(guest::CR4, vmcs::apply_fixed(new, f0, f1, false));
        }
        (3, CrAccessType::MovToCr(r)) => wr(guest::CR3, vcpu.gprs.get(r)),
        (3, CrAccessType::MovFromCr(r)) => vcpu.gprs.set(r, rd(guest::CR3)),
        (8, CrAccessType::MovToCr(_)) => {}
        (8, CrAccessType::MovFromCr(r)) => vcpu.gprs.set(r, 0),
        _ => return crash_with(domid, exit, "control-register access not emulated"),
    }
    skip_instruction();
    if matches!((q.cr, q.access), (3 | 4, CrAccessType::MovToCr(_))) {
        paging_changed(phys, caps, vcpu.vpid);
    }
    Step::Resume
}

/// After an emulated write of CR0, CR3 or CR4: the guest's own `mov` would have flushed its
/// TLB, but VM entry does not flush translations tagged with the vCPU's VPID, so hv does
/// (single-context INVVPID); then the PAE PDPTEs are reloaded ([`load_pdptes`]).
fn paging_changed(phys: GuestPhys, caps: &Caps, vpid: u16) {
    if caps.controls.vpid() {
        // SAFETY: VMX is on; VPIDs are enabled only with single-context INVVPID (read_caps).
        if let Err(e) = unsafe { invvpid(InvvpidType::SingleContext, vpid) } {
            warn!("INVVPID failed: {e:?}");
        }
    }
    load_pdptes(phys);
}

/// After the guest changed CR0, CR3 or CR4: in PAE paging outside long mode, loads the four
/// PDPTEs the CPU takes from the VMCS on entry. A table that cannot be read, or a present
/// entry with reserved bits, gets the guest a #GP (delivered after the `mov`, which has
/// taken effect: the guest can only hurt itself).
fn load_pdptes(phys: GuestPhys) {
    let (cr0, cr4) = (rd(control::CR0_READ_SHADOW), rd(control::CR4_READ_SHADOW));
    if !hvm::pae_legacy_paging(cr0, cr4, rd(guest::IA32_EFER)) {
        return;
    }
    match hvm::load_pdptes(rd(guest::CR3), &phys) {
        Some(p) => {
            for (field, value) in [guest::PDPTE0, guest::PDPTE1, guest::PDPTE2, guest::PDPTE3]
                .into_iter()
                .zip(p)
            {
                wr(field, value);
            }
        }
        None => inject(Event::GP0),
    }
}

/// A `vmcall`: the hypercall in the guest's registers, through the same dispatch as PV.
fn hypercall_exit(
    domains: &mut [Domain],
    d: usize,
    v: usize,
    vcpu: &mut HvmVcpu,
    ept: Ept,
    hw: &mut dyn Platform,
) -> Outcome {
    let mode = cpu_mode();
    let Some(mut regs) = hvm::hypercall_frame(&vcpu.gprs, mode) else {
        inject(Event::UD);
        return Outcome::Continue;
    };
    let Some((dom, peers)) = Peers::split(domains, d) else {
        return Outcome::Crash("no such domain");
    };
    let mut mem = HvmGuestMem {
        phys: GuestPhys { ept, domid: dom.id },
    };
    let mut ctx = Ctx {
        dom,
        vcpu: v,
        regs: &mut regs,
        mem: &mut mem,
        hw,
        peers,
        compat: mode != CpuMode::Bits64,
    };
    let outcome = hypercall::dispatch(&mut ctx);
    if regs.rip != 0 {
        // A continuation (`hypercall::continuation` moved RIP back): re-execute the
        // `vmcall` with the updated number and first two arguments.
        vcpu.gprs.set(Gpr::Rax, regs.rax);
        let (a0, a1) = if mode == CpuMode::Bits64 {
            (Gpr::Rdi, Gpr::Rsi)
        } else {
            (Gpr::Rbx, Gpr::Rcx)
        };
        vcpu.gprs.set(a0, regs.rdi);
        vcpu.gprs.set(a1, regs.rsi);
    } else {
        hvm::complete_hypercall(&mut vcpu.gprs, mode, &regs);
        skip_instruction();
    }
    outcome
}

/// `XENMEM_add_to_physmap` for HVM domain `dom`, checked by `hypercall::memory`: maps
/// `space`'s page `idx` (the shared-info page, or grant-table frame `idx`) at `gpfn` in its
/// EPT, in place of whatever was there.
pub fn add_to_physmap(
    dom: &mut Domain,
    space: XenMapSpace,
    idx: u64,
    gpfn: u64,
) -> Result<(), Errno> {
    let mfn = match space {
        XenMapSpace::SharedInfo => Mfn(dom.shared_info_mfn),
        XenMapSpace::GrantTable => super::gnttab::own_table_frame(dom.id, idx)?,
        _ => return Err(Errno::ENOSYS),
    };
    let mut ept = ept_of(dom.id).ok_or(Errno::EINVAL)?;
    let mut ept_mem = EptFrames { domid: dom.id };
    ept.map(
        &mut ept_mem,
        Gfn(gpfn),
        mfn,
        1,
        EptPerm::READ | EptPerm::WRITE,
    )
    .map_err(|_| Errno::ENOMEM)?;
    flush_domain_ept(ept);
    Ok(())
}
