//! Event channels between domains: two domUs, behind a privileged d0 that runs the selftest,
//! agree on a port through their command lines and ping-pong 10,000 events over it in strict
//! alternation; each side must see every event exactly once.

use hv_tests::{
    assert_guest_line, assert_pingpong, assert_power_off, assert_selftest_passed, boot_pvguests,
    TempDir,
};

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
    assert_pingpong(&report, 1, 2, 10_000);
    assert_power_off(&report, 0);
}
