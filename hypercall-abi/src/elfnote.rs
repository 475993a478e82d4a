//! ELF notes (name "Xen") through which a guest kernel tells the domain
//! builder how to load it, and the `XENFEAT_*` feature numbers they and
//! `XENVER_get_features` use.

abi_enum! {
    /// Note type of a "Xen" ELF note (`XEN_ELFNOTE_*`).
    pub enum XenElfnote: u32 {
        /// Padding / no information.
        Info = 0,
        /// PV entry point (virtual address, numeric).
        Entry = 1,
        /// Virtual address of the page to fill with hypercall stubs.
        HypercallPage = 2,
        /// Virtual base the kernel is linked at.
        VirtBase = 3,
        /// Offset between virtual and physical load addresses.
        PaddrOffset = 4,
        /// Hypervisor version required (string, e.g. "xen-3.0").
        XenVersion = 5,
        /// Guest OS name (string).
        GuestOs = 6,
        /// Guest OS version (string).
        GuestVersion = 7,
        /// Loader type (string, "generic").
        Loader = 8,
        /// PAE support (string: "yes", "no", "bimodal", "yes[extended-cr3]").
        PaeMode = 9,
        /// Required and optional features (string, `|`-separated, `!` = required).
        Features = 10,
        /// Load the symbol table ("yes").
        BsdSymtab = 11,
        /// Lowest address the hypervisor may occupy (32-bit PAE guests).
        HvStartLow = 12,
        /// Mask and value identifying valid L1 PTEs.
        L1MfnValid = 13,
        /// The guest supports suspend cancellation.
        SuspendCancel = 14,
        /// Virtual address at which to place the initial P2M table.
        InitP2m = 15,
        /// The guest accepts `mod_start` as a PFN.
        ModStartPfn = 16,
        /// Bitmap of `XENFEAT_*` the kernel supports (numeric).
        SupportedFeatures = 17,
        /// 32-bit physical entry point for PVH (numeric).
        Phys32Entry = 18,
        /// PVH relocation parameters (alignment, minimum, maximum address).
        Phys32Reloc = 19,
        /// Crash-dump: crash information.
        CrashInfo = 0x0100_0001,
        /// Crash-dump: register state.
        CrashRegs = 0x0100_0002,
        /// Core file: empty note.
        DumpcoreNone = 0x0200_0000,
        /// Core file: header.
        DumpcoreHeader = 0x0200_0001,
        /// Core file: hypervisor version.
        DumpcoreXenVersion = 0x0200_0002,
        /// Core file: format version.
        DumpcoreFormatVersion = 0x0200_0003,
    }
}

/// Name field of every Xen ELF note (NUL-terminated, 4 bytes).
pub const XEN_ELFNOTE_NAME: &[u8; 4] = b"Xen\0";
/// Highest guest-load note type.
pub const XEN_ELFNOTE_MAX: u32 = XenElfnote::Phys32Reloc as u32;

abi_enum! {
    /// Feature numbers (`XENFEAT_*`): bit positions in the
    /// `XENVER_get_features` submaps and names in the FEATURES note.
    pub enum XenFeature: u32 {
        /// The guest may write page tables directly (trapped and emulated).
        WritablePageTables = 0,
        /// The guest may write descriptor tables directly.
        WritableDescriptorTables = 1,
        /// The hypervisor translates guest frames (HVM/PVH).
        AutoTranslatedPhysmap = 2,
        /// The kernel runs in ring 0.
        SupervisorModeKernel = 3,
        /// PAE page directories may lie above 4 GiB.
        PaePgdirAbove4gb = 4,
        /// `MMU_PT_UPDATE_PRESERVE_AD` is available.
        MmuPtUpdatePreserveAd = 5,
        /// Highmem assist (32-bit).
        HighmemAssist = 6,
        /// Grant mappings honour `GNTMAP_guest_avail` bits.
        GnttabMapAvailBits = 7,
        /// `HVM_PARAM_CALLBACK_TYPE_VECTOR` is available.
        HvmCallbackVector = 8,
        /// The PV clock is safe for HVM guests.
        HvmSafePvclock = 9,
        /// HVM guests may map PIRQs to event channels.
        HvmPirqs = 10,
        /// The domain is the hardware domain.
        Dom0 = 11,
        /// `XENMEMF_vnode` is supported.
        MemoryOpVnodeSupported = 13,
        /// Arm SMCCC is available.
        ArmSmcccSupported = 14,
        /// The Linux RSDP location is not restricted.
        LinuxRsdpUnrestricted = 15,
        /// Memory is not 1:1 mapped (Arm).
        NotDirectMapped = 16,
        /// Memory is 1:1 mapped (Arm).
        DirectMapped = 17,
        /// `VCPUOP_register_runstate_phys_area` is available.
        RunstatePhysArea = 18,
        /// `VCPUOP_register_vcpu_time_phys_area` is available.
        VcpuTimePhysArea = 19,
        /// Device-model MSI-X writes are all forwarded.
        DmMsixAllWrites = 20,
    }
}

/// Number of 32-bit `XENVER_get_features` submaps.
pub const XENFEAT_NR_SUBMAPS: u32 = 1;

impl XenFeature {
    /// The feature's name as written in a FEATURES note.
    pub const fn name(self) -> &'static str {
        match self {
            XenFeature::WritablePageTables => "writable_page_tables",
            XenFeature::WritableDescriptorTables => "writable_descriptor_tables",
            XenFeature::AutoTranslatedPhysmap => "auto_translated_physmap",
            XenFeature::SupervisorModeKernel => "supervisor_mode_kernel",
            XenFeature::PaePgdirAbove4gb => "pae_pgdir_above_4gb",
            XenFeature::MmuPtUpdatePreserveAd => "mmu_pt_update_preserve_ad",
            XenFeature::HighmemAssist => "highmem_assist",
            XenFeature::GnttabMapAvailBits => "gnttab_map_avail_bits",
            XenFeature::HvmCallbackVector => "hvm_callback_vector",
            XenFeature::HvmSafePvclock => "hvm_safe_pvclock",
            XenFeature::HvmPirqs => "hvm_pirqs",
            XenFeature::Dom0 => "dom0",
            XenFeature::MemoryOpVnodeSupported => "memory_op_vnode_supported",
            XenFeature::ArmSmcccSupported => "ARM_SMCCC_supported",
            XenFeature::LinuxRsdpUnrestricted => "linux_rsdp_unrestricted",
            XenFeature::NotDirectMapped => "not_direct_mapped",
            XenFeature::DirectMapped => "direct_mapped",
            XenFeature::RunstatePhysArea => "runstate_phys_area",
            XenFeature::VcpuTimePhysArea => "vcpu_time_phys_area",
            XenFeature::DmMsixAllWrites => "dm_msix_all_writes",
        }
    }

    /// The feature named `name` in a FEATURES note.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// The bit for this feature in submap 0.
    pub const fn submap_bit(self) -> u32 {
        1 << (self as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_numbers_match_xen() {
        let expect = [
            (1, XenElfnote::Entry),
            (2, XenElfnote::HypercallPage),
            (3, XenElfnote::VirtBase),
            (4, XenElfnote::PaddrOffset),
            (5, XenElfnote::XenVersion),
            (6, XenElfnote::GuestOs),
            (9, XenElfnote::PaeMode),
            (10, XenElfnote::Features),
            (17, XenElfnote::SupportedFeatures),
            (18, XenElfnote::Phys32Entry),
        ];
        for (n, note) in expect {
            assert_eq!(XenElfnote::try_from(n as u32), Ok(note));
        }
        for &note in XenElfnote::ALL {
            assert_eq!(XenElfnote::try_from(note.raw()), Ok(note));
        }
        assert!(XenElfnote::try_from(20u32).is_err());
        assert!(XenElfnote::try_from(0x0100_0000u32).is_err());
        assert_eq!(XEN_ELFNOTE_MAX, 19);
    }

    #[test]
    fn features_round_trip_by_number_and_name() {
        for &f in XenFeature::ALL {
            assert_eq!(XenFeature::try_from(f.raw()), Ok(f));
            assert_eq!(XenFeature::from_name(f.name()), Some(f));
            assert!(f.raw() < 32 * XENFEAT_NR_SUBMAPS);
        }
        assert!(XenFeature::try_from(12u32).is_err());
        assert!(XenFeature::try_from(21u32).is_err());
        assert_eq!(
            XenFeature::from_name("pae_pgdir_above_4gb"),
            Some(XenFeature::PaePgdirAbove4gb)
        );
        assert_eq!(XenFeature::HvmCallbackVector.submap_bit(), 0x100);
    }
}
