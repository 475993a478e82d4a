//! Benchmark bookkeeping: the command line's figure filter, the arithmetic that turns TSC
//! readings into per-iteration figures, and the console lines that carry them to the host.
//! `cargo xtask bench` parses these lines with [`parse_line`], so the format lives here once.
//!
//! The lines (one per figure, then one end line):
//!
//! ```text
//! BENCH name=<name> iters=<n> tsc_per_iter=<d.dd> loop_tsc=<d.dd> [ns_per_iter=<d.dd>] [bytes=<n>]
//! BENCH-SKIP name=<name> reason=<text to the end of the line>
//! pvguest: BENCH DONE measured=<n> skipped=<m>
//! ```
//!
//! `tsc_per_iter` is the TSC ticks one iteration of the operation took, with `loop_tsc` (the
//! measured cost of one iteration of the same timed loop with an empty body) already
//! subtracted; fixed costs (reading the TSC, setting a loop up) cancel because each loop is
//! timed over `iters` and `2 * iters` iterations and only the difference counts. Under QEMU's
//! `-icount shift=0` a TSC tick is one guest instruction, the hypervisor's included.
//! `ns_per_iter` is the same figure in nanoseconds by the PV clock's TSC scale; it is absent
//! when the hypervisor publishes no scale. `bytes` is present on figures that move data: the
//! bytes one iteration moves, from which the host derives a throughput. Values are
//! fixed-point with two decimals. Keys may come in any order and unknown keys are ignored.

use core::fmt;

/// The figures of the benchmark mode when pvguest runs as a PVH (HVM) guest, whose
/// hypercalls go through `vmcall`: `cargo xtask bench` boots that run under Bochs (VT-x).
pub const PVH_FIGURES: &[&str] = &["hvm_vmcall_xen_version"];

/// Starts a figure's line.
pub const FIGURE_TAG: &str = "BENCH name=";
/// Starts a skipped figure's line.
pub const SKIP_TAG: &str = "BENCH-SKIP name=";
/// Starts the last line of a benchmark run.
pub const DONE_LINE: &str = "pvguest: BENCH DONE";

/// A value in hundredths: `28100` is `281.00`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Centi(pub u64);

impl Centi {
    /// `total / iters` with two decimals, rounded to nearest (0 when `iters` is 0).
    pub fn per_iter(total: u64, iters: u64) -> Centi {
        if iters == 0 {
            return Centi(0);
        }
        let scaled = u128::from(total) * 100;
        let iters = u128::from(iters);
        Centi(((scaled + iters / 2) / iters).min(u128::from(u64::MAX)) as u64)
    }

    /// The value as a float (for the host's tables).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 100.0
    }

    /// Parses `123`, `123.4` or `123.45` (more decimals are refused).
    pub fn parse(text: &str) -> Option<Centi> {
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty()
            || frac.len() > 2
            || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        {
            return None;
        }
        let whole: u64 = whole.parse().ok()?;
        let frac: u64 = match frac.len() {
            0 => 0,
            1 => frac.parse::<u64>().ok()? * 10,
            _ => frac.parse().ok()?,
        };
        whole.checked_mul(100)?.checked_add(frac).map(Centi)
    }
}

impl fmt::Display for Centi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// Which figures a run measures: `bench` alone measures all, `bench filter=TEXT` those whose
/// name contains TEXT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter<'a>(Option<&'a str>);

impl<'a> Filter<'a> {
    /// Every figure.
    pub const ALL: Filter<'static> = Filter(None);

    /// Figures whose name contains `text` (every figure when `None` or empty).
    pub fn new(text: Option<&'a str>) -> Filter<'a> {
        Filter(text.filter(|t| !t.is_empty()))
    }

    /// The `filter=` word of the command line, if any (other words are ignored).
    pub fn from_cmdline(cmdline: &'a [u8]) -> Filter<'a> {
        let text = core::str::from_utf8(cmdline).unwrap_or("");
        Filter::new(
            text.split_ascii_whitespace()
                .find_map(|word| word.strip_prefix("filter=")),
        )
    }

    /// Whether the figure `name` is measured.
    pub fn selects(&self, name: &str) -> bool {
        self.0.is_none_or(|f| name.contains(f))
    }
}

/// TSC readings of one figure: the ticks `iters` iterations of the operation's loop and of
/// the empty loop took. The guest takes each as the difference between the fastest of
/// several samples of `2 * iters` and of `iters` iterations, which cancels the fixed costs
/// (the fastest sample is the one the fewest unrelated interrupts landed in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measurement {
    /// Iterations per sample.
    pub iters: u64,
    /// TSC ticks of `iters` iterations of the operation's loop.
    pub op_ticks: u64,
    /// TSC ticks of `iters` iterations of the empty loop.
    pub empty_ticks: u64,
}

impl Measurement {
    /// Ticks per iteration of the operation alone.
    pub fn tsc_per_iter(&self) -> Centi {
        Centi::per_iter(self.op_ticks.saturating_sub(self.empty_ticks), self.iters)
    }

    /// Ticks per iteration of the empty loop.
    pub fn loop_tsc(&self) -> Centi {
        Centi::per_iter(self.empty_ticks, self.iters)
    }
}

/// One figure's line; `ns` converts TSC ticks to nanoseconds (`None`: no clock scale).
#[derive(Clone, Copy, Debug)]
pub struct FigureLine<'a, S: Fn(u64) -> u64> {
    /// The figure's name.
    pub name: &'a str,
    /// What was measured.
    pub m: Measurement,
    /// TSC ticks to nanoseconds.
    pub ns: Option<S>,
    /// Bytes one iteration moves (figures that move data).
    pub bytes: Option<u64>,
}

impl<S: Fn(u64) -> u64> fmt::Display for FigureLine<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{FIGURE_TAG}{} iters={} tsc_per_iter={} loop_tsc={}",
            self.name,
            self.m.iters,
            self.m.tsc_per_iter(),
            self.m.loop_tsc()
        )?;
        if let Some(ns) = &self.ns {
            let net = self.m.op_ticks.saturating_sub(self.m.empty_ticks);
            write!(f, " ns_per_iter={}", Centi::per_iter(ns(net), self.m.iters))?;
        }
        if let Some(bytes) = self.bytes {
            write!(f, " bytes={bytes}")?;
        }
        Ok(())
    }
}

/// A skipped figure's line.
#[derive(Clone, Copy, Debug)]
pub struct SkipLine<'a, R: fmt::Display> {
    /// The figure's name.
    pub name: &'a str,
    /// Why it was not measured.
    pub reason: R,
}

impl<R: fmt::Display> fmt::Display for SkipLine<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SKIP_TAG}{} reason={}", self.name, self.reason)
    }
}

/// The end line.
#[derive(Clone, Copy, Debug)]
pub struct DoneLine {
    /// Figures measured.
    pub measured: u32,
    /// Figures skipped.
    pub skipped: u32,
}

impl fmt::Display for DoneLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{DONE_LINE} measured={} skipped={}",
            self.measured, self.skipped
        )
    }
}

/// A benchmark line as the host reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A measured figure.
    Figure {
        name: &'a str,
        iters: u64,
        tsc_per_iter: Centi,
        loop_tsc: Centi,
        ns_per_iter: Option<Centi>,
        bytes: Option<u64>,
    },
    /// A figure the guest could not measure.
    Skipped { name: &'a str, reason: &'a str },
}

/// Why a line that looks like a benchmark line is not one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError<'a> {
    /// A required key is absent.
    Missing(&'static str),
    /// A key's value does not parse.
    Bad(&'a str),
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Missing(key) => write!(f, "no {key}="),
            ParseError::Bad(word) => write!(f, "bad value in {word:?}"),
        }
    }
}

/// Reads a benchmark line anywhere in `line` (a hypervisor's console may prefix the guest's
/// output); `None` when the line is not one.
pub fn parse_line(line: &str) -> Option<Result<Parsed<'_>, ParseError<'_>>> {
    if let Some(at) = line.find(SKIP_TAG) {
        let rest = &line[at + SKIP_TAG.len()..];
        let (name, reason) = rest.split_once(" reason=").unwrap_or((rest, ""));
        return Some(Ok(Parsed::Skipped {
            name: name.trim(),
            reason,
        }));
    }
    let at = line.find(FIGURE_TAG)?;
    Some(parse_figure(&line[at + "BENCH ".len()..]))
}

fn parse_figure(fields: &str) -> Result<Parsed<'_>, ParseError<'_>> {
    let (mut name, mut iters, mut tsc, mut loop_tsc, mut ns, mut bytes) =
        (None, None, None, None, None, None);
    for word in fields.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let centi = || Centi::parse(value).ok_or(ParseError::Bad(word));
        match key {
            "name" if !value.is_empty() => name = Some(value),
            "iters" => iters = Some(value.parse().map_err(|_| ParseError::Bad(word))?),
            "tsc_per_iter" => tsc = Some(centi()?),
            "loop_tsc" => loop_tsc = Some(centi()?),
            "ns_per_iter" => ns = Some(centi()?),
            "bytes" => bytes = Some(value.parse().map_err(|_| ParseError::Bad(word))?),
            _ => {}
        }
    }
    Ok(Parsed::Figure {
        name: name.ok_or(ParseError::Missing("name"))?,
        iters: iters.ok_or(ParseError::Missing("iters"))?,
        tsc_per_iter: tsc.ok_or(ParseError::Missing("tsc_per_iter"))?,
        loop_tsc: loop_tsc.ok_or(ParseError::Missing("loop_tsc"))?,
        ns_per_iter: ns,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    fn m(iters: u64, op: u64, empty: u64) -> Measurement {
        Measurement {
            iters,
            op_ticks: op,
            empty_ticks: empty,
        }
    }

    #[test]
    fn per_iteration_rounds_to_hundredths() {
        assert_eq!(Centi::per_iter(281_000, 1000), Centi(28100));
        assert_eq!(Centi::per_iter(2, 3), Centi(67));
        assert_eq!(Centi::per_iter(1, 3), Centi(33));
        assert_eq!(Centi::per_iter(5, 0), Centi(0));
        assert_eq!(Centi::per_iter(u64::MAX, 1), Centi(u64::MAX));
        assert_eq!(Centi(28105).to_string(), "281.05");
        assert_eq!(Centi(7).to_string(), "0.07");
    }

    #[test]
    fn centi_parses_what_it_prints() {
        for v in [0, 7, 100, 28105, 123_456_789] {
            assert_eq!(Centi::parse(&Centi(v).to_string()), Some(Centi(v)));
        }
        assert_eq!(Centi::parse("12"), Some(Centi(1200)));
        assert_eq!(Centi::parse("12.5"), Some(Centi(1250)));
        for bad in ["", ".5", "1.234", "-1", "1e3", "1.2.3", "x"] {
            assert_eq!(Centi::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_empty_loop_is_subtracted() {
        let x = m(1000, 284_000, 3_000);
        assert_eq!(x.tsc_per_iter(), Centi(28100));
        assert_eq!(x.loop_tsc(), Centi(300));
        // A noisy empty loop slower than the operation gives 0, never a wrapped value.
        assert_eq!(m(10, 5, 9).tsc_per_iter(), Centi(0));
    }

    #[test]
    fn filter_comes_from_the_command_line() {
        assert_eq!(Filter::from_cmdline(b"bench"), Filter::ALL);
        assert_eq!(Filter::from_cmdline(b"bench filter="), Filter::ALL);
        let f = Filter::from_cmdline(b"bench filter=evtchn");
        assert!(f.selects("evtchn_status") && f.selects("evtchn_pingpong"));
        assert!(!f.selects("mmu_update_1"));
        assert!(Filter::ALL.selects("anything"));
        assert_eq!(Filter::new(Some("")), Filter::ALL);
        assert!(!Filter::new(Some("xen")).selects("evtchn_status"));
    }

    #[test]
    fn a_figure_line_round_trips() {
        let line = FigureLine {
            name: "hypercall_xen_version",
            m: m(1000, 284_000, 3_000),
            ns: Some(|t: u64| t / 2),
            bytes: None,
        }
        .to_string();
        assert_eq!(
            line,
            "BENCH name=hypercall_xen_version iters=1000 tsc_per_iter=281.00 loop_tsc=3.00 \
             ns_per_iter=140.50"
        );
        let prefixed = format!("(d0) {line}");
        assert_eq!(
            parse_line(&prefixed),
            Some(Ok(Parsed::Figure {
                name: "hypercall_xen_version",
                iters: 1000,
                tsc_per_iter: Centi(28100),
                loop_tsc: Centi(300),
                ns_per_iter: Some(Centi(14050)),
                bytes: None,
            }))
        );
        let no_clock = FigureLine::<fn(u64) -> u64> {
            name: "x",
            m: m(4, 8, 0),
            ns: None,
            bytes: None,
        }
        .to_string();
        assert_eq!(
            no_clock,
            "BENCH name=x iters=4 tsc_per_iter=2.00 loop_tsc=0.00"
        );
        assert!(matches!(
            parse_line(&no_clock),
            Some(Ok(Parsed::Figure {
                ns_per_iter: None,
                ..
            }))
        ));
    }

    #[test]
    fn a_data_figure_carries_its_bytes() {
        let line = FigureLine::<fn(u64) -> u64> {
            name: "grant_copy_4k",
            m: m(10, 20_480, 0),
            ns: None,
            bytes: Some(4096),
        }
        .to_string();
        assert_eq!(
            line,
            "BENCH name=grant_copy_4k iters=10 tsc_per_iter=2048.00 loop_tsc=0.00 bytes=4096"
        );
        assert!(matches!(
            parse_line(&line),
            Some(Ok(Parsed::Figure {
                bytes: Some(4096),
                ..
            }))
        ));
        assert_eq!(
            parse_line("BENCH name=x iters=1 tsc_per_iter=1 loop_tsc=0 bytes=4k"),
            Some(Err(ParseError::Bad("bytes=4k")))
        );
    }

    #[test]
    fn a_skip_line_round_trips() {
        let line = SkipLine {
            name: "evtchn_pingpong",
            reason: "bind_ipi: -38 (ENOSYS)",
        }
        .to_string();
        assert_eq!(
            parse_line(&line),
            Some(Ok(Parsed::Skipped {
                name: "evtchn_pingpong",
                reason: "bind_ipi: -38 (ENOSYS)"
            }))
        );
    }

    #[test]
    fn other_lines_are_not_benchmark_lines() {
        assert_eq!(parse_line("pvguest: started: nr_pages 0x4000"), None);
        assert_eq!(
            parse_line(
                &DoneLine {
                    measured: 4,
                    skipped: 1
                }
                .to_string()
            ),
            None
        );
        assert_eq!(
            DoneLine {
                measured: 4,
                skipped: 1
            }
            .to_string(),
            "pvguest: BENCH DONE measured=4 skipped=1"
        );
    }

    #[test]
    fn broken_figure_lines_are_errors() {
        assert_eq!(
            parse_line("BENCH name=x iters=10 loop_tsc=1"),
            Some(Err(ParseError::Missing("tsc_per_iter")))
        );
        assert_eq!(
            parse_line("BENCH name=x iters=ten tsc_per_iter=1 loop_tsc=1"),
            Some(Err(ParseError::Bad("iters=ten")))
        );
        // Unknown keys and words without '=' are ignored; keys may come in any order.
        assert!(matches!(
            parse_line("BENCH name=x new=1 junk loop_tsc=1 tsc_per_iter=2 iters=3"),
            Some(Ok(Parsed::Figure { iters: 3, .. }))
        ));
    }
}
