//! The PV "virtual CPU" hypercalls: the virtual IDT, callbacks, kernel stack, FPU switch
//! flag, segment bases, VM assists and `iret`.

use super::{Ctx, Flow, HcResult, Outcome};
use crate::mm::guest_access::read_obj;
use crate::pv::vcpu::{guest_address_ok, Callback, IretError};
use hypercall_abi::callback::{CallbackOp, CallbackType, CALLBACKF_MASK_EVENTS};
use hypercall_abi::errno::Errno;
use hypercall_abi::xen::{SegBase, TrapInfo, VmAssistCmd, VmAssistType, FLAT_KERNEL_SS64};

/// Most entries one `set_trap_table` call reads (one per vector).
const MAX_TRAP_ENTRIES: u64 = 256;

/// `set_trap_table(traps)`: entries up to one with address 0; a null list clears the table.
pub(super) fn set_trap_table(ctx: &mut Ctx<'_>, list: u64) -> HcResult {
    let v = &mut ctx.dom.vcpus[ctx.vcpu].pv;
    if list == 0 {
        v.traps = [Default::default(); 256];
        return Ok(0);
    }
    for i in 0..MAX_TRAP_ENTRIES {
        let at = list
            .checked_add(i * core::mem::size_of::<TrapInfo>() as u64)
            .ok_or(Errno::EFAULT)?;
        let t: TrapInfo = read_obj(ctx.mem, at)?;
        if t.address == 0 {
            break;
        }
        v.set_trap(t.vector, t.flags, t.address)
            .map_err(|_| Errno::EINVAL)?;
    }
    Ok(0)
}

fn callback(address: u64, mask_events: bool) -> Result<Callback, Errno> {
    if address != 0 && !guest_address_ok(address) {
        return Err(Errno::EINVAL);
    }
    Ok(Callback {
        address,
        mask_events,
    })
}

/// `set_callbacks(event, failsafe, syscall)` (x86-64 form).
pub(super) fn set_callbacks(
    ctx: &mut Ctx<'_>,
    event: u64,
    failsafe: u64,
    syscall: u64,
) -> HcResult {
    let (e, f, s) = (
        callback(event, false)?,
        callback(failsafe, false)?,
        callback(syscall, false)?,
    );
    let v = &mut ctx.dom.vcpus[ctx.vcpu].pv;
    v.event_callback = e;
    v.failsafe_callback = f;
    v.syscall_callback = s;
    Ok(0)
}

/// `callback_op(cmd, arg)`: register or unregister one callback.
pub(super) fn callback_op(ctx: &mut Ctx<'_>, cmd: u64, arg: u64) -> HcResult {
    let op = CallbackOp::try_from(cmd).map_err(|_| Errno::ENOSYS)?;
    // struct callback_register: type u16, flags u16, pad, address u64.
    let [head, address] = read_obj::<[u64; 2]>(ctx.mem, arg)?;
    let ty = CallbackType::try_from(head as u16 as u32).map_err(|_| Errno::EINVAL)?;
    let flags = (head >> 16) as u16;
    let cb = match op {
        CallbackOp::Register => callback(address, flags & CALLBACKF_MASK_EVENTS != 0)?,
        CallbackOp::Unregister => Callback::default(),
    };
    let v = &mut ctx.dom.vcpus[ctx.vcpu].pv;
    match ty {
        CallbackType::Event => v.event_callback = cb,
        CallbackType::Failsafe => v.failsafe_callback = cb,
        CallbackType::Syscall => v.syscall_callback = cb,
        CallbackType::Nmi => v.nmi_callback = cb,
        CallbackType::Syscall32 => v.syscall32_callback = cb,
        CallbackType::Sysenter => v.sysenter_callback = cb,
        CallbackType::SysenterDeprecated => return Err(Errno::EINVAL),
    }
    Ok(0)
}

/// `stack_switch(ss, sp)`: the guest kernel stack for exceptions from guest user mode.
pub(super) fn stack_switch(ctx: &mut Ctx<'_>, ss: u64, sp: u64) -> HcResult {
    if !guest_address_ok(sp) {
        return Err(Errno::EINVAL);
    }
    let v = &mut ctx.dom.vcpus[ctx.vcpu].pv;
    // Like Xen, hv fixes the selector's RPL; 64-bit PV kernels run on FLAT_KERNEL_SS64.
    v.kernel_ss = if ss & !3 == 0 {
        0
    } else {
        u64::from(FLAT_KERNEL_SS64)
    };
    v.kernel_sp = sp;
    Ok(0)
}

/// `fpu_taskswitch(set)`: the guest's CR0.TS.
pub(super) fn fpu_taskswitch(ctx: &mut Ctx<'_>, set: u64) -> HcResult {
    ctx.dom.vcpus[ctx.vcpu].pv.cr0_ts = set != 0;
    Ok(0)
}

/// `set_segment_base(which, value)`.
pub(super) fn set_segment_base(ctx: &mut Ctx<'_>, which: u64, value: u64) -> HcResult {
    let which = SegBase::try_from(which).map_err(|_| Errno::EINVAL)?;
    let v = &mut ctx.dom.vcpus[ctx.vcpu].pv;
    if which != SegBase::GsUserSel && !crate::regs::is_canonical(value) {
        return Err(Errno::EINVAL);
    }
    match which {
        SegBase::Fs => v.fs_base = value,
        SegBase::GsUser => v.gs_base_user = value,
        SegBase::GsKernel => v.gs_base_kernel = value,
        // Loading a selector in 64-bit mode from the flat GDT leaves a zero base.
        SegBase::GsUserSel => v.gs_base_user = 0,
    }
    Ok(0)
}

/// `vm_assist(cmd, type)`: hv accepts the assists Xen offers 64-bit PV guests; none changes
/// its behaviour (writable page tables are refused).
pub(super) fn vm_assist(cmd: u64, ty: u64) -> HcResult {
    VmAssistCmd::try_from(cmd).map_err(|_| Errno::ENOSYS)?;
    match VmAssistType::try_from(ty) {
        Ok(VmAssistType::WritablePagetables | VmAssistType::ArchitecturalIopl) | Err(_) => {
            Err(Errno::EINVAL)
        }
        Ok(_) => Ok(0),
    }
}

/// The `iret` hypercall.
pub(super) fn iret(ctx: &mut Ctx<'_>) -> Flow {
    let Some(info) = ctx.dom.shared.vcpu_info.get_mut(ctx.vcpu) else {
        return Flow::Regs(Outcome::Crash("iret from a vCPU without vcpu_info"));
    };
    match ctx.dom.vcpus[ctx.vcpu].pv.iret(ctx.regs, info, ctx.mem) {
        Ok(()) => Flow::Regs(Outcome::Continue),
        Err(IretError::Fault) => Flow::Regs(Outcome::Crash("iret: unreadable frame")),
        Err(IretError::BadContext) => Flow::Regs(Outcome::Crash("iret: bad return context")),
        Err(IretError::NoUserRoot) => Flow::Regs(Outcome::Crash(
            "iret to user mode without a user page table",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use super::super::Outcome;
    use crate::mm::guest_access::write_obj;
    use hypercall_abi::xen::TrapInfo;

    #[test]
    fn trap_table_until_null_entry() {
        let mut w = World::new();
        let e = |vector, address| TrapInfo {
            vector,
            flags: 3,
            cs: 0xe033,
            pad0: 0,
            address,
        };
        write_obj(&mut w.mem, MEM_BASE, &e(3, 0x40_1000)).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 16, &e(14, 0x40_2000)).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 32, &e(6, 0)).unwrap();
        assert_eq!(w.call(0, &[MEM_BASE]), (Outcome::Continue, 0));
        let t = &w.dom.vcpus[0].pv.traps;
        assert_eq!(
            (t[3].address, t[3].dpl, t[14].address, t[6].address),
            (0x40_1000, 3, 0x40_2000, 0)
        );
        write_obj(&mut w.mem, MEM_BASE, &e(3, 0xffff_8000_0000_1000)).unwrap();
        assert_eq!(w.call(0, &[MEM_BASE]).1, -22, "handler in hv's range");
        assert_eq!(w.call(0, &[0x8]).1, -14);
        assert_eq!(w.call(0, &[0]).1, 0);
        assert_eq!(w.dom.vcpus[0].pv.traps[14].address, 0, "null clears");
    }

    #[test]
    fn callbacks_and_stack() {
        let mut w = World::new();
        write_obj(&mut w.mem, MEM_BASE, &[2u64 | (1 << 16), 0x40_3000]).unwrap();
        assert_eq!(w.call(30, &[0, MEM_BASE]).1, 0);
        let cb = w.dom.vcpus[0].pv.syscall_callback;
        assert_eq!((cb.address, cb.mask_events), (0x40_3000, true));
        write_obj(&mut w.mem, MEM_BASE, &[7u64, 0x40_4000]).unwrap();
        assert_eq!(
            w.call(30, &[0, MEM_BASE]).1,
            0,
            "syscall32 is accepted, as on Xen"
        );
        write_obj(&mut w.mem, MEM_BASE, &[9u64, 0x40_3000]).unwrap();
        assert_eq!(w.call(30, &[0, MEM_BASE]).1, -22, "unknown type");
        assert_eq!(w.call(30, &[5, MEM_BASE]).1, -38, "unknown command");
        assert_eq!(w.call(4, &[0x40_0000, 0x40_0100, 0x8000_0000_0000]).1, -22);
        assert_eq!(w.call(4, &[0x40_0000, 0x40_0100, 0x40_0200]).1, 0);
        assert_eq!(w.call(3, &[0xe02b, 0x50_0000]).1, 0);
        assert_eq!(w.dom.vcpus[0].pv.kernel_sp, 0x50_0000);
        assert_eq!(w.call(3, &[0xe02b, 0xffff_8100_0000_0000]).1, -22);
    }

    #[test]
    fn segment_bases_fpu_and_assists() {
        let mut w = World::new();
        assert_eq!(w.call(25, &[0, 0x1234_5000]).1, 0);
        assert_eq!(w.dom.vcpus[0].pv.fs_base, 0x1234_5000);
        assert_eq!(w.call(25, &[2, 0x8000_0000_0000]).1, -22);
        assert_eq!(w.call(25, &[9, 0]).1, -22);
        assert_eq!(w.call(5, &[1]).1, 0);
        assert!(w.dom.vcpus[0].pv.cr0_ts);
        assert_eq!(w.call(21, &[0, 3]).1, 0);
        assert_eq!(w.call(21, &[0, 2]).1, -22);
        assert_eq!(w.call(21, &[7, 3]).1, -38);
    }

    #[test]
    fn bad_iret_crashes() {
        let mut w = World::new();
        w.regs.rsp = 0x10;
        assert!(matches!(w.call(23, &[]).0, Outcome::Crash(_)));
    }
}
