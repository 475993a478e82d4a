//! One direction of a byte ring shared with another domain: a power-of-two byte array and two
//! free-running 32-bit indices, the producer's and the consumer's (Xen's console and xenstore
//! rings). Each side writes only its own index; the indices are read and published with
//! acquire/release atomics, which give the barriers Xen's `rmb()`/`wmb()`/`mb()` place around
//! them. The bytes themselves are accessed with volatile reads and writes: the other domain
//! changes them behind the compiler's back.

use core::sync::atomic::{AtomicU32, Ordering};

/// The indices of a ring cannot be right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The producer is more than the ring's size ahead of the consumer.
    BadIndex {
        /// Producer index.
        prod: u32,
        /// Consumer index.
        cons: u32,
    },
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingError::BadIndex { prod, cons } => {
                write!(
                    f,
                    "ring indices prod {prod:#x} cons {cons:#x} are impossible"
                )
            }
        }
    }
}

/// One direction of a shared byte ring.
#[derive(Debug)]
pub struct ByteRing {
    data: *mut u8,
    size: u32,
    prod: *const AtomicU32,
    cons: *const AtomicU32,
}

impl ByteRing {
    /// The ring of `size` bytes at `data`, with its producer index at `prod` and its consumer
    /// index at `cons`.
    ///
    /// # Safety
    ///
    /// `size` must be a power of two; `data` must be valid for reads and writes of `size`
    /// bytes and `prod`/`cons` for atomic access to an aligned `u32` each, for as long as the
    /// ring is used. No Rust reference may cover them meanwhile (the other domain writes them).
    pub unsafe fn new(data: *mut u8, size: usize, prod: *mut u32, cons: *mut u32) -> Self {
        debug_assert!(size.is_power_of_two() && u32::try_from(size).is_ok());
        ByteRing {
            data,
            size: size as u32,
            prod: prod as *const AtomicU32,
            cons: cons as *const AtomicU32,
        }
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: `new`'s caller guarantees `prod` is valid for atomic access.
        unsafe { &*self.prod }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: `new`'s caller guarantees `cons` is valid for atomic access.
        unsafe { &*self.cons }
    }

    fn used(&self, prod: u32, cons: u32) -> Result<u32, RingError> {
        let used = prod.wrapping_sub(cons);
        if used > self.size {
            Err(RingError::BadIndex { prod, cons })
        } else {
            Ok(used)
        }
    }

    fn slot(&self, index: u32) -> *mut u8 {
        // SAFETY: the masked index is below `size`, inside the array `new` was given.
        unsafe { self.data.add((index & (self.size - 1)) as usize) }
    }

    /// Bytes waiting to be consumed.
    pub fn available(&self) -> Result<usize, RingError> {
        let prod = self.prod().load(Ordering::Acquire);
        let cons = self.cons().load(Ordering::Acquire);
        self.used(prod, cons).map(|n| n as usize)
    }

    /// As producer: copies as much of `bytes` as fits into the ring and publishes it. Returns
    /// how many bytes were produced (0 when the ring is full).
    pub fn produce(&self, bytes: &[u8]) -> Result<usize, RingError> {
        // Our own index needs no ordering; the consumer's must be read before we reuse the
        // space it frees (acquire).
        let prod = self.prod().load(Ordering::Relaxed);
        let cons = self.cons().load(Ordering::Acquire);
        let free = self.size - self.used(prod, cons)?;
        let n = bytes.len().min(free as usize);
        for (i, &b) in bytes[..n].iter().enumerate() {
            // SAFETY: `slot` stays inside the ring; the bytes between prod and cons + size
            // belong to the producer until the index is published.
            unsafe { self.slot(prod.wrapping_add(i as u32)).write_volatile(b) };
        }
        // Release: the bytes are visible before the index that announces them (wmb).
        self.prod()
            .store(prod.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }

    /// As consumer: copies up to `buf.len()` waiting bytes out of the ring and frees their
    /// space. Returns how many bytes were consumed.
    pub fn consume(&self, buf: &mut [u8]) -> Result<usize, RingError> {
        // Acquire: the bytes are read only after the index that announced them (rmb).
        let prod = self.prod().load(Ordering::Acquire);
        let cons = self.cons().load(Ordering::Relaxed);
        let n = buf.len().min(self.used(prod, cons)? as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            // SAFETY: `slot` stays inside the ring; the bytes between cons and prod are the
            // consumer's to read until the index moves.
            *b = unsafe { self.slot(cons.wrapping_add(i as u32)).read_volatile() };
        }
        // Release: the bytes are read before the space is handed back (mb).
        self.cons()
            .store(cons.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    struct Fake {
        data: Vec<u8>,
        prod: u32,
        cons: u32,
    }

    impl Fake {
        fn new(size: usize, start: u32) -> Self {
            Fake {
                data: vec![0; size],
                prod: start,
                cons: start,
            }
        }

        fn ring(&mut self) -> ByteRing {
            // SAFETY: the fake outlives the ring in every test and no reference covers it
            // while the ring is used.
            unsafe {
                ByteRing::new(
                    self.data.as_mut_ptr(),
                    self.data.len(),
                    &mut self.prod,
                    &mut self.cons,
                )
            }
        }
    }

    #[test]
    fn fills_then_refuses_then_drains_across_the_wrap() {
        let mut fake = Fake::new(8, u32::MAX - 2);
        let ring = fake.ring();
        assert_eq!(ring.produce(b"abcdef"), Ok(6));
        assert_eq!(ring.produce(b"ghijk"), Ok(2));
        assert_eq!(ring.produce(b"x"), Ok(0));
        assert_eq!(ring.available(), Ok(8));
        let mut out = [0u8; 5];
        assert_eq!(ring.consume(&mut out), Ok(5));
        assert_eq!(&out, b"abcde");
        assert_eq!(ring.produce(b"lm"), Ok(2));
        let mut rest = [0u8; 16];
        assert_eq!(ring.consume(&mut rest), Ok(5));
        assert_eq!(&rest[..5], b"fghlm");
        assert_eq!(ring.consume(&mut rest), Ok(0));
        assert_eq!(fake.prod, fake.cons);
        assert_eq!(fake.prod, (u32::MAX - 2).wrapping_add(10));
    }

    #[test]
    fn impossible_indices_are_errors_not_overruns() {
        let mut fake = Fake::new(8, 0);
        fake.prod = 9;
        let ring = fake.ring();
        let err = RingError::BadIndex { prod: 9, cons: 0 };
        assert_eq!(ring.produce(b"a"), Err(err));
        assert_eq!(ring.consume(&mut [0; 4]), Err(err));
        assert_eq!(ring.available(), Err(err));
    }

    proptest! {
        #[test]
        fn bytes_arrive_in_order(
            start in any::<u32>(),
            chunks in proptest::collection::vec((1usize..20, 1usize..20), 1..40),
        ) {
            let mut fake = Fake::new(16, start);
            let ring = fake.ring();
            let mut sent = Vec::new();
            let mut got = Vec::new();
            let mut next = 0u8;
            for (w, r) in chunks {
                let bytes: Vec<u8> = (0..w).map(|i| next.wrapping_add(i as u8)).collect();
                let n = ring.produce(&bytes).unwrap();
                next = next.wrapping_add(n as u8);
                sent.extend_from_slice(&bytes[..n]);
                let mut buf = vec![0; r];
                let n = ring.consume(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                prop_assert!(ring.available().unwrap() <= 16);
            }
            let mut buf = [0u8; 16];
            let n = ring.consume(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            prop_assert_eq!(got, sent);
        }
    }
}
