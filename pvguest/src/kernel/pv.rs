//! The PV platform as the kernel uses it: the hypercall page, the shared-info page and this
//! vCPU's `vcpu_info` (event mask, pending flags, `cr2`, time), and shutting down.

use core::arch::asm;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::call::HypercallPage;
use hypercall_abi::event_channel::{evtchn_2l_word_bit, EvtchnPort};
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::{SharedInfo, VcpuInfo, VcpuTimeInfo, UVMF_INVLPG};
use pvguest::paging::{PTE_PRESENT, PTE_USER, PTE_WRITABLE};

use super::entry;

/// The hypercall page.
pub fn hypercalls() -> HypercallPage {
    // SAFETY: `hypercall_page` is a page-aligned page of the image's text, named in the
    // HYPERCALL_PAGE note, which Xen fills before entry; `pvguest_start` checks that it was
    // filled before anything calls through it, and nothing writes it afterwards.
    unsafe { HypercallPage::new(addr_of!(entry::hypercall_page) as usize) }
}

/// The shared-info page (mapped by [`map_shared_info`]).
pub fn shared_info() -> *mut SharedInfo {
    addr_of!(entry::shared_info_page) as *mut SharedInfo
}

/// vCPU 0's `vcpu_info` in the shared-info page.
pub fn vcpu0() -> *mut VcpuInfo {
    // SAFETY: only computes the address of the first element; nothing is read.
    unsafe { addr_of_mut!((*shared_info()).vcpu_info[0]) }
}

/// Maps the shared-info page (machine address `maddr`) at [`shared_info`].
pub fn map_shared_info(maddr: u64) -> Result<(), hypercall_abi::errno::HypercallError> {
    let va = shared_info() as u64;
    // SAFETY: replaces the mapping of the image's own `shared_info_page`, which nothing
    // else uses, with Xen's shared-info frame.
    unsafe {
        hypercalls().update_va_mapping(
            va,
            maddr | PTE_PRESENT | PTE_WRITABLE | PTE_USER,
            UVMF_INVLPG,
        )
    }
    .map(|_| ())
}

/// Masks (`true`) or unmasks event upcalls.
pub fn mask_events(mask: bool) {
    // SAFETY: `vcpu0()` points into the mapped shared-info page; the mask byte is written
    // by the guest (and by Xen only on event delivery, which a masked vCPU does not get).
    unsafe { addr_of_mut!((*vcpu0()).evtchn_upcall_mask).write_volatile(u8::from(mask)) }
}

/// `cr2` of the last page fault Xen delivered.
pub fn fault_cr2() -> u64 {
    // SAFETY: `vcpu0()` points into the mapped shared-info page.
    unsafe { addr_of!((*vcpu0()).arch.cr2).read_volatile() }
}

/// The shared-info pending bit of `port`, as an atomic word and bit mask.
fn pending_word(port: EvtchnPort) -> (&'static AtomicU64, u64) {
    let (word, bit) = evtchn_2l_word_bit(port);
    // SAFETY: the pending bitmap lies in the mapped shared-info page, stays mapped for the
    // rest of the kernel's life, and is updated by Xen with atomic operations, so atomic
    // access from the guest is the right discipline. `word` < 64 for a 2-level port.
    let w = unsafe { &*(addr_of!((*shared_info()).evtchn_pending[word]) as *const AtomicU64) };
    (w, 1u64 << bit)
}

/// Whether `port` is pending.
pub fn port_pending(port: EvtchnPort) -> bool {
    let (w, m) = pending_word(port);
    w.load(Ordering::SeqCst) & m != 0
}

/// Clears `port`'s pending bit.
pub fn clear_port(port: EvtchnPort) {
    let (w, m) = pending_word(port);
    w.fetch_and(!m, Ordering::SeqCst);
}

/// The TSC.
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: rdtsc only reads the time-stamp counter (Xen leaves CR4.TSD clear for PV).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// A consistent snapshot of vCPU 0's time parameters and the TSC read inside it, following
/// the version protocol (odd = update in progress; retry until unchanged).
pub fn time_snapshot() -> (VcpuTimeInfo, u64) {
    // SAFETY: `vcpu0()` points into the mapped shared-info page.
    let t = unsafe { addr_of!((*vcpu0()).time) };
    loop {
        // SAFETY: `t` is valid for reads; Xen updates it concurrently, hence volatile reads
        // bracketed by the version checks.
        let (before, snap, tsc, after) = unsafe {
            let before = addr_of!((*t).version).read_volatile();
            core::sync::atomic::fence(Ordering::SeqCst);
            let snap = t.read_volatile();
            let tsc = rdtsc();
            core::sync::atomic::fence(Ordering::SeqCst);
            (before, snap, tsc, addr_of!((*t).version).read_volatile())
        };
        if before & 1 == 0 && before == after {
            return (snap, tsc);
        }
    }
}

/// Xen system time now, in nanoseconds.
pub fn system_time_ns() -> u64 {
    let (snap, tsc) = time_snapshot();
    pvguest::time::system_time_ns(&snap, tsc)
}

/// Ends the domain.
pub fn shutdown(reason: ShutdownReason) -> ! {
    loop {
        let _ = hypercalls().sched_op_shutdown(reason);
    }
}
