//! `memory_op`: what a guest may ask about its own memory.

use alloc::vec::Vec;

use super::{compat_words, Ctx, HcResult};
use crate::domain::state::INVALID_MFN;
use crate::mm::guest_access::{read_obj, write_obj};
use hypercall_abi::errno::Errno;
use hypercall_abi::memory::{MemoryOp, XenMapSpace, XENMAPIDX_GRANT_TABLE_STATUS};
use hypercall_abi::xen::DOMID_SELF;

/// E820 type of RAM.
const E820_RAM: u32 = 1;

pub(super) fn memory_op(ctx: &mut Ctx<'_>, cmd: u64, arg: u64) -> HcResult {
    let Ok(op) = MemoryOp::try_from(cmd) else {
        return Err(Errno::ENOSYS);
    };
    match op {
        // An HVM domain's memory is its EPT, which these PV paths do not touch: a frame
        // given back would stay mapped in it. hv does not balloon HVM domains.
        MemoryOp::PopulatePhysmap
        | MemoryOp::IncreaseReservation
        | MemoryOp::DecreaseReservation
            if ctx.dom.hvm.is_some() =>
        {
            Err(Errno::ENOSYS)
        }
        MemoryOp::AddToPhysmap if ctx.dom.hvm.is_some() => add_to_physmap(ctx, arg),
        MemoryOp::PopulatePhysmap | MemoryOp::IncreaseReservation => populate(ctx, arg, op),
        MemoryOp::DecreaseReservation => decrease(ctx, arg),
        MemoryOp::CurrentReservation | MemoryOp::MaximumReservation => {
            let domid: u16 = read_obj::<[u8; 2]>(ctx.mem, arg).map(u16::from_le_bytes)?;
            if domid != DOMID_SELF && domid != ctx.dom.id {
                return Err(if ctx.dom.privileged {
                    Errno::ESRCH
                } else {
                    Errno::EPERM
                });
            }
            let pages = if op == MemoryOp::CurrentReservation {
                ctx.dom.tot_pages
            } else {
                ctx.dom.max_pages
            };
            Ok(pages as i64)
        }
        MemoryOp::MaximumRamPage => Ok(ctx.hw.max_mfn() as i64),
        MemoryOp::MaximumGpfn => {
            let domid: u16 = read_obj::<[u8; 2]>(ctx.mem, arg).map(u16::from_le_bytes)?;
            if domid != DOMID_SELF && domid != ctx.dom.id {
                return Err(Errno::EPERM);
            }
            Ok(ctx.dom.p2m.len() as i64 - 1)
        }
        MemoryOp::MemoryMap => {
            let ram = ram_runs(&ctx.dom.p2m);
            write_map(ctx, arg, &ram)
        }
        MemoryOp::MachineMemoryMap if !ctx.dom.privileged => Err(Errno::EPERM),
        MemoryOp::MachineMemoryMap => {
            let map = ctx.hw.machine_memory_map();
            write_map(ctx, arg, &map)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Largest extent a domain may ask for (2 MiB, Xen's default for unprivileged domains).
const MAX_EXTENT_ORDER: u32 = 9;
/// Most extents one call handles (hv has no hypercall continuations; the guest repeats).
const MAX_EXTENTS: u64 = 1 << 16;

/// The fixed part of `struct xen_memory_reservation`: extent list, count, order, domain.
fn reservation(ctx: &mut Ctx<'_>, arg: u64) -> Result<(u64, u64, u32), Errno> {
    // extent_start, nr_extents, (extent_order, mem_flags), (domid, pad).
    let [list, nr, order_flags, domid] = read_obj::<[u64; 4]>(ctx.mem, arg)?;
    let domid = domid as u16;
    if domid != DOMID_SELF && domid != ctx.dom.id {
        return Err(if ctx.dom.privileged {
            Errno::ESRCH
        } else {
            Errno::EPERM
        });
    }
    Ok((list, nr.min(MAX_EXTENTS), order_flags as u32))
}

/// `XENMEM_populate_physmap` / `increase_reservation`: allocates extents of `2^order` frames
/// up to the domain's `max_pages`. For populate, each list entry names the guest frame to
/// fill; a PV guest gets the machine frame written back (it keeps its own p2m). Returns how
/// many extents were done (fewer when memory or the limit runs out, as on Xen).
fn populate(ctx: &mut Ctx<'_>, arg: u64, op: MemoryOp) -> HcResult {
    let (list, nr, order) = reservation(ctx, arg)?;
    if order > MAX_EXTENT_ORDER {
        return Ok(0);
    }
    let n = 1u64 << order;
    for i in 0..nr {
        let at = list.checked_add(i * 8).ok_or(Errno::EFAULT)?;
        let gpfn = if op == MemoryOp::PopulatePhysmap {
            read_obj::<u64>(ctx.mem, at)?
        } else {
            0
        };
        let Some(end) = gpfn.checked_add(n) else {
            return Ok(i as i64);
        };
        if (op == MemoryOp::PopulatePhysmap && end > ctx.dom.max_pages)
            || ctx.dom.tot_pages + n > ctx.dom.max_pages
        {
            return Ok(i as i64);
        }
        let Some(mfn) = ctx.hw.alloc_frames(ctx.dom.id, order) else {
            return Ok(i as i64);
        };
        ctx.dom.tot_pages += n;
        if op == MemoryOp::PopulatePhysmap {
            if ctx.dom.p2m.len() < end as usize {
                ctx.dom.p2m.resize(end as usize, INVALID_MFN);
            }
            for j in 0..n {
                ctx.dom.p2m[(gpfn + j) as usize] = mfn + j;
                ctx.hw.set_m2p(mfn + j, gpfn + j);
            }
        }
        write_obj(ctx.mem, at, &mfn)?;
    }
    Ok(nr as i64)
}

/// `XENMEM_add_to_physmap` for an HVM domain: the shared-info page (`idx` 0) or grant-table
/// frame `idx` (the table grows to hold it; v1 has no status frames) appears at `gpfn`,
/// replacing the RAM page there, which the domain keeps owning. A 32-bit caller's compat
/// layout has `idx` and `gpfn` 32 bits wide (16 bytes in all). Checks in Xen's order:
/// EFAULT, EPERM (another domain), EINVAL (a frame beyond the guest's address width, a bad
/// index), ENOSYS (another space); the platform then maps the frame.
fn add_to_physmap(ctx: &mut Ctx<'_>, arg: u64) -> HcResult {
    let (head, idx, gpfn) = if ctx.compat {
        let [head, space, idx, gpfn] = compat_words::<4>(ctx.mem, arg)?;
        (
            u64::from(head) | u64::from(space) << 32,
            u64::from(idx),
            u64::from(gpfn),
        )
    } else {
        let [head, idx, gpfn] = read_obj::<[u64; 3]>(ctx.mem, arg)?;
        (head, idx, gpfn)
    };
    // domid (16 bits), size (16 bits), space (32 bits).
    let (domid, space) = (head as u16, (head >> 32) as u32);
    if domid != DOMID_SELF && domid != ctx.dom.id {
        return Err(Errno::EPERM);
    }
    if gpfn >= 1 << (crate::hvm::ept::GPA_BITS - 12) {
        return Err(Errno::EINVAL);
    }
    let space = match XenMapSpace::try_from(space) {
        Ok(s @ XenMapSpace::SharedInfo) if idx == 0 => s,
        Ok(s @ XenMapSpace::GrantTable) if idx & XENMAPIDX_GRANT_TABLE_STATUS == 0 => s,
        Ok(XenMapSpace::SharedInfo | XenMapSpace::GrantTable) => return Err(Errno::EINVAL),
        _ => return Err(Errno::ENOSYS),
    };
    ctx.hw.add_to_physmap(ctx.dom, space, idx, gpfn)?;
    Ok(0)
}

/// `XENMEM_decrease_reservation` (ballooning): the guest gives back extents, named (PV) by
/// machine frame. A frame that is not the domain's, or is still mapped or typed, stops the
/// call; the count done is returned.
fn decrease(ctx: &mut Ctx<'_>, arg: u64) -> HcResult {
    let (list, nr, order) = reservation(ctx, arg)?;
    if order > MAX_EXTENT_ORDER {
        return Ok(0);
    }
    for i in 0..nr {
        let at = list.checked_add(i * 8).ok_or(Errno::EFAULT)?;
        let first = read_obj::<u64>(ctx.mem, at)?;
        for j in 0..1u64 << order {
            let Some(mfn) = first.checked_add(j) else {
                return Ok(i as i64);
            };
            let pfn = ctx.hw.m2p(mfn);
            if !ctx.hw.release_frame(ctx.dom.id, mfn) {
                return Ok(i as i64);
            }
            ctx.dom.tot_pages -= 1;
            if let Some(slot) = ctx.dom.p2m.get_mut(pfn as usize).filter(|s| **s == mfn) {
                *slot = INVALID_MFN;
            }
            ctx.hw.set_m2p(mfn, INVALID_MFN);
        }
    }
    Ok(nr as i64)
}

/// The guest's pseudo-physical memory map: each run of guest frames backed by RAM. For a
/// PV guest that is all its pages from 0; for an HVM guest the PC layout's RAM, around the
/// holes (the legacy VGA/ROM window) its p2m leaves unbacked.
fn ram_runs(p2m: &[u64]) -> Vec<(u64, u64, u32)> {
    let mut runs: Vec<(u64, u64, u32)> = Vec::new();
    for (gfn, &mfn) in p2m.iter().enumerate() {
        if mfn == INVALID_MFN {
            continue;
        }
        let start = gfn as u64 * 4096;
        match runs.last_mut() {
            Some((s, len, _)) if *s + *len == start => *len += 4096,
            _ => runs.push((start, 4096, E820_RAM)),
        }
    }
    runs
}

/// Fills a `struct xen_memory_map` (nr_entries: IN capacity, OUT count; buffer handle) with
/// E820 entries (start, length, type); a map larger than the buffer is cut.
fn write_map(ctx: &mut Ctx<'_>, arg: u64, map: &[(u64, u64, u32)]) -> HcResult {
    // The compat layout's buffer handle is 32 bits, right after nr_entries.
    let [nr, buffer] = if ctx.compat {
        compat_words::<2>(ctx.mem, arg).map(|w| w.map(u64::from))?
    } else {
        read_obj::<[u64; 2]>(ctx.mem, arg)?
    };
    let capacity = nr as u32 as usize;
    if capacity < 1 {
        return Err(Errno::EINVAL);
    }
    let n = map.len().min(capacity);
    for (i, &(start, len, ty)) in map[..n].iter().enumerate() {
        let mut entry = [0u8; 20];
        entry[0..8].copy_from_slice(&start.to_le_bytes());
        entry[8..16].copy_from_slice(&len.to_le_bytes());
        entry[16..20].copy_from_slice(&ty.to_le_bytes());
        write_obj(
            ctx.mem,
            buffer.checked_add(i as u64 * 20).ok_or(Errno::EFAULT)?,
            &entry,
        )?;
    }
    write_obj(ctx.mem, arg, &(n as u32))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use crate::domain::state::INVALID_MFN;
    use crate::mm::guest_access::{read_obj, write_obj};

    const MEMORY_OP: u64 = 12;

    #[test]
    fn reservations_and_ram_page() {
        let mut w = World::new();
        write_obj(&mut w.mem, MEM_BASE, &[0xf0u8, 0x7f]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[3, MEM_BASE]).1, 256);
        assert_eq!(w.call(MEMORY_OP, &[4, MEM_BASE]).1, 512);
        write_obj(&mut w.mem, MEM_BASE, &[5u8, 0]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[3, MEM_BASE]).1, -1);
        assert_eq!(w.call(MEMORY_OP, &[2, 0]).1, 0x2_0000);
        assert_eq!(w.call(MEMORY_OP, &[3, 0]).1, -14);
        assert_eq!(w.call(MEMORY_OP, &[99, 0]).1, -38);
    }

    #[test]
    fn populate_then_decrease() {
        let mut w = World::new();
        // Reservation: list at +0x100, 2 extents of order 0, domid self.
        write_obj(&mut w.mem, MEM_BASE, &[MEM_BASE + 0x100, 2, 0, 0x7ff0]).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 0x100, &[300u64, 301]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[6, MEM_BASE]).1, 2);
        let [a, b]: [u64; 2] = read_obj(&mut w.mem, MEM_BASE + 0x100).unwrap();
        assert_eq!(
            (w.dom.p2m[300], w.dom.p2m[301]),
            (a, b),
            "machine frames written back"
        );
        assert_eq!(w.dom.tot_pages, 258);
        assert_eq!(w.hw.m2p[&a], 300);
        assert_eq!(w.call(MEMORY_OP, &[1, MEM_BASE]).1, 2, "give both back");
        assert_eq!(w.dom.tot_pages, 256);
        assert_eq!(w.dom.p2m[300], INVALID_MFN);
        assert!(!w.hw.owned.contains_key(&a));
    }

    #[test]
    fn reservation_limits_and_refusals() {
        let mut w = World::new();
        w.dom.max_pages = 257;
        write_obj(&mut w.mem, MEM_BASE, &[MEM_BASE + 0x100, 3, 0, 0x7ff0]).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 0x100, &[100u64, 101, 102]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[6, MEM_BASE]).1, 1, "stops at max_pages");
        write_obj(&mut w.mem, MEM_BASE, &[MEM_BASE + 0x100, 1, 10, 0x7ff0]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[6, MEM_BASE]).1, 0, "order too large");
        write_obj(&mut w.mem, MEM_BASE, &[MEM_BASE + 0x100, 1, 0, 5]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[6, MEM_BASE]).1, -1, "another domain");
        // Giving back a frame it does not own, or one still in use, stops at once.
        w.hw.busy.insert(0x1001);
        write_obj(&mut w.mem, MEM_BASE, &[MEM_BASE + 0x100, 2, 0, 0x7ff0]).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 0x100, &[0x1000u64, 0x1001]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[1, MEM_BASE]).1, 1);
        write_obj(&mut w.mem, MEM_BASE + 0x100, &[0x9999_9999u64]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[1, MEM_BASE]).1, 0);
    }

    #[test]
    fn memory_map_has_one_ram_entry() {
        let mut w = World::new();
        write_obj(&mut w.mem, MEM_BASE, &[4u64, MEM_BASE + 0x100]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[9, MEM_BASE]).1, 0);
        assert_eq!(read_obj::<u32>(&mut w.mem, MEM_BASE).unwrap(), 1);
        let e: [u8; 20] = read_obj(&mut w.mem, MEM_BASE + 0x100).unwrap();
        assert_eq!(u64::from_le_bytes(e[8..16].try_into().unwrap()), 256 * 4096);
        assert_eq!(u32::from_le_bytes(e[16..20].try_into().unwrap()), 1);
        write_obj(&mut w.mem, MEM_BASE, &[0u64, MEM_BASE + 0x100]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[9, MEM_BASE]).1, -22);
    }

    #[test]
    fn add_to_physmap_is_checked_then_mapped_by_the_platform() {
        const ADD: u64 = 7;
        let mut w = World::new();
        w.dom.hvm = Some(crate::domain::state::HvmParams::default());
        // domid | size << 16 | space << 32, idx, gpfn.
        let add = |w: &mut World, domid: u64, space: u64, idx: u64, gpfn: u64| {
            write_obj(&mut w.mem, MEM_BASE, &[domid | space << 32, idx, gpfn]).unwrap();
            w.call(MEMORY_OP, &[ADD, MEM_BASE]).1
        };
        assert_eq!(add(&mut w, 0x7ff0, 0, 0, 0xfeff), 0, "shared info");
        assert_eq!(add(&mut w, 1, 1, 3, 0xfe00), 0, "grant frame 3, own id");
        assert_eq!(w.hw.physmap, [(0, 0, 0xfeff), (1, 3, 0xfe00)]);
        assert_eq!(add(&mut w, 2, 0, 0, 0x100), -1, "EPERM: another domain");
        assert_eq!(
            add(&mut w, 0x7ff0, 0, 0, 1 << 36),
            -22,
            "beyond the address width"
        );
        assert_eq!(add(&mut w, 0x7ff0, 0, 1, 0x100), -22, "shared info index 1");
        assert_eq!(
            add(&mut w, 0x7ff0, 1, 1 << 31, 0x100),
            -22,
            "status frames (v2)"
        );
        assert_eq!(add(&mut w, 0x7ff0, 2, 0, 0x100), -38, "gmfn space");
        assert_eq!(w.hw.physmap.len(), 2, "refusals reach nothing");
        assert_eq!(w.call(MEMORY_OP, &[ADD, 0x10]).1, -14);
        // The compat layout: idx and gpfn 32 bits wide.
        w.compat = true;
        write_obj(&mut w.mem, MEM_BASE, &[0x7ff0u32, 1, 5, 0xfe01]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[ADD, MEM_BASE]).1, 0);
        assert_eq!(w.hw.physmap[2], (1, 5, 0xfe01));
        // A PV domain has no physmap to add to.
        let mut pv = World::new();
        assert_eq!(add(&mut pv, 0x7ff0, 0, 0, 0x100), -38);
        // An HVM domain may not make PV-only hypercalls.
        assert_eq!(w.call(1, &[MEM_BASE, 1, 0, 0x7ff0]).1, -38, "mmu_update");
    }

    #[test]
    fn hvm_domains_do_not_balloon() {
        let mut w = World::new();
        w.dom.hvm = Some(crate::domain::state::HvmParams::default());
        // One extent naming the domain's own frame 0x1000 (its gfn 0), which it owns.
        w.hw.owned.insert(0x1000, w.dom.id);
        write_obj(&mut w.mem, MEM_BASE + 0x100, &0x1000u64).unwrap();
        write_obj(&mut w.mem, MEM_BASE, &[MEM_BASE + 0x100, 1, 0, 0x7ff0]).unwrap();
        let (pages, free) = (w.dom.tot_pages, w.hw.free);
        for cmd in [0, 1, 6] {
            assert_eq!(w.call(MEMORY_OP, &[cmd, MEM_BASE]).1, -38, "cmd {cmd}");
        }
        assert_eq!((w.dom.tot_pages, w.hw.free), (pages, free));
        assert_eq!(w.dom.p2m[0], 0x1000, "the frame stays the guest's");
        assert_eq!(w.hw.owned.get(&0x1000), Some(&w.dom.id));
    }

    #[test]
    fn memory_map_skips_the_holes_of_the_p2m() {
        let mut w = World::new();
        // An HVM-style p2m: RAM below 0xa0000 and from 0x100000, nothing between.
        w.dom.p2m = (0..0x200u64)
            .map(|gfn| {
                if (0xa0..0x100).contains(&gfn) {
                    INVALID_MFN
                } else {
                    0x1000 + gfn
                }
            })
            .collect();
        write_obj(&mut w.mem, MEM_BASE, &[4u64, MEM_BASE + 0x100]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[9, MEM_BASE]).1, 0);
        assert_eq!(read_obj::<u32>(&mut w.mem, MEM_BASE).unwrap(), 2);
        let e: [[u8; 20]; 2] = read_obj(&mut w.mem, MEM_BASE + 0x100).unwrap();
        let field = |e: &[u8; 20], r: core::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b[..r.len()].copy_from_slice(&e[r]);
            u64::from_le_bytes(b)
        };
        assert_eq!(
            e.map(|e| (field(&e, 0..8), field(&e, 8..16), field(&e, 16..20))),
            [(0, 0xa0000, 1), (0x100000, 0x100000, 1)]
        );
    }

    #[test]
    fn machine_memory_map_is_privileged_and_cut_to_the_buffer() {
        let mut w = World::new();
        write_obj(&mut w.mem, MEM_BASE, &[2u64, MEM_BASE + 0x100]).unwrap();
        assert_eq!(w.call(MEMORY_OP, &[10, MEM_BASE]).1, -1);
        w.dom.privileged = true;
        assert_eq!(w.call(MEMORY_OP, &[10, MEM_BASE]).1, 0);
        assert_eq!(read_obj::<u32>(&mut w.mem, MEM_BASE).unwrap(), 2);
        let e: [u8; 20] = read_obj(&mut w.mem, MEM_BASE + 0x100 + 20).unwrap();
        assert_eq!(u64::from_le_bytes(e[0..8].try_into().unwrap()), 0x10_0000);
    }
}
