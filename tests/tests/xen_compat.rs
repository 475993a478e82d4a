//! Compatibility with real Xen: pvguest, written against `hypercall-abi`, boots as dom0 on
//! Debian's Xen 4.17 under QEMU TCG and passes its whole selftest there. This pins the ABI
//! crate and the guest to Xen's actual behaviour, so hv can later be held to the same run.

use std::time::Duration;

use xtask::xen;

/// A Xen boot under TCG reaches pvguest's verdict in about ten seconds here.
const XEN_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn pvguest_selftest_passes_on_xen_4_17() {
    let image = xen::pvguest_image_for_tests().unwrap_or_else(|e| panic!("no pvguest image: {e}"));
    xen::xen_kernel().unwrap_or_else(|e| {
        panic!(
            "cannot obtain Xen 4.17 ({} via apt-get download): {e}",
            xen::XEN_PACKAGE
        )
    });
    let run = xen::run_pvguest_on_xen(&image, "selftest", XEN_TIMEOUT, false)
        .unwrap_or_else(|e| panic!("cannot run pvguest on Xen: {e}"));
    assert!(
        run.success,
        "pvguest did not report success on Xen 4.17:\n{}",
        run.describe()
    );
    let summary = run
        .line_containing("pvguest selftest:")
        .unwrap_or_else(|| panic!("no summary line:\n{}", run.describe()));
    assert!(
        summary.ends_with(", 0 failed"),
        "summary {summary:?}:\n{}",
        run.describe()
    );
    let failed: Vec<&str> = run
        .log
        .lines()
        .filter(|l| l.contains(" FAILED: "))
        .collect();
    assert!(
        failed.is_empty(),
        "failed checks {failed:#?}:\n{}",
        run.describe()
    );
}
