//! `hostile-peer peer=<domid>`: an unprivileged domU attacks another domain through the
//! inter-domain interfaces (event channels, grant tables) and feeds garbage to xenstored
//! through its own store ring. Every attack must be refused, with the errno or grant status
//! Xen gives, and xenstored must keep serving. One line per case,
//! `hostile-peer: <case> refused <what>` (or `... NOT REFUSED: <what>`), and a verdict.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ptr::addr_of_mut;

use hypercall_abi::errno::{Errno, HypercallError};
use hypercall_abi::event_channel::{EvtchnAllocUnbound, EvtchnPort, EvtchnReset, EvtchnStatus};
use hypercall_abi::grant_table::{
    GnttabCopy, GnttabCopyPtr, GrantRef, GrantStatus, GNTCOPY_SOURCE_GREF, GNTTAB_RESERVED_XENSTORE,
};
use hypercall_abi::io::xs_wire::{
    xsd_error_from_payload, XenstoreDomainInterface, XsType, XENSTORE_RING_SIZE,
};
use hypercall_abi::xen::DOMID_SELF;
use hypercall_abi::DomId;
use pvguest::front::evtchn;
use pvguest::front::grant::{self, GrantError, GrantMapping};
use pvguest::front::ring::ByteRing;
use pvguest::front::xenbus::{Tx, Xenbus};
use pvguest::xenbus_test::read_domid;
use pvguest::xenstore::wire::{self, HEADER_LEN};

use super::events::{self, RingPort};
use super::grants::Window;
use super::{pv, Kernel};

/// A port number free in every domain's table here (domUs use ports 1 to 3 or so).
const FREE_PORT: EvtchnPort = 40;
/// A port number beyond any table hv gives a domain.
const OUT_OF_RANGE_PORT: EvtchnPort = 1 << 20;
/// A grant reference in range of the peer's table that the peer never granted.
const UNGRANTED_REF: GrantRef = 20;
/// A grant reference beyond any table hv gives a domain.
const OUT_OF_RANGE_REF: GrantRef = 1 << 24;
/// How long xenstored may take to answer.
const WAIT_NS: u64 = 10_000_000_000;

/// The verdicts so far.
struct Cases {
    failed: u32,
}

impl Cases {
    fn report(&mut self, case: &str, result: Result<String, String>) {
        match result {
            Ok(what) => println!("hostile-peer: {case} refused {what}"),
            Err(why) => {
                self.failed += 1;
                println!("hostile-peer: {case} NOT REFUSED: {why}");
            }
        }
    }
}

/// The call must fail with `want`.
fn errno<T: core::fmt::Debug>(
    got: Result<T, HypercallError>,
    want: Errno,
) -> Result<String, String> {
    match got {
        Err(HypercallError::Errno(e)) if e == want => Ok(e.name().to_string()),
        Err(e) => Err(format!("failed with {e}, expected {}", want.name())),
        Ok(v) => Err(format!("succeeded ({v:?})")),
    }
}

/// The grant operation must fail with status `want`.
fn status(got: Result<(), GrantError>, want: GrantStatus) -> Result<String, String> {
    match got {
        Err(GrantError::Status(s)) if s == want => {
            Ok(format!("status {} ({})", s.raw(), s.message()))
        }
        Err(e) => Err(format!("failed with {e}, expected status {}", want.raw())),
        Ok(()) => Err("succeeded".into()),
    }
}

/// A map that must be refused; a mapping made anyway is undone.
fn map_refused(
    result: Result<GrantMapping, GrantError>,
    want: GrantStatus,
) -> Result<String, String> {
    if let Ok(m) = result {
        // SAFETY: the mapping that should not exist is at a window page nothing refers to.
        let _ = unsafe { grant::unmap_grant(&pv::hypercalls(), m) };
    }
    status(result.map(|_| ()), want)
}

/// Runs the mode; returns whether every case was refused.
pub fn run(k: &mut Kernel, peer: DomId) -> bool {
    let mut cases = Cases { failed: 0 };
    if let Err(why) = events::init_timer() {
        cases.report("set up", Err(why));
    } else if let Err(why) = xenstore(k, peer, &mut cases) {
        cases.report("xenstore", Err(why));
    }
    let success = cases.failed == 0;
    println!(
        "hostile-peer: {}",
        if success { "SUCCESS" } else { "FAILURE" }
    );
    success
}

fn event_channels(peer: DomId, cases: &mut Cases) {
    let hc = pv::hypercalls();
    // The peer's port 1 is its store ring's, allocated for (and bound by) the control domain,
    // not for us; its port FREE_PORT is allocated for nobody.
    for (case, port) in [
        ("bind_peer_store_port", 1),
        ("bind_peer_free_port", FREE_PORT),
        ("bind_peer_out_of_range_port", OUT_OF_RANGE_PORT),
    ] {
        let got = evtchn::bind_interdomain(&hc, peer, port);
        if let Ok(local) = got {
            let _ = evtchn::close(&hc, local);
        }
        cases.report(case, errno(got, Errno::EINVAL));
    }
    // Port numbers that are not ours: a send or close acts on our own table only, where they
    // are free (or beyond it).
    for (case, port) in [
        ("send_free_port", FREE_PORT),
        ("send_out_of_range_port", OUT_OF_RANGE_PORT),
    ] {
        cases.report(case, errno(evtchn::send(&hc, port), Errno::EINVAL));
    }
    for (case, port) in [
        ("close_free_port", FREE_PORT),
        ("close_out_of_range_port", OUT_OF_RANGE_PORT),
    ] {
        cases.report(case, errno(evtchn::close(&hc, port), Errno::EINVAL));
    }
    // Operations naming another domain's table: not ours to do (Xen's XSM check, -EPERM).
    let mut st = EvtchnStatus {
        dom: peer,
        port: 1,
        ..EvtchnStatus::default()
    };
    let got = hc.event_channel_op(&mut st).map(|_| st.status);
    cases.report("status_of_peer_port", errno(got, Errno::EPERM));
    let mut alloc = EvtchnAllocUnbound {
        dom: peer,
        remote_dom: DOMID_SELF,
        port: 0,
    };
    let got = hc.event_channel_op(&mut alloc).map(|_| alloc.port);
    cases.report("alloc_unbound_in_peer", errno(got, Errno::EPERM));
    let got = hc.event_channel_op(&mut EvtchnReset { dom: peer });
    cases.report("reset_peer", errno(got, Errno::EPERM));
}

fn grants(
    k: &mut Kernel,
    window: &mut Window,
    peer: DomId,
    cases: &mut Cases,
) -> Result<(), String> {
    let hc = pv::hypercalls();
    let va = window.page(k)?;
    // Xen refuses a map of an entry not granted to the mapper with GNTST_general_error (its
    // map_grant_ref checks the entry's type and domid: "Bad flags/domid").
    // SAFETY: `va` is a window page with its L1 in place and nothing mapped or referred to.
    let got = unsafe { grant::map_grant(&hc, peer, UNGRANTED_REF, va, false) };
    cases.report(
        "map_ungranted_ref",
        map_refused(got, GrantStatus::GeneralError),
    );
    // SAFETY: as above.
    let got = unsafe { grant::map_grant(&hc, peer, UNGRANTED_REF, va, true) };
    cases.report(
        "map_ungranted_ref_readonly",
        map_refused(got, GrantStatus::GeneralError),
    );
    // The peer's xenstore entry is granted, but to the control domain, not to us.
    // SAFETY: as above.
    let got = unsafe { grant::map_grant(&hc, peer, GNTTAB_RESERVED_XENSTORE, va, false) };
    cases.report(
        "map_store_ref_granted_to_d0",
        map_refused(got, GrantStatus::GeneralError),
    );
    // SAFETY: as above.
    let got = unsafe { grant::map_grant(&hc, peer, OUT_OF_RANGE_REF, va, true) };
    cases.report(
        "map_out_of_range_ref",
        map_refused(got, GrantStatus::BadGntref),
    );

    let own = k.mm.alloc_frame()?;
    let copy_from = |source: GnttabCopyPtr, flags: u16| {
        let mut op = [GnttabCopy {
            source,
            dest: GnttabCopyPtr::from_gmfn(DOMID_SELF, own.mfn, 0),
            len: 4096,
            flags,
            ..GnttabCopy::default()
        }];
        // SAFETY: the destination is a fresh frame of ours that nothing maps or refers to.
        unsafe { grant::copy(&hc, &mut op) }
    };
    let got = copy_from(
        GnttabCopyPtr::from_gref(peer, UNGRANTED_REF, 0),
        GNTCOPY_SOURCE_GREF,
    );
    cases.report("copy_ungranted_ref", status(got, GrantStatus::GeneralError));
    let got = copy_from(
        GnttabCopyPtr::from_gref(peer, GNTTAB_RESERVED_XENSTORE, 0),
        GNTCOPY_SOURCE_GREF,
    );
    cases.report(
        "copy_store_ref_granted_to_d0",
        status(got, GrantStatus::GeneralError),
    );
    let got = copy_from(
        GnttabCopyPtr::from_gref(peer, OUT_OF_RANGE_REF, 0),
        GNTCOPY_SOURCE_GREF,
    );
    cases.report("copy_out_of_range_ref", status(got, GrantStatus::BadGntref));
    // A frame of another domain named by number (not through a grant): Xen's
    // gnttab_copy_lock_domain refuses it with GNTST_permission_denied.
    let got = copy_from(GnttabCopyPtr::from_gmfn(peer, own.mfn, 0), 0);
    cases.report(
        "copy_peer_frame_by_number",
        status(got, GrantStatus::PermissionDenied),
    );
    Ok(())
}

/// A tiny xorshift generator: the "random" bytes are the same in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Raw access to our own store ring, beside the xenbus client (which has no request
/// outstanding while these are used).
struct RawRing {
    req: ByteRing,
    rsp: ByteRing,
    port: EvtchnPort,
}

impl RawRing {
    /// Writes `bytes` onto the request ring (waiting for space as needed) and notifies.
    fn send(&self, bytes: &[u8]) -> Result<(), String> {
        let mut sent = 0;
        while sent < bytes.len() {
            let n = self
                .req
                .produce(&bytes[sent..])
                .map_err(|e| e.to_string())?;
            sent += n;
            let _ = evtchn::send(&pv::hypercalls(), self.port);
            if n == 0 && !events::wait_until(|| self.req_space(), WAIT_NS) {
                return Err(format!(
                    "xenstored took only {sent} of {} bytes",
                    bytes.len()
                ));
            }
        }
        Ok(())
    }

    fn req_space(&self) -> bool {
        // The consumer moved when fewer bytes wait than the ring holds.
        self.req
            .available()
            .map_or(true, |n| n < XENSTORE_RING_SIZE)
    }

    /// Reads exactly `n` bytes of the response ring.
    fn receive(&self, n: usize) -> Result<Vec<u8>, String> {
        let mut out = alloc::vec![0u8; n];
        let mut got = 0;
        while got < n {
            let rsp = &self.rsp;
            if !events::wait_until(|| rsp.available().map_or(true, |a| a > 0), WAIT_NS) {
                return Err(format!("xenstored sent {got} of {n} reply bytes"));
            }
            got += self
                .rsp
                .consume(&mut out[got..])
                .map_err(|e| e.to_string())?;
        }
        Ok(out)
    }

    /// Sends `garbage` and reads the reply to `req_id`: `Ok` with its error name when it is
    /// an `XS_ERROR`.
    fn refused(&self, garbage: &[u8], req_id: u32) -> Result<String, String> {
        self.send(garbage)?;
        let header = self.receive(HEADER_LEN)?;
        let h = wire::parse_header(&header).ok_or("short header")?;
        let payload = self.receive(h.len as usize)?;
        if h.req_id != req_id {
            return Err(format!(
                "reply to req_id {:#x}, expected {req_id:#x}",
                h.req_id
            ));
        }
        if h.type_ != XsType::Error.raw() {
            return Err(format!("answered with type {}", h.type_));
        }
        let name = xsd_error_from_payload(&payload)
            .map(|e| e.name().to_string())
            .unwrap_or_else(|| String::from_utf8_lossy(&payload).into_owned());
        Ok(format!("with an error reply ({name})"))
    }
}

fn header(type_: u32, req_id: u32, len: u32) -> Vec<u8> {
    [type_, req_id, 0, len]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// Connects to xenstored (once it answers, the back end has attached every domU, the peer's
/// rings included), runs the event-channel and grant cases against the peer, then the garbage
/// cases on our own store ring.
fn xenstore(k: &mut Kernel, peer: DomId, cases: &mut Cases) -> Result<(), String> {
    let mut window = Window::default();
    let (store_mfn, store_port) = (k.si.store_mfn, k.si.store_evtchn);
    let page = window.map_frame(k, store_mfn)? as *mut XenstoreDomainInterface;
    let store = RingPort::bind(store_port, WAIT_NS)?;
    // SAFETY: `page` maps the store ring page for the rest of the run; only the client and
    // the raw rings below reach it, through raw pointers, never both at once.
    let mut xb = unsafe { Xenbus::new(page, store) };
    let domid = read_domid(&mut xb)?;
    event_channels(peer, cases);
    if let Err(why) = grants(k, &mut window, peer, cases) {
        cases.report("grant set up", Err(why));
    }
    // SAFETY: as above: the fields lie inside the mapped page, the ring size is a power of two
    // and the indices are aligned u32s.
    let raw = unsafe {
        RawRing {
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
            port: store_port,
        }
    };
    let mut still_serves = |result: Result<String, String>| {
        let what = result?;
        match read_domid(&mut xb) {
            Ok(d) if d == domid => Ok(format!("{what}, xenstored still serves")),
            Ok(d) => Err(format!("{what}, then domid read as {d}")),
            Err(e) => Err(format!("{what}, then {e}")),
        }
    };

    // A message type xs_wire does not have.
    let mut msg = header(0x7777, 0xdead_0001, 4);
    msg.extend_from_slice(b"junk");
    cases.report(
        "xs_unknown_type",
        still_serves(raw.refused(&msg, 0xdead_0001)),
    );

    // A header announcing more than XENSTORE_PAYLOAD_MAX (4096) bytes.
    let msg = header(XsType::Read.raw(), 0xdead_0002, 5000);
    cases.report(
        "xs_len_over_4096",
        still_serves(raw.refused(&msg, 0xdead_0002)),
    );

    // Random bytes: a random header (type, req_id, tx_id) framing a random payload (its length
    // kept within the ring, so xenstored reads exactly the garbage, not the next request).
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut msg = rng.bytes(HEADER_LEN);
    let len = (rng.next() % 512) as u32;
    msg[12..16].copy_from_slice(&len.to_le_bytes());
    msg.extend_from_slice(&rng.bytes(len as usize));
    let req_id = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]);
    cases.report("xs_random_bytes", still_serves(raw.refused(&msg, req_id)));

    // A request whose path is not NUL-terminated and full of non-path bytes.
    let garbage = rng.bytes(64);
    let mut msg = header(XsType::Read.raw(), 0xdead_0004, garbage.len() as u32);
    msg.extend_from_slice(&garbage);
    cases.report(
        "xs_garbage_path",
        still_serves(raw.refused(&msg, 0xdead_0004)),
    );

    // A normal request still works at the end (also checked after every case above).
    let tx = Tx::NONE;
    let home = format!("/local/domain/{domid}/hostile-peer");
    xb.write(tx, &home, b"still here")
        .and_then(|()| xb.read(tx, &home))
        .map_err(|e| format!("write and read after the garbage: {e}"))
        .and_then(|v| {
            if v == b"still here" {
                Ok(())
            } else {
                Err("read back something else".into())
            }
        })?;
    println!("hostile-peer: xenstore still serves d{domid} after the garbage");
    Ok(())
}
