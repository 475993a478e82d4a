//! `hvm_op` get/set_param: an HVM domain's event-channel callback, and the xenstore and
//! console rings of a PV domU, which the control domain's xenstored and console back end look
//! up this way.
//!
//! - `HVM_PARAM_CALLBACK_IRQ` of an HVM domain: how event-channel upcalls reach its vCPU 0.
//!   Only the vector type is accepted (hv emulates no IOAPIC or PCI INTx line, so a GSI or
//!   INTx callback could never fire: `EINVAL`), with a vector of 0x10 or above (below are
//!   exceptions); 0 turns upcalls off. Reads return the value set.
//! - Ring parameters (STORE_PFN/EVTCHN, CONSOLE_PFN/EVTCHN): Xen answers `HVMOP_get_param`
//!   on a PV domain with -EINVAL (its toolstack hands a PV domU's ring frames to xenstored
//!   itself). hv has no toolstack, so it answers for PV domains too: for a PV domU the PFN
//!   parameters hold the ring's machine frame number, as `start_info` gives it. A domain
//!   without rings (the control domain, an HVM domain) reads 0, Xen's value for a parameter
//!   never set. They cannot be set.
//!
//! Checks, in this order: the argument cannot be read (-EFAULT), the domain does not exist
//! (-ESRCH), an unprivileged caller names another domain (-EPERM), then the parameter or
//! its value is not one of the above (-EINVAL; `CALLBACK_IRQ` of a PV domain too, as Xen).
//! Other commands: -ENOSYS.

use super::{Ctx, HcResult};
use crate::domain::state::Domain;
use crate::mm::guest_access::{read_obj, write_obj};
use hypercall_abi::errno::Errno;
use hypercall_abi::hvm::{HvmCallbackVia, HvmOp, HvmParam, XenHvmParam};
use hypercall_abi::xen::DOMID_SELF;

/// The lowest vector a callback may use: 0..=15 are exceptions (and reserved ones).
const FIRST_CALLBACK_VECTOR: u8 = 0x10;

pub(super) fn hvm_op(ctx: &mut Ctx<'_>, cmd: u64, arg: u64) -> HcResult {
    let op = u32::try_from(cmd)
        .ok()
        .and_then(|cmd| HvmOp::try_from(cmd).ok());
    match op {
        Some(HvmOp::GetParam) => {
            let mut param: XenHvmParam = read_obj(ctx.mem, arg)?;
            let dom = target(ctx, param.domid)?;
            let rings = dom.rings;
            param.value = match (HvmParam::try_from(param.index), dom.hvm) {
                (Ok(HvmParam::CallbackIrq), Some(hvm)) => hvm.callback_irq,
                (Ok(HvmParam::StorePfn), _) => rings.map_or(0, |r| r.store_frame),
                (Ok(HvmParam::StoreEvtchn), _) => rings.map_or(0, |r| r.store_port.into()),
                (Ok(HvmParam::ConsolePfn), _) => rings.map_or(0, |r| r.console_frame),
                (Ok(HvmParam::ConsoleEvtchn), _) => rings.map_or(0, |r| r.console_port.into()),
                _ => return Err(Errno::EINVAL),
            };
            write_obj(ctx.mem, arg, &param)?;
            Ok(0)
        }
        Some(HvmOp::SetParam) => {
            let param: XenHvmParam = read_obj(ctx.mem, arg)?;
            let dom = target(ctx, param.domid)?;
            let hvm = dom.hvm.as_mut().ok_or(Errno::EINVAL)?;
            if HvmParam::try_from(param.index) != Ok(HvmParam::CallbackIrq) {
                return Err(Errno::EINVAL);
            }
            match HvmCallbackVia::decode(param.value) {
                Ok(HvmCallbackVia::None) => {}
                Ok(HvmCallbackVia::Vector(v)) if v >= FIRST_CALLBACK_VECTOR => {}
                _ => return Err(Errno::EINVAL),
            }
            hvm.callback_irq = param.value;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// The domain `domid` names, if the caller may act on it.
fn target<'a>(ctx: &'a mut Ctx<'_>, domid: u16) -> Result<&'a mut Domain, Errno> {
    if domid == DOMID_SELF || domid == ctx.dom.id {
        return Ok(ctx.dom);
    }
    let privileged = ctx.dom.privileged;
    let dom = ctx.peers.get_mut(domid).ok_or(Errno::ESRCH)?;
    if privileged {
        Ok(dom)
    } else {
        Err(Errno::EPERM)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use crate::domain::state::{HvmParams, Rings};
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
    const CALLBACK_IRQ: u32 = 0;
    /// HVM_PARAM_CALLBACK_IRQ's vector type (2) in bits 63:56.
    const VECTOR: u64 = 2 << 56;

    const RINGS: Rings = Rings {
        store_frame: 0x4321,
        store_port: 1,
        console_frame: 0x4322,
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
        assert_eq!(
            param(&mut w, GET_PARAM, DOMID_SELF, CALLBACK_IRQ),
            (-22, 0xdead),
            "PV: no callback parameter"
        );
        assert_eq!(w.call(HVM_OP, &[GET_PARAM, 0x10]).1, -14, "EFAULT");
        assert_eq!(w.call(HVM_OP, &[5, MEM_BASE]).1, -38, "other ops");
        assert_eq!(w.call(HVM_OP, &[1 << 32 | GET_PARAM, MEM_BASE]).1, -38);
    }

    /// `hvm_op(SET_PARAM)` of `value` on `{domid, index}`.
    fn set(w: &mut World, domid: u16, index: u32, value: u64) -> i64 {
        let p = XenHvmParam {
            domid,
            pad: 0,
            index,
            value,
        };
        write_obj(&mut w.mem, MEM_BASE, &p).unwrap();
        w.call(HVM_OP, &[SET_PARAM, MEM_BASE]).1
    }

    #[test]
    fn an_hvm_domain_sets_its_callback_vector() {
        let mut w = World::new();
        w.dom.hvm = Some(HvmParams::default());
        assert_eq!(param(&mut w, GET_PARAM, DOMID_SELF, CALLBACK_IRQ), (0, 0));
        assert_eq!(set(&mut w, DOMID_SELF, CALLBACK_IRQ, VECTOR | 0xf3), 0);
        assert_eq!(w.dom.hvm.unwrap().callback_vector(), Some(0xf3));
        assert_eq!(
            param(&mut w, GET_PARAM, DOMID_SELF, CALLBACK_IRQ),
            (0, VECTOR | 0xf3)
        );
        // Exception vectors, GSIs, PCI INTx lines and unknown types are refused and change
        // nothing.
        for bad in [VECTOR | 0x0e, 5, 1 << 56 | 3, 7 << 56 | 0x40] {
            assert_eq!(set(&mut w, DOMID_SELF, CALLBACK_IRQ, bad), -22, "{bad:#x}");
        }
        assert_eq!(w.dom.hvm.unwrap().callback_vector(), Some(0xf3));
        // Other parameters cannot be set; 0 turns upcalls off.
        assert_eq!(set(&mut w, DOMID_SELF, STORE_PFN, 5), -22);
        assert_eq!(set(&mut w, DOMID_SELF, CALLBACK_IRQ, 0), 0);
        assert_eq!(w.dom.hvm.unwrap().callback_vector(), None);
        // An HVM domain has no rings: they read 0.
        assert_eq!(param(&mut w, GET_PARAM, DOMID_SELF, STORE_PFN), (0, 0));
    }

    #[test]
    fn only_the_control_domain_sets_anothers_callback() {
        let mut w = World::new();
        w.peers[0].hvm = Some(HvmParams::default());
        assert_eq!(set(&mut w, 2, CALLBACK_IRQ, VECTOR | 0x40), -1, "EPERM");
        assert_eq!(w.peers[0].hvm.unwrap().callback_vector(), None);
        w.dom.privileged = true;
        assert_eq!(set(&mut w, 2, CALLBACK_IRQ, VECTOR | 0x40), 0);
        assert_eq!(w.peers[0].hvm.unwrap().callback_vector(), Some(0x40));
        assert_eq!(set(&mut w, 9, CALLBACK_IRQ, VECTOR | 0x40), -3, "ESRCH");
        assert_eq!(set(&mut w, 3, CALLBACK_IRQ, VECTOR | 0x40), -22, "PV");
    }
}
