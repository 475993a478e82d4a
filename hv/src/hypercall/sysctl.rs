//! `sysctl`: what the control domain may ask about the machine — its CPUs and memory
//! (`physinfo`) and the list of domains (`getdomaininfolist`). Only a privileged domain may
//! use it; the checks come in Xen's order (-EFAULT, -EACCES for a wrong
//! `interface_version`, -EPERM), and commands hv does not implement are -ENOSYS.

use super::{domctl, Ctx, HcResult, Platform};
use crate::mm::guest_access::{read_obj, write_obj, Pod};
use hypercall_abi::errno::Errno;
use hypercall_abi::sysctl::{
    Sysctl, SysctlCmd, SysctlPayload, SysctlPhysinfo, XEN_SYSCTL_INTERFACE_VERSION,
    XEN_SYSCTL_PHYSCAP_PV,
};

// SAFETY: integer fields with all padding spelled out (size asserted in hypercall-abi) and a
// payload union that is always fully initialised; any bit pattern is a valid `Sysctl`.
unsafe impl Pod for Sysctl {}

pub(super) fn sysctl(ctx: &mut Ctx<'_>, arg: u64) -> HcResult {
    let mut op: Sysctl = read_obj(ctx.mem, arg)?;
    if op.interface_version != XEN_SYSCTL_INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    if !ctx.dom.privileged {
        return Err(Errno::EPERM);
    }
    match SysctlCmd::try_from(op.cmd) {
        Ok(SysctlCmd::Physinfo) => op.u = SysctlPayload::from_physinfo(physinfo(ctx.hw)),
        Ok(SysctlCmd::GetDomainInfoList) => {
            let mut list = op.u.getdomaininfolist();
            let infos = domctl::infos_from(ctx, list.first_domain);
            let mut written = 0u32;
            for info in infos.iter().take(list.max_domains as usize) {
                let at = list
                    .buffer
                    .element_addr(u64::from(written))
                    .ok_or(Errno::EFAULT)?;
                write_obj(ctx.mem, at, info)?;
                written += 1;
            }
            list.num_domains = written;
            op.u = SysctlPayload::from_getdomaininfolist(list);
        }
        _ => return Err(Errno::ENOSYS),
    }
    write_obj(ctx.mem, arg, &op)?;
    Ok(0)
}

/// The machine as hv runs it: one CPU, one node, PV guests.
fn physinfo(hw: &dyn Platform) -> SysctlPhysinfo {
    SysctlPhysinfo {
        threads_per_core: 1,
        cores_per_socket: 1,
        nr_cpus: 1,
        max_cpu_id: 0,
        nr_nodes: 1,
        max_node_id: 0,
        cpu_khz: hw.cpu_khz(),
        capabilities: XEN_SYSCTL_PHYSCAP_PV,
        total_pages: hw.total_pages(),
        free_pages: hw.free_pages(),
        // hv scrubs frames as it allocates them, and domains cannot claim memory ahead.
        scrub_pages: 0,
        outstanding_pages: 0,
        max_mfn: hw.max_mfn(),
        ..SysctlPhysinfo::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use super::super::Outcome;
    use crate::domain::state::DomainState;
    use crate::mm::guest_access::{read_obj, write_obj};
    use hypercall_abi::domctl::{DomctlGetDomainInfo, XEN_DOMINF_PAUSED, XEN_DOMINF_RUNNING};
    use hypercall_abi::sysctl::*;
    use hypercall_abi::xen::Hypercall;
    use hypercall_abi::GuestHandle;

    const SYSCTL: u64 = Hypercall::Sysctl as u64;
    /// Where the tests put the domain list.
    const BUFFER: u64 = MEM_BASE + 0x1000;

    fn sysctl(w: &mut World, op: &Sysctl) -> (i64, Sysctl) {
        write_obj(&mut w.mem, MEM_BASE, op).unwrap();
        let (out, rax) = w.call(SYSCTL, &[MEM_BASE]);
        assert_eq!(out, Outcome::Continue);
        (rax, read_obj(&mut w.mem, MEM_BASE).unwrap())
    }

    fn list_op(first_domain: u16, max_domains: u32, buffer: u64) -> Sysctl {
        Sysctl::new(
            SysctlCmd::GetDomainInfoList,
            SysctlPayload::from_getdomaininfolist(SysctlGetDomainInfoList {
                first_domain,
                max_domains,
                buffer: GuestHandle::new(buffer),
                ..Default::default()
            }),
        )
    }

    fn privileged() -> World {
        let mut w = World::new();
        w.dom.privileged = true;
        w
    }

    fn entry(w: &mut World, i: u64) -> DomctlGetDomainInfo {
        read_obj(&mut w.mem, BUFFER + i * 112).unwrap()
    }

    #[test]
    fn unprivileged_callers_get_eperm_and_bad_versions_eacces() {
        let mut w = World::new();
        for op in [
            list_op(0, 4, BUFFER),
            Sysctl::new(SysctlCmd::Physinfo, SysctlPayload::zeroed()),
        ] {
            let (rax, back) = sysctl(&mut w, &op);
            assert_eq!(rax, -1);
            assert_eq!(back, op, "nothing written back");
        }
        assert_eq!(entry(&mut w, 0), DomctlGetDomainInfo::default());
        let mut op = list_op(0, 4, BUFFER);
        op.interface_version = 0x14;
        assert_eq!(sysctl(&mut privileged(), &op).0, -13);
        assert_eq!(sysctl(&mut w, &op).0, -13, "the version is checked first");
        assert_eq!(privileged().call(SYSCTL, &[8]).1, -14);
    }

    #[test]
    fn unimplemented_commands_are_enosys() {
        let mut w = privileged();
        let op = Sysctl::new(SysctlCmd::ReadConsole, SysctlPayload::zeroed());
        assert_eq!(sysctl(&mut w, &op).0, -38);
        let mut op = op;
        op.cmd = 13;
        assert_eq!(sysctl(&mut w, &op).0, -38);
    }

    #[test]
    fn physinfo_reports_one_cpu_and_the_memory() {
        let mut w = privileged();
        let (rax, op) = sysctl(
            &mut w,
            &Sysctl::new(SysctlCmd::Physinfo, SysctlPayload::zeroed()),
        );
        assert_eq!(rax, 0);
        let p = op.u.physinfo();
        assert_eq!(
            (p.threads_per_core, p.cores_per_socket, p.nr_cpus),
            (1, 1, 1)
        );
        assert_eq!((p.max_cpu_id, p.nr_nodes, p.max_node_id), (0, 1, 0));
        assert_eq!(p.cpu_khz, 2_400_000);
        assert_eq!(p.capabilities, XEN_SYSCTL_PHYSCAP_PV);
        assert_eq!((p.total_pages, p.free_pages), (0x1_ff8f, 64));
        assert_eq!(p.max_mfn, 0x2_0000);
        assert_eq!((p.scrub_pages, p.outstanding_pages), (0, 0));
    }

    #[test]
    fn getdomaininfolist_fills_the_buffer_in_id_order() {
        let mut w = privileged();
        w.peers[0].state = DomainState::Paused;
        w.peers[1].tot_pages = 77;
        let (rax, op) = sysctl(&mut w, &list_op(0, 10, BUFFER));
        assert_eq!(rax, 0);
        assert_eq!(op.u.getdomaininfolist().num_domains, 3);
        let got: Vec<(u16, u32, u64)> = (0..3)
            .map(|i| entry(&mut w, i))
            .map(|e| (e.domain, e.flags, e.tot_pages))
            .collect();
        assert_eq!(
            got,
            [
                (1, XEN_DOMINF_RUNNING, 256),
                (2, XEN_DOMINF_PAUSED, 256),
                (3, 0, 77)
            ]
        );
        assert_eq!(entry(&mut w, 3), DomctlGetDomainInfo::default(), "no more");
    }

    #[test]
    fn getdomaininfolist_honours_first_domain_max_and_destroyed() {
        let mut w = privileged();
        let (rax, op) = sysctl(&mut w, &list_op(2, 1, BUFFER));
        assert_eq!((rax, op.u.getdomaininfolist().num_domains), (0, 1));
        assert_eq!(entry(&mut w, 0).domain, 2);
        assert_eq!(entry(&mut w, 1), DomctlGetDomainInfo::default());
        let (rax, op) = sysctl(&mut w, &list_op(0, 0, BUFFER));
        assert_eq!((rax, op.u.getdomaininfolist().num_domains), (0, 0));
        w.peers[0].state = DomainState::Destroyed;
        let (_, op) = sysctl(&mut w, &list_op(2, 5, BUFFER));
        assert_eq!(op.u.getdomaininfolist().num_domains, 1);
        assert_eq!(entry(&mut w, 0).domain, 3, "d2 is gone");
    }

    #[test]
    fn getdomaininfolist_with_a_bad_buffer_is_efault() {
        let mut w = privileged();
        let (rax, op) = sysctl(&mut w, &list_op(0, 3, 0x40));
        assert_eq!(rax, -14);
        assert_eq!(op.u.getdomaininfolist().num_domains, 0, "not written back");
        let (rax, _) = sysctl(&mut w, &list_op(0, 3, u64::MAX - 8));
        assert_eq!(rax, -14);
    }
}
