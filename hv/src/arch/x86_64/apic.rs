//! The local APIC (xAPIC through MMIO, or x2APIC through MSRs) and its timer.
//!
//! The legacy 8259 PICs are masked; hv takes interrupts only from the local APIC.

use super::cpu::{rdmsr, wrmsr};
use super::traps::{SPURIOUS_VECTOR, TIMER_VECTOR};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;
use x86_64::instructions::port::Port;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const X2APIC_MSR_BASE: u32 = 0x800;

const REG_ID: u32 = 0x20;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
/// The interrupt request register's first word (eight, 0x10 apart).
const REG_IRR: u32 = 0x200;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3e0;

const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
const DIVIDE_BY_16: u32 = 0b0011;

/// How the local APIC is reached.
#[derive(Clone, Copy)]
pub enum Mode {
    /// Registers through MSRs 0x800+.
    X2apic,
    /// Registers through the MMIO page mapped at this virtual address.
    Xapic(usize),
}

impl core::fmt::Display for Mode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Mode::X2apic => f.write_str("x2APIC"),
            Mode::Xapic(va) => write!(f, "xAPIC at {va:#x}"),
        }
    }
}

static MODE: Once<Mode> = Once::new();
/// TSC ticks per count of the periodic timer, once it runs.
static TSC_PER_COUNT: AtomicU64 = AtomicU64::new(0);
/// The periodic timer's period in TSC ticks, once it runs.
static PERIOD_TSC: AtomicU64 = AtomicU64::new(0);

fn read(reg: u32) -> u32 {
    match MODE.get() {
        // SAFETY: x2APIC mode is enabled, so the MSR for this architectural register exists.
        Some(Mode::X2apic) => unsafe { rdmsr(X2APIC_MSR_BASE + (reg >> 4)) as u32 },
        // SAFETY: `base` maps the APIC's register page uncached; `reg` is a register offset.
        Some(Mode::Xapic(base)) => unsafe { ((base + reg as usize) as *const u32).read_volatile() },
        None => 0,
    }
}

fn write(reg: u32, value: u32) {
    match MODE.get() {
        // SAFETY: as in `read`; the registers written here take any value hv writes.
        Some(Mode::X2apic) => unsafe { wrmsr(X2APIC_MSR_BASE + (reg >> 4), u64::from(value)) },
        // SAFETY: as in `read`.
        Some(Mode::Xapic(base)) => unsafe {
            ((base + reg as usize) as *mut u32).write_volatile(value)
        },
        None => {}
    }
}

/// Enables the local APIC: x2APIC when the CPU has it, otherwise xAPIC with its register page
/// mapped by `map_mmio(physical) -> virtual`. Masks the 8259s.
pub fn init(x2apic: bool, map_mmio: impl FnOnce(u64) -> Option<usize>) -> Option<Mode> {
    // SAFETY: writing 0xff to both PICs' data ports masks every legacy IRQ; absent PICs
    // ignore the writes.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
    // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC (all x86_64 CPUs).
    let base = unsafe { rdmsr(IA32_APIC_BASE) };
    let mode = if x2apic {
        // SAFETY: the CPU reports x2APIC support; enabling it keeps the APIC's state.
        unsafe { wrmsr(IA32_APIC_BASE, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC) };
        Mode::X2apic
    } else {
        // SAFETY: sets only the global enable bit, keeping the base address.
        unsafe { wrmsr(IA32_APIC_BASE, base | APIC_BASE_ENABLE) };
        Mode::Xapic(map_mmio(base & 0x000f_ffff_ffff_f000)?)
    };
    MODE.call_once(|| mode);
    write(REG_TPR, 0);
    write(REG_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    Some(mode)
}

/// This CPU's APIC ID.
pub fn id() -> u32 {
    match MODE.get() {
        Some(Mode::X2apic) => read(REG_ID),
        _ => read(REG_ID) >> 24,
    }
}

/// Signals end of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Measures the timer's input rate (after the divider) against the TSC over `window_ns`.
pub fn calibrate_timer(window_ns: u64) -> u64 {
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL, u32::MAX);
    let start = super::time::now_ns();
    super::time::spin_ns(window_ns);
    let counted = u32::MAX - read(REG_TIMER_CURRENT);
    let elapsed = super::time::now_ns() - start;
    write(REG_TIMER_INITIAL, 0);
    u64::from(counted) * 1_000_000_000 / elapsed.max(1)
}

/// Starts a periodic interrupt on `TIMER_VECTOR` every `period_ns`, given the timer's
/// calibrated rate.
pub fn start_periodic(timer_hz: u64, period_ns: u64) {
    let count = (timer_hz * period_ns / 1_000_000_000).clamp(1, u64::from(u32::MAX)) as u32;
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(REG_LVT_TIMER, LVT_PERIODIC | u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL, count);
    let per_count = super::time::tsc_hz() / timer_hz.max(1);
    TSC_PER_COUNT.store(per_count, Ordering::Relaxed);
    PERIOD_TSC.store(per_count * u64::from(count), Ordering::Relaxed);
}

/// TSC ticks until the periodic tick fires next: 0 when one is waiting to be taken already
/// (the timer vector's bit in the IRR), or before the timer runs.
pub fn tsc_until_tick() -> u64 {
    let vector = u32::from(TIMER_VECTOR);
    if read(REG_IRR + (vector / 32) * 0x10) & (1 << (vector % 32)) != 0 {
        return 0;
    }
    u64::from(read(REG_TIMER_CURRENT)) * TSC_PER_COUNT.load(Ordering::Relaxed)
}

/// The tick's period in TSC ticks (0 before the timer runs).
pub fn tick_period_tsc() -> u64 {
    PERIOD_TSC.load(Ordering::Relaxed)
}
