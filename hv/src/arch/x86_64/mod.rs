//! The x86_64 hardware layer: entry, descriptor tables, traps, paging, the local APIC and
//! time. Only this module (and the port wrappers it uses) holds `asm!`.

pub mod apic;
pub mod boot;
pub mod console;
pub mod console_input;
pub mod cpu;
pub mod entry;
pub mod gdt;
pub mod gnttab;
pub mod layout;
pub mod mmu;
pub mod paging;
pub mod power;
pub mod pv;
pub mod start;
pub mod time;
pub mod traps;
pub mod vmx;

/// Reports a panic in hv and powers off with a failure status.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    x86_64::instructions::interrupts::disable();
    console::emergency_print(format_args!("(XEN) hv panic: {info}\n"));
    power::power_off(power::Status::Failure)
}
