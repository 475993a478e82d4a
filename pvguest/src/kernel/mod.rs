//! The bare-metal kernel: start of day as a 64-bit PV guest, then the mode the command line
//! names.

#[macro_use]
mod console;
mod backend;
mod bench;
mod console_echo;
mod control;
mod crash;
mod entry;
mod events;
mod grants;
mod hostile;
mod hostile_peer;
mod mm;
mod pair;
mod pv;
mod pvh;
mod selftest;
mod share;
mod traps;
mod user;
mod xenbus_test;

use core::cell::UnsafeCell;
use core::ptr::addr_of;

use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::{StartInfo, UVMF_INVLPG};
use linked_list_allocator::LockedHeap;
use pvguest::cmdline::{self, Mode};

/// Size of the kernel heap.
const HEAP_SIZE: usize = 256 * 1024;

#[repr(C, align(4096))]
struct HeapSpace(UnsafeCell<[u8; HEAP_SIZE]>);
// SAFETY: the space is handed to the allocator once, at start of day, and only the
// allocator touches it afterwards.
unsafe impl Sync for HeapSpace {}

static HEAP_SPACE: HeapSpace = HeapSpace(UnsafeCell::new([0; HEAP_SIZE]));

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Everything the kernel learned at start of day.
pub struct Kernel {
    /// A copy of Xen's start_info.
    pub si: StartInfo,
    /// Frames and page tables.
    pub mm: mm::Mm,
}

/// Stops with a crash report when start of day cannot go on.
fn fatal(what: &str, why: &dyn core::fmt::Display) -> ! {
    println!("pvguest: start of day failed: {what}: {why}");
    pv::shutdown(ShutdownReason::Crash)
}

/// The PV entry (from `_start`, on the boot stack): `start_info` is Xen's start-info page
/// and `boot_rsp` the stack pointer Xen entered with.
#[no_mangle]
extern "C" fn pvguest_start(start_info: *const StartInfo, boot_rsp: u64) -> ! {
    // SAFETY: the hypercall page is part of the image and readable.
    if !unsafe { pv::hypercalls().is_filled() } {
        // Without hypercalls there is no way to report anything: fault, which makes Xen
        // crash the domain (no trap table is installed yet).
        // SAFETY: ud2 raises #UD and does not return.
        unsafe { core::arch::asm!("ud2", options(noreturn)) }
    }
    // SAFETY: Xen passes the address of the start-info page, mapped for the guest.
    let si = unsafe { start_info.read() };
    // SAFETY: HEAP_SPACE is a static region given to the allocator exactly once, here.
    unsafe { HEAP.lock().init(HEAP_SPACE.0.get().cast::<u8>(), HEAP_SIZE) };

    if let Err(e) = pv::map_shared_info(si.shared_info) {
        fatal("mapping shared info", &e);
    }
    pv::mask_events(true);
    // The builder maps guest frame 0 at virtual 0; unmap it so null pointers fault.
    if let Err(e) = mm::update_va_mapping(0, 0, UVMF_INVLPG) {
        fatal("unmapping page 0", &e);
    }
    if let Err(e) = traps::install_trap_table() {
        fatal("set_trap_table", &e);
    }
    if let Err(e) = traps::register_callbacks() {
        fatal("callback_op register", &e);
    }
    let mm = match mm::Mm::new(&si, start_info as u64, boot_rsp) {
        Ok(mm) => mm,
        Err(e) => fatal("frame allocator", &e),
    };
    let mut kernel = Kernel { si, mm };

    let cmdline = kernel.si.cmd_line_bytes();
    println!(
        "pvguest: started: nr_pages {:#x} flags {:#x} pt_base {:#x} frames free {:#x} image end {:#x} cmdline {:?}",
        kernel.si.nr_pages,
        kernel.si.flags,
        kernel.si.pt_base,
        kernel.mm.frames_available(),
        addr_of!(entry::__image_end) as u64,
        core::str::from_utf8(cmdline).unwrap_or("<not utf-8>")
    );
    match cmdline::parse_mode(cmdline) {
        Ok(Mode::Selftest) => {
            let success = selftest::run(&mut kernel);
            pv::shutdown(if success {
                ShutdownReason::Poweroff
            } else {
                ShutdownReason::Crash
            })
        }
        Ok(Mode::Crash(kind)) => crash::crash(kind),
        Ok(Mode::Bench) => {
            bench::run(&mut kernel);
            pv::shutdown(ShutdownReason::Poweroff)
        }
        Ok(Mode::Hostile) => {
            hostile::run(&mut kernel);
            pv::shutdown(ShutdownReason::Poweroff)
        }
        Ok(Mode::Control) => pv::shutdown(if control::run(&kernel) {
            ShutdownReason::Poweroff
        } else {
            ShutdownReason::Crash
        }),
        Ok(Mode::Spin) => control::spin(),
        Ok(Mode::Pingpong(args)) => {
            pair::pingpong(args);
            pv::shutdown(ShutdownReason::Poweroff)
        }
        Ok(Mode::Grant(args)) => {
            pair::grant(&mut kernel, args);
            pv::shutdown(ShutdownReason::Poweroff)
        }
        Ok(Mode::Backend) => pv::shutdown(if backend::run(&mut kernel) {
            ShutdownReason::Poweroff
        } else {
            ShutdownReason::Crash
        }),
        Ok(Mode::XenbusTest(args)) => {
            xenbus_test::run(&mut kernel, args);
            pv::shutdown(ShutdownReason::Poweroff)
        }
        Ok(Mode::HostilePeer { peer }) => {
            hostile_peer::run(&mut kernel, peer);
            pv::shutdown(ShutdownReason::Poweroff)
        }
        Ok(Mode::ConsoleEcho) => pv::shutdown(if console_echo::run(&mut kernel) {
            ShutdownReason::Poweroff
        } else {
            ShutdownReason::Crash
        }),
        Ok(Mode::Burn(args)) => {
            share::burn(args);
            pv::shutdown(ShutdownReason::Poweroff)
        }
        Ok(Mode::CpuShare(args)) => pv::shutdown(if share::cpu_share(&kernel, args) {
            ShutdownReason::Poweroff
        } else {
            ShutdownReason::Crash
        }),
        Err(unknown) => {
            println!("pvguest: unknown mode {:?}", unknown.0);
            println!("{}", cmdline::USAGE);
            pv::shutdown(ShutdownReason::Poweroff)
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("pvguest: panic: {info}");
    pv::shutdown(ShutdownReason::Crash)
}
