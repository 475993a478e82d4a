//! Grant tables between domains: a granter grants one page read-write and one read-only; the
//! mapper maps the first (checking the granter's pattern by checksum and writing its own),
//! grant-copies the second, is refused a writable map of the read-only grant and a map of a
//! reference beyond the table, and holds a mapping while the granter tries to end access (it
//! must be refused). Every frame is back in hv's free pool when the domains are gone.

use hv_tests::{
    assert_checks_passed, assert_frames_balance, assert_power_off, assert_selftest_passed,
    boot_pvguests, guest_lines, TempDir, GRANTER_CHECKS, MAPPER_CHECKS,
};

#[test]
fn grant_map_copy_and_end_access_between_two_domains() {
    let dir = TempDir::new("gnttab-pair").expect("temp dir");
    let report = boot_pvguests(
        &dir,
        &[
            ("dom0", "selftest", 32),
            ("granter", "grant role=granter peer=2 port=3 rw=8 ro=9", 16),
            ("mapper", "grant role=mapper peer=1 port=3 rw=8 ro=9", 16),
        ],
    );
    assert_selftest_passed(&report, 0);
    assert!(
        guest_lines(&report, 1)
            .contains(&"grant: granted ref 8 (read-write) and ref 9 (read-only) to d2"),
        "the granter did not grant refs 8 and 9\n{}",
        report.describe()
    );
    assert_checks_passed(&report, 1, "grant", &GRANTER_CHECKS);
    assert_checks_passed(&report, 2, "grant", &MAPPER_CHECKS);
    // Every frame the domains, their grant tables and the mappings used is free again.
    assert_frames_balance(&report);
    assert_power_off(&report, 0);
}
