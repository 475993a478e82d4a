//! Extended page tables: guest-physical to machine translations for one HVM domain
//! (SDM Vol. 3C 28.3).
//!
//! [`Ept`] builds a 4-level EPT through the [`EptMemory`] trait (allocate a zeroed table frame,
//! read and write its entries), so the same code runs over machine frames in hv and over a
//! fake memory in the tests. Leaves are 4 KiB pages, or 2 MiB pages where the guest and
//! machine frames are both 2 MiB aligned and a whole 2 MiB is mapped with one permission
//! into an empty slot. Mapping a 4 KiB page inside an existing 2 MiB leaf splits it into 512
//! 4 KiB entries first. Every leaf has memory type write-back and ignores the guest PAT's
//! "ignore PAT" bit (bit 6 clear), so the guest's PAT and MTRR settings combine with WB as
//! on bare metal (28.3.7).
//!
//! Table frames are never freed while the domain lives; the caller frees them (all frames
//! [`EptMemory::alloc_table`] returned) when it destroys the domain.

use bitflags::bitflags;

use super::Gfn;
use crate::mm::Mfn;

/// Entries in one EPT paging structure.
pub const ENTRIES: usize = 512;

bitflags! {
    /// Access permissions of a guest-physical page (EPT entry bits 2:0).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EptPerm: u64 {
        /// Reads allowed.
        const READ = 1 << 0;
        /// Writes allowed (needs READ: write-only is a misconfiguration, 28.3.3.1).
        const WRITE = 1 << 1;
        /// Instruction fetches allowed (supervisor fetches with mode-based control).
        const EXEC = 1 << 2;
        /// Read, write and execute: ordinary RAM.
        const RWX = Self::READ.bits() | Self::WRITE.bits() | Self::EXEC.bits();
    }
}

/// Memory type write-back, in EPT leaf bits 5:3 and EPTP bits 2:0 (28.3.7, 24.6.11).
pub const MEMORY_TYPE_WB: u64 = 6;
/// EPT entry bit 7: this PDPTE / PDE maps a page.
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Physical-address bits 51:12 of an entry.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Guest-physical addresses a 4-level walk translates: 48 bits.
pub const GPA_BITS: u32 = 48;
/// Frames in a 2 MiB page.
const FRAMES_2M: u64 = 512;

/// The memory holding EPT paging structures.
pub trait EptMemory {
    /// A new table frame, all 512 entries zero; `None` when memory is exhausted.
    fn alloc_table(&mut self) -> Option<Mfn>;
    /// Entry `index` (< 512) of table `table`.
    fn read_entry(&self, table: Mfn, index: usize) -> u64;
    /// Sets entry `index` (< 512) of table `table`.
    fn write_entry(&mut self, table: Mfn, index: usize, value: u64);
}

/// Why a mapping was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    /// No memory for a paging structure.
    OutOfMemory,
    /// A guest frame at or above 2^36 (beyond 48-bit guest-physical addresses), or a range
    /// that wraps.
    GfnOutOfRange,
    /// A machine frame beyond 52-bit physical addresses.
    MfnOutOfRange,
    /// Write without read is an EPT misconfiguration.
    WriteWithoutRead,
}

/// What a guest-physical address translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The machine address.
    pub maddr: u64,
    /// Permissions.
    pub perm: EptPerm,
    /// Size of the leaf: 4 KiB or 2 MiB.
    pub page_size: u64,
}

/// A domain's EPT: the root (PML4) table frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ept {
    root: Mfn,
}

/// Index into the table at `level` (4 = PML4 .. 1 = PT) for guest frame `gfn`.
const fn index(gfn: u64, level: u32) -> usize {
    ((gfn >> (9 * (level - 1))) & 0x1ff) as usize
}

/// An entry pointing to a lower-level table: full permissions (the leaf decides, 28.3.2).
const fn table_entry(table: Mfn) -> u64 {
    (table.paddr() & ADDR_MASK) | EptPerm::RWX.bits()
}

/// A leaf entry; `large` for a 2 MiB PDE.
const fn leaf_entry(maddr: u64, perm: EptPerm, large: bool) -> u64 {
    if perm.is_empty() {
        return 0;
    }
    let size = if large { PAGE_SIZE_BIT } else { 0 };
    (maddr & ADDR_MASK) | (MEMORY_TYPE_WB << 3) | size | perm.bits()
}

impl Ept {
    /// A new EPT with an empty root.
    pub fn new(mem: &mut impl EptMemory) -> Result<Self, EptError> {
        Ok(Ept {
            root: mem.alloc_table().ok_or(EptError::OutOfMemory)?,
        })
    }

    /// The root table's frame.
    pub fn root(&self) -> Mfn {
        self.root
    }

    /// The EPTP to write to the VMCS (24.6.11): memory type WB (bits 2:0 = 6), page-walk
    /// length 4 (bits 5:3 = 3), accessed/dirty flags off, root address in bits 51:12.
    pub fn eptp(&self) -> u64 {
        (self.root.paddr() & ADDR_MASK) | (3 << 3) | MEMORY_TYPE_WB
    }

    /// Maps `count` guest frames from `gfn` to machine frames from `mfn` with `perm`; empty
    /// `perm` unmaps. Returns whether a translation that was present changed (the caller
    /// then invalidates with INVEPT before the domain runs again).
    pub fn map(
        &mut self,
        mem: &mut impl EptMemory,
        gfn: Gfn,
        mfn: Mfn,
        count: u64,
        perm: EptPerm,
    ) -> Result<bool, EptError> {
        if perm.contains(EptPerm::WRITE) && !perm.contains(EptPerm::READ) {
            return Err(EptError::WriteWithoutRead);
        }
        let gfn_end = gfn.0.checked_add(count).ok_or(EptError::GfnOutOfRange)?;
        if gfn_end > 1 << (GPA_BITS - 12) {
            return Err(EptError::GfnOutOfRange);
        }
        let mfn_end = mfn.0.checked_add(count).ok_or(EptError::MfnOutOfRange)?;
        if mfn_end > crate::mm::MAX_MFN {
            return Err(EptError::MfnOutOfRange);
        }
        let mut changed = false;
        let (mut g, mut m) = (gfn.0, mfn.0);
        while g < gfn_end {
            let left = gfn_end - g;
            let huge = g % FRAMES_2M == 0 && m % FRAMES_2M == 0 && left >= FRAMES_2M;
            let step = if huge && self.try_map_2m(mem, g, m, perm, &mut changed)? {
                FRAMES_2M
            } else {
                let pt = self.walk_to_pt(mem, g)?;
                let old = mem.read_entry(pt, index(g, 1));
                let new = leaf_entry(Mfn(m).paddr(), perm, false);
                changed |= old != 0 && old != new;
                mem.write_entry(pt, index(g, 1), new);
                1
            };
            g += step;
            m += step;
        }
        Ok(changed)
    }

    /// Maps 2 MiB at `g` with one PDE if the slot is empty or already a leaf; `Ok(false)`
    /// if a page table is there (the caller maps 4 KiB pages into it).
    fn try_map_2m(
        &mut self,
        mem: &mut impl EptMemory,
        g: u64,
        m: u64,
        perm: EptPerm,
        changed: &mut bool,
    ) -> Result<bool, EptError> {
        let pd = self.walk(mem, g)?;
        let old = mem.read_entry(pd, index(g, 2));
        if old != 0 && old & PAGE_SIZE_BIT == 0 {
            return Ok(false);
        }
        let new = leaf_entry(Mfn(m).paddr(), perm, true);
        *changed |= old != 0 && old != new;
        mem.write_entry(pd, index(g, 2), new);
        Ok(true)
    }

    /// The page table (level 1) for `g`, creating tables and splitting a 2 MiB leaf.
    fn walk_to_pt(&mut self, mem: &mut impl EptMemory, g: u64) -> Result<Mfn, EptError> {
        let pd = self.walk(mem, g)?;
        let pde = mem.read_entry(pd, index(g, 2));
        if pde != 0 && pde & PAGE_SIZE_BIT == 0 {
            return Ok(Mfn::from_paddr(pde & ADDR_MASK));
        }
        let pt = mem.alloc_table().ok_or(EptError::OutOfMemory)?;
        if pde != 0 {
            // Split: the same translations as 512 4 KiB leaves.
            let base = pde & ADDR_MASK & !0x1f_ffff;
            let perm = EptPerm::from_bits_truncate(pde);
            for i in 0..ENTRIES {
                let leaf = leaf_entry(base + (i as u64) * 4096, perm, false);
                mem.write_entry(pt, i, leaf);
            }
        }
        mem.write_entry(pd, index(g, 2), table_entry(pt));
        Ok(pt)
    }

    /// The page directory (level 2) for `g`, creating missing tables on the way.
    fn walk(&mut self, mem: &mut impl EptMemory, g: u64) -> Result<Mfn, EptError> {
        let mut table = self.root;
        for l in [4, 3] {
            let i = index(g, l);
            let e = mem.read_entry(table, i);
            table = if e == 0 {
                let t = mem.alloc_table().ok_or(EptError::OutOfMemory)?;
                mem.write_entry(table, i, table_entry(t));
                t
            } else {
                // hv never writes 1 GiB leaves, so a present PML4E/PDPTE is a table.
                Mfn::from_paddr(e & ADDR_MASK)
            };
        }
        Ok(table)
    }

    /// The translation of guest-physical address `gpa`, walking as the CPU would.
    pub fn lookup(&self, mem: &impl EptMemory, gpa: u64) -> Option<Translation> {
        if gpa >> GPA_BITS != 0 {
            return None;
        }
        let g = gpa >> 12;
        let mut table = self.root;
        for level in (1..=4).rev() {
            let e = mem.read_entry(table, index(g, level));
            let perm = EptPerm::from_bits_truncate(e);
            if perm.is_empty() {
                return None;
            }
            let leaf = level == 1 || (level == 2 && e & PAGE_SIZE_BIT != 0);
            if leaf {
                let page_size = if level == 1 { 4096 } else { 2 << 20 };
                return Some(Translation {
                    maddr: (e & ADDR_MASK & !(page_size - 1)) | (gpa & (page_size - 1)),
                    perm,
                    page_size,
                });
            }
            table = Mfn::from_paddr(e & ADDR_MASK);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Table frames as arrays, numbered from 0x1000.
    #[derive(Default)]
    struct FakeMem {
        tables: BTreeMap<u64, Box<[u64; ENTRIES]>>,
        limit: usize,
    }

    impl FakeMem {
        fn with_limit(limit: usize) -> Self {
            FakeMem {
                tables: BTreeMap::new(),
                limit,
            }
        }
    }

    impl EptMemory for FakeMem {
        fn alloc_table(&mut self) -> Option<Mfn> {
            if self.tables.len() >= self.limit {
                return None;
            }
            let mfn = 0x1000 + self.tables.len() as u64;
            self.tables.insert(mfn, Box::new([0; ENTRIES]));
            Some(Mfn(mfn))
        }
        fn read_entry(&self, table: Mfn, index: usize) -> u64 {
            self.tables[&table.0][index]
        }
        fn write_entry(&mut self, table: Mfn, index: usize, value: u64) {
            self.tables.get_mut(&table.0).unwrap()[index] = value;
        }
    }

    fn setup() -> (FakeMem, Ept) {
        let mut mem = FakeMem::with_limit(64);
        let ept = Ept::new(&mut mem).unwrap();
        (mem, ept)
    }

    #[test]
    fn eptp_is_wb_with_a_four_level_walk() {
        let (_, ept) = setup();
        assert_eq!(ept.root(), Mfn(0x1000));
        assert_eq!(ept.eptp(), 0x100_0000 | 0x1e);
    }

    #[test]
    fn four_kib_pages_translate_with_their_permissions() {
        let (mut mem, mut ept) = setup();
        assert_eq!(
            ept.map(&mut mem, Gfn(0x100), Mfn(0x5000), 3, EptPerm::RWX),
            Ok(false)
        );
        // Root, PDPT, PD and one PT.
        assert_eq!(mem.tables.len(), 4);
        let t = ept.lookup(&mem, 0x10_1234).unwrap();
        assert_eq!(t.maddr, 0x500_1234);
        assert_eq!(t.perm, EptPerm::RWX);
        assert_eq!(t.page_size, 4096);
        assert_eq!(ept.lookup(&mem, 0x10_2fff).unwrap().maddr, 0x500_2fff);
        assert_eq!(ept.lookup(&mem, 0x10_3000), None);
        assert_eq!(ept.lookup(&mem, 0xff000), None);
        // The leaf's bits: address, WB in 5:3, no ignore-PAT, RWX.
        let pt = Mfn(0x1003);
        assert_eq!(mem.read_entry(pt, 0x100), 0x500_0000 | 0x37);
        // Upper levels: table address and RWX.
        assert_eq!(mem.read_entry(ept.root(), 0), 0x100_1000 | 7);
    }

    #[test]
    fn remapping_reports_a_change_and_unmapping_removes() {
        let (mut mem, mut ept) = setup();
        ept.map(&mut mem, Gfn(0x200), Mfn(0x9000), 1, EptPerm::RWX)
            .unwrap();
        // The same mapping again changes nothing.
        assert_eq!(
            ept.map(&mut mem, Gfn(0x200), Mfn(0x9000), 1, EptPerm::RWX),
            Ok(false)
        );
        // Read-only now: a present translation changed.
        assert_eq!(
            ept.map(&mut mem, Gfn(0x200), Mfn(0x9000), 1, EptPerm::READ),
            Ok(true)
        );
        assert_eq!(ept.lookup(&mem, 0x20_0000).unwrap().perm, EptPerm::READ);
        assert_eq!(
            ept.map(&mut mem, Gfn(0x200), Mfn(0), 1, EptPerm::empty()),
            Ok(true)
        );
        assert_eq!(ept.lookup(&mem, 0x20_0000), None);
    }

    #[test]
    fn aligned_ranges_use_2m_pages_and_split_on_demand() {
        let (mut mem, mut ept) = setup();
        // 4 MiB + 1 page from gfn 0x200 to mfn 0x4_0200: both 2 MiB aligned.
        ept.map(&mut mem, Gfn(0x200), Mfn(0x4_0200), 1025, EptPerm::RWX)
            .unwrap();
        // Root, PDPT, PD, and one PT for the last page only.
        assert_eq!(mem.tables.len(), 4);
        let t = ept.lookup(&mem, 0x23_4567).unwrap();
        assert_eq!((t.maddr, t.page_size), (0x4023_4567, 2 << 20));
        let t = ept.lookup(&mem, 0x60_0abc).unwrap();
        assert_eq!((t.maddr, t.page_size), (0x4060_0abc, 4096));
        // Unaligned machine frames: 4 KiB pages only.
        ept.map(&mut mem, Gfn(0x1000), Mfn(0x8001), 512, EptPerm::RWX)
            .unwrap();
        assert_eq!(ept.lookup(&mem, 0x100_0000).unwrap().page_size, 4096);
        // Remap one page inside the first 2 MiB leaf: the leaf splits, the rest is kept.
        let before = mem.tables.len();
        assert_eq!(
            ept.map(&mut mem, Gfn(0x210), Mfn(0x7777), 1, EptPerm::READ),
            Ok(true)
        );
        assert_eq!(mem.tables.len(), before + 1);
        let t = ept.lookup(&mem, 0x21_0010).unwrap();
        assert_eq!(
            (t.maddr, t.perm, t.page_size),
            (0x777_7010, EptPerm::READ, 4096)
        );
        let t = ept.lookup(&mem, 0x21_1010).unwrap();
        assert_eq!(
            (t.maddr, t.perm, t.page_size),
            (0x4021_1010, EptPerm::RWX, 4096)
        );
        let t = ept.lookup(&mem, 0x20_0000).unwrap();
        assert_eq!(t.maddr, 0x4020_0000);
        // A 2 MiB range over an existing page table fills it with 4 KiB entries.
        assert_eq!(
            ept.map(&mut mem, Gfn(0x200), Mfn(0x4_0200), 512, EptPerm::RWX),
            Ok(true)
        );
        let t = ept.lookup(&mem, 0x21_0010).unwrap();
        assert_eq!(
            (t.maddr, t.perm, t.page_size),
            (0x4021_0010, EptPerm::RWX, 4096)
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        let (mut mem, mut ept) = setup();
        assert_eq!(
            ept.map(&mut mem, Gfn(0), Mfn(1), 1, EptPerm::WRITE),
            Err(EptError::WriteWithoutRead)
        );
        assert_eq!(
            ept.map(&mut mem, Gfn(1 << 36), Mfn(1), 1, EptPerm::READ),
            Err(EptError::GfnOutOfRange)
        );
        assert_eq!(
            ept.map(&mut mem, Gfn((1 << 36) - 1), Mfn(1), 2, EptPerm::READ),
            Err(EptError::GfnOutOfRange)
        );
        assert_eq!(
            ept.map(&mut mem, Gfn(u64::MAX), Mfn(1), 2, EptPerm::READ),
            Err(EptError::GfnOutOfRange)
        );
        assert_eq!(
            ept.map(&mut mem, Gfn(0), Mfn(1 << 40), 1, EptPerm::READ),
            Err(EptError::MfnOutOfRange)
        );
        assert_eq!(ept.lookup(&mem, 1 << 48), None);
        // Execute-only is representable (the caller checks the CPU allows it).
        ept.map(&mut mem, Gfn(5), Mfn(5), 1, EptPerm::EXEC).unwrap();
        assert_eq!(ept.lookup(&mem, 0x5000).unwrap().perm, EptPerm::EXEC);
    }

    #[test]
    fn running_out_of_table_memory_is_an_error() {
        let mut mem = FakeMem::with_limit(3);
        let mut ept = Ept::new(&mut mem).unwrap();
        assert_eq!(
            ept.map(&mut mem, Gfn(0), Mfn(0), 1, EptPerm::RWX),
            Err(EptError::OutOfMemory)
        );
        let mut empty = FakeMem::with_limit(0);
        assert_eq!(Ept::new(&mut empty), Err(EptError::OutOfMemory));
    }

    #[test]
    fn high_guest_addresses_use_every_level() {
        let (mut mem, mut ept) = setup();
        let gfn = Gfn(0xf_ffff_ffff);
        ept.map(&mut mem, gfn, Mfn(0x1234), 1, EptPerm::RWX)
            .unwrap();
        assert_eq!(
            ept.lookup(&mem, 0xffff_ffff_fabc).unwrap().maddr,
            0x123_4abc
        );
        assert_eq!(mem.read_entry(ept.root(), 511) & 7, 7);
    }
}
