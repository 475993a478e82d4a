//! hv's clock: the TSC, calibrated once at boot, read as nanoseconds since boot.

use super::cpu::{cpuid, rdtsc};
use crate::time::TscScale;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;
use x86_64::instructions::port::Port;

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static SCALE: Once<TscScale> = Once::new();
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds since boot (0 until the TSC is calibrated).
pub fn now_ns() -> u64 {
    ns_at(rdtsc())
}

/// The TSC-to-ns scale (all zero before calibration).
pub fn scale() -> TscScale {
    SCALE
        .get()
        .copied()
        .unwrap_or(TscScale { mul: 0, shift: 0 })
}

/// The TSC frequency in Hz (0 until calibrated).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// System time (ns since boot) at TSC value `tsc`.
pub fn ns_at(tsc: u64) -> u64 {
    scale().ticks_to_ns(tsc.wrapping_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

/// Records the TSC at entry; boot time counts from here.
pub fn mark_boot() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

/// How the TSC frequency was found.
#[derive(Clone, Copy, Debug)]
pub enum Method {
    /// CPUID leaf 0x15 (crystal clock and TSC ratio).
    Cpuid15,
    /// Counted against the 8254 PIT.
    Pit,
}

/// Why the TSC could not be calibrated.
#[derive(Clone, Copy, Debug)]
pub struct NoReference;

/// The PIT's input clock.
const PIT_HZ: u64 = 1_193_182;
/// PIT ticks to count against (25 ms).
const PIT_WINDOW: u64 = PIT_HZ / 40;
/// Polls of an unchanging PIT count before deciding there is no PIT.
const PIT_STUCK_POLLS: u32 = 1 << 20;

fn pit_count() -> u16 {
    // SAFETY: ports 0x40/0x43 are the PIT's; latching and reading channel 0's count has no
    // effect beyond the read itself.
    unsafe {
        Port::<u8>::new(0x43).write(0x00);
        let mut ch0 = Port::<u8>::new(0x40);
        let lo = ch0.read();
        let hi = ch0.read();
        u16::from_le_bytes([lo, hi])
    }
}

fn calibrate_pit() -> Result<u64, NoReference> {
    // SAFETY: programs PIT channel 0 as a free-running down-counter (mode 0, count 0xffff).
    // Its IRQ is masked at the PIC and interrupts are off during calibration.
    unsafe {
        Port::<u8>::new(0x43).write(0x30);
        let mut ch0 = Port::<u8>::new(0x40);
        ch0.write(0xff);
        ch0.write(0xff);
    }
    let mut prev = pit_count();
    let mut stuck = 0;
    // Start on a count change so the window begins at a tick edge.
    loop {
        let c = pit_count();
        if c != prev {
            prev = c;
            break;
        }
        stuck += 1;
        if stuck > PIT_STUCK_POLLS {
            return Err(NoReference);
        }
    }
    let tsc_start = rdtsc();
    let mut elapsed = 0u64;
    stuck = 0;
    while elapsed < PIT_WINDOW {
        let c = pit_count();
        let delta = prev.wrapping_sub(c);
        if delta == 0 {
            stuck += 1;
            if stuck > PIT_STUCK_POLLS {
                return Err(NoReference);
            }
            continue;
        }
        stuck = 0;
        elapsed += u64::from(delta);
        prev = c;
    }
    let tsc = rdtsc() - tsc_start;
    Ok(tsc * PIT_HZ / elapsed)
}

fn cpuid_15() -> Option<u64> {
    if cpuid(0, 0).eax < 0x15 {
        return None;
    }
    let r = cpuid(0x15, 0);
    (r.eax != 0 && r.ebx != 0 && r.ecx != 0)
        .then(|| u64::from(r.ecx) * u64::from(r.ebx) / u64::from(r.eax))
}

/// Finds the TSC frequency and starts `now_ns`. Returns the frequency and the method.
pub fn calibrate() -> Result<(u64, Method), NoReference> {
    let (hz, method) = match cpuid_15() {
        Some(hz) => (hz, Method::Cpuid15),
        None => (calibrate_pit()?, Method::Pit),
    };
    let scale = TscScale::from_hz(hz).ok_or(NoReference)?;
    SCALE.call_once(|| scale);
    TSC_HZ.store(hz, Ordering::Relaxed);
    Ok((hz, method))
}

/// Unix time (ns) at system time 0, from the CMOS real-time clock; 0 when it cannot be read.
static WALLCLOCK_AT_BOOT: AtomicU64 = AtomicU64::new(0);

fn cmos(reg: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 are the CMOS index and data ports; selecting a register and
    // reading it has no other effect (NMIs stay enabled: bit 7 of the index is clear).
    unsafe {
        Port::<u8>::new(0x70).write(reg & 0x7f);
        Port::<u8>::new(0x71).read()
    }
}

fn read_rtc() -> Option<crate::time::CalendarTime> {
    const UPDATE_IN_PROGRESS: u8 = 0x80;
    let raw = || {
        for _ in 0..100_000 {
            if cmos(0x0a) & UPDATE_IN_PROGRESS == 0 {
                break;
            }
        }
        [
            cmos(0x00),
            cmos(0x02),
            cmos(0x04),
            cmos(0x07),
            cmos(0x08),
            cmos(0x09),
            cmos(0x32),
        ]
    };
    // Read until two reads agree, so no update happened in between.
    let mut a = raw();
    for _ in 0..10 {
        let b = raw();
        if a == b {
            break;
        }
        a = b;
    }
    let status_b = cmos(0x0b);
    let binary = status_b & 0x04 != 0;
    let h24 = status_b & 0x02 != 0;
    let conv = |v: u8| {
        if binary {
            u32::from(v)
        } else {
            crate::time::from_bcd(v)
        }
    };
    let [sec, min, hour, day, month, year, century] = a;
    let pm = !h24 && hour & 0x80 != 0;
    let mut hour = conv(hour & 0x7f);
    if !h24 {
        hour %= 12;
        if pm {
            hour += 12;
        }
    }
    let century = match conv(century) {
        c @ 19..=99 => c,
        _ => 20,
    };
    let t = crate::time::CalendarTime {
        year: century * 100 + conv(year),
        month: conv(month),
        day: conv(day),
        hour,
        minute: conv(min),
        second: conv(sec),
    };
    t.unix_seconds().map(|_| t)
}

/// Reads the real-time clock once (after TSC calibration) and records the wall-clock time of
/// system time 0. Returns the Unix time read, if any.
pub fn init_wallclock() -> Option<u64> {
    let secs = read_rtc()?.unix_seconds()?;
    let boot = (secs * 1_000_000_000).saturating_sub(now_ns());
    WALLCLOCK_AT_BOOT.store(boot, Ordering::Relaxed);
    Some(secs)
}

/// Unix time in ns at system time 0 (0 when the RTC could not be read).
pub fn wallclock_at_boot_ns() -> u64 {
    WALLCLOCK_AT_BOOT.load(Ordering::Relaxed)
}

/// Busy-waits for `ns` nanoseconds of TSC time (needs a calibrated TSC).
pub fn spin_ns(ns: u64) {
    let end = now_ns() + ns;
    while now_ns() < end {
        core::hint::spin_loop();
    }
}
