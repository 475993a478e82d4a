//! The periodic LAPIC timer, programmed from hv's calibration, ticks at the rate it was asked
//! for as measured by the TSC (within 10%). Kept in its own test binary so no other emulator
//! competes for the CPU while it measures.

use hv_tests::{assert_power_off, boot, hv_line, number_after, qemu, Machine};

#[test]
fn timer_ticks_at_calibrated_rate() {
    let mut spec = qemu(Machine::Microvm);
    spec.cmdline = "hvtest=timer".into();
    let report = boot(&spec);
    let line = hv_line(&report, "timer test: ");
    let parsed = (
        number_after(line, "timer test: "),
        number_after(line, " ticks of "),
        number_after(line, " ns took "),
    );
    let (Some(ticks), Some(period_ns), Some(tsc_ns)) = parsed else {
        panic!(
            "cannot read \"timer test: <n> ticks of <period_ns> ns took <tsc_ns> ns by TSC\" \
             from {line:?}"
        );
    };
    let expected_form =
        format!("timer test: {ticks} ticks of {period_ns} ns took {tsc_ns} ns by TSC");
    assert!(
        line.trim_end().ends_with(&expected_form),
        "{line:?} is not of the form {expected_form:?}"
    );
    assert!(ticks > 0 && period_ns > 0, "no ticks measured: {line:?}");
    let expected_ns = ticks * period_ns;
    assert!(
        tsc_ns.abs_diff(expected_ns) * 10 <= expected_ns,
        "{ticks} ticks of {period_ns} ns should take {expected_ns} ns; the TSC says {tsc_ns} ns\n{}",
        report.describe()
    );
    assert_power_off(&report, 0);
}
