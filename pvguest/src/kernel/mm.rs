//! Memory: the frame allocator over the domain's unused frames, and page-table management
//! through Xen's interfaces. Page-table frames are never writable in any mapping (Xen would
//! refuse to validate them); the kernel reads them through a read-only scratch mapping and
//! changes them with `mmu_update`.

use alloc::format;
use alloc::string::String;
use core::ptr::addr_of;

use hypercall_abi::xen::UVMF_INVLPG;
use hypercall_abi::xen::{MmuUpdate, MmuUpdateType, MmuextCmd, MmuextOp, StartInfo, DOMID_SELF};
use pvguest::frames::FrameAllocator;
use pvguest::paging::{
    entry_maddr, pte, pte_mfn, table_indices, PTE_LARGE, PTE_PRESENT, PTE_USER, PTE_WRITABLE,
};

use super::{entry, pv};

/// A frame of the domain: its guest frame number and the machine frame behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub pfn: u64,
    pub mfn: u64,
}

/// The kernel's memory state.
#[derive(Debug)]
pub struct Mm {
    frames: FrameAllocator,
    /// Xen's P2M list: `nr_pages` machine frame numbers.
    mfn_list: *const u64,
    nr_pages: u64,
    /// The kernel's top-level table (the bootstrap L4).
    kernel_root: u64,
}

fn page_up(addr: u64) -> u64 {
    addr.div_ceil(4096)
}

impl Mm {
    /// Takes over the frames the start of day left unused. `si_addr` is start_info's address
    /// and `boot_rsp` the stack pointer Xen entered with; everything below the highest of
    /// the builder's structures stays untouched.
    pub fn new(si: &StartInfo, si_addr: u64, boot_rsp: u64) -> Result<Mm, String> {
        let ends = [
            addr_of!(entry::__image_end) as u64,
            si_addr + 4096,
            si.pt_base + si.nr_pt_frames * 4096,
            si.mfn_list + si.nr_pages * 8,
            boot_rsp,
        ];
        let low = ends.iter().map(|&e| page_up(e)).max().unwrap_or(0);
        if low >= si.nr_pages {
            return Err(format!(
                "builder structures end at frame {low:#x}, beyond nr_pages {:#x}",
                si.nr_pages
            ));
        }
        let mut mm = Mm {
            frames: FrameAllocator::new(low, si.nr_pages),
            mfn_list: si.mfn_list as *const u64,
            nr_pages: si.nr_pages,
            kernel_root: 0,
        };
        mm.kernel_root = mm.mfn(si.pt_base >> 12)?;
        Ok(mm)
    }

    /// The machine frame behind guest frame `pfn`.
    pub fn mfn(&self, pfn: u64) -> Result<u64, String> {
        if pfn >= self.nr_pages {
            return Err(format!("pfn {pfn:#x} beyond nr_pages {:#x}", self.nr_pages));
        }
        // SAFETY: the P2M list has `nr_pages` entries and is mapped for the kernel's life.
        Ok(unsafe { self.mfn_list.add(pfn as usize).read_volatile() })
    }

    /// The kernel's top-level page-table frame.
    pub fn kernel_root(&self) -> u64 {
        self.kernel_root
    }

    /// Frames left.
    pub fn frames_available(&self) -> u64 {
        self.frames.available()
    }

    /// A fresh frame, cleared by Xen (`MMUEXT_CLEAR_PAGE`) and not mapped anywhere.
    pub fn alloc_frame(&mut self) -> Result<Frame, String> {
        let pfn = self.frames.alloc().ok_or("out of frames")?;
        let frame = Frame {
            pfn,
            mfn: self.mfn(pfn)?,
        };
        // The builder maps the first frames at virtual = pfn * 4096; a frame from there must
        // lose that writable mapping before it can become a page table.
        if let Some(entry) = self.leaf_entry(self.kernel_root, pfn << 12)? {
            if entry & PTE_PRESENT != 0 {
                update_va_mapping(pfn << 12, 0, UVMF_INVLPG)?;
            }
        }
        mmuext(MmuextOp::new(MmuextCmd::ClearPage, frame.mfn, 0))?;
        Ok(frame)
    }

    /// Gives `frame` back (it must be mapped nowhere).
    pub fn free_frame(&mut self, frame: Frame) -> Result<(), String> {
        self.frames
            .free(frame.pfn)
            .map_err(|e| format!("bad free of pfn {:#x}", e.0))
    }

    /// Entry `index` of the page table in machine frame `table`.
    pub fn read_entry(&self, table: u64, index: usize) -> Result<u64, String> {
        let va = addr_of!(entry::scratch_page) as u64;
        update_va_mapping(va, pte(table, PTE_PRESENT | PTE_USER), UVMF_INVLPG)?;
        // SAFETY: the scratch page now maps `table` read-only; index < 512 keeps the read
        // inside it.
        Ok(unsafe { (va as *const u64).add(index % 512).read_volatile() })
    }

    /// The leaf (L1) entry for `va` under `root`, or `None` if an upper level is absent.
    pub fn leaf_entry(&self, root: u64, va: u64) -> Result<Option<u64>, String> {
        match self.leaf_entry_maddr(root, va)? {
            Some(maddr) => self
                .read_entry(maddr >> 12, (maddr & 0xfff) as usize / 8)
                .map(Some),
            None => Ok(None),
        }
    }

    /// The machine address of the leaf (L1) entry for `va` under `root`, or `None` if an
    /// upper level is absent.
    pub fn leaf_entry_maddr(&self, root: u64, va: u64) -> Result<Option<u64>, String> {
        let idx = table_indices(va);
        let mut table = root;
        for &i in &idx[..3] {
            let e = self.read_entry(table, i)?;
            if e & PTE_PRESENT == 0 {
                return Ok(None);
            }
            if e & PTE_LARGE != 0 {
                return Err(format!("large page above {va:#x}"));
            }
            table = pte_mfn(e);
        }
        Ok(Some(entry_maddr(table, idx[3])))
    }

    /// Maps `va` under `root` to `leaf` (a complete L1 entry, 0 to unmap), creating missing
    /// intermediate tables, all through `mmu_update`.
    pub fn map(&mut self, root: u64, va: u64, leaf: u64) -> Result<(), String> {
        let idx = table_indices(va);
        let mut table = root;
        for &i in &idx[..3] {
            let e = self.read_entry(table, i)?;
            if e & PTE_LARGE != 0 {
                return Err(format!("large page above {va:#x}"));
            }
            table = if e & PTE_PRESENT != 0 {
                pte_mfn(e)
            } else {
                let next = self.alloc_frame()?;
                mmu_update(&[MmuUpdate {
                    ptr: entry_maddr(table, i) | MmuUpdateType::NormalPtUpdate as u64,
                    val: pte(next.mfn, PTE_PRESENT | PTE_WRITABLE | PTE_USER),
                }])?;
                next.mfn
            };
        }
        mmu_update(&[MmuUpdate {
            ptr: entry_maddr(table, idx[3]) | MmuUpdateType::NormalPtUpdate as u64,
            val: leaf,
        }])
    }
}

/// `update_va_mapping` in the current address space.
pub fn update_va_mapping(va: u64, entry: u64, flags: u64) -> Result<(), String> {
    // SAFETY: callers change only mappings of pages the kernel owns and no live Rust
    // reference points into.
    unsafe { pv::hypercalls().update_va_mapping(va, entry, flags) }
        .map(|_| ())
        .map_err(|e| format!("update_va_mapping({va:#x}, {entry:#x}): {e}"))
}

/// `mmu_update` of `reqs`; all must succeed.
pub fn mmu_update(reqs: &[MmuUpdate]) -> Result<(), String> {
    let mut done = 0u32;
    // SAFETY: callers only change entries of page tables the kernel built or owns, for
    // addresses no live Rust reference points into.
    unsafe { pv::hypercalls().mmu_update(reqs, Some(&mut done), DOMID_SELF) }
        .map_err(|e| format!("mmu_update({:#x?}): {e}", reqs.first()))?;
    if done as usize != reqs.len() {
        return Err(format!("mmu_update did {done} of {}", reqs.len()));
    }
    Ok(())
}

/// One `mmuext_op`.
pub fn mmuext(op: MmuextOp) -> Result<(), String> {
    let mut done = 0u32;
    // SAFETY: callers use operations on frames the kernel owns (clear, pin, base pointer
    // for user mode, flushes), none of which invalidates memory Rust code refers to.
    unsafe { pv::hypercalls().mmuext_op(&[op], Some(&mut done), DOMID_SELF) }
        .map_err(|e| format!("mmuext_op(cmd {}, {:#x}): {e}", op.cmd, op.arg1))?;
    if done != 1 {
        return Err(format!("mmuext_op cmd {} not done", op.cmd));
    }
    Ok(())
}
