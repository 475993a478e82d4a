//! xenstore and the console back end (issue 5, items 4 to 6): the privileged d0 runs
//! pvguest's `backend` mode, a xenstored and a console back end for every other domain,
//! reached through the rings hv gives each domU (found with `HVMOP_get_param`, mapped through
//! the domU's reserved grant entries). d1 and d2 run `xenbus-test`: through the front-end
//! library's xenbus client each reads its `domid`, writes and reads back, lists directories,
//! gets a watch event, is refused the other's home with EACCES and sees a transaction
//! conflict; then each writes lines to its console ring, which the back end prints with the
//! domain's `(dN)` prefix. Every frame comes back and hv powers off cleanly.

use hv_tests::{
    assert_frames_balance, assert_power_off, assert_xenbus_domu, boot_pvguests, guest_lines,
    hv_line, TempDir,
};

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
        assert_xenbus_domu(&report, id);
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
