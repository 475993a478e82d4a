//! `xenbus-test`: a domU's xenstore checks through the front-end library's xenbus client on
//! its store ring (a PV domU finds it in `start_info`, a PVH one with `HVMOP_get_param`; the
//! checks themselves are `pvguest::xenbus_test`), then
//! three lines of output through its console ring, for the control domain's console back end
//! to print. One `xenbus: <check> ok|FAILED` line per check and a verdict.

use alloc::format;
use alloc::string::String;
use core::ptr::addr_of;
use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::io::console::XenconsInterface;
use hypercall_abi::io::xs_wire::XenstoreDomainInterface;
use pvguest::front::console::ConsoleFront;
use pvguest::front::xenbus::Xenbus;
use pvguest::xenbus_test::{read_domid, run_checks, CheckResult, XenbusTestArgs};
use pvguest::xenstore::DomId;

use super::events::{self, RingPort};
use super::grants::Window;
use super::Kernel;

/// How long one wait for xenstored or the console back end may take (the back end starts
/// alongside this domain and may take a while to serve its ring for the first time).
const WAIT_NS: u64 = 10_000_000_000;
/// How many lines go through the console ring.
const CONSOLE_LINES: u32 = 3;

/// One line per check, counting the failures.
struct Checks {
    failed: u32,
}

impl Checks {
    fn report(&mut self, name: &str, result: CheckResult) {
        match result {
            Ok(()) => println!("xenbus: {name} ok"),
            Err(why) => {
                self.failed += 1;
                println!("xenbus: {name} FAILED: {why}");
            }
        }
    }
}

/// Where a domU's rings are: their addresses in this kernel and their ports.
pub struct RingPlaces {
    /// The xenstore ring page's address.
    pub store_va: u64,
    /// Its event channel.
    pub store_port: u32,
    /// The console ring page's address.
    pub console_va: u64,
    /// Its event channel.
    pub console_port: u32,
}

/// Runs the mode as a PV domU (rings from `start_info`); returns whether every check passed.
pub fn run(k: &mut Kernel, args: XenbusTestArgs) -> bool {
    let mut window = Window::default();
    run_on(pv_places(k, &mut window), args)
}

/// Runs the mode on the rings `places` found (or why not); returns whether every check passed.
pub fn run_on(places: Result<RingPlaces, String>, args: XenbusTestArgs) -> bool {
    let mut checks = Checks { failed: 0 };
    if let Err(why) = places.and_then(|p| checks_on_rings(p, args, &mut checks)) {
        checks.report("set up", Err(why));
    }
    let success = checks.failed == 0;
    println!("xenbus: {}", if success { "SUCCESS" } else { "FAILURE" });
    success
}

/// A PV domU's rings: machine frames from `start_info`, mapped in `window`.
fn pv_places(k: &mut Kernel, window: &mut Window) -> Result<RingPlaces, String> {
    let (store_mfn, store_port) = (k.si.store_mfn, k.si.store_evtchn);
    let console = k.si.console.dom_u();
    println!(
        "xenbus: store ring mfn {store_mfn:#x} port {store_port}, console ring mfn {:#x} port {}",
        console.mfn, console.evtchn
    );
    Ok(RingPlaces {
        store_va: window.map_frame(k, store_mfn)?,
        store_port,
        console_va: window.map_frame(k, console.mfn)?,
        console_port: console.evtchn,
    })
}

fn checks_on_rings(p: RingPlaces, args: XenbusTestArgs, checks: &mut Checks) -> CheckResult {
    events::init_timer()?;
    let store = RingPort::bind(p.store_port, WAIT_NS)?;
    let console_port = RingPort::bind(p.console_port, WAIT_NS)?;
    // SAFETY: `store_va` maps the store ring page for the rest of the run; only the client
    // reaches it, through raw pointers.
    let mut xb = unsafe { Xenbus::new(p.store_va as *mut XenstoreDomainInterface, store) };
    let domid = read_domid(&mut xb);
    checks.report(
        "read domid",
        domid.as_ref().map(|_| ()).map_err(String::clone),
    );
    let domid = domid?;
    run_checks(&mut xb, domid, args, |name, result| {
        checks.report(name, result)
    });
    checks.report(
        "console ring",
        console_ring(p.console_va as *mut XenconsInterface, console_port, domid),
    );
    Ok(())
}

/// Writes the lines through the console ring and waits until the back end has taken them.
fn console_ring(page: *mut XenconsInterface, port: RingPort, domid: DomId) -> CheckResult {
    // SAFETY: `page` maps the console ring page for the rest of the run; only the console
    // front end and the index reads below reach it, through raw pointers.
    let mut con = unsafe { ConsoleFront::new(page, port) };
    for n in 1..=CONSOLE_LINES {
        let line = match n {
            1 => format!("console ring hello from d{domid}\n"),
            _ => format!("console ring line {n} of {CONSOLE_LINES} from d{domid}\n"),
        };
        con.write(line.as_bytes())
            .map_err(|e| format!("writing line {n}: {e:?}"))?;
    }
    let index = |field: *const u32| {
        // SAFETY: `field` is an index of the mapped page, updated atomically by both ends.
        unsafe { AtomicU32::from_ptr(field.cast_mut()) }.load(Ordering::Acquire)
    };
    // SAFETY: only computes the addresses of two fields of the mapped page; nothing is read.
    let (cons, prod) = unsafe { (addr_of!((*page).out_cons), addr_of!((*page).out_prod)) };
    if events::wait_until(|| index(cons) == index(prod), WAIT_NS) {
        Ok(())
    } else {
        Err(format!(
            "the back end took {:#x} of {:#x} bytes",
            index(cons),
            index(prod)
        ))
    }
}
