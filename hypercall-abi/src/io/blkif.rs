//! Block-device ring entries (`blkif`): requests carry up to 11 segments,
//! each a granted page with a sector range.

use super::ring;
use crate::grant_table::GrantRef;

/// Xen's `blkif_vdev_t`: virtual device handle.
pub type BlkifVdev = u16;
/// Xen's `blkif_sector_t`: a 512-byte sector number.
pub type BlkifSector = u64;

abi_enum! {
    /// [`BlkifRequest::operation`] (`BLKIF_OP_*`).
    pub enum BlkifOp: u8 {
        /// Read sectors.
        Read = 0,
        /// Write sectors.
        Write = 1,
        /// Write with a barrier.
        WriteBarrier = 2,
        /// Flush the disk cache.
        FlushDiskcache = 3,
        /// Reserved.
        Reserved1 = 4,
        /// Discard sectors ([`BlkifRequestDiscard`]).
        Discard = 5,
        /// Indirect request ([`BlkifRequestIndirect`]).
        Indirect = 6,
    }
}

/// Segments in a direct request.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// Indirect pages in an indirect request.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// [`BlkifResponse::status`]: operation not supported.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;
/// [`BlkifResponse::status`]: error.
pub const BLKIF_RSP_ERROR: i16 = -1;
/// [`BlkifResponse::status`]: success.
pub const BLKIF_RSP_OKAY: i16 = 0;
/// [`BlkifRequestDiscard::flag`]: secure discard.
pub const BLKIF_DISCARD_SECURE: u8 = 1 << 0;
/// Device info bit: CD-ROM.
pub const VDISK_CDROM: u32 = 0x1;
/// Device info bit: removable.
pub const VDISK_REMOVABLE: u32 = 0x2;
/// Device info bit: read-only.
pub const VDISK_READONLY: u32 = 0x4;

/// One segment of a request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequestSegment {
    /// Grant of the data page.
    pub gref: GrantRef,
    /// First 512-byte sector of the page used.
    pub first_sect: u8,
    /// Last sector used (inclusive).
    pub last_sect: u8,
    /// Padding.
    pub pad: u16,
}
assert_layout!(
    BlkifRequestSegment,
    size = 8,
    gref = 0,
    first_sect = 4,
    last_sect = 5
);

/// A read/write/flush request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequest {
    /// [`BlkifOp`].
    pub operation: u8,
    /// Segments used.
    pub nr_segments: u8,
    /// Virtual device.
    pub handle: BlkifVdev,
    /// Padding.
    pub pad0: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Starting sector.
    pub sector_number: BlkifSector,
    /// Data segments.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}
assert_layout!(
    BlkifRequest,
    size = 112,
    operation = 0,
    nr_segments = 1,
    handle = 2,
    id = 8,
    sector_number = 16,
    seg = 24
);

/// A discard request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequestDiscard {
    /// [`BlkifOp::Discard`].
    pub operation: u8,
    /// `BLKIF_DISCARD_*`.
    pub flag: u8,
    /// Virtual device.
    pub handle: BlkifVdev,
    /// Padding.
    pub pad0: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Starting sector.
    pub sector_number: BlkifSector,
    /// Sectors to discard.
    pub nr_sectors: u64,
}
assert_layout!(
    BlkifRequestDiscard,
    size = 32,
    flag = 1,
    handle = 2,
    id = 8,
    sector_number = 16,
    nr_sectors = 24
);

/// An indirect request: segments are in granted indirect pages.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequestIndirect {
    /// [`BlkifOp::Indirect`].
    pub operation: u8,
    /// The real operation.
    pub indirect_op: u8,
    /// Total segments.
    pub nr_segments: u16,
    /// Padding.
    pub pad0: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Starting sector.
    pub sector_number: BlkifSector,
    /// Virtual device.
    pub handle: BlkifVdev,
    /// Padding.
    pub pad1: u16,
    /// Grants of the pages holding [`BlkifRequestSegment`]s.
    pub indirect_grefs: [GrantRef; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Padding.
    pub pad2: u32,
}
assert_layout!(
    BlkifRequestIndirect,
    size = 64,
    indirect_op = 1,
    nr_segments = 2,
    id = 8,
    sector_number = 16,
    handle = 24,
    indirect_grefs = 28
);

/// A response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifResponse {
    /// The request's `id`.
    pub id: u64,
    /// The request's operation.
    pub operation: u8,
    /// Padding.
    pub pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    /// Padding.
    pub pad1: u32,
}
assert_layout!(BlkifResponse, size = 16, id = 0, operation = 8, status = 10);

/// Entries in a one-page blkif ring (32).
pub const BLKIF_RING_SIZE: usize = ring::page_ring_entries::<BlkifRequest, BlkifResponse>();

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_and_ring_size() {
        assert_eq!(size_of::<BlkifRequest>(), 112);
        assert_eq!(offset_of!(BlkifRequest, seg), 24);
        assert_eq!(size_of::<BlkifResponse>(), 16);
        assert_eq!(offset_of!(BlkifResponse, status), 10);
        assert_eq!(size_of::<BlkifRequestIndirect>(), 64);
        assert_eq!(BLKIF_RING_SIZE, 32);
    }

    #[test]
    fn ops_round_trip() {
        for &op in BlkifOp::ALL {
            assert_eq!(BlkifOp::try_from(u32::from(op.raw())), Ok(op));
        }
        assert!(BlkifOp::try_from(7u32).is_err());
    }
}
