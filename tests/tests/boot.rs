//! hv boots on every machine we test on, says how it was booted and what the CPU offers, and
//! powers off cleanly when it has nothing to run.

use hv_tests::{assert_cpu_line, assert_power_off, bochs, boot, hv_line, qemu, Machine};

/// QEMU `-cpu max` under TCG offers AMD SVM and no VT-x.
fn boots_via_pvh(machine: Machine) {
    let report = boot(&qemu(machine));
    hv_line(&report, "booted via PVH");
    assert_cpu_line(&report, false, true);
    assert_power_off(&report, 0);
}

#[test]
fn boots_on_qemu_microvm() {
    boots_via_pvh(Machine::Microvm);
}

#[test]
fn boots_on_qemu_q35() {
    boots_via_pvh(Machine::Q35);
}

/// Bochs's Sandy Bridge model offers VT-x (and, being Intel, no SVM); GRUB loads hv through
/// multiboot2.
#[test]
fn boots_in_bochs_via_grub() {
    let report = boot(&bochs());
    hv_line(&report, "booted via multiboot2");
    assert_cpu_line(&report, true, false);
    assert_power_off(&report, 0);
}
