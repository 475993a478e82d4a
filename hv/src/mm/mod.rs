//! Physical memory: the boot memory map, the frame table and the buddy frame allocator.
//!
//! This is the portable core of hv's memory management. It has no `asm!`, touches no hardware
//! and allocates nothing: every structure lives in memory the caller provides, so it runs on
//! bare metal before any heap exists and under `cargo test` on the host.
//!
//! The pieces and the order boot uses them in:
//!
//! 1. [`MemoryMap`] ([`memmap`]): the firmware's E820-style map, normalised (sorted, merged,
//!    non-RAM wins over RAM), with the ranges hv keeps for itself carved out of RAM by
//!    [`MemoryMap::remove`].
//! 2. [`FrameTable`] ([`frame_table`]): one [`PageInfo`] per machine frame from the lowest to
//!    the highest RAM frame, holes included (marked [`Owner::NotRam`]). The caller sizes its
//!    backing memory with [`FrameTable::bytes_needed`] over [`MemoryMap::ram_frame_span`].
//!    Each entry holds the frame's owner, its PV page type and type count, its general
//!    reference count, and the buddy allocator's bookkeeping, so all per-frame state is in one
//!    place, as in Xen's `struct page_info`.
//! 3. [`FrameAllocator`] ([`buddy`]): owns the [`FrameTable`] and keeps doubly linked free
//!    lists per order, threaded through the frame table's entries. RAM enters it through
//!    [`FrameAllocator::add_free_range`]; [`FrameAllocator::alloc`] hands out naturally
//!    aligned blocks of `2^order` frames with an owner; [`FrameAllocator::free`] checks the
//!    block and coalesces it with its buddies. The rest of hv reads the frame table through
//!    [`FrameAllocator::table`] and changes an entry through [`FrameAllocator::frame_mut`],
//!    whose [`FrameMut`] handle only changes counts and owners in checked steps and can never
//!    make a frame free or not RAM, so nothing outside the allocator can break its free lists.
//! 4. [`pv`]: the PV page-type discipline over the frame table: validated page-table and
//!    descriptor types, pins, base pointers, and the `mmu_update` / `mmuext_op` /
//!    `update_va_mapping` / `set_gdt` checks that keep a PV guest inside its own memory.

pub mod buddy;
pub mod frame_table;
pub mod guest_access;
pub mod memmap;
pub mod pv;

pub use buddy::{AddRangeError, AllocError, FrameAllocator, FreeError, MAX_ORDER, NR_ORDERS};
pub use frame_table::{
    FrameError, FrameMut, FrameTable, FrameTableError, Owner, PageInfo, PageType,
};
pub use memmap::{MemoryMap, MemoryMapError, Region, RegionKind, MEMMAP_CAPACITY};

/// log2 of the size of a machine frame.
pub const PAGE_SHIFT: u32 = 12;

/// Size of a machine frame in bytes (4 KiB).
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Bytes in a page, as a length.
pub const PAGE_BYTES: usize = PAGE_SIZE as usize;

/// Width of a physical address on x86_64 (architectural maximum, SDM Vol. 3A 4.1.4).
pub const PADDR_BITS: u32 = 52;

/// One past the highest machine frame number a physical address can name.
pub const MAX_MFN: u64 = 1 << (PADDR_BITS - PAGE_SHIFT);

/// A machine frame number: a physical address divided by [`PAGE_SIZE`].
///
/// Kept distinct from guest frame numbers so one can never be passed where the other is meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mfn(pub u64);

impl Mfn {
    /// The frame that contains physical address `paddr`.
    pub const fn from_paddr(paddr: u64) -> Mfn {
        Mfn(paddr >> PAGE_SHIFT)
    }

    /// The physical address of the frame's first byte.
    ///
    /// Exact for every frame below [`MAX_MFN`], which includes every frame a [`FrameTable`]
    /// covers; bits shifted out above 64 are lost for larger values.
    pub const fn paddr(self) -> u64 {
        self.0 << PAGE_SHIFT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfn_from_paddr_rounds_down_and_paddr_inverts_it() {
        assert_eq!(Mfn::from_paddr(0), Mfn(0));
        assert_eq!(Mfn::from_paddr(0xfff), Mfn(0));
        assert_eq!(Mfn::from_paddr(0x1000), Mfn(1));
        assert_eq!(Mfn::from_paddr(0x12_3456), Mfn(0x123));
        assert_eq!(Mfn(0x123).paddr(), 0x12_3000);
        assert_eq!(Mfn(MAX_MFN - 1).paddr(), (1 << PADDR_BITS) - PAGE_SIZE);
        assert_eq!(Mfn::from_paddr(u64::MAX), Mfn(u64::MAX >> PAGE_SHIFT));
    }
}
