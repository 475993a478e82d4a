//! hv's GDT and TSS, laid out as Xen's so PV guests see the selectors they expect.
//!
//! The GDT spans 15 pages. Pages 0..14 hold the current guest's own descriptors (set with
//! `set_gdt`; until then they are zero, i.e. not present), page 14 (`FIRST_RESERVED_GDT_PAGE`)
//! holds hv's: its ring-0 code and data, the ring-3 flat segments every 64-bit PV guest runs
//! on (0xe023, 0xe02b, 0xe033), and the TSS. The order of hv's code selector, its data selector
//! and the guest's selectors is fixed by SYSCALL/SYSRET's selector arithmetic (see `STAR`).
//!
//! All code and data descriptors have their accessed bit set, so the CPU never writes them.
//! The TSS carries RSP0 (the stack hv enters on from ring 3) and the IST stacks that NMI,
//! #DF and #MC switch to, so those are handled even when the interrupted stack is unusable.

use super::layout::IST_STACK_SIZE;
use hypercall_abi::xen::{
    FIRST_RESERVED_GDT_PAGE, FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64,
};
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::{lgdt, load_tss};
use x86_64::structures::gdt::SegmentSelector;
use x86_64::structures::tss::TaskStateSegment;
use x86_64::structures::DescriptorTablePointer;
use x86_64::{PrivilegeLevel, VirtAddr};

/// Byte offset of hv's reserved descriptors.
const RESERVED: usize = FIRST_RESERVED_GDT_PAGE * 4096;
/// hv's 64-bit code selector.
pub const HV_CS: u16 = RESERVED as u16 + 0x08;
/// hv's data and stack selector (SYSCALL loads SS = CS + 8).
pub const HV_DS: u16 = RESERVED as u16 + 0x10;
/// The TSS selector.
pub const TSS_SEL: u16 = RESERVED as u16 + 0x40;
/// Bytes of hv's reserved descriptors in use.
const RESERVED_LEN: usize = 0x50;

// Flat descriptors: base 0, limit 4 GiB, present, accessed. Type/DPL differ.
const CODE64_DPL0: u64 = 0x00af_9b00_0000_ffff;
const DATA_DPL0: u64 = 0x00cf_9300_0000_ffff;
const CODE32_DPL3: u64 = 0x00cf_fb00_0000_ffff;
const DATA_DPL3: u64 = 0x00cf_f300_0000_ffff;
const CODE64_DPL3: u64 = 0x00af_fb00_0000_ffff;

const _: () = assert!(FLAT_RING3_CS32 as usize == RESERVED + 0x20 + 3);
const _: () = assert!(FLAT_RING3_SS64 as usize == RESERVED + 0x28 + 3);
const _: () = assert!(FLAT_RING3_CS64 as usize == RESERVED + 0x30 + 3);

/// IST slot (1-based, as the IDT encodes it) for NMI.
pub const IST_NMI: u8 = 1;
/// IST slot for double faults.
pub const IST_DOUBLE_FAULT: u8 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;

const IST_COUNT: usize = 3;

#[repr(C, align(4096))]
struct IstStacks([[u8; IST_STACK_SIZE]; IST_COUNT]);

static mut IST_STACKS: IstStacks = IstStacks([[0; IST_STACK_SIZE]; IST_COUNT]);

#[repr(C, align(4096))]
struct Gdt([u64; (RESERVED + 4096) / 8]);

/// The boot CPU's GDT (pages 0..14 belong to the running guest, page 14 to hv).
static mut GDT: Gdt = Gdt([0; (RESERVED + 4096) / 8]);

/// The boot CPU's TSS.
static mut TSS: TaskStateSegment = TaskStateSegment::new();

fn write_descriptor(index: usize, value: u64) {
    // SAFETY: the GDT is only written on its CPU, with interrupts disabled, at indices inside
    // the array (hv's reserved page); descriptors not yet loaded are being set up.
    unsafe { GDT.0[index] = value };
}

/// Builds hv's descriptors, loads the GDT and TSS and reloads the segment registers.
pub fn init() {
    let ist_base = (&raw const IST_STACKS) as u64;
    let tss = &raw mut TSS;
    for i in 0..IST_COUNT {
        // Each IST entry is the top of its own stack.
        let top = VirtAddr::new(ist_base + ((i + 1) * IST_STACK_SIZE) as u64);
        // SAFETY: the TSS is set up once here, on its CPU, before `ltr` makes the CPU use it.
        unsafe { (*tss).interrupt_stack_table[i] = top };
    }
    // SAFETY: as above.
    unsafe { (*tss).iomap_base = core::mem::size_of::<TaskStateSegment>() as u16 };

    let r = RESERVED / 8;
    write_descriptor(r + 1, CODE64_DPL0);
    write_descriptor(r + 2, DATA_DPL0);
    write_descriptor(r + 4, CODE32_DPL3);
    write_descriptor(r + 5, DATA_DPL3);
    write_descriptor(r + 6, CODE64_DPL3);
    let base = (&raw const TSS) as u64;
    let limit = (core::mem::size_of::<TaskStateSegment>() - 1) as u64;
    // 64-bit available TSS (type 9), present, DPL 0; the base is split over 16 bytes.
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    write_descriptor(r + 8, low);
    write_descriptor(r + 9, base >> 32);

    let ptr = DescriptorTablePointer {
        limit: (RESERVED + RESERVED_LEN - 1) as u16,
        base: VirtAddr::new((&raw const GDT) as u64),
    };
    let cs = SegmentSelector::new(HV_CS / 8, PrivilegeLevel::Ring0);
    let ds = SegmentSelector::new(HV_DS / 8, PrivilegeLevel::Ring0);
    // SAFETY: the GDT is a static that lives forever and now holds valid code, data and TSS
    // descriptors at the selectors loaded next; the TSS is loaded exactly once.
    unsafe {
        lgdt(&ptr);
        CS::set_reg(cs);
        SS::set_reg(ds);
        DS::set_reg(SegmentSelector(0));
        ES::set_reg(SegmentSelector(0));
        load_tss(SegmentSelector(TSS_SEL));
    }
}

/// Shows a vCPU's GDT frames in the guest part of the GDT (pages 0..14): page `i` maps
/// `frames[i]` read-only, or hv's own zeroed page where the guest has none. The frames' type
/// (descriptor page, validated by `mm::pv::set_gdt`) keeps every descriptor in them safe.
pub fn show_guest_frames(frames: &[u64]) -> Result<(), super::paging::MapError> {
    use x86_64::structures::paging::PageTableFlags as F;
    let base = (&raw const GDT) as u64;
    for i in 0..FIRST_RESERVED_GDT_PAGE as u64 {
        let va = base + i * 4096;
        let (pa, flags) = match frames.get(i as usize) {
            Some(mfn) => (mfn * 4096, F::NO_EXECUTE),
            None => (
                va - super::layout::HV_VIRT_OFFSET,
                F::NO_EXECUTE | F::WRITABLE,
            ),
        };
        super::paging::remap_4k(va, pa, flags)?;
    }
    Ok(())
}

/// Sets the stack the CPU switches to on an interrupt or exception from ring 3.
pub fn set_rsp0(top: u64) {
    // SAFETY: RSP0 is read by the CPU only on a privilege change, which cannot happen while
    // hv runs with interrupts off on this CPU; the write is a plain aligned store.
    unsafe { TSS.privilege_stack_table[0] = VirtAddr::new(top) };
}
