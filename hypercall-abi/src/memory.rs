//! `memory_op`: reservations, the physmap of translated guests, memory maps
//! and the machine-to-phys table.

use crate::{DomId, GuestHandle, XenPfn, XenUlong};

abi_enum! {
    /// `cmd` of `memory_op(cmd, arg)` (`XENMEM_*`). The low 6 bits of the
    /// hypercall's `cmd` argument select the operation; the rest carry a
    /// continuation start extent ([`MEMOP_EXTENT_SHIFT`]).
    pub enum MemoryOp: u32 {
        /// Allocate extents ([`XenMemoryReservation`]).
        IncreaseReservation = 0,
        /// Free extents ([`XenMemoryReservation`]).
        DecreaseReservation = 1,
        /// Highest machine frame; no argument (returns it).
        MaximumRamPage = 2,
        /// Current page count of a domain (argument: a `DomId`).
        CurrentReservation = 3,
        /// Maximum page count of a domain (argument: a `DomId`).
        MaximumReservation = 4,
        /// Frames backing the M2P table ([`XenMachphysMfnList`]).
        MachphysMfnList = 5,
        /// Populate guest frames ([`XenMemoryReservation`]).
        PopulatePhysmap = 6,
        /// Map a special page into a translated guest's physmap ([`XenAddToPhysmap`]).
        AddToPhysmap = 7,
        /// The domain's pseudo-physical memory map ([`XenMemoryMap`]).
        MemoryMap = 9,
        /// The host's memory map ([`XenMemoryMap`]).
        MachineMemoryMap = 10,
        /// Exchange extents ([`XenMemoryExchange`]).
        Exchange = 11,
        /// Where the M2P table is mapped ([`XenMachphysMapping`]).
        MachphysMapping = 12,
        /// Set a domain's memory map ([`XenForeignMemoryMap`]).
        SetMemoryMap = 13,
        /// Highest guest frame in use (argument: a `DomId`).
        MaximumGpfn = 14,
        /// Unmap a guest frame ([`XenRemoveFromPhysmap`]).
        RemoveFromPhysmap = 15,
        /// Set populate-on-demand target.
        SetPodTarget = 16,
        /// Get populate-on-demand target.
        GetPodTarget = 17,
        /// Memory-sharing statistics.
        GetSharingFreedPages = 18,
        /// Memory-sharing statistics.
        GetSharingSharedPages = 19,
        /// Paging operations.
        PagingOp = 20,
        /// Access-permission operations.
        AccessOp = 21,
        /// Memory-sharing operations.
        SharingOp = 22,
        /// Batched add-to-physmap.
        AddToPhysmapBatch = 23,
        /// Claim pages for a domain being built.
        ClaimPages = 24,
        /// M2P frames of the 32-bit compatibility table.
        MachphysCompatMfnList = 25,
        /// Virtual NUMA topology.
        GetVnumainfo = 26,
        /// Reserved device memory regions.
        ReservedDeviceMemoryMap = 27,
        /// Map a resource of another domain.
        AcquireResource = 28,
    }
}

/// Mask of the operation bits in `memory_op`'s `cmd` argument.
pub const MEMOP_CMD_MASK: u64 = (1 << MEMOP_EXTENT_SHIFT) - 1;
/// Shift of the continuation start extent in `memory_op`'s `cmd` argument.
pub const MEMOP_EXTENT_SHIFT: u32 = 6;

/// [`XenMemoryReservation::mem_flags`]: address-width limit of the extents
/// (0 = none), in bits 7:0.
pub const fn xenmemf_address_bits(bits: u32) -> u32 {
    bits
}
/// The address-width limit encoded in `mem_flags`.
pub const fn xenmemf_get_address_bits(flags: u32) -> u32 {
    flags & 0xff
}
/// `mem_flags`: allocate from NUMA node `node` (bits 15:8 hold `node + 1`).
pub const fn xenmemf_node(node: u32) -> u32 {
    (node + 1) << 8
}
/// `mem_flags`: populate with populate-on-demand entries.
pub const XENMEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;
/// `mem_flags`: the node request is exact.
pub const XENMEMF_EXACT_NODE_REQUEST: u32 = 1 << 17;
/// `mem_flags`: the node is a virtual node.
pub const XENMEMF_VNODE: u32 = 1 << 18;

/// Argument of `XENMEM_{increase,decrease}_reservation` and
/// `XENMEM_populate_physmap` (`struct xen_memory_reservation`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryReservation {
    /// IN (decrease/populate) or OUT (increase/populate): guest array of
    /// extent base frames.
    pub extent_start: GuestHandle<XenPfn>,
    /// IN: number of extents.
    pub nr_extents: XenUlong,
    /// IN: each extent is `2^extent_order` pages.
    pub extent_order: u32,
    /// IN: `XENMEMF_*` flags.
    pub mem_flags: u32,
    /// IN: target domain (`DOMID_SELF` unless privileged).
    pub domid: DomId,
    /// Padding.
    pub pad0: [u16; 3],
}
assert_layout!(
    XenMemoryReservation,
    size = 32,
    extent_start = 0,
    nr_extents = 8,
    extent_order = 16,
    mem_flags = 20,
    domid = 24,
);

/// Argument of `XENMEM_exchange` (`struct xen_memory_exchange`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryExchange {
    /// IN: extents to give up.
    pub in_: XenMemoryReservation,
    /// IN/OUT: extents to receive.
    pub out: XenMemoryReservation,
    /// OUT: input extents exchanged so far (IN: must be 0).
    pub nr_exchanged: XenUlong,
}
assert_layout!(
    XenMemoryExchange,
    size = 72,
    in_ = 0,
    out = 32,
    nr_exchanged = 64
);

/// Argument of `XENMEM_machphys_mfn_list` (`struct xen_machphys_mfn_list`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMachphysMfnList {
    /// IN: capacity of `extent_start`.
    pub max_extents: u32,
    /// Padding.
    pub pad0: u32,
    /// OUT: guest array receiving the first frame of each 2 MiB M2P extent.
    pub extent_start: GuestHandle<XenPfn>,
    /// OUT: number of entries written.
    pub nr_extents: u32,
    /// Padding.
    pub pad1: u32,
}
assert_layout!(
    XenMachphysMfnList,
    size = 24,
    max_extents = 0,
    extent_start = 8,
    nr_extents = 16
);

/// Argument of `XENMEM_machphys_mapping` (`struct xen_machphys_mapping`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMachphysMapping {
    /// OUT: first virtual address of the M2P table.
    pub v_start: XenUlong,
    /// OUT: end virtual address of the M2P table.
    pub v_end: XenUlong,
    /// OUT: largest machine frame the table covers.
    pub max_mfn: XenUlong,
}
assert_layout!(
    XenMachphysMapping,
    size = 24,
    v_start = 0,
    v_end = 8,
    max_mfn = 16
);

abi_enum! {
    /// [`XenAddToPhysmap::space`] (`XENMAPSPACE_*`).
    pub enum XenMapSpace: u32 {
        /// The shared-info page (`idx` 0).
        SharedInfo = 0,
        /// Grant-table frame `idx` (status frame with [`XENMAPIDX_GRANT_TABLE_STATUS`]).
        GrantTable = 1,
        /// Move guest frame `idx`.
        Gmfn = 2,
        /// Move `size` guest frames from `idx`.
        GmfnRange = 3,
        /// A frame of another domain (batch form only).
        GmfnForeign = 4,
        /// Device MMIO (Arm only).
        DevMmio = 5,
    }
}

/// `idx` bit selecting a grant-table status frame in `XENMAPSPACE_grant_table`.
pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;

/// Argument of `XENMEM_add_to_physmap` (`struct xen_add_to_physmap`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenAddToPhysmap {
    /// IN: domain whose physmap changes.
    pub domid: DomId,
    /// IN: page count for `XENMAPSPACE_gmfn_range`.
    pub size: u16,
    /// IN: [`XenMapSpace`].
    pub space: u32,
    /// IN: index within the space.
    pub idx: XenUlong,
    /// IN: guest frame at which the page appears.
    pub gpfn: XenPfn,
}
assert_layout!(
    XenAddToPhysmap,
    size = 24,
    domid = 0,
    size = 2,
    space = 4,
    idx = 8,
    gpfn = 16
);

/// Argument of `XENMEM_add_to_physmap_batch`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenAddToPhysmapBatch {
    /// IN: domain whose physmap changes.
    pub domid: DomId,
    /// IN: [`XenMapSpace`].
    pub space: u16,
    /// IN: number of entries in the arrays.
    pub size: u16,
    /// IN: source domain for `XENMAPSPACE_gmfn_foreign`, else zero.
    pub foreign_domid: DomId,
    /// IN: guest array of indices.
    pub idxs: GuestHandle<XenUlong>,
    /// IN: guest array of target frames.
    pub gpfns: GuestHandle<XenPfn>,
    /// OUT: guest array of per-entry results.
    pub errs: GuestHandle<i32>,
}
assert_layout!(
    XenAddToPhysmapBatch,
    size = 32,
    domid = 0,
    space = 2,
    size = 4,
    foreign_domid = 6,
    idxs = 8,
    gpfns = 16,
    errs = 24
);

/// Argument of `XENMEM_remove_from_physmap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenRemoveFromPhysmap {
    /// IN: domain.
    pub domid: DomId,
    /// Padding.
    pub pad0: [u16; 3],
    /// IN: guest frame to unmap.
    pub gpfn: XenPfn,
}
assert_layout!(XenRemoveFromPhysmap, size = 16, domid = 0, gpfn = 8);

/// Argument of `XENMEM_memory_map` / `XENMEM_machine_memory_map`
/// (`struct xen_memory_map`). The buffer holds [`E820Entry`]s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryMap {
    /// IN: capacity of `buffer` in entries. OUT: entries written.
    pub nr_entries: u32,
    /// Padding.
    pub pad0: u32,
    /// OUT: guest array of [`E820Entry`].
    pub buffer: GuestHandle<E820Entry>,
}
assert_layout!(XenMemoryMap, size = 16, nr_entries = 0, buffer = 8);

/// Argument of `XENMEM_set_memory_map`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenForeignMemoryMap {
    /// IN: domain.
    pub domid: DomId,
    /// Padding.
    pub pad0: [u16; 3],
    /// IN: the map.
    pub map: XenMemoryMap,
}
assert_layout!(XenForeignMemoryMap, size = 24, domid = 0, map = 8);

abi_enum! {
    /// [`E820Entry::kind`]: BIOS memory-map region types.
    pub enum E820Type: u32 {
        /// Usable RAM.
        Ram = 1,
        /// Reserved.
        Reserved = 2,
        /// ACPI tables (reclaimable).
        Acpi = 3,
        /// ACPI non-volatile storage.
        Nvs = 4,
        /// Unusable (bad memory).
        Unusable = 5,
        /// Disabled.
        Disabled = 6,
        /// Persistent memory.
        Pmem = 7,
    }
}

/// One BIOS-style (INT 15h, EAX=E820h) memory-map entry: 20 bytes, packed.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E820Entry {
    /// OUT: start address.
    pub addr: u64,
    /// OUT: length in bytes.
    pub size: u64,
    /// OUT: [`E820Type`].
    pub kind: u32,
}
assert_layout!(E820Entry, size = 20, addr = 0, size = 8, kind = 16);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn op_numbers_round_trip() {
        for &op in MemoryOp::ALL {
            assert_eq!(MemoryOp::try_from(op.raw()), Ok(op));
            assert_eq!(u64::from(op.raw()) & MEMOP_CMD_MASK, u64::from(op.raw()));
        }
        assert_eq!(MemoryOp::AddToPhysmap.raw(), 7);
        assert_eq!(MemoryOp::MemoryMap.raw(), 9);
        assert!(MemoryOp::try_from(8u32).is_err());
        assert!(MemoryOp::try_from(29u32).is_err());
        for &s in XenMapSpace::ALL {
            assert_eq!(XenMapSpace::try_from(s.raw()), Ok(s));
        }
        assert!(XenMapSpace::try_from(6u32).is_err());
        for &t in E820Type::ALL {
            assert_eq!(E820Type::try_from(t.raw()), Ok(t));
        }
        assert!(E820Type::try_from(0u32).is_err());
    }

    #[test]
    fn layouts() {
        assert_eq!(size_of::<XenMemoryReservation>(), 32);
        assert_eq!(offset_of!(XenMemoryReservation, domid), 24);
        assert_eq!(size_of::<XenAddToPhysmap>(), 24);
        assert_eq!(offset_of!(XenAddToPhysmap, space), 4);
        assert_eq!(offset_of!(XenAddToPhysmap, gpfn), 16);
        assert_eq!(size_of::<XenMemoryMap>(), 16);
        assert_eq!(size_of::<E820Entry>(), 20);
        assert_eq!(size_of::<XenMachphysMfnList>(), 24);
        assert_eq!(offset_of!(XenMachphysMfnList, nr_extents), 16);
        assert_eq!(size_of::<XenMemoryExchange>(), 72);
    }

    #[test]
    fn mem_flags_encoding() {
        assert_eq!(xenmemf_node(0), 0x100);
        assert_eq!(
            xenmemf_get_address_bits(xenmemf_address_bits(32) | xenmemf_node(2)),
            32
        );
        assert_eq!(MEMOP_CMD_MASK, 0x3f);
    }
}
