//! `backend`: the control domain's xenstored and console back end for every other domain.
//!
//! For each domU the control domain learns the event channels of its store and console rings
//! (`HVMOP_get_param` on the domU), binds them, maps the pages the domU's reserved grant
//! entries name (`GNTTAB_RESERVED_XENSTORE` and `GNTTAB_RESERVED_CONSOLE`) and introduces
//! the domain into its xenstored. Then it serves the rings on every event and every
//! [`POLL_NS`]: store requests through the portable [`Xenstore`], console output cut into
//! lines and printed as `(d<id>) <text>` (which hv prints verbatim). A domU that has shut
//! down (or is gone) is served once more, released and unmapped; when none is left the mode
//! prints how many requests and lines each domain had and its verdict.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::addr_of_mut;

use hypercall_abi::domctl::{DomctlGetDomainInfo, XEN_DOMINF_SHUTDOWN};
use hypercall_abi::errno::ret_to_result;
use hypercall_abi::grant_table::{GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE};
use hypercall_abi::hvm::{HvmOp, HvmParam, XenHvmParam};
use hypercall_abi::io::console::{XenconsInterface, XENCONS_OUT_SIZE};
use hypercall_abi::io::xs_wire::XenstoreDomainInterface;
use hypercall_abi::xen::{Hypercall, SIF_PRIVILEGED};
use hypercall_abi::DomId;
use pvguest::backend::{ConsoleLines, CONSOLE_LINE_MAX};
use pvguest::front::evtchn;
use pvguest::front::grant::{self, GrantMapping};
use pvguest::front::ring::ByteRing;
use pvguest::front::RingEvents;
use pvguest::xenstore::{RingInfo, RingTransport, Xenstore};

use super::control::{exact_info, list, MAX_LISTED};
use super::events::{self, RingPort};
use super::grants::Window;
use super::{pv, Kernel};

/// The longest the back ends wait for an event before looking at the rings anyway.
const POLL_NS: u64 = 10_000_000;
/// How long the domUs may take to finish.
const RUN_NS: u64 = 60_000_000_000;

/// `HVMOP_get_param` of `index` for domain `domid`.
fn hvm_param(domid: DomId, index: HvmParam) -> Result<u64, String> {
    let mut p = XenHvmParam {
        domid,
        pad: 0,
        index: index.raw(),
        value: 0,
    };
    // SAFETY: the hypervisor reads and writes one `XenHvmParam` at `p`.
    let ret = unsafe {
        pv::hypercalls().hypercall2(
            Hypercall::HvmOp,
            HvmOp::GetParam as u64,
            &mut p as *mut XenHvmParam as usize as u64,
        )
    };
    ret_to_result(ret).map_err(|e| format!("get_param({index:?}) of d{domid}: {e}"))?;
    Ok(p.value)
}

/// An event-channel port number from an HVM parameter.
fn port_param(domid: DomId, index: HvmParam) -> Result<u32, String> {
    let value = hvm_param(domid, index)?;
    u32::try_from(value).map_err(|_| format!("{index:?} of d{domid} is {value:#x}"))
}

/// One domU's rings as the back ends hold them.
struct Guest {
    id: DomId,
    store_port: RingPort,
    console_port: RingPort,
    store_map: GrantMapping,
    console_map: GrantMapping,
    transport: RingTransport,
    /// The console's output ring, the back end consuming.
    out: ByteRing,
    lines: ConsoleLines,
    console_lines: u32,
    /// A ring the domain broke.
    error: Option<String>,
}

/// Maps `domid`'s grant `gref` read-write at a fresh window page.
fn map(
    k: &mut Kernel,
    window: &mut Window,
    domid: DomId,
    gref: u32,
) -> Result<GrantMapping, String> {
    let va = window.page(k)?;
    // SAFETY: `va` is a fresh window page with its L1 in place and nothing mapped or referred
    // to there.
    unsafe { grant::map_grant(&pv::hypercalls(), domid, gref, va, false) }
        .map_err(|e| format!("map grant {gref} of d{domid}: {e}"))
}

/// Unmaps a ring page.
fn unmap(mapping: GrantMapping) -> Result<(), String> {
    // SAFETY: the back ends reach ring pages only through raw pointers, and the caller has
    // stopped using this one.
    unsafe { grant::unmap_grant(&pv::hypercalls(), mapping) }
        .map_err(|e| format!("unmap {:#x}: {e}", mapping.host_addr))
}

/// Binds a port the domU allocated for the control domain.
fn bind(domid: DomId, remote: u32) -> Result<RingPort, String> {
    let port = evtchn::bind_interdomain(&pv::hypercalls(), domid, remote)
        .map_err(|e| format!("bind_interdomain(d{domid}, port {remote}): {e}"))?;
    RingPort::bind(port, POLL_NS)
}

/// Connects the back ends to `domid`'s rings and introduces it into xenstored.
fn attach(
    k: &mut Kernel,
    window: &mut Window,
    xs: &mut Xenstore,
    domid: DomId,
) -> Result<Guest, String> {
    let store_remote = port_param(domid, HvmParam::StoreEvtchn)?;
    let console_remote = port_param(domid, HvmParam::ConsoleEvtchn)?;
    let store_mfn = hvm_param(domid, HvmParam::StorePfn)?;
    let store_map = map(k, window, domid, GNTTAB_RESERVED_XENSTORE)?;
    let console_map = match map(k, window, domid, GNTTAB_RESERVED_CONSOLE) {
        Ok(m) => m,
        Err(e) => {
            let _ = unmap(store_map);
            return Err(e);
        }
    };
    let ports = bind(domid, store_remote).and_then(|store| match bind(domid, console_remote) {
        Ok(console) => Ok((store, console)),
        Err(e) => {
            store.close();
            Err(e)
        }
    });
    let introduced = ports.and_then(|(store, console)| {
        let ring = RingInfo {
            mfn: store_mfn,
            port: store_remote,
        };
        match xs.introduce_domain(domid, &format!("d{domid}"), ring) {
            Ok(()) => Ok((store, console)),
            Err(e) => {
                store.close();
                console.close();
                Err(format!("introduce d{domid}: {e:?}"))
            }
        }
    });
    let (store_port, console_port) = match introduced {
        Ok(ports) => ports,
        Err(e) => {
            let _ = unmap(store_map);
            let _ = unmap(console_map);
            return Err(e);
        }
    };
    let page = console_map.host_addr as *mut XenconsInterface;
    // SAFETY: the page stays mapped until `detach`, after which the ring is not used; the
    // back end reaches it only through this ring's raw pointers.
    let out = unsafe {
        ByteRing::new(
            addr_of_mut!((*page).out).cast(),
            XENCONS_OUT_SIZE,
            addr_of_mut!((*page).out_prod),
            addr_of_mut!((*page).out_cons),
        )
    };
    println!(
        "backend: d{domid}: store port {store_remote} -> {}, console port {console_remote} -> {}, rings mapped",
        store_port.port, console_port.port
    );
    Ok(Guest {
        id: domid,
        store_port,
        console_port,
        store_map,
        console_map,
        transport: RingTransport::new(),
        out,
        lines: ConsoleLines::new(CONSOLE_LINE_MAX),
        console_lines: 0,
        error: None,
    })
}

impl Guest {
    fn fail(&mut self, why: String) {
        if self.error.is_none() {
            println!("backend: d{}: {why}", self.id);
            self.error = Some(why);
        }
    }

    /// Serves the store ring and drains the console ring, notifying where indices moved.
    fn serve(&mut self, xs: &mut Xenstore) {
        if self.error.is_some() {
            return;
        }
        // SAFETY: the page stays mapped until `detach`; no other reference to it exists while
        // xenstored serves it (the domU writes only its own indices and bytes meanwhile).
        let ring = unsafe { &mut *(self.store_map.host_addr as *mut XenstoreDomainInterface) };
        match xs.service_ring(self.id, &mut self.transport, ring) {
            Ok(true) => self.store_port.notify(),
            Ok(false) => {}
            Err(e) => self.fail(format!("store ring: {e:?}")),
        }
        let mut buf = [0u8; XENCONS_OUT_SIZE];
        let mut moved = false;
        loop {
            match self.out.consume(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    moved = true;
                    let (id, count) = (self.id, &mut self.console_lines);
                    self.lines.push(&buf[..n], |line| {
                        println!("(d{id}) {line}");
                        *count += 1;
                    });
                }
                Err(e) => {
                    self.fail(format!("console ring: {e}"));
                    break;
                }
            }
        }
        if moved {
            self.console_port.notify();
        }
    }

    /// After the domain has gone: prints its unfinished line, releases it from xenstored,
    /// unmaps its rings and closes the ports.
    fn detach(self, xs: &mut Xenstore) -> Finished {
        let Guest {
            id,
            store_port,
            console_port,
            store_map,
            console_map,
            mut lines,
            mut console_lines,
            mut error,
            ..
        } = self;
        lines.flush(|line| {
            println!("(d{id}) {line}");
            console_lines += 1;
        });
        let requests = xs.requests_handled(id);
        if let Err(e) = xs.release_domain(id) {
            error.get_or_insert(format!("release: {e:?}"));
        }
        for m in [store_map, console_map] {
            if let Err(e) = unmap(m) {
                error.get_or_insert(e);
            }
        }
        store_port.close();
        console_port.close();
        Finished {
            id,
            requests,
            console_lines,
            error,
        }
    }
}

/// What a domain had from the back ends.
struct Finished {
    id: DomId,
    requests: u64,
    console_lines: u32,
    error: Option<String>,
}

/// Whether domain `id` has shut down or is gone.
fn finished(id: DomId) -> bool {
    exact_info(id).is_none_or(|i| i.flags & XEN_DOMINF_SHUTDOWN != 0)
}

/// Runs the mode; returns whether every domU was served to its end without a ring error.
pub fn run(k: &mut Kernel) -> bool {
    let result = serve_all(k);
    let ok = match result {
        Ok(done) => {
            for f in &done {
                println!(
                    "backend: d{}: {} store requests served, {} console lines{}",
                    f.id,
                    f.requests,
                    f.console_lines,
                    f.error
                        .as_ref()
                        .map_or(String::new(), |e| format!(", error: {e}"))
                );
            }
            !done.is_empty() && done.iter().all(|f| f.error.is_none() && f.requests > 0)
        }
        Err(why) => {
            println!("backend: {why}");
            false
        }
    };
    println!("backend: {}", if ok { "SUCCESS" } else { "FAILURE" });
    ok
}

fn serve_all(k: &mut Kernel) -> Result<Vec<Finished>, String> {
    if k.si.flags & SIF_PRIVILEGED == 0 {
        return Err("not the control domain".into());
    }
    events::init_timer()?;
    let mut buf = [DomctlGetDomainInfo::default(); MAX_LISTED];
    let n = list(&mut buf).map_err(|e| format!("getdomaininfolist: {e}"))?;
    let mut xs = Xenstore::new();
    xs.connect(0, true)
        .map_err(|e| format!("xenstored connection of d0: {e:?}"))?;
    let mut window = Window::default();
    let mut guests = Vec::new();
    let mut done = Vec::new();
    // The control domain is d0; every other domain is a domU to serve.
    for info in buf[..n].iter().filter(|i| i.domain != 0) {
        match attach(k, &mut window, &mut xs, info.domain) {
            Ok(g) => guests.push(g),
            Err(why) => done.push(Finished {
                id: info.domain,
                requests: 0,
                console_lines: 0,
                error: Some(why),
            }),
        }
    }
    let deadline = pv::system_time_ns().saturating_add(RUN_NS);
    let mut seen = events::ring_events();
    while !guests.is_empty() {
        events::wait_until(|| events::ring_events() != seen, POLL_NS);
        seen = events::ring_events();
        let timed_out = pv::system_time_ns() >= deadline;
        let mut i = 0;
        while i < guests.len() {
            // Looked at before serving, so a domain's last output is served before it is
            // released.
            let gone = finished(guests[i].id);
            guests[i].serve(&mut xs);
            if gone || timed_out {
                let mut g = guests.swap_remove(i);
                if !gone {
                    g.fail(format!("still running after {} s", RUN_NS / 1_000_000_000));
                }
                done.push(g.detach(&mut xs));
            } else {
                i += 1;
            }
        }
    }
    done.sort_by_key(|f| f.id);
    Ok(done)
}
