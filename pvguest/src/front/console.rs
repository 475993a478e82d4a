//! The PV console front end: the guest's side of a `xencons_interface` page. Output goes into
//! `out` (the guest produces, the back end consumes), input comes from `in` (the other way).
//! After producing or consuming, the guest notifies the console event channel.

use core::ptr::addr_of_mut;

use hypercall_abi::io::console::{XenconsInterface, XENCONS_IN_SIZE, XENCONS_OUT_SIZE};

use super::ring::{ByteRing, RingError};
use super::{RingEvents, WaitTimeout};

/// Why console output could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleError {
    /// The ring's indices are impossible.
    Ring(RingError),
    /// The back end did not make room in time.
    Timeout,
}

impl From<RingError> for ConsoleError {
    fn from(e: RingError) -> Self {
        ConsoleError::Ring(e)
    }
}

impl From<WaitTimeout> for ConsoleError {
    fn from(_: WaitTimeout) -> Self {
        ConsoleError::Timeout
    }
}

/// A console ring and its event channel.
#[derive(Debug)]
pub struct ConsoleFront<E: RingEvents> {
    out: ByteRing,
    input: ByteRing,
    events: E,
}

impl<E: RingEvents> ConsoleFront<E> {
    /// The console whose ring page is mapped at `page`, notified through `events`.
    ///
    /// # Safety
    ///
    /// `page` must stay mapped, readable and writable for as long as the console is used, and
    /// no Rust reference may cover it (the back end writes it).
    pub unsafe fn new(page: *mut XenconsInterface, events: E) -> Self {
        // SAFETY: the fields lie inside the page the caller vouches for; both sizes are
        // powers of two and the indices are aligned u32s.
        unsafe {
            ConsoleFront {
                out: ByteRing::new(
                    addr_of_mut!((*page).out).cast(),
                    XENCONS_OUT_SIZE,
                    addr_of_mut!((*page).out_prod),
                    addr_of_mut!((*page).out_cons),
                ),
                input: ByteRing::new(
                    addr_of_mut!((*page).in_).cast(),
                    XENCONS_IN_SIZE,
                    addr_of_mut!((*page).in_prod),
                    addr_of_mut!((*page).in_cons),
                ),
                events,
            }
        }
    }

    /// Writes all of `bytes`, notifying the back end after each piece and waiting for room
    /// when the ring is full.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ConsoleError> {
        let mut sent = 0;
        while sent < bytes.len() {
            let n = self.out.produce(&bytes[sent..])?;
            if n == 0 {
                self.events.wait()?;
                continue;
            }
            sent += n;
            self.events.notify();
        }
        Ok(())
    }

    /// Waits for the next event on the console's port (the back end's, or hv's when it
    /// puts input into the ring), or the wait's timeout.
    pub fn wait(&mut self) -> Result<(), WaitTimeout> {
        self.events.wait()
    }

    /// Reads what input is waiting (up to `buf.len()` bytes) and tells the back end there is
    /// room again.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, RingError> {
        let n = self.input.consume(buf)?;
        if n > 0 {
            self.events.notify();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    /// A back end that drains the output ring into `log` whenever the front end waits, and
    /// counts notifications.
    struct Backend {
        page: *mut XenconsInterface,
        log: Vec<u8>,
        notified: u32,
        drain: bool,
    }

    impl Backend {
        fn drain(&mut self) {
            // SAFETY: the page outlives the back end; the front end is not running.
            let page = unsafe { &mut *self.page };
            while page.out_cons != page.out_prod {
                let i = hypercall_abi::io::console::mask_out(page.out_cons);
                self.log.push(page.out[i]);
                page.out_cons = page.out_cons.wrapping_add(1);
            }
        }
    }

    impl RingEvents for &mut Backend {
        fn notify(&mut self) {
            self.notified += 1;
        }
        fn wait(&mut self) -> Result<(), WaitTimeout> {
            if !self.drain {
                return Err(WaitTimeout);
            }
            self.drain();
            Ok(())
        }
    }

    #[test]
    fn long_output_arrives_whole_through_a_full_ring() {
        let page = Box::into_raw(Box::new(XenconsInterface::new()));
        let mut back = Backend {
            page,
            log: Vec::new(),
            notified: 0,
            drain: true,
        };
        let text: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        {
            // SAFETY: `page` is a live allocation only reached through raw pointers.
            let mut con = unsafe { ConsoleFront::new(page, &mut back) };
            assert_eq!(con.write(&text), Ok(()));
        }
        back.drain();
        assert_eq!(back.log, text);
        assert!(back.notified >= 3, "notified {}", back.notified);
        // SAFETY: allocated above, no longer used.
        drop(unsafe { Box::from_raw(page) });
    }

    #[test]
    fn a_stuck_back_end_is_a_timeout_and_input_is_read() {
        let page = Box::into_raw(Box::new(XenconsInterface::new()));
        let mut back = Backend {
            page,
            log: Vec::new(),
            notified: 0,
            drain: false,
        };
        // SAFETY: as above; the back end writes input before the front end exists.
        unsafe {
            (&mut (*page).in_)[..3].copy_from_slice(b"hi\n");
            (*page).in_prod = 3;
        }
        {
            // SAFETY: as above.
            let mut con = unsafe { ConsoleFront::new(page, &mut back) };
            assert_eq!(
                con.write(&[b'x'; XENCONS_OUT_SIZE + 1]),
                Err(ConsoleError::Timeout)
            );
            assert_eq!(con.wait(), Err(WaitTimeout));
            let mut buf = [0u8; 8];
            assert_eq!(con.read(&mut buf), Ok(3));
            assert_eq!(&buf[..3], b"hi\n");
            assert_eq!(con.read(&mut buf), Ok(0));
        }
        // SAFETY: as above.
        assert_eq!(unsafe { (*page).in_cons }, 3);
        // SAFETY: the garbage index is written while the front end is idle.
        unsafe { (*page).out_cons = 5000 };
        {
            // SAFETY: as above.
            let mut con = unsafe { ConsoleFront::new(page, &mut back) };
            assert!(matches!(con.write(b"x"), Err(ConsoleError::Ring(_))));
        }
        // SAFETY: allocated above, no longer used.
        drop(unsafe { Box::from_raw(page) });
    }
}
