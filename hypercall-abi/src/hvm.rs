//! HVM/PVH guests: `hvm_op` and its parameters, event-callback encoding, the
//! PVH start-of-day structure and the CPUID/MSR interface through which an
//! HVM guest finds the hypervisor and its hypercall page.

use crate::DomId;

abi_enum! {
    /// `cmd` of `hvm_op(cmd, arg)` (`HVMOP_*`).
    pub enum HvmOp: u32 {
        /// Set a parameter ([`XenHvmParam`]).
        SetParam = 0,
        /// Get a parameter ([`XenHvmParam`]).
        GetParam = 1,
        /// Legacy: set a PCI INTx level (device model).
        SetPciIntxLevel = 2,
        /// Legacy: set an ISA IRQ level (device model).
        SetIsaIrqLevel = 3,
        /// Legacy: route a PCI link (device model).
        SetPciLinkRoute = 4,
        /// Flush all vCPUs' TLBs; the argument must be null.
        FlushTlbs = 5,
        /// The guest is tearing down a page table (shadow-paging hint).
        PagetableDying = 9,
        /// Current system time ([`XenHvmGetTime`]).
        GetTime = 10,
        /// Emit a trace record.
        Xentrace = 11,
        /// Toolstack: set memory access permissions.
        SetMemAccess = 12,
        /// Toolstack: get memory access permissions.
        GetMemAccess = 13,
        /// Type of a guest frame.
        GetMemType = 15,
        /// Per-vCPU event upcall vector ([`XenHvmEvtchnUpcallVector`]).
        SetEvtchnUpcallVector = 23,
        /// Raise a guest-requested VM event.
        GuestRequestVmEvent = 24,
        /// Alternate p2m operations.
        Altp2m = 25,
    }
}

/// Argument of `HVMOP_set_param` / `HVMOP_get_param` (`struct xen_hvm_param`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenHvmParam {
    /// IN: domain (`DOMID_SELF`).
    pub domid: DomId,
    /// Padding.
    pub pad: u16,
    /// IN: [`HvmParam`].
    pub index: u32,
    /// IN (set) / OUT (get): value.
    pub value: u64,
}
assert_layout!(XenHvmParam, size = 16, domid = 0, index = 4, value = 8);

abi_enum! {
    /// Parameter index (`HVM_PARAM_*`).
    pub enum HvmParam: u32 {
        /// How event-channel upcalls reach vCPU 0 ([`HvmCallbackVia`]).
        CallbackIrq = 0,
        /// Guest frame of the xenstore ring.
        StorePfn = 1,
        /// Event channel of the xenstore ring.
        StoreEvtchn = 2,
        /// Toolstack: PAE enabled.
        PaeEnabled = 4,
        /// Frame of the synchronous ioreq page.
        IoreqPfn = 5,
        /// Frame of the buffered ioreq page.
        BufioreqPfn = 6,
        /// Viridian (Hyper-V) enlightenment mask.
        Viridian = 9,
        /// Virtual-timer mode.
        TimerMode = 10,
        /// HPET present.
        HpetEnabled = 11,
        /// Identity page table for unpaged real mode.
        IdentPt = 12,
        /// Toolstack: device-model domain.
        DmDomain = 13,
        /// ACPI sleep state.
        AcpiSState = 14,
        /// TSS for vm86 mode.
        Vm86Tss = 15,
        /// Virtual-platform-timer alignment.
        VptAlign = 16,
        /// Guest frame of the console ring.
        ConsolePfn = 17,
        /// Event channel of the console ring.
        ConsoleEvtchn = 18,
        /// Location of ACPI PM I/O ports.
        AcpiIoportsLocation = 19,
        /// Toolstack: memory event on CR0.
        MemoryEventCr0 = 20,
        /// Toolstack: memory event on CR3.
        MemoryEventCr3 = 21,
        /// Toolstack: memory event on CR4.
        MemoryEventCr4 = 22,
        /// Toolstack: memory event on INT3.
        MemoryEventInt3 = 23,
        /// Toolstack: nested HVM.
        Nestedhvm = 24,
        /// Toolstack: memory event on single step.
        MemoryEventSingleStep = 25,
        /// Toolstack: buffered ioreq event channel.
        BufioreqEvtchn = 26,
        /// Paging ring frame.
        PagingRingPfn = 27,
        /// Monitor ring frame.
        MonitorRingPfn = 28,
        /// Sharing ring frame.
        SharingRingPfn = 29,
        /// Toolstack: memory event on MSR.
        MemoryEventMsr = 30,
        /// Action on triple fault.
        TripleFaultReason = 31,
        /// First ioreq-server frame.
        IoreqServerPfn = 32,
        /// Number of ioreq-server frames.
        NrIoreqServerPages = 33,
        /// VM generation id address.
        VmGenerationIdAddr = 34,
        /// Alternate p2m mode.
        Altp2m = 35,
        /// x87 FIP width.
        X87FipWidth = 36,
        /// Sized vm86 TSS.
        Vm86TssSized = 37,
        /// Machine-check capabilities.
        McaCap = 38,
    }
}

/// Number of HVM parameters (valid indices are below this).
pub const HVM_NR_PARAMS: u32 = 39;

/// Bits 63:56 of `HVM_PARAM_CALLBACK_IRQ` hold the delivery type.
pub const HVM_PARAM_CALLBACK_IRQ_TYPE_MASK: u64 = 0xFF00_0000_0000_0000;
/// Shift of the delivery type in `HVM_PARAM_CALLBACK_IRQ`.
pub const HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT: u32 = 56;

abi_enum! {
    /// Delivery type in `HVM_PARAM_CALLBACK_IRQ[63:56]`
    /// (`HVM_PARAM_CALLBACK_TYPE_*`).
    pub enum HvmCallbackType: u64 {
        /// Bits 55:0 are a GSI (GSI 0 is not usable).
        Gsi = 0,
        /// Bits 55:0 name a PCI INTx line.
        PciIntx = 1,
        /// Bits 7:0 are an IDT vector (needs `XENFEAT_hvm_callback_vector`).
        Vector = 2,
    }
}

/// A decoded `HVM_PARAM_CALLBACK_IRQ` value ("callback via").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HvmCallbackVia {
    /// 0: event-channel upcalls are not delivered.
    None,
    /// Through a GSI.
    Gsi(u32),
    /// Through a PCI INTx line.
    PciIntx {
        /// PCI segment (bits 47:32).
        domain: u16,
        /// Bus (bits 31:16).
        bus: u8,
        /// Device/function (bits 15:8).
        devfn: u8,
        /// INTx pin 0-3 (bits 1:0).
        intx: u8,
    },
    /// Directly through an IDT vector.
    Vector(u8),
}

impl HvmCallbackVia {
    /// Decodes a parameter value; an unknown type is rejected.
    pub fn decode(value: u64) -> Result<Self, crate::UnknownValue> {
        if value == 0 {
            return Ok(Self::None);
        }
        let ty = HvmCallbackType::try_from(value >> HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT)?;
        let low = value & !HVM_PARAM_CALLBACK_IRQ_TYPE_MASK;
        Ok(match ty {
            HvmCallbackType::Gsi => Self::Gsi(low as u32),
            HvmCallbackType::PciIntx => Self::PciIntx {
                domain: (low >> 32) as u16,
                bus: (low >> 16) as u8,
                devfn: (low >> 8) as u8,
                intx: (low & 3) as u8,
            },
            HvmCallbackType::Vector => Self::Vector(low as u8),
        })
    }

    /// Encodes the value to store in `HVM_PARAM_CALLBACK_IRQ`.
    pub const fn encode(self) -> u64 {
        const SHIFT: u32 = HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT;
        match self {
            Self::None => 0,
            Self::Gsi(gsi) => ((HvmCallbackType::Gsi as u64) << SHIFT) | gsi as u64,
            Self::PciIntx {
                domain,
                bus,
                devfn,
                intx,
            } => {
                ((HvmCallbackType::PciIntx as u64) << SHIFT)
                    | (domain as u64) << 32
                    | (bus as u64) << 16
                    | (devfn as u64) << 8
                    | (intx & 3) as u64
            }
            Self::Vector(v) => ((HvmCallbackType::Vector as u64) << SHIFT) | v as u64,
        }
    }
}

/// Argument of `HVMOP_get_time`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenHvmGetTime {
    /// OUT: system time in nanoseconds.
    pub now: u64,
}
assert_layout!(XenHvmGetTime, size = 8, now = 0);

/// Argument of `HVMOP_pagetable_dying`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenHvmPagetableDying {
    /// IN: domain.
    pub domid: DomId,
    /// Padding.
    pub pad: [u16; 3],
    /// IN: guest physical address of the top-level table.
    pub gpa: u64,
}
assert_layout!(XenHvmPagetableDying, size = 16, domid = 0, gpa = 8);

/// Argument of `HVMOP_set_evtchn_upcall_vector`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenHvmEvtchnUpcallVector {
    /// IN: vCPU.
    pub vcpu: u32,
    /// IN: IDT vector for that vCPU's upcalls.
    pub vector: u8,
    /// Padding.
    pub pad: [u8; 3],
}
assert_layout!(XenHvmEvtchnUpcallVector, size = 8, vcpu = 0, vector = 4);

// ---------------------------------------------------------------------------
// PVH start of day.

/// [`HvmStartInfo::magic`].
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// The PVH start-of-day structure (`struct hvm_start_info`), whose physical
/// address the guest receives in `ebx`. All fields OUT.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmStartInfo {
    /// OUT: [`XEN_HVM_START_MAGIC_VALUE`].
    pub magic: u32,
    /// OUT: structure version (1 adds the memory map).
    pub version: u32,
    /// OUT: `SIF_*` flags.
    pub flags: u32,
    /// OUT: number of [`HvmModlistEntry`]s at `modlist_paddr`.
    pub nr_modules: u32,
    /// OUT: physical address of the module list.
    pub modlist_paddr: u64,
    /// OUT: physical address of the NUL-terminated command line (0 if none).
    pub cmdline_paddr: u64,
    /// OUT: physical address of the ACPI RSDP (0 if none).
    pub rsdp_paddr: u64,
    /// OUT (version >= 1): physical address of the [`HvmMemmapTableEntry`] array.
    pub memmap_paddr: u64,
    /// OUT (version >= 1): number of memory-map entries (0 = use other means).
    pub memmap_entries: u32,
    /// Reserved, zero.
    pub reserved: u32,
}
assert_layout!(
    HvmStartInfo,
    size = 56,
    magic = 0,
    version = 4,
    flags = 8,
    nr_modules = 12,
    modlist_paddr = 16,
    cmdline_paddr = 24,
    rsdp_paddr = 32,
    memmap_paddr = 40,
    memmap_entries = 48,
    reserved = 52,
);

/// One module of a PVH guest (`struct hvm_modlist_entry`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmModlistEntry {
    /// OUT: physical address of the module.
    pub paddr: u64,
    /// OUT: size in bytes.
    pub size: u64,
    /// OUT: physical address of its command line (0 if none).
    pub cmdline_paddr: u64,
    /// Reserved, zero.
    pub reserved: u64,
}
assert_layout!(
    HvmModlistEntry,
    size = 32,
    paddr = 0,
    size = 8,
    cmdline_paddr = 16,
    reserved = 24
);

abi_enum! {
    /// [`HvmMemmapTableEntry::kind`] (`XEN_HVM_MEMMAP_TYPE_*`, the ACPI
    /// address-range types).
    pub enum HvmMemmapType: u32 {
        /// Usable RAM.
        Ram = 1,
        /// Reserved.
        Reserved = 2,
        /// ACPI reclaimable.
        Acpi = 3,
        /// ACPI NVS.
        Nvs = 4,
        /// Unusable.
        Unusable = 5,
        /// Disabled.
        Disabled = 6,
        /// Persistent memory.
        Pmem = 7,
    }
}

/// One memory-map entry of a PVH guest (`struct hvm_memmap_table_entry`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmMemmapTableEntry {
    /// OUT: start address.
    pub addr: u64,
    /// OUT: size in bytes.
    pub size: u64,
    /// OUT: [`HvmMemmapType`].
    pub kind: u32,
    /// Reserved, zero.
    pub reserved: u32,
}
assert_layout!(
    HvmMemmapTableEntry,
    size = 24,
    addr = 0,
    size = 8,
    kind = 16,
    reserved = 20
);

// ---------------------------------------------------------------------------
// CPUID and MSR discovery.

/// First CPUID leaf of the hypervisor range. The Xen leaves may start at any
/// multiple of 0x100 from here (0x40000100 when Viridian leaves come first);
/// guests scan in 0x100 steps up to [`XEN_CPUID_SCAN_END`].
pub const XEN_CPUID_FIRST_LEAF: u32 = 0x4000_0000;
/// Step between candidate base leaves.
pub const XEN_CPUID_SCAN_STEP: u32 = 0x100;
/// Exclusive end of the scan guests conventionally perform.
pub const XEN_CPUID_SCAN_END: u32 = 0x4001_0000;
/// Leaf `base + 0` EBX: "XenV".
pub const XEN_CPUID_SIGNATURE_EBX: u32 = 0x566e_6558;
/// Leaf `base + 0` ECX: "MMXe".
pub const XEN_CPUID_SIGNATURE_ECX: u32 = 0x6558_4d4d;
/// Leaf `base + 0` EDX: "nVMM".
pub const XEN_CPUID_SIGNATURE_EDX: u32 = 0x4d4d_566e;
/// Offset of the version leaf (EAX = major << 16 | minor).
pub const XEN_CPUID_LEAF_VERSION: u32 = 1;
/// Offset of the hypercall-page leaf (EAX = number of pages, EBX = MSR index).
pub const XEN_CPUID_LEAF_HYPERCALL: u32 = 2;
/// Offset of the time leaf.
pub const XEN_CPUID_LEAF_TIME: u32 = 3;
/// Offset of the HVM-features leaf.
pub const XEN_CPUID_LEAF_HVM: u32 = 4;
/// Offset of the PV-features leaf.
pub const XEN_CPUID_LEAF_PV: u32 = 5;
/// Number of Xen leaves after the base leaf; leaf `base` EAX reports
/// `base + XEN_CPUID_MAX_NUM_LEAVES`.
pub const XEN_CPUID_MAX_NUM_LEAVES: u32 = 5;

/// The MSR index Xen reports in leaf `base + 2` EBX: writing a guest physical
/// page address to it fills that page with hypercall stubs (the low 12 bits
/// select which of several pages; one page is always enough).
pub const XEN_HYPERCALL_MSR: u32 = 0x4000_0000;
/// The MSR index Xen reports instead when Viridian enlightenments are on.
pub const XEN_HYPERCALL_MSR_VIRIDIAN: u32 = 0x4000_0200;

/// Leaf `base + 2` ECX bit: `MMU_PT_UPDATE_PRESERVE_AD` is supported.
pub const XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD: u32 = 1 << 0;
/// Leaf `base + 4` EAX bit: APIC register accesses are virtualised.
pub const XEN_HVM_CPUID_APIC_ACCESS_VIRT: u32 = 1 << 0;
/// Leaf `base + 4` EAX bit: x2APIC accesses are virtualised.
pub const XEN_HVM_CPUID_X2APIC_VIRT: u32 = 1 << 1;
/// Leaf `base + 4` EAX bit: foreign mappings have IOMMU entries.
pub const XEN_HVM_CPUID_IOMMU_MAPPINGS: u32 = 1 << 2;
/// Leaf `base + 4` EAX bit: EBX holds the vCPU id.
pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// Leaf `base + 4` EAX bit: ECX holds the domain id.
pub const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;
/// Leaf `base + 4` EAX bit: extended destination id in IO-APIC RTEs / MSIs.
pub const XEN_HVM_CPUID_EXT_DEST_ID: u32 = 1 << 5;
/// Leaf `base + 4` EAX bit: per-vCPU upcall vectors work with physical IRQs.
pub const XEN_HVM_CPUID_UPCALL_VECTOR: u32 = 1 << 6;

/// Whether CPUID registers EBX, ECX, EDX carry the "XenVMMXenVMM" signature.
pub const fn is_xen_signature(ebx: u32, ecx: u32, edx: u32) -> bool {
    ebx == XEN_CPUID_SIGNATURE_EBX
        && ecx == XEN_CPUID_SIGNATURE_ECX
        && edx == XEN_CPUID_SIGNATURE_EDX
}

/// First bytes of an HVM hypercall stub on Intel: `mov $N, %eax` is
/// `b8 N32`, followed by `vmcall` and `ret`.
pub const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];
/// AMD's equivalent of [`VMCALL`].
pub const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn numbers_round_trip_and_reject() {
        for &op in HvmOp::ALL {
            assert_eq!(HvmOp::try_from(op.raw()), Ok(op));
        }
        assert_eq!(HvmOp::SetParam.raw(), 0);
        assert_eq!(HvmOp::GetParam.raw(), 1);
        assert!(HvmOp::try_from(6u32).is_err());
        assert!(HvmOp::try_from(26u32).is_err());
        for &p in HvmParam::ALL {
            assert_eq!(HvmParam::try_from(p.raw()), Ok(p));
            assert!(p.raw() < HVM_NR_PARAMS);
        }
        assert_eq!(HvmParam::ConsolePfn.raw(), 17);
        assert_eq!(HvmParam::ConsoleEvtchn.raw(), 18);
        assert!(HvmParam::try_from(3u32).is_err());
        assert!(HvmParam::try_from(HVM_NR_PARAMS).is_err());
        for &t in HvmMemmapType::ALL {
            assert_eq!(HvmMemmapType::try_from(t.raw()), Ok(t));
        }
        assert!(HvmMemmapType::try_from(8u32).is_err());
    }

    #[test]
    fn callback_via_round_trips() {
        let cases = [
            HvmCallbackVia::None,
            HvmCallbackVia::Gsi(28),
            HvmCallbackVia::PciIntx {
                domain: 0,
                bus: 0,
                devfn: 3 << 3,
                intx: 0,
            },
            HvmCallbackVia::Vector(0xf3),
        ];
        for via in cases {
            assert_eq!(HvmCallbackVia::decode(via.encode()), Ok(via));
        }
        assert_eq!(HvmCallbackVia::Vector(0xf3).encode(), 0x0200_0000_0000_00f3);
        assert!(HvmCallbackVia::decode(3 << 56).is_err());
    }

    #[test]
    fn start_info_layouts() {
        assert_eq!(size_of::<HvmStartInfo>(), 56);
        assert_eq!(offset_of!(HvmStartInfo, modlist_paddr), 16);
        assert_eq!(offset_of!(HvmStartInfo, memmap_paddr), 40);
        assert_eq!(offset_of!(HvmStartInfo, memmap_entries), 48);
        assert_eq!(size_of::<HvmModlistEntry>(), 32);
        assert_eq!(size_of::<HvmMemmapTableEntry>(), 24);
        assert_eq!(offset_of!(HvmMemmapTableEntry, kind), 16);
        assert_eq!(size_of::<XenHvmParam>(), 16);
        assert_eq!(offset_of!(XenHvmParam, value), 8);
        assert_eq!(XEN_HVM_START_MAGIC_VALUE, 0x336ec578);
    }

    #[test]
    fn cpuid_signature_spells_xenvmm() {
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&XEN_CPUID_SIGNATURE_EBX.to_le_bytes());
        sig[4..8].copy_from_slice(&XEN_CPUID_SIGNATURE_ECX.to_le_bytes());
        sig[8..].copy_from_slice(&XEN_CPUID_SIGNATURE_EDX.to_le_bytes());
        assert_eq!(&sig, b"XenVMMXenVMM");
        assert!(is_xen_signature(
            XEN_CPUID_SIGNATURE_EBX,
            XEN_CPUID_SIGNATURE_ECX,
            XEN_CPUID_SIGNATURE_EDX
        ));
        assert!(!is_xen_signature(0, 0, 0));
        assert_eq!(XEN_HYPERCALL_MSR, XEN_CPUID_FIRST_LEAF);
    }
}
