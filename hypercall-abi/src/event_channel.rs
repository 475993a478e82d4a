//! `event_channel_op`: event-channel ports, their bindings, virtual IRQs and
//! the 2-level pending/mask bitmaps in the shared-info page.

use crate::DomId;

/// Xen's `evtchn_port_t`: an event-channel port number.
pub type EvtchnPort = u32;

/// Ports per domain with the 2-level ABI on x86_64: 64 selector bits x 64
/// bits per pending word.
pub const EVTCHN_2L_NR_CHANNELS: u32 = 64 * 64;
/// Alias of [`EVTCHN_2L_NR_CHANNELS`] (4096 on 64-bit).
pub const NR_EVENT_CHANNELS: u32 = EVTCHN_2L_NR_CHANNELS;

/// Index of the pending/mask word holding `port`, and the bit within it.
pub const fn evtchn_2l_word_bit(port: EvtchnPort) -> (usize, u32) {
    ((port / 64) as usize, port % 64)
}

abi_enum! {
    /// `cmd` of `event_channel_op(cmd, arg)` (`EVTCHNOP_*`).
    pub enum EvtchnOp: u32 {
        /// [`EvtchnBindInterdomain`].
        BindInterdomain = 0,
        /// [`EvtchnBindVirq`].
        BindVirq = 1,
        /// [`EvtchnBindPirq`].
        BindPirq = 2,
        /// [`EvtchnClose`].
        Close = 3,
        /// [`EvtchnSend`].
        Send = 4,
        /// [`EvtchnStatus`].
        Status = 5,
        /// [`EvtchnAllocUnbound`].
        AllocUnbound = 6,
        /// [`EvtchnBindIpi`].
        BindIpi = 7,
        /// [`EvtchnBindVcpu`].
        BindVcpu = 8,
        /// [`EvtchnUnmask`].
        Unmask = 9,
        /// [`EvtchnReset`].
        Reset = 10,
        /// [`EvtchnInitControl`] (FIFO ABI).
        InitControl = 11,
        /// [`EvtchnExpandArray`] (FIFO ABI).
        ExpandArray = 12,
        /// [`EvtchnSetPriority`] (FIFO ABI).
        SetPriority = 13,
    }
}

abi_enum! {
    /// Virtual interrupt sources (`VIRQ_*`).
    pub enum Virq: u32 {
        /// Per-vCPU: timer tick / requested timeout.
        Timer = 0,
        /// Per-vCPU: dump debug information.
        Debug = 1,
        /// Global: bytes arrived on the emergency console.
        Console = 2,
        /// Global: exceptional event for some domain.
        DomExc = 3,
        /// Global: trace buffer has records.
        Tbuf = 4,
        /// Global: a domain paused for debugging.
        Debugger = 6,
        /// Per-vCPU: profiling sample available.
        Xenoprof = 7,
        /// Global: bytes arrived on the console ring.
        ConRing = 8,
        /// Global: physical CPU state changed.
        PcpuState = 9,
        /// Global: memory event.
        MemEvent = 10,
        /// Per-domain: Argo message notification.
        Argo = 11,
        /// Global: hypervisor heap is low.
        Enomem = 12,
        /// Per-vCPU: PMU interrupt.
        Xenpmu = 13,
        /// Architecture-specific 0 (x86: machine check).
        Arch0 = 16,
        /// Architecture-specific 1.
        Arch1 = 17,
        /// Architecture-specific 2.
        Arch2 = 18,
        /// Architecture-specific 3.
        Arch3 = 19,
        /// Architecture-specific 4.
        Arch4 = 20,
        /// Architecture-specific 5.
        Arch5 = 21,
        /// Architecture-specific 6.
        Arch6 = 22,
        /// Architecture-specific 7.
        Arch7 = 23,
    }
}

/// Number of virtual IRQ numbers (valid `virq` values are below this).
pub const NR_VIRQS: u32 = 24;

impl Virq {
    /// Whether the VIRQ is per-vCPU (each vCPU binds its own port) rather
    /// than per-domain or global.
    pub const fn is_per_vcpu(self) -> bool {
        matches!(
            self,
            Virq::Timer | Virq::Debug | Virq::Xenoprof | Virq::Xenpmu
        )
    }
}

/// `EVTCHNOP_alloc_unbound`: allocate a port that `remote_dom` may bind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnAllocUnbound {
    /// IN: domain to allocate in (usually `DOMID_SELF`).
    pub dom: DomId,
    /// IN: domain allowed to connect.
    pub remote_dom: DomId,
    /// OUT: the new port.
    pub port: EvtchnPort,
}
assert_layout!(
    EvtchnAllocUnbound,
    size = 8,
    dom = 0,
    remote_dom = 2,
    port = 4
);

/// `EVTCHNOP_bind_interdomain`: connect to a remote domain's unbound port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindInterdomain {
    /// IN: remote domain.
    pub remote_dom: DomId,
    /// Padding.
    pub pad0: u16,
    /// IN: remote domain's unbound port.
    pub remote_port: EvtchnPort,
    /// OUT: the local port.
    pub local_port: EvtchnPort,
}
assert_layout!(
    EvtchnBindInterdomain,
    size = 12,
    remote_dom = 0,
    remote_port = 4,
    local_port = 8
);

/// `EVTCHNOP_bind_virq`: bind a virtual IRQ on a vCPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVirq {
    /// IN: [`Virq`].
    pub virq: u32,
    /// IN: vCPU to deliver to.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: EvtchnPort,
}
assert_layout!(EvtchnBindVirq, size = 12, virq = 0, vcpu = 4, port = 8);

/// [`EvtchnBindPirq::flags`]: the IRQ may be shared with other domains.
pub const BIND_PIRQ_WILL_SHARE: u32 = 1;

/// `EVTCHNOP_bind_pirq`: bind a physical IRQ.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindPirq {
    /// IN: physical IRQ.
    pub pirq: u32,
    /// IN: [`BIND_PIRQ_WILL_SHARE`].
    pub flags: u32,
    /// OUT: the new port.
    pub port: EvtchnPort,
}
assert_layout!(EvtchnBindPirq, size = 12, pirq = 0, flags = 4, port = 8);

/// `EVTCHNOP_bind_ipi`: a port for signalling the caller's own vCPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindIpi {
    /// IN: vCPU to deliver to.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: EvtchnPort,
}
assert_layout!(EvtchnBindIpi, size = 8, vcpu = 0, port = 4);

/// `EVTCHNOP_close`: close a port (the remote end becomes unbound).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnClose {
    /// IN: port to close.
    pub port: EvtchnPort,
}
assert_layout!(EvtchnClose, size = 4, port = 0);

/// `EVTCHNOP_send`: signal the other end of a port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnSend {
    /// IN: local port.
    pub port: EvtchnPort,
}
assert_layout!(EvtchnSend, size = 4, port = 0);

abi_enum! {
    /// [`EvtchnStatus::status`] (`EVTCHNSTAT_*`).
    pub enum EvtchnStat: u32 {
        /// Not in use.
        Closed = 0,
        /// Waiting for a remote domain to connect.
        Unbound = 1,
        /// Connected to a remote domain.
        Interdomain = 2,
        /// Bound to a physical IRQ.
        Pirq = 3,
        /// Bound to a virtual IRQ.
        Virq = 4,
        /// Bound for IPIs.
        Ipi = 5,
    }
}

/// [`EvtchnStatusU::unbound`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnStatusUnbound {
    /// OUT: the domain allowed to connect.
    pub dom: DomId,
    /// Padding up to the union's size.
    pub pad0: [u16; 3],
}
assert_layout!(EvtchnStatusUnbound, size = 8, dom = 0);

/// [`EvtchnStatusU::interdomain`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnStatusInterdomain {
    /// OUT: remote domain.
    pub dom: DomId,
    /// Padding.
    pub pad0: u16,
    /// OUT: remote port.
    pub port: EvtchnPort,
}
assert_layout!(EvtchnStatusInterdomain, size = 8, dom = 0, port = 4);

/// [`EvtchnStatusU::pirq`] and [`EvtchnStatusU::virq`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnStatusIrq {
    /// OUT: the physical or virtual IRQ number.
    pub irq: u32,
    /// Padding up to the union's size.
    pub pad0: u32,
}
assert_layout!(EvtchnStatusIrq, size = 8, irq = 0);

/// Status-specific part of [`EvtchnStatus`]. Every variant is 8 bytes with
/// explicit padding, so writing any one initialises the whole union.
#[repr(C)]
#[derive(Clone, Copy)]
pub union EvtchnStatusU {
    /// `EVTCHNSTAT_unbound`.
    pub unbound: EvtchnStatusUnbound,
    /// `EVTCHNSTAT_interdomain`.
    pub interdomain: EvtchnStatusInterdomain,
    /// `EVTCHNSTAT_pirq`.
    pub pirq: EvtchnStatusIrq,
    /// `EVTCHNSTAT_virq`.
    pub virq: EvtchnStatusIrq,
}
const _: () = assert!(core::mem::size_of::<EvtchnStatusU>() == 8);

impl EvtchnStatusU {
    /// Read as the unbound variant.
    pub const fn unbound(&self) -> EvtchnStatusUnbound {
        // SAFETY: all variants are 8 bytes of integers without implicit
        // padding, so the union is fully initialised and any bit pattern is
        // a valid `EvtchnStatusUnbound`.
        unsafe { self.unbound }
    }

    /// Read as the interdomain variant.
    pub const fn interdomain(&self) -> EvtchnStatusInterdomain {
        // SAFETY: as in `unbound`.
        unsafe { self.interdomain }
    }

    /// Read as the pirq/virq variant.
    pub const fn irq(&self) -> EvtchnStatusIrq {
        // SAFETY: as in `unbound`.
        unsafe { self.pirq }
    }
}

impl Default for EvtchnStatusU {
    fn default() -> Self {
        Self {
            interdomain: EvtchnStatusInterdomain::default(),
        }
    }
}

impl core::fmt::Debug for EvtchnStatusU {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EvtchnStatusU")
            .field("interdomain", &self.interdomain())
            .finish()
    }
}

/// `EVTCHNOP_status`: query a port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnStatus {
    /// IN: domain owning the port (`DOMID_SELF` unless privileged).
    pub dom: DomId,
    /// Padding.
    pub pad0: u16,
    /// IN: port to query.
    pub port: EvtchnPort,
    /// OUT: [`EvtchnStat`].
    pub status: u32,
    /// OUT: vCPU notified by the port.
    pub vcpu: u32,
    /// OUT: status-specific detail.
    pub u: EvtchnStatusU,
}
assert_layout!(
    EvtchnStatus,
    size = 24,
    dom = 0,
    port = 4,
    status = 8,
    vcpu = 12,
    u = 16
);

/// `EVTCHNOP_bind_vcpu`: change the vCPU a port notifies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVcpu {
    /// IN: port.
    pub port: EvtchnPort,
    /// IN: new target vCPU.
    pub vcpu: u32,
}
assert_layout!(EvtchnBindVcpu, size = 8, port = 0, vcpu = 4);

/// `EVTCHNOP_unmask`: clear a port's mask bit and re-raise it if pending.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnUnmask {
    /// IN: port.
    pub port: EvtchnPort,
}
assert_layout!(EvtchnUnmask, size = 4, port = 0);

/// `EVTCHNOP_reset`: close every port of a domain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnReset {
    /// IN: domain (`DOMID_SELF` unless privileged).
    pub dom: DomId,
}
assert_layout!(EvtchnReset, size = 2, dom = 0);

/// `EVTCHNOP_init_control`: switch to the FIFO ABI for one vCPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnInitControl {
    /// IN: frame holding the control block.
    pub control_gfn: u64,
    /// IN: byte offset of the control block within the frame.
    pub offset: u32,
    /// IN: vCPU.
    pub vcpu: u32,
    /// OUT: number of link bits in an event word.
    pub link_bits: u8,
    /// Padding.
    pub pad: [u8; 7],
}
assert_layout!(
    EvtchnInitControl,
    size = 24,
    control_gfn = 0,
    offset = 8,
    vcpu = 12,
    link_bits = 16
);

/// `EVTCHNOP_expand_array`: add a page of FIFO event words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnExpandArray {
    /// IN: frame of the new event-word page.
    pub array_gfn: u64,
}
assert_layout!(EvtchnExpandArray, size = 8, array_gfn = 0);

/// `EVTCHNOP_set_priority`: FIFO priority of a port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnSetPriority {
    /// IN: port.
    pub port: EvtchnPort,
    /// IN: priority (0 highest, 15 lowest).
    pub priority: u32,
}
assert_layout!(EvtchnSetPriority, size = 8, port = 0, priority = 4);

/// A structure that is the argument of exactly one `event_channel_op`
/// sub-command, so a typed call can supply the right `cmd`.
pub trait EvtchnOpArg: Copy {
    /// The sub-command this structure belongs to.
    const CMD: EvtchnOp;
}

macro_rules! evtchn_op_arg {
    ($($ty:ty => $cmd:ident),+ $(,)?) => {
        $(impl EvtchnOpArg for $ty {
            const CMD: EvtchnOp = EvtchnOp::$cmd;
        })+
    };
}

evtchn_op_arg! {
    EvtchnBindInterdomain => BindInterdomain,
    EvtchnBindVirq => BindVirq,
    EvtchnBindPirq => BindPirq,
    EvtchnClose => Close,
    EvtchnSend => Send,
    EvtchnStatus => Status,
    EvtchnAllocUnbound => AllocUnbound,
    EvtchnBindIpi => BindIpi,
    EvtchnBindVcpu => BindVcpu,
    EvtchnUnmask => Unmask,
    EvtchnReset => Reset,
    EvtchnInitControl => InitControl,
    EvtchnExpandArray => ExpandArray,
    EvtchnSetPriority => SetPriority,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn op_numbers_round_trip() {
        for &op in EvtchnOp::ALL {
            assert_eq!(EvtchnOp::try_from(op.raw()), Ok(op));
        }
        assert_eq!(EvtchnOp::AllocUnbound.raw(), 6);
        assert_eq!(EvtchnOp::Unmask.raw(), 9);
        assert!(EvtchnOp::try_from(14u32).is_err());
        assert_eq!(<EvtchnSend as EvtchnOpArg>::CMD, EvtchnOp::Send);
        assert_eq!(<EvtchnStatus as EvtchnOpArg>::CMD, EvtchnOp::Status);
    }

    #[test]
    fn virq_numbers() {
        for &v in Virq::ALL {
            assert_eq!(Virq::try_from(v.raw()), Ok(v));
            assert!(v.raw() < NR_VIRQS);
        }
        assert!(Virq::try_from(5u32).is_err());
        assert!(Virq::try_from(14u32).is_err());
        assert!(Virq::try_from(NR_VIRQS).is_err());
        assert!(Virq::Timer.is_per_vcpu());
        assert!(!Virq::Console.is_per_vcpu());
        for &s in EvtchnStat::ALL {
            assert_eq!(EvtchnStat::try_from(s.raw()), Ok(s));
        }
        assert!(EvtchnStat::try_from(6u32).is_err());
    }

    #[test]
    fn two_level_abi() {
        assert_eq!(NR_EVENT_CHANNELS, 4096);
        assert_eq!(evtchn_2l_word_bit(0), (0, 0));
        assert_eq!(evtchn_2l_word_bit(65), (1, 1));
        assert_eq!(evtchn_2l_word_bit(4095), (63, 63));
    }

    #[test]
    fn op_struct_layouts() {
        assert_eq!(size_of::<EvtchnAllocUnbound>(), 8);
        assert_eq!(offset_of!(EvtchnAllocUnbound, port), 4);
        assert_eq!(size_of::<EvtchnBindInterdomain>(), 12);
        assert_eq!(offset_of!(EvtchnBindInterdomain, remote_port), 4);
        assert_eq!(size_of::<EvtchnBindVirq>(), 12);
        assert_eq!(size_of::<EvtchnBindIpi>(), 8);
        assert_eq!(size_of::<EvtchnStatus>(), 24);
        assert_eq!(offset_of!(EvtchnStatus, u), 16);
        assert_eq!(size_of::<EvtchnReset>(), 2);
        assert_eq!(size_of::<EvtchnInitControl>(), 24);
    }

    #[test]
    fn status_union_reads() {
        let s = EvtchnStatus {
            status: EvtchnStat::Interdomain.raw(),
            u: EvtchnStatusU {
                interdomain: EvtchnStatusInterdomain {
                    dom: 3,
                    pad0: 0,
                    port: 9,
                },
            },
            ..EvtchnStatus::default()
        };
        assert_eq!(s.u.interdomain().dom, 3);
        assert_eq!(s.u.interdomain().port, 9);
        assert_eq!(s.u.unbound().dom, 3);
        let v = EvtchnStatusU {
            virq: EvtchnStatusIrq { irq: 1, pad0: 0 },
        };
        assert_eq!(v.irq().irq, 1);
        assert_eq!(EvtchnStatus::default().u.interdomain().port, 0);
    }
}
