//! `grant_table_op`: grant references (v1 entries), mapping, copying and the
//! table's setup.

use crate::{DomId, GuestHandle, UnknownValue, XenPfn};

/// Xen's `grant_ref_t`: index of an entry in a domain's grant table.
pub type GrantRef = u32;
/// Xen's `grant_handle_t`: names one mapping made by `map_grant_ref`.
pub type GrantHandle = u32;

/// A v1 grant entry (`struct grant_entry_v1`), written by the granting
/// domain and updated by the hypervisor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    /// IN (granter) / OUT (`GTF_reading`, `GTF_writing`, transfer bits): `GTF_*`.
    pub flags: u16,
    /// IN: domain being granted access.
    pub domid: DomId,
    /// IN: frame being granted (or OUT: frame transferred in).
    pub frame: u32,
}
assert_layout!(GrantEntryV1, size = 8, flags = 0, domid = 2, frame = 4);

/// Number of v1 entries in one grant-table frame.
pub const GRANT_ENTRIES_V1_PER_PAGE: usize = crate::PAGE_SIZE / 8;

/// Entries reserved for the toolstack at the start of the table.
pub const GNTTAB_NR_RESERVED_ENTRIES: GrantRef = 8;
/// Reserved entry granting the console ring to the console backend.
pub const GNTTAB_RESERVED_CONSOLE: GrantRef = 0;
/// Reserved entry granting the xenstore ring to xenstored.
pub const GNTTAB_RESERVED_XENSTORE: GrantRef = 1;

/// Entry type: not in use.
pub const GTF_INVALID: u16 = 0;
/// Entry type: `domid` may map or copy `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// Entry type: `domid` may transfer a frame into this slot.
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// Entry type: transitive grant (v2 only).
pub const GTF_TRANSITIVE: u16 = 3;
/// Mask of the entry-type bits.
pub const GTF_TYPE_MASK: u16 = 3;
/// Permit-access flag: read-only access.
pub const GTF_READONLY: u16 = 1 << 2;
/// Set by the hypervisor while the grant is mapped or copied for reading.
pub const GTF_READING: u16 = 1 << 3;
/// Set by the hypervisor while the grant is mapped or copied for writing.
pub const GTF_WRITING: u16 = 1 << 4;
/// Cache attribute: write-through.
pub const GTF_PWT: u16 = 1 << 5;
/// Cache attribute: cache disable.
pub const GTF_PCD: u16 = 1 << 6;
/// Cache attribute: PAT.
pub const GTF_PAT: u16 = 1 << 7;
/// Sub-page grant (v2 only).
pub const GTF_SUB_PAGE: u16 = 1 << 8;
/// Accept-transfer flag: a transfer is in progress.
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
/// Accept-transfer flag: the transfer is complete.
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;

abi_enum! {
    /// `cmd` of `grant_table_op(cmd, args, count)` (`GNTTABOP_*`).
    pub enum GnttabOp: u32 {
        /// [`GnttabMapGrantRef`] array.
        MapGrantRef = 0,
        /// [`GnttabUnmapGrantRef`] array.
        UnmapGrantRef = 1,
        /// [`GnttabSetupTable`].
        SetupTable = 2,
        /// [`GnttabDumpTable`].
        DumpTable = 3,
        /// [`GnttabTransfer`] array.
        Transfer = 4,
        /// [`GnttabCopy`] array.
        Copy = 5,
        /// [`GnttabQuerySize`].
        QuerySize = 6,
        /// [`GnttabUnmapAndReplace`] array.
        UnmapAndReplace = 7,
        /// [`GnttabSetVersion`].
        SetVersion = 8,
        /// [`GnttabGetStatusFrames`].
        GetStatusFrames = 9,
        /// [`GnttabGetVersion`].
        GetVersion = 10,
        /// [`GnttabSwapGrantRef`] array.
        SwapGrantRef = 11,
        /// Cache maintenance (Arm).
        CacheFlush = 12,
    }
}

/// Map for device (bus) access.
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// Map into the host (CPU) address space.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// Map read-only.
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// Map with user access (PV).
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
/// `host_addr` is the machine address of a PTE to update, not a virtual address.
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;
/// Bits the guest may use for its own purposes in the created PTE.
pub const GNTMAP_GUEST_AVAIL_MASK: u32 = !0u32 << 16;

/// Status of one grant operation (`GNTST_*`), a negative `i16` on failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum GrantStatus {
    /// Success.
    Okay = 0,
    /// Unspecified error.
    GeneralError = -1,
    /// Unknown domain.
    BadDomain = -2,
    /// Invalid grant reference.
    BadGntref = -3,
    /// Invalid mapping handle.
    BadHandle = -4,
    /// Invalid virtual address.
    BadVirtAddr = -5,
    /// Invalid device address.
    BadDevAddr = -6,
    /// No free IOMMU slot.
    NoDeviceSpace = -7,
    /// Permission denied.
    PermissionDenied = -8,
    /// Bad page.
    BadPage = -9,
    /// Copy crosses a page boundary.
    BadCopyArg = -10,
    /// Page address too large.
    AddressTooBig = -11,
    /// Try again.
    Eagain = -12,
    /// Out of space.
    NoSpace = -13,
}

impl GrantStatus {
    /// Every status, from `Okay` down.
    pub const ALL: &'static [GrantStatus] = &[
        GrantStatus::Okay,
        GrantStatus::GeneralError,
        GrantStatus::BadDomain,
        GrantStatus::BadGntref,
        GrantStatus::BadHandle,
        GrantStatus::BadVirtAddr,
        GrantStatus::BadDevAddr,
        GrantStatus::NoDeviceSpace,
        GrantStatus::PermissionDenied,
        GrantStatus::BadPage,
        GrantStatus::BadCopyArg,
        GrantStatus::AddressTooBig,
        GrantStatus::Eagain,
        GrantStatus::NoSpace,
    ];

    /// The status as stored in a `status` field.
    pub const fn raw(self) -> i16 {
        self as i16
    }

    /// A human-readable description.
    pub const fn message(self) -> &'static str {
        match self {
            GrantStatus::Okay => "okay",
            GrantStatus::GeneralError => "undefined error",
            GrantStatus::BadDomain => "unrecognised domain id",
            GrantStatus::BadGntref => "invalid grant reference",
            GrantStatus::BadHandle => "invalid mapping handle",
            GrantStatus::BadVirtAddr => "invalid virtual address",
            GrantStatus::BadDevAddr => "invalid device address",
            GrantStatus::NoDeviceSpace => "no spare translation slot in the I/O MMU",
            GrantStatus::PermissionDenied => "permission denied",
            GrantStatus::BadPage => "bad page",
            GrantStatus::BadCopyArg => "copy arguments cross page boundary",
            GrantStatus::AddressTooBig => "page address size too large",
            GrantStatus::Eagain => "operation not done; try again",
            GrantStatus::NoSpace => "out of space",
        }
    }
}

impl TryFrom<i16> for GrantStatus {
    type Error = UnknownValue;

    fn try_from(v: i16) -> Result<Self, Self::Error> {
        Self::ALL
            .iter()
            .copied()
            .find(|s| s.raw() == v)
            .ok_or(UnknownValue {
                type_name: "GrantStatus",
                value: v as i64 as u64,
            })
    }
}

impl TryFrom<i64> for GrantStatus {
    type Error = UnknownValue;

    fn try_from(v: i64) -> Result<Self, Self::Error> {
        let unknown = UnknownValue {
            type_name: "GrantStatus",
            value: v as u64,
        };
        i16::try_from(v)
            .map_err(|_| unknown)
            .and_then(|s| Self::try_from(s).map_err(|_| unknown))
    }
}

/// `GNTTABOP_map_grant_ref`: map a foreign grant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabMapGrantRef {
    /// IN: virtual address (or PTE machine address with `GNTMAP_contains_pte`,
    /// or guest physical address for translated guests) to map at.
    pub host_addr: u64,
    /// IN: `GNTMAP_*`.
    pub flags: u32,
    /// IN: grant reference in `dom`'s table.
    pub ref_: GrantRef,
    /// IN: granting domain.
    pub dom: DomId,
    /// OUT: [`GrantStatus`].
    pub status: i16,
    /// OUT: handle for unmapping.
    pub handle: GrantHandle,
    /// OUT: bus address for device mappings.
    pub dev_bus_addr: u64,
}
assert_layout!(
    GnttabMapGrantRef,
    size = 32,
    host_addr = 0,
    flags = 8,
    ref_ = 12,
    dom = 16,
    status = 18,
    handle = 20,
    dev_bus_addr = 24,
);

/// `GNTTABOP_unmap_grant_ref`: remove a mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabUnmapGrantRef {
    /// IN: address given at map time (0 if none).
    pub host_addr: u64,
    /// IN: bus address given at map time (0 if none).
    pub dev_bus_addr: u64,
    /// IN: handle returned by the map.
    pub handle: GrantHandle,
    /// OUT: [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad0: u16,
}
assert_layout!(
    GnttabUnmapGrantRef,
    size = 24,
    host_addr = 0,
    dev_bus_addr = 8,
    handle = 16,
    status = 20
);

/// `GNTTABOP_setup_table`: size the caller's table and get its frames
/// (PV guests map them; translated guests use `XENMAPSPACE_grant_table`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSetupTable {
    /// IN: domain (`DOMID_SELF` unless privileged).
    pub dom: DomId,
    /// Padding.
    pub pad0: u16,
    /// IN: number of frames wanted.
    pub nr_frames: u32,
    /// OUT: [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad1: [u16; 3],
    /// OUT: guest array receiving the frame numbers.
    pub frame_list: GuestHandle<XenPfn>,
}
assert_layout!(
    GnttabSetupTable,
    size = 24,
    dom = 0,
    nr_frames = 4,
    status = 8,
    frame_list = 16
);

/// `GNTTABOP_dump_table`: dump a table to the hypervisor console.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabDumpTable {
    /// IN: domain.
    pub dom: DomId,
    /// OUT: [`GrantStatus`].
    pub status: i16,
}
assert_layout!(GnttabDumpTable, size = 4, dom = 0, status = 2);

/// `GNTTABOP_transfer`: give a page to another domain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabTransfer {
    /// IN: frame to transfer.
    pub mfn: XenPfn,
    /// IN: receiving domain.
    pub domid: DomId,
    /// Padding.
    pub pad0: u16,
    /// IN: receiver's accept-transfer grant.
    pub ref_: GrantRef,
    /// OUT: [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad1: [u16; 3],
}
assert_layout!(
    GnttabTransfer,
    size = 24,
    mfn = 0,
    domid = 8,
    ref_ = 12,
    status = 16
);

/// [`GnttabCopy::flags`]: the source is a grant reference.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// [`GnttabCopy::flags`]: the destination is a grant reference.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// One end of a [`GnttabCopy`].
///
/// Xen declares the frame as a union of a grant reference (`u32`) and a
/// frame number (`u64`), chosen by `GNTCOPY_*_GREF`; it is held here as the
/// 64-bit value with the grant reference in its low 32 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabCopyPtr {
    /// IN: grant reference in `domid`'s table, or a frame of the caller.
    pub u: u64,
    /// IN: domain owning the frame.
    pub domid: DomId,
    /// IN: byte offset within the frame.
    pub offset: u16,
    /// Padding.
    pub pad0: u32,
}
assert_layout!(GnttabCopyPtr, size = 16, u = 0, domid = 8, offset = 10);

impl GnttabCopyPtr {
    /// An end named by a grant reference of `domid`.
    pub const fn from_gref(domid: DomId, gref: GrantRef, offset: u16) -> Self {
        Self {
            u: gref as u64,
            domid,
            offset,
            pad0: 0,
        }
    }

    /// An end named by a frame of the caller (`domid` is normally `DOMID_SELF`).
    pub const fn from_gmfn(domid: DomId, gmfn: XenPfn, offset: u16) -> Self {
        Self {
            u: gmfn,
            domid,
            offset,
            pad0: 0,
        }
    }

    /// The frame field read as a grant reference (its low 32 bits).
    pub const fn gref(&self) -> GrantRef {
        self.u as u32
    }

    /// The frame field read as a frame number.
    pub const fn gmfn(&self) -> XenPfn {
        self.u
    }
}

/// `GNTTABOP_copy`: copy bytes between frames without mapping them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabCopy {
    /// IN: source.
    pub source: GnttabCopyPtr,
    /// IN: destination.
    pub dest: GnttabCopyPtr,
    /// IN: bytes to copy (may not cross a page boundary at either end).
    pub len: u16,
    /// IN: `GNTCOPY_*`.
    pub flags: u16,
    /// OUT: [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad0: u16,
}
assert_layout!(
    GnttabCopy,
    size = 40,
    source = 0,
    dest = 16,
    len = 32,
    flags = 34,
    status = 36
);

/// `GNTTABOP_query_size`: current and maximum table size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabQuerySize {
    /// IN: domain.
    pub dom: DomId,
    /// Padding.
    pub pad0: u16,
    /// OUT: frames in use.
    pub nr_frames: u32,
    /// OUT: maximum frames.
    pub max_nr_frames: u32,
    /// OUT: [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad1: u16,
}
assert_layout!(
    GnttabQuerySize,
    size = 16,
    dom = 0,
    nr_frames = 4,
    max_nr_frames = 8,
    status = 12
);

/// `GNTTABOP_unmap_and_replace`: unmap, moving another mapping into place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabUnmapAndReplace {
    /// IN: address of the grant mapping.
    pub host_addr: u64,
    /// IN: address whose mapping replaces it (and is zapped).
    pub new_addr: u64,
    /// IN: handle of the grant mapping.
    pub handle: GrantHandle,
    /// OUT: [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad0: u16,
}
assert_layout!(
    GnttabUnmapAndReplace,
    size = 24,
    host_addr = 0,
    new_addr = 8,
    handle = 16,
    status = 20
);

/// `GNTTABOP_set_version`: choose grant-table format 1 or 2.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSetVersion {
    /// IN: requested version. OUT: version in force.
    pub version: u32,
}
assert_layout!(GnttabSetVersion, size = 4, version = 0);

/// `GNTTABOP_get_status_frames` (v2 tables).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabGetStatusFrames {
    /// IN: number of frames wanted.
    pub nr_frames: u32,
    /// IN: domain.
    pub dom: DomId,
    /// OUT: [`GrantStatus`].
    pub status: i16,
    /// OUT: guest array receiving the frame numbers.
    pub frame_list: GuestHandle<u64>,
}
assert_layout!(
    GnttabGetStatusFrames,
    size = 16,
    nr_frames = 0,
    dom = 4,
    status = 6,
    frame_list = 8
);

/// `GNTTABOP_get_version`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabGetVersion {
    /// IN: domain.
    pub dom: DomId,
    /// Padding.
    pub pad: u16,
    /// OUT: version in force.
    pub version: u32,
}
assert_layout!(GnttabGetVersion, size = 8, dom = 0, version = 4);

/// `GNTTABOP_swap_grant_ref`: exchange two entries of the caller's table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSwapGrantRef {
    /// IN: first entry.
    pub ref_a: GrantRef,
    /// IN: second entry.
    pub ref_b: GrantRef,
    /// OUT: [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad0: u16,
}
assert_layout!(
    GnttabSwapGrantRef,
    size = 12,
    ref_a = 0,
    ref_b = 4,
    status = 8
);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn op_numbers_round_trip() {
        for &op in GnttabOp::ALL {
            assert_eq!(GnttabOp::try_from(op.raw()), Ok(op));
        }
        assert_eq!(GnttabOp::Copy.raw(), 5);
        assert_eq!(GnttabOp::SetVersion.raw(), 8);
        assert!(GnttabOp::try_from(13u32).is_err());
    }

    #[test]
    fn status_codes_round_trip_and_reject() {
        for &s in GrantStatus::ALL {
            assert_eq!(GrantStatus::try_from(s.raw()), Ok(s));
            assert_eq!(GrantStatus::try_from(i64::from(s.raw())), Ok(s));
            assert!(!s.message().is_empty());
        }
        assert_eq!(GrantStatus::NoSpace.raw(), -13);
        assert!(GrantStatus::try_from(-14i16).is_err());
        assert!(GrantStatus::try_from(1i16).is_err());
        assert!(GrantStatus::try_from(1i64 << 20).is_err());
    }

    #[test]
    fn entry_and_flags() {
        assert_eq!(size_of::<GrantEntryV1>(), 8);
        assert_eq!(offset_of!(GrantEntryV1, frame), 4);
        assert_eq!(GRANT_ENTRIES_V1_PER_PAGE, 512);
        assert_eq!(GTF_PERMIT_ACCESS | GTF_READONLY, 5);
        assert_eq!(GTF_READING, 8);
        assert_eq!(GTF_WRITING, 16);
        assert_eq!(GNTMAP_HOST_MAP | GNTMAP_READONLY, 6);
        assert_eq!(GNTMAP_GUEST_AVAIL_MASK, 0xFFFF_0000);
    }

    #[test]
    fn op_layouts() {
        assert_eq!(size_of::<GnttabMapGrantRef>(), 32);
        assert_eq!(offset_of!(GnttabMapGrantRef, status), 18);
        assert_eq!(offset_of!(GnttabMapGrantRef, dev_bus_addr), 24);
        assert_eq!(size_of::<GnttabUnmapGrantRef>(), 24);
        assert_eq!(size_of::<GnttabSetupTable>(), 24);
        assert_eq!(offset_of!(GnttabSetupTable, frame_list), 16);
        assert_eq!(size_of::<GnttabQuerySize>(), 16);
        assert_eq!(size_of::<GnttabCopy>(), 40);
        assert_eq!(offset_of!(GnttabCopy, dest), 16);
        assert_eq!(offset_of!(GnttabCopy, status), 36);
        assert_eq!(size_of::<GnttabSetVersion>(), 4);
    }

    #[test]
    fn copy_ptr_encodings() {
        let p = GnttabCopyPtr::from_gref(3, 42, 100);
        assert_eq!((p.gref(), p.domid, p.offset), (42, 3, 100));
        let q = GnttabCopyPtr::from_gmfn(crate::xen::DOMID_SELF, 0x1_0000_0002, 0);
        assert_eq!(q.gmfn(), 0x1_0000_0002);
    }
}
