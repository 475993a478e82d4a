//! Event channels in the kernel: the handler table the event upcall dispatches through (with
//! the shared-info page as its [`EventBitmaps`]), binding handlers, and waiting for a condition
//! with a timeout by blocking until an upcall or `VIRQ_TIMER`.
//!
//! The kernel runs with event upcalls masked except while it blocks, and Xen masks them while
//! the upcall runs, so on this single vCPU the table is never changed while the upcall reads
//! it: changes are made with upcalls masked.

use alloc::format;
use alloc::string::{String, ToString};
use core::cell::UnsafeCell;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hypercall_abi::event_channel::{evtchn_2l_word_bit, EvtchnPort, Virq};
use hypercall_abi::vcpu::VcpuOp;
use pvguest::front::evtchn::{self, EventBitmaps, Handler, HandlerTable};
use pvguest::front::{RingEvents, WaitTimeout};

use super::pv;

struct Table(UnsafeCell<HandlerTable>);
// SAFETY: one vCPU; the table is changed only with upcalls masked and read only by the
// upcall (see the module documentation), so accesses never overlap.
unsafe impl Sync for Table {}

static TABLE: Table = Table(UnsafeCell::new(HandlerTable::new()));

/// The event bitmaps of vCPU 0 in the shared-info page.
struct SharedBitmaps;

/// An atomic view of a word of the shared-info page.
///
/// # Safety
///
/// `word` must point into the mapped shared-info page, which Xen updates only atomically.
unsafe fn atomic(word: *const u64) -> &'static AtomicU64 {
    // SAFETY: the caller guarantees the word is in the shared-info page, mapped for the rest
    // of the kernel's life and aligned.
    unsafe { AtomicU64::from_ptr(word as *mut u64) }
}

impl EventBitmaps for SharedBitmaps {
    fn take_selector(&self) -> u64 {
        let v = pv::vcpu0();
        // SAFETY: both fields lie in vCPU 0's vcpu_info in the shared-info page; the pending
        // flag is cleared first, so an event raised during the scan raises it again.
        unsafe {
            addr_of_mut!((*v).evtchn_upcall_pending).write_volatile(0);
            atomic(addr_of!((*v).evtchn_pending_sel)).swap(0, Ordering::SeqCst)
        }
    }

    fn active(&self, word: usize) -> u64 {
        let s = pv::shared_info();
        let word = word % 64;
        // SAFETY: both bitmaps lie in the shared-info page; word < 64.
        unsafe {
            atomic(addr_of!((*s).evtchn_pending[word])).load(Ordering::SeqCst)
                & !atomic(addr_of!((*s).evtchn_mask[word])).load(Ordering::SeqCst)
        }
    }

    fn test_and_clear_pending(&self, port: EvtchnPort) -> bool {
        let (word, bit) = evtchn_2l_word_bit(port);
        let s = pv::shared_info();
        // SAFETY: the pending bitmap lies in the shared-info page; word < 64 for a 2-level
        // port (and `% 64` keeps any other inside it).
        let w = unsafe { atomic(addr_of!((*s).evtchn_pending[word % 64])) };
        w.fetch_and(!(1 << bit), Ordering::SeqCst) & (1 << bit) != 0
    }
}

/// The upcall's work (called from the event entry, upcalls masked by Xen).
pub fn upcall() {
    // SAFETY: upcalls are masked, so no change to the table is in progress (module
    // documentation).
    let table = unsafe { &*TABLE.0.get() };
    table.dispatch(&SharedBitmaps);
}

/// Runs `f` on the table with upcalls masked, restoring the mask afterwards.
fn with_table<R>(f: impl FnOnce(&mut HandlerTable) -> R) -> R {
    // SAFETY: reads the mask byte of vCPU 0 in the shared-info page.
    let was_masked = unsafe { addr_of!((*pv::vcpu0()).evtchn_upcall_mask).read_volatile() } != 0;
    pv::mask_events(true);
    // SAFETY: upcalls are masked on the only vCPU, so the upcall cannot read the table
    // while it changes, and nothing else holds a reference to it.
    let result = f(unsafe { &mut *TABLE.0.get() });
    pv::mask_events(was_masked);
    result
}

/// Gives `port` a handler, then unmasks it.
pub fn bind_handler(port: EvtchnPort, handler: Handler, data: usize) -> Result<(), String> {
    with_table(|t| t.bind(port, handler, data)).map_err(|e| e.to_string())?;
    evtchn::unmask(&pv::hypercalls(), port).map_err(|e| format!("unmask port {port}: {e}"))
}

/// Takes `port`'s handler away.
pub fn unbind_handler(port: EvtchnPort) {
    with_table(|t| t.unbind(port));
}

/// The timer's handler: the wake-up from the block is all it is for.
fn timer_fired(_: EvtchnPort, _: usize) {}

/// Binds `VIRQ_TIMER` (so [`wait_until`] can time out) and stops Xen's default periodic
/// timer, leaving only the one-shot timer [`wait_until`] sets.
pub fn init_timer() -> Result<(), String> {
    let hc = pv::hypercalls();
    let port = evtchn::bind_virq(&hc, Virq::Timer, 0)
        .map_err(|e| format!("bind_virq(VIRQ_TIMER): {e}"))?;
    let mut unused = 0u64;
    // SAFETY: stopping the periodic timer only stops its VIRQ_TIMER events.
    unsafe { hc.vcpu_op(VcpuOp::StopPeriodicTimer, 0, &mut unused) }
        .map_err(|e| format!("stop_periodic_timer: {e}"))?;
    bind_handler(port, timer_fired, 0)
}

/// Waits until `cond` holds (checked with upcalls masked) or `timeout_ns` pass, blocking in
/// between: `SCHEDOP_block` unmasks upcalls and sleeps until one is pending, and the upcall
/// runs the handlers before the block returns (as PVH: a halt with interrupts enabled, and
/// the callback vector runs them). Returns whether `cond` held.
pub fn wait_until(mut cond: impl FnMut() -> bool, timeout_ns: u64) -> bool {
    let hc = pv::hypercalls();
    let deadline = pv::system_time_ns().saturating_add(timeout_ns);
    let met = loop {
        pv::mask_events(true);
        if cond() {
            break true;
        }
        if pv::system_time_ns() >= deadline {
            break false;
        }
        // Should either fail, the loop still ends at the deadline, polling instead.
        let _ = hc.set_timer_op(deadline);
        if super::pvh::is_pvh() {
            super::pvh::wait_for_event();
        } else {
            let _ = hc.sched_op_block();
        }
    };
    let _ = hc.set_timer_op(0);
    met
}

/// Events on ring ports (every [`RingPort`] counts into it).
static RING_EVENTS: AtomicU32 = AtomicU32::new(0);

fn count_ring_event(_: EvtchnPort, _: usize) {
    RING_EVENTS.fetch_add(1, Ordering::SeqCst);
}

/// Events on ring ports so far (they wrap).
pub fn ring_events() -> u32 {
    RING_EVENTS.load(Ordering::SeqCst)
}

/// The event channel of a shared ring, for the front-end library's clients: notifying sends
/// on the port, waiting blocks until an event on any ring port arrived since the last wait
/// (so an event that came between the client's look at the ring and its wait is not lost;
/// one meant for another ring only costs the client another look).
pub struct RingPort {
    /// The local port.
    pub port: EvtchnPort,
    seen: u32,
    timeout_ns: u64,
}

impl RingPort {
    /// Gives `port` the counting handler; waits give up after `timeout_ns`.
    pub fn bind(port: EvtchnPort, timeout_ns: u64) -> Result<RingPort, String> {
        bind_handler(port, count_ring_event, 0)?;
        Ok(RingPort {
            port,
            seen: ring_events(),
            timeout_ns,
        })
    }

    /// Takes the handler away and closes the port.
    pub fn close(self) {
        unbind_handler(self.port);
        let _ = evtchn::close(&pv::hypercalls(), self.port);
    }
}

impl RingEvents for RingPort {
    fn notify(&mut self) {
        // A failed send leaves the peer to find the change when it next looks (the back end
        // also polls); nothing better can be done here.
        let _ = evtchn::send(&pv::hypercalls(), self.port);
    }

    fn wait(&mut self) -> Result<(), WaitTimeout> {
        let seen = self.seen;
        if wait_until(|| ring_events() != seen, self.timeout_ns) {
            self.seen = ring_events();
            Ok(())
        } else {
            Err(WaitTimeout)
        }
    }
}
