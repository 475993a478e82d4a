//! A fault inside hv is reported with its vector and where it happened, and the run fails.

use hv_tests::{assert_power_off, boot, hv_line, qemu, Machine};

/// hv's text is linked in Xen's reserved range, at 0xffff82d0_xxxxxxxx.
const HV_TEXT_PREFIX: &str = "ffff82d0";

#[test]
fn deliberate_exception_is_reported() {
    let mut spec = qemu(Machine::Microvm);
    spec.cmdline = "hvtest=ud2".into();
    let report = boot(&spec);
    hv_line(&report, "FATAL TRAP: vector 6 (#UD)");
    let rip_line = hv_line(&report, "RIP");
    let in_hv = rip_line
        .split(|c: char| !c.is_ascii_hexdigit() && c != 'x')
        .map(|word| word.trim_start_matches("0x"))
        .any(|word| {
            word.len() == 16
                && word.starts_with(HV_TEXT_PREFIX)
                && word.chars().all(|c| c.is_ascii_hexdigit())
        });
    assert!(
        in_hv,
        "RIP line {rip_line:?} has no 16-digit address starting {HV_TEXT_PREFIX}\n{}",
        report.describe()
    );
    assert_power_off(&report, 1);
    assert!(!report.outcome.success());
    assert_eq!(report.outcome.exit_code(), 1, "xtask run would exit 1");
}
