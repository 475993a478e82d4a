//! The boot memory map: firmware's E820-style entries, normalised into sorted, disjoint regions.
//!
//! Firmware maps come unsorted, with overlaps and zero-size entries. [`MemoryMap`] collects
//! them in a fixed-size array (no heap exists yet when it is built), and [`MemoryMap::normalise`]
//! turns them into sorted, disjoint regions: touching or overlapping entries of one kind merge,
//! and where kinds overlap the one with the higher E820 type number wins, as in Linux's
//! `sanitize_e820_table`. RAM is type 1, so any other kind overlapping RAM cuts the RAM.
//! Reserved windows far above RAM (QEMU reports one at 1 TiB) are never RAM, so they affect
//! neither [`MemoryMap::total_ram_bytes`] nor [`MemoryMap::max_ram_paddr`].

use core::ops::Range;

use super::{Mfn, PAGE_SIZE};

/// How many regions a [`MemoryMap`] holds. Real E820 maps have a few dozen entries.
pub const MEMMAP_CAPACITY: usize = 128;

/// What firmware says a physical address range is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegionKind {
    /// Usable RAM (E820 type 1).
    Ram,
    /// Reserved, including every type number firmware may invent (E820 type 2).
    Reserved,
    /// ACPI tables, RAM once the OS has read them (E820 type 3).
    AcpiReclaimable,
    /// ACPI non-volatile storage, kept across sleep states (E820 type 4).
    AcpiNvs,
    /// RAM with detected errors (E820 type 5).
    Unusable,
}

impl RegionKind {
    /// The kind an E820 type number stands for; unknown numbers are [`RegionKind::Reserved`].
    pub const fn from_e820_type(e820_type: u32) -> RegionKind {
        match e820_type {
            1 => RegionKind::Ram,
            3 => RegionKind::AcpiReclaimable,
            4 => RegionKind::AcpiNvs,
            5 => RegionKind::Unusable,
            _ => RegionKind::Reserved,
        }
    }

    /// The E820 type number of this kind. Where regions overlap, the higher number wins.
    pub const fn e820_type(self) -> u32 {
        match self {
            RegionKind::Ram => 1,
            RegionKind::Reserved => 2,
            RegionKind::AcpiReclaimable => 3,
            RegionKind::AcpiNvs => 4,
            RegionKind::Unusable => 5,
        }
    }
}

/// One region of the map: the bytes `[start, end)`, all of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What the bytes are.
    pub kind: RegionKind,
}

impl Region {
    const EMPTY: Region = Region {
        start: 0,
        end: 0,
        kind: RegionKind::Reserved,
    };

    /// Size in bytes (0 for an inverted region, which a [`MemoryMap`] never holds).
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the region holds no bytes (never true for a region in a [`MemoryMap`]).
    pub const fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// Why a [`MemoryMap`] operation failed. The map is unchanged after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryMapError {
    /// The map has no room for another region.
    Full,
    /// `start + len` does not fit in 64 bits: the entry is corrupt.
    Overflow {
        /// The entry's first byte.
        start: u64,
        /// The entry's length.
        len: u64,
    },
    /// A range to remove ends before it starts.
    InvalidRange {
        /// The range's first byte.
        start: u64,
        /// One past the range's last byte.
        end: u64,
    },
}

/// A fixed-capacity boot memory map.
///
/// Build it with [`push`](Self::push), then call [`normalise`](Self::normalise) once after the
/// last push: the queries read the regions as stored and are exact only for a normalised map
/// ([`is_normalised`](Self::is_normalised) tells). [`remove`](Self::remove) keeps a normalised
/// map normalised.
#[derive(Clone, Debug)]
pub struct MemoryMap {
    regions: [Region; MEMMAP_CAPACITY],
    len: usize,
    normalised: bool,
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryMap {
    /// An empty map.
    pub const fn new() -> Self {
        MemoryMap {
            regions: [Region::EMPTY; MEMMAP_CAPACITY],
            len: 0,
            normalised: true,
        }
    }

    /// Adds a firmware entry of `len` bytes from `start`. Zero-size entries are skipped.
    pub fn push(&mut self, start: u64, len: u64, kind: RegionKind) -> Result<(), MemoryMapError> {
        if len == 0 {
            return Ok(());
        }
        let end = start
            .checked_add(len)
            .ok_or(MemoryMapError::Overflow { start, len })?;
        let slot = self.regions.get_mut(self.len).ok_or(MemoryMapError::Full)?;
        *slot = Region { start, end, kind };
        self.len += 1;
        self.normalised = false;
        Ok(())
    }

    /// Sorts the regions, merges touching or overlapping regions of one kind, and resolves
    /// overlaps between kinds in favour of the higher E820 type number (so RAM always loses).
    ///
    /// Cutting RAM can add regions; if the result does not fit, the map is left unchanged and
    /// [`MemoryMapError::Full`] is returned. Runs in O(n²) for n regions, with n at most
    /// [`MEMMAP_CAPACITY`].
    pub fn normalise(&mut self) -> Result<(), MemoryMapError> {
        let input = &self.regions[..self.len];
        let mut out = [Region::EMPTY; MEMMAP_CAPACITY];
        let mut out_len: usize = 0;

        // Sweep the address space from boundary to boundary. Between two consecutive
        // boundaries (starts and ends of input regions) the set of covering regions is
        // constant, so each such piece has one winning kind.
        let mut pos = match input.iter().map(|r| r.start).min() {
            Some(start) => start,
            None => return Ok(()),
        };
        loop {
            let mut winner: Option<RegionKind> = None;
            let mut next_boundary: Option<u64> = None;
            for r in input {
                let boundary = if r.start <= pos && pos < r.end {
                    if winner.is_none_or(|w| r.kind.e820_type() > w.e820_type()) {
                        winner = Some(r.kind);
                    }
                    r.end
                } else if r.start > pos {
                    r.start
                } else {
                    continue;
                };
                next_boundary = Some(next_boundary.map_or(boundary, |b| b.min(boundary)));
            }
            let Some(next) = next_boundary else { break };
            if let Some(kind) = winner {
                match out_len.checked_sub(1).and_then(|last| out.get_mut(last)) {
                    Some(last) if last.kind == kind && last.end == pos => last.end = next,
                    _ => {
                        let slot = out.get_mut(out_len).ok_or(MemoryMapError::Full)?;
                        *slot = Region {
                            start: pos,
                            end: next,
                            kind,
                        };
                        out_len += 1;
                    }
                }
            }
            pos = next;
        }

        self.regions = out;
        self.len = out_len;
        self.normalised = true;
        Ok(())
    }

    /// Whether the map is normalised (true after [`normalise`](Self::normalise) until the next
    /// [`push`](Self::push) of a non-empty entry).
    pub fn is_normalised(&self) -> bool {
        self.normalised
    }

    /// The regions, in address order once normalised.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// Usable RAM as page-aligned physical address ranges: each RAM region's start rounded up
    /// and its end rounded down to [`PAGE_SIZE`]; ranges left empty are dropped.
    pub fn ram_regions(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.regions()
            .iter()
            .filter(|r| r.kind == RegionKind::Ram)
            .filter_map(|r| {
                let start = r.start.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
                let end = r.end & !(PAGE_SIZE - 1);
                (start < end).then_some(start..end)
            })
    }

    /// Bytes of usable RAM: the total of [`ram_regions`](Self::ram_regions).
    pub fn total_ram_bytes(&self) -> u64 {
        self.ram_regions()
            .fold(0, |total, r| total.saturating_add(r.end - r.start))
    }

    /// One past the highest byte of usable RAM, or `None` if there is no RAM.
    pub fn max_ram_paddr(&self) -> Option<u64> {
        self.ram_regions().map(|r| r.end).max()
    }

    /// The machine frames from the lowest to the highest frame of usable RAM, holes included:
    /// the span a [`FrameTable`](super::FrameTable) covers. `None` if there is no RAM.
    pub fn ram_frame_span(&self) -> Option<Range<Mfn>> {
        let start = self.ram_regions().map(|r| r.start).min()?;
        let end = self.max_ram_paddr()?;
        Some(Mfn::from_paddr(start)..Mfn::from_paddr(end))
    }

    /// Removes the bytes `range` from RAM (hv's image, boot modules, the first MiB), leaving a
    /// hole; regions of other kinds are untouched. Removing from the middle of a RAM region
    /// splits it, which fails with [`MemoryMapError::Full`] (map unchanged) if there is no room.
    pub fn remove(&mut self, range: Range<u64>) -> Result<(), MemoryMapError> {
        let Range {
            start: cut_start,
            end: cut_end,
        } = range;
        if cut_start > cut_end {
            return Err(MemoryMapError::InvalidRange {
                start: cut_start,
                end: cut_end,
            });
        }
        if cut_start == cut_end {
            return Ok(());
        }
        let overlaps_cut =
            |r: &Region| r.kind == RegionKind::Ram && r.start < cut_end && cut_start < r.end;
        let splits = self
            .regions()
            .iter()
            .filter(|r| overlaps_cut(r) && r.start < cut_start && cut_end < r.end)
            .count();
        if self.len + splits > MEMMAP_CAPACITY {
            return Err(MemoryMapError::Full);
        }

        let mut i = 0;
        while i < self.len {
            let r = self.regions[i];
            if !overlaps_cut(&r) {
                i += 1;
                continue;
            }
            match (r.start < cut_start, cut_end < r.end) {
                (true, true) => {
                    // The capacity check above guarantees room for the second half.
                    self.regions.copy_within(i + 1..self.len, i + 2);
                    self.regions[i].end = cut_start;
                    self.regions[i + 1] = Region {
                        start: cut_end,
                        ..r
                    };
                    self.len += 1;
                    i += 2;
                }
                (true, false) => {
                    self.regions[i].end = cut_start;
                    i += 1;
                }
                (false, true) => {
                    self.regions[i].start = cut_end;
                    i += 1;
                }
                (false, false) => {
                    self.regions.copy_within(i + 1..self.len, i);
                    self.len -= 1;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use RegionKind::*;

    fn map_of(entries: &[(u64, u64, RegionKind)]) -> MemoryMap {
        let mut map = MemoryMap::new();
        for &(start, len, kind) in entries {
            map.push(start, len, kind).unwrap();
        }
        map
    }

    fn normalised(entries: &[(u64, u64, RegionKind)]) -> MemoryMap {
        let mut map = map_of(entries);
        map.normalise().unwrap();
        map
    }

    fn triples(map: &MemoryMap) -> Vec<(u64, u64, RegionKind)> {
        map.regions()
            .iter()
            .map(|r| (r.start, r.end, r.kind))
            .collect()
    }

    fn ram(map: &MemoryMap) -> Vec<(u64, u64)> {
        map.ram_regions().map(|r| (r.start, r.end)).collect()
    }

    /// QEMU q35 with 2 GiB below 4 GiB and 1 GiB above, as its firmware reports it.
    fn qemu_q35_map() -> MemoryMap {
        normalised(&[
            (0, 0x9fc00, Ram),
            (0x9fc00, 0x400, Reserved),
            (0xf0000, 0x10000, Reserved),
            (0x10_0000, 0x7fee_0000, Ram),
            (0x7ffe_0000, 0x2_0000, Reserved),
            (0xb000_0000, 0x1000_0000, Reserved),
            (0xfed1_c000, 0x4000, Reserved),
            (0xfeff_c000, 0x4000, Reserved),
            (0xfffc_0000, 0x4_0000, Reserved),
            (0x1_0000_0000, 0x4000_0000, Ram),
            (0xfd_0000_0000, 0x3_0000_0000, Reserved),
        ])
    }

    #[test]
    fn e820_type_numbers_map_to_kinds_and_unknown_ones_are_reserved() {
        assert_eq!(RegionKind::from_e820_type(1), Ram);
        assert_eq!(RegionKind::from_e820_type(2), Reserved);
        assert_eq!(RegionKind::from_e820_type(3), AcpiReclaimable);
        assert_eq!(RegionKind::from_e820_type(4), AcpiNvs);
        assert_eq!(RegionKind::from_e820_type(5), Unusable);
        for unknown in [0, 6, 7, 12, 0xf000_0000, u32::MAX] {
            assert_eq!(RegionKind::from_e820_type(unknown), Reserved);
        }
        for kind in [Ram, Reserved, AcpiReclaimable, AcpiNvs, Unusable] {
            assert_eq!(RegionKind::from_e820_type(kind.e820_type()), kind);
        }
    }

    #[test]
    fn region_len_and_is_empty() {
        let r = Region {
            start: 0x1000,
            end: 0x3000,
            kind: Ram,
        };
        assert_eq!(r.len(), 0x2000);
        assert!(!r.is_empty());
        let empty = Region {
            start: 5,
            end: 5,
            kind: Ram,
        };
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        let inverted = Region {
            start: 5,
            end: 3,
            kind: Ram,
        };
        assert!(inverted.is_empty());
        assert_eq!(inverted.len(), 0);
    }

    #[test]
    fn push_skips_zero_size_entries() {
        let mut map = MemoryMap::new();
        map.push(0x1000, 0, Ram).unwrap();
        map.push(u64::MAX, 0, Ram).unwrap();
        assert!(map.regions().is_empty());
        assert!(map.is_normalised());
    }

    #[test]
    fn push_rejects_entries_whose_end_overflows() {
        let mut map = MemoryMap::new();
        assert_eq!(
            map.push(u64::MAX, 1, Ram),
            Err(MemoryMapError::Overflow {
                start: u64::MAX,
                len: 1
            })
        );
        assert_eq!(
            map.push(0x1000, u64::MAX, Reserved),
            Err(MemoryMapError::Overflow {
                start: 0x1000,
                len: u64::MAX
            })
        );
        assert!(map.regions().is_empty());
        // Ending exactly at the top of the address space fits.
        map.push(u64::MAX - 0x1000, 0x1000, Ram).unwrap();
        assert_eq!(triples(&map), [(u64::MAX - 0x1000, u64::MAX, Ram)]);
    }

    #[test]
    fn push_beyond_capacity_is_an_error_and_keeps_the_map() {
        let mut map = MemoryMap::new();
        for i in 0..MEMMAP_CAPACITY as u64 {
            map.push(i * 0x2000, 0x1000, Ram).unwrap();
        }
        assert_eq!(
            map.push(0x1_0000_0000, 0x1000, Ram),
            Err(MemoryMapError::Full)
        );
        assert_eq!(map.regions().len(), MEMMAP_CAPACITY);
        assert_eq!(
            map.regions()[MEMMAP_CAPACITY - 1].start,
            (MEMMAP_CAPACITY as u64 - 1) * 0x2000
        );
    }

    #[test]
    fn push_clears_normalised_and_normalise_sets_it() {
        let mut map = MemoryMap::default();
        assert!(map.is_normalised());
        map.push(0, 0x1000, Ram).unwrap();
        assert!(!map.is_normalised());
        map.normalise().unwrap();
        assert!(map.is_normalised());
    }

    #[test]
    fn normalise_sorts_unsorted_entries() {
        let map = normalised(&[
            (0x10_0000, 0x1000, Ram),
            (0, 0x1000, Reserved),
            (0x5000, 0x1000, AcpiNvs),
        ]);
        assert_eq!(
            triples(&map),
            [
                (0, 0x1000, Reserved),
                (0x5000, 0x6000, AcpiNvs),
                (0x10_0000, 0x10_1000, Ram)
            ]
        );
    }

    #[test]
    fn normalise_merges_touching_and_overlapping_entries_of_one_kind() {
        let map = normalised(&[
            (0x3000, 0x1000, Ram),
            (0, 0x2000, Ram),
            (0x2000, 0x1000, Ram),
            (0x1000, 0x500, Ram),
            (0x10000, 0x1000, Reserved),
            (0x10800, 0x1000, Reserved),
        ]);
        assert_eq!(
            triples(&map),
            [(0, 0x4000, Ram), (0x10000, 0x11800, Reserved)]
        );
    }

    #[test]
    fn normalise_keeps_touching_entries_of_different_kinds_and_gaps_apart() {
        let map = normalised(&[
            (0, 0x1000, Ram),
            (0x1000, 0x1000, Reserved),
            (0x3000, 0x1000, Ram),
        ]);
        assert_eq!(
            triples(&map),
            [
                (0, 0x1000, Ram),
                (0x1000, 0x2000, Reserved),
                (0x3000, 0x4000, Ram)
            ]
        );
    }

    #[test]
    fn normalise_cuts_ram_where_other_kinds_overlap_it() {
        let map = normalised(&[
            (0, 0x10_0000, Ram),
            (0x9f000, 0x2000, Reserved), // straddles the end of a RAM piece
            (0x4_0000, 0x1000, AcpiReclaimable), // inside RAM
            (0xff000, 0x10000, Unusable), // straddles the end of RAM
        ]);
        assert_eq!(
            triples(&map),
            [
                (0, 0x4_0000, Ram),
                (0x4_0000, 0x4_1000, AcpiReclaimable),
                (0x4_1000, 0x9f000, Ram),
                (0x9f000, 0xa1000, Reserved),
                (0xa1000, 0xff000, Ram),
                (0xff000, 0x10f000, Unusable),
            ]
        );
    }

    #[test]
    fn normalise_drops_ram_entirely_covered_by_another_kind() {
        let map = normalised(&[(0x2000, 0x1000, Ram), (0x1000, 0x4000, AcpiNvs)]);
        assert_eq!(triples(&map), [(0x1000, 0x5000, AcpiNvs)]);
    }

    #[test]
    fn normalise_resolves_non_ram_overlaps_by_higher_type_number() {
        let map = normalised(&[(0, 0x4000, Reserved), (0x1000, 0x1000, AcpiReclaimable)]);
        assert_eq!(
            triples(&map),
            [
                (0, 0x1000, Reserved),
                (0x1000, 0x2000, AcpiReclaimable),
                (0x2000, 0x4000, Reserved)
            ]
        );
        let map = normalised(&[(0, 0x4000, Unusable), (0x1000, 0x1000, AcpiNvs)]);
        assert_eq!(triples(&map), [(0, 0x4000, Unusable)]);
    }

    #[test]
    fn normalise_handles_regions_ending_at_the_top_of_the_address_space() {
        let top = u64::MAX - 0x3000;
        let map = normalised(&[(top, 0x3000, Ram), (top + 0x1000, 0x1000, Reserved)]);
        assert_eq!(
            triples(&map),
            [
                (top, top + 0x1000, Ram),
                (top + 0x1000, top + 0x2000, Reserved),
                (top + 0x2000, u64::MAX, Ram),
            ]
        );
    }

    #[test]
    fn normalise_is_idempotent_and_handles_an_empty_map() {
        let mut map = MemoryMap::new();
        map.normalise().unwrap();
        assert!(map.regions().is_empty());
        let mut map = qemu_q35_map();
        let before = triples(&map);
        map.normalise().unwrap();
        assert_eq!(triples(&map), before);
    }

    #[test]
    fn normalise_that_would_overflow_capacity_fails_and_keeps_the_map() {
        // One RAM region punched by 127 reserved holes normalises into 255 regions.
        let mut map = MemoryMap::new();
        map.push(0, 0x1000_0000, Ram).unwrap();
        for i in 1..MEMMAP_CAPACITY as u64 {
            map.push(i * 0x10_0000, 0x1000, Reserved).unwrap();
        }
        let before = triples(&map);
        assert_eq!(map.normalise(), Err(MemoryMapError::Full));
        assert_eq!(triples(&map), before);
        assert!(!map.is_normalised());
    }

    #[test]
    fn ram_regions_are_page_aligned_and_empty_ones_dropped() {
        let map = normalised(&[
            (0x800, 0x2000, Ram),  // 0x800..0x2800 -> 0x1000..0x2000
            (0x5800, 0x800, Ram),  // 0x5800..0x6000 -> empty
            (0x7100, 0x200, Ram),  // within one page -> empty
            (0x9000, 0x1fff, Ram), // 0x9000..0xafff -> 0x9000..0xa000
            (0x10_0000, 0x1000, Reserved),
        ]);
        assert_eq!(ram(&map), [(0x1000, 0x2000), (0x9000, 0xa000)]);
    }

    #[test]
    fn ram_regions_near_the_top_of_the_address_space_do_not_overflow() {
        let map = normalised(&[(u64::MAX - 0x800, 0x800, Ram)]);
        assert_eq!(ram(&map), []);
        let map = normalised(&[(u64::MAX - 0x2fff, 0x2fff, Ram)]);
        assert_eq!(ram(&map), [(u64::MAX - 0x2fff, u64::MAX - 0xfff)]);
    }

    #[test]
    fn qemu_reserved_window_at_1_tib_is_not_ram() {
        let map = qemu_q35_map();
        assert_eq!(
            ram(&map),
            [
                (0, 0x9f000),
                (0x10_0000, 0x7ffe_0000),
                (0x1_0000_0000, 0x1_4000_0000)
            ]
        );
        assert_eq!(map.total_ram_bytes(), 0x9f000 + 0x7fee_0000 + 0x4000_0000);
        assert_eq!(map.max_ram_paddr(), Some(0x1_4000_0000));
        assert_eq!(map.ram_frame_span(), Some(Mfn(0)..Mfn(0x14_0000)));
    }

    #[test]
    fn ram_queries_on_a_map_without_ram() {
        let map = normalised(&[(0, 0x1000, Reserved), (0x2000, 0x800, Ram)]);
        assert_eq!(map.total_ram_bytes(), 0);
        assert_eq!(map.max_ram_paddr(), None);
        assert_eq!(map.ram_frame_span(), None);
    }

    #[test]
    fn ram_frame_span_runs_from_lowest_to_highest_ram_frame() {
        let map = normalised(&[(0x5_0800, 0x2000, Ram), (0x20_0000, 0x3000, Ram)]);
        assert_eq!(map.ram_frame_span(), Some(Mfn(0x51)..Mfn(0x203)));
    }

    #[test]
    fn remove_splits_trims_and_deletes_ram_only() {
        let mut map = normalised(&[
            (0, 0x10_0000, Ram),
            (0x10_0000, 0x1000, Reserved),
            (0x10_1000, 0x10_0000, Ram),
            (0x30_0000, 0x1000, Ram),
        ]);
        // The first MiB goes, the reserved page stays.
        map.remove(0..0x10_1000).unwrap();
        // A hole in the middle splits RAM.
        map.remove(0x18_0000..0x19_0000).unwrap();
        // A range covering a whole region deletes it; one overlapping the end trims it.
        map.remove(0x1f_0000..0x40_0000).unwrap();
        assert_eq!(
            triples(&map),
            [
                (0x10_0000, 0x10_1000, Reserved),
                (0x10_1000, 0x18_0000, Ram),
                (0x19_0000, 0x1f_0000, Ram),
            ]
        );
        assert!(map.is_normalised());
        assert_eq!(map.total_ram_bytes(), 0x7_f000 + 0x6_0000);
    }

    #[test]
    fn remove_of_an_empty_range_changes_nothing() {
        let mut map = normalised(&[(0, 0x10000, Ram)]);
        map.remove(0x5000..0x5000).unwrap();
        assert_eq!(triples(&map), [(0, 0x10000, Ram)]);
    }

    #[test]
    fn remove_rejects_an_inverted_range() {
        let mut map = normalised(&[(0, 0x10000, Ram)]);
        assert_eq!(
            map.remove(Range {
                start: 0x5000,
                end: 0x4000
            }),
            Err(MemoryMapError::InvalidRange {
                start: 0x5000,
                end: 0x4000
            })
        );
        assert_eq!(triples(&map), [(0, 0x10000, Ram)]);
    }

    #[test]
    fn remove_that_needs_a_region_a_full_map_lacks_fails_and_keeps_the_map() {
        let mut map = MemoryMap::new();
        for i in 0..MEMMAP_CAPACITY as u64 {
            map.push(i * 0x10000, 0x8000, Ram).unwrap();
        }
        map.normalise().unwrap();
        let before = triples(&map);
        assert_eq!(map.remove(0x1000..0x2000), Err(MemoryMapError::Full));
        assert_eq!(triples(&map), before);
        // Trimming needs no room.
        map.remove(0..0x1000).unwrap();
        assert_eq!(map.regions()[0].start, 0x1000);
    }

    fn kind_strategy() -> impl Strategy<Value = RegionKind> {
        prop_oneof![3 => Just(Ram), 1 => (0u32..8).prop_map(RegionKind::from_e820_type)]
    }

    /// Small entries in a small window, so they overlap and touch often; lengths are not
    /// page multiples, so rounding matters.
    fn entries_strategy() -> impl Strategy<Value = Vec<(u64, u64, RegionKind)>> {
        prop::collection::vec((0u64..0x40, 0u64..0x18, kind_strategy()), 0..24).prop_map(|v| {
            v.into_iter()
                .map(|(start, len, kind)| (start * 0x400, len * 0x400, kind))
                .collect()
        })
    }

    /// The kind the input says `addr` is: the highest-numbered kind among entries covering it.
    fn kind_at(entries: &[(u64, u64, RegionKind)], addr: u64) -> Option<RegionKind> {
        entries
            .iter()
            .filter(|&&(start, len, _)| start <= addr && addr < start + len)
            .map(|&(_, _, kind)| kind)
            .max_by_key(|kind| kind.e820_type())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn normalised_map_is_sorted_disjoint_merged_and_agrees_with_the_input(
            entries in entries_strategy(),
            cut in (0u64..0x60, 0u64..0x20),
        ) {
            let mut map = normalised(&entries);
            let regions = map.regions();
            for pair in regions.windows(2) {
                prop_assert!(pair[0].end <= pair[1].start);
                prop_assert!(pair[0].end < pair[1].start || pair[0].kind != pair[1].kind);
            }
            for r in regions {
                prop_assert!(r.start < r.end);
            }
            // Every 512-byte step (entries start and end on 1 KiB multiples) has the kind the
            // input gives it.
            for addr in (0..0x60 * 0x400).step_by(0x200) {
                let stored = regions.iter().find(|r| r.start <= addr && addr < r.end).map(|r| r.kind);
                prop_assert_eq!(stored, kind_at(&entries, addr));
            }
            // Usable RAM is page-aligned, sorted, and RAM for every byte.
            let mut total = 0;
            let mut prev_end = 0;
            for r in map.ram_regions() {
                prop_assert!(r.start % PAGE_SIZE == 0 && r.end % PAGE_SIZE == 0);
                prop_assert!(prev_end <= r.start && r.start < r.end);
                prop_assert_eq!(kind_at(&entries, r.start), Some(Ram));
                prop_assert_eq!(kind_at(&entries, r.end - 1), Some(Ram));
                total += r.end - r.start;
                prev_end = r.end;
            }
            prop_assert_eq!(map.total_ram_bytes(), total);
            prop_assert_eq!(map.max_ram_paddr(), map.ram_regions().last().map(|r| r.end));

            // Removing a range leaves exactly the RAM outside it, and the map normalised.
            let (cut_start, cut_end) = (cut.0 * 0x400, (cut.0 + cut.1) * 0x400);
            let before = map.clone();
            map.remove(cut_start..cut_end).unwrap();
            prop_assert!(map.is_normalised());
            for addr in (0..0x60 * 0x400).step_by(0x200) {
                let kind = |m: &MemoryMap| {
                    m.regions().iter().find(|r| r.start <= addr && addr < r.end).map(|r| r.kind)
                };
                let expected = match kind(&before) {
                    Some(Ram) if (cut_start..cut_end).contains(&addr) => None,
                    other => other,
                };
                prop_assert_eq!(kind(&map), expected);
            }
            for pair in map.regions().windows(2) {
                prop_assert!(pair[0].end <= pair[1].start);
            }
        }
    }
}
