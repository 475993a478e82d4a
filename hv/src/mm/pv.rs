//! The PV page-type discipline: what keeps a PV guest, which writes its own page tables,
//! inside its own memory (Xen's `get_page_type`, `mod_l*_entry`, `do_mmu_update`,
//! `do_mmuext_op`, `update_va_mapping`, `set_gdt` and domain teardown, re-derived).
//!
//! Every frame has one type at a time while its type count is non-zero ([`PageType`]); the
//! type can change only when the count is zero. Taking a page-table type (L1..L4) or
//! [`PageType::SegDesc`] for the first time validates the frame's contents, and while the type
//! is held every present entry of the frame holds a reference on what it names:
//!
//! - an L1 entry takes a general reference on the frame it maps, plus a
//!   [`PageType::Writable`] type reference if it maps it writable, so a frame typed as a page
//!   table or descriptor table can never be mapped writable;
//! - an L2/L3/L4 entry takes a general reference and a type reference of the next lower level
//!   on a validated table of that level. References to a table of the same or a higher level
//!   (Xen's optional "linear page tables", including an entry naming its own table) are
//!   refused, so the reference graph has no cycles and teardown always terminates;
//! - only frames of the same domain can be referenced by the guest's own entries (foreign
//!   mappings would be admitted where [`PvMm::get_l1e`] checks the owner; they are refused);
//!   another domain's frame is mapped only through a grant, see below;
//! - superpages (PSE in an L2/L3 entry), cache-attribute bits (PWT/PCD/PAT) and the global bit
//!   above L1 are refused; the L4 slots 256..=271 (Xen's reserved range,
//!   `HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END`) belong to hv: guest updates to them are
//!   refused and validating an L4 writes [`PvMm::hv_l4_slots`] into them.
//!
//! Dropping the last type reference devalidates: the references the entries held are
//! released. Pins, the vCPUs' base pointers and the GDT frames hold type references of their
//! own. Every count change is checked ([`FrameMut`]); a failure part-way through validation
//! releases what it took.
//!
//! Present entries get the user bit added (the 64-bit PV kernel runs in ring 3, as Xen's
//! `adjust_guest_l*e`), and L4 entries the accessed bit. Bits 52..=61 are left to the guest as
//! in Xen (and bit 62 above L1), so hv must keep CR4.PKE clear while PV guests run; NX is
//! allowed, so EFER.NXE must be set.
//!
//! # Grant mappings
//!
//! Bit 62 of an L1 entry marks a grant mapping (Xen's `_PAGE_GNTTAB`): an entry hv wrote with
//! [`PvMm::install_grant_pte`] for `GNTTABOP_map_grant_ref`, whose references are held by the
//! grant tables (`crate::gnttab`), not by the entry. So:
//!
//! - guests may not set the bit: a present L1 entry with it is refused
//!   ([`PvError::BadFlags`]), in an update or when a table is validated;
//! - a guest update that would overwrite or clear a marked entry is refused
//!   ([`PvError::GrantEntry`], `-EINVAL`); only [`PvMm::clear_grant_pte`] (for
//!   `GNTTABOP_unmap_grant_ref`) removes one. Xen's debug builds, which mark grant entries
//!   the same way, drop the entry and crash the domain (release builds do not mark them, and
//!   the entry holds the references there); refusing keeps the mapping, its entry and its
//!   references consistent without a crash;
//! - devalidating an L1 (including in [`PvMm::relinquish`]) skips marked entries: their
//!   references stay with the grant tables, released by the unmap or, once the domain dies,
//!   by `GrantTables::release_domain`. The devalidated frame keeps the entry as inert data (it
//!   cannot be validated as an L1 again until the guest overwrites it), and the mapping can no
//!   longer be unmapped: Xen's "undestroyable active grant", harmless, and here not a crash;
//! - [`PvMm::clear_grant_pte`] removes only a marked entry of the frame and access (read-only
//!   or writable) the mapping was made with, so every marked entry mapping a frame writable
//!   is matched by a writable mapping holding a writable type reference on it.
//!
//! Page contents are reached through [`PageMemory`], so all of this runs under `cargo test`.
//! Errors are [`PvError`] values; [`PvError::errno`] gives the Xen errno, chosen per case as
//! Xen's `xen/arch/x86/mm.c` returns it.

use hypercall_abi::errno::Errno;
use hypercall_abi::xen::{
    MmuUpdate, MmuextCmd, MmuextOp, FIRST_RESERVED_GDT_ENTRY, FIRST_RESERVED_GDT_PAGE,
    FLAT_KERNEL_CS64, HYPERVISOR_VIRT_END, UVMF_ALL, UVMF_FLUSHTYPE_MASK, UVMF_INVLPG,
    UVMF_TLB_FLUSH,
};
use hypercall_abi::DomId;

use super::{FrameAllocator, FrameMut, Mfn, Owner, PageInfo, PageType, PAGE_SHIFT};

/// The hv side of page contents: 8-byte entries of 4 KiB frames, the machine-to-phys table
/// and TLB maintenance. The arch layer implements it over its direct map; tests use a fake.
pub trait PageMemory {
    /// The 8-byte entry `index` (0..512) of frame `table`.
    fn read_entry(&self, table: Mfn, index: usize) -> u64;
    /// Writes the 8-byte entry `index` (0..512) of frame `table`.
    fn write_entry(&mut self, table: Mfn, index: usize, value: u64);
    /// Sets the machine-to-phys table's entry for `mfn`.
    fn set_m2p(&mut self, mfn: Mfn, pfn: u64);
    /// Flushes, on every CPU that may have run one of domain `domid`'s vCPUs, all TLB and
    /// paging-structure-cache entries (global ones included), and returns only when done.
    /// Called before a frame takes a type other than the one CPUs may still cache it as
    /// ([`PageInfo::stale_type`]): a stale writable translation of a new page table, or a
    /// cached pointer to a former page table the guest can now write, would defeat every
    /// check here (Xen's flush in `_get_page_type`).
    fn flush_domain_tlbs(&mut self, domid: DomId);
}

/// Number of 8-byte entries in a page table (and descriptors in a descriptor frame).
const ENTRIES: usize = 512;

/// The first L4 slot of hv's reserved range (Xen's `ROOT_PAGETABLE_FIRST_XEN_SLOT`).
pub const HV_L4_FIRST_SLOT: usize = 256;
/// How many L4 slots belong to hv (slots 256..=271).
pub const HV_L4_SLOTS: usize = 16;

/// PTE bits (SDM Vol. 3A 4.5).
pub(crate) const PTE_PRESENT: u64 = 1 << 0;
pub(crate) const PTE_RW: u64 = 1 << 1;
pub(crate) const PTE_USER: u64 = 1 << 2;
pub(crate) const PTE_ACCESSED: u64 = 1 << 5;
pub(crate) const PTE_DIRTY: u64 = 1 << 6;
/// PSE in an L2/L3 entry, PAT in an L1 entry.
const PTE_PSE: u64 = 1 << 7;
const PTE_GLOBAL: u64 = 1 << 8;
/// Bits 9..=11, free for software.
const PTE_AVAIL: u64 = 0x7 << 9;
/// Bits 52..=61, free for software while CR4.PKE is clear.
const PTE_AVAIL_HIGH: u64 = 0x3ff << 52;
/// Bit 62: in an L2..L4 entry free for software like bits 52..=61; in an L1 entry hv's marker
/// of a grant mapping (Xen's `_PAGE_GNTTAB`), which guests may not set.
const PTE_GNTTAB: u64 = 1 << 62;
const PTE_NX: u64 = 1 << 63;
/// Bits 12..=51: the frame address.
const PTE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Flags a guest may set in an L2..L4 entry (Xen's `base_disallow_mask`, inverted): no
/// PWT/PCD, no PSE, no global bit.
const GUEST_PDE_FLAGS: u64 = PTE_PRESENT
    | PTE_RW
    | PTE_USER
    | PTE_ACCESSED
    | PTE_DIRTY
    | PTE_AVAIL
    | PTE_AVAIL_HIGH
    | PTE_GNTTAB
    | PTE_NX;
/// Flags a guest may set in an L1 entry: those plus the global bit, less the grant marker
/// (Xen's `L1_DISALLOW_MASK`). The cache attributes (PWT/PCD/PAT) stay refused, as Xen refuses
/// them to domains without I/O resources; hv maps no MMIO for guests, so no domain needs them.
const GUEST_L1_FLAGS: u64 = (GUEST_PDE_FLAGS | PTE_GLOBAL) & !PTE_GNTTAB;
/// The flags of a grant mapping's L1 entry, as Xen's `grant_to_pte_flags` (the user bit as
/// for every PV entry), plus [`PTE_RW`] for a writable one.
const GRANT_PTE_FLAGS: u64 =
    PTE_PRESENT | PTE_USER | PTE_ACCESSED | PTE_DIRTY | PTE_GNTTAB | PTE_NX;

/// Descriptor (high word) bits.
const SEG_TYPE: u32 = 0xf << 8;
const SEG_S: u32 = 1 << 12;
const SEG_DPL: u32 = 3 << 13;
const SEG_P: u32 = 1 << 15;
/// System type of a 64-bit call gate.
const SEG_TYPE_CALL_GATE: u32 = 0xc << 8;

/// Most LDT entries `MMUEXT_SET_LDT` accepts (a 64 KiB LDT).
const MAX_LDT_ENTRIES: u32 = 8192;

/// The page-table levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    L1 = 1,
    L2 = 2,
    L3 = 3,
    L4 = 4,
}

impl Level {
    fn of(page_type: PageType) -> Option<Level> {
        match page_type {
            PageType::L1 => Some(Level::L1),
            PageType::L2 => Some(Level::L2),
            PageType::L3 => Some(Level::L3),
            PageType::L4 => Some(Level::L4),
            _ => None,
        }
    }

    fn page_type(self) -> PageType {
        match self {
            Level::L1 => PageType::L1,
            Level::L2 => PageType::L2,
            Level::L3 => PageType::L3,
            Level::L4 => PageType::L4,
        }
    }

    /// The type an entry of this level requires of what it names.
    fn entry_target(self) -> PageType {
        match self {
            Level::L1 => PageType::Writable,
            Level::L2 => PageType::L1,
            Level::L3 => PageType::L2,
            Level::L4 => PageType::L3,
        }
    }

    /// Whether slot `index` of a table of this level is the guest's (not hv's).
    fn is_guest_slot(self, index: usize) -> bool {
        self != Level::L4 || !(HV_L4_FIRST_SLOT..HV_L4_FIRST_SLOT + HV_L4_SLOTS).contains(&index)
    }

    /// The index of `va`'s entry in a table of this level.
    fn index_of(self, va: u64) -> usize {
        // Masked to 9 bits, so the cast is lossless.
        ((va >> (PAGE_SHIFT + 9 * (self as u32 - 1))) & 0x1ff) as usize
    }
}

/// The frame an entry names.
fn entry_mfn(entry: u64) -> Mfn {
    Mfn((entry & PTE_ADDR_MASK) >> PAGE_SHIFT)
}

/// Whether `entry`, of a table of `level`, is a grant mapping hv installed: present and
/// marked, in an L1. Its references belong to the grant tables.
fn is_grant_entry(level: Level, entry: u64) -> bool {
    level == Level::L1 && entry & (PTE_PRESENT | PTE_GNTTAB) == PTE_PRESENT | PTE_GNTTAB
}

/// Whether a guest may name `va` in a page-table or LDT operation: below the canonical hole,
/// or above hv's reserved range (Xen's `__addr_ok`). Non-canonical addresses and
/// `HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END` are refused.
fn guest_va_ok(va: u64) -> bool {
    !((1 << 47)..HYPERVISOR_VIRT_END).contains(&va)
}

/// Why a PV memory operation was refused. [`PvError::errno`] gives what the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvError {
    /// A present entry sets bits the guest may not set at its level (PWT/PCD/PAT anywhere,
    /// the global bit above L1). `-EINVAL`, as Xen's "Bad L%d flags".
    BadFlags {
        /// The level of the table the entry is for (1..=4).
        level: u8,
        /// The refused bits.
        bits: u64,
    },
    /// An L2 or L3 entry with PSE set: superpages are not supported. `-EINVAL` (PSE is in
    /// Xen's disallow mask for 64-bit PV guests).
    Superpage,
    /// An update of an L4 slot in hv's range 256..=271. `-EINVAL`, as Xen's `mod_l4_entry`.
    ReservedSlot(usize),
    /// The frame is not the domain's (another domain's, hv's, free, not RAM or outside the
    /// frame table) where a page table, pin, base pointer, GDT frame, M2P update or
    /// clear/copy needed the domain's own frame. `-EINVAL`, as Xen's failed
    /// `get_page_from_gfn`/`get_page_from_mfn`.
    NotOwned(Mfn),
    /// An L1 entry maps a frame that is not RAM hv manages: MMIO, which no domain may map.
    /// `-EPERM`, as Xen's "non-privileged attempt to map MMIO space".
    NotRam(Mfn),
    /// An L1 entry maps a frame the domain may not map: another owner's or a free frame,
    /// a writable mapping of a frame holding another type (a page table, a descriptor
    /// frame, a shared frame), or a frame whose counts are at their maximum. `-EBUSY`, as
    /// Xen's `get_page_from_l1e` (`could_not_pin`).
    MappingRefused(Mfn),
    /// The frame holds a type other than the one asked for. `-EINVAL`, as Xen's
    /// `_get_page_type`.
    TypeConflict {
        /// The frame.
        mfn: Mfn,
        /// The type it holds.
        current: PageType,
        /// The type asked for.
        wanted: PageType,
    },
    /// An L2..L4 entry names its own table or a table of the same or a higher level (a
    /// linear or recursive page table, which hv does not support). `-EINVAL`, as Xen built
    /// without `CONFIG_PV_LINEAR_PT`.
    LinearPageTable(Mfn),
    /// A type or general reference count is at its maximum. `-EINVAL`, as Xen's "Type count
    /// overflow" and failed `get_page`.
    CountOverflow(Mfn),
    /// `MMUEXT_PIN_*` of a frame already pinned. `-EINVAL`.
    AlreadyPinned(Mfn),
    /// `MMUEXT_UNPIN_TABLE` of a frame not pinned. `-EINVAL`.
    NotPinned(Mfn),
    /// Descriptor `index` of a GDT frame is not one a guest may have (a TSS, LDT, interrupt
    /// or trap gate, a call gate to a selector hv reserves, or reserved bits set).
    /// `-EINVAL`, as Xen's `check_descriptor`.
    BadDescriptor {
        /// The frame.
        mfn: Mfn,
        /// The descriptor's index in it.
        index: usize,
    },
    /// `set_gdt` with more than [`FIRST_RESERVED_GDT_ENTRY`] entries or fewer frames than
    /// the entries need. `-EINVAL`.
    BadGdt,
    /// A virtual address in hv's reserved range or non-canonical. `-EINVAL`.
    BadAddress(u64),
    /// `update_va_mapping` (or a grant PTE's installation or removal) found no L1 table for
    /// the address (an entry on the way not present, or the root not the domain's validated
    /// L4). `-EINVAL`, as Xen's failed `map_guest_l1e`.
    NotMapped(u64),
    /// A guest update of an entry of this L1 table that holds a grant mapping: only
    /// `GNTTABOP_unmap_grant_ref` removes it. `-EINVAL` (Xen crashes the domain instead; see
    /// the module documentation).
    GrantEntry(Mfn),
    /// [`PvMm::install_grant_pte`] at an address whose L1 entry is present. `-EINVAL`.
    EntryInUse(u64),
    /// [`PvMm::clear_grant_pte`] at an address whose L1 entry is not the grant mapping of the
    /// frame and access given. `-EINVAL`.
    NoGrantEntry(u64),
    /// `mmu_update` of a frame whose type cannot be written through it
    /// ([`PageType::SegDesc`], [`PageType::Shared`]). `-EINVAL`.
    NotWritable(Mfn),
    /// `MMUEXT_SET_LDT` with more than 8192 entries, or an address that is not
    /// page-aligned or not the guest's. `-EINVAL`.
    BadLdt,
    /// `MMUEXT_MARK_SUPER`/`UNMARK_SUPER`. `-EOPNOTSUPP`, as Xen.
    NotSupported,
    /// `MMUEXT_FLUSH_CACHE[_GLOBAL]` by a domain without cache-flush rights (no domain has
    /// them here). `-EACCES`, as Xen.
    CacheFlushDenied,
    /// An unknown `mmu_update` sub-command or `mmuext_op` command. `-ENOSYS`, as Xen.
    UnknownCommand,
    /// hv's own bookkeeping of this frame is inconsistent (a count would underflow on a
    /// release hv believed it held). Not the guest's doing; the domain should be crashed.
    /// `-EINVAL`.
    Corrupt(Mfn),
}

impl PvError {
    /// The Xen errno the guest sees for this error.
    pub fn errno(self) -> Errno {
        match self {
            PvError::NotRam(_) => Errno::EPERM,
            PvError::MappingRefused(_) => Errno::EBUSY,
            PvError::NotSupported => Errno::EOPNOTSUPP,
            PvError::CacheFlushDenied => Errno::EACCES,
            PvError::UnknownCommand => Errno::ENOSYS,
            PvError::BadFlags { .. }
            | PvError::Superpage
            | PvError::ReservedSlot(_)
            | PvError::NotOwned(_)
            | PvError::TypeConflict { .. }
            | PvError::LinearPageTable(_)
            | PvError::CountOverflow(_)
            | PvError::AlreadyPinned(_)
            | PvError::NotPinned(_)
            | PvError::BadDescriptor { .. }
            | PvError::BadGdt
            | PvError::BadAddress(_)
            | PvError::NotMapped(_)
            | PvError::GrantEntry(_)
            | PvError::EntryInUse(_)
            | PvError::NoGrantEntry(_)
            | PvError::NotWritable(_)
            | PvError::BadLdt
            | PvError::Corrupt(_) => Errno::EINVAL,
        }
    }
}

impl From<PvError> for Errno {
    fn from(error: PvError) -> Errno {
        error.errno()
    }
}

/// A TLB flush the arch layer performs for the guest. "All" means every vCPU of the calling
/// domain; `vcpumask` is the guest's pointer to a vCPU bitmap, which the caller reads (and
/// answers `-EINVAL` if it cannot, as Xen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushAction {
    /// Nothing to flush.
    None,
    /// Flush this vCPU's TLB.
    TlbLocal,
    /// Flush the TLBs of the vCPUs in the bitmap.
    TlbMulti {
        /// Guest address of the vCPU bitmap.
        vcpumask: u64,
    },
    /// Flush the TLBs of all the domain's vCPUs.
    TlbAll,
    /// Invalidate `va` on this vCPU.
    InvlpgLocal {
        /// The address.
        va: u64,
    },
    /// Invalidate `va` on the vCPUs in the bitmap.
    InvlpgMulti {
        /// The address.
        va: u64,
        /// Guest address of the vCPU bitmap.
        vcpumask: u64,
    },
    /// Invalidate `va` on all the domain's vCPUs.
    InvlpgAll {
        /// The address.
        va: u64,
    },
}

/// Something `mmuext_op` asks the arch layer to do at once, in order with the operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuextEffect {
    /// A TLB flush.
    Flush(FlushAction),
    /// `MMUEXT_NEW_BASEPTR`: load this L4 into CR3 now. Reported before the old root's
    /// references are dropped, so no CPU runs on tables that may be devalidated.
    LoadKernelRoot(Mfn),
    /// `MMUEXT_SET_LDT`: the vCPU's LDT changed; reload it from [`VcpuMm::ldt`].
    LoadLdt,
}

/// The per-vCPU memory state the operations need: base pointers, GDT frames and LDT. Its
/// fields hold references, so only this module changes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuMm {
    kernel_root: Option<Mfn>,
    user_root: Option<Mfn>,
    gdt_frames: [Mfn; FIRST_RESERVED_GDT_PAGE],
    gdt_nr_frames: usize,
    gdt_entries: usize,
    ldt_base: u64,
    ldt_entries: u32,
}

impl Default for VcpuMm {
    fn default() -> Self {
        VcpuMm::new()
    }
}

impl VcpuMm {
    /// A vCPU with no page tables, GDT or LDT.
    pub const fn new() -> Self {
        VcpuMm {
            kernel_root: None,
            user_root: None,
            gdt_frames: [Mfn(0); FIRST_RESERVED_GDT_PAGE],
            gdt_nr_frames: 0,
            gdt_entries: 0,
            ldt_base: 0,
            ldt_entries: 0,
        }
    }

    /// A vCPU state with these roots but no references behind them, for tests of code that
    /// only reads the roots (entry/exit paths); real roots come from `mmuext_op`.
    #[cfg(test)]
    pub const fn with_roots(kernel_root: Option<Mfn>, user_root: Option<Mfn>) -> Self {
        VcpuMm {
            kernel_root,
            user_root,
            ..VcpuMm::new()
        }
    }

    /// The kernel-mode L4 (CR3 in guest kernel mode).
    pub fn kernel_root(&self) -> Option<Mfn> {
        self.kernel_root
    }

    /// The user-mode L4 (CR3 in guest user mode), if the guest set one.
    pub fn user_root(&self) -> Option<Mfn> {
        self.user_root
    }

    /// The GDT frames, in order, each typed [`PageType::SegDesc`].
    pub fn gdt_frames(&self) -> &[Mfn] {
        self.gdt_frames.get(..self.gdt_nr_frames).unwrap_or(&[])
    }

    /// How many GDT entries the guest declared.
    pub fn gdt_entries(&self) -> usize {
        self.gdt_entries
    }

    /// The LDT's linear address and entry count (0 entries: no LDT).
    pub fn ldt(&self) -> (u64, u32) {
        (self.ldt_base, self.ldt_entries)
    }
}

/// The PV memory checker over hv's frame table and page memory, opened for one operation
/// (or a batch). Holds no state of its own beyond hv's L4 slot values.
pub struct PvMm<'a, 'f, M: PageMemory> {
    /// The frame allocator, whose table holds every frame's owner, type and counts.
    pub alloc: &'a mut FrameAllocator<'f>,
    /// Page contents.
    pub mem: &'a mut M,
    /// What hv keeps in L4 slots 256..=271 of every validated L4.
    pub hv_l4_slots: [u64; HV_L4_SLOTS],
}

impl<'a, 'f, M: PageMemory> PvMm<'a, 'f, M> {
    /// A checker over `alloc` and `mem`, writing `hv_l4_slots` into validated L4s.
    pub fn new(
        alloc: &'a mut FrameAllocator<'f>,
        mem: &'a mut M,
        hv_l4_slots: [u64; HV_L4_SLOTS],
    ) -> Self {
        PvMm {
            alloc,
            mem,
            hv_l4_slots,
        }
    }

    fn frame(&self, mfn: Mfn) -> Option<&PageInfo> {
        self.alloc.table().get(mfn)
    }

    /// The entry of a frame hv holds a reference on (a missing one is corruption).
    fn held_frame(&mut self, mfn: Mfn) -> Result<FrameMut<'_>, PvError> {
        self.alloc.frame_mut(mfn).ok_or(PvError::Corrupt(mfn))
    }

    fn is_owned_by(&self, mfn: Mfn, domid: DomId) -> bool {
        self.frame(mfn)
            .is_some_and(|page| page.owner() == Owner::Domain(domid))
    }

    // --- References and types -------------------------------------------------------------

    /// Takes a general reference on `mfn`, which must be `domid`'s (Xen's `get_page`).
    /// Refusals: [`PvError::NotOwned`], [`PvError::CountOverflow`].
    pub fn get_page(&mut self, mfn: Mfn, domid: DomId) -> Result<(), PvError> {
        let mut frame = self.alloc.frame_mut(mfn).ok_or(PvError::NotOwned(mfn))?;
        if frame.owner() != Owner::Domain(domid) {
            return Err(PvError::NotOwned(mfn));
        }
        frame
            .get_ref()
            .map(drop)
            .map_err(|_| PvError::CountOverflow(mfn))
    }

    /// Drops a general reference taken by [`get_page`](Self::get_page).
    pub fn put_page(&mut self, mfn: Mfn) -> Result<(), PvError> {
        self.held_frame(mfn)?
            .put_ref()
            .map(drop)
            .map_err(|_| PvError::Corrupt(mfn))
    }

    /// Takes a type reference of type `wanted` on `mfn`, which must be `domid`'s (Xen's
    /// `get_page_type`; the caller holds a general reference). While the frame holds another
    /// type this fails; when it holds none, the frame takes `wanted`, after a TLB flush if
    /// CPUs may cache it as something else, and a page-table or descriptor type is validated
    /// (see the module documentation). A failed validation leaves no reference behind.
    pub fn get_page_type(
        &mut self,
        mfn: Mfn,
        domid: DomId,
        wanted: PageType,
    ) -> Result<(), PvError> {
        let page = *self.frame(mfn).ok_or(PvError::NotOwned(mfn))?;
        if page.owner() != Owner::Domain(domid) {
            return Err(PvError::NotOwned(mfn));
        }
        let conflict = PvError::TypeConflict {
            mfn,
            current: page.page_type(),
            wanted,
        };
        if wanted == PageType::None {
            return Err(conflict);
        }
        let needs_validation = Level::of(wanted).is_some() || wanted == PageType::SegDesc;
        if page.type_count() != 0 {
            // A table of the type asked for that is not validated is one whose validation
            // is under way further up this call chain.
            if page.page_type() != wanted || (needs_validation && !page.is_validated()) {
                return Err(conflict);
            }
            return self
                .held_frame(mfn)?
                .get_type(wanted)
                .map(drop)
                .map_err(|_| PvError::CountOverflow(mfn));
        }
        if page.stale_type().is_some_and(|stale| stale != wanted) {
            self.mem.flush_domain_tlbs(domid);
        }
        {
            let mut frame = self.held_frame(mfn)?;
            frame
                .get_type(wanted)
                .map_err(|_| PvError::CountOverflow(mfn))?;
            frame
                .set_stale_type(None)
                .map_err(|_| PvError::Corrupt(mfn))?;
        }
        if !needs_validation {
            return Ok(());
        }
        let validated = match Level::of(wanted) {
            Some(level) => self.validate_table(mfn, domid, level),
            None => self.validate_descriptors(mfn),
        };
        let mut frame = self.held_frame(mfn)?;
        match validated {
            Ok(()) => frame.set_validated(true).map_err(|_| PvError::Corrupt(mfn)),
            Err(error) => {
                frame.put_type().map_err(|_| PvError::Corrupt(mfn))?;
                Err(error)
            }
        }
    }

    /// Drops a type reference taken by [`get_page_type`](Self::get_page_type). Dropping the
    /// last one of a page table releases every reference its entries hold (recursively, as
    /// lower tables lose their last reference) and records that CPUs may still cache the
    /// frame as its old type.
    pub fn put_page_type(&mut self, mfn: Mfn) -> Result<(), PvError> {
        let page = *self.frame(mfn).ok_or(PvError::Corrupt(mfn))?;
        if page.type_count() == 0 {
            return Err(PvError::Corrupt(mfn));
        }
        // Release the entries' references while the frame still holds its type: the
        // reference graph has no cycles, so nothing below reaches this frame again.
        let released = match Level::of(page.page_type()) {
            Some(level) if page.type_count() == 1 && page.is_validated() => {
                self.release_entries(mfn, level, ENTRIES)
            }
            _ => Ok(()),
        };
        let mut frame = self.held_frame(mfn)?;
        let left = frame.put_type().map_err(|_| PvError::Corrupt(mfn))?;
        if left == 0 {
            frame
                .set_stale_type(Some(page.page_type()))
                .map_err(|_| PvError::Corrupt(mfn))?;
        }
        released
    }

    /// [`get_page`](Self::get_page) and [`get_page_type`](Self::get_page_type) together, or
    /// neither.
    fn get_page_and_type(
        &mut self,
        mfn: Mfn,
        domid: DomId,
        wanted: PageType,
    ) -> Result<(), PvError> {
        self.get_page(mfn, domid)?;
        match self.get_page_type(mfn, domid, wanted) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.put_page(mfn)?;
                Err(error)
            }
        }
    }

    /// [`put_page_type`](Self::put_page_type) then [`put_page`](Self::put_page); both run
    /// even if the first reports corruption.
    fn put_page_and_type(&mut self, mfn: Mfn) -> Result<(), PvError> {
        let typed = self.put_page_type(mfn);
        let general = self.put_page(mfn);
        typed.and(general)
    }

    // --- Entries --------------------------------------------------------------------------

    /// Checks a present L1 entry of `domid`'s and takes its references: a general one on the
    /// frame, and a writable type one if it is mapped writable. Returns the entry as stored
    /// (user bit added).
    fn get_l1e(&mut self, domid: DomId, entry: u64) -> Result<u64, PvError> {
        let bits = entry & !(GUEST_L1_FLAGS | PTE_ADDR_MASK);
        if bits != 0 {
            return Err(PvError::BadFlags { level: 1, bits });
        }
        let mfn = entry_mfn(entry);
        match self.frame(mfn).map(PageInfo::owner) {
            None | Some(Owner::NotRam) => return Err(PvError::NotRam(mfn)),
            // Grant and foreign mappings would be admitted here; for now only the domain's
            // own frames can be mapped.
            Some(owner) if owner != Owner::Domain(domid) => {
                return Err(PvError::MappingRefused(mfn))
            }
            Some(_) => {}
        }
        self.get_page(mfn, domid)
            .map_err(|_| PvError::MappingRefused(mfn))?;
        if entry & PTE_RW != 0 {
            if let Err(error) = self.get_page_type(mfn, domid, PageType::Writable) {
                self.put_page(mfn)?;
                return Err(match error {
                    PvError::Corrupt(_) => error,
                    _ => PvError::MappingRefused(mfn),
                });
            }
        }
        Ok(entry | PTE_USER)
    }

    /// Checks a present L2..L4 entry of table `table` (of `domid`) and takes a general and a
    /// type reference on the lower table it names, validating it if needed. Returns the
    /// entry as stored.
    fn get_pde(
        &mut self,
        domid: DomId,
        table: Mfn,
        level: Level,
        entry: u64,
    ) -> Result<u64, PvError> {
        if entry & PTE_PSE != 0 {
            return Err(PvError::Superpage);
        }
        let bits = entry & !(GUEST_PDE_FLAGS | PTE_ADDR_MASK);
        if bits != 0 {
            return Err(PvError::BadFlags {
                level: level as u8,
                bits,
            });
        }
        let child = entry_mfn(entry);
        if child == table {
            return Err(PvError::LinearPageTable(child));
        }
        match self.get_page_and_type(child, domid, level.entry_target()) {
            Ok(()) => {}
            Err(PvError::TypeConflict { current, .. })
                if Level::of(current).is_some_and(|held| held >= level) =>
            {
                return Err(PvError::LinearPageTable(child))
            }
            Err(error) => return Err(error),
        }
        let extra = if level == Level::L4 { PTE_ACCESSED } else { 0 };
        Ok(entry | PTE_USER | extra)
    }

    /// Takes the references a present entry of a `level` table needs; returns it as stored.
    fn get_entry(
        &mut self,
        domid: DomId,
        table: Mfn,
        level: Level,
        entry: u64,
    ) -> Result<u64, PvError> {
        match level {
            Level::L1 => self.get_l1e(domid, entry),
            _ => self.get_pde(domid, table, level, entry),
        }
    }

    /// Releases the references a present entry of a `level` table holds.
    fn put_entry(&mut self, level: Level, entry: u64) -> Result<(), PvError> {
        let mfn = entry_mfn(entry);
        if level == Level::L1 && entry & PTE_RW == 0 {
            self.put_page(mfn)
        } else {
            self.put_page_and_type(mfn)
        }
    }

    /// Releases the references of the present guest entries `0..end` of `table`, except grant
    /// mappings', which the grant tables hold. Carries on past corruption, reporting the
    /// first.
    fn release_entries(&mut self, table: Mfn, level: Level, end: usize) -> Result<(), PvError> {
        let mut result = Ok(());
        for index in (0..end).filter(|&i| level.is_guest_slot(i)) {
            let entry = self.mem.read_entry(table, index);
            if entry & PTE_PRESENT != 0 && !is_grant_entry(level, entry) {
                result = result.and(self.put_entry(level, entry));
            }
        }
        result
    }

    /// Validates the contents of `table`, which just took type `level`: takes every present
    /// guest entry's references (undoing them all on the first refusal) and, for an L4,
    /// writes hv's slots.
    fn validate_table(&mut self, table: Mfn, domid: DomId, level: Level) -> Result<(), PvError> {
        for index in 0..ENTRIES {
            if !level.is_guest_slot(index) {
                continue;
            }
            let entry = self.mem.read_entry(table, index);
            if entry & PTE_PRESENT == 0 {
                continue;
            }
            match self.get_entry(domid, table, level, entry) {
                Ok(stored) if stored == entry => {}
                Ok(stored) => self.mem.write_entry(table, index, stored),
                Err(error) => {
                    self.release_entries(table, level, index)?;
                    return Err(error);
                }
            }
        }
        if level == Level::L4 {
            for (slot, &value) in self.hv_l4_slots.iter().enumerate() {
                self.mem.write_entry(table, HV_L4_FIRST_SLOT + slot, value);
            }
        }
        Ok(())
    }

    /// Checks every descriptor of a frame about to be a GDT frame, writing back the DPL
    /// fix-ups [`check_descriptor`] makes.
    fn validate_descriptors(&mut self, mfn: Mfn) -> Result<(), PvError> {
        for index in 0..ENTRIES {
            let raw = self.mem.read_entry(mfn, index);
            match check_descriptor(raw) {
                Some(fixed) if fixed == raw => {}
                Some(fixed) => self.mem.write_entry(mfn, index, fixed),
                None => return Err(PvError::BadDescriptor { mfn, index }),
            }
        }
        Ok(())
    }

    /// Writes `new` into entry `index` of `table`, a validated table of `level` of `domid`:
    /// the new entry's references are taken before the old one's are released. A grant
    /// mapping's entry is refused ([`PvError::GrantEntry`]).
    fn mod_entry(
        &mut self,
        domid: DomId,
        table: Mfn,
        level: Level,
        index: usize,
        new: u64,
        preserve_ad: bool,
    ) -> Result<(), PvError> {
        if !level.is_guest_slot(index) {
            return Err(PvError::ReservedSlot(index));
        }
        let old = self.mem.read_entry(table, index);
        if is_grant_entry(level, old) {
            return Err(PvError::GrantEntry(table));
        }
        let mut stored = if new & PTE_PRESENT != 0 {
            self.get_entry(domid, table, level, new)?
        } else {
            new
        };
        if preserve_ad {
            stored |= old & (PTE_ACCESSED | PTE_DIRTY);
        }
        self.mem.write_entry(table, index, stored);
        if old & PTE_PRESENT != 0 {
            self.put_entry(level, old)?;
        }
        Ok(())
    }

    /// One `MMU_NORMAL_PT_UPDATE` (or `PRESERVE_AD`) of the entry at machine address
    /// `address`, under a general reference on its frame.
    fn update_pt_entry(
        &mut self,
        domid: DomId,
        address: u64,
        value: u64,
        preserve_ad: bool,
    ) -> Result<(), PvError> {
        let table = Mfn::from_paddr(address);
        // 8-byte entries: 0..512.
        let index = ((address & 0xfff) >> 3) as usize;
        self.get_page(table, domid)?;
        let result = self.write_typed_frame(domid, table, index, value, preserve_ad);
        result.and(self.put_page(table))
    }

    fn write_typed_frame(
        &mut self,
        domid: DomId,
        table: Mfn,
        index: usize,
        value: u64,
        preserve_ad: bool,
    ) -> Result<(), PvError> {
        let page = *self.frame(table).ok_or(PvError::Corrupt(table))?;
        if page.type_count() == 0 {
            // An untyped frame is written as data, under a transient writable type.
            self.get_page_type(table, domid, PageType::Writable)?;
            self.mem.write_entry(table, index, value);
            return self.put_page_type(table);
        }
        match page.page_type() {
            PageType::Writable => {
                self.mem.write_entry(table, index, value);
                Ok(())
            }
            ty => match Level::of(ty) {
                Some(level) => self.mod_entry(domid, table, level, index, value, preserve_ad),
                None => Err(PvError::NotWritable(table)),
            },
        }
    }

    // --- Hypercalls -----------------------------------------------------------------------

    /// `mmu_update` for `domid`: applies `reqs` in order and stops at the first refusal.
    /// Returns how many succeeded and the first refusal.
    ///
    /// - `MMU_NORMAL_PT_UPDATE`, `MMU_PT_UPDATE_PRESERVE_AD` (A/D bits of the old entry are
    ///   kept) and `MMU_PT_UPDATE_NO_TRANSLATE` (the same for a PV guest): `ptr` is the
    ///   entry's machine address. Its frame must be the domain's ([`PvError::NotOwned`]).
    ///   In a validated table of some level the new entry is checked as for that level; in
    ///   a frame of type [`PageType::Writable`] or of no type it is a plain memory write (as
    ///   Xen); in a descriptor or shared frame it is refused ([`PvError::NotWritable`]).
    /// - `MMU_MACHPHYS_UPDATE`: the frame containing `ptr` must be the domain's
    ///   ([`PvError::NotOwned`]); its M2P entry becomes `val`.
    /// - Any other value of `ptr & 7`: [`PvError::UnknownCommand`] (`-ENOSYS`).
    ///
    /// No flush is needed afterwards beyond what the guest asks for: without linear page
    /// tables, Xen flushes nothing for these updates either.
    pub fn mmu_update(&mut self, domid: DomId, reqs: &[MmuUpdate]) -> (usize, Result<(), PvError>) {
        for (done, req) in reqs.iter().enumerate() {
            let address = req.ptr & !7;
            let result = match req.ptr & 7 {
                0 | 3 => self.update_pt_entry(domid, address, req.val, false),
                2 => self.update_pt_entry(domid, address, req.val, true),
                1 => self.machphys_update(domid, Mfn::from_paddr(address), req.val),
                _ => Err(PvError::UnknownCommand),
            };
            if let Err(error) = result {
                return (done, Err(error));
            }
        }
        (reqs.len(), Ok(()))
    }

    fn machphys_update(&mut self, domid: DomId, mfn: Mfn, pfn: u64) -> Result<(), PvError> {
        self.get_page(mfn, domid)?;
        self.mem.set_m2p(mfn, pfn);
        self.put_page(mfn)
    }

    /// `mmuext_op` for `domid`'s vCPU `vcpu`: applies `ops` in order, reporting what the arch
    /// layer must do through `effect` as it goes, and stops at the first refusal. Returns how
    /// many succeeded and the first refusal.
    ///
    /// - `PIN_L1_TABLE`..`PIN_L4_TABLE`: type the frame (validating it) and pin it. Refused:
    ///   not the domain's ([`PvError::NotOwned`]), validation refusals, already pinned
    ///   ([`PvError::AlreadyPinned`]).
    /// - `UNPIN_TABLE`: drop the pin's references ([`PvError::NotOwned`],
    ///   [`PvError::NotPinned`]). A table also in use (as a base pointer, or by another
    ///   table) keeps its type through that use, as in Xen.
    /// - `NEW_BASEPTR` / `NEW_USER_BASEPTR` (0 = none): take an L4 reference on the new root,
    ///   drop the old one's. For the kernel root [`MmuextEffect::LoadKernelRoot`] is reported
    ///   between the two; the user root is loaded on the next switch to guest user mode.
    /// - `TLB_FLUSH_*`, `INVLPG_*`: [`MmuextEffect::Flush`]. An INVLPG of an address the guest
    ///   cannot name flushes nothing (as Xen).
    /// - `SET_LDT`: at most 8192 entries, a page-aligned guest address ([`PvError::BadLdt`]);
    ///   a change is reported as [`MmuextEffect::LoadLdt`].
    /// - `CLEAR_PAGE` / `COPY_PAGE`: the frames must be the domain's and the destination
    ///   must be able to take the writable type ([`PvError::NotOwned`],
    ///   [`PvError::TypeConflict`]).
    /// - `FLUSH_CACHE[_GLOBAL]`: [`PvError::CacheFlushDenied`]. `MARK_SUPER`/`UNMARK_SUPER`:
    ///   [`PvError::NotSupported`]. Unknown commands: [`PvError::UnknownCommand`].
    pub fn mmuext_op(
        &mut self,
        domid: DomId,
        vcpu: &mut VcpuMm,
        ops: &[MmuextOp],
        mut effect: impl FnMut(MmuextEffect),
    ) -> (usize, Result<(), PvError>) {
        for (done, op) in ops.iter().enumerate() {
            if let Err(error) = self.one_mmuext_op(domid, vcpu, op, &mut effect) {
                return (done, Err(error));
            }
        }
        (ops.len(), Ok(()))
    }

    fn one_mmuext_op(
        &mut self,
        domid: DomId,
        vcpu: &mut VcpuMm,
        op: &MmuextOp,
        effect: &mut impl FnMut(MmuextEffect),
    ) -> Result<(), PvError> {
        let cmd = MmuextCmd::try_from(op.cmd).map_err(|_| PvError::UnknownCommand)?;
        let mfn = Mfn(op.arg1);
        let va = op.arg1;
        let mut flush = |action| {
            effect(MmuextEffect::Flush(action));
            Ok(())
        };
        match cmd {
            MmuextCmd::PinL1Table => self.pin(domid, mfn, PageType::L1),
            MmuextCmd::PinL2Table => self.pin(domid, mfn, PageType::L2),
            MmuextCmd::PinL3Table => self.pin(domid, mfn, PageType::L3),
            MmuextCmd::PinL4Table => self.pin(domid, mfn, PageType::L4),
            MmuextCmd::UnpinTable => self.unpin(domid, mfn),
            MmuextCmd::NewBaseptr => self.new_baseptr(domid, vcpu, mfn, effect),
            MmuextCmd::NewUserBaseptr => {
                let new = (op.arg1 != 0).then_some(mfn);
                self.new_user_baseptr(domid, vcpu, new)
            }
            MmuextCmd::TlbFlushLocal => flush(FlushAction::TlbLocal),
            MmuextCmd::TlbFlushMulti => flush(FlushAction::TlbMulti { vcpumask: op.arg2 }),
            MmuextCmd::TlbFlushAll => flush(FlushAction::TlbAll),
            // An address the guest cannot name flushes nothing, as in Xen.
            MmuextCmd::InvlpgLocal | MmuextCmd::InvlpgMulti | MmuextCmd::InvlpgAll
                if !guest_va_ok(va) =>
            {
                Ok(())
            }
            MmuextCmd::InvlpgLocal => flush(FlushAction::InvlpgLocal { va }),
            MmuextCmd::InvlpgMulti => flush(FlushAction::InvlpgMulti {
                va,
                vcpumask: op.arg2,
            }),
            MmuextCmd::InvlpgAll => flush(FlushAction::InvlpgAll { va }),
            MmuextCmd::SetLdt => {
                let entries = op.nr_ents();
                let base = if entries == 0 { 0 } else { op.arg1 };
                if entries > MAX_LDT_ENTRIES
                    || (entries != 0 && (base & 0xfff != 0 || !guest_va_ok(base)))
                {
                    return Err(PvError::BadLdt);
                }
                if (vcpu.ldt_base, vcpu.ldt_entries) != (base, entries) {
                    vcpu.ldt_base = base;
                    vcpu.ldt_entries = entries;
                    effect(MmuextEffect::LoadLdt);
                }
                Ok(())
            }
            MmuextCmd::ClearPage => self.clear_page(domid, mfn),
            MmuextCmd::CopyPage => self.copy_page(domid, mfn, Mfn(op.arg2)),
            MmuextCmd::FlushCache | MmuextCmd::FlushCacheGlobal => Err(PvError::CacheFlushDenied),
            MmuextCmd::MarkSuper | MmuextCmd::UnmarkSuper => Err(PvError::NotSupported),
        }
    }

    fn pin(&mut self, domid: DomId, mfn: Mfn, table_type: PageType) -> Result<(), PvError> {
        self.get_page_and_type(mfn, domid, table_type)?;
        if self.frame(mfn).is_some_and(PageInfo::is_pinned) {
            self.put_page_and_type(mfn)?;
            return Err(PvError::AlreadyPinned(mfn));
        }
        self.held_frame(mfn)?
            .set_pinned(true)
            .map_err(|_| PvError::Corrupt(mfn))
    }

    fn unpin(&mut self, domid: DomId, mfn: Mfn) -> Result<(), PvError> {
        if !self.is_owned_by(mfn, domid) {
            return Err(PvError::NotOwned(mfn));
        }
        if !self.frame(mfn).is_some_and(PageInfo::is_pinned) {
            return Err(PvError::NotPinned(mfn));
        }
        self.held_frame(mfn)?
            .set_pinned(false)
            .map_err(|_| PvError::Corrupt(mfn))?;
        self.put_page_and_type(mfn)
    }

    fn new_baseptr(
        &mut self,
        domid: DomId,
        vcpu: &mut VcpuMm,
        mfn: Mfn,
        effect: &mut impl FnMut(MmuextEffect),
    ) -> Result<(), PvError> {
        if vcpu.kernel_root != Some(mfn) {
            self.get_page_and_type(mfn, domid, PageType::L4)?;
        }
        let old = vcpu.kernel_root.replace(mfn);
        effect(MmuextEffect::LoadKernelRoot(mfn));
        match old {
            Some(old) if old != mfn => self.put_page_and_type(old),
            _ => Ok(()),
        }
    }

    fn new_user_baseptr(
        &mut self,
        domid: DomId,
        vcpu: &mut VcpuMm,
        new: Option<Mfn>,
    ) -> Result<(), PvError> {
        if vcpu.user_root == new {
            return Ok(());
        }
        if let Some(mfn) = new {
            self.get_page_and_type(mfn, domid, PageType::L4)?;
        }
        match core::mem::replace(&mut vcpu.user_root, new) {
            Some(old) => self.put_page_and_type(old),
            None => Ok(()),
        }
    }

    fn clear_page(&mut self, domid: DomId, mfn: Mfn) -> Result<(), PvError> {
        self.get_page_and_type(mfn, domid, PageType::Writable)?;
        for index in 0..ENTRIES {
            self.mem.write_entry(mfn, index, 0);
        }
        self.put_page_and_type(mfn)
    }

    fn copy_page(&mut self, domid: DomId, dst: Mfn, src: Mfn) -> Result<(), PvError> {
        self.get_page(src, domid)?;
        if let Err(error) = self.get_page_and_type(dst, domid, PageType::Writable) {
            self.put_page(src)?;
            return Err(error);
        }
        for index in 0..ENTRIES {
            let value = self.mem.read_entry(src, index);
            self.mem.write_entry(dst, index, value);
        }
        let dst_released = self.put_page_and_type(dst);
        dst_released.and(self.put_page(src))
    }

    /// `update_va_mapping` for `domid`: writes `new_pte` into the L1 entry that maps `va`
    /// in the tables under `root` (the vCPU's current kernel L4), checked as an
    /// `mmu_update` of that entry, and turns `flags` (`UVMF_*`) into the flush to perform.
    ///
    /// Refused: `va` non-canonical or in hv's range ([`PvError::BadAddress`]); no L1 table
    /// for `va` ([`PvError::NotMapped`]); the entry's own refusals. Nothing is flushed on a
    /// refusal.
    pub fn update_va_mapping(
        &mut self,
        domid: DomId,
        root: Mfn,
        va: u64,
        new_pte: u64,
        flags: u64,
    ) -> Result<FlushAction, PvError> {
        if !guest_va_ok(va) {
            return Err(PvError::BadAddress(va));
        }
        let l1 = self.walk_to_l1(domid, root, va)?;
        self.get_page(l1, domid)?;
        let result = self.mod_entry(domid, l1, Level::L1, Level::L1.index_of(va), new_pte, false);
        result.and(self.put_page(l1))?;
        let target = flags & !UVMF_FLUSHTYPE_MASK;
        Ok(match flags & UVMF_FLUSHTYPE_MASK {
            UVMF_TLB_FLUSH => match target {
                0 => FlushAction::TlbLocal,
                UVMF_ALL => FlushAction::TlbAll,
                vcpumask => FlushAction::TlbMulti { vcpumask },
            },
            UVMF_INVLPG => match target {
                0 => FlushAction::InvlpgLocal { va },
                UVMF_ALL => FlushAction::InvlpgAll { va },
                vcpumask => FlushAction::InvlpgMulti { va, vcpumask },
            },
            _ => FlushAction::None,
        })
    }

    /// The validated L1 table of `domid` that maps `va` under `root`.
    fn walk_to_l1(&self, domid: DomId, root: Mfn, va: u64) -> Result<Mfn, PvError> {
        let mut table = root;
        for level in [Level::L4, Level::L3, Level::L2, Level::L1] {
            let is_table = self.frame(table).is_some_and(|page| {
                page.owner() == Owner::Domain(domid)
                    && page.page_type() == level.page_type()
                    && page.is_validated()
            });
            if !is_table {
                return Err(PvError::NotMapped(va));
            }
            if level == Level::L1 {
                break;
            }
            let entry = self.mem.read_entry(table, level.index_of(va));
            if entry & PTE_PRESENT == 0 {
                return Err(PvError::NotMapped(va));
            }
            table = entry_mfn(entry);
        }
        Ok(table)
    }

    /// The L1 table and index holding `va`'s entry in `domid`'s tables under `root`, for the
    /// grant-mapping calls below: `va` must be a guest address with a validated L1 of `domid`.
    fn grant_slot(&mut self, domid: DomId, root: Mfn, va: u64) -> Result<(Mfn, usize), PvError> {
        if !guest_va_ok(va) {
            return Err(PvError::BadAddress(va));
        }
        let l1 = self.walk_to_l1(domid, root, va)?;
        Ok((l1, Level::L1.index_of(va)))
    }

    /// For `GNTTABOP_map_grant_ref`: makes the L1 entry for `va` in `domid`'s tables under
    /// `root` (the vCPU's current L4) map `mfn`, read-only or writable, marked as a grant
    /// mapping. It takes no reference: the grant tables hold the frame's (a general one, and
    /// a writable type one for a writable mapping) before calling this. No flush is needed
    /// (the entry was not present).
    ///
    /// Refused: `va` non-canonical or in hv's range ([`PvError::BadAddress`]); no validated
    /// L1 of `domid` for `va` ([`PvError::NotMapped`]); the entry present
    /// ([`PvError::EntryInUse`]).
    pub fn install_grant_pte(
        &mut self,
        domid: DomId,
        root: Mfn,
        va: u64,
        mfn: Mfn,
        readonly: bool,
    ) -> Result<(), PvError> {
        let (l1, index) = self.grant_slot(domid, root, va)?;
        if self.mem.read_entry(l1, index) & PTE_PRESENT != 0 {
            return Err(PvError::EntryInUse(va));
        }
        let rw = if readonly { 0 } else { PTE_RW };
        let entry = (mfn.paddr() & PTE_ADDR_MASK) | GRANT_PTE_FLAGS | rw;
        self.mem.write_entry(l1, index, entry);
        Ok(())
    }

    /// For `GNTTABOP_unmap_grant_ref`: clears the L1 entry for `va` in `domid`'s tables under
    /// `root`, which must be a grant mapping of `mfn` made read-only or writable as
    /// `readonly` says, without releasing references (the grant tables drop theirs once the
    /// caller has flushed the TLBs).
    ///
    /// Refused: as [`install_grant_pte`](Self::install_grant_pte) for the address and the
    /// walk; any other entry there ([`PvError::NoGrantEntry`]).
    pub fn clear_grant_pte(
        &mut self,
        domid: DomId,
        root: Mfn,
        va: u64,
        mfn: Mfn,
        readonly: bool,
    ) -> Result<(), PvError> {
        let (l1, index) = self.grant_slot(domid, root, va)?;
        let entry = self.mem.read_entry(l1, index);
        let writable = entry & PTE_RW != 0;
        if !is_grant_entry(Level::L1, entry) || entry_mfn(entry) != mfn || writable == readonly {
            return Err(PvError::NoGrantEntry(va));
        }
        self.mem.write_entry(l1, index, 0);
        Ok(())
    }

    /// `set_gdt` for `domid`'s vCPU `vcpu`: the first `entries.div_ceil(512)` of `frames`
    /// become its GDT, each typed [`PageType::SegDesc`] after its descriptors are checked;
    /// the previous GDT's frames are then released. The caller installs the new GDT before
    /// the vCPU runs again.
    ///
    /// Refused (`-EINVAL`, as Xen for every case): more than [`FIRST_RESERVED_GDT_ENTRY`]
    /// entries or too few frames ([`PvError::BadGdt`]); a frame not the domain's, of another
    /// type, or with a descriptor [`check_descriptor`] refuses. On refusal the old GDT stays.
    pub fn set_gdt(
        &mut self,
        domid: DomId,
        vcpu: &mut VcpuMm,
        frames: &[Mfn],
        entries: usize,
    ) -> Result<(), PvError> {
        if entries > FIRST_RESERVED_GDT_ENTRY {
            return Err(PvError::BadGdt);
        }
        let new = frames
            .get(..entries.div_ceil(ENTRIES))
            .ok_or(PvError::BadGdt)?;
        for (taken, &mfn) in new.iter().enumerate() {
            if let Err(error) = self.get_page_and_type(mfn, domid, PageType::SegDesc) {
                for &held in new.iter().take(taken) {
                    self.put_page_and_type(held)?;
                }
                return Err(error);
            }
        }
        let released = self.release_gdt(vcpu);
        for (slot, &mfn) in vcpu.gdt_frames.iter_mut().zip(new) {
            *slot = mfn;
        }
        vcpu.gdt_nr_frames = new.len();
        vcpu.gdt_entries = entries;
        released
    }

    fn release_gdt(&mut self, vcpu: &mut VcpuMm) -> Result<(), PvError> {
        let old = vcpu.gdt_frames;
        let mut result = Ok(());
        for &mfn in old.iter().take(vcpu.gdt_nr_frames) {
            result = result.and(self.put_page_and_type(mfn));
        }
        vcpu.gdt_frames = [Mfn(0); FIRST_RESERVED_GDT_PAGE];
        vcpu.gdt_nr_frames = 0;
        vcpu.gdt_entries = 0;
        result
    }

    /// For the domain builder: makes `l4`, the root of `domid`'s bootstrap page tables,
    /// pinned and `vcpu`'s kernel root, validating the tables under it (as Xen's toolstack
    /// pins a new domain's L4 and loads it as vCPU 0's CR3). The builder maps the page-table
    /// frames read-only, or validation refuses them ([`PvError::MappingRefused`]).
    pub fn new_domain_root(
        &mut self,
        domid: DomId,
        vcpu: &mut VcpuMm,
        l4: Mfn,
    ) -> Result<(), PvError> {
        self.pin(domid, l4, PageType::L4)?;
        self.new_baseptr(domid, vcpu, l4, &mut |_| {})
    }

    /// Domain teardown: releases everything `domid` holds so each of its frames ends with
    /// zero counts and can be freed. First every vCPU's base pointers, GDT and LDT, then
    /// every pin among `frames` (frames of other owners are skipped). Each release drops a
    /// reference this module took, and without linear page tables the references form no
    /// cycle, so dropping the roots unwinds every table below them; no step validates
    /// anything, so none can be refused. Grant mappings' entries are left with their
    /// references to the grant tables (`GrantTables::release_domain`, called next). Frames
    /// still holding counts afterwards are passed to `stuck`; returns how many. Those are the
    /// frames grant mappings hold (the domain's own, mapped by it or by others), or, if hv's
    /// bookkeeping broke, others.
    pub fn relinquish<I>(
        &mut self,
        domid: DomId,
        vcpus: &mut [VcpuMm],
        frames: I,
        mut stuck: impl FnMut(Mfn),
    ) -> usize
    where
        I: IntoIterator<Item = Mfn>,
        I::IntoIter: Clone,
    {
        // Failures here are counted below, as frames left with references.
        for vcpu in vcpus.iter_mut() {
            for root in [vcpu.kernel_root.take(), vcpu.user_root.take()]
                .into_iter()
                .flatten()
            {
                let _ = self.put_page_and_type(root);
            }
            let _ = self.release_gdt(vcpu);
            vcpu.ldt_base = 0;
            vcpu.ldt_entries = 0;
        }
        let frames = frames.into_iter();
        for mfn in frames.clone() {
            if self.is_owned_by(mfn, domid) && self.frame(mfn).is_some_and(PageInfo::is_pinned) {
                let _ = self.unpin(domid, mfn);
            }
        }
        let mut left = 0;
        for mfn in frames {
            let in_use = self.frame(mfn).is_some_and(|page| {
                page.owner() == Owner::Domain(domid)
                    && (page.type_count() != 0 || page.ref_count() != 0)
            });
            if in_use {
                stuck(mfn);
                left += 1;
            }
        }
        left
    }
}

/// Xen's `check_descriptor` for a 64-bit PV guest: the descriptor as hv stores it, or `None`
/// if a guest may not have it.
///
/// Not-present descriptors and system type 0 (the upper half of a 16-byte gate) are kept
/// as they are. Present code and data segments are kept with their DPL raised to 3 (the
/// guest kernel runs in ring 3). A 64-bit call gate is kept if its target selector is the
/// guest's (GDT index below [`FIRST_RESERVED_GDT_ENTRY`] or an LDT selector) or hv's flat
/// kernel code segment, with DPL 0 so using it traps for emulation, its original DPL moved to
/// the selector's RPL, and its reserved bits clear. TSS, LDT, interrupt and trap gate
/// descriptors are refused.
pub fn check_descriptor(raw: u64) -> Option<u64> {
    // Low and high 32-bit words of the descriptor (truncation intended).
    let low = raw as u32;
    let high = (raw >> 32) as u32;
    if high & SEG_P == 0 {
        return Some(raw);
    }
    let with_dpl3 = high | SEG_DPL;
    if high & SEG_S != 0 {
        return Some(u64::from(low) | (u64::from(with_dpl3) << 32));
    }
    match high & SEG_TYPE {
        0 => return Some(raw),
        SEG_TYPE_CALL_GATE => {}
        _ => return None,
    }
    let selector = low >> 16;
    let guest_selector = (selector >> 3) < FIRST_RESERVED_GDT_ENTRY as u32
        || selector == u32::from(FLAT_KERNEL_CS64)
        || selector & 4 != 0;
    if !guest_selector || high & 0xff != 0 {
        return None;
    }
    let selector = selector | 3;
    let low = (low & 0xffff) | (selector << 16);
    Some(u64::from(low) | (u64::from(high & !SEG_DPL) << 32))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::vec::Vec;

    use hypercall_abi::xen::UVMF_NONE;
    use proptest::prelude::*;

    use super::*;
    use crate::mm::{FrameAllocator, FrameTable, PageInfo};

    const BASE: u64 = 0x100;
    const NR_FRAMES: u64 = 64;
    const D1: DomId = 1;
    const D2: DomId = 2;
    const P: u64 = PTE_PRESENT;
    const RW: u64 = PTE_RW;
    /// A frame number past the frame table: MMIO as far as hv knows.
    const OUTSIDE: Mfn = Mfn(BASE + NR_FRAMES + 7);

    const fn hv_slots() -> [u64; HV_L4_SLOTS] {
        let mut slots = [0; HV_L4_SLOTS];
        let mut i = 0;
        while i < HV_L4_SLOTS {
            slots[i] = (0x7700_0000 + ((i as u64) << 12)) | PTE_PRESENT | PTE_RW;
            i += 1;
        }
        slots
    }
    const HV_SLOTS: [u64; HV_L4_SLOTS] = hv_slots();

    /// Page contents as a map of frames to their 512 entries.
    #[derive(Default)]
    struct FakeMem {
        pages: HashMap<u64, Vec<u64>>,
        m2p: HashMap<u64, u64>,
        flushes: Vec<DomId>,
    }

    impl PageMemory for FakeMem {
        fn read_entry(&self, table: Mfn, index: usize) -> u64 {
            self.pages.get(&table.0).map_or(0, |page| page[index])
        }
        fn write_entry(&mut self, table: Mfn, index: usize, value: u64) {
            self.pages.entry(table.0).or_insert_with(|| vec![0; 512])[index] = value;
        }
        fn set_m2p(&mut self, mfn: Mfn, pfn: u64) {
            self.m2p.insert(mfn.0, pfn);
        }
        fn flush_domain_tlbs(&mut self, domid: DomId) {
            self.flushes.push(domid);
        }
    }

    struct Frames {
        d1: Vec<Mfn>,
        d2: Vec<Mfn>,
        hv: Mfn,
        free: Mfn,
    }

    fn storage() -> Vec<PageInfo> {
        vec![PageInfo::NOT_RAM; NR_FRAMES as usize]
    }

    /// 16 frames for each domain, one for hv, the rest free.
    fn setup(storage: &mut [PageInfo]) -> (FrameAllocator<'_>, Frames) {
        let table = FrameTable::new(storage, Mfn(BASE)).unwrap();
        let mut alloc = FrameAllocator::new(table);
        alloc
            .add_free_range(Mfn(BASE), Mfn(BASE + NR_FRAMES))
            .unwrap();
        let mut take = |owner, n| -> Vec<Mfn> {
            let mut v: Vec<Mfn> = (0..n).map(|_| alloc.alloc(0, owner).unwrap()).collect();
            v.sort();
            v
        };
        let d1 = take(Owner::Domain(D1), 16);
        let d2 = take(Owner::Domain(D2), 16);
        let hv = take(Owner::Hypervisor, 1)[0];
        let free = alloc.alloc(0, Owner::Hypervisor).unwrap();
        alloc.free(free, 0).unwrap();
        (alloc, Frames { d1, d2, hv, free })
    }

    fn pte(mfn: Mfn, flags: u64) -> u64 {
        mfn.paddr() | flags
    }

    fn info<M: PageMemory>(mm: &PvMm<'_, '_, M>, mfn: Mfn) -> PageInfo {
        *mm.alloc.table().get(mfn).unwrap()
    }

    fn counts<M: PageMemory>(mm: &PvMm<'_, '_, M>, mfn: Mfn) -> (PageType, u32, u32) {
        let page = info(mm, mfn);
        (page.page_type(), page.type_count(), page.ref_count())
    }

    fn all_counts<M: PageMemory>(mm: &PvMm<'_, '_, M>) -> Vec<(PageType, u32, u32, bool)> {
        (BASE..BASE + NR_FRAMES)
            .map(|m| {
                let page = info(mm, Mfn(m));
                (
                    page.page_type(),
                    page.type_count(),
                    page.ref_count(),
                    page.is_pinned(),
                )
            })
            .collect()
    }

    fn update<M: PageMemory>(
        mm: &mut PvMm<'_, '_, M>,
        dom: DomId,
        table: Mfn,
        index: usize,
        val: u64,
    ) -> Result<(), PvError> {
        let req = MmuUpdate {
            ptr: table.paddr() + 8 * index as u64,
            val,
        };
        let (done, result) = mm.mmu_update(dom, &[req]);
        assert_eq!(done, usize::from(result.is_ok()));
        result
    }

    fn ext<M: PageMemory>(
        mm: &mut PvMm<'_, '_, M>,
        dom: DomId,
        vcpu: &mut VcpuMm,
        cmd: MmuextCmd,
        arg1: u64,
        arg2: u64,
    ) -> (Result<(), PvError>, Vec<MmuextEffect>) {
        let mut effects = Vec::new();
        let (done, result) = mm.mmuext_op(dom, vcpu, &[MmuextOp::new(cmd, arg1, arg2)], |e| {
            effects.push(e)
        });
        assert_eq!(done, usize::from(result.is_ok()));
        (result, effects)
    }

    fn pin<M: PageMemory>(
        mm: &mut PvMm<'_, '_, M>,
        dom: DomId,
        level: u8,
        mfn: Mfn,
    ) -> Result<(), PvError> {
        let cmd = [
            MmuextCmd::PinL1Table,
            MmuextCmd::PinL2Table,
            MmuextCmd::PinL3Table,
            MmuextCmd::PinL4Table,
        ][usize::from(level - 1)];
        ext(mm, dom, &mut VcpuMm::new(), cmd, mfn.0, 0).0
    }

    /// Domain 1's tree: L4 d1[0] -> L3 d1[1] -> L2 d1[2] -> L1 d1[3], whose entry 0 maps
    /// d1[4] writable, entry 1 maps d1[5] read-only and entry 2 maps the L1 itself
    /// read-only. Returns (l4, l3, l2, l1).
    fn build_tree(mem: &mut FakeMem, f: &Frames) -> (Mfn, Mfn, Mfn, Mfn) {
        let (l4, l3, l2, l1) = (f.d1[0], f.d1[1], f.d1[2], f.d1[3]);
        mem.write_entry(l4, 0, pte(l3, P | RW));
        mem.write_entry(l3, 0, pte(l2, P | RW));
        mem.write_entry(l2, 0, pte(l1, P | RW));
        mem.write_entry(l1, 0, pte(f.d1[4], P | RW));
        mem.write_entry(l1, 1, pte(f.d1[5], P));
        mem.write_entry(l1, 2, pte(l1, P));
        (l4, l3, l2, l1)
    }

    #[test]
    fn errno_mapping_follows_xen() {
        let m = Mfn(1);
        assert_eq!(PvError::NotRam(m).errno(), Errno::EPERM);
        assert_eq!(PvError::MappingRefused(m).errno(), Errno::EBUSY);
        assert_eq!(PvError::NotOwned(m).errno(), Errno::EINVAL);
        assert_eq!(PvError::LinearPageTable(m).errno(), Errno::EINVAL);
        assert_eq!(PvError::Superpage.errno(), Errno::EINVAL);
        assert_eq!(PvError::ReservedSlot(256).errno(), Errno::EINVAL);
        assert_eq!(PvError::UnknownCommand.errno(), Errno::ENOSYS);
        assert_eq!(PvError::NotSupported.errno(), Errno::EOPNOTSUPP);
        assert_eq!(PvError::CacheFlushDenied.errno(), Errno::EACCES);
        assert_eq!(Errno::from(PvError::BadGdt), Errno::EINVAL);
    }

    #[test]
    fn pinning_an_l4_validates_the_tree_takes_its_references_and_writes_hv_slots() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, l3, l2, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        assert_eq!(pin(&mut mm, D1, 4, l4), Ok(()));
        assert!(info(&mm, l4).is_pinned() && info(&mm, l4).is_validated());
        assert_eq!(counts(&mm, l4), (PageType::L4, 1, 1));
        assert_eq!(counts(&mm, l3), (PageType::L3, 1, 1));
        assert_eq!(counts(&mm, l2), (PageType::L2, 1, 1));
        // The L2's entry and the L1's read-only mapping of itself.
        assert_eq!(counts(&mm, l1), (PageType::L1, 1, 2));
        assert_eq!(counts(&mm, f.d1[4]), (PageType::Writable, 1, 1));
        assert_eq!(counts(&mm, f.d1[5]), (PageType::None, 0, 1));
        for (i, &slot) in HV_SLOTS.iter().enumerate() {
            assert_eq!(mm.mem.read_entry(l4, HV_L4_FIRST_SLOT + i), slot);
        }
        // Present entries gain the user bit; L4 entries the accessed bit too.
        assert_eq!(
            mm.mem.read_entry(l4, 0),
            pte(l3, P | RW | PTE_USER | PTE_ACCESSED)
        );
        assert_eq!(mm.mem.read_entry(l1, 1), pte(f.d1[5], P | PTE_USER));
    }

    #[test]
    fn unpinning_the_last_reference_devalidates_the_whole_tree() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, ..) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        let before = all_counts(&mm);
        pin(&mut mm, D1, 4, l4).unwrap();
        let mut vcpu = VcpuMm::new();
        assert_eq!(
            ext(&mut mm, D1, &mut vcpu, MmuextCmd::UnpinTable, l4.0, 0).0,
            Ok(())
        );
        assert_eq!(all_counts(&mm), before);
        assert_eq!(
            ext(&mut mm, D1, &mut vcpu, MmuextCmd::UnpinTable, l4.0, 0).0,
            Err(PvError::NotPinned(l4))
        );
        assert_eq!(
            ext(&mut mm, D2, &mut vcpu, MmuextCmd::UnpinTable, l4.0, 0).0,
            Err(PvError::NotOwned(l4))
        );
    }

    #[test]
    fn a_domain_cannot_map_its_own_page_tables_writable_only_read_only() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, l3, l2, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        for table in [l4, l3, l2, l1] {
            let before = all_counts(&mm);
            let err = update(&mut mm, D1, l1, 10, pte(table, P | RW)).unwrap_err();
            assert_eq!(err, PvError::MappingRefused(table));
            assert_eq!(err.errno(), Errno::EBUSY);
            assert_eq!(all_counts(&mm), before);
            let entry = mm.mem.read_entry(l1, 10);
            let err = update(&mut mm, D1, l1, 10, pte(table, P | RW)).unwrap_err();
            assert_eq!(err, PvError::MappingRefused(table));
            assert_eq!(all_counts(&mm), before);
            assert_eq!(mm.mem.read_entry(l1, 10), entry);
            assert_eq!(update(&mut mm, D1, l1, 10, pte(table, P)), Ok(()));
        }
        // A table with a writable mapping of a frame cannot become a page table at all,
        // including one mapping itself writable.
        mm.mem.write_entry(f.d1[6], 0, pte(f.d1[6], P | RW));
        assert_eq!(
            pin(&mut mm, D1, 1, f.d1[6]).map_err(PvError::errno),
            Err(Errno::EBUSY)
        );
        // And a frame mapped writable cannot be pinned.
        assert_eq!(
            pin(&mut mm, D1, 1, f.d1[4]),
            Err(PvError::TypeConflict {
                mfn: f.d1[4],
                current: PageType::Writable,
                wanted: PageType::L1
            })
        );
    }

    #[test]
    fn a_descriptor_frame_cannot_be_mapped_writable_nor_a_writable_frame_become_a_gdt() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, _, _, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        let mut vcpu = VcpuMm::new();
        let gdt = f.d1[7];
        assert_eq!(mm.set_gdt(D1, &mut vcpu, &[gdt], 512), Ok(()));
        assert_eq!(counts(&mm, gdt), (PageType::SegDesc, 1, 1));
        assert_eq!(
            update(&mut mm, D1, l1, 20, pte(gdt, P | RW)),
            Err(PvError::MappingRefused(gdt))
        );
        assert_eq!(update(&mut mm, D1, l1, 20, pte(gdt, P)), Ok(()));
        // d1[4] is mapped writable by the L1.
        let err = mm.set_gdt(D1, &mut vcpu, &[f.d1[4]], 10).unwrap_err();
        assert_eq!(err.errno(), Errno::EINVAL);
        assert_eq!(vcpu.gdt_frames(), &[gdt]);
        // mmu_update cannot write into a descriptor frame either.
        assert_eq!(
            update(&mut mm, D1, gdt, 0, 0),
            Err(PvError::NotWritable(gdt))
        );
    }

    #[test]
    fn frames_the_domain_does_not_own_cannot_be_mapped_or_used() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, _, l2, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        let before = all_counts(&mm);
        for other in [f.d2[0], f.hv, f.free] {
            assert_eq!(
                update(&mut mm, D1, l1, 30, pte(other, P)),
                Err(PvError::MappingRefused(other))
            );
        }
        assert_eq!(
            update(&mut mm, D1, l1, 30, pte(OUTSIDE, P)),
            Err(PvError::NotRam(OUTSIDE))
        );
        assert_eq!(
            update(&mut mm, D1, l2, 30, pte(f.d2[0], P)),
            Err(PvError::NotOwned(f.d2[0]))
        );
        // Another domain's tables cannot be updated, pinned or used as a base pointer.
        assert_eq!(update(&mut mm, D2, l1, 30, 0), Err(PvError::NotOwned(l1)));
        assert_eq!(
            pin(&mut mm, D2, 1, f.d1[8]),
            Err(PvError::NotOwned(f.d1[8]))
        );
        let mut vcpu = VcpuMm::new();
        assert_eq!(
            ext(&mut mm, D2, &mut vcpu, MmuextCmd::NewBaseptr, l4.0, 0).0,
            Err(PvError::NotOwned(l4))
        );
        assert_eq!(all_counts(&mm), before);
        assert_eq!(vcpu, VcpuMm::new());
    }

    #[test]
    fn hv_l4_slots_are_refused_to_guest_updates() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, l3, ..) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        for slot in [256, 263, 271] {
            assert_eq!(
                update(&mut mm, D1, l4, slot, 0),
                Err(PvError::ReservedSlot(slot))
            );
            assert_eq!(mm.mem.read_entry(l4, slot), HV_SLOTS[slot - 256]);
        }
        assert_eq!(update(&mut mm, D1, l4, 255, pte(l3, P)), Ok(()));
        assert_eq!(update(&mut mm, D1, l4, 272, pte(l3, P)), Ok(()));
        assert_eq!(counts(&mm, l3), (PageType::L3, 3, 3));
    }

    #[test]
    fn recursive_same_level_and_upward_references_are_refused() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, l3, l2, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        let before = all_counts(&mm);
        let refused = [
            (l4, l4), // self-reference (the classic linear page table)
            (l3, l3),
            (l2, l2),
            (l4, l4),
            (l3, l4), // upward
            (l2, l3),
            (l2, l4),
        ];
        for (table, target) in refused {
            let result = update(&mut mm, D1, table, 40, pte(target, P));
            assert_eq!(result, Err(PvError::LinearPageTable(target)), "{table:?}");
        }
        // An L2 naming another L2 (same level).
        pin(&mut mm, D1, 2, f.d1[8]).unwrap();
        assert_eq!(
            update(&mut mm, D1, l2, 40, pte(f.d1[8], P)),
            Err(PvError::LinearPageTable(f.d1[8]))
        );
        // Skipping a level downwards is a plain type conflict.
        assert_eq!(
            update(&mut mm, D1, l3, 40, pte(l1, P)).map_err(PvError::errno),
            Err(Errno::EINVAL)
        );
        ext(
            &mut mm,
            D1,
            &mut VcpuMm::new(),
            MmuextCmd::UnpinTable,
            f.d1[8].0,
            0,
        )
        .0
        .unwrap();
        assert_eq!(all_counts(&mm), before);
        // A table whose own contents name itself at its own level cannot be validated.
        let t = f.d1[9];
        mm.mem.write_entry(t, 3, pte(t, P));
        assert_eq!(pin(&mut mm, D1, 2, t), Err(PvError::LinearPageTable(t)));
        assert_eq!(counts(&mm, t), (PageType::None, 0, 0));
    }

    #[test]
    fn superpages_and_reserved_flag_bits_are_refused() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, l3, l2, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        let data = f.d1[10];
        assert_eq!(
            update(&mut mm, D1, l2, 50, pte(data, P | PTE_PSE)),
            Err(PvError::Superpage)
        );
        assert_eq!(
            update(&mut mm, D1, l3, 50, pte(data, P | PTE_PSE)),
            Err(PvError::Superpage)
        );
        for bits in [1 << 3, 1 << 4, PTE_PSE] {
            assert_eq!(
                update(&mut mm, D1, l1, 50, pte(data, P | bits)),
                Err(PvError::BadFlags { level: 1, bits })
            );
        }
        assert_eq!(
            update(&mut mm, D1, l2, 50, pte(l1, P | PTE_GLOBAL)),
            Err(PvError::BadFlags {
                level: 2,
                bits: PTE_GLOBAL
            })
        );
        // Global, the software bits and NX are the guest's at L1.
        let fine = pte(
            data,
            P | RW | PTE_GLOBAL | PTE_AVAIL | PTE_AVAIL_HIGH | PTE_NX,
        );
        assert_eq!(update(&mut mm, D1, l1, 50, fine), Ok(()));
        // Superpages are refused when a table is validated too.
        mm.mem.write_entry(f.d1[11], 0, pte(data, P | PTE_PSE));
        assert_eq!(pin(&mut mm, D1, 2, f.d1[11]), Err(PvError::Superpage));
    }

    #[test]
    fn a_refusal_part_way_through_validation_leaves_no_reference_behind() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, l3, l2, l1) = build_tree(&mut mem, &f);
        // A second L1 under the L2 whose last entry maps another domain's frame: the L4's
        // validation gets three levels down before it is refused.
        let bad_l1 = f.d1[12];
        mem.write_entry(l2, 1, pte(bad_l1, P));
        for i in 0..5 {
            mem.write_entry(bad_l1, i, pte(f.d1[13], P | RW));
        }
        mem.write_entry(bad_l1, 5, pte(f.d2[0], P));
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        let before = all_counts(&mm);
        assert_eq!(
            pin(&mut mm, D1, 4, l4),
            Err(PvError::MappingRefused(f.d2[0]))
        );
        assert_eq!(all_counts(&mm), before);
        for t in [l4, l3, l2, l1, bad_l1] {
            assert!(!info(&mm, t).is_validated());
        }
        // Fixed, it validates.
        mm.mem.write_entry(bad_l1, 5, 0);
        assert_eq!(pin(&mut mm, D1, 4, l4), Ok(()));
        assert_eq!(counts(&mm, f.d1[13]), (PageType::Writable, 5, 5));
    }

    #[test]
    fn counts_at_their_maximum_refuse_instead_of_wrapping() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, _, _, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        let data = f.d1[14];
        let force = |mm: &mut PvMm<'_, '_, FakeMem>, type_count, ref_count| {
            mm.alloc
                .frame_mut(data)
                .unwrap()
                .force_counts(type_count, ref_count)
        };
        force(&mut mm, 0, u32::MAX);
        assert_eq!(
            update(&mut mm, D1, l1, 60, pte(data, P)),
            Err(PvError::MappingRefused(data))
        );
        assert_eq!(pin(&mut mm, D1, 1, data), Err(PvError::CountOverflow(data)));
        assert_eq!(counts(&mm, data), (PageType::None, 0, u32::MAX));
        // A writable mapping of a frame whose type count is at its maximum.
        force(&mut mm, 0, 0);
        assert_eq!(update(&mut mm, D1, l1, 60, pte(data, P | RW)), Ok(()));
        force(&mut mm, u32::MAX, 1);
        assert_eq!(
            update(&mut mm, D1, l1, 61, pte(data, P | RW)),
            Err(PvError::MappingRefused(data))
        );
        assert_eq!(counts(&mm, data), (PageType::Writable, u32::MAX, 1));
    }

    #[test]
    fn a_root_in_use_as_base_pointer_survives_unpin_and_pinning_twice_is_refused() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, ..) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        let mut vcpu = VcpuMm::new();
        assert_eq!(mm.new_domain_root(D1, &mut vcpu, l4), Ok(()));
        assert_eq!(vcpu.kernel_root(), Some(l4));
        assert_eq!(counts(&mm, l4), (PageType::L4, 2, 2));
        let before = all_counts(&mm);
        assert_eq!(pin(&mut mm, D1, 4, l4), Err(PvError::AlreadyPinned(l4)));
        assert_eq!(all_counts(&mm), before);
        // Unpinning drops only the pin's reference (as in Xen): the base pointer keeps the
        // root typed and validated, so the running tables are never devalidated under it.
        assert_eq!(
            ext(&mut mm, D1, &mut vcpu, MmuextCmd::UnpinTable, l4.0, 0).0,
            Ok(())
        );
        assert_eq!(counts(&mm, l4), (PageType::L4, 1, 1));
        assert!(info(&mm, l4).is_validated() && !info(&mm, l4).is_pinned());
        assert_eq!(counts(&mm, f.d1[4]), (PageType::Writable, 1, 1));
        assert_eq!(
            ext(&mut mm, D1, &mut vcpu, MmuextCmd::UnpinTable, l4.0, 0).0,
            Err(PvError::NotPinned(l4))
        );
    }

    #[test]
    fn new_baseptr_loads_the_new_root_before_releasing_the_old_one() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, l3, ..) = build_tree(&mut mem, &f);
        let other = f.d1[8];
        mem.write_entry(other, 1, pte(l3, P));
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        let mut vcpu = VcpuMm::new();
        let (r, e) = ext(&mut mm, D1, &mut vcpu, MmuextCmd::NewBaseptr, l4.0, 0);
        assert_eq!((r, e), (Ok(()), vec![MmuextEffect::LoadKernelRoot(l4)]));
        assert_eq!(counts(&mm, l4), (PageType::L4, 1, 1));
        let (r, e) = ext(&mut mm, D1, &mut vcpu, MmuextCmd::NewBaseptr, other.0, 0);
        assert_eq!((r, e), (Ok(()), vec![MmuextEffect::LoadKernelRoot(other)]));
        // The old root lost its last reference; the L3 is still used by the new one.
        assert_eq!(counts(&mm, l4), (PageType::None, 0, 0));
        assert_eq!(counts(&mm, l3), (PageType::L3, 1, 1));
        assert_eq!(vcpu.kernel_root(), Some(other));
        // Reloading the same root changes no count.
        let before = all_counts(&mm);
        let (r, e) = ext(&mut mm, D1, &mut vcpu, MmuextCmd::NewBaseptr, other.0, 0);
        assert_eq!((r, e), (Ok(()), vec![MmuextEffect::LoadKernelRoot(other)]));
        assert_eq!(all_counts(&mm), before);
        // A root that is not an L4 is refused and the old one stays.
        let (r, e) = ext(&mut mm, D1, &mut vcpu, MmuextCmd::NewBaseptr, l3.0, 0);
        assert_eq!(r.map_err(PvError::errno), Err(Errno::EINVAL));
        assert!(e.is_empty());
        assert_eq!(vcpu.kernel_root(), Some(other));
        // The user root: set, replace with none (0).
        let (r, _) = ext(&mut mm, D1, &mut vcpu, MmuextCmd::NewUserBaseptr, l4.0, 0);
        assert_eq!(r, Ok(()));
        assert_eq!(vcpu.user_root(), Some(l4));
        assert_eq!(counts(&mm, l4), (PageType::L4, 1, 1));
        let (r, _) = ext(&mut mm, D1, &mut vcpu, MmuextCmd::NewUserBaseptr, 0, 0);
        assert_eq!(r, Ok(()));
        assert_eq!(vcpu.user_root(), None);
        assert_eq!(counts(&mm, l4), (PageType::None, 0, 0));
    }

    #[test]
    fn mmu_update_writes_plain_frames_moves_references_and_stops_at_the_first_refusal() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, _, _, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        // A frame with no type, and one mapped writable, are written as data.
        let junk = pte(f.d2[0], P | RW | PTE_PSE | PTE_GLOBAL);
        assert_eq!(update(&mut mm, D1, f.d1[9], 7, junk), Ok(()));
        assert_eq!(update(&mut mm, D1, f.d1[4], 7, junk), Ok(()));
        assert_eq!(mm.mem.read_entry(f.d1[9], 7), junk);
        assert_eq!(counts(&mm, f.d1[9]), (PageType::None, 0, 0));
        assert_eq!(counts(&mm, f.d1[4]), (PageType::Writable, 1, 1));
        // Moving L1 entry 0 from d1[4] (writable) to d1[5] (writable).
        assert_eq!(update(&mut mm, D1, l1, 0, pte(f.d1[5], P | RW)), Ok(()));
        assert_eq!(counts(&mm, f.d1[4]), (PageType::None, 0, 0));
        assert_eq!(counts(&mm, f.d1[5]), (PageType::Writable, 1, 2));
        // Preserve A/D keeps the old entry's accessed and dirty bits.
        mm.mem
            .write_entry(l1, 0, pte(f.d1[5], P | RW | PTE_USER | PTE_DIRTY));
        let req = MmuUpdate {
            ptr: l1.paddr() | 2,
            val: pte(f.d1[5], P),
        };
        assert_eq!(mm.mmu_update(D1, &[req]), (1, Ok(())));
        assert_eq!(
            mm.mem.read_entry(l1, 0),
            pte(f.d1[5], P | PTE_USER | PTE_DIRTY)
        );
        assert_eq!(counts(&mm, f.d1[5]), (PageType::None, 0, 2));
        // MACHPHYS updates; an unknown sub-command; the batch stops at the refusal.
        let reqs = [
            MmuUpdate {
                ptr: f.d1[6].paddr() | 1,
                val: 0x42,
            },
            MmuUpdate {
                ptr: (l1.paddr() + 8 * 3) | 3,
                val: pte(f.d1[6], P),
            },
            MmuUpdate {
                ptr: f.d2[6].paddr() | 1,
                val: 0x43,
            },
            MmuUpdate {
                ptr: f.d1[6].paddr() | 1,
                val: 0x44,
            },
        ];
        assert_eq!(
            mm.mmu_update(D1, &reqs),
            (2, Err(PvError::NotOwned(f.d2[6])))
        );
        assert_eq!(mm.mem.m2p.get(&f.d1[6].0), Some(&0x42));
        assert_eq!(mm.mem.m2p.get(&f.d2[6].0), None);
        assert_eq!(counts(&mm, f.d1[6]), (PageType::None, 0, 1));
        for cmd in 4..8 {
            let req = MmuUpdate {
                ptr: l1.paddr() | cmd,
                val: 0,
            };
            let (done, result) = mm.mmu_update(D1, &[req]);
            assert_eq!(
                (done, result.map_err(PvError::errno)),
                (0, Err(Errno::ENOSYS))
            );
        }
        assert_eq!(
            update(&mut mm, D1, OUTSIDE, 0, 0),
            Err(PvError::NotOwned(OUTSIDE))
        );
    }

    #[test]
    fn update_va_mapping_walks_the_tables_and_reports_the_flush_asked_for() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, _, _, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        let mut vcpu = VcpuMm::new();
        mm.new_domain_root(D1, &mut vcpu, l4).unwrap();
        let data = f.d1[10];
        let va = 0x9000;
        let uva = |mm: &mut PvMm<'_, '_, FakeMem>, va, val, flags| {
            mm.update_va_mapping(D1, l4, va, val, flags)
        };
        assert_eq!(
            uva(&mut mm, va, pte(data, P | RW), UVMF_INVLPG),
            Ok(FlushAction::InvlpgLocal { va })
        );
        assert_eq!(mm.mem.read_entry(l1, 9), pte(data, P | RW | PTE_USER));
        assert_eq!(counts(&mm, data), (PageType::Writable, 1, 1));
        let cases = [
            (UVMF_NONE, FlushAction::None),
            (UVMF_TLB_FLUSH, FlushAction::TlbLocal),
            (UVMF_TLB_FLUSH | UVMF_ALL, FlushAction::TlbAll),
            (
                UVMF_TLB_FLUSH | 0x5000,
                FlushAction::TlbMulti { vcpumask: 0x5000 },
            ),
            (UVMF_INVLPG | UVMF_ALL, FlushAction::InvlpgAll { va }),
            (
                UVMF_INVLPG | 0x5000,
                FlushAction::InvlpgMulti {
                    va,
                    vcpumask: 0x5000,
                },
            ),
        ];
        for (flags, flush) in cases {
            assert_eq!(uva(&mut mm, va, pte(data, P), flags), Ok(flush));
        }
        assert_eq!(counts(&mm, data), (PageType::None, 0, 1));
        assert_eq!(
            uva(&mut mm, va, 0, UVMF_INVLPG),
            Ok(FlushAction::InvlpgLocal { va })
        );
        assert_eq!(counts(&mm, data), (PageType::None, 0, 0));
        // Refusals: hv's range, the canonical hole, no L1 on the way, the L1's own checks.
        for bad in [0xffff_8000_0000_0000, 0xffff_87ff_ffff_f000, 1 << 47] {
            assert_eq!(uva(&mut mm, bad, 0, 0), Err(PvError::BadAddress(bad)));
        }
        let unmapped = 1 << 39;
        assert_eq!(
            uva(&mut mm, unmapped, 0, 0),
            Err(PvError::NotMapped(unmapped))
        );
        assert_eq!(
            uva(&mut mm, va, pte(l4, P | RW), UVMF_INVLPG),
            Err(PvError::MappingRefused(l4))
        );
        assert_eq!(
            mm.update_va_mapping(D1, f.d1[11], va, 0, 0),
            Err(PvError::NotMapped(va))
        );
        assert_eq!(
            mm.update_va_mapping(D2, l4, va, 0, 0),
            Err(PvError::NotMapped(va))
        );
    }

    #[test]
    fn mmuext_flushes_ldt_page_ops_and_unknown_commands() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, ..) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        let mut vcpu = VcpuMm::new();
        let flush = |a| vec![MmuextEffect::Flush(a)];
        let ok = |cmd, a1, a2, mm: &mut PvMm<'_, '_, FakeMem>, vcpu: &mut VcpuMm| {
            ext(mm, D1, vcpu, cmd, a1, a2)
        };
        let cases = [
            (MmuextCmd::TlbFlushLocal, 0, 0, flush(FlushAction::TlbLocal)),
            (MmuextCmd::TlbFlushAll, 0, 0, flush(FlushAction::TlbAll)),
            (
                MmuextCmd::TlbFlushMulti,
                0,
                0x77,
                flush(FlushAction::TlbMulti { vcpumask: 0x77 }),
            ),
            (
                MmuextCmd::InvlpgLocal,
                0x1000,
                0,
                flush(FlushAction::InvlpgLocal { va: 0x1000 }),
            ),
            (
                MmuextCmd::InvlpgAll,
                0x2000,
                0,
                flush(FlushAction::InvlpgAll { va: 0x2000 }),
            ),
            (
                MmuextCmd::InvlpgMulti,
                0x3000,
                0x77,
                flush(FlushAction::InvlpgMulti {
                    va: 0x3000,
                    vcpumask: 0x77,
                }),
            ),
            (MmuextCmd::InvlpgAll, 0xffff_8000_0000_1000, 0, vec![]),
            (
                MmuextCmd::SetLdt,
                0x10_0000,
                16,
                vec![MmuextEffect::LoadLdt],
            ),
            (MmuextCmd::SetLdt, 0x10_0000, 16, vec![]),
        ];
        for (cmd, a1, a2, effects) in cases {
            assert_eq!(ok(cmd, a1, a2, &mut mm, &mut vcpu), (Ok(()), effects));
        }
        assert_eq!(vcpu.ldt(), (0x10_0000, 16));
        for (base, ents) in [(0x10_0008, 1), (0xffff_8000_0000_0000, 1), (0, 8193)] {
            let (r, e) = ok(MmuextCmd::SetLdt, base, ents, &mut mm, &mut vcpu);
            assert_eq!((r, e), (Err(PvError::BadLdt), vec![]));
        }
        let (r, e) = ok(MmuextCmd::SetLdt, 0x1234, 0, &mut mm, &mut vcpu);
        assert_eq!((r, e), (Ok(()), vec![MmuextEffect::LoadLdt]));
        assert_eq!(vcpu.ldt(), (0, 0));
        // Clear and copy: the domain's frames, destination writable-typable.
        mm.mem.write_entry(f.d1[9], 5, 0x55);
        let r = ok(
            MmuextCmd::CopyPage,
            f.d1[10].0,
            f.d1[9].0,
            &mut mm,
            &mut vcpu,
        )
        .0;
        assert_eq!(r, Ok(()));
        assert_eq!(mm.mem.read_entry(f.d1[10], 5), 0x55);
        let r = ok(MmuextCmd::ClearPage, f.d1[10].0, 0, &mut mm, &mut vcpu).0;
        assert_eq!(r, Ok(()));
        assert_eq!(mm.mem.read_entry(f.d1[10], 5), 0);
        let before = all_counts(&mm);
        for (cmd, a1, a2) in [
            (MmuextCmd::ClearPage, l4.0, 0),
            (MmuextCmd::ClearPage, f.d2[0].0, 0),
            (MmuextCmd::CopyPage, l4.0, f.d1[9].0),
            (MmuextCmd::CopyPage, f.d1[9].0, f.d2[0].0),
            (MmuextCmd::CopyPage, f.d2[0].0, f.d1[9].0),
        ] {
            let r = ok(cmd, a1, a2, &mut mm, &mut vcpu).0;
            assert_eq!(r.map_err(PvError::errno), Err(Errno::EINVAL), "{cmd:?}");
        }
        assert_eq!(all_counts(&mm), before);
        let r = ok(MmuextCmd::FlushCache, 0, 0, &mut mm, &mut vcpu).0;
        assert_eq!(r, Err(PvError::CacheFlushDenied));
        let r = ok(MmuextCmd::MarkSuper, 0, 0, &mut mm, &mut vcpu).0;
        assert_eq!(r, Err(PvError::NotSupported));
        for cmd in [14, 21, u32::MAX] {
            let op = MmuextOp {
                cmd,
                ..MmuextOp::default()
            };
            let (done, r) = mm.mmuext_op(D1, &mut vcpu, &[op], |_| {});
            assert_eq!((done, r), (0, Err(PvError::UnknownCommand)));
        }
        // A batch reports how many succeeded.
        let ops = [
            MmuextOp::new(MmuextCmd::TlbFlushLocal, 0, 0),
            MmuextOp::new(MmuextCmd::PinL1Table, f.d1[11].0, 0),
            MmuextOp::new(MmuextCmd::PinL1Table, f.d1[11].0, 0),
            MmuextOp::new(MmuextCmd::TlbFlushLocal, 0, 0),
        ];
        let mut effects = 0;
        let (done, r) = mm.mmuext_op(D1, &mut vcpu, &ops, |_| effects += 1);
        assert_eq!(
            (done, r, effects),
            (2, Err(PvError::AlreadyPinned(f.d1[11])), 1)
        );
    }

    #[test]
    fn check_descriptor_keeps_segments_and_safe_call_gates_only() {
        // Flat 64-bit code, DPL 0 -> DPL 3; flat data DPL 3 unchanged; not present kept.
        let code_dpl0 = 0x00af_9a00_0000_ffff;
        assert_eq!(check_descriptor(code_dpl0), Some(0x00af_fa00_0000_ffff));
        assert_eq!(
            check_descriptor(0x00cf_f200_0000_ffff),
            Some(0x00cf_f200_0000_ffff)
        );
        assert_eq!(
            check_descriptor(0x0000_1234_5678_9abc & !(1 << 47)),
            Some(0x0000_1234_5678_9abc & !(1 << 47))
        );
        assert_eq!(check_descriptor(0), Some(0));
        // Upper half of a 16-byte gate: present, system type 0.
        assert_eq!(
            check_descriptor(0x0000_8000_0000_0000),
            Some(0x0000_8000_0000_0000)
        );
        // TSS (type 9), LDT (type 2), interrupt gate (type 14), trap gate (type 15).
        for ty in [9u64, 2, 14, 15, 11] {
            assert_eq!(check_descriptor((0x80 | ty) << 40), None, "type {ty}");
        }
        // A call gate to a guest selector: DPL forced to 0, RPL 3 on the selector.
        let gate = |sel: u64, dpl: u64| (0x8c00 | dpl << 13) << 32 | sel << 16 | 0x1000;
        assert_eq!(
            check_descriptor(gate(0x10, 3)),
            Some((0x8c00 << 32) | 0x13 << 16 | 0x1000)
        );
        assert_eq!(
            check_descriptor(gate(u64::from(FLAT_KERNEL_CS64), 3)),
            Some((0x8c00 << 32) | u64::from(FLAT_KERNEL_CS64 | 3) << 16 | 0x1000)
        );
        assert!(check_descriptor(gate(0xe00c, 3)).is_some()); // an LDT selector
                                                              // To one of hv's other selectors, or with reserved bits set: refused.
        assert_eq!(check_descriptor(gate(0xe008, 3)), None);
        assert_eq!(check_descriptor(gate(0xe02b, 3)), None);
        assert_eq!(check_descriptor(gate(0x10, 3) | 1 << 32), None);
    }

    #[test]
    fn set_gdt_checks_every_descriptor_and_releases_the_previous_gdt() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (g0, g1, g2) = (f.d1[0], f.d1[1], f.d1[2]);
        mem.write_entry(g0, 1, 0x00af_9a00_0000_ffff);
        mem.write_entry(g2, 7, 0x0000_8900_0000_0067); // a TSS
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        let mut vcpu = VcpuMm::new();
        assert_eq!(mm.set_gdt(D1, &mut vcpu, &[g0, g1], 600), Ok(()));
        assert_eq!(
            (vcpu.gdt_frames(), vcpu.gdt_entries()),
            (&[g0, g1][..], 600)
        );
        assert_eq!(mm.mem.read_entry(g0, 1), 0x00af_fa00_0000_ffff);
        assert_eq!(counts(&mm, g1), (PageType::SegDesc, 1, 1));
        // Refusals keep the old GDT and take nothing.
        let before = all_counts(&mm);
        assert_eq!(
            mm.set_gdt(D1, &mut vcpu, &[g1, g2], 1024),
            Err(PvError::BadDescriptor { mfn: g2, index: 7 })
        );
        assert_eq!(
            mm.set_gdt(D1, &mut vcpu, &[g1, f.d2[0]], 1024),
            Err(PvError::NotOwned(f.d2[0]))
        );
        assert_eq!(mm.set_gdt(D1, &mut vcpu, &[g1], 513), Err(PvError::BadGdt));
        let many = [g1; 15];
        assert_eq!(
            mm.set_gdt(D1, &mut vcpu, &many, 14 * 512 + 1),
            Err(PvError::BadGdt)
        );
        assert_eq!(all_counts(&mm), before);
        assert_eq!(vcpu.gdt_frames(), &[g0, g1]);
        // 14 frames is the most; the same frame may appear more than once.
        assert_eq!(mm.set_gdt(D1, &mut vcpu, &many, 14 * 512), Ok(()));
        assert_eq!(counts(&mm, g0), (PageType::None, 0, 0));
        assert_eq!(counts(&mm, g1), (PageType::SegDesc, 14, 14));
        assert_eq!(mm.set_gdt(D1, &mut vcpu, &[], 0), Ok(()));
        assert_eq!(counts(&mm, g1), (PageType::None, 0, 0));
        assert!(vcpu.gdt_frames().is_empty());
    }

    #[test]
    fn a_type_change_flushes_the_domains_tlbs_first_but_a_repeat_of_the_same_type_does_not() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, _, _, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        let frame = f.d1[10];
        update(&mut mm, D1, l1, 70, pte(frame, P | RW)).unwrap();
        update(&mut mm, D1, l1, 70, 0).unwrap();
        assert_eq!(info(&mm, frame).stale_type(), Some(PageType::Writable));
        mm.mem.flushes.clear();
        pin(&mut mm, D1, 1, frame).unwrap();
        assert_eq!(mm.mem.flushes, vec![D1]);
        let mut vcpu = VcpuMm::new();
        ext(&mut mm, D1, &mut vcpu, MmuextCmd::UnpinTable, frame.0, 0)
            .0
            .unwrap();
        pin(&mut mm, D1, 1, frame).unwrap();
        assert_eq!(mm.mem.flushes, vec![D1]);
        ext(&mut mm, D1, &mut vcpu, MmuextCmd::UnpinTable, frame.0, 0)
            .0
            .unwrap();
        // Back to writable: cached pointers to the former L1 must go too.
        update(&mut mm, D1, l1, 70, pte(frame, P | RW)).unwrap();
        assert_eq!(mm.mem.flushes, vec![D1, D1]);
    }

    #[test]
    fn relinquish_releases_everything_so_every_frame_can_be_freed() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, _, l2, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        let mut vcpus = [VcpuMm::new(), VcpuMm::new()];
        mm.new_domain_root(D1, &mut vcpus[0], l4).unwrap();
        pin(&mut mm, D1, 1, l1).unwrap();
        pin(&mut mm, D1, 2, l2).unwrap();
        mm.set_gdt(D1, &mut vcpus[1], &[f.d1[8], f.d1[9]], 1000)
            .unwrap();
        let (r, _) = ext(
            &mut mm,
            D1,
            &mut vcpus[1],
            MmuextCmd::NewUserBaseptr,
            l4.0,
            0,
        );
        r.unwrap();
        let d2_before: Vec<_> = f.d2.iter().map(|&m| counts(&mm, m)).collect();
        let mut stuck = Vec::new();
        let left = mm.relinquish(D1, &mut vcpus, f.d1.iter().copied().chain([f.d2[0]]), |m| {
            stuck.push(m)
        });
        assert_eq!((left, stuck), (0, vec![]));
        assert_eq!(vcpus, [VcpuMm::new(), VcpuMm::new()]);
        for &m in &f.d1 {
            assert_eq!(counts(&mm, m), (PageType::None, 0, 0));
            assert!(!info(&mm, m).is_pinned());
        }
        let d2_after: Vec<_> = f.d2.iter().map(|&m| counts(&mm, m)).collect();
        assert_eq!(d2_before, d2_after);
        for &m in &f.d1 {
            assert_eq!(mm.alloc.free(m, 0), Ok(()));
        }
    }

    #[test]
    fn relinquish_reports_frames_hv_cannot_release() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        // A reference nobody here accounts for (as a leak elsewhere in hv would leave).
        mm.get_page(f.d1[3], D1).unwrap();
        let mut stuck = Vec::new();
        let left = mm.relinquish(D1, &mut [], f.d1.iter().copied(), |m| stuck.push(m));
        assert_eq!((left, stuck), (1, vec![f.d1[3]]));
    }

    #[test]
    fn reference_primitives_check_owner_and_never_underflow() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        let m = f.d1[0];
        assert_eq!(mm.put_page(m), Err(PvError::Corrupt(m)));
        assert_eq!(mm.put_page_type(m), Err(PvError::Corrupt(m)));
        assert_eq!(mm.get_page(m, D2), Err(PvError::NotOwned(m)));
        assert_eq!(mm.get_page(OUTSIDE, D1), Err(PvError::NotOwned(OUTSIDE)));
        assert_eq!(mm.get_page(m, D1), Ok(()));
        assert_eq!(mm.get_page_type(m, D1, PageType::Writable), Ok(()));
        assert_eq!(
            mm.get_page_type(m, D1, PageType::None),
            Err(PvError::TypeConflict {
                mfn: m,
                current: PageType::Writable,
                wanted: PageType::None
            })
        );
        assert_eq!(mm.put_page_type(m), Ok(()));
        assert_eq!(mm.put_page(m), Ok(()));
        assert_eq!(counts(&mm, m), (PageType::None, 0, 0));
    }

    // --- Grant mappings -------------------------------------------------------------------

    /// Takes what the grant tables hold for a mapping of D2's frame `mfn`: a general
    /// reference, and a writable type reference unless read-only.
    fn take_grant_refs<M: PageMemory>(mm: &mut PvMm<'_, '_, M>, mfn: Mfn, readonly: bool) {
        mm.get_page(mfn, D2).unwrap();
        if !readonly {
            mm.get_page_type(mfn, D2, PageType::Writable).unwrap();
        }
    }

    /// Drops what [`take_grant_refs`] took, as the grant tables do after an unmap.
    fn drop_grant_refs<M: PageMemory>(
        mm: &mut PvMm<'_, '_, M>,
        mfn: Mfn,
        readonly: bool,
    ) -> Result<(), PvError> {
        if !readonly {
            mm.put_page_type(mfn)?;
        }
        mm.put_page(mfn)
    }

    #[test]
    fn grant_ptes_are_installed_and_cleared_only_by_hv_and_hold_no_references() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, _, _, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        let mut vcpu = VcpuMm::new();
        mm.new_domain_root(D1, &mut vcpu, l4).unwrap();
        let granted = f.d2[3];
        take_grant_refs(&mut mm, granted, false);
        let va = 0x9000;
        let before = all_counts(&mm);
        assert_eq!(mm.install_grant_pte(D1, l4, va, granted, false), Ok(()));
        let marked = pte(granted, GRANT_PTE_FLAGS | RW);
        assert_eq!(
            marked,
            pte(granted, P | RW | PTE_USER) | (1 << 62) | (0x3 << 5) | PTE_NX
        );
        assert_eq!(mm.mem.read_entry(l1, 9), marked);
        assert_eq!(all_counts(&mm), before);
        // Only into a non-present entry of a validated L1 of the domain's, at a guest address.
        assert_eq!(
            mm.install_grant_pte(D1, l4, va, granted, true),
            Err(PvError::EntryInUse(va))
        );
        assert_eq!(
            mm.install_grant_pte(D1, l4, 0, granted, true),
            Err(PvError::EntryInUse(0))
        );
        assert_eq!(
            mm.install_grant_pte(D1, l4, 1 << 39, granted, true),
            Err(PvError::NotMapped(1 << 39))
        );
        assert_eq!(
            mm.install_grant_pte(D2, l4, 0xa000, granted, true),
            Err(PvError::NotMapped(0xa000))
        );
        let hv_va = 0xffff_8000_0000_0000;
        assert_eq!(
            mm.install_grant_pte(D1, l4, hv_va, granted, true),
            Err(PvError::BadAddress(hv_va))
        );
        // The guest can neither overwrite nor clear it, by any path.
        let preserve_ad = MmuUpdate {
            ptr: (l1.paddr() + 8 * 9) | 2,
            val: 0,
        };
        assert_eq!(
            mm.mmu_update(D1, &[preserve_ad]),
            (0, Err(PvError::GrantEntry(l1)))
        );
        for val in [0, pte(f.d1[10], P | RW), marked] {
            assert_eq!(
                update(&mut mm, D1, l1, 9, val),
                Err(PvError::GrantEntry(l1))
            );
            assert_eq!(
                mm.update_va_mapping(D1, l4, va, val, UVMF_INVLPG),
                Err(PvError::GrantEntry(l1))
            );
        }
        assert_eq!(PvError::GrantEntry(l1).errno(), Errno::EINVAL);
        assert_eq!(mm.mem.read_entry(l1, 9), marked);
        assert_eq!(all_counts(&mm), before);
        // Clearing wants the grant entry of the frame and access it was made with.
        for (at, mfn, readonly) in [
            (va, f.d2[4], false),
            (va, granted, true),
            (0, f.d1[4], false),
            (0xa000, granted, false),
        ] {
            assert_eq!(
                mm.clear_grant_pte(D1, l4, at, mfn, readonly),
                Err(PvError::NoGrantEntry(at))
            );
        }
        assert_eq!(
            mm.clear_grant_pte(D2, l4, va, granted, false),
            Err(PvError::NotMapped(va))
        );
        assert_eq!(mm.clear_grant_pte(D1, l4, va, granted, false), Ok(()));
        assert_eq!(mm.mem.read_entry(l1, 9), 0);
        assert_eq!(all_counts(&mm), before);
        assert_eq!(
            mm.clear_grant_pte(D1, l4, va, granted, false),
            Err(PvError::NoGrantEntry(va))
        );
        // The slot is the guest's again.
        assert_eq!(update(&mut mm, D1, l1, 9, pte(f.d1[10], P)), Ok(()));
        assert_eq!(drop_grant_refs(&mut mm, granted, false), Ok(()));
        assert_eq!(counts(&mm, granted), (PageType::None, 0, 0));
    }

    #[test]
    fn guests_cannot_forge_grant_ptes() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, _, l2, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        let before = all_counts(&mm);
        let marker = PvError::BadFlags {
            level: 1,
            bits: PTE_GNTTAB,
        };
        for target in [f.d1[10], f.d2[0]] {
            for flags in [P, P | RW, GRANT_PTE_FLAGS | RW] {
                let forged = pte(target, flags | PTE_GNTTAB);
                assert_eq!(update(&mut mm, D1, l1, 30, forged), Err(marker));
                assert_eq!(
                    mm.update_va_mapping(D1, l4, 0x1e000, forged, 0),
                    Err(marker)
                );
            }
        }
        assert_eq!(all_counts(&mm), before);
        // A frame holding a marked entry written as data cannot become an L1.
        let table = f.d1[11];
        mm.mem
            .write_entry(table, 0, pte(f.d2[0], GRANT_PTE_FLAGS | RW));
        assert_eq!(pin(&mut mm, D1, 1, table), Err(marker));
        assert_eq!(all_counts(&mm), before);
        // Above L1 the bit is the guest's, as in Xen.
        assert_eq!(
            update(&mut mm, D1, l2, 30, pte(f.d1[12], P | PTE_GNTTAB)),
            Ok(())
        );
        assert_eq!(counts(&mm, f.d1[12]), (PageType::L1, 1, 1));
    }

    #[test]
    fn devalidation_never_releases_a_grant_ptes_references() {
        let mut st = storage();
        let (mut alloc, f) = setup(&mut st);
        let mut mem = FakeMem::default();
        let (l4, _, _, l1) = build_tree(&mut mem, &f);
        let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
        pin(&mut mm, D1, 4, l4).unwrap();
        let (rw, ro) = (f.d2[3], f.d2[4]);
        take_grant_refs(&mut mm, rw, false);
        take_grant_refs(&mut mm, ro, true);
        mm.install_grant_pte(D1, l4, 0x9000, rw, false).unwrap();
        mm.install_grant_pte(D1, l4, 0xa000, ro, true).unwrap();
        // Unpinning the root devalidates the whole tree; the grant entries stay as data and
        // their frames keep exactly the grant tables' references.
        let mut vcpu = VcpuMm::new();
        let (r, _) = ext(&mut mm, D1, &mut vcpu, MmuextCmd::UnpinTable, l4.0, 0);
        assert_eq!(r, Ok(()));
        assert_eq!(counts(&mm, l1), (PageType::None, 0, 0));
        assert_eq!(counts(&mm, rw), (PageType::Writable, 1, 1));
        assert_eq!(counts(&mm, ro), (PageType::None, 0, 1));
        assert!(is_grant_entry(Level::L1, mm.mem.read_entry(l1, 9)));
        // The L1 cannot be validated again while it holds them...
        let after = all_counts(&mm);
        assert_eq!(
            pin(&mut mm, D1, 4, l4),
            Err(PvError::BadFlags {
                level: 1,
                bits: PTE_GNTTAB
            })
        );
        assert_eq!(all_counts(&mm), after);
        // ...until the guest overwrites them (the frame is plain memory now).
        update(&mut mm, D1, l1, 9, 0).unwrap();
        update(&mut mm, D1, l1, 10, 0).unwrap();
        let mut vcpus = [VcpuMm::new()];
        mm.new_domain_root(D1, &mut vcpus[0], l4).unwrap();
        // Teardown likewise: a grant entry in place when the domain dies is skipped, and the
        // frames it maps are the ones still held afterwards.
        mm.install_grant_pte(D1, l4, 0x9000, rw, false).unwrap();
        let mut stuck = Vec::new();
        let frames = f.d1.iter().chain(&f.d2).copied();
        let left = mm.relinquish(D1, &mut vcpus, frames, |m| stuck.push(m));
        assert_eq!((left, stuck), (0, vec![]));
        for &m in &f.d1 {
            assert_eq!(counts(&mm, m), (PageType::None, 0, 0));
        }
        assert_eq!(counts(&mm, rw), (PageType::Writable, 1, 1));
        let left = mm.relinquish(D2, &mut [], f.d2.iter().copied(), |_| {});
        assert_eq!(left, 2);
        assert_eq!(drop_grant_refs(&mut mm, rw, false), Ok(()));
        assert_eq!(drop_grant_refs(&mut mm, ro, true), Ok(()));
        assert_eq!(mm.relinquish(D2, &mut [], f.d2.iter().copied(), |_| {}), 0);
    }

    // --- Property tests -------------------------------------------------------------------

    /// Entry indices the generated requests use: a few guest slots at each end, and hv's.
    const INDICES: [usize; 6] = [0, 1, 2, 256, 271, 511];

    /// Flag sets the generated entries carry (good and bad).
    const FLAGS: [u64; 12] = [
        0,
        P,
        P | RW,
        P | PTE_USER | PTE_ACCESSED,
        P | RW | PTE_USER | PTE_ACCESSED | PTE_DIRTY,
        P | RW | PTE_NX | PTE_AVAIL,
        P | PTE_PSE,
        P | RW | PTE_GLOBAL,
        P | (1 << 4),
        RW,
        // Forged grant entries.
        P | RW | PTE_GNTTAB,
        GRANT_PTE_FLAGS,
    ];

    const FRAMES_PER_DOMAIN: usize = 8;

    #[derive(Clone, Debug)]
    struct EntryGen {
        /// Index into [`Model::targets`].
        target: usize,
        flags: usize,
        /// Raw value instead, sometimes.
        raw: Option<u64>,
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// The guest writes a frame through a writable mapping it could have (only frames
        /// of no type or the writable type).
        GuestWrite {
            dom: usize,
            frame: usize,
            index: usize,
            value: EntryGen,
        },
        MmuUpdate {
            dom: usize,
            frame: usize,
            index: usize,
            value: EntryGen,
            preserve: bool,
        },
        Pin {
            dom: usize,
            level: u8,
            frame: usize,
        },
        Unpin {
            dom: usize,
            frame: usize,
        },
        NewBaseptr {
            dom: usize,
            frame: usize,
        },
        NewUserBaseptr {
            dom: usize,
            frame: Option<usize>,
        },
        Uva {
            dom: usize,
            slots: [usize; 4],
            value: EntryGen,
        },
        SetGdt {
            dom: usize,
            frames: Vec<usize>,
            entries: usize,
        },
        WriteDescriptor {
            dom: usize,
            frame: usize,
            index: usize,
            raw: u64,
        },
        ClearPage {
            dom: usize,
            frame: usize,
        },
        /// `map_grant_ref` by `dom` of the other domain's frame `target`: the grant tables'
        /// references, then the entry at one of the addresses (picked by `at`) that have an
        /// L1 in `dom`'s current kernel root.
        GrantMap {
            dom: usize,
            at: usize,
            target: usize,
            readonly: bool,
        },
        /// `unmap_grant_ref` of one of the mappings made.
        GrantUnmap {
            pick: usize,
        },
    }

    fn entry_gen() -> impl Strategy<Value = EntryGen> {
        (
            0..2 * FRAMES_PER_DOMAIN + 3,
            0..FLAGS.len(),
            prop::option::weighted(0.05, any::<u64>()),
        )
            .prop_map(|(target, flags, raw)| EntryGen { target, flags, raw })
    }

    fn op() -> impl Strategy<Value = Op> {
        let dom = 0..2usize;
        let frame = 0..FRAMES_PER_DOMAIN;
        let index = 0..INDICES.len();
        prop_oneof![
            4 => (dom.clone(), frame.clone(), index.clone(), entry_gen())
                .prop_map(|(dom, frame, index, value)| Op::GuestWrite { dom, frame, index, value }),
            4 => (dom.clone(), frame.clone(), index.clone(), entry_gen(), any::<bool>())
                .prop_map(|(dom, frame, index, value, preserve)| Op::MmuUpdate {
                    dom, frame, index, value, preserve
                }),
            3 => (dom.clone(), 1..=4u8, frame.clone())
                .prop_map(|(dom, level, frame)| Op::Pin { dom, level, frame }),
            2 => (dom.clone(), frame.clone()).prop_map(|(dom, frame)| Op::Unpin { dom, frame }),
            2 => (dom.clone(), frame.clone())
                .prop_map(|(dom, frame)| Op::NewBaseptr { dom, frame }),
            1 => (dom.clone(), prop::option::of(frame.clone()))
                .prop_map(|(dom, frame)| Op::NewUserBaseptr { dom, frame }),
            3 => (dom.clone(), [0..4usize, 0..4usize, 0..4usize, 0..4usize], entry_gen())
                .prop_map(|(dom, slots, value)| Op::Uva { dom, slots, value }),
            1 => (dom.clone(), prop::collection::vec(frame.clone(), 0..3), 0..1200usize)
                .prop_map(|(dom, frames, entries)| Op::SetGdt { dom, frames, entries }),
            1 => (dom.clone(), frame.clone(), 0..4usize, any::<u64>())
                .prop_map(|(dom, frame, index, raw)| Op::WriteDescriptor { dom, frame, index, raw }),
            1 => (dom.clone(), frame.clone()).prop_map(|(dom, frame)| Op::ClearPage { dom, frame }),
            3 => (dom, any::<usize>(), frame, any::<bool>())
                .prop_map(|(dom, at, target, readonly)| Op::GrantMap {
                    dom, at, target, readonly
                }),
            2 => any::<usize>().prop_map(|pick| Op::GrantUnmap { pick }),
        ]
    }

    struct Model {
        doms: [Vec<Mfn>; 2],
        /// Every frame an entry may name: both domains', hv's, a free one, one outside.
        targets: Vec<Mfn>,
        vcpus: [VcpuMm; 2],
        /// Grant mappings in place, whose references the model holds as the grant tables do.
        grants: Vec<Grant>,
    }

    #[derive(Clone, Copy, Debug)]
    struct Grant {
        /// The mapping domain (index into [`DOMIDS`]); the other one granted the frame.
        dom: usize,
        root: Mfn,
        va: u64,
        mfn: Mfn,
        readonly: bool,
    }

    /// The address whose table indices (L4 down to L1) are picked by `slots` from a few at
    /// each end, sign-extended.
    fn slots_va(slots: &[usize; 4]) -> u64 {
        let pick = |i: usize| [0u64, 1, 2, 511][i];
        let va = pick(slots[0]) << 39
            | pick(slots[1]) << 30
            | pick(slots[2]) << 21
            | pick(slots[3]) << 12;
        if va >> 47 != 0 {
            va | 0xffff << 48
        } else {
            va
        }
    }

    const DOMIDS: [DomId; 2] = [D1, D2];

    impl Model {
        fn value(&self, gen: &EntryGen) -> u64 {
            gen.raw
                .unwrap_or_else(|| pte(self.targets[gen.target], FLAGS[gen.flags]))
        }
    }

    fn apply(mm: &mut PvMm<'_, '_, FakeMem>, model: &mut Model, op: &Op) {
        match op {
            Op::GuestWrite {
                dom,
                frame,
                index,
                value,
            } => {
                let mfn = model.doms[*dom][*frame];
                let page = info(mm, mfn);
                if matches!(page.page_type(), PageType::None | PageType::Writable) {
                    let value = model.value(value);
                    mm.mem.write_entry(mfn, INDICES[*index], value);
                }
            }
            Op::MmuUpdate {
                dom,
                frame,
                index,
                value,
                preserve,
            } => {
                let mfn = model.doms[*dom][*frame];
                let req = MmuUpdate {
                    ptr: (mfn.paddr() + 8 * INDICES[*index] as u64) | if *preserve { 2 } else { 0 },
                    val: model.value(value),
                };
                let _ = mm.mmu_update(DOMIDS[*dom], &[req]);
            }
            Op::Pin { dom, level, frame } => {
                let _ = pin(mm, DOMIDS[*dom], *level, model.doms[*dom][*frame]);
            }
            Op::Unpin { dom, frame } => {
                let mfn = model.doms[*dom][*frame];
                let _ = ext(
                    mm,
                    DOMIDS[*dom],
                    &mut VcpuMm::new(),
                    MmuextCmd::UnpinTable,
                    mfn.0,
                    0,
                );
            }
            Op::NewBaseptr { dom, frame } => {
                let mfn = model.doms[*dom][*frame];
                let vcpu = &mut model.vcpus[*dom];
                let _ = ext(mm, DOMIDS[*dom], vcpu, MmuextCmd::NewBaseptr, mfn.0, 0);
            }
            Op::NewUserBaseptr { dom, frame } => {
                let arg = frame.map_or(0, |i| model.doms[*dom][i].0);
                let vcpu = &mut model.vcpus[*dom];
                let _ = ext(mm, DOMIDS[*dom], vcpu, MmuextCmd::NewUserBaseptr, arg, 0);
            }
            Op::Uva { dom, slots, value } => {
                if let Some(root) = model.vcpus[*dom].kernel_root() {
                    let va = slots_va(slots);
                    let value = model.value(value);
                    let _ = mm.update_va_mapping(DOMIDS[*dom], root, va, value, UVMF_INVLPG);
                }
            }
            Op::SetGdt {
                dom,
                frames,
                entries,
            } => {
                let frames: Vec<Mfn> = frames.iter().map(|&i| model.doms[*dom][i]).collect();
                let vcpu = &mut model.vcpus[*dom];
                let _ = mm.set_gdt(DOMIDS[*dom], vcpu, &frames, *entries);
            }
            Op::WriteDescriptor {
                dom,
                frame,
                index,
                raw,
            } => {
                let mfn = model.doms[*dom][*frame];
                if matches!(
                    info(mm, mfn).page_type(),
                    PageType::None | PageType::Writable
                ) {
                    mm.mem.write_entry(mfn, *index, *raw);
                }
            }
            Op::ClearPage { dom, frame } => {
                let mfn = model.doms[*dom][*frame];
                let _ = ext(
                    mm,
                    DOMIDS[*dom],
                    &mut VcpuMm::new(),
                    MmuextCmd::ClearPage,
                    mfn.0,
                    0,
                );
            }
            Op::GrantMap {
                dom,
                at,
                target,
                readonly,
            } => {
                let Some(root) = model.vcpus[*dom].kernel_root() else {
                    return;
                };
                let domid = DOMIDS[*dom];
                let with_l1: Vec<u64> = (0..256)
                    .map(|i| slots_va(&[i & 3, i >> 2 & 3, i >> 4 & 3, i >> 6]))
                    .filter(|&va| mm.walk_to_l1(domid, root, va).is_ok())
                    .collect();
                if with_l1.is_empty() {
                    return;
                }
                let va = with_l1[at % with_l1.len()];
                let granter = DOMIDS[1 - *dom];
                let mfn = model.doms[1 - *dom][*target];
                if mm.get_page(mfn, granter).is_err() {
                    return;
                }
                if !*readonly && mm.get_page_type(mfn, granter, PageType::Writable).is_err() {
                    mm.put_page(mfn).unwrap();
                    return;
                }
                match mm.install_grant_pte(domid, root, va, mfn, *readonly) {
                    Ok(()) => model.grants.push(Grant {
                        dom: *dom,
                        root,
                        va,
                        mfn,
                        readonly: *readonly,
                    }),
                    Err(_) => drop_grant_refs(mm, mfn, *readonly).unwrap(),
                }
            }
            Op::GrantUnmap { pick } => {
                if model.grants.is_empty() {
                    return;
                }
                let g = model.grants[pick % model.grants.len()];
                let cleared = mm.clear_grant_pte(DOMIDS[g.dom], g.root, g.va, g.mfn, g.readonly);
                if cleared.is_ok() {
                    drop_grant_refs(mm, g.mfn, g.readonly).unwrap();
                    model.grants.remove(pick % model.grants.len());
                }
            }
        }
    }

    /// Checks (a), (b) and the hv slots directly, (e) grant entries in validated L1s are
    /// never more than the grant mappings of their frame and access (none forged, none
    /// duplicated), and (c) by recounting every frame's type and general references from the
    /// validated tables, pins, base pointers, GDTs and grant mappings.
    fn check_invariants(mm: &PvMm<'_, '_, FakeMem>, model: &Model) -> Result<(), String> {
        let mut grant_entries: HashMap<(DomId, Mfn, bool), usize> = HashMap::new();
        let mut expected: HashMap<Mfn, (PageType, u32, u32)> = HashMap::new();
        let mut typed = |mfn: Mfn, ty: PageType| -> Result<(), String> {
            let e = expected.entry(mfn).or_insert((ty, 0, 0));
            if e.0 != ty {
                return Err(format!("{mfn:?} needed as {:?} and {ty:?}", e.0));
            }
            e.1 += 1;
            e.2 += 1;
            Ok(())
        };
        let mut untyped = Vec::new();
        for m in BASE..BASE + NR_FRAMES {
            let mfn = Mfn(m);
            let page = info(mm, mfn);
            if page.type_count() == 0 {
                if page.page_type() != PageType::None || page.is_pinned() || page.is_validated() {
                    return Err(format!("{mfn:?} untyped but {page:?}"));
                }
                continue;
            }
            let needs_validation =
                Level::of(page.page_type()).is_some() || page.page_type() == PageType::SegDesc;
            if needs_validation != page.is_validated() {
                return Err(format!("{mfn:?} validation flag wrong: {page:?}"));
            }
            if page.is_pinned() {
                if Level::of(page.page_type()).is_none() {
                    return Err(format!("{mfn:?} pinned as {:?}", page.page_type()));
                }
                typed(mfn, page.page_type())?;
            }
            let Some(level) = Level::of(page.page_type()) else {
                continue;
            };
            let Owner::Domain(dom) = page.owner() else {
                return Err(format!("table {mfn:?} not a domain's"));
            };
            for index in 0..ENTRIES {
                let entry = mm.mem.read_entry(mfn, index);
                if !level.is_guest_slot(index) {
                    if entry != HV_SLOTS[index - HV_L4_FIRST_SLOT] {
                        return Err(format!("{mfn:?} hv slot {index} is {entry:#x}"));
                    }
                    continue;
                }
                if entry & PTE_PRESENT == 0 {
                    continue;
                }
                let target = entry_mfn(entry);
                if is_grant_entry(level, entry) {
                    *grant_entries
                        .entry((dom, target, entry & PTE_RW == 0))
                        .or_default() += 1;
                    continue;
                }
                let t = mm
                    .alloc
                    .table()
                    .get(target)
                    .ok_or(format!("{mfn:?}[{index}] names {target:?} outside"))?;
                // (b) same domain, right type.
                if t.owner() != Owner::Domain(dom) {
                    return Err(format!(
                        "{mfn:?}[{index}] names {target:?} of {:?}",
                        t.owner()
                    ));
                }
                if level == Level::L1 && entry & PTE_RW == 0 {
                    untyped.push(target);
                    continue;
                }
                // (a) a writable L1 entry names a frame typed writable (never a table or
                // descriptor frame); (b) a higher entry a validated lower table.
                let want = level.entry_target();
                if t.page_type() != want {
                    return Err(format!(
                        "{mfn:?}[{index}] ({level:?}) names {target:?} typed {:?}",
                        t.page_type()
                    ));
                }
                if want != PageType::Writable && !t.is_validated() {
                    return Err(format!("{mfn:?}[{index}] names unvalidated {target:?}"));
                }
                typed(target, want)?;
            }
        }
        for vcpu in &model.vcpus {
            for root in [vcpu.kernel_root(), vcpu.user_root()].into_iter().flatten() {
                typed(root, PageType::L4)?;
            }
            for &frame in vcpu.gdt_frames() {
                typed(frame, PageType::SegDesc)?;
            }
        }
        for ((dom, target, readonly), n) in grant_entries {
            let made = model
                .grants
                .iter()
                .filter(|g| (DOMIDS[g.dom], g.mfn, g.readonly) == (dom, target, readonly))
                .count();
            if n > made {
                return Err(format!(
                    "d{dom} has {n} grant entries of {target:?} (read-only {readonly}), {made} made"
                ));
            }
        }
        for g in &model.grants {
            if g.readonly {
                untyped.push(g.mfn);
            } else {
                typed(g.mfn, PageType::Writable)?;
            }
        }
        for target in untyped {
            expected.entry(target).or_insert((PageType::None, 0, 0)).2 += 1;
        }
        // (c) the counts are exactly the recount.
        for m in BASE..BASE + NR_FRAMES {
            let mfn = Mfn(m);
            let page = info(mm, mfn);
            let (ty, tc, rc) = expected
                .get(&mfn)
                .copied()
                .unwrap_or((PageType::None, 0, 0));
            let actual = (page.type_count(), page.ref_count());
            if actual != (tc, rc) || (tc != 0 && page.page_type() != ty) {
                return Err(format!(
                    "{mfn:?}: {:?} {actual:?}, recount {ty:?} {:?}",
                    page.page_type(),
                    (tc, rc)
                ));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Random page-table, pin, base-pointer, update_va_mapping, GDT and grant map/unmap
        /// requests from two domains never let a table or descriptor frame be mapped
        /// writable, never let a table name another domain's frame (but through a grant
        /// entry hv made) or a wrong type, never let a guest forge or clobber a grant entry,
        /// always leave the counts equal to a recount from scratch, and relinquish always
        /// brings every frame back to zero but what grant mappings hold, whose references
        /// devalidation never released.
        #[test]
        fn random_requests_keep_the_page_type_invariants(
            booted in any::<bool>(),
            ops in prop::collection::vec(op(), 1..80)
        ) {
            let mut st = storage();
            let (mut alloc, f) = setup(&mut st);
            let mut mem = FakeMem::default();
            let doms = [
                f.d1[..FRAMES_PER_DOMAIN].to_vec(),
                f.d2[..FRAMES_PER_DOMAIN].to_vec(),
            ];
            let mut targets: Vec<Mfn> = doms.concat();
            targets.extend([f.hv, f.free, OUTSIDE]);
            let mut model = Model { doms, targets, vcpus: [VcpuMm::new(); 2], grants: Vec::new() };
            if booted {
                // Half the runs start as the domain builder leaves a domain: a pinned tree
                // reaching one L1 (frames 0..=3), loaded as the kernel root.
                for (d, frames) in model.doms.iter().enumerate() {
                    for level in 0..3 {
                        mem.write_entry(frames[level], 0, pte(frames[level + 1], P | RW));
                    }
                    mem.write_entry(frames[3], 1, pte(frames[4], P | RW));
                    let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
                    mm.new_domain_root(DOMIDS[d], &mut model.vcpus[d], frames[0]).unwrap();
                }
            }
            let mut mm = PvMm::new(&mut alloc, &mut mem, HV_SLOTS);
            for (i, op) in ops.iter().enumerate() {
                apply(&mut mm, &mut model, op);
                if let Err(broken) = check_invariants(&mm, &model) {
                    prop_assert!(false, "after op {} {:?}: {}", i, op, broken);
                }
            }
            // (d) teardown leaves every frame of both domains with zero counts but those the
            // grant mappings hold, and then the grant tables' references are all still there
            // to be dropped.
            for (d, dom) in DOMIDS.iter().enumerate() {
                let frames = model.doms[d].clone();
                let vcpus = core::slice::from_mut(&mut model.vcpus[d]);
                let mut stuck = Vec::new();
                let left = mm.relinquish(*dom, vcpus, frames.iter().copied(), |m| stuck.push(m));
                let mut held: Vec<Mfn> =
                    model.grants.iter().filter(|g| g.dom != d).map(|g| g.mfn).collect();
                held.sort();
                held.dedup();
                prop_assert_eq!((left, stuck), (held.len(), held));
            }
            for g in &model.grants {
                prop_assert_eq!(drop_grant_refs(&mut mm, g.mfn, g.readonly), Ok(()));
            }
            for m in BASE..BASE + NR_FRAMES {
                let page = info(&mm, Mfn(m));
                prop_assert_eq!((page.type_count(), page.ref_count()), (0, 0), "{:?}", m);
            }
        }
    }
}
