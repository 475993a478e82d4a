//! xenstored: the store, its wire protocol and its ring transport, as portable code.
//!
//! This module owns the xenstore daemon's logic as described by Xen's `docs/misc/xenstore.txt`
//! and `io/xs_wire.h`: a tree of nodes with Xen's permission model ([`perms`]), path rules
//! ([`path`]), watches, optimistic transactions with conflict detection, per-domain quotas and
//! domain introduction/release ([`daemon`]), the message format ([`wire`]) and the framing of
//! messages on a domain's shared ring page ([`ring`]). Nothing here touches hardware: the control
//! domain maps each domain's ring page, hands its bytes and indices to [`Xenstore::service_ring`]
//! and kicks the event channel when that reports progress.
//!
//! Errors are [`XsError`] values; they become the error names of `XS_ERROR` replies only in
//! [`wire`]. Guest-controlled bytes never reach a panic: every malformed request gets an error
//! reply.

pub mod daemon;
pub mod path;
pub mod perms;
pub mod ring;
pub mod wire;

mod ops;
mod store;

#[cfg(test)]
mod tests;

pub use daemon::{Quotas, RingInfo, Xenstore};
pub use perms::{Access, Perm, Perms};
pub use ring::{RingError, RingTransport};

use hypercall_abi::errno::Errno;

/// A domain identifier as xenstore sees it (Xen's `domid_t`).
pub type DomId = hypercall_abi::DomId;

/// Why a xenstore request failed. Each maps to one of the error names in `xs_wire.h`'s table
/// (`XSD_ERRORS`), which is what clients such as Linux's xenbus understand.
///
/// Quota violations follow Xen's C xenstored (the default daemon of Xen 4.17): exceeding the node
/// count, value size, transaction count or permission count gives `ENOSPC`, and the watch count
/// `E2BIG`; oxenstored's non-errno "EQUOTA" is not in the table, so clients could not decode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsError {
    /// Malformed request: bad path, missing NUL, bad number, bad permission string.
    Invalid,
    /// The node's permissions refuse the caller.
    Access,
    /// The thing to create exists already.
    Exists,
    /// No such node, watch, transaction or domain.
    NoEntry,
    /// A quota was exceeded (nodes, value size, transactions, permissions).
    NoSpace,
    /// The transaction conflicted with another change; retry it.
    Again,
    /// A reply or request would exceed the payload limit, or the watch quota was reached.
    TooBig,
    /// The caller may not do this at all (only the owner may change a node's owner).
    Permission,
    /// The request type is not implemented.
    NotSupported,
    /// The transaction id given with `TRANSACTION_START` is in use.
    Busy,
    /// The store's internal consistency check failed.
    Io,
}

impl XsError {
    /// The errno this error is reported as.
    pub const fn errno(self) -> Errno {
        match self {
            XsError::Invalid => Errno::EINVAL,
            XsError::Access => Errno::EACCES,
            XsError::Exists => Errno::EEXIST,
            XsError::NoEntry => Errno::ENOENT,
            XsError::NoSpace => Errno::ENOSPC,
            XsError::Again => Errno::EAGAIN,
            XsError::TooBig => Errno::E2BIG,
            XsError::Permission => Errno::EPERM,
            XsError::NotSupported => Errno::ENOSYS,
            XsError::Busy => Errno::EBUSY,
            XsError::Io => Errno::EIO,
        }
    }

    /// The name sent in an `XS_ERROR` payload, e.g. `"ENOENT"`.
    pub const fn name(self) -> &'static str {
        self.errno().name()
    }
}
