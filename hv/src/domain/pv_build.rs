//! The PV domain builder: a 64-bit PV guest's memory at start of day, laid out as Xen 4.17's
//! builder (`xen/arch/x86/pv/dom0_build.c`) lays it out.
//!
//! [`build_pv`] writes through the [`BuildMemory`] trait (guest pfn -> machine frame and page
//! contents), so it runs on the host against a fake memory. It writes only the pages it lays
//! out; the caller scrubs the rest of the domain's pages.
//!
//! # Layout
//!
//! Guest pseudo-physical memory is mapped from `v_start` = VIRT_BASE: guest pfn `n` is at
//! virtual `v_start + n * 4096`, in this order, each part starting on a page boundary:
//!
//! 1. the kernel, `[virt_kstart, virt_kend)` (segments at their load addresses, bss and gaps
//!    zeroed); pfns below `virt_kstart` are mapped too (zeroed);
//! 2. the module, if any, unless the kernel has MOD_START_PFN (then it is not mapped: it
//!    occupies the pfns just after the mapped region and `mod_start` is its first pfn, with
//!    `SIF_MOD_START_PFN` set);
//! 3. the p2m list (`mfn_list`): `nr_pages` 8-byte machine frame numbers, pfn order;
//! 4. the `start_info` page (Xen reserves `sizeof(start_info) + sizeof(dom0_vga_console_info)`;
//!    both fit one page);
//! 5. the bootstrap page tables: L4, then the L3s, L2s and L1s, in address order;
//! 6. one boot stack page; the guest starts with RSP at its top.
//!
//! `v_end` is the stack's end rounded up to 4 MiB, plus another 4 MiB if that leaves less than
//! 512 KiB of slack. The page-table count depends on `v_end` and `v_end` on it; like Xen, the
//! builder tries 2, 3, ... frames until `1 + #L3 + #L2 + #L1` tables covering
//! `[v_start, v_end)` fit. Every page of `[v_start, v_end)` is mapped with a 4 KiB PTE holding
//! its machine frame, present, user (the kernel runs at CPL3), accessed and writable, except the
//! page-table frames, which are read-only. Upper-level entries are present, writable, user,
//! accessed and dirty (Xen's `L{2,3,4}_PROT`). L4 slots 256..=271 are hv's, copied verbatim.
//! Guest pfns equal `(va - v_start) / 4096` for the whole region, so the kernel's pfns are its
//! segments' physical addresses less PADDR_OFFSET.
//!
//! INIT_P2M is not honoured: the p2m list stays in the bootstrap region, as Xen placed it before
//! that note existed and as the ABI allows (the guest finds it through `mfn_list`);
//! `first_p2m_pfn` and `nr_p2m_frames`, which describe a p2m mapped at INIT_P2M, stay 0.

use core::fmt;
use core::mem::size_of;
use core::ops::Range;

use hypercall_abi::xen::{
    Dom0VgaConsoleInfo, Hypercall, StartInfo, StartInfoConsole, StartInfoConsoleDomU,
    HYPERCALL_STUB_SIZE, MAX_GUEST_CMDLINE, SIF_INITDOMAIN, SIF_MOD_START_PFN, SIF_PRIVILEGED,
    START_INFO_MAGIC_X86_64,
};
use hypercall_abi::DomId;

use super::elf::{valid_guest_range, ImageKind, XenImage};
use crate::mm::guest_access::bytes_of;
use crate::mm::pv::{
    HV_L4_FIRST_SLOT, HV_L4_SLOTS, PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, PTE_RW, PTE_USER,
};
use crate::mm::{Mfn, MAX_MFN, PAGE_BYTES, PAGE_SIZE};

/// Xen's `L1_PROT` for 64-bit PV guests (less `_PAGE_GUEST_KERNEL`, a Xen-internal bit).
const L1_PROT: u64 = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_USER;
/// Xen's `L2_PROT`, `L3_PROT` and `L4_PROT`.
const UPPER_PROT: u64 = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY | PTE_USER;

/// Bytes Xen reserves after `start_info` (the dom0 VGA console description follows it).
const START_INFO_BYTES: u64 = (size_of::<StartInfo>() + size_of::<Dom0VgaConsoleInfo>()) as u64;
const _: () = assert!(START_INFO_BYTES <= PAGE_SIZE);

const MIB: u64 = 1 << 20;
/// `v_end` is a multiple of this.
const V_END_ALIGN: u64 = 4 * MIB;
/// Least slack between the boot stack and `v_end`.
const V_END_SLACK: u64 = 512 * 1024;

/// Flags the caller may pass in [`BuildParams::flags`].
const CALLER_FLAGS: u32 = SIF_PRIVILEGED | SIF_INITDOMAIN;

/// The memory of the domain being built.
pub trait BuildMemory {
    /// Guest pages the domain owns, as guest pfns 0..nr_pages, each backed by a machine frame.
    fn nr_pages(&self) -> u64;
    /// The machine frame backing guest page `pfn` (`pfn < nr_pages`).
    fn mfn(&self, pfn: u64) -> Mfn;
    /// The 4 KiB contents of guest page `pfn` (`pfn < nr_pages`), writable during building.
    fn page_mut(&mut self, pfn: u64) -> &mut [u8; PAGE_BYTES];
}

/// A shared ring page and its event channel (xenstore, console).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingPage {
    /// Machine frame of the ring.
    pub mfn: Mfn,
    /// Event channel port the guest binds to it.
    pub evtchn: u32,
}

/// What the builder needs besides the image and the memory.
#[derive(Clone, Copy, Debug)]
pub struct BuildParams<'a> {
    /// The domain's id (for the log line).
    pub domid: DomId,
    /// Pages the domain starts with; must equal [`BuildMemory::nr_pages`].
    pub nr_pages: u64,
    /// Pages the domain may grow to; at least `nr_pages`.
    pub max_pages: u64,
    /// `SIF_PRIVILEGED` and/or `SIF_INITDOMAIN`; no other bit.
    pub flags: u32,
    /// Kernel command line; truncated to 1023 bytes in `start_info`.
    pub cmdline: &'a str,
    /// The module (initrd); an empty one counts as none.
    pub module: Option<&'a [u8]>,
    /// Machine frame of the domain's shared-info page.
    pub shared_info_mfn: Mfn,
    /// Xenstore ring, if the domain has one (zeros in `start_info` otherwise).
    pub store: Option<RingPage>,
    /// Console ring, if the domain has one (zeros in `start_info` otherwise).
    pub console: Option<RingPage>,
    /// Entries for the guest L4's slots 256..=271 (hv's range, M2P included), copied verbatim.
    pub hv_l4_slots: &'a [u64; HV_L4_SLOTS],
}

/// Where everything goes, in guest virtual addresses (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvLayout {
    /// Start of the bootstrap mapping: VIRT_BASE, the address of guest pfn 0.
    pub v_start: u64,
    /// End of the bootstrap mapping.
    pub v_end: u64,
    /// The kernel, `[virt_kstart, virt_kend)`.
    pub kernel: Range<u64>,
    /// The module's bytes, when mapped.
    pub module_va: Option<Range<u64>>,
    /// The guest pfns holding the module, mapped or not.
    pub module_pfns: Option<Range<u64>>,
    /// The p2m list (`mfn_list`).
    pub p2m: Range<u64>,
    /// The `start_info` page.
    pub start_info: u64,
    /// The bootstrap page-table frames (`pt_base` is the start: the L4).
    pub page_tables: Range<u64>,
    /// The boot stack page.
    pub stack: u64,
    /// How many L3, L2 and L1 tables map `[v_start, v_end)`.
    pub nr_l3: u64,
    /// See `nr_l3`.
    pub nr_l2: u64,
    /// See `nr_l3`.
    pub nr_l1: u64,
}

impl PvLayout {
    /// Lays out `image` for a domain of `nr_pages` pages with a module of `module_len` bytes.
    pub fn compute(
        image: &XenImage<'_>,
        nr_pages: u64,
        module_len: u64,
    ) -> Result<Self, BuildError> {
        if image.kind() != ImageKind::Pv {
            return Err(BuildError::NotPv);
        }
        let overflow = BuildError::AddressOverflow;
        let v_start = image.virt_base();
        let kernel = image.virt_range();
        let unmapped_module = module_len != 0 && image.mod_start_pfn();

        let mut cursor = round_up(kernel.end, PAGE_SIZE).ok_or(overflow)?;
        let module_va = if module_len != 0 && !unmapped_module {
            let va = cursor..cursor.checked_add(module_len).ok_or(overflow)?;
            cursor = round_up(va.end, PAGE_SIZE).ok_or(overflow)?;
            Some(va)
        } else {
            None
        };
        let p2m_len = nr_pages.checked_mul(8).ok_or(overflow)?;
        let p2m = cursor..cursor.checked_add(p2m_len).ok_or(overflow)?;
        let start_info = round_up(p2m.end, PAGE_SIZE).ok_or(overflow)?;
        let pt_start = start_info
            .checked_add(START_INFO_BYTES)
            .and_then(|end| round_up(end, PAGE_SIZE))
            .ok_or(overflow)?;

        let mut nr_pt = 2u64;
        let (v_end, nr_l3, nr_l2, nr_l1) = loop {
            let stack = nr_pt
                .checked_mul(PAGE_SIZE)
                .and_then(|len| pt_start.checked_add(len))
                .ok_or(overflow)?;
            let stack_end = stack.checked_add(PAGE_SIZE).ok_or(overflow)?;
            let mut v_end = round_up(stack_end, V_END_ALIGN).ok_or(overflow)?;
            if v_end - stack_end < V_END_SLACK {
                v_end = v_end.checked_add(V_END_ALIGN).ok_or(overflow)?;
            }
            // v_end only grows with nr_pt, so once too large it stays too large.
            let needed = (v_end - v_start) / PAGE_SIZE;
            if needed > nr_pages {
                return Err(BuildError::TooLarge { needed, nr_pages });
            }
            let last = v_end - 1;
            let nr_l3 = span(v_start, last, 39);
            let nr_l2 = span(v_start, last, 30);
            let nr_l1 = span(v_start, last, 21);
            if 1 + nr_l3 + nr_l2 + nr_l1 <= nr_pt {
                break (v_end, nr_l3, nr_l2, nr_l1);
            }
            nr_pt += 1;
        };
        if !valid_guest_range(v_start, v_end) {
            return Err(BuildError::BadRange {
                start: v_start,
                end: v_end,
            });
        }

        let mapped_pages = (v_end - v_start) / PAGE_SIZE;
        let module_pfns = if let Some(va) = &module_va {
            Some(pfn(v_start, va.start)..pfn(v_start, round_up(va.end, PAGE_SIZE).ok_or(overflow)?))
        } else if unmapped_module {
            let end = module_len
                .div_ceil(PAGE_SIZE)
                .checked_add(mapped_pages)
                .ok_or(overflow)?;
            if end > nr_pages {
                return Err(BuildError::TooLarge {
                    needed: end,
                    nr_pages,
                });
            }
            Some(mapped_pages..end)
        } else {
            None
        };

        Ok(PvLayout {
            v_start,
            v_end,
            kernel,
            module_va,
            module_pfns,
            p2m,
            start_info,
            page_tables: pt_start..pt_start + nr_pt * PAGE_SIZE,
            stack: pt_start + nr_pt * PAGE_SIZE,
            nr_l3,
            nr_l2,
            nr_l1,
        })
    }

    /// The guest pfn mapped at `va` (an address inside `[v_start, v_end)`).
    pub fn pfn_of(&self, va: u64) -> u64 {
        pfn(self.v_start, va)
    }

    /// Pages mapped by the bootstrap page tables: pfns `0..mapped_pages()`.
    pub fn mapped_pages(&self) -> u64 {
        (self.v_end - self.v_start) / PAGE_SIZE
    }

    /// Bootstrap page-table frames (`nr_pt_frames`).
    pub fn nr_pt_frames(&self) -> u64 {
        1 + self.nr_l3 + self.nr_l2 + self.nr_l1
    }

    /// The initial stack pointer: the top of the boot stack page.
    pub fn stack_top(&self) -> u64 {
        self.stack + PAGE_SIZE
    }
}

/// A built domain: what the vCPU starts with and where things are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvBuilt {
    /// RIP at start of day.
    pub entry: u64,
    /// RSP at start of day (top of the boot stack).
    pub stack_top: u64,
    /// RSI at start of day: the `start_info` page's virtual address.
    pub start_info_va: u64,
    /// Guest pfn of the `start_info` page.
    pub start_info_pfn: u64,
    /// Guest pfn of the L4 (the first page-table frame); its machine frame goes in CR3.
    pub l4_pfn: u64,
    /// Machine frame of the L4.
    pub l4_mfn: Mfn,
    /// Guest pfns of the bootstrap page-table frames (L4, L3s, L2s, L1s).
    pub pt_frames: Range<u64>,
    /// Guest pfn of the hypercall page, if the kernel asked for one.
    pub hypercall_page_pfn: Option<u64>,
    /// Guest pfns the kernel occupies.
    pub kernel_pfns: Range<u64>,
    /// The full layout.
    pub layout: PvLayout,
}

/// Why a domain could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The image has no PV entry (PVH only).
    NotPv,
    /// `BuildParams::nr_pages` differs from the memory's page count.
    PageCountMismatch {
        /// From the parameters.
        params: u64,
        /// From [`BuildMemory::nr_pages`].
        memory: u64,
    },
    /// More pages than the domain's maximum.
    AboveMaxPages {
        /// Pages asked for.
        nr_pages: u64,
        /// The maximum.
        max_pages: u64,
    },
    /// Flag bits other than `SIF_PRIVILEGED | SIF_INITDOMAIN`.
    BadFlags(u32),
    /// The layout runs past the top of the 64-bit address space.
    AddressOverflow,
    /// The bootstrap mapping is non-canonical or overlaps Xen's reserved range.
    BadRange {
        /// `v_start`.
        start: u64,
        /// `v_end`.
        end: u64,
    },
    /// The layout needs more pages than the domain has.
    TooLarge {
        /// Pages needed.
        needed: u64,
        /// Pages the domain has.
        nr_pages: u64,
    },
    /// A machine frame does not fit a page-table entry or a machine address.
    BadMfn(Mfn),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotPv => f.write_str("image has no PV entry point (PVH only)"),
            Self::PageCountMismatch { params, memory } => write!(
                f,
                "domain has {memory} pages but the parameters say {params}"
            ),
            Self::AboveMaxPages {
                nr_pages,
                max_pages,
            } => write!(f, "{nr_pages} pages exceed the maximum of {max_pages}"),
            Self::BadFlags(flags) => write!(f, "start_info flags {flags:#x} are not allowed"),
            Self::AddressOverflow => f.write_str("guest layout runs past the top of memory"),
            Self::BadRange { start, end } => write!(
                f,
                "bootstrap mapping {start:#x}..{end:#x} is non-canonical or in Xen's range"
            ),
            Self::TooLarge { needed, nr_pages } => write!(
                f,
                "initial guest needs {needed} pages but the domain has {nr_pages}"
            ),
            Self::BadMfn(mfn) => write!(f, "machine frame {:#x} is out of range", mfn.0),
        }
    }
}

/// Builds a PV domain's start-of-day memory from `image` into `mem`.
///
/// On error, `mem` may hold a partial image; the caller discards the domain.
pub fn build_pv(
    image: &XenImage<'_>,
    mem: &mut impl BuildMemory,
    p: &BuildParams<'_>,
) -> Result<PvBuilt, BuildError> {
    let nr_pages = mem.nr_pages();
    if p.nr_pages != nr_pages {
        return Err(BuildError::PageCountMismatch {
            params: p.nr_pages,
            memory: nr_pages,
        });
    }
    if nr_pages > p.max_pages {
        return Err(BuildError::AboveMaxPages {
            nr_pages,
            max_pages: p.max_pages,
        });
    }
    if p.flags & !CALLER_FLAGS != 0 {
        return Err(BuildError::BadFlags(p.flags));
    }
    let shared_info = machine_address(p.shared_info_mfn)?;
    let module = p.module.unwrap_or(&[]);
    let layout = PvLayout::compute(image, nr_pages, module.len() as u64)?;
    let v_start = layout.v_start;

    for pfn in 0..layout.mapped_pages() {
        mem.page_mut(pfn).fill(0);
    }
    for seg in image.segments() {
        write_phys(mem, seg.load_va - v_start, seg.data);
    }
    if let Some(pfns) = &layout.module_pfns {
        if layout.module_va.is_none() {
            // Unmapped (MOD_START_PFN): outside the zeroed region.
            for pfn in pfns.clone() {
                mem.page_mut(pfn).fill(0);
            }
        }
        write_phys(mem, pfns.start * PAGE_SIZE, module);
    }
    let p2m_phys = layout.p2m.start - v_start;
    for pfn in 0..nr_pages {
        let mfn = mem.mfn(pfn);
        write_phys(mem, p2m_phys + pfn * 8, &mfn.0.to_le_bytes());
    }

    let pae = image.notes().pae_mode.is_some_and(|m| m != "no");
    let start_info = start_info(&layout, nr_pages, shared_info, module, p, pae);
    write_phys(mem, layout.start_info - v_start, bytes_of(&start_info));

    let pt_frames = write_page_tables(mem, &layout, p.hv_l4_slots)?;

    let hypercall_page_pfn = image.hypercall_page().map(|va| layout.pfn_of(va));
    if let Some(pfn) = hypercall_page_pfn {
        fill_hypercall_page(mem.page_mut(pfn));
    }

    let kernel_pfns = layout.pfn_of(layout.kernel.start)
        ..layout.pfn_of(round_up(layout.kernel.end, PAGE_SIZE).unwrap_or(layout.v_end));
    let built = PvBuilt {
        entry: image.entry(),
        stack_top: layout.stack_top(),
        start_info_va: layout.start_info,
        start_info_pfn: layout.pfn_of(layout.start_info),
        l4_pfn: pt_frames.start,
        l4_mfn: mem.mfn(pt_frames.start),
        pt_frames,
        hypercall_page_pfn,
        kernel_pfns,
        layout,
    };
    let l = &built.layout;
    log::info!(
        "d{}: PV kernel {:#x}-{:#x} p2m {:#x} start_info {:#x} page tables {:#x}-{:#x} \
         stack {:#x} mapped {:#x}-{:#x} entry {:#x}",
        p.domid,
        l.kernel.start,
        l.kernel.end,
        l.p2m.start,
        l.start_info,
        l.page_tables.start,
        l.page_tables.end,
        l.stack,
        l.v_start,
        l.v_end,
        built.entry
    );
    Ok(built)
}

/// Fills a PV hypercall page as Xen does for 64-bit PV guests: 0xcc (int3) everywhere, then in
/// 32-byte slot `n` `push %rcx; push %r11; mov $n, %eax; syscall; pop %r11; pop %rcx; ret`,
/// except the iret slot, which pushes %rax too and does not return.
pub fn fill_hypercall_page(page: &mut [u8; PAGE_BYTES]) {
    page.fill(0xcc);
    for (n, slot) in page.chunks_exact_mut(HYPERCALL_STUB_SIZE).enumerate() {
        let nr = (n as u32).to_le_bytes();
        if n == Hypercall::Iret as usize {
            let stub = [
                0x51, 0x41, 0x53, 0x50, 0xb8, nr[0], nr[1], nr[2], nr[3], 0x0f, 0x05,
            ];
            slot[..stub.len()].copy_from_slice(&stub);
        } else {
            let stub = [
                0x51, 0x41, 0x53, 0xb8, nr[0], nr[1], nr[2], nr[3], 0x0f, 0x05, 0x41, 0x5b, 0x59,
                0xc3,
            ];
            slot[..stub.len()].copy_from_slice(&stub);
        }
    }
}

/// The `start_info` structure.
fn start_info(
    layout: &PvLayout,
    nr_pages: u64,
    shared_info: u64,
    module: &[u8],
    p: &BuildParams<'_>,
    pae: bool,
) -> StartInfo {
    let mut magic = [0u8; 32];
    let text = START_INFO_MAGIC_X86_64.as_bytes();
    magic[..text.len()].copy_from_slice(text);
    // Xen appends "p" for a kernel whose PAE_MODE note asks for PAE (every 64-bit one).
    if pae {
        magic[text.len()] = b'p';
    }
    let mut flags = p.flags;
    let (mod_start, mod_len) = match (&layout.module_va, &layout.module_pfns) {
        (Some(va), _) => (va.start, module.len() as u64),
        (None, Some(pfns)) => {
            flags |= SIF_MOD_START_PFN;
            (pfns.start, module.len() as u64)
        }
        (None, None) => (0, 0),
    };
    let (store_mfn, store_evtchn) = p.store.map_or((0, 0), |r| (r.mfn.0, r.evtchn));
    let (console_mfn, console_evtchn) = p.console.map_or((0, 0), |r| (r.mfn.0, r.evtchn));
    // At most MAX_GUEST_CMDLINE - 1 bytes: the array is zeroed, so a NUL always follows.
    let mut cmd_line = [0u8; MAX_GUEST_CMDLINE];
    let text = p.cmdline.as_bytes();
    let text = &text[..text.len().min(MAX_GUEST_CMDLINE - 1)];
    cmd_line[..text.len()].copy_from_slice(text);
    StartInfo {
        magic,
        nr_pages,
        shared_info,
        flags,
        pad0: 0,
        store_mfn,
        store_evtchn,
        pad1: 0,
        console: StartInfoConsole {
            dom_u: StartInfoConsoleDomU {
                mfn: console_mfn,
                evtchn: console_evtchn,
                pad0: 0,
            },
        },
        pt_base: layout.page_tables.start,
        nr_pt_frames: layout.nr_pt_frames(),
        mfn_list: layout.p2m.start,
        mod_start,
        mod_len,
        cmd_line,
        first_p2m_pfn: 0,
        nr_p2m_frames: 0,
    }
}

/// Writes the bootstrap page tables; returns the pfns of their frames.
fn write_page_tables(
    mem: &mut impl BuildMemory,
    layout: &PvLayout,
    hv_slots: &[u64; HV_L4_SLOTS],
) -> Result<Range<u64>, BuildError> {
    let v_start = layout.v_start;
    let l4 = layout.pfn_of(layout.page_tables.start);
    let l3_first = l4 + 1;
    let l2_first = l3_first + layout.nr_l3;
    let l1_first = l2_first + layout.nr_l2;
    let pt_frames = l4..l1_first + layout.nr_l1;

    for (i, &entry) in hv_slots.iter().enumerate() {
        write_entry(mem, l4, HV_L4_FIRST_SLOT + i, entry);
    }
    for pfn in 0..layout.mapped_pages() {
        let va = v_start + pfn * PAGE_SIZE;
        let l3 = l3_first + ((va >> 39) - (v_start >> 39));
        let l2 = l2_first + ((va >> 30) - (v_start >> 30));
        let l1 = l1_first + ((va >> 21) - (v_start >> 21));
        // The upper levels change at most every 2 MiB.
        if pfn == 0 || va.is_multiple_of(1 << 21) {
            let e = pte(mem.mfn(l3), UPPER_PROT)?;
            write_entry(mem, l4, table_index(va, 39), e);
            let e = pte(mem.mfn(l2), UPPER_PROT)?;
            write_entry(mem, l3, table_index(va, 30), e);
            let e = pte(mem.mfn(l1), UPPER_PROT)?;
            write_entry(mem, l2, table_index(va, 21), e);
        }
        let prot = if pt_frames.contains(&pfn) {
            L1_PROT & !PTE_RW
        } else {
            L1_PROT
        };
        let e = pte(mem.mfn(pfn), prot)?;
        write_entry(mem, l1, table_index(va, 12), e);
    }
    Ok(pt_frames)
}

/// The index into the table at the level whose entries each map `1 << shift` bytes.
fn table_index(va: u64, shift: u32) -> usize {
    ((va >> shift) & 511) as usize
}

fn write_entry(mem: &mut impl BuildMemory, table_pfn: u64, index: usize, entry: u64) {
    write_phys(
        mem,
        table_pfn * PAGE_SIZE + index as u64 * 8,
        &entry.to_le_bytes(),
    );
}

fn pte(mfn: Mfn, flags: u64) -> Result<u64, BuildError> {
    Ok(machine_address(mfn)? | flags)
}

fn machine_address(mfn: Mfn) -> Result<u64, BuildError> {
    if mfn.0 >= MAX_MFN {
        return Err(BuildError::BadMfn(mfn));
    }
    Ok(mfn.paddr())
}

/// Copies `bytes` to guest pseudo-physical address `gpa`; the layout keeps it inside the
/// domain's pages.
fn write_phys(mem: &mut impl BuildMemory, gpa: u64, bytes: &[u8]) {
    let mut gpa = gpa;
    let mut rest = bytes;
    while !rest.is_empty() {
        let offset = (gpa % PAGE_SIZE) as usize;
        let n = rest.len().min(PAGE_BYTES - offset);
        let (head, tail) = rest.split_at(n);
        mem.page_mut(gpa / PAGE_SIZE)[offset..offset + n].copy_from_slice(head);
        gpa += n as u64;
        rest = tail;
    }
}

fn pfn(v_start: u64, va: u64) -> u64 {
    va.wrapping_sub(v_start) / PAGE_SIZE
}

fn round_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

/// How many `1 << shift`-byte regions `[first, last]` touches.
fn span(first: u64, last: u64, shift: u32) -> u64 {
    (last >> shift) - (first >> shift) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::elf::testimg::{note_u32, note_u64, Seg, Spec};
    use crate::domain::elf::{PF_R, PF_W, PF_X};
    use core::mem::offset_of;
    use hypercall_abi::elfnote::XenElfnote;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const MFN_OFFSET: u64 = 0x8_0000;
    const GARBAGE: u8 = 0xa5;
    const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// Pages appear on first use, full of garbage, so the tests see what the builder zeroed
    /// and which pages it touched. Machine frame = pfn + MFN_OFFSET.
    #[derive(Debug)]
    struct FakeMem {
        nr_pages: u64,
        pages: BTreeMap<u64, Box<[u8; PAGE_BYTES]>>,
    }

    impl FakeMem {
        fn new(nr_pages: u64) -> Self {
            FakeMem {
                nr_pages,
                pages: BTreeMap::new(),
            }
        }

        fn page(&self, pfn: u64) -> &[u8; PAGE_BYTES] {
            self.pages
                .get(&pfn)
                .unwrap_or_else(|| panic!("pfn {pfn:#x} never written"))
        }

        fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
            (0..len as u64)
                .map(|i| self.page((gpa + i) / PAGE_SIZE)[((gpa + i) % PAGE_SIZE) as usize])
                .collect()
        }

        fn read_u64(&self, gpa: u64) -> u64 {
            u64::from_le_bytes(self.read(gpa, 8).try_into().unwrap())
        }

        fn entry(&self, table_mfn: u64, index: u64) -> u64 {
            self.read_u64((table_mfn - MFN_OFFSET) * PAGE_SIZE + index * 8)
        }
    }

    impl BuildMemory for FakeMem {
        fn nr_pages(&self) -> u64 {
            self.nr_pages
        }

        fn mfn(&self, pfn: u64) -> Mfn {
            assert!(pfn < self.nr_pages, "mfn of pfn {pfn:#x} out of range");
            Mfn(pfn + MFN_OFFSET)
        }

        fn page_mut(&mut self, pfn: u64) -> &mut [u8; PAGE_BYTES] {
            assert!(pfn < self.nr_pages, "pfn {pfn:#x} out of range");
            self.pages
                .entry(pfn)
                .or_insert_with(|| Box::new([GARBAGE; PAGE_BYTES]))
        }
    }

    const HV_SLOTS: [u64; HV_L4_SLOTS] = {
        let mut s = [0; HV_L4_SLOTS];
        let mut i = 0;
        while i < HV_L4_SLOTS {
            s[i] = 0x1234_5000 + (i as u64) * 0x1000 + 0x63;
            i += 1;
        }
        s
    };

    fn params(nr_pages: u64) -> BuildParams<'static> {
        BuildParams {
            domid: 1,
            nr_pages,
            max_pages: nr_pages,
            flags: SIF_PRIVILEGED | SIF_INITDOMAIN,
            cmdline: "console=hvc0 loglevel=9",
            module: None,
            shared_info_mfn: Mfn(0x4321),
            store: Some(RingPage {
                mfn: Mfn(0x777),
                evtchn: 3,
            }),
            console: Some(RingPage {
                mfn: Mfn(0x778),
                evtchn: 4,
            }),
            hv_l4_slots: &HV_SLOTS,
        }
    }

    fn image(spec: &Spec) -> XenImage<'static> {
        XenImage::parse(Vec::leak(spec.build())).unwrap()
    }

    fn build(spec: &Spec, p: &BuildParams<'_>) -> Result<(PvBuilt, FakeMem), BuildError> {
        let img = image(spec);
        let mut mem = FakeMem::new(p.nr_pages);
        build_pv(&img, &mut mem, p).map(|b| (b, mem))
    }

    /// Walks the guest page tables from the L4; returns the leaf entry and the AND of the
    /// upper entries' flags, or `None` where a level is not present.
    fn walk(mem: &FakeMem, l4_mfn: Mfn, va: u64) -> Option<(u64, u64)> {
        let mut table = l4_mfn.0;
        let mut upper = u64::MAX;
        for shift in [39, 30, 21] {
            let e = mem.entry(table, (va >> shift) & 511);
            if e & PTE_PRESENT == 0 {
                return None;
            }
            upper &= e & 0xfff;
            table = (e & ADDR_MASK) >> 12;
        }
        let e = mem.entry(table, (va >> 12) & 511);
        (e & PTE_PRESENT != 0).then_some((e, upper))
    }

    /// Every page of `[v_start, v_end)` maps its own frame, user-accessible, writable except
    /// the page-table frames; nothing else in the guest half is mapped; hv's slots are copied.
    fn check_page_tables(mem: &FakeMem, b: &PvBuilt) {
        let l = &b.layout;
        assert_eq!(b.l4_mfn, Mfn(b.l4_pfn + MFN_OFFSET));
        for pfn in 0..l.mapped_pages() {
            let va = l.v_start + pfn * PAGE_SIZE;
            let (leaf, upper) = walk(mem, b.l4_mfn, va).unwrap_or_else(|| panic!("{va:#x}"));
            assert_eq!(leaf & ADDR_MASK, (pfn + MFN_OFFSET) << 12, "{va:#x}");
            assert_eq!(upper, UPPER_PROT, "{va:#x}");
            let expect = if b.pt_frames.contains(&pfn) {
                L1_PROT & !PTE_RW
            } else {
                L1_PROT
            };
            assert_eq!(leaf & !ADDR_MASK, expect, "{va:#x}");
        }
        assert!(walk(mem, b.l4_mfn, l.v_end).is_none());
        if l.v_start != 0 {
            assert!(walk(mem, b.l4_mfn, l.v_start - PAGE_SIZE).is_none());
        }
        let l4 = mem.page(b.l4_pfn);
        let used = (l.v_start >> 39) & 511..=((l.v_end - 1) >> 39) & 511;
        for slot in 0..512u64 {
            let e = u64::from_le_bytes(l4[slot as usize * 8..][..8].try_into().unwrap());
            let hv = slot as usize >= HV_L4_FIRST_SLOT
                && (slot as usize) < HV_L4_FIRST_SLOT + HV_L4_SLOTS;
            if hv {
                assert_eq!(e, HV_SLOTS[slot as usize - HV_L4_FIRST_SLOT]);
            } else if !used.contains(&slot) {
                assert_eq!(e, 0, "L4 slot {slot}");
            }
        }
        // Exactly the page-table frames are tables: count them from the walk.
        let frames = 1 + l.nr_l3 + l.nr_l2 + l.nr_l1;
        assert_eq!(b.pt_frames.end - b.pt_frames.start, frames);
        assert_eq!(l.page_tables.end - l.page_tables.start, frames * PAGE_SIZE);
    }

    fn si_u64(mem: &FakeMem, b: &PvBuilt, offset: usize) -> u64 {
        mem.read_u64(b.start_info_pfn * PAGE_SIZE + offset as u64)
    }

    fn si_u32(mem: &FakeMem, b: &PvBuilt, offset: usize) -> u32 {
        si_u64(mem, b, offset) as u32
    }

    #[test]
    fn layout_matches_xen_for_the_small_guest() {
        let (b, mem) = build(&Spec::pv_0x100000(), &params(16384)).unwrap();
        let l = &b.layout;
        assert_eq!((l.v_start, l.v_end), (0, 0x400000));
        assert_eq!(l.kernel, 0x100000..0x111000);
        assert_eq!(l.module_va, None);
        assert_eq!(l.module_pfns, None);
        assert_eq!(l.p2m, 0x111000..0x131000);
        assert_eq!(l.start_info, 0x131000);
        assert_eq!(l.page_tables, 0x132000..0x137000);
        assert_eq!(l.stack, 0x137000);
        assert_eq!((l.nr_l3, l.nr_l2, l.nr_l1), (1, 1, 2));
        assert_eq!(l.nr_pt_frames(), 5);
        assert_eq!(b.entry, 0x100000);
        assert_eq!(b.stack_top, 0x138000);
        assert_eq!(b.start_info_va, 0x131000);
        assert_eq!(b.start_info_pfn, 0x131);
        assert_eq!(b.l4_pfn, 0x132);
        assert_eq!(b.pt_frames, 0x132..0x137);
        assert_eq!(b.hypercall_page_pfn, Some(0x102));
        assert_eq!(b.kernel_pfns, 0x100..0x111);
        check_page_tables(&mem, &b);
    }

    #[test]
    fn kernel_is_loaded_and_everything_else_zeroed() {
        let spec = Spec::pv_0x100000();
        let (b, mem) = build(&spec, &params(16384)).unwrap();
        let text = mem.read(0x100000, 0x9000);
        // The hypercall page (0x102000) overwrote part of the text.
        assert_eq!(text[..0x2000], spec.segs[0].data[..0x2000]);
        assert_eq!(text[0x3000..], spec.segs[0].data[0x3000..]);
        assert_eq!(mem.read(0x109000, 0x3000), spec.segs[1].data);
        assert!(mem.read(0x10c000, 0x5000).iter().all(|&x| x == 0), "bss");
        assert!(
            mem.read(0, 0x100000).iter().all(|&x| x == 0),
            "below the kernel"
        );
        assert!(
            mem.read(0x137000, 0x400000 - 0x137000)
                .iter()
                .all(|&x| x == 0),
            "stack, slack"
        );
        // Only the mapped region and the p2m (inside it) were touched.
        assert_eq!(
            mem.pages.keys().copied().max(),
            Some(b.layout.mapped_pages() - 1)
        );
    }

    #[test]
    fn p2m_lists_every_frame() {
        let (b, mem) = build(&Spec::pv_0x100000(), &params(16384)).unwrap();
        for pfn in 0..16384 {
            assert_eq!(mem.read_u64(b.layout.p2m.start + pfn * 8), pfn + MFN_OFFSET);
        }
    }

    #[test]
    fn hypercall_page_has_xen_stubs() {
        let (b, mem) = build(&Spec::pv_0x100000(), &params(16384)).unwrap();
        let page = mem.page(b.hypercall_page_pfn.unwrap());
        let mut expect = [0xccu8; PAGE_BYTES];
        for n in 0..128usize {
            let slot = &mut expect[n * 32..n * 32 + 32];
            if n == 23 {
                slot[..11]
                    .copy_from_slice(&[0x51, 0x41, 0x53, 0x50, 0xb8, 23, 0, 0, 0, 0x0f, 0x05]);
            } else {
                slot[..4].copy_from_slice(&[0x51, 0x41, 0x53, 0xb8]);
                slot[4..8].copy_from_slice(&(n as u32).to_le_bytes());
                slot[8..14].copy_from_slice(&[0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3]);
            }
        }
        assert_eq!(page[..], expect[..]);
        assert_eq!(
            page[18 * 32..18 * 32 + 14],
            [0x51, 0x41, 0x53, 0xb8, 18, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3]
        );
        assert_ne!(
            page[0], 0xc3,
            "guests treat a leading ret as an unfilled page"
        );
    }

    #[test]
    fn start_info_fields() {
        let (b, mem) = build(&Spec::pv_0x100000(), &params(16384)).unwrap();
        assert_eq!(mem.read(b.start_info_pfn * PAGE_SIZE, 32), {
            let mut m = b"xen-3.0-x86_64p".to_vec(); // the test image says PAE_MODE "yes"
            m.resize(32, 0);
            m
        });
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, nr_pages)), 16384);
        assert_eq!(
            si_u64(&mem, &b, offset_of!(StartInfo, shared_info)),
            0x4321000
        );
        assert_eq!(si_u32(&mem, &b, offset_of!(StartInfo, flags)), 3);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, store_mfn)), 0x777);
        assert_eq!(si_u32(&mem, &b, offset_of!(StartInfo, store_evtchn)), 3);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, console)), 0x778);
        assert_eq!(si_u32(&mem, &b, offset_of!(StartInfo, console) + 8), 4);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, pt_base)), 0x132000);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, nr_pt_frames)), 5);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, mfn_list)), 0x111000);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, mod_start)), 0);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, mod_len)), 0);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, first_p2m_pfn)), 0);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, nr_p2m_frames)), 0);
        let cmd = mem.read(b.start_info_pfn * PAGE_SIZE + 128, MAX_GUEST_CMDLINE);
        assert_eq!(&cmd[..24], b"console=hvc0 loglevel=9\0");
        assert!(cmd[24..].iter().all(|&x| x == 0));
        // The rest of the page past start_info is zero.
        let end = size_of::<StartInfo>();
        assert!(mem.page(b.start_info_pfn)[end..].iter().all(|&x| x == 0));

        // No rings: zeros.
        let p = BuildParams {
            store: None,
            console: None,
            flags: 0,
            ..params(16384)
        };
        let (b, mem) = build(&Spec::pv_0x100000(), &p).unwrap();
        assert_eq!(si_u32(&mem, &b, offset_of!(StartInfo, flags)), 0);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, store_mfn)), 0);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, console)), 0);
        assert_eq!(si_u32(&mem, &b, offset_of!(StartInfo, console) + 8), 0);
    }

    #[test]
    fn long_cmdline_is_truncated_to_1023_bytes() {
        let long = "a".repeat(2000);
        let p = BuildParams {
            cmdline: &long,
            ..params(16384)
        };
        let (b, mem) = build(&Spec::pv_0x100000(), &p).unwrap();
        let cmd = mem.read(b.start_info_pfn * PAGE_SIZE + 128, MAX_GUEST_CMDLINE);
        assert!(cmd[..1023].iter().all(|&x| x == b'a'));
        assert_eq!(cmd[1023], 0);
    }

    #[test]
    fn module_is_placed_after_the_kernel_and_mapped() {
        let module: Vec<u8> = (0..10000u32).map(|i| (i % 251) as u8 + 1).collect();
        let p = BuildParams {
            module: Some(&module),
            ..params(16384)
        };
        let (b, mem) = build(&Spec::pv_0x100000(), &p).unwrap();
        let l = &b.layout;
        assert_eq!(l.module_va, Some(0x111000..0x111000 + 10000));
        assert_eq!(l.module_pfns, Some(0x111..0x114));
        assert_eq!(l.p2m, 0x114000..0x134000);
        assert_eq!(l.start_info, 0x134000);
        assert_eq!(l.page_tables, 0x135000..0x13a000);
        assert_eq!(mem.read(0x111000, 10000), module);
        assert!(mem
            .read(0x111000 + 10000, 0x114000 - 0x111000 - 10000)
            .iter()
            .all(|&x| x == 0));
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, mod_start)), 0x111000);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, mod_len)), 10000);
        check_page_tables(&mem, &b);

        // An empty module is no module.
        let p = BuildParams {
            module: Some(&[]),
            ..params(16384)
        };
        let (b, _) = build(&Spec::pv_0x100000(), &p).unwrap();
        assert_eq!(b.layout.p2m.start, 0x111000);
    }

    #[test]
    fn mod_start_pfn_module_is_unmapped_after_the_mapping() {
        let module = vec![0x5au8; 9000];
        let p = BuildParams {
            module: Some(&module),
            ..params(16384)
        };
        let spec = Spec::pv_0x100000().with_note(note_u32(XenElfnote::ModStartPfn, 1));
        let (b, mem) = build(&spec, &p).unwrap();
        let l = &b.layout;
        assert_eq!(l.module_va, None);
        assert_eq!(l.module_pfns, Some(0x400..0x403));
        assert_eq!(l.p2m.start, 0x111000);
        assert_eq!(mem.read(0x400000, 9000), module);
        assert!(mem
            .read(0x400000 + 9000, 3 * 4096 - 9000)
            .iter()
            .all(|&x| x == 0));
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, mod_start)), 0x400);
        assert_eq!(si_u64(&mem, &b, offset_of!(StartInfo, mod_len)), 9000);
        assert_eq!(
            si_u32(&mem, &b, offset_of!(StartInfo, flags)),
            3 | SIF_MOD_START_PFN
        );
        assert!(walk(&mem, b.l4_mfn, 0x400000).is_none());
        // It must fit too.
        let p = BuildParams {
            module: Some(&module),
            ..params(1026)
        };
        assert_eq!(
            build(&spec, &p).unwrap_err(),
            BuildError::TooLarge {
                needed: 1027,
                nr_pages: 1026
            }
        );
    }

    #[test]
    fn image_too_large_for_the_domain() {
        assert_eq!(
            build(&Spec::pv_0x100000(), &params(1000)).unwrap_err(),
            BuildError::TooLarge {
                needed: 1024,
                nr_pages: 1000
            }
        );
        // Exactly enough: 4 MiB.
        let (b, mem) = build(&Spec::pv_0x100000(), &params(1024)).unwrap();
        assert_eq!(b.layout.p2m, 0x111000..0x113000);
        assert_eq!(b.layout.page_tables, 0x114000..0x119000);
        check_page_tables(&mem, &b);
    }

    #[test]
    fn high_kernel_mapped_from_virt_base() {
        // Linux-like: linked at 0xffffffff80200000, loaded at physical 0x200000.
        let mut spec = Spec::pv_0x100000().without_note(XenElfnote::HypercallPage);
        for s in &mut spec.segs {
            s.paddr += 0x100000;
            s.vaddr = s.paddr + 0xffff_ffff_8000_0000;
        }
        spec.entry = 0xffff_ffff_8020_0000;
        let spec = spec
            .with_note(note_u64(XenElfnote::VirtBase, 0xffff_ffff_8000_0000))
            .with_note(note_u64(XenElfnote::HypercallPage, 0xffff_ffff_8020_1000));
        let (b, mem) = build(&spec, &params(4096)).unwrap();
        assert_eq!(b.layout.v_start, 0xffff_ffff_8000_0000);
        assert_eq!(b.kernel_pfns, 0x200..0x211);
        assert_eq!(b.hypercall_page_pfn, Some(0x201));
        assert_eq!(mem.read(0x209000, 0x3000), spec.segs[1].data);
        check_page_tables(&mem, &b);
    }

    #[test]
    fn mapping_across_a_512_gib_boundary() {
        let mut spec = Spec::pv_0x100000().without_note(XenElfnote::HypercallPage);
        for s in &mut spec.segs {
            s.paddr -= 0x100000;
        }
        spec.entry = 0x7f_ffff_f000;
        let spec = spec.with_note(note_u64(XenElfnote::VirtBase, 0x7f_ffff_f000));
        let (b, mem) = build(&spec, &params(2048)).unwrap();
        let l = &b.layout;
        assert_eq!(l.v_start, 0x7f_ffff_f000);
        assert_eq!((l.nr_l3, l.nr_l2), (2, 2));
        assert_eq!(b.kernel_pfns, 0..0x11);
        check_page_tables(&mem, &b);
    }

    #[test]
    fn layouts_outside_the_guest_range() {
        let at = |base: u64| {
            let mut spec = Spec::pv_0x100000().without_note(XenElfnote::HypercallPage);
            for s in &mut spec.segs {
                s.paddr = s.paddr - 0x100000 + base;
                s.vaddr = s.paddr;
            }
            spec.entry = base;
            spec.with_note(note_u64(XenElfnote::VirtBase, base))
                .with_note(note_u64(XenElfnote::PaddrOffset, base))
        };
        // Fits exactly below the canonical hole.
        let (b, _) = build(&at(0x7fff_fff0_0000), &params(2048)).unwrap();
        assert_eq!(b.layout.v_end, 1 << 47);
        // The 512 KiB slack pushes v_end past it.
        assert_eq!(
            build(&at(0x7fff_fff8_0000), &params(2048)).unwrap_err(),
            BuildError::BadRange {
                start: 0x7fff_fff8_0000,
                end: 0x8000_0040_0000
            }
        );
        // Rounding v_end up runs off the top of the address space.
        assert_eq!(
            build(&at(0xffff_ffff_ffe0_0000), &params(2048)).unwrap_err(),
            BuildError::AddressOverflow
        );
    }

    #[test]
    fn parameter_errors() {
        let spec = Spec::pv_0x100000();
        let img = image(&spec);
        let mut mem = FakeMem::new(2048);
        let p = params(2048);
        let err = build_pv(
            &img,
            &mut mem,
            &BuildParams {
                nr_pages: 2047,
                ..p
            },
        )
        .unwrap_err();
        assert_eq!(
            err,
            BuildError::PageCountMismatch {
                params: 2047,
                memory: 2048
            }
        );
        let err = build_pv(
            &img,
            &mut mem,
            &BuildParams {
                max_pages: 2000,
                ..p
            },
        )
        .unwrap_err();
        assert_eq!(
            err,
            BuildError::AboveMaxPages {
                nr_pages: 2048,
                max_pages: 2000
            }
        );
        let err = build_pv(&img, &mut mem, &BuildParams { flags: 4, ..p }).unwrap_err();
        assert_eq!(err, BuildError::BadFlags(4));
        let bad = BuildParams {
            shared_info_mfn: Mfn(MAX_MFN),
            ..p
        };
        assert_eq!(
            build_pv(&img, &mut mem, &bad).unwrap_err(),
            BuildError::BadMfn(Mfn(MAX_MFN))
        );

        let pvh = Spec {
            entry: 0x100000,
            segs: vec![Seg::new(0x100000, 0x2000, 0x3000, PF_R | PF_X | PF_W)],
            notes: vec![note_u32(XenElfnote::Phys32Entry, 0x100000)],
            notes_in_section: false,
        };
        let err = build_pv(&image(&pvh), &mut mem, &p).unwrap_err();
        assert_eq!(err, BuildError::NotPv);

        for e in [
            err,
            BuildError::TooLarge {
                needed: 1,
                nr_pages: 0,
            },
            BuildError::BadRange { start: 0, end: 1 },
            BuildError::AddressOverflow,
            BuildError::BadMfn(Mfn(1)),
        ] {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "{s}");
        }
    }

    #[test]
    fn machine_frames_beyond_52_bits_are_refused() {
        struct Wide(FakeMem);
        impl BuildMemory for Wide {
            fn nr_pages(&self) -> u64 {
                self.0.nr_pages()
            }
            fn mfn(&self, pfn: u64) -> Mfn {
                Mfn(pfn + MAX_MFN)
            }
            fn page_mut(&mut self, pfn: u64) -> &mut [u8; PAGE_BYTES] {
                self.0.page_mut(pfn)
            }
        }
        let mut mem = Wide(FakeMem::new(2048));
        let err = build_pv(&image(&Spec::pv_0x100000()), &mut mem, &params(2048)).unwrap_err();
        assert!(matches!(err, BuildError::BadMfn(_)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any image the parser accepts builds or fails cleanly, and a built one maps
        /// exactly its bootstrap region.
        #[test]
        fn accepted_images_build_without_panicking(
            edits in proptest::collection::vec((0usize..0x400, any::<u8>()), 1..6),
            module_len in 0usize..20000,
            mod_start_pfn in any::<bool>(),
        ) {
            let mut spec = Spec::pv_0x100000();
            spec.segs.push(Seg::new(0x120000, 0x100, 0x3000, PF_R | PF_W));
            if mod_start_pfn {
                spec = spec.with_note(note_u32(XenElfnote::ModStartPfn, 1));
            }
            let mut bytes = spec.build();
            for (pos, byte) in edits {
                bytes[pos] = byte;
            }
            if let Ok(img) = XenImage::parse(&bytes) {
                let module = vec![7u8; module_len];
                let p = BuildParams { module: Some(&module), ..params(1100) };
                let mut mem = FakeMem::new(1100);
                if let Ok(b) = build_pv(&img, &mut mem, &p) {
                    check_page_tables(&mem, &b);
                }
            }
        }
    }
}
