//! HVM (PVH) guests on hv's VMX backend, under Bochs (VT-x with EPT and unrestricted guest):
//! the pvguest image started at its PHYS32 entry passes its PVH selftest through `vmcall`
//! hypercalls, an HVM guest that triple-faults is crashed while a PV domain keeps running,
//! and an HVM and a PV domain exchange events (the HVM side through its callback vector) and
//! grants (the HVM side granting its guest frames).

use hv_tests::{
    assert_checks_passed, assert_frames_balance, assert_guest_line, assert_pingpong,
    assert_power_off, assert_selftest_passed, bochs, boot, guest_lines, hv_line, pvguest_image,
    TempDir, GRANTER_CHECKS, MAPPER_CHECKS,
};
use xtask::runner::RunReport;

/// Boots hv under Bochs with the domains of `toml` (pvguest is `KERNEL` in it).
fn boot_bochs(dir: &TempDir, toml: &str) -> RunReport {
    let kernel = pvguest_image();
    let toml = toml.replace("KERNEL", &format!("'{}'", kernel.display()));
    let config = dir.path().join("domains.toml");
    std::fs::write(&config, toml).expect("write config");
    let bundle = xtask::bundle::from_config_file(&config, &dir.path().join("bundle.bin"))
        .unwrap_or_else(|e| panic!("cannot make the bundle: {e}"));
    let mut spec = bochs();
    spec.bundle = Some(bundle);
    boot(&spec)
}

#[test]
fn pvguest_selftest_passes_as_a_pvh_guest() {
    let dir = TempDir::new("hvm-pvh-selftest").expect("temp dir");
    let report = boot_bochs(
        &dir,
        "[[domain]]\nname = \"pvh\"\ntype = \"pvh\"\nkernel = KERNEL\nmemory = \"16M\"\n",
    );
    hv_line(&report, "VMX on:");
    let lines = guest_lines(&report, 0);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pvguest: started as PVH: ") && l.contains("magic 0x336ec578")),
        "no PVH banner\n{}",
        report.describe()
    );
    assert_selftest_passed(&report, 0);
    hv_line(&report, "d0: shut down (Poweroff)");
    assert_power_off(&report, 0);
}

#[test]
fn hvm_triple_fault_crashes_only_that_domain() {
    let dir = TempDir::new("hvm-triple-fault").expect("temp dir");
    let report = boot_bochs(
        &dir,
        "[[domain]]\nname = \"hvm\"\ntype = \"pvh\"\nkernel = KERNEL\nmemory = \"16M\"\n\
         cmdline = \"pvh-triple-fault\"\n\n\
         [[domain]]\nname = \"pv\"\nkernel = KERNEL\nmemory = \"16M\"\ncmdline = \"selftest\"\n",
    );
    hv_line(&report, "d0: triple fault");
    hv_line(&report, "d0 (hvm) crashed: triple fault");
    assert_selftest_passed(&report, 1);
    hv_line(&report, "d1: shut down (Poweroff)");
    // A crashed domain makes the run a failure, but hv itself powers off normally.
    assert_power_off(&report, 1);
}

#[test]
fn hvm_and_pv_domains_exchange_events() {
    let dir = TempDir::new("hvm-pv-pingpong").expect("temp dir");
    let report = boot_bochs(
        &dir,
        "[[domain]]\nname = \"hvm\"\ntype = \"pvh\"\nkernel = KERNEL\nmemory = \"16M\"\n\
         cmdline = \"pingpong role=server peer=1 port=1 rounds=1000\"\n\n\
         [[domain]]\nname = \"pv\"\nkernel = KERNEL\nmemory = \"16M\"\n\
         cmdline = \"pingpong role=client peer=0 port=1 rounds=1000\"\n",
    );
    assert_guest_line(&report, 0, "pingpong: allocated port 1 for d1");
    assert_pingpong(&report, 0, 1, 1000);
    hv_line(&report, "d0 (hvm): Shutdown(Poweroff)");
    hv_line(&report, "d1 (pv): Shutdown(Poweroff)");
    assert_frames_balance(&report);
    assert_power_off(&report, 0);
}

#[test]
fn an_hvm_domain_grants_pages_to_a_pv_domain() {
    let dir = TempDir::new("hvm-pv-grants").expect("temp dir");
    let report = boot_bochs(
        &dir,
        "[[domain]]\nname = \"hvm\"\ntype = \"pvh\"\nkernel = KERNEL\nmemory = \"16M\"\n\
         cmdline = \"grant role=granter peer=1 port=1 rw=8 ro=9\"\n\n\
         [[domain]]\nname = \"pv\"\nkernel = KERNEL\nmemory = \"16M\"\n\
         cmdline = \"grant role=mapper peer=0 port=1 rw=8 ro=9\"\n",
    );
    assert_guest_line(
        &report,
        0,
        "grant: granted ref 8 (read-write) and ref 9 (read-only) to d1",
    );
    assert_checks_passed(&report, 0, "grant", &GRANTER_CHECKS);
    assert_checks_passed(&report, 1, "grant", &MAPPER_CHECKS);
    assert_frames_balance(&report);
    assert_power_off(&report, 0);
}
