//! Event channels from the guest's side: the `EVTCHNOP_*` calls a driver makes, and the table
//! of per-port handlers that the event upcall dispatches through.
//!
//! The dispatch follows Xen's 2-level ABI: the upcall clears `evtchn_upcall_pending`, takes
//! (atomically swaps to 0) the vCPU's `evtchn_pending_sel`, and for each selector bit scans
//! that word of the shared-info pending bitmap, skipping masked ports. A port with a handler
//! has its pending bit cleared (atomically, before the handler runs, so an event raised while
//! the handler runs is seen by the next upcall) and its handler called. A port without a
//! handler keeps its pending bit: code that waits on it with `SCHEDOP_poll` or by testing the
//! bit owns it.

use hypercall_abi::call::{HypercallPage, HypercallResult};
use hypercall_abi::errno::HypercallError;
use hypercall_abi::event_channel::{
    evtchn_2l_word_bit, EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVirq,
    EvtchnClose, EvtchnOpArg, EvtchnPort, EvtchnSend, EvtchnStatus, EvtchnUnmask, Virq,
};
use hypercall_abi::xen::DOMID_SELF;
use hypercall_abi::DomId;

/// The way to `event_channel_op` (the hypercall page, or a fake in tests).
pub trait EvtchnHypercall {
    /// `event_channel_op` with the sub-command of `T`.
    fn event_channel_op<T: EvtchnOpArg>(&self, op: &mut T) -> HypercallResult;
}

impl EvtchnHypercall for HypercallPage {
    fn event_channel_op<T: EvtchnOpArg>(&self, op: &mut T) -> HypercallResult {
        HypercallPage::event_channel_op(self, op)
    }
}

/// `EVTCHNOP_alloc_unbound`: a new port of this domain that `remote` may bind.
pub fn alloc_unbound(
    hc: &impl EvtchnHypercall,
    remote: DomId,
) -> Result<EvtchnPort, HypercallError> {
    let mut op = EvtchnAllocUnbound {
        dom: DOMID_SELF,
        remote_dom: remote,
        port: 0,
    };
    hc.event_channel_op(&mut op)?;
    Ok(op.port)
}

/// `EVTCHNOP_bind_interdomain`: connects a new local port to `remote`'s unbound
/// `remote_port`.
pub fn bind_interdomain(
    hc: &impl EvtchnHypercall,
    remote: DomId,
    remote_port: EvtchnPort,
) -> Result<EvtchnPort, HypercallError> {
    let mut op = EvtchnBindInterdomain {
        remote_dom: remote,
        pad0: 0,
        remote_port,
        local_port: 0,
    };
    hc.event_channel_op(&mut op)?;
    Ok(op.local_port)
}

/// `EVTCHNOP_bind_virq`: a port for `virq` on `vcpu`.
pub fn bind_virq(
    hc: &impl EvtchnHypercall,
    virq: Virq,
    vcpu: u32,
) -> Result<EvtchnPort, HypercallError> {
    let mut op = EvtchnBindVirq {
        virq: virq.raw(),
        vcpu,
        port: 0,
    };
    hc.event_channel_op(&mut op)?;
    Ok(op.port)
}

/// `EVTCHNOP_bind_ipi`: a port that signals `vcpu` of this domain.
pub fn bind_ipi(hc: &impl EvtchnHypercall, vcpu: u32) -> Result<EvtchnPort, HypercallError> {
    let mut op = EvtchnBindIpi { vcpu, port: 0 };
    hc.event_channel_op(&mut op)?;
    Ok(op.port)
}

/// `EVTCHNOP_send`: raises the event at the other end of `port`.
pub fn send(hc: &impl EvtchnHypercall, port: EvtchnPort) -> Result<(), HypercallError> {
    hc.event_channel_op(&mut EvtchnSend { port }).map(|_| ())
}

/// `EVTCHNOP_close`.
pub fn close(hc: &impl EvtchnHypercall, port: EvtchnPort) -> Result<(), HypercallError> {
    hc.event_channel_op(&mut EvtchnClose { port }).map(|_| ())
}

/// `EVTCHNOP_unmask`: clears the mask bit (Xen re-raises the upcall if the port is pending).
pub fn unmask(hc: &impl EvtchnHypercall, port: EvtchnPort) -> Result<(), HypercallError> {
    hc.event_channel_op(&mut EvtchnUnmask { port }).map(|_| ())
}

/// `EVTCHNOP_status` of one of this domain's ports.
pub fn status(hc: &impl EvtchnHypercall, port: EvtchnPort) -> Result<EvtchnStatus, HypercallError> {
    let mut op = EvtchnStatus {
        dom: DOMID_SELF,
        port,
        ..EvtchnStatus::default()
    };
    hc.event_channel_op(&mut op)?;
    Ok(op)
}

/// The event bitmaps of one vCPU as the upcall sees them (shared-info page and `vcpu_info`,
/// or a fake in tests). Every access is atomic: Xen sets bits concurrently.
pub trait EventBitmaps {
    /// Clears `evtchn_upcall_pending`, then swaps `evtchn_pending_sel` with 0 and returns it.
    fn take_selector(&self) -> u64;
    /// Pending and not masked ports of pending word `word`.
    fn active(&self, word: usize) -> u64;
    /// Clears `port`'s pending bit; returns whether it was set.
    fn test_and_clear_pending(&self, port: EvtchnPort) -> bool;
}

/// A port's handler: called from the upcall with the port and the handler's data word.
pub type Handler = fn(EvtchnPort, usize);

/// Ports that may have handlers: the first 16 pending words (a driver's ports are allocated
/// lowest first, so this is plenty; higher ports stay for polling).
pub const MAX_HANDLED_PORTS: EvtchnPort = 1024;
const WORDS: usize = (MAX_HANDLED_PORTS / 64) as usize;

/// A port's handler and its data.
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    /// Called for each event.
    pub handler: Handler,
    /// Passed to the handler.
    pub data: usize,
}

/// Why a handler could not be bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    /// The port is at or above [`MAX_HANDLED_PORTS`].
    PortTooHigh(EvtchnPort),
    /// The port has a handler already.
    Busy(EvtchnPort),
}

impl core::fmt::Display for BindError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BindError::PortTooHigh(p) => {
                write!(
                    f,
                    "port {p} is beyond the {MAX_HANDLED_PORTS} with handlers"
                )
            }
            BindError::Busy(p) => write!(f, "port {p} has a handler already"),
        }
    }
}

/// What one dispatch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dispatched {
    /// Handlers called.
    pub handled: u32,
    /// Selector words scanned.
    pub words: u32,
}

/// The per-port handlers.
#[derive(Debug)]
pub struct HandlerTable {
    /// Which ports have a handler, as pending words.
    bound: [u64; WORDS],
    slots: [Option<Binding>; MAX_HANDLED_PORTS as usize],
}

impl Default for HandlerTable {
    fn default() -> Self {
        Self::new()
    }
}

impl HandlerTable {
    /// No handlers.
    pub const fn new() -> Self {
        HandlerTable {
            bound: [0; WORDS],
            slots: [None; MAX_HANDLED_PORTS as usize],
        }
    }

    /// Gives `port` a handler.
    pub fn bind(
        &mut self,
        port: EvtchnPort,
        handler: Handler,
        data: usize,
    ) -> Result<(), BindError> {
        let slot = self
            .slots
            .get_mut(port as usize)
            .ok_or(BindError::PortTooHigh(port))?;
        if slot.is_some() {
            return Err(BindError::Busy(port));
        }
        *slot = Some(Binding { handler, data });
        let (word, bit) = evtchn_2l_word_bit(port);
        self.bound[word] |= 1 << bit;
        Ok(())
    }

    /// Removes `port`'s handler, returning it.
    pub fn unbind(&mut self, port: EvtchnPort) -> Option<Binding> {
        let binding = self.slots.get_mut(port as usize)?.take()?;
        let (word, bit) = evtchn_2l_word_bit(port);
        self.bound[word] &= !(1 << bit);
        Some(binding)
    }

    /// `port`'s handler.
    pub fn binding(&self, port: EvtchnPort) -> Option<Binding> {
        self.slots.get(port as usize).copied().flatten()
    }

    /// The upcall's work: the 2-level scan described in the module documentation. Each
    /// selected word is scanned once, from a snapshot, so a port that keeps firing cannot
    /// starve the others: its new event re-raises the upcall.
    pub fn dispatch(&self, bitmaps: &impl EventBitmaps) -> Dispatched {
        let mut done = Dispatched::default();
        let mut selector = bitmaps.take_selector();
        while selector != 0 {
            let word = selector.trailing_zeros() as usize;
            selector &= selector - 1;
            done.words += 1;
            let Some(&bound) = self.bound.get(word) else {
                continue;
            };
            let mut ready = bitmaps.active(word) & bound;
            while ready != 0 {
                let bit = ready.trailing_zeros();
                ready &= ready - 1;
                let port = (word as u32) * 64 + bit;
                if !bitmaps.test_and_clear_pending(port) {
                    continue;
                }
                if let Some(b) = self.binding(port) {
                    (b.handler)(port, b.data);
                    done.handled += 1;
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use core::cell::{Cell, RefCell};
    use core::sync::atomic::{AtomicUsize, Ordering};
    use hypercall_abi::errno::Errno;
    use hypercall_abi::event_channel::EvtchnOp;

    /// Shared-info bitmaps of a fake vCPU.
    struct Bits {
        upcall_pending: Cell<bool>,
        selector: Cell<u64>,
        pending: RefCell<[u64; 64]>,
        mask: RefCell<[u64; 64]>,
    }

    impl Bits {
        fn new() -> Self {
            Bits {
                upcall_pending: Cell::new(false),
                selector: Cell::new(0),
                pending: RefCell::new([0; 64]),
                mask: RefCell::new([0; 64]),
            }
        }

        /// What Xen does on a send: set pending; if unmasked, the selector bit and the upcall.
        fn raise(&self, port: EvtchnPort) {
            let (w, b) = evtchn_2l_word_bit(port);
            self.pending.borrow_mut()[w] |= 1 << b;
            if self.mask.borrow()[w] & (1 << b) == 0 {
                self.selector.set(self.selector.get() | 1 << w);
                self.upcall_pending.set(true);
            }
        }

        fn is_pending(&self, port: EvtchnPort) -> bool {
            let (w, b) = evtchn_2l_word_bit(port);
            self.pending.borrow()[w] & (1 << b) != 0
        }
    }

    impl EventBitmaps for Bits {
        fn take_selector(&self) -> u64 {
            self.upcall_pending.set(false);
            self.selector.replace(0)
        }
        fn active(&self, word: usize) -> u64 {
            self.pending.borrow()[word] & !self.mask.borrow()[word]
        }
        fn test_and_clear_pending(&self, port: EvtchnPort) -> bool {
            let was = self.is_pending(port);
            let (w, b) = evtchn_2l_word_bit(port);
            self.pending.borrow_mut()[w] &= !(1 << b);
            was
        }
    }

    static CALLS: std::sync::Mutex<Vec<(EvtchnPort, usize)>> = std::sync::Mutex::new(Vec::new());
    static COUNT: AtomicUsize = AtomicUsize::new(0);

    fn record(port: EvtchnPort, data: usize) {
        CALLS.lock().unwrap().push((port, data));
    }

    fn count(_: EvtchnPort, _: usize) {
        COUNT.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn scan_dispatches_bound_unmasked_pending_ports_and_clears_only_them() {
        let mut table = HandlerTable::new();
        for (port, data) in [(1, 10), (63, 11), (64, 12), (130, 13), (200, 14)] {
            table.bind(port, record, data).unwrap();
        }
        let bits = Bits::new();
        bits.mask.borrow_mut()[3] = 1 << (200 - 192);
        for port in [1, 63, 64, 130, 200, 5, 2000] {
            bits.raise(port);
        }
        CALLS.lock().unwrap().clear();
        let done = table.dispatch(&bits);
        assert_eq!(
            *CALLS.lock().unwrap(),
            [(1, 10), (63, 11), (64, 12), (130, 13)]
        );
        assert_eq!(done.handled, 4);
        assert_eq!(done.words, 4);
        assert!(!bits.upcall_pending.get());
        assert_eq!(bits.selector.get(), 0);
        for port in [1, 63, 64, 130] {
            assert!(!bits.is_pending(port), "port {port}");
        }
        // Masked, unbound and beyond-the-table ports keep their pending bits for pollers.
        for port in [200, 5, 2000] {
            assert!(bits.is_pending(port), "port {port}");
        }
        // Nothing new: nothing dispatched.
        CALLS.lock().unwrap().clear();
        assert_eq!(table.dispatch(&bits), Dispatched::default());
        assert!(CALLS.lock().unwrap().is_empty());
    }

    #[test]
    fn a_port_raised_again_counts_once_per_upcall() {
        let mut table = HandlerTable::new();
        table.bind(7, count, 0).unwrap();
        let bits = Bits::new();
        let before = COUNT.load(Ordering::SeqCst);
        bits.raise(7);
        bits.raise(7);
        assert_eq!(table.dispatch(&bits).handled, 1);
        bits.raise(7);
        assert_eq!(table.dispatch(&bits).handled, 1);
        assert_eq!(COUNT.load(Ordering::SeqCst) - before, 2);
        assert!(!bits.is_pending(7));
    }

    #[test]
    fn bind_and_unbind_rules() {
        let mut table = HandlerTable::new();
        assert_eq!(table.bind(3, count, 1), Ok(()));
        assert_eq!(table.bind(3, count, 2), Err(BindError::Busy(3)));
        assert_eq!(
            table.bind(MAX_HANDLED_PORTS, count, 0),
            Err(BindError::PortTooHigh(MAX_HANDLED_PORTS))
        );
        assert_eq!(table.unbind(3).map(|b| b.data), Some(1));
        assert!(table.unbind(3).is_none());
        assert!(table.binding(3).is_none());
        assert!(table.unbind(u32::MAX).is_none());
        let bits = Bits::new();
        bits.raise(3);
        assert_eq!(table.dispatch(&bits).handled, 0);
        assert!(bits.is_pending(3));
    }

    /// Records the sub-commands and answers like a tiny Xen.
    struct FakeXen {
        ops: RefCell<Vec<EvtchnOp>>,
    }

    impl EvtchnHypercall for FakeXen {
        fn event_channel_op<T: EvtchnOpArg>(&self, op: &mut T) -> HypercallResult {
            self.ops.borrow_mut().push(T::CMD);
            let p = op as *mut T as *mut u8;
            // SAFETY: each arm writes a field of the structure `T::CMD` names, inside `op`.
            unsafe {
                match T::CMD {
                    EvtchnOp::AllocUnbound => p.add(4).cast::<u32>().write(5),
                    EvtchnOp::BindInterdomain => p.add(8).cast::<u32>().write(6),
                    EvtchnOp::BindVirq => p.add(8).cast::<u32>().write(7),
                    EvtchnOp::BindIpi => p.add(4).cast::<u32>().write(8),
                    EvtchnOp::Status => p.add(8).cast::<u32>().write(2),
                    EvtchnOp::Send => return Err(HypercallError::Errno(Errno::EINVAL)),
                    _ => {}
                }
            }
            Ok(0)
        }
    }

    #[test]
    fn wrappers_fill_in_and_read_out_the_right_fields() {
        let xen = FakeXen {
            ops: RefCell::new(Vec::new()),
        };
        assert_eq!(alloc_unbound(&xen, 2), Ok(5));
        assert_eq!(bind_interdomain(&xen, 2, 1), Ok(6));
        assert_eq!(bind_virq(&xen, Virq::Timer, 0), Ok(7));
        assert_eq!(bind_ipi(&xen, 0), Ok(8));
        assert_eq!(status(&xen, 5).map(|s| s.status), Ok(2));
        assert_eq!(send(&xen, 5), Err(HypercallError::Errno(Errno::EINVAL)));
        assert_eq!(unmask(&xen, 5), Ok(()));
        assert_eq!(close(&xen, 5), Ok(()));
        assert_eq!(
            *xen.ops.borrow(),
            [
                EvtchnOp::AllocUnbound,
                EvtchnOp::BindInterdomain,
                EvtchnOp::BindVirq,
                EvtchnOp::BindIpi,
                EvtchnOp::Status,
                EvtchnOp::Send,
                EvtchnOp::Unmask,
                EvtchnOp::Close
            ]
        );
    }
}
