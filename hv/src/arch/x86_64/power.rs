//! Powering off: the last line hv prints, then the emulators' exit ports.

use x86_64::instructions::port::Port;

/// How the run ended, as `cargo xtask run` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every domain shut down cleanly (or there were none).
    Clean = 0,
    /// A domain crashed, a boot input was rejected, or hv itself failed.
    Failure = 1,
}

/// QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=4`): QEMU
/// exits with `(value << 1) | 1`.
const QEMU_DEBUG_EXIT: u16 = 0xf4;
/// Bochs's shutdown port: writing "Shutdown" there ends the simulation.
const BOCHS_SHUTDOWN: u16 = 0x8900;

/// Prints the final status line and stops the machine.
pub fn power_off(status: Status) -> ! {
    x86_64::instructions::interrupts::disable();
    super::console::emergency_print(format_args!(
        "(XEN) hv power-off: status={}\n",
        status as u8
    ));
    super::console::drain();
    // SAFETY: both ports belong to emulator debug devices that only end the run; on a machine
    // without them the writes go to unclaimed ports and are ignored.
    unsafe {
        Port::<u8>::new(QEMU_DEBUG_EXIT).write(status as u8);
        let mut bochs = Port::<u8>::new(BOCHS_SHUTDOWN);
        for b in b"Shutdown" {
            bochs.write(*b);
        }
    }
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
