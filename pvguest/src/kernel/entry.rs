//! Everything that must be assembly: the Xen ELF notes, the hypercall page, the PV entry
//! point, the exception and callback entry stubs (which turn Xen's bounce frame into a
//! [`TrapFrame`] and return through the `iret` hypercall), the user-mode task's code page,
//! the switch into and out of user mode, and small probes whose faults the selftest provokes.

use core::arch::global_asm;

use hypercall_abi::elfnote::XenElfnote;
use hypercall_abi::xen::{Hypercall, FLAT_USER_CS64, FLAT_USER_SS64, HYPERCALL_STUB_SIZE};

use super::user::{SYS_ADD_ONE, SYS_EXIT};

/// `TrapFrame::vector` of an event-channel upcall.
pub const VECTOR_EVENT: u64 = 256;
/// `TrapFrame::vector` of a `syscall` from user mode.
pub const VECTOR_SYSCALL: u64 = 257;

/// Number of exception vectors with an entry stub.
pub const NR_EXCEPTIONS: usize = 32;

/// Interrupted state as the entry stubs save it: general registers, then the vector and error
/// code the stub or Xen supplied, then Xen's bounce frame without its rcx/r11 (which the stub
/// moved back into their registers). cs carries the saved event mask in bits 32-39.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}
const _: () = assert!(core::mem::offset_of!(TrapFrame, error_code) == 128);
const _: () = assert!(core::mem::size_of::<TrapFrame>() == 176);

/// Callee-saved state of the kernel while the user-mode task runs.
#[repr(C)]
#[derive(Debug)]
pub struct KernelContext {
    /// rbx, rbp, r12, r13, r14, r15, rsp (pointing at `user_enter`'s return address).
    pub regs: [u64; 7],
}

/// Size of the boot stack.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;
/// Size of the stack Xen switches to on entry from user mode (`stack_switch`).
pub const KERNEL_STACK_SIZE: usize = 16 * 1024;

extern "C" {
    /// The hypercall page (filled by Xen at domain build).
    pub static hypercall_page: [u8; 4096];
    /// A page of address space where the shared-info page gets mapped.
    pub static shared_info_page: [u8; 4096];
    /// A page of address space through which page-table frames are read.
    pub static scratch_page: [u8; 4096];
    /// The user-mode task's code page.
    pub static user_code_page: [u8; 4096];
    /// Top of the stack Xen switches to when user mode enters the kernel.
    pub static kernel_stack_top: u8;
    /// Bottom of that stack.
    pub static kernel_stack_bottom: u8;
    /// End of the loaded image (page aligned).
    pub static __image_end: u8;
    /// Entry stubs of exception vectors 0..32, in vector order.
    pub static trap_entries: [u64; NR_EXCEPTIONS];

    pub fn event_entry();
    pub fn syscall_entry();
    pub fn failsafe_entry();
    /// The benchmark's #UD entry: resumes two bytes past the faulting instruction (a `ud2`)
    /// with nothing but the `iret` hypercall, so the figure is the hypervisor's round trip.
    pub fn bench_ud_entry();

    /// Enters user mode at `rip` with stack `rsp`, saving the kernel's state in `ctx`;
    /// "returns" the exit code when the task calls `SYS_EXIT` (through [`user_exit`]).
    pub fn user_enter(ctx: *mut KernelContext, rip: u64, rsp: u64) -> u64;
    /// Resumes the kernel saved in `ctx` as if its `user_enter` returned `code`.
    pub fn user_exit(ctx: *const KernelContext, code: u64) -> !;

    /// Executes `int3`; the trap's rip is `probe_int3_resume`.
    pub fn probe_int3();
    pub static probe_int3_resume: u8;
    /// Executes `ud2` at `probe_ud2_insn`, then returns.
    pub fn probe_ud2();
    pub static probe_ud2_insn: u8;
    /// Executes one x87 instruction at `probe_fpu_insn`, then returns.
    pub fn probe_fpu();
    pub static probe_fpu_insn: u8;
    /// Reads the u64 at `addr` with the instruction at `probe_read_insn`; a fault handler
    /// resumes at `probe_read_fixup`, which returns `u64::MAX`.
    pub fn probe_read(addr: u64) -> u64;
    pub static probe_read_insn: u8;
    pub static probe_read_fixup: u8;
}

global_asm!(
    r#"
    .macro XEN_NOTE_STR type, str
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 2f - 1f
    .long \type
    .asciz "Xen"
1:  .asciz "\str"
2:  .balign 4
    .popsection
    .endm

    .macro XEN_NOTE_QUAD type, value
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long \type
    .asciz "Xen"
    .quad \value
    .popsection
    .endm

    XEN_NOTE_STR {note_guest_os}, "pvguest"
    XEN_NOTE_STR {note_guest_version}, "0.1"
    XEN_NOTE_STR {note_xen_version}, "xen-3.0"
    XEN_NOTE_STR {note_loader}, "generic"
    XEN_NOTE_QUAD {note_virt_base}, 0
    XEN_NOTE_QUAD {note_paddr_offset}, 0
    XEN_NOTE_QUAD {note_entry}, _start
    XEN_NOTE_QUAD {note_hypercall_page}, hypercall_page
    XEN_NOTE_STR {note_features}, "!writable_page_tables|pae_pgdir_above_4gb"
    XEN_NOTE_STR {note_pae_mode}, "yes"

    /* PV entry: CPL3 on Xen's bootstrap stack, rsi = start_info. */
    .section .text.entry, "ax"
    .globl _start
_start:
    cld
    mov %rsi, %rdi
    mov %rsp, %rsi
    lea boot_stack_top(%rip), %rsp
    xor %ebp, %ebp
    call pvguest_start
    ud2

    .section .text.hypercall_page, "ax"
    .balign 4096
    .globl hypercall_page
hypercall_page:
    .fill 4096, 1, 0xc3

    /*
     * Exception stubs. Xen's bounce frame: rcx, r11, [error code], rip, cs, rflags, rsp, ss.
     * Put rcx/r11 back, supply an error code where the CPU gives none, push the vector and
     * join the common path.
     */
    .text
    .macro TRAP_ENTRY vec, has_error
    .balign 16
trap_entry_\vec:
    pop %rcx
    pop %r11
    .if \has_error == 0
    push $0
    .endif
    push $\vec
    jmp trap_common
    .endm

    TRAP_ENTRY 0, 0
    TRAP_ENTRY 1, 0
    TRAP_ENTRY 2, 0
    TRAP_ENTRY 3, 0
    TRAP_ENTRY 4, 0
    TRAP_ENTRY 5, 0
    TRAP_ENTRY 6, 0
    TRAP_ENTRY 7, 0
    TRAP_ENTRY 8, 1
    TRAP_ENTRY 9, 0
    TRAP_ENTRY 10, 1
    TRAP_ENTRY 11, 1
    TRAP_ENTRY 12, 1
    TRAP_ENTRY 13, 1
    TRAP_ENTRY 14, 1
    TRAP_ENTRY 15, 0
    TRAP_ENTRY 16, 0
    TRAP_ENTRY 17, 1
    TRAP_ENTRY 18, 0
    TRAP_ENTRY 19, 0
    TRAP_ENTRY 20, 0
    TRAP_ENTRY 21, 1
    TRAP_ENTRY 22, 0
    TRAP_ENTRY 23, 0
    TRAP_ENTRY 24, 0
    TRAP_ENTRY 25, 0
    TRAP_ENTRY 26, 0
    TRAP_ENTRY 27, 0
    TRAP_ENTRY 28, 0
    TRAP_ENTRY 29, 1
    TRAP_ENTRY 30, 1
    TRAP_ENTRY 31, 0

    /* Event upcall and syscall callbacks: the same frame without an error code. */
    .balign 16
    .globl event_entry
event_entry:
    pop %rcx
    pop %r11
    push $0
    push ${vector_event}
    jmp trap_common

    .balign 16
    .globl syscall_entry
syscall_entry:
    pop %rcx
    pop %r11
    push $0
    push ${vector_syscall}
    jmp trap_common

    /*
     * The benchmark's #UD: put rcx/r11 back, step over the two-byte ud2, supply iret's
     * flags word (0) where an error code would be, and return.
     */
    .balign 16
    .globl bench_ud_entry
bench_ud_entry:
    pop %rcx
    pop %r11
    addq $2, (%rsp)
    push $0
    jmp hypercall_page + {iret_offset}

    /* Xen could not load a segment register while returning to us: report and stop. */
    .balign 16
    .globl failsafe_entry
failsafe_entry:
    mov %rsp, %rdi
    and $-16, %rsp
    call pvguest_failsafe
    ud2

    /*
     * Save the registers, call pvguest_trap(frame), which returns the iret hypercall's flags
     * word; store it over the error code, which lies just below rip, restore the registers,
     * drop the vector and jump to the iret hypercall with the stack holding
     * flags, rip, cs, rflags, rsp, ss (its stub pushes rcx, r11 and rax).
     */
    .balign 16
trap_common:
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
    mov %rsp, %rbp
    and $-16, %rsp
    call pvguest_trap
    mov %rbp, %rsp
    mov %rax, 128(%rsp)
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
    add $8, %rsp
    jmp hypercall_page + {iret_offset}

    /* u64 user_enter(KernelContext *ctx, u64 rip, u64 rsp) */
    .balign 16
    .globl user_enter
user_enter:
    mov %rbx, 0(%rdi)
    mov %rbp, 8(%rdi)
    mov %r12, 16(%rdi)
    mov %r13, 24(%rdi)
    mov %r14, 32(%rdi)
    mov %r15, 40(%rdi)
    mov %rsp, 48(%rdi)
    push ${user_ss}
    push %rdx
    push $0x202
    push ${user_cs}
    push %rsi
    push $0
    xor %eax, %eax
    xor %ebx, %ebx
    xor %ecx, %ecx
    xor %edx, %edx
    xor %esi, %esi
    xor %edi, %edi
    xor %ebp, %ebp
    xor %r8d, %r8d
    xor %r9d, %r9d
    xor %r10d, %r10d
    xor %r11d, %r11d
    xor %r12d, %r12d
    xor %r13d, %r13d
    xor %r14d, %r14d
    xor %r15d, %r15d
    jmp hypercall_page + {iret_offset}

    /* ! user_exit(const KernelContext *ctx, u64 code) */
    .balign 16
    .globl user_exit
user_exit:
    mov 0(%rdi), %rbx
    mov 8(%rdi), %rbp
    mov 16(%rdi), %r12
    mov 24(%rdi), %r13
    mov 32(%rdi), %r14
    mov 40(%rdi), %r15
    mov 48(%rdi), %rsp
    mov %rsi, %rax
    ret

    .balign 16
    .globl probe_int3, probe_int3_resume
probe_int3:
    int3
probe_int3_resume:
    ret

    .balign 16
    .globl probe_ud2, probe_ud2_insn
probe_ud2:
probe_ud2_insn:
    ud2
    ret

    .balign 16
    .globl probe_fpu, probe_fpu_insn
probe_fpu:
probe_fpu_insn:
    fnop
    ret

    .balign 16
    .globl probe_read, probe_read_insn, probe_read_fixup
probe_read:
probe_read_insn:
    mov (%rdi), %rax
    ret
probe_read_fixup:
    mov $-1, %rax
    ret

    /*
     * The user-mode task, alone in its page (mapped at USER_CODE_VA in the user address
     * space): ask the kernel to add one to 41, then exit with the answer.
     */
    .section .text.user, "ax"
    .balign 4096
    .globl user_code_page
user_code_page:
    mov $41, %edi
    mov ${sys_add_one}, %eax
    syscall
    mov %rax, %rdi
    mov ${sys_exit}, %eax
    syscall
    ud2
    .balign 4096

    .section .rodata.trap_entries, "a"
    .balign 8
    .globl trap_entries
trap_entries:
    .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad trap_entry_\vec
    .endr

    .section .bss.pages, "aw", @nobits
    .balign 4096
    .globl shared_info_page, scratch_page
shared_info_page:
    .skip 4096
scratch_page:
    .skip 4096
boot_stack:
    .skip {boot_stack_size}
boot_stack_top:
    .globl kernel_stack_bottom, kernel_stack_top
kernel_stack_bottom:
    .skip {kernel_stack_size}
kernel_stack_top:
    "#,
    note_guest_os = const XenElfnote::GuestOs.raw(),
    note_guest_version = const XenElfnote::GuestVersion.raw(),
    note_xen_version = const XenElfnote::XenVersion.raw(),
    note_loader = const XenElfnote::Loader.raw(),
    note_virt_base = const XenElfnote::VirtBase.raw(),
    note_paddr_offset = const XenElfnote::PaddrOffset.raw(),
    note_entry = const XenElfnote::Entry.raw(),
    note_hypercall_page = const XenElfnote::HypercallPage.raw(),
    note_features = const XenElfnote::Features.raw(),
    note_pae_mode = const XenElfnote::PaeMode.raw(),
    vector_event = const VECTOR_EVENT,
    vector_syscall = const VECTOR_SYSCALL,
    iret_offset = const Hypercall::Iret as usize * HYPERCALL_STUB_SIZE,
    user_cs = const FLAT_USER_CS64,
    user_ss = const FLAT_USER_SS64,
    sys_add_one = const SYS_ADD_ONE,
    sys_exit = const SYS_EXIT,
    boot_stack_size = const BOOT_STACK_SIZE,
    kernel_stack_size = const KERNEL_STACK_SIZE,
    options(att_syntax)
);
