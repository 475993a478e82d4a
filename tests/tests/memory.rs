//! hv reads the firmware memory map: the RAM it reports matches QEMU's `-m`, less at most the
//! 2 MiB firmware and holes take.

use hv_tests::{assert_power_off, boot, hv_line, number_after, qemu, Machine};

#[test]
fn reported_memory_matches_qemu_m() {
    for memory_mib in [256u32, 512] {
        let mut spec = qemu(Machine::Microvm);
        spec.memory_mib = memory_mib;
        let report = boot(&spec);
        let line = hv_line(&report, "Memory map: ");
        let total_kib = number_after(line, "Memory map: ")
            .filter(|total| line.contains(&format!("Memory map: {total} KiB RAM")))
            .unwrap_or_else(|| panic!("cannot read \"Memory map: <total> KiB RAM\" from {line:?}"));
        let qemu_kib = u64::from(memory_mib) * 1024;
        assert!(
            total_kib <= qemu_kib && total_kib >= qemu_kib - 2048,
            "with -m {memory_mib} hv reports {total_kib} KiB RAM; expected {} to {qemu_kib}\n{}",
            qemu_kib - 2048,
            report.describe()
        );
        assert_power_off(&report, 0);
    }
}
