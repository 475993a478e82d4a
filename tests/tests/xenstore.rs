//! xenstore and the console back end (issue 5, items 4 to 6): the privileged d0 runs
//! pvguest's `backend` mode, a xenstored and a console back end for every other domain,
//! reached through the rings hv gives each domU (found with `HVMOP_get_param`, mapped through
//! the domU's reserved grant entries). d1 and d2 run `xenbus-test`: through the front-end
//! library's xenbus client each reads its `domid`, writes and reads back, lists directories,
//! gets a watch event, is refused the other's home with EACCES and sees a transaction
//! conflict; then each writes lines to its console ring, which the back end prints with the
//! domain's `(dN)` prefix. Every frame comes back and hv powers off cleanly.

use hv_tests::{
    assert_frames_balance, assert_power_off, boot_pvguests, guest_lines, hv_line, number_after,
    TempDir,
};

/// The checks `xenbus-test` reports, in order.
const CHECKS: [&str; 7] = [
    "read domid",
    "write and read back",
    "mkdir and directory",
    "watch event",
    "other domain refused",
    "transaction conflict",
    "console ring",
];

/// The lines each domU writes to its console ring.
fn console_lines(id: u32) -> [String; 3] {
    [
        format!("console ring hello from d{id}"),
        format!("console ring line 2 of 3 from d{id}"),
        format!("console ring line 3 of 3 from d{id}"),
    ]
}

#[test]
fn domus_use_xenstore_and_console_rings_served_by_the_control_domain() {
    let dir = TempDir::new("xenstore").expect("temp dir");
    let report = boot_pvguests(
        &dir,
        &[
            ("backends", "backend", 32),
            ("front-a", "xenbus-test other=2", 32),
            ("front-b", "xenbus-test other=1", 32),
        ],
    );
    for id in [1, 2] {
        let lines = guest_lines(&report, id);
        for check in CHECKS {
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
        for text in console_lines(id) {
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
        let d0 = guest_lines(&report, 0);
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
    let verdicts = report
        .lines
        .iter()
        .filter(|l| l.ends_with(") xenbus: SUCCESS"))
        .count();
    assert_eq!(verdicts, 2, "xenbus verdicts\n{}", report.describe());
    assert!(
        guest_lines(&report, 0).contains(&"backend: SUCCESS"),
        "the back end did not succeed\n{}",
        report.describe()
    );
    hv_line(&report, "d1 (front-a): Shutdown(Poweroff)");
    hv_line(&report, "d2 (front-b): Shutdown(Poweroff)");
    hv_line(&report, "d0 (backends): Shutdown(Poweroff)");
    assert_frames_balance(&report);
    assert_power_off(&report, 0);
}
