//! The xenbus client: xenstore requests and replies in xs_wire format over a domain's store
//! ring page (`xenstore_domain_interface`), watches and transactions.
//!
//! One request is outstanding at a time: [`Xenbus`] writes it into the request ring
//! (notifying after each piece, waiting when the ring is full) and reads messages from the
//! response ring until the reply with its `req_id` arrives. Watch events that arrive
//! meanwhile are queued and handed out by [`Xenbus::take_watch_event`] and
//! [`Xenbus::wait_watch_event`]. An `XS_ERROR` reply becomes [`XenbusError::Store`] with the
//! errno it names (`EAGAIN` from a transaction end is a conflict: retry the transaction).

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::addr_of_mut;

use hypercall_abi::errno::Errno;
use hypercall_abi::io::xs_wire::{
    xsd_error_from_payload, XenstoreDomainInterface, XsType, XENSTORE_PAYLOAD_MAX,
    XENSTORE_RING_SIZE,
};

use super::ring::{ByteRing, RingError};
use super::{RingEvents, WaitTimeout};
use crate::xenstore::wire::{self, HEADER_LEN};

/// Why a xenstore request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenbusError {
    /// xenstored answered with this error.
    Store(Errno),
    /// The ring's indices are impossible.
    Ring(RingError),
    /// xenstored did not answer in time.
    Timeout,
    /// The request does not fit in a message.
    TooBig,
    /// The reply is not what the protocol allows (unknown error name, bad framing, a
    /// directory listing without its final NUL).
    Protocol,
}

impl From<RingError> for XenbusError {
    fn from(e: RingError) -> Self {
        XenbusError::Ring(e)
    }
}

impl From<WaitTimeout> for XenbusError {
    fn from(_: WaitTimeout) -> Self {
        XenbusError::Timeout
    }
}

impl core::fmt::Display for XenbusError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            XenbusError::Store(e) => write!(f, "xenstore: {}", e.name()),
            XenbusError::Ring(e) => write!(f, "xenstore ring: {e}"),
            XenbusError::Timeout => write!(f, "xenstore did not answer"),
            XenbusError::TooBig => write!(f, "request too big"),
            XenbusError::Protocol => write!(f, "malformed xenstore reply"),
        }
    }
}

/// A transaction id (0 = none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tx(pub u32);

impl Tx {
    /// Outside any transaction.
    pub const NONE: Tx = Tx(0);
}

/// A fired watch: the path that changed and the watch's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed (relative if the watch was registered relative).
    pub path: String,
    /// The token given to [`Xenbus::watch`].
    pub token: String,
}

/// A message taken off the response ring.
struct Message {
    type_: u32,
    req_id: u32,
    payload: Vec<u8>,
}

/// A xenstore client on a store ring.
#[derive(Debug)]
pub struct Xenbus<E: RingEvents> {
    req: ByteRing,
    rsp: ByteRing,
    events: E,
    next_req_id: u32,
    /// Bytes of the message being received.
    rx: Vec<u8>,
    watch_events: VecDeque<WatchEvent>,
}

impl<E: RingEvents> Xenbus<E> {
    /// The client of the store ring mapped at `page`, notified through `events`.
    ///
    /// # Safety
    ///
    /// `page` must stay mapped, readable and writable for as long as the client is used, and
    /// no Rust reference may cover it (xenstored writes it).
    pub unsafe fn new(page: *mut XenstoreDomainInterface, events: E) -> Self {
        // SAFETY: the fields lie inside the page the caller vouches for; the ring size is a
        // power of two and the indices are aligned u32s.
        unsafe {
            Xenbus {
                req: ByteRing::new(
                    addr_of_mut!((*page).req).cast(),
                    XENSTORE_RING_SIZE,
                    addr_of_mut!((*page).req_prod),
                    addr_of_mut!((*page).req_cons),
                ),
                rsp: ByteRing::new(
                    addr_of_mut!((*page).rsp).cast(),
                    XENSTORE_RING_SIZE,
                    addr_of_mut!((*page).rsp_prod),
                    addr_of_mut!((*page).rsp_cons),
                ),
                events,
                next_req_id: 1,
                rx: Vec::new(),
                watch_events: VecDeque::new(),
            }
        }
    }

    /// Sends one request and returns its reply's payload.
    fn request(&mut self, type_: XsType, tx: Tx, payload: &[u8]) -> Result<Vec<u8>, XenbusError> {
        if payload.len() > XENSTORE_PAYLOAD_MAX {
            return Err(XenbusError::TooBig);
        }
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1).max(1);
        let message = wire::encode(type_, req_id, tx.0, payload);
        let mut sent = 0;
        while sent < message.len() {
            let n = self.req.produce(&message[sent..])?;
            if n == 0 {
                self.events.wait()?;
                continue;
            }
            sent += n;
            self.events.notify();
        }
        loop {
            match self.receive()? {
                Some(reply)
                    if reply.req_id == req_id && reply.type_ != XsType::WatchEvent.raw() =>
                {
                    if reply.type_ == XsType::Error.raw() {
                        return Err(xsd_error_from_payload(&reply.payload)
                            .map_or(XenbusError::Protocol, XenbusError::Store));
                    }
                    return Ok(reply.payload);
                }
                // A reply to an abandoned request (one that timed out) is dropped.
                Some(_) => {}
                None => self.events.wait()?,
            }
        }
    }

    /// Takes one complete message off the response ring if there is one, queueing watch
    /// events (and returning them as messages too, for the caller to skip).
    fn receive(&mut self) -> Result<Option<Message>, XenbusError> {
        loop {
            let wanted = match wire::parse_header(&self.rx) {
                None => HEADER_LEN,
                Some(h) if h.len as usize > XENSTORE_PAYLOAD_MAX => {
                    self.rx.clear();
                    return Err(XenbusError::Protocol);
                }
                Some(h) => HEADER_LEN + h.len as usize,
            };
            if self.rx.len() == wanted {
                break;
            }
            let have = self.rx.len();
            self.rx.resize(wanted, 0);
            let n = self.rsp.consume(&mut self.rx[have..])?;
            self.rx.truncate(have + n);
            if n == 0 {
                return Ok(None);
            }
            self.events.notify();
        }
        let bytes = core::mem::take(&mut self.rx);
        let header = wire::parse_header(&bytes).ok_or(XenbusError::Protocol)?;
        let message = Message {
            type_: header.type_,
            req_id: header.req_id,
            payload: bytes[HEADER_LEN..].to_vec(),
        };
        if message.type_ == XsType::WatchEvent.raw() {
            let fields = wire::strings(&message.payload).map_err(|_| XenbusError::Protocol)?;
            if let [path, token, ..] = fields.as_slice() {
                self.watch_events.push_back(WatchEvent {
                    path: String::from_utf8_lossy(path).into_owned(),
                    token: String::from_utf8_lossy(token).into_owned(),
                });
            }
        }
        Ok(Some(message))
    }

    /// `XS_READ`: the value of `path`.
    pub fn read(&mut self, tx: Tx, path: &str) -> Result<Vec<u8>, XenbusError> {
        self.request(XsType::Read, tx, &nul_terminated(path))
    }

    /// `XS_WRITE`: sets `path` to `value`, creating it (and missing parents).
    pub fn write(&mut self, tx: Tx, path: &str, value: &[u8]) -> Result<(), XenbusError> {
        let mut payload = nul_terminated(path);
        payload.extend_from_slice(value);
        self.request(XsType::Write, tx, &payload).map(|_| ())
    }

    /// `XS_MKDIR`.
    pub fn mkdir(&mut self, tx: Tx, path: &str) -> Result<(), XenbusError> {
        self.request(XsType::Mkdir, tx, &nul_terminated(path))
            .map(|_| ())
    }

    /// `XS_RM`: removes `path` and everything below it.
    pub fn rm(&mut self, tx: Tx, path: &str) -> Result<(), XenbusError> {
        self.request(XsType::Rm, tx, &nul_terminated(path))
            .map(|_| ())
    }

    /// `XS_DIRECTORY`: the names of `path`'s children.
    pub fn directory(&mut self, tx: Tx, path: &str) -> Result<Vec<String>, XenbusError> {
        let payload = self.request(XsType::Directory, tx, &nul_terminated(path))?;
        if payload.is_empty() {
            return Ok(Vec::new());
        }
        let names = wire::strings(&payload).map_err(|_| XenbusError::Protocol)?;
        Ok(names
            .into_iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect())
    }

    /// `XS_WATCH`: events for `path` and below, tagged with `token`. xenstored fires the
    /// watch once right away.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), XenbusError> {
        let mut payload = nul_terminated(path);
        payload.extend_from_slice(&nul_terminated(token));
        self.request(XsType::Watch, Tx::NONE, &payload).map(|_| ())
    }

    /// `XS_UNWATCH`.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), XenbusError> {
        let mut payload = nul_terminated(path);
        payload.extend_from_slice(&nul_terminated(token));
        self.request(XsType::Unwatch, Tx::NONE, &payload)
            .map(|_| ())
    }

    /// `XS_TRANSACTION_START`.
    pub fn transaction_start(&mut self) -> Result<Tx, XenbusError> {
        let payload = self.request(XsType::TransactionStart, Tx::NONE, b"\0")?;
        let digits = payload.strip_suffix(&[0]).unwrap_or(&payload);
        core::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .map(Tx)
            .ok_or(XenbusError::Protocol)
    }

    /// `XS_TRANSACTION_END`: commits (`commit`) or aborts. A conflicting commit is
    /// `Err(Store(EAGAIN))`.
    pub fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<(), XenbusError> {
        let payload: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.request(XsType::TransactionEnd, tx, payload)
            .map(|_| ())
    }

    /// A watch event already received, if any.
    pub fn take_watch_event(&mut self) -> Option<WatchEvent> {
        self.watch_events.pop_front()
    }

    /// The next watch event, waiting for one if none has arrived yet.
    pub fn wait_watch_event(&mut self) -> Result<WatchEvent, XenbusError> {
        loop {
            if let Some(event) = self.watch_events.pop_front() {
                return Ok(event);
            }
            if self.receive()?.is_none() {
                self.events.wait()?;
            }
        }
    }
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenstore::{RingInfo, RingTransport, Xenstore};
    use alloc::boxed::Box;
    use alloc::rc::Rc;
    use core::cell::RefCell;
    use hypercall_abi::io::xs_wire::XenstoreDomainInterface;

    /// One domain's connection to a real (portable) xenstored, served synchronously: a
    /// notification or a wait runs the daemon over the ring.
    struct Link {
        daemon: Rc<RefCell<Xenstore>>,
        domid: u16,
        page: *mut XenstoreDomainInterface,
        transport: RingTransport,
    }

    impl Link {
        fn serve(&mut self) -> bool {
            // SAFETY: the page outlives the link; the client is inside a notify or a wait
            // and holds no reference into it.
            let ring = unsafe { &mut *self.page };
            self.daemon
                .borrow_mut()
                .service_ring(self.domid, &mut self.transport, ring)
                .unwrap_or(false)
        }
    }

    impl RingEvents for Link {
        fn notify(&mut self) {
            self.serve();
        }
        fn wait(&mut self) -> Result<(), WaitTimeout> {
            if self.serve() {
                Ok(())
            } else {
                Err(WaitTimeout)
            }
        }
    }

    fn client(daemon: &Rc<RefCell<Xenstore>>, domid: u16) -> Xenbus<Link> {
        let page = Box::into_raw(Box::new(XenstoreDomainInterface::new()));
        let link = Link {
            daemon: daemon.clone(),
            domid,
            page,
            transport: RingTransport::new(),
        };
        // SAFETY: the page is leaked for the test's life and reached only through raw
        // pointers.
        unsafe { Xenbus::new(page, link) }
    }

    fn store_with(domids: &[u16]) -> Rc<RefCell<Xenstore>> {
        let mut xs = Xenstore::new();
        xs.connect(0, true).unwrap();
        for &d in domids {
            xs.introduce_domain(
                d,
                "guest",
                RingInfo {
                    mfn: 0x100 + u64::from(d),
                    port: 1,
                },
            )
            .unwrap();
        }
        Rc::new(RefCell::new(xs))
    }

    #[test]
    fn read_write_directory_rm() {
        let daemon = store_with(&[1]);
        let mut xb = client(&daemon, 1);
        assert_eq!(xb.read(Tx::NONE, "name"), Ok(b"guest".to_vec()));
        assert_eq!(xb.write(Tx::NONE, "device/vif/0/state", b"1"), Ok(()));
        assert_eq!(
            xb.read(Tx::NONE, "/local/domain/1/device/vif/0/state"),
            Ok(b"1".to_vec())
        );
        assert_eq!(xb.mkdir(Tx::NONE, "device/vbd"), Ok(()));
        let mut dir = xb.directory(Tx::NONE, "device").unwrap();
        dir.sort();
        assert_eq!(dir, ["vbd", "vif"]);
        assert_eq!(xb.directory(Tx::NONE, "device/vbd"), Ok(Vec::new()));
        assert_eq!(xb.rm(Tx::NONE, "device"), Ok(()));
        assert_eq!(
            xb.read(Tx::NONE, "device/vif/0/state"),
            Err(XenbusError::Store(Errno::ENOENT))
        );
    }

    #[test]
    fn long_values_cross_the_ring_in_pieces() {
        let daemon = store_with(&[1]);
        let mut xb = client(&daemon, 1);
        let value: Vec<u8> = (0..2000u32).map(|i| b'0' + (i % 10) as u8).collect();
        assert_eq!(xb.write(Tx::NONE, "big", &value), Ok(()));
        assert_eq!(xb.read(Tx::NONE, "big"), Ok(value));
        assert_eq!(
            xb.write(Tx::NONE, "huge", &[b'x'; XENSTORE_PAYLOAD_MAX]),
            Err(XenbusError::TooBig)
        );
    }

    #[test]
    fn permissions_refuse_another_domain() {
        let daemon = store_with(&[1, 2]);
        let mut one = client(&daemon, 1);
        let mut two = client(&daemon, 2);
        assert_eq!(one.write(Tx::NONE, "secret", b"x"), Ok(()));
        assert_eq!(
            two.read(Tx::NONE, "/local/domain/1/secret"),
            Err(XenbusError::Store(Errno::EACCES))
        );
        assert_eq!(
            two.write(Tx::NONE, "/local/domain/1/secret", b"y"),
            Err(XenbusError::Store(Errno::EACCES))
        );
    }

    #[test]
    fn watches_fire_on_registration_and_on_change() {
        let daemon = store_with(&[1]);
        let mut xb = client(&daemon, 1);
        let mut dom0 = client(&daemon, 0);
        assert_eq!(xb.watch("backend-state", "tok"), Ok(()));
        let first = xb.wait_watch_event().unwrap();
        assert_eq!(
            first,
            WatchEvent {
                path: "backend-state".into(),
                token: "tok".into()
            }
        );
        assert_eq!(xb.take_watch_event(), None);
        dom0.write(Tx::NONE, "/local/domain/1/backend-state", b"4")
            .unwrap();
        let fired = xb.wait_watch_event().unwrap();
        assert_eq!(fired.path, "backend-state");
        assert_eq!(fired.token, "tok");
        assert_eq!(xb.unwatch("backend-state", "tok"), Ok(()));
        dom0.write(Tx::NONE, "/local/domain/1/backend-state", b"5")
            .unwrap();
        assert_eq!(xb.wait_watch_event(), Err(XenbusError::Timeout));
    }

    #[test]
    fn a_conflicting_transaction_is_refused_with_eagain() {
        let daemon = store_with(&[1]);
        let mut xb = client(&daemon, 1);
        let mut dom0 = client(&daemon, 0);
        xb.write(Tx::NONE, "counter", b"1").unwrap();
        let tx = xb.transaction_start().unwrap();
        assert_ne!(tx, Tx::NONE);
        assert_eq!(xb.read(tx, "counter"), Ok(b"1".to_vec()));
        xb.write(tx, "counter", b"2").unwrap();
        dom0.write(Tx::NONE, "/local/domain/1/counter", b"9")
            .unwrap();
        assert_eq!(
            xb.transaction_end(tx, true),
            Err(XenbusError::Store(Errno::EAGAIN))
        );
        assert_eq!(xb.read(Tx::NONE, "counter"), Ok(b"9".to_vec()));
        let tx = xb.transaction_start().unwrap();
        xb.write(tx, "counter", b"10").unwrap();
        assert_eq!(xb.transaction_end(tx, true), Ok(()));
        assert_eq!(xb.read(Tx::NONE, "counter"), Ok(b"10".to_vec()));
    }

    #[test]
    fn garbage_from_xenstored_is_an_error_not_a_panic() {
        let daemon = store_with(&[1]);
        let mut xb = client(&daemon, 1);
        // A reply header announcing more than a payload can hold.
        let page = xb.events.page;
        let bogus = wire::encode(XsType::Read, 1, 0, b"");
        // SAFETY: the client is idle; the test plays xenstored.
        unsafe {
            let mut header = bogus.clone();
            header[12..16].copy_from_slice(&(XENSTORE_PAYLOAD_MAX as u32 + 1).to_le_bytes());
            (&mut (*page).rsp)[..16].copy_from_slice(&header);
            (*page).rsp_prod = 16;
        }
        assert_eq!(xb.wait_watch_event(), Err(XenbusError::Protocol));
        // SAFETY: as above: impossible indices.
        unsafe { (*page).rsp_prod = 5000 };
        assert!(matches!(
            xb.read(Tx::NONE, "name"),
            Err(XenbusError::Ring(_))
        ));
    }
}
