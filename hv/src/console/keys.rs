//! Debug keys: what hv does with serial input while it has the focus. Each key prints its
//! report as hv log lines; keys without a meaning are ignored (as on Xen), so a flood of
//! input costs nothing but the time to read it.
//!
//! - `h`: lists the keys.
//! - `q`: dumps each domain: id, name, state, kind, pages, each vCPU's state, the event
//!   channel ports in use and its console input (how it takes it, bytes waiting, received
//!   and dropped).

use alloc::string::String;
use core::fmt::{self, Write};

use super::router::Focus;
use crate::domain::state::{Domain, DomainState, VcpuState};
use crate::evtchn::Channel;

/// The keys and what they do, as `h` lists them.
pub const KEYS: [(u8, &str); 2] = [
    (b'h', "list these keys"),
    (
        b'q',
        "dump domains (state, pages, vCPUs, event channels, console input)",
    ),
];

/// What the keys report on.
pub struct View<'a> {
    /// Every domain hv has built, live or not.
    pub domains: &'a [Domain],
    /// Who has the input now.
    pub focus: Focus,
    /// Bytes typed for a focused domain that had gone.
    pub lost: u64,
}

/// Acts on `key`, handing each line of its report to `emit`; returns whether the key meant
/// something.
pub fn handle(key: u8, view: &View<'_>, emit: &mut dyn FnMut(fmt::Arguments<'_>)) -> bool {
    match key {
        b'h' => {
            emit(format_args!("'h' pressed: debug keys"));
            for (k, what) in KEYS {
                emit(format_args!("  '{}' {what}", char::from(k)));
            }
            true
        }
        b'q' => {
            dump(view, emit);
            true
        }
        _ => false,
    }
}

fn state_name(s: DomainState) -> String {
    let mut out = String::new();
    let _ = match s {
        DomainState::Running => write!(out, "running"),
        DomainState::Paused => write!(out, "paused"),
        DomainState::Shutdown(r) => write!(out, "shut down ({r:?})"),
        DomainState::Crashed => write!(out, "crashed"),
        DomainState::Destroyed => write!(out, "destroyed"),
    };
    out
}

fn vcpu_state_name(s: VcpuState) -> &'static str {
    match s {
        VcpuState::Runnable => "runnable",
        VcpuState::Blocked => "blocked",
        VcpuState::Polling => "polling",
        VcpuState::Down => "down",
    }
}

fn channel(out: &mut String, port: u32, c: Channel) {
    let _ = match c {
        Channel::Free => Ok(()),
        Channel::Unbound { remote } => write!(out, " {port}:unbound(d{remote})"),
        Channel::Interdomain {
            remote,
            remote_port,
        } => write!(out, " {port}:d{remote}/{remote_port}"),
        Channel::Virq { virq } => write!(out, " {port}:virq{virq}"),
        Channel::Ipi => write!(out, " {port}:ipi"),
    };
}

fn dump(view: &View<'_>, emit: &mut dyn FnMut(fmt::Arguments<'_>)) {
    let focus = match view.focus {
        Focus::Hv => String::from("Xen"),
        Focus::Domain(id) => alloc::format!("DOM{id}"),
    };
    emit(format_args!(
        "'q' pressed: {} domains; input to {focus}; {} bytes typed for domains that had gone",
        view.domains.len(),
        view.lost
    ));
    for d in view.domains {
        let kind = if d.hvm.is_some() { "HVM" } else { "PV" };
        let role = if d.privileged { ", control domain" } else { "" };
        emit(format_args!(
            "d{} ({}): {}, {kind}{role}, {} pages (max {})",
            d.id,
            d.name,
            state_name(d.state),
            d.tot_pages,
            d.max_pages
        ));
        for v in &d.vcpus {
            let info = d.shared.vcpu_info.get(v.id as usize);
            emit(format_args!(
                "d{}   vcpu{}: {}, upcall pending {} mask {}, {} us on the CPU",
                d.id,
                v.id,
                vcpu_state_name(v.state),
                info.map_or(0, |i| i.evtchn_upcall_pending),
                info.map_or(0, |i| i.evtchn_upcall_mask),
                v.cpu_time_ns / 1000
            ));
        }
        let mut ports = String::new();
        for (port, c) in d.evtchn.ports_in_use() {
            channel(&mut ports, port, c);
        }
        if ports.is_empty() {
            ports.push_str(" none");
        }
        emit(format_args!("d{}   ports:{ports}", d.id));
        let q = &d.console_in;
        emit(format_args!(
            "d{}   input: {}, {} waiting, {} received, {} dropped",
            d.id,
            q.sink().name(),
            q.len(),
            q.received(),
            q.dropped()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{InputQueue, Sink};
    use crate::hypercall::testing::domain;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    fn lines(key: u8, view: &View<'_>) -> (bool, Vec<String>) {
        let mut out = Vec::new();
        let known = handle(key, view, &mut |args| out.push(args.to_string()));
        (known, out)
    }

    #[test]
    fn h_lists_every_key_and_others_are_ignored() {
        let view = View {
            domains: &[],
            focus: Focus::Hv,
            lost: 0,
        };
        let (known, out) = lines(b'h', &view);
        assert!(known);
        assert_eq!(out.len(), 1 + KEYS.len());
        for (k, _) in KEYS {
            let shown = alloc::format!("'{}' ", char::from(k));
            assert!(out.iter().any(|l| l.contains(&shown)), "{shown} in {out:?}");
        }
        for other in [b'x', b'\r', 0, 0xff] {
            assert_eq!(lines(other, &view), (false, Vec::new()));
        }
    }

    #[test]
    fn q_dumps_each_domain() {
        let mut a = domain(0);
        a.name = "toolstack".into();
        a.privileged = true;
        a.console_in = InputQueue::new(Sink::Hypercall);
        a.console_in.push(b"abc");
        let port = a.evtchn.bind_virq(2, 0).unwrap();
        let mut b = domain(4);
        b.state = DomainState::Crashed;
        b.vcpus[0].state = VcpuState::Down;
        b.console_in = InputQueue::new(Sink::Uart);
        b.hvm = Some(crate::domain::state::HvmParams::default());
        b.console_in.push(&[0; crate::console::INPUT_QUEUE_MAX + 5]);
        let domains = [a, b];
        let view = View {
            domains: &domains,
            focus: Focus::Domain(4),
            lost: 9,
        };
        let (known, out) = lines(b'q', &view);
        assert!(known);
        assert!(
            out[0].contains("2 domains; input to DOM4; 9 bytes"),
            "{out:?}"
        );
        let expect = [
            "d0 (toolstack): running, PV, control domain, 256 pages (max 512)".to_string(),
            "d0   vcpu0: runnable, upcall pending 0 mask 0, 0 us on the CPU".to_string(),
            alloc::format!("d0   ports: {port}:virq2"),
            "d0   input: CONSOLEIO_read, 3 waiting, 3 received, 0 dropped".to_string(),
            "d4 (test): crashed, HVM, 256 pages (max 512)".to_string(),
            "d4   vcpu0: down, upcall pending 0 mask 0, 0 us on the CPU".to_string(),
            "d4   ports: none".to_string(),
            "d4   input: UART, 1024 waiting, 1024 received, 5 dropped".to_string(),
        ];
        assert_eq!(out[1..], expect);
    }
}
