//! Framing of xenstore messages on a domain's ring page (`struct xenstore_domain_interface`):
//! two 1024-byte byte rings with free-running 32-bit indices. The guest produces requests into
//! `req` (advancing `req_prod`) and xenstored consumes them (advancing `req_cons`); replies go
//! the other way through `rsp`. A message may straddle the ring's end and arrive or leave in
//! pieces; [`RingTransport`] keeps the partial message between calls.
//!
//! Everything here works on copies of the ring bytes and indices, so it runs on the host; the
//! caller reads the indices, issues the barriers, publishes the new index and notifies the
//! other end.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use hypercall_abi::io::xs_wire::{
    mask_xenstore_idx, XenstoreRingIdx, XsType, XENSTORE_PAYLOAD_MAX, XENSTORE_RING_SIZE,
};

use super::wire::{self, HEADER_LEN};

/// Why a ring could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The producer is more than a ring's size ahead of the consumer: the indices are garbage.
    BadIndex,
    /// The domain has no connection to xenstored.
    NotConnected,
}

/// One connection's partial input and pending output.
#[derive(Debug, Default)]
pub struct RingTransport {
    /// Bytes of the request being assembled.
    rx: Vec<u8>,
    /// Messages to send; the first has had `tx_sent` bytes sent already.
    tx: VecDeque<Vec<u8>>,
    tx_sent: usize,
}

fn used(cons: XenstoreRingIdx, prod: XenstoreRingIdx) -> Result<usize, RingError> {
    let used = prod.wrapping_sub(cons) as usize;
    if used > XENSTORE_RING_SIZE {
        Err(RingError::BadIndex)
    } else {
        Ok(used)
    }
}

impl RingTransport {
    /// A transport with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes request bytes from `ring` between `cons` and `prod` until one message is
    /// complete. Returns the new consumer index and the message (header and payload), if one
    /// was completed.
    ///
    /// A header announcing more than `XENSTORE_PAYLOAD_MAX` bytes cannot be framed: it is
    /// returned alone (so the daemon answers it with an error) and the bytes currently on the
    /// ring are discarded, the stream restarting with the guest's next write.
    pub fn receive(
        &mut self,
        ring: &[u8; XENSTORE_RING_SIZE],
        cons: XenstoreRingIdx,
        prod: XenstoreRingIdx,
    ) -> Result<(XenstoreRingIdx, Option<Vec<u8>>), RingError> {
        let mut avail = used(cons, prod)?;
        let mut cons = cons;
        loop {
            let wanted = match wire::parse_header(&self.rx) {
                None => HEADER_LEN,
                Some(h) if h.len as usize > XENSTORE_PAYLOAD_MAX => {
                    return Ok((prod, Some(core::mem::take(&mut self.rx))));
                }
                Some(h) => HEADER_LEN + h.len as usize,
            };
            if self.rx.len() == wanted {
                return Ok((cons, Some(core::mem::take(&mut self.rx))));
            }
            if avail == 0 {
                return Ok((cons, None));
            }
            let take = (wanted - self.rx.len()).min(avail);
            for _ in 0..take {
                self.rx.push(ring[mask_xenstore_idx(cons)]);
                cons = cons.wrapping_add(1);
            }
            avail -= take;
        }
    }

    /// Queues a message to send.
    pub fn queue(&mut self, message: &[u8]) {
        self.tx.push_back(Vec::from(message));
    }

    /// Whether queued bytes are waiting for ring space.
    pub fn has_pending(&self) -> bool {
        !self.tx.is_empty()
    }

    /// Replies (not watch events) queued and not yet completely sent.
    pub fn pending_replies(&self) -> usize {
        self.tx
            .iter()
            .filter(|m| wire::parse_header(m).is_some_and(|h| h.type_ != XsType::WatchEvent.raw()))
            .count()
    }

    /// Writes as much of the queued output into `ring` as the space between `prod` and `cons`
    /// allows; returns the new producer index.
    pub fn transmit(
        &mut self,
        ring: &mut [u8; XENSTORE_RING_SIZE],
        cons: XenstoreRingIdx,
        prod: XenstoreRingIdx,
    ) -> Result<XenstoreRingIdx, RingError> {
        let mut space = XENSTORE_RING_SIZE - used(cons, prod)?;
        let mut prod = prod;
        while space > 0 {
            let Some(message) = self.tx.front() else {
                break;
            };
            let rest = message.get(self.tx_sent..).unwrap_or(&[]);
            let n = rest.len().min(space);
            for &byte in &rest[..n] {
                ring[mask_xenstore_idx(prod)] = byte;
                prod = prod.wrapping_add(1);
            }
            space -= n;
            self.tx_sent += n;
            if self.tx_sent >= message.len() {
                self.tx.pop_front();
                self.tx_sent = 0;
            }
        }
        Ok(prod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercall_abi::io::xs_wire::XsType;

    fn produce(ring: &mut [u8; XENSTORE_RING_SIZE], prod: &mut u32, bytes: &[u8]) {
        for &b in bytes {
            ring[mask_xenstore_idx(*prod)] = b;
            *prod = prod.wrapping_add(1);
        }
    }

    #[test]
    fn a_message_arriving_in_pieces_across_the_wrap_is_reassembled() {
        let mut ring = [0u8; XENSTORE_RING_SIZE];
        let start = u32::MAX - 5; // indices wrap mid-message too
        let (mut cons, mut prod) = (start, start);
        let msg = wire::encode(XsType::Read, 1, 0, b"/local/domain/1/x\0");
        let mut t = RingTransport::new();
        produce(&mut ring, &mut prod, &msg[..10]);
        let (c, m) = t.receive(&ring, cons, prod).unwrap();
        assert_eq!((c, m), (prod, None));
        cons = c;
        produce(&mut ring, &mut prod, &msg[10..]);
        let (c, m) = t.receive(&ring, cons, prod).unwrap();
        assert_eq!(c, prod);
        assert_eq!(m.unwrap(), msg);
    }

    #[test]
    fn one_message_per_receive() {
        let mut ring = [0u8; XENSTORE_RING_SIZE];
        let mut prod = 0;
        let a = wire::encode(XsType::Read, 1, 0, b"/a\0");
        let b = wire::encode(XsType::Read, 2, 0, b"/b\0");
        produce(&mut ring, &mut prod, &a);
        produce(&mut ring, &mut prod, &b);
        let mut t = RingTransport::new();
        let (cons, m) = t.receive(&ring, 0, prod).unwrap();
        assert_eq!(m.unwrap(), a);
        assert_eq!(cons as usize, a.len());
        let (cons, m) = t.receive(&ring, cons, prod).unwrap();
        assert_eq!((cons, m.unwrap()), (prod, b));
    }

    #[test]
    fn oversized_header_is_returned_alone_and_the_ring_flushed() {
        let mut ring = [0u8; XENSTORE_RING_SIZE];
        let mut prod = 0;
        let mut bad = wire::encode(XsType::Read, 9, 0, b"");
        bad[12..16].copy_from_slice(&5000u32.to_le_bytes());
        produce(&mut ring, &mut prod, &bad);
        produce(&mut ring, &mut prod, b"junk");
        let mut t = RingTransport::new();
        let (cons, m) = t.receive(&ring, 0, prod).unwrap();
        assert_eq!(cons, prod);
        assert_eq!(m.unwrap(), bad);
    }

    #[test]
    fn impossible_indices_are_an_error() {
        let mut ring = [0u8; XENSTORE_RING_SIZE];
        let mut t = RingTransport::new();
        assert_eq!(t.receive(&ring, 0, 1025), Err(RingError::BadIndex));
        t.queue(b"x");
        assert_eq!(t.transmit(&mut ring, 0, 1025), Err(RingError::BadIndex));
        assert_eq!(t.transmit(&mut ring, 5, 0), Err(RingError::BadIndex));
    }

    #[test]
    fn transmit_respects_space_and_resumes() {
        let mut ring = [0u8; XENSTORE_RING_SIZE];
        let mut t = RingTransport::new();
        let big = wire::encode(XsType::Read, 1, 0, &[7u8; 1500]);
        t.queue(&big);
        let prod = t.transmit(&mut ring, 0, 0).unwrap();
        assert_eq!(prod as usize, XENSTORE_RING_SIZE);
        assert!(t.has_pending());
        assert_eq!(t.pending_replies(), 1);
        assert_eq!(t.transmit(&mut ring, 0, prod).unwrap(), prod, "full ring");
        let mut got = Vec::from(&ring[..]);
        let prod2 = t.transmit(&mut ring, prod, prod).unwrap();
        assert_eq!(prod2 as usize, big.len());
        assert!(!t.has_pending());
        got.extend((prod..prod2).map(|i| ring[mask_xenstore_idx(i)]));
        assert_eq!(got, big);
    }
}
