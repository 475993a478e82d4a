//! Translating an HVM guest's linear addresses to guest-physical ones by walking its own page
//! tables, for hypercall arguments and instruction fetches that hv reads on the guest's
//! behalf.
//!
//! The walk reads each entry through [`GuestPhysRead`] (the arch layer goes through EPT), so it
//! runs on the host against a fake memory. The paging mode follows from CR0.PG, CR4.PAE and
//! EFER.LMA as on the processor (SDM Vol. 3A 4.1.1):
//!
//! - paging off: the address is the 32-bit physical address;
//! - 32-bit paging (SDM 4.3): a page directory of 1024 4-byte entries at CR3, 4 KiB pages,
//!   and 4 MiB pages when CR4.PSE is set (physical bits 39:32 from PDE bits 20:13);
//! - PAE paging (SDM 4.4): four PDPTEs at CR3 bits 31:5, 2 MiB and 4 KiB pages, 8-byte
//!   entries; bit 63 is execute-disable when EFER.NXE is set;
//! - 4-level paging (SDM 4.5, EFER.LMA): 4 KiB, 2 MiB and 1 GiB pages. 5-level paging
//!   (CR4.LA57) is [`WalkError::UnsupportedMode`].
//!
//! PAE PDPTEs are read from memory at each walk; the processor uses the copies it loaded when
//! CR3 (or CR0/CR4) was last written, which differ only if the guest changed its PDPT without
//! reloading CR3.
//!
//! Accesses are checked as the guest kernel's (supervisor) accesses: every level present, for
//! writes writable at every level when CR0.WP is set (PAE PDPTEs have no R/W bit), and for
//! fetches no level execute-disable when EFER.NXE is set. Reserved bits that do not depend on
//! the physical-address width are checked: PS in a PML4 entry, bit 21 of a 4 MiB PDE, PDPTE
//! bits 2:1, 8:5 and 63, the low address bits of 2 MiB and 1 GiB page entries, and bit 63
//! when EFER.NXE is clear. Address bits beyond the guest's physical-address width are taken
//! as they are: such an address is not RAM, so reading through it fails later.

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
    /// CR4 as the guest sees it.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
}

/// The kind of access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Fetch,
}

/// Why an address does not translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// An entry on the way is not present (the guest would take #PF).
    NotPresent,
    /// A write through a read-only entry with CR0.WP set.
    ReadOnly,
    /// A fetch through an execute-disable entry with EFER.NXE set.
    NotExecutable,
    /// A reserved bit is set (see the module documentation for which are checked).
    Reserved,
    /// A paging-structure entry is not in the guest's RAM.
    TableUnreadable,
    /// The address is not canonical.
    NonCanonical,
    /// 5-level paging: not supported by hv's walker.
    UnsupportedMode,
}

const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
const XD: u64 = 1 << 63;
/// Physical-address bits 51:12 of a PAE-format entry (bit 63, XD, excluded).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Physical-address bits 31:12 of a 32-bit paging entry.
const ADDR_MASK_32: u64 = 0xffff_f000;
/// A 4 MiB PDE: bit 21 is reserved (bits 20:13 are physical bits 39:32).
const PDE_4M_RESERVED: u64 = 1 << 21;
/// A PAE PDPTE: bits 2:1, 8:5 and 63 are reserved.
const PDPTE_RESERVED: u64 = (0b11 << 1) | (0b1111 << 5) | XD;
/// CR3 bits 31:5: the PAE PDPT.
const PAE_CR3_MASK: u64 = 0xffff_ffe0;

/// The guest-physical address of linear address `la` for `access`.
pub fn walk(
    mem: &impl GuestPhysRead,
    st: &PagingState,
    la: u64,
    access: Access,
) -> Result<u64, WalkError> {
    if st.cr0 & CR0_PG == 0 {
        return Ok(la & 0xffff_ffff);
    }
    let checks = Checks {
        write: access == Access::Write && st.cr0 & CR0_WP != 0,
        fetch_nx: access == Access::Fetch && st.efer & EFER_NXE != 0,
        nxe: st.efer & EFER_NXE != 0,
    };
    if st.cr4 & CR4_PAE == 0 {
        walk_32(mem, st, la & 0xffff_ffff, &checks)
    } else if st.efer & EFER_LMA == 0 {
        walk_pae(mem, st, la & 0xffff_ffff, &checks)
    } else if st.cr4 & CR4_LA57 != 0 {
        Err(WalkError::UnsupportedMode)
    } else {
        if !crate::regs::is_canonical(la) {
            return Err(WalkError::NonCanonical);
        }
        walk_levels(mem, st.cr3 & ADDR_MASK, la, 4, &checks)
    }
}

/// The access checks every entry of a walk goes through.
struct Checks {
    /// A write with CR0.WP set: every level must be writable.
    write: bool,
    /// A fetch with EFER.NXE set: no level may be execute-disable.
    fetch_nx: bool,
    /// EFER.NXE: bit 63 of a PAE-format entry is XD, else reserved.
    nxe: bool,
}

impl Checks {
    /// Checks one present-or-not entry; `pae_format` says whether bit 63 is XD-or-reserved.
    fn entry(&self, e: u64, pae_format: bool) -> Result<(), WalkError> {
        if e & PRESENT == 0 {
            return Err(WalkError::NotPresent);
        }
        if pae_format && !self.nxe && e & XD != 0 {
            return Err(WalkError::Reserved);
        }
        if self.write && e & WRITABLE == 0 {
            return Err(WalkError::ReadOnly);
        }
        if self.fetch_nx && e & XD != 0 {
            return Err(WalkError::NotExecutable);
        }
        Ok(())
    }
}

/// The 4-byte entry at guest-physical `gpa` (4-byte aligned).
fn read_u32(mem: &impl GuestPhysRead, gpa: u64) -> Result<u64, WalkError> {
    let q = mem.read_u64(gpa & !7).ok_or(WalkError::TableUnreadable)?;
    Ok(if gpa & 4 == 0 {
        q & 0xffff_ffff
    } else {
        q >> 32
    })
}

/// 32-bit paging (SDM 4.3).
fn walk_32(
    mem: &impl GuestPhysRead,
    st: &PagingState,
    la: u64,
    checks: &Checks,
) -> Result<u64, WalkError> {
    let pde = read_u32(mem, (st.cr3 & ADDR_MASK_32) + (la >> 22) * 4)?;
    checks.entry(pde, false)?;
    if pde & PAGE_SIZE_BIT != 0 && st.cr4 & CR4_PSE != 0 {
        if pde & PDE_4M_RESERVED != 0 {
            return Err(WalkError::Reserved);
        }
        let high = ((pde >> 13) & 0xff) << 32;
        return Ok(high | (pde & 0xffc0_0000) | (la & 0x3f_ffff));
    }
    let pte = read_u32(mem, (pde & ADDR_MASK_32) + ((la >> 12) & 1023) * 4)?;
    checks.entry(pte, false)?;
    Ok((pte & ADDR_MASK_32) | (la & 0xfff))
}

/// PAE paging (SDM 4.4): the PDPTE, then a 2-level walk.
fn walk_pae(
    mem: &impl GuestPhysRead,
    st: &PagingState,
    la: u64,
    checks: &Checks,
) -> Result<u64, WalkError> {
    let pdpte = mem
        .read_u64((st.cr3 & PAE_CR3_MASK) + (la >> 30) * 8)
        .ok_or(WalkError::TableUnreadable)?;
    if pdpte & PRESENT == 0 {
        return Err(WalkError::NotPresent);
    }
    if pdpte & PDPTE_RESERVED != 0 {
        return Err(WalkError::Reserved);
    }
    walk_levels(mem, pdpte & ADDR_MASK, la, 2, checks)
}

/// The PAE-format levels `top..=1` from `table` (4-level paging: PML4 down; PAE: the page
/// directory down).
fn walk_levels(
    mem: &impl GuestPhysRead,
    mut table: u64,
    la: u64,
    top: u32,
    checks: &Checks,
) -> Result<u64, WalkError> {
    for level in (1..=top).rev() {
        let shift = 12 + 9 * (level - 1);
        let e = mem
            .read_u64(table + ((la >> shift) & 511) * 8)
            .ok_or(WalkError::TableUnreadable)?;
        checks.entry(e, true)?;
        if e & PAGE_SIZE_BIT != 0 {
            match level {
                4 => return Err(WalkError::Reserved),
                2 | 3 => {
                    let size = 1u64 << shift;
                    // Bits 12 (PAT) and 13..shift-1 of a large-page entry: only PAT is
                    // defined; the rest of the in-page offset bits are reserved.
                    if e & ADDR_MASK & (size - 1) & !(1 << 12) != 0 {
                        return Err(WalkError::Reserved);
                    }
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

    /// A read (or, with `write`, a write) of `la`.
    fn translate(m: &Mem, st: &PagingState, la: u64, write: bool) -> Result<u64, WalkError> {
        walk(m, st, la, if write { Access::Write } else { Access::Read })
    }

    #[derive(Default)]
    struct Mem(BTreeMap<u64, u64>);

    impl Mem {
        /// Stores a 4-byte entry (32-bit paging) inside its 8-byte word.
        fn set32(&mut self, gpa: u64, v: u32) {
            let q = self.0.entry(gpa & !7).or_insert(0);
            let shift = (gpa & 4) * 8;
            *q = (*q & !(0xffff_ffff << shift)) | (u64::from(v) << shift);
        }
    }

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
        cr4: CR4_PAE,
        efer: EFER_LMA | EFER_NXE | (1 << 8),
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
        m.0.insert(0x4028, XD | 0x7000 | 3);
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
        assert_eq!(walk(&m, &LONG, 0x6010, Access::Fetch), Ok(0x9010));
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
        assert_eq!(
            walk(&m, &LONG, 0x5000, Access::Fetch),
            Err(WalkError::NotExecutable)
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
        let la57 = PagingState {
            cr4: LONG.cr4 | CR4_LA57,
            ..LONG
        };
        assert_eq!(
            translate(&m, &la57, 0x5000, false),
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
        // XD without EFER.NXE is a reserved bit.
        let no_nxe = PagingState {
            efer: LONG.efer & !EFER_NXE,
            ..LONG
        };
        assert_eq!(
            translate(&m, &no_nxe, 0x5000, false),
            Err(WalkError::Reserved)
        );
        assert_eq!(translate(&m, &no_nxe, 0x6000, false), Ok(0x9000));
        // An address bit inside a 1 GiB page's offset (bit 13..29).
        m.0.insert(0x2010, 0x8000_0000 | (1 << 20) | 0x83);
        assert_eq!(
            translate(&m, &LONG, 0x8000_0000, false),
            Err(WalkError::Reserved)
        );
    }

    /// 32-bit paging: page directory at 0x1000, page table at 0x2000.
    fn tables_32() -> Mem {
        let mut m = Mem::default();
        // PDE[0]: the page table, writable.
        m.set32(0x1000, 0x2000 | 3);
        // PDE[1]: a writable 4 MiB page at 0x8000_0000.
        m.set32(0x1004, 0x8000_0000 | 0x83);
        // PDE[2]: a 4 MiB page at physical 0x3_c000_0000 (bits 39:32 in PDE bits 20:13).
        m.set32(0x1008, 0xc000_0000 | (3 << 13) | 0x83);
        // PDE[3]: the same page table, read-only.
        m.set32(0x100c, 0x2000 | 1);
        // PDE[4]: a 4 MiB page with reserved bit 21 set.
        m.set32(0x1010, 0x4000_0000 | (1 << 21) | 0x83);
        // PTE[5]: 0x7000 writable; PTE[6]: 0x9000 read-only.
        m.set32(0x2014, 0x7000 | 3);
        m.set32(0x2018, 0x9000 | 1);
        m
    }

    const PAGING_32: PagingState = PagingState {
        cr0: CR0_PG | CR0_WP | 1,
        cr3: 0x1000,
        cr4: CR4_PSE,
        efer: 0,
    };

    #[test]
    fn thirty_two_bit_paging_walks_4k_and_4m_pages() {
        let m = tables_32();
        let st = PAGING_32;
        assert_eq!(translate(&m, &st, 0x5123, false), Ok(0x7123));
        assert_eq!(translate(&m, &st, 0x5123, true), Ok(0x7123));
        assert_eq!(translate(&m, &st, 0x6ffc, false), Ok(0x9ffc));
        assert_eq!(translate(&m, &st, 0x41_2345, true), Ok(0x8001_2345));
        assert_eq!(translate(&m, &st, 0x80_1234, false), Ok(0x3_c000_1234));
        // Only the low 32 bits of the address count.
        assert_eq!(translate(&m, &st, 0x1_0000_5123, false), Ok(0x7123));
        // XD does not exist here: fetches are reads.
        assert_eq!(walk(&m, &st, 0x5000, Access::Fetch), Ok(0x7000));
        // Without CR4.PSE the PS bit is ignored: PDE[1] names a page table at 0x8000_0000,
        // which is not RAM.
        let no_pse = PagingState { cr4: 0, ..st };
        assert_eq!(translate(&m, &no_pse, 0x5123, false), Ok(0x7123));
        assert_eq!(
            translate(&m, &no_pse, 0x40_0000, false),
            Err(WalkError::TableUnreadable)
        );
    }

    #[test]
    fn thirty_two_bit_paging_faults() {
        let m = tables_32();
        let st = PAGING_32;
        // PTE[7] and PDE[5] are empty.
        assert_eq!(
            translate(&m, &st, 0x7000, false),
            Err(WalkError::NotPresent)
        );
        assert_eq!(
            translate(&m, &st, 0x140_0000, false),
            Err(WalkError::NotPresent)
        );
        // Read-only PTE, and a read-only PDE over a writable PTE.
        assert_eq!(translate(&m, &st, 0x6000, true), Err(WalkError::ReadOnly));
        assert_eq!(
            translate(&m, &st, 0xc0_5000, true),
            Err(WalkError::ReadOnly)
        );
        assert_eq!(translate(&m, &st, 0xc0_5000, false), Ok(0x7000));
        let no_wp = PagingState {
            cr0: st.cr0 & !CR0_WP,
            ..st
        };
        assert_eq!(translate(&m, &no_wp, 0x6000, true), Ok(0x9000));
        assert_eq!(translate(&m, &no_wp, 0xc0_5000, true), Ok(0x7000));
        assert_eq!(
            translate(&m, &st, 0x100_0000, false),
            Err(WalkError::Reserved)
        );
    }

    /// PAE paging: PDPT at 0x1020 (CR3 is 32-byte aligned), page directory at 0x2000, page
    /// table at 0x4000.
    fn tables_pae() -> Mem {
        let mut m = Mem::default();
        m.0.insert(0x1020, 0x2000 | 1);
        // PDPTE[1] is not present; PDPTE[2] has reserved bit 1 (R/W) and PDPTE[3] bit 63.
        m.0.insert(0x1030, 0x2000 | 3);
        m.0.insert(0x1038, XD | 0x2000 | 1);
        m.0.insert(0x2000, 0x4000 | 3);
        // PD[1]: a read-only 2 MiB page; PD[2]: a writable XD one; PD[3]: bit 13 set.
        m.0.insert(0x2008, 0x60_0000 | 0x81);
        m.0.insert(0x2010, XD | 0x80_0000 | 0x83);
        m.0.insert(0x2018, 0xa0_0000 | (1 << 13) | 0x83);
        // PT[5]: writable and XD; PT[6]: read-only.
        m.0.insert(0x4028, XD | 0x7000 | 3);
        m.0.insert(0x4030, 0x9000 | 1);
        m
    }

    const PAE: PagingState = PagingState {
        cr0: CR0_PG | CR0_WP | 1,
        cr3: 0x1020,
        cr4: CR4_PAE,
        efer: EFER_NXE,
    };

    #[test]
    fn pae_paging_walks_4k_and_2m_pages() {
        let m = tables_pae();
        assert_eq!(translate(&m, &PAE, 0x5123, false), Ok(0x7123));
        assert_eq!(translate(&m, &PAE, 0x5123, true), Ok(0x7123));
        assert_eq!(translate(&m, &PAE, 0x6008, false), Ok(0x9008));
        assert_eq!(translate(&m, &PAE, 0x21_2345, false), Ok(0x61_2345));
        assert_eq!(translate(&m, &PAE, 0x41_2345, true), Ok(0x81_2345));
        assert_eq!(translate(&m, &PAE, 0x1_0000_5123, false), Ok(0x7123));
        assert_eq!(walk(&m, &PAE, 0x6000, Access::Fetch), Ok(0x9000));
    }

    #[test]
    fn pae_paging_faults() {
        let m = tables_pae();
        assert_eq!(
            translate(&m, &PAE, 0x7000, false),
            Err(WalkError::NotPresent)
        );
        assert_eq!(
            translate(&m, &PAE, 0x4000_0000, false),
            Err(WalkError::NotPresent)
        );
        assert_eq!(translate(&m, &PAE, 0x6000, true), Err(WalkError::ReadOnly));
        assert_eq!(
            translate(&m, &PAE, 0x20_0000, true),
            Err(WalkError::ReadOnly)
        );
        let no_wp = PagingState {
            cr0: PAE.cr0 & !CR0_WP,
            ..PAE
        };
        assert_eq!(translate(&m, &no_wp, 0x20_0000, true), Ok(0x60_0000));
        assert_eq!(
            walk(&m, &PAE, 0x5000, Access::Fetch),
            Err(WalkError::NotExecutable)
        );
        assert_eq!(
            walk(&m, &PAE, 0x40_0000, Access::Fetch),
            Err(WalkError::NotExecutable)
        );
        // Reserved bits: in PDPTEs, in a 2 MiB page's offset bits, and XD without NXE.
        for la in [0x8000_0000, 0xc000_0000, 0x60_0000] {
            assert_eq!(
                translate(&m, &PAE, la, false),
                Err(WalkError::Reserved),
                "{la:#x}"
            );
        }
        let no_nxe = PagingState { efer: 0, ..PAE };
        assert_eq!(
            translate(&m, &no_nxe, 0x5000, false),
            Err(WalkError::Reserved)
        );
        assert_eq!(
            walk(&m, &no_nxe, 0x40_0000, Access::Fetch),
            Err(WalkError::Reserved)
        );
        assert_eq!(translate(&m, &no_nxe, 0x6000, false), Ok(0x9000));
        // A PDPT outside RAM.
        let far = PagingState {
            cr3: 0xdead_0000,
            ..PAE
        };
        assert_eq!(
            translate(&m, &far, 0x5000, false),
            Err(WalkError::TableUnreadable)
        );
    }
}
