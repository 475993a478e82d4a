//! hv: a small hypervisor that speaks Xen's x86_64 guest ABI.
//!
//! The library holds everything; `main.rs` is only the bootable image's entry. Modules that
//! are portable (no `asm!`, no hardware) build and run their unit tests on the host; the
//! hardware layer (`arch`) exists only for the bare-metal target.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod boot;
pub mod bundle;
pub mod cmdline;
pub mod console;
pub mod domain;
pub mod evtchn;
pub mod gnttab;
pub mod hvm;
pub mod hypercall;
pub mod mm;
pub mod pv;
pub mod regs;
pub mod sched;
pub mod time;

#[cfg(target_os = "none")]
pub mod arch;
