//! `vcpu_op`: a domain's questions and requests about its vCPUs.

use super::{compat_words, Ctx, HcResult};
use crate::domain::state::VcpuState;
use crate::mm::guest_access::write_obj;
use hypercall_abi::errno::Errno;
use hypercall_abi::vcpu::VcpuOp;

/// `VCPU_SSHOTTMR_future`: fail with -ETIME if the deadline has passed.
const SSHOTTMR_FUTURE: u64 = 1;
/// `RUNSTATE_running`.
const RUNSTATE_RUNNING: u64 = 0;
/// `RUNSTATE_runnable`.
const RUNSTATE_RUNNABLE: u64 = 1;
/// `RUNSTATE_blocked`.
const RUNSTATE_BLOCKED: u64 = 2;
/// `RUNSTATE_offline`.
const RUNSTATE_OFFLINE: u64 = 3;

pub(super) fn vcpu_op(ctx: &mut Ctx<'_>, cmd: u64, vcpu: u64, arg: u64) -> HcResult {
    let op = VcpuOp::try_from(cmd).map_err(|_| Errno::ENOSYS)?;
    let id = usize::try_from(vcpu).map_err(|_| Errno::ENOENT)?;
    let Some(target) = ctx.dom.vcpus.get(id) else {
        return Err(Errno::ENOENT);
    };
    let me = id == ctx.vcpu;
    match op {
        VcpuOp::IsUp => Ok(i64::from(target.state != VcpuState::Down)),
        VcpuOp::GetRunstateInfo => {
            let state = match target.state {
                _ if me => RUNSTATE_RUNNING,
                VcpuState::Runnable => RUNSTATE_RUNNABLE,
                VcpuState::Blocked | VcpuState::Polling => RUNSTATE_BLOCKED,
                VcpuState::Down => RUNSTATE_OFFLINE,
            };
            // struct vcpu_runstate_info: state (int + pad), state_entry_time, time[4]; the
            // compat layout has no pad (its 64-bit fields are 4-byte aligned).
            let now = ctx.hw.now_ns();
            if ctx.compat {
                let mut info = [0u8; 44];
                info[..4].copy_from_slice(&(state as u32).to_le_bytes());
                info[4..12].copy_from_slice(&now.to_le_bytes());
                info[12..20].copy_from_slice(&now.to_le_bytes());
                write_obj(ctx.mem, arg, &info)?;
            } else {
                write_obj(ctx.mem, arg, &[state, now, now, 0, 0, 0])?;
            }
            Ok(0)
        }
        VcpuOp::SetSingleshotTimer if me => {
            // struct vcpu_set_singleshot_timer: timeout (u64), flags (u32, then padding that
            // the 12-byte compat layout lacks).
            let [lo, hi, flags] = compat_words::<3>(ctx.mem, arg)?;
            let (deadline, flags) = (u64::from(lo) | u64::from(hi) << 32, u64::from(flags));
            if flags & SSHOTTMR_FUTURE != 0 && deadline < ctx.hw.now_ns() {
                return Err(Errno::ETIME);
            }
            ctx.dom.vcpus[id].timer_deadline = Some(deadline);
            Ok(0)
        }
        VcpuOp::StopSingleshotTimer if me => {
            ctx.dom.vcpus[id].timer_deadline = None;
            Ok(0)
        }
        // hv keeps no periodic timer; stopping the one that does not run succeeds.
        VcpuOp::StopPeriodicTimer if me => Ok(0),
        VcpuOp::SetSingleshotTimer | VcpuOp::StopSingleshotTimer | VcpuOp::StopPeriodicTimer => {
            Err(Errno::EINVAL)
        }
        _ => Err(Errno::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use crate::mm::guest_access::{read_obj, write_obj};

    const VCPU_OP: u64 = 24;

    #[test]
    fn is_up_runstate_and_timers() {
        let mut w = World::new();
        assert_eq!(w.call(VCPU_OP, &[3, 0, 0]).1, 1);
        assert_eq!(w.call(VCPU_OP, &[3, 1, 0]).1, -2);
        assert_eq!(w.call(VCPU_OP, &[4, 0, MEM_BASE]).1, 0);
        assert_eq!(read_obj::<u64>(&mut w.mem, MEM_BASE).unwrap(), 0, "running");
        write_obj(&mut w.mem, MEM_BASE, &[5_000_000u64, 0]).unwrap();
        assert_eq!(w.call(VCPU_OP, &[8, 0, MEM_BASE]).1, 0);
        assert_eq!(w.dom.vcpus[0].timer_deadline, Some(5_000_000));
        write_obj(&mut w.mem, MEM_BASE, &[5u64, 1]).unwrap();
        assert_eq!(
            w.call(VCPU_OP, &[8, 0, MEM_BASE]).1,
            -62,
            "past deadline with the future flag"
        );
        assert_eq!(w.call(VCPU_OP, &[9, 0, 0]).1, 0);
        assert_eq!(w.dom.vcpus[0].timer_deadline, None);
        assert_eq!(w.call(VCPU_OP, &[99, 0, 0]).1, -38);
    }
}
