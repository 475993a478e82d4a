//! What the boot loader told hv, in one form whichever way hv was entered.
//!
//! `pvh` reads Xen's `hvm_start_info` (QEMU `-kernel`), `multiboot2` reads a multiboot2
//! information structure (GRUB). Both read physical memory only through [`PhysRead`], so the
//! parsers run on the host against fake memory, and every length and pointer the loader gave
//! is bounds-checked: a malformed structure is an error, not a fault.

pub mod multiboot2;
pub mod pvh;

use crate::mm::memmap::MemoryMap;
use core::fmt;

/// How hv was entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Xen's PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`), as QEMU's `-kernel` uses it.
    Pvh,
    /// Multiboot2, as GRUB uses it.
    Multiboot2,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Pvh => "PVH",
            Protocol::Multiboot2 => "multiboot2",
        })
    }
}

/// Longest command line kept; longer ones are cut at a character boundary.
pub const CMDLINE_MAX: usize = 1024;
/// Most boot modules kept.
pub const MODULES_MAX: usize = 8;

/// A boot module: a range of physical memory the loader filled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Module {
    /// Physical start.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Everything hv needs from its loader.
pub struct BootInfo {
    /// The entry path.
    pub protocol: Protocol,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    /// The firmware memory map, normalised.
    pub memmap: MemoryMap,
    modules: [Module; MODULES_MAX],
    nr_modules: usize,
    /// Physical address of the ACPI RSDP, when the loader said.
    pub rsdp_paddr: Option<u64>,
}

impl BootInfo {
    fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            memmap: MemoryMap::new(),
            modules: [Module::default(); MODULES_MAX],
            nr_modules: 0,
            rsdp_paddr: None,
        }
    }

    /// The command line (UTF-8; invalid bytes end it).
    pub fn cmdline(&self) -> &str {
        let bytes = &self.cmdline[..self.cmdline_len];
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// The boot modules, in loader order.
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.nr_modules]
    }

    fn push_module(&mut self, m: Module) -> Result<(), BootError> {
        let slot = self
            .modules
            .get_mut(self.nr_modules)
            .ok_or(BootError::TooManyModules)?;
        *slot = m;
        self.nr_modules += 1;
        Ok(())
    }

    /// Copies a NUL-terminated command line from physical memory.
    fn read_cmdline(&mut self, mem: &impl PhysRead, paddr: u64) -> Result<(), BootError> {
        let mut len = 0;
        while len < CMDLINE_MAX {
            let mut b = [0u8; 1];
            let at = paddr
                .checked_add(len as u64)
                .ok_or(BootError::Unreadable(paddr))?;
            mem.read(at, &mut b)?;
            if b[0] == 0 {
                break;
            }
            self.cmdline[len] = b[0];
            len += 1;
        }
        self.cmdline_len = len;
        Ok(())
    }
}

/// Read access to physical memory for the parsers.
pub trait PhysRead {
    /// Fills `buf` from physical address `paddr`, or fails if any byte is not readable.
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), BootError>;

    /// Reads a little-endian u32.
    fn read_u32(&self, paddr: u64) -> Result<u32, BootError> {
        let mut b = [0; 4];
        self.read(paddr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a little-endian u64.
    fn read_u64(&self, paddr: u64) -> Result<u64, BootError> {
        let mut b = [0; 8];
        self.read(paddr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Why the loader's information could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// A structure lies outside readable memory.
    Unreadable(u64),
    /// The entry magic was wrong.
    BadMagic(u32),
    /// A length or count is impossible.
    Malformed(&'static str),
    /// More modules than hv keeps.
    TooManyModules,
    /// The memory map could not hold every entry.
    MemoryMap,
    /// The loader gave no memory map.
    NoMemoryMap,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Unreadable(a) => write!(f, "boot information at {a:#x} is not readable"),
            BootError::BadMagic(m) => write!(f, "bad boot magic {m:#x}"),
            BootError::Malformed(what) => write!(f, "malformed boot information: {what}"),
            BootError::TooManyModules => write!(f, "more than {MODULES_MAX} boot modules"),
            BootError::MemoryMap => write!(f, "memory map has too many entries"),
            BootError::NoMemoryMap => write!(f, "the loader gave no memory map"),
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use super::{BootError, PhysRead};

    /// Physical memory `[base, base + bytes.len())` for parser tests.
    pub struct FakeMem {
        pub base: u64,
        pub bytes: Vec<u8>,
    }

    impl FakeMem {
        pub fn new(base: u64, size: usize) -> Self {
            Self {
                base,
                bytes: vec![0; size],
            }
        }
        pub fn put(&mut self, paddr: u64, data: &[u8]) {
            let off = (paddr - self.base) as usize;
            self.bytes[off..off + data.len()].copy_from_slice(data);
        }
    }

    impl PhysRead for FakeMem {
        fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), BootError> {
            let off = paddr
                .checked_sub(self.base)
                .ok_or(BootError::Unreadable(paddr))?;
            let off = usize::try_from(off).map_err(|_| BootError::Unreadable(paddr))?;
            let src = off
                .checked_add(buf.len())
                .and_then(|end| self.bytes.get(off..end))
                .ok_or(BootError::Unreadable(paddr))?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }
}
