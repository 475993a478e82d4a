//! Time arithmetic shared by hv's clock and the `vcpu_time_info` it gives guests.
//!
//! A TSC delta converts to nanoseconds with Xen's fixed-point scale: shift the delta left by
//! `shift` (right when negative), multiply by `mul`, keep the upper 32 bits of the product
//! (`mul` is a 0.32 fraction). Guests apply exactly this with `tsc_to_system_mul` and
//! `tsc_shift`, so hv and its guests agree on the time.

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// A TSC-to-nanoseconds scale in Xen's `vcpu_time_info` form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscScale {
    /// 0.32 fixed-point multiplier.
    pub mul: u32,
    /// Binary shift applied to the delta before multiplying.
    pub shift: i8,
}

impl TscScale {
    /// The scale for a TSC running at `hz` ticks per second (`hz` > 0).
    ///
    /// The delta is pre-shifted until the scaled frequency lies in (1e9, 2e9], so that
    /// `mul = 1e9 / scaled_hz` is a fraction below 1 with full precision.
    pub fn from_hz(hz: u64) -> Option<Self> {
        if hz == 0 {
            return None;
        }
        let mut scaled = hz;
        let mut shift: i8 = 0;
        while scaled > 2 * NS_PER_SEC {
            scaled >>= 1;
            shift -= 1;
        }
        while scaled <= NS_PER_SEC {
            scaled <<= 1;
            shift += 1;
        }
        let mul = ((NS_PER_SEC as u128) << 32) / scaled as u128;
        Some(Self {
            mul: u32::try_from(mul).ok()?,
            shift,
        })
    }

    /// Nanoseconds in `delta` TSC ticks.
    pub fn ticks_to_ns(self, delta: u64) -> u64 {
        let shifted = if self.shift >= 0 {
            (delta as u128) << self.shift
        } else {
            (delta as u128) >> self.shift.unsigned_abs()
        };
        ((shifted * self.mul as u128) >> 32) as u64
    }
}

/// A calendar date and time (UTC), as a PC's real-time clock holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalendarTime {
    /// Full year, e.g. 2026.
    pub year: u32,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=59.
    pub second: u32,
}

impl CalendarTime {
    /// Seconds since 1970-01-01 00:00 UTC, or `None` for an impossible date.
    pub fn unix_seconds(&self) -> Option<u64> {
        let (y, m, d) = (self.year, self.month, self.day);
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        if self.hour > 23 || self.minute > 59 || self.second > 59 {
            return None;
        }
        // Days from the civil date, counting years from March so the leap day comes last.
        let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
        let era = y / 400;
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = u64::from(era) * 146_097 + u64::from(doe) - 719_468;
        Some(days * 86_400 + u64::from(self.hour * 3600 + self.minute * 60 + self.second))
    }
}

/// Decodes one BCD byte of the RTC (two decimal digits).
pub fn from_bcd(v: u8) -> u32 {
    u32::from(v >> 4) * 10 + u32::from(v & 0xf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_is_one_second() {
        for hz in [
            1_000_000,
            100_000_000,
            999_999_999,
            1_000_000_000,
            2_400_000_000,
            5_123_456_789,
        ] {
            let s = TscScale::from_hz(hz).unwrap();
            let ns = s.ticks_to_ns(hz);
            assert!(ns.abs_diff(NS_PER_SEC) <= 2, "hz {hz}: {ns} ns");
        }
    }

    #[test]
    fn large_deltas_do_not_overflow() {
        let s = TscScale::from_hz(3_000_000_000).unwrap();
        let day = 3_000_000_000u64 * 86_400;
        let ns = s.ticks_to_ns(day);
        assert!(ns.abs_diff(86_400 * NS_PER_SEC) < 1_000_000, "{ns}");
    }

    #[test]
    fn calendar_to_unix_time() {
        let t = |year, month, day, hour, minute, second| CalendarTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        };
        assert_eq!(t(1970, 1, 1, 0, 0, 0).unix_seconds(), Some(0));
        assert_eq!(t(2000, 3, 1, 0, 0, 0).unix_seconds(), Some(951_868_800));
        assert_eq!(
            t(2026, 11, 22, 2, 56, 42).unix_seconds(),
            Some(1_795_316_202)
        );
        assert_eq!(t(2024, 2, 29, 12, 0, 0).unix_seconds(), Some(1_709_208_000));
        assert_eq!(t(2026, 13, 1, 0, 0, 0).unix_seconds(), None);
        assert_eq!(t(1969, 12, 31, 23, 59, 59).unix_seconds(), None);
        assert_eq!(from_bcd(0x59), 59);
    }

    #[test]
    fn zero_hz_is_rejected() {
        assert_eq!(TscScale::from_hz(0), None);
    }
}
