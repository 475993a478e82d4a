//! `cargo xtask`: build images, boot them under QEMU or Bochs, make ISOs, run everything CI runs.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use hv::bundle::DomainKind;
use lexopt::ValueExt;

use xtask::images::{self, Image};
use xtask::runner::{BootSpec, Emulator, Machine, Session, DEFAULT_BOCHS_CPU};
use xtask::{bench, bundle, iso, paths, size, tools};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build     build the bootable images (release, x86_64-unknown-none)
  run       build, boot under an emulator and stream the serial console
              --config FILE        boot the domains of a TOML config
              --kernel ELF         boot one domain from ELF (instead of --config)
              --cmdline S          that domain's command line
              --type pv|pvh|hvm    that domain's type (default: PVH for an image with
                                   only Xen's PHYS32_ENTRY note, HVM for a boot sector,
                                   else PV; hvm: a raw boot sector run in real mode)
              --hv-cmdline S       hv's command line
              --emulator E         qemu (default) or bochs
              --machine M          QEMU machine: microvm (default) or q35
              --cpu-model M        Bochs CPU model (default corei7_sandy_bridge_2600k)
              --smp N              vCPUs (default 1)
              --memory SIZE        RAM, e.g. 512M (default) or 1G
              --timeout SECS       give up after SECS seconds (default 60)
              --icount             QEMU -icount shift=0 (deterministic TSC)
              --input              pass this terminal's input to the serial line, a line
                                   at a time (QEMU; see README, Console input)
            exits 0 when hv reports status 0, 1 on failure, 124 on timeout
  iso       make a GRUB ISO (multiboot2) of hv and the bundle
              --config FILE        put the config's bundle on the ISO
              --hv-cmdline S       hv's command line
              -o PATH              output (default target/hv.iso)
  test      everything CI runs: fmt, clippy, unit tests, images, boot tests, bench gate
  bench     boot pvguest's benchmark mode on hv (QEMU q35) and report each figure
              --vs-xen             also on Xen 4.17, same QEMU settings; adds hv/Xen ratios
              --icount             guest instruction counts, deterministic (default)
              --wall               nanoseconds of real time instead
              --filter TEXT        only figures whose name contains TEXT
              --no-gate            skip the regression gate against bench/baseline.json
              --update-baseline    rewrite bench/baseline.json from this run (icount)
              --timeout SECS       each boot's time limit (default 600)
              --verbose            stream the serial consoles
            writes target/bench/results.json and results.svg; exits 1 when a run
            fails or a deterministic figure is more than 10% worse than the baseline
";

fn main() -> ExitCode {
    match dispatch() {
        Ok(code) => code,
        Err(Failure::Usage(message)) => {
            eprintln!("xtask: {message} (see `cargo xtask help`)");
            ExitCode::from(2)
        }
        Err(Failure::Error(message)) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Error(String),
}

impl From<lexopt::Error> for Failure {
    fn from(e: lexopt::Error) -> Self {
        Failure::Usage(e.to_string())
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Error(message)
    }
}

fn dispatch() -> Result<ExitCode, Failure> {
    let mut parser = lexopt::Parser::from_env();
    let command = match parser.next()? {
        Some(lexopt::Arg::Value(command)) => command.string()?,
        Some(lexopt::Arg::Short('h') | lexopt::Arg::Long("help")) | None => {
            print!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(other) => return Err(other.unexpected().into()),
    };
    match command.as_str() {
        "build" => {
            no_more_args(&mut parser)?;
            build()
        }
        "run" => run(RunArgs::parse(&mut parser)?),
        "iso" => make_iso(IsoArgs::parse(&mut parser)?),
        "test" => {
            no_more_args(&mut parser)?;
            Ok(test())
        }
        "bench" => {
            bench::run(&bench::Options::parse(&mut parser).map_err(Failure::Usage)?)?;
            Ok(ExitCode::SUCCESS)
        }
        "help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(Failure::Usage(format!("unknown command {other:?}"))),
    }
}

fn no_more_args(parser: &mut lexopt::Parser) -> Result<(), Failure> {
    match parser.next()? {
        None => Ok(()),
        Some(arg) => Err(arg.unexpected().into()),
    }
}

fn parse_value<T>(
    parser: &mut lexopt::Parser,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, Failure> {
    let value = parser.value()?.string()?;
    parse(&value).map_err(Failure::Usage)
}

fn build() -> Result<ExitCode, Failure> {
    for (image, path) in images::build_all()? {
        println!("{}: {}", image.package(), path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the domains come from.
enum Domains {
    None,
    Config(PathBuf),
    Kernel {
        elf: PathBuf,
        cmdline: String,
        /// `--type`; `None`: as the image says.
        kind: Option<DomainKind>,
    },
}

impl Domains {
    /// Writes the bundle (if any) into the target directory.
    fn bundle(&self) -> Result<Option<PathBuf>, String> {
        let out = paths::target_dir().join("xtask").join("bundle.bin");
        match self {
            Domains::None => Ok(None),
            Domains::Config(path) => bundle::from_config_file(path, &out).map(Some),
            Domains::Kernel {
                elf,
                cmdline,
                kind: None,
            } => bundle::from_kernel(elf, cmdline, &out).map(Some),
            Domains::Kernel {
                elf,
                cmdline,
                kind: Some(kind),
            } => bundle::from_kernel_as(elf, cmdline, *kind, &out).map(Some),
        }
    }
}

struct RunArgs {
    domains: Domains,
    hv_cmdline: String,
    emulator: Emulator,
    smp: u32,
    memory_mib: u32,
    timeout: Duration,
    icount: bool,
    input: bool,
}

impl RunArgs {
    fn parse(parser: &mut lexopt::Parser) -> Result<RunArgs, Failure> {
        let mut config = None;
        let mut kernel = None;
        let mut domain_cmdline = None;
        let mut kind = None;
        let mut hv_cmdline = String::new();
        let mut emulator = String::from("qemu");
        let mut machine = Machine::Microvm;
        let mut cpu_model = String::from(DEFAULT_BOCHS_CPU);
        let mut smp = 1;
        let mut memory_mib = 512;
        let mut timeout = Duration::from_secs(60);
        let mut icount = false;
        let mut input = false;
        while let Some(arg) = parser.next()? {
            use lexopt::Arg::Long;
            match arg {
                Long("config") => config = Some(PathBuf::from(parser.value()?)),
                Long("kernel") => kernel = Some(PathBuf::from(parser.value()?)),
                Long("cmdline") => domain_cmdline = Some(parser.value()?.string()?),
                Long("type") => {
                    kind = Some(match parser.value()?.string()?.as_str() {
                        "pv" => DomainKind::Pv,
                        "pvh" => DomainKind::Pvh,
                        "hvm" => DomainKind::Hvm,
                        other => {
                            return Err(Failure::Usage(format!("--type {other:?}: pv, pvh or hvm")))
                        }
                    })
                }
                Long("hv-cmdline") => hv_cmdline = parser.value()?.string()?,
                Long("emulator") => emulator = parser.value()?.string()?,
                Long("machine") => machine = parse_value(parser, str::parse)?,
                Long("cpu-model") => cpu_model = parser.value()?.string()?,
                Long("smp") => smp = parse_value(parser, parse_count)?,
                Long("memory") => memory_mib = parse_value(parser, size::parse_mib)?,
                Long("timeout") => timeout = parse_value(parser, parse_seconds)?,
                Long("icount") => icount = true,
                Long("input") => input = true,
                other => return Err(other.unexpected().into()),
            }
        }
        if kind.is_some() && kernel.is_none() {
            return Err(Failure::Usage("--type goes with --kernel".into()));
        }
        let domains = match (config, kernel, domain_cmdline) {
            (Some(_), Some(_), _) => {
                return Err(Failure::Usage(
                    "--config and --kernel exclude each other".into(),
                ))
            }
            (Some(_) | None, None, Some(_)) => {
                return Err(Failure::Usage("--cmdline goes with --kernel".into()))
            }
            (Some(path), None, None) => Domains::Config(path),
            (None, Some(elf), cmdline) => Domains::Kernel {
                elf,
                cmdline: cmdline.unwrap_or_default(),
                kind,
            },
            (None, None, None) => Domains::None,
        };
        let emulator = match emulator.as_str() {
            "qemu" => Emulator::Qemu { machine },
            "bochs" => Emulator::Bochs { cpu_model },
            other => {
                return Err(Failure::Usage(format!(
                    "unknown emulator {other:?} (qemu or bochs)"
                )))
            }
        };
        Ok(RunArgs {
            domains,
            hv_cmdline,
            emulator,
            smp,
            memory_mib,
            timeout,
            icount,
            input,
        })
    }
}

fn parse_count(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(format!("bad vCPU count {text:?} (1 to 64)")),
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("bad timeout {text:?} (seconds, more than 0)")),
    }
}

fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    match &args.emulator {
        Emulator::Qemu { .. } => tools::ensure(&tools::for_qemu())?,
        Emulator::Bochs { .. } => tools::ensure(&tools::for_bochs())?,
    }
    let hv = build_hv()?;
    let spec = BootSpec {
        emulator: args.emulator,
        image: hv,
        cmdline: args.hv_cmdline,
        bundle: args.domains.bundle()?,
        memory_mib: args.memory_mib,
        smp: args.smp,
        icount: args.icount,
        timeout: args.timeout,
        echo: true,
        serial_input: args.input,
    };
    let mut session = Session::start(&spec)?;
    if let Some(mut serial) = session.take_input() {
        // Ends with the process; a failed copy only means nothing more can be typed.
        std::thread::spawn(move || std::io::copy(&mut std::io::stdin().lock(), &mut serial));
    }
    let report = session.finish();
    if report.outcome.success() {
        eprintln!(
            "xtask: {} after {:.2} s",
            report.outcome,
            report.elapsed.as_secs_f64()
        );
    } else {
        eprintln!("xtask: {}", report.summary());
    }
    Ok(ExitCode::from(
        u8::try_from(report.outcome.exit_code()).unwrap_or(1),
    ))
}

fn build_hv() -> Result<PathBuf, String> {
    images::build(Image::Hv, &paths::target_dir())
}

struct IsoArgs {
    config: Option<PathBuf>,
    hv_cmdline: String,
    out: PathBuf,
}

impl IsoArgs {
    fn parse(parser: &mut lexopt::Parser) -> Result<IsoArgs, Failure> {
        let mut args = IsoArgs {
            config: None,
            hv_cmdline: String::new(),
            out: paths::target_dir().join("hv.iso"),
        };
        while let Some(arg) = parser.next()? {
            use lexopt::Arg::{Long, Short};
            match arg {
                Long("config") => args.config = Some(PathBuf::from(parser.value()?)),
                Long("hv-cmdline") => args.hv_cmdline = parser.value()?.string()?,
                Short('o') | Long("output") => args.out = PathBuf::from(parser.value()?),
                other => return Err(other.unexpected().into()),
            }
        }
        Ok(args)
    }
}

fn make_iso(args: IsoArgs) -> Result<ExitCode, Failure> {
    tools::ensure(&tools::for_iso())?;
    let hv = build_hv()?;
    let domains = args.config.map_or(Domains::None, Domains::Config);
    let bundle = domains.bundle()?;
    iso::make(&hv, bundle.as_deref(), &args.hv_cmdline, &args.out)?;
    println!("{}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Environment variables handed from one step of `cargo xtask test` to later ones.
type StepEnv = Vec<(OsString, OsString)>;

/// One step of `cargo xtask test`.
enum Step {
    Cargo(&'static [&'static str]),
    /// Builds the images and hands their paths to the boot tests.
    Images,
    /// Runs `tests/` against the images built by [`Step::Images`].
    BootTests,
    /// `cargo xtask bench --vs-xen --icount`: hv beside Xen 4.17, with the regression gate
    /// against `bench/baseline.json`.
    Bench,
}

const STEPS: &[(&str, Step)] = &[
    ("format", Step::Cargo(&["fmt", "--all", "--", "--check"])),
    (
        "clippy",
        Step::Cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    ),
    // `--workspace` checks hv, pvguest and bootsector for the host, where their bare-metal
    // code is compiled out; this pass lints them as they are built.
    (
        "clippy (x86_64-unknown-none)",
        Step::Cargo(&[
            "clippy",
            "-p",
            "hv",
            "-p",
            "pvguest",
            "-p",
            "bootsector",
            "--target",
            "x86_64-unknown-none",
            "--",
            "-D",
            "warnings",
        ]),
    ),
    (
        "unit tests",
        Step::Cargo(&["test", "--workspace", "--exclude", "hv-tests"]),
    ),
    ("images", Step::Images),
    ("boot tests", Step::BootTests),
    ("bench gate", Step::Bench),
];

fn run_step(step: &Step, env: &mut StepEnv) -> Result<(), String> {
    match step {
        Step::Cargo(args) => cargo(args, env),
        Step::Images => {
            for (image, path) in images::build_all()? {
                env.push((image.env_var().into(), path.into_os_string()));
            }
            Ok(())
        }
        Step::BootTests => {
            if env.len() < Image::ALL.len() {
                return Err("the images did not build".into());
            }
            tools::ensure(&tools::for_everything())?;
            cargo(&["test", "-p", "hv-tests", "--", "--test-threads=2"], env)
        }
        Step::Bench => bench::run(&bench::Options {
            vs_xen: true,
            mode: bench::Mode::Icount,
            filter: None,
            gate: true,
            update_baseline: false,
            timeout: std::time::Duration::from_secs(600),
            verbose: false,
        }),
    }
}

fn cargo(args: &[&str], env: &StepEnv) -> Result<(), String> {
    let status = Command::new(paths::cargo())
        .current_dir(paths::workspace_root())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}

fn test() -> ExitCode {
    let mut env = StepEnv::new();
    let mut results = Vec::new();
    for (index, (name, step)) in STEPS.iter().enumerate() {
        println!("==> [{}/{}] {name}", index + 1, STEPS.len());
        let started = Instant::now();
        let result = run_step(step, &mut env);
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(()) => println!("==> {name}: ok ({seconds:.1} s)"),
            Err(e) => println!("==> {name}: FAILED ({seconds:.1} s): {e}"),
        }
        results.push((name, result.is_ok()));
    }
    println!();
    for (name, ok) in &results {
        println!("  {:<12} {}", name, if *ok { "ok" } else { "FAILED" });
    }
    let passed = results.iter().filter(|(_, ok)| *ok).count();
    let failed = results.len() - passed;
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn run_type_option() {
        let mut parser = lexopt::Parser::from_args(["--kernel", "g.elf", "--type", "pvh"]);
        let args = RunArgs::parse(&mut parser).ok().expect("parses");
        assert!(matches!(
            args.domains,
            Domains::Kernel {
                kind: Some(DomainKind::Pvh),
                ..
            }
        ));
        let mut parser = lexopt::Parser::from_args(["--kernel", "boot.bin", "--type", "hvm"]);
        let args = RunArgs::parse(&mut parser).ok().expect("parses");
        assert!(matches!(
            args.domains,
            Domains::Kernel {
                kind: Some(DomainKind::Hvm),
                ..
            }
        ));
        let mut parser = lexopt::Parser::from_args(["--kernel", "g.elf", "--type", "vmx"]);
        assert!(RunArgs::parse(&mut parser).is_err());
        let mut parser = lexopt::Parser::from_args(["--type", "pv"]);
        assert!(
            RunArgs::parse(&mut parser).is_err(),
            "--type without --kernel"
        );
    }

    #[test]
    fn run_arguments_parse() {
        let mut parser = lexopt::Parser::from_args([
            "--kernel",
            "g.elf",
            "--cmdline",
            "console=hvc0",
            "--emulator",
            "qemu",
            "--machine",
            "q35",
            "--smp",
            "2",
            "--memory",
            "1G",
            "--timeout",
            "5",
            "--icount",
        ]);
        let args = RunArgs::parse(&mut parser).unwrap_or_else(|_| panic!("arguments parse"));
        assert_eq!(
            args.emulator,
            Emulator::Qemu {
                machine: Machine::Q35
            }
        );
        assert_eq!((args.smp, args.memory_mib), (2, 1024));
        assert_eq!(args.timeout, Duration::from_secs(5));
        assert!(args.icount);
        assert!(matches!(
            args.domains,
            Domains::Kernel { ref elf, ref cmdline, .. } if elf == Path::new("g.elf") && cmdline == "console=hvc0"
        ));
    }

    #[test]
    fn conflicting_domain_sources_are_refused() {
        let mut parser = lexopt::Parser::from_args(["--config", "a.toml", "--kernel", "b"]);
        assert!(RunArgs::parse(&mut parser).is_err());
        let mut parser = lexopt::Parser::from_args(["--cmdline", "x"]);
        assert!(RunArgs::parse(&mut parser).is_err());
        let mut parser = lexopt::Parser::from_args(["--emulator", "vmware"]);
        assert!(RunArgs::parse(&mut parser).is_err());
    }
}
