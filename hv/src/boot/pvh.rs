//! Xen's PVH start of day: EBX holds the physical address of `hvm_start_info`, which names
//! the command line, the modules (QEMU passes `-initrd` as module 0) and, from version 1,
//! the memory map. Field offsets come from `hypercall_abi::hvm`, the one place they live.

use super::{BootError, BootInfo, Module, PhysRead, Protocol};
use crate::mm::memmap::RegionKind;
use core::mem::{offset_of, size_of};
use hypercall_abi::hvm::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo,
    XEN_HVM_START_MAGIC_VALUE as HVM_START_MAGIC,
};

/// Most memory map entries read (QEMU gives a handful).
const MAX_MEMMAP_ENTRIES: u32 = 128;

/// Parses the `hvm_start_info` at `info_paddr`.
pub fn parse(mem: &impl PhysRead, info_paddr: u64) -> Result<BootInfo, BootError> {
    let at = |off: usize| info_paddr.wrapping_add(off as u64);
    let magic = mem.read_u32(at(offset_of!(HvmStartInfo, magic)))?;
    if magic != HVM_START_MAGIC {
        return Err(BootError::BadMagic(magic));
    }
    let version = mem.read_u32(at(offset_of!(HvmStartInfo, version)))?;
    let mut info = BootInfo::new(Protocol::Pvh);

    let cmdline = mem.read_u64(at(offset_of!(HvmStartInfo, cmdline_paddr)))?;
    if cmdline != 0 {
        info.read_cmdline(mem, cmdline)?;
    }

    let nr_modules = mem.read_u32(at(offset_of!(HvmStartInfo, nr_modules)))?;
    let modlist = mem.read_u64(at(offset_of!(HvmStartInfo, modlist_paddr)))?;
    if nr_modules as usize > super::MODULES_MAX {
        return Err(BootError::TooManyModules);
    }
    for i in 0..u64::from(nr_modules) {
        let entry = modlist.wrapping_add(i * size_of::<HvmModlistEntry>() as u64);
        let start = mem.read_u64(entry.wrapping_add(offset_of!(HvmModlistEntry, paddr) as u64))?;
        let len = mem.read_u64(entry.wrapping_add(offset_of!(HvmModlistEntry, size) as u64))?;
        if start.checked_add(len).is_none() {
            return Err(BootError::Malformed("module wraps around"));
        }
        info.push_module(Module { start, len })?;
    }

    let rsdp = mem.read_u64(at(offset_of!(HvmStartInfo, rsdp_paddr)))?;
    info.rsdp_paddr = (rsdp != 0).then_some(rsdp);

    if version < 1 {
        return Err(BootError::NoMemoryMap);
    }
    let memmap = mem.read_u64(at(offset_of!(HvmStartInfo, memmap_paddr)))?;
    let entries = mem.read_u32(at(offset_of!(HvmStartInfo, memmap_entries)))?;
    if memmap == 0 || entries == 0 {
        return Err(BootError::NoMemoryMap);
    }
    if entries > MAX_MEMMAP_ENTRIES {
        return Err(BootError::Malformed("memory map entry count"));
    }
    for i in 0..u64::from(entries) {
        let e = memmap.wrapping_add(i * size_of::<HvmMemmapTableEntry>() as u64);
        let addr = mem.read_u64(e.wrapping_add(offset_of!(HvmMemmapTableEntry, addr) as u64))?;
        let size = mem.read_u64(e.wrapping_add(offset_of!(HvmMemmapTableEntry, size) as u64))?;
        let ty = mem.read_u32(e.wrapping_add(offset_of!(HvmMemmapTableEntry, kind) as u64))?;
        info.memmap
            .push(addr, size, RegionKind::from_e820_type(ty))
            .map_err(|_| BootError::MemoryMap)?;
    }
    info.memmap.normalise().map_err(|_| BootError::MemoryMap)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::fake::FakeMem;

    const BASE: u64 = 0x8000;

    fn put_u32(m: &mut FakeMem, a: u64, v: u32) {
        m.put(a, &v.to_le_bytes());
    }
    fn put_u64(m: &mut FakeMem, a: u64, v: u64) {
        m.put(a, &v.to_le_bytes());
    }

    /// start_info at BASE, cmdline at +0x100, modlist at +0x200, memmap at +0x300.
    fn sample() -> FakeMem {
        let mut m = FakeMem::new(BASE, 0x1000);
        let si = BASE;
        put_u32(
            &mut m,
            si + offset_of!(HvmStartInfo, magic) as u64,
            HVM_START_MAGIC,
        );
        put_u32(&mut m, si + offset_of!(HvmStartInfo, version) as u64, 1);
        put_u32(&mut m, si + offset_of!(HvmStartInfo, nr_modules) as u64, 1);
        put_u64(
            &mut m,
            si + offset_of!(HvmStartInfo, modlist_paddr) as u64,
            BASE + 0x200,
        );
        put_u64(
            &mut m,
            si + offset_of!(HvmStartInfo, cmdline_paddr) as u64,
            BASE + 0x100,
        );
        put_u64(
            &mut m,
            si + offset_of!(HvmStartInfo, memmap_paddr) as u64,
            BASE + 0x300,
        );
        put_u32(
            &mut m,
            si + offset_of!(HvmStartInfo, memmap_entries) as u64,
            2,
        );
        m.put(BASE + 0x100, b"console=com1 loglvl=all\0");
        put_u64(&mut m, BASE + 0x200, 0x100_0000);
        put_u64(&mut m, BASE + 0x208, 0x3000);
        let e = size_of::<HvmMemmapTableEntry>() as u64;
        for (i, (a, s, t)) in [(0u64, 0x9fc00u64, 1u32), (0x10_0000, 0xff0_0000, 1)]
            .iter()
            .enumerate()
        {
            let at = BASE + 0x300 + i as u64 * e;
            put_u64(
                &mut m,
                at + offset_of!(HvmMemmapTableEntry, addr) as u64,
                *a,
            );
            put_u64(
                &mut m,
                at + offset_of!(HvmMemmapTableEntry, size) as u64,
                *s,
            );
            put_u32(
                &mut m,
                at + offset_of!(HvmMemmapTableEntry, kind) as u64,
                *t,
            );
        }
        m
    }

    #[test]
    fn parses_qemu_style_start_info() {
        let info = parse(&sample(), BASE).unwrap();
        assert_eq!(info.protocol, Protocol::Pvh);
        assert_eq!(info.cmdline(), "console=com1 loglvl=all");
        assert_eq!(
            info.modules(),
            &[Module {
                start: 0x100_0000,
                len: 0x3000
            }]
        );
        // RAM is counted in whole pages: 0x9fc00 rounds down to 0x9f000.
        assert_eq!(info.memmap.total_ram_bytes(), 0x9f000 + 0xff0_0000);
    }

    #[test]
    fn rejects_bad_input() {
        let mut m = sample();
        put_u32(&mut m, BASE, 0xdead);
        assert_eq!(parse(&m, BASE).err(), Some(BootError::BadMagic(0xdead)));
        let mut m = sample();
        put_u32(
            &mut m,
            BASE + offset_of!(HvmStartInfo, nr_modules) as u64,
            1000,
        );
        assert_eq!(parse(&m, BASE).err(), Some(BootError::TooManyModules));
        let mut m = sample();
        put_u64(
            &mut m,
            BASE + offset_of!(HvmStartInfo, memmap_paddr) as u64,
            u64::MAX - 4,
        );
        assert!(parse(&m, BASE).is_err());
        assert!(parse(&sample(), 0x10).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let good = sample();
        for i in 0..0x400 {
            for v in [0u8, 0xff, 0x80] {
                let mut m = FakeMem {
                    base: good.base,
                    bytes: good.bytes.clone(),
                };
                m.bytes[i] = v;
                let _ = parse(&m, BASE);
            }
        }
    }
}
