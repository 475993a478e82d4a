//! Xen's PV clock: system time in nanoseconds from a `vcpu_time_info` snapshot and the TSC.

use hypercall_abi::xen::VcpuTimeInfo;

/// System time (ns since boot) at TSC value `tsc`, from a consistent snapshot `t` (one read
/// between two equal, even `version`s). A TSC value older than the snapshot counts as no
/// time elapsed.
pub const fn system_time_ns(t: &VcpuTimeInfo, tsc: u64) -> u64 {
    t.system_time
        .wrapping_add(t.scale_delta(tsc.saturating_sub(t.tsc_timestamp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(mul: u32, shift: i8) -> VcpuTimeInfo {
        VcpuTimeInfo {
            version: 2,
            tsc_timestamp: 1_000,
            system_time: 5_000_000,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            ..VcpuTimeInfo::default()
        }
    }

    #[test]
    fn scales_the_tsc_delta() {
        // mul = 2^31 is 0.5 ns per (shifted) tick; shift 1 doubles the delta: 1 ns per tick.
        let t = info(1 << 31, 1);
        assert_eq!(system_time_ns(&t, 1_000), 5_000_000);
        assert_eq!(system_time_ns(&t, 3_000), 5_002_000);
        let t = info(1 << 31, -1);
        assert_eq!(system_time_ns(&t, 5_000), 5_001_000);
    }

    #[test]
    fn an_old_tsc_adds_nothing() {
        let t = info(u32::MAX, 0);
        assert_eq!(system_time_ns(&t, 10), 5_000_000);
    }
}
