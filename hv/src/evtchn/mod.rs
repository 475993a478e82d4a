//! Event channels, Xen's 2-level ABI: per-domain ports, and the pending/mask bitmaps in
//! `shared_info` with the per-vCPU selector and upcall flag in `vcpu_info`.
//!
//! A port is bound to a source (a virtual IRQ of a vCPU, an IPI, another domain's port, or
//! nothing yet). Raising it sets its pending bit; if the port is not masked and its selector
//! bit was clear, the bound vCPU's `evtchn_upcall_pending` is set and the caller learns that
//! the vCPU needs a kick (wake it, deliver an upcall).

use hypercall_abi::event_channel::{NR_EVENT_CHANNELS, NR_VIRQS};
use hypercall_abi::xen::SharedInfo;
use hypercall_abi::DomId;

/// What a port is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Not in use.
    Free,
    /// Allocated for `remote` to bind to.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected to `remote`'s `remote_port`.
    Interdomain {
        /// Peer domain.
        remote: DomId,
        /// Peer port.
        remote_port: u32,
    },
    /// A virtual IRQ.
    Virq {
        /// VIRQ number.
        virq: u32,
    },
    /// An inter-processor interrupt.
    Ipi,
}

/// Errors, each mapping to one Xen errno at the hypercall boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvtchnError {
    /// No such port, VIRQ or operation on this port (-EINVAL).
    Invalid,
    /// No such vCPU (-ENOENT).
    NoVcpu,
    /// Already bound (-EEXIST).
    Exists,
    /// No free port (-ENOSPC).
    NoSpace,
}

/// One port's binding and the vCPU it notifies.
#[derive(Clone, Copy, Debug)]
struct Port {
    channel: Channel,
    vcpu: u32,
}

/// A domain's ports (port 0 is reserved, as on Xen).
#[derive(Clone, Debug)]
pub struct EvtchnTable {
    ports: alloc::vec::Vec<Port>,
    /// Port bound to each VIRQ, per vCPU.
    virqs: alloc::vec::Vec<[u32; NR_VIRQS as usize]>,
}

impl EvtchnTable {
    /// A table for a domain with `nr_vcpus` vCPUs.
    pub fn new(nr_vcpus: u32) -> Self {
        Self {
            ports: alloc::vec![Port {
                channel: Channel::Free,
                vcpu: 0
            }],
            virqs: alloc::vec![[0; NR_VIRQS as usize]; nr_vcpus as usize],
        }
    }

    fn alloc(&mut self, channel: Channel, vcpu: u32) -> Result<u32, EvtchnError> {
        let free = self
            .ports
            .iter()
            .skip(1)
            .position(|p| p.channel == Channel::Free)
            .map(|i| i + 1);
        let port = match free {
            Some(p) => p,
            None if self.ports.len() < NR_EVENT_CHANNELS as usize => {
                self.ports.push(Port {
                    channel: Channel::Free,
                    vcpu: 0,
                });
                self.ports.len() - 1
            }
            None => return Err(EvtchnError::NoSpace),
        };
        self.ports[port] = Port { channel, vcpu };
        Ok(port as u32)
    }

    /// The binding of `port`.
    pub fn channel(&self, port: u32) -> Option<Channel> {
        self.ports
            .get(port as usize)
            .filter(|_| port != 0)
            .map(|p| p.channel)
    }

    /// The vCPU `port` notifies.
    pub fn vcpu_of(&self, port: u32) -> Option<u32> {
        self.ports
            .get(port as usize)
            .filter(|p| port != 0 && p.channel != Channel::Free)
            .map(|p| p.vcpu)
    }

    /// `EVTCHNOP_bind_virq`.
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, EvtchnError> {
        // Xen's order: a bad VIRQ, or a global one asked for another vCPU than 0, is -EINVAL
        // before the vCPU is looked up.
        if virq >= NR_VIRQS || (!is_per_vcpu_virq(virq) && vcpu != 0) {
            return Err(EvtchnError::Invalid);
        }
        let slot = self.virqs.get(vcpu as usize).ok_or(EvtchnError::NoVcpu)?[virq as usize];
        if slot != 0 {
            return Err(EvtchnError::Exists);
        }
        let port = self.alloc(Channel::Virq { virq }, vcpu)?;
        self.virqs[vcpu as usize][virq as usize] = port;
        Ok(port)
    }

    /// The port bound to `virq` on `vcpu`, if any.
    pub fn virq_port(&self, vcpu: u32, virq: u32) -> Option<u32> {
        let p = *self.virqs.get(vcpu as usize)?.get(virq as usize)?;
        (p != 0).then_some(p)
    }

    /// `EVTCHNOP_bind_ipi`.
    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<u32, EvtchnError> {
        if vcpu as usize >= self.virqs.len() {
            return Err(EvtchnError::NoVcpu);
        }
        self.alloc(Channel::Ipi, vcpu)
    }

    /// The local half of `EVTCHNOP_bind_interdomain`: a new port connected to `remote`'s
    /// `remote_port` (the caller checked that port was allocated for this domain).
    pub fn bind_interdomain(
        &mut self,
        remote: DomId,
        remote_port: u32,
    ) -> Result<u32, EvtchnError> {
        self.alloc(
            Channel::Interdomain {
                remote,
                remote_port,
            },
            0,
        )
    }

    /// `EVTCHNOP_alloc_unbound` (the local half).
    pub fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, EvtchnError> {
        self.alloc(Channel::Unbound { remote }, 0)
    }

    /// `EVTCHNOP_bind_vcpu`: later notifications of a VIRQ (global ones only) or interdomain
    /// or unbound port go to `vcpu`.
    pub fn bind_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), EvtchnError> {
        if vcpu as usize >= self.virqs.len() {
            return Err(EvtchnError::NoVcpu);
        }
        let p = self
            .ports
            .get_mut(port as usize)
            .filter(|_| port != 0)
            .ok_or(EvtchnError::Invalid)?;
        match p.channel {
            Channel::Free | Channel::Ipi => Err(EvtchnError::Invalid),
            Channel::Virq { virq } if is_per_vcpu_virq(virq) => Err(EvtchnError::Invalid),
            _ => {
                p.vcpu = vcpu;
                Ok(())
            }
        }
    }

    /// `EVTCHNOP_close` (the local half): returns the binding it had, so the caller can
    /// update an interdomain peer.
    pub fn close(&mut self, port: u32) -> Result<Channel, EvtchnError> {
        let p = self
            .ports
            .get_mut(port as usize)
            .filter(|_| port != 0)
            .ok_or(EvtchnError::Invalid)?;
        let old = p.channel;
        if old == Channel::Free {
            return Err(EvtchnError::Invalid);
        }
        if let Channel::Virq { virq } = old {
            if let Some(slot) = self
                .virqs
                .get_mut(p.vcpu as usize)
                .and_then(|v| v.get_mut(virq as usize))
            {
                *slot = 0;
            }
        }
        *p = Port {
            channel: Channel::Free,
            vcpu: 0,
        };
        Ok(old)
    }

    /// Binds a port allocated by `alloc_unbound` (peer's side) or resets one to unbound.
    pub fn set_channel(&mut self, port: u32, channel: Channel) -> Result<(), EvtchnError> {
        let p = self
            .ports
            .get_mut(port as usize)
            .filter(|_| port != 0)
            .ok_or(EvtchnError::Invalid)?;
        p.channel = channel;
        Ok(())
    }

    /// Every port in use, with its binding (for `EVTCHNOP_reset` and teardown).
    pub fn ports_in_use(&self) -> impl Iterator<Item = (u32, Channel)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, p)| p.channel != Channel::Free)
            .map(|(i, p)| (i as u32, p.channel))
    }
}

/// VIRQs that exist per vCPU (the rest are global and may move with `bind_vcpu`).
pub fn is_per_vcpu_virq(virq: u32) -> bool {
    use hypercall_abi::event_channel::Virq;
    matches!(
        Virq::try_from(virq),
        Ok(Virq::Timer | Virq::Debug | Virq::Xenoprof | Virq::Xenpmu)
    )
}

fn word_bit(port: u32) -> (usize, u64) {
    ((port / 64) as usize, 1u64 << (port % 64))
}

/// Marks `port` pending for `vcpu`. Returns true if the vCPU's upcall became pending (the
/// caller wakes it).
pub fn set_pending(shared: &mut SharedInfo, port: u32, vcpu: u32) -> bool {
    let (w, bit) = word_bit(port);
    let (Some(pending), Some(mask)) = (
        shared.evtchn_pending.get(w).copied(),
        shared.evtchn_mask.get(w).copied(),
    ) else {
        return false;
    };
    if pending & bit != 0 {
        return false;
    }
    shared.evtchn_pending[w] = pending | bit;
    if mask & bit != 0 {
        return false;
    }
    raise_selector(shared, w, vcpu)
}

fn raise_selector(shared: &mut SharedInfo, word: usize, vcpu: u32) -> bool {
    let Some(info) = shared.vcpu_info.get_mut(vcpu as usize) else {
        return false;
    };
    let sel = 1u64 << word;
    if info.evtchn_pending_sel & sel != 0 {
        return false;
    }
    info.evtchn_pending_sel |= sel;
    info.evtchn_upcall_pending = 1;
    true
}

/// `EVTCHNOP_unmask`: clears the mask bit, and re-raises the port if it is pending. Returns
/// true if the vCPU's upcall became pending.
pub fn unmask(shared: &mut SharedInfo, port: u32, vcpu: u32) -> bool {
    let (w, bit) = word_bit(port);
    let Some(mask) = shared.evtchn_mask.get_mut(w) else {
        return false;
    };
    *mask &= !bit;
    if shared.evtchn_pending[w] & bit == 0 {
        return false;
    }
    raise_selector(shared, w, vcpu)
}

/// Clears `port`'s pending bit (on close).
pub fn clear_pending(shared: &mut SharedInfo, port: u32) {
    let (w, bit) = word_bit(port);
    if let Some(p) = shared.evtchn_pending.get_mut(w) {
        *p &= !bit;
    }
}

/// Whether `port` is pending.
pub fn is_pending(shared: &SharedInfo, port: u32) -> bool {
    let (w, bit) = word_bit(port);
    shared.evtchn_pending.get(w).is_some_and(|p| p & bit != 0)
}

/// Whether `port` is masked.
pub fn is_masked(shared: &SharedInfo, port: u32) -> bool {
    let (w, bit) = word_bit(port);
    shared.evtchn_mask.get(w).is_some_and(|m| m & bit != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;

    fn shared() -> Box<SharedInfo> {
        Box::new(SharedInfo::default())
    }

    #[test]
    fn virq_binding_and_errors() {
        let mut t = EvtchnTable::new(2);
        let p = t.bind_virq(0, 1).unwrap();
        assert_eq!(p, 1);
        assert_eq!(t.bind_virq(0, 1), Err(EvtchnError::Exists));
        assert_eq!(t.bind_virq(NR_VIRQS, 0), Err(EvtchnError::Invalid));
        assert_eq!(t.bind_virq(0, 2), Err(EvtchnError::NoVcpu));
        assert_eq!(
            t.bind_virq(2, 7),
            Err(EvtchnError::Invalid),
            "global VIRQ on another vCPU"
        );
        assert_eq!(t.virq_port(1, 0), Some(p));
        assert_eq!(t.close(p), Ok(Channel::Virq { virq: 0 }));
        assert_eq!(t.virq_port(1, 0), None);
        assert_eq!(t.close(p), Err(EvtchnError::Invalid));
        assert_eq!(t.close(0), Err(EvtchnError::Invalid));
        assert_eq!(t.bind_virq(0, 1), Ok(p), "closed ports are reused");
    }

    #[test]
    fn ports_run_out() {
        let mut t = EvtchnTable::new(1);
        for _ in 1..NR_EVENT_CHANNELS {
            t.bind_ipi(0).unwrap();
        }
        assert_eq!(t.bind_ipi(0), Err(EvtchnError::NoSpace));
    }

    #[test]
    fn pending_selector_and_upcall() {
        let mut s = shared();
        assert!(set_pending(&mut s, 70, 0));
        assert!(is_pending(&s, 70));
        assert_eq!(s.vcpu_info[0].evtchn_pending_sel, 1 << 1);
        assert_eq!(s.vcpu_info[0].evtchn_upcall_pending, 1);
        assert!(
            !set_pending(&mut s, 70, 0),
            "already pending: no new upcall"
        );
        assert!(!set_pending(&mut s, 71, 0), "selector already set");
    }

    #[test]
    fn masked_ports_wait_for_unmask() {
        let mut s = shared();
        s.evtchn_mask[0] = 1 << 5;
        assert!(!set_pending(&mut s, 5, 0));
        assert!(is_pending(&s, 5));
        assert_eq!(s.vcpu_info[0].evtchn_upcall_pending, 0);
        assert!(unmask(&mut s, 5, 0));
        assert!(!is_masked(&s, 5));
        assert_eq!(s.vcpu_info[0].evtchn_upcall_pending, 1);
    }

    #[test]
    fn out_of_range_ports_are_ignored() {
        let mut s = shared();
        assert!(!set_pending(&mut s, 64 * 64, 0));
        assert!(!unmask(&mut s, u32::MAX, 0));
        assert!(!set_pending(&mut s, 1, 99));
    }

    #[test]
    fn bind_vcpu_rules() {
        let mut t = EvtchnTable::new(2);
        let timer = t.bind_virq(0, 0).unwrap();
        let console = t.bind_virq(2, 0).unwrap();
        assert_eq!(t.bind_vcpu(timer, 1), Err(EvtchnError::Invalid));
        assert_eq!(t.bind_vcpu(console, 1), Ok(()));
        assert_eq!(t.vcpu_of(console), Some(1));
        assert_eq!(t.bind_vcpu(console, 5), Err(EvtchnError::NoVcpu));
    }
}
