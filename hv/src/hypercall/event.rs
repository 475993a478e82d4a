//! `event_channel_op`: a domain's own ports (interdomain binding comes with the inter-domain
//! I/O work).

use super::{Ctx, Flow, HcResult};
use crate::evtchn::{self, Channel, EvtchnError};
use crate::mm::guest_access::{read_obj, write_obj};
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
            write_obj(ctx.mem, arg + 8, &port)?;
            Ok(0)
        }
        EvtchnOp::BindIpi => {
            let vcpu = read_obj::<u32>(ctx.mem, arg)?;
            let port = dom.evtchn.bind_ipi(vcpu)?;
            write_obj(ctx.mem, arg + 4, &port)?;
            Ok(0)
        }
        EvtchnOp::AllocUnbound => {
            let [d, remote] = read_obj::<[u8; 4]>(ctx.mem, arg).map(|b| {
                [
                    u16::from_le_bytes([b[0], b[1]]),
                    u16::from_le_bytes([b[2], b[3]]),
                ]
            })?;
            self_domain(ctx, d)?;
            let remote = if remote == DOMID_SELF {
                ctx.dom.id
            } else {
                remote
            };
            let port = ctx.dom.evtchn.alloc_unbound(remote)?;
            write_obj(ctx.mem, arg + 4, &port)?;
            Ok(0)
        }
        EvtchnOp::Close => {
            let port = read_obj::<u32>(ctx.mem, arg)?;
            dom.evtchn.close(port)?;
            evtchn::clear_pending(dom.shared, port);
            Ok(0)
        }
        EvtchnOp::Send => {
            let port = read_obj::<u32>(ctx.mem, arg)?;
            let vcpu = dom.evtchn.vcpu_of(port).ok_or(Errno::EINVAL)?;
            match dom.evtchn.channel(port) {
                Some(Channel::Ipi) => {
                    evtchn::set_pending(dom.shared, port, vcpu);
                    Ok(0)
                }
                Some(Channel::Unbound { .. }) => Ok(0),
                Some(Channel::Interdomain { .. }) => Err(Errno::ENOSYS),
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
            write_obj(ctx.mem, arg + 8, &[status as u32, vcpu])?;
            write_obj(ctx.mem, arg + 16, &u)?;
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
            let d = read_obj::<[u8; 2]>(ctx.mem, arg).map(u16::from_le_bytes)?;
            self_domain(ctx, d)?;
            let ports: alloc::vec::Vec<u32> =
                ctx.dom.evtchn.ports_in_use().map(|(p, _)| p).collect();
            for p in ports {
                ctx.dom.evtchn.close(p)?;
                evtchn::clear_pending(ctx.dom.shared, p);
            }
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
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
