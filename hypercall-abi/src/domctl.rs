//! `domctl`: the control domain's operations on one domain (`struct xen_domctl`), as of
//! Xen 4.17.
//!
//! A toolstack passes one [`Domctl`] by address; the hypervisor reads it, checks
//! `interface_version` against [`XEN_DOMCTL_INTERFACE_VERSION`] (`-EACCES` on a mismatch) and
//! writes the whole structure back for the commands that return data. The payload is a
//! 128-byte union whose member depends on `cmd`; [`DomctlPayload`] keeps all 128 bytes
//! initialised so that any member can be read back safely.

use crate::DomId;
use core::fmt;

/// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17.
pub const XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x15;

abi_enum! {
    /// [`Domctl::cmd`] (`XEN_DOMCTL_*`). Numbers Xen retired are left out.
    pub enum DomctlCmd: u32 {
        /// Create a domain.
        CreateDomain = 1,
        /// Kill a domain and release everything it holds; no payload.
        DestroyDomain = 2,
        /// Stop a domain's vCPUs from being scheduled; no payload.
        PauseDomain = 3,
        /// Undo [`DomctlCmd::PauseDomain`]; no payload.
        UnpauseDomain = 4,
        /// State and memory of the first domain whose id is at least `domain`
        /// ([`DomctlGetDomainInfo`]).
        GetDomainInfo = 5,
        /// Set a vCPU's CPU affinity.
        SetVcpuAffinity = 9,
        /// Shadow paging and log-dirty control.
        ShadowOp = 10,
        /// Set the memory limit.
        MaxMem = 11,
        /// Set a vCPU's register context.
        SetVcpuContext = 12,
        /// Read a vCPU's register context.
        GetVcpuContext = 13,
        /// State of one vCPU ([`DomctlGetVcpuInfo`]).
        GetVcpuInfo = 14,
        /// Set the number of vCPUs ([`DomctlMaxVcpus`]).
        MaxVcpus = 15,
        /// Scheduler parameters.
        SchedulerOp = 16,
        /// Set the domain's 16-byte handle.
        SetDomainHandle = 17,
        /// Turn debugging on or off.
        SetDebugging = 18,
        /// Grant or revoke access to a physical IRQ.
        IrqPermission = 19,
        /// Grant or revoke access to machine memory.
        IomemPermission = 20,
        /// Grant or revoke access to I/O ports.
        IoportPermission = 21,
        /// Fill a hypercall page.
        HypercallInit = 22,
        /// Set the wallclock offset.
        SetTimeOffset = 24,
        /// Read a vCPU's CPU affinity.
        GetVcpuAffinity = 25,
        /// Obsolete (PowerPC).
        RealModeArea = 26,
        /// Resume a suspended domain.
        ResumeDomain = 27,
        /// Send a virtual NMI, reset, INIT, power or sleep button.
        SendTrigger = 28,
        /// Ask for a `VIRQ_DOM_EXC` when the domain dies.
        Subscribe = 29,
        /// Save HVM state.
        GetHvmContext = 33,
        /// Restore HVM state.
        SetHvmContext = 34,
        /// Set the guest's address size.
        SetAddressSize = 35,
        /// Read the guest's address size.
        GetAddressSize = 36,
        /// Assign a device.
        AssignDevice = 37,
        /// Bind a passed-through IRQ.
        BindPtIrq = 38,
        /// Map machine memory into the guest.
        MemoryMapping = 39,
        /// Map I/O ports into the guest.
        IoportMapping = 40,
        /// Set extended vCPU context.
        SetExtVcpuContext = 42,
        /// Read extended vCPU context.
        GetExtVcpuContext = 43,
        /// Obsolete (IA64).
        SetOptFeature = 44,
        /// Whether a device can be assigned.
        TestAssignDevice = 45,
        /// Make the domain a device model's target.
        SetTarget = 46,
        /// Take a device back.
        DeassignDevice = 47,
        /// Unbind a passed-through IRQ.
        UnbindPtIrq = 48,
        /// Devices sharing an IOMMU group.
        GetDeviceGroup = 50,
        /// Debugger single-step control.
        DebugOp = 54,
        /// Save part of the HVM state.
        GetHvmContextPartial = 55,
        /// VM event (introspection) control.
        VmEventOp = 56,
        /// Memory sharing control.
        MemSharingOp = 57,
        /// Read TSC mode and frequency.
        GetTscInfo = 59,
        /// Set TSC mode and frequency.
        SetTscInfo = 60,
        /// Page types of a list of frames.
        GetPageFrameInfo3 = 61,
        /// Set extended (XSAVE) vCPU state.
        SetVcpuExtState = 62,
        /// Read extended (XSAVE) vCPU state.
        GetVcpuExtState = 63,
        /// Require a VM event listener.
        SetAccessRequired = 64,
        /// Audit the p2m.
        AuditP2m = 65,
        /// Route a global VIRQ to this domain.
        SetVirqHandler = 66,
        /// Mark a guest frame broken.
        SetBrokenPageP2m = 67,
        /// Set NUMA node affinity.
        SetNodeAffinity = 68,
        /// Read NUMA node affinity.
        GetNodeAffinity = 69,
        /// Flush caches for a guest range.
        CacheFlush = 71,
        /// Read a vCPU's MSRs.
        GetVcpuMsrs = 72,
        /// Set a vCPU's MSRs.
        SetVcpuMsrs = 73,
        /// Set virtual NUMA topology.
        SetVnumaInfo = 74,
        /// Cache monitoring control.
        PsrCmtOp = 75,
        /// Monitor (introspection) control.
        MonitorOp = 77,
        /// Cache allocation control.
        PsrAlloc = 78,
        /// Soft reset.
        SoftReset = 79,
        /// Virtual UART control.
        VuartOp = 81,
        /// Read the domain's CPU policy.
        GetCpuPolicy = 82,
        /// Set the domain's CPU policy.
        SetCpuPolicy = 83,
        /// Processor trace control.
        VmtraceOp = 84,
        /// Read the paging memory pool size.
        GetPagingMempoolSize = 85,
        /// Set the paging memory pool size.
        SetPagingMempoolSize = 86,
        /// gdbsx: access guest memory.
        GdbsxGuestMemio = 1000,
        /// gdbsx: pause a vCPU.
        GdbsxPauseVcpu = 1001,
        /// gdbsx: unpause a vCPU.
        GdbsxUnpauseVcpu = 1002,
        /// gdbsx: domain status.
        GdbsxDomStatus = 1003,
    }
}

/// [`DomctlGetDomainInfo::flags`]: the domain is dying (its resources are being released).
pub const XEN_DOMINF_DYING: u32 = 1 << 0;
/// [`DomctlGetDomainInfo::flags`]: an HVM guest (clear for PV).
pub const XEN_DOMINF_HVM_GUEST: u32 = 1 << 1;
/// [`DomctlGetDomainInfo::flags`]: the guest has shut down; the reason is in the shutdown
/// code field ([`XEN_DOMINF_SHUTDOWN_SHIFT`]).
pub const XEN_DOMINF_SHUTDOWN: u32 = 1 << 2;
/// [`DomctlGetDomainInfo::flags`]: paused by the control domain.
pub const XEN_DOMINF_PAUSED: u32 = 1 << 3;
/// [`DomctlGetDomainInfo::flags`]: every online vCPU is blocked waiting for an event.
pub const XEN_DOMINF_BLOCKED: u32 = 1 << 4;
/// [`DomctlGetDomainInfo::flags`]: some vCPU is on a physical CPU right now.
pub const XEN_DOMINF_RUNNING: u32 = 1 << 5;
/// [`DomctlGetDomainInfo::flags`]: a debugger is attached.
pub const XEN_DOMINF_DEBUGGED: u32 = 1 << 6;
/// [`DomctlGetDomainInfo::flags`]: the domain runs xenstored.
pub const XEN_DOMINF_XS_DOMAIN: u32 = 1 << 7;
/// [`DomctlGetDomainInfo::flags`]: hardware-assisted paging.
pub const XEN_DOMINF_HAP: u32 = 1 << 8;
/// Mask of the shutdown code (a [`crate::sched::ShutdownReason`]) once shifted down by
/// [`XEN_DOMINF_SHUTDOWN_SHIFT`].
pub const XEN_DOMINF_SHUTDOWN_MASK: u32 = 255;
/// Position of the shutdown code in [`DomctlGetDomainInfo::flags`].
pub const XEN_DOMINF_SHUTDOWN_SHIFT: u32 = 16;

/// [`DomctlGetDomainInfo::max_vcpu_id`] of a domain without vCPUs.
pub const XEN_INVALID_MAX_VCPU_ID: u32 = !0;

/// `struct xen_arch_domainconfig` on x86: which devices Xen emulates for the domain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchDomainConfig {
    /// `XEN_X86_EMU_*` (zero for PV).
    pub emulation_flags: u32,
    /// `XEN_X86_MSR_RELAXED` and future flags.
    pub misc_flags: u32,
}
assert_layout!(
    ArchDomainConfig,
    size = 8,
    emulation_flags = 0,
    misc_flags = 4
);

/// Payload of `XEN_DOMCTL_getdomaininfo` (`struct xen_domctl_getdomaininfo`), also the
/// element type of `XEN_SYSCTL_getdomaininfolist`'s buffer. Every field is OUT.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomctlGetDomainInfo {
    /// OUT: the domain described (also echoed in [`Domctl::domain`]).
    pub domain: DomId,
    /// Padding.
    pub pad1: u16,
    /// OUT: `XEN_DOMINF_*` and the shutdown code.
    pub flags: u32,
    /// OUT: pages the domain holds.
    pub tot_pages: u64,
    /// OUT: its page limit.
    pub max_pages: u64,
    /// OUT: pages claimed but not yet allocated.
    pub outstanding_pages: u64,
    /// OUT: pages shared with other domains (memory sharing).
    pub shr_pages: u64,
    /// OUT: pages paged out.
    pub paged_pages: u64,
    /// OUT: frame of the shared-info page (a machine frame for PV).
    pub shared_info_frame: u64,
    /// OUT: nanoseconds all vCPUs have spent running.
    pub cpu_time: u64,
    /// OUT: vCPUs currently online.
    pub nr_online_vcpus: u32,
    /// OUT: highest vCPU id, or [`XEN_INVALID_MAX_VCPU_ID`].
    pub max_vcpu_id: u32,
    /// OUT: XSM security id.
    pub ssidref: u32,
    /// OUT: the toolstack's 16-byte handle (a UUID).
    pub handle: [u8; 16],
    /// OUT: CPU pool.
    pub cpupool: u32,
    /// OUT: width of the guest-physical address space.
    pub gpaddr_bits: u8,
    /// Padding.
    pub pad2: [u8; 7],
    /// OUT: emulated devices.
    pub arch_config: ArchDomainConfig,
}
assert_layout!(
    DomctlGetDomainInfo,
    size = 112,
    domain = 0,
    flags = 4,
    tot_pages = 8,
    max_pages = 16,
    outstanding_pages = 24,
    shr_pages = 32,
    paged_pages = 40,
    shared_info_frame = 48,
    cpu_time = 56,
    nr_online_vcpus = 64,
    max_vcpu_id = 68,
    ssidref = 72,
    handle = 76,
    cpupool = 92,
    gpaddr_bits = 96,
    pad2 = 97,
    arch_config = 104
);

/// Payload of `XEN_DOMCTL_getvcpuinfo` (`struct xen_domctl_getvcpuinfo`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomctlGetVcpuInfo {
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT: 1 if the vCPU is up.
    pub online: u8,
    /// OUT: 1 if it is blocked waiting for an event.
    pub blocked: u8,
    /// OUT: 1 if it is on a physical CPU right now.
    pub running: u8,
    /// Padding.
    pub pad0: u8,
    /// OUT: nanoseconds it has spent running.
    pub cpu_time: u64,
    /// OUT: the physical CPU it runs (or last ran) on.
    pub cpu: u32,
    /// Padding.
    pub pad1: u32,
}
assert_layout!(
    DomctlGetVcpuInfo,
    size = 24,
    vcpu = 0,
    online = 4,
    blocked = 5,
    running = 6,
    cpu_time = 8,
    cpu = 16
);

/// Payload of `XEN_DOMCTL_max_vcpus` (`struct xen_domctl_max_vcpus`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomctlMaxVcpus {
    /// IN: the number of vCPUs.
    pub max: u32,
}
assert_layout!(DomctlMaxVcpus, size = 4, max = 0);

/// Size of the payload union of [`Domctl`] and [`crate::sysctl::Sysctl`].
pub const PAYLOAD_SIZE: usize = 128;

/// The 128-byte payload union of [`Domctl`] (`xen_domctl.u`).
///
/// The members are private so that every value starts from 128 initialised bytes (a
/// constructor or a guest copy) and is only ever overwritten member by member: reading any
/// member is then sound, as each is made of integers without implicit padding.
#[repr(C)]
#[derive(Clone, Copy)]
pub union DomctlPayload {
    raw: [u64; PAYLOAD_SIZE / 8],
    getdomaininfo: DomctlGetDomainInfo,
    getvcpuinfo: DomctlGetVcpuInfo,
    max_vcpus: DomctlMaxVcpus,
}
assert_layout!(DomctlPayload, size = PAYLOAD_SIZE);

impl DomctlPayload {
    /// All zero (the payload of commands that take none).
    pub const fn zeroed() -> Self {
        Self {
            raw: [0; PAYLOAD_SIZE / 8],
        }
    }

    /// The 128 bytes as eight-byte words.
    pub const fn raw(&self) -> [u64; PAYLOAD_SIZE / 8] {
        // SAFETY: every value was created with all 128 bytes initialised (see the type's
        // documentation) and member writes keep them so; any bit pattern is a valid array.
        unsafe { self.raw }
    }

    /// A payload holding `info` (the rest zero).
    pub fn from_getdomaininfo(info: DomctlGetDomainInfo) -> Self {
        let mut p = Self::zeroed();
        p.getdomaininfo = info;
        p
    }

    /// A payload holding `info` (the rest zero).
    pub fn from_getvcpuinfo(info: DomctlGetVcpuInfo) -> Self {
        let mut p = Self::zeroed();
        p.getvcpuinfo = info;
        p
    }

    /// A payload holding `max` (the rest zero).
    pub fn from_max_vcpus(max: DomctlMaxVcpus) -> Self {
        let mut p = Self::zeroed();
        p.max_vcpus = max;
        p
    }

    /// The payload read as `XEN_DOMCTL_getdomaininfo`'s.
    pub const fn getdomaininfo(&self) -> DomctlGetDomainInfo {
        // SAFETY: all 128 bytes are initialised (see `raw`) and the member is integers
        // without implicit padding, valid for any bit pattern.
        unsafe { self.getdomaininfo }
    }

    /// The payload read as `XEN_DOMCTL_getvcpuinfo`'s.
    pub const fn getvcpuinfo(&self) -> DomctlGetVcpuInfo {
        // SAFETY: as in `getdomaininfo`.
        unsafe { self.getvcpuinfo }
    }

    /// The payload read as `XEN_DOMCTL_max_vcpus`'s.
    pub const fn max_vcpus(&self) -> DomctlMaxVcpus {
        // SAFETY: as in `getdomaininfo`.
        unsafe { self.max_vcpus }
    }
}

impl Default for DomctlPayload {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl PartialEq for DomctlPayload {
    fn eq(&self, other: &Self) -> bool {
        self.raw() == other.raw()
    }
}

impl Eq for DomctlPayload {}

impl fmt::Debug for DomctlPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DomctlPayload").field(&self.raw()).finish()
    }
}

/// The argument of the `domctl` hypercall (`struct xen_domctl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Domctl {
    /// IN: [`DomctlCmd`].
    pub cmd: u32,
    /// IN: [`XEN_DOMCTL_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// IN: the target domain. OUT for `XEN_DOMCTL_getdomaininfo`: the domain described.
    pub domain: DomId,
    /// Padding.
    pub pad: [u16; 3],
    /// IN/OUT: the command's payload.
    pub u: DomctlPayload,
}
assert_layout!(
    Domctl,
    size = 144,
    cmd = 0,
    interface_version = 4,
    domain = 8,
    pad = 10,
    u = 16
);

impl Domctl {
    /// Command `cmd` on `domain` at this interface version, with payload `u`.
    pub const fn new(cmd: DomctlCmd, domain: DomId, u: DomctlPayload) -> Self {
        Self {
            cmd: cmd as u32,
            interface_version: XEN_DOMCTL_INTERFACE_VERSION,
            domain,
            pad: [0; 3],
            u,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn numbers_round_trip_and_reject() {
        for &c in DomctlCmd::ALL {
            assert_eq!(DomctlCmd::try_from(c.raw()), Ok(c));
        }
        assert_eq!(DomctlCmd::DestroyDomain.raw(), 2);
        assert_eq!(DomctlCmd::PauseDomain.raw(), 3);
        assert_eq!(DomctlCmd::UnpauseDomain.raw(), 4);
        assert_eq!(DomctlCmd::GetDomainInfo.raw(), 5);
        assert_eq!(DomctlCmd::GetVcpuInfo.raw(), 14);
        assert_eq!(DomctlCmd::MaxVcpus.raw(), 15);
        assert_eq!(DomctlCmd::GdbsxDomStatus.raw(), 1003);
        for retired in [6u32, 7, 8, 23, 41, 49, 70, 80, 87] {
            assert!(DomctlCmd::try_from(retired).is_err(), "{retired}");
        }
        assert_eq!(XEN_DOMCTL_INTERFACE_VERSION, 0x15);
    }

    #[test]
    fn dominf_flags_and_shutdown_code() {
        assert_eq!(XEN_DOMINF_PAUSED, 8);
        assert_eq!(XEN_DOMINF_HAP, 0x100);
        let flags = XEN_DOMINF_SHUTDOWN | (3 << XEN_DOMINF_SHUTDOWN_SHIFT);
        assert_eq!(
            (flags >> XEN_DOMINF_SHUTDOWN_SHIFT) & XEN_DOMINF_SHUTDOWN_MASK,
            3
        );
    }

    #[test]
    fn layouts() {
        assert_eq!(size_of::<DomctlGetDomainInfo>(), 112);
        assert_eq!(offset_of!(DomctlGetDomainInfo, cpu_time), 56);
        assert_eq!(offset_of!(DomctlGetDomainInfo, arch_config), 104);
        assert_eq!(size_of::<DomctlGetVcpuInfo>(), 24);
        assert_eq!(offset_of!(DomctlGetVcpuInfo, cpu), 16);
        assert_eq!(size_of::<Domctl>(), 144);
        assert_eq!(align_of::<Domctl>(), 8);
        assert_eq!(offset_of!(Domctl, u), 16);
    }

    #[test]
    fn payload_members_share_the_bytes() {
        let info = DomctlGetVcpuInfo {
            vcpu: 1,
            online: 1,
            cpu_time: 0x1234,
            ..Default::default()
        };
        let p = DomctlPayload::from_getvcpuinfo(info);
        assert_eq!(p.getvcpuinfo(), info);
        assert_eq!(p.raw()[0], 1 | (1 << 32));
        assert_eq!(p.raw()[1], 0x1234);
        assert!(p.raw()[3..].iter().all(|&w| w == 0));
        assert_eq!(p.max_vcpus().max, 1);
        let d = Domctl::new(DomctlCmd::GetDomainInfo, 7, DomctlPayload::zeroed());
        assert_eq!(d.cmd, 5);
        assert_eq!(d.domain, 7);
        assert_eq!(d.u.getdomaininfo(), DomctlGetDomainInfo::default());
        assert_eq!(Domctl::default().u, DomctlPayload::zeroed());
    }
}
