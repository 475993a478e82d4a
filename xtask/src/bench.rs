//! `cargo xtask bench`: boots pvguest's benchmark mode on hv (and with `--vs-xen` on Xen 4.17)
//! under the same QEMU, machine, CPU model and icount setting, and reports each figure side
//! by side: a terminal table, `target/bench/results.json`, an SVG bar chart, and in icount
//! mode a regression gate against the committed `bench/baseline.json`.
//!
//! The guest's figures arrive as `BENCH` lines (format in `pvguest::bench`). Under
//! `-icount shift=0` a TSC tick is one guest instruction, so the figures are instruction
//! counts (unit `insns`) that repeat exactly run to run; in wall mode they are nanoseconds by
//! the PV clock. Boot time to the guest's first console line is wall clock measured here.
//!
//! The HVM figures (`pvguest::bench::PVH_FIGURES`, hypercalls through `vmcall`) need VT-x,
//! which QEMU TCG lacks: in icount mode they come from a third boot, pvguest as a PVH guest
//! of hv under Bochs, whose TSC also counts one tick per instruction executed (guest and hv
//! alike, `clock: sync=none`), so they are instruction counts too and repeat run to run.
//! Xen has no figure beside them (Xen 4.17 is not booted under Bochs).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lexopt::ValueExt;
use pvguest::bench::{parse_line, Filter, Parsed, DONE_LINE, PVH_FIGURES};
use serde::{Deserialize, Serialize};

use crate::images::{self, Image};
use crate::runner::{BootSpec, Emulator, Machine, Session, DEFAULT_BOCHS_CPU};
use crate::xen::{self, XenBoot};
use crate::{bundle, paths, tools};
use hv::bundle::DomainKind;

/// The machine both hypervisors boot on (Xen needs a PC platform; hv boots on either).
pub const MACHINE: Machine = Machine::Q35;
/// Guest RAM of the QEMU machine, for both runs.
pub const MEMORY_MIB: u32 = 512;
/// The part of pvguest's first console line that starts the boot-time clock's stop.
pub const FIRST_LINE_MARKER: &str = "pvguest: started:";
/// The boot-time figure.
pub const BOOT_FIGURE: &str = "boot_to_first_line";
/// How much worse than the baseline a figure may get before the gate fails.
pub const GATE_TOLERANCE: f64 = 0.10;
/// The committed baseline, relative to the workspace root.
pub const BASELINE: &str = "bench/baseline.json";

/// How figures are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// QEMU `-icount shift=0`: guest instruction counts, deterministic.
    Icount,
    /// Real time: nanoseconds, noisy.
    Wall,
}

/// A figure's unit, spelled as in results.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    #[serde(rename = "insns")]
    Insns,
    #[serde(rename = "ns")]
    Ns,
    #[serde(rename = "ms")]
    Ms,
    #[serde(rename = "MB/s")]
    MbPerS,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Insns => "insns",
            Unit::Ns => "ns",
            Unit::Ms => "ms",
            Unit::MbPerS => "MB/s",
        }
    }

    /// Whether a larger value is the better one (throughput).
    pub fn higher_is_better(self) -> bool {
        self == Unit::MbPerS
    }

    /// Whether the figure repeats exactly run to run, so the gate can hold it to a baseline.
    pub fn deterministic(self) -> bool {
        self == Unit::Insns
    }
}

/// One row of results.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub unit: Unit,
    pub hv: f64,
    pub xen: Option<f64>,
    pub ratio: Option<f64>,
}

/// results.json (and the baseline).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub emulator: String,
    pub mode: Mode,
    pub figures: Vec<Figure>,
}

/// What one hypervisor's run gave: figures in the guest's order, skipped figures with the
/// guest's reason.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    pub figures: Vec<(String, Unit, f64)>,
    pub skipped: Vec<(String, String)>,
}

impl Measured {
    fn get(&self, name: &str) -> Option<(Unit, f64)> {
        self.figures
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|&(_, unit, value)| (unit, value))
    }
}

/// Reads the guest's `BENCH` lines from a console log: every figure (in `mode`'s unit) and
/// every skip. The log must contain the end line, and no figure may appear twice.
pub fn parse_log<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    mode: Mode,
) -> Result<Measured, String> {
    let mut measured = Measured::default();
    let mut done = false;
    for line in lines {
        if line.contains(DONE_LINE) {
            done = true;
            continue;
        }
        let Some(parsed) = parse_line(line) else {
            continue;
        };
        let parsed = parsed.map_err(|e| format!("bad benchmark line {line:?}: {e}"))?;
        let name = match parsed {
            Parsed::Figure { name, .. } | Parsed::Skipped { name, .. } => name,
        };
        if measured.get(name).is_some() || measured.skipped.iter().any(|(n, _)| n == name) {
            return Err(format!("figure {name} reported twice"));
        }
        match parsed {
            Parsed::Figure {
                tsc_per_iter,
                ns_per_iter,
                bytes,
                ..
            } => {
                // Nanoseconds per iteration: under `-icount shift=0` QEMU's virtual clock
                // advances one nanosecond per guest instruction, so the count is the time.
                let per_iter = match mode {
                    Mode::Icount => {
                        measured.figures.push((
                            name.to_string(),
                            Unit::Insns,
                            tsc_per_iter.as_f64(),
                        ));
                        Some(tsc_per_iter.as_f64())
                    }
                    Mode::Wall => match ns_per_iter {
                        Some(ns) => {
                            measured
                                .figures
                                .push((name.to_string(), Unit::Ns, ns.as_f64()));
                            Some(ns.as_f64())
                        }
                        None => {
                            measured.skipped.push((
                                name.to_string(),
                                "no ns_per_iter (the hypervisor publishes no TSC scale)".into(),
                            ));
                            None
                        }
                    },
                };
                if let (Some(bytes), Some(ns)) = (bytes, per_iter.filter(|&ns| ns > 0.0)) {
                    measured.figures.push((
                        throughput_name(name),
                        Unit::MbPerS,
                        mb_per_s(bytes, ns),
                    ));
                }
            }
            Parsed::Skipped { reason, .. } => measured
                .skipped
                .push((name.to_string(), reason.to_string())),
        }
    }
    if !done {
        return Err(format!(
            "no {DONE_LINE:?} line: the benchmark did not finish"
        ));
    }
    Ok(measured)
}

/// The throughput figure derived from a figure that moves data (its line's `bytes=`).
pub fn throughput_name(name: &str) -> String {
    format!("{name}_mbps")
}

/// `bytes` per `ns` nanoseconds in MB/s (10^6 bytes per second), to one decimal.
pub fn mb_per_s(bytes: u64, ns: f64) -> f64 {
    (bytes as f64 / ns * 1000.0 * 10.0).round() / 10.0
}

/// Adds the boot-time figure (milliseconds, one decimal) when `filter` selects it.
fn add_boot_time(measured: &mut Measured, boot: Option<Duration>, filter: Filter<'_>) {
    if let (Some(boot), true) = (boot, filter.selects(BOOT_FIGURE)) {
        let ms = (boot.as_secs_f64() * 10_000.0).round() / 10.0;
        measured.figures.push((BOOT_FIGURE.into(), Unit::Ms, ms));
    }
}

/// hv/Xen, to three decimals; `None` without both or with a Xen figure of 0.
pub fn ratio(hv: f64, xen: Option<f64>) -> Option<f64> {
    let xen = xen.filter(|&x| x > 0.0)?;
    Some((hv / xen * 1000.0).round() / 1000.0)
}

/// One line of the terminal table (hv may be missing while hv cannot run the guest).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub unit: Unit,
    pub hv: Option<f64>,
    pub xen: Option<f64>,
}

/// The table's rows: hv's figures in order, then figures only Xen has.
pub fn rows(hv: Option<&Measured>, xen: Option<&Measured>) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for m in [hv, xen].into_iter().flatten() {
        for (name, unit, _) in &m.figures {
            if !rows.iter().any(|r| &r.name == name) {
                rows.push(Row {
                    name: name.clone(),
                    unit: *unit,
                    hv: hv.and_then(|h| h.get(name)).map(|(_, v)| v),
                    xen: xen.and_then(|x| x.get(name)).map(|(_, v)| v),
                });
            }
        }
    }
    rows
}

/// results.json from the rows (every row must have an hv figure).
pub fn results(emulator: &str, mode: Mode, rows: &[Row]) -> Results {
    Results {
        emulator: emulator.to_string(),
        mode,
        figures: rows
            .iter()
            .filter_map(|r| {
                r.hv.map(|hv| Figure {
                    name: r.name.clone(),
                    unit: r.unit,
                    hv,
                    xen: r.xen,
                    ratio: ratio(hv, r.xen),
                })
            })
            .collect(),
    }
}

/// A figure to two decimals without trailing zeros; `-` when missing.
fn number(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) => {
            let text = format!("{v:.2}");
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

/// The terminal table: figure, unit, hv, Xen, hv/Xen.
pub fn table(rows: &[Row]) -> String {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.unit.name().to_string(),
                number(r.hv),
                number(r.xen),
                r.hv.and_then(|hv| ratio(hv, r.xen))
                    .map_or("-".into(), |q| format!("{q:.3}")),
            ]
        })
        .collect();
    let header = ["figure", "unit", "hv", "Xen", "hv/Xen"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&cells) {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
    }
    out
}

/// What the gate found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GateReport {
    /// Figures that got worse beyond the tolerance, or vanished: each fails the gate.
    pub regressions: Vec<String>,
    /// Worth knowing but not failing: improvements, new figures, a different emulator.
    pub notes: Vec<String>,
}

impl GateReport {
    pub fn passed(&self) -> bool {
        self.regressions.is_empty()
    }
}

/// Holds `current`'s deterministic hv figures to `baseline`'s: a figure more than
/// `tolerance` worse, or one the baseline has and the run (filtered by `filter`) lacks, is
/// a regression.
pub fn gate(
    current: &Results,
    baseline: &Results,
    filter: Filter<'_>,
    tolerance: f64,
) -> GateReport {
    let mut report = GateReport::default();
    if baseline.mode != current.mode {
        report.regressions.push(format!(
            "the baseline was measured in {:?} mode, this run in {:?} mode",
            baseline.mode, current.mode
        ));
        return report;
    }
    if baseline.emulator != current.emulator {
        report.notes.push(format!(
            "the baseline's emulator was {:?}, this run's is {:?}",
            baseline.emulator, current.emulator
        ));
    }
    let gated = |f: &&Figure| f.unit.deterministic() && filter.selects(&f.name);
    for base in baseline.figures.iter().filter(gated) {
        let Some(now) = current.figures.iter().find(|f| f.name == base.name) else {
            report
                .regressions
                .push(format!("{}: in the baseline but not measured", base.name));
            continue;
        };
        if now.unit != base.unit {
            report.regressions.push(format!(
                "{}: unit {} now, {} in the baseline",
                base.name,
                now.unit.name(),
                base.unit.name()
            ));
            continue;
        }
        // Positive when worse, as a fraction of the baseline.
        let worse = if base.hv == 0.0 {
            if now.hv == base.hv {
                0.0
            } else {
                f64::INFINITY
            }
        } else if base.unit.higher_is_better() {
            (base.hv - now.hv) / base.hv
        } else {
            (now.hv - base.hv) / base.hv
        };
        let line = format!(
            "{}: {} {} (baseline {}, {:+.1}%)",
            base.name,
            number(Some(now.hv)),
            base.unit.name(),
            number(Some(base.hv)),
            if base.unit.higher_is_better() {
                -worse
            } else {
                worse
            } * 100.0
        );
        if worse > tolerance {
            report.regressions.push(line);
        } else if worse < -tolerance {
            report.notes.push(format!(
                "{line}: better; update the baseline with --update-baseline"
            ));
        }
    }
    for now in current.figures.iter().filter(|f| f.unit.deterministic()) {
        if !baseline.figures.iter().any(|b| b.name == now.name) {
            report
                .notes
                .push(format!("{}: new, not in the baseline", now.name));
        }
    }
    report
}

/// The baseline after `current` replaced the figures it measured; the baseline's other
/// figures (left out by a filter) stay.
pub fn updated_baseline(old: Option<Results>, current: &Results) -> Results {
    let mut figures = current.figures.clone();
    if let Some(old) = old.filter(|o| o.mode == current.mode) {
        for f in old.figures {
            if !figures.iter().any(|n| n.name == f.name) {
                figures.push(f);
            }
        }
    }
    Results {
        emulator: current.emulator.clone(),
        mode: current.mode,
        figures,
    }
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Bar colours: hv, Xen.
const HV_COLOUR: &str = "#4e79a7";
const XEN_COLOUR: &str = "#f28e2b";

/// A horizontal bar chart, one group per figure: hv's bar above Xen's, both scaled to the
/// larger of the two (figures differ in unit and size, so each group has its own scale).
pub fn svg(results: &Results) -> String {
    const WIDTH: u32 = 760;
    const LABEL: u32 = 210;
    const BAR_MAX: f64 = 380.0;
    const BAR: u32 = 16;
    const GROUP: u32 = 2 * BAR + 22;
    const TOP: u32 = 64;
    let height = TOP + GROUP * results.figures.len() as u32 + 16;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let mode = match results.mode {
        Mode::Icount => "icount",
        Mode::Wall => "wall",
    };
    let _ = writeln!(
        out,
        "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">hv vs Xen 4.17 ({mode}; \
         lower is better unless MB/s)</text>"
    );
    let _ = writeln!(
        out,
        "<text x=\"10\" y=\"38\" fill=\"#555\">{}</text>",
        xml_escape(&results.emulator)
    );
    for (i, (label, colour)) in [("hv", HV_COLOUR), ("Xen 4.17", XEN_COLOUR)]
        .iter()
        .enumerate()
    {
        let x = LABEL + 120 * i as u32;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"46\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"57\">{label}</text>",
            x + 16
        );
    }
    for (i, f) in results.figures.iter().enumerate() {
        let y = TOP + GROUP * i as u32;
        let scale = f.xen.map_or(f.hv, |x| x.max(f.hv));
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{}\">{}</text><text x=\"10\" y=\"{}\" fill=\"#555\">{}{}</text>",
            y + BAR - 3,
            xml_escape(&f.name),
            y + 2 * BAR - 3,
            f.unit.name(),
            f.ratio
                .map_or(String::new(), |r| format!(", hv/Xen {r:.3}"))
        );
        for (j, (value, colour)) in [(Some(f.hv), HV_COLOUR), (f.xen, XEN_COLOUR)]
            .into_iter()
            .enumerate()
        {
            let bar_y = y + BAR * j as u32;
            let Some(value) = value else {
                let _ = writeln!(
                    out,
                    "<text x=\"{}\" y=\"{}\" fill=\"#555\">not measured</text>",
                    LABEL + 4,
                    bar_y + BAR - 4
                );
                continue;
            };
            let length = if scale > 0.0 {
                (value / scale * BAR_MAX).max(1.0)
            } else {
                1.0
            };
            let _ = writeln!(
                out,
                "<rect x=\"{LABEL}\" y=\"{bar_y}\" width=\"{length:.1}\" height=\"{}\" \
                 fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{}\">{}</text>",
                BAR - 2,
                f64::from(LABEL) + length + 6.0,
                bar_y + BAR - 4,
                number(Some(value))
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// `cargo xtask bench`'s options.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub vs_xen: bool,
    pub mode: Mode,
    pub filter: Option<String>,
    pub gate: bool,
    pub update_baseline: bool,
    /// Each boot's time limit.
    pub timeout: Duration,
    /// Stream both serial consoles.
    pub verbose: bool,
}

impl Options {
    /// Parses the options after `bench`; errors are usage errors.
    pub fn parse(parser: &mut lexopt::Parser) -> Result<Options, String> {
        let mut options = Options {
            vs_xen: false,
            mode: Mode::Icount,
            filter: None,
            gate: true,
            update_baseline: false,
            timeout: Duration::from_secs(600),
            verbose: false,
        };
        let mut modes = Vec::new();
        let err = |e: lexopt::Error| e.to_string();
        while let Some(arg) = parser.next().map_err(err)? {
            use lexopt::Arg::Long;
            match arg {
                Long("vs-xen") => options.vs_xen = true,
                Long("icount") => modes.push(Mode::Icount),
                Long("wall") => modes.push(Mode::Wall),
                Long("filter") => {
                    options.filter = Some(parser.value().map_err(err)?.string().map_err(err)?)
                }
                Long("no-gate") => options.gate = false,
                Long("update-baseline") => options.update_baseline = true,
                Long("timeout") => {
                    let text = parser.value().map_err(err)?.string().map_err(err)?;
                    options.timeout = match text.parse::<f64>() {
                        Ok(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
                        _ => return Err(format!("bad timeout {text:?} (seconds, more than 0)")),
                    };
                }
                Long("verbose") => options.verbose = true,
                other => return Err(other.unexpected().to_string()),
            }
        }
        match modes.as_slice() {
            [] => {}
            [mode] => options.mode = *mode,
            _ => return Err("--icount and --wall exclude each other".into()),
        }
        if options
            .filter
            .as_deref()
            .is_some_and(|f| f.contains(char::is_whitespace))
        {
            return Err("--filter takes one word".into());
        }
        if options.update_baseline && options.mode != Mode::Icount {
            return Err(
                "--update-baseline needs icount mode (the baseline is deterministic)".into(),
            );
        }
        Ok(options)
    }

    /// The guest's command line.
    pub fn guest_cmdline(&self) -> String {
        match &self.filter {
            Some(f) => format!("bench filter={f}"),
            None => "bench".into(),
        }
    }

    fn filter(&self) -> Filter<'_> {
        Filter::new(self.filter.as_deref())
    }
}

/// QEMU's version line and the settings both runs share.
fn emulator_description(mode: Mode) -> Result<String, String> {
    let out = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run qemu-system-x86_64 --version: {e}"))?;
    let version = String::from_utf8_lossy(&out.stdout);
    let version = version
        .lines()
        .next()
        .unwrap_or("QEMU (unknown version)")
        .replace("emulator version ", "");
    let icount = match mode {
        Mode::Icount => " -icount shift=0",
        Mode::Wall => "",
    };
    Ok(format!(
        "{version}, TCG -M {} -cpu max{icount}",
        MACHINE.name()
    ))
}

/// One hypervisor's run: its figures, or why there are none.
type RunResult = Result<Measured, String>;

fn run_on_hv(guest: &Path, options: &Options, out_dir: &Path) -> RunResult {
    let hv = images::build(Image::Hv, &paths::target_dir())?;
    let bundle = bundle::from_kernel(guest, &options.guest_cmdline(), &out_dir.join("bundle.bin"))?;
    let spec = BootSpec {
        emulator: Emulator::Qemu { machine: MACHINE },
        image: hv,
        cmdline: String::new(),
        bundle: Some(bundle),
        memory_mib: MEMORY_MIB,
        smp: 1,
        icount: options.mode == Mode::Icount,
        timeout: options.timeout,
        echo: options.verbose,
        serial_input: false,
    };
    let started = Instant::now();
    let mut session = Session::start(&spec)?;
    session.wait_for_line(FIRST_LINE_MARKER, options.timeout)?;
    let boot = started.elapsed();
    let report = session.finish();
    let mut measured = parse_log(report.lines.iter().map(String::as_str), options.mode)
        .map_err(|e| format!("{e}\n{}", report.describe()))?;
    if !report.outcome.success() {
        return Err(format!(
            "the figures arrived but hv did not end cleanly:\n{}",
            report.describe()
        ));
    }
    add_boot_time(&mut measured, Some(boot), options.filter());
    Ok(measured)
}

/// The HVM figures: pvguest booted as a PVH guest of hv under Bochs (icount mode only; `None`
/// when the mode or the filter leaves none of them).
fn run_on_hv_bochs(guest: &Path, options: &Options, out_dir: &Path) -> Option<RunResult> {
    let filter = options.filter();
    if options.mode != Mode::Icount || !PVH_FIGURES.iter().any(|f| filter.selects(f)) {
        return None;
    }
    Some((|| {
        tools::ensure(&tools::for_bochs())?;
        let hv = images::build(Image::Hv, &paths::target_dir())?;
        let bundle = bundle::from_kernel_as(
            guest,
            &options.guest_cmdline(),
            DomainKind::Pvh,
            &out_dir.join("bundle-pvh.bin"),
        )?;
        let spec = BootSpec {
            bundle: Some(bundle),
            timeout: options.timeout,
            echo: options.verbose,
            ..BootSpec::bochs(&hv)
        };
        let report = Session::run(&spec)?;
        let measured = parse_log(report.lines.iter().map(String::as_str), Mode::Icount)
            .map_err(|e| format!("{e}\n{}", report.describe()))?;
        if !report.outcome.success() {
            return Err(format!(
                "the HVM figures arrived but hv did not end cleanly:\n{}",
                report.describe()
            ));
        }
        Ok(measured)
    })())
}

fn run_on_xen(guest: &Path, options: &Options) -> RunResult {
    let cmdline = options.guest_cmdline();
    let boot = XenBoot {
        cmdline: &cmdline,
        timeout: options.timeout,
        echo: options.verbose,
        machine: Some(MACHINE),
        icount: options.mode == Mode::Icount,
        success_marker: DONE_LINE,
        failure_marker: pvguest::cmdline::USAGE,
        timed_marker: Some(FIRST_LINE_MARKER),
    };
    let run = xen::run_on_xen(guest, &boot)?;
    if !run.success {
        return Err(format!(
            "the benchmark did not finish on Xen:\n{}",
            run.describe()
        ));
    }
    let mut measured =
        parse_log(run.log.lines(), options.mode).map_err(|e| format!("{e}\n{}", run.describe()))?;
    add_boot_time(&mut measured, run.timed_marker_at, options.filter());
    Ok(measured)
}

fn print_skips(who: &str, measured: &RunResult) {
    match measured {
        Ok(m) => {
            for (name, reason) in &m.skipped {
                println!("{who}: {name} skipped: {reason}");
            }
        }
        Err(e) => println!("{who}: no figures: {e}"),
    }
}

fn write_json(path: &Path, results: &Results) -> Result<(), String> {
    let text = serde_json::to_string_pretty(results)
        .map_err(|e| format!("cannot serialise {}: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reads results.json or the baseline.
pub fn read_json(path: &Path) -> Result<Results, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Where the committed baseline lives.
pub fn baseline_path() -> PathBuf {
    paths::workspace_root().join(BASELINE)
}

/// Runs `cargo xtask bench`; an error means no usable figures, or a failed gate.
pub fn run(options: &Options) -> Result<(), String> {
    tools::ensure(&tools::for_qemu())?;
    let emulator = emulator_description(options.mode)?;
    let out_dir = paths::target_dir().join("bench");
    fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let guest = xen::pvguest_image_for_tests()?;
    println!(
        "bench: {emulator}; guest command line {:?}",
        options.guest_cmdline()
    );

    let mut hv = run_on_hv(&guest, options, &out_dir);
    let hvm = run_on_hv_bochs(&guest, options, &out_dir);
    if let Some(hvm) = &hvm {
        print_skips("hv (HVM, Bochs)", hvm);
    }
    if let (Ok(hv), Some(Ok(hvm))) = (&mut hv, &hvm) {
        hv.figures.extend(hvm.figures.iter().cloned());
        hv.skipped.extend(hvm.skipped.iter().cloned());
    }
    let xen = options.vs_xen.then(|| run_on_xen(&guest, options));
    print_skips("hv", &hv);
    if let Some(xen) = &xen {
        print_skips("Xen", xen);
    }
    let rows = rows(hv.as_ref().ok(), xen.as_ref().and_then(|x| x.as_ref().ok()));
    if !rows.is_empty() {
        println!();
        print!("{}", table(&rows));
        println!();
    }
    if let Some(Err(e)) = &xen {
        return Err(format!(
            "the Xen run failed: {}",
            e.lines().next().unwrap_or("")
        ));
    }
    if let Err(e) = &hv {
        return Err(format!(
            "the hv run failed, so no results were written: {}",
            e.lines().next().unwrap_or("")
        ));
    }

    let emulator = match hvm {
        Some(_) => format!(
            "{emulator}; {} figures: Bochs, cpu {DEFAULT_BOCHS_CPU}",
            PVH_FIGURES.join(", ")
        ),
        None => emulator,
    };
    let results = results(&emulator, options.mode, &rows);
    let json = out_dir.join("results.json");
    write_json(&json, &results)?;
    let chart = out_dir.join("results.svg");
    fs::write(&chart, svg(&results))
        .map_err(|e| format!("cannot write {}: {e}", chart.display()))?;
    println!("bench: wrote {} and {}", json.display(), chart.display());

    let baseline = baseline_path();
    if options.update_baseline {
        let old = baseline
            .is_file()
            .then(|| read_json(&baseline))
            .transpose()?;
        write_json(&baseline, &updated_baseline(old, &results))?;
        println!("bench: updated {}", baseline.display());
        return Ok(());
    }
    if !options.gate || options.mode != Mode::Icount {
        return Ok(());
    }
    if !baseline.is_file() {
        return Err(format!(
            "no baseline at {}: record one with `cargo xtask bench --update-baseline` \
             (or skip the gate with --no-gate)",
            baseline.display()
        ));
    }
    let report = gate(
        &results,
        &read_json(&baseline)?,
        options.filter(),
        GATE_TOLERANCE,
    );
    for note in &report.notes {
        println!("gate: note: {note}");
    }
    for regression in &report.regressions {
        println!("gate: REGRESSION: {regression}");
    }
    if report.passed() {
        println!(
            "gate: passed (no deterministic figure more than {:.0}% worse than {BASELINE})",
            GATE_TOLERANCE * 100.0
        );
        Ok(())
    } else {
        Err(format!(
            "the regression gate failed: {} figure(s) more than {:.0}% worse than {BASELINE} \
             (an intended change updates the baseline with --update-baseline in the same commit)",
            report.regressions.len(),
            GATE_TOLERANCE * 100.0
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HV_LOG: &str = "\
(XEN) [    0.100000] c0 I: building d0
(d0) pvguest: started: nr_pages 0x4000 cmdline \"bench\"
(d0) BENCH name=hypercall_xen_version iters=1000 tsc_per_iter=90.00 loop_tsc=2.01 ns_per_iter=45.50
(d0) BENCH name=bounce_ud2_iret iters=1000 tsc_per_iter=250.00 loop_tsc=2.01
(d0) BENCH-SKIP name=evtchn_pingpong reason=bind_ipi: -38
(d0) pvguest: BENCH DONE measured=2 skipped=1
(XEN) hv power-off: status=0";

    const XEN_LOG: &str = "\
pvguest: started: nr_pages 0x4000
BENCH name=hypercall_xen_version iters=1000 tsc_per_iter=287.00 loop_tsc=2.01 ns_per_iter=287.00
BENCH name=bounce_ud2_iret iters=1000 tsc_per_iter=716.00 loop_tsc=2.01 ns_per_iter=716.00
BENCH name=evtchn_pingpong iters=1000 tsc_per_iter=1010.01 loop_tsc=2.01 ns_per_iter=1010.01
pvguest: BENCH DONE measured=3 skipped=0";

    fn fig(name: &str, unit: Unit, hv: f64, xen: Option<f64>) -> Figure {
        Figure {
            name: name.into(),
            unit,
            hv,
            xen,
            ratio: ratio(hv, xen),
        }
    }

    fn results_of(figures: Vec<Figure>) -> Results {
        Results {
            emulator: "QEMU 7.2".into(),
            mode: Mode::Icount,
            figures,
        }
    }

    #[test]
    fn logs_give_figures_in_the_modes_unit() {
        let m = parse_log(HV_LOG.lines(), Mode::Icount).unwrap();
        assert_eq!(
            m.figures,
            vec![
                ("hypercall_xen_version".into(), Unit::Insns, 90.0),
                ("bounce_ud2_iret".into(), Unit::Insns, 250.0)
            ]
        );
        assert_eq!(
            m.skipped,
            vec![("evtchn_pingpong".into(), "bind_ipi: -38".into())]
        );
        let wall = parse_log(HV_LOG.lines(), Mode::Wall).unwrap();
        assert_eq!(
            wall.figures,
            vec![("hypercall_xen_version".into(), Unit::Ns, 45.5)]
        );
        assert_eq!(wall.skipped.len(), 2, "no ns figure counts as skipped");
    }

    #[test]
    fn data_figures_also_give_a_throughput() {
        let log = "\
BENCH name=grant_copy_4k iters=1000 tsc_per_iter=2048.00 loop_tsc=2.00 ns_per_iter=1024.00 bytes=4096
pvguest: BENCH DONE measured=1 skipped=0";
        let m = parse_log(log.lines(), Mode::Icount).unwrap();
        assert_eq!(
            m.figures,
            vec![
                ("grant_copy_4k".into(), Unit::Insns, 2048.0),
                ("grant_copy_4k_mbps".into(), Unit::MbPerS, 2000.0)
            ]
        );
        let wall = parse_log(log.lines(), Mode::Wall).unwrap();
        assert_eq!(
            wall.figures[1],
            ("grant_copy_4k_mbps".into(), Unit::MbPerS, 4000.0)
        );
        assert_eq!(mb_per_s(4096, 3000.0), 1365.3);
    }

    #[test]
    fn a_log_without_its_end_or_with_duplicates_is_refused() {
        let unfinished: Vec<&str> = HV_LOG.lines().take(4).collect();
        assert!(parse_log(unfinished, Mode::Icount)
            .unwrap_err()
            .contains("did not finish"));
        let twice =
            format!("{XEN_LOG}\nBENCH name=bounce_ud2_iret iters=1 tsc_per_iter=1 loop_tsc=0");
        assert!(parse_log(twice.lines(), Mode::Icount)
            .unwrap_err()
            .contains("twice"));
        let broken = "BENCH name=x iters=1 tsc_per_iter=abc loop_tsc=0\npvguest: BENCH DONE";
        assert!(parse_log(broken.lines(), Mode::Icount)
            .unwrap_err()
            .contains("bad benchmark line"));
    }

    #[test]
    fn rows_pair_the_hypervisors_and_ratios_divide_hv_by_xen() {
        let mut hv = parse_log(HV_LOG.lines(), Mode::Icount).unwrap();
        add_boot_time(&mut hv, Some(Duration::from_micros(85_260)), Filter::ALL);
        let xen = parse_log(XEN_LOG.lines(), Mode::Icount).unwrap();
        let rows = rows(Some(&hv), Some(&xen));
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hypercall_xen_version",
                "bounce_ud2_iret",
                BOOT_FIGURE,
                "evtchn_pingpong"
            ]
        );
        assert_eq!(rows[2].hv, Some(85.3));
        assert_eq!(rows[2].unit, Unit::Ms);
        let r = results("QEMU", Mode::Icount, &rows);
        // evtchn_pingpong has no hv figure, so results.json leaves it out.
        assert_eq!(r.figures.len(), 3);
        assert_eq!(r.figures[0].ratio, Some(0.314));
        assert_eq!(r.figures[2].xen, None);
        assert_eq!(r.figures[2].ratio, None);
        assert_eq!(ratio(1.0, Some(0.0)), None);

        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("figure"));
        assert!(lines[0].ends_with("hv/Xen"));
        assert!(lines[1].contains("hypercall_xen_version") && lines[1].ends_with("0.314"));
        assert!(lines[4].contains("evtchn_pingpong") && lines[4].contains("1010.01"));
        assert!(lines[4].ends_with('-'));
    }

    #[test]
    fn boot_time_follows_the_filter() {
        let mut m = Measured::default();
        add_boot_time(
            &mut m,
            Some(Duration::from_secs(1)),
            Filter::new(Some("evtchn")),
        );
        assert!(m.figures.is_empty());
        add_boot_time(
            &mut m,
            Some(Duration::from_secs(1)),
            Filter::new(Some("boot")),
        );
        assert_eq!(m.figures, vec![(BOOT_FIGURE.into(), Unit::Ms, 1000.0)]);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let r = results_of(vec![
            fig("hypercall_xen_version", Unit::Insns, 90.0, Some(287.0)),
            fig("boot_to_first_line", Unit::Ms, 80.5, None),
        ]);
        let value: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "emulator": "QEMU 7.2",
                "mode": "icount",
                "figures": [
                    {"name": "hypercall_xen_version", "unit": "insns", "hv": 90.0,
                     "xen": 287.0, "ratio": 0.314},
                    {"name": "boot_to_first_line", "unit": "ms", "hv": 80.5,
                     "xen": null, "ratio": null}
                ]
            })
        );
        let back: Results = serde_json::from_value(value).unwrap();
        assert_eq!(back, r);
        let wall = serde_json::to_value(Mode::Wall).unwrap();
        assert_eq!(wall, "wall");
        assert_eq!(serde_json::to_value(Unit::MbPerS).unwrap(), "MB/s");
        assert!(
            serde_json::from_str::<Results>(r#"{"emulator":"x","mode":"fast","figures":[]}"#)
                .is_err()
        );
    }

    #[test]
    fn the_gate_fails_beyond_ten_percent() {
        let baseline = results_of(vec![
            fig("hypercall_xen_version", Unit::Insns, 100.0, None),
            fig("bounce_ud2_iret", Unit::Insns, 300.0, None),
            fig("boot_to_first_line", Unit::Ms, 80.0, None),
        ]);
        let same = gate(&baseline, &baseline, Filter::ALL, GATE_TOLERANCE);
        assert!(same.passed() && same.notes.is_empty(), "{same:?}");

        let current = results_of(vec![
            // Exactly 10% worse passes; 11% worse fails.
            fig("hypercall_xen_version", Unit::Insns, 110.0, None),
            fig("bounce_ud2_iret", Unit::Insns, 333.0, None),
            // Wall-clock figures are never gated.
            fig("boot_to_first_line", Unit::Ms, 800.0, None),
        ]);
        let report = gate(&current, &baseline, Filter::ALL, GATE_TOLERANCE);
        assert_eq!(
            report.regressions,
            vec!["bounce_ud2_iret: 333 insns (baseline 300, +11.0%)".to_string()]
        );

        let better = results_of(vec![
            fig("hypercall_xen_version", Unit::Insns, 50.0, None),
            fig("bounce_ud2_iret", Unit::Insns, 300.0, None),
            fig("evtchn_status", Unit::Insns, 150.0, None),
        ]);
        let report = gate(&better, &baseline, Filter::ALL, GATE_TOLERANCE);
        assert!(report.passed());
        assert_eq!(report.notes.len(), 2, "{:?}", report.notes);
        assert!(report.notes[0].contains("-50.0%") && report.notes[0].contains("better"));
        assert!(report.notes[1].starts_with("evtchn_status: new"));
    }

    #[test]
    fn the_gate_notices_missing_figures_unless_filtered_out() {
        let baseline = results_of(vec![
            fig("hypercall_xen_version", Unit::Insns, 100.0, None),
            fig("evtchn_status", Unit::Insns, 150.0, None),
        ]);
        let current = results_of(vec![fig("evtchn_status", Unit::Insns, 150.0, None)]);
        let report = gate(&current, &baseline, Filter::ALL, GATE_TOLERANCE);
        assert_eq!(
            report.regressions,
            vec!["hypercall_xen_version: in the baseline but not measured".to_string()]
        );
        assert!(gate(
            &current,
            &baseline,
            Filter::new(Some("evtchn")),
            GATE_TOLERANCE
        )
        .passed());
        let mut wall = current.clone();
        wall.mode = Mode::Wall;
        assert!(!gate(&wall, &baseline, Filter::ALL, GATE_TOLERANCE).passed());
    }

    #[test]
    fn throughput_is_worse_when_lower() {
        let baseline = results_of(vec![fig("grant_copy_4k", Unit::MbPerS, 100.0, None)]);
        let current = results_of(vec![fig("grant_copy_4k", Unit::MbPerS, 80.0, None)]);
        assert!(!Unit::MbPerS.deterministic());
        assert!(Unit::MbPerS.higher_is_better());
        // Not deterministic, so not gated; the arithmetic is still right for the sign.
        assert!(gate(&current, &baseline, Filter::ALL, GATE_TOLERANCE).passed());
    }

    #[test]
    fn updating_the_baseline_keeps_filtered_out_figures() {
        let old = results_of(vec![
            fig("hypercall_xen_version", Unit::Insns, 100.0, None),
            fig("evtchn_status", Unit::Insns, 150.0, None),
        ]);
        let current = results_of(vec![fig("evtchn_status", Unit::Insns, 140.0, Some(459.0))]);
        let new = updated_baseline(Some(old), &current);
        assert_eq!(
            new.figures,
            vec![
                fig("evtchn_status", Unit::Insns, 140.0, Some(459.0)),
                fig("hypercall_xen_version", Unit::Insns, 100.0, None),
            ]
        );
        assert_eq!(updated_baseline(None, &current), current);
    }

    #[test]
    fn the_chart_has_a_bar_per_measured_value() {
        let r = results_of(vec![
            fig("hypercall_xen_version", Unit::Insns, 90.0, Some(287.0)),
            fig("a<b&c", Unit::Ms, 80.0, None),
        ]);
        let chart = svg(&r);
        assert!(chart.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(chart.trim_end().ends_with("</svg>"));
        // Two legend swatches plus three bars.
        assert_eq!(
            chart.matches(&format!("fill=\"{HV_COLOUR}\"")).count(),
            1 + 2
        );
        assert_eq!(
            chart.matches(&format!("fill=\"{XEN_COLOUR}\"")).count(),
            1 + 1
        );
        // The larger bar of a group spans the full length; the other is to scale.
        assert!(chart.contains("width=\"380.0\" height=\"14\" fill=\"#f28e2b\""));
        assert!(chart.contains("width=\"119.2\" height=\"14\" fill=\"#4e79a7\""));
        assert!(chart.contains("a&lt;b&amp;c"));
        assert!(chart.contains("not measured"));
        assert!(chart.contains("hv/Xen 0.314"));
        assert_eq!(chart.matches('<').count(), chart.matches('>').count());
    }

    #[test]
    fn options_parse() {
        let parse = |args: &[&str]| Options::parse(&mut lexopt::Parser::from_args(args.iter()));
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.mode, Mode::Icount);
        assert!(defaults.gate && !defaults.vs_xen && !defaults.update_baseline);
        assert_eq!(defaults.guest_cmdline(), "bench");
        let o = parse(&["--vs-xen", "--wall", "--filter", "evtchn", "--no-gate"]).unwrap();
        assert_eq!((o.vs_xen, o.mode, o.gate), (true, Mode::Wall, false));
        assert_eq!(o.guest_cmdline(), "bench filter=evtchn");
        assert!(parse(&["--icount", "--wall"]).is_err());
        assert!(parse(&["--wall", "--update-baseline"]).is_err());
        assert!(parse(&["--filter", "a b"]).is_err());
        assert!(parse(&["--timeout", "0"]).is_err());
        assert!(parse(&["--fast"]).is_err());
    }
}
