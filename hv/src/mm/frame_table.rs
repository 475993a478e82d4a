//! The frame table: one [`PageInfo`] per machine frame, as Xen's `frame_table` of
//! `struct page_info`.
//!
//! It covers every frame from the lowest to the highest RAM frame; frames in holes between RAM
//! regions have entries marked [`Owner::NotRam`]. An entry holds who owns the frame, its PV
//! page type with a type count, a general reference count, and the buddy allocator's free-list
//! bookkeeping. Outside this module and the allocator, entries change only through a
//! [`FrameMut`] handle, whose methods refuse to overflow or underflow a count; only the
//! allocator (in [`super::buddy`]) can make a frame free or put it on a free list.

use core::mem::size_of;
use core::ops::Deref;

use super::{Mfn, MAX_MFN};

/// Who a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// On the allocator's free lists.
    Free,
    /// Used by hv itself.
    Hypervisor,
    /// Belongs to the domain with this id.
    Domain(u16),
    /// Not RAM: a hole in the memory map, or RAM hv never gave the allocator.
    NotRam,
}

impl Owner {
    /// Whether this is an owner an allocated frame can have ([`Owner::Hypervisor`] or
    /// [`Owner::Domain`]).
    pub const fn is_allocated(self) -> bool {
        matches!(self, Owner::Hypervisor | Owner::Domain(_))
    }
}

/// What a PV guest uses a frame as; a frame has one type at a time while its type count is
/// non-zero (Xen's `PGT_*` types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageType {
    /// No type held.
    None,
    /// Mapped writable by the guest.
    Writable,
    /// A level-1 page table.
    L1,
    /// A level-2 page table.
    L2,
    /// A level-3 page table.
    L3,
    /// A level-4 page table.
    L4,
    /// Holds a guest's GDT or LDT.
    SegDesc,
    /// Shared with another domain (grant mapped).
    Shared,
}

/// The free-list link value that means "no frame".
pub(super) const NO_FRAME: u32 = u32::MAX;

/// `pv_flags` bit: the guest pinned the frame (the pin holds one type reference).
const FLAG_PINNED: u8 = 1 << 0;
/// `pv_flags` bit: the frame's contents were checked for its current type.
const FLAG_VALIDATED: u8 = 1 << 1;
/// `pv_flags` bits holding the stale type's code (0 = none).
const STALE_SHIFT: u32 = 4;

impl PageType {
    /// Every type, indexed by [`PageType::code`].
    const BY_CODE: [PageType; 8] = [
        PageType::None,
        PageType::Writable,
        PageType::L1,
        PageType::L2,
        PageType::L3,
        PageType::L4,
        PageType::SegDesc,
        PageType::Shared,
    ];

    /// A small number naming the type, its index in [`Self::BY_CODE`].
    const fn code(self) -> u8 {
        match self {
            PageType::None => 0,
            PageType::Writable => 1,
            PageType::L1 => 2,
            PageType::L2 => 3,
            PageType::L3 => 4,
            PageType::L4 => 5,
            PageType::SegDesc => 6,
            PageType::Shared => 7,
        }
    }
}

/// Everything hv knows about one machine frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageInfo {
    pub(super) owner: Owner,
    page_type: PageType,
    /// The block's order, meaningful only while `free_head` is set.
    pub(super) free_order: u8,
    /// Set on the first frame of a block on a free list.
    pub(super) free_head: bool,
    /// PV bookkeeping: [`FLAG_PINNED`], [`FLAG_VALIDATED`] and, in the high nibble, the
    /// code of the type whose translations CPUs may still cache ([`PageInfo::stale_type`]).
    pv_flags: u8,
    type_count: u32,
    ref_count: u32,
    /// Free-list neighbours as frame-table indices, [`NO_FRAME`] at the ends.
    pub(super) next: u32,
    pub(super) prev: u32,
}

const _: () = assert!(size_of::<PageInfo>() <= 24);

/// Why a [`PageInfo`] count or owner could not be changed. The entry is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frame is free or not RAM; only allocated frames carry references and types.
    NotAllocated,
    /// The general reference count is at its maximum.
    RefOverflow,
    /// The general reference count is already zero.
    RefUnderflow,
    /// The type count is at its maximum.
    TypeOverflow,
    /// The type count is already zero.
    TypeUnderflow,
    /// The frame holds references of another type.
    TypeMismatch {
        /// The type the frame has now.
        current: PageType,
    },
    /// [`PageType::None`] cannot be taken as a type.
    InvalidType,
    /// The frame holds no type, so it cannot be pinned or validated.
    NoType,
    /// The new owner is [`Owner::Free`] or [`Owner::NotRam`], which only the allocator sets.
    InvalidOwner,
}

impl PageInfo {
    /// The entry of a frame that is not RAM; every entry starts like this. The boot code
    /// writes it into each slot of the frame table's backing memory before making the slice
    /// [`FrameTable::new`] takes.
    pub const NOT_RAM: PageInfo = PageInfo {
        owner: Owner::NotRam,
        page_type: PageType::None,
        free_order: 0,
        free_head: false,
        pv_flags: 0,
        type_count: 0,
        ref_count: 0,
        next: NO_FRAME,
        prev: NO_FRAME,
    };

    /// Who owns the frame.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// Whether the frame is RAM hv manages (free or allocated).
    pub fn is_ram(&self) -> bool {
        self.owner != Owner::NotRam
    }

    /// The type the frame holds ([`PageType::None`] while the type count is zero).
    pub fn page_type(&self) -> PageType {
        self.page_type
    }

    /// Whether the guest pinned the frame as a page table.
    pub fn is_pinned(&self) -> bool {
        self.pv_flags & FLAG_PINNED != 0
    }

    /// Whether the frame's contents were validated for the type it holds.
    pub fn is_validated(&self) -> bool {
        self.pv_flags & FLAG_VALIDATED != 0
    }

    /// The type the frame last held, if TLBs or paging-structure caches may still hold
    /// translations made while it had that type (Xen's `tlbflush_timestamp` reduced to one
    /// bit): giving the frame a different type first needs a flush of its owner's TLBs.
    pub fn stale_type(&self) -> Option<PageType> {
        let code = usize::from(self.pv_flags >> STALE_SHIFT);
        match PageType::BY_CODE.get(code) {
            Some(PageType::None) | None => None,
            Some(&ty) => Some(ty),
        }
    }

    /// How many type references the frame holds.
    pub fn type_count(&self) -> u32 {
        self.type_count
    }

    /// How many general references the frame holds.
    pub fn ref_count(&self) -> u32 {
        self.ref_count
    }

    /// Makes the frame free with no type and no references (the allocator's use only).
    pub(super) fn make_free(&mut self) {
        *self = PageInfo {
            owner: Owner::Free,
            ..PageInfo::NOT_RAM
        };
    }

    /// Makes a frame fresh from the allocator belong to `owner`.
    pub(super) fn make_allocated(&mut self, owner: Owner) {
        *self = PageInfo {
            owner,
            ..PageInfo::NOT_RAM
        };
    }
}

/// A frame-table entry opened for change: its counts and owner change only through these
/// checked methods, and never to a state that belongs to the allocator (free or not RAM). It
/// reads like a [`PageInfo`] through `Deref`.
pub struct FrameMut<'t> {
    page: &'t mut PageInfo,
}

impl Deref for FrameMut<'_> {
    type Target = PageInfo;

    fn deref(&self) -> &PageInfo {
        self.page
    }
}

impl FrameMut<'_> {
    fn check_allocated(&self) -> Result<(), FrameError> {
        if self.page.owner.is_allocated() {
            Ok(())
        } else {
            Err(FrameError::NotAllocated)
        }
    }

    /// Takes a general reference; returns the new count.
    pub fn get_ref(&mut self) -> Result<u32, FrameError> {
        self.check_allocated()?;
        self.page.ref_count = self
            .page
            .ref_count
            .checked_add(1)
            .ok_or(FrameError::RefOverflow)?;
        Ok(self.page.ref_count)
    }

    /// Drops a general reference; returns the new count.
    pub fn put_ref(&mut self) -> Result<u32, FrameError> {
        self.check_allocated()?;
        self.page.ref_count = self
            .page
            .ref_count
            .checked_sub(1)
            .ok_or(FrameError::RefUnderflow)?;
        Ok(self.page.ref_count)
    }

    /// Takes a reference of type `page_type`: the frame takes that type if it holds none, and
    /// must already have it otherwise. Returns the new type count.
    pub fn get_type(&mut self, page_type: PageType) -> Result<u32, FrameError> {
        self.check_allocated()?;
        if page_type == PageType::None {
            return Err(FrameError::InvalidType);
        }
        if self.page.type_count != 0 && self.page.page_type != page_type {
            return Err(FrameError::TypeMismatch {
                current: self.page.page_type,
            });
        }
        self.page.type_count = self
            .page
            .type_count
            .checked_add(1)
            .ok_or(FrameError::TypeOverflow)?;
        self.page.page_type = page_type;
        Ok(self.page.type_count)
    }

    /// Drops a type reference; the frame's type becomes [`PageType::None`] when the last one
    /// goes. Returns the new type count.
    pub fn put_type(&mut self) -> Result<u32, FrameError> {
        self.check_allocated()?;
        self.page.type_count = self
            .page
            .type_count
            .checked_sub(1)
            .ok_or(FrameError::TypeUnderflow)?;
        if self.page.type_count == 0 {
            self.page.page_type = PageType::None;
            self.page.pv_flags &= !(FLAG_PINNED | FLAG_VALIDATED);
        }
        Ok(self.page.type_count)
    }

    /// Marks the frame pinned or not. Pinning needs a type held (the pin is one of its
    /// references); dropping the last type reference clears the pin.
    pub fn set_pinned(&mut self, pinned: bool) -> Result<(), FrameError> {
        self.set_flag(FLAG_PINNED, pinned)
    }

    /// Marks the frame's contents validated for its type or not. Needs a type held;
    /// dropping the last type reference clears the mark.
    pub fn set_validated(&mut self, validated: bool) -> Result<(), FrameError> {
        self.set_flag(FLAG_VALIDATED, validated)
    }

    /// Records which type CPUs may still cache translations for (see
    /// [`PageInfo::stale_type`]); `None` once they were flushed.
    pub fn set_stale_type(&mut self, stale: Option<PageType>) -> Result<(), FrameError> {
        self.check_allocated()?;
        let code = stale.unwrap_or(PageType::None).code();
        self.page.pv_flags = (self.page.pv_flags & !(0xf << STALE_SHIFT)) | (code << STALE_SHIFT);
        Ok(())
    }

    /// Sets the counts directly, to test what happens at their limits.
    #[cfg(test)]
    pub(super) fn force_counts(&mut self, type_count: u32, ref_count: u32) {
        self.page.type_count = type_count;
        self.page.ref_count = ref_count;
    }

    fn set_flag(&mut self, flag: u8, on: bool) -> Result<(), FrameError> {
        self.check_allocated()?;
        if on {
            if self.page.type_count == 0 {
                return Err(FrameError::NoType);
            }
            self.page.pv_flags |= flag;
        } else {
            self.page.pv_flags &= !flag;
        }
        Ok(())
    }

    /// Hands an allocated frame to another allocated owner (hv or a domain). Making a frame
    /// free is [`FrameAllocator::free`](super::FrameAllocator::free)'s job.
    pub fn set_owner(&mut self, owner: Owner) -> Result<(), FrameError> {
        self.check_allocated()?;
        if !owner.is_allocated() {
            return Err(FrameError::InvalidOwner);
        }
        self.page.owner = owner;
        Ok(())
    }
}

/// Why a [`FrameTable`] could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameTableError {
    /// More frames than [`FrameTable::MAX_FRAMES`].
    TooManyFrames,
    /// The span reaches beyond [`MAX_MFN`], past any physical address.
    BeyondMaxMfn,
}

/// The [`PageInfo`] entries of the machine frames `[base_mfn, base_mfn + len)`, in memory the
/// caller provides.
pub struct FrameTable<'a> {
    frames: &'a mut [PageInfo],
    base_mfn: Mfn,
}

impl<'a> FrameTable<'a> {
    /// Most frames a table can hold: entries are linked by `u32` indices, `u32::MAX` being the
    /// end marker. That is 16 TiB of span.
    pub const MAX_FRAMES: usize = NO_FRAME as usize;

    /// Bytes of memory (aligned to `align_of::<PageInfo>()`) a table of `n_frames` needs, or
    /// `None` if no table can be that large.
    pub fn bytes_needed(n_frames: u64) -> Option<usize> {
        let n = usize::try_from(n_frames)
            .ok()
            .filter(|&n| n <= Self::MAX_FRAMES)?;
        n.checked_mul(size_of::<PageInfo>())
    }

    /// A table over `frames`, covering the frames from `base_mfn` on, one per entry. Every
    /// entry is reset to [`PageInfo::NOT_RAM`]; RAM enters through
    /// [`FrameAllocator::add_free_range`](super::FrameAllocator::add_free_range).
    pub fn new(frames: &'a mut [PageInfo], base_mfn: Mfn) -> Result<Self, FrameTableError> {
        if frames.len() > Self::MAX_FRAMES {
            return Err(FrameTableError::TooManyFrames);
        }
        let end = u64::try_from(frames.len())
            .ok()
            .and_then(|len| base_mfn.0.checked_add(len))
            .ok_or(FrameTableError::BeyondMaxMfn)?;
        if end > MAX_MFN {
            return Err(FrameTableError::BeyondMaxMfn);
        }
        frames.fill(PageInfo::NOT_RAM);
        Ok(FrameTable { frames, base_mfn })
    }

    /// The first frame covered.
    pub fn base_mfn(&self) -> Mfn {
        self.base_mfn
    }

    /// One past the last frame covered.
    pub fn end_mfn(&self) -> Mfn {
        // Cannot overflow: `new` checked base + len <= MAX_MFN.
        Mfn(self.base_mfn.0 + self.frames.len() as u64)
    }

    /// How many frames are covered.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frames are covered.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The index of `mfn`'s entry, if the table covers it.
    pub(super) fn index_of(&self, mfn: Mfn) -> Option<u32> {
        let offset = mfn.0.checked_sub(self.base_mfn.0)?;
        u32::try_from(offset)
            .ok()
            .filter(|&i| (i as usize) < self.frames.len())
    }

    /// The frame whose entry is at `index`.
    pub(super) fn mfn_of(&self, index: u32) -> Mfn {
        Mfn(self.base_mfn.0 + u64::from(index))
    }

    /// All entries, indexed as [`index_of`](Self::index_of) says.
    pub(super) fn entries(&self) -> &[PageInfo] {
        self.frames
    }

    /// All entries, mutably (the allocator's use only).
    pub(super) fn entries_mut(&mut self) -> &mut [PageInfo] {
        self.frames
    }

    /// The entry of `mfn`, or `None` outside the table.
    pub fn get(&self, mfn: Mfn) -> Option<&PageInfo> {
        self.frames.get(self.index_of(mfn)? as usize)
    }

    /// The entry of `mfn` opened to change its counts or owner, or `None` outside the table.
    pub fn get_mut(&mut self, mfn: Mfn) -> Option<FrameMut<'_>> {
        let index = self.index_of(mfn)?;
        let page = self.frames.get_mut(index as usize)?;
        Some(FrameMut { page })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocated(owner: Owner) -> PageInfo {
        let mut page = PageInfo::NOT_RAM;
        page.make_allocated(owner);
        page
    }

    #[test]
    fn owner_is_allocated_only_for_hypervisor_and_domains() {
        assert!(Owner::Hypervisor.is_allocated());
        assert!(Owner::Domain(0).is_allocated());
        assert!(Owner::Domain(u16::MAX).is_allocated());
        assert!(!Owner::Free.is_allocated());
        assert!(!Owner::NotRam.is_allocated());
    }

    #[test]
    fn not_ram_entry_has_no_owner_type_or_counts() {
        let page = PageInfo::NOT_RAM;
        assert_eq!(page.owner(), Owner::NotRam);
        assert!(!page.is_ram());
        assert_eq!(page.page_type(), PageType::None);
        assert_eq!(page.type_count(), 0);
        assert_eq!(page.ref_count(), 0);
    }

    #[test]
    fn make_free_and_make_allocated_reset_type_and_counts() {
        let mut page = allocated(Owner::Domain(1));
        let mut frame = FrameMut { page: &mut page };
        frame.get_ref().unwrap();
        frame.get_type(PageType::L4).unwrap();
        page.make_free();
        assert_eq!(page.owner(), Owner::Free);
        assert!(page.is_ram());
        assert_eq!(
            (page.page_type(), page.type_count(), page.ref_count()),
            (PageType::None, 0, 0)
        );
        page.make_allocated(Owner::Hypervisor);
        assert_eq!(page.owner(), Owner::Hypervisor);
        assert_eq!(
            (page.page_type(), page.type_count(), page.ref_count()),
            (PageType::None, 0, 0)
        );
    }

    #[test]
    fn refs_count_up_and_down_and_never_wrap() {
        let mut page = allocated(Owner::Hypervisor);
        let mut page = FrameMut { page: &mut page };
        assert_eq!(page.put_ref(), Err(FrameError::RefUnderflow));
        assert_eq!(page.get_ref(), Ok(1));
        assert_eq!(page.get_ref(), Ok(2));
        assert_eq!(page.put_ref(), Ok(1));
        assert_eq!(page.put_ref(), Ok(0));
        assert_eq!(page.put_ref(), Err(FrameError::RefUnderflow));
        page.page.ref_count = u32::MAX;
        assert_eq!(page.get_ref(), Err(FrameError::RefOverflow));
        assert_eq!(page.ref_count(), u32::MAX);
    }

    #[test]
    fn free_and_not_ram_frames_take_no_refs_types_or_owners() {
        let mut free = PageInfo::NOT_RAM;
        free.make_free();
        for mut entry in [free, PageInfo::NOT_RAM] {
            let before = entry;
            let mut page = FrameMut { page: &mut entry };
            assert_eq!(page.get_ref(), Err(FrameError::NotAllocated));
            assert_eq!(page.put_ref(), Err(FrameError::NotAllocated));
            assert_eq!(page.get_type(PageType::L1), Err(FrameError::NotAllocated));
            assert_eq!(page.put_type(), Err(FrameError::NotAllocated));
            assert_eq!(
                page.set_owner(Owner::Domain(1)),
                Err(FrameError::NotAllocated)
            );
            assert_eq!(entry, before);
        }
    }

    #[test]
    fn type_is_taken_shared_by_matching_refs_and_dropped_with_the_last() {
        let mut page = allocated(Owner::Domain(2));
        let mut page = FrameMut { page: &mut page };
        assert_eq!(page.get_type(PageType::L2), Ok(1));
        assert_eq!(page.get_type(PageType::L2), Ok(2));
        assert_eq!(
            page.get_type(PageType::Writable),
            Err(FrameError::TypeMismatch {
                current: PageType::L2
            })
        );
        assert_eq!(page.put_type(), Ok(1));
        assert_eq!(page.page_type(), PageType::L2);
        assert_eq!(page.put_type(), Ok(0));
        assert_eq!(page.page_type(), PageType::None);
        assert_eq!(page.put_type(), Err(FrameError::TypeUnderflow));
        // With no type held, any type can be taken.
        assert_eq!(page.get_type(PageType::Writable), Ok(1));
    }

    #[test]
    fn type_none_cannot_be_taken_and_type_count_never_wraps() {
        let mut page = allocated(Owner::Domain(2));
        let mut page = FrameMut { page: &mut page };
        assert_eq!(page.get_type(PageType::None), Err(FrameError::InvalidType));
        page.get_type(PageType::SegDesc).unwrap();
        page.page.type_count = u32::MAX;
        assert_eq!(
            page.get_type(PageType::SegDesc),
            Err(FrameError::TypeOverflow)
        );
        assert_eq!(page.type_count(), u32::MAX);
    }

    #[test]
    fn pinned_and_validated_need_a_type_and_go_with_the_last_type_reference() {
        let mut page = allocated(Owner::Domain(3));
        let mut page = FrameMut { page: &mut page };
        assert_eq!(page.set_pinned(true), Err(FrameError::NoType));
        assert_eq!(page.set_validated(true), Err(FrameError::NoType));
        page.get_type(PageType::L1).unwrap();
        page.get_type(PageType::L1).unwrap();
        page.set_pinned(true).unwrap();
        page.set_validated(true).unwrap();
        assert!(page.is_pinned() && page.is_validated());
        page.put_type().unwrap();
        assert!(page.is_pinned() && page.is_validated());
        page.put_type().unwrap();
        assert!(!page.is_pinned() && !page.is_validated());
        page.get_type(PageType::L2).unwrap();
        page.set_pinned(true).unwrap();
        page.set_pinned(false).unwrap();
        assert!(!page.is_pinned());
    }

    #[test]
    fn stale_type_round_trips_every_type_and_fits_the_entry() {
        let mut page = allocated(Owner::Domain(3));
        let mut page = FrameMut { page: &mut page };
        assert_eq!(page.stale_type(), None);
        for ty in PageType::BY_CODE {
            page.set_stale_type(Some(ty)).unwrap();
            let expect = (ty != PageType::None).then_some(ty);
            assert_eq!(page.stale_type(), expect);
        }
        page.get_type(PageType::L3).unwrap();
        page.set_pinned(true).unwrap();
        page.set_stale_type(Some(PageType::SegDesc)).unwrap();
        assert!(page.is_pinned());
        page.set_stale_type(None).unwrap();
        assert_eq!(page.stale_type(), None);
        assert!(page.is_pinned());
        let mut free = PageInfo::NOT_RAM;
        free.make_free();
        let mut free = FrameMut { page: &mut free };
        assert_eq!(free.set_stale_type(None), Err(FrameError::NotAllocated));
        assert_eq!(free.set_pinned(false), Err(FrameError::NotAllocated));
        assert_eq!(size_of::<PageInfo>(), 24);
    }

    #[test]
    fn set_owner_moves_allocated_frames_between_allocated_owners_only() {
        let mut page = allocated(Owner::Hypervisor);
        let mut page = FrameMut { page: &mut page };
        assert_eq!(page.set_owner(Owner::Domain(7)), Ok(()));
        assert_eq!(page.owner(), Owner::Domain(7));
        assert_eq!(page.set_owner(Owner::Free), Err(FrameError::InvalidOwner));
        assert_eq!(page.set_owner(Owner::NotRam), Err(FrameError::InvalidOwner));
        assert_eq!(page.owner(), Owner::Domain(7));
        assert_eq!(page.set_owner(Owner::Hypervisor), Ok(()));
    }

    #[test]
    fn bytes_needed_is_one_entry_per_frame_and_refuses_impossible_sizes() {
        assert_eq!(FrameTable::bytes_needed(0), Some(0));
        assert_eq!(FrameTable::bytes_needed(1), Some(size_of::<PageInfo>()));
        assert_eq!(
            FrameTable::bytes_needed(0x14_0000),
            Some(0x14_0000 * size_of::<PageInfo>())
        );
        let max = FrameTable::MAX_FRAMES as u64;
        assert_eq!(
            FrameTable::bytes_needed(max),
            Some(FrameTable::MAX_FRAMES * size_of::<PageInfo>())
        );
        assert_eq!(FrameTable::bytes_needed(max + 1), None);
        assert_eq!(FrameTable::bytes_needed(u64::MAX), None);
    }

    #[test]
    fn new_table_covers_its_span_with_not_ram_entries() {
        let mut frames = [allocated(Owner::Hypervisor); 8];
        let table = FrameTable::new(&mut frames, Mfn(0x100)).unwrap();
        assert_eq!(table.base_mfn(), Mfn(0x100));
        assert_eq!(table.end_mfn(), Mfn(0x108));
        assert_eq!(table.len(), 8);
        assert!(!table.is_empty());
        for mfn in 0x100..0x108 {
            assert_eq!(table.get(Mfn(mfn)), Some(&PageInfo::NOT_RAM));
        }
        assert_eq!(table.get(Mfn(0xff)), None);
        assert_eq!(table.get(Mfn(0x108)), None);
        assert_eq!(table.get(Mfn(u64::MAX)), None);
    }

    #[test]
    fn index_of_and_mfn_of_are_inverse_within_the_span() {
        let mut frames = [PageInfo::NOT_RAM; 4];
        let table = FrameTable::new(&mut frames, Mfn(10)).unwrap();
        assert_eq!(table.index_of(Mfn(10)), Some(0));
        assert_eq!(table.index_of(Mfn(13)), Some(3));
        assert_eq!(table.index_of(Mfn(14)), None);
        assert_eq!(table.index_of(Mfn(9)), None);
        assert_eq!(table.index_of(Mfn(10 + (1 << 32))), None);
        assert_eq!(table.mfn_of(3), Mfn(13));
    }

    #[test]
    fn get_mut_reaches_only_covered_frames() {
        let mut frames = [PageInfo::NOT_RAM; 4];
        let mut table = FrameTable::new(&mut frames, Mfn(10)).unwrap();
        table.entries_mut()[1].make_allocated(Owner::Domain(1));
        assert_eq!(table.get_mut(Mfn(11)).unwrap().get_ref(), Ok(1));
        assert_eq!(table.get(Mfn(11)).unwrap().ref_count(), 1);
        assert_eq!(table.entries()[1].ref_count(), 1);
        assert!(table.get_mut(Mfn(14)).is_none());
        assert!(table.get_mut(Mfn(0)).is_none());
    }

    #[test]
    fn new_refuses_a_span_beyond_the_physical_address_space() {
        let mut frames = [PageInfo::NOT_RAM; 4];
        assert!(FrameTable::new(&mut frames, Mfn(MAX_MFN - 4)).is_ok());
        assert_eq!(
            FrameTable::new(&mut frames, Mfn(MAX_MFN - 3)).err(),
            Some(FrameTableError::BeyondMaxMfn)
        );
        assert_eq!(
            FrameTable::new(&mut frames, Mfn(u64::MAX - 1)).err(),
            Some(FrameTableError::BeyondMaxMfn)
        );
        let mut none: [PageInfo; 0] = [];
        let table = FrameTable::new(&mut none, Mfn(0)).unwrap();
        assert!(table.is_empty());
    }
}
