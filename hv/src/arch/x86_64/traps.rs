//! The IDT, its entry stubs, and trap dispatch.
//!
//! One 16-byte stub per vector (written in `global_asm!`, no `x86-interrupt` ABI) pushes a
//! zero error code where the CPU pushes none, then the vector, and jumps to a common path
//! that saves every general-purpose register into a [`TrapFrame`] and calls
//! [`trap_dispatch`]. An exception in hv itself is fatal: it is reported with its vector,
//! error code, RIP, CR2 and registers, and hv powers off with a failure status.

use super::gdt::{HV_CS, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI};
use crate::regs::Regs;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

/// The LAPIC timer's vector.
pub const TIMER_VECTOR: u8 = 0xf0;
/// The LAPIC spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Whether the CPU pushes an error code for exception `vector`.
pub fn has_error_code(vector: u8) -> bool {
    vector < 32 && ERROR_CODE_VECTORS >> vector & 1 != 0
}

/// Vectors for which the CPU pushes an error code.
const ERROR_CODE_VECTORS: u32 = (1 << 8)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14)
    | (1 << 17)
    | (1 << 21)
    | (1 << 29)
    | (1 << 30);

core::arch::global_asm!(
    r#"
    .text
    .balign 16
    .globl trap_stubs
trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if vec < 32
    .if ({errmask} >> vec) & 1
    .else
    push $0
    .endif
    .else
    push $0
    .endif
    push $vec
    jmp trap_common
    .set vec, vec + 1
    .endr

    .globl trap_common
trap_common:
    /* From ring 3 (a guest), hv's GS base is in KERNEL_GS_BASE: swap it in. */
    testb $3, 24(%rsp)
    jz trap_save_regs
    swapgs
    /* The syscall entries join here with their frame built and GS already swapped. */
    .globl trap_save_regs
trap_save_regs:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call {dispatch}
    /* Back to a guest (possibly another vCPU than the one that trapped) or to hv. */
    testb $3, {cs_offset}(%rsp)
    jnz return_to_guest
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
    add $16, %rsp
    iretq
    "#,
    errmask = const ERROR_CODE_VECTORS,
    dispatch = sym trap_dispatch,
    cs_offset = const core::mem::offset_of!(Regs, cs),
    options(att_syntax)
);

unsafe extern "C" {
    static trap_stubs: [u8; 256 * 16];
}

/// The frame the entry stubs save.
pub type TrapFrame = Regs;

/// An IDT gate (interrupt gate, DPL 0).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    fn interrupt(handler: u64, ist: u8) -> Self {
        Gate {
            offset_low: handler as u16,
            selector: HV_CS,
            ist,
            type_attr: 0x8e, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Once<Idt> = Once::new();

/// Installs the IDT on the boot CPU.
pub fn init() {
    let idt = IDT.call_once(|| {
        let base = (&raw const trap_stubs) as u64;
        let mut gates = [Gate::default(); 256];
        for (v, gate) in gates.iter_mut().enumerate() {
            let ist = match v {
                2 => IST_NMI,
                8 => IST_DOUBLE_FAULT,
                18 => IST_MACHINE_CHECK,
                _ => 0,
            };
            *gate = Gate::interrupt(base + 16 * v as u64, ist);
        }
        Idt(gates)
    });
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the IDT is a `static` that lives forever and every gate points at a stub in
    // `trap_stubs`, which saves state and calls `trap_dispatch`.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

/// Timer interrupts taken since boot.
pub static TIMER_TICKS: AtomicU64 = AtomicU64::new(0);

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#MF(9)", "#TS", "#NP", "#SS",
    "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25",
    "#26", "#27", "#HV", "#VC", "#SX", "#31",
];

extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    if frame.vector == crate::regs::SYSCALL_FRAME {
        super::pv::guest_syscall(frame);
        return;
    }
    if frame.from_user() {
        super::pv::guest_trap(frame);
        return;
    }
    if matches!(frame.vector, 13 | 14) && super::entry::fixup(frame) {
        return;
    }
    match frame.vector {
        v if v < 32 => fatal_exception(frame),
        v if v == u64::from(TIMER_VECTOR) => timer_tick(),
        v if v == u64::from(SPURIOUS_VECTOR) => {}
        v => {
            log::warn!("unexpected interrupt, vector {v:#x}");
            super::apic::eoi();
        }
    }
}

/// The periodic tick: counts and acknowledges it.
pub fn timer_tick() {
    TIMER_TICKS.fetch_add(1, Ordering::Relaxed);
    super::apic::eoi();
}

/// Reports an exception hv cannot survive and powers off.
pub fn fatal_exception(f: &TrapFrame) -> ! {
    let name = EXCEPTION_NAMES
        .get(f.vector as usize)
        .copied()
        .unwrap_or("?");
    let cr2 = super::cpu::cr2();
    let cr3 = x86_64::registers::control::Cr3::read_raw()
        .0
        .start_address()
        .as_u64();
    super::console::emergency_print(format_args!(
        "(XEN) FATAL TRAP: vector {} ({name}), error code {:#06x}\n\
         (XEN) RIP {:016x} CS {:04x} RFLAGS {:016x}\n\
         (XEN) RSP {:016x} SS {:04x} CR2 {:016x} CR3 {:016x}\n\
         (XEN) rax {:016x} rbx {:016x} rcx {:016x} rdx {:016x}\n\
         (XEN) rsi {:016x} rdi {:016x} rbp {:016x} r8  {:016x}\n\
         (XEN) r9  {:016x} r10 {:016x} r11 {:016x} r12 {:016x}\n\
         (XEN) r13 {:016x} r14 {:016x} r15 {:016x}\n",
        f.vector,
        f.error_code,
        f.rip,
        f.cs,
        f.rflags,
        f.rsp,
        f.ss,
        cr2,
        cr3,
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx,
        f.rsi,
        f.rdi,
        f.rbp,
        f.r8,
        f.r9,
        f.r10,
        f.r11,
        f.r12,
        f.r13,
        f.r14,
        f.r15
    ));
    super::power::power_off(super::power::Status::Failure)
}
