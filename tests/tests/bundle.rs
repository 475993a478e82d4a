//! hv takes its domains from the boot bundle: it refuses a bundle it cannot parse (a failed
//! run), and lists every domain of a valid one.

use std::fs;

use hv_tests::{assert_power_off, boot, hv_image, hv_line, qemu, Machine, Outcome, TempDir};

#[test]
fn corrupt_bundle_is_rejected() {
    let dir = TempDir::new("corrupt-bundle").expect("temp dir");
    let bundle = dir.path().join("bundle.bin");
    // Deterministic garbage: a linear congruential sequence, 4 KiB.
    let garbage: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(1_103_515_245).wrapping_add(12_345) >> 16) as u8)
        .collect();
    fs::write(&bundle, garbage).expect("write bundle");
    let mut spec = qemu(Machine::Microvm);
    spec.bundle = Some(bundle);
    let report = boot(&spec);
    hv_line(&report, "bundle rejected:");
    assert_power_off(&report, 1);
}

/// The bundle carries images without checking them, so hv's own ELF serves as a kernel.
#[test]
fn valid_bundle_lists_domains() {
    let dir = TempDir::new("valid-bundle").expect("temp dir");
    let kernel = hv_image();
    let config = dir.path().join("domains.toml");
    fs::write(
        &config,
        format!(
            "[[domain]]\n\
             name = \"alpha\"\n\
             kernel = '{kernel}'\n\
             memory = \"16M\"\n\
             privileged = true\n\
             \n\
             [[domain]]\n\
             name = \"beta\"\n\
             kernel = '{kernel}'\n\
             cmdline = \"quiet\"\n\
             memory = \"16M\"\n",
            kernel = kernel.display()
        ),
    )
    .expect("write config");
    let bundle = xtask::bundle::from_config_file(&config, &dir.path().join("bundle.bin"))
        .unwrap_or_else(|e| panic!("cannot make the bundle: {e}"));
    let mut spec = qemu(Machine::Microvm);
    spec.bundle = Some(bundle);
    let report = boot(&spec);
    hv_line(&report, "domain 0: alpha");
    hv_line(&report, "domain 1: beta");
    assert!(
        matches!(report.outcome, Outcome::PowerOff { .. }),
        "{}",
        report.describe()
    );
    assert!(
        report.line_containing("domain 2:").is_none(),
        "{}",
        report.describe()
    );
}
