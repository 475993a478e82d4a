//! `sched_op`: yielding, blocking, polling and shutting down.

use crate::event_channel::EvtchnPort;
use crate::{DomId, GuestHandle};

abi_enum! {
    /// `cmd` of `sched_op(cmd, arg)` (`SCHEDOP_*`).
    pub enum SchedOp: u32 {
        /// Give up the CPU voluntarily; no argument.
        Yield = 0,
        /// Block until an event is pending; unmasks event delivery. No argument.
        Block = 1,
        /// Stop the calling domain ([`SchedShutdown`]).
        Shutdown = 2,
        /// Block until one of a set of ports is pending ([`SchedPoll`]).
        Poll = 3,
        /// Shut down another domain ([`SchedRemoteShutdown`]).
        RemoteShutdown = 4,
        /// Record a shutdown reason without shutting down ([`SchedShutdown`]).
        ShutdownCode = 5,
        /// Arm, pet or disarm a watchdog ([`SchedWatchdog`]).
        Watchdog = 6,
        /// Override vCPU pinning ([`SchedPinOverride`]).
        PinOverride = 7,
    }
}

abi_enum! {
    /// Reason for a shutdown (`SHUTDOWN_*`).
    pub enum ShutdownReason: u32 {
        /// Power off the domain.
        Poweroff = 0,
        /// Restart the domain.
        Reboot = 1,
        /// Suspend (save) the domain.
        Suspend = 2,
        /// The domain crashed.
        Crash = 3,
        /// A watchdog expired.
        Watchdog = 4,
        /// Soft reset: restart keeping memory.
        SoftReset = 5,
    }
}

/// Argument of `SCHEDOP_shutdown` and `SCHEDOP_shutdown_code`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedShutdown {
    /// IN: [`ShutdownReason`].
    pub reason: u32,
}
assert_layout!(SchedShutdown, size = 4, reason = 0);

/// Argument of `SCHEDOP_poll`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedPoll {
    /// IN: guest array of ports to wait on.
    pub ports: GuestHandle<EvtchnPort>,
    /// IN: number of ports.
    pub nr_ports: u32,
    /// Padding.
    pub pad0: u32,
    /// IN: absolute system time (ns) to give up at; 0 waits forever.
    pub timeout: u64,
}
assert_layout!(SchedPoll, size = 24, ports = 0, nr_ports = 8, timeout = 16);

/// Argument of `SCHEDOP_remote_shutdown`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedRemoteShutdown {
    /// IN: domain to shut down.
    pub domain_id: DomId,
    /// Padding.
    pub pad0: u16,
    /// IN: [`ShutdownReason`].
    pub reason: u32,
}
assert_layout!(SchedRemoteShutdown, size = 8, domain_id = 0, reason = 4);

/// Argument of `SCHEDOP_watchdog`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedWatchdog {
    /// IN: 0 to allocate a watchdog, else its id. OUT (on allocation): the id.
    pub id: u32,
    /// IN: seconds until expiry; 0 destroys the watchdog.
    pub timeout: u32,
}
assert_layout!(SchedWatchdog, size = 8, id = 0, timeout = 4);

/// Argument of `SCHEDOP_pin_override`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedPinOverride {
    /// IN: physical CPU to pin to, or negative to remove the override.
    pub pcpu: i32,
}
assert_layout!(SchedPinOverride, size = 4, pcpu = 0);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn numbers_round_trip_and_reject() {
        for &op in SchedOp::ALL {
            assert_eq!(SchedOp::try_from(op.raw()), Ok(op));
        }
        assert_eq!(SchedOp::try_from(2u32), Ok(SchedOp::Shutdown));
        assert!(SchedOp::try_from(8u32).is_err());
        for &r in ShutdownReason::ALL {
            assert_eq!(ShutdownReason::try_from(u64::from(r.raw())), Ok(r));
        }
        assert_eq!(ShutdownReason::Crash.raw(), 3);
        assert!(ShutdownReason::try_from(6u32).is_err());
    }

    #[test]
    fn layouts() {
        assert_eq!(size_of::<SchedShutdown>(), 4);
        assert_eq!(size_of::<SchedPoll>(), 24);
        assert_eq!(offset_of!(SchedPoll, nr_ports), 8);
        assert_eq!(offset_of!(SchedPoll, timeout), 16);
        assert_eq!(offset_of!(SchedRemoteShutdown, reason), 4);
    }
}
