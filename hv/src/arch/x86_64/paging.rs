//! hv's own page tables: the image mapped W^X at its link address, all RAM in the direct map
//! (non-executable), and device pages in the fixmap (uncached). Built once at boot, while the
//! boot tables still map the first 4 GiB at `DIRECTMAP_BASE`, from frames below 4 GiB.
//!
//! Every mapping is global: later PV guests share these PML4 slots, so hv's TLB entries
//! survive guest address-space switches.

use super::layout::{DIRECTMAP_BASE, FIXMAP_BASE};
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::structures::paging::PageTableFlags as F;

const PAGE: u64 = 4096;
const LARGE: u64 = 2 << 20;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The virtual address of physical `pa` in the direct map.
pub fn phys_to_virt(pa: u64) -> *mut u8 {
    (DIRECTMAP_BASE + pa) as *mut u8
}

/// The live PML4 (physical), once hv's tables are installed.
static ROOT: AtomicU64 = AtomicU64::new(0);
/// Whether NX may be used (EFER.NXE was set by the trampoline).
static NX: AtomicU64 = AtomicU64::new(0);

/// Errors while building mappings.
#[derive(Clone, Copy, Debug)]
pub enum MapError {
    /// No frame for a page table.
    OutOfFrames,
    /// The range is already mapped with a large page.
    Conflict(u64),
}

/// Builds page tables with frames from `alloc` (physical addresses of zeroed-or-not pages
/// below 4 GiB; they are zeroed here).
pub struct Builder<'a> {
    root: u64,
    alloc: &'a mut dyn FnMut() -> Option<u64>,
    /// Page-table frames used.
    pub frames: u64,
}

fn entry(table: u64, index: u64) -> *mut u64 {
    // Table frames are RAM below 4 GiB, which the boot tables and hv's tables both map.
    phys_to_virt(table + index * 8) as *mut u64
}

impl<'a> Builder<'a> {
    /// A builder with a fresh, empty PML4.
    pub fn new(alloc: &'a mut dyn FnMut() -> Option<u64>) -> Result<Self, MapError> {
        let mut b = Builder {
            root: 0,
            alloc,
            frames: 0,
        };
        b.root = b.table()?;
        Ok(b)
    }

    fn table(&mut self) -> Result<u64, MapError> {
        let pa = (self.alloc)().ok_or(MapError::OutOfFrames)?;
        // SAFETY: `pa` is a free RAM frame the allocator just handed out, mapped in the
        // direct map; nothing else refers to it yet.
        unsafe { core::ptr::write_bytes(phys_to_virt(pa), 0, PAGE as usize) };
        self.frames += 1;
        Ok(pa)
    }

    /// The next-level table under `table[index]`, created if absent. Intermediate entries
    /// are permissive (the leaf decides); `user` makes them reachable from ring 3.
    fn next(&mut self, table: u64, index: u64, user: bool) -> Result<u64, MapError> {
        let e = entry(table, index);
        let want =
            (F::PRESENT | F::WRITABLE).bits() | if user { F::USER_ACCESSIBLE.bits() } else { 0 };
        // SAFETY: `e` points into a page-table frame owned by this builder.
        let v = unsafe { e.read_volatile() };
        if v & F::PRESENT.bits() != 0 {
            if v & F::HUGE_PAGE.bits() != 0 {
                return Err(MapError::Conflict(v));
            }
            // SAFETY: as above; only permission bits are added.
            unsafe { e.write_volatile(v | want) };
            return Ok(v & ADDR_MASK);
        }
        let t = self.table()?;
        // SAFETY: as above.
        unsafe { e.write_volatile(t | want) };
        Ok(t)
    }

    fn map_one(&mut self, va: u64, pa: u64, flags: F, large: bool) -> Result<(), MapError> {
        let user = flags.contains(F::USER_ACCESSIBLE);
        let l4 = self.root;
        let l3 = self.next(l4, (va >> 39) & 511, user)?;
        let l2 = self.next(l3, (va >> 30) & 511, user)?;
        if large {
            // SAFETY: `l2` is a page-table frame owned by this builder.
            unsafe {
                entry(l2, (va >> 21) & 511).write_volatile(pa | (flags | F::HUGE_PAGE).bits())
            };
            return Ok(());
        }
        let l1 = self.next(l2, (va >> 21) & 511, user)?;
        // SAFETY: `l1` is a page-table frame owned by this builder.
        unsafe { entry(l1, (va >> 12) & 511).write_volatile(pa | flags.bits()) };
        Ok(())
    }

    /// Maps `[pa, pa + len)` at `va` with `flags`, using 2 MiB pages where alignment allows.
    pub fn map(&mut self, va: u64, pa: u64, len: u64, flags: F) -> Result<(), MapError> {
        let flags = effective(flags | F::PRESENT);
        let mut off = 0;
        while off < len {
            let (v, p) = (va + off, pa + off);
            let large = v % LARGE == 0 && p % LARGE == 0 && len - off >= LARGE;
            self.map_one(v, p, flags, large)?;
            off += if large { LARGE } else { PAGE };
        }
        Ok(())
    }

    /// Switches to the tables built so far.
    pub fn activate(self) {
        ROOT.store(self.root, Ordering::Relaxed);
        // SAFETY: the new tables map hv's image (text, data, stacks) at the addresses it runs
        // at, and the direct map the rest of boot uses, so execution continues unchanged.
        unsafe {
            core::arch::asm!("mov {}, %cr3", in(reg) self.root, options(att_syntax, nostack))
        };
    }
}

/// Drops NX where the CPU has none (the bit would be reserved).
fn effective(flags: F) -> F {
    if NX.load(Ordering::Relaxed) == 0 {
        flags - F::NO_EXECUTE
    } else {
        flags
    }
}

/// Records whether NX is usable (EFER.NXE).
pub fn set_nx(enabled: bool) {
    NX.store(u64::from(enabled), Ordering::Relaxed);
}

/// Maps one device page at fixmap slot `slot`, uncached, in the live tables.
pub fn map_fixmap(
    slot: u64,
    pa: u64,
    alloc: &mut dyn FnMut() -> Option<u64>,
) -> Result<*mut u8, MapError> {
    let va = FIXMAP_BASE + slot * PAGE;
    let mut b = Builder {
        root: ROOT.load(Ordering::Relaxed),
        alloc,
        frames: 0,
    };
    b.map_one(
        va,
        pa & !(PAGE - 1),
        effective(
            F::PRESENT | F::WRITABLE | F::NO_CACHE | F::WRITE_THROUGH | F::NO_EXECUTE | F::GLOBAL,
        ),
        false,
    )?;
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va));
    Ok(va as *mut u8)
}

/// Points the 4 KiB page at `va` in hv's live tables at `pa` with `flags` and flushes it.
/// The page must already be mapped with 4 KiB pages (hv's image is).
pub fn remap_4k(va: u64, pa: u64, flags: F) -> Result<(), MapError> {
    let mut t = root();
    for shift in [39u64, 30, 21] {
        // SAFETY: page-table frames of hv's live tables, in the direct map.
        let e = unsafe { entry(t, (va >> shift) & 511).read_volatile() };
        if e & F::PRESENT.bits() == 0 || e & F::HUGE_PAGE.bits() != 0 {
            return Err(MapError::Conflict(e));
        }
        t = e & ADDR_MASK;
    }
    // SAFETY: as above; the caller owns the mapping of `va`.
    unsafe { entry(t, (va >> 12) & 511).write_volatile(pa | effective(flags | F::PRESENT).bits()) };
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va));
    Ok(())
}

/// Physical address of hv's live PML4.
pub fn root() -> u64 {
    ROOT.load(Ordering::Relaxed)
}

/// hv's PML4 entries for Xen's reserved slots (256..272), which every PV guest's L4 shares.
pub fn hv_l4_slots() -> [u64; 16] {
    let mut slots = [0u64; 16];
    for (i, s) in slots.iter_mut().enumerate() {
        // SAFETY: the live PML4 is a page-table frame in the direct map; reading is harmless.
        *s = unsafe { entry(root(), 256 + i as u64).read_volatile() };
    }
    slots
}
