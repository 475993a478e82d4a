//! `hostile`: the domain attacks the hypervisor's memory isolation, one named attack after
//! another, and reports how each ended (see `pvguest::hostile`): writable mappings of its
//! own page tables and GDT, mappings of frames it does not own, of hv's range and of MMIO,
//! superpages, hv's L4 slots, recursive and wrong-level tables, pin/unpin/base-pointer
//! abuse, absurd counts, bad pointers to every hypercall that takes one, malformed trap
//! tables, callbacks and descriptors, and finally a fork bomb of page-table pins. Every
//! attack that might succeed is undone right after, so the next starts from a working
//! domain.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::global_asm;
use core::ptr::addr_of;

use hypercall_abi::callback::{CallbackOp, CallbackRegister, CallbackType};
use hypercall_abi::errno::Errno;
use hypercall_abi::event_channel::EvtchnOp;
use hypercall_abi::grant_table::GnttabOp;
use hypercall_abi::memory::MemoryOp;
use hypercall_abi::sched::{SchedOp, SchedPoll};
use hypercall_abi::vcpu::VcpuOp;
use hypercall_abi::xen::{
    ConsoleIoCmd, Hypercall, MmuUpdate, MmuUpdateType, MmuextCmd, MmuextOp, MulticallEntry,
    TrapInfo, XenVersionCmd, DOMID_SELF, FIRST_RESERVED_GDT_ENTRY, FLAT_KERNEL_CS64,
    HYPERVISOR_VIRT_START, MACH2PHYS_VIRT_START, UVMF_INVLPG,
};
use hypercall_abi::GuestHandle;
use pvguest::hostile::{Tally, Verdict, DONE_LINE};
use pvguest::paging::{
    entry_maddr, pte, pte_mfn, table_indices, PTE_LARGE, PTE_PRESENT, PTE_USER, PTE_WRITABLE,
};

use super::mm::{self, Frame};
use super::traps::{self, Resume};
use super::{entry, pv, Kernel};

/// Where the suite maps its own pages (1.25 GiB: the bootstrap tables do not reach it, so
/// the L2 and L1 tables under it are the suite's own).
const ARENA_VA: u64 = 0x5000_0000;
/// The arena's data page; its end is followed by the unmapped [`SLOT_VA`].
const DATA_VA: u64 = ARENA_VA;
/// The page every mapping attack tries to fill (unmapped between attacks).
const SLOT_VA: u64 = ARENA_VA + 0x1000;
/// A read-only alias of a kernel text page: the "kernel text" pointer of the pointer attacks.
const RO_TEXT_VA: u64 = ARENA_VA + 0x2000;
/// Where a frame is mapped writable while the suite fills it (unmapped afterwards).
const FILL_VA: u64 = ARENA_VA + 0x3000;
/// A guest L4 slot the kernel does not use (0xffff9600_00000000).
const SPARE_L4_SLOT: usize = 300;
/// hv's text (Xen's at the same address), in the reserved range.
const HV_TEXT: u64 = HYPERVISOR_VIRT_START + 0x2d0_8020_0000;
/// The lowest non-canonical address.
const NON_CANONICAL: u64 = 0x8000_0000_0000;
/// The local APIC's page: MMIO no PV guest may map, not even Xen's dom0.
const LAPIC_MFN: u64 = 0xfee00;
/// Xen's ring-0 code selector (`__HYPERVISOR_CS`), which no guest gate may target.
const HV_CS: u64 = 0xe008;
/// Pins per `mmuext_op` in the fork bomb.
const PIN_BATCH: usize = 64;
/// #GP and #PF.
const VECTOR_GP: u64 = 13;

const RW: u64 = PTE_PRESENT | PTE_WRITABLE | PTE_USER;
const RO: u64 = PTE_PRESENT | PTE_USER;

extern "C" {
    /// Writes a word to `addr`; returns 0, or 1 when a fault handler resumed at
    /// `hostile_probe_write_fixup`.
    fn hostile_probe_write(addr: u64) -> u64;
    static hostile_probe_write_fixup: u8;
}

global_asm!(
    r#"
    .text
    /* Page aligned: the read-only alias of this page (RO_TEXT_VA) then starts with these
       known bytes, so calls that read their argument from it see the same junk on every
       build and every hypervisor. */
    .balign 4096
    .globl hostile_probe_write, hostile_probe_write_fixup
hostile_probe_write:
    movq $0x6b6b6b6b, (%rdi)
    xor %eax, %eax
    ret
hostile_probe_write_fixup:
    mov $1, %eax
    ret
    "#,
    options(att_syntax)
);

/// The frames and addresses the attacks aim at.
struct Arena {
    /// The bootstrap tables that map the kernel image, top level first.
    l4: u64,
    l3: u64,
    l2: u64,
    l1: u64,
    /// The suite's own L2 and L1 (under `ARENA_VA`).
    arena_l2: u64,
    arena_l1: u64,
    /// The arena's data page (mapped writable at [`DATA_VA`]).
    data_mfn: u64,
    /// Machine address of the L1 entry for [`SLOT_VA`].
    slot_entry: u64,
    /// The highest machine frame the domain owns.
    max_own_mfn: u64,
    /// The highest machine frame with RAM (`XENMEM_maximum_ram_page`).
    max_ram_mfn: u64,
    /// The frame of hv's first present L4 slot (an hv page-table frame), if any.
    hv_table_mfn: Option<u64>,
}

type Attack = fn(&mut Kernel, &Arena) -> Verdict;

/// Runs every attack and prints the summary and [`DONE_LINE`].
pub fn run(k: &mut Kernel) {
    let mut tally = Tally::default();
    match setup(k) {
        Ok(arena) => {
            for &(name, attack) in ATTACKS {
                let verdict = attack(k, &arena);
                println!("{}", tally.record(name, verdict));
            }
            for target in POINTER_TARGETS {
                for &(kind, pointer, write_only) in &pointer_kinds() {
                    if write_only && !target.writes {
                        continue;
                    }
                    if pointer == 0 && !target.null_refused {
                        continue;
                    }
                    let name = format!("{}_{kind}", target.name);
                    let text_before = ro_text_sum();
                    let ret = (target.call)(&arena, pointer);
                    (target.restore)(k);
                    let verdict = match (ret, target.skipped_if_bad) {
                        _ if ro_text_sum() != text_before => Verdict::Allowed(ret),
                        (0, Some(how)) => Verdict::Contained(how),
                        _ => Verdict::from_ret(ret),
                    };
                    println!("{}", tally.record(&name, verdict));
                }
            }
            let verdict = pin_fork_bomb(k);
            println!("{}", tally.record("pin_fork_bomb", verdict));
        }
        Err(e) => println!("hostile-info: setup failed: {e}"),
    }
    println!("{}", tally.summary());
    println!("{DONE_LINE}");
}

fn setup(k: &mut Kernel) -> Result<Arena, String> {
    let l4 = k.mm.kernel_root();
    let image = table_indices(addr_of!(entry::hypercall_page) as u64);
    let l3 = pte_mfn(k.mm.read_entry(l4, image[0])?);
    let l2 = pte_mfn(k.mm.read_entry(l3, image[1])?);
    let l1 = pte_mfn(k.mm.read_entry(l2, image[2])?);
    let data = k.mm.alloc_frame()?;
    k.mm.map(l4, DATA_VA, pte(data.mfn, RW))?;
    let arena = table_indices(ARENA_VA);
    let arena_l3 = pte_mfn(k.mm.read_entry(l4, arena[0])?);
    let arena_l2 = pte_mfn(k.mm.read_entry(arena_l3, arena[1])?);
    let arena_l1 = pte_mfn(k.mm.read_entry(arena_l2, arena[2])?);
    let slot_entry =
        k.mm.leaf_entry_maddr(l4, SLOT_VA)?
            .ok_or("no L1 for the slot")?;
    let text_pfn = hostile_probe_write as *const () as u64 >> 12;
    mm::update_va_mapping(RO_TEXT_VA, pte(k.mm.mfn(text_pfn)?, RO), UVMF_INVLPG)?;
    let max_own_mfn = (0..k.si.nr_pages)
        .map(|pfn| k.mm.mfn(pfn))
        .try_fold(0, |max, mfn| mfn.map(|m| max.max(m)))?;
    // SAFETY: XENMEM_maximum_ram_page takes no argument and changes nothing.
    let max_ram = unsafe {
        pv::hypercalls().hypercall2(Hypercall::MemoryOp, MemoryOp::MaximumRamPage as u64, 0)
    };
    let mut hv_table_mfn = None;
    for slot in 256..272 {
        let e = k.mm.read_entry(l4, slot)?;
        if e & PTE_PRESENT != 0 {
            hv_table_mfn = Some(pte_mfn(e));
            break;
        }
    }
    println!(
        "hostile-info: l4 {l4:#x} l3 {l3:#x} l2 {l2:#x} l1 {l1:#x} arena l2 {arena_l2:#x} \
         l1 {arena_l1:#x} max own mfn {max_own_mfn:#x} max ram {max_ram:#x} hv table {:#x}",
        hv_table_mfn.unwrap_or(0)
    );
    Ok(Arena {
        l4,
        l3,
        l2,
        l1,
        arena_l2,
        arena_l1,
        data_mfn: data.mfn,
        slot_entry,
        max_own_mfn,
        max_ram_mfn: max_ram.max(0) as u64,
        hv_table_mfn,
    })
}

// --- Hypercall helpers ----------------------------------------------------------------------

/// A raw hypercall. Every attack passes arguments the hypervisor must refuse or that change
/// only the suite's own arena, and undoes what a wrongly accepted one changed.
fn hc(nr: Hypercall, a: [u64; 5]) -> i64 {
    // SAFETY: see above: the arguments name the arena, bad addresses, or operations that
    // must be refused; a hypervisor that accepts them anyway only changes the arena's
    // mappings, which the attack restores.
    unsafe { pv::hypercalls().hypercall5(nr, a[0], a[1], a[2], a[3], a[4]) }
}

fn uva(va: u64, val: u64) -> i64 {
    hc(Hypercall::UpdateVaMapping, [va, val, UVMF_INVLPG, 0, 0])
}

fn mmu_update_one(ptr: u64, val: u64) -> i64 {
    let req = [MmuUpdate {
        ptr: ptr | MmuUpdateType::NormalPtUpdate as u64,
        val,
    }];
    hc(
        Hypercall::MmuUpdate,
        [req.as_ptr() as u64, 1, 0, u64::from(DOMID_SELF), 0],
    )
}

fn mmuext_one(cmd: MmuextCmd, arg1: u64, arg2: u64) -> i64 {
    let op = [MmuextOp::new(cmd, arg1, arg2)];
    hc(
        Hypercall::MmuextOp,
        [op.as_ptr() as u64, 1, 0, u64::from(DOMID_SELF), 0],
    )
}

/// Unmaps the slot page (after an attack that may have mapped something there).
fn clear_slot() {
    uva(SLOT_VA, 0);
}

/// `update_va_mapping` of the slot page to `entry`, undone afterwards.
fn map_slot_uva(entry: u64) -> Verdict {
    let verdict = Verdict::from_ret(uva(SLOT_VA, entry));
    clear_slot();
    verdict
}

/// `mmu_update` of the slot page's L1 entry to `entry`, undone afterwards.
fn map_slot_mmu(a: &Arena, entry: u64) -> Verdict {
    let verdict = Verdict::from_ret(mmu_update_one(a.slot_entry, entry));
    clear_slot();
    verdict
}

/// Sets entry `index` of table `table` to `entry` with `mmu_update`; if that was accepted,
/// puts `restore` back.
fn table_write(table: u64, index: usize, entry: u64, restore: u64) -> Verdict {
    let verdict = Verdict::from_ret(mmu_update_one(entry_maddr(table, index), entry));
    if !verdict.stopped() {
        mmu_update_one(entry_maddr(table, index), restore);
    }
    verdict
}

/// A fresh frame whose first words are `words`, mapped nowhere.
fn filled_frame(k: &mut Kernel, words: &[(usize, u64)]) -> Result<Frame, String> {
    let f = k.mm.alloc_frame()?;
    mm::update_va_mapping(FILL_VA, pte(f.mfn, RW), UVMF_INVLPG)?;
    for &(index, value) in words {
        // SAFETY: FILL_VA maps `f`, a fresh frame nothing else uses; index < 512.
        unsafe { (FILL_VA as *mut u64).add(index % 512).write_volatile(value) };
    }
    mm::update_va_mapping(FILL_VA, 0, UVMF_INVLPG)?;
    Ok(f)
}

/// Word `index` of frame `mfn`, read through a read-only mapping.
fn read_word(mfn: u64, index: usize) -> Result<u64, String> {
    mm::update_va_mapping(FILL_VA, pte(mfn, RO), UVMF_INVLPG)?;
    // SAFETY: FILL_VA maps `mfn` read-only; index < 512 keeps the read inside it.
    let value = unsafe { (FILL_VA as *const u64).add(index % 512).read_volatile() };
    mm::update_va_mapping(FILL_VA, 0, UVMF_INVLPG)?;
    Ok(value)
}

/// Runs `attack` with a fresh frame from `words`, giving the frame back afterwards unless
/// the hypervisor may still hold it.
fn with_frame(
    k: &mut Kernel,
    words: &[(usize, u64)],
    attack: impl FnOnce(u64) -> Verdict,
) -> Verdict {
    match filled_frame(k, words) {
        Ok(f) => {
            let verdict = attack(f.mfn);
            if verdict.stopped() {
                // Best effort: a frame that cannot be given back is only lost to the suite.
                let _ = k.mm.free_frame(f);
            }
            verdict
        }
        Err(e) => {
            println!("hostile-info: cannot prepare a frame: {e}");
            Verdict::Contained("not-run")
        }
    }
}

/// A write to `addr` that must fault with `vector`.
fn write_must_fault(addr: u64, vector: u64) -> Verdict {
    let fixup = addr_of!(hostile_probe_write_fixup) as u64;
    traps::expect(vector, Resume::At(fixup));
    // SAFETY: the handler for `vector` is armed and resumes at the probe's fixup; `addr` is
    // memory the guest may not write, so a write that lands changes nothing the kernel uses.
    let faulted = unsafe { hostile_probe_write(addr) };
    let rec = traps::take_record();
    if faulted == 1 && rec.hits == 1 {
        Verdict::Faulted(vector as u8)
    } else {
        Verdict::Allowed(0)
    }
}

// --- The attacks ---------------------------------------------------------------------------

const ATTACKS: &[(&str, Attack)] = &[
    ("map_own_l1_rw_uva", |_, a| map_slot_uva(pte(a.l1, RW))),
    ("map_own_l1_rw_mmu", |_, a| map_slot_mmu(a, pte(a.l1, RW))),
    ("map_own_l2_rw_uva", |_, a| map_slot_uva(pte(a.l2, RW))),
    ("map_own_l2_rw_mmu", |_, a| map_slot_mmu(a, pte(a.l2, RW))),
    ("map_own_l3_rw_uva", |_, a| map_slot_uva(pte(a.l3, RW))),
    ("map_own_l3_rw_mmu", |_, a| map_slot_mmu(a, pte(a.l3, RW))),
    ("map_own_l4_rw_uva", |_, a| map_slot_uva(pte(a.l4, RW))),
    ("map_own_l4_rw_mmu", |_, a| map_slot_mmu(a, pte(a.l4, RW))),
    ("map_arena_l1_rw_uva", |_, a| {
        map_slot_uva(pte(a.arena_l1, RW))
    }),
    ("map_arena_l2_rw_mmu", |_, a| {
        map_slot_mmu(a, pte(a.arena_l2, RW))
    }),
    ("map_gdt_rw_uva", |k, a| gdt_then_map(k, a, false)),
    ("map_gdt_rw_mmu", |k, a| gdt_then_map(k, a, true)),
    ("map_foreign_mfn_rw_uva", |_, a| {
        map_slot_uva(pte(a.max_own_mfn + 1000, RW))
    }),
    ("map_foreign_mfn_rw_mmu", |_, a| {
        map_slot_mmu(a, pte(a.max_own_mfn + 1000, RW))
    }),
    ("map_foreign_mfn_ro_uva", |_, a| {
        map_slot_uva(pte(a.max_own_mfn + 1000, RO))
    }),
    ("map_mfn0_rw_uva", |_, _| map_slot_uva(pte(0, RW))),
    ("map_mfn0_rw_mmu", |_, a| map_slot_mmu(a, pte(0, RW))),
    ("map_hv_table_rw_mmu", |_, a| match a.hv_table_mfn {
        Some(mfn) => map_slot_mmu(a, pte(mfn, RW)),
        None => Verdict::Contained("no-hv-slot"),
    }),
    ("map_hv_table_ro_uva", |_, a| match a.hv_table_mfn {
        Some(mfn) => map_slot_uva(pte(mfn, RO)),
        None => Verdict::Contained("no-hv-slot"),
    }),
    ("map_mmio_lapic_uva", |_, _| {
        map_slot_uva(pte(LAPIC_MFN, RW))
    }),
    ("map_beyond_ram_uva", |_, a| {
        map_slot_uva(pte(a.max_ram_mfn + 0x100, RW))
    }),
    ("uva_at_m2p", |_, a| {
        Verdict::from_ret(uva(MACH2PHYS_VIRT_START, pte(a.data_mfn, RW)))
    }),
    ("uva_at_hv_text", |_, a| {
        Verdict::from_ret(uva(HV_TEXT, pte(a.data_mfn, RW)))
    }),
    ("uva_non_canonical", |_, a| {
        Verdict::from_ret(uva(NON_CANONICAL, pte(a.data_mfn, RW)))
    }),
    ("write_m2p", |_, _| {
        write_must_fault(MACH2PHYS_VIRT_START, traps::VECTOR_PF)
    }),
    ("write_hv_text", |_, _| {
        write_must_fault(HV_TEXT, traps::VECTOR_PF)
    }),
    ("write_non_canonical", |_, _| {
        write_must_fault(NON_CANONICAL, VECTOR_GP)
    }),
    ("superpage_l2e", |_, a| {
        let index = table_indices(ARENA_VA)[2] + 1;
        table_write(
            a.arena_l2,
            index,
            pte(a.max_own_mfn & !0x1ff, RW | PTE_LARGE),
            0,
        )
    }),
    ("l4_hv_slot_256", |k, a| {
        let old = k.mm.read_entry(a.l4, 256).unwrap_or(0);
        table_write(a.l4, 256, pte(a.l3, RW), old)
    }),
    ("l4_hv_slot_271_clear", |k, a| {
        let old = k.mm.read_entry(a.l4, 271).unwrap_or(0);
        table_write(a.l4, 271, 0, old)
    }),
    ("l4_recursive_rw", |_, a| {
        table_write(a.l4, SPARE_L4_SLOT, pte(a.l4, RW), 0)
    }),
    ("l4_recursive_ro", |_, a| {
        table_write(a.l4, SPARE_L4_SLOT, pte(a.l4, RO), 0)
    }),
    ("l4_points_at_l1", |_, a| {
        table_write(a.l4, SPARE_L4_SLOT, pte(a.l1, RW), 0)
    }),
    ("l3_points_at_l3", |_, a| {
        table_write(a.l3, 500, pte(a.l3, RW), 0)
    }),
    ("l2_points_at_l4", |_, a| {
        let index = table_indices(ARENA_VA)[2] + 1;
        table_write(a.arena_l2, index, pte(a.l4, RW), 0)
    }),
    ("l1_with_rw_l4_entry_hooked", |k, a| {
        let l4 = a.l4;
        let l2 = a.arena_l2;
        with_frame(k, &[(0, pte(l4, RW))], |mfn| {
            let index = table_indices(ARENA_VA)[2] + 1;
            table_write(l2, index, pte(mfn, RW), 0)
        })
    }),
    ("l1_with_rw_l4_entry_pinned", |k, a| {
        with_frame(k, &[(0, pte(a.l4, RW))], |mfn| {
            let verdict = Verdict::from_ret(mmuext_one(MmuextCmd::PinL1Table, mfn, 0));
            if !verdict.stopped() {
                mmuext_one(MmuextCmd::UnpinTable, mfn, 0);
            }
            verdict
        })
    }),
    ("l1e_bad_cache_flags", |_, a| {
        // PCD|PWT on an ordinary frame: cache attributes are refused to unprivileged guests.
        map_slot_mmu(a, pte(a.data_mfn, RW | 0x18))
    }),
    ("pin_twice", |k, _| {
        with_frame(k, &[], |mfn| {
            if mmuext_one(MmuextCmd::PinL1Table, mfn, 0) != 0 {
                return Verdict::Contained("first-pin-refused");
            }
            let verdict = Verdict::from_ret(mmuext_one(MmuextCmd::PinL1Table, mfn, 0));
            mmuext_one(MmuextCmd::UnpinTable, mfn, 0);
            verdict
        })
    }),
    ("pin_foreign_mfn", |_, a| {
        Verdict::from_ret(mmuext_one(MmuextCmd::PinL1Table, a.max_own_mfn + 1000, 0))
    }),
    ("pin_data_frame_as_l4_while_mapped_rw", |_, a| {
        // The arena's data page is mapped writable: it cannot become a page table.
        Verdict::from_ret(mmuext_one(MmuextCmd::PinL4Table, a.data_mfn, 0))
    }),
    ("unpin_not_pinned", |_, a| {
        Verdict::from_ret(mmuext_one(MmuextCmd::UnpinTable, a.arena_l1, 0))
    }),
    ("unpin_foreign_mfn", |_, a| {
        Verdict::from_ret(mmuext_one(MmuextCmd::UnpinTable, a.max_own_mfn + 1000, 0))
    }),
    ("unpin_base_l4_then_map_rw", unpin_base_then_map),
    ("new_baseptr_l1", |_, a| {
        Verdict::from_ret(mmuext_one(MmuextCmd::NewBaseptr, a.arena_l1, 0))
    }),
    ("new_baseptr_bad_l4", |k, a| {
        let foreign = a.max_own_mfn + 1000;
        with_frame(k, &[(0, pte(foreign, RW))], |mfn| {
            Verdict::from_ret(mmuext_one(MmuextCmd::NewBaseptr, mfn, 0))
        })
    }),
    ("new_baseptr_foreign_mfn", |_, a| {
        Verdict::from_ret(mmuext_one(MmuextCmd::NewBaseptr, a.max_own_mfn + 1000, 0))
    }),
    ("new_user_baseptr_l1", |_, a| {
        Verdict::from_ret(mmuext_one(MmuextCmd::NewUserBaseptr, a.arena_l1, 0))
    }),
    ("set_ldt_hv_range", |_, _| {
        Verdict::from_ret(mmuext_one(MmuextCmd::SetLdt, HV_TEXT & !0xfff, 16))
    }),
    ("set_ldt_too_many_entries", |_, _| {
        Verdict::from_ret(mmuext_one(MmuextCmd::SetLdt, ARENA_VA, 8193))
    }),
    ("mmuext_unknown_cmd", |_, _| {
        let op = [MmuextOp {
            cmd: 99,
            pad0: 0,
            arg1: 0,
            arg2: 0,
        }];
        Verdict::from_ret(hc(
            Hypercall::MmuextOp,
            [op.as_ptr() as u64, 1, 0, u64::from(DOMID_SELF), 0],
        ))
    }),
    ("clear_page_foreign_mfn", |_, a| {
        Verdict::from_ret(mmuext_one(MmuextCmd::ClearPage, a.max_own_mfn + 1000, 0))
    }),
    ("clear_page_own_l4", |_, a| {
        Verdict::from_ret(mmuext_one(MmuextCmd::ClearPage, a.l4, 0))
    }),
    ("copy_page_foreign_to_own", |_, a| {
        Verdict::from_ret(mmuext_one(
            MmuextCmd::CopyPage,
            a.data_mfn,
            a.max_own_mfn + 1000,
        ))
    }),
    ("m2p_update_foreign_mfn", |_, a| {
        let ptr = ((a.max_own_mfn + 1000) << 12) | MmuUpdateType::MachphysUpdate as u64;
        let req = [MmuUpdate { ptr, val: 0 }];
        Verdict::from_ret(hc(
            Hypercall::MmuUpdate,
            [req.as_ptr() as u64, 1, 0, u64::from(DOMID_SELF), 0],
        ))
    }),
    ("mmu_update_foreign_domain", |_, a| {
        let req = [MmuUpdate {
            ptr: a.slot_entry,
            val: 0,
        }];
        Verdict::from_ret(hc(Hypercall::MmuUpdate, [req.as_ptr() as u64, 1, 0, 7, 0]))
    }),
    ("uva_multi_mask_hv", |_, _| {
        // UVMF_MULTI with a vCPU bitmap pointer in hv's range (an unmapping, so harmless).
        Verdict::from_ret(hc(
            Hypercall::UpdateVaMapping,
            [SLOT_VA, 0, UVMF_INVLPG | (HV_TEXT & !7), 0, 0],
        ))
    }),
    ("mmu_update_count_max", |_, a| {
        count_attack(Hypercall::MmuUpdate, a, u64::MAX)
    }),
    ("mmu_update_count_preempt_flag", |_, a| {
        count_attack(Hypercall::MmuUpdate, a, 0x8000_0000)
    }),
    ("mmu_update_count_zero", |_, a| {
        count_attack(Hypercall::MmuUpdate, a, 0)
    }),
    ("mmuext_op_count_max", |_, a| {
        count_attack(Hypercall::MmuextOp, a, u64::MAX)
    }),
    ("mmuext_op_count_zero", |_, a| {
        count_attack(Hypercall::MmuextOp, a, 0)
    }),
    ("multicall_count_max", |_, a| {
        count_attack(Hypercall::Multicall, a, u64::MAX)
    }),
    ("multicall_count_zero", |_, a| {
        count_attack(Hypercall::Multicall, a, 0)
    }),
    ("mmu_update_done_overlaps_reqs", |_, a| {
        // The done count lands on the first request while the second is still to be read.
        let mut reqs = [
            MmuUpdate {
                ptr: a.slot_entry,
                val: 0,
            },
            MmuUpdate {
                ptr: a.slot_entry,
                val: pte(a.l4, RW),
            },
        ];
        let p = reqs.as_mut_ptr() as u64;
        let verdict = Verdict::from_ret(hc(
            Hypercall::MmuUpdate,
            [p, 2, p, u64::from(DOMID_SELF), 0],
        ));
        clear_slot();
        verdict
    }),
    ("multicall_nested", |_, _| {
        let mut inner = [MulticallEntry {
            op: Hypercall::XenVersion as u64,
            result: 1,
            args: [0; 6],
        }];
        let mut outer = [MulticallEntry {
            op: Hypercall::Multicall as u64,
            result: 1,
            args: [inner.as_mut_ptr() as u64, 1, 0, 0, 0, 0],
        }];
        let ret = hc(
            Hypercall::Multicall,
            [outer.as_mut_ptr() as u64, 1, 0, 0, 0],
        );
        match ret {
            0 => Verdict::from_ret(outer[0].result as i64),
            other => Verdict::from_ret(other),
        }
    }),
    ("trap_table_handler_in_hv", |_, _| {
        trap_table_attack(HV_TEXT)
    }),
    ("trap_table_handler_non_canonical", |_, _| {
        trap_table_attack(NON_CANONICAL)
    }),
    ("callback_in_hv", |_, _| callback_attack(HV_TEXT)),
    ("callback_non_canonical", |_, _| {
        callback_attack(NON_CANONICAL)
    }),
    ("set_callbacks_non_canonical", |_, _| {
        let ret = hc(
            Hypercall::SetCallbacks,
            [NON_CANONICAL, NON_CANONICAL, NON_CANONICAL, 0, 0],
        );
        restore_callbacks();
        Verdict::from_ret(ret)
    }),
    ("stack_switch_hv", |_, _| {
        let ret = hc(Hypercall::StackSwitch, [0xe02b, HV_TEXT, 0, 0, 0]);
        Verdict::from_ret(ret)
    }),
    ("set_segment_base_non_canonical", |_, _| {
        Verdict::from_ret(hc(Hypercall::SetSegmentBase, [0, NON_CANONICAL, 0, 0, 0]))
    }),
    ("gdt_dpl0_code", |k, _| {
        // A present 64-bit code segment with DPL 0.
        gdt_descriptor_attack(k, &[(1, 0x0020_9a00_0000_0000)], 1, |d| {
            if (d >> 45) & 3 == 3 {
                Verdict::Contained("dpl-raised")
            } else {
                Verdict::Allowed(0)
            }
        })
    }),
    ("gdt_call_gate_to_hv_cs", |k, _| {
        gdt_descriptor_attack(k, &call_gate(HV_CS, 3), 2, |_| Verdict::Allowed(0))
    }),
    ("gdt_call_gate_dpl3", |k, _| {
        // A gate to the guest's own selector 0x10 with DPL 3: must end up DPL 0 (so its use
        // traps for emulation).
        gdt_descriptor_attack(k, &call_gate(0x10, 3), 2, |d| {
            if (d >> 45) & 3 == 0 {
                Verdict::Contained("dpl-forced-0")
            } else {
                Verdict::Allowed(0)
            }
        })
    }),
    ("gdt_tss_descriptor", |k, _| {
        // A 64-bit available TSS: a system descriptor no guest may have.
        gdt_descriptor_attack(k, &[(2, 0x0000_8900_0000_0067), (3, 0)], 2, |_| {
            Verdict::Allowed(0)
        })
    }),
    ("gdt_too_many_entries", |_, _| {
        let frames = [0u64; 16];
        let ret = hc(
            Hypercall::SetGdt,
            [
                frames.as_ptr() as u64,
                FIRST_RESERVED_GDT_ENTRY as u64 + 1,
                0,
                0,
                0,
            ],
        );
        Verdict::from_ret(ret)
    }),
    ("gdt_foreign_frame", |_, a| {
        let frames = [a.max_own_mfn + 1000];
        Verdict::from_ret(hc(Hypercall::SetGdt, [frames.as_ptr() as u64, 16, 0, 0, 0]))
    }),
    ("gdt_own_l1_frame", |_, a| {
        let frames = [a.l1];
        let ret = hc(Hypercall::SetGdt, [frames.as_ptr() as u64, 16, 0, 0, 0]);
        if ret == 0 {
            release_gdt();
        }
        Verdict::from_ret(ret)
    }),
];

/// A 16-byte call gate at GDT index 2 to `selector:0x1000` with `dpl`.
fn call_gate(selector: u64, dpl: u64) -> [(usize, u64); 2] {
    let offset = 0x1000u64;
    let low = (offset & 0xffff)
        | (selector << 16)
        | ((0xc | 0x80 | (dpl << 5)) << 40)
        | (((offset >> 16) & 0xffff) << 48);
    [(2, low), (3, offset >> 32)]
}

/// Makes a frame with `descriptors` this vCPU's GDT (16 entries); judges the stored
/// descriptor `index` with `judge` when the hypervisor accepts it; releases the GDT.
fn gdt_descriptor_attack(
    k: &mut Kernel,
    descriptors: &[(usize, u64)],
    index: usize,
    judge: impl FnOnce(u64) -> Verdict,
) -> Verdict {
    with_frame(k, descriptors, |mfn| {
        let frames = [mfn];
        let ret = hc(Hypercall::SetGdt, [frames.as_ptr() as u64, 16, 0, 0, 0]);
        if ret != 0 {
            return Verdict::from_ret(ret);
        }
        let verdict = match read_word(mfn, index) {
            Ok(stored) => judge(stored),
            Err(e) => {
                println!("hostile-info: cannot read the GDT back: {e}");
                Verdict::Allowed(0)
            }
        };
        release_gdt();
        verdict
    })
}

/// Installs an empty GDT, releasing the frames of the current one.
fn release_gdt() {
    let frames = [0u64; 1];
    hc(Hypercall::SetGdt, [frames.as_ptr() as u64, 0, 0, 0, 0]);
}

/// Makes a fresh frame this vCPU's GDT, then tries to map it writable (with
/// `mmu_update` if `via_mmu`, else `update_va_mapping`).
fn gdt_then_map(k: &mut Kernel, a: &Arena, via_mmu: bool) -> Verdict {
    let slot_entry = a.slot_entry;
    with_frame(k, &[], |mfn| {
        let frames = [mfn];
        let ret = hc(Hypercall::SetGdt, [frames.as_ptr() as u64, 16, 0, 0, 0]);
        if ret != 0 {
            println!("hostile-info: set_gdt of a clean frame returned {ret}");
            return Verdict::Contained("not-run");
        }
        let verdict = if via_mmu {
            Verdict::from_ret(mmu_update_one(slot_entry, pte(mfn, RW)))
        } else {
            Verdict::from_ret(uva(SLOT_VA, pte(mfn, RW)))
        };
        clear_slot();
        release_gdt();
        verdict
    })
}

/// Unpins the kernel's L4 while it is the base pointer (Xen allows this: the base pointer
/// keeps the table alive), then tries to map it writable, then pins it again.
fn unpin_base_then_map(_: &mut Kernel, a: &Arena) -> Verdict {
    let unpinned = mmuext_one(MmuextCmd::UnpinTable, a.l4, 0);
    if unpinned != 0 {
        return Verdict::from_ret(unpinned);
    }
    let verdict = map_slot_uva(pte(a.l4, RW));
    let repinned = mmuext_one(MmuextCmd::PinL4Table, a.l4, 0);
    if repinned != 0 {
        println!("hostile-info: re-pinning the kernel L4 returned {repinned}");
    }
    verdict
}

/// `nr` (mmu_update, mmuext_op or multicall) with `count` requests, of which only the last
/// one before the unmapped slot page is readable (a harmless one).
fn count_attack(nr: Hypercall, a: &Arena, count: u64) -> Verdict {
    let end = DATA_VA + 0x1000;
    let mut done = 0xdead_u32;
    let done_ptr = &mut done as *mut u32 as u64;
    let args = match nr {
        Hypercall::MmuUpdate => {
            let at = end - 16;
            let req = MmuUpdate {
                ptr: a.slot_entry,
                val: 0,
            };
            // SAFETY: `at` lies in the arena's data page, mapped writable and used by
            // nothing else.
            unsafe { (at as *mut MmuUpdate).write_volatile(req) };
            [at, count, done_ptr, u64::from(DOMID_SELF), 0]
        }
        Hypercall::MmuextOp => {
            let at = end - 24;
            let op = MmuextOp::new(MmuextCmd::TlbFlushLocal, 0, 0);
            // SAFETY: as above.
            unsafe { (at as *mut MmuextOp).write_volatile(op) };
            [at, count, done_ptr, u64::from(DOMID_SELF), 0]
        }
        _ => {
            let at = end - 64;
            let call = MulticallEntry {
                op: Hypercall::XenVersion as u64,
                result: 1,
                args: [0; 6],
            };
            // SAFETY: as above.
            unsafe { (at as *mut MulticallEntry).write_volatile(call) };
            [at, count, 0, 0, 0]
        }
    };
    let ret = hc(nr, args);
    clear_slot();
    match (ret, count) {
        // Xen reads bit 31 of the count as "continuation of a preempted call", so 2^31 is a
        // continuation with nothing left to do.
        (0, 0 | 0x8000_0000) => Verdict::Contained("no-op"),
        (0, _) => Verdict::Allowed(0),
        _ => Verdict::from_ret(ret),
    }
}

/// `set_trap_table` with one entry (a vector nothing raises) whose handler is `address`.
fn trap_table_attack(address: u64) -> Verdict {
    let table = [
        TrapInfo {
            vector: 0x81,
            flags: 3,
            cs: FLAT_KERNEL_CS64,
            pad0: 0,
            address,
        },
        TrapInfo::default(),
    ];
    let ret = hc(Hypercall::SetTrapTable, [table.as_ptr() as u64, 0, 0, 0, 0]);
    Verdict::from_ret(ret)
}

/// `callback_op(register)` of the syscall callback at `address`; the real callbacks are
/// registered again afterwards.
fn callback_attack(address: u64) -> Verdict {
    let cb = CallbackRegister {
        type_: CallbackType::Syscall.raw() as u16,
        flags: 0,
        pad0: 0,
        address,
    };
    let ret = hc(
        Hypercall::CallbackOp,
        [
            CallbackOp::Register as u64,
            &cb as *const CallbackRegister as u64,
            0,
            0,
            0,
        ],
    );
    restore_callbacks();
    Verdict::from_ret(ret)
}

fn restore_callbacks() {
    if let Err(e) = traps::register_callbacks() {
        println!("hostile-info: restoring the callbacks failed: {e}");
    }
}

fn restore_traps(_: &mut Kernel) {
    if let Err(e) = traps::install_trap_table() {
        println!("hostile-info: restoring the trap table failed: {e}");
    }
}

fn restore_nothing(_: &mut Kernel) {}

fn restore_gdt(_: &mut Kernel) {
    release_gdt();
}

// --- Bad pointers ---------------------------------------------------------------------------

/// A hypercall that takes a guest pointer.
struct PointerTarget {
    name: &'static str,
    /// Whether the hypervisor writes through the pointer (so a read-only kernel text page
    /// is a bad target too).
    writes: bool,
    /// Whether a null pointer must be refused (for `set_trap_table` it means "clear").
    null_refused: bool,
    /// For an optional output (a `done` count), Xen skips a write it cannot make and
    /// still succeeds; a success is then reported as this word.
    skipped_if_bad: Option<&'static str>,
    /// Issues the hypercall with the pointer.
    call: fn(&Arena, u64) -> i64,
    /// Undoes what a wrongly accepted call may have changed.
    restore: fn(&mut Kernel),
}

/// (name, pointer, only for hypercalls that write through it).
fn pointer_kinds() -> [(&'static str, u64, bool); 4] {
    [
        ("null", 0, false),
        ("ro_text", RO_TEXT_VA, true),
        ("non_canonical", NON_CANONICAL, false),
        ("hv", HV_TEXT, false),
    ]
}

const fn target(
    name: &'static str,
    writes: bool,
    call: fn(&Arena, u64) -> i64,
    restore: fn(&mut Kernel),
) -> PointerTarget {
    PointerTarget {
        name,
        writes,
        null_refused: true,
        skipped_if_bad: None,
        call,
        restore,
    }
}

/// A pointer to an optional count the hypervisor writes at the end.
const fn done_target(name: &'static str, call: fn(&Arena, u64) -> i64) -> PointerTarget {
    PointerTarget {
        skipped_if_bad: Some("done-not-written"),
        ..target(name, true, call, restore_nothing)
    }
}

/// A checksum of the kernel text page behind [`RO_TEXT_VA`], to tell whether a hypervisor
/// wrote through the read-only alias.
fn ro_text_sum() -> u64 {
    (0..512).fold(0u64, |sum, i| {
        // SAFETY: RO_TEXT_VA maps a page of kernel text, readable for the whole run.
        let word = unsafe { (RO_TEXT_VA as *const u64).add(i).read_volatile() };
        sum.rotate_left(7) ^ word
    })
}

const POINTER_TARGETS: &[PointerTarget] = &[
    target(
        "xen_version_extraversion",
        true,
        |_, p| {
            hc(
                Hypercall::XenVersion,
                [XenVersionCmd::Extraversion as u64, p, 0, 0, 0],
            )
        },
        restore_nothing,
    ),
    target(
        "xen_version_capabilities",
        true,
        |_, p| {
            hc(
                Hypercall::XenVersion,
                [XenVersionCmd::Capabilities as u64, p, 0, 0, 0],
            )
        },
        restore_nothing,
    ),
    target(
        "xen_version_get_features",
        true,
        |_, p| {
            hc(
                Hypercall::XenVersion,
                [XenVersionCmd::GetFeatures as u64, p, 0, 0, 0],
            )
        },
        restore_nothing,
    ),
    target(
        "xen_version_platform_parameters",
        true,
        |_, p| {
            hc(
                Hypercall::XenVersion,
                [XenVersionCmd::PlatformParameters as u64, p, 0, 0, 0],
            )
        },
        restore_nothing,
    ),
    target(
        "console_io_write",
        false,
        |_, p| {
            hc(
                Hypercall::ConsoleIo,
                [ConsoleIoCmd::Write as u64, 16, p, 0, 0],
            )
        },
        restore_nothing,
    ),
    target(
        "memory_op_current_reservation",
        false,
        |_, p| {
            hc(
                Hypercall::MemoryOp,
                [MemoryOp::CurrentReservation as u64, p, 0, 0, 0],
            )
        },
        restore_nothing,
    ),
    target(
        "sched_op_shutdown",
        false,
        |_, p| hc(Hypercall::SchedOp, [SchedOp::Shutdown as u64, p, 0, 0, 0]),
        restore_nothing,
    ),
    target(
        "sched_op_poll",
        false,
        |_, p| hc(Hypercall::SchedOp, [SchedOp::Poll as u64, p, 0, 0, 0]),
        restore_nothing,
    ),
    target(
        "sched_op_poll_ports",
        false,
        |_, p| {
            let poll = SchedPoll {
                ports: GuestHandle::new(p),
                nr_ports: 1,
                pad0: 0,
                timeout: pv::system_time_ns() + 1_000_000,
            };
            hc(
                Hypercall::SchedOp,
                [
                    SchedOp::Poll as u64,
                    &poll as *const SchedPoll as u64,
                    0,
                    0,
                    0,
                ],
            )
        },
        restore_nothing,
    ),
    target(
        "event_channel_op_bind_virq",
        true,
        |_, p| {
            hc(
                Hypercall::EventChannelOp,
                [EvtchnOp::BindVirq as u64, p, 0, 0, 0],
            )
        },
        restore_nothing,
    ),
    PointerTarget {
        name: "set_trap_table",
        writes: false,
        null_refused: false,
        skipped_if_bad: None,
        call: |_, p| hc(Hypercall::SetTrapTable, [p, 0, 0, 0, 0]),
        restore: restore_traps,
    },
    target(
        "callback_op_register",
        false,
        |_, p| {
            hc(
                Hypercall::CallbackOp,
                [CallbackOp::Register as u64, p, 0, 0, 0],
            )
        },
        |_| restore_callbacks(),
    ),
    target(
        "vcpu_op_set_singleshot_timer",
        false,
        |_, p| {
            hc(
                Hypercall::VcpuOp,
                [VcpuOp::SetSingleshotTimer as u64, 0, p, 0, 0],
            )
        },
        restore_nothing,
    ),
    target(
        "vcpu_op_get_runstate_info",
        true,
        |_, p| {
            hc(
                Hypercall::VcpuOp,
                [VcpuOp::GetRunstateInfo as u64, 0, p, 0, 0],
            )
        },
        restore_nothing,
    ),
    target(
        "multicall_list",
        true,
        |_, p| hc(Hypercall::Multicall, [p, 1, 0, 0, 0]),
        restore_nothing,
    ),
    target(
        "mmu_update_reqs",
        false,
        |_, p| hc(Hypercall::MmuUpdate, [p, 1, 0, u64::from(DOMID_SELF), 0]),
        restore_nothing,
    ),
    done_target("mmu_update_done", |a, p| {
        let req = [MmuUpdate {
            ptr: a.slot_entry,
            val: 0,
        }];
        hc(
            Hypercall::MmuUpdate,
            [req.as_ptr() as u64, 1, p, u64::from(DOMID_SELF), 0],
        )
    }),
    target(
        "mmuext_op_ops",
        false,
        |_, p| hc(Hypercall::MmuextOp, [p, 1, 0, u64::from(DOMID_SELF), 0]),
        restore_nothing,
    ),
    done_target("mmuext_op_done", |_, p| {
        let op = [MmuextOp::new(MmuextCmd::TlbFlushLocal, 0, 0)];
        hc(
            Hypercall::MmuextOp,
            [op.as_ptr() as u64, 1, p, u64::from(DOMID_SELF), 0],
        )
    }),
    target(
        "set_gdt_frames",
        false,
        |_, p| hc(Hypercall::SetGdt, [p, 16, 0, 0, 0]),
        restore_gdt,
    ),
    target(
        "grant_table_op_setup_table",
        true,
        |_, p| {
            hc(
                Hypercall::GrantTableOp,
                [GnttabOp::SetupTable as u64, p, 1, 0, 0],
            )
        },
        restore_nothing,
    ),
];

// --- The fork bomb ---------------------------------------------------------------------------

/// Takes every free frame, makes each an empty L1 table and pins it (in batches), until the
/// frames run out or the hypervisor refuses; then unpins them all and checks the domain
/// still works: a hypercall succeeds and a former table can be mapped writable again.
fn pin_fork_bomb(k: &mut Kernel) -> Verdict {
    let mut pinned: Vec<u64> = Vec::with_capacity(k.mm.frames_available() as usize);
    let mut batch: Vec<u64> = Vec::with_capacity(PIN_BATCH);
    let mut stop = String::from("out-of-frames");
    loop {
        let frame = k.mm.alloc_frame();
        if let Ok(f) = frame {
            batch.push(f.mfn);
        }
        if batch.len() == PIN_BATCH || (frame.is_err() && !batch.is_empty()) {
            let ops: Vec<MmuextOp> = batch
                .iter()
                .map(|&mfn| MmuextOp::new(MmuextCmd::PinL1Table, mfn, 0))
                .collect();
            let mut done = 0u32;
            let ret = hc(
                Hypercall::MmuextOp,
                [
                    ops.as_ptr() as u64,
                    ops.len() as u64,
                    &mut done as *mut u32 as u64,
                    u64::from(DOMID_SELF),
                    0,
                ],
            );
            let done = (done as usize).min(batch.len());
            pinned.extend_from_slice(&batch[..done]);
            batch.clear();
            if ret != 0 {
                stop = match Errno::try_from(ret) {
                    Ok(errno) => String::from(errno.name()),
                    Err(_) => format!("error {ret}"),
                };
                break;
            }
        }
        if frame.is_err() {
            break;
        }
    }
    let mut unpin_failures = 0usize;
    for chunk in pinned.chunks(PIN_BATCH) {
        let ops: Vec<MmuextOp> = chunk
            .iter()
            .map(|&mfn| MmuextOp::new(MmuextCmd::UnpinTable, mfn, 0))
            .collect();
        let mut done = 0u32;
        let ret = hc(
            Hypercall::MmuextOp,
            [
                ops.as_ptr() as u64,
                ops.len() as u64,
                &mut done as *mut u32 as u64,
                u64::from(DOMID_SELF),
                0,
            ],
        );
        if ret != 0 {
            unpin_failures += chunk.len() - (done as usize).min(chunk.len());
        }
    }
    let version_ok = pv::hypercalls().xen_version().is_ok();
    let remap_ok = match pinned.first() {
        Some(&mfn) => {
            let mapped = uva(SLOT_VA, pte(mfn, RW)) == 0;
            clear_slot();
            mapped
        }
        None => true,
    };
    println!(
        "hostile-info: pin_fork_bomb pinned {} L1 tables, stopped by {stop}; \
         {unpin_failures} unpins failed; xen_version {}; former table writable {}",
        pinned.len(),
        if version_ok { "ok" } else { "FAILED" },
        if remap_ok { "ok" } else { "FAILED" },
    );
    if version_ok && remap_ok && unpin_failures == 0 && !pinned.is_empty() {
        Verdict::Contained("contained")
    } else {
        Verdict::Allowed(pinned.len() as i64)
    }
}
