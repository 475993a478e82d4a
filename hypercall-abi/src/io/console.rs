//! The PV console ring page (`struct xencons_interface`): one byte ring in
//! each direction, with free-running indices masked by the ring size.

/// Xen's `XENCONS_RING_IDX`.
pub type XenconsRingIdx = u32;

/// Size of the input (back end to guest) ring.
pub const XENCONS_IN_SIZE: usize = 1024;
/// Size of the output (guest to back end) ring.
pub const XENCONS_OUT_SIZE: usize = 2048;

/// [`XenconsInterface::connection`]: the back end is connected.
pub const XENCONSOLE_CONNECTED: u8 = 0;
/// [`XenconsInterface::connection`]: the back end is disconnected.
pub const XENCONSOLE_DISCONNECTED: u8 = 1;

/// The console ring page, from the guest's point of view.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XenconsInterface {
    /// OUT: bytes for the guest to read.
    pub in_: [u8; XENCONS_IN_SIZE],
    /// IN: bytes the guest writes.
    pub out: [u8; XENCONS_OUT_SIZE],
    /// IN: guest's consumer index into `in_`.
    pub in_cons: XenconsRingIdx,
    /// OUT: back end's producer index into `in_`.
    pub in_prod: XenconsRingIdx,
    /// OUT: back end's consumer index into `out`.
    pub out_cons: XenconsRingIdx,
    /// IN: guest's producer index into `out`.
    pub out_prod: XenconsRingIdx,
    /// OUT: `XENCONSOLE_*` connection state.
    pub connection: u8,
    /// Padding.
    pub pad: [u8; 3],
}
assert_layout!(
    XenconsInterface,
    size = 3092,
    in_ = 0,
    out = 1024,
    in_cons = 3072,
    in_prod = 3076,
    out_cons = 3080,
    out_prod = 3084,
    connection = 3088,
);

impl XenconsInterface {
    /// An empty, connected ring.
    pub const fn new() -> Self {
        Self {
            in_: [0; XENCONS_IN_SIZE],
            out: [0; XENCONS_OUT_SIZE],
            in_cons: 0,
            in_prod: 0,
            out_cons: 0,
            out_prod: 0,
            connection: XENCONSOLE_CONNECTED,
            pad: [0; 3],
        }
    }
}

impl Default for XenconsInterface {
    fn default() -> Self {
        Self::new()
    }
}

/// Index into the input ring for a free-running index.
pub const fn mask_in(idx: XenconsRingIdx) -> usize {
    idx as usize & (XENCONS_IN_SIZE - 1)
}

/// Index into the output ring for a free-running index.
pub const fn mask_out(idx: XenconsRingIdx) -> usize {
    idx as usize & (XENCONS_OUT_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<XenconsInterface>(), 3092);
        assert_eq!(core::mem::offset_of!(XenconsInterface, out), 1024);
        assert_eq!(core::mem::offset_of!(XenconsInterface, out_prod), 3084);
        assert!(core::mem::size_of::<XenconsInterface>() <= crate::PAGE_SIZE);
    }

    #[test]
    fn masks_wrap() {
        assert_eq!(mask_in(1025), 1);
        assert_eq!(mask_out(2048 + 7), 7);
        assert_eq!(mask_out(u32::MAX), 2047);
    }
}
