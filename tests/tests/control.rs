//! The control domain (issue 5, item 3): the privileged d0 runs pvguest's `control` mode,
//! which lists the domains through `sysctl getdomaininfolist` and `domctl getdomaininfo`,
//! pauses d1 (running the selftest) and sees it get no CPU until it is unpaused, destroys d2
//! (which would otherwise yield forever) and sees it leave the list. An unprivileged domain
//! running the same mode is refused every operation with EPERM. In both runs every frame
//! comes back and hv powers off cleanly.

use hv_tests::{
    assert_frames_balance, assert_power_off, assert_selftest_passed, boot_pvguests, guest_lines,
    hv_line, RunReport, TempDir,
};

/// Domain `id` printed each of `expected` (whole lines, in any order).
fn assert_guest_lines(report: &RunReport, id: u32, expected: &[&str]) {
    let lines = guest_lines(report, id);
    for want in expected {
        assert!(
            lines.contains(want),
            "d{id} did not print {want:?}\n{}",
            report.describe()
        );
    }
}

/// Position in the serial log of domain `id`'s line `text`.
fn position(report: &RunReport, id: u32, text: &str) -> usize {
    let line = format!("(d{id}) {text}");
    report
        .lines
        .iter()
        .position(|l| *l == line)
        .unwrap_or_else(|| panic!("no line {line:?}\n{}", report.describe()))
}

#[test]
fn control_domain_lists_pauses_unpauses_and_destroys_domains() {
    let dir = TempDir::new("control").expect("temp dir");
    let report = boot_pvguests(
        &dir,
        &[
            ("toolstack", "control", 32),
            ("worker", "selftest", 32),
            ("spinner", "spin", 16),
        ],
    );
    assert_guest_lines(
        &report,
        0,
        &[
            "control: pause d1: ok",
            "control: d1 is paused",
            "control: unpause d1: ok",
            "control: d1 runs again after the unpause",
            "control: destroy d2: ok",
            "control: d2 is gone",
            "control: self-pause: EINVAL",
            "control: self-destroy: EINVAL",
            "control: destroy again: ESRCH",
            "control: pause d7: ESRCH",
            "control: old interface version: EACCES",
            "control: SUCCESS",
        ],
    );
    // One line per domain, with its state and pages.
    let d0 = guest_lines(&report, 0);
    for (id, state) in [(0, "running"), (1, ""), (2, "")] {
        let prefix = format!("control: listed: d{id} {state}");
        assert!(
            d0.iter()
                .any(|l| l.starts_with(&prefix) && l.contains(" pages ")),
            "no listing of d{id}\n{}",
            report.describe()
        );
    }
    assert!(
        d0.iter()
            .any(|l| l.starts_with("control: at the end: d1 shutdown(Poweroff) pages ")),
        "d1 not listed as shut down at the end\n{}",
        report.describe()
    );
    // The worker printed nothing while it was paused, and finished its selftest afterwards.
    let paused = position(&report, 0, "control: pause d1: ok");
    let unpaused = position(&report, 0, "control: unpause d1: ok");
    let during: Vec<&String> = report.lines[paused..unpaused]
        .iter()
        .filter(|l| l.starts_with("(d1) "))
        .collect();
    assert!(
        during.is_empty(),
        "d1 ran while paused: {during:?}\n{}",
        report.describe()
    );
    assert_selftest_passed(&report, 1);
    assert!(
        position(&report, 1, "pvguest: SELFTEST SUCCESS") > unpaused,
        "d1 finished before it was paused\n{}",
        report.describe()
    );
    hv_line(&report, "d2 (spinner): destroyed by the control domain");
    hv_line(&report, "d2 (spinner): Destroyed");
    hv_line(&report, "d1 (worker): Shutdown(Poweroff)");
    hv_line(&report, "d0 (toolstack): Shutdown(Poweroff)");
    assert_frames_balance(&report);
    assert_power_off(&report, 0);
}

#[test]
fn unprivileged_domain_is_refused_every_control_operation() {
    let dir = TempDir::new("control-eperm").expect("temp dir");
    let report = boot_pvguests(
        &dir,
        &[("dom0", "selftest", 32), ("intruder", "control", 16)],
    );
    assert_guest_lines(
        &report,
        1,
        &[
            "control: getdomaininfo: EPERM",
            "control: getvcpuinfo: EPERM",
            "control: pause: EPERM",
            "control: unpause: EPERM",
            "control: destroy: EPERM",
            "control: physinfo: EPERM",
            "control: getdomaininfolist: EPERM",
            "control: SUCCESS",
        ],
    );
    assert_selftest_passed(&report, 0);
    hv_line(&report, "d0 (dom0): Shutdown(Poweroff)");
    hv_line(&report, "d1 (intruder): Shutdown(Poweroff)");
    assert_frames_balance(&report);
    assert_power_off(&report, 0);
}
