//! A domain killed while grants are mapped leaves no leaked frames (issue 5, grant tables):
//! one domain grants a page read-write, the other maps it, and then one of them crashes on
//! purpose (`SCHEDOP_shutdown(crash)`) with the mapping in place.
//!
//! - The mapper dies holding the mapping: hv must drop the dead mapper's mapping, so that the
//!   granter, refused ending access while the mapping existed, can end it afterwards.
//! - The granter dies under the mapping: the mapper still reads and writes the page (the
//!   mapping keeps the frame alive), unmaps it, and finishes.
//!
//! In both cases hv's free-frame count after the run equals the count before the domains
//! were built: the dead domain's frames, its grant table and the granted frame all come back.

use hv_tests::{
    assert_checks_passed, assert_frames_balance, assert_power_off, assert_selftest_passed,
    boot_pvguests, guest_lines, hv_line, RunReport, TempDir,
};

/// d`id` (named `name`) started its crash while holding `what`, and hv crashed it.
fn assert_crashed_holding(report: &RunReport, id: u32, name: &str, what: &str) {
    let lines = guest_lines(report, id);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("grant: crashing while ") && l.contains(what)),
        "d{id} did not crash while {what}\n{}",
        report.describe()
    );
    hv_line(report, &format!("d{id} ({name}) crashed: "));
    assert!(
        !lines.contains(&"grant: SUCCESS") && !lines.contains(&"grant: FAILURE"),
        "d{id} ran on after its crash\n{}",
        report.describe()
    );
}

#[test]
fn mapper_killed_while_mapping_a_grant_leaks_nothing() {
    let dir = TempDir::new("gnttab-mapper-dies").expect("temp dir");
    let report = boot_pvguests(
        &dir,
        &[
            ("dom0", "selftest", 32),
            (
                "granter",
                "grant role=granter peer=2 port=3 rw=8 then=outlive",
                16,
            ),
            (
                "mapper",
                "grant role=mapper peer=1 port=3 rw=8 then=crash",
                16,
            ),
        ],
    );
    assert_selftest_passed(&report, 0);
    assert_checks_passed(
        &report,
        1,
        "grant",
        &[
            "ref as agreed",
            "mapper's pattern",
            "end access while mapped refused",
            "end access after the mapper died",
        ],
    );
    assert_crashed_holding(&report, 2, "mapper", "ref 8 of d1 is mapped");
    // hv tore the dead mapper's mapping down with it.
    hv_line(&report, "gnttab: d2 released: 1 mappings, ");
    hv_line(&report, "d1 (granter): Shutdown(Poweroff)");
    hv_line(&report, "d0 (dom0): Shutdown(Poweroff)");
    assert_frames_balance(&report);
    // A crashed domain makes the run a failure, but hv itself powers off normally.
    assert_power_off(&report, 1);
}

#[test]
fn granter_killed_while_its_grant_is_mapped_leaks_nothing() {
    let dir = TempDir::new("gnttab-granter-dies").expect("temp dir");
    let report = boot_pvguests(
        &dir,
        &[
            ("dom0", "selftest", 32),
            (
                "granter",
                "grant role=granter peer=2 port=3 rw=8 then=crash",
                16,
            ),
            (
                "mapper",
                "grant role=mapper peer=1 port=3 rw=8 then=outlive",
                16,
            ),
        ],
    );
    assert_selftest_passed(&report, 0);
    assert_crashed_holding(&report, 1, "granter", "ref 8 is mapped by d2");
    // hv kept the granted frame while d2 mapped it, and let it go at the unmap.
    hv_line(
        &report,
        "gnttab: d1 released: 0 mappings, 1 grants still mapped by others",
    );
    hv_line(
        &report,
        "gnttab: d1: last grant of the dead domain released",
    );
    assert_checks_passed(
        &report,
        2,
        "grant",
        &[
            "map read-write grant",
            "granter's pattern",
            "granter gone",
            "page readable after the granter died",
            "page writable after the granter died",
            "unmap after the granter died",
        ],
    );
    hv_line(&report, "d2 (mapper): Shutdown(Poweroff)");
    hv_line(&report, "d0 (dom0): Shutdown(Poweroff)");
    assert_frames_balance(&report);
    assert_power_off(&report, 1);
}
