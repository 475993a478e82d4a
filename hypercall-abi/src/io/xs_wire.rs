//! The xenstore wire protocol: message header, message types, error names
//! and the shared ring page between a domain and xenstored.

use crate::errno::Errno;

abi_enum! {
    /// [`XsdSockmsg::type_`] (`XS_*`).
    pub enum XsType: u32 {
        /// Control / debug command.
        Control = 0,
        /// List the children of a node.
        Directory = 1,
        /// Read a node.
        Read = 2,
        /// Read a node's permissions.
        GetPerms = 3,
        /// Register a watch (path, token).
        Watch = 4,
        /// Remove a watch.
        Unwatch = 5,
        /// Start a transaction.
        TransactionStart = 6,
        /// End a transaction ("T" commit / "F" abort).
        TransactionEnd = 7,
        /// Introduce a new domain to xenstored.
        Introduce = 8,
        /// Release a domain.
        Release = 9,
        /// Home path of a domain.
        GetDomainPath = 10,
        /// Write a node.
        Write = 11,
        /// Create a node.
        Mkdir = 12,
        /// Remove a node.
        Rm = 13,
        /// Set a node's permissions.
        SetPerms = 14,
        /// Watch fired (xenstored to client; path, token).
        WatchEvent = 15,
        /// Error reply; the payload is an error name such as "EINVAL".
        Error = 16,
        /// Whether a domain has been introduced.
        IsDomainIntroduced = 17,
        /// Resume a domain.
        Resume = 18,
        /// Set a domain's target.
        SetTarget = 19,
        /// Remove all of the caller's watches.
        ResetWatches = 21,
        /// Paged directory listing.
        DirectoryPart = 22,
        /// Read feature flags.
        GetFeature = 23,
        /// Set feature flags.
        SetFeature = 24,
        /// Read a quota.
        GetQuota = 25,
        /// Set a quota.
        SetQuota = 26,
        /// Invalid message type marker.
        Invalid = 0xffff,
    }
}

/// Number of defined message-type slots (one past the last real type).
pub const XS_TYPE_COUNT: u32 = 27;

/// Header of every xenstore message (`struct xsd_sockmsg`); `len` payload
/// bytes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XsdSockmsg {
    /// [`XsType`].
    pub type_: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    /// Payload length, at most [`XENSTORE_PAYLOAD_MAX`].
    pub len: u32,
}
assert_layout!(
    XsdSockmsg,
    size = 16,
    type_ = 0,
    req_id = 4,
    tx_id = 8,
    len = 12
);

abi_enum! {
    /// Index of the fields in an `XS_WATCH_EVENT` payload.
    pub enum XsWatchType: u32 {
        /// The path that changed.
        Path = 0,
        /// The token given at registration.
        Token = 1,
    }
}

/// Size of each of the request and response rings.
pub const XENSTORE_RING_SIZE: usize = 1024;
/// Largest message payload.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// Longest absolute path.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Longest relative path.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;

/// Xen's `XENSTORE_RING_IDX`.
pub type XenstoreRingIdx = u32;

/// Index into a ring for a free-running index.
pub const fn mask_xenstore_idx(idx: XenstoreRingIdx) -> usize {
    idx as usize & (XENSTORE_RING_SIZE - 1)
}

/// `server_features`: the server supports reconnection.
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `server_features`: the server reports errors in `error`.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// `server_features`: watch depth is supported.
pub const XENSTORE_SERVER_FEATURE_WATCHDEPTH: u32 = 4;
/// `server_features`: `DOMID_ANY` may be used for new domains.
pub const XENSTORE_SERVER_FEATURE_DOMID_ANY: u32 = 8;
/// `connection`: connected.
pub const XENSTORE_CONNECTED: u32 = 0;
/// `connection`: the guest asks for a reconnect.
pub const XENSTORE_RECONNECT: u32 = 1;
/// `error`: none.
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `error`: communication problem.
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `error`: invalid ring index.
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `error`: protocol violation.
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// The xenstore ring page (`struct xenstore_domain_interface`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XenstoreDomainInterface {
    /// IN: requests from the guest.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// OUT: replies and watch events to the guest.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// OUT: server's consumer index into `req`.
    pub req_cons: XenstoreRingIdx,
    /// IN: guest's producer index into `req`.
    pub req_prod: XenstoreRingIdx,
    /// IN: guest's consumer index into `rsp`.
    pub rsp_cons: XenstoreRingIdx,
    /// OUT: server's producer index into `rsp`.
    pub rsp_prod: XenstoreRingIdx,
    /// OUT: `XENSTORE_SERVER_FEATURE_*`.
    pub server_features: u32,
    /// IN/OUT: `XENSTORE_CONNECTED` / `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// OUT: `XENSTORE_ERROR_*`.
    pub error: u32,
    /// OUT: event channel of the ring.
    pub evtchn_port: u32,
}
assert_layout!(
    XenstoreDomainInterface,
    size = 2080,
    req = 0,
    rsp = 1024,
    req_cons = 2048,
    req_prod = 2052,
    rsp_cons = 2056,
    rsp_prod = 2060,
    server_features = 2064,
    connection = 2068,
    error = 2072,
    evtchn_port = 2076,
);

impl XenstoreDomainInterface {
    /// Empty rings, connected, no features.
    pub const fn new() -> Self {
        Self {
            req: [0; XENSTORE_RING_SIZE],
            rsp: [0; XENSTORE_RING_SIZE],
            req_cons: 0,
            req_prod: 0,
            rsp_cons: 0,
            rsp_prod: 0,
            server_features: 0,
            connection: XENSTORE_CONNECTED,
            error: XENSTORE_ERROR_NONE,
            evtchn_port: 0,
        }
    }
}

impl Default for XenstoreDomainInterface {
    fn default() -> Self {
        Self::new()
    }
}

/// The errors xenstored reports, by the names sent in `XS_ERROR` payloads.
pub const XSD_ERRORS: [Errno; 16] = [
    Errno::EINVAL,
    Errno::EACCES,
    Errno::EEXIST,
    Errno::EISDIR,
    Errno::ENOENT,
    Errno::ENOMEM,
    Errno::ENOSPC,
    Errno::EIO,
    Errno::ENOTEMPTY,
    Errno::ENOSYS,
    Errno::EROFS,
    Errno::EBUSY,
    Errno::EAGAIN,
    Errno::EISCONN,
    Errno::E2BIG,
    Errno::EPERM,
];

/// The `XS_ERROR` payload string (without NUL) for `errno`, if xenstored
/// may send it.
pub fn xsd_error_name(errno: Errno) -> Option<&'static str> {
    XSD_ERRORS.contains(&errno).then(|| errno.name())
}

/// The error named by an `XS_ERROR` payload (trailing NUL allowed).
pub fn xsd_error_from_payload(payload: &[u8]) -> Option<Errno> {
    let name = payload.strip_suffix(&[0]).unwrap_or(payload);
    XSD_ERRORS
        .iter()
        .copied()
        .find(|e| e.name().as_bytes() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn message_types_round_trip_and_reject() {
        for &t in XsType::ALL {
            assert_eq!(XsType::try_from(t.raw()), Ok(t));
        }
        assert_eq!(XsType::Write.raw(), 11);
        assert_eq!(XsType::Error.raw(), 16);
        assert_eq!(XsType::ResetWatches.raw(), 21);
        assert_eq!(XsType::SetQuota.raw() + 1, XS_TYPE_COUNT);
        assert!(XsType::try_from(20u32).is_err());
        assert!(XsType::try_from(XS_TYPE_COUNT).is_err());
        assert!(XsWatchType::try_from(2u32).is_err());
    }

    #[test]
    fn layouts() {
        assert_eq!(size_of::<XsdSockmsg>(), 16);
        assert_eq!(offset_of!(XsdSockmsg, len), 12);
        assert_eq!(size_of::<XenstoreDomainInterface>(), 2080);
        assert_eq!(offset_of!(XenstoreDomainInterface, rsp), 1024);
        assert_eq!(offset_of!(XenstoreDomainInterface, req_cons), 2048);
        assert_eq!(offset_of!(XenstoreDomainInterface, evtchn_port), 2076);
        assert_eq!(mask_xenstore_idx(1024 + 5), 5);
    }

    #[test]
    fn error_names() {
        assert_eq!(xsd_error_name(Errno::ENOENT), Some("ENOENT"));
        assert_eq!(xsd_error_name(Errno::EFAULT), None);
        assert_eq!(xsd_error_from_payload(b"EACCES\0"), Some(Errno::EACCES));
        assert_eq!(xsd_error_from_payload(b"E2BIG"), Some(Errno::E2BIG));
        assert_eq!(xsd_error_from_payload(b"EFAULT"), None);
        assert_eq!(xsd_error_from_payload(b""), None);
    }
}
