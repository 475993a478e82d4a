//! `console-echo`: reads console input and prints each line back as `echo: <line>` (see
//! `pvguest::echo`); the line `quit` powers the domain off.
//!
//! Where the input comes from depends on the domain, as hv delivers it:
//! - a domU with a console ring (`start_info.console.domU`) reads the ring's `in` half,
//!   waking on the ring's port, and prints through the ring's `out` half for the control
//!   domain's back end; it first reads its domain id from xenstore (the back end counts a
//!   domU that never used its store ring as a failure);
//! - the initial domain, and a domU without a ring, read with `CONSOLEIO_read`, waking on
//!   `VIRQ_CONSOLE`, and print with `console_io`.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::event_channel::{EvtchnPort, Virq};
use hypercall_abi::io::console::XenconsInterface;
use hypercall_abi::io::xs_wire::XenstoreDomainInterface;
use hypercall_abi::xen::SIF_INITDOMAIN;
use pvguest::echo::Echo;
use pvguest::front::console::ConsoleFront;
use pvguest::front::evtchn;
use pvguest::front::xenbus::Xenbus;
use pvguest::xenbus_test::read_domid;

use super::events::{self, RingPort};
use super::grants::Window;
use super::{pv, Kernel};

/// The longest one wait for input lasts before the mode looks again anyway.
const WAIT_NS: u64 = 1_000_000_000;
/// How long a wait for xenstored may take (the back end starts alongside this domain).
const STORE_WAIT_NS: u64 = 10_000_000_000;

/// Runs the mode; returns whether it ended with `quit` rather than an error.
pub fn run(k: &mut Kernel) -> bool {
    if let Err(e) = events::init_timer() {
        println!("console-echo: {e}");
        return false;
    }
    let console = k.si.console.dom_u();
    let result = if k.si.flags & SIF_INITDOMAIN == 0 && console.mfn != 0 {
        on_ring(k, console.mfn, console.evtchn)
    } else {
        on_hypercall()
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            println!("console-echo: {e}");
            false
        }
    }
}

/// `VIRQ_CONSOLE` events so far.
static CONSOLE_EVENTS: AtomicU32 = AtomicU32::new(0);

fn console_event(_: EvtchnPort, _: usize) {
    CONSOLE_EVENTS.fetch_add(1, Ordering::SeqCst);
}

fn on_hypercall() -> Result<(), String> {
    let hc = pv::hypercalls();
    let port = evtchn::bind_virq(&hc, Virq::Console, 0)
        .map_err(|e| format!("bind_virq(VIRQ_CONSOLE): {e}"))?;
    events::bind_handler(port, console_event, 0)?;
    println!("console-echo: ready, reading with CONSOLEIO_read");
    let mut echo = Echo::new();
    let mut buf = [0u8; 128];
    loop {
        let seen = CONSOLE_EVENTS.load(Ordering::SeqCst);
        let n = hc
            .console_io_read(&mut buf)
            .map_err(|e| format!("CONSOLEIO_read: {e}"))? as usize;
        if n == 0 {
            events::wait_until(|| CONSOLE_EVENTS.load(Ordering::SeqCst) != seen, WAIT_NS);
            continue;
        }
        if echo.push(&buf[..n.min(buf.len())], |line| println!("{line}")) {
            println!("console-echo: quit");
            return Ok(());
        }
    }
}

fn on_ring(k: &mut Kernel, console_mfn: u64, console_port: u32) -> Result<(), String> {
    let mut window = Window::default();
    let store_va = window.map_frame(k, k.si.store_mfn)?;
    let console_va = window.map_frame(k, console_mfn)?;
    let store = RingPort::bind(k.si.store_evtchn, STORE_WAIT_NS)?;
    // SAFETY: `store_va` maps the store ring page for the rest of the run; only the client
    // reaches it, through raw pointers.
    let mut xb = unsafe { Xenbus::new(store_va as *mut XenstoreDomainInterface, store) };
    let domid = read_domid(&mut xb)?;
    let port = RingPort::bind(console_port, WAIT_NS)?;
    // SAFETY: `console_va` maps the console ring page for the rest of the run; only the
    // console front end reaches it, through raw pointers.
    let mut con = unsafe { ConsoleFront::new(console_va as *mut XenconsInterface, port) };
    ring_line(
        &mut con,
        &format!("console-echo: d{domid} ready, reading its console ring"),
    )?;
    let mut echo = Echo::new();
    let mut buf = [0u8; 128];
    loop {
        let n = con
            .read(&mut buf)
            .map_err(|e| format!("console ring input: {e}"))?;
        if n == 0 {
            // A timeout only means nothing came: look again.
            let _ = con.wait();
            continue;
        }
        let mut replies = alloc::vec::Vec::new();
        let quit = echo.push(&buf[..n], |line| replies.push(String::from(line)));
        for line in &replies {
            ring_line(&mut con, line)?;
        }
        if quit {
            ring_line(&mut con, "console-echo: quit")?;
            return Ok(());
        }
    }
}

/// Writes `line` and its newline through the console ring.
fn ring_line(con: &mut ConsoleFront<RingPort>, line: &str) -> Result<(), String> {
    con.write(line.as_bytes())
        .and_then(|()| con.write(b"\n"))
        .map_err(|e| format!("console ring output: {e:?}"))
}
