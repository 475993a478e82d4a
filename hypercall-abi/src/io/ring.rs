//! The generic shared request/response ring: a 64-byte header of producer
//! and event indices followed by a power-of-two array of entries, each the
//! size of the larger of the request and response types.

/// Xen's `RING_IDX`: a free-running 32-bit ring index (masked on use).
pub type RingIdx = u32;

/// Header of a shared ring (the fixed part of `struct *_sring`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SringHeader {
    /// Front end: requests produced so far.
    pub req_prod: RingIdx,
    /// Back end: notify the back end when `req_prod` passes this.
    pub req_event: RingIdx,
    /// Back end: responses produced so far.
    pub rsp_prod: RingIdx,
    /// Front end: notify the front end when `rsp_prod` passes this.
    pub rsp_event: RingIdx,
    /// Protocol-private bytes (netif: `smartpoll_active` in byte 0).
    pub pvt: [u8; 4],
    /// Padding up to 64 bytes.
    pub pad: [u8; 44],
}
assert_layout!(
    SringHeader,
    size = 64,
    req_prod = 0,
    req_event = 4,
    rsp_prod = 8,
    rsp_event = 12,
    pvt = 16,
    pad = 20,
);

/// Offset of the entry array from the start of a shared ring.
pub const SRING_ENTRIES_OFFSET: usize = core::mem::size_of::<SringHeader>();

impl SringHeader {
    /// A freshly initialised ring: indices 0, event thresholds 1.
    pub const fn new() -> Self {
        Self {
            req_prod: 0,
            req_event: 1,
            rsp_prod: 0,
            rsp_event: 1,
            pvt: [0; 4],
            pad: [0; 44],
        }
    }
}

impl Default for SringHeader {
    fn default() -> Self {
        Self::new()
    }
}

/// Largest power of two not above `n` (0 for 0).
pub const fn round_down_pow2(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// Entries in a shared ring of `ring_bytes` bytes whose entries are
/// `entry_size` bytes: what fits after the header, rounded down to a power
/// of two. Returns 0 if nothing fits or `entry_size` is 0.
pub const fn ring_entries(ring_bytes: usize, entry_size: usize) -> usize {
    if entry_size == 0 || ring_bytes <= SRING_ENTRIES_OFFSET {
        return 0;
    }
    round_down_pow2((ring_bytes - SRING_ENTRIES_OFFSET) / entry_size)
}

/// Entries in a one-page ring of `Req`/`Rsp` entries.
pub const fn page_ring_entries<Req, Rsp>() -> usize {
    let req = core::mem::size_of::<Req>();
    let rsp = core::mem::size_of::<Rsp>();
    ring_entries(crate::PAGE_SIZE, if req > rsp { req } else { rsp })
}

/// Byte offset within the ring of the slot for free-running index `idx`,
/// or `None` if `nr_entries` is not a power of two or the offset overflows.
pub const fn entry_offset(idx: RingIdx, nr_entries: usize, entry_size: usize) -> Option<usize> {
    if !nr_entries.is_power_of_two() {
        return None;
    }
    match (idx as usize & (nr_entries - 1)).checked_mul(entry_size) {
        Some(off) => off.checked_add(SRING_ENTRIES_OFFSET),
        None => None,
    }
}

/// Whether the other end must be notified after moving a producer index from
/// `old` to `new` given the other end's event threshold `event` (the
/// `RING_PUSH_*_AND_CHECK_NOTIFY` rule: notify iff `event` lies in
/// `(old, new]`, computed with wrapping arithmetic).
pub const fn need_notify(old: RingIdx, new: RingIdx, event: RingIdx) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_64_bytes() {
        assert_eq!(core::mem::size_of::<SringHeader>(), 64);
        assert_eq!(core::mem::offset_of!(SringHeader, rsp_event), 12);
        let h = SringHeader::new();
        assert_eq!(
            (h.req_prod, h.req_event, h.rsp_prod, h.rsp_event),
            (0, 1, 0, 1)
        );
    }

    #[test]
    fn ring_size_arithmetic() {
        assert_eq!(round_down_pow2(0), 0);
        assert_eq!(round_down_pow2(1), 1);
        assert_eq!(round_down_pow2(36), 32);
        assert_eq!(round_down_pow2(256), 256);
        // 4032 bytes of entries: 112-byte entries -> 36 -> 32 slots.
        assert_eq!(ring_entries(4096, 112), 32);
        assert_eq!(ring_entries(4096, 12), 256);
        assert_eq!(ring_entries(4096, 8), 256);
        assert_eq!(ring_entries(4096, 4096), 0);
        assert_eq!(ring_entries(4096, 0), 0);
        assert_eq!(ring_entries(64, 8), 0);
        assert_eq!(page_ring_entries::<[u8; 112], [u8; 16]>(), 32);
        assert_eq!(entry_offset(33, 32, 112), Some(64 + 112));
        assert_eq!(entry_offset(1, 0, 112), None);
        assert_eq!(entry_offset(1, 24, 112), None);
    }

    #[test]
    fn notify_rule_handles_wrap() {
        assert!(need_notify(0, 1, 1));
        assert!(!need_notify(1, 2, 1));
        assert!(need_notify(0, 5, 3));
        assert!(!need_notify(0, 5, 6));
        assert!(need_notify(u32::MAX, 1, 0));
        assert!(!need_notify(5, 5, 5));
    }
}
