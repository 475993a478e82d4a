//! Helpers for the boot scenarios in `tests/tests/`: get the images, boot them, and assert on
//! hv's serial lines. Every failed assertion shows the run's outcome, the emulator command and
//! the last lines of the serial log.

use std::path::PathBuf;
use std::time::Duration;

use xtask::images::{self, Image};
pub use xtask::paths::TempDir;
use xtask::runner::POWER_OFF_MARKER;
pub use xtask::runner::{BootSpec, Emulator, Machine, Outcome, RunReport, Session};
use xtask::tools;

/// Every line hv prints starts with this.
pub const HV_PREFIX: &str = "(XEN) ";

/// Time limit for a QEMU boot (they take well under a second when nothing is wrong).
pub const QEMU_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit for a Bochs boot (GRUB plus hv at 1M instructions per emulated second).
pub const BOCHS_TIMEOUT: Duration = Duration::from_secs(120);

/// The hv image: `XTASK_IMAGE_HV` when `cargo xtask test` set it, else built once.
pub fn hv_image() -> PathBuf {
    images::for_tests(Image::Hv).unwrap_or_else(|e| panic!("no hv image: {e}"))
}

/// The pvguest image: `XTASK_IMAGE_PVGUEST` when `cargo xtask test` set it, else built once.
pub fn pvguest_image() -> PathBuf {
    images::for_tests(Image::Pvguest).unwrap_or_else(|e| panic!("no pvguest image: {e}"))
}

/// The test boot sector (a flat 512-byte image): `XTASK_IMAGE_BOOTSECTOR` when
/// `cargo xtask test` set it, else built once.
pub fn bootsector_image() -> PathBuf {
    images::for_tests(Image::BootSector).unwrap_or_else(|e| panic!("no boot sector image: {e}"))
}

/// A QEMU boot of hv on `machine` with the test time limit.
pub fn qemu(machine: Machine) -> BootSpec {
    BootSpec {
        timeout: QEMU_TIMEOUT,
        ..BootSpec::qemu(machine, &hv_image())
    }
}

/// A Bochs (VT-x) boot of hv from a GRUB ISO with the test time limit.
pub fn bochs() -> BootSpec {
    BootSpec {
        timeout: BOCHS_TIMEOUT,
        ..BootSpec::bochs(&hv_image())
    }
}

/// Boots `spec` to the end (installing missing emulator tools first).
pub fn boot(spec: &BootSpec) -> RunReport {
    start(spec).finish()
}

/// Starts `spec` (installing missing emulator tools first), for a test that talks to the
/// running machine; end it with [`Session::finish`].
pub fn start(spec: &BootSpec) -> Session {
    let needed = match spec.emulator {
        Emulator::Qemu { .. } => tools::for_qemu(),
        Emulator::Bochs { .. } => tools::for_bochs(),
    };
    tools::ensure(&needed).unwrap_or_else(|e| panic!("{e}"));
    Session::start(spec).unwrap_or_else(|e| panic!("cannot boot: {e}"))
}

/// The first hv line containing `needle`; fails the test when there is none.
pub fn hv_line<'a>(report: &'a RunReport, needle: &str) -> &'a str {
    let line = report
        .line_containing(needle)
        .unwrap_or_else(|| panic!("no serial line contains {needle:?}\n{}", report.describe()));
    assert!(
        line.starts_with(HV_PREFIX),
        "line {line:?} lacks hv's {HV_PREFIX:?} prefix\n{}",
        report.describe()
    );
    line
}

/// hv printed exactly one power-off line, ending in `status=<status>`, and the run ended with it
/// (under QEMU the exit code agreed).
pub fn assert_power_off(report: &RunReport, status: u32) {
    assert_eq!(
        report.outcome,
        Outcome::PowerOff { status },
        "{}",
        report.describe()
    );
    let power_off: Vec<&String> = report
        .lines
        .iter()
        .filter(|line| line.contains(POWER_OFF_MARKER))
        .collect();
    assert_eq!(
        power_off.len(),
        1,
        "expected exactly one power-off line, got {power_off:?}\n{}",
        report.describe()
    );
    let expected = format!("{POWER_OFF_MARKER}{status}");
    let line = hv_line(report, POWER_OFF_MARKER);
    assert!(
        line.trim_end().ends_with(&expected),
        "power-off line {line:?} does not end in {expected:?}\n{}",
        report.describe()
    );
}

/// hv's CPU line says `VMX yes|no` and `SVM yes|no` as expected.
pub fn assert_cpu_line(report: &RunReport, vmx: bool, svm: bool) {
    let line = hv_line(report, "CPU:");
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    for expected in [
        format!("VMX {}", yes_no(vmx)),
        format!("SVM {}", yes_no(svm)),
    ] {
        let found = line
            .split_once(&expected)
            .is_some_and(|(_, after)| after.is_empty() || after.starts_with([' ', ',', ')']));
        assert!(
            found,
            "CPU line {line:?} does not say {expected:?}\n{}",
            report.describe()
        );
    }
}

/// A domain of a test config: (name, command line, memory in MiB).
pub type TestDomain<'a> = (&'a str, &'a str, u32);

/// Boots hv on QEMU microvm with pvguest domains as `domains` says (the first privileged),
/// through a TOML config and bundle in a temporary directory.
pub fn boot_pvguests(dir: &TempDir, domains: &[TestDomain<'_>]) -> RunReport {
    let mut spec = qemu(Machine::Microvm);
    spec.bundle = Some(pvguest_bundle(dir, domains, true));
    boot(&spec)
}

/// Makes a bundle of pvguest domains as `domains` says (the first privileged if
/// `control`), through a TOML config in `dir`; returns its path.
pub fn pvguest_bundle(dir: &TempDir, domains: &[TestDomain<'_>], control: bool) -> PathBuf {
    let kernel = pvguest_image();
    let mut toml = String::new();
    for (i, (name, cmdline, mib)) in domains.iter().enumerate() {
        toml.push_str(&format!(
            "[[domain]]\nname = \"{name}\"\nkernel = '{}'\ncmdline = \"{cmdline}\"\nmemory = \"{mib}M\"\nprivileged = {}\n\n",
            kernel.display(),
            control && i == 0
        ));
    }
    let config = dir.path().join("domains.toml");
    std::fs::write(&config, toml).expect("write config");
    xtask::bundle::from_config_file(&config, &dir.path().join("bundle.bin"))
        .unwrap_or_else(|e| panic!("cannot make the bundle: {e}"))
}

/// Domain `id`'s console lines (the text after its `(dN) ` prefix).
pub fn guest_lines(report: &RunReport, id: u32) -> Vec<&str> {
    let prefix = format!("(d{id}) ");
    report
        .lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

/// Asserts domain `id` printed `line` exactly.
pub fn assert_guest_line(report: &RunReport, id: u32, line: &str) {
    assert!(
        guest_lines(report, id).contains(&line),
        "d{id} did not print {line:?}\n{}",
        report.describe()
    );
}

/// Asserts a ping-pong between domains `server` and `client` moved `rounds` events each
/// way with none lost or doubled, and both sides reported success.
pub fn assert_pingpong(report: &RunReport, server: u32, client: u32, rounds: u32) {
    for (id, role) in [(server, "server"), (client, "client")] {
        assert_guest_line(
            report,
            id,
            &format!("pingpong: {role} received {rounds} events, 0 lost, 0 doubled"),
        );
        assert_guest_line(report, id, "pingpong: SUCCESS");
    }
}

/// Asserts domain `id` ran pvguest's selftest to success: its summary names at least one
/// passed check and no failed one, and it printed the success verdict.
pub fn assert_selftest_passed(report: &RunReport, id: u32) {
    let lines = guest_lines(report, id);
    let summary = lines
        .iter()
        .find(|l| l.starts_with("pvguest selftest: "))
        .unwrap_or_else(|| panic!("d{id} printed no selftest summary\n{}", report.describe()));
    let passed = number_after(summary, "selftest: ").unwrap_or(0);
    let failed = number_after(summary, "passed, ");
    assert!(
        passed > 0 && failed == Some(0),
        "d{id}: {summary}\n{}",
        report.describe()
    );
    assert!(
        lines.contains(&"pvguest: SELFTEST SUCCESS"),
        "d{id} did not report success\n{}",
        report.describe()
    );
}

/// Asserts domain `id` reported no failed check, each of `checks` as `<mode>: <check> ok`,
/// and `<mode>: SUCCESS` at the end.
pub fn assert_checks_passed(report: &RunReport, id: u32, mode: &str, checks: &[&str]) {
    let lines = guest_lines(report, id);
    let failed: Vec<&&str> = lines.iter().filter(|l| l.contains("FAILED")).collect();
    assert!(
        failed.is_empty(),
        "d{id} failed checks: {failed:?}\n{}",
        report.describe()
    );
    for check in checks {
        let line = format!("{mode}: {check} ok");
        assert!(
            lines.contains(&line.as_str()),
            "d{id} did not print {line:?}\n{}",
            report.describe()
        );
    }
    let success = format!("{mode}: SUCCESS");
    assert!(
        lines.contains(&success.as_str()),
        "d{id} did not report success\n{}",
        report.describe()
    );
}

/// Asserts hv's free-frame count after the run equals the count before the domains were
/// built (hv prints both on one `Frames free: ` line when the last domain is gone).
pub fn assert_frames_balance(report: &RunReport) {
    let line = hv_line(report, "Frames free: ");
    let before = number_after(line, "Frames free: ");
    let after = number_after(line, "built, ");
    assert!(
        before.is_some() && before == after,
        "frames leaked: {line:?}\n{}",
        report.describe()
    );
}

/// The unsigned number right after `label` in `line`, e.g. `number_after(l, "took ")`.
pub fn number_after(line: &str, label: &str) -> Option<u64> {
    let (_, rest) = line.split_once(label)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The checks each side of pvguest's `grant` mode must report as `grant: <check> ok`.
pub const GRANTER_CHECKS: [&str; 6] = [
    "set up own table",
    "refs as agreed",
    "mapper's pattern",
    "end access while mapped refused",
    "end access after unmap",
    "end read-only access",
];
pub const MAPPER_CHECKS: [&str; 9] = [
    "map read-write grant",
    "granter's pattern",
    "unmap",
    "copy read-only grant",
    "map read-only grant writable refused",
    "map out-of-range ref refused",
    "map at an impossible address refused",
    "map again and hold",
    "unmap held mapping",
];

/// The checks `xenbus-test` reports, in order.
pub const XENBUS_CHECKS: [&str; 7] = [
    "read domid",
    "write and read back",
    "mkdir and directory",
    "watch event",
    "other domain refused",
    "transaction conflict",
    "console ring",
];

/// The lines each domU writes to its console ring.
pub fn xenbus_console_lines(id: u32) -> [String; 3] {
    [
        format!("console ring hello from d{id}"),
        format!("console ring line 2 of 3 from d{id}"),
        format!("console ring line 3 of 3 from d{id}"),
    ]
}

/// Asserts domU `id` ran pvguest's `xenbus-test` against the control domain d0's back ends:
/// every check passed, its console-ring lines were printed once each by the back end after
/// it attached the domain, and the back end counted its store requests and console lines.
pub fn assert_xenbus_domu(report: &RunReport, id: u32) {
    let lines = guest_lines(report, id);
    for check in XENBUS_CHECKS {
        let want = format!("xenbus: {check} ok");
        assert!(
            lines.contains(&want.as_str()),
            "d{id} did not print {want:?}\n{}",
            report.describe()
        );
    }
    let failed: Vec<&&str> = lines.iter().filter(|l| l.contains("FAILED")).collect();
    assert!(
        failed.is_empty(),
        "d{id} failed checks: {failed:?}\n{}",
        report.describe()
    );
    // The console-ring lines appear once each: printed by the back end, not by the domU
    // itself through console_io (the back end's count below says it printed them).
    let attached = format!("(d0) backend: d{id}: store port ");
    let attached_at = report
        .lines
        .iter()
        .position(|l| l.starts_with(&attached))
        .unwrap_or_else(|| panic!("the back end never attached d{id}\n{}", report.describe()));
    for text in xenbus_console_lines(id) {
        let line = format!("(d{id}) {text}");
        let at = report.lines.iter().position(|l| *l == line);
        assert!(
            at.is_some_and(|at| at > attached_at),
            "{line:?} not printed after the back end attached d{id}\n{}",
            report.describe()
        );
        let count = report.lines.iter().filter(|l| **l == line).count();
        assert_eq!(
            count,
            1,
            "{line:?} appears {count} times\n{}",
            report.describe()
        );
    }
    let served = format!("backend: d{id}: ");
    let d0 = guest_lines(report, 0);
    let summary = d0
        .iter()
        .find(|l| l.starts_with(&served) && l.contains(" store requests served, "))
        .unwrap_or_else(|| panic!("no back-end summary for d{id}\n{}", report.describe()));
    assert!(
        number_after(summary, &served).is_some_and(|n| n >= 15),
        "too few store requests: {summary:?}\n{}",
        report.describe()
    );
    assert_eq!(
        number_after(summary, "served, "),
        Some(3),
        "console lines: {summary:?}\n{}",
        report.describe()
    );
}

#[cfg(test)]
mod tests {
    use super::number_after;

    #[test]
    fn numbers_follow_labels() {
        let line = "(XEN) timer test: 100 ticks of 1000000 ns took 100200300 ns by TSC";
        assert_eq!(number_after(line, "timer test: "), Some(100));
        assert_eq!(number_after(line, "ticks of "), Some(1_000_000));
        assert_eq!(number_after(line, "took "), Some(100_200_300));
        assert_eq!(number_after(line, "by TSC"), None);
        assert_eq!(number_after(line, "absent"), None);
    }
}
