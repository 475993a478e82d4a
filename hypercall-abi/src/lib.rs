//! Xen's x86_64 public guest ABI as Rust types.
//!
//! This crate is to `hv` what `xen/include/public/` is to Xen: every hypercall
//! number, argument structure, shared page and I/O ring layout a guest may
//! rely on. The types are written from the documented semantics of Xen's
//! public headers; each `#[repr(C)]` type carries compile-time size and offset
//! assertions so a layout mistake fails the build instead of a guest.
//!
//! Conventions used throughout:
//! - "IN" and "OUT" in field documentation are from the guest's point of
//!   view: IN is written by the guest and read by the hypervisor, OUT is
//!   written by the hypervisor for the guest to read.
//! - Every set of numbers is an enum whose `TryFrom<u64>`/`TryFrom<u32>`
//!   returns [`UnknownValue`] for a number outside the set, never a panic.
//! - Guest pointers embedded in structures are [`GuestHandle`]s: 64-bit guest
//!   virtual addresses that this crate never dereferences.
//! - Padding that C leaves implicit is spelled out as `pad*` fields so that a
//!   structure can be copied to a guest as plain bytes without leaking
//!   uninitialised memory. Padding fields must be zero.
#![cfg_attr(not(test), no_std)]

#[macro_use]
mod macros;

#[cfg(target_arch = "x86_64")]
pub mod call;
pub mod callback;
pub mod domctl;
pub mod elfnote;
pub mod errno;
pub mod event_channel;
pub mod grant_table;
pub mod hvm;
pub mod io;
pub mod memory;
pub mod physdev;
pub mod sched;
pub mod sysctl;
pub mod vcpu;
pub mod xen;

use core::fmt;
use core::marker::PhantomData;

/// A number that is not a member of the ABI number set it was decoded as.
///
/// Returned by every `TryFrom` conversion in this crate; `type_name` names
/// the enum that rejected `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnknownValue {
    /// The Rust name of the number set, e.g. `"Hypercall"`.
    pub type_name: &'static str,
    /// The rejected number, widened (sign-extended for signed sets) to 64 bits.
    pub value: u64,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} value {:#x}", self.type_name, self.value)
    }
}

/// Xen's `domid_t`: a domain identifier (values from [`xen::DOMID_FIRST_RESERVED`]
/// up are reserved names such as [`xen::DOMID_SELF`]).
pub type DomId = u16;

/// Xen's `xen_pfn_t` on x86_64: a frame number (machine or guest, depending on
/// the field that holds it).
pub type XenPfn = u64;

/// Xen's `xen_ulong_t` on x86_64.
pub type XenUlong = u64;

/// Size of a page on x86, in bytes.
pub const PAGE_SIZE: usize = 4096;

/// Xen's `XEN_GUEST_HANDLE(T)`: a guest virtual address of a `T` (or of an
/// array of `T`), 64 bits wide on x86_64.
///
/// The hypervisor must copy through its fault-safe guest-access path; this
/// type deliberately offers no way to dereference the address.
#[repr(transparent)]
pub struct GuestHandle<T> {
    addr: u64,
    // `fn() -> T` keeps the handle `Send`/`Sync`/`Copy` whatever `T` is: it
    // names a guest address, it does not own a `T`.
    _marker: PhantomData<fn() -> T>,
}

impl<T> GuestHandle<T> {
    /// The null handle (address 0), which many operations treat as "absent".
    pub const NULL: Self = Self::new(0);

    /// A handle naming the guest virtual address `addr`.
    pub const fn new(addr: u64) -> Self {
        Self {
            addr,
            _marker: PhantomData,
        }
    }

    /// A handle naming the object `ptr` points to, for guest code whose own
    /// addresses are the guest virtual addresses the hypervisor sees.
    pub fn from_ptr(ptr: *const T) -> Self {
        Self::new(ptr as usize as u64)
    }

    /// The guest virtual address.
    pub const fn addr(self) -> u64 {
        self.addr
    }

    /// Whether this is the null handle.
    pub const fn is_null(self) -> bool {
        self.addr == 0
    }

    /// The address of element `index` of the guest array this handle names,
    /// or `None` if the computation overflows.
    pub const fn element_addr(self, index: u64) -> Option<u64> {
        match index.checked_mul(core::mem::size_of::<T>() as u64) {
            Some(off) => self.addr.checked_add(off),
            None => None,
        }
    }

    /// The same address seen as a handle to another type.
    pub const fn cast<U>(self) -> GuestHandle<U> {
        GuestHandle::new(self.addr)
    }
}

impl<T> Clone for GuestHandle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for GuestHandle<T> {}

impl<T> PartialEq for GuestHandle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}

impl<T> Eq for GuestHandle<T> {}

impl<T> Default for GuestHandle<T> {
    fn default() -> Self {
        Self::NULL
    }
}

impl<T> fmt::Debug for GuestHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestHandle({:#x})", self.addr)
    }
}

const _: () = assert!(core::mem::size_of::<GuestHandle<u64>>() == 8);
const _: () = assert!(core::mem::align_of::<GuestHandle<u8>>() == 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_handle_is_a_plain_u64() {
        assert_eq!(core::mem::size_of::<GuestHandle<[u8; 4096]>>(), 8);
        let h = GuestHandle::<u32>::new(0x1000);
        assert_eq!(h.addr(), 0x1000);
        assert!(!h.is_null());
        assert!(GuestHandle::<u32>::NULL.is_null());
        assert_eq!(GuestHandle::<u32>::default(), GuestHandle::NULL);
        assert_eq!(h.cast::<u8>().addr(), 0x1000);
    }

    #[test]
    fn guest_handle_element_addresses_check_overflow() {
        let h = GuestHandle::<u64>::new(0x1000);
        assert_eq!(h.element_addr(3), Some(0x1018));
        assert_eq!(h.element_addr(u64::MAX), None);
        assert_eq!(GuestHandle::<u64>::new(u64::MAX - 7).element_addr(1), None);
    }

    #[test]
    fn unknown_value_displays_the_set_and_number() {
        let e = UnknownValue {
            type_name: "Hypercall",
            value: 99,
        };
        assert_eq!(format!("{e}"), "unknown Hypercall value 0x63");
    }
}
