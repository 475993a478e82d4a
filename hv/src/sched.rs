//! The scheduler: round robin over runnable vCPUs of running domains, with time slices, and
//! the wake-up rules for blocked and polling vCPUs.
//!
//! hv does not keep run queues: with a handful of vCPUs a scan in a fixed order (domain,
//! then vCPU) after the current one is both fair and cheaper than the bookkeeping.

use crate::domain::state::{Domain, DomainState, VcpuState};
use crate::evtchn;
use hypercall_abi::event_channel::Virq;

/// Ticks a vCPU runs before another runnable one is given the CPU.
pub const SLICE_TICKS: u32 = 3;

/// A vCPU: (index of its domain, index within the domain).
pub type VcpuRef = (usize, usize);

/// Fires due timers (as VIRQ_TIMER) and wakes vCPUs whose wait is over. Returns the
/// earliest timer or poll deadline still pending, so the caller can sleep until then.
pub fn update(domains: &mut [Domain], now: u64) -> Option<u64> {
    let mut next: Option<u64> = None;
    let mut note = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
    for dom in domains
        .iter_mut()
        .filter(|d| d.state == DomainState::Running)
    {
        for i in 0..dom.vcpus.len() {
            let v = &mut dom.vcpus[i];
            match v.timer_deadline {
                Some(t) if t <= now => {
                    v.timer_deadline = None;
                    if let Some(port) = dom.evtchn.virq_port(v.id, Virq::Timer as u32) {
                        evtchn::set_pending(dom.shared, port, v.id);
                    }
                }
                Some(t) => note(t),
                None => {}
            }
            let v = &mut dom.vcpus[i];
            match v.state {
                VcpuState::Blocked => {
                    let pending = dom
                        .shared
                        .vcpu_info
                        .get(v.id as usize)
                        .is_some_and(|i| i.evtchn_upcall_pending != 0);
                    if pending {
                        v.state = VcpuState::Runnable;
                    }
                }
                VcpuState::Polling => {
                    let hit = v
                        .poll_ports
                        .iter()
                        .any(|&p| evtchn::is_pending(dom.shared, p));
                    let timed_out = v.poll_deadline.is_some_and(|t| t <= now);
                    if hit || timed_out {
                        v.state = VcpuState::Runnable;
                        v.poll_ports.clear();
                        v.poll_deadline = None;
                    } else if let Some(t) = v.poll_deadline {
                        note(t);
                    }
                }
                VcpuState::Runnable | VcpuState::Down => {}
            }
        }
    }
    next
}

/// The next runnable vCPU after `current` in round-robin order (`current` itself last).
pub fn pick_next(domains: &[Domain], current: Option<VcpuRef>) -> Option<VcpuRef> {
    let all = || {
        domains
            .iter()
            .enumerate()
            .flat_map(|(d, dom)| (0..dom.vcpus.len()).map(move |v| (d, v)))
    };
    let total = domains.iter().map(|d| d.vcpus.len()).sum();
    // Those after `current`, then from the first (so `current` comes last); without a
    // current vCPU, from the first. No allocation: this runs on every switch.
    let after = all().skip_while(|&r| Some(r) != current).skip(1);
    after.chain(all()).take(total).find(|&(d, v)| {
        domains[d].state == DomainState::Running && domains[d].vcpus[v].state == VcpuState::Runnable
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::state::Vcpu;
    use crate::evtchn::EvtchnTable;
    use crate::regs::Regs;
    use alloc::boxed::Box;
    use alloc::string::String;
    use hypercall_abi::xen::SharedInfo;

    fn dom(id: u16, vcpus: u32) -> Domain {
        Domain {
            id,
            name: String::from("d"),
            privileged: false,
            state: DomainState::Running,
            p2m: alloc::vec::Vec::new(),
            tot_pages: 0,
            max_pages: 0,
            shared_info_mfn: 0,
            shared: Box::leak(Box::new(SharedInfo::default())),
            vcpus: (0..vcpus).map(|i| Vcpu::new(i, Regs::default())).collect(),
            evtchn: EvtchnTable::new(vcpus),
            console_line: alloc::vec::Vec::new(),
            rings: None,
            hvm: None,
            console_in: crate::console::InputQueue::new(crate::console::Sink::Hypercall),
        }
    }

    #[test]
    fn round_robin_skips_stopped_and_blocked() {
        let mut ds = alloc::vec![dom(1, 2), dom(2, 1), dom(3, 1)];
        assert_eq!(pick_next(&ds, None), Some((0, 0)));
        assert_eq!(pick_next(&ds, Some((0, 0))), Some((0, 1)));
        assert_eq!(pick_next(&ds, Some((0, 1))), Some((1, 0)));
        ds[2].state = DomainState::Crashed;
        assert_eq!(pick_next(&ds, Some((1, 0))), Some((0, 0)));
        ds[0].vcpus[0].state = VcpuState::Blocked;
        ds[0].vcpus[1].state = VcpuState::Blocked;
        assert_eq!(
            pick_next(&ds, Some((1, 0))),
            Some((1, 0)),
            "only the current one is left"
        );
        ds[1].vcpus[0].state = VcpuState::Down;
        assert_eq!(pick_next(&ds, Some((1, 0))), None);
    }

    #[test]
    fn timer_fires_virq_and_wakes_a_blocked_vcpu() {
        let mut ds = alloc::vec![dom(1, 1)];
        let port = ds[0].evtchn.bind_virq(Virq::Timer as u32, 0).unwrap();
        ds[0].vcpus[0].state = VcpuState::Blocked;
        ds[0].vcpus[0].timer_deadline = Some(1000);
        assert_eq!(update(&mut ds, 999), Some(1000));
        assert_eq!(ds[0].vcpus[0].state, VcpuState::Blocked);
        assert_eq!(update(&mut ds, 1000), None);
        assert!(evtchn::is_pending(ds[0].shared, port));
        assert_eq!(ds[0].vcpus[0].state, VcpuState::Runnable);
        assert_eq!(ds[0].vcpus[0].timer_deadline, None);
    }

    #[test]
    fn poll_wakes_on_its_port_or_timeout_only() {
        let mut ds = alloc::vec![dom(1, 1)];
        let a = ds[0].evtchn.bind_ipi(0).unwrap();
        let b = ds[0].evtchn.bind_ipi(0).unwrap();
        let v = &mut ds[0].vcpus[0];
        v.state = VcpuState::Polling;
        v.poll_ports = alloc::vec![a];
        v.poll_deadline = Some(5000);
        evtchn::set_pending(ds[0].shared, b, 0);
        assert_eq!(update(&mut ds, 10), Some(5000));
        assert_eq!(ds[0].vcpus[0].state, VcpuState::Polling, "other port");
        evtchn::set_pending(ds[0].shared, a, 0);
        update(&mut ds, 20);
        assert_eq!(ds[0].vcpus[0].state, VcpuState::Runnable);
        let v = &mut ds[0].vcpus[0];
        v.state = VcpuState::Polling;
        v.poll_ports = alloc::vec![b + 1];
        v.poll_deadline = Some(5000);
        update(&mut ds, 5000);
        assert_eq!(ds[0].vcpus[0].state, VcpuState::Runnable, "timeout");
    }
}
