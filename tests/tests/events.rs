//! Event channels between domains: two domUs, behind a privileged d0 that runs the selftest,
//! agree on a port through their command lines and ping-pong 10,000 events over it in strict
//! alternation; each side must see every event exactly once.

use hv_tests::{assert_power_off, assert_selftest_passed, boot_pvguests, guest_lines, TempDir};

/// Asserts domain `id` printed `line` exactly.
fn assert_guest_line(report: &hv_tests::RunReport, id: u32, line: &str) {
    assert!(
        guest_lines(report, id).contains(&line),
        "d{id} did not print {line:?}\n{}",
        report.describe()
    );
}

#[test]
fn pingpong_10000_events_between_two_domains() {
    let dir = TempDir::new("evtchn-pingpong").expect("temp dir");
    let report = boot_pvguests(
        &dir,
        &[
            ("dom0", "selftest", 32),
            (
                "server",
                "pingpong role=server peer=2 port=3 rounds=10000",
                16,
            ),
            (
                "client",
                "pingpong role=client peer=1 port=3 rounds=10000",
                16,
            ),
        ],
    );
    assert_selftest_passed(&report, 0);
    // The server's first free port is the one the client was told to bind (ports 1 and 2
    // are its xenstore and console ports for d0).
    assert_guest_line(&report, 1, "pingpong: allocated port 3 for d2");
    for (id, role) in [(1, "server"), (2, "client")] {
        assert_guest_line(
            &report,
            id,
            &format!("pingpong: {role} received 10000 events, 0 lost, 0 doubled"),
        );
        assert_guest_line(&report, id, "pingpong: SUCCESS");
    }
    assert_power_off(&report, 0);
}
