//! hv's virtual address layout, inside Xen's reserved range
//! (`HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END`, PML4 slots 256..272), so that every PV
//! address space can later share these slots. `link.ld` repeats the two image constants and
//! the link fails if they disagree.

/// Physical address the image is loaded at.
pub const HV_PHYS_BASE: u64 = 0x20_0000;
/// The image runs at `HV_VIRT_OFFSET + physical` (Xen's own text is at this place too).
pub const HV_VIRT_OFFSET: u64 = 0xffff_82d0_8000_0000;
/// All RAM is mapped at `DIRECTMAP_BASE + physical` (non-executable).
pub const DIRECTMAP_BASE: u64 = 0xffff_8300_0000_0000;
/// End of the direct map (the end of Xen's reserved range).
pub const DIRECTMAP_END: u64 = 0xffff_8800_0000_0000;
/// Fixed virtual pages for device registers (the local APIC), uncached.
pub const FIXMAP_BASE: u64 = 0xffff_82d0_c000_0000;
/// Size of the boot CPU's stack.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;
/// Size of each IST stack (NMI, #DF, #MC).
pub const IST_STACK_SIZE: usize = 16 * 1024;
