//! The HVM domain builder: a PVH guest's memory at start of day (`docs/misc/pvh.pandoc`,
//! `xen/include/public/arch-x86/hvm/start_info.h`), and the real-mode start of a boot sector.
//!
//! # Guest-physical memory ([`GuestMemmap`])
//!
//! A PC's layout, as Xen's PVH dom0 builder gives its guest a copy of the host's map with the
//! RAM clipped to the domain's size:
//!
//! - RAM `[0, 0xa0000)`: conventional memory (640 KiB);
//! - reserved `[0xa0000, 0x100000)`: the legacy VGA window and ROM area, not backed;
//! - RAM from 1 MiB up to [`LOW_RAM_END`] (3.75 GiB), the rest of the domain's pages;
//! - reserved special pages just below [`SPECIAL_REGION_END`] (0xff000000, where Xen's
//!   toolstack puts its special pages): backed, for the console and xenstore rings;
//! - RAM from 4 GiB for pages that did not fit below the MMIO hole.
//!
//! The builder writes through [`GuestPhysMemory`] (guest frame -> writable page), so it runs on
//! the host against a fake memory; it expects zeroed pages and writes only what it places.
//!
//! # PVH layout ([`build_pvh`])
//!
//! Segments load at their physical addresses (`p_paddr`, below 4 GiB: the entry runs unpaged).
//! After the kernel's end, each part page aligned: the module (if any), then one block with
//! `hvm_start_info` (version 1), the module list, the memory map and the command line, 8-byte
//! aligned one after another. If that does not fit in RAM after the kernel, the module and
//! block go just below the kernel instead. Nothing is placed at address 0, which the ABI
//! reads as "absent".
//!
//! # Entry state
//!
//! What `pvh.pandoc` requires: EIP = PHYS32_ENTRY, EBX = the `hvm_start_info` address, 32-bit
//! protected mode with paging off (CR0 = PE | ET, CR4 = 0, EFER = 0), flat 4 GiB CS
//! (execute/read) and DS/ES (read/write), a 32-bit busy TSS with base 0 and limit 0x67 in TR,
//! RFLAGS = 2 (IF, TF and VM clear). Selectors are unspecified by the ABI; hv uses 0x08 for
//! CS, 0x10 for the data segments (SS, FS and GS are flat data as well) and 0x18 for TR, the
//! LDTR is unusable, GDTR and IDTR are empty.

use core::mem::size_of;
use core::ops::Range;

use hypercall_abi::hvm::{
    HvmMemmapTableEntry, HvmMemmapType, HvmModlistEntry, HvmStartInfo, XEN_HVM_START_MAGIC_VALUE,
};
use hypercall_abi::xen::{SIF_INITDOMAIN, SIF_PRIVILEGED};

use super::{Gfn, Gpr, Gprs, SegmentAttrs, SegmentState, TableReg, VcpuStartState};
use crate::domain::elf::{Segment, XenImage};
use crate::mm::guest_access::bytes_of;
use crate::mm::PAGE_BYTES;

const PAGE: u64 = PAGE_BYTES as u64;
/// End of conventional memory.
pub const CONVENTIONAL_END: u64 = 0xa_0000;
/// End of the legacy hole (1 MiB).
pub const LEGACY_HOLE_END: u64 = 0x10_0000;
/// RAM below 4 GiB ends here; above it is the MMIO hole (IOAPIC, HPET, LAPIC, ...).
pub const LOW_RAM_END: u64 = 0xf000_0000;
/// End of the special-page region.
pub const SPECIAL_REGION_END: u64 = 0xff00_0000;
/// Most special pages a domain can have.
pub const MAX_SPECIAL_PAGES: u64 = 16;
/// 4 GiB.
const FOUR_GIB: u64 = 1 << 32;
/// Where a boot sector is loaded.
pub const BOOT_SECTOR_ADDR: u64 = 0x7c00;
/// Longest command line written (the terminating NUL follows).
pub const MAX_CMDLINE: usize = 1023;

/// The guest-physical memory of the domain being built.
pub trait GuestPhysMemory {
    /// The contents of guest frame `gfn`, if the domain has a page there.
    fn page_mut(&mut self, gfn: Gfn) -> Option<&mut [u8; PAGE_BYTES]>;
}

/// Why a domain could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The image has no XEN_ELFNOTE_PHYS32_ENTRY.
    NoPhys32Entry,
    /// The domain has no pages.
    NoMemory,
    /// More special pages than [`MAX_SPECIAL_PAGES`].
    TooManySpecialPages,
    /// A segment (its physical start) does not lie inside one RAM region below 4 GiB.
    SegmentOutsideRam(u64),
    /// The entry point is not inside a loaded segment.
    EntryOutsideImage(u32),
    /// The module and `hvm_start_info` block fit neither after nor before the kernel.
    NoRoom,
    /// A page the memory map calls RAM is not in [`GuestPhysMemory`] (the caller's bug).
    PageMissing(Gfn),
    /// A boot sector image shorter than 512 bytes or too long for conventional memory.
    BootSectorSize(usize),
    /// A boot sector without the 0x55 0xaa signature at bytes 510-511.
    BootSectorSignature,
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoPhys32Entry => write!(f, "the image has no XEN_ELFNOTE_PHYS32_ENTRY"),
            Self::NoMemory => write!(f, "the domain has no memory"),
            Self::TooManySpecialPages => {
                write!(f, "more than {MAX_SPECIAL_PAGES} special pages")
            }
            Self::SegmentOutsideRam(at) => write!(f, "a segment at {at:#x} is outside RAM"),
            Self::EntryOutsideImage(at) => {
                write!(f, "the entry point {at:#x} is outside the image")
            }
            Self::NoRoom => write!(f, "no room for the module and hvm_start_info"),
            Self::PageMissing(gfn) => write!(f, "guest frame {:#x} is not backed", gfn.0),
            Self::BootSectorSize(len) => write!(
                f,
                "not a boot sector: {len} bytes (at least 512, and it must end below {CONVENTIONAL_END:#x} when loaded at {BOOT_SECTOR_ADDR:#x})"
            ),
            Self::BootSectorSignature => {
                write!(f, "not a boot sector: no 0x55 0xaa signature at bytes 510-511")
            }
        }
    }
}

/// What a region of the guest-physical map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// RAM, backed by the domain's pages.
    Ram,
    /// The legacy hole: reserved, not backed.
    LegacyHole,
    /// Special pages: reserved in the map, backed by the domain's pages.
    Special,
}

/// One region, `[start, end)` in guest-physical bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Start (page aligned).
    pub start: u64,
    /// End (page aligned).
    pub end: u64,
    /// What it holds.
    pub kind: RegionKind,
}

impl Region {
    /// The region as `hvm_memmap_table_entry` (and E820) describe it.
    pub const fn memmap_entry(&self) -> HvmMemmapTableEntry {
        let kind = match self.kind {
            RegionKind::Ram => HvmMemmapType::Ram,
            RegionKind::LegacyHole | RegionKind::Special => HvmMemmapType::Reserved,
        };
        HvmMemmapTableEntry {
            addr: self.start,
            size: self.end - self.start,
            kind: kind as u32,
            reserved: 0,
        }
    }

    /// Whether the region is backed by the domain's pages.
    pub const fn backed(&self) -> bool {
        !matches!(self.kind, RegionKind::LegacyHole)
    }
}

/// Most regions a [`GuestMemmap`] has.
const MAX_REGIONS: usize = 5;

/// A domain's guest-physical map (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMemmap {
    regions: [Region; MAX_REGIONS],
    len: usize,
}

impl GuestMemmap {
    /// The map of a domain with `nr_pages` pages of RAM and `special_pages` special pages.
    pub fn pc(nr_pages: u64, special_pages: u64) -> Result<Self, BuildError> {
        if nr_pages == 0 {
            return Err(BuildError::NoMemory);
        }
        if special_pages > MAX_SPECIAL_PAGES {
            return Err(BuildError::TooManySpecialPages);
        }
        let empty = Region {
            start: 0,
            end: 0,
            kind: RegionKind::Ram,
        };
        let mut map = GuestMemmap {
            regions: [empty; MAX_REGIONS],
            len: 0,
        };
        let mut left = nr_pages;
        // The end of RAM from `start` that is at most `end`, taking pages from `left`.
        let take = |start: u64, end: u64, left: &mut u64| {
            let pages = ((end - start) / PAGE).min(*left);
            *left -= pages;
            start + pages * PAGE
        };
        let conv_end = take(0, CONVENTIONAL_END, &mut left);
        map.push(0, conv_end, RegionKind::Ram);
        map.push(CONVENTIONAL_END, LEGACY_HOLE_END, RegionKind::LegacyHole);
        if left > 0 {
            let end = take(LEGACY_HOLE_END, LOW_RAM_END, &mut left);
            map.push(LEGACY_HOLE_END, end, RegionKind::Ram);
        }
        if special_pages > 0 {
            let start = SPECIAL_REGION_END - special_pages * PAGE;
            map.push(start, SPECIAL_REGION_END, RegionKind::Special);
        }
        if left > 0 {
            map.push(FOUR_GIB, FOUR_GIB + left * PAGE, RegionKind::Ram);
        }
        Ok(map)
    }

    fn push(&mut self, start: u64, end: u64, kind: RegionKind) {
        if let Some(slot) = self.regions.get_mut(self.len) {
            *slot = Region { start, end, kind };
            self.len += 1;
        }
    }

    /// The regions in address order.
    pub fn regions(&self) -> &[Region] {
        self.regions.get(..self.len).unwrap_or(&[])
    }

    /// Whether `[start, end)` is non-empty and lies inside one RAM region.
    pub fn is_ram(&self, start: u64, end: u64) -> bool {
        start < end
            && self
                .regions()
                .iter()
                .any(|r| r.kind == RegionKind::Ram && r.start <= start && end <= r.end)
    }

    /// Guest frame of special page `i`, if the domain has that many.
    pub fn special_gfn(&self, i: u64) -> Option<Gfn> {
        let r = self
            .regions()
            .iter()
            .find(|r| r.kind == RegionKind::Special)?;
        let gpa = r.start.checked_add(i.checked_mul(PAGE)?)?;
        (gpa < r.end).then_some(Gfn::from_gpa(gpa))
    }
}

/// The kernel to boot through its PVH entry point.
#[derive(Clone, Copy, Debug)]
pub struct PvhKernel<'a> {
    /// Loadable segments; each goes to its `paddr`.
    pub segments: &'a [Segment<'a>],
    /// XEN_ELFNOTE_PHYS32_ENTRY.
    pub entry: u32,
}

impl<'a> PvhKernel<'a> {
    /// The PVH view of a parsed image.
    pub fn from_image(image: &'a XenImage<'a>) -> Result<Self, BuildError> {
        Ok(PvhKernel {
            segments: image.segments(),
            entry: image.phys32_entry().ok_or(BuildError::NoPhys32Entry)?,
        })
    }
}

/// What the builder needs besides the kernel and the memory.
#[derive(Clone, Copy, Debug)]
pub struct PvhParams<'a> {
    /// `SIF_PRIVILEGED` and/or `SIF_INITDOMAIN`; other bits are dropped.
    pub flags: u32,
    /// Kernel command line (truncated to [`MAX_CMDLINE`] bytes); empty means none.
    pub cmdline: &'a str,
    /// The module (initrd); an empty one counts as none.
    pub module: Option<&'a [u8]>,
}

/// Where the builder put things, in guest-physical addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvhLayout {
    /// The kernel, from its lowest segment to its highest end.
    pub kernel: Range<u64>,
    /// The module's bytes.
    pub module: Option<Range<u64>>,
    /// `hvm_start_info` (EBX), page aligned.
    pub start_info: u64,
    /// The module list, if there is a module.
    pub modlist: Option<u64>,
    /// The memory map.
    pub memmap: u64,
    /// The command line, if any.
    pub cmdline: Option<u64>,
    /// End of the block that starts with `hvm_start_info`.
    pub info_end: u64,
}

const fn align_up(v: u64, a: u64) -> u64 {
    (v + a - 1) & !(a - 1)
}

/// Copies `bytes` to guest-physical `gpa`.
fn write_phys(mem: &mut impl GuestPhysMemory, gpa: u64, bytes: &[u8]) -> Result<(), BuildError> {
    let mut addr = gpa;
    let mut rest = bytes;
    while !rest.is_empty() {
        let gfn = Gfn::from_gpa(addr);
        let page = mem.page_mut(gfn).ok_or(BuildError::PageMissing(gfn))?;
        let off = (addr % PAGE) as usize;
        let n = rest.len().min(PAGE_BYTES - off);
        let (now, later) = rest.split_at(n);
        if let Some(dst) = page.get_mut(off..off + n) {
            dst.copy_from_slice(now);
        }
        rest = later;
        addr += n as u64;
    }
    Ok(())
}

/// Zeroes `len` bytes at guest-physical `gpa`.
fn zero_phys(mem: &mut impl GuestPhysMemory, gpa: u64, len: u64) -> Result<(), BuildError> {
    let zeros = [0u8; PAGE_BYTES];
    let mut done = 0;
    while done < len {
        let addr = gpa + done;
        let n = (len - done).min(PAGE - addr % PAGE);
        write_phys(mem, addr, zeros.get(..n as usize).unwrap_or(&[]))?;
        done += n;
    }
    Ok(())
}

/// The `hvm_start_info` block: its size and where each part sits relative to its start.
struct InfoBlock {
    modlist: Option<u64>,
    memmap: u64,
    cmdline: Option<u64>,
    size: u64,
}

impl InfoBlock {
    fn new(has_module: bool, memmap_entries: usize, cmdline_len: usize) -> Self {
        let mut off = align_up(size_of::<HvmStartInfo>() as u64, 8);
        let modlist = has_module.then_some(off);
        if has_module {
            off += size_of::<HvmModlistEntry>() as u64;
        }
        let memmap = off;
        off += (memmap_entries * size_of::<HvmMemmapTableEntry>()) as u64;
        let cmdline = (cmdline_len > 0).then_some(off);
        if cmdline_len > 0 {
            off += cmdline_len as u64 + 1;
        }
        InfoBlock {
            modlist,
            memmap,
            cmdline,
            size: off,
        }
    }
}

/// Loads `kernel` into `mem`, writes `hvm_start_info` and its companions, and returns where
/// everything went and the boot vCPU's state.
pub fn build_pvh(
    mem: &mut impl GuestPhysMemory,
    memmap: &GuestMemmap,
    kernel: &PvhKernel<'_>,
    params: &PvhParams<'_>,
) -> Result<(PvhLayout, VcpuStartState), BuildError> {
    // Check every segment, then the entry point, before writing anything.
    let mut kstart = u64::MAX;
    let mut kend = 0;
    for seg in kernel.segments {
        let end = seg
            .paddr
            .checked_add(seg.memsz)
            .ok_or(BuildError::SegmentOutsideRam(seg.paddr))?;
        if end > FOUR_GIB || !memmap.is_ram(seg.paddr, end) {
            return Err(BuildError::SegmentOutsideRam(seg.paddr));
        }
        kstart = kstart.min(seg.paddr);
        kend = kend.max(end);
    }
    let entry = u64::from(kernel.entry);
    if !kernel
        .segments
        .iter()
        .any(|s| s.paddr <= entry && entry < s.paddr + s.memsz)
    {
        return Err(BuildError::EntryOutsideImage(kernel.entry));
    }

    let module = params.module.filter(|m| !m.is_empty());
    let cmdline = params.cmdline.as_bytes();
    let cmdline = cmdline.get(..MAX_CMDLINE).unwrap_or(cmdline);
    let regions = memmap.regions();
    let block = InfoBlock::new(module.is_some(), regions.len(), cmdline.len());
    let module_pages = module.map_or(0, |m| align_up(m.len() as u64, PAGE));
    let total = module_pages + block.size;

    // After the kernel, else just below it.
    let after = align_up(kend, PAGE);
    let below = kstart
        .checked_sub(align_up(total, PAGE))
        .map(|a| a & !(PAGE - 1));
    let base = [Some(after), below]
        .into_iter()
        .flatten()
        .find(|&b| b >= PAGE && memmap.is_ram(b, b + total))
        .ok_or(BuildError::NoRoom)?;

    for seg in kernel.segments {
        write_phys(mem, seg.paddr, seg.data)?;
        let filesz = seg.data.len() as u64;
        if seg.memsz > filesz {
            zero_phys(mem, seg.paddr + filesz, seg.memsz - filesz)?;
        }
    }

    let module_range = module.map(|m| base..base + m.len() as u64);
    if let Some(m) = module {
        write_phys(mem, base, m)?;
    }
    let si_addr = base + module_pages;
    let at = |off: Option<u64>| off.map(|o| si_addr + o);
    let layout = PvhLayout {
        kernel: kstart..kend,
        module: module_range.clone(),
        start_info: si_addr,
        modlist: at(block.modlist),
        memmap: si_addr + block.memmap,
        cmdline: at(block.cmdline),
        info_end: si_addr + block.size,
    };

    let info = HvmStartInfo {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        flags: params.flags & (SIF_PRIVILEGED | SIF_INITDOMAIN),
        nr_modules: u32::from(module.is_some()),
        modlist_paddr: layout.modlist.unwrap_or(0),
        cmdline_paddr: layout.cmdline.unwrap_or(0),
        rsdp_paddr: 0,
        memmap_paddr: layout.memmap,
        memmap_entries: regions.len() as u32,
        reserved: 0,
    };
    write_phys(mem, si_addr, bytes_of(&info))?;
    if let (Some(addr), Some(range)) = (layout.modlist, module_range) {
        let entry = HvmModlistEntry {
            paddr: range.start,
            size: range.end - range.start,
            cmdline_paddr: 0,
            reserved: 0,
        };
        write_phys(mem, addr, bytes_of(&entry))?;
    }
    for (i, r) in regions.iter().enumerate() {
        let addr = layout.memmap + (i * size_of::<HvmMemmapTableEntry>()) as u64;
        write_phys(mem, addr, bytes_of(&r.memmap_entry()))?;
    }
    if let Some(addr) = layout.cmdline {
        write_phys(mem, addr, cmdline)?;
        write_phys(mem, addr + cmdline.len() as u64, &[0])?;
    }

    let state = pvh_start_state(kernel.entry, si_addr as u32);
    Ok((layout, state))
}

/// A flat 4 GiB segment.
const fn flat(selector: u16, attrs: SegmentAttrs) -> SegmentState {
    SegmentState {
        selector,
        base: 0,
        limit: 0xffff_ffff,
        attrs: Some(attrs),
    }
}

/// A real-mode segment: base = selector * 16, 64 KiB limit.
const fn real(selector: u16, attrs: SegmentAttrs) -> SegmentState {
    SegmentState {
        selector,
        base: (selector as u64) << 4,
        limit: 0xffff,
        attrs: Some(attrs),
    }
}

/// CR0.PE and CR0.ET.
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
/// RFLAGS bit 1 is always 1.
const RFLAGS_FIXED: u64 = 1 << 1;

/// The PVH entry state (see the module documentation).
pub fn pvh_start_state(entry: u32, start_info: u32) -> VcpuStartState {
    let mut gprs = Gprs::default();
    gprs.set(Gpr::Rbx, u64::from(start_info));
    let data = flat(0x10, SegmentAttrs::DATA32);
    VcpuStartState {
        gprs,
        rip: u64::from(entry),
        rflags: RFLAGS_FIXED,
        cr0: CR0_PE | CR0_ET,
        cr3: 0,
        cr4: 0,
        efer: 0,
        cs: flat(0x08, SegmentAttrs::CODE32),
        ds: data,
        es: data,
        ss: data,
        fs: data,
        gs: data,
        tr: SegmentState {
            selector: 0x18,
            base: 0,
            limit: 0x67,
            attrs: Some(SegmentAttrs::TSS32_BUSY),
        },
        ldtr: SegmentState::UNUSABLE,
        gdtr: TableReg::default(),
        idtr: TableReg::default(),
    }
}

/// Checks that `image` is a boot sector [`build_real_mode`] can load: at least 512 bytes,
/// ending below [`CONVENTIONAL_END`] at [`BOOT_SECTOR_ADDR`], with the 0x55 0xaa signature at
/// bytes 510-511.
pub fn check_boot_sector(image: &[u8]) -> Result<(), BuildError> {
    let end = BOOT_SECTOR_ADDR.saturating_add(image.len() as u64);
    if image.len() < 512 || end > CONVENTIONAL_END {
        return Err(BuildError::BootSectorSize(image.len()));
    }
    if image.get(510..512) != Some(&[0x55, 0xaa][..]) {
        return Err(BuildError::BootSectorSignature);
    }
    Ok(())
}

/// Loads a boot sector (as [`check_boot_sector`] requires; all of it, where a BIOS would read
/// only the first 512 bytes) at 0x7c00 and returns the state a BIOS leaves for it: real mode,
/// CS:IP = 0:0x7c00, all segments 0, SS:SP = 0:0x7c00, DL = 0x80 (the first hard disk), IDTR
/// covering the real-mode vector table (base 0, limit 0x3ff), interrupts off. No BIOS is
/// loaded: the vector table is zeroed memory and `int` services do not exist.
pub fn build_real_mode(
    mem: &mut impl GuestPhysMemory,
    memmap: &GuestMemmap,
    image: &[u8],
) -> Result<VcpuStartState, BuildError> {
    check_boot_sector(image)?;
    let end = BOOT_SECTOR_ADDR + image.len() as u64;
    if !memmap.is_ram(BOOT_SECTOR_ADDR, end) {
        return Err(BuildError::SegmentOutsideRam(BOOT_SECTOR_ADDR));
    }
    write_phys(mem, BOOT_SECTOR_ADDR, image)?;
    let mut gprs = Gprs::default();
    gprs.set(Gpr::Rdx, 0x80);
    gprs.set(Gpr::Rsp, BOOT_SECTOR_ADDR);
    let data = real(0, SegmentAttrs::DATA16);
    Ok(VcpuStartState {
        gprs,
        rip: BOOT_SECTOR_ADDR,
        rflags: RFLAGS_FIXED,
        cr0: CR0_ET,
        cr3: 0,
        cr4: 0,
        efer: 0,
        cs: real(0, SegmentAttrs::CODE16),
        ds: data,
        es: data,
        ss: data,
        fs: data,
        gs: data,
        tr: SegmentState {
            selector: 0,
            base: 0,
            limit: 0xffff,
            attrs: Some(SegmentAttrs::TSS32_BUSY),
        },
        ldtr: SegmentState::UNUSABLE,
        gdtr: TableReg {
            base: 0,
            limit: 0xffff,
        },
        idtr: TableReg {
            base: 0,
            limit: 0x3ff,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::elf::testimg::{note_u32, Seg, Spec};
    use crate::domain::elf::{PF_R, PF_W, PF_X};
    use hypercall_abi::elfnote::XenElfnote;
    use std::collections::BTreeMap;

    /// Pages for every backed region of a map.
    struct FakeMem {
        pages: BTreeMap<u64, Box<[u8; PAGE_BYTES]>>,
    }

    impl FakeMem {
        fn for_map(map: &GuestMemmap) -> Self {
            let mut pages = BTreeMap::new();
            for r in map.regions().iter().filter(|r| r.backed()) {
                for gfn in r.start / PAGE..r.end / PAGE {
                    pages.insert(gfn, Box::new([0u8; PAGE_BYTES]));
                }
            }
            FakeMem { pages }
        }

        fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
            (gpa..gpa + len as u64)
                .map(|a| self.pages[&(a / PAGE)][(a % PAGE) as usize])
                .collect()
        }

        fn u32(&self, gpa: u64) -> u32 {
            u32::from_le_bytes(self.read(gpa, 4).try_into().unwrap())
        }

        fn u64(&self, gpa: u64) -> u64 {
            u64::from_le_bytes(self.read(gpa, 8).try_into().unwrap())
        }
    }

    impl GuestPhysMemory for FakeMem {
        fn page_mut(&mut self, gfn: Gfn) -> Option<&mut [u8; PAGE_BYTES]> {
            self.pages.get_mut(&gfn.0).map(|p| &mut **p)
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn small_guest_memory_map() {
        let map = GuestMemmap::pc(16 * 1024, 2).unwrap();
        let r = map.regions();
        assert_eq!(r.len(), 4);
        assert_eq!(
            (r[0].start, r[0].end, r[0].kind),
            (0, 0xa_0000, RegionKind::Ram)
        );
        assert_eq!(
            (r[1].start, r[1].end, r[1].kind),
            (0xa_0000, 0x10_0000, RegionKind::LegacyHole)
        );
        // 64 MiB of RAM: the 96 pages of the hole continue after 64 MiB.
        assert_eq!((r[2].start, r[2].end), (MIB, 64 * MIB + 0x6_0000));
        assert_eq!(
            (r[3].start, r[3].end, r[3].kind),
            (0xfeff_e000, 0xff00_0000, RegionKind::Special)
        );
        let ram: u64 = r
            .iter()
            .filter(|r| r.kind == RegionKind::Ram)
            .map(|r| (r.end - r.start) / PAGE)
            .sum();
        assert_eq!(ram, 16 * 1024);
        assert_eq!(map.special_gfn(0), Some(Gfn(0xfeffe)));
        assert_eq!(map.special_gfn(1), Some(Gfn(0xfefff)));
        assert_eq!(map.special_gfn(2), None);
        assert_eq!(map.special_gfn(u64::MAX), None);
        assert_eq!(r[1].memmap_entry().kind, HvmMemmapType::Reserved as u32);
        assert_eq!(r[3].memmap_entry().kind, HvmMemmapType::Reserved as u32);
        assert_eq!(
            r[2].memmap_entry(),
            HvmMemmapTableEntry {
                addr: MIB,
                size: 63 * MIB + 0x6_0000,
                kind: 1,
                reserved: 0
            }
        );
        assert!(map.is_ram(0x1000, 0x2000));
        assert!(!map.is_ram(0x9_f000, 0xa_1000));
        assert!(!map.is_ram(0x1000, 0x1000));
    }

    #[test]
    fn big_and_tiny_memory_maps() {
        // 4 GiB of RAM: the part above 3.75 GiB, plus the legacy hole's, goes above 4 GiB.
        let map = GuestMemmap::pc(1 << 20, 0).unwrap();
        let r = map.regions();
        assert_eq!(r.len(), 4);
        assert_eq!((r[2].start, r[2].end), (MIB, LOW_RAM_END));
        let low = 0xa0 + (LOW_RAM_END - MIB) / PAGE;
        assert_eq!(
            (r[3].start, r[3].end),
            (1 << 32, (1 << 32) + ((1 << 20) - low) * PAGE)
        );
        // 100 pages: only conventional memory.
        let map = GuestMemmap::pc(100, 0).unwrap();
        assert_eq!(map.regions().len(), 2);
        assert_eq!(map.regions()[0].end, 100 * PAGE);
        assert_eq!(GuestMemmap::pc(0, 0), Err(BuildError::NoMemory));
        assert_eq!(GuestMemmap::pc(1, 17), Err(BuildError::TooManySpecialPages));
    }

    fn pvh_image(segs: Vec<Seg>, entry: u32) -> Vec<u8> {
        Spec {
            entry: u64::from(entry),
            segs,
            notes: vec![note_u32(XenElfnote::Phys32Entry, entry)],
            notes_in_section: false,
        }
        .build()
    }

    #[test]
    fn pvh_guest_start_of_day() {
        let elf = pvh_image(
            vec![
                Seg::new(0x10_0000, 0x2345, 0x3000, PF_R | PF_X),
                Seg::new(0x10_4000, 0x100, 0x2000, PF_R | PF_W),
            ],
            0x10_0010,
        );
        let img = XenImage::parse(&elf).unwrap();
        let kernel = PvhKernel::from_image(&img).unwrap();
        let map = GuestMemmap::pc(16 * 1024, 2).unwrap();
        let mut mem = FakeMem::for_map(&map);
        // Dirty the bss to see it zeroed.
        mem.page_mut(Gfn(0x104)).unwrap()[0x200] = 0xee;
        let module = vec![0x5a; 5000];
        let params = PvhParams {
            flags: SIF_PRIVILEGED | SIF_INITDOMAIN | (1 << 4),
            cmdline: "console=hvc0 quiet",
            module: Some(&module),
        };
        let (layout, state) = build_pvh(&mut mem, &map, &kernel, &params).unwrap();

        // Kernel 0x100000-0x106000, module at the next page, info block after the module.
        assert_eq!(layout.kernel, 0x10_0000..0x10_6000);
        assert_eq!(layout.module, Some(0x10_6000..0x10_6000 + 5000));
        assert_eq!(layout.start_info, 0x10_8000);
        assert_eq!(layout.modlist, Some(0x10_8038));
        assert_eq!(layout.memmap, 0x10_8058);
        assert_eq!(layout.cmdline, Some(0x10_8058 + 4 * 24));
        assert_eq!(layout.info_end, 0x10_8058 + 4 * 24 + 19);

        // Segments: file bytes, then zeros.
        assert_eq!(mem.read(0x10_0000, 0x2345), img.segments()[0].data);
        assert!(mem.read(0x10_2345, 0xcbb).iter().all(|&b| b == 0));
        assert_eq!(mem.read(0x10_4000, 0x100), img.segments()[1].data);
        assert_eq!(mem.read(0x10_4200, 1), [0]);
        assert_eq!(mem.read(0x10_6000, 5000), module);

        // hvm_start_info.
        let si = layout.start_info;
        assert_eq!(mem.u32(si), 0x336e_c578);
        assert_eq!(mem.u32(si + 4), 1);
        assert_eq!(mem.u32(si + 8), 3);
        assert_eq!(mem.u32(si + 12), 1);
        assert_eq!(mem.u64(si + 16), 0x10_8038);
        assert_eq!(mem.u64(si + 24), layout.cmdline.unwrap());
        assert_eq!(mem.u64(si + 32), 0);
        assert_eq!(mem.u64(si + 40), layout.memmap);
        assert_eq!(mem.u32(si + 48), 4);
        // The module list entry.
        assert_eq!(mem.u64(0x10_8038), 0x10_6000);
        assert_eq!(mem.u64(0x10_8040), 5000);
        assert_eq!(mem.u64(0x10_8048), 0);
        // The memory map, entry by entry.
        for (i, r) in map.regions().iter().enumerate() {
            let e = layout.memmap + 24 * i as u64;
            let want = r.memmap_entry();
            assert_eq!(
                (mem.u64(e), mem.u64(e + 8), mem.u32(e + 16)),
                (want.addr, want.size, want.kind)
            );
        }
        // The command line, NUL terminated.
        let cl = layout.cmdline.unwrap();
        assert_eq!(mem.read(cl, 19), b"console=hvc0 quiet\0");

        // Entry state.
        assert_eq!(state.rip, 0x10_0010);
        assert_eq!(state.gprs.get(Gpr::Rbx), 0x10_8000);
        assert_eq!(state.cr0, 0x11);
        assert_eq!((state.cr4, state.efer, state.rflags), (0, 0, 2));
        assert_eq!(state.cs.limit, 0xffff_ffff);
        assert_eq!(state.cs.attrs.unwrap().vmx(), 0xc09b);
        assert_eq!(state.ds.attrs.unwrap().vmx(), 0xc093);
        assert_eq!(state.es, state.ds);
        assert_eq!((state.tr.base, state.tr.limit), (0, 0x67));
        assert_eq!(state.tr.attrs.unwrap().vmx(), 0x8b);
        assert_eq!(state.ldtr.vmx_access_rights(), 0x1_0000);
    }

    #[test]
    fn pvh_without_module_or_cmdline_and_placed_below_the_kernel() {
        // A kernel that ends exactly at the end of RAM: the block goes below it.
        let map = GuestMemmap::pc(1024, 0).unwrap();
        let ram_end = map.regions()[2].end;
        let start = ram_end - 0x2000;
        let elf = pvh_image(
            vec![Seg::new(start, 0x100, 0x2000, PF_R | PF_X)],
            start as u32,
        );
        let img = XenImage::parse(&elf).unwrap();
        let kernel = PvhKernel::from_image(&img).unwrap();
        let mut mem = FakeMem::for_map(&map);
        let params = PvhParams {
            flags: 0,
            cmdline: "",
            module: Some(&[]),
        };
        let (layout, state) = build_pvh(&mut mem, &map, &kernel, &params).unwrap();
        assert_eq!(layout.start_info, start - 0x1000);
        assert_eq!(
            (layout.module, layout.modlist, layout.cmdline),
            (None, None, None)
        );
        let si = layout.start_info;
        assert_eq!(mem.u32(si + 8), 0);
        assert_eq!(mem.u32(si + 12), 0);
        assert_eq!(mem.u64(si + 16), 0);
        assert_eq!(mem.u64(si + 24), 0);
        assert_eq!(mem.u32(si + 48), 3);
        assert_eq!(state.gprs.get(Gpr::Rbx), si);
    }

    #[test]
    fn long_command_lines_are_truncated() {
        let elf = pvh_image(
            vec![Seg::new(0x10_0000, 0x10, 0x1000, PF_R | PF_X)],
            0x10_0000,
        );
        let img = XenImage::parse(&elf).unwrap();
        let kernel = PvhKernel::from_image(&img).unwrap();
        let map = GuestMemmap::pc(1024, 0).unwrap();
        let mut mem = FakeMem::for_map(&map);
        let long = "x".repeat(5000);
        let params = PvhParams {
            flags: 0,
            cmdline: &long,
            module: None,
        };
        let (layout, _) = build_pvh(&mut mem, &map, &kernel, &params).unwrap();
        let cl = layout.cmdline.unwrap();
        assert_eq!(mem.read(cl + 1022, 2), b"x\0");
        assert_eq!(layout.info_end, cl + 1024);
    }

    #[test]
    fn bad_kernels_are_refused_before_anything_is_written() {
        let map = GuestMemmap::pc(1024, 0).unwrap();
        let params = PvhParams {
            flags: 0,
            cmdline: "",
            module: None,
        };
        let check = |segs: &[Segment<'_>], entry: u32| {
            let mut mem = FakeMem::for_map(&map);
            let k = PvhKernel {
                segments: segs,
                entry,
            };
            let r = build_pvh(&mut mem, &map, &k, &params).map(|_| ());
            assert!(mem.pages.values().all(|p| p.iter().all(|&b| b == 0)));
            r
        };
        let seg = |paddr: u64, memsz: u64| Segment {
            vaddr: paddr,
            paddr,
            load_va: paddr,
            memsz,
            data: &[1, 2, 3],
            flags: PF_R,
        };
        // Into the legacy hole, across the end of RAM, above 4 GiB, wrapping.
        assert_eq!(
            check(&[seg(0xa_0000, 0x1000)], 0xa_0000),
            Err(BuildError::SegmentOutsideRam(0xa_0000))
        );
        assert_eq!(
            check(&[seg(0x45_f800, 0x1000)], 0x45_f800),
            Err(BuildError::SegmentOutsideRam(0x45_f800))
        );
        assert_eq!(
            check(&[seg(u64::MAX - 1, 0x10)], 0),
            Err(BuildError::SegmentOutsideRam(u64::MAX - 1))
        );
        assert_eq!(
            check(&[seg(0x10_0000, 0x1000)], 0x10_1000),
            Err(BuildError::EntryOutsideImage(0x10_1000))
        );
        // A kernel filling all RAM above 1 MiB with nothing below: no room for the block.
        let full = map.regions()[2].end - MIB;
        assert_eq!(check(&[seg(MIB, full)], 0x10_0000), Err(BuildError::NoRoom));
        // A PV-only image has no PVH entry.
        let pv = Spec::pv_0x100000().build();
        let img = XenImage::parse(&pv).unwrap();
        assert_eq!(
            PvhKernel::from_image(&img).map(|_| ()),
            Err(BuildError::NoPhys32Entry)
        );
    }

    #[test]
    fn a_missing_page_is_reported() {
        let map = GuestMemmap::pc(1024, 0).unwrap();
        let mut mem = FakeMem::for_map(&map);
        mem.pages.remove(&0x100);
        let k = PvhKernel {
            segments: &[Segment {
                vaddr: MIB,
                paddr: MIB,
                load_va: MIB,
                memsz: 0x10,
                data: &[0x90],
                flags: PF_R | PF_X,
            }],
            entry: MIB as u32,
        };
        let params = PvhParams {
            flags: 0,
            cmdline: "",
            module: None,
        };
        assert_eq!(
            build_pvh(&mut mem, &map, &k, &params).map(|_| ()),
            Err(BuildError::PageMissing(Gfn(0x100)))
        );
    }

    #[test]
    fn boot_sector_real_mode_start() {
        let map = GuestMemmap::pc(1024, 0).unwrap();
        let mut mem = FakeMem::for_map(&map);
        let mut sector = vec![0xf4; 512];
        sector[510] = 0x55;
        sector[511] = 0xaa;
        let s = build_real_mode(&mut mem, &map, &sector).unwrap();
        assert_eq!(mem.read(0x7c00, 512), sector);
        assert_eq!(s.rip, 0x7c00);
        assert_eq!((s.cs.selector, s.cs.base, s.cs.limit), (0, 0, 0xffff));
        assert_eq!(s.cs.attrs.unwrap().vmx(), 0x9b);
        assert_eq!(s.ss.attrs.unwrap().vmx(), 0x93);
        assert_eq!(s.gprs.get(Gpr::Rdx), 0x80);
        assert_eq!(s.gprs.get(Gpr::Rsp), 0x7c00);
        assert_eq!(s.cr0 & 1, 0, "protected mode");
        assert_eq!(s.rflags, 2);
        assert_eq!((s.idtr.base, s.idtr.limit), (0, 0x3ff));
        assert_eq!(
            crate::hvm::CpuMode::from_state(s.cr0, s.efer, s.cs.attrs.unwrap()),
            crate::hvm::CpuMode::Bits16
        );

        assert_eq!(check_boot_sector(&sector), Ok(()));
        sector[511] = 0;
        assert_eq!(
            build_real_mode(&mut mem, &map, &sector),
            Err(BuildError::BootSectorSignature)
        );
        assert_eq!(
            check_boot_sector(&sector),
            Err(BuildError::BootSectorSignature)
        );
        assert!(BuildError::BootSectorSignature
            .to_string()
            .contains("no 0x55 0xaa signature"));
        assert!(BuildError::BootSectorSize(100)
            .to_string()
            .contains("100 bytes"));
        assert_eq!(
            build_real_mode(&mut mem, &map, &[0; 100]),
            Err(BuildError::BootSectorSize(100))
        );
        let huge = vec![0; 0xa_0000];
        assert_eq!(
            build_real_mode(&mut mem, &map, &huge),
            Err(BuildError::BootSectorSize(0xa_0000))
        );
    }
}
