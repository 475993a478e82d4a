//! `domctl`: what the control domain may do to one domain — describe it, pause and unpause
//! it, destroy it, and describe one of its vCPUs. Only a privileged domain may use it.
//!
//! The checks come in Xen's order as far as it is visible: an unreadable argument is
//! -EFAULT, a wrong `interface_version` -EACCES, then an unprivileged caller gets -EPERM
//! before hv looks at the target (Xen looks the domain up first; hv tells an unprivileged
//! domain nothing about which domains exist). Commands hv does not implement are -ENOSYS.
//!
//! hv keeps one level of pause: pausing a paused domain succeeds and changes nothing, and one
//! unpause resumes it (Xen counts nested pauses). A domain that has shut down or crashed has
//! already been torn down by hv: it is still listed (with its shutdown code, as Xen lists a
//! shut-down domain until the toolstack destroys it), but there is nothing left to pause.

use super::{Ctx, Flow, HcResult, Outcome};
use crate::domain::state::{Domain, DomainState, VcpuState};
use crate::mm::guest_access::{read_obj, write_obj, Pod};
use alloc::vec::Vec;
use hypercall_abi::domctl::{
    Domctl, DomctlCmd, DomctlGetDomainInfo, DomctlGetVcpuInfo, DomctlPayload,
    XEN_DOMCTL_INTERFACE_VERSION, XEN_DOMINF_BLOCKED, XEN_DOMINF_DYING, XEN_DOMINF_PAUSED,
    XEN_DOMINF_RUNNING, XEN_DOMINF_SHUTDOWN, XEN_DOMINF_SHUTDOWN_SHIFT, XEN_INVALID_MAX_VCPU_ID,
};
use hypercall_abi::errno::Errno;
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::DOMID_FIRST_RESERVED;
use hypercall_abi::DomId;

// SAFETY: integer fields with all padding spelled out (size asserted in hypercall-abi) and a
// payload union that is always fully initialised; any bit pattern is a valid `Domctl`.
unsafe impl Pod for Domctl {}
// SAFETY: integer fields with all padding spelled out (size asserted in hypercall-abi).
unsafe impl Pod for DomctlGetDomainInfo {}

pub(super) fn domctl(ctx: &mut Ctx<'_>, arg: u64) -> Flow {
    let mut op: Domctl = match read_obj(ctx.mem, arg) {
        Ok(op) => op,
        Err(f) => return Flow::Value(Err(f.into())),
    };
    if op.interface_version != XEN_DOMCTL_INTERFACE_VERSION {
        return Flow::Value(Err(Errno::EACCES));
    }
    if !ctx.dom.privileged {
        return Flow::Value(Err(Errno::EPERM));
    }
    let Ok(cmd) = DomctlCmd::try_from(op.cmd) else {
        return Flow::Value(Err(Errno::ENOSYS));
    };
    match cmd {
        DomctlCmd::GetDomainInfo => get_domain_info(ctx, &mut op, arg).into(),
        DomctlCmd::GetVcpuInfo => get_vcpu_info(ctx, &mut op, arg).into(),
        DomctlCmd::PauseDomain => pause(ctx, op.domain).into(),
        DomctlCmd::UnpauseDomain => unpause(ctx, op.domain).into(),
        DomctlCmd::DestroyDomain => match destroy(ctx, op.domain) {
            Ok(id) => Flow::Then(Ok(0), Outcome::Destroy(id)),
            Err(e) => Flow::Value(Err(e)),
        },
        _ => Flow::Value(Err(Errno::ENOSYS)),
    }
}

/// Whether a toolstack still sees the domain (Xen forgets a domain once it is destroyed).
fn listed(d: &Domain) -> bool {
    d.state != DomainState::Destroyed
}

/// Domain `id`, the caller included, unless it was destroyed.
fn find<'c>(ctx: &'c mut Ctx<'_>, id: DomId) -> Option<&'c mut Domain> {
    if ctx.dom.id == id {
        return Some(&mut *ctx.dom);
    }
    ctx.peers.iter_mut().find(|d| d.id == id && listed(d))
}

/// `XEN_DOMCTL_getdomaininfo`'s description of every listed domain with an id of at least
/// `first`, in id order. The caller's vCPU `ctx.vcpu` is the one running.
pub(super) fn infos_from(ctx: &mut Ctx<'_>, first: DomId) -> Vec<DomctlGetDomainInfo> {
    let (caller, vcpu) = (ctx.dom.id, ctx.vcpu);
    let mut infos: Vec<DomctlGetDomainInfo> = core::iter::once(&*ctx.dom)
        .chain(ctx.peers.iter_mut().map(|d| &*d))
        .filter(|d| d.id >= first && listed(d))
        .map(|d| info(d, (d.id == caller).then_some(vcpu)))
        .collect();
    infos.sort_unstable_by_key(|i| i.domain);
    infos
}

/// Xen's description of domain `d`; `running` is its vCPU on the CPU now, if any.
fn info(d: &Domain, running: Option<usize>) -> DomctlGetDomainInfo {
    let online = || d.vcpus.iter().filter(|v| v.state != VcpuState::Down);
    let nr_online = online().count();
    let mut flags = 0;
    if nr_online > 0 {
        // Blocked only if every online vCPU waits; running if any is on the CPU.
        if online().all(|v| matches!(v.state, VcpuState::Blocked | VcpuState::Polling)) {
            flags |= XEN_DOMINF_BLOCKED;
        }
        if running.is_some() {
            flags |= XEN_DOMINF_RUNNING;
        }
    }
    let shutdown = |r: ShutdownReason| XEN_DOMINF_SHUTDOWN | (r.raw() << XEN_DOMINF_SHUTDOWN_SHIFT);
    flags |= match d.state {
        DomainState::Running => 0,
        DomainState::Paused => XEN_DOMINF_PAUSED,
        DomainState::Shutdown(r) => shutdown(r),
        DomainState::Crashed => shutdown(ShutdownReason::Crash),
        DomainState::Destroyed => XEN_DOMINF_DYING,
    };
    DomctlGetDomainInfo {
        domain: d.id,
        flags,
        tot_pages: d.tot_pages,
        max_pages: d.max_pages,
        // A PV domain's frames are machine frames.
        shared_info_frame: d.shared_info_mfn,
        cpu_time: d.vcpus.iter().map(|v| v.cpu_time_ns).sum(),
        nr_online_vcpus: nr_online as u32,
        max_vcpu_id: d
            .vcpus
            .len()
            .checked_sub(1)
            .map_or(XEN_INVALID_MAX_VCPU_ID, |m| m as u32),
        ..DomctlGetDomainInfo::default()
    }
}

/// `XEN_DOMCTL_getdomaininfo`: the first listed domain whose id is at least `op.domain`.
fn get_domain_info(ctx: &mut Ctx<'_>, op: &mut Domctl, arg: u64) -> HcResult {
    if op.domain >= DOMID_FIRST_RESERVED {
        return Err(Errno::EINVAL);
    }
    let found = infos_from(ctx, op.domain).into_iter().next();
    let info = found.ok_or(Errno::ESRCH)?;
    op.domain = info.domain;
    op.u = DomctlPayload::from_getdomaininfo(info);
    write_obj(ctx.mem, arg, op)?;
    Ok(0)
}

/// `XEN_DOMCTL_getvcpuinfo`.
fn get_vcpu_info(ctx: &mut Ctx<'_>, op: &mut Domctl, arg: u64) -> HcResult {
    let (caller, caller_vcpu) = (ctx.dom.id, ctx.vcpu);
    let want = op.u.getvcpuinfo().vcpu;
    let d = find(ctx, op.domain).ok_or(Errno::ESRCH)?;
    let index = usize::try_from(want).map_err(|_| Errno::EINVAL)?;
    let v = d.vcpus.get(index).ok_or(Errno::EINVAL)?;
    let out = DomctlGetVcpuInfo {
        vcpu: want,
        online: u8::from(v.state != VcpuState::Down),
        blocked: u8::from(matches!(v.state, VcpuState::Blocked | VcpuState::Polling)),
        running: u8::from(d.id == caller && index == caller_vcpu),
        cpu_time: v.cpu_time_ns,
        // hv runs every vCPU on CPU 0.
        cpu: 0,
        ..DomctlGetVcpuInfo::default()
    };
    op.u = DomctlPayload::from_getvcpuinfo(out);
    write_obj(ctx.mem, arg, op)?;
    Ok(0)
}

/// `XEN_DOMCTL_pausedomain`: the domain's vCPUs are no longer scheduled.
fn pause(ctx: &mut Ctx<'_>, id: DomId) -> HcResult {
    // As Xen: a domain cannot pause itself (it would never run again to unpause).
    if id == ctx.dom.id {
        return Err(Errno::EINVAL);
    }
    let d = find(ctx, id).ok_or(Errno::ESRCH)?;
    match d.state {
        DomainState::Running | DomainState::Paused => {
            d.state = DomainState::Paused;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// `XEN_DOMCTL_unpausedomain`: -EINVAL unless the domain is paused (as Xen when its pause
/// count is already zero).
fn unpause(ctx: &mut Ctx<'_>, id: DomId) -> HcResult {
    let d = find(ctx, id).ok_or(Errno::ESRCH)?;
    if d.state != DomainState::Paused {
        return Err(Errno::EINVAL);
    }
    d.state = DomainState::Running;
    Ok(0)
}

/// `XEN_DOMCTL_destroydomain`: checks the target; the arch layer destroys it when the call
/// returns ([`Outcome::Destroy`]).
fn destroy(ctx: &mut Ctx<'_>, id: DomId) -> Result<DomId, Errno> {
    // As Xen's domain_kill: never the caller.
    if id == ctx.dom.id {
        return Err(Errno::EINVAL);
    }
    find(ctx, id).map(|d| d.id).ok_or(Errno::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use super::super::Outcome;
    use crate::domain::state::{DomainState, VcpuState};
    use crate::mm::guest_access::{read_obj, write_obj};
    use hypercall_abi::domctl::*;
    use hypercall_abi::sched::ShutdownReason;
    use hypercall_abi::xen::{Hypercall, MulticallEntry, DOMID_SELF};
    use hypercall_abi::DomId;

    const DOMCTL: u64 = Hypercall::Domctl as u64;
    const EPERM: i64 = -1;
    const ESRCH: i64 = -3;
    const EACCES: i64 = -13;
    const EFAULT: i64 = -14;
    const EINVAL: i64 = -22;
    const ENOSYS: i64 = -38;

    fn privileged() -> World {
        let mut w = World::new();
        w.dom.privileged = true;
        w
    }

    /// Issues `cmd` on `domain` with `payload`; returns the outcome, the result and the
    /// structure as hv left it.
    fn domctl(
        w: &mut World,
        cmd: DomctlCmd,
        domain: DomId,
        payload: DomctlPayload,
    ) -> (Outcome, i64, Domctl) {
        write_obj(&mut w.mem, MEM_BASE, &Domctl::new(cmd, domain, payload)).unwrap();
        let (out, rax) = w.call(DOMCTL, &[MEM_BASE]);
        (out, rax, read_obj(&mut w.mem, MEM_BASE).unwrap())
    }

    fn info_of(w: &mut World, domain: DomId) -> Result<DomctlGetDomainInfo, i64> {
        match domctl(w, DomctlCmd::GetDomainInfo, domain, DomctlPayload::zeroed()) {
            (Outcome::Continue, 0, op) => {
                assert_eq!(op.domain, op.u.getdomaininfo().domain, "domain echoed");
                Ok(op.u.getdomaininfo())
            }
            (Outcome::Continue, e, _) => Err(e),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn vcpu_payload(vcpu: u32) -> DomctlPayload {
        DomctlPayload::from_getvcpuinfo(DomctlGetVcpuInfo {
            vcpu,
            ..Default::default()
        })
    }

    #[test]
    fn every_op_is_eperm_for_an_unprivileged_caller() {
        let mut w = World::new();
        for cmd in [
            DomctlCmd::GetDomainInfo,
            DomctlCmd::GetVcpuInfo,
            DomctlCmd::PauseDomain,
            DomctlCmd::UnpauseDomain,
            DomctlCmd::DestroyDomain,
            DomctlCmd::CreateDomain,
        ] {
            let (out, rax, op) = domctl(&mut w, cmd, 2, vcpu_payload(0));
            assert_eq!((out, rax), (Outcome::Continue, EPERM), "{cmd:?}");
            assert_eq!(op.u, vcpu_payload(0), "{cmd:?} wrote nothing back");
        }
        // Not even an existence probe: a missing domain is EPERM too.
        assert_eq!(
            domctl(&mut w, DomctlCmd::PauseDomain, 9, DomctlPayload::zeroed()).1,
            EPERM
        );
        assert!(w.peers.iter().all(|d| d.state == DomainState::Running));
    }

    #[test]
    fn wrong_interface_version_is_eacces_and_bad_pointers_efault() {
        for mut w in [World::new(), privileged()] {
            let mut op = Domctl::new(DomctlCmd::GetDomainInfo, 2, DomctlPayload::zeroed());
            op.interface_version = XEN_DOMCTL_INTERFACE_VERSION - 1;
            write_obj(&mut w.mem, MEM_BASE, &op).unwrap();
            assert_eq!(w.call(DOMCTL, &[MEM_BASE]), (Outcome::Continue, EACCES));
            assert_eq!(w.call(DOMCTL, &[0x10]), (Outcome::Continue, EFAULT));
        }
    }

    #[test]
    fn unknown_and_unimplemented_commands_are_enosys() {
        let mut w = privileged();
        let (_, rax, _) = domctl(&mut w, DomctlCmd::MaxVcpus, 2, DomctlPayload::zeroed());
        assert_eq!(rax, ENOSYS);
        let mut op = Domctl::new(DomctlCmd::GetDomainInfo, 2, DomctlPayload::zeroed());
        op.cmd = 6;
        write_obj(&mut w.mem, MEM_BASE, &op).unwrap();
        assert_eq!(w.call(DOMCTL, &[MEM_BASE]).1, ENOSYS);
    }

    #[test]
    fn getdomaininfo_describes_the_first_domain_at_or_after_the_id() {
        let mut w = privileged();
        w.peers[0].tot_pages = 100;
        w.peers[0].vcpus[0].cpu_time_ns = 7_000;
        let me = info_of(&mut w, 0).unwrap();
        assert_eq!(me.domain, 1, "no d0: the next one, the caller");
        assert_eq!(me.flags, XEN_DOMINF_RUNNING);
        assert_eq!((me.tot_pages, me.max_pages), (256, 512));
        assert_eq!(me.shared_info_frame, 0x999);
        assert_eq!((me.nr_online_vcpus, me.max_vcpu_id), (1, 0));
        let d2 = info_of(&mut w, 2).unwrap();
        assert_eq!((d2.domain, d2.flags, d2.tot_pages), (2, 0, 100));
        assert_eq!(d2.cpu_time, 7_000);
        assert_eq!(info_of(&mut w, 3).unwrap().domain, 3);
        assert_eq!(info_of(&mut w, 4), Err(ESRCH), "none at or after 4");
        assert_eq!(info_of(&mut w, DOMID_SELF), Err(EINVAL), "reserved ids");
    }

    #[test]
    fn getdomaininfo_reports_blocked_shutdown_and_crashed_and_skips_destroyed() {
        let mut w = privileged();
        w.peers[0].vcpus[0].state = VcpuState::Blocked;
        assert_eq!(info_of(&mut w, 2).unwrap().flags, XEN_DOMINF_BLOCKED);
        w.peers[0].state = DomainState::Shutdown(ShutdownReason::Reboot);
        w.peers[0].vcpus[0].state = VcpuState::Down;
        let d2 = info_of(&mut w, 2).unwrap();
        assert_eq!(
            d2.flags,
            XEN_DOMINF_SHUTDOWN | (1 << XEN_DOMINF_SHUTDOWN_SHIFT)
        );
        assert_eq!(d2.nr_online_vcpus, 0);
        w.peers[1].state = DomainState::Crashed;
        let d3 = info_of(&mut w, 3).unwrap();
        assert_eq!(
            (d3.flags >> XEN_DOMINF_SHUTDOWN_SHIFT) & XEN_DOMINF_SHUTDOWN_MASK,
            3,
            "crash code"
        );
        w.peers[0].state = DomainState::Destroyed;
        assert_eq!(info_of(&mut w, 2).unwrap().domain, 3, "d2 is gone");
    }

    #[test]
    fn pause_stops_scheduling_and_unpause_resumes() {
        let mut w = privileged();
        let (out, rax, _) = domctl(&mut w, DomctlCmd::PauseDomain, 2, DomctlPayload::zeroed());
        assert_eq!((out, rax), (Outcome::Continue, 0));
        assert_eq!(w.peers[0].state, DomainState::Paused);
        assert_eq!(info_of(&mut w, 2).unwrap().flags, XEN_DOMINF_PAUSED);
        // The scheduler passes over the paused domain's runnable vCPU.
        assert_eq!(crate::sched::pick_next(&w.peers, None), Some((1, 0)));
        assert_eq!(
            crate::sched::pick_next(&w.peers, Some((1, 0))),
            Some((1, 0))
        );
        assert_eq!(
            domctl(&mut w, DomctlCmd::PauseDomain, 2, DomctlPayload::zeroed()).1,
            0,
            "pausing a paused domain"
        );
        assert_eq!(
            domctl(&mut w, DomctlCmd::UnpauseDomain, 2, DomctlPayload::zeroed()).1,
            0
        );
        assert_eq!(w.peers[0].state, DomainState::Running);
        assert_eq!(crate::sched::pick_next(&w.peers, None), Some((0, 0)));
        assert_eq!(
            domctl(&mut w, DomctlCmd::UnpauseDomain, 2, DomctlPayload::zeroed()).1,
            EINVAL,
            "not paused"
        );
    }

    #[test]
    fn pause_refuses_self_missing_and_stopped_domains() {
        let mut w = privileged();
        let pause =
            |w: &mut World, d| domctl(w, DomctlCmd::PauseDomain, d, DomctlPayload::zeroed()).1;
        assert_eq!(pause(&mut w, 1), EINVAL, "self-pause");
        assert_eq!(w.dom.state, DomainState::Running);
        assert_eq!(pause(&mut w, 9), ESRCH);
        assert_eq!(pause(&mut w, DOMID_SELF), ESRCH);
        w.peers[1].state = DomainState::Shutdown(ShutdownReason::Poweroff);
        assert_eq!(pause(&mut w, 3), EINVAL, "nothing left to pause");
        assert_eq!(
            w.peers[1].state,
            DomainState::Shutdown(ShutdownReason::Poweroff)
        );
        w.peers[1].state = DomainState::Destroyed;
        assert_eq!(pause(&mut w, 3), ESRCH);
        assert_eq!(
            domctl(&mut w, DomctlCmd::UnpauseDomain, 3, DomctlPayload::zeroed()).1,
            ESRCH
        );
    }

    #[test]
    fn destroy_asks_the_arch_layer_to_tear_the_target_down() {
        let mut w = privileged();
        let (out, rax, _) = domctl(&mut w, DomctlCmd::DestroyDomain, 3, DomctlPayload::zeroed());
        assert_eq!((out, rax), (Outcome::Destroy(3), 0));
        let destroy =
            |w: &mut World, d| domctl(w, DomctlCmd::DestroyDomain, d, DomctlPayload::zeroed());
        assert_eq!(destroy(&mut w, 1).0, Outcome::Continue, "not self");
        assert_eq!(destroy(&mut w, 1).1, EINVAL);
        assert_eq!(destroy(&mut w, 5).1, ESRCH);
        w.peers[1].state = DomainState::Destroyed;
        assert_eq!(destroy(&mut w, 3).1, ESRCH, "already destroyed");
        w.peers[0].state = DomainState::Crashed;
        let (out, rax, _) = destroy(&mut w, 2);
        assert_eq!(
            (out, rax),
            (Outcome::Destroy(2), 0),
            "a crashed domain goes too"
        );
    }

    #[test]
    fn destroy_in_a_multicall_continues_the_rest_of_the_batch() {
        let mut w = privileged();
        let op = Domctl::new(DomctlCmd::DestroyDomain, 2, DomctlPayload::zeroed());
        write_obj(&mut w.mem, MEM_BASE + 0x800, &op).unwrap();
        let entry = |op: u64, arg: u64| MulticallEntry {
            op,
            result: 1,
            args: [arg, 0, 0, 0, 0, 0],
        };
        write_obj(&mut w.mem, MEM_BASE, &entry(DOMCTL, MEM_BASE + 0x800)).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 64, &entry(17, 0)).unwrap();
        w.regs.rip = 0x5000;
        let (out, _) = w.call(Hypercall::Multicall as u64, &[MEM_BASE, 2]);
        assert_eq!(out, Outcome::Destroy(2));
        assert_eq!(read_obj::<u64>(&mut w.mem, MEM_BASE + 8).unwrap(), 0);
        assert_eq!(
            read_obj::<u64>(&mut w.mem, MEM_BASE + 64 + 8).unwrap(),
            1,
            "the second entry waits for the continuation"
        );
        assert_eq!((w.regs.rax, w.regs.rdi, w.regs.rsi), (13, MEM_BASE + 64, 1));
        assert_eq!(w.regs.rip, 0x5000 - 2, "re-issued");
    }

    #[test]
    fn getvcpuinfo_reports_state_time_and_who_runs() {
        let mut w = privileged();
        w.peers[0].vcpus[0].state = VcpuState::Polling;
        w.peers[0].vcpus[0].cpu_time_ns = 42;
        let (_, rax, op) = domctl(&mut w, DomctlCmd::GetVcpuInfo, 2, vcpu_payload(0));
        assert_eq!(rax, 0);
        let v = op.u.getvcpuinfo();
        assert_eq!((v.vcpu, v.online, v.blocked, v.running), (0, 1, 1, 0));
        assert_eq!((v.cpu_time, v.cpu), (42, 0));
        let (_, rax, op) = domctl(&mut w, DomctlCmd::GetVcpuInfo, 1, vcpu_payload(0));
        assert_eq!(rax, 0);
        assert_eq!(op.u.getvcpuinfo().running, 1, "the caller's own vCPU");
        w.peers[0].vcpus[0].state = VcpuState::Down;
        let (_, _, op) = domctl(&mut w, DomctlCmd::GetVcpuInfo, 2, vcpu_payload(0));
        assert_eq!(op.u.getvcpuinfo().online, 0);
        assert_eq!(
            domctl(&mut w, DomctlCmd::GetVcpuInfo, 2, vcpu_payload(1)).1,
            EINVAL,
            "no vCPU 1"
        );
        assert_eq!(
            domctl(&mut w, DomctlCmd::GetVcpuInfo, 8, vcpu_payload(0)).1,
            ESRCH
        );
    }
}
