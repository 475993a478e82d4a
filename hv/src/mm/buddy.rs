//! The buddy frame allocator, keeping its state in the frame table as Xen's heap allocator does.
//!
//! Free memory is a set of naturally aligned blocks of `2^order` frames, `order` in
//! `0..=MAX_ORDER`. Each order has a doubly linked free list threaded through the
//! [`PageInfo`] entries of the blocks' first frames (links are frame-table indices), so a block
//! can be unlinked in O(1) when its buddy (the block it pairs with to make the next order up)
//! is freed. Free blocks are always fully coalesced: a block's buddy is never a free block of
//! the same order. Finding and splitting a block on `alloc`, and coalescing on `free`, take
//! O(`MAX_ORDER`) list operations; setting or checking the per-frame entries of the block
//! itself is linear in its size, as every frame has its own entry.

use super::frame_table::{FrameMut, FrameTable, Owner, PageInfo, NO_FRAME};
use super::Mfn;

/// The largest block order: 2^18 frames, 1 GiB.
pub const MAX_ORDER: u32 = 18;

/// How many orders there are (`0..=MAX_ORDER`).
pub const NR_ORDERS: usize = MAX_ORDER as usize + 1;

/// Why [`FrameAllocator::add_free_range`] refused a range. Nothing was added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddRangeError {
    /// The range ends before it starts.
    InvalidRange,
    /// The range reaches outside the frame table.
    OutOfRange,
    /// A frame in the range was already added.
    AlreadyRam(Mfn),
}

/// Why [`FrameAllocator::alloc`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The order is above [`MAX_ORDER`].
    InvalidOrder,
    /// Frames can only be allocated to [`Owner::Hypervisor`] or an [`Owner::Domain`].
    InvalidOwner,
    /// No free block of that order or larger.
    OutOfMemory,
}

/// Why [`FrameAllocator::free`] refused a block. Nothing was freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The order is above [`MAX_ORDER`].
    InvalidOrder,
    /// The frame number is not a multiple of `2^order`.
    Misaligned,
    /// The block reaches outside the frame table.
    OutOfRange,
    /// A frame in the block is not RAM.
    NotRam(Mfn),
    /// A frame in the block is already free.
    DoubleFree(Mfn),
    /// A frame in the block still holds references or a type.
    InUse(Mfn),
    /// The block's frames do not all have one owner, so it is not one allocation.
    MixedOwners(Mfn),
}

/// The buddy allocator over the frames of the [`FrameTable`] it owns.
pub struct FrameAllocator<'a> {
    table: FrameTable<'a>,
    /// Frame-table index of each order's first free block, [`NO_FRAME`] if none.
    free_lists: [u32; NR_ORDERS],
    /// How many free blocks each order has.
    free_blocks: [u64; NR_ORDERS],
    free_frames: u64,
}

impl<'a> FrameAllocator<'a> {
    /// An allocator over `table` with no free memory yet: add RAM with
    /// [`add_free_range`](Self::add_free_range).
    pub fn new(table: FrameTable<'a>) -> Self {
        FrameAllocator {
            table,
            free_lists: [NO_FRAME; NR_ORDERS],
            free_blocks: [0; NR_ORDERS],
            free_frames: 0,
        }
    }

    /// The frame table, to read frames' owners, types and counts.
    pub fn table(&self) -> &FrameTable<'a> {
        &self.table
    }

    /// The entry of `mfn` opened to change its counts or owner, or `None` outside the table.
    ///
    /// The table itself is not handed out mutably: replacing it would orphan the free lists.
    pub fn frame_mut(&mut self, mfn: Mfn) -> Option<FrameMut<'_>> {
        self.table.get_mut(mfn)
    }

    /// How many frames are free.
    pub fn free_frames(&self) -> u64 {
        self.free_frames
    }

    /// How many free blocks each order has, indexed by order.
    pub fn free_blocks(&self) -> [u64; NR_ORDERS] {
        self.free_blocks
    }

    /// Records the RAM frames `[start, end)` as hv's own (its image and what boot took before
    /// the allocator existed): they are RAM owned by [`Owner::Hypervisor`], never free, so a
    /// guest naming one is told it belongs to someone else rather than that it is not RAM.
    /// Frames outside the table are skipped; frames already RAM are an error.
    pub fn reserve_for_hypervisor(&mut self, start: Mfn, end: Mfn) -> Result<u64, AddRangeError> {
        if start > end {
            return Err(AddRangeError::InvalidRange);
        }
        let start = start.max(self.table.base_mfn());
        let end = end.min(self.table.end_mfn());
        if start >= end {
            return Ok(0);
        }
        let (first, last) = (self.index(start), self.index(Mfn(end.0 - 1)));
        let frames = &mut self.table.entries_mut()[first..=last];
        if let Some(i) = frames.iter().position(PageInfo::is_ram) {
            return Err(AddRangeError::AlreadyRam(Mfn(start.0 + i as u64)));
        }
        frames
            .iter_mut()
            .for_each(|f| f.make_allocated(Owner::Hypervisor));
        Ok(end.0 - start.0)
    }

    /// Adds the RAM frames `[start, end)` as free memory: each frame becomes [`Owner::Free`]
    /// and the range is cut into the largest naturally aligned blocks, which coalesce with
    /// free neighbours added before. Returns how many frames were added.
    pub fn add_free_range(&mut self, start: Mfn, end: Mfn) -> Result<u64, AddRangeError> {
        if start > end {
            return Err(AddRangeError::InvalidRange);
        }
        if start == end {
            return Ok(0);
        }
        if start < self.table.base_mfn() || end > self.table.end_mfn() {
            return Err(AddRangeError::OutOfRange);
        }
        let (first, last) = (self.index(start), self.index(Mfn(end.0 - 1)));
        let frames = &mut self.table.entries_mut()[first..=last];
        if let Some(i) = frames.iter().position(PageInfo::is_ram) {
            return Err(AddRangeError::AlreadyRam(Mfn(start.0 + i as u64)));
        }
        frames.iter_mut().for_each(PageInfo::make_free);

        let mut mfn = start.0;
        while mfn < end.0 {
            let align_order = mfn.trailing_zeros();
            let fit_order = (end.0 - mfn).ilog2();
            let order = align_order.min(fit_order).min(MAX_ORDER);
            self.release_block(Mfn(mfn), order);
            mfn += 1 << order;
        }
        let added = end.0 - start.0;
        self.free_frames += added;
        Ok(added)
    }

    /// Allocates a naturally aligned block of `2^order` frames to `owner`; the frames come
    /// with no type and no references. Takes the smallest free block that fits, splitting it.
    pub fn alloc(&mut self, order: u32, owner: Owner) -> Result<Mfn, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::InvalidOrder);
        }
        if !owner.is_allocated() {
            return Err(AllocError::InvalidOwner);
        }
        let found = (order..=MAX_ORDER)
            .find(|&o| self.free_lists[o as usize] != NO_FRAME)
            .ok_or(AllocError::OutOfMemory)?;
        let head = self.free_lists[found as usize];
        self.unlink(head, found);
        // Give back the upper halves until the block is the size asked for.
        for split_order in (order..found).rev() {
            self.push(head + (1 << split_order), split_order);
        }
        let first = head as usize;
        self.table.entries_mut()[first..first + (1 << order)]
            .iter_mut()
            .for_each(|frame| frame.make_allocated(owner));
        self.free_frames -= 1 << order;
        Ok(self.table.mfn_of(head))
    }

    /// Frees the block of `2^order` frames at `mfn` and coalesces it with its buddies.
    ///
    /// The block must be naturally aligned, inside the table, and every frame allocated to one
    /// owner with no type and no references left; otherwise nothing changes and the first
    /// offending frame is named in the error.
    pub fn free(&mut self, mfn: Mfn, order: u32) -> Result<(), FreeError> {
        if order > MAX_ORDER {
            return Err(FreeError::InvalidOrder);
        }
        if mfn.0 & ((1 << order) - 1) != 0 {
            return Err(FreeError::Misaligned);
        }
        let in_table = |m: Mfn| m >= self.table.base_mfn() && m < self.table.end_mfn();
        let last = Mfn(mfn.0.saturating_add((1 << order) - 1));
        if !in_table(mfn) || !in_table(last) {
            return Err(FreeError::OutOfRange);
        }
        let first = self.index(mfn);
        let frames = &mut self.table.entries_mut()[first..first + (1 << order)];
        let owner = frames[0].owner();
        for (i, frame) in frames.iter().enumerate() {
            let this = Mfn(mfn.0 + i as u64);
            match frame.owner() {
                Owner::NotRam => return Err(FreeError::NotRam(this)),
                Owner::Free => return Err(FreeError::DoubleFree(this)),
                other if other != owner => return Err(FreeError::MixedOwners(this)),
                _ if frame.ref_count() != 0 || frame.type_count() != 0 => {
                    return Err(FreeError::InUse(this))
                }
                _ => {}
            }
        }
        frames.iter_mut().for_each(PageInfo::make_free);
        self.free_frames += 1 << order;
        self.release_block(mfn, order);
        Ok(())
    }

    /// The frame-table index of a frame the caller has checked is in the table.
    fn index(&self, mfn: Mfn) -> usize {
        (mfn.0 - self.table.base_mfn().0) as usize
    }

    /// Puts the free block at `mfn` on the free lists, merging it with its buddy for as long
    /// as the buddy is a free block of the same order.
    fn release_block(&mut self, mfn: Mfn, order: u32) {
        let (mut mfn, mut order) = (mfn.0, order);
        while order < MAX_ORDER {
            let Some(buddy) = self.table.index_of(Mfn(mfn ^ (1 << order))) else {
                break;
            };
            let entry = &self.table.entries()[buddy as usize];
            if !entry.free_head || u32::from(entry.free_order) != order {
                break;
            }
            self.unlink(buddy, order);
            mfn &= !(1 << order);
            order += 1;
        }
        // The merged block starts at the lower of two blocks inside the table.
        let head = self.index(Mfn(mfn)) as u32;
        self.push(head, order);
    }

    /// Puts the block whose first frame is at `index` at the front of `order`'s free list.
    fn push(&mut self, index: u32, order: u32) {
        let list = &mut self.free_lists[order as usize];
        let next = *list;
        *list = index;
        self.free_blocks[order as usize] += 1;
        let entries = self.table.entries_mut();
        let head = &mut entries[index as usize];
        head.free_head = true;
        head.free_order = order as u8;
        head.prev = NO_FRAME;
        head.next = next;
        if next != NO_FRAME {
            entries[next as usize].prev = index;
        }
    }

    /// Takes the block whose first frame is at `index` off `order`'s free list.
    fn unlink(&mut self, index: u32, order: u32) {
        let entries = self.table.entries_mut();
        let head = &mut entries[index as usize];
        let (prev, next) = (head.prev, head.next);
        head.free_head = false;
        head.prev = NO_FRAME;
        head.next = NO_FRAME;
        if next != NO_FRAME {
            entries[next as usize].prev = prev;
        }
        if prev != NO_FRAME {
            entries[prev as usize].next = next;
        } else {
            self.free_lists[order as usize] = next;
        }
        self.free_blocks[order as usize] -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::PageType;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Every free block as (first frame, order), in address order, after checking that the
    /// lists, the per-order counts, the free count and the frame entries agree.
    fn free_blocks_checked(alloc: &FrameAllocator) -> Vec<(u64, u32)> {
        let entries = alloc.table.entries();
        let mut blocks = Vec::new();
        let mut in_block = vec![false; entries.len()];
        for order in 0..=MAX_ORDER {
            let mut prev = NO_FRAME;
            let mut index = alloc.free_lists[order as usize];
            let mut count = 0;
            while index != NO_FRAME {
                let head = &entries[index as usize];
                assert!(head.free_head, "list {order} holds a non-head at {index}");
                assert_eq!(u32::from(head.free_order), order);
                assert_eq!(head.prev, prev, "broken back link at {index}");
                let mfn = alloc.table.mfn_of(index).0;
                assert_eq!(mfn % (1 << order), 0, "misaligned block {mfn:#x}/{order}");
                for i in index as usize..index as usize + (1 << order) {
                    assert_eq!(entries[i].owner(), Owner::Free);
                    assert!(!in_block[i], "frame index {i} in two free blocks");
                    in_block[i] = true;
                }
                blocks.push((mfn, order));
                count += 1;
                prev = index;
                index = head.next;
            }
            assert_eq!(alloc.free_blocks()[order as usize], count);
        }
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.owner() == Owner::Free,
                in_block[i],
                "free frame index {i} lost"
            );
        }
        assert_eq!(
            entries.iter().filter(|e| e.free_head).count(),
            blocks.len(),
            "stray head"
        );
        let frames: u64 = blocks.iter().map(|&(_, order)| 1u64 << order).sum();
        assert_eq!(alloc.free_frames(), frames);
        blocks.sort_unstable();
        blocks
    }

    /// The largest naturally aligned blocks (up to MAX_ORDER) that tile the frames of `ram`,
    /// merging ranges that touch: what a fully coalesced buddy allocator holds when all of
    /// `ram` is free.
    fn maximal_blocks(ram: &[(u64, u64)]) -> Vec<(u64, u32)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &(start, end) in ram {
            match runs.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => runs.push((start, end)),
            }
        }
        let mut blocks = Vec::new();
        for (mut mfn, end) in runs {
            while mfn < end {
                let order = (0..=MAX_ORDER)
                    .rev()
                    .find(|&o| mfn % (1 << o) == 0 && mfn + (1 << o) <= end)
                    .unwrap();
                blocks.push((mfn, order));
                mfn += 1 << order;
            }
        }
        blocks
    }

    fn with_allocator<R>(base: u64, len: usize, f: impl FnOnce(&mut FrameAllocator) -> R) -> R {
        let mut frames = vec![PageInfo::NOT_RAM; len];
        let table = FrameTable::new(&mut frames, Mfn(base)).unwrap();
        f(&mut FrameAllocator::new(table))
    }

    #[test]
    fn hypervisor_reservations_are_ram_but_never_free() {
        let mut meta = vec![PageInfo::NOT_RAM; 64];
        let table = FrameTable::new(&mut meta, Mfn(0x100)).unwrap();
        let mut a = FrameAllocator::new(table);
        a.add_free_range(Mfn(0x100), Mfn(0x120)).unwrap();
        assert_eq!(
            a.reserve_for_hypervisor(Mfn(0x120), Mfn(0x200)),
            Ok(0x20),
            "clipped to the table"
        );
        assert_eq!(
            a.table().get(Mfn(0x130)).unwrap().owner(),
            Owner::Hypervisor
        );
        assert_eq!(a.free_frames(), 0x20);
        assert!(matches!(
            a.reserve_for_hypervisor(Mfn(0x110), Mfn(0x111)),
            Err(AddRangeError::AlreadyRam(_))
        ));
        assert!(a.table().get(Mfn(0x130)).unwrap().is_ram());
        assert_eq!(
            a.alloc(5, Owner::Domain(1)).ok(),
            Some(Mfn(0x100)),
            "only the free range is handed out"
        );
        assert_eq!(a.alloc(0, Owner::Domain(1)), Err(AllocError::OutOfMemory));
    }

    #[test]
    fn new_allocator_has_no_free_memory() {
        with_allocator(0, 16, |alloc| {
            assert_eq!(alloc.free_frames(), 0);
            assert_eq!(alloc.free_blocks(), [0; NR_ORDERS]);
            assert_eq!(
                alloc.alloc(0, Owner::Hypervisor),
                Err(AllocError::OutOfMemory)
            );
            assert_eq!(alloc.table().len(), 16);
        });
    }

    #[test]
    fn add_free_range_cuts_maximal_aligned_blocks() {
        with_allocator(0, 64, |alloc| {
            assert_eq!(alloc.add_free_range(Mfn(3), Mfn(37)), Ok(34));
            assert_eq!(
                free_blocks_checked(alloc),
                [(3, 0), (4, 2), (8, 3), (16, 4), (32, 2), (36, 0)]
            );
            assert_eq!(alloc.free_frames(), 34);
            assert_eq!(alloc.free_blocks()[..5], [2, 0, 2, 1, 1]);
            assert_eq!(alloc.table().get(Mfn(2)).unwrap().owner(), Owner::NotRam);
            assert_eq!(alloc.table().get(Mfn(3)).unwrap().owner(), Owner::Free);
            assert_eq!(alloc.table().get(Mfn(37)).unwrap().owner(), Owner::NotRam);
        });
    }

    #[test]
    fn add_free_range_coalesces_with_ranges_added_before() {
        with_allocator(0, 16, |alloc| {
            alloc.add_free_range(Mfn(0), Mfn(5)).unwrap();
            alloc.add_free_range(Mfn(8), Mfn(16)).unwrap();
            alloc.add_free_range(Mfn(5), Mfn(8)).unwrap();
            assert_eq!(free_blocks_checked(alloc), [(0, 4)]);
        });
    }

    #[test]
    fn add_free_range_caps_blocks_at_max_order() {
        let len = 3 << MAX_ORDER;
        with_allocator(0, len, |alloc| {
            alloc.add_free_range(Mfn(0), Mfn(len as u64)).unwrap();
            assert_eq!(
                free_blocks_checked(alloc),
                [
                    (0, MAX_ORDER),
                    (1 << MAX_ORDER, MAX_ORDER),
                    (2 << MAX_ORDER, MAX_ORDER)
                ]
            );
            let mfn = alloc.alloc(MAX_ORDER, Owner::Hypervisor).unwrap();
            assert_eq!(mfn.0 % (1 << MAX_ORDER), 0);
            assert_eq!(alloc.free_frames(), 2 << MAX_ORDER);
            // Two halves of a split max-order block coalesce back into it.
            alloc
                .free(Mfn(mfn.0 + (1 << (MAX_ORDER - 1))), MAX_ORDER - 1)
                .unwrap();
            alloc.free(mfn, MAX_ORDER - 1).unwrap();
            assert_eq!(alloc.free_blocks()[MAX_ORDER as usize], 3);
            assert_eq!(alloc.free_blocks()[MAX_ORDER as usize - 1], 0);
            assert_eq!(
                alloc.alloc(MAX_ORDER + 1, Owner::Hypervisor),
                Err(AllocError::InvalidOrder)
            );
        });
    }

    #[test]
    fn add_free_range_refuses_bad_ranges_and_changes_nothing() {
        with_allocator(0x100, 16, |alloc| {
            alloc.add_free_range(Mfn(0x104), Mfn(0x108)).unwrap();
            let before = free_blocks_checked(alloc);
            assert_eq!(
                alloc.add_free_range(Mfn(0x10a), Mfn(0x109)),
                Err(AddRangeError::InvalidRange)
            );
            assert_eq!(
                alloc.add_free_range(Mfn(0xff), Mfn(0x102)),
                Err(AddRangeError::OutOfRange)
            );
            assert_eq!(
                alloc.add_free_range(Mfn(0x10f), Mfn(0x111)),
                Err(AddRangeError::OutOfRange)
            );
            assert_eq!(
                alloc.add_free_range(Mfn(0x100), Mfn(0x105)),
                Err(AddRangeError::AlreadyRam(Mfn(0x104)))
            );
            assert_eq!(alloc.add_free_range(Mfn(0x102), Mfn(0x102)), Ok(0));
            assert_eq!(free_blocks_checked(alloc), before);
            assert_eq!(
                alloc.table().get(Mfn(0x100)).unwrap().owner(),
                Owner::NotRam
            );
        });
    }

    #[test]
    fn alloc_splits_the_smallest_fitting_block() {
        with_allocator(0, 32, |alloc| {
            alloc.add_free_range(Mfn(0), Mfn(16)).unwrap();
            alloc.add_free_range(Mfn(20), Mfn(22)).unwrap();
            // The order-1 block at 20 fits an order-0 request better than the order-4 block.
            assert_eq!(alloc.alloc(0, Owner::Domain(1)), Ok(Mfn(20)));
            assert_eq!(free_blocks_checked(alloc), [(0, 4), (21, 0)]);
            assert_eq!(alloc.alloc(0, Owner::Domain(1)), Ok(Mfn(21)));
            assert_eq!(alloc.alloc(0, Owner::Domain(1)), Ok(Mfn(0)));
            assert_eq!(free_blocks_checked(alloc), [(1, 0), (2, 1), (4, 2), (8, 3)]);
            assert_eq!(alloc.free_frames(), 15);
        });
    }

    #[test]
    fn alloc_hands_out_aligned_blocks_owned_by_the_caller() {
        with_allocator(0x101, 40, |alloc| {
            alloc.add_free_range(Mfn(0x101), Mfn(0x129)).unwrap();
            let mfn = alloc.alloc(3, Owner::Domain(7)).unwrap();
            assert_eq!(mfn.0 % 8, 0);
            for m in mfn.0..mfn.0 + 8 {
                let page = alloc.table().get(Mfn(m)).unwrap();
                assert_eq!(page.owner(), Owner::Domain(7));
                assert_eq!((page.ref_count(), page.type_count()), (0, 0));
            }
            assert_eq!(alloc.free_frames(), 32);
            free_blocks_checked(alloc);
        });
    }

    #[test]
    fn alloc_refuses_free_and_not_ram_owners() {
        with_allocator(0, 4, |alloc| {
            alloc.add_free_range(Mfn(0), Mfn(4)).unwrap();
            assert_eq!(alloc.alloc(0, Owner::Free), Err(AllocError::InvalidOwner));
            assert_eq!(alloc.alloc(0, Owner::NotRam), Err(AllocError::InvalidOwner));
            assert_eq!(alloc.free_frames(), 4);
        });
    }

    #[test]
    fn alloc_until_empty_then_out_of_memory() {
        with_allocator(0, 8, |alloc| {
            alloc.add_free_range(Mfn(0), Mfn(7)).unwrap();
            assert_eq!(
                alloc.alloc(3, Owner::Hypervisor),
                Err(AllocError::OutOfMemory)
            );
            let got: BTreeSet<u64> = (0..7)
                .map(|_| alloc.alloc(0, Owner::Hypervisor).unwrap().0)
                .collect();
            assert_eq!(got, (0..7).collect());
            assert_eq!(
                alloc.alloc(0, Owner::Hypervisor),
                Err(AllocError::OutOfMemory)
            );
            assert_eq!(alloc.free_frames(), 0);
        });
    }

    #[test]
    fn free_coalesces_buddies_back_into_the_original_block() {
        with_allocator(0, 16, |alloc| {
            alloc.add_free_range(Mfn(0), Mfn(16)).unwrap();
            let blocks: Vec<Mfn> = (0..4)
                .map(|_| alloc.alloc(2, Owner::Hypervisor).unwrap())
                .collect();
            assert_eq!(alloc.free_frames(), 0);
            alloc.free(blocks[1], 2).unwrap();
            alloc.free(blocks[3], 2).unwrap();
            assert_eq!(free_blocks_checked(alloc).len(), 2);
            alloc.free(blocks[0], 2).unwrap();
            alloc.free(blocks[2], 2).unwrap();
            assert_eq!(free_blocks_checked(alloc), [(0, 4)]);
            assert_eq!(alloc.free_frames(), 16);
        });
    }

    #[test]
    fn free_of_part_of_a_block_is_allowed_and_coalesces() {
        with_allocator(0, 4, |alloc| {
            alloc.add_free_range(Mfn(0), Mfn(4)).unwrap();
            let mfn = alloc.alloc(2, Owner::Hypervisor).unwrap();
            alloc.free(Mfn(mfn.0 + 2), 1).unwrap();
            alloc.free(mfn, 0).unwrap();
            alloc.free(Mfn(mfn.0 + 1), 0).unwrap();
            assert_eq!(free_blocks_checked(alloc), [(0, 2)]);
        });
    }

    #[test]
    fn free_refuses_bad_blocks_and_changes_nothing() {
        with_allocator(0x10, 14, |alloc| {
            alloc.add_free_range(Mfn(0x10), Mfn(0x1c)).unwrap();
            let a = alloc.alloc(1, Owner::Domain(1)).unwrap();
            let b = alloc.alloc(1, Owner::Domain(2)).unwrap();
            assert_eq!(a.0 ^ 2, b.0, "test expects buddies");
            let before = free_blocks_checked(alloc);

            assert_eq!(alloc.free(a, MAX_ORDER + 1), Err(FreeError::InvalidOrder));
            assert_eq!(alloc.free(Mfn(a.0 + 1), 1), Err(FreeError::Misaligned));
            assert_eq!(alloc.free(Mfn(0xf), 0), Err(FreeError::OutOfRange));
            assert_eq!(alloc.free(Mfn(0x1e), 0), Err(FreeError::OutOfRange));
            assert_eq!(alloc.free(Mfn(0x18), 3), Err(FreeError::OutOfRange));
            assert_eq!(alloc.free(Mfn(0), 5), Err(FreeError::OutOfRange));
            assert_eq!(alloc.free(Mfn(u64::MAX), 0), Err(FreeError::OutOfRange));
            assert_eq!(alloc.free(Mfn(0x1c), 0), Err(FreeError::NotRam(Mfn(0x1c))));
            assert_eq!(
                alloc.free(Mfn(0x10), 0),
                Err(FreeError::DoubleFree(Mfn(0x10)))
            );
            assert_eq!(
                alloc.free(Mfn(a.0 & !3), 2),
                Err(FreeError::MixedOwners(Mfn(a.0.max(b.0))))
            );

            alloc.frame_mut(Mfn(a.0 + 1)).unwrap().get_ref().unwrap();
            assert_eq!(alloc.free(a, 1), Err(FreeError::InUse(Mfn(a.0 + 1))));
            alloc.frame_mut(b).unwrap().get_type(PageType::L1).unwrap();
            assert_eq!(alloc.free(b, 1), Err(FreeError::InUse(b)));
            assert_eq!(free_blocks_checked(alloc), before);

            alloc.frame_mut(Mfn(a.0 + 1)).unwrap().put_ref().unwrap();
            alloc.free(a, 1).unwrap();
            assert_eq!(alloc.free(a, 1), Err(FreeError::DoubleFree(a)));
            assert_eq!(
                alloc.free(Mfn(a.0 + 1), 0),
                Err(FreeError::DoubleFree(Mfn(a.0 + 1)))
            );
            alloc.frame_mut(b).unwrap().put_type().unwrap();
            alloc.free(b, 1).unwrap();
            assert_eq!(free_blocks_checked(alloc), [(0x10, 3), (0x18, 2)]);
        });
    }

    #[test]
    fn free_after_set_owner_uses_the_new_owner() {
        with_allocator(0, 2, |alloc| {
            alloc.add_free_range(Mfn(0), Mfn(2)).unwrap();
            let mfn = alloc.alloc(1, Owner::Hypervisor).unwrap();
            alloc
                .frame_mut(mfn)
                .unwrap()
                .set_owner(Owner::Domain(3))
                .unwrap();
            assert_eq!(
                alloc.free(mfn, 1),
                Err(FreeError::MixedOwners(Mfn(mfn.0 + 1)))
            );
            alloc
                .frame_mut(Mfn(mfn.0 + 1))
                .unwrap()
                .set_owner(Owner::Domain(3))
                .unwrap();
            alloc.free(mfn, 1).unwrap();
            assert_eq!(free_blocks_checked(alloc), [(0, 1)]);
        });
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Allocate a block of this order.
        Alloc(u32),
        /// Free the live allocation picked by this selector.
        Free(usize),
        /// Free a block that is not one live allocation: (frame offset in the table, order).
        BadFree(u64, u32),
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => prop_oneof![4 => 0u32..4, 1 => 0u32..=MAX_ORDER].prop_map(Op::Alloc),
            4 => any::<usize>().prop_map(Op::Free),
            1 => (0u64..4096, 0u32..6).prop_map(|(offset, order)| Op::BadFree(offset, order)),
        ]
    }

    /// A table base (odd, so the table is not aligned) and RAM ranges separated by holes
    /// (gap 0 makes ranges touch), with a hole after the last.
    fn layout_strategy() -> impl Strategy<Value = (u64, Vec<(u64, u64)>, u64)> {
        (
            0u64..2048,
            prop::collection::vec((0u64..300, 1u64..1200), 1..5),
            0u64..64,
        )
            .prop_map(|(base, parts, tail)| {
                let base = base * 2 + 1;
                let mut ranges = Vec::new();
                let mut mfn = base;
                for (gap, len) in parts {
                    mfn += gap;
                    ranges.push((mfn, mfn + len));
                    mfn += len;
                }
                (base, ranges, mfn + tail)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn random_alloc_and_free_never_double_allocate_leave_ram_or_lose_frames(
            (base, ram, end) in layout_strategy(),
            ops in prop::collection::vec(op_strategy(), 1..250),
        ) {
            let len = (end - base) as usize;
            with_allocator(base, len, |alloc| -> Result<(), TestCaseError> {
                for &(start, end) in &ram {
                    prop_assert_eq!(alloc.add_free_range(Mfn(start), Mfn(end)), Ok(end - start));
                }
                let is_ram = |mfn: u64| ram.iter().any(|&(s, e)| s <= mfn && mfn < e);
                let initial_frames: u64 = ram.iter().map(|&(s, e)| e - s).sum();
                let initial_blocks = free_blocks_checked(alloc);
                prop_assert_eq!(&initial_blocks, &maximal_blocks(&ram));
                prop_assert_eq!(alloc.free_frames(), initial_frames);

                // Live allocations (first frame, order, owner) and the frames they hold.
                let mut live: Vec<(u64, u32, Owner)> = Vec::new();
                let mut held: BTreeSet<u64> = BTreeSet::new();
                for (step, op) in ops.iter().enumerate() {
                    match *op {
                        Op::Alloc(order) => {
                            // Each allocation has its own owner, so a free spanning two is caught.
                            let owner = Owner::Domain(step as u16);
                            match alloc.alloc(order, owner) {
                                Ok(mfn) => {
                                    prop_assert_eq!(mfn.0 % (1 << order), 0);
                                    for m in mfn.0..mfn.0 + (1 << order) {
                                        prop_assert!(is_ram(m), "frame {:#x} is not RAM", m);
                                        prop_assert!(held.insert(m), "frame {:#x} handed out twice", m);
                                        prop_assert_eq!(alloc.table().get(Mfn(m)).unwrap().owner(), owner);
                                    }
                                    live.push((mfn.0, order, owner));
                                }
                                Err(e) => {
                                    prop_assert_eq!(e, AllocError::OutOfMemory);
                                    // Out of memory only if no free block is big enough.
                                    prop_assert!(alloc.free_blocks()[order as usize..].iter().all(|&n| n == 0));
                                }
                            }
                        }
                        Op::Free(pick) if !live.is_empty() => {
                            let (mfn, order, _) = live.swap_remove(pick % live.len());
                            prop_assert_eq!(alloc.free(Mfn(mfn), order), Ok(()));
                            for m in mfn..mfn + (1 << order) {
                                held.remove(&m);
                            }
                        }
                        Op::Free(_) => {}
                        Op::BadFree(offset, order) => {
                            let mfn = base + offset;
                            let frames = mfn..mfn.saturating_add(1 << order);
                            // A block entirely inside live allocations may legitimately be
                            // freed (part of one allocation); anything else must be refused.
                            if frames.clone().all(|m| held.contains(&m)) {
                                continue;
                            }
                            let free_before = alloc.free_frames();
                            prop_assert!(alloc.free(Mfn(mfn), order).is_err());
                            prop_assert_eq!(alloc.free_frames(), free_before);
                        }
                    }
                    prop_assert_eq!(alloc.free_frames(), initial_frames - held.len() as u64);
                    // Free blocks hold only free frames (checked inside), and every frame of a
                    // live allocation still belongs to it, so no free block holds a live frame.
                    free_blocks_checked(alloc);
                    for &(mfn, order, owner) in &live {
                        for m in mfn..mfn + (1 << order) {
                            prop_assert_eq!(alloc.table().get(Mfn(m)).unwrap().owner(), owner);
                        }
                    }
                }

                for (mfn, order, _) in live.drain(..).rev() {
                    prop_assert_eq!(alloc.free(Mfn(mfn), order), Ok(()));
                }
                prop_assert_eq!(alloc.free_frames(), initial_frames);
                prop_assert_eq!(free_blocks_checked(alloc), initial_blocks);
                Ok(())
            })?;
        }
    }
}
