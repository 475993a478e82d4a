//! Hostile inter-domain cases (issue 5): an unprivileged domU (`hostile-peer peer=2`) binds
//! to ports of another domain that were not allocated for it, sends on and closes port
//! numbers that are not its own, asks for another domain's port status, allocates and resets
//! in another domain's table, maps and copies grant references the other domain never
//! granted it (or granted to the control domain), references beyond any table, a frame of
//! the other domain by number, and writes garbage onto its own xenstore ring (an unknown
//! message type, a header announcing more than 4096 bytes, random bytes, a garbage path).
//! hv refuses every attack with Xen's errno or grant status, xenstored answers the garbage
//! with error replies and keeps serving, the honest domU (`xenbus-test`) passes all its
//! checks, the back end succeeds, and every frame comes back.

use hv_tests::{
    assert_frames_balance, assert_power_off, boot_pvguests, guest_lines, hv_line, TempDir,
    XENBUS_CHECKS,
};

/// Every case and how it must be refused (the text after `refused `).
const CASES: &[(&str, &str)] = &[
    ("bind_peer_store_port", "EINVAL"),
    ("bind_peer_free_port", "EINVAL"),
    ("bind_peer_out_of_range_port", "EINVAL"),
    ("send_free_port", "EINVAL"),
    ("send_out_of_range_port", "EINVAL"),
    ("close_free_port", "EINVAL"),
    ("close_out_of_range_port", "EINVAL"),
    ("status_of_peer_port", "EPERM"),
    ("alloc_unbound_in_peer", "EPERM"),
    ("reset_peer", "EPERM"),
    ("map_ungranted_ref", "status -1 "),
    ("map_ungranted_ref_readonly", "status -1 "),
    ("map_store_ref_granted_to_d0", "status -1 "),
    ("map_out_of_range_ref", "status -3 "),
    ("copy_ungranted_ref", "status -1 "),
    ("copy_store_ref_granted_to_d0", "status -1 "),
    ("copy_out_of_range_ref", "status -3 "),
    ("copy_peer_frame_by_number", "status -8 "),
    ("xs_unknown_type", "with an error reply ("),
    (
        "xs_len_over_4096",
        "with an error reply (E2BIG), xenstored still serves",
    ),
    ("xs_random_bytes", "with an error reply ("),
    ("xs_garbage_path", "with an error reply ("),
];

#[test]
fn hostile_domu_is_refused_others_ports_grants_and_cannot_break_xenstored() {
    let dir = TempDir::new("hostile-peer").expect("temp dir");
    let report = boot_pvguests(
        &dir,
        &[
            ("backends", "backend", 32),
            ("hostile", "hostile-peer peer=2", 32),
            ("honest", "xenbus-test other=1", 32),
        ],
    );
    let hostile = guest_lines(&report, 1);
    let not_refused: Vec<&&str> = hostile
        .iter()
        .filter(|l| l.contains("NOT REFUSED"))
        .collect();
    assert!(
        not_refused.is_empty(),
        "attacks not refused: {not_refused:?}\n{}",
        report.describe()
    );
    for (case, how) in CASES {
        let want = format!("hostile-peer: {case} refused {how}");
        assert!(
            hostile
                .iter()
                .any(|l| l.starts_with(&want)
                    && l.ends_with("still serves") == case.starts_with("xs_")),
            "d1 did not print {want:?}...\n{}",
            report.describe()
        );
    }
    assert!(
        hostile.contains(&"hostile-peer: xenstore still serves d1 after the garbage"),
        "xenstored stopped serving d1\n{}",
        report.describe()
    );
    assert!(
        hostile.contains(&"hostile-peer: SUCCESS"),
        "d1 did not report success\n{}",
        report.describe()
    );
    let honest = guest_lines(&report, 2);
    for check in XENBUS_CHECKS {
        let want = format!("xenbus: {check} ok");
        assert!(
            honest.contains(&want.as_str()),
            "d2 did not print {want:?}\n{}",
            report.describe()
        );
    }
    assert!(
        honest.contains(&"xenbus: SUCCESS"),
        "the honest domU did not succeed\n{}",
        report.describe()
    );
    assert!(
        guest_lines(&report, 0).contains(&"backend: SUCCESS"),
        "the back end did not succeed\n{}",
        report.describe()
    );
    hv_line(&report, "d1 (hostile): Shutdown(Poweroff)");
    hv_line(&report, "d2 (honest): Shutdown(Poweroff)");
    hv_line(&report, "d0 (backends): Shutdown(Poweroff)");
    assert_frames_balance(&report);
    assert_power_off(&report, 0);
}
