//! The hardware side of PV memory management: physical page-table access for `mm::pv`
//! (through the direct map), TLB flushes, the page-table hypercalls' argument copying, the
//! guest GDT frames, and domain teardown.

use super::paging::{hv_l4_slots, phys_to_virt};
use super::start::{set_m2p, FRAMES};
use crate::domain::state::Domain;
use crate::hypercall::{MmuCall, MmuDone, PREEMPTED};
use crate::mm::guest_access::{read_obj, write_obj, GuestMem};
use crate::mm::pv::{FlushAction, MmuextEffect, PageMemory, PvError, PvMm};
use crate::mm::{Mfn, Owner};
use alloc::vec::Vec;
use hypercall_abi::errno::Errno;
use hypercall_abi::xen::{MmuUpdate, MmuextOp, DOMID_SELF, FIRST_RESERVED_GDT_PAGE};
use hypercall_abi::DomId;
use log::warn;
use x86_64::registers::control::{Cr4, Cr4Flags};

/// Page tables in the direct map.
pub(super) struct DirectMem;

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
pub(super) fn flush_all() {
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

/// Carries out a flush. A flush of a vCPU subset names the subset through a guest pointer
/// (`UVMF_MULTI`, `MMUEXT_*_MULTI`), which must be readable: -EFAULT otherwise, as on Xen. With
/// one CPU every subset means this CPU.
fn apply(flush: FlushAction, mem: &mut dyn GuestMem) -> Result<(), Errno> {
    match flush {
        FlushAction::None => {}
        FlushAction::InvlpgLocal { va } | FlushAction::InvlpgAll { va } => {
            x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(va))
        }
        FlushAction::InvlpgMulti { va, vcpumask } => {
            read_obj::<u64>(mem, vcpumask)?;
            x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(va))
        }
        FlushAction::TlbMulti { vcpumask } => {
            read_obj::<u64>(mem, vcpumask)?;
            flush_all()
        }
        FlushAction::TlbLocal | FlushAction::TlbAll => flush_all(),
    }
    Ok(())
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

/// Requests handled per step of a batched call; the rest continue as a continuation, so one
/// call never holds hv (and every other domain) for long.
const STEP: u64 = 256;

/// The count argument of a batched call as Xen reads it: 32 bits, and the continuation
/// flag. Returns (count, count done by the earlier steps of this call).
fn batch_count(count: u64, done: u64, mem: &mut dyn GuestMem) -> (u64, u64) {
    let count = count & 0xffff_ffff;
    if count & PREEMPTED == 0 {
        return (count, 0);
    }
    let before = if done != 0 {
        read_obj::<u32>(mem, done).map_or(0, u64::from)
    } else {
        0
    };
    (count & !PREEMPTED, before)
}

/// Runs up to [`STEP`] requests of a batch, one by one through `run` (which returns how many
/// it completed and its error); reports the count done through `done` (a fault writing it is
/// ignored, as on Xen) and whether the call must continue.
fn batch(
    list: u64,
    count: u64,
    done: u64,
    size: u64,
    mem: &mut dyn GuestMem,
    mut run: impl FnMut(&mut dyn GuestMem, u64) -> Result<(), Errno>,
) -> Result<MmuDone, Errno> {
    let (count, before) = batch_count(count, done, mem);
    let step = count.min(STEP);
    let mut ok = 0u64;
    let mut result = Ok(());
    while ok < step {
        let Some(at) = list.checked_add(ok * size) else {
            result = Err(Errno::EFAULT);
            break;
        };
        if let Err(e) = run(mem, at) {
            result = Err(e);
            break;
        }
        ok += 1;
    }
    if done != 0 {
        let _ = write_obj(mem, done, &((before + ok) as u32));
    }
    result?;
    Ok(if step < count {
        MmuDone::Preempted {
            processed: ok,
            remaining: count - ok,
        }
    } else {
        MmuDone::Finished
    })
}

/// The page-table hypercalls.
pub fn hypercall(
    dom: &mut Domain,
    vcpu: usize,
    call: MmuCall,
    mem: &mut dyn GuestMem,
) -> Result<MmuDone, Errno> {
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
            let r = batch(reqs, count, done, 16, mem, |mem, at| {
                let req: MmuUpdate = read_obj(mem, at)?;
                pm.mmu_update(id, &[req]).1.map_err(Errno::from)
            });
            flush_all();
            r
        }
        MmuCall::UpdateVa { va, pte, flags } => {
            let root = dom.vcpus[vcpu].pv.active_root().ok_or(Errno::EINVAL)?;
            let flush = pm.update_va_mapping(id, root, va, pte, flags)?;
            apply(flush, mem)?;
            Ok(MmuDone::Finished)
        }
        MmuCall::Ext {
            ops,
            count,
            done,
            domid,
        } => {
            own_domain(dom, domid)?;
            let vmm = &mut dom.vcpus[vcpu].pv.mm;
            let size = core::mem::size_of::<MmuextOp>() as u64;
            batch(ops, count, done, size, mem, |mem, at| {
                let op: MmuextOp = read_obj(mem, at)?;
                let mut flush = Ok(());
                let r = pm.mmuext_op(id, vmm, &[op], |effect| match effect {
                    MmuextEffect::Flush(f) => flush = apply(f, mem),
                    // The new root is loaded on the way back to the guest (`pv::load_context`).
                    MmuextEffect::LoadKernelRoot(_) => {}
                    MmuextEffect::LoadLdt => {
                        warn!("d{id}: LDTs are not supported; the request is recorded only")
                    }
                });
                r.1.map_err(Errno::from)?;
                flush
            })
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
            Ok(MmuDone::Finished)
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

/// Releases everything a stopped domain holds: types, pins, references, its grant mappings
/// and grant table, and then every frame it owns (found in the frame table, so none is
/// missed however the domain used its p2m). Frames other domains still map through its
/// grants are kept, and freed by the grant tables when the last such mapping goes; any other
/// frame that cannot be released is reported and kept.
pub fn teardown(dom: &mut Domain) {
    let mut guard = FRAMES.lock();
    let Some(frames) = guard.as_mut() else { return };
    let id = dom.id;
    let mfns = owned_frames(frames, id);
    let mut vmms: Vec<_> = dom.vcpus.iter().map(|v| v.pv.mm).collect();
    {
        let mut direct = DirectMem;
        let mut pm = PvMm::new(frames, &mut direct, hv_l4_slots());
        // Frames grant mappings still hold are counted below, once the grant tables let go.
        pm.relinquish(id, &mut vmms, mfns.iter().copied(), |_| {});
    }
    for (v, vmm) in dom.vcpus.iter_mut().zip(vmms) {
        v.pv.mm = vmm;
    }
    let grants = super::gnttab::release_domain(frames, id);
    let still_mapped = grants.map_or(0, |r| r.grants_still_mapped);
    let mut kept = 0usize;
    for &mfn in &mfns {
        // The grant tables have freed the table frames nobody maps.
        let owned = frames
            .table()
            .get(mfn)
            .is_some_and(|p| p.owner() == Owner::Domain(id));
        if !owned {
            continue;
        }
        set_m2p(mfn.0, u64::MAX);
        if frames.free(mfn, 0).is_err() {
            kept += 1;
            if still_mapped == 0 {
                warn!("d{id}: frame {:#x} still in use", mfn.0);
            }
        }
    }
    dom.p2m.clear();
    dom.tot_pages = 0;
    if still_mapped != 0 {
        log::info!("d{id}: {kept} frames kept while others map {still_mapped} of its grants");
    }
    log::info!(
        "d{id}: released {} of {} frames; {} frames free",
        mfns.len() - kept,
        mfns.len(),
        frames.free_frames()
    );
}
