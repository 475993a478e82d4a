//! Network-device ring entries (`netif`): separate transmit and receive
//! rings whose requests name granted packet buffers.

use super::ring;
use crate::grant_table::GrantRef;

/// Transmit flag: checksum is blank (to be filled in).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// Transmit flag: data is validated.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// Transmit flag: more fragments follow.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// Transmit flag: a [`NetifExtraInfo`] follows.
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;
/// Receive flag: data is validated.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// Receive flag: checksum is blank.
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// Receive flag: more fragments follow.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// Receive flag: a [`NetifExtraInfo`] follows.
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// Receive flag: GSO prefix.
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;
/// Largest transmit packet.
pub const XEN_NETIF_MAX_TX_SIZE: u32 = 0xFFFF;
/// Minimum slots a packet may use.
pub const XEN_NETIF_NR_SLOTS_MIN: u32 = 18;

/// Response status: dropped.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// Response status: error.
pub const NETIF_RSP_ERROR: i16 = -1;
/// Response status: okay.
pub const NETIF_RSP_OKAY: i16 = 0;
/// Response status: no response (extra-info slot).
pub const NETIF_RSP_NULL: i16 = 1;

abi_enum! {
    /// [`NetifExtraInfo::type_`] (`XEN_NETIF_EXTRA_TYPE_*`).
    pub enum NetifExtraType: u8 {
        /// None.
        None = 0,
        /// Segmentation offload.
        Gso = 1,
        /// Add a multicast address.
        McastAdd = 2,
        /// Remove a multicast address.
        McastDel = 3,
        /// Hash value.
        Hash = 4,
    }
}

/// [`NetifExtraInfo::flags`]: another extra-info slot follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;

/// A transmit request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifTxRequest {
    /// Grant of the buffer.
    pub gref: GrantRef,
    /// Offset within the page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// Packet size (first slot) or fragment size.
    pub size: u16,
}
assert_layout!(
    NetifTxRequest,
    size = 12,
    gref = 0,
    offset = 4,
    flags = 6,
    id = 8,
    size = 10
);

/// A transmit response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifTxResponse {
    /// The request's id.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}
assert_layout!(NetifTxResponse, size = 4, id = 0, status = 2);

/// A receive request (an empty buffer offered to the back end).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Padding.
    pub pad: u16,
    /// Grant of the buffer.
    pub gref: GrantRef,
}
assert_layout!(NetifRxRequest, size = 8, id = 0, gref = 4);

/// A receive response.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifRxResponse {
    /// The request's id.
    pub id: u16,
    /// Offset of the data within the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Length of data if non-negative, else `NETIF_RSP_*`.
    pub status: i16,
}
assert_layout!(
    NetifRxResponse,
    size = 8,
    id = 0,
    offset = 2,
    flags = 4,
    status = 6
);

/// An extra-info slot (`struct netif_extra_info`); the 6-byte body is kept
/// raw because its meaning depends on `type_`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifExtraInfo {
    /// [`NetifExtraType`].
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// Type-specific body (GSO: size u16, type u8, pad u8, features u16;
    /// multicast: 6-byte address; hash: type u8, algorithm u8, value [u8; 4]).
    pub u: [u16; 3],
}
assert_layout!(NetifExtraInfo, size = 8, type_ = 0, flags = 1, u = 2);

/// Entries in a one-page transmit ring (256).
pub const NET_TX_RING_SIZE: usize = ring::page_ring_entries::<NetifTxRequest, NetifTxResponse>();
/// Entries in a one-page receive ring (256).
pub const NET_RX_RING_SIZE: usize = ring::page_ring_entries::<NetifRxRequest, NetifRxResponse>();

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_and_ring_sizes() {
        assert_eq!(size_of::<NetifTxRequest>(), 12);
        assert_eq!(size_of::<NetifTxResponse>(), 4);
        assert_eq!(size_of::<NetifRxRequest>(), 8);
        assert_eq!(size_of::<NetifRxResponse>(), 8);
        assert_eq!(size_of::<NetifExtraInfo>(), 8);
        assert_eq!(NET_TX_RING_SIZE, 256);
        assert_eq!(NET_RX_RING_SIZE, 256);
    }

    #[test]
    fn extra_types_round_trip() {
        for &t in NetifExtraType::ALL {
            assert_eq!(NetifExtraType::try_from(u32::from(t.raw())), Ok(t));
        }
        assert!(NetifExtraType::try_from(5u32).is_err());
    }
}
