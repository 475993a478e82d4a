//! Serial console input: who gets the bytes typed on hv's serial line, and how each kind of
//! domain receives them.
//!
//! - [`router`]: Xen's convention for switching the input: three Ctrl-A in a row move the
//!   focus from hv to each live domain in turn and back to hv.
//! - [`keys`]: what hv does with input while it has the focus (debug keys).
//! - [`InputQueue`]: each domain's queue of input not yet taken, bounded (bytes that do not
//!   fit are dropped and counted), and the [`Sink`] through which the domain takes it.
//! - [`ring`]: hv as the producer of a PV console ring's `in` half.
//!
//! The arch layer polls the UART, feeds the router and moves queued bytes on to each
//! domain's sink; everything here is portable and host-tested.

pub mod keys;
pub mod ring;
pub mod router;

use alloc::collections::VecDeque;

use crate::domain::state::Rings;

/// Bytes of input a domain may have waiting in hv (beyond that, input is dropped).
pub const INPUT_QUEUE_MAX: usize = 1024;

/// How a domain takes its console input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// `CONSOLEIO_read`; `VIRQ_CONSOLE` announces new bytes (the control domain, and any PV
    /// domain without a console ring, which writes with `console_io` too).
    Hypercall,
    /// hv puts the bytes into the `in` half of the console ring in machine frame `mfn` and
    /// raises the domain's ring port `port` (the control domain's back end only consumes
    /// `out`; hv is the single producer of `in`).
    Ring {
        /// Machine frame of the ring page.
        mfn: u64,
        /// The domain's port for the ring.
        port: u32,
    },
    /// The receive FIFO of the domain's emulated 16550 (an unprivileged HVM domain).
    Uart,
}

impl Sink {
    /// The sink of a domain: privileged or not, HVM or PV, with its rings if it has any.
    pub fn for_domain(privileged: bool, hvm: bool, rings: Option<Rings>) -> Sink {
        match rings {
            _ if privileged => Sink::Hypercall,
            _ if hvm => Sink::Uart,
            // A PV domU's frame numbers are machine frames.
            Some(r) => Sink::Ring {
                mfn: r.console_frame,
                port: r.console_port,
            },
            None => Sink::Hypercall,
        }
    }

    /// A word for the debug dump.
    pub fn name(self) -> &'static str {
        match self {
            Sink::Hypercall => "CONSOLEIO_read",
            Sink::Ring { .. } => "console ring",
            Sink::Uart => "UART",
        }
    }
}

/// A domain's console input waiting in hv.
#[derive(Clone, Debug)]
pub struct InputQueue {
    sink: Sink,
    bytes: VecDeque<u8>,
    received: u64,
    dropped: u64,
    /// Bytes were queued since [`InputQueue::take_arrived`] last looked.
    arrived: bool,
}

impl InputQueue {
    /// An empty queue for a domain taking its input through `sink`.
    pub const fn new(sink: Sink) -> Self {
        InputQueue {
            sink,
            bytes: VecDeque::new(),
            received: 0,
            dropped: 0,
            arrived: false,
        }
    }

    /// How the domain takes its input.
    pub fn sink(&self) -> Sink {
        self.sink
    }

    /// Queues what fits of `bytes` (up to [`INPUT_QUEUE_MAX`] waiting); the rest is dropped
    /// and counted. Returns how many were queued.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(INPUT_QUEUE_MAX - self.bytes.len());
        self.bytes.extend(&bytes[..n]);
        self.received += n as u64;
        self.dropped += (bytes.len() - n) as u64;
        self.arrived |= n > 0;
        n
    }

    /// Whether bytes were queued since the last call (for announcing them once).
    pub fn take_arrived(&mut self) -> bool {
        core::mem::take(&mut self.arrived)
    }

    /// Copies up to `buf.len()` waiting bytes, oldest first, leaving them queued; returns
    /// how many.
    pub fn peek_into(&self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.bytes.len());
        for (slot, &b) in buf.iter_mut().zip(self.bytes.iter()) {
            *slot = b;
        }
        n
    }

    /// Takes the `n` oldest bytes out of the queue (all of them if fewer wait).
    pub fn discard(&mut self, n: usize) {
        self.bytes.drain(..n.min(self.bytes.len()));
    }

    /// Offers the waiting bytes, oldest first, to `take`, which returns how many of the ones
    /// it was shown it accepted; those leave the queue. Returns the total accepted.
    pub fn deliver(&mut self, mut take: impl FnMut(&[u8]) -> usize) -> usize {
        let mut total = 0;
        while !self.bytes.is_empty() {
            let (front, _) = self.bytes.as_slices();
            let offered = front.len();
            let n = take(front).min(offered);
            self.bytes.drain(..n);
            total += n;
            if n < offered {
                break;
            }
        }
        total
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes queued since the domain was built.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_and_counts_what_it_drops() {
        let mut q = InputQueue::new(Sink::Hypercall);
        assert!(!q.take_arrived());
        assert_eq!(q.push(b"abc"), 3);
        assert!(q.take_arrived());
        assert!(!q.take_arrived(), "announced once");
        let flood = alloc::vec![b'x'; INPUT_QUEUE_MAX];
        assert_eq!(q.push(&flood), INPUT_QUEUE_MAX - 3);
        assert_eq!(q.len(), INPUT_QUEUE_MAX);
        assert!(q.take_arrived());
        assert_eq!(q.push(b"more"), 0);
        assert!(!q.take_arrived(), "nothing was queued");
        assert_eq!((q.received(), q.dropped()), (INPUT_QUEUE_MAX as u64, 7));
        let mut buf = [0u8; 5];
        assert_eq!(q.peek_into(&mut buf), 5);
        assert_eq!(&buf, b"abcxx");
        assert_eq!(q.len(), INPUT_QUEUE_MAX, "peeking takes nothing");
        q.discard(5);
        assert_eq!(q.push(b"yz"), 2);
        let mut all = alloc::vec![0u8; 2 * INPUT_QUEUE_MAX];
        assert_eq!(q.peek_into(&mut all), INPUT_QUEUE_MAX - 3);
        assert_eq!(&all[INPUT_QUEUE_MAX - 5..INPUT_QUEUE_MAX - 3], b"yz");
        q.discard(usize::MAX);
        assert!(q.is_empty());
        assert_eq!(q.peek_into(&mut buf), 0);
    }

    #[test]
    fn delivery_takes_what_the_sink_accepts_in_order() {
        let mut q = InputQueue::new(Sink::Uart);
        // Wrap the deque so its contents come in two slices.
        q.push(&[0u8; 1000]);
        q.discard(990);
        let text: alloc::vec::Vec<u8> = (0..100u8).collect();
        q.push(&text);
        let mut got = alloc::vec::Vec::new();
        // A sink with room for 7 bytes at a time, called until it is full.
        let mut room = 7;
        let n = q.deliver(|b| {
            let n = b.len().min(room);
            got.extend_from_slice(&b[..n]);
            room -= n;
            n
        });
        assert_eq!(n, 7);
        assert_eq!(q.len(), 103);
        let n = q.deliver(|b| {
            got.extend_from_slice(b);
            b.len()
        });
        assert_eq!(n, 103);
        assert!(q.is_empty());
        assert_eq!(&got[..10], &[0u8; 10]);
        assert_eq!(&got[10..], &text[..]);
        assert_eq!(q.deliver(|_| unreachable!("nothing to offer")), 0);
    }

    #[test]
    fn sinks_follow_privilege_kind_and_rings() {
        let rings = Rings {
            store_frame: 1,
            store_port: 1,
            console_frame: 0x1234,
            console_port: 2,
        };
        assert_eq!(Sink::for_domain(true, false, None), Sink::Hypercall);
        assert_eq!(Sink::for_domain(true, true, None), Sink::Hypercall);
        assert_eq!(Sink::for_domain(false, true, None), Sink::Uart);
        assert_eq!(Sink::for_domain(false, false, None), Sink::Hypercall);
        assert_eq!(
            Sink::for_domain(false, false, Some(rings)),
            Sink::Ring {
                mfn: 0x1234,
                port: 2
            }
        );
    }
}
