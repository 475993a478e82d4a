//! `crash=<how>`: the domain dies on purpose, in one of several ways, so that tests can check
//! that only this domain goes and the hypervisor and other domains carry on.

use core::arch::asm;
use core::ptr::addr_of;

use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::{Hypercall, FLAT_KERNEL_CS64, FLAT_KERNEL_SS64, HYPERVISOR_VIRT_START};
use pvguest::cmdline::CrashKind;

use super::{entry, pv};

/// An address inside Xen's reserved range, where hv lives (0xffff82d080200000 is its text).
const HV_ADDRESS: u64 = HYPERVISOR_VIRT_START + 0x2d0_8020_0000;
/// A canonical user address with nothing mapped there.
const UNMAPPED: u64 = 0x7f00_0000_0000;

fn clear_trap_table() {
    // SAFETY: a null list clears the virtual IDT; nothing runs after it but the crash.
    unsafe { pv::hypercalls().hypercall1(Hypercall::SetTrapTable, 0) };
}

/// Crashes the domain as `kind` says. The hypervisor ends the domain; this never returns.
pub fn crash(kind: CrashKind) -> ! {
    println!("pvguest: crashing on purpose: {kind:?}");
    match kind {
        CrashKind::Unhandled => {
            clear_trap_table();
            // SAFETY: raises #UD with no handler: the hypervisor crashes the domain.
            unsafe { asm!("ud2", options(nostack)) };
        }
        CrashKind::HvWrite => {
            clear_trap_table();
            // SAFETY: deliberately writes into the hypervisor's range; the write faults (the
            // page is not the guest's) and, with no handler, the domain is crashed.
            unsafe { (HV_ADDRESS as *mut u64).write_volatile(0xdead) };
        }
        CrashKind::Shutdown => pv::shutdown(ShutdownReason::Crash),
        CrashKind::BadIret => {
            let iret = addr_of!(entry::hypercall_page) as u64 + Hypercall::Iret as u64 * 32;
            // SAFETY: builds the iret hypercall's frame (flags, rip, cs, rflags, rsp, ss; the
            // stub adds rax, r11, rcx) with a return address in the hypervisor's range, which
            // the hypervisor must refuse by crashing the domain; control never comes back.
            unsafe {
                asm!(
                    "push {ss}",
                    "push rsp",
                    "push 0x202",
                    "push {cs}",
                    "push {rip}",
                    "push 0",
                    "jmp {iret}",
                    ss = in(reg) u64::from(FLAT_KERNEL_SS64),
                    cs = in(reg) u64::from(FLAT_KERNEL_CS64),
                    rip = in(reg) HV_ADDRESS,
                    iret = in(reg) iret,
                    options(noreturn)
                )
            }
        }
        CrashKind::BadUpcallStack => {
            if let Err(e) = super::events::init_timer() {
                println!("pvguest: {e}");
                pv::shutdown(ShutdownReason::Poweroff)
            }
            let _ = pv::hypercalls().set_timer_op(pv::system_time_ns() + 1_000_000);
            pv::mask_events(false);
            // SAFETY: with upcalls unmasked and the timer due, the hypervisor must write the
            // upcall's frame below the stack pointer, which names unmapped memory: it crashes
            // the domain; control never comes back.
            unsafe {
                asm!("mov rsp, {sp}", "2:", "jmp 2b", sp = in(reg) UNMAPPED, options(noreturn))
            }
        }
        CrashKind::BadStack => {
            // SAFETY: with the stack pointer on unmapped memory, the #UD's bounce frame cannot
            // be written and the hypervisor crashes the domain; control never comes back.
            unsafe { asm!("mov rsp, {sp}", "ud2", sp = in(reg) UNMAPPED, options(noreturn)) }
        }
    }
    println!("pvguest: still alive after crashing on purpose ({kind:?})");
    pv::shutdown(ShutdownReason::Poweroff)
}
