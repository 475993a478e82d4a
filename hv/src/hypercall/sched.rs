//! `sched_op` and `set_timer_op`.

use super::{compat_words, Ctx, Flow, HcResult, Outcome};
use crate::domain::state::VcpuState;
use crate::evtchn;
use crate::mm::guest_access::read_obj;
use hypercall_abi::errno::Errno;
use hypercall_abi::event_channel::EVTCHN_2L_NR_CHANNELS;
use hypercall_abi::sched::{SchedOp, ShutdownReason};

/// Most ports one `SCHEDOP_poll` may wait on (Xen's limit).
const MAX_POLL_PORTS: u32 = 128;

pub(super) fn sched_op(ctx: &mut Ctx<'_>, cmd: u64, arg: u64) -> Flow {
    let Ok(op) = SchedOp::try_from(cmd) else {
        return Flow::Value(Err(Errno::ENOSYS));
    };
    match op {
        SchedOp::Yield => Flow::Then(Ok(0), Outcome::Yield),
        SchedOp::Block => block(ctx),
        SchedOp::Shutdown => match read_obj::<u32>(ctx.mem, arg) {
            Err(f) => Flow::Value(Err(f.into())),
            Ok(reason) => match ShutdownReason::try_from(reason) {
                Ok(r) => Flow::Then(Ok(0), Outcome::Shutdown(r)),
                Err(_) => Flow::Value(Err(Errno::EINVAL)),
            },
        },
        SchedOp::ShutdownCode => match read_obj::<u32>(ctx.mem, arg) {
            Err(f) => Flow::Value(Err(f.into())),
            Ok(reason) if ShutdownReason::try_from(reason).is_ok() => Flow::Value(Ok(0)),
            Ok(_) => Flow::Value(Err(Errno::EINVAL)),
        },
        SchedOp::Poll => poll(ctx, arg),
        SchedOp::RemoteShutdown if !ctx.dom.privileged => Flow::Value(Err(Errno::EPERM)),
        _ => Flow::Value(Err(Errno::ENOSYS)),
    }
}

/// `SCHEDOP_block`: enables event delivery and sleeps until an upcall is pending.
fn block(ctx: &mut Ctx<'_>) -> Flow {
    let Some(info) = ctx.dom.shared.vcpu_info.get_mut(ctx.vcpu) else {
        return Flow::Value(Err(Errno::EINVAL));
    };
    info.evtchn_upcall_mask = 0;
    if info.evtchn_upcall_pending != 0 {
        return Flow::Value(Ok(0));
    }
    ctx.dom.vcpus[ctx.vcpu].state = VcpuState::Blocked;
    Flow::Then(Ok(0), Outcome::Block)
}

/// `SCHEDOP_poll`: sleeps until one of the ports is pending or the timeout passes.
fn poll(ctx: &mut Ctx<'_>, arg: u64) -> Flow {
    // struct sched_poll: ports (handle), nr_ports (u32 + pad), timeout (u64); in the compat
    // layout the handle is 32 bits and timeout follows nr_ports at offset 8.
    let header = if ctx.compat {
        compat_words::<4>(ctx.mem, arg).map(|[p, n, lo, hi]| {
            [
                u64::from(p),
                u64::from(n),
                u64::from(lo) | u64::from(hi) << 32,
            ]
        })
    } else {
        read_obj::<[u64; 3]>(ctx.mem, arg)
    };
    let [ports, nr, timeout] = match header {
        Ok(v) => v,
        Err(f) => return Flow::Value(Err(f.into())),
    };
    let nr = nr as u32;
    if nr > MAX_POLL_PORTS {
        return Flow::Value(Err(Errno::EINVAL));
    }
    let mut list = alloc::vec::Vec::with_capacity(nr as usize);
    for i in 0..u64::from(nr) {
        let Some(at) = ports.checked_add(i * 4) else {
            return Flow::Value(Err(Errno::EFAULT));
        };
        let port = match read_obj::<u32>(ctx.mem, at) {
            Ok(p) => p,
            Err(f) => return Flow::Value(Err(f.into())),
        };
        // As Xen: any port of the 2-level ABI may be polled, bound or not (an unbound one
        // never becomes pending by itself); only ports beyond the ABI are refused.
        if port >= EVTCHN_2L_NR_CHANNELS {
            return Flow::Value(Err(Errno::EINVAL));
        }
        if evtchn::is_pending(ctx.dom.shared, port) {
            return Flow::Value(Ok(0));
        }
        list.push(port);
    }
    let v = &mut ctx.dom.vcpus[ctx.vcpu];
    v.poll_ports = list;
    v.poll_deadline = (timeout != 0).then_some(timeout);
    v.state = VcpuState::Polling;
    Flow::Then(Ok(0), Outcome::Block)
}

/// `set_timer_op(deadline)`: a one-shot VIRQ_TIMER at `deadline` (system time, ns); 0 stops it.
pub(super) fn set_timer_op(ctx: &mut Ctx<'_>, deadline: u64) -> HcResult {
    ctx.dom.vcpus[ctx.vcpu].timer_deadline = (deadline != 0).then_some(deadline);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use super::super::Outcome;
    use crate::domain::state::VcpuState;
    use crate::mm::guest_access::write_obj;
    use hypercall_abi::sched::ShutdownReason;

    const SCHED_OP: u64 = 29;
    const SET_TIMER_OP: u64 = 15;

    #[test]
    fn yield_block_and_shutdown() {
        let mut w = World::new();
        assert_eq!(w.call(SCHED_OP, &[0, 0]), (Outcome::Yield, 0));
        w.dom.shared.vcpu_info[0].evtchn_upcall_mask = 1;
        assert_eq!(w.call(SCHED_OP, &[1, 0]), (Outcome::Block, 0));
        assert_eq!(
            w.dom.shared.vcpu_info[0].evtchn_upcall_mask, 0,
            "block enables delivery"
        );
        assert_eq!(w.dom.vcpus[0].state, VcpuState::Blocked);
        w.dom.shared.vcpu_info[0].evtchn_upcall_pending = 1;
        assert_eq!(
            w.call(SCHED_OP, &[1, 0]),
            (Outcome::Continue, 0),
            "pending: no sleep"
        );
        write_obj(&mut w.mem, MEM_BASE, &3u32).unwrap();
        assert_eq!(
            w.call(SCHED_OP, &[2, MEM_BASE]),
            (Outcome::Shutdown(ShutdownReason::Crash), 0)
        );
        write_obj(&mut w.mem, MEM_BASE, &77u32).unwrap();
        assert_eq!(w.call(SCHED_OP, &[2, MEM_BASE]), (Outcome::Continue, -22));
        assert_eq!(w.call(SCHED_OP, &[2, 0]), (Outcome::Continue, -14));
        assert_eq!(w.call(SCHED_OP, &[99, 0]), (Outcome::Continue, -38));
        assert_eq!(w.call(SCHED_OP, &[4, MEM_BASE]), (Outcome::Continue, -1));
    }

    #[test]
    fn poll_checks_ports_and_sleeps() {
        let mut w = World::new();
        let port = w.dom.evtchn.bind_virq(0, 0).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 0x100, &port).unwrap();
        write_obj(&mut w.mem, MEM_BASE, &[MEM_BASE + 0x100, 1, 5_000_000]).unwrap();
        assert_eq!(w.call(SCHED_OP, &[3, MEM_BASE]), (Outcome::Block, 0));
        assert_eq!(w.dom.vcpus[0].state, VcpuState::Polling);
        assert_eq!(w.dom.vcpus[0].poll_ports, vec![port]);
        assert_eq!(w.dom.vcpus[0].poll_deadline, Some(5_000_000));
        crate::evtchn::set_pending(w.dom.shared, port, 0);
        w.dom.vcpus[0].state = VcpuState::Runnable;
        assert_eq!(
            w.call(SCHED_OP, &[3, MEM_BASE]),
            (Outcome::Continue, 0),
            "already pending"
        );
        // An unbound port below the ABI's limit is polled as Xen does; 4096 is beyond it.
        w.dom.vcpus[0].state = VcpuState::Runnable;
        write_obj(&mut w.mem, MEM_BASE + 0x100, &999u32).unwrap();
        assert_eq!(
            w.call(SCHED_OP, &[3, MEM_BASE]),
            (Outcome::Block, 0),
            "unbound"
        );
        w.dom.vcpus[0].state = VcpuState::Runnable;
        write_obj(&mut w.mem, MEM_BASE + 0x100, &4096u32).unwrap();
        assert_eq!(
            w.call(SCHED_OP, &[3, MEM_BASE]).1,
            -22,
            "beyond 2-level ports"
        );
        write_obj(&mut w.mem, MEM_BASE, &[MEM_BASE + 0x100, 100_000, 0]).unwrap();
        assert_eq!(w.call(SCHED_OP, &[3, MEM_BASE]).1, -22, "too many ports");
    }

    #[test]
    fn timer_op_sets_and_clears() {
        let mut w = World::new();
        assert_eq!(w.call(SET_TIMER_OP, &[123]).1, 0);
        assert_eq!(w.dom.vcpus[0].timer_deadline, Some(123));
        assert_eq!(w.call(SET_TIMER_OP, &[0]).1, 0);
        assert_eq!(w.dom.vcpus[0].timer_deadline, None);
    }
}
