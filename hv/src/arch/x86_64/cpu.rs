//! CPU identification and the few raw instructions hv needs beyond the `x86_64` crate.

use core::arch::x86_64::{__cpuid_count, CpuidResult};
use core::fmt;

/// CPUID leaf `leaf`, sub-leaf `sub`.
pub fn cpuid(leaf: u32, sub: u32) -> CpuidResult {
    __cpuid_count(leaf, sub)
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is unprivileged-safe, has no side effects, and CR4.TSD is never set by hv.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// What hv uses or reports of the boot CPU.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// The 12-byte vendor string.
    pub vendor: [u8; 12],
    /// The 48-byte brand string, NUL-padded.
    pub brand: [u8; 48],
    /// Family, model, stepping (display values).
    pub family: u32,
    /// Model (display value).
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
    /// Intel VT-x.
    pub vmx: bool,
    /// AMD-V.
    pub svm: bool,
    /// AMD-V nested paging.
    pub npt: bool,
    /// x2APIC mode available.
    pub x2apic: bool,
    /// LAPIC timer TSC-deadline mode available.
    pub tsc_deadline: bool,
    /// The TSC runs at a constant rate in all states.
    pub invariant_tsc: bool,
    /// No-execute page protection.
    pub nx: bool,
    /// 1 GiB pages.
    pub page1g: bool,
    /// Global pages (CR4.PGE).
    pub pge: bool,
    /// Highest basic CPUID leaf.
    pub max_leaf: u32,
}

impl Features {
    /// Reads the boot CPU's features.
    pub fn detect() -> Self {
        let l0 = cpuid(0, 0);
        let mut f = Features {
            vendor: [0; 12],
            brand: [0; 48],
            family: 0,
            model: 0,
            stepping: 0,
            vmx: false,
            svm: false,
            npt: false,
            x2apic: false,
            tsc_deadline: false,
            invariant_tsc: false,
            nx: false,
            page1g: false,
            pge: false,
            max_leaf: l0.eax,
        };
        for (i, r) in [l0.ebx, l0.edx, l0.ecx].iter().enumerate() {
            f.vendor[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
        }
        let l1 = cpuid(1, 0);
        let base_family = (l1.eax >> 8) & 0xf;
        let base_model = (l1.eax >> 4) & 0xf;
        f.family = if base_family == 0xf {
            base_family + ((l1.eax >> 20) & 0xff)
        } else {
            base_family
        };
        f.model = if base_family == 0x6 || base_family == 0xf {
            base_model | (((l1.eax >> 16) & 0xf) << 4)
        } else {
            base_model
        };
        f.stepping = l1.eax & 0xf;
        f.vmx = l1.ecx & (1 << 5) != 0;
        f.x2apic = l1.ecx & (1 << 21) != 0;
        f.tsc_deadline = l1.ecx & (1 << 24) != 0;
        f.pge = l1.edx & (1 << 13) != 0;
        let max_ext = cpuid(0x8000_0000, 0).eax;
        if max_ext >= 0x8000_0001 {
            let e1 = cpuid(0x8000_0001, 0);
            f.svm = e1.ecx & (1 << 2) != 0;
            f.nx = e1.edx & (1 << 20) != 0;
            f.page1g = e1.edx & (1 << 26) != 0;
        }
        if max_ext >= 0x8000_0004 {
            for (i, leaf) in (0x8000_0002..=0x8000_0004).enumerate() {
                let r = cpuid(leaf, 0);
                for (j, v) in [r.eax, r.ebx, r.ecx, r.edx].iter().enumerate() {
                    let at = i * 16 + j * 4;
                    f.brand[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        if max_ext >= 0x8000_0007 {
            f.invariant_tsc = cpuid(0x8000_0007, 0).edx & (1 << 8) != 0;
        }
        if f.svm && max_ext >= 0x8000_000a {
            f.npt = cpuid(0x8000_000a, 0).edx & 1 != 0;
        }
        f
    }

    fn text(bytes: &[u8]) -> &str {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        core::str::from_utf8(&bytes[..end]).unwrap_or("?").trim()
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU: {} \"{}\" family {:#x} model {:#x} stepping {}, VMX {}, SVM {} (NPT {}), \
             x2APIC {}, TSC-deadline {}, invariant TSC {}, NX {}, 1G pages {}",
            Self::text(&self.vendor),
            Self::text(&self.brand),
            self.family,
            self.model,
            self.stepping,
            yes(self.vmx),
            yes(self.svm),
            yes(self.npt),
            yes(self.x2apic),
            yes(self.tsc_deadline),
            yes(self.invariant_tsc),
            yes(self.nx),
            yes(self.page1g)
        )
    }
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU (otherwise RDMSR raises #GP) and reading it must have no
/// side effects hv does not expect.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR touches only EAX/EDX.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it; the write's effect on the CPU must be
/// one hv intends.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags));
    }
}

/// Reads CR2 (the faulting address of the last page fault).
pub fn cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

/// Halts until the next interrupt, with interrupts enabled atomically (`sti; hlt`).
pub fn enable_and_halt() {
    x86_64::instructions::interrupts::enable_and_hlt();
}
