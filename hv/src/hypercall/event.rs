//! `event_channel_op`: a domain's own ports (interdomain binding comes with the inter-domain
//! I/O work).

use super::{Ctx, Flow, HcResult};
use crate::domain::state::{Domain, Peers};
use crate::evtchn::{self, Channel, EvtchnError};
use crate::mm::guest_access::{field, read_obj, write_obj};
use hypercall_abi::errno::Errno;
use hypercall_abi::event_channel::{EvtchnOp, EvtchnStat};
use hypercall_abi::xen::DOMID_SELF;

impl From<EvtchnError> for Errno {
    fn from(e: EvtchnError) -> Self {
        match e {
            EvtchnError::Invalid => Errno::EINVAL,
            EvtchnError::NoVcpu => Errno::ENOENT,
            EvtchnError::Exists => Errno::EEXIST,
            EvtchnError::NoSpace => Errno::ENOSPC,
        }
    }
}

pub(super) fn event_channel_op(ctx: &mut Ctx<'_>, cmd: u64, arg: u64) -> Flow {
    Flow::Value(op(ctx, cmd, arg))
}

/// The peer end of an interdomain port goes back to unbound, allocated for the closer
/// `dom` (what Xen leaves when one end is closed or its domain dies).
fn unbind_peer(dom: &mut Domain, peers: &mut Peers<'_>, remote: u16, remote_port: u32) {
    let closer = dom.id;
    let table = if remote == closer {
        Some(&mut dom.evtchn)
    } else {
        peers.get_mut(remote).map(|d| &mut d.evtchn)
    };
    if let Some(t) = table {
        if matches!(t.channel(remote_port), Some(Channel::Interdomain { remote: r, .. }) if r == closer)
        {
            let _ = t.set_channel(remote_port, Channel::Unbound { remote: closer });
        }
    }
}

/// Closes every port of `dom` (`EVTCHNOP_reset`, and a domain's death), leaving each
/// interdomain peer unbound.
pub fn close_all(dom: &mut Domain, peers: &mut Peers<'_>) {
    let ports: alloc::vec::Vec<(u32, Channel)> = dom.evtchn.ports_in_use().collect();
    for (p, channel) in ports {
        let _ = dom.evtchn.close(p);
        evtchn::clear_pending(dom.shared, p);
        if let Channel::Interdomain {
            remote,
            remote_port,
        } = channel
        {
            unbind_peer(dom, peers, remote, remote_port);
        }
    }
}

fn self_domain(ctx: &Ctx<'_>, dom: u16) -> Result<(), Errno> {
    if dom == DOMID_SELF || dom == ctx.dom.id {
        Ok(())
    } else if ctx.dom.privileged {
        Err(Errno::ESRCH)
    } else {
        Err(Errno::EPERM)
    }
}

fn op(ctx: &mut Ctx<'_>, cmd: u64, arg: u64) -> HcResult {
    let op = EvtchnOp::try_from(cmd).map_err(|_| Errno::ENOSYS)?;
    let dom = &mut *ctx.dom;
    match op {
        EvtchnOp::BindVirq => {
            let [virq, vcpu] = read_obj::<[u32; 2]>(ctx.mem, arg)?;
            let port = dom.evtchn.bind_virq(virq, vcpu)?;
            write_obj(ctx.mem, field(arg, 8)?, &port)?;
            Ok(0)
        }
        EvtchnOp::BindIpi => {
            let vcpu = read_obj::<u32>(ctx.mem, arg)?;
            let port = dom.evtchn.bind_ipi(vcpu)?;
            write_obj(ctx.mem, field(arg, 4)?, &port)?;
            Ok(0)
        }
        EvtchnOp::AllocUnbound => {
            let b = read_obj::<[u8; 4]>(ctx.mem, arg)?;
            let (d, remote) = (
                u16::from_le_bytes([b[0], b[1]]),
                u16::from_le_bytes([b[2], b[3]]),
            );
            self_domain(ctx, d)?;
            let remote = if remote == DOMID_SELF {
                ctx.dom.id
            } else {
                remote
            };
            let port = ctx.dom.evtchn.alloc_unbound(remote)?;
            write_obj(ctx.mem, field(arg, 4)?, &port)?;
            Ok(0)
        }
        EvtchnOp::BindInterdomain => {
            // struct evtchn_bind_interdomain: remote_dom u16, pad, remote_port u32, local_port.
            let head = read_obj::<u32>(ctx.mem, arg)?;
            let remote_port = read_obj::<u32>(ctx.mem, field(arg, 4)?)?;
            let me = ctx.dom.id;
            let remote = match head as u16 {
                DOMID_SELF => me,
                r => r,
            };
            let wanted = Some(Channel::Unbound { remote: me });
            let local = if remote == me {
                if ctx.dom.evtchn.channel(remote_port) != wanted {
                    return Err(Errno::EINVAL);
                }
                let local = ctx.dom.evtchn.bind_interdomain(me, remote_port)?;
                ctx.dom.evtchn.set_channel(
                    remote_port,
                    Channel::Interdomain {
                        remote: me,
                        remote_port: local,
                    },
                )?;
                local
            } else {
                let peer = ctx.peers.get_mut(remote).ok_or(Errno::ESRCH)?;
                if peer.evtchn.channel(remote_port) != wanted {
                    return Err(Errno::EINVAL);
                }
                let local = ctx.dom.evtchn.bind_interdomain(remote, remote_port)?;
                let peer = ctx.peers.get_mut(remote).ok_or(Errno::ESRCH)?;
                peer.evtchn.set_channel(
                    remote_port,
                    Channel::Interdomain {
                        remote: me,
                        remote_port: local,
                    },
                )?;
                local
            };
            write_obj(ctx.mem, field(arg, 8)?, &local)?;
            Ok(0)
        }
        EvtchnOp::Close => {
            let port = read_obj::<u32>(ctx.mem, arg)?;
            let old = ctx.dom.evtchn.close(port)?;
            evtchn::clear_pending(ctx.dom.shared, port);
            if let Channel::Interdomain {
                remote,
                remote_port,
            } = old
            {
                unbind_peer(ctx.dom, &mut ctx.peers, remote, remote_port);
            }
            Ok(0)
        }
        EvtchnOp::Send => {
            let port = read_obj::<u32>(ctx.mem, arg)?;
            let vcpu = ctx.dom.evtchn.vcpu_of(port).ok_or(Errno::EINVAL)?;
            match ctx.dom.evtchn.channel(port) {
                Some(Channel::Ipi) => {
                    evtchn::set_pending(ctx.dom.shared, port, vcpu);
                    Ok(0)
                }
                Some(Channel::Unbound { .. }) => Ok(0),
                Some(Channel::Interdomain {
                    remote,
                    remote_port,
                }) => {
                    let target = if remote == ctx.dom.id {
                        Some(&mut *ctx.dom)
                    } else {
                        ctx.peers.get_mut(remote)
                    };
                    // A peer that is gone: the event is dropped, as on Xen.
                    if let Some(t) = target {
                        let v = t.evtchn.vcpu_of(remote_port).unwrap_or(0);
                        evtchn::set_pending(t.shared, remote_port, v);
                    }
                    Ok(0)
                }
                _ => Err(Errno::EINVAL),
            }
        }
        EvtchnOp::Status => {
            // struct evtchn_status: dom u16, pad, port u32, status u32, vcpu u32, union (8).
            let [head, _] = read_obj::<[u64; 2]>(ctx.mem, arg)?;
            self_domain(ctx, head as u16)?;
            let port = (head >> 32) as u32;
            let Some(channel) = ctx.dom.evtchn.channel(port) else {
                return Err(Errno::EINVAL);
            };
            let vcpu = ctx.dom.evtchn.vcpu_of(port).unwrap_or(0);
            let (status, u) = match channel {
                Channel::Free => (EvtchnStat::Closed, 0),
                Channel::Unbound { remote } => (EvtchnStat::Unbound, u64::from(remote)),
                Channel::Interdomain {
                    remote,
                    remote_port,
                } => (
                    EvtchnStat::Interdomain,
                    u64::from(remote) | (u64::from(remote_port) << 32),
                ),
                Channel::Virq { virq } => (EvtchnStat::Virq, u64::from(virq)),
                Channel::Ipi => (EvtchnStat::Ipi, 0),
            };
            write_obj(ctx.mem, field(arg, 8)?, &[status as u32, vcpu])?;
            write_obj(ctx.mem, field(arg, 16)?, &u)?;
            Ok(0)
        }
        EvtchnOp::Unmask => {
            let port = read_obj::<u32>(ctx.mem, arg)?;
            let vcpu = dom.evtchn.vcpu_of(port).ok_or(Errno::EINVAL)?;
            evtchn::unmask(dom.shared, port, vcpu);
            Ok(0)
        }
        EvtchnOp::BindVcpu => {
            let [port, vcpu] = read_obj::<[u32; 2]>(ctx.mem, arg)?;
            dom.evtchn.bind_vcpu(port, vcpu)?;
            Ok(0)
        }
        EvtchnOp::Reset => {
            let d = read_obj::<u16>(ctx.mem, arg)?;
            self_domain(ctx, d)?;
            close_all(ctx.dom, &mut ctx.peers);
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use crate::evtchn::Channel;
    use crate::mm::guest_access::{read_obj, write_obj};

    const EVTCHN_OP: u64 = 32;

    #[test]
    fn virq_status_close() {
        let mut w = World::new();
        write_obj(&mut w.mem, MEM_BASE, &[0u32, 0, 0]).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[1, MEM_BASE]).1, 0);
        let port: u32 = read_obj(&mut w.mem, MEM_BASE + 8).unwrap();
        assert_eq!(port, 1);
        assert_eq!(w.call(EVTCHN_OP, &[1, MEM_BASE]).1, -17, "bound twice");
        write_obj(
            &mut w.mem,
            MEM_BASE + 0x40,
            &[0x7ff0u64 | (u64::from(port) << 32), 0, 0],
        )
        .unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[5, MEM_BASE + 0x40]).1, 0);
        let [status, vcpu]: [u32; 2] = read_obj(&mut w.mem, MEM_BASE + 0x48).unwrap();
        assert_eq!((status, vcpu), (4, 0));
        assert_eq!(
            read_obj::<u64>(&mut w.mem, MEM_BASE + 0x50).unwrap(),
            0,
            "VIRQ_TIMER"
        );
        write_obj(&mut w.mem, MEM_BASE + 0x80, &port).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[3, MEM_BASE + 0x80]).1, 0);
        assert_eq!(w.call(EVTCHN_OP, &[3, MEM_BASE + 0x80]).1, -22);
        assert_eq!(
            w.call(EVTCHN_OP, &[4, MEM_BASE + 0x80]).1,
            -22,
            "send on a closed port"
        );
    }

    /// Domain 2 allocates a port for domain 1, domain 1 binds it, and events flow both ways.
    #[test]
    fn interdomain_bind_send_close() {
        let mut w = World::new();
        let peer_port = w.peers[0].evtchn.alloc_unbound(1).unwrap();
        write_obj(&mut w.mem, MEM_BASE, &[2u32, peer_port, 0]).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[0, MEM_BASE]).1, 0);
        let local: u32 = read_obj(&mut w.mem, MEM_BASE + 8).unwrap();
        assert_eq!(
            w.peers[0].evtchn.channel(peer_port),
            Some(Channel::Interdomain {
                remote: 1,
                remote_port: local
            })
        );
        write_obj(&mut w.mem, MEM_BASE + 0x20, &local).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[4, MEM_BASE + 0x20]).1, 0);
        assert!(
            crate::evtchn::is_pending(w.peers[0].shared, peer_port),
            "delivered to the peer"
        );
        assert!(!crate::evtchn::is_pending(w.dom.shared, local));
        assert_eq!(w.call(EVTCHN_OP, &[3, MEM_BASE + 0x20]).1, 0);
        assert_eq!(
            w.peers[0].evtchn.channel(peer_port),
            Some(Channel::Unbound { remote: 1 }),
            "peer left unbound"
        );
    }

    #[test]
    fn interdomain_refusals() {
        let mut w = World::new();
        // A port allocated for domain 3, not for us.
        let theirs = w.peers[0].evtchn.alloc_unbound(3).unwrap();
        write_obj(&mut w.mem, MEM_BASE, &[2u32, theirs, 0]).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[0, MEM_BASE]).1, -22);
        // A bound VIRQ port, a missing port, a missing domain.
        let virq = w.peers[0].evtchn.bind_virq(0, 0).unwrap();
        write_obj(&mut w.mem, MEM_BASE, &[2u32, virq, 0]).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[0, MEM_BASE]).1, -22);
        write_obj(&mut w.mem, MEM_BASE, &[2u32, 4000, 0]).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[0, MEM_BASE]).1, -22);
        write_obj(&mut w.mem, MEM_BASE, &[9u32, 1, 0]).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[0, MEM_BASE]).1, -3);
        // Allocating in another domain's table is not ours to do.
        write_obj(&mut w.mem, MEM_BASE, &[2u32 | (1 << 16), 0]).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[6, MEM_BASE]).1, -1);
    }

    #[test]
    fn loopback_and_reset() {
        let mut w = World::new();
        write_obj(&mut w.mem, MEM_BASE, &[0x7ff0u32 | (0x7ff0 << 16), 0]).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[6, MEM_BASE]).1, 0);
        let unbound: u32 = read_obj(&mut w.mem, MEM_BASE + 4).unwrap();
        write_obj(&mut w.mem, MEM_BASE, &[0x7ff0u32, unbound, 0]).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[0, MEM_BASE]).1, 0);
        let local: u32 = read_obj(&mut w.mem, MEM_BASE + 8).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 0x20, &local).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[4, MEM_BASE + 0x20]).1, 0);
        assert!(
            crate::evtchn::is_pending(w.dom.shared, unbound),
            "loopback delivers to the other end"
        );
        write_obj(&mut w.mem, MEM_BASE + 0x20, &0x7ff0u16).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[10, MEM_BASE + 0x20]).1, 0);
        assert_eq!(w.dom.evtchn.ports_in_use().count(), 0);
    }

    #[test]
    fn ipi_send_sets_pending_and_other_domains_are_refused() {
        let mut w = World::new();
        write_obj(&mut w.mem, MEM_BASE, &[0u32, 0]).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[7, MEM_BASE]).1, 0);
        let port: u32 = read_obj(&mut w.mem, MEM_BASE + 4).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 0x20, &port).unwrap();
        assert_eq!(w.call(EVTCHN_OP, &[4, MEM_BASE + 0x20]).1, 0);
        assert!(crate::evtchn::is_pending(w.dom.shared, port));
        assert_eq!(w.dom.shared.vcpu_info[0].evtchn_upcall_pending, 1);
        write_obj(
            &mut w.mem,
            MEM_BASE + 0x40,
            &[7u64 | (u64::from(port) << 32), 0, 0],
        )
        .unwrap();
        assert_eq!(
            w.call(EVTCHN_OP, &[5, MEM_BASE + 0x40]).1,
            -1,
            "status of another domain"
        );
        assert_eq!(w.call(EVTCHN_OP, &[99, MEM_BASE]).1, -38);
    }
}
