//! Serial console input on this machine: [`poll`] reads the UART (polled, no interrupt),
//! routes each byte with [`crate::console::router`] to hv's debug keys or to the focused
//! domain's [`InputQueue`](crate::console::InputQueue), then moves queued input on to each
//! live domain's sink:
//!
//! - `CONSOLEIO_read` domains keep it queued until they read it; `VIRQ_CONSOLE` is raised
//!   when bytes arrive;
//! - a PV domU with a console ring gets what fits into the ring's `in` half, and its ring
//!   port is raised as the back end would (the back end only consumes `out`);
//! - an HVM domain gets what fits into its emulated 16550's receive FIFO; a vCPU halted
//!   waiting for it is made runnable (no UART interrupt is injected yet).
//!
//! The run loop calls [`poll`] on every timer tick, after every idle halt and after every
//! run of an HVM vCPU, and [`start`] once when boot is over.

use hypercall_abi::event_channel::Virq;
use hypercall_abi::io::console::XenconsInterface;
use log::info;
use spin::Mutex;

use super::paging::phys_to_virt;
use super::{console, start, vmx};
use crate::console::keys::{self, View};
use crate::console::ring::produce_in;
use crate::console::router::{switch_message, Focus, Router, Step};
use crate::console::Sink;
use crate::domain::state::{Domain, VcpuState};
use crate::evtchn::{self, Channel};
use crate::mm::{Mfn, Owner, PageType, PAGE_SIZE};

/// Most bytes taken from the UART in one poll, so that a flood of input cannot keep hv from
/// running its domains (the rest waits in the UART, and the sender is held back).
const MAX_BYTES_PER_POLL: usize = 256;

struct Input {
    router: Router,
    /// Bytes typed for a focused domain that had gone.
    lost: u64,
}

static INPUT: Mutex<Input> = Mutex::new(Input {
    router: Router::new(),
    lost: 0,
});

/// Boot is over: input goes to the first domain (Xen's DOM0) from now on.
pub fn start(domains: &[Domain]) {
    switch(&mut INPUT.lock(), domains);
}

fn switch(input: &mut Input, domains: &[Domain]) {
    let live = domains.iter().filter(|d| d.is_alive()).map(|d| d.id);
    let focus = input.router.switch(live);
    info!("{}", switch_message(focus));
}

/// Reads and routes waiting serial input, then delivers queued input to every live domain.
pub fn poll(domains: &mut [Domain]) {
    let mut input = INPUT.lock();
    for _ in 0..MAX_BYTES_PER_POLL {
        let Some(byte) = console::poll_input() else {
            break;
        };
        let passed = match input.router.feed(byte) {
            Step::Held => continue,
            Step::Switch => {
                switch(&mut input, domains);
                continue;
            }
            Step::Pass(p) => p,
        };
        match input.router.focus() {
            Focus::Hv => {
                for &key in passed.as_slice() {
                    let view = View {
                        domains,
                        focus: Focus::Hv,
                        lost: input.lost,
                    };
                    keys::handle(key, &view, &mut |line| info!("{line}"));
                }
            }
            Focus::Domain(id) => match domains.iter_mut().find(|d| d.id == id && d.is_alive()) {
                Some(d) => {
                    d.console_in.push(passed.as_slice());
                }
                None => input.lost += passed.as_slice().len() as u64,
            },
        }
    }
    drop(input);
    for d in domains.iter_mut().filter(|d| d.is_alive()) {
        deliver(d);
    }
}

/// Moves `d`'s queued input on to its sink and announces it.
fn deliver(d: &mut Domain) {
    match d.console_in.sink() {
        Sink::Hypercall => {
            if d.console_in.take_arrived() {
                if let Some(port) = d.evtchn.virq_port(0, Virq::Console as u32) {
                    let vcpu = d.evtchn.vcpu_of(port).unwrap_or(0);
                    evtchn::set_pending(d.shared, port, vcpu);
                }
            }
        }
        // Nothing waiting: nothing to move (this runs on every tick).
        Sink::Ring { .. } | Sink::Uart if d.console_in.is_empty() => {}
        Sink::Ring { mfn, port } => {
            if !plain_frame_of(d.id, mfn) {
                return;
            }
            let page = phys_to_virt(mfn * PAGE_SIZE) as *mut XenconsInterface;
            // A ring whose indices the domU broke takes nothing; its input waits, then drops.
            // SAFETY: `mfn` is a frame the live domain owns and holds as plain data (checked
            // just now; nothing can change that before this returns: one CPU, and the run
            // loop's lock is held), mapped in the direct map; it is reached only through raw
            // pointers here.
            let moved = d
                .console_in
                .deliver(|bytes| unsafe { produce_in(page, bytes) }.unwrap_or(0));
            let still_the_ring = matches!(
                d.evtchn.channel(port),
                Some(Channel::Interdomain { .. } | Channel::Unbound { .. })
            );
            if moved > 0 && still_the_ring {
                let vcpu = d.evtchn.vcpu_of(port).unwrap_or(0);
                evtchn::set_pending(d.shared, port, vcpu);
            }
        }
        Sink::Uart => {
            let queue = &mut d.console_in;
            let mut moved = 0;
            vmx::with_uart(d.id, |uart| {
                moved = queue.deliver(|bytes| {
                    let n = bytes.len().min(uart.rx_room());
                    bytes[..n].iter().for_each(|&b| uart.receive(b));
                    n
                });
            });
            if moved > 0 {
                for v in d.vcpus.iter_mut().filter(|v| v.state == VcpuState::Blocked) {
                    v.state = VcpuState::Runnable;
                }
            }
        }
    }
}

/// Whether domain `domid` owns frame `mfn` and holds it as plain data (not as a page table
/// or descriptor table, whose contents hv must not change behind its checks).
fn plain_frame_of(domid: u16, mfn: u64) -> bool {
    let frames = start::FRAMES.lock();
    frames
        .as_ref()
        .and_then(|f| f.table().get(Mfn(mfn)))
        .is_some_and(|p| {
            p.owner() == Owner::Domain(domid)
                && matches!(
                    p.page_type(),
                    PageType::None | PageType::Writable | PageType::Shared
                )
        })
}
