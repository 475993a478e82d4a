//! Translating an HVM guest's linear addresses to guest-physical ones by walking its own page
//! tables (SDM Vol. 3A 4.5, 4-level paging), for hypercall arguments and instruction fetches
//! that hv reads on the guest's behalf.
//!
//! The walk reads each entry through [`GuestPhysRead`] (the arch layer goes through EPT), so it
//! runs on the host against a fake memory. Supported: paging off (the address is the 32-bit
//! physical address) and 4-level paging (EFER.LMA) with 4 KiB, 2 MiB and 1 GiB pages.
//! Accesses are checked as the guest kernel's (supervisor) accesses: every level present,
//! and for writes writable at every level when CR0.WP is set. Legacy 32-bit and PAE paging
//! are [`WalkError::UnsupportedMode`].

/// Reads guest-physical memory.
pub trait GuestPhysRead {
    /// The little-endian u64 at guest-physical `gpa` (8-byte aligned), if it is RAM.
    fn read_u64(&self, gpa: u64) -> Option<u64>;
}

/// The control registers that decide how the guest translates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingState {
    /// CR0 as the guest sees it.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// IA32_EFER.
    pub efer: u64,
}

/// Why an address does not translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// An entry on the way is not present (the guest would take #PF).
    NotPresent,
    /// A write through a read-only entry with CR0.WP set.
    ReadOnly,
    /// A reserved bit is set (PS in a PML4 entry).
    Reserved,
    /// A paging-structure entry is not in the guest's RAM.
    TableUnreadable,
    /// The address is not canonical.
    NonCanonical,
    /// 32-bit or PAE paging: not supported by hv's walker.
    UnsupportedMode,
}

const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const EFER_LMA: u64 = 1 << 10;
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Physical-address bits 51:12 of an entry (bit 63, XD, excluded).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The guest-physical address of linear address `la` for a read (or, with `write`, a write).
pub fn translate(
    mem: &impl GuestPhysRead,
    st: &PagingState,
    la: u64,
    write: bool,
) -> Result<u64, WalkError> {
    if st.cr0 & CR0_PG == 0 {
        return Ok(la & 0xffff_ffff);
    }
    if st.efer & EFER_LMA == 0 {
        return Err(WalkError::UnsupportedMode);
    }
    if !crate::regs::is_canonical(la) {
        return Err(WalkError::NonCanonical);
    }
    let check_write = write && st.cr0 & CR0_WP != 0;
    let mut table = st.cr3 & ADDR_MASK;
    for level in (1..=4u32).rev() {
        let shift = 12 + 9 * (level - 1);
        let e = mem
            .read_u64(table + ((la >> shift) & 511) * 8)
            .ok_or(WalkError::TableUnreadable)?;
        if e & PRESENT == 0 {
            return Err(WalkError::NotPresent);
        }
        if check_write && e & WRITABLE == 0 {
            return Err(WalkError::ReadOnly);
        }
        if e & PAGE_SIZE_BIT != 0 {
            match level {
                4 => return Err(WalkError::Reserved),
                2 | 3 => {
                    let size = 1u64 << shift;
                    return Ok((e & ADDR_MASK & !(size - 1)) | (la & (size - 1)));
                }
                // PAT bit in a PTE, not a size.
                _ => {}
            }
        }
        table = e & ADDR_MASK;
    }
    Ok(table | (la & 0xfff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Mem(BTreeMap<u64, u64>);

    impl GuestPhysRead for Mem {
        fn read_u64(&self, gpa: u64) -> Option<u64> {
            // Tables live in frames 0x1000..0x10000; anything else is "not RAM".
            (0x1000..0x10000)
                .contains(&gpa)
                .then(|| *self.0.get(&gpa).unwrap_or(&0))
        }
    }

    const LONG: PagingState = PagingState {
        cr0: CR0_PG | CR0_WP | 1,
        cr3: 0x1000,
        efer: EFER_LMA | (1 << 8),
    };

    /// PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000.
    fn tables() -> Mem {
        let mut m = Mem::default();
        m.0.insert(0x1000, 0x2000 | 3);
        m.0.insert(0x2000, 0x3000 | 3);
        // PDPT[1]: a 1 GiB page at 0x8000_0000.
        m.0.insert(0x2008, 0x8000_0000 | 0x83);
        m.0.insert(0x3000, 0x4000 | 3);
        // PD[1]: a read-only 2 MiB page at 0x60_0000.
        m.0.insert(0x3008, 0x60_0000 | 0x81);
        // PT[5]: 4 KiB page at 0x7000, writable, with XD set.
        m.0.insert(0x4028, (1 << 63) | 0x7000 | 3);
        // PT[6]: read-only.
        m.0.insert(0x4030, 0x9000 | 1);
        m
    }

    #[test]
    fn unpaged_addresses_are_physical() {
        let m = Mem::default();
        let st = PagingState::default();
        assert_eq!(translate(&m, &st, 0x1234_5678, true), Ok(0x1234_5678));
        assert_eq!(translate(&m, &st, 0x1_0000_0010, false), Ok(0x10));
    }

    #[test]
    fn four_level_walks_with_every_page_size() {
        let m = tables();
        assert_eq!(translate(&m, &LONG, 0x5123, false), Ok(0x7123));
        assert_eq!(translate(&m, &LONG, 0x5123, true), Ok(0x7123));
        assert_eq!(translate(&m, &LONG, 0x20_1234, false), Ok(0x60_1234));
        assert_eq!(
            translate(&m, &LONG, 0x4000_0000 + 0x12_3456, false),
            Ok(0x8012_3456)
        );
    }

    #[test]
    fn faults_are_reported() {
        let m = tables();
        assert_eq!(
            translate(&m, &LONG, 0x8000, false),
            Err(WalkError::NotPresent)
        );
        assert_eq!(translate(&m, &LONG, 0x6000, true), Err(WalkError::ReadOnly));
        assert_eq!(
            translate(&m, &LONG, 0x20_0000, true),
            Err(WalkError::ReadOnly)
        );
        // Without CR0.WP the supervisor may write read-only pages.
        let no_wp = PagingState {
            cr0: LONG.cr0 & !CR0_WP,
            ..LONG
        };
        assert_eq!(translate(&m, &no_wp, 0x6008, true), Ok(0x9008));
        assert_eq!(
            translate(&m, &LONG, 0x0000_8000_0000_0000, false),
            Err(WalkError::NonCanonical)
        );
        let legacy = PagingState { efer: 0, ..LONG };
        assert_eq!(
            translate(&m, &legacy, 0x5000, false),
            Err(WalkError::UnsupportedMode)
        );
    }

    #[test]
    fn bad_tables_are_errors_not_panics() {
        let mut m = tables();
        // A PML4 entry with PS set is reserved.
        m.0.insert(0x1008, 0x2000 | 0x83);
        assert_eq!(
            translate(&m, &LONG, 0x80_0000_0000, false),
            Err(WalkError::Reserved)
        );
        // A table pointer outside RAM.
        m.0.insert(0x1010, 0xdead_0000 | 3);
        assert_eq!(
            translate(&m, &LONG, 0x100_0000_0000, false),
            Err(WalkError::TableUnreadable)
        );
    }
}
