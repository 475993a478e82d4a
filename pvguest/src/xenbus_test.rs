//! `xenbus-test`: a domU's checks of xenstore through the front-end library's [`Xenbus`]
//! client. The checks are portable (they run here against the portable xenstored); the
//! kernel supplies the client on the domain's real store ring.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use hypercall_abi::errno::Errno;

use crate::front::xenbus::{Tx, Xenbus, XenbusError};
use crate::front::RingEvents;
use crate::pair::BadArgument;
use crate::xenstore::DomId;

/// Arguments of `xenbus-test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenbusTestArgs {
    /// Another domain, whose home this one must not be able to read.
    pub other: DomId,
}

impl XenbusTestArgs {
    /// Parses the words after `xenbus-test`: `other=D` is required; other words are ignored.
    pub fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Result<Self, BadArgument<'a>> {
        let mut other = None;
        for word in words {
            if let Some(value) = word.strip_prefix("other=") {
                other = Some(value.parse().map_err(|_| BadArgument(word))?);
            }
        }
        other
            .map(|other| XenbusTestArgs { other })
            .ok_or(BadArgument("other="))
    }
}

/// The token of the watch the checks set.
pub const WATCH_TOKEN: &str = "xenbus-test";

/// What one check found: `Ok` or why it failed.
pub type CheckResult = Result<(), String>;

fn failed(what: &str, e: XenbusError) -> String {
    format!("{what}: {e}")
}

fn expect_value(got: Result<Vec<u8>, XenbusError>, path: &str, want: &[u8]) -> CheckResult {
    let got = got.map_err(|e| failed(&format!("read {path}"), e))?;
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{path} is {:?}, expected {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        ))
    }
}

/// Reads this domain's id from its home (`domid`, a relative path).
pub fn read_domid<E: RingEvents>(xb: &mut Xenbus<E>) -> Result<DomId, String> {
    let value = xb
        .read(Tx::NONE, "domid")
        .map_err(|e| failed("read domid", e))?;
    core::str::from_utf8(&value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("domid {:?} is no number", String::from_utf8_lossy(&value)))
}

/// Runs the checks after `domid` (use [`read_domid`] first), handing each one's name and
/// result to `report`, in order.
pub fn run_checks<E: RingEvents>(
    xb: &mut Xenbus<E>,
    domid: DomId,
    args: XenbusTestArgs,
    mut report: impl FnMut(&str, CheckResult),
) {
    report("write and read back", write_read(xb, domid));
    report("mkdir and directory", mkdir_directory(xb));
    report("watch event", watch(xb));
    report("other domain refused", other_refused(xb, args.other));
    report("transaction conflict", transaction_conflict(xb));
}

fn write_read<E: RingEvents>(xb: &mut Xenbus<E>, domid: DomId) -> CheckResult {
    let value = format!("hello from d{domid}");
    xb.write(Tx::NONE, "data/test", value.as_bytes())
        .map_err(|e| failed("write data/test", e))?;
    expect_value(
        xb.read(Tx::NONE, "data/test"),
        "data/test",
        value.as_bytes(),
    )?;
    let absolute = format!("/local/domain/{domid}/data/test");
    expect_value(xb.read(Tx::NONE, &absolute), &absolute, value.as_bytes())
}

fn mkdir_directory<E: RingEvents>(xb: &mut Xenbus<E>) -> CheckResult {
    xb.mkdir(Tx::NONE, "data/dir")
        .map_err(|e| failed("mkdir data/dir", e))?;
    let mut names = xb
        .directory(Tx::NONE, "data")
        .map_err(|e| failed("directory data", e))?;
    names.sort();
    if names != ["dir", "test"] {
        return Err(format!(
            "data lists {names:?}, expected [\"dir\", \"test\"]"
        ));
    }
    match xb.directory(Tx::NONE, "data/dir") {
        Ok(empty) if empty.is_empty() => Ok(()),
        Ok(names) => Err(format!("data/dir lists {names:?}, expected nothing")),
        Err(e) => Err(failed("directory data/dir", e)),
    }
}

/// Waits for the watch event on `path`, skipping others (each is checked for the token).
fn wait_event<E: RingEvents>(xb: &mut Xenbus<E>, path: &str) -> CheckResult {
    for _ in 0..8 {
        let event = xb
            .wait_watch_event()
            .map_err(|e| failed(&format!("waiting for the event on {path}"), e))?;
        if event.token != WATCH_TOKEN {
            return Err(format!("event with token {:?}", event.token));
        }
        if event.path == path {
            return Ok(());
        }
    }
    Err(format!("no event on {path} among the first 8"))
}

fn watch<E: RingEvents>(xb: &mut Xenbus<E>) -> CheckResult {
    xb.watch("data", WATCH_TOKEN)
        .map_err(|e| failed("watch data", e))?;
    // xenstored fires a new watch once right away.
    wait_event(xb, "data")?;
    xb.write(Tx::NONE, "data/watched", b"1")
        .map_err(|e| failed("write data/watched", e))?;
    wait_event(xb, "data/watched")?;
    xb.unwatch("data", WATCH_TOKEN)
        .map_err(|e| failed("unwatch data", e))?;
    while xb.take_watch_event().is_some() {}
    Ok(())
}

fn other_refused<E: RingEvents>(xb: &mut Xenbus<E>, other: DomId) -> CheckResult {
    let path = format!("/local/domain/{other}/domid");
    match xb.read(Tx::NONE, &path) {
        Err(XenbusError::Store(Errno::EACCES)) => Ok(()),
        Err(e) => Err(format!("read {path}: {e}, expected EACCES")),
        Ok(v) => Err(format!(
            "read {path} gave {:?}, expected EACCES",
            String::from_utf8_lossy(&v)
        )),
    }
}

fn transaction_conflict<E: RingEvents>(xb: &mut Xenbus<E>) -> CheckResult {
    xb.write(Tx::NONE, "data/x", b"before")
        .map_err(|e| failed("write data/x", e))?;
    let tx = xb
        .transaction_start()
        .map_err(|e| failed("transaction start", e))?;
    expect_value(
        xb.read(tx, "data/x"),
        "data/x in the transaction",
        b"before",
    )?;
    xb.write(Tx::NONE, "data/x", b"outside")
        .map_err(|e| failed("write data/x outside", e))?;
    xb.write(tx, "data/x", b"inside")
        .map_err(|e| failed("write data/x inside", e))?;
    match xb.transaction_end(tx, true) {
        Err(XenbusError::Store(Errno::EAGAIN)) => {}
        Err(e) => return Err(format!("commit: {e}, expected EAGAIN")),
        Ok(()) => return Err("the conflicting commit succeeded".into()),
    }
    expect_value(
        xb.read(Tx::NONE, "data/x"),
        "data/x after the commit",
        b"outside",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::WaitTimeout;
    use crate::xenstore::{RingInfo, RingTransport, Xenstore};
    use alloc::boxed::Box;
    use alloc::rc::Rc;
    use alloc::string::ToString;
    use core::cell::RefCell;
    use hypercall_abi::io::xs_wire::XenstoreDomainInterface;

    /// A domain's store ring served synchronously by a portable xenstored.
    struct Link {
        daemon: Rc<RefCell<Xenstore>>,
        domid: DomId,
        page: *mut XenstoreDomainInterface,
        transport: RingTransport,
    }

    impl RingEvents for Link {
        fn notify(&mut self) {
            // SAFETY: the page is leaked for the test's life; the client is inside a notify
            // and holds no reference into it.
            let ring = unsafe { &mut *self.page };
            let _ = self
                .daemon
                .borrow_mut()
                .service_ring(self.domid, &mut self.transport, ring);
        }
        fn wait(&mut self) -> Result<(), WaitTimeout> {
            // SAFETY: as in `notify`.
            let ring = unsafe { &mut *self.page };
            match self
                .daemon
                .borrow_mut()
                .service_ring(self.domid, &mut self.transport, ring)
            {
                Ok(true) => Ok(()),
                _ => Err(WaitTimeout),
            }
        }
    }

    fn client(daemon: &Rc<RefCell<Xenstore>>, domid: DomId) -> Xenbus<Link> {
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

    #[test]
    fn arguments() {
        assert_eq!(
            XenbusTestArgs::parse(["x", "other=2"].into_iter()),
            Ok(XenbusTestArgs { other: 2 })
        );
        assert_eq!(
            XenbusTestArgs::parse(["other=two"].into_iter()),
            Err(BadArgument("other=two"))
        );
        assert_eq!(
            XenbusTestArgs::parse(core::iter::empty()),
            Err(BadArgument("other="))
        );
    }

    #[test]
    fn every_check_passes_against_the_portable_xenstored() {
        let mut xs = Xenstore::new();
        for d in [1, 2] {
            xs.introduce_domain(
                d,
                "guest",
                RingInfo {
                    mfn: 0x100,
                    port: 1,
                },
            )
            .unwrap();
        }
        let daemon = Rc::new(RefCell::new(xs));
        for (me, other) in [(1, 2), (2, 1)] {
            let mut xb = client(&daemon, me);
            assert_eq!(read_domid(&mut xb), Ok(me));
            let mut results = Vec::new();
            run_checks(&mut xb, me, XenbusTestArgs { other }, |name, r| {
                results.push((name.to_string(), r))
            });
            assert_eq!(results.len(), 5);
            for (name, r) in results {
                assert_eq!(r, Ok(()), "d{me}: {name}");
            }
        }
        assert_eq!(
            daemon.borrow().requests_handled(1),
            daemon.borrow().requests_handled(2)
        );
        assert!(daemon.borrow().requests_handled(1) >= 15);
    }

    #[test]
    fn a_missing_other_domain_is_a_failure() {
        let mut xs = Xenstore::new();
        xs.introduce_domain(
            1,
            "guest",
            RingInfo {
                mfn: 0x100,
                port: 1,
            },
        )
        .unwrap();
        let daemon = Rc::new(RefCell::new(xs));
        let mut xb = client(&daemon, 1);
        let r = other_refused(&mut xb, 5);
        assert!(r.as_ref().is_err_and(|e| e.contains("ENOENT")), "{r:?}");
    }
}
