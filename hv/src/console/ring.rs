//! hv as the producer of a PV console ring's `in` half (`struct xencons_interface`): the
//! bytes typed for a domU whose console the control domain's back end serves. The back end
//! only consumes `out`, so hv is the one producer of `in` and the domU its consumer.
//!
//! The ring lives in the domU's memory: `in_cons` (and `in_prod`, which only hv should
//! write) may hold anything. Indices are free-running and masked by the ring size; hv never
//! lets `in_prod` run more than the ring's size ahead of `in_cons`, and refuses to produce
//! into a ring whose indices are already impossible. The domU's index is read with acquire
//! ordering before its space is reused, and the bytes are written before `in_prod` is
//! published with release ordering (the `mb()`/`wmb()` of Xen's ring protocol).

use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::io::console::{mask_in, XenconsInterface, XENCONS_IN_SIZE};

/// The ring's `in` indices are impossible (the producer is more than the ring's size ahead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadIndex {
    /// `in_prod` as found.
    pub prod: u32,
    /// `in_cons` as found.
    pub cons: u32,
}

/// Copies as much of `bytes` as fits into the `in` half of the ring at `page`, publishes it
/// and returns how many bytes went in (0 when the ring is full).
///
/// # Safety
///
/// `page` must be valid for reads and writes of a whole `XenconsInterface` and 4-byte
/// aligned, and no Rust reference may cover it during the call (the domain owns it).
pub unsafe fn produce_in(page: *mut XenconsInterface, bytes: &[u8]) -> Result<usize, BadIndex> {
    // SAFETY: the caller vouches for the page; the indices are aligned u32s inside it, only
    // reached through atomics here.
    let (prod_at, cons_at) = unsafe {
        (
            AtomicU32::from_ptr(addr_of_mut!((*page).in_prod)),
            AtomicU32::from_ptr(addr_of_mut!((*page).in_cons)),
        )
    };
    let prod = prod_at.load(Ordering::Relaxed);
    let cons = cons_at.load(Ordering::Acquire);
    let used = prod.wrapping_sub(cons);
    if used as usize > XENCONS_IN_SIZE {
        return Err(BadIndex { prod, cons });
    }
    let n = bytes.len().min(XENCONS_IN_SIZE - used as usize);
    // SAFETY: as above; only computes the address of the byte array.
    let data = unsafe { addr_of_mut!((*page).in_) }.cast::<u8>();
    for (i, &b) in bytes[..n].iter().enumerate() {
        // SAFETY: the masked index is inside the array; the slots between prod and
        // cons + size are the producer's until the index is published.
        unsafe {
            data.add(mask_in(prod.wrapping_add(i as u32)))
                .write_volatile(b)
        };
    }
    prod_at.store(prod.wrapping_add(n as u32), Ordering::Release);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    struct Page(*mut XenconsInterface);

    impl Page {
        fn new() -> Self {
            Page(Box::into_raw(Box::new(XenconsInterface::new())))
        }
        fn produce(&self, bytes: &[u8]) -> Result<usize, BadIndex> {
            // SAFETY: a live allocation reached only through raw pointers.
            unsafe { produce_in(self.0, bytes) }
        }
        /// The domU's side: takes everything waiting.
        fn consume(&self) -> Vec<u8> {
            // SAFETY: as above; no produce call is running.
            let p = unsafe { &mut *self.0 };
            let mut out = Vec::new();
            while p.in_cons != p.in_prod {
                out.push(p.in_[mask_in(p.in_cons)]);
                p.in_cons = p.in_cons.wrapping_add(1);
            }
            out
        }
        fn set(&self, prod: u32, cons: u32) {
            // SAFETY: as above.
            unsafe { ((*self.0).in_prod, (*self.0).in_cons) = (prod, cons) };
        }
        fn prod(&self) -> u32 {
            // SAFETY: as above.
            unsafe { (*self.0).in_prod }
        }
    }

    impl Drop for Page {
        fn drop(&mut self) {
            // SAFETY: allocated in `new`, no longer used.
            drop(unsafe { Box::from_raw(self.0) });
        }
    }

    #[test]
    fn bytes_arrive_in_order_and_a_full_ring_takes_nothing() {
        let page = Page::new();
        assert_eq!(page.produce(b"hello\n"), Ok(6));
        assert_eq!(page.consume(), b"hello\n");
        let big: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        assert_eq!(page.produce(&big), Ok(XENCONS_IN_SIZE));
        assert_eq!(page.produce(b"x"), Ok(0), "full");
        assert_eq!(page.consume(), &big[..XENCONS_IN_SIZE]);
        assert_eq!(
            page.produce(&big[XENCONS_IN_SIZE..]),
            Ok(2000 - XENCONS_IN_SIZE)
        );
        assert_eq!(page.consume(), &big[XENCONS_IN_SIZE..]);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let page = Page::new();
        page.set(u32::MAX - 2, u32::MAX - 2);
        assert_eq!(page.produce(b"abcdef"), Ok(6));
        assert_eq!(page.prod(), 3);
        assert_eq!(page.consume(), b"abcdef");
    }

    #[test]
    fn a_hostile_consumer_index_never_lets_hv_overrun() {
        let page = Page::new();
        // The domU claims to have consumed bytes never produced.
        page.set(10, 500);
        assert_eq!(
            page.produce(b"x"),
            Err(BadIndex {
                prod: 10,
                cons: 500
            })
        );
        assert_eq!(page.prod(), 10, "nothing published");
        // A consumer index far behind: the ring looks full, not writable.
        page.set(5000, 5000 - XENCONS_IN_SIZE as u32);
        assert_eq!(page.produce(b"x"), Ok(0));
        page.set(5000, 5001);
        assert!(page.produce(b"x").is_err());
    }
}
