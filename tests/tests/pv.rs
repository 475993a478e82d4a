//! PV guests on hv: pvguest's selftest of the PV ABI, several domains at once, and domains
//! that crash themselves without taking hv or the other domains with them.

use hv_tests::{
    assert_power_off, assert_selftest_passed, boot_pvguests, guest_lines, hv_line, TempDir,
};

#[test]
fn pvguest_selftest_passes_on_hv() {
    let dir = TempDir::new("pv-selftest").expect("temp dir");
    let report = boot_pvguests(&dir, &[("dom0", "selftest", 64)]);
    assert_selftest_passed(&report, 0);
    hv_line(&report, "d0: shut down (Poweroff)");
    assert_power_off(&report, 0);
}

#[test]
fn three_domains_run_concurrently_and_all_finish() {
    let dir = TempDir::new("pv-three").expect("temp dir");
    let report = boot_pvguests(
        &dir,
        &[
            ("one", "selftest", 32),
            ("two", "selftest", 32),
            ("three", "selftest", 32),
        ],
    );
    for id in 0..3 {
        assert_selftest_passed(&report, id);
    }
    // Concurrently, not one after another: some domain printed before another finished.
    let first_done = report
        .lines
        .iter()
        .position(|l| l.contains("SELFTEST SUCCESS"))
        .expect("a verdict");
    let last_start = report
        .lines
        .iter()
        .rposition(|l| l.contains("pvguest: started"))
        .expect("a start");
    assert!(
        last_start < first_done,
        "the domains ran one after another\n{}",
        report.describe()
    );
    assert_power_off(&report, 0);
}

#[test]
fn crashing_domains_leave_the_others_running() {
    let dir = TempDir::new("pv-crash").expect("temp dir");
    let kinds = ["unhandled", "hv-write", "shutdown", "bad-iret", "bad-stack"];
    let cmdlines: Vec<String> = kinds.iter().map(|k| format!("crash={k}")).collect();
    let mut domains = vec![("honest", "selftest", 32)];
    for (k, c) in kinds.iter().zip(&cmdlines) {
        domains.push((k, c.as_str(), 16));
    }
    let report = boot_pvguests(&dir, &domains);
    assert_selftest_passed(&report, 0);
    for (i, kind) in kinds.iter().enumerate() {
        let id = i as u32 + 1;
        assert!(
            guest_lines(&report, id)
                .iter()
                .any(|l| l.starts_with("pvguest: crashing on purpose")),
            "d{id} ({kind}) did not start its crash\n{}",
            report.describe()
        );
        hv_line(&report, &format!("d{id} ({kind}) crashed: "));
        assert!(
            !guest_lines(&report, id)
                .iter()
                .any(|l| l.contains("still alive")),
            "d{id} ({kind}) survived\n{}",
            report.describe()
        );
    }
    hv_line(&report, "d0 (honest): Shutdown(Poweroff)");
    // Crashed domains make the run a failure, but hv itself finished normally.
    assert_power_off(&report, 1);
}
