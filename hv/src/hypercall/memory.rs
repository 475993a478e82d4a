//! `memory_op`: what a guest may ask about its own memory.

use super::{Ctx, HcResult};
use crate::mm::guest_access::{read_obj, write_obj};
use hypercall_abi::errno::Errno;
use hypercall_abi::memory::MemoryOp;
use hypercall_abi::xen::DOMID_SELF;

/// E820 type of RAM.
const E820_RAM: u32 = 1;

pub(super) fn memory_op(ctx: &mut Ctx<'_>, cmd: u64, arg: u64) -> HcResult {
    let Ok(op) = MemoryOp::try_from(cmd) else {
        return Err(Errno::ENOSYS);
    };
    match op {
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
                ctx.dom.p2m.len() as u64
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
            // The guest's pseudo-physical map: all its pages, from 0.
            let ram = [(0, ctx.dom.p2m.len() as u64 * 4096, E820_RAM)];
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

/// Fills a `struct xen_memory_map` (nr_entries: IN capacity, OUT count; buffer handle) with
/// E820 entries (start, length, type); a map larger than the buffer is cut.
fn write_map(ctx: &mut Ctx<'_>, arg: u64, map: &[(u64, u64, u32)]) -> HcResult {
    let [nr, buffer] = read_obj::<[u64; 2]>(ctx.mem, arg)?;
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
