//! `vcpu_op`: bringing vCPUs up and down, timers, runstate and relocating
//! `vcpu_info`.

use crate::xen::VcpuTimeInfo;
use crate::GuestHandle;

abi_enum! {
    /// `cmd` of `vcpu_op(cmd, vcpuid, arg)` (`VCPUOP_*`).
    pub enum VcpuOp: u32 {
        /// Set the initial context of an offline vCPU
        /// ([`crate::xen::VcpuGuestContext`] for PV).
        Initialise = 0,
        /// Start an initialised vCPU.
        Up = 1,
        /// Stop a vCPU.
        Down = 2,
        /// Returns 1 if the vCPU is up.
        IsUp = 3,
        /// Copy out a [`VcpuRunstateInfo`].
        GetRunstateInfo = 4,
        /// Have the hypervisor keep a [`VcpuRunstateInfo`] at a guest address
        /// ([`VcpuRegisterRunstateMemoryArea`]).
        RegisterRunstateMemoryArea = 5,
        /// Start a periodic timer ([`VcpuSetPeriodicTimer`]).
        SetPeriodicTimer = 6,
        /// Stop the periodic timer.
        StopPeriodicTimer = 7,
        /// Arm the one-shot timer ([`VcpuSetSingleshotTimer`]).
        SetSingleshotTimer = 8,
        /// Disarm the one-shot timer.
        StopSingleshotTimer = 9,
        /// Move `vcpu_info` out of the shared-info page ([`VcpuRegisterVcpuInfo`]).
        RegisterVcpuInfo = 10,
        /// Send an NMI to the vCPU.
        SendNmi = 11,
        /// Physical CPU identity ([`VcpuGetPhysid`]).
        GetPhysid = 12,
        /// Keep a copy of [`VcpuTimeInfo`] at a guest address
        /// ([`VcpuRegisterTimeMemoryArea`]).
        RegisterVcpuTimeMemoryArea = 13,
        /// As `RegisterRunstateMemoryArea`, by guest physical address.
        RegisterRunstatePhysArea = 14,
        /// As `RegisterVcpuTimeMemoryArea`, by guest physical address.
        RegisterVcpuTimePhysArea = 15,
    }
}

abi_enum! {
    /// [`VcpuRunstateInfo::state`] (`RUNSTATE_*`).
    pub enum Runstate: u32 {
        /// Running on a physical CPU.
        Running = 0,
        /// Runnable, waiting for a CPU.
        Runnable = 1,
        /// Blocked (waiting for an event) or polling.
        Blocked = 2,
        /// Offline or preempted by the hypervisor for its own work.
        Offline = 3,
    }
}

/// Set in `state_entry_time` while the hypervisor updates a registered
/// runstate area (with `VMASST_TYPE_runstate_update_flag`).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// vCPU run-state accounting (`struct vcpu_runstate_info`).
///
/// On x86_64 `state_entry_time` is 8-byte aligned, giving 48 bytes; 32-bit
/// guests see a packed 44-byte variant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuRunstateInfo {
    /// OUT: [`Runstate`].
    pub state: i32,
    /// Padding.
    pub pad0: u32,
    /// OUT: system time when `state` was entered.
    pub state_entry_time: u64,
    /// OUT: nanoseconds spent in each [`Runstate`].
    pub time: [u64; 4],
}
assert_layout!(
    VcpuRunstateInfo,
    size = 48,
    state = 0,
    state_entry_time = 8,
    time = 16
);

/// Argument of `VCPUOP_register_runstate_memory_area`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuRegisterRunstateMemoryArea {
    /// IN: guest virtual address of a [`VcpuRunstateInfo`] (guest physical for
    /// `VCPUOP_register_runstate_phys_area`).
    pub addr: GuestHandle<VcpuRunstateInfo>,
}
assert_layout!(VcpuRegisterRunstateMemoryArea, size = 8, addr = 0);

/// Argument of `VCPUOP_set_periodic_timer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuSetPeriodicTimer {
    /// IN: period in nanoseconds.
    pub period_ns: u64,
}
assert_layout!(VcpuSetPeriodicTimer, size = 8, period_ns = 0);

/// [`VcpuSetSingleshotTimer::flags`]: fail with `-ETIME` if the timeout is
/// already in the past.
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << 0;

/// Argument of `VCPUOP_set_singleshot_timer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuSetSingleshotTimer {
    /// IN: absolute system time (ns) of expiry.
    pub timeout_abs_ns: u64,
    /// IN: `VCPU_SSHOTTMR_*`.
    pub flags: u32,
    /// Padding.
    pub pad0: u32,
}
assert_layout!(
    VcpuSetSingleshotTimer,
    size = 16,
    timeout_abs_ns = 0,
    flags = 8
);

/// Argument of `VCPUOP_register_vcpu_info`: place this vCPU's
/// [`crate::xen::VcpuInfo`] at `offset` in frame `mfn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuRegisterVcpuInfo {
    /// IN: frame (guest frame for translated guests).
    pub mfn: u64,
    /// IN: byte offset; the structure may not cross the page end.
    pub offset: u32,
    /// Reserved, zero.
    pub rsvd: u32,
}
assert_layout!(
    VcpuRegisterVcpuInfo,
    size = 16,
    mfn = 0,
    offset = 8,
    rsvd = 12
);

/// Argument of `VCPUOP_get_physid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuGetPhysid {
    /// OUT: x86 APIC id in bits 31:0, ACPI id in bits 63:32.
    pub phys_id: u64,
}
assert_layout!(VcpuGetPhysid, size = 8, phys_id = 0);

/// Argument of `VCPUOP_register_vcpu_time_memory_area`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuRegisterTimeMemoryArea {
    /// IN: guest address of a [`VcpuTimeInfo`].
    pub addr: GuestHandle<VcpuTimeInfo>,
}
assert_layout!(VcpuRegisterTimeMemoryArea, size = 8, addr = 0);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn numbers_round_trip() {
        for &op in VcpuOp::ALL {
            assert_eq!(VcpuOp::try_from(op.raw()), Ok(op));
        }
        assert_eq!(VcpuOp::SetSingleshotTimer.raw(), 8);
        assert_eq!(VcpuOp::RegisterVcpuInfo.raw(), 10);
        assert!(VcpuOp::try_from(16u32).is_err());
        for &r in Runstate::ALL {
            assert_eq!(Runstate::try_from(r.raw()), Ok(r));
        }
        assert!(Runstate::try_from(4u32).is_err());
    }

    #[test]
    fn layouts() {
        assert_eq!(size_of::<VcpuRunstateInfo>(), 48);
        assert_eq!(offset_of!(VcpuRunstateInfo, time), 16);
        assert_eq!(size_of::<VcpuSetSingleshotTimer>(), 16);
        assert_eq!(size_of::<VcpuRegisterVcpuInfo>(), 16);
        assert_eq!(offset_of!(VcpuRegisterVcpuInfo, offset), 8);
        assert_eq!(size_of::<VcpuSetPeriodicTimer>(), 8);
    }
}
