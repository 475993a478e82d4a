//! The fairness modes, their portable parts: the arguments of `burn` (a CPU-bound loop that
//! never blocks, for a given span of system time, then reports the work it did) and
//! `cpu-share` (the control domain samples every domain's CPU time twice and prints what each
//! used in between), the unit of work a burner repeats, and the per-domain figures between
//! two samples.

use alloc::vec::Vec;
use core::fmt;

use hypercall_abi::DomId;

use crate::pair::BadArgument;

/// `burn [ms=N]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurnArgs {
    /// How long to burn, in milliseconds of system time from the start of the mode.
    pub ms: u64,
}

/// `cpu-share [wait=MS] [span=MS]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuShareArgs {
    /// Milliseconds to sleep before the first sample (for the other domains to start).
    pub wait_ms: u64,
    /// Milliseconds between the two samples.
    pub span_ms: u64,
}

impl BurnArgs {
    /// Burn time without `ms=`.
    pub const DEFAULT_MS: u64 = 3_000;

    /// Parses the words after `burn`; words other than `ms=N` are ignored.
    pub fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Result<Self, BadArgument<'a>> {
        let mut ms = Self::DEFAULT_MS;
        parse_millis(words, &mut [("ms", &mut ms)])?;
        Ok(BurnArgs { ms })
    }
}

impl CpuShareArgs {
    /// Sleep before the first sample without `wait=`.
    pub const DEFAULT_WAIT_MS: u64 = 500;
    /// Span between the samples without `span=`.
    pub const DEFAULT_SPAN_MS: u64 = 2_000;

    /// Parses the words after `cpu-share`; words other than `wait=` and `span=` are ignored.
    pub fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Result<Self, BadArgument<'a>> {
        let (mut wait_ms, mut span_ms) = (Self::DEFAULT_WAIT_MS, Self::DEFAULT_SPAN_MS);
        parse_millis(words, &mut [("wait", &mut wait_ms), ("span", &mut span_ms)])?;
        if span_ms == 0 {
            return Err(BadArgument("span=0"));
        }
        Ok(CpuShareArgs { wait_ms, span_ms })
    }
}

/// Sets each `key=N` of `keys` the words name; a value that is not a number (or too large
/// to be counted in nanoseconds) is the bad argument.
fn parse_millis<'a>(
    words: impl Iterator<Item = &'a str>,
    keys: &mut [(&str, &mut u64)],
) -> Result<(), BadArgument<'a>> {
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        if let Some((_, slot)) = keys.iter_mut().find(|(k, _)| *k == key) {
            **slot = value
                .parse::<u64>()
                .ok()
                .filter(|ms| ms.checked_mul(1_000_000).is_some())
                .ok_or(BadArgument(word))?;
        }
    }
    Ok(())
}

/// Steps of the generator in one round of [`work_round`].
pub const ROUND_STEPS: u32 = 1_000;

/// One round of a burner's work: [`ROUND_STEPS`] steps of a 64-bit linear congruential
/// generator (Knuth's MMIX constants) from `x`. Pure arithmetic: no memory, no hypercall.
pub fn work_round(mut x: u64) -> u64 {
    for _ in 0..ROUND_STEPS {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
    }
    x
}

/// What one domain used of the CPU between two samples, as `cpu-share` prints it:
/// `cpu-share: d<id> used <us> us of <us> us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The domain.
    pub domain: DomId,
    /// Its CPU time between the samples, in nanoseconds.
    pub used_ns: u64,
    /// System time between the samples, in nanoseconds.
    pub span_ns: u64,
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu-share: d{} used {} us of {} us",
            self.domain,
            self.used_ns / 1_000,
            self.span_ns / 1_000
        )
    }
}

/// Each domain's use between `before` and `after` (pairs of domain and total CPU time, in
/// nanoseconds), over `span_ns`. Only domains in both samples count; a total that went
/// backwards (it cannot, but the figures come from the hypervisor) counts as zero.
pub fn usage(before: &[(DomId, u64)], after: &[(DomId, u64)], span_ns: u64) -> Vec<Usage> {
    after
        .iter()
        .filter_map(|&(domain, t1)| {
            let &(_, t0) = before.iter().find(|(d, _)| *d == domain)?;
            Some(Usage {
                domain,
                used_ns: t1.saturating_sub(t0),
                span_ns,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_takes_its_span() {
        assert_eq!(
            BurnArgs::parse("ms=250 x".split(' ')),
            Ok(BurnArgs { ms: 250 })
        );
        assert_eq!(
            BurnArgs::parse(core::iter::empty()),
            Ok(BurnArgs {
                ms: BurnArgs::DEFAULT_MS
            })
        );
        assert_eq!(
            BurnArgs::parse("ms=soon".split(' ')),
            Err(BadArgument("ms=soon"))
        );
        let huge = "ms=18446744073709551";
        assert_eq!(BurnArgs::parse([huge].into_iter()), Err(BadArgument(huge)));
    }

    #[test]
    fn cpu_share_takes_wait_and_span() {
        assert_eq!(
            CpuShareArgs::parse("span=3000 wait=10".split(' ')),
            Ok(CpuShareArgs {
                wait_ms: 10,
                span_ms: 3000
            })
        );
        assert_eq!(
            CpuShareArgs::parse("other".split(' ')),
            Ok(CpuShareArgs {
                wait_ms: CpuShareArgs::DEFAULT_WAIT_MS,
                span_ms: CpuShareArgs::DEFAULT_SPAN_MS
            })
        );
        assert_eq!(
            CpuShareArgs::parse("span=0".split(' ')),
            Err(BadArgument("span=0"))
        );
        assert_eq!(
            CpuShareArgs::parse("wait=-1".split(' ')),
            Err(BadArgument("wait=-1"))
        );
    }

    #[test]
    fn work_rounds_depend_on_their_input() {
        let a = work_round(1);
        assert_ne!(a, 1);
        assert_eq!(work_round(1), a);
        assert_ne!(work_round(2), a);
    }

    #[test]
    fn usage_pairs_domains_by_id() {
        let before = [(0, 100), (1, 1_000), (2, 5_000)];
        let after = [(0, 150), (2, 9_000), (1, 3_500), (3, 70)];
        assert_eq!(
            usage(&before, &after, 10_000),
            [
                Usage {
                    domain: 0,
                    used_ns: 50,
                    span_ns: 10_000
                },
                Usage {
                    domain: 2,
                    used_ns: 4_000,
                    span_ns: 10_000
                },
                Usage {
                    domain: 1,
                    used_ns: 2_500,
                    span_ns: 10_000
                },
            ]
        );
        assert_eq!(usage(&[(1, 10)], &[(1, 4)], 1)[0].used_ns, 0);
    }

    #[test]
    fn usage_line() {
        let u = Usage {
            domain: 2,
            used_ns: 1_234_567,
            span_ns: 3_000_000_000,
        };
        assert_eq!(u.to_string(), "cpu-share: d2 used 1234 us of 3000000 us");
    }
}
