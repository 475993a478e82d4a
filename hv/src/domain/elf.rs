//! Guest kernel images: ELF64 x86_64 files carrying Xen's ELF notes.
//!
//! [`XenImage::parse`] reads a guest kernel from a boot bundle without allocating and treats
//! every byte as hostile: every offset, size and address is checked with overflow-safe
//! arithmetic, and anything malformed is an [`ElfError`], never a panic or an out-of-bounds
//! slice. An accepted image satisfies the invariants the domain builder relies on (listed on
//! [`XenImage`]).
//!
//! # What is read, following Xen's libelf (`libelf-dominfo.c`, Xen 4.17)
//!
//! - Loadable segments are `PT_LOAD` entries with at least one of R/W/X set (libelf's
//!   `elf_phdr_is_loadable`). Segments with `p_memsz == 0` load nothing and are skipped.
//!   Xen loads a segment by its *physical* address: it lands at guest virtual address
//!   `p_paddr + (virt_base - paddr_offset)` ([`Segment::load_va`]); `p_vaddr` is kept for
//!   reference only.
//! - Notes come from the `PT_NOTE` segments (those with `p_offset == 0` are skipped, as libelf
//!   does for old binutils output). Only if they hold no note named `"Xen"` are the
//!   `SHT_NOTE` sections read instead. The legacy `__xen_guest` section is not supported.
//!   Notes are padded to 4 bytes (8 when the segment's or section's alignment is 8); at most
//!   [`MAX_NOTES`] notes of any name are read, like libelf's `ELF_MAX_TOTAL_NOTE_COUNT`. A
//!   repeated note replaces the earlier one, except SUPPORTED_FEATURES, whose bits add up.
//! - Numeric notes are little-endian integers of 1, 2, 4 or 8 bytes (libelf's
//!   `elf_note_numeric`); libelf reads any other width as 0, this parser rejects it.
//!   SUPPORTED_FEATURES is an array of 32-bit words of which word 0 is used
//!   (`XENFEAT_NR_SUBMAPS` is 1). String notes end at their first NUL (or at the end of the
//!   descriptor) and must be UTF-8.
//! - FEATURES is `name|name|...`; a name prefixed with `!` is *required*, which also makes it
//!   supported. An unknown optional name is ignored, an unknown required name rejects the
//!   image (libelf's `elf_xen_parse_features`). Names are those of
//!   [`XenFeature::from_name`], a superset of the seven libelf knows.
//!
//! # Checks and defaults, following `elf_xen_note_check` and `elf_xen_addr_calc_check`
//!
//! - A PV image ([`ImageKind::Pv`]) needs XEN_VERSION starting with `"xen-3.0"`, and LOADER
//!   starting with `"generic"` or GUEST_OS starting with `"linux"`. An image whose only
//!   loader information is PHYS32_ENTRY is [`ImageKind::PvhOnly`] and needs neither.
//! - PADDR_OFFSET without VIRT_BASE is an error. VIRT_BASE absent means 0. PADDR_OFFSET
//!   absent means 0: Xen defaults it to VIRT_BASE only for the legacy `__xen_guest` section,
//!   and to 0 whenever ELF notes are used, which is always the case here.
//! - With `virt_offset = virt_base - paddr_offset` (wrapping, as Xen's `uint64_t`), the
//!   kernel occupies virtual `[pstart + virt_offset, pend + virt_offset)` where `pstart` and
//!   `pend` are the lowest segment physical address and the highest physical end. VIRT_BASE
//!   must not lie above the kernel's start: the domain builder maps from VIRT_BASE, so guest
//!   pfn = (va - virt_base) / 4096 and a segment's pfn is its physical address minus
//!   PADDR_OFFSET.
//! - ENTRY absent means `e_entry`. For a PV image the entry must lie inside the kernel (Xen
//!   also allows the end address itself; this parser does not). INIT_P2M must not lie inside
//!   the kernel.
//!
//! Stricter than Xen, because the input is hostile and the builder must not have to guess:
//! the kernel's virtual range must be canonical, within one half of the address space and
//! clear of Xen's reserved range `HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END`; segments must
//! not overlap physically; VIRT_BASE and HYPERCALL_PAGE must be page aligned and the
//! hypercall page inside the kernel (Xen only asks for it inside the bootstrap mapping);
//! PHYS32_ENTRY must fit 32 bits and lie inside the physical image.
//!
//! ELF32 files (`EM_386`, or `EM_X86_64` as `elf32-x86-64`, which is how the Xen Test
//! Framework links its HVM tests) are accepted for PVH-only images, the ones that start in
//! 32-bit protected mode anyway; a 32-bit PV kernel is [`ElfError::Elf32`] (hv runs 64-bit PV
//! guests only).

use core::fmt;
use core::ops::Range;

use hypercall_abi::elfnote::{XenElfnote, XenFeature};
use hypercall_abi::xen::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};

/// Most loadable segments an image may have.
pub const MAX_SEGMENTS: usize = 16;
/// Most notes (of any name) read from one image, as libelf's `ELF_MAX_TOTAL_NOTE_COUNT`.
pub const MAX_NOTES: usize = 1024;

const PAGE_SIZE: u64 = 4096;

/// End of the lower canonical half of a 48-bit address space.
const LOWER_HALF_END: u64 = 1 << 47;
/// Start of the upper canonical half.
const UPPER_HALF_START: u64 = 0xFFFF_8000_0000_0000;

/// Header, program-header and section-header sizes of ELF64 and ELF32.
const EHDR64_SIZE: usize = 64;
const EHDR32_SIZE: usize = 52;
const PHDR64_SIZE: usize = 56;
const PHDR32_SIZE: usize = 32;
const SHDR64_SIZE: usize = 64;
const SHDR32_SIZE: usize = 40;

const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const SHT_NOTE: u32 = 7;

/// Segment flag: executable.
pub const PF_X: u32 = 1;
/// Segment flag: writable.
pub const PF_W: u32 = 2;
/// Segment flag: readable.
pub const PF_R: u32 = 4;

/// The name of every Xen note, NUL included.
const XEN_NOTE_NAME: &[u8] = b"Xen\0";

/// One loadable segment of an accepted image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// `p_vaddr` as written in the file (not used for loading; see [`Segment::load_va`]).
    pub vaddr: u64,
    /// `p_paddr`: where the segment goes in the guest's pseudo-physical space, before
    /// PADDR_OFFSET is taken off.
    pub paddr: u64,
    /// The guest virtual address the segment is loaded at: `paddr + virt_base - paddr_offset`.
    pub load_va: u64,
    /// Size in memory; the bytes past `data` are zero (bss).
    pub memsz: u64,
    /// The segment's bytes in the file (`p_filesz` of them, never more than `memsz`).
    pub data: &'a [u8],
    /// `p_flags` ([`PF_R`], [`PF_W`], [`PF_X`]).
    pub flags: u32,
}

impl Segment<'_> {
    const EMPTY: Segment<'static> = Segment {
        vaddr: 0,
        paddr: 0,
        load_va: 0,
        memsz: 0,
        data: &[],
        flags: 0,
    };

    /// The guest virtual range the segment occupies once loaded.
    pub fn load_range(&self) -> Range<u64> {
        self.load_va..self.load_va.saturating_add(self.memsz)
    }
}

/// The Xen notes an image carries, as found (defaults not applied).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenNotes<'a> {
    /// GUEST_OS, e.g. `"linux"` or `"Mini-OS"`.
    pub guest_os: Option<&'a str>,
    /// GUEST_VERSION.
    pub guest_version: Option<&'a str>,
    /// XEN_VERSION, `"xen-3.0"` for every PV guest.
    pub xen_version: Option<&'a str>,
    /// LOADER, `"generic"`.
    pub loader: Option<&'a str>,
    /// PAE_MODE (meaningful for 32-bit guests only).
    pub pae_mode: Option<&'a str>,
    /// FEATURES as written; parsed into [`XenImage::features`].
    pub features: Option<&'a str>,
    /// VIRT_BASE.
    pub virt_base: Option<u64>,
    /// PADDR_OFFSET.
    pub paddr_offset: Option<u64>,
    /// ENTRY: the PV entry point (virtual).
    pub entry: Option<u64>,
    /// HYPERCALL_PAGE: virtual address of the page to fill with hypercall stubs.
    pub hypercall_page: Option<u64>,
    /// SUPPORTED_FEATURES, word 0 (bits of all such notes OR-ed together).
    pub supported_features: Option<u32>,
    /// HV_START_LOW (32-bit guests only).
    pub hv_start_low: Option<u64>,
    /// INIT_P2M: where the guest would like its p2m list mapped.
    pub init_p2m: Option<u64>,
    /// MOD_START_PFN: non-zero if the guest takes its module unmapped, as a pfn.
    pub mod_start_pfn: Option<u64>,
    /// PHYS32_ENTRY: the PVH entry point (32-bit physical).
    pub phys32_entry: Option<u32>,
}

/// The `XENFEAT_*` bits (submap 0) an image supports and requires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Features the kernel can use (required ones included).
    pub supported: u32,
    /// Features the kernel cannot run without.
    pub required: u32,
}

impl Features {
    /// Whether the kernel supports `feature`.
    pub fn supports(&self, feature: XenFeature) -> bool {
        self.supported & feature.submap_bit() != 0
    }

    /// Whether the kernel requires `feature`.
    pub fn requires(&self, feature: XenFeature) -> bool {
        self.required & feature.submap_bit() != 0
    }
}

/// How an image boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// A PV kernel (it may also carry a PVH entry point).
    Pv,
    /// Only a PVH entry point (PHYS32_ENTRY); no PV loader notes.
    PvhOnly,
}

/// A feature name quoted in an error, truncated to 32 bytes at a character boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureName {
    bytes: [u8; 32],
    len: usize,
}

impl FeatureName {
    fn new(name: &str) -> Self {
        let mut len = name.len().min(32);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; 32];
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        FeatureName { bytes, len }
    }

    /// The (possibly truncated) name.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

/// Why an image was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than an ELF header.
    Truncated,
    /// No ELF magic.
    NotElf,
    /// An ELF32 image that is not PVH-only.
    Elf32,
    /// An ELF class other than 32 or 64 bits.
    BadClass(u8),
    /// Not little endian.
    NotLittleEndian,
    /// `EI_VERSION` or `e_version` is not 1.
    BadVersion,
    /// `e_type` is neither `ET_EXEC` nor `ET_DYN`.
    BadType(u16),
    /// `e_machine` is not x86_64.
    BadMachine(u16),
    /// A header-size field has the wrong value.
    BadHeaderSize(&'static str, u16),
    /// A header table does not lie inside the file.
    TableOutsideFile(&'static str),
    /// Loadable segment `n` (program header index) has file bytes outside the file.
    SegmentOutsideFile(usize),
    /// Loadable segment `n` (program header index) has `p_filesz > p_memsz`.
    FileszAboveMemsz(usize),
    /// Loadable segment `n` (program header index) wraps the 64-bit address space.
    SegmentWraps(usize),
    /// More than [`MAX_SEGMENTS`] loadable segments.
    TooManySegments,
    /// No loadable segment.
    NoLoadableSegments,
    /// Two loadable segments (program header indices) overlap physically.
    SegmentsOverlap(usize, usize),
    /// A note segment or section lies outside the file.
    NotesOutsideFile(u64),
    /// A note segment or section does not start 4-byte aligned (file offset).
    NotesMisaligned(u64),
    /// A note at this file offset is cut short or its sizes overflow its segment.
    NoteTruncated(u64),
    /// More than [`MAX_NOTES`] notes.
    TooManyNotes,
    /// A Xen note has a descriptor of an unusable size.
    BadNoteSize(XenElfnote, u32),
    /// A Xen string note is not UTF-8.
    NoteNotUtf8(XenElfnote),
    /// No note named "Xen" anywhere.
    NoXenNotes,
    /// FEATURES requires a feature this hypervisor does not know.
    UnknownRequiredFeature(FeatureName),
    /// XEN_VERSION missing or not `xen-3.0`.
    BadXenVersion,
    /// Neither LOADER `generic` nor GUEST_OS `linux`.
    BadLoader,
    /// PADDR_OFFSET given without VIRT_BASE.
    PaddrOffsetWithoutVirtBase,
    /// VIRT_BASE not page aligned.
    VirtBaseMisaligned(u64),
    /// VIRT_BASE above the kernel's virtual start.
    VirtBaseAboveImage(u64),
    /// The kernel's virtual range wraps the 64-bit address space.
    ImageWraps,
    /// The kernel's virtual range is non-canonical or overlaps Xen's reserved range.
    BadImageRange(u64, u64),
    /// The entry point is outside the kernel.
    EntryOutsideImage(u64),
    /// HYPERCALL_PAGE is outside the kernel.
    HypercallPageOutsideImage(u64),
    /// HYPERCALL_PAGE is not page aligned.
    HypercallPageMisaligned(u64),
    /// INIT_P2M lies inside the kernel.
    P2mInsideImage(u64),
    /// PHYS32_ENTRY does not fit 32 bits.
    Phys32EntryTooWide(u64),
    /// PHYS32_ENTRY is outside the physical image.
    Phys32EntryOutsideImage(u32),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated => f.write_str("image is shorter than an ELF header"),
            Self::NotElf => f.write_str("image is not ELF (bad magic)"),
            Self::Elf32 => f.write_str("32-bit ELF images are supported for PVH only"),
            Self::BadClass(c) => write!(f, "unknown ELF class {c}"),
            Self::NotLittleEndian => f.write_str("ELF image is not little endian"),
            Self::BadVersion => f.write_str("unknown ELF version"),
            Self::BadType(t) => write!(f, "ELF type {t} is not an executable"),
            Self::BadMachine(m) => write!(f, "ELF machine {m} is not x86_64"),
            Self::BadHeaderSize(what, size) => write!(f, "ELF {what} size {size} is wrong"),
            Self::TableOutsideFile(what) => write!(f, "ELF {what} table lies outside the file"),
            Self::SegmentOutsideFile(i) => write!(f, "segment {i} lies outside the file"),
            Self::FileszAboveMemsz(i) => write!(f, "segment {i} has p_filesz > p_memsz"),
            Self::SegmentWraps(i) => write!(f, "segment {i} wraps the address space"),
            Self::TooManySegments => {
                write!(f, "more than {MAX_SEGMENTS} loadable segments")
            }
            Self::NoLoadableSegments => f.write_str("no loadable segment"),
            Self::SegmentsOverlap(a, b) => write!(f, "segments {a} and {b} overlap"),
            Self::NotesOutsideFile(off) => {
                write!(f, "notes at file offset {off:#x} lie outside the file")
            }
            Self::NotesMisaligned(off) => {
                write!(f, "notes at file offset {off:#x} are not 4-byte aligned")
            }
            Self::NoteTruncated(off) => write!(f, "note at file offset {off:#x} is truncated"),
            Self::TooManyNotes => write!(f, "more than {MAX_NOTES} ELF notes"),
            Self::BadNoteSize(note, size) => {
                write!(f, "Xen note {note:?} has a {size}-byte descriptor")
            }
            Self::NoteNotUtf8(note) => write!(f, "Xen note {note:?} is not UTF-8"),
            Self::NoXenNotes => f.write_str("not a Xen image: no Xen ELF notes"),
            Self::UnknownRequiredFeature(name) => {
                write!(f, "kernel requires unknown feature {:?}", name.as_str())
            }
            Self::BadXenVersion => f.write_str("XEN_VERSION note missing or not xen-3.0"),
            Self::BadLoader => {
                f.write_str("neither LOADER \"generic\" nor GUEST_OS \"linux\" (and no PVH entry)")
            }
            Self::PaddrOffsetWithoutVirtBase => f.write_str("PADDR_OFFSET set, VIRT_BASE unset"),
            Self::VirtBaseMisaligned(v) => write!(f, "VIRT_BASE {v:#x} is not page aligned"),
            Self::VirtBaseAboveImage(v) => {
                write!(f, "VIRT_BASE {v:#x} lies above the kernel's start")
            }
            Self::ImageWraps => f.write_str("kernel's virtual range wraps the address space"),
            Self::BadImageRange(s, e) => write!(
                f,
                "kernel range {s:#x}..{e:#x} is non-canonical or in Xen's reserved range"
            ),
            Self::EntryOutsideImage(a) => write!(f, "entry point {a:#x} is outside the kernel"),
            Self::HypercallPageOutsideImage(a) => {
                write!(f, "hypercall page {a:#x} is outside the kernel")
            }
            Self::HypercallPageMisaligned(a) => {
                write!(f, "hypercall page {a:#x} is not page aligned")
            }
            Self::P2mInsideImage(a) => write!(f, "INIT_P2M {a:#x} lies inside the kernel"),
            Self::Phys32EntryTooWide(a) => write!(f, "PHYS32_ENTRY {a:#x} exceeds 32 bits"),
            Self::Phys32EntryOutsideImage(a) => {
                write!(f, "PHYS32_ENTRY {a:#x} is outside the image")
            }
        }
    }
}

/// Whether `[start, end)` is a non-empty range of canonical guest virtual addresses inside one
/// half of the address space and clear of Xen's reserved range (L4 slots 256..=271).
pub fn valid_guest_range(start: u64, end: u64) -> bool {
    if start >= end {
        return false;
    }
    if end <= LOWER_HALF_END {
        return true;
    }
    start >= UPPER_HALF_START && (end <= HYPERVISOR_VIRT_START || start >= HYPERVISOR_VIRT_END)
}

/// A parsed, checked guest kernel image.
///
/// Invariants of every value [`XenImage::parse`] returns:
/// - 1 to [`MAX_SEGMENTS`] segments, each with `0 < memsz`, `data.len() <= memsz`, no two
///   overlapping, all inside [`virt_range`](Self::virt_range) at their `load_va`;
/// - `virt_range` is non-empty and passes [`valid_guest_range`];
///   `virt_base <= virt_range.start` and `virt_base` is page aligned;
/// - for [`ImageKind::Pv`]: the entry point lies in `virt_range`;
/// - a hypercall page, if any, is page aligned and inside `virt_range`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XenImage<'a> {
    segments: [Segment<'a>; MAX_SEGMENTS],
    nr_segments: usize,
    e_entry: u64,
    notes: XenNotes<'a>,
    features: Features,
    kind: ImageKind,
    virt_base: u64,
    paddr_offset: u64,
    entry: u64,
    paddr_range: Range<u64>,
    virt_range: Range<u64>,
}

impl<'a> XenImage<'a> {
    /// Parses and checks `data`, a whole ELF file.
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        let eh = Ehdr::parse(data)?;
        let mut segments = [Segment::EMPTY; MAX_SEGMENTS];
        let mut seg_index = [0usize; MAX_SEGMENTS];
        let mut nr_segments = 0;
        let mut notes = NoteCollector::default();

        let phdr_size = eh.class.phdr_size();
        if eh.phnum != 0 && usize::from(eh.phentsize) != phdr_size {
            return Err(ElfError::BadHeaderSize("program header", eh.phentsize));
        }
        let phdrs = table(data, eh.phoff, eh.phnum, phdr_size, "program header")?;
        for (i, raw) in phdrs.chunks_exact(phdr_size).enumerate() {
            let ph = Phdr::read(raw, eh.class);
            if ph.p_type == PT_LOAD && ph.flags & (PF_R | PF_W | PF_X) != 0 && ph.memsz != 0 {
                if ph.filesz > ph.memsz {
                    return Err(ElfError::FileszAboveMemsz(i));
                }
                let bytes =
                    bytes_at(data, ph.offset, ph.filesz).ok_or(ElfError::SegmentOutsideFile(i))?;
                if ph.paddr.checked_add(ph.memsz).is_none() {
                    return Err(ElfError::SegmentWraps(i));
                }
                let (Some(slot), Some(index)) = (
                    segments.get_mut(nr_segments),
                    seg_index.get_mut(nr_segments),
                ) else {
                    return Err(ElfError::TooManySegments);
                };
                *slot = Segment {
                    vaddr: ph.vaddr,
                    paddr: ph.paddr,
                    load_va: 0,
                    memsz: ph.memsz,
                    data: bytes,
                    flags: ph.flags,
                };
                *index = i;
                nr_segments += 1;
            } else if ph.p_type == PT_NOTE && ph.offset != 0 {
                notes.parse_region(data, ph.offset, ph.filesz, ph.align)?;
            }
        }

        if notes.xen_notes == 0 && eh.shnum != 0 {
            let shdr_size = eh.class.shdr_size();
            if usize::from(eh.shentsize) != shdr_size {
                return Err(ElfError::BadHeaderSize("section header", eh.shentsize));
            }
            let shdrs = table(data, eh.shoff, eh.shnum, shdr_size, "section header")?;
            // Section 0 is the reserved null section.
            for raw in shdrs.chunks_exact(shdr_size).skip(1) {
                if le32(raw, 4) == SHT_NOTE {
                    let (offset, size, align) = match eh.class {
                        Class::Elf64 => (le64(raw, 24), le64(raw, 32), le64(raw, 48)),
                        Class::Elf32 => (
                            u64::from(le32(raw, 16)),
                            u64::from(le32(raw, 20)),
                            u64::from(le32(raw, 32)),
                        ),
                    };
                    notes.parse_region(data, offset, size, align)?;
                }
            }
        }
        if notes.xen_notes == 0 {
            return Err(ElfError::NoXenNotes);
        }

        let segs = &mut segments[..nr_segments];
        if segs.is_empty() {
            return Err(ElfError::NoLoadableSegments);
        }
        let mut pstart = u64::MAX;
        let mut pend = 0;
        for (a, seg) in segs.iter().enumerate() {
            let end = seg.paddr.saturating_add(seg.memsz);
            for (b, other) in segs.iter().enumerate().skip(a + 1) {
                if seg.paddr < other.paddr.saturating_add(other.memsz) && other.paddr < end {
                    return Err(ElfError::SegmentsOverlap(seg_index[a], seg_index[b]));
                }
            }
            pstart = pstart.min(seg.paddr);
            pend = pend.max(end);
        }

        let n = notes.notes;
        let mut features = parse_features(n.features)?;
        features.supported |= n.supported_features.unwrap_or(0);

        let kind = if n.phys32_entry.is_some()
            && n.xen_version.is_none()
            && n.loader.is_none()
            && n.entry.is_none()
            && n.hypercall_page.is_none()
        {
            ImageKind::PvhOnly
        } else {
            ImageKind::Pv
        };
        if kind == ImageKind::Pv && eh.class == Class::Elf32 {
            return Err(ElfError::Elf32);
        }
        if kind == ImageKind::Pv {
            let generic = n.loader.is_some_and(|l| l.starts_with("generic"));
            let linux = n.guest_os.is_some_and(|g| g.starts_with("linux"));
            if !generic && !linux {
                return Err(ElfError::BadLoader);
            }
            if !n.xen_version.is_some_and(|v| v.starts_with("xen-3.0")) {
                return Err(ElfError::BadXenVersion);
            }
        }

        if n.paddr_offset.is_some() && n.virt_base.is_none() {
            return Err(ElfError::PaddrOffsetWithoutVirtBase);
        }
        let virt_base = n.virt_base.unwrap_or(0);
        let paddr_offset = n.paddr_offset.unwrap_or(0);
        if !virt_base.is_multiple_of(PAGE_SIZE) {
            return Err(ElfError::VirtBaseMisaligned(virt_base));
        }
        let virt_offset = virt_base.wrapping_sub(paddr_offset);
        let kstart = pstart.wrapping_add(virt_offset);
        let kend = kstart
            .checked_add(pend - pstart)
            .ok_or(ElfError::ImageWraps)?;
        if !valid_guest_range(kstart, kend) {
            return Err(ElfError::BadImageRange(kstart, kend));
        }
        if virt_base > kstart {
            return Err(ElfError::VirtBaseAboveImage(virt_base));
        }
        for seg in segs.iter_mut() {
            // Cannot wrap: paddr - pstart < pend - pstart, and kstart + that fits.
            seg.load_va = kstart + (seg.paddr - pstart);
        }

        let virt_range = kstart..kend;
        let entry = n.entry.unwrap_or(eh.entry);
        if kind == ImageKind::Pv && !virt_range.contains(&entry) {
            return Err(ElfError::EntryOutsideImage(entry));
        }
        if let Some(page) = n.hypercall_page {
            if !virt_range.contains(&page) {
                return Err(ElfError::HypercallPageOutsideImage(page));
            }
            if !page.is_multiple_of(PAGE_SIZE) {
                return Err(ElfError::HypercallPageMisaligned(page));
            }
        }
        if let Some(p2m) = n.init_p2m {
            if virt_range.contains(&p2m) {
                return Err(ElfError::P2mInsideImage(p2m));
            }
        }
        if let Some(phys) = n.phys32_entry {
            if !(pstart..pend).contains(&u64::from(phys)) {
                return Err(ElfError::Phys32EntryOutsideImage(phys));
            }
        }

        Ok(XenImage {
            segments,
            nr_segments,
            e_entry: eh.entry,
            notes: n,
            features,
            kind,
            virt_base,
            paddr_offset,
            entry,
            paddr_range: pstart..pend,
            virt_range,
        })
    }

    /// The loadable segments, in program-header order.
    pub fn segments(&self) -> &[Segment<'a>] {
        self.segments.get(..self.nr_segments).unwrap_or(&[])
    }

    /// Whether the image is a PV kernel or PVH only.
    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// `e_entry` from the ELF header.
    pub fn e_entry(&self) -> u64 {
        self.e_entry
    }

    /// The PV entry point: the ENTRY note, else `e_entry`.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The Xen notes as found.
    pub fn notes(&self) -> &XenNotes<'a> {
        &self.notes
    }

    /// The features from FEATURES and SUPPORTED_FEATURES.
    pub fn features(&self) -> Features {
        self.features
    }

    /// VIRT_BASE, 0 when absent: the virtual address of guest pfn 0.
    pub fn virt_base(&self) -> u64 {
        self.virt_base
    }

    /// PADDR_OFFSET, 0 when absent.
    pub fn paddr_offset(&self) -> u64 {
        self.paddr_offset
    }

    /// The physical extent of the loadable segments, `[pstart, pend)`.
    pub fn paddr_range(&self) -> Range<u64> {
        self.paddr_range.clone()
    }

    /// The kernel's virtual extent, `[virt_kstart, virt_kend)`.
    pub fn virt_range(&self) -> Range<u64> {
        self.virt_range.clone()
    }

    /// HYPERCALL_PAGE, if the kernel wants one.
    pub fn hypercall_page(&self) -> Option<u64> {
        self.notes.hypercall_page
    }

    /// Whether the kernel takes its module unmapped, as a pfn (MOD_START_PFN non-zero).
    pub fn mod_start_pfn(&self) -> bool {
        self.notes.mod_start_pfn.is_some_and(|v| v != 0)
    }

    /// The PVH entry point, if any.
    pub fn phys32_entry(&self) -> Option<u32> {
        self.notes.phys32_entry
    }
}

/// The ELF file class: the layout of the header and tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Elf32,
    Elf64,
}

impl Class {
    fn ehdr_size(self) -> usize {
        match self {
            Self::Elf32 => EHDR32_SIZE,
            Self::Elf64 => EHDR64_SIZE,
        }
    }

    fn phdr_size(self) -> usize {
        match self {
            Self::Elf32 => PHDR32_SIZE,
            Self::Elf64 => PHDR64_SIZE,
        }
    }

    fn shdr_size(self) -> usize {
        match self {
            Self::Elf32 => SHDR32_SIZE,
            Self::Elf64 => SHDR64_SIZE,
        }
    }
}

/// The fields of the ELF header this parser uses.
struct Ehdr {
    class: Class,
    entry: u64,
    phoff: u64,
    shoff: u64,
    phentsize: u16,
    phnum: u16,
    shentsize: u16,
    shnum: u16,
}

impl Ehdr {
    fn parse(data: &[u8]) -> Result<Self, ElfError> {
        let ident = data.get(..16).ok_or_else(|| {
            if data.len() >= 4 && data[..4] != *b"\x7fELF" {
                ElfError::NotElf
            } else {
                ElfError::Truncated
            }
        })?;
        if ident[..4] != *b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        let class = match ident[4] {
            ELFCLASS64 => Class::Elf64,
            ELFCLASS32 => Class::Elf32,
            other => return Err(ElfError::BadClass(other)),
        };
        if ident[5] != ELFDATA2LSB {
            return Err(ElfError::NotLittleEndian);
        }
        let h = data.get(..class.ehdr_size()).ok_or(ElfError::Truncated)?;
        if h[6] != EV_CURRENT || le32(h, 20) != u32::from(EV_CURRENT) {
            return Err(ElfError::BadVersion);
        }
        let e_type = le16(h, 16);
        if e_type != ET_EXEC && e_type != ET_DYN {
            return Err(ElfError::BadType(e_type));
        }
        let machine = le16(h, 18);
        if machine != EM_X86_64 && !(class == Class::Elf32 && machine == EM_386) {
            return Err(ElfError::BadMachine(machine));
        }
        // After e_entry, ELF32's addresses and offsets are 4 bytes narrower.
        let (entry, phoff, shoff, rest) = match class {
            Class::Elf64 => (le64(h, 24), le64(h, 32), le64(h, 40), 52),
            Class::Elf32 => (
                u64::from(le32(h, 24)),
                u64::from(le32(h, 28)),
                u64::from(le32(h, 32)),
                40,
            ),
        };
        let ehsize = le16(h, rest);
        if usize::from(ehsize) != class.ehdr_size() {
            return Err(ElfError::BadHeaderSize("header", ehsize));
        }
        Ok(Ehdr {
            class,
            entry,
            phoff,
            shoff,
            phentsize: le16(h, rest + 2),
            phnum: le16(h, rest + 4),
            shentsize: le16(h, rest + 6),
            shnum: le16(h, rest + 8),
        })
    }
}

/// One program header.
struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

impl Phdr {
    /// Reads a program header of `class`'s layout (ELF32 moves `p_flags` after the sizes).
    fn read(raw: &[u8], class: Class) -> Self {
        match class {
            Class::Elf64 => Phdr {
                p_type: le32(raw, 0),
                flags: le32(raw, 4),
                offset: le64(raw, 8),
                vaddr: le64(raw, 16),
                paddr: le64(raw, 24),
                filesz: le64(raw, 32),
                memsz: le64(raw, 40),
                align: le64(raw, 48),
            },
            Class::Elf32 => {
                let word = |off| u64::from(le32(raw, off));
                Phdr {
                    p_type: le32(raw, 0),
                    offset: word(4),
                    vaddr: word(8),
                    paddr: word(12),
                    filesz: word(16),
                    memsz: word(20),
                    flags: le32(raw, 24),
                    align: word(28),
                }
            }
        }
    }
}

/// Notes gathered from every note segment or section, and how many were read.
#[derive(Default)]
struct NoteCollector<'a> {
    notes: XenNotes<'a>,
    xen_notes: usize,
    total_notes: usize,
}

impl<'a> NoteCollector<'a> {
    /// Reads the notes in `data[offset..offset + size]`, padded to `align` (4 or 8) bytes.
    fn parse_region(
        &mut self,
        data: &'a [u8],
        offset: u64,
        size: u64,
        align: u64,
    ) -> Result<(), ElfError> {
        let region = bytes_at(data, offset, size).ok_or(ElfError::NotesOutsideFile(offset))?;
        if !offset.is_multiple_of(4) {
            return Err(ElfError::NotesMisaligned(offset));
        }
        let align = if align == 8 { 8 } else { 4 };
        let mut pos = 0usize;
        while pos < region.len() {
            // `pos` is inside the file, so this cannot overflow.
            let at = offset + pos as u64;
            let truncated = ElfError::NoteTruncated(at);
            if self.total_notes >= MAX_NOTES {
                return Err(ElfError::TooManyNotes);
            }
            self.total_notes += 1;
            let header = region
                .get(pos..)
                .and_then(|r| r.get(..12))
                .ok_or(truncated)?;
            let namesz = le32(header, 0) as usize;
            let descsz = le32(header, 4);
            let note_type = le32(header, 8);
            let name_start = pos + 12;
            let name_end = name_start.checked_add(namesz).ok_or(truncated)?;
            let desc_start = align_up(name_end, align).ok_or(truncated)?;
            let desc_end = desc_start.checked_add(descsz as usize).ok_or(truncated)?;
            let name = region.get(name_start..name_end).ok_or(truncated)?;
            let desc = region.get(desc_start..desc_end).ok_or(truncated)?;
            if name == XEN_NOTE_NAME {
                self.xen_notes += 1;
                self.apply(note_type, desc)?;
            }
            // The last note's padding may be missing at the end of its region.
            pos = align_up(desc_end, align).map_or(region.len(), |p| p.min(region.len()));
        }
        Ok(())
    }

    /// Records one Xen note; unknown types are ignored, as libelf does.
    fn apply(&mut self, note_type: u32, desc: &'a [u8]) -> Result<(), ElfError> {
        let Ok(note) = XenElfnote::try_from(note_type) else {
            return Ok(());
        };
        let n = &mut self.notes;
        match note {
            XenElfnote::GuestOs => n.guest_os = Some(string_note(note, desc)?),
            XenElfnote::GuestVersion => n.guest_version = Some(string_note(note, desc)?),
            XenElfnote::XenVersion => n.xen_version = Some(string_note(note, desc)?),
            XenElfnote::Loader => n.loader = Some(string_note(note, desc)?),
            XenElfnote::PaeMode => n.pae_mode = Some(string_note(note, desc)?),
            XenElfnote::Features => n.features = Some(string_note(note, desc)?),
            XenElfnote::VirtBase => n.virt_base = Some(numeric_note(note, desc)?),
            XenElfnote::PaddrOffset => n.paddr_offset = Some(numeric_note(note, desc)?),
            XenElfnote::Entry => n.entry = Some(numeric_note(note, desc)?),
            XenElfnote::HypercallPage => n.hypercall_page = Some(numeric_note(note, desc)?),
            XenElfnote::HvStartLow => n.hv_start_low = Some(numeric_note(note, desc)?),
            XenElfnote::InitP2m => n.init_p2m = Some(numeric_note(note, desc)?),
            XenElfnote::ModStartPfn => n.mod_start_pfn = Some(numeric_note(note, desc)?),
            XenElfnote::Phys32Entry => {
                let value = numeric_note(note, desc)?;
                let phys = u32::try_from(value).map_err(|_| ElfError::Phys32EntryTooWide(value))?;
                n.phys32_entry = Some(phys);
            }
            XenElfnote::SupportedFeatures => {
                let bad = ElfError::BadNoteSize(note, desc.len() as u32);
                if !desc.len().is_multiple_of(4) {
                    return Err(bad);
                }
                let word = desc.get(..4).ok_or(bad)?;
                n.supported_features = Some(n.supported_features.unwrap_or(0) | le32(word, 0));
            }
            _ => {}
        }
        Ok(())
    }
}

/// A string note: the descriptor up to its first NUL.
fn string_note(note: XenElfnote, desc: &[u8]) -> Result<&str, ElfError> {
    let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    core::str::from_utf8(&desc[..end]).map_err(|_| ElfError::NoteNotUtf8(note))
}

/// A numeric note: a little-endian integer of 1, 2, 4 or 8 bytes.
fn numeric_note(note: XenElfnote, desc: &[u8]) -> Result<u64, ElfError> {
    match desc.len() {
        1 | 2 | 4 | 8 => {
            let mut bytes = [0u8; 8];
            bytes[..desc.len()].copy_from_slice(desc);
            Ok(u64::from_le_bytes(bytes))
        }
        len => Err(ElfError::BadNoteSize(note, len as u32)),
    }
}

/// Parses a FEATURES string (see the module documentation).
fn parse_features(features: Option<&str>) -> Result<Features, ElfError> {
    let mut set = Features::default();
    for token in features.unwrap_or("").split('|') {
        let (name, required) = match token.strip_prefix('!') {
            Some(name) => (name, true),
            None => (token, false),
        };
        match XenFeature::from_name(name) {
            Some(feature) => {
                set.supported |= feature.submap_bit();
                if required {
                    set.required |= feature.submap_bit();
                }
            }
            None if required => {
                return Err(ElfError::UnknownRequiredFeature(FeatureName::new(name)))
            }
            None => {}
        }
    }
    Ok(set)
}

/// The `count` entries of `entsize` bytes at `offset`, or an error if they leave the file.
fn table<'a>(
    data: &'a [u8],
    offset: u64,
    count: u16,
    entsize: usize,
    what: &'static str,
) -> Result<&'a [u8], ElfError> {
    let len = u64::from(count) * entsize as u64;
    bytes_at(data, offset, len).ok_or(ElfError::TableOutsideFile(what))
}

/// `data[offset..offset + len]`, or `None` if any of it is outside `data`.
fn bytes_at(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}

fn align_up(value: usize, align: usize) -> Option<usize> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

/// Little-endian reads from a slice the caller has sized; a short slice reads as zero bytes.
fn le16(b: &[u8], off: usize) -> u16 {
    let mut a = [0; 2];
    if let Some(s) = b.get(off..off + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// A small ELF64 writer for tests: segments, Xen notes in a `PT_NOTE` segment or an `SHT_NOTE`
/// section.
#[cfg(test)]
pub(crate) mod testimg {
    use super::{PF_R, PF_W, PF_X};
    use hypercall_abi::elfnote::XenElfnote;

    pub struct Note {
        pub name: Vec<u8>,
        pub kind: u32,
        pub desc: Vec<u8>,
    }

    pub fn note(kind: XenElfnote, desc: &[u8]) -> Note {
        Note {
            name: b"Xen\0".to_vec(),
            kind: kind.raw(),
            desc: desc.to_vec(),
        }
    }

    pub fn note_str(kind: XenElfnote, s: &str) -> Note {
        let mut desc = s.as_bytes().to_vec();
        desc.push(0);
        note(kind, &desc)
    }

    pub fn note_u64(kind: XenElfnote, v: u64) -> Note {
        note(kind, &v.to_le_bytes())
    }

    pub fn note_u32(kind: XenElfnote, v: u32) -> Note {
        note(kind, &v.to_le_bytes())
    }

    pub struct Seg {
        pub paddr: u64,
        pub vaddr: u64,
        pub data: Vec<u8>,
        pub memsz: u64,
        pub flags: u32,
    }

    impl Seg {
        /// A segment at `addr` (virtual = physical) with `filesz` patterned bytes.
        pub fn new(addr: u64, filesz: usize, memsz: u64, flags: u32) -> Seg {
            let data = (0..filesz)
                .map(|i| (i as u64 * 7 + addr / 4096) as u8 | 1)
                .collect();
            Seg {
                paddr: addr,
                vaddr: addr,
                data,
                memsz,
                flags,
            }
        }
    }

    pub struct Spec {
        pub entry: u64,
        pub segs: Vec<Seg>,
        pub notes: Vec<Note>,
        pub notes_in_section: bool,
    }

    impl Spec {
        /// The observed small guest: kernel 0x100000-0x111000 (text 0x9000, data 0x3000 with
        /// 0x5000 of bss), hypercall page at 0x102000, the notes Mini-OS-like guests carry.
        pub fn pv_0x100000() -> Spec {
            Spec {
                entry: 0x100000,
                segs: vec![
                    Seg::new(0x100000, 0x9000, 0x9000, PF_R | PF_X),
                    Seg::new(0x109000, 0x3000, 0x8000, PF_R | PF_W),
                ],
                notes: vec![
                    note_str(XenElfnote::GuestOs, "Mini-OS"),
                    note_str(XenElfnote::Loader, "generic"),
                    note_str(XenElfnote::XenVersion, "xen-3.0"),
                    note_u64(XenElfnote::HypercallPage, 0x102000),
                    note_str(
                        XenElfnote::Features,
                        "!writable_page_tables|pae_pgdir_above_4gb",
                    ),
                    note_str(XenElfnote::PaeMode, "yes"),
                ],
                notes_in_section: false,
            }
        }

        pub fn with_note(mut self, n: Note) -> Spec {
            self.notes.push(n);
            self
        }

        pub fn without_note(mut self, kind: XenElfnote) -> Spec {
            self.notes.retain(|n| n.kind != kind.raw());
            self
        }

        pub fn build(&self) -> Vec<u8> {
            self.build_class(false, 62)
        }

        /// The same image as an ELF32 file of machine `machine` (3 = EM_386, 62 = EM_X86_64).
        pub fn build32(&self, machine: u16) -> Vec<u8> {
            self.build_class(true, machine)
        }

        fn build_class(&self, elf32: bool, machine: u16) -> Vec<u8> {
            // Header, program-header and section-header sizes, and the width of an address.
            let (eh, phsz, shsz) = if elf32 { (52, 32, 40) } else { (64, 56, 64) };
            let word = |v: u64| -> Vec<u8> {
                if elf32 {
                    (v as u32).to_le_bytes().to_vec()
                } else {
                    v.to_le_bytes().to_vec()
                }
            };
            let w = if elf32 { 4 } else { 8 };
            let mut blob = Vec::new();
            for n in &self.notes {
                blob.extend_from_slice(&(n.name.len() as u32).to_le_bytes());
                blob.extend_from_slice(&(n.desc.len() as u32).to_le_bytes());
                blob.extend_from_slice(&n.kind.to_le_bytes());
                blob.extend_from_slice(&n.name);
                pad(&mut blob, 4);
                blob.extend_from_slice(&n.desc);
                pad(&mut blob, 4);
            }
            let note_phdr = !self.notes.is_empty() && !self.notes_in_section;
            let phnum = self.segs.len() + usize::from(note_phdr);
            let notes_off = eh + phnum * phsz;
            let mut out = vec![0u8; notes_off];
            out.extend_from_slice(&blob);
            let mut seg_offs = Vec::new();
            for s in &self.segs {
                pad(&mut out, 4096);
                seg_offs.push(out.len() as u64);
                out.extend_from_slice(&s.data);
            }
            let mut shoff = 0;
            if self.notes_in_section {
                pad(&mut out, 8);
                shoff = out.len() as u64;
                out.extend_from_slice(&vec![0; shsz]);
                // sh_type, then sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info,
                // sh_addralign: addresses and sizes are `w` bytes wide.
                let mut sh = vec![0u8; shsz];
                sh[4..8].copy_from_slice(&7u32.to_le_bytes());
                let off = 8 + 2 * w;
                sh[off..off + w].copy_from_slice(&word(notes_off as u64));
                sh[off + w..off + 2 * w].copy_from_slice(&word(blob.len() as u64));
                let align = off + 2 * w + 8;
                sh[align..align + w].copy_from_slice(&word(4));
                out.extend_from_slice(&sh);
            }

            let mut h = Vec::new();
            h.extend_from_slice(b"\x7fELF");
            h.extend_from_slice(&[if elf32 { 1 } else { 2 }, 1, 1]);
            h.resize(16, 0);
            h.extend_from_slice(&2u16.to_le_bytes());
            h.extend_from_slice(&machine.to_le_bytes());
            h.extend_from_slice(&1u32.to_le_bytes());
            h.extend_from_slice(&word(self.entry));
            h.extend_from_slice(&word(eh as u64));
            h.extend_from_slice(&word(shoff));
            h.extend_from_slice(&0u32.to_le_bytes());
            let shnum: u16 = if self.notes_in_section { 2 } else { 0 };
            for half in [eh, phsz, phnum, shsz, usize::from(shnum), 0] {
                h.extend_from_slice(&(half as u16).to_le_bytes());
            }
            assert_eq!(h.len(), eh);
            out[..eh].copy_from_slice(&h);

            let mut phdrs = Vec::new();
            let mut phdr = |p_type: u32, flags: u32, off: u64, addr: (u64, u64), sizes, align| {
                let (filesz, memsz): (u64, u64) = sizes;
                let mut p = p_type.to_le_bytes().to_vec();
                if !elf32 {
                    p.extend_from_slice(&flags.to_le_bytes());
                }
                for v in [off, addr.0, addr.1, filesz, memsz] {
                    p.extend_from_slice(&word(v));
                }
                if elf32 {
                    p.extend_from_slice(&flags.to_le_bytes());
                }
                p.extend_from_slice(&word(align));
                phdrs.extend_from_slice(&p);
            };
            for (s, off) in self.segs.iter().zip(seg_offs) {
                let sizes = (s.data.len() as u64, s.memsz);
                phdr(1, s.flags, off, (s.vaddr, s.paddr), sizes, 4096);
            }
            if note_phdr {
                phdr(4, PF_R, notes_off as u64, (0, 0), (blob.len() as u64, 0), 4);
            }
            out[eh..eh + phdrs.len()].copy_from_slice(&phdrs);
            out
        }
    }

    fn pad(v: &mut Vec<u8>, align: usize) {
        while !v.len().is_multiple_of(align) {
            v.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testimg::{note, note_str, note_u32, note_u64, Seg, Spec};
    use super::*;
    use proptest::prelude::*;

    fn parse_spec(spec: &Spec) -> Result<XenImage<'static>, ElfError> {
        let bytes: &'static [u8] = Vec::leak(spec.build());
        XenImage::parse(bytes)
    }

    /// The invariants documented on [`XenImage`].
    pub(crate) fn check_invariants(img: &XenImage<'_>) {
        let segs = img.segments();
        assert!(!segs.is_empty() && segs.len() <= MAX_SEGMENTS);
        let range = img.virt_range();
        assert!(valid_guest_range(range.start, range.end));
        assert!(img.virt_base() <= range.start);
        assert!(img.virt_base().is_multiple_of(PAGE_SIZE));
        for (i, s) in segs.iter().enumerate() {
            assert!(s.memsz > 0 && s.data.len() as u64 <= s.memsz);
            let r = s.load_range();
            assert!(range.start <= r.start && r.end <= range.end);
            for t in &segs[i + 1..] {
                let q = t.load_range();
                assert!(r.end <= q.start || q.end <= r.start);
            }
        }
        if img.kind() == ImageKind::Pv {
            assert!(range.contains(&img.entry()));
        }
        if let Some(hc) = img.hypercall_page() {
            assert!(range.contains(&hc) && hc.is_multiple_of(PAGE_SIZE));
        }
    }

    #[test]
    fn parses_the_small_pv_guest() {
        let spec = Spec::pv_0x100000();
        let bytes = spec.build();
        let img = XenImage::parse(&bytes).unwrap();
        check_invariants(&img);
        assert_eq!(img.kind(), ImageKind::Pv);
        assert_eq!(img.segments().len(), 2);
        let text = img.segments()[0];
        assert_eq!(
            (text.paddr, text.load_va, text.memsz),
            (0x100000, 0x100000, 0x9000)
        );
        assert_eq!(text.data, &spec.segs[0].data[..]);
        assert_eq!(text.flags, PF_R | PF_X);
        assert_eq!(img.segments()[1].memsz, 0x8000);
        assert_eq!(img.virt_range(), 0x100000..0x111000);
        assert_eq!(img.paddr_range(), 0x100000..0x111000);
        assert_eq!((img.virt_base(), img.paddr_offset()), (0, 0));
        assert_eq!((img.entry(), img.e_entry()), (0x100000, 0x100000));
        assert_eq!(img.hypercall_page(), Some(0x102000));
        let n = img.notes();
        assert_eq!(n.guest_os, Some("Mini-OS"));
        assert_eq!(n.loader, Some("generic"));
        assert_eq!(n.xen_version, Some("xen-3.0"));
        assert_eq!(n.pae_mode, Some("yes"));
        let f = img.features();
        assert!(f.requires(XenFeature::WritablePageTables));
        assert!(f.supports(XenFeature::WritablePageTables));
        assert!(f.supports(XenFeature::PaePgdirAbove4gb));
        assert!(!f.requires(XenFeature::PaePgdirAbove4gb));
        assert!(!f.supports(XenFeature::Dom0));
        assert!(!img.mod_start_pfn());
        assert_eq!(img.phys32_entry(), None);
    }

    #[test]
    fn numeric_notes_of_1_2_4_and_8_bytes() {
        for (desc, value) in [
            (vec![0x34], 0x34u64),
            (vec![0x34, 0x12], 0x1234),
            (vec![0x00, 0x00, 0x20, 0x00], 0x200000),
            (0x80_0000_0000u64.to_le_bytes().to_vec(), 0x80_0000_0000),
        ] {
            let img = parse_spec(&Spec::pv_0x100000().with_note(note(XenElfnote::InitP2m, &desc)))
                .unwrap();
            assert_eq!(img.notes().init_p2m, Some(value));
        }
        let img = parse_spec(&Spec::pv_0x100000().with_note(note_u32(XenElfnote::Entry, 0x100040)))
            .unwrap();
        assert_eq!(img.entry(), 0x100040);
        for bad in [0usize, 3, 5, 16] {
            let err =
                parse_spec(&Spec::pv_0x100000().with_note(note(XenElfnote::Entry, &vec![0; bad])))
                    .unwrap_err();
            assert_eq!(err, ElfError::BadNoteSize(XenElfnote::Entry, bad as u32));
        }
    }

    #[test]
    fn linux_style_virt_base_and_paddr_offset() {
        let mut spec = Spec::pv_0x100000();
        for s in &mut spec.segs {
            s.vaddr += 0xffff_ffff_8000_0000;
            s.paddr += 0x0f00000; // 0x1000000..
        }
        spec.entry = 0xffff_ffff_8100_0000;
        let spec = spec
            .without_note(XenElfnote::HypercallPage)
            .with_note(note_u64(XenElfnote::HypercallPage, 0xffff_ffff_8100_1000))
            .with_note(note_u64(XenElfnote::VirtBase, 0xffff_ffff_8000_0000));
        // PADDR_OFFSET absent means 0 with ELF notes.
        let img = parse_spec(&spec).unwrap();
        check_invariants(&img);
        assert_eq!(
            img.virt_range(),
            0xffff_ffff_8100_0000..0xffff_ffff_8101_1000
        );
        assert_eq!(img.segments()[1].load_va, 0xffff_ffff_8100_9000);
        let img = parse_spec(&spec.with_note(note_u64(XenElfnote::PaddrOffset, 0))).unwrap();
        assert_eq!(img.virt_range().start, 0xffff_ffff_8100_0000);
    }

    #[test]
    fn old_style_paddr_equal_to_vaddr() {
        // VIRT_BASE = PADDR_OFFSET: segments load at their physical (= virtual) addresses.
        let mut spec = Spec::pv_0x100000();
        for s in &mut spec.segs {
            s.vaddr += 0xffff_ffff_8000_0000;
            s.paddr = s.vaddr;
        }
        spec.entry = 0xffff_ffff_8010_0000;
        let spec = spec
            .without_note(XenElfnote::HypercallPage)
            .with_note(note_u64(XenElfnote::VirtBase, 0xffff_ffff_8000_0000))
            .with_note(note_u64(XenElfnote::PaddrOffset, 0xffff_ffff_8000_0000));
        let img = parse_spec(&spec).unwrap();
        assert_eq!(
            img.virt_range(),
            0xffff_ffff_8010_0000..0xffff_ffff_8011_1000
        );
    }

    #[test]
    fn note_rules_follow_libelf() {
        let base = Spec::pv_0x100000;
        assert_eq!(
            parse_spec(&base().with_note(note_u64(XenElfnote::PaddrOffset, 0))).unwrap_err(),
            ElfError::PaddrOffsetWithoutVirtBase
        );
        assert_eq!(
            parse_spec(&base().without_note(XenElfnote::XenVersion)).unwrap_err(),
            ElfError::BadXenVersion
        );
        assert_eq!(
            parse_spec(
                &base()
                    .without_note(XenElfnote::XenVersion)
                    .with_note(note_str(XenElfnote::XenVersion, "xen-2.0"))
            )
            .unwrap_err(),
            ElfError::BadXenVersion
        );
        // LOADER "generic" or GUEST_OS "linux" (prefixes) will do.
        assert_eq!(
            parse_spec(&base().without_note(XenElfnote::Loader)).unwrap_err(),
            ElfError::BadLoader
        );
        let linux = base()
            .without_note(XenElfnote::Loader)
            .without_note(XenElfnote::GuestOs)
            .with_note(note_str(XenElfnote::GuestOs, "linux-6.1"));
        assert!(parse_spec(&linux).is_ok());
        // A later note replaces an earlier one.
        let img = parse_spec(&base().with_note(note_str(XenElfnote::GuestOs, "XTF"))).unwrap();
        assert_eq!(img.notes().guest_os, Some("XTF"));
        // An ENTRY note wins over e_entry and must be inside the kernel.
        let img = parse_spec(&base().with_note(note_u64(XenElfnote::Entry, 0x100800))).unwrap();
        assert_eq!((img.entry(), img.e_entry()), (0x100800, 0x100000));
        for bad in [0xfffff, 0x111000, 0x200000] {
            assert_eq!(
                parse_spec(&base().with_note(note_u64(XenElfnote::Entry, bad))).unwrap_err(),
                ElfError::EntryOutsideImage(bad)
            );
        }
        let mut spec = base();
        spec.entry = 0x50;
        assert_eq!(
            parse_spec(&spec).unwrap_err(),
            ElfError::EntryOutsideImage(0x50)
        );
        // Unknown Xen note types are ignored.
        let odd = super::testimg::Note {
            name: b"Xen\0".to_vec(),
            kind: 0x99,
            desc: vec![1, 2, 3],
        };
        assert!(parse_spec(&base().with_note(odd)).is_ok());
        // Notes of other names are skipped, whatever their type.
        let gnu = super::testimg::Note {
            name: b"GNU\0".to_vec(),
            kind: XenElfnote::Entry.raw(),
            desc: vec![1, 2, 3],
        };
        assert!(parse_spec(&base().with_note(gnu)).is_ok());
    }

    #[test]
    fn hypercall_page_and_init_p2m_are_checked() {
        let base = || Spec::pv_0x100000().without_note(XenElfnote::HypercallPage);
        for (va, err) in [
            (0x111000, ElfError::HypercallPageOutsideImage(0x111000)),
            (0xff000, ElfError::HypercallPageOutsideImage(0xff000)),
            (0x102800, ElfError::HypercallPageMisaligned(0x102800)),
        ] {
            let spec = base().with_note(note_u64(XenElfnote::HypercallPage, va));
            assert_eq!(parse_spec(&spec).unwrap_err(), err);
        }
        let img = parse_spec(&base()).unwrap();
        assert_eq!(img.hypercall_page(), None);
        let spec = base().with_note(note_u64(XenElfnote::InitP2m, 0x108000));
        assert_eq!(
            parse_spec(&spec).unwrap_err(),
            ElfError::P2mInsideImage(0x108000)
        );
    }

    #[test]
    fn features_follow_xen_semantics() {
        let with = |f: &str| {
            parse_spec(
                &Spec::pv_0x100000()
                    .without_note(XenElfnote::Features)
                    .with_note(note_str(XenElfnote::Features, f)),
            )
        };
        let f = with("dom0|!auto_translated_physmap||no_such_feature")
            .unwrap()
            .features();
        assert_eq!(
            f.supported,
            XenFeature::Dom0.submap_bit() | XenFeature::AutoTranslatedPhysmap.submap_bit()
        );
        assert_eq!(f.required, XenFeature::AutoTranslatedPhysmap.submap_bit());
        let err = with("pae_pgdir_above_4gb|!no_such_feature").unwrap_err();
        assert_eq!(
            err,
            ElfError::UnknownRequiredFeature(FeatureName::new("no_such_feature"))
        );
        assert_eq!(
            err.to_string(),
            "kernel requires unknown feature \"no_such_feature\""
        );
        let long = "x".repeat(100);
        match with(&format!("!{long}")).unwrap_err() {
            ElfError::UnknownRequiredFeature(name) => assert_eq!(name.as_str(), &long[..32]),
            other => panic!("{other}"),
        }
        let f = with("").unwrap().features();
        assert_eq!(f, Features::default());
        // SUPPORTED_FEATURES adds bits from word 0 of its array.
        let img = parse_spec(&Spec::pv_0x100000().with_note(note(
            XenElfnote::SupportedFeatures,
            &[0x00, 0x08, 0, 0, 0xff, 0xff, 0xff, 0xff],
        )))
        .unwrap();
        assert!(img.features().supports(XenFeature::Dom0));
        assert_eq!(img.notes().supported_features, Some(0x800));
        let bad = Spec::pv_0x100000().with_note(note(XenElfnote::SupportedFeatures, &[1, 2]));
        assert_eq!(
            parse_spec(&bad).unwrap_err(),
            ElfError::BadNoteSize(XenElfnote::SupportedFeatures, 2)
        );
    }

    #[test]
    fn pvh_only_images() {
        let spec = Spec {
            entry: 0x100000,
            segs: vec![Seg::new(0x100000, 0x2000, 0x3000, PF_R | PF_X)],
            notes: vec![note_u32(XenElfnote::Phys32Entry, 0x100010)],
            notes_in_section: false,
        };
        let img = parse_spec(&spec).unwrap();
        assert_eq!(img.kind(), ImageKind::PvhOnly);
        assert_eq!(img.phys32_entry(), Some(0x100010));
        check_invariants(&img);
        // A PVH-only image's e_entry is not checked (it is not used).
        let mut far = Spec {
            entry: 0xffff_ffff_8000_0000,
            ..spec
        };
        assert!(parse_spec(&far).is_ok());
        far.notes = vec![note_u32(XenElfnote::Phys32Entry, 0x200000)];
        assert_eq!(
            parse_spec(&far).unwrap_err(),
            ElfError::Phys32EntryOutsideImage(0x200000)
        );
        far.notes = vec![note_u64(XenElfnote::Phys32Entry, 0x1_0000_0000)];
        assert_eq!(
            parse_spec(&far).unwrap_err(),
            ElfError::Phys32EntryTooWide(0x1_0000_0000)
        );
        // Linux carries both: PV.
        let both = Spec::pv_0x100000().with_note(note_u32(XenElfnote::Phys32Entry, 0x100000));
        let img = parse_spec(&both).unwrap();
        assert_eq!(img.kind(), ImageKind::Pv);
        assert_eq!(img.phys32_entry(), Some(0x100000));
    }

    #[test]
    fn elf32_images_for_pvh_only() {
        let mut spec = Spec {
            entry: 0x100000,
            segs: vec![
                Seg::new(0x100000, 0x2000, 0x3000, PF_R | PF_X),
                Seg::new(0x104000, 0x800, 0x1000, PF_R | PF_W),
            ],
            notes: vec![note_u32(XenElfnote::Phys32Entry, 0x100010)],
            notes_in_section: false,
        };
        let elf64 = parse_spec(&spec).unwrap();
        for machine in [3, 62] {
            for in_section in [false, true] {
                spec.notes_in_section = in_section;
                let bytes: &'static [u8] = Vec::leak(spec.build32(machine));
                let img = XenImage::parse(bytes).unwrap();
                assert_eq!(img.kind(), ImageKind::PvhOnly);
                assert_eq!(img.phys32_entry(), Some(0x100010));
                assert_eq!(img.segments(), elf64.segments(), "machine {machine}");
                assert_eq!(img.paddr_range(), 0x100000..0x105000);
                check_invariants(&img);
                for len in 0..bytes.len() {
                    assert!(
                        XenImage::parse(&bytes[..len]).is_err(),
                        "truncated to {len}"
                    );
                }
            }
        }
        // A 32-bit PV kernel, and a 32-bit image of a machine other than x86.
        let pv = Spec::pv_0x100000().build32(3);
        assert_eq!(XenImage::parse(&pv).unwrap_err(), ElfError::Elf32);
        let mut arm = spec.build32(40);
        assert_eq!(XenImage::parse(&arm).unwrap_err(), ElfError::BadMachine(40));
        // A 64-bit file may not claim EM_386.
        arm = spec.build();
        arm[18] = 3;
        assert_eq!(XenImage::parse(&arm).unwrap_err(), ElfError::BadMachine(3));
    }

    #[test]
    fn notes_from_sections_when_no_note_segment() {
        let mut spec = Spec::pv_0x100000();
        spec.notes_in_section = true;
        let img = parse_spec(&spec).unwrap();
        assert_eq!(img.notes().xen_version, Some("xen-3.0"));
        assert_eq!(img.hypercall_page(), Some(0x102000));
        spec.notes.clear();
        assert_eq!(parse_spec(&spec).unwrap_err(), ElfError::NoXenNotes);
        let mut none = Spec::pv_0x100000();
        none.notes.clear();
        assert_eq!(parse_spec(&none).unwrap_err(), ElfError::NoXenNotes);
    }

    #[test]
    fn bad_strings_and_notes() {
        let spec = Spec::pv_0x100000().with_note(note(XenElfnote::GuestVersion, &[0xff, 0xfe, 0]));
        assert_eq!(
            parse_spec(&spec).unwrap_err(),
            ElfError::NoteNotUtf8(XenElfnote::GuestVersion)
        );
        // A string without a NUL ends with its descriptor.
        let spec = Spec::pv_0x100000().with_note(note(XenElfnote::GuestVersion, b"4.2"));
        assert_eq!(
            parse_spec(&spec).unwrap().notes().guest_version,
            Some("4.2")
        );

        // A note whose descsz runs past its segment.
        let mut bytes = Spec::pv_0x100000().build();
        let notes_off = 64 + 3 * 56;
        bytes[notes_off + 4..notes_off + 8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(
            XenImage::parse(&bytes).unwrap_err(),
            ElfError::NoteTruncated(notes_off as u64)
        );
        // A note segment at an odd offset.
        let mut bytes = Spec::pv_0x100000().build();
        let note_ph = 64 + 2 * 56;
        bytes[note_ph + 8..note_ph + 16].copy_from_slice(&(notes_off as u64 + 2).to_le_bytes());
        assert_eq!(
            XenImage::parse(&bytes).unwrap_err(),
            ElfError::NotesMisaligned(notes_off as u64 + 2)
        );
        // A note segment past the end of the file.
        let mut bytes = Spec::pv_0x100000().build();
        bytes[note_ph + 32..note_ph + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            XenImage::parse(&bytes).unwrap_err(),
            ElfError::NotesOutsideFile(notes_off as u64)
        );
        // Too many notes.
        let mut spec = Spec::pv_0x100000();
        for _ in 0..MAX_NOTES {
            spec.notes.push(note_str(XenElfnote::GuestVersion, "1"));
        }
        assert_eq!(parse_spec(&spec).unwrap_err(), ElfError::TooManyNotes);
    }

    #[test]
    fn bad_segments() {
        let two = |a: Seg, b: Seg| {
            let mut spec = Spec::pv_0x100000();
            spec.segs = vec![a, b];
            parse_spec(&spec)
        };
        let rx = PF_R | PF_X;
        assert_eq!(
            two(
                Seg::new(0x100000, 0x9000, 0x9000, rx),
                Seg::new(0x108000, 0x100, 0x9000, rx)
            )
            .unwrap_err(),
            ElfError::SegmentsOverlap(0, 1)
        );
        assert_eq!(
            two(
                Seg::new(0x100000, 0x9000, 0x8000, rx),
                Seg::new(0x109000, 0, 0x1000, rx)
            )
            .unwrap_err(),
            ElfError::FileszAboveMemsz(0)
        );
        assert_eq!(
            two(
                Seg::new(0x100000, 0x10, 0x9000, rx),
                Seg::new(u64::MAX - 0xfff, 0, 0x2000, rx)
            )
            .unwrap_err(),
            ElfError::SegmentWraps(1)
        );
        // Non-canonical, Xen's range, wrapping through VIRT_BASE.
        let err = two(
            Seg::new(0x100000, 0x10, 0x9000, rx),
            Seg::new(0x7fff_ffff_f000, 0, 0x2000, rx),
        )
        .unwrap_err();
        assert_eq!(err, ElfError::BadImageRange(0x100000, 0x8000_0000_1000));
        let mut spec = Spec::pv_0x100000().without_note(XenElfnote::HypercallPage);
        spec.entry = 0xffff_8000_0010_0000;
        let spec = spec.with_note(note_u64(XenElfnote::VirtBase, HYPERVISOR_VIRT_START));
        assert_eq!(
            parse_spec(&spec).unwrap_err(),
            ElfError::BadImageRange(0xffff_8000_0010_0000, 0xffff_8000_0011_1000)
        );
        let spec =
            Spec::pv_0x100000().with_note(note_u64(XenElfnote::VirtBase, 0xffff_ffff_ffef_8000));
        assert_eq!(parse_spec(&spec).unwrap_err(), ElfError::ImageWraps);
        let spec = Spec::pv_0x100000().with_note(note_u64(XenElfnote::VirtBase, 0x123));
        assert_eq!(
            parse_spec(&spec).unwrap_err(),
            ElfError::VirtBaseMisaligned(0x123)
        );
        let spec = Spec::pv_0x100000()
            .with_note(note_u64(XenElfnote::VirtBase, 0x200000))
            .with_note(note_u64(XenElfnote::PaddrOffset, 0x200000));
        assert_eq!(
            parse_spec(&spec).unwrap_err(),
            ElfError::VirtBaseAboveImage(0x200000)
        );
        // Too many segments.
        let mut spec = Spec::pv_0x100000();
        spec.segs = (0..17)
            .map(|i| Seg::new(0x100000 + i * 0x1000, 0x10, 0x1000, rx))
            .collect();
        assert_eq!(parse_spec(&spec).unwrap_err(), ElfError::TooManySegments);
        spec.segs.truncate(16);
        assert_eq!(parse_spec(&spec).unwrap().segments().len(), 16);
        // Non-loadable and empty segments are skipped; none left is an error.
        let mut spec = Spec::pv_0x100000();
        spec.segs = vec![
            Seg::new(0x100000, 0x10, 0x1000, 0),
            Seg::new(0x101000, 0, 0, rx),
        ];
        assert_eq!(parse_spec(&spec).unwrap_err(), ElfError::NoLoadableSegments);
    }

    #[test]
    fn bad_headers() {
        let good = Spec::pv_0x100000().build();
        let with = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            XenImage::parse(&b).unwrap_err()
        };
        assert_eq!(XenImage::parse(&[]).unwrap_err(), ElfError::Truncated);
        assert_eq!(
            XenImage::parse(b"MZ\x90\x00").unwrap_err(),
            ElfError::NotElf
        );
        assert_eq!(with(0, b"\x7fELG"), ElfError::NotElf);
        // ELF64 fields read with ELF32's layout: e_ehsize lands on e_phoff's high half.
        assert_eq!(with(4, &[1]), ElfError::BadHeaderSize("header", 0));
        assert_eq!(with(4, &[3]), ElfError::BadClass(3));
        assert_eq!(with(5, &[2]), ElfError::NotLittleEndian);
        assert_eq!(with(6, &[0]), ElfError::BadVersion);
        assert_eq!(with(16, &[1, 0]), ElfError::BadType(1));
        assert_eq!(with(18, &[3, 0]), ElfError::BadMachine(3));
        assert_eq!(with(52, &[63, 0]), ElfError::BadHeaderSize("header", 63));
        assert_eq!(
            with(54, &[32, 0]),
            ElfError::BadHeaderSize("program header", 32)
        );
        assert_eq!(
            with(56, &[0xff, 0xff]),
            ElfError::TableOutsideFile("program header")
        );
        assert_eq!(
            with(32, &[0xff; 8]),
            ElfError::TableOutsideFile("program header")
        );
        assert_eq!(with(64 + 8, &[0xff; 8]), ElfError::SegmentOutsideFile(0));
        // ET_DYN is accepted, like libelf.
        let mut dyn_img = good.clone();
        dyn_img[16] = 3;
        assert!(XenImage::parse(&dyn_img).is_ok());
    }

    #[test]
    fn every_truncation_is_an_error() {
        for spec in [Spec::pv_0x100000(), {
            let mut s = Spec::pv_0x100000();
            s.notes_in_section = true;
            s
        }] {
            let bytes = spec.build();
            assert!(XenImage::parse(&bytes).is_ok());
            for len in 0..bytes.len() {
                let err = XenImage::parse(&bytes[..len]).unwrap_err();
                assert!(!err.to_string().contains('\n'));
            }
        }
    }

    #[test]
    fn every_error_displays_on_one_line() {
        let errors = [
            ElfError::Truncated,
            ElfError::BadHeaderSize("header", 1),
            ElfError::TableOutsideFile("section header"),
            ElfError::SegmentsOverlap(1, 2),
            ElfError::BadNoteSize(XenElfnote::Entry, 3),
            ElfError::NoteNotUtf8(XenElfnote::GuestOs),
            ElfError::UnknownRequiredFeature(FeatureName::new("é".repeat(20).as_str())),
            ElfError::BadImageRange(1, 2),
            ElfError::Phys32EntryOutsideImage(5),
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "{s}");
        }
        // Truncation to 32 bytes backs off to a character boundary.
        assert_eq!(FeatureName::new(&"é".repeat(20)).as_str(), "é".repeat(16));
    }

    fn mutate(
        base: &[u8],
        edits: &[(usize, u8)],
        words: &[(usize, u64)],
        window: usize,
    ) -> Vec<u8> {
        let mut img = base.to_vec();
        let window = window.min(img.len());
        for &(pos, byte) in edits {
            img[pos % window] = byte;
        }
        for &(pos, word) in words {
            let at = (pos % (window / 8)) * 8;
            img[at..at + 8].copy_from_slice(&word.to_le_bytes());
        }
        img
    }

    fn interesting_word() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            Just(1 << 47),
            Just(HYPERVISOR_VIRT_START),
            Just(0x100000),
            Just(0x111000),
            0u64..0x20_0000,
            any::<u64>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = XenImage::parse(&data);
        }

        #[test]
        fn random_tables_after_a_valid_header_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..1200),
        ) {
            let mut data = Spec::pv_0x100000().build()[..64].to_vec();
            data.extend_from_slice(&tail);
            if let Ok(img) = XenImage::parse(&data) {
                check_invariants(&img);
            }
        }

        #[test]
        fn mutated_images_never_panic_and_accepted_ones_hold_invariants(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            words in proptest::collection::vec((any::<usize>(), interesting_word()), 0..4),
            in_section in any::<bool>(),
        ) {
            let mut spec = Spec::pv_0x100000();
            spec.notes_in_section = in_section;
            let base = spec.build();
            // Mostly the headers and notes: the segment data starts at 0x1000.
            let img = mutate(&base, &edits, &words, 0x1000);
            if let Ok(parsed) = XenImage::parse(&img) {
                check_invariants(&parsed);
            }
        }
    }
}
