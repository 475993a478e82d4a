//! x86_64 4-level page-table arithmetic as a PV guest sees it: entries hold machine frame
//! numbers, and a guest changes an entry by naming its machine address to `mmu_update`.

/// The entry maps something.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Writes are allowed.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// User-mode accesses are allowed (Xen sets this on every 64-bit PV mapping anyway).
pub const PTE_USER: u64 = 1 << 2;
/// Set by the CPU on access.
pub const PTE_ACCESSED: u64 = 1 << 5;
/// Set by the CPU on write (leaf entries).
pub const PTE_DIRTY: u64 = 1 << 6;
/// A large page (L2/L3 entries).
pub const PTE_LARGE: u64 = 1 << 7;
/// The frame-number bits of an entry.
pub const PTE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Entries per table.
pub const ENTRIES: usize = 512;

/// Page-fault error code: the page was present (a protection fault).
pub const PF_PRESENT: u64 = 1 << 0;
/// Page-fault error code: the access was a write.
pub const PF_WRITE: u64 = 1 << 1;
/// Page-fault error code: the access came from user mode.
pub const PF_USER: u64 = 1 << 2;

/// The table indices of `va`, top level (L4) first.
pub const fn table_indices(va: u64) -> [usize; 4] {
    [
        ((va >> 39) & 0x1ff) as usize,
        ((va >> 30) & 0x1ff) as usize,
        ((va >> 21) & 0x1ff) as usize,
        ((va >> 12) & 0x1ff) as usize,
    ]
}

/// An entry mapping machine frame `mfn` with `flags`.
pub const fn pte(mfn: u64, flags: u64) -> u64 {
    ((mfn << 12) & PTE_ADDR_MASK) | flags
}

/// The machine frame an entry points at.
pub const fn pte_mfn(entry: u64) -> u64 {
    (entry & PTE_ADDR_MASK) >> 12
}

/// The machine address of entry `index` of the table in frame `table_mfn`, the form
/// `mmu_update` takes (its low two bits then select the update type).
pub const fn entry_maddr(table_mfn: u64, index: usize) -> u64 {
    (table_mfn << 12) + (index as u64) * 8
}

/// Whether `va` is canonical (bits 63..47 all equal).
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_split_the_address() {
        assert_eq!(table_indices(0), [0, 0, 0, 0]);
        assert_eq!(table_indices(0x4000_0000), [0, 1, 0, 0]);
        assert_eq!(table_indices(0x10_0000), [0, 0, 0, 0x100]);
        assert_eq!(table_indices(0xffff_8000_0000_0000), [256, 0, 0, 0]);
        assert_eq!(table_indices(0x7f_ffff_f000), [0, 511, 511, 511]);
    }

    #[test]
    fn entries_round_trip() {
        let e = pte(0x12345, PTE_PRESENT | PTE_WRITABLE);
        assert_eq!(e, 0x1234_5003);
        assert_eq!(pte_mfn(e), 0x12345);
        assert_eq!(pte_mfn(e | (1 << 63) | PTE_DIRTY), 0x12345);
        assert_eq!(entry_maddr(0x10, 3), 0x10018);
    }

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0));
        assert!(is_canonical(0x7fff_ffff_ffff));
        assert!(!is_canonical(0x8000_0000_0000));
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(!is_canonical(0xfff0_0000_0000_0000));
    }
}
