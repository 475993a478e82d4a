//! Copying to and from guest memory: the one way hv touches anything a guest pointer names.
//!
//! The arch layer implements [`GuestMem`] with a fault-safe copy (a fault becomes
//! [`Fault`], never a crash of hv) after checking the address lies in the guest's part of
//! the address space. Portable code reads and writes ABI structures through [`read_obj`] and
//! [`write_obj`], which only accept [`Pod`] types.

use hypercall_abi::grant_table::{
    GnttabCopy, GnttabGetVersion, GnttabMapGrantRef, GnttabQuerySize, GnttabSetVersion,
    GnttabSetupTable, GnttabUnmapGrantRef,
};
use hypercall_abi::hvm::{HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, XenHvmParam};
use hypercall_abi::xen::{IretContext, MmuUpdate, MmuextOp, MulticallEntry, StartInfo, TrapInfo};

/// A guest address that could not be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault;

/// Access to the current guest's virtual memory.
pub trait GuestMem {
    /// Fills `buf` from guest virtual address `gva`.
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Fault>;
    /// Writes `buf` at guest virtual address `gva`.
    fn write(&mut self, gva: u64, buf: &[u8]) -> Result<(), Fault>;
    /// Makes later accesses see the guest kernel's address space (a PV vCPU entering guest
    /// kernel mode from user mode: its kernel stack is not mapped in the user page tables).
    fn switch_to_kernel(&mut self) {}
}

/// Plain data that may be copied to and from a guest as bytes.
///
/// # Safety
/// The type must be `repr(C)` (or a primitive), contain no padding bytes and no pointers or
/// references, and every bit pattern of its size must be a valid value.
pub unsafe trait Pod: Copy {}

// SAFETY: primitive integers have no padding and every bit pattern is valid.
unsafe impl Pod for u64 {}
// SAFETY: as above.
unsafe impl Pod for u32 {}
// SAFETY: as above.
unsafe impl Pod for u16 {}
// SAFETY: as above.
unsafe impl Pod for u8 {}
// SAFETY: arrays of Pod are Pod.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}
// SAFETY: hypercall-abi spells out all padding as fields and asserts the size; all fields are
// integers.
unsafe impl Pod for TrapInfo {}
// SAFETY: as above (nine u64 fields).
unsafe impl Pod for IretContext {}
// SAFETY: as above (two u64 fields).
unsafe impl Pod for MmuUpdate {}
// SAFETY: as above (integer fields; unions held as raw u64).
unsafe impl Pod for MmuextOp {}
// SAFETY: as above (integer fields).
unsafe impl Pod for MulticallEntry {}
// SAFETY: as above (integer fields). The grant-table ops below likewise: integers, explicit
// padding fields, sizes asserted in hypercall-abi.
unsafe impl Pod for GnttabMapGrantRef {}
// SAFETY: as above.
unsafe impl Pod for GnttabUnmapGrantRef {}
// SAFETY: as above; `frame_list` is a `GuestHandle`, a transparent u64 address.
unsafe impl Pod for GnttabSetupTable {}
// SAFETY: as above; the two ends are `GnttabCopyPtr`s of integer fields and padding.
unsafe impl Pod for GnttabCopy {}
// SAFETY: as above.
unsafe impl Pod for GnttabQuerySize {}
// SAFETY: as above.
unsafe impl Pod for GnttabSetVersion {}
// SAFETY: as above.
unsafe impl Pod for GnttabGetVersion {}

// SAFETY: as above (a u16, explicit padding, a u32 and a u64).
unsafe impl Pod for XenHvmParam {}
// SAFETY: as above (u32 and u64 fields, the trailing reserved u32 explicit; size asserted).
unsafe impl Pod for HvmStartInfo {}
// SAFETY: as above (four u64 fields).
unsafe impl Pod for HvmModlistEntry {}
// SAFETY: as above: integer and byte-array fields, padding spelled out, size asserted; the
// console union's two variants are both 16 bytes of integers and explicit padding.
unsafe impl Pod for StartInfo {}
// SAFETY: as above (two u64, a u32 and an explicit reserved u32).
unsafe impl Pod for HvmMemmapTableEntry {}

/// The guest address of the field at byte `offset` of the object at `base`; a field past
/// the end of the address space cannot be reached.
pub fn field(base: u64, offset: u64) -> Result<u64, Fault> {
    base.checked_add(offset).ok_or(Fault)
}

/// Reads a `T` from guest address `gva`.
pub fn read_obj<T: Pod + Default>(
    mem: &mut (impl GuestMem + ?Sized),
    gva: u64,
) -> Result<T, Fault> {
    let mut value = T::default();
    // SAFETY: `T: Pod` has no padding and accepts any bit pattern, so viewing it as bytes and
    // overwriting them keeps it valid; the slice covers exactly the value.
    let bytes = unsafe {
        core::slice::from_raw_parts_mut(&mut value as *mut T as *mut u8, core::mem::size_of::<T>())
    };
    mem.read(gva, bytes)?;
    Ok(value)
}

/// Writes `value` at guest address `gva`.
pub fn write_obj<T: Pod>(
    mem: &mut (impl GuestMem + ?Sized),
    gva: u64,
    value: &T,
) -> Result<(), Fault> {
    mem.write(gva, bytes_of(value))
}

/// `value`'s bytes, as they lie in memory (and so in a guest: both little endian).
pub fn bytes_of<T: Pod>(value: &T) -> &[u8] {
    // SAFETY: `T: Pod` has no padding, so all its bytes are initialised; the slice covers
    // exactly the value and borrows it.
    unsafe {
        core::slice::from_raw_parts(value as *const T as *const u8, core::mem::size_of::<T>())
    }
}

/// Guest memory for host tests: a flat byte array at a base address.
#[cfg(test)]
pub struct FakeGuestMem {
    /// First guest address.
    pub base: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

#[cfg(test)]
impl FakeGuestMem {
    /// `size` zero bytes at `base`.
    pub fn new(base: u64, size: usize) -> Self {
        Self {
            base,
            bytes: vec![0; size],
        }
    }

    fn range(&self, gva: u64, len: usize) -> Result<core::ops::Range<usize>, Fault> {
        let off = usize::try_from(gva.checked_sub(self.base).ok_or(Fault)?).map_err(|_| Fault)?;
        let end = off.checked_add(len).ok_or(Fault)?;
        if end > self.bytes.len() {
            return Err(Fault);
        }
        Ok(off..end)
    }
}

#[cfg(test)]
impl GuestMem for FakeGuestMem {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let r = self.range(gva, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }

    fn write(&mut self, gva: u64, buf: &[u8]) -> Result<(), Fault> {
        let r = self.range(gva, buf.len())?;
        self.bytes[r].copy_from_slice(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_and_faults_are_reported() {
        let mut m = FakeGuestMem::new(0x1000, 0x100);
        let t = TrapInfo {
            vector: 14,
            flags: 4,
            cs: 0xe033,
            pad0: 0,
            address: 0xdead_beef,
        };
        write_obj(&mut m, 0x1010, &t).unwrap();
        let back: TrapInfo = read_obj(&mut m, 0x1010).unwrap();
        assert_eq!(
            (back.vector, back.flags, back.cs, back.address),
            (14, 4, 0xe033, 0xdead_beef)
        );
        assert_eq!(read_obj::<u64>(&mut m, 0x10fc), Err(Fault));
        assert_eq!(read_obj::<u64>(&mut m, 0xfff), Err(Fault));
        assert_eq!(write_obj(&mut m, u64::MAX - 3, &0u64), Err(Fault));
    }
}
