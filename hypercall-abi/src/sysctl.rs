//! `sysctl`: the control domain's questions about the whole machine (`struct xen_sysctl`), as
//! of Xen 4.17.
//!
//! As with [`crate::domctl`], the toolstack passes one [`Sysctl`] by address, the hypervisor
//! checks `interface_version` against [`XEN_SYSCTL_INTERFACE_VERSION`] (`-EACCES` on a
//! mismatch) and writes the structure back with the command's results.

use crate::domctl::{DomctlGetDomainInfo, PAYLOAD_SIZE};
use crate::{DomId, GuestHandle};
use core::fmt;

/// `XEN_SYSCTL_INTERFACE_VERSION` of Xen 4.17.
pub const XEN_SYSCTL_INTERFACE_VERSION: u32 = 0x15;

abi_enum! {
    /// [`Sysctl::cmd`] (`XEN_SYSCTL_*`). Numbers Xen retired are left out.
    pub enum SysctlCmd: u32 {
        /// Read the hypervisor's console ring.
        ReadConsole = 1,
        /// Trace buffer control.
        TbufOp = 2,
        /// The machine's CPUs and memory ([`SysctlPhysinfo`]).
        Physinfo = 3,
        /// The scheduler in use.
        SchedId = 4,
        /// Performance counters.
        PerfcOp = 5,
        /// State and memory of a run of domains ([`SysctlGetDomainInfoList`]).
        GetDomainInfoList = 6,
        /// Inject debug keys.
        DebugKeys = 7,
        /// Per-CPU idle time.
        GetCpuInfo = 8,
        /// Free memory by node and zone.
        AvailHeap = 9,
        /// Power-management statistics.
        GetPmstat = 10,
        /// Bring CPUs on- or offline.
        CpuHotplug = 11,
        /// Power-management control.
        PmOp = 12,
        /// Offline or online a page.
        PageOfflineOp = 14,
        /// Lock profiling.
        LockprofOp = 15,
        /// CPU topology.
        CpuTopoInfo = 16,
        /// NUMA topology.
        NumaInfo = 17,
        /// CPU pool control.
        CpupoolOp = 18,
        /// Scheduler-wide parameters.
        SchedulerOp = 19,
        /// Code coverage.
        CoverageOp = 20,
        /// Cache monitoring.
        PsrCmtOp = 21,
        /// PCI topology.
        PciTopoInfo = 22,
        /// Cache allocation.
        PsrAlloc = 23,
        /// CPU feature-levelling capabilities.
        GetCpuLevellingCaps = 25,
        /// A CPU featureset.
        GetCpuFeatureset = 26,
        /// Live patching.
        LivepatchOp = 27,
        /// A CPU policy.
        GetCpuPolicy = 29,
    }
}

/// [`SysctlPhysinfo::capabilities`]: HVM guests are supported.
pub const XEN_SYSCTL_PHYSCAP_HVM: u32 = 1 << 0;
/// [`SysctlPhysinfo::capabilities`]: PV guests are supported.
pub const XEN_SYSCTL_PHYSCAP_PV: u32 = 1 << 1;
/// [`SysctlPhysinfo::capabilities`]: devices can be passed through with an IOMMU.
pub const XEN_SYSCTL_PHYSCAP_DIRECTIO: u32 = 1 << 2;
/// [`SysctlPhysinfo::capabilities`]: hardware-assisted paging.
pub const XEN_SYSCTL_PHYSCAP_HAP: u32 = 1 << 3;
/// [`SysctlPhysinfo::capabilities`]: shadow paging.
pub const XEN_SYSCTL_PHYSCAP_SHADOW: u32 = 1 << 4;
/// [`SysctlPhysinfo::capabilities`]: the IOMMU shares the HAP page tables.
pub const XEN_SYSCTL_PHYSCAP_IOMMU_HAP_PT_SHARE: u32 = 1 << 5;
/// [`SysctlPhysinfo::capabilities`]: processor trace for guests.
pub const XEN_SYSCTL_PHYSCAP_VMTRACE: u32 = 1 << 6;
/// [`SysctlPhysinfo::capabilities`]: virtual PMU.
pub const XEN_SYSCTL_PHYSCAP_VPMU: u32 = 1 << 7;
/// [`SysctlPhysinfo::capabilities`]: grant tables v1.
pub const XEN_SYSCTL_PHYSCAP_GNTTAB_V1: u32 = 1 << 8;
/// [`SysctlPhysinfo::capabilities`]: grant tables v2.
pub const XEN_SYSCTL_PHYSCAP_GNTTAB_V2: u32 = 1 << 9;

/// Payload of `XEN_SYSCTL_physinfo` (`struct xen_sysctl_physinfo`). Every field is OUT.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysctlPhysinfo {
    /// OUT: hardware threads per core.
    pub threads_per_core: u32,
    /// OUT: cores per socket.
    pub cores_per_socket: u32,
    /// OUT: CPUs online.
    pub nr_cpus: u32,
    /// OUT: the largest CPU id possible on this host.
    pub max_cpu_id: u32,
    /// OUT: NUMA nodes online.
    pub nr_nodes: u32,
    /// OUT: the largest node id possible on this host.
    pub max_node_id: u32,
    /// OUT: CPU (TSC) frequency in kHz.
    pub cpu_khz: u32,
    /// OUT: `XEN_SYSCTL_PHYSCAP_*`.
    pub capabilities: u32,
    /// OUT: architecture-specific capabilities (none on x86).
    pub arch_capabilities: u32,
    /// Padding.
    pub pad: u32,
    /// OUT: RAM pages the hypervisor manages.
    pub total_pages: u64,
    /// OUT: pages free now.
    pub free_pages: u64,
    /// OUT: free pages still to be scrubbed.
    pub scrub_pages: u64,
    /// OUT: pages claimed by domains but not yet allocated.
    pub outstanding_pages: u64,
    /// OUT: the largest machine frame number possible on this host.
    pub max_mfn: u64,
    /// OUT: the boot CPU's feature words (Xen's `x86_capability` order).
    pub hw_cap: [u32; 8],
}
assert_layout!(
    SysctlPhysinfo,
    size = 112,
    threads_per_core = 0,
    cores_per_socket = 4,
    nr_cpus = 8,
    max_cpu_id = 12,
    nr_nodes = 16,
    max_node_id = 20,
    cpu_khz = 24,
    capabilities = 28,
    arch_capabilities = 32,
    pad = 36,
    total_pages = 40,
    free_pages = 48,
    scrub_pages = 56,
    outstanding_pages = 64,
    max_mfn = 72,
    hw_cap = 80
);

/// Payload of `XEN_SYSCTL_getdomaininfolist` (`struct xen_sysctl_getdomaininfolist`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysctlGetDomainInfoList {
    /// IN: the lowest domain id to report.
    pub first_domain: DomId,
    /// Padding.
    pub pad0: u16,
    /// IN: room in `buffer`, in entries.
    pub max_domains: u32,
    /// IN: guest array the entries are written to, in domain-id order.
    pub buffer: GuestHandle<DomctlGetDomainInfo>,
    /// OUT: entries written.
    pub num_domains: u32,
    /// Padding.
    pub pad1: u32,
}
assert_layout!(
    SysctlGetDomainInfoList,
    size = 24,
    first_domain = 0,
    max_domains = 4,
    buffer = 8,
    num_domains = 16
);

/// The 128-byte payload union of [`Sysctl`] (`xen_sysctl.u`), kept fully initialised as
/// [`crate::domctl::DomctlPayload`] is.
#[repr(C)]
#[derive(Clone, Copy)]
pub union SysctlPayload {
    raw: [u64; PAYLOAD_SIZE / 8],
    physinfo: SysctlPhysinfo,
    getdomaininfolist: SysctlGetDomainInfoList,
}
assert_layout!(SysctlPayload, size = PAYLOAD_SIZE);

impl SysctlPayload {
    /// All zero.
    pub const fn zeroed() -> Self {
        Self {
            raw: [0; PAYLOAD_SIZE / 8],
        }
    }

    /// The 128 bytes as eight-byte words.
    pub const fn raw(&self) -> [u64; PAYLOAD_SIZE / 8] {
        // SAFETY: every value was created with all 128 bytes initialised (the members are
        // private and each constructor starts from zero) and member writes keep them so; any
        // bit pattern is a valid array.
        unsafe { self.raw }
    }

    /// A payload holding `info` (the rest zero).
    pub fn from_physinfo(info: SysctlPhysinfo) -> Self {
        let mut p = Self::zeroed();
        p.physinfo = info;
        p
    }

    /// A payload holding `list` (the rest zero).
    pub fn from_getdomaininfolist(list: SysctlGetDomainInfoList) -> Self {
        let mut p = Self::zeroed();
        p.getdomaininfolist = list;
        p
    }

    /// The payload read as `XEN_SYSCTL_physinfo`'s.
    pub const fn physinfo(&self) -> SysctlPhysinfo {
        // SAFETY: all 128 bytes are initialised (see `raw`) and the member is integers
        // without implicit padding, valid for any bit pattern.
        unsafe { self.physinfo }
    }

    /// The payload read as `XEN_SYSCTL_getdomaininfolist`'s.
    pub const fn getdomaininfolist(&self) -> SysctlGetDomainInfoList {
        // SAFETY: as in `physinfo` (a guest handle is a plain u64).
        unsafe { self.getdomaininfolist }
    }
}

impl Default for SysctlPayload {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl PartialEq for SysctlPayload {
    fn eq(&self, other: &Self) -> bool {
        self.raw() == other.raw()
    }
}

impl Eq for SysctlPayload {}

impl fmt::Debug for SysctlPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SysctlPayload").field(&self.raw()).finish()
    }
}

/// The argument of the `sysctl` hypercall (`struct xen_sysctl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sysctl {
    /// IN: [`SysctlCmd`].
    pub cmd: u32,
    /// IN: [`XEN_SYSCTL_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// IN/OUT: the command's payload.
    pub u: SysctlPayload,
}
assert_layout!(Sysctl, size = 136, cmd = 0, interface_version = 4, u = 8);

impl Sysctl {
    /// Command `cmd` at this interface version, with payload `u`.
    pub const fn new(cmd: SysctlCmd, u: SysctlPayload) -> Self {
        Self {
            cmd: cmd as u32,
            interface_version: XEN_SYSCTL_INTERFACE_VERSION,
            u,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn numbers_round_trip_and_reject() {
        for &c in SysctlCmd::ALL {
            assert_eq!(SysctlCmd::try_from(c.raw()), Ok(c));
        }
        assert_eq!(SysctlCmd::Physinfo.raw(), 3);
        assert_eq!(SysctlCmd::GetDomainInfoList.raw(), 6);
        for retired in [0u32, 13, 24, 28, 30] {
            assert!(SysctlCmd::try_from(retired).is_err(), "{retired}");
        }
        assert_eq!(XEN_SYSCTL_INTERFACE_VERSION, 0x15);
        assert_eq!(XEN_SYSCTL_PHYSCAP_PV, 2);
        assert_eq!(XEN_SYSCTL_PHYSCAP_GNTTAB_V2, 0x200);
    }

    #[test]
    fn layouts() {
        assert_eq!(size_of::<SysctlPhysinfo>(), 112);
        assert_eq!(offset_of!(SysctlPhysinfo, total_pages), 40);
        assert_eq!(offset_of!(SysctlPhysinfo, hw_cap), 80);
        assert_eq!(size_of::<SysctlGetDomainInfoList>(), 24);
        assert_eq!(offset_of!(SysctlGetDomainInfoList, num_domains), 16);
        assert_eq!(size_of::<Sysctl>(), 136);
        assert_eq!(offset_of!(Sysctl, u), 8);
    }

    #[test]
    fn payload_members_share_the_bytes() {
        let list = SysctlGetDomainInfoList {
            first_domain: 2,
            max_domains: 5,
            buffer: GuestHandle::new(0x1000),
            ..Default::default()
        };
        let s = Sysctl::new(
            SysctlCmd::GetDomainInfoList,
            SysctlPayload::from_getdomaininfolist(list),
        );
        assert_eq!(s.cmd, 6);
        assert_eq!(s.u.getdomaininfolist(), list);
        assert_eq!(s.u.raw()[0], 2 | (5 << 32));
        assert_eq!(s.u.raw()[1], 0x1000);
        assert!(s.u.raw()[2..].iter().all(|&w| w == 0));
        assert_eq!(s.u.physinfo().threads_per_core, 2);
        assert_eq!(Sysctl::default().u, SysctlPayload::zeroed());
    }
}
