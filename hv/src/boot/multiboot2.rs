//! The multiboot2 boot information structure (GRUB): a size-prefixed list of 8-byte aligned
//! tags. hv reads the command line (tag 1), modules (3), the memory map (6) and the ACPI
//! RSDP copies (14, 15).

use super::{BootError, BootInfo, Module, PhysRead, Protocol};
use crate::mm::memmap::RegionKind;

/// EAX at entry from a multiboot2 loader.
pub const LOADER_MAGIC: u32 = 0x36d7_6289;

const TAG_END: u32 = 0;
const TAG_CMDLINE: u32 = 1;
const TAG_MODULE: u32 = 3;
const TAG_MMAP: u32 = 6;
const TAG_ACPI_OLD: u32 = 14;
const TAG_ACPI_NEW: u32 = 15;
/// The information structure is small; anything larger is corrupt.
const MAX_TOTAL_SIZE: u32 = 1 << 20;

/// Parses the structure at `info_paddr`, given the loader's magic in EAX.
pub fn parse(mem: &impl PhysRead, magic: u32, info_paddr: u64) -> Result<BootInfo, BootError> {
    if magic != LOADER_MAGIC {
        return Err(BootError::BadMagic(magic));
    }
    let total = mem.read_u32(info_paddr)?;
    if !(16..=MAX_TOTAL_SIZE).contains(&total) {
        return Err(BootError::Malformed("total size"));
    }
    let end = info_paddr
        .checked_add(u64::from(total))
        .ok_or(BootError::Malformed("total size"))?;
    let mut info = BootInfo::new(Protocol::Multiboot2);
    let mut have_mmap = false;
    let mut tag = info_paddr + 8;
    while tag + 8 <= end {
        let ty = mem.read_u32(tag)?;
        let size = mem.read_u32(tag + 4)?;
        if size < 8 || tag + u64::from(size) > end {
            return Err(BootError::Malformed("tag size"));
        }
        let body = tag + 8;
        let body_len = u64::from(size) - 8;
        match ty {
            TAG_END => break,
            TAG_CMDLINE => info.read_cmdline(mem, body)?,
            TAG_MODULE => {
                if body_len < 8 {
                    return Err(BootError::Malformed("module tag"));
                }
                let start = u64::from(mem.read_u32(body)?);
                let mod_end = u64::from(mem.read_u32(body + 4)?);
                if mod_end < start {
                    return Err(BootError::Malformed("module ends before it starts"));
                }
                info.push_module(Module {
                    start,
                    len: mod_end - start,
                })?;
            }
            TAG_MMAP => {
                if body_len < 8 {
                    return Err(BootError::Malformed("memory map tag"));
                }
                let entry_size = u64::from(mem.read_u32(body)?);
                if entry_size < 24 {
                    return Err(BootError::Malformed("memory map entry size"));
                }
                let mut e = body + 8;
                while e + entry_size <= tag + u64::from(size) {
                    let base = mem.read_u64(e)?;
                    let len = mem.read_u64(e + 8)?;
                    let kind = RegionKind::from_e820_type(mem.read_u32(e + 16)?);
                    info.memmap
                        .push(base, len, kind)
                        .map_err(|_| BootError::MemoryMap)?;
                    e += entry_size;
                }
                have_mmap = true;
            }
            TAG_ACPI_OLD | TAG_ACPI_NEW => {
                // The tag holds a copy of the RSDP; hv keeps where that copy lives.
                info.rsdp_paddr.get_or_insert(body);
            }
            _ => {}
        }
        tag += (u64::from(size) + 7) & !7;
    }
    if !have_mmap {
        return Err(BootError::NoMemoryMap);
    }
    info.memmap.normalise().map_err(|_| BootError::MemoryMap)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::fake::FakeMem;

    fn tag(out: &mut Vec<u8>, ty: u32, body: &[u8]) {
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(8 + body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }

    fn sample() -> Vec<u8> {
        let mut v = vec![0u8; 8];
        tag(&mut v, TAG_CMDLINE, b"loglvl=debug hvtest=timer\0");
        let mut m = Vec::new();
        m.extend_from_slice(&0x40_0000u32.to_le_bytes());
        m.extend_from_slice(&0x40_2000u32.to_le_bytes());
        m.extend_from_slice(b"bundle\0");
        tag(&mut v, TAG_MODULE, &m);
        let mut mm = Vec::new();
        mm.extend_from_slice(&24u32.to_le_bytes());
        mm.extend_from_slice(&0u32.to_le_bytes());
        for (base, len, ty) in [
            (0u64, 0x9fc00u64, 1u32),
            (0x10_0000, 0x1ff0_0000, 1),
            (0xf_0000, 0x1_0000, 2),
        ] {
            mm.extend_from_slice(&base.to_le_bytes());
            mm.extend_from_slice(&len.to_le_bytes());
            mm.extend_from_slice(&ty.to_le_bytes());
            mm.extend_from_slice(&0u32.to_le_bytes());
        }
        tag(&mut v, TAG_MMAP, &mm);
        tag(&mut v, TAG_END, &[]);
        let total = v.len() as u32;
        v[..4].copy_from_slice(&total.to_le_bytes());
        v
    }

    fn mem_with(bytes: &[u8]) -> FakeMem {
        let mut mem = FakeMem::new(0x1_0000, 0x1000);
        mem.put(0x1_0000, bytes);
        mem
    }

    #[test]
    fn parses_cmdline_modules_and_memory() {
        let info = parse(&mem_with(&sample()), LOADER_MAGIC, 0x1_0000).unwrap();
        assert_eq!(info.protocol, Protocol::Multiboot2);
        assert_eq!(info.cmdline(), "loglvl=debug hvtest=timer");
        assert_eq!(
            info.modules(),
            &[Module {
                start: 0x40_0000,
                len: 0x2000
            }]
        );
        // RAM is counted in whole pages: 0x9fc00 rounds down to 0x9f000.
        assert_eq!(info.memmap.total_ram_bytes(), 0x9f000 + 0x1ff0_0000);
    }

    #[test]
    fn rejects_bad_magic_and_sizes() {
        let good = sample();
        assert_eq!(
            parse(&mem_with(&good), 0x1234, 0x1_0000).err(),
            Some(BootError::BadMagic(0x1234))
        );
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&mem_with(&huge), LOADER_MAGIC, 0x1_0000).is_err());
        let mut bad_tag = good.clone();
        bad_tag[12..16].copy_from_slice(&4u32.to_le_bytes());
        assert!(parse(&mem_with(&bad_tag), LOADER_MAGIC, 0x1_0000).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let good = sample();
        for i in 0..good.len() {
            for v in [0u8, 0xff, 0x07, 0x80] {
                let mut b = good.clone();
                b[i] = v;
                let _ = parse(&mem_with(&b), LOADER_MAGIC, 0x1_0000);
            }
        }
    }
}
