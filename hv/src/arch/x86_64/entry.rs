//! Guest entry and exit: the `syscall` entry PV hypercalls arrive through, the one path every
//! return to a guest takes, per-CPU data behind GS, and fault-safe access to guest memory.
//!
//! While a guest runs, GS_BASE holds the guest's GS base and KERNEL_GS_BASE hv's per-CPU
//! block; every entry from ring 3 swaps them (`swapgs`), every return swaps them back.
//! The guest's registers always live in one place: the [`Regs`] frame at the top of the
//! CPU's guest stack (TSS.RSP0 points just above it, and the syscall entry builds the same
//! frame there). Switching vCPUs means saving that frame and loading another.

use super::cpu::wrmsr;
use super::gdt::{self, HV_CS};
use crate::regs::{Regs, SYSCALL_FRAME};
use hypercall_abi::xen::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64};

const MSR_EFER: u32 = 0xc000_0080;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_FMASK: u32 = 0xc000_0084;
const MSR_GS_BASE: u32 = 0xc000_0101;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const EFER_SCE: u64 = 1;

/// Size of each CPU's guest-entry stack.
const GUEST_STACK_SIZE: usize = 32 * 1024;

/// Per-CPU block, reached through GS while hv runs. Offsets are used by the entry code.
#[repr(C)]
pub struct Pcpu {
    /// The guest's RSP at `syscall` (scratch while the frame is built).
    guest_rsp: u64,
    /// Top of this CPU's guest-entry stack: the end of the guest frame.
    stack_top: u64,
}

#[repr(C, align(4096))]
struct GuestStack([u8; GUEST_STACK_SIZE]);

static mut GUEST_STACK: GuestStack = GuestStack([0; GUEST_STACK_SIZE]);
static mut PCPU0: Pcpu = Pcpu {
    guest_rsp: 0,
    stack_top: 0,
};

core::arch::global_asm!(
    r#"
    .text
    .globl pv_syscall_entry
pv_syscall_entry:
    swapgs
    mov %rsp, %gs:{guest_rsp}
    mov %gs:{stack_top}, %rsp
    push ${ss}
    push %gs:{guest_rsp}
    push %r11
    push ${cs}
    push %rcx
    push $0
    push ${syscall_frame}
    /* The trap path saves the registers and dispatches on the vector (SYSCALL_FRAME). */
    jmp trap_save_regs

    /* Every return to a guest goes through here, with %rsp at the guest frame. */
    .globl return_to_guest
return_to_guest:
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    cmpq ${syscall_frame}, (%rsp)
    jne 1f
    /* A frame built by `syscall` and unchanged since: sysret restores it exactly. */
    mov {rip_off}(%rsp), %rcx
    mov {rflags_off}(%rsp), %r11
    mov {rsp_off}(%rsp), %rsp
    swapgs
    sysretq
1:  add $16, %rsp
    swapgs
    iretq

    /* 32-bit `syscall` (compatibility mode): hv has no 32-bit PV guests. */
    .globl pv_syscall32_entry
pv_syscall32_entry:
    swapgs
    mov %rsp, %gs:{guest_rsp}
    mov %gs:{stack_top}, %rsp
    push ${ss}
    push %gs:{guest_rsp}
    push %r11
    push ${cs32}
    push %rcx
    push $0
    push $6                 /* delivered to the guest as #UD */
    jmp trap_save_regs

    /* Fault-safe copy: rdi = dst, rsi = src, rdx = len; returns bytes NOT copied. Words
       first, then the tail; a fault in either resumes at its fixup. */
    .globl hv_copy_guest
hv_copy_guest:
    mov %rdx, %rcx
    shr $3, %rcx
    .globl hv_copy_guest_words
hv_copy_guest_words:
    rep movsq
    mov %rdx, %rcx
    and $7, %rcx
    .globl hv_copy_guest_bytes
hv_copy_guest_bytes:
    rep movsb
    xor %eax, %eax
    ret
    .globl hv_copy_guest_words_fixup
hv_copy_guest_words_fixup:
    and $7, %rdx
    lea (%rdx,%rcx,8), %rax
    ret
    .globl hv_copy_guest_bytes_fixup
hv_copy_guest_bytes_fixup:
    mov %rcx, %rax
    ret

    /* Loads a frame and returns to the guest it describes: rdi = the frame. */
    .globl hv_enter_guest
hv_enter_guest:
    mov %rdi, %rsp
    jmp return_to_guest
    "#,
    guest_rsp = const core::mem::offset_of!(Pcpu, guest_rsp),
    stack_top = const core::mem::offset_of!(Pcpu, stack_top),
    ss = const FLAT_RING3_SS64,
    cs = const FLAT_RING3_CS64,
    cs32 = const FLAT_RING3_CS32,
    syscall_frame = const SYSCALL_FRAME,
    rip_off = const core::mem::offset_of!(Regs, rip) - core::mem::offset_of!(Regs, vector),
    rflags_off = const core::mem::offset_of!(Regs, rflags) - core::mem::offset_of!(Regs, vector),
    rsp_off = const core::mem::offset_of!(Regs, rsp) - core::mem::offset_of!(Regs, vector),
    options(att_syntax)
);

unsafe extern "C" {
    fn pv_syscall_entry();
    fn pv_syscall32_entry();
    fn hv_copy_guest(dst: *mut u8, src: *const u8, len: usize) -> usize;
    static hv_copy_guest_words: u8;
    static hv_copy_guest_bytes: u8;
    static hv_copy_guest_words_fixup: u8;
    static hv_copy_guest_bytes_fixup: u8;
    fn hv_enter_guest(frame: *mut Regs) -> !;
}

/// Sets up this CPU for guests: the guest-entry stack (TSS.RSP0), GS, and the SYSCALL MSRs.
pub fn init() {
    let top = (&raw const GUEST_STACK) as u64 + GUEST_STACK_SIZE as u64;
    let pcpu = &raw mut PCPU0;
    // SAFETY: PCPU0 is this CPU's block; it is written here once, before anything reads it.
    unsafe { (*pcpu).stack_top = top };
    gdt::set_rsp0(top);
    // SYSCALL loads CS = STAR[47:32] and SS = CS + 8; SYSRET (64-bit) loads
    // CS = STAR[63:48] + 16 and SS = STAR[63:48] + 8: hence Xen's selector order.
    let star = (u64::from(FLAT_RING3_CS32 & !3) << 48) | (u64::from(HV_CS) << 32);
    // Entering hv through SYSCALL clears IF (hv runs with interrupts off), TF, DF, AC, NT.
    let fmask = crate::regs::rflags::IF
        | crate::regs::rflags::TF
        | crate::regs::rflags::DF
        | crate::regs::rflags::AC
        | crate::regs::rflags::NT;
    // SAFETY: these MSRs exist on every x86_64 CPU; the entry points are the stubs above,
    // the selectors are hv's GDT's, and GS bases point at this CPU's block (KERNEL_GS_BASE
    // is the guest's, zero until a guest sets one).
    unsafe {
        wrmsr(MSR_STAR, star);
        wrmsr(MSR_LSTAR, pv_syscall_entry as *const () as u64);
        wrmsr(MSR_CSTAR, pv_syscall32_entry as *const () as u64);
        wrmsr(MSR_FMASK, fmask);
        wrmsr(MSR_EFER, super::cpu::rdmsr(MSR_EFER) | EFER_SCE);
        wrmsr(MSR_GS_BASE, pcpu as u64);
        wrmsr(MSR_KERNEL_GS_BASE, 0);
    }
}

/// The current guest's register frame (at the top of the guest-entry stack).
pub fn guest_frame() -> *mut Regs {
    let top = (&raw const GUEST_STACK) as u64 + GUEST_STACK_SIZE as u64;
    (top - core::mem::size_of::<Regs>() as u64) as *mut Regs
}

/// Runs the guest whose registers are in `guest_frame()`. Never returns: the next entry
/// from the guest starts afresh at the top of the guest-entry stack.
pub fn enter_guest() -> ! {
    // SAFETY: the frame holds a complete guest context prepared by the caller (segment
    // selectors are the guest's flat ring-3 ones, RIP canonical); nothing on the current
    // stack is needed again.
    unsafe { hv_enter_guest(guest_frame()) }
}

/// Sets the guest's GS base (the one active while it runs: held in KERNEL_GS_BASE by hv).
pub fn set_guest_gs_base(base: u64) {
    // SAFETY: KERNEL_GS_BASE holds the guest's GS base while hv runs; any canonical value is
    // valid (the caller checks canonicality).
    unsafe { wrmsr(MSR_KERNEL_GS_BASE, base) };
}

/// Why a guest access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault;

/// Guest virtual addresses a PV guest may own: everything but Xen's reserved range, and
/// canonical.
fn guest_range_ok(addr: u64, len: usize) -> bool {
    let Some(end) = addr.checked_add(len as u64) else {
        return false;
    };
    let reserved =
        hypercall_abi::xen::HYPERVISOR_VIRT_START..hypercall_abi::xen::HYPERVISOR_VIRT_END;
    len == 0
        || (crate::regs::is_canonical(addr)
            && crate::regs::is_canonical(end - 1)
            && (end - 1 < reserved.start || addr >= reserved.end)
            && (addr >> 47 == (end - 1) >> 47))
}

/// Copies from guest virtual memory (through the guest's page tables, which are live while hv
/// handles its hypercalls and traps). A fault or a forbidden address is `Err(Fault)`.
pub fn copy_from_guest(gva: u64, buf: &mut [u8]) -> Result<(), Fault> {
    if !guest_range_ok(gva, buf.len()) {
        return Err(Fault);
    }
    // SAFETY: `buf` is hv memory valid for writes of its length; the source range lies in the
    // guest's part of the address space, and any fault on it is caught by `fixup`.
    let left = unsafe { hv_copy_guest(buf.as_mut_ptr(), gva as *const u8, buf.len()) };
    if left == 0 {
        Ok(())
    } else {
        Err(Fault)
    }
}

/// Copies to guest virtual memory; see [`copy_from_guest`].
pub fn copy_to_guest(gva: u64, buf: &[u8]) -> Result<(), Fault> {
    if !guest_range_ok(gva, buf.len()) {
        return Err(Fault);
    }
    // SAFETY: as in `copy_from_guest`; writes to read-only guest pages fault (CR0.WP) and are
    // caught by `fixup`.
    let left = unsafe { hv_copy_guest(gva as *mut u8, buf.as_ptr(), buf.len()) };
    if left == 0 {
        Ok(())
    } else {
        Err(Fault)
    }
}

/// If hv faulted inside the guest-copy routine, resumes at its fixup and returns true.
pub fn fixup(frame: &mut Regs) -> bool {
    let resume = if frame.rip == (&raw const hv_copy_guest_words) as u64 {
        (&raw const hv_copy_guest_words_fixup) as u64
    } else if frame.rip == (&raw const hv_copy_guest_bytes) as u64 {
        (&raw const hv_copy_guest_bytes_fixup) as u64
    } else {
        return false;
    };
    frame.rip = resume;
    true
}
