//! hv's GDT and TSS. The TSS carries the IST stacks that NMI, #DF and #MC switch to, so those
//! are handled even when the interrupted stack is unusable.

use super::layout::IST_STACK_SIZE;
use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

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

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(
    GlobalDescriptorTable,
    SegmentSelector,
    SegmentSelector,
    SegmentSelector,
)> = Once::new();

/// hv's code selector.
pub const HV_CS: u16 = 0x08;

/// Loads the GDT and TSS on the boot CPU and reloads the segment registers.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        let base = (&raw const IST_STACKS) as u64;
        for i in 0..IST_COUNT {
            // Each IST entry is the top of its own stack.
            tss.interrupt_stack_table[i] = VirtAddr::new(base + ((i + 1) * IST_STACK_SIZE) as u64);
        }
        tss
    });
    let (gdt, cs, ds, tss_sel) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let cs = gdt.append(Descriptor::kernel_code_segment());
        let ds = gdt.append(Descriptor::kernel_data_segment());
        let tss_sel = gdt.append(Descriptor::tss_segment(tss));
        (gdt, cs, ds, tss_sel)
    });
    debug_assert_eq!(cs.0, HV_CS);
    gdt.load();
    // SAFETY: the selectors name descriptors of the GDT just loaded, which lives forever
    // (a `static`), and the TSS descriptor is loaded exactly once.
    unsafe {
        CS::set_reg(*cs);
        SS::set_reg(*ds);
        DS::set_reg(*ds);
        ES::set_reg(*ds);
        load_tss(*tss_sel);
    }
}
