//! Everything hv reads can be wrong: a domain whose kernel image is malformed (truncated,
//! garbage, not a Xen PV image) is skipped with a clear line while the others run, and hv
//! neither crashes nor hangs.

use std::fs;

use hv_tests::{
    assert_power_off, assert_selftest_passed, boot, hv_line, pvguest_image, qemu, Machine, TempDir,
};

#[test]
fn malformed_kernels_skip_their_domain_only() {
    let dir = TempDir::new("bad-kernels").expect("temp dir");
    let good = pvguest_image();
    let bytes = fs::read(&good).expect("read pvguest");
    // A real image cut inside its loadable segments (the program headers remain and point
    // past the end), 4 KiB of garbage, and an ELF without Xen's PV notes (hv's own).
    let truncated = dir.path().join("truncated.elf");
    fs::write(&truncated, &bytes[..8192]).expect("write");
    let garbage = dir.path().join("garbage.elf");
    let noise: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(&garbage, noise).expect("write");
    let not_pv = hv_tests::hv_image();
    let config = dir.path().join("domains.toml");
    fs::write(
        &config,
        format!(
            "[[domain]]\nname = \"honest\"\nkernel = '{}'\ncmdline = \"selftest\"\nmemory = \"32M\"\nprivileged = true\n\n\
             [[domain]]\nname = \"truncated\"\nkernel = '{}'\nmemory = \"16M\"\n\n\
             [[domain]]\nname = \"garbage\"\nkernel = '{}'\nmemory = \"16M\"\n\n\
             [[domain]]\nname = \"notpv\"\nkernel = '{}'\nmemory = \"16M\"\n",
            good.display(),
            truncated.display(),
            garbage.display(),
            not_pv.display()
        ),
    )
    .expect("write config");
    let bundle = xtask::bundle::from_config_file(&config, &dir.path().join("bundle.bin"))
        .unwrap_or_else(|e| panic!("cannot make the bundle: {e}"));
    let mut spec = qemu(Machine::Microvm);
    spec.bundle = Some(bundle);
    let report = boot(&spec);
    for (id, name) in [(1, "truncated"), (2, "garbage"), (3, "notpv")] {
        let line = hv_line(&report, &format!("d{id} ({name}) not built: "));
        assert!(line.contains("kernel"), "{line}");
    }
    assert_selftest_passed(&report, 0);
    hv_line(&report, "d0 (honest): Shutdown(Poweroff)");
    // Skipped domains make the run a failure, but hv finished normally.
    assert_power_off(&report, 1);
}
