//! The two-domain modes: `pingpong` (events back and forth over an interdomain channel) and
//! `grant` (pages granted by one domain, mapped and copied by the other). Both sides print one
//! line per finding and a verdict; `crate::pair` in the library holds their arguments, tally
//! and page patterns.

use alloc::format;
use alloc::string::{String, ToString};
use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::errno::{Errno, HypercallError};
use hypercall_abi::event_channel::{EvtchnPort, EvtchnStat};
use hypercall_abi::grant_table::{
    GnttabCopy, GnttabCopyPtr, GrantRef, GrantStatus, GNTCOPY_SOURCE_GREF,
};
use hypercall_abi::xen::DOMID_SELF;
use pvguest::front::evtchn;
use pvguest::front::grant::{self, GrantError, GrantMapping, GrantTable};
use pvguest::pair::{
    checksum, fill_pattern, pattern_checksum, GrantArgs, PairArgs, PingpongArgs, PingpongTally,
    Role, Then, GRANTER_SEED, MAPPER_SEED, PAGE_WORDS, READONLY_SEED,
};

use super::grants::{self, Window};
use super::{crash, events, pv, Kernel};
use pvguest::cmdline::CrashKind;

/// How long either side waits for the other to allocate or bind the channel.
const BIND_PATIENCE_NS: u64 = 10_000_000_000;
/// How long a ping-pong turn may take before its event counts as lost.
const TURN_TIMEOUT_NS: u64 = 2_000_000_000;
/// How long a grant step may take (the peer maps, copies and checks meanwhile).
const STEP_TIMEOUT_NS: u64 = 10_000_000_000;
/// How long each side listens after the last turn for an event that should not come.
const QUIET_NS: u64 = 20_000_000;
/// A grant reference beyond any table hv gives a domain.
const OUT_OF_RANGE_REF: GrantRef = 1 << 24;
/// Where no grant can be mapped: inside Xen's reserved virtual range (a PV guest's
/// `host_addr`) and beyond 48-bit guest-physical addresses (a PVH guest's).
const IMPOSSIBLE_ADDR: u64 = 0xffff_8200_0000_0000;

/// Events the peer's port delivered, counted by its handler.
static PEER_EVENTS: AtomicU32 = AtomicU32::new(0);

fn peer_event(_: EvtchnPort, _: usize) {
    PEER_EVENTS.fetch_add(1, Ordering::SeqCst);
}

/// The channel to the peer, with a handler counting its events.
struct Peer {
    port: EvtchnPort,
    /// Events accounted for so far.
    taken: u32,
}

impl Peer {
    /// Sets up the channel as `pair.role` says: the server allocates the first port of its
    /// domain for the peer (and checks it is `pair.port` if that was given) and waits until
    /// the peer has bound it; the client binds to the server's port, retrying while the server
    /// has not allocated it yet (`-EINVAL`).
    /// Then the timer is bound for the waits' timeouts, after the channel so that the
    /// channel's port is the domain's first.
    fn connect(mode: &str, pair: PairArgs) -> Result<Peer, String> {
        let hc = pv::hypercalls();
        let port = match (pair.role, pair.port) {
            (Role::Server, want) => {
                let port = evtchn::alloc_unbound(&hc, pair.peer)
                    .map_err(|e| format!("alloc_unbound for d{}: {e}", pair.peer))?;
                println!("{mode}: allocated port {port} for d{}", pair.peer);
                if want.is_some_and(|w| w != port) {
                    return Err(format!("port {port} is not the agreed {want:?}"));
                }
                // An event sent before the peer binds would be dropped: wait for the bind.
                let deadline = pv::system_time_ns() + BIND_PATIENCE_NS;
                loop {
                    let status = evtchn::status(&hc, port)
                        .map_err(|e| format!("status of port {port}: {e}"))?;
                    if status.status == EvtchnStat::Interdomain.raw() {
                        break;
                    }
                    if pv::system_time_ns() >= deadline {
                        return Err(format!("d{} did not bind port {port}", pair.peer));
                    }
                    let _ = hc.sched_op_yield();
                }
                port
            }
            (Role::Client, remote) => {
                let remote = remote.ok_or("a client needs port=")?;
                let deadline = pv::system_time_ns() + BIND_PATIENCE_NS;
                let mut tries = 1u32;
                let port = loop {
                    match evtchn::bind_interdomain(&hc, pair.peer, remote) {
                        Ok(port) => break port,
                        Err(HypercallError::Errno(Errno::EINVAL))
                            if pv::system_time_ns() < deadline =>
                        {
                            tries += 1;
                            let _ = hc.sched_op_yield();
                        }
                        Err(e) => {
                            return Err(format!(
                                "bind_interdomain(d{}, port {remote}) after {tries} tries: {e}",
                                pair.peer
                            ))
                        }
                    }
                };
                println!(
                    "{mode}: bound port {port} to d{} port {remote} after {tries} tries",
                    pair.peer
                );
                port
            }
        };
        PEER_EVENTS.store(0, Ordering::SeqCst);
        events::init_timer()?;
        events::bind_handler(port, peer_event, 0)?;
        Ok(Peer { port, taken: 0 })
    }

    fn send(&self) -> Result<(), String> {
        evtchn::send(&pv::hypercalls(), self.port)
            .map_err(|e| format!("send on port {}: {e}", self.port))
    }

    /// Waits for the peer's next event. Returns how many events beyond the one awaited
    /// arrived (0 in a correct exchange), or `None` on a timeout.
    fn wait(&mut self, timeout_ns: u64) -> Option<u32> {
        let want = self.taken + 1;
        if !events::wait_until(|| PEER_EVENTS.load(Ordering::SeqCst) >= want, timeout_ns) {
            return None;
        }
        let seen = PEER_EVENTS.load(Ordering::SeqCst);
        self.taken = seen;
        // Upcalls are masked now: a pending bit means an event arrived after the dispatch,
        // before this side answered, i.e. one that was not due.
        let early = u32::from(pv::port_pending(self.port));
        if early != 0 {
            pv::clear_port(self.port);
        }
        Some(seen - want + early)
    }

    /// Events that arrive within `QUIET_NS` (none should).
    fn stray_events(&mut self) -> u32 {
        let taken = self.taken;
        events::wait_until(|| PEER_EVENTS.load(Ordering::SeqCst) > taken, QUIET_NS);
        let seen = PEER_EVENTS.load(Ordering::SeqCst);
        self.taken = seen;
        seen - taken
    }

    fn close(self) {
        events::unbind_handler(self.port);
        let _ = evtchn::close(&pv::hypercalls(), self.port);
    }
}

/// `pingpong`: strict alternation of events with the peer, the server sending first.
pub fn pingpong(args: PingpongArgs) -> bool {
    let role = args.pair.role;
    let mut tally = PingpongTally::new(role, args.rounds);
    let ok = match Peer::connect("pingpong", args.pair) {
        Ok(mut peer) => {
            let exchanged = exchange(&mut peer, role, &mut tally);
            tally.doubled += peer.stray_events();
            peer.close();
            exchanged
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &ok {
        println!("pingpong: {e}");
    }
    println!("{tally}");
    let success = ok.is_ok() && tally.success();
    println!("pingpong: {}", if success { "SUCCESS" } else { "FAILURE" });
    success
}

fn exchange(peer: &mut Peer, role: Role, tally: &mut PingpongTally) -> Result<(), String> {
    let start = pv::system_time_ns();
    for _ in 0..tally.rounds {
        if role == Role::Server {
            peer.send()?;
        }
        match peer.wait(TURN_TIMEOUT_NS) {
            Some(extra) => {
                tally.received += 1;
                tally.doubled += extra;
            }
            None => {
                tally.timed_out = true;
                return Err(format!(
                    "no event from the peer within {} ms after {} received",
                    TURN_TIMEOUT_NS / 1_000_000,
                    tally.received
                ));
            }
        }
        if role == Role::Client {
            peer.send()?;
        }
    }
    let took = pv::system_time_ns() - start;
    println!(
        "pingpong: {} rounds in {} us ({} ns per round trip)",
        tally.rounds,
        took / 1000,
        took / u64::from(tally.rounds.max(1))
    );
    Ok(())
}

/// One line per check, and whether all passed.
struct Checks {
    failed: u32,
}

impl Checks {
    fn check(&mut self, name: &str, result: Result<(), String>) -> bool {
        match result {
            Ok(()) => println!("grant: {name} ok"),
            Err(why) => {
                self.failed += 1;
                println!("grant: {name} FAILED: {why}");
            }
        }
        self.failed == 0
    }

    fn verdict(&self) -> bool {
        let success = self.failed == 0;
        println!("grant: {}", if success { "SUCCESS" } else { "FAILURE" });
        success
    }
}

fn expect(what: &str, got: u64, want: u64) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} is {got:#x}, expected {want:#x}"))
    }
}

fn refused(result: Result<GrantMapping, GrantError>, want: GrantStatus) -> Result<(), String> {
    match result {
        Err(GrantError::Status(s)) if s == want => Ok(()),
        Err(e) => Err(format!("refused with {e}, expected status {}", want.raw())),
        Ok(m) => {
            // SAFETY: the mapping that should not exist is at a window page nothing uses.
            let _ = unsafe { grant::unmap_grant(&pv::hypercalls(), m) };
            Err("the map succeeded".into())
        }
    }
}

/// `grant`: the granter's or the mapper's side.
pub fn grant(k: &mut Kernel, args: GrantArgs) -> bool {
    let mut checks = Checks { failed: 0 };
    let mut window = Window::default();
    let result = match (args.pair.role, args.then) {
        (Role::Server, Then::Finish) => {
            let mut pages = PvPages {
                k,
                window: &mut window,
            };
            granter(&mut pages, args, &mut checks)
        }
        (Role::Client, Then::Finish) => {
            let mut pages = PvPages {
                k,
                window: &mut window,
            };
            mapper(&mut pages, args, &mut checks)
        }
        (Role::Server, then) => granter_death(k, args, then, &mut window, &mut checks),
        (Role::Client, then) => mapper_death(k, args, then, &mut window, &mut checks),
    };
    if let Err(e) = result {
        checks.check("run", Err(e));
    }
    checks.verdict()
}

/// `grant` with the table and pages `pages` gives (a PVH guest's own), for a kernel
/// without the PV memory management; `then=` needs it.
pub fn grant_with_pages(pages: &mut impl GrantPages, args: GrantArgs) -> bool {
    let mut checks = Checks { failed: 0 };
    let result = match (args.pair.role, args.then) {
        (Role::Server, Then::Finish) => granter(pages, args, &mut checks),
        (Role::Client, Then::Finish) => mapper(pages, args, &mut checks),
        _ => Err("`then=` does not run here".into()),
    };
    if let Err(e) = result {
        checks.check("run", Err(e));
    }
    checks.verdict()
}

/// Where a side of `grant` gets its table and pages.
pub trait GrantPages {
    /// This domain's grant table (one frame), set up and mapped.
    fn own_table(&mut self) -> Result<GrantTable, String>;
    /// A page of this domain's own: its frame number (as grant entries and grant copies
    /// name it) and its address. It may be used only by the caller.
    fn fresh_page(&mut self) -> Result<(u64, u64), String>;
    /// An address to map grants at (`host_addr`: a PV guest's virtual address, a PVH guest's
    /// guest-physical one), which is also where this kernel reads the mapped page.
    fn map_slot(&mut self) -> Result<u64, String>;
}

/// A PV kernel's frames, mapped in its window.
struct PvPages<'a, 'k> {
    k: &'k mut Kernel,
    window: &'a mut Window,
}

impl GrantPages for PvPages<'_, '_> {
    fn own_table(&mut self) -> Result<GrantTable, String> {
        grants::own_table(self.k, self.window)
    }

    fn fresh_page(&mut self) -> Result<(u64, u64), String> {
        let frame = self.k.mm.alloc_frame()?;
        let va = self.window.map_frame(self.k, frame.mfn)?;
        Ok((frame.mfn, va))
    }

    fn map_slot(&mut self) -> Result<u64, String> {
        self.window.page(self.k)
    }
}

/// Fills a fresh page with `seed`'s pattern; returns its frame number and address.
fn patterned_frame(pages: &mut impl GrantPages, seed: u64) -> Result<(u64, u64), String> {
    let (frame, va) = pages.fresh_page()?;
    let mut words = [0u64; PAGE_WORDS];
    fill_pattern(seed, &mut words);
    // SAFETY: `va` maps the fresh page writable, and nothing else refers to it.
    unsafe { grants::write_page(va, &words) };
    Ok((frame, va))
}

fn granter(
    pages: &mut impl GrantPages,
    args: GrantArgs,
    checks: &mut Checks,
) -> Result<(), String> {
    let peer_id = args.pair.peer;
    let mut table = pages.own_table()?;
    checks.check("set up own table", Ok(()));
    let (rw_mfn, rw_va) = patterned_frame(pages, GRANTER_SEED)?;
    let (ro_mfn, _) = patterned_frame(pages, READONLY_SEED)?;
    let rw = table
        .grant_access(peer_id, rw_mfn, false)
        .map_err(|e| e.to_string())?;
    let ro = table
        .grant_access(peer_id, ro_mfn, true)
        .map_err(|e| e.to_string())?;
    println!("grant: granted ref {rw} (read-write) and ref {ro} (read-only) to d{peer_id}");
    checks.check(
        "refs as agreed",
        expect("read-write ref", rw.into(), args.rw_ref.into()).and(expect(
            "read-only ref",
            ro.into(),
            args.ro_ref.into(),
        )),
    );
    // The channel comes after the grants: once the mapper has bound, they exist.
    let mut peer = Peer::connect("grant", args.pair)?;
    let result = (|| {
        peer.wait(STEP_TIMEOUT_NS)
            .ok_or("the mapper did not finish its first round")?;
        // SAFETY: `rw_va` maps our granted frame; the mapper is done writing it.
        unsafe { check_mapped_by_mapper(checks, &mut table, rw, rw_va) };
        peer.send()?;
        peer.wait(STEP_TIMEOUT_NS)
            .ok_or("the mapper did not unmap")?;
        checks.check(
            "end access after unmap",
            table.end_access(rw).map_err(|e| e.to_string()),
        );
        checks.check(
            "end read-only access",
            table.end_access(ro).map_err(|e| e.to_string()),
        );
        Ok(())
    })();
    peer.close();
    result
}

fn mapper(pages: &mut impl GrantPages, args: GrantArgs, checks: &mut Checks) -> Result<(), String> {
    let hc = pv::hypercalls();
    let dom = args.pair.peer;
    let mut peer = Peer::connect("grant", args.pair)?;
    let va = pages.map_slot()?;
    let result = (|| {
        // SAFETY: `va` is a window page with its L1 in place and nothing mapped or referred
        // to there.
        let mapped = unsafe { grant::map_grant(&hc, dom, args.rw_ref, va, false) };
        if checks.check(
            "map read-write grant",
            mapped.map(|_| ()).map_err(|e| e.to_string()),
        ) {
            if let Ok(m) = mapped {
                // SAFETY: `va` maps the granted page writable; only this code touches it.
                unsafe { check_granters_page_and_overwrite(checks, va) };
                // SAFETY: nothing refers to the page any more.
                let unmapped = unsafe { grant::unmap_grant(&hc, m) };
                checks.check("unmap", unmapped.map_err(|e| e.to_string()));
            }
        }

        let (own, own_va) = pages.fresh_page()?;
        let mut copy = [GnttabCopy {
            source: GnttabCopyPtr::from_gref(dom, args.ro_ref, 0),
            dest: GnttabCopyPtr::from_gmfn(DOMID_SELF, own, 0),
            len: 4096,
            flags: GNTCOPY_SOURCE_GREF,
            ..GnttabCopy::default()
        }];
        // SAFETY: the destination is a fresh frame only reached through `own_va`, read
        // volatile below.
        let copied = unsafe { grant::copy(&hc, &mut copy) };
        checks.check(
            "copy read-only grant",
            copied.map_err(|e| e.to_string()).and_then(|()| {
                // SAFETY: `own_va` maps our own frame.
                let seen = checksum(&unsafe { grants::read_page(own_va) });
                expect("checksum", seen, pattern_checksum(READONLY_SEED))
            }),
        );
        // SAFETY: as for the first map.
        let writable_ro = unsafe { grant::map_grant(&hc, dom, args.ro_ref, va, false) };
        // Xen refuses to write-pin a read-only entry with GNTST_general_error.
        checks.check(
            "map read-only grant writable refused",
            refused(writable_ro, GrantStatus::GeneralError),
        );
        // SAFETY: as for the first map.
        let beyond = unsafe { grant::map_grant(&hc, dom, OUT_OF_RANGE_REF, va, true) };
        checks.check(
            "map out-of-range ref refused",
            refused(beyond, GrantStatus::BadGntref),
        );
        // SAFETY: no mapping can exist there (hv's range for PV, beyond any guest-physical
        // address for PVH): the hypervisor must refuse, and nothing of ours is touched.
        let nowhere = unsafe { grant::map_grant(&hc, dom, args.rw_ref, IMPOSSIBLE_ADDR, false) };
        checks.check(
            "map at an impossible address refused",
            refused(nowhere, GrantStatus::GeneralError),
        );
        // SAFETY: as for the first map.
        let held = unsafe { grant::map_grant(&hc, dom, args.rw_ref, va, false) };
        checks.check(
            "map again and hold",
            held.map(|_| ()).map_err(|e| e.to_string()),
        );
        peer.send()?;
        peer.wait(STEP_TIMEOUT_NS)
            .ok_or("the granter did not answer")?;
        if let Ok(m) = held {
            // SAFETY: nothing refers to the page.
            let unmapped = unsafe { grant::unmap_grant(&hc, m) };
            checks.check("unmap held mapping", unmapped.map_err(|e| e.to_string()));
        }
        peer.send()
    })();
    peer.close();
    result
}

/// The granter's checks once the mapper has mapped ref `rw` (at our `rw_va`) and written its
/// pattern: the page holds that pattern, and ending access under the mapping is refused.
///
/// # Safety
/// `rw_va` maps the frame granted as `rw`, and the mapper is done writing it.
unsafe fn check_mapped_by_mapper(
    checks: &mut Checks,
    table: &mut GrantTable,
    rw: GrantRef,
    rw_va: u64,
) {
    // SAFETY: per the caller, `rw_va` maps the granted frame and nobody writes it now.
    let seen = checksum(&unsafe { grants::read_page(rw_va) });
    checks.check(
        "mapper's pattern",
        expect("checksum", seen, pattern_checksum(MAPPER_SEED)),
    );
    checks.check(
        "end access while mapped refused",
        match table.end_access(rw) {
            Err(GrantError::InUse(_)) => Ok(()),
            Err(e) => Err(format!("refused with {e}, expected in use")),
            Ok(()) => Err("access ended under the mapping".into()),
        },
    );
}

/// The mapper's first look at a freshly mapped read-write grant: it holds the granter's
/// pattern; then the mapper writes its own.
///
/// # Safety
/// `va` maps the granted page writable, and nothing else in this domain touches it.
unsafe fn check_granters_page_and_overwrite(checks: &mut Checks, va: u64) {
    // SAFETY: per the caller, `va` maps the granted page.
    let seen = checksum(&unsafe { grants::read_page(va) });
    checks.check(
        "granter's pattern",
        expect("checksum", seen, pattern_checksum(GRANTER_SEED)),
    );
    let mut words = [0u64; PAGE_WORDS];
    fill_pattern(MAPPER_SEED, &mut words);
    // SAFETY: per the caller, mapped writable and ours alone.
    unsafe { grants::write_page(va, &words) };
}

/// Dies on purpose (`then=crash`), leaving whatever this side holds for hv to clean up.
fn die_holding(what: &str) -> ! {
    println!("grant: crashing while {what}");
    crash::crash(CrashKind::Shutdown)
}

/// The granter of `then=crash|outlive`: grants one page read-write and waits until the mapper
/// has mapped it. With `then=crash` it then dies under the mapping; with `then=outlive` it is
/// refused ending access while the mapper holds the mapping, tells the mapper (which dies),
/// and ends access once hv has released the dead mapper's mapping.
fn granter_death(
    k: &mut Kernel,
    args: GrantArgs,
    then: Then,
    window: &mut Window,
    checks: &mut Checks,
) -> Result<(), String> {
    let peer_id = args.pair.peer;
    let mut pages = PvPages { k, window };
    let mut table = pages.own_table()?;
    let (rw_mfn, rw_va) = patterned_frame(&mut pages, GRANTER_SEED)?;
    let rw = table
        .grant_access(peer_id, rw_mfn, false)
        .map_err(|e| e.to_string())?;
    println!("grant: granted ref {rw} (read-write) to d{peer_id}");
    checks.check(
        "ref as agreed",
        expect("read-write ref", rw.into(), args.rw_ref.into()),
    );
    let mut peer = Peer::connect("grant", args.pair)?;
    peer.wait(STEP_TIMEOUT_NS)
        .ok_or("the mapper did not map the grant")?;
    if then == Then::Crash {
        die_holding(&format!("ref {rw} is mapped by d{peer_id}"));
    }
    // SAFETY: `rw_va` maps our granted frame; the mapper is done writing it.
    unsafe { check_mapped_by_mapper(checks, &mut table, rw, rw_va) };
    // The mapper dies on this event, with the mapping in place.
    peer.send()?;
    let hc = pv::hypercalls();
    let deadline = pv::system_time_ns() + STEP_TIMEOUT_NS;
    let mut tries = 1u32;
    let ended = loop {
        match table.end_access(rw) {
            Ok(()) => break Ok(()),
            Err(GrantError::InUse(_)) if pv::system_time_ns() < deadline => {
                tries += 1;
                let _ = hc.sched_op_yield();
            }
            Err(e) => break Err(format!("after {tries} tries: {e}")),
        }
    };
    if ended.is_ok() {
        println!("grant: access ended after {tries} tries");
    }
    checks.check("end access after the mapper died", ended);
    peer.close();
    Ok(())
}

/// The mapper of `then=crash|outlive`: maps the read-write grant, checks the granter's
/// pattern and writes its own. With `then=crash` it tells the granter, waits for its answer
/// and dies with the mapping in place; with `then=outlive` it tells the granter (which dies),
/// waits until the channel shows the granter gone, checks that the page is still the
/// granter's page, readable and writable, and unmaps it.
fn mapper_death(
    k: &mut Kernel,
    args: GrantArgs,
    then: Then,
    window: &mut Window,
    checks: &mut Checks,
) -> Result<(), String> {
    let hc = pv::hypercalls();
    let dom = args.pair.peer;
    let mut peer = Peer::connect("grant", args.pair)?;
    let va = window.page(k)?;
    // SAFETY: `va` is a window page with its L1 in place and nothing mapped or referred to
    // there.
    let mapped = unsafe { grant::map_grant(&hc, dom, args.rw_ref, va, false) };
    let m = mapped.map_err(|e| format!("map read-write grant: {e}"))?;
    checks.check("map read-write grant", Ok(()));
    // SAFETY: `va` maps the granted page writable; only this code touches it.
    unsafe { check_granters_page_and_overwrite(checks, va) };
    peer.send()?;
    if then == Then::Crash {
        peer.wait(STEP_TIMEOUT_NS)
            .ok_or("the granter did not answer")?;
        die_holding(&format!("ref {} of d{dom} is mapped", args.rw_ref));
    }
    // The granter dies now; its end of the channel closes with it. No event says so (Xen
    // does not notify the remaining end), so poll.
    let port = peer.port;
    let deadline = pv::system_time_ns() + STEP_TIMEOUT_NS;
    let gone = loop {
        if evtchn::status(&hc, port).is_ok_and(|s| s.status != EvtchnStat::Interdomain.raw()) {
            break true;
        }
        if pv::system_time_ns() >= deadline {
            break false;
        }
        let _ = hc.sched_op_yield();
    };
    checks.check(
        "granter gone",
        if gone {
            Ok(())
        } else {
            Err(format!("port {port} still connected to d{dom}"))
        },
    );
    // SAFETY: `va` still maps the dead granter's page (the mapping holds it); only this code
    // touches it.
    let seen = checksum(&unsafe { grants::read_page(va) });
    checks.check(
        "page readable after the granter died",
        expect("checksum", seen, pattern_checksum(MAPPER_SEED)),
    );
    let mut words = [0u64; PAGE_WORDS];
    fill_pattern(READONLY_SEED, &mut words);
    // SAFETY: as above, mapped writable.
    unsafe { grants::write_page(va, &words) };
    // SAFETY: as above.
    let seen = checksum(&unsafe { grants::read_page(va) });
    checks.check(
        "page writable after the granter died",
        expect("checksum", seen, pattern_checksum(READONLY_SEED)),
    );
    // SAFETY: nothing refers to the page any more.
    let unmapped = unsafe { grant::unmap_grant(&hc, m) };
    checks.check(
        "unmap after the granter died",
        unmapped.map_err(|e| e.to_string()),
    );
    peer.close();
    Ok(())
}
