//! Grant tables on the machine: the one [`GrantTables`] every domain shares, the environment
//! its portable core works through (shared entries and frame copies over the direct map,
//! frame references through the PV page-type checker), the domain's table at build and at
//! death, and the decoding of `grant_table_op`.
//!
//! Lock order: [`FRAMES`], then the grant tables, everywhere (the environment's frame
//! references need the frame table while the grant state is held).
//!
//! Calls are not preempted: a call carries at most [`MAX_OPS`] ops (`-EINVAL` beyond), each
//! bounded by a page of work.

use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::errno::Errno;
use hypercall_abi::grant_table::{
    GnttabCopy, GnttabGetVersion, GnttabMapGrantRef, GnttabOp, GnttabQuerySize, GnttabSetVersion,
    GnttabSetupTable, GnttabUnmapGrantRef, GrantEntryV1, GrantStatus, GRANT_ENTRIES_V1_PER_PAGE,
    GTF_PERMIT_ACCESS, GTF_READONLY,
};
use hypercall_abi::{DomId, PAGE_SIZE};
use log::debug;
use spin::Mutex;

use super::mmu::{flush_all, DirectMem};
use super::paging::{hv_l4_slots, phys_to_virt};
use super::start::FRAMES;
use super::vmx::{FrameNumber, GrantPhysmapError};
use crate::domain::state::{Domain, INVALID_MFN};
use crate::gnttab::{
    FrameRefs, FrameRefused, GnttabError, GrantConfig, GrantTables, GrantUnmap, GuestFrames,
    PageCopy, Released, SharedEntries, GRANT_TABLE_VERSION,
};
use crate::mm::guest_access::{field, read_obj, write_obj, Fault, GuestMem, Pod};
use crate::mm::pv::{PvError, PvMm};
use crate::mm::{FrameAllocator, Mfn};

/// Most ops one call may carry (bounds the time spent in one call; Linux batches far fewer).
const MAX_OPS: u64 = 4096;

/// Unmaps per TLB flush (Xen's `GNTTAB_UNMAP_BATCH_SIZE`).
const UNMAP_BATCH: usize = 32;

/// Copies read from the guest per step (bounds hv's stack use).
const COPY_BATCH: usize = 16;

/// Every domain's grant state; created with the first domain.
static GRANT_TABLES: Mutex<Option<GrantTables>> = Mutex::new(None);

/// What the grant-table core works through, over the frame table the caller has locked.
struct Env<'a, 'f> {
    pm: PvMm<'a, 'f, DirectMem>,
}

impl<'a, 'f> Env<'a, 'f> {
    fn new(frames: &'a mut FrameAllocator<'f>, direct: &'a mut DirectMem) -> Self {
        Env {
            pm: PvMm::new(frames, direct, hv_l4_slots()),
        }
    }
}

/// The 32-bit word at byte `offset` (0 or 4) of entry `index` of grant-table frame `frame`.
///
/// # Safety
/// `frame` must be a RAM frame in the frame table (so in the direct map) that stays allocated
/// while the reference is used: a table frame of a domain whose table is live.
unsafe fn entry_word(frame: Mfn, index: usize, offset: usize) -> &'static AtomicU32 {
    let entry = index % GRANT_ENTRIES_V1_PER_PAGE * core::mem::size_of::<GrantEntryV1>();
    // SAFETY: the caller guarantees the frame is direct-mapped RAM; the word lies within it
    // (entry below 512 * 8, offset 0 or 4) and is 4-byte aligned. The guest writes the same
    // memory, but every hv access to it is atomic.
    unsafe { AtomicU32::from_ptr(phys_to_virt(frame.paddr()).add(entry + offset % 8).cast()) }
}

impl SharedEntries for Env<'_, '_> {
    fn read_entry(&self, frame: Mfn, index: usize) -> GrantEntryV1 {
        // SAFETY: the grant tables name only their live table frames, allocated to them.
        let (header, frame_field) = unsafe {
            (
                entry_word(frame, index, 0).load(Ordering::SeqCst),
                entry_word(frame, index, 4).load(Ordering::SeqCst),
            )
        };
        GrantEntryV1 {
            // The halves of the header (truncation intended).
            flags: header as u16,
            domid: (header >> 16) as u16,
            frame: frame_field,
        }
    }

    fn cmpxchg_header(&mut self, frame: Mfn, index: usize, expected: u32, new: u32) -> u32 {
        // SAFETY: as in `read_entry`.
        let header = unsafe { entry_word(frame, index, 0) };
        match header.compare_exchange(expected, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(found) | Err(found) => found,
        }
    }

    fn clear_flags(&mut self, frame: Mfn, index: usize, bits: u16) {
        // SAFETY: as in `read_entry`. The flags are the header's low half, so clearing them in
        // the 32-bit word leaves the domid alone.
        unsafe { entry_word(frame, index, 0) }.fetch_and(!u32::from(bits), Ordering::SeqCst);
    }
}

impl GuestFrames for Env<'_, '_> {
    /// PV: the guest's frame numbers are machine frames; HVM: guest frames, translated
    /// through the domain's EPT. Either way `take_ref` then checks the owner.
    fn gfn_to_mfn(&self, domid: DomId, gfn: u64) -> Option<Mfn> {
        match super::vmx::frame_number(domid, gfn) {
            FrameNumber::Machine => Some(Mfn(gfn)),
            FrameNumber::Guest(mfn) => Some(mfn),
            FrameNumber::Unbacked => None,
        }
    }
}

impl FrameRefs for Env<'_, '_> {
    fn take_ref(&mut self, mfn: Mfn, owner: DomId) -> Result<(), FrameRefused> {
        self.pm.take_ref(mfn, owner)
    }
    fn drop_ref(&mut self, mfn: Mfn) -> Result<(), FrameRefused> {
        self.pm.drop_ref(mfn)
    }
    fn take_writable(&mut self, mfn: Mfn, owner: DomId) -> Result<(), FrameRefused> {
        self.pm.take_writable(mfn, owner)
    }
    fn drop_writable(&mut self, mfn: Mfn) -> Result<(), FrameRefused> {
        self.pm.drop_writable(mfn)
    }
    fn alloc_table_frame(&mut self, domid: DomId) -> Option<Mfn> {
        self.pm.alloc_table_frame(domid)
    }
    fn free_if_unused(&mut self, mfn: Mfn, owner: DomId) -> bool {
        self.pm.free_if_unused(mfn, owner)
    }
}

impl PageCopy for Env<'_, '_> {
    fn copy_bytes(&mut self, dst: Mfn, dst_offset: usize, src: Mfn, src_offset: usize, len: usize) {
        let in_page = |offset: usize| offset.checked_add(len).is_some_and(|end| end <= PAGE_SIZE);
        if !in_page(dst_offset) || !in_page(src_offset) {
            // The grant tables check the ranges first; never copy past a frame regardless.
            log::error!("gnttab: copy of {len} bytes beyond a frame refused");
            return;
        }
        // SAFETY: both frames are RAM frames the grant tables hold references on for the
        // copy, so in the direct map and allocated; both ranges lie within their frame;
        // `copy` is a memmove, so the ranges may overlap.
        unsafe {
            core::ptr::copy(
                phys_to_virt(src.paddr()).add(src_offset),
                phys_to_virt(dst.paddr()).add(dst_offset),
                len,
            )
        }
    }
}

/// Gives the newly built domain `domid` its grant table (one zeroed frame, grown by
/// `setup_table`); `privileged` lets it set up and query other domains' tables.
pub fn add_domain(domid: DomId, privileged: bool) -> Result<(), GnttabError> {
    let mut guard = FRAMES.lock();
    let frames = guard.as_mut().ok_or(GnttabError::NoMemory)?;
    let mut direct = DirectMem;
    let mut env = Env::new(frames, &mut direct);
    let config = GrantConfig {
        privileged,
        ..GrantConfig::default()
    };
    GRANT_TABLES
        .lock()
        .get_or_insert_with(GrantTables::new)
        .add_domain(&mut env, domid, config)
}

/// Writes v1 entry `gref` of `domid`'s first table frame as the toolstack does for the
/// reserved entries: `to_domid` may access machine frame `mfn` (read-only if `readonly`).
/// Only for the domain builder, before the domain runs.
pub fn grant_to(
    domid: DomId,
    gref: u32,
    mfn: Mfn,
    to_domid: DomId,
    readonly: bool,
) -> Result<(), GnttabError> {
    let tables = GRANT_TABLES.lock();
    let frame = tables
        .as_ref()
        .and_then(|t| t.table_frames(domid).first().copied())
        .ok_or(GnttabError::NoSuchDomain)?;
    let index = usize::try_from(gref)
        .ok()
        .filter(|&i| i < GRANT_ENTRIES_V1_PER_PAGE)
        .ok_or(GnttabError::BadConfig)?;
    let frame_number = u32::try_from(mfn.0).map_err(|_| GnttabError::BadConfig)?;
    let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
    // SAFETY: `frame` is a live table frame of `domid`'s table, which cannot be freed while
    // the grant tables are locked; the index is within the frame.
    let (header, frame_word) =
        unsafe { (entry_word(frame, index, 0), entry_word(frame, index, 4)) };
    // The frame first: the header makes the entry valid (as a granting guest writes it).
    frame_word.store(frame_number, Ordering::SeqCst);
    header.store(
        u32::from(flags) | u32::from(to_domid) << 16,
        Ordering::SeqCst,
    );
    Ok(())
}

/// Grant-table frame `index` of `domid`'s own table, growing the table to hold it, for an
/// HVM guest's `XENMEM_add_to_physmap` (`XENMAPSPACE_grant_table`): `EINVAL` beyond the
/// domain's `max_grant_frames` (as Xen), `ENOMEM` without memory, `ESRCH` for a domain
/// without a table.
pub fn own_table_frame(domid: DomId, index: u64) -> Result<Mfn, Errno> {
    let nr_frames = index
        .checked_add(1)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(Errno::EINVAL)?;
    let mut guard = FRAMES.lock();
    let frames = guard.as_mut().ok_or(Errno::ENOMEM)?;
    let mut direct = DirectMem;
    let mut env = Env::new(frames, &mut direct);
    let mut tables = GRANT_TABLES.lock();
    let tables = tables.as_mut().ok_or(Errno::ESRCH)?;
    let op = GnttabSetupTable {
        dom: domid,
        nr_frames,
        ..GnttabSetupTable::default()
    };
    match tables.setup_table(&mut env, domid, &op) {
        Ok(frames) => frames.last().copied().ok_or(Errno::EINVAL),
        Err(GrantStatus::BadDomain) => Err(Errno::ESRCH),
        Err(_) => Err(Errno::EINVAL),
    }
}

/// For teardown, with `frames` (the locked frame table) and after the dead domain's page
/// tables are relinquished: releases its mappings of others' grants and its table, keeping
/// its granted frames others still map (see [`GrantTables::release_domain`]).
pub(super) fn release_domain(frames: &mut FrameAllocator<'_>, domid: DomId) -> Option<Released> {
    let mut direct = DirectMem;
    let mut env = Env::new(frames, &mut direct);
    GRANT_TABLES
        .lock()
        .as_mut()?
        .release_domain(&mut env, domid)
}

/// One `grant_table_op(cmd, uop, count)` call from vCPU `vcpu` of `dom`.
///
/// `setup_table`, `query_size`, `set_version` and `get_version` take exactly one op
/// (`-EINVAL` otherwise, as Xen); `map_grant_ref`, `unmap_grant_ref` and `copy` take arrays
/// of up to [`MAX_OPS`] and report each op's status in it. Other commands: `-ENOSYS`. An op
/// that cannot be read or written back: `-EFAULT` (ops before it are done, as in Xen).
pub fn grant_table_op(
    dom: &mut Domain,
    vcpu: usize,
    cmd: u64,
    uop: u64,
    count: u64,
    mem: &mut dyn GuestMem,
) -> Result<i64, Errno> {
    let op = u32::try_from(cmd)
        .ok()
        .and_then(|cmd| GnttabOp::try_from(cmd).ok())
        .ok_or(Errno::ENOSYS)?;
    let single = matches!(
        op,
        GnttabOp::SetupTable | GnttabOp::QuerySize | GnttabOp::SetVersion | GnttabOp::GetVersion
    );
    if (single && count != 1) || count > MAX_OPS {
        return Err(Errno::EINVAL);
    }
    let mut guard = FRAMES.lock();
    let frames = guard.as_mut().ok_or(Errno::ENOMEM)?;
    let mut direct = DirectMem;
    let mut tables = GRANT_TABLES.lock();
    let mut call = Call {
        gt: tables.get_or_insert_with(GrantTables::new),
        env: Env::new(frames, &mut direct),
        caller: dom.id,
        // Mappings go into the address space the vCPU runs in now, as `update_va_mapping`.
        root: dom.vcpus.get(vcpu).and_then(|v| v.pv.active_root()),
        hvm_p2m: dom.hvm.is_some().then_some(dom.p2m.as_slice()),
        mem,
    };
    match op {
        GnttabOp::SetupTable => call.setup_table(uop),
        GnttabOp::QuerySize => call.query_size(uop),
        GnttabOp::SetVersion => call.set_version(uop),
        GnttabOp::GetVersion => call.get_version(uop),
        GnttabOp::MapGrantRef => call.map_grant_refs(uop, count),
        GnttabOp::UnmapGrantRef => call.unmap_grant_refs(uop, count),
        GnttabOp::Copy => call.copy(uop, count),
        GnttabOp::DumpTable
        | GnttabOp::Transfer
        | GnttabOp::UnmapAndReplace
        | GnttabOp::GetStatusFrames
        | GnttabOp::SwapGrantRef
        | GnttabOp::CacheFlush => Err(Errno::ENOSYS),
    }
}

/// A `grant_table_op` call in progress, with both locks held.
struct Call<'c, 'a, 'f> {
    gt: &'c mut GrantTables,
    env: Env<'a, 'f>,
    caller: DomId,
    root: Option<Mfn>,
    /// An HVM caller's p2m: its host mappings go into its EPT at guest-physical addresses,
    /// and an unmap puts its own RAM frame back.
    hvm_p2m: Option<&'c [u64]>,
    mem: &'c mut dyn GuestMem,
}

/// Why a host mapping could not be installed or removed (logged at debug level).
enum HostMapError {
    Pv(PvError),
    Hvm(GrantPhysmapError),
}

impl core::fmt::Debug for HostMapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Pv(e) => write!(f, "{e:?}"),
            Self::Hvm(e) => write!(f, "{e:?}"),
        }
    }
}

/// The guest address of element `index` of the op array at `uop`.
fn element<T>(uop: u64, index: u64) -> Result<u64, Fault> {
    index
        .checked_mul(core::mem::size_of::<T>() as u64)
        .and_then(|offset| uop.checked_add(offset))
        .ok_or(Fault)
}

/// Writes `status` (a raw `GNTST_*`) into the op at `at`, at `offset` (Xen copies back only
/// the field).
fn write_status(mem: &mut dyn GuestMem, at: u64, offset: usize, status: i16) -> Result<(), Fault> {
    write_obj(mem, field(at, offset as u64)?, &status.to_ne_bytes())
}

impl Call<'_, '_, '_> {
    fn read<T: Pod + Default>(&mut self, at: u64) -> Result<T, Fault> {
        read_obj(self.mem, at)
    }

    fn setup_table(&mut self, uop: u64) -> Result<i64, Errno> {
        let op: GnttabSetupTable = self.read(uop)?;
        let status = match self.gt.setup_table(&mut self.env, self.caller, &op) {
            Ok(frames) => {
                let written = frames.iter().enumerate().try_for_each(|(i, mfn)| {
                    let at = op.frame_list.element_addr(i as u64).ok_or(Fault)?;
                    write_obj(self.mem, at, &mfn.0)
                });
                match written {
                    Ok(()) => GrantStatus::Okay,
                    Err(Fault) => GrantStatus::BadVirtAddr,
                }
            }
            Err(status) => status,
        };
        let offset = offset_of!(GnttabSetupTable, status);
        write_status(self.mem, uop, offset, status.raw())?;
        Ok(0)
    }

    fn query_size(&mut self, uop: u64) -> Result<i64, Errno> {
        let mut op: GnttabQuerySize = self.read(uop)?;
        op.status = match self.gt.query_size(self.caller, op.dom) {
            Ok(size) => {
                op.nr_frames = size.nr_frames;
                op.max_nr_frames = size.max_nr_frames;
                GrantStatus::Okay.raw()
            }
            Err(status) => status.raw(),
        };
        write_obj(self.mem, uop, &op)?;
        Ok(0)
    }

    fn set_version(&mut self, uop: u64) -> Result<i64, Errno> {
        let requested: GnttabSetVersion = self.read(uop)?;
        let result = GrantTables::set_version(requested.version);
        let in_force = GnttabSetVersion {
            version: GRANT_TABLE_VERSION,
        };
        write_obj(self.mem, uop, &in_force)?;
        result.map(|()| 0).map_err(Errno::from)
    }

    fn get_version(&mut self, uop: u64) -> Result<i64, Errno> {
        let mut op: GnttabGetVersion = self.read(uop)?;
        op.version = self.gt.get_version(self.caller, op.dom)?;
        write_obj(self.mem, uop, &op)?;
        Ok(0)
    }

    fn map_grant_refs(&mut self, uop: u64, count: u64) -> Result<i64, Errno> {
        for i in 0..count {
            let at = element::<GnttabMapGrantRef>(uop, i)?;
            let mut op: GnttabMapGrantRef = self.read(at)?;
            let status = match self.gt.map_grant_ref(&mut self.env, self.caller, &op) {
                Ok(map) => {
                    let installed = map
                        .host_addr()
                        .map_or(Ok(()), |addr| self.install(addr, map.mfn(), map.readonly()));
                    match installed {
                        Ok(()) => {
                            op.handle = map.handle();
                            op.dev_bus_addr = map.dev_bus_addr();
                            GrantStatus::Okay
                        }
                        Err(error) => {
                            debug!("d{}: grant mapping not installed: {error:?}", self.caller);
                            self.gt.abort_map(&mut self.env, self.caller, map);
                            GrantStatus::GeneralError
                        }
                    }
                }
                Err(status) => status,
            };
            op.status = status.raw();
            write_obj(self.mem, at, &op)?;
        }
        Ok(0)
    }

    /// Unmaps in batches of [`UNMAP_BATCH`]: each op's PTE is cleared, then the caller's TLB
    /// flushed once, and only then are the frames' references dropped (Xen's
    /// `unmap_common` / `unmap_common_complete`).
    fn unmap_grant_refs(&mut self, uop: u64, count: u64) -> Result<i64, Errno> {
        let mut next = 0;
        while next < count {
            let n = (count - next).min(UNMAP_BATCH as u64);
            let mut batch: [Option<(u64, GrantStatus, Option<GrantUnmap>)>; UNMAP_BATCH] =
                [None; UNMAP_BATCH];
            let mut fault = false;
            for (i, slot) in (next..next + n).zip(batch.iter_mut()) {
                let Ok((at, op)) = element::<GnttabUnmapGrantRef>(uop, i)
                    .and_then(|at| Ok((at, self.read::<GnttabUnmapGrantRef>(at)?)))
                else {
                    fault = true;
                    break;
                };
                *slot = Some(match self.gt.unmap_grant_ref(self.caller, &op) {
                    Ok(unmap) => match self.clear_pte(&unmap) {
                        Ok(()) => (at, GrantStatus::Okay, Some(unmap)),
                        Err(error) => {
                            debug!("d{}: grant mapping not removed: {error:?}", self.caller);
                            self.gt.cancel_unmap(self.caller, unmap);
                            (at, GrantStatus::GeneralError, None)
                        }
                    },
                    Err(status) => (at, status, None),
                });
            }
            let done = batch.iter().flatten();
            if done
                .clone()
                .any(|(_, _, unmap)| unmap.is_some_and(|unmap| unmap.host_mapping().is_some()))
            {
                flush_all();
            }
            for &(at, status, unmap) in done {
                if let Some(unmap) = unmap {
                    self.gt.complete_unmap(&mut self.env, self.caller, unmap);
                }
                let offset = offset_of!(GnttabUnmapGrantRef, status);
                fault |= write_status(self.mem, at, offset, status.raw()).is_err();
            }
            if fault {
                return Err(Errno::EFAULT);
            }
            next += n;
        }
        Ok(0)
    }

    /// Installs a host mapping of `mfn` at `addr`: a PV caller's virtual address (a grant
    /// PTE in the address space it runs in), an HVM caller's guest-physical address (its
    /// EPT).
    fn install(&mut self, addr: u64, mfn: Mfn, readonly: bool) -> Result<(), HostMapError> {
        if self.hvm_p2m.is_some() {
            let (caller, pm) = (self.caller, &mut self.env.pm);
            let mut alloc = || pm.alloc_table_frame(caller);
            return super::vmx::map_grant(caller, addr, mfn, readonly, &mut alloc)
                .map_err(HostMapError::Hvm);
        }
        let root = self.root.ok_or(PvError::NotMapped(addr));
        root.and_then(|root| {
            self.env
                .pm
                .install_grant_pte(self.caller, root, addr, mfn, readonly)
        })
        .map_err(HostMapError::Pv)
    }

    /// Removes the host mapping, if the unmap takes one away.
    fn clear_pte(&mut self, unmap: &GrantUnmap) -> Result<(), HostMapError> {
        let Some((addr, mfn)) = unmap.host_mapping() else {
            return Ok(());
        };
        if let Some(p2m) = self.hvm_p2m {
            let restore = usize::try_from(addr / PAGE_SIZE as u64)
                .ok()
                .and_then(|gfn| p2m.get(gfn))
                .filter(|&&m| m != INVALID_MFN)
                .map(|&m| Mfn(m));
            return super::vmx::unmap_grant(self.caller, addr, mfn, restore)
                .map_err(HostMapError::Hvm);
        }
        let root = self.root.ok_or(PvError::NotMapped(addr));
        root.and_then(|root| {
            self.env
                .pm
                .clear_grant_pte(self.caller, root, addr, mfn, unmap.readonly())
        })
        .map_err(HostMapError::Pv)
    }

    fn copy(&mut self, uop: u64, count: u64) -> Result<i64, Errno> {
        let mut next = 0;
        while next < count {
            let n = (count - next).min(COPY_BATCH as u64);
            let mut ops = [GnttabCopy::default(); COPY_BATCH];
            let mut read = 0;
            for (i, op) in (next..next + n).zip(ops.iter_mut()) {
                match element::<GnttabCopy>(uop, i).and_then(|at| self.read(at)) {
                    Ok(copy) => *op = copy,
                    Err(Fault) => break,
                }
                read += 1;
            }
            let ops = &mut ops[..read];
            self.gt.copy_batch(&mut self.env, self.caller, ops);
            for (i, op) in (next..).zip(ops.iter()) {
                let at = element::<GnttabCopy>(uop, i)?;
                write_status(self.mem, at, offset_of!(GnttabCopy, status), op.status)?;
            }
            if (read as u64) < n {
                return Err(Errno::EFAULT);
            }
            next += n;
        }
        Ok(0)
    }
}
