//! `hvm_op` from PV domains: `HVMOP_get_param` for the xenstore and console rings of a PV
//! domU, which the control domain's xenstored and console back end look up this way.
//!
//! Xen answers `HVMOP_get_param` on a PV domain with -EINVAL (its toolstack hands a PV
//! domU's ring frames to xenstored itself). hv has no toolstack, so it answers for PV
//! domains too: for a PV domU the PFN parameters hold the ring's machine frame number, as
//! `start_info` gives it (a PV guest's frame numbers are machine frames). A domain without
//! rings (the control domain, a PVH domain) reads 0, Xen's value for a parameter never set.
//!
//! Checks, in this order: the argument cannot be read (-EFAULT), the domain does not exist
//! (-ESRCH), an unprivileged caller names another domain (-EPERM), then the parameter is
//! not one of the four (-EINVAL). `HVMOP_set_param` is -EINVAL after the same domain checks,
//! as Xen for a PV target (hv keeps no settable parameter). Other commands: -ENOSYS.

use super::{Ctx, HcResult};
use crate::domain::state::Rings;
use crate::mm::guest_access::{read_obj, write_obj};
use hypercall_abi::errno::Errno;
use hypercall_abi::hvm::{HvmOp, HvmParam, XenHvmParam};
use hypercall_abi::xen::DOMID_SELF;

pub(super) fn hvm_op(ctx: &mut Ctx<'_>, cmd: u64, arg: u64) -> HcResult {
    let op = u32::try_from(cmd)
        .ok()
        .and_then(|cmd| HvmOp::try_from(cmd).ok());
    match op {
        Some(HvmOp::GetParam) => {
            let mut param: XenHvmParam = read_obj(ctx.mem, arg)?;
            let rings = target_rings(ctx, param.domid)?;
            param.value = match HvmParam::try_from(param.index) {
                Ok(HvmParam::StorePfn) => rings.map_or(0, |r| r.store_mfn),
                Ok(HvmParam::StoreEvtchn) => rings.map_or(0, |r| r.store_port.into()),
                Ok(HvmParam::ConsolePfn) => rings.map_or(0, |r| r.console_mfn),
                Ok(HvmParam::ConsoleEvtchn) => rings.map_or(0, |r| r.console_port.into()),
                _ => return Err(Errno::EINVAL),
            };
            write_obj(ctx.mem, arg, &param)?;
            Ok(0)
        }
        Some(HvmOp::SetParam) => {
            let param: XenHvmParam = read_obj(ctx.mem, arg)?;
            target_rings(ctx, param.domid)?;
            Err(Errno::EINVAL)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// The rings of the domain `domid` names, if the caller may see them.
fn target_rings(ctx: &mut Ctx<'_>, domid: u16) -> Result<Option<Rings>, Errno> {
    if domid == DOMID_SELF || domid == ctx.dom.id {
        return Ok(ctx.dom.rings);
    }
    let rings = ctx.peers.get_mut(domid).ok_or(Errno::ESRCH)?.rings;
    if ctx.dom.privileged {
        Ok(rings)
    } else {
        Err(Errno::EPERM)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use crate::domain::state::Rings;
    use crate::mm::guest_access::{read_obj, write_obj};
    use hypercall_abi::hvm::XenHvmParam;
    use hypercall_abi::xen::DOMID_SELF;

    const HVM_OP: u64 = 34;
    const SET_PARAM: u64 = 0;
    const GET_PARAM: u64 = 1;
    const STORE_PFN: u32 = 1;
    const STORE_EVTCHN: u32 = 2;
    const CONSOLE_PFN: u32 = 17;
    const CONSOLE_EVTCHN: u32 = 18;

    const RINGS: Rings = Rings {
        store_mfn: 0x4321,
        store_port: 1,
        console_mfn: 0x4322,
        console_port: 2,
    };

    /// A control domain (id 1) and a domU (id 2) with rings.
    fn world() -> World {
        let mut w = World::new();
        w.dom.privileged = true;
        w.peers[0].rings = Some(RINGS);
        w
    }

    /// `hvm_op(cmd)` on `{domid, index}`: the return value and the value written back.
    fn param(w: &mut World, cmd: u64, domid: u16, index: u32) -> (i64, u64) {
        let p = XenHvmParam {
            domid,
            pad: 0,
            index,
            value: 0xdead,
        };
        write_obj(&mut w.mem, MEM_BASE, &p).unwrap();
        let ret = w.call(HVM_OP, &[cmd, MEM_BASE]).1;
        let back: XenHvmParam = read_obj(&mut w.mem, MEM_BASE).unwrap();
        assert_eq!((back.domid, back.index), (domid, index), "IN fields kept");
        (ret, back.value)
    }

    #[test]
    fn the_control_domain_reads_a_domus_rings() {
        let mut w = world();
        assert_eq!(param(&mut w, GET_PARAM, 2, STORE_PFN), (0, 0x4321));
        assert_eq!(param(&mut w, GET_PARAM, 2, STORE_EVTCHN), (0, 1));
        assert_eq!(param(&mut w, GET_PARAM, 2, CONSOLE_PFN), (0, 0x4322));
        assert_eq!(param(&mut w, GET_PARAM, 2, CONSOLE_EVTCHN), (0, 2));
        // Domain 3 has no rings; the control domain itself neither.
        assert_eq!(param(&mut w, GET_PARAM, 3, STORE_PFN), (0, 0));
        assert_eq!(param(&mut w, GET_PARAM, DOMID_SELF, CONSOLE_EVTCHN), (0, 0));
    }

    #[test]
    fn a_domu_reads_only_its_own() {
        let mut w = World::new();
        w.dom.rings = Some(RINGS);
        w.peers[0].rings = Some(RINGS);
        assert_eq!(param(&mut w, GET_PARAM, DOMID_SELF, STORE_PFN), (0, 0x4321));
        assert_eq!(param(&mut w, GET_PARAM, 1, CONSOLE_PFN), (0, 0x4322));
        assert_eq!(param(&mut w, GET_PARAM, 2, STORE_PFN), (-1, 0xdead));
        assert_eq!(param(&mut w, SET_PARAM, 2, STORE_PFN), (-1, 0xdead));
    }

    #[test]
    fn errors() {
        let mut w = world();
        assert_eq!(
            param(&mut w, GET_PARAM, 9, STORE_PFN),
            (-3, 0xdead),
            "ESRCH"
        );
        assert_eq!(
            param(&mut w, SET_PARAM, 9, STORE_PFN),
            (-3, 0xdead),
            "ESRCH"
        );
        for index in [0, 3, 16, 19, 39, u32::MAX] {
            assert_eq!(param(&mut w, GET_PARAM, 2, index), (-22, 0xdead), "{index}");
        }
        assert_eq!(
            param(&mut w, SET_PARAM, 2, STORE_PFN),
            (-22, 0xdead),
            "PV: EINVAL"
        );
        assert_eq!(param(&mut w, SET_PARAM, DOMID_SELF, 0), (-22, 0xdead));
        assert_eq!(w.call(HVM_OP, &[GET_PARAM, 0x10]).1, -14, "EFAULT");
        assert_eq!(w.call(HVM_OP, &[5, MEM_BASE]).1, -38, "other ops");
        assert_eq!(w.call(HVM_OP, &[1 << 32 | GET_PARAM, MEM_BASE]).1, -38);
    }
}
