//! `physdev_op`: I/O privilege, I/O bitmaps and physical-IRQ management.
//! Only the operations small guests and a hardware domain's early boot use
//! are given structures here.

use crate::{DomId, GuestHandle, XenPfn};

abi_enum! {
    /// `cmd` of `physdev_op(cmd, arg)` (`PHYSDEVOP_*`).
    pub enum PhysdevOp: u32 {
        /// [`PhysdevIrqStatusQuery`].
        IrqStatusQuery = 5,
        /// [`PhysdevSetIopl`].
        SetIopl = 6,
        /// [`PhysdevSetIobitmap`].
        SetIobitmap = 7,
        /// [`PhysdevApic`] read.
        ApicRead = 8,
        /// [`PhysdevApic`] write.
        ApicWrite = 9,
        /// [`PhysdevIrq`]: allocate a vector.
        AllocIrqVector = 10,
        /// [`PhysdevIrq`]: free a vector.
        FreeIrqVector = 11,
        /// [`PhysdevEoi`].
        Eoi = 12,
        /// [`PhysdevMapPirq`].
        MapPirq = 13,
        /// [`PhysdevUnmapPirq`].
        UnmapPirq = 14,
        /// Register a PCI device (legacy).
        ManagePciAdd = 15,
        /// Unregister a PCI device (legacy).
        ManagePciRemove = 16,
        /// [`PhysdevPirqEoiGmfn`], version 1.
        PirqEoiGmfnV1 = 17,
        /// Restore MSI state after resume.
        RestoreMsi = 19,
        /// Register a PCI device with extended information (legacy).
        ManagePciAddExt = 20,
        /// Configure a GSI's trigger mode and polarity.
        SetupGsi = 21,
        /// Find a free PIRQ.
        GetFreePirq = 23,
        /// Report a reserved MMCFG region.
        PciMmcfgReserved = 24,
        /// Register a PCI device.
        PciDeviceAdd = 25,
        /// Unregister a PCI device.
        PciDeviceRemove = 26,
        /// Restore MSI state (with segment).
        RestoreMsiExt = 27,
        /// [`PhysdevPirqEoiGmfn`], version 2.
        PirqEoiGmfnV2 = 28,
        /// USB debug-port coordination.
        DbgpOp = 29,
        /// Prepare MSI-X.
        PrepareMsix = 30,
        /// Release MSI-X.
        ReleaseMsix = 31,
        /// Reset a PCI device.
        PciDeviceReset = 32,
    }
}

/// Argument of `PHYSDEVOP_eoi`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevEoi {
    /// IN: physical IRQ to acknowledge.
    pub irq: u32,
}
assert_layout!(PhysdevEoi, size = 4, irq = 0);

/// Argument of `PHYSDEVOP_pirq_eoi_gmfn_v1/v2`: a page of "needs EOI" bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevPirqEoiGmfn {
    /// IN: guest frame of the bitmap.
    pub gmfn: XenPfn,
}
assert_layout!(PhysdevPirqEoiGmfn, size = 8, gmfn = 0);

/// [`PhysdevIrqStatusQuery::flags`]: the IRQ must be EOI'd with `PHYSDEVOP_eoi`.
pub const XENIRQSTAT_NEEDS_EOI: u32 = 1 << 0;
/// [`PhysdevIrqStatusQuery::flags`]: the IRQ is shared with other domains.
pub const XENIRQSTAT_SHARED: u32 = 1 << 1;

/// Argument of `PHYSDEVOP_irq_status_query`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevIrqStatusQuery {
    /// IN: physical IRQ.
    pub irq: u32,
    /// OUT: `XENIRQSTAT_*`.
    pub flags: u32,
}
assert_layout!(PhysdevIrqStatusQuery, size = 8, irq = 0, flags = 4);

/// Argument of `PHYSDEVOP_set_iopl`: the PV guest's virtual IOPL.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevSetIopl {
    /// IN: I/O privilege level 0-3.
    pub iopl: u32,
}
assert_layout!(PhysdevSetIopl, size = 4, iopl = 0);

/// Argument of `PHYSDEVOP_set_iobitmap`: a TSS-style I/O permission bitmap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevSetIobitmap {
    /// IN: guest address of the bitmap (a set bit denies the port).
    pub bitmap: GuestHandle<u8>,
    /// IN: number of ports the bitmap covers.
    pub nr_ports: u32,
    /// Padding.
    pub pad0: u32,
}
assert_layout!(PhysdevSetIobitmap, size = 16, bitmap = 0, nr_ports = 8);

/// Argument of `PHYSDEVOP_apic_read` / `PHYSDEVOP_apic_write`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevApic {
    /// IN: physical base of the IO-APIC.
    pub apic_physbase: u64,
    /// IN: register index.
    pub reg: u32,
    /// IN (write) / OUT (read): register value.
    pub value: u32,
}
assert_layout!(
    PhysdevApic,
    size = 16,
    apic_physbase = 0,
    reg = 8,
    value = 12
);

/// Argument of `PHYSDEVOP_alloc_irq_vector` / `PHYSDEVOP_free_irq_vector`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevIrq {
    /// IN: IRQ.
    pub irq: u32,
    /// OUT (alloc) / IN (free): vector.
    pub vector: u32,
}
assert_layout!(PhysdevIrq, size = 8, irq = 0, vector = 4);

abi_enum! {
    /// [`PhysdevMapPirq::type_`] (`MAP_PIRQ_TYPE_*`).
    pub enum MapPirqType: u32 {
        /// MSI.
        Msi = 0,
        /// A GSI.
        Gsi = 1,
        /// Unknown.
        Unknown = 2,
        /// MSI with a PCI segment in `bus[31:16]`.
        MsiSeg = 3,
        /// Multi-vector MSI.
        MultiMsi = 4,
    }
}

/// Argument of `PHYSDEVOP_map_pirq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevMapPirq {
    /// IN: domain.
    pub domid: DomId,
    /// Padding.
    pub pad0: u16,
    /// IN: [`MapPirqType`].
    pub type_: i32,
    /// IN: GSI or MSI index.
    pub index: i32,
    /// IN/OUT: PIRQ (negative: let the hypervisor choose).
    pub pirq: i32,
    /// IN: PCI bus (MSI).
    pub bus: i32,
    /// IN: PCI device/function (MSI).
    pub devfn: i32,
    /// IN/OUT: MSI-X entry or vector count.
    pub entry_nr: i32,
    /// Padding.
    pub pad1: u32,
    /// IN: MSI-X table base.
    pub table_base: u64,
}
assert_layout!(
    PhysdevMapPirq,
    size = 40,
    domid = 0,
    type_ = 4,
    index = 8,
    pirq = 12,
    bus = 16,
    devfn = 20,
    entry_nr = 24,
    table_base = 32
);

/// Argument of `PHYSDEVOP_unmap_pirq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevUnmapPirq {
    /// IN: domain.
    pub domid: DomId,
    /// Padding.
    pub pad0: u16,
    /// IN: PIRQ.
    pub pirq: i32,
}
assert_layout!(PhysdevUnmapPirq, size = 8, domid = 0, pirq = 4);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn numbers_round_trip_and_reject() {
        for &op in PhysdevOp::ALL {
            assert_eq!(PhysdevOp::try_from(op.raw()), Ok(op));
        }
        assert_eq!(PhysdevOp::SetIopl.raw(), 6);
        assert_eq!(PhysdevOp::Eoi.raw(), 12);
        for bad in [0u32, 4, 18, 22, 33] {
            assert!(PhysdevOp::try_from(bad).is_err(), "{bad}");
        }
        for &t in MapPirqType::ALL {
            assert_eq!(MapPirqType::try_from(t.raw()), Ok(t));
        }
        assert!(MapPirqType::try_from(5u32).is_err());
    }

    #[test]
    fn layouts() {
        assert_eq!(size_of::<PhysdevSetIobitmap>(), 16);
        assert_eq!(offset_of!(PhysdevSetIobitmap, nr_ports), 8);
        assert_eq!(size_of::<PhysdevMapPirq>(), 40);
        assert_eq!(offset_of!(PhysdevMapPirq, table_base), 32);
        assert_eq!(size_of::<PhysdevApic>(), 16);
    }
}
