//! The hardware side of PV memory management: physical page-table access for `mm::pv`
//! (through the direct map), TLB flushes, the page-table hypercalls' argument copying, the
//! guest GDT frames, and domain teardown.

use super::paging::{hv_l4_slots, phys_to_virt};
use super::start::{set_m2p, FRAMES};
use crate::domain::state::Domain;
use crate::hypercall::MmuCall;
use crate::mm::guest_access::{read_obj, write_obj, GuestMem};
use crate::mm::pv::{FlushAction, MmuextEffect, PageMemory, PvError, PvMm};
use crate::mm::{Mfn, Owner};
use alloc::vec::Vec;
use hypercall_abi::errno::Errno;
use hypercall_abi::xen::{MmuUpdate, MmuextOp, DOMID_SELF, FIRST_RESERVED_GDT_PAGE};
use hypercall_abi::DomId;
use log::warn;
use x86_64::registers::control::{Cr4, Cr4Flags};

/// Requests copied from the guest per step (bounds hv's stack use).
const BATCH: usize = 16;
/// Most requests one call may carry (bounds the time spent in one call).
const MAX_REQUESTS: u64 = 1 << 20;

/// Page tables in the direct map.
struct DirectMem;

impl PageMemory for DirectMem {
    fn read_entry(&self, table: Mfn, index: usize) -> u64 {
        // SAFETY: `mm::pv` only names RAM frames in the frame table, which the direct map
        // covers, and indices below 512.
        unsafe {
            (phys_to_virt(table.paddr()) as *const u64)
                .add(index & 511)
                .read_volatile()
        }
    }
    fn write_entry(&mut self, table: Mfn, index: usize, value: u64) {
        // SAFETY: as above; `mm::pv` has validated the entry for the table's type.
        unsafe {
            (phys_to_virt(table.paddr()) as *mut u64)
                .add(index & 511)
                .write_volatile(value)
        }
    }
    fn set_m2p(&mut self, mfn: Mfn, pfn: u64) {
        set_m2p(mfn.0, pfn);
    }
    fn flush_domain_tlbs(&mut self, _domid: DomId) {
        flush_all();
    }
}

/// Flushes every TLB entry on this CPU, global ones included (toggling CR4.PGE).
fn flush_all() {
    let cr4 = Cr4::read();
    if cr4.contains(Cr4Flags::PAGE_GLOBAL) {
        // SAFETY: clearing and restoring PGE flushes the TLB; hv's mappings stay valid.
        unsafe {
            Cr4::write(cr4 - Cr4Flags::PAGE_GLOBAL);
            Cr4::write(cr4);
        }
    } else {
        x86_64::instructions::tlb::flush_all();
    }
}

fn apply(flush: FlushAction) {
    match flush {
        FlushAction::None => {}
        FlushAction::InvlpgLocal { va }
        | FlushAction::InvlpgMulti { va, .. }
        | FlushAction::InvlpgAll { va } => {
            x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(va))
        }
        FlushAction::TlbLocal | FlushAction::TlbMulti { .. } | FlushAction::TlbAll => flush_all(),
    }
}

fn own_domain(dom: &Domain, domid: u64) -> Result<(), Errno> {
    let d = domid as DomId;
    if domid >> 16 == 0 && (d == DOMID_SELF || d == dom.id) {
        Ok(())
    } else {
        // Foreign page-table updates are for a control domain building others: not yet.
        Err(Errno::EPERM)
    }
}

/// The page-table hypercalls.
pub fn hypercall(
    dom: &mut Domain,
    vcpu: usize,
    call: MmuCall,
    mem: &mut dyn GuestMem,
) -> Result<i64, Errno> {
    let mut guard = FRAMES.lock();
    let frames = guard.as_mut().ok_or(Errno::ENOMEM)?;
    let mut direct = DirectMem;
    let mut pm = PvMm::new(frames, &mut direct, hv_l4_slots());
    let id = dom.id;
    match call {
        MmuCall::Update {
            reqs,
            count,
            done,
            domid,
        } => {
            own_domain(dom, domid)?;
            if count > MAX_REQUESTS {
                return Err(Errno::EINVAL);
            }
            let mut total = 0u64;
            let mut result = Ok(());
            while total < count && result.is_ok() {
                let n = (count - total).min(BATCH as u64) as usize;
                let mut batch = [MmuUpdate::default(); BATCH];
                for (i, slot) in batch[..n].iter_mut().enumerate() {
                    let at = reqs
                        .checked_add((total + i as u64) * 16)
                        .ok_or(Errno::EFAULT)?;
                    *slot = read_obj(mem, at)?;
                }
                let (ok, r) = pm.mmu_update(id, &batch[..n]);
                total += ok as u64;
                result = r.map_err(Errno::from);
            }
            flush_all();
            if done != 0 {
                write_obj(mem, done, &(total as u32))?;
            }
            result.map(|()| 0)
        }
        MmuCall::UpdateVa { va, pte, flags } => {
            let v = &dom.vcpus[vcpu].pv;
            let root = if v.kernel_mode {
                v.mm.kernel_root()
            } else {
                v.mm.user_root()
            };
            let root = root.ok_or(Errno::EINVAL)?;
            let flush = pm.update_va_mapping(id, root, va, pte, flags)?;
            apply(flush);
            Ok(0)
        }
        MmuCall::Ext {
            ops,
            count,
            done,
            domid,
        } => {
            own_domain(dom, domid)?;
            if count > MAX_REQUESTS {
                return Err(Errno::EINVAL);
            }
            let vmm = &mut dom.vcpus[vcpu].pv.mm;
            let mut total = 0u64;
            let mut result = Ok(());
            let size = core::mem::size_of::<MmuextOp>() as u64;
            while total < count && result.is_ok() {
                let n = (count - total).min(BATCH as u64) as usize;
                let mut batch = [MmuextOp::default(); BATCH];
                for (i, slot) in batch[..n].iter_mut().enumerate() {
                    let at = ops
                        .checked_add((total + i as u64) * size)
                        .ok_or(Errno::EFAULT)?;
                    *slot = read_obj(mem, at)?;
                }
                let (ok, r) = pm.mmuext_op(id, vmm, &batch[..n], |effect| match effect {
                    MmuextEffect::Flush(f) => apply(f),
                    // The new root is loaded on the way back to the guest (`pv::load_context`).
                    MmuextEffect::LoadKernelRoot(_) => {}
                    MmuextEffect::LoadLdt => {
                        warn!("d{id}: LDTs are not supported; the request is recorded only")
                    }
                });
                total += ok as u64;
                result = r.map_err(Errno::from);
            }
            if done != 0 {
                write_obj(mem, done, &(total as u32))?;
            }
            result.map(|()| 0)
        }
        MmuCall::SetGdt {
            frames: list,
            entries,
        } => {
            let entries = usize::try_from(entries).map_err(|_| Errno::EINVAL)?;
            let nr = entries.div_ceil(512);
            if nr > FIRST_RESERVED_GDT_PAGE {
                return Err(Errno::EINVAL);
            }
            let mut mfns = Vec::with_capacity(nr);
            for i in 0..nr as u64 {
                let at = list.checked_add(i * 8).ok_or(Errno::EFAULT)?;
                let gfn: u64 = read_obj(mem, at)?;
                // PV guests name machine frames.
                mfns.push(Mfn(gfn));
            }
            pm.set_gdt(id, &mut dom.vcpus[vcpu].pv.mm, &mfns, entries)?;
            Ok(0)
        }
    }
}

/// Takes the type references and pins a freshly built domain's boot page tables hold, and
/// makes them vCPU 0's kernel root.
pub fn adopt_boot_tables(dom: &mut Domain, l4: u64) -> Result<(), PvError> {
    let mut guard = FRAMES.lock();
    let frames = guard.as_mut().ok_or(PvError::NotSupported)?;
    let mut direct = DirectMem;
    let mut pm = PvMm::new(frames, &mut direct, hv_l4_slots());
    let vcpu = dom.vcpus.first_mut().ok_or(PvError::NotSupported)?;
    pm.new_domain_root(dom.id, &mut vcpu.pv.mm, Mfn(l4))
}

/// Every frame the frame table says domain `domid` owns.
fn owned_frames(frames: &crate::mm::FrameAllocator<'_>, domid: DomId) -> Vec<Mfn> {
    let table = frames.table();
    (table.base_mfn().0..table.end_mfn().0)
        .map(Mfn)
        .filter(|&m| {
            table
                .get(m)
                .is_some_and(|p| p.owner() == Owner::Domain(domid))
        })
        .collect()
}

/// Takes frame `mfn` back from domain `domid` (ballooning): only a frame it owns that has
/// no type and no references (not mapped anywhere) is freed.
pub fn release_frame(domid: DomId, mfn: Mfn) -> bool {
    let mut guard = FRAMES.lock();
    let Some(frames) = guard.as_mut() else {
        return false;
    };
    let free = frames.table().get(mfn).is_some_and(|p| {
        p.owner() == Owner::Domain(domid) && p.type_count() == 0 && p.ref_count() == 0
    });
    free && frames.free(mfn, 0).is_ok()
}

/// Releases everything a stopped domain holds: types, pins, references, and then every frame
/// it owns (found in the frame table, so none is missed however the domain used its p2m).
/// Frames that cannot be released (still mapped elsewhere) are reported and kept.
pub fn teardown(dom: &mut Domain) {
    let mut guard = FRAMES.lock();
    let Some(frames) = guard.as_mut() else { return };
    let mfns = owned_frames(frames, dom.id);
    let mut vmms: Vec<_> = dom.vcpus.iter().map(|v| v.pv.mm).collect();
    {
        let mut direct = DirectMem;
        let mut pm = PvMm::new(frames, &mut direct, hv_l4_slots());
        let id = dom.id;
        pm.relinquish(id, &mut vmms, mfns.iter().copied(), |mfn| {
            warn!("d{id}: frame {:#x} still in use", mfn.0)
        });
    }
    for (v, vmm) in dom.vcpus.iter_mut().zip(vmms) {
        v.pv.mm = vmm;
    }
    let mut freed = 0u64;
    for &mfn in &mfns {
        set_m2p(mfn.0, u64::MAX);
        if frames.free(mfn, 0).is_ok() {
            freed += 1;
        }
    }
    dom.p2m.clear();
    dom.tot_pages = 0;
    log::info!(
        "d{}: released {freed} of {} frames; {} frames free",
        dom.id,
        mfns.len(),
        frames.free_frames()
    );
}
