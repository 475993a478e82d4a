//! The VMCS vocabulary: field encodings typed by width, the VM-execution, VM-exit and
//! VM-entry control words, and the capability MSRs that say which controls a CPU supports.
//!
//! Encodings follow SDM Vol. 3C Appendix B. An encoding's bits are (24.11.2, Table 24-21):
//! bit 0 access type (0 = full), bits 9:1 index, bits 11:10 type (0 control, 1 VM-exit
//! information, 2 guest state, 3 host state), bit 12 reserved, bits 14:13 width (0 16-bit,
//! 1 64-bit, 2 32-bit, 3 natural width). [`Field`] carries the width in its type so the
//! arch layer's `vmread`/`vmwrite` take and return the right integer; a constant with the
//! wrong width bits does not compile.

use core::marker::PhantomData;

use bitflags::bitflags;

/// The width of a VMCS field, as a type.
pub trait Width {
    /// The value type the field holds.
    type Value: Copy + Into<u64>;
    /// The width code in encoding bits 14:13.
    const CODE: u32;
    /// The value from a 64-bit VMREAD result (upper bits dropped, as the CPU does).
    fn from_u64(v: u64) -> Self::Value;
}

/// 16-bit fields.
#[derive(Clone, Copy, Debug)]
pub enum W16 {}
/// 64-bit fields (full access).
#[derive(Clone, Copy, Debug)]
pub enum W64 {}
/// 32-bit fields.
#[derive(Clone, Copy, Debug)]
pub enum W32 {}
/// Natural-width fields (64 bits on x86_64).
#[derive(Clone, Copy, Debug)]
pub enum WNatural {}

impl Width for W16 {
    type Value = u16;
    const CODE: u32 = 0;
    fn from_u64(v: u64) -> u16 {
        v as u16
    }
}
impl Width for W64 {
    type Value = u64;
    const CODE: u32 = 1;
    fn from_u64(v: u64) -> u64 {
        v
    }
}
impl Width for W32 {
    type Value = u32;
    const CODE: u32 = 2;
    fn from_u64(v: u64) -> u32 {
        v as u32
    }
}
impl Width for WNatural {
    type Value = u64;
    const CODE: u32 = 3;
    fn from_u64(v: u64) -> u64 {
        v
    }
}

/// What a field belongs to (encoding bits 11:10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// VM-execution, VM-exit and VM-entry control fields.
    Control,
    /// Read-only VM-exit information.
    ExitInfo,
    /// Guest-state area.
    Guest,
    /// Host-state area.
    Host,
}

/// A VMCS field encoding of width `W`.
#[derive(Debug)]
pub struct Field<W: Width> {
    encoding: u32,
    width: PhantomData<W>,
}

impl<W: Width> Clone for Field<W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W: Width> Copy for Field<W> {}

impl<W: Width> Field<W> {
    /// The field with `encoding`; fails to compile (in a constant) if the encoding's width bits
    /// are not `W`'s, or it names the high half of a 64-bit field.
    pub const fn new(encoding: u32) -> Self {
        assert!((encoding >> 13) & 3 == W::CODE, "width bits do not match");
        assert!(
            encoding & 1 == 0,
            "high-half accesses are not used on x86_64"
        );
        assert!(
            encoding >> 15 == 0 && encoding & (1 << 12) == 0,
            "reserved bits"
        );
        Field {
            encoding,
            width: PhantomData,
        }
    }

    /// The encoding VMREAD / VMWRITE take.
    pub const fn encoding(self) -> u32 {
        self.encoding
    }

    /// Which area the field belongs to.
    pub const fn kind(self) -> FieldKind {
        match (self.encoding >> 10) & 3 {
            0 => FieldKind::Control,
            1 => FieldKind::ExitInfo,
            2 => FieldKind::Guest,
            _ => FieldKind::Host,
        }
    }

    /// The field's index (encoding bits 9:1).
    pub const fn index(self) -> u32 {
        (self.encoding >> 1) & 0x1ff
    }
}

/// A field of any width, for tables (dumps on a failed VM entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnyField {
    /// Name, as in the SDM.
    pub name: &'static str,
    /// Encoding.
    pub encoding: u32,
}

macro_rules! fields {
    ($($(#[$doc:meta])* $name:ident: $w:ident = $enc:literal;)*) => {
        $($(#[$doc])* pub const $name: super::Field<super::$w> = super::Field::new($enc);)*
        /// Every field of this group, for dumps.
        pub const ALL: &[super::AnyField] = &[
            $(super::AnyField { name: stringify!($name), encoding: $enc },)*
        ];
    };
}

/// Control fields (Appendix B.1.1, B.2.1, B.3.1, B.4.1).
pub mod control {
    fields! {
        /// Virtual-processor identifier (VPID).
        VPID: W16 = 0x0000;
        /// Posted-interrupt notification vector.
        POSTED_INTR_NOTIFICATION_VECTOR: W16 = 0x0002;
        /// EPTP index.
        EPTP_INDEX: W16 = 0x0004;
        /// Address of I/O bitmap A (ports 0x0000-0x7fff).
        IO_BITMAP_A: W64 = 0x2000;
        /// Address of I/O bitmap B (ports 0x8000-0xffff).
        IO_BITMAP_B: W64 = 0x2002;
        /// Address of the MSR bitmaps.
        MSR_BITMAP: W64 = 0x2004;
        /// VM-exit MSR-store address.
        EXIT_MSR_STORE_ADDR: W64 = 0x2006;
        /// VM-exit MSR-load address.
        EXIT_MSR_LOAD_ADDR: W64 = 0x2008;
        /// VM-entry MSR-load address.
        ENTRY_MSR_LOAD_ADDR: W64 = 0x200a;
        /// Executive-VMCS pointer.
        EXECUTIVE_VMCS_PTR: W64 = 0x200c;
        /// PML address.
        PML_ADDR: W64 = 0x200e;
        /// TSC offset.
        TSC_OFFSET: W64 = 0x2010;
        /// Virtual-APIC address.
        VIRTUAL_APIC_ADDR: W64 = 0x2012;
        /// APIC-access address.
        APIC_ACCESS_ADDR: W64 = 0x2014;
        /// Posted-interrupt descriptor address.
        POSTED_INTR_DESC_ADDR: W64 = 0x2016;
        /// VM-function controls.
        VM_FUNCTION_CONTROLS: W64 = 0x2018;
        /// EPT pointer.
        EPTP: W64 = 0x201a;
        /// EOI-exit bitmap 0.
        EOI_EXIT_BITMAP0: W64 = 0x201c;
        /// EOI-exit bitmap 1.
        EOI_EXIT_BITMAP1: W64 = 0x201e;
        /// EOI-exit bitmap 2.
        EOI_EXIT_BITMAP2: W64 = 0x2020;
        /// EOI-exit bitmap 3.
        EOI_EXIT_BITMAP3: W64 = 0x2022;
        /// EPTP-list address.
        EPTP_LIST_ADDR: W64 = 0x2024;
        /// VMREAD-bitmap address.
        VMREAD_BITMAP: W64 = 0x2026;
        /// VMWRITE-bitmap address.
        VMWRITE_BITMAP: W64 = 0x2028;
        /// Virtualization-exception information address.
        VE_INFO_ADDR: W64 = 0x202a;
        /// XSS-exiting bitmap.
        XSS_EXIT_BITMAP: W64 = 0x202c;
        /// ENCLS-exiting bitmap.
        ENCLS_EXIT_BITMAP: W64 = 0x202e;
        /// Sub-page-permission-table pointer.
        SPPTP: W64 = 0x2030;
        /// TSC multiplier.
        TSC_MULTIPLIER: W64 = 0x2032;
        /// Tertiary processor-based VM-execution controls.
        TERTIARY_PROC_BASED: W64 = 0x2034;
        /// Pin-based VM-execution controls ([`super::PinBased`]).
        PIN_BASED: W32 = 0x4000;
        /// Primary processor-based VM-execution controls ([`super::PrimaryProcBased`]).
        PRIMARY_PROC_BASED: W32 = 0x4002;
        /// Exception bitmap.
        EXCEPTION_BITMAP: W32 = 0x4004;
        /// Page-fault error-code mask.
        PF_ERROR_CODE_MASK: W32 = 0x4006;
        /// Page-fault error-code match.
        PF_ERROR_CODE_MATCH: W32 = 0x4008;
        /// CR3-target count.
        CR3_TARGET_COUNT: W32 = 0x400a;
        /// VM-exit controls ([`super::ExitControls`]).
        EXIT_CONTROLS: W32 = 0x400c;
        /// VM-exit MSR-store count.
        EXIT_MSR_STORE_COUNT: W32 = 0x400e;
        /// VM-exit MSR-load count.
        EXIT_MSR_LOAD_COUNT: W32 = 0x4010;
        /// VM-entry controls ([`super::EntryControls`]).
        ENTRY_CONTROLS: W32 = 0x4012;
        /// VM-entry MSR-load count.
        ENTRY_MSR_LOAD_COUNT: W32 = 0x4014;
        /// VM-entry interruption-information field.
        ENTRY_INTR_INFO: W32 = 0x4016;
        /// VM-entry exception error code.
        ENTRY_EXCEPTION_ERROR_CODE: W32 = 0x4018;
        /// VM-entry instruction length.
        ENTRY_INSTRUCTION_LEN: W32 = 0x401a;
        /// TPR threshold.
        TPR_THRESHOLD: W32 = 0x401c;
        /// Secondary processor-based VM-execution controls ([`super::SecondaryProcBased`]).
        SECONDARY_PROC_BASED: W32 = 0x401e;
        /// PAUSE-loop-exiting gap.
        PLE_GAP: W32 = 0x4020;
        /// PAUSE-loop-exiting window.
        PLE_WINDOW: W32 = 0x4022;
        /// CR0 guest/host mask.
        CR0_GUEST_HOST_MASK: WNatural = 0x6000;
        /// CR4 guest/host mask.
        CR4_GUEST_HOST_MASK: WNatural = 0x6002;
        /// CR0 read shadow.
        CR0_READ_SHADOW: WNatural = 0x6004;
        /// CR4 read shadow.
        CR4_READ_SHADOW: WNatural = 0x6006;
        /// CR3-target value 0.
        CR3_TARGET_VALUE0: WNatural = 0x6008;
        /// CR3-target value 1.
        CR3_TARGET_VALUE1: WNatural = 0x600a;
        /// CR3-target value 2.
        CR3_TARGET_VALUE2: WNatural = 0x600c;
        /// CR3-target value 3.
        CR3_TARGET_VALUE3: WNatural = 0x600e;
    }
}

/// Read-only VM-exit information fields (Appendix B.2.2, B.3.2, B.4.2).
pub mod exit_info {
    fields! {
        /// Guest-physical address (EPT violations and misconfigurations).
        GUEST_PHYSICAL_ADDR: W64 = 0x2400;
        /// VM-instruction error ([`crate::hvm::exit::VmInstructionError`]).
        VM_INSTRUCTION_ERROR: W32 = 0x4400;
        /// Exit reason ([`crate::hvm::exit::ExitReason`]).
        EXIT_REASON: W32 = 0x4402;
        /// VM-exit interruption information.
        EXIT_INTR_INFO: W32 = 0x4404;
        /// VM-exit interruption error code.
        EXIT_INTR_ERROR_CODE: W32 = 0x4406;
        /// IDT-vectoring information.
        IDT_VECTORING_INFO: W32 = 0x4408;
        /// IDT-vectoring error code.
        IDT_VECTORING_ERROR_CODE: W32 = 0x440a;
        /// VM-exit instruction length.
        EXIT_INSTRUCTION_LEN: W32 = 0x440c;
        /// VM-exit instruction information.
        EXIT_INSTRUCTION_INFO: W32 = 0x440e;
        /// Exit qualification.
        EXIT_QUALIFICATION: WNatural = 0x6400;
        /// I/O RCX.
        IO_RCX: WNatural = 0x6402;
        /// I/O RSI.
        IO_RSI: WNatural = 0x6404;
        /// I/O RDI.
        IO_RDI: WNatural = 0x6406;
        /// I/O RIP.
        IO_RIP: WNatural = 0x6408;
        /// Guest-linear address.
        GUEST_LINEAR_ADDR: WNatural = 0x640a;
    }
}

/// Guest-state fields (Appendix B.1.2, B.2.3, B.3.3, B.4.3; SDM 24.4).
pub mod guest {
    fields! {
        /// ES selector.
        ES_SELECTOR: W16 = 0x0800;
        /// CS selector.
        CS_SELECTOR: W16 = 0x0802;
        /// SS selector.
        SS_SELECTOR: W16 = 0x0804;
        /// DS selector.
        DS_SELECTOR: W16 = 0x0806;
        /// FS selector.
        FS_SELECTOR: W16 = 0x0808;
        /// GS selector.
        GS_SELECTOR: W16 = 0x080a;
        /// LDTR selector.
        LDTR_SELECTOR: W16 = 0x080c;
        /// TR selector.
        TR_SELECTOR: W16 = 0x080e;
        /// Guest interrupt status.
        INTR_STATUS: W16 = 0x0810;
        /// PML index.
        PML_INDEX: W16 = 0x0812;
        /// VMCS link pointer (all ones when unused).
        VMCS_LINK_POINTER: W64 = 0x2800;
        /// IA32_DEBUGCTL.
        IA32_DEBUGCTL: W64 = 0x2802;
        /// IA32_PAT.
        IA32_PAT: W64 = 0x2804;
        /// IA32_EFER.
        IA32_EFER: W64 = 0x2806;
        /// IA32_PERF_GLOBAL_CTRL.
        IA32_PERF_GLOBAL_CTRL: W64 = 0x2808;
        /// PDPTE0 (PAE paging with EPT).
        PDPTE0: W64 = 0x280a;
        /// PDPTE1.
        PDPTE1: W64 = 0x280c;
        /// PDPTE2.
        PDPTE2: W64 = 0x280e;
        /// PDPTE3.
        PDPTE3: W64 = 0x2810;
        /// IA32_BNDCFGS.
        IA32_BNDCFGS: W64 = 0x2812;
        /// IA32_RTIT_CTL.
        IA32_RTIT_CTL: W64 = 0x2814;
        /// IA32_PKRS.
        IA32_PKRS: W64 = 0x2818;
        /// ES limit.
        ES_LIMIT: W32 = 0x4800;
        /// CS limit.
        CS_LIMIT: W32 = 0x4802;
        /// SS limit.
        SS_LIMIT: W32 = 0x4804;
        /// DS limit.
        DS_LIMIT: W32 = 0x4806;
        /// FS limit.
        FS_LIMIT: W32 = 0x4808;
        /// GS limit.
        GS_LIMIT: W32 = 0x480a;
        /// LDTR limit.
        LDTR_LIMIT: W32 = 0x480c;
        /// TR limit.
        TR_LIMIT: W32 = 0x480e;
        /// GDTR limit.
        GDTR_LIMIT: W32 = 0x4810;
        /// IDTR limit.
        IDTR_LIMIT: W32 = 0x4812;
        /// ES access rights.
        ES_AR: W32 = 0x4814;
        /// CS access rights.
        CS_AR: W32 = 0x4816;
        /// SS access rights.
        SS_AR: W32 = 0x4818;
        /// DS access rights.
        DS_AR: W32 = 0x481a;
        /// FS access rights.
        FS_AR: W32 = 0x481c;
        /// GS access rights.
        GS_AR: W32 = 0x481e;
        /// LDTR access rights.
        LDTR_AR: W32 = 0x4820;
        /// TR access rights.
        TR_AR: W32 = 0x4822;
        /// Interruptibility state (bit 0 STI blocking, 1 MOV SS blocking, 3 NMI blocking).
        INTERRUPTIBILITY: W32 = 0x4824;
        /// Activity state (0 active, 1 HLT, 2 shutdown, 3 wait-for-SIPI).
        ACTIVITY_STATE: W32 = 0x4826;
        /// SMBASE.
        SMBASE: W32 = 0x4828;
        /// IA32_SYSENTER_CS.
        IA32_SYSENTER_CS: W32 = 0x482a;
        /// VMX-preemption timer value.
        PREEMPTION_TIMER: W32 = 0x482e;
        /// CR0.
        CR0: WNatural = 0x6800;
        /// CR3.
        CR3: WNatural = 0x6802;
        /// CR4.
        CR4: WNatural = 0x6804;
        /// ES base.
        ES_BASE: WNatural = 0x6806;
        /// CS base.
        CS_BASE: WNatural = 0x6808;
        /// SS base.
        SS_BASE: WNatural = 0x680a;
        /// DS base.
        DS_BASE: WNatural = 0x680c;
        /// FS base.
        FS_BASE: WNatural = 0x680e;
        /// GS base.
        GS_BASE: WNatural = 0x6810;
        /// LDTR base.
        LDTR_BASE: WNatural = 0x6812;
        /// TR base.
        TR_BASE: WNatural = 0x6814;
        /// GDTR base.
        GDTR_BASE: WNatural = 0x6816;
        /// IDTR base.
        IDTR_BASE: WNatural = 0x6818;
        /// DR7.
        DR7: WNatural = 0x681a;
        /// RSP.
        RSP: WNatural = 0x681c;
        /// RIP.
        RIP: WNatural = 0x681e;
        /// RFLAGS.
        RFLAGS: WNatural = 0x6820;
        /// Pending debug exceptions.
        PENDING_DBG_EXCEPTIONS: WNatural = 0x6822;
        /// IA32_SYSENTER_ESP.
        IA32_SYSENTER_ESP: WNatural = 0x6824;
        /// IA32_SYSENTER_EIP.
        IA32_SYSENTER_EIP: WNatural = 0x6826;
        /// IA32_S_CET.
        IA32_S_CET: WNatural = 0x6828;
        /// SSP.
        SSP: WNatural = 0x682a;
        /// IA32_INTERRUPT_SSP_TABLE_ADDR.
        IA32_INTERRUPT_SSP_TABLE_ADDR: WNatural = 0x682c;
    }
}

/// Host-state fields (Appendix B.1.3, B.2.4, B.3.4, B.4.4; SDM 24.5).
pub mod host {
    fields! {
        /// ES selector.
        ES_SELECTOR: W16 = 0x0c00;
        /// CS selector.
        CS_SELECTOR: W16 = 0x0c02;
        /// SS selector.
        SS_SELECTOR: W16 = 0x0c04;
        /// DS selector.
        DS_SELECTOR: W16 = 0x0c06;
        /// FS selector.
        FS_SELECTOR: W16 = 0x0c08;
        /// GS selector.
        GS_SELECTOR: W16 = 0x0c0a;
        /// TR selector.
        TR_SELECTOR: W16 = 0x0c0c;
        /// IA32_PAT.
        IA32_PAT: W64 = 0x2c00;
        /// IA32_EFER.
        IA32_EFER: W64 = 0x2c02;
        /// IA32_PERF_GLOBAL_CTRL.
        IA32_PERF_GLOBAL_CTRL: W64 = 0x2c04;
        /// IA32_PKRS.
        IA32_PKRS: W64 = 0x2c06;
        /// IA32_SYSENTER_CS.
        IA32_SYSENTER_CS: W32 = 0x4c00;
        /// CR0.
        CR0: WNatural = 0x6c00;
        /// CR3.
        CR3: WNatural = 0x6c02;
        /// CR4.
        CR4: WNatural = 0x6c04;
        /// FS base.
        FS_BASE: WNatural = 0x6c06;
        /// GS base.
        GS_BASE: WNatural = 0x6c08;
        /// TR base.
        TR_BASE: WNatural = 0x6c0a;
        /// GDTR base.
        GDTR_BASE: WNatural = 0x6c0c;
        /// IDTR base.
        IDTR_BASE: WNatural = 0x6c0e;
        /// IA32_SYSENTER_ESP.
        IA32_SYSENTER_ESP: WNatural = 0x6c10;
        /// IA32_SYSENTER_EIP.
        IA32_SYSENTER_EIP: WNatural = 0x6c12;
        /// RSP (hv's stack for the exit handler).
        RSP: WNatural = 0x6c14;
        /// RIP (hv's VM-exit entry point).
        RIP: WNatural = 0x6c16;
        /// IA32_S_CET.
        IA32_S_CET: WNatural = 0x6c18;
        /// SSP.
        SSP: WNatural = 0x6c1a;
        /// IA32_INTERRUPT_SSP_TABLE_ADDR.
        IA32_INTERRUPT_SSP_TABLE_ADDR: WNatural = 0x6c1c;
    }
}

bitflags! {
    /// Pin-based VM-execution controls (SDM 24.6.1, Table 24-5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PinBased: u32 {
        /// External interrupts cause VM exits.
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        /// NMIs cause VM exits.
        const NMI_EXITING = 1 << 3;
        /// Virtual NMIs.
        const VIRTUAL_NMIS = 1 << 5;
        /// Activate the VMX-preemption timer.
        const PREEMPTION_TIMER = 1 << 6;
        /// Process posted interrupts.
        const POSTED_INTERRUPTS = 1 << 7;
    }
}

bitflags! {
    /// Primary processor-based VM-execution controls (SDM 24.6.2, Table 24-6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PrimaryProcBased: u32 {
        /// Exit when the guest can take interrupts.
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        /// Use the TSC offset.
        const USE_TSC_OFFSETTING = 1 << 3;
        /// HLT exits.
        const HLT_EXITING = 1 << 7;
        /// INVLPG exits.
        const INVLPG_EXITING = 1 << 9;
        /// MWAIT exits.
        const MWAIT_EXITING = 1 << 10;
        /// RDPMC exits.
        const RDPMC_EXITING = 1 << 11;
        /// RDTSC exits.
        const RDTSC_EXITING = 1 << 12;
        /// MOV to CR3 exits (unless a CR3-target value matches).
        const CR3_LOAD_EXITING = 1 << 15;
        /// MOV from CR3 exits.
        const CR3_STORE_EXITING = 1 << 16;
        /// Activate the tertiary controls.
        const ACTIVATE_TERTIARY_CONTROLS = 1 << 17;
        /// MOV to CR8 exits.
        const CR8_LOAD_EXITING = 1 << 19;
        /// MOV from CR8 exits.
        const CR8_STORE_EXITING = 1 << 20;
        /// Use the TPR shadow.
        const USE_TPR_SHADOW = 1 << 21;
        /// Exit when the guest can take NMIs.
        const NMI_WINDOW_EXITING = 1 << 22;
        /// MOV DR exits.
        const MOV_DR_EXITING = 1 << 23;
        /// Every I/O instruction exits.
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        /// Use the I/O bitmaps.
        const USE_IO_BITMAPS = 1 << 25;
        /// Monitor trap flag.
        const MONITOR_TRAP_FLAG = 1 << 27;
        /// Use the MSR bitmaps.
        const USE_MSR_BITMAPS = 1 << 28;
        /// MONITOR exits.
        const MONITOR_EXITING = 1 << 29;
        /// PAUSE exits.
        const PAUSE_EXITING = 1 << 30;
        /// Activate the secondary controls.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

bitflags! {
    /// Secondary processor-based VM-execution controls (SDM 24.6.2, Table 24-7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SecondaryProcBased: u32 {
        /// Virtualize APIC accesses.
        const VIRTUALIZE_APIC_ACCESSES = 1 << 0;
        /// Enable EPT.
        const ENABLE_EPT = 1 << 1;
        /// LGDT/LIDT/LLDT/LTR/SGDT/SIDT/SLDT/STR exit.
        const DESCRIPTOR_TABLE_EXITING = 1 << 2;
        /// RDTSCP does not #UD.
        const ENABLE_RDTSCP = 1 << 3;
        /// Virtualize x2APIC mode.
        const VIRTUALIZE_X2APIC = 1 << 4;
        /// Tag TLB entries with the VPID.
        const ENABLE_VPID = 1 << 5;
        /// WBINVD exits.
        const WBINVD_EXITING = 1 << 6;
        /// The guest may run unpaged or in real mode.
        const UNRESTRICTED_GUEST = 1 << 7;
        /// APIC-register virtualization.
        const APIC_REGISTER_VIRTUALIZATION = 1 << 8;
        /// Virtual-interrupt delivery.
        const VIRTUAL_INTERRUPT_DELIVERY = 1 << 9;
        /// PAUSE-loop exiting.
        const PAUSE_LOOP_EXITING = 1 << 10;
        /// RDRAND exits.
        const RDRAND_EXITING = 1 << 11;
        /// INVPCID does not #UD.
        const ENABLE_INVPCID = 1 << 12;
        /// Enable VM functions.
        const ENABLE_VM_FUNCTIONS = 1 << 13;
        /// VMCS shadowing.
        const VMCS_SHADOWING = 1 << 14;
        /// ENCLS exits.
        const ENCLS_EXITING = 1 << 15;
        /// RDSEED exits.
        const RDSEED_EXITING = 1 << 16;
        /// Page-modification logging.
        const ENABLE_PML = 1 << 17;
        /// EPT violations may cause #VE.
        const EPT_VIOLATION_VE = 1 << 18;
        /// Conceal VMX from Intel PT.
        const CONCEAL_VMX_FROM_PT = 1 << 19;
        /// XSAVES/XRSTORS do not #UD.
        const ENABLE_XSAVES = 1 << 20;
        /// Mode-based execute control for EPT.
        const MODE_BASED_EPT_EXEC = 1 << 22;
        /// Sub-page write permissions for EPT.
        const SUB_PAGE_WRITE = 1 << 23;
        /// Intel PT uses guest-physical addresses.
        const PT_USES_GPA = 1 << 24;
        /// Use TSC scaling.
        const USE_TSC_SCALING = 1 << 25;
        /// UMWAIT/TPAUSE do not #UD.
        const ENABLE_USER_WAIT_PAUSE = 1 << 26;
        /// PCONFIG does not #UD.
        const ENABLE_PCONFIG = 1 << 27;
        /// ENCLV exits.
        const ENCLV_EXITING = 1 << 28;
    }
}

bitflags! {
    /// VM-exit controls (SDM 24.7.1, Table 24-13).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ExitControls: u32 {
        /// Save DR7 and IA32_DEBUGCTL.
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        /// The host runs in 64-bit mode after the exit.
        const HOST_ADDRESS_SPACE_SIZE = 1 << 9;
        /// Load IA32_PERF_GLOBAL_CTRL.
        const LOAD_PERF_GLOBAL_CTRL = 1 << 12;
        /// Acknowledge the interrupt that caused the exit (vector in the exit information).
        const ACK_INTERRUPT_ON_EXIT = 1 << 15;
        /// Save the guest's IA32_PAT.
        const SAVE_PAT = 1 << 18;
        /// Load the host's IA32_PAT.
        const LOAD_PAT = 1 << 19;
        /// Save the guest's IA32_EFER.
        const SAVE_EFER = 1 << 20;
        /// Load the host's IA32_EFER.
        const LOAD_EFER = 1 << 21;
        /// Save the VMX-preemption timer value.
        const SAVE_PREEMPTION_TIMER = 1 << 22;
        /// Clear IA32_BNDCFGS.
        const CLEAR_BNDCFGS = 1 << 23;
        /// Conceal VM exits from Intel PT.
        const CONCEAL_VMX_FROM_PT = 1 << 24;
        /// Clear IA32_RTIT_CTL.
        const CLEAR_RTIT_CTL = 1 << 25;
        /// Load CET state.
        const LOAD_CET_STATE = 1 << 28;
        /// Load PKRS.
        const LOAD_PKRS = 1 << 29;
    }
}

bitflags! {
    /// VM-entry controls (SDM 24.8.1, Table 24-15).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EntryControls: u32 {
        /// Load DR7 and IA32_DEBUGCTL.
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        /// The guest is in IA-32e mode (must equal the guest's EFER.LMA).
        const IA32E_MODE_GUEST = 1 << 9;
        /// Entry to SMM.
        const ENTRY_TO_SMM = 1 << 10;
        /// Deactivate dual-monitor treatment.
        const DEACTIVATE_DUAL_MONITOR = 1 << 11;
        /// Load IA32_PERF_GLOBAL_CTRL.
        const LOAD_PERF_GLOBAL_CTRL = 1 << 13;
        /// Load the guest's IA32_PAT.
        const LOAD_PAT = 1 << 14;
        /// Load the guest's IA32_EFER.
        const LOAD_EFER = 1 << 15;
        /// Load IA32_BNDCFGS.
        const LOAD_BNDCFGS = 1 << 16;
        /// Conceal VM entries from Intel PT.
        const CONCEAL_VMX_FROM_PT = 1 << 17;
        /// Load IA32_RTIT_CTL.
        const LOAD_RTIT_CTL = 1 << 18;
        /// Load CET state.
        const LOAD_CET_STATE = 1 << 20;
        /// Load PKRS.
        const LOAD_PKRS = 1 << 22;
    }
}

/// VMX capability MSRs and IA32_FEATURE_CONTROL (SDM Appendix A; Vol. 4 Table 2-2).
pub mod msr {
    /// IA32_FEATURE_CONTROL: bit 0 lock, bit 2 VMX outside SMX.
    pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
    /// IA32_VMX_BASIC ([`super::VmxBasic`]).
    pub const IA32_VMX_BASIC: u32 = 0x480;
    /// IA32_VMX_PINBASED_CTLS.
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    /// IA32_VMX_PROCBASED_CTLS.
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    /// IA32_VMX_EXIT_CTLS.
    pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    /// IA32_VMX_ENTRY_CTLS.
    pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    /// IA32_VMX_MISC (bits 4:0: the preemption timer counts every 2^n TSC ticks).
    pub const IA32_VMX_MISC: u32 = 0x485;
    /// IA32_VMX_CR0_FIXED0: CR0 bits that must be 1.
    pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    /// IA32_VMX_CR0_FIXED1: CR0 bits that may be 1.
    pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    /// IA32_VMX_CR4_FIXED0: CR4 bits that must be 1.
    pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    /// IA32_VMX_CR4_FIXED1: CR4 bits that may be 1.
    pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    /// IA32_VMX_VMCS_ENUM.
    pub const IA32_VMX_VMCS_ENUM: u32 = 0x48a;
    /// IA32_VMX_PROCBASED_CTLS2 (secondary controls; only allowed-1 bits matter).
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
    /// IA32_VMX_EPT_VPID_CAP ([`super::EptVpidCap`]).
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
    /// IA32_VMX_TRUE_PINBASED_CTLS.
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
    /// IA32_VMX_TRUE_PROCBASED_CTLS.
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
    /// IA32_VMX_TRUE_EXIT_CTLS.
    pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
    /// IA32_VMX_TRUE_ENTRY_CTLS.
    pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
}

/// The decoded IA32_VMX_BASIC MSR (SDM A.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxBasic(pub u64);

impl VmxBasic {
    /// The VMCS revision identifier (bits 30:0), written to the first word of VMXON and VMCS
    /// regions.
    pub const fn revision_id(self) -> u32 {
        (self.0 & 0x7fff_ffff) as u32
    }

    /// Bytes to allocate for a VMXON or VMCS region (bits 44:32, at most 4096).
    pub const fn region_size(self) -> u32 {
        ((self.0 >> 32) & 0x1fff) as u32
    }

    /// The memory type for VMCS accesses (bits 53:50; 6 = write-back).
    pub const fn memory_type(self) -> u8 {
        ((self.0 >> 50) & 0xf) as u8
    }

    /// Whether INS/OUTS exits report instruction information (bit 54).
    pub const fn ins_outs_info(self) -> bool {
        self.0 & (1 << 54) != 0
    }

    /// Whether the TRUE_* control MSRs exist (bit 55), which may allow default-1 controls
    /// to be 0.
    pub const fn true_controls(self) -> bool {
        self.0 & (1 << 55) != 0
    }
}

/// Which control word a capability MSR describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlWord {
    /// Pin-based controls.
    PinBased,
    /// Primary processor-based controls.
    PrimaryProcBased,
    /// Secondary processor-based controls (no TRUE_ variant).
    SecondaryProcBased,
    /// VM-exit controls.
    Exit,
    /// VM-entry controls.
    Entry,
}

impl ControlWord {
    /// The MSR to read the word's allowed settings from: the TRUE_ variant when `basic`
    /// says it exists (SDM A.3.1, A.3.2, A.4, A.5; A.3.3 for the secondary word).
    pub const fn capability_msr(self, basic: VmxBasic) -> u32 {
        let t = basic.true_controls();
        match self {
            ControlWord::PinBased if t => msr::IA32_VMX_TRUE_PINBASED_CTLS,
            ControlWord::PinBased => msr::IA32_VMX_PINBASED_CTLS,
            ControlWord::PrimaryProcBased if t => msr::IA32_VMX_TRUE_PROCBASED_CTLS,
            ControlWord::PrimaryProcBased => msr::IA32_VMX_PROCBASED_CTLS,
            ControlWord::SecondaryProcBased => msr::IA32_VMX_PROCBASED_CTLS2,
            ControlWord::Exit if t => msr::IA32_VMX_TRUE_EXIT_CTLS,
            ControlWord::Exit => msr::IA32_VMX_EXIT_CTLS,
            ControlWord::Entry if t => msr::IA32_VMX_TRUE_ENTRY_CTLS,
            ControlWord::Entry => msr::IA32_VMX_ENTRY_CTLS,
        }
    }
}

/// Desired control bits the CPU does not allow to be 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnsupportedControls {
    /// The offending bits.
    pub bits: u32,
}

/// Applies a capability MSR to a desired control word (SDM A.3-A.5): bits 31:0 of
/// `msr_value` are the allowed-0 settings (a 1 there means the control must be 1), bits
/// 63:32 the allowed-1 settings (a 0 there means it must be 0). The result is `desired` with
/// the must-be-1 bits added; desired bits that must be 0 are an error naming them.
pub const fn adjust(desired: u32, msr_value: u64) -> Result<u32, UnsupportedControls> {
    let must_be_one = msr_value as u32;
    let may_be_one = (msr_value >> 32) as u32;
    let unsupported = desired & !may_be_one;
    if unsupported != 0 {
        return Err(UnsupportedControls { bits: unsupported });
    }
    Ok(desired | must_be_one)
}

/// Like [`adjust`], but the `optional` bits are kept only where the CPU allows them; the
/// `required` ones must all be allowed.
pub const fn adjust_optional(
    required: u32,
    optional: u32,
    msr_value: u64,
) -> Result<u32, UnsupportedControls> {
    let may_be_one = (msr_value >> 32) as u32;
    adjust(required | (optional & may_be_one), msr_value)
}

/// A control register value made acceptable to VMX operation: bits set in `fixed0` forced to
/// 1, bits clear in `fixed1` forced to 0 (SDM A.7, A.8). `unrestricted` lifts the CR0.PE and
/// CR0.PG requirement for a guest with unrestricted guest enabled (SDM 26.3.1.1).
pub const fn apply_fixed(value: u64, fixed0: u64, fixed1: u64, unrestricted: bool) -> u64 {
    const CR0_PE_PG: u64 = 1 | (1 << 31);
    let must_be_one = if unrestricted {
        fixed0 & !CR0_PE_PG
    } else {
        fixed0
    };
    (value | must_be_one) & fixed1
}

/// The decoded IA32_VMX_EPT_VPID_CAP MSR (SDM A.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptVpidCap(pub u64);

impl EptVpidCap {
    /// Execute-only EPT translations are allowed (bit 0).
    pub const fn execute_only(self) -> bool {
        self.0 & 1 != 0
    }
    /// A 4-level page walk is supported (bit 6).
    pub const fn page_walk_4(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    /// Write-back EPT paging structures are supported (bit 14).
    pub const fn memory_type_wb(self) -> bool {
        self.0 & (1 << 14) != 0
    }
    /// 2 MiB EPT pages are supported (bit 16).
    pub const fn pages_2m(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// 1 GiB EPT pages are supported (bit 17).
    pub const fn pages_1g(self) -> bool {
        self.0 & (1 << 17) != 0
    }
    /// INVEPT is supported (bit 20).
    pub const fn invept(self) -> bool {
        self.0 & (1 << 20) != 0
    }
    /// Single-context INVEPT (bit 25).
    pub const fn invept_single_context(self) -> bool {
        self.0 & (1 << 25) != 0
    }
    /// All-context INVEPT (bit 26).
    pub const fn invept_all_context(self) -> bool {
        self.0 & (1 << 26) != 0
    }
    /// INVVPID is supported (bit 32).
    pub const fn invvpid(self) -> bool {
        self.0 & (1 << 32) != 0
    }
    /// Single-context INVVPID (bit 41).
    pub const fn invvpid_single_context(self) -> bool {
        self.0 & (1 << 41) != 0
    }
    /// All-context INVVPID (bit 42).
    pub const fn invvpid_all_context(self) -> bool {
        self.0 & (1 << 42) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn width_code(enc: u32) -> u32 {
        (enc >> 13) & 3
    }

    #[test]
    fn encodings_from_appendix_b() {
        assert_eq!(guest::RIP.encoding(), 0x681e);
        assert_eq!(guest::RIP.kind(), FieldKind::Guest);
        assert_eq!(guest::CS_AR.encoding(), 0x4816);
        assert_eq!(guest::VMCS_LINK_POINTER.encoding(), 0x2800);
        assert_eq!(guest::ES_SELECTOR.index(), 0);
        assert_eq!(guest::TR_SELECTOR.index(), 7);
        assert_eq!(host::RIP.encoding(), 0x6c16);
        assert_eq!(host::RIP.kind(), FieldKind::Host);
        assert_eq!(control::EPTP.encoding(), 0x201a);
        assert_eq!(control::EPTP.kind(), FieldKind::Control);
        assert_eq!(control::EPTP.index(), 13);
        assert_eq!(control::SECONDARY_PROC_BASED.encoding(), 0x401e);
        assert_eq!(exit_info::EXIT_REASON.encoding(), 0x4402);
        assert_eq!(exit_info::EXIT_REASON.kind(), FieldKind::ExitInfo);
        assert_eq!(exit_info::EXIT_QUALIFICATION.encoding(), 0x6400);
        assert_eq!(exit_info::GUEST_PHYSICAL_ADDR.encoding(), 0x2400);
    }

    #[test]
    fn width_bits_match_the_field_type() {
        assert_eq!(width_code(control::VPID.encoding()), W16::CODE);
        assert_eq!(width_code(control::EPTP.encoding()), W64::CODE);
        assert_eq!(width_code(control::PIN_BASED.encoding()), W32::CODE);
        assert_eq!(
            width_code(control::CR0_READ_SHADOW.encoding()),
            WNatural::CODE
        );
        assert_eq!(width_code(guest::IA32_EFER.encoding()), 1);
        assert_eq!(width_code(guest::INTERRUPTIBILITY.encoding()), 2);
        assert_eq!(width_code(host::CR3.encoding()), 3);
        assert_eq!(W16::from_u64(0x1_2345), 0x2345);
        assert_eq!(W32::from_u64(0x1_0000_0002), 2);
        assert_eq!(WNatural::from_u64(u64::MAX), u64::MAX);
    }

    #[test]
    fn every_table_is_consistent_and_unique() {
        let groups: [(&[AnyField], u32); 4] = [
            (control::ALL, 0),
            (exit_info::ALL, 1),
            (guest::ALL, 2),
            (host::ALL, 3),
        ];
        let mut seen = std::collections::BTreeSet::new();
        let mut total = 0;
        for (fields, kind) in groups {
            for f in fields {
                assert_eq!(
                    (f.encoding >> 10) & 3,
                    kind,
                    "{} in the wrong group",
                    f.name
                );
                assert_eq!(
                    f.encoding & 0x9001,
                    0,
                    "{} has reserved or high bits",
                    f.name
                );
                assert!(seen.insert(f.encoding), "{} repeats an encoding", f.name);
                total += 1;
            }
        }
        assert_eq!(total, 56 + 15 + 68 + 27);
    }

    #[test]
    fn adjust_applies_allowed_settings() {
        // Pin-based on a typical CPU without TRUE controls: bits 1, 2, 4 must be 1;
        // bits 0-7 may be 1.
        let msr = (0xffu64 << 32) | 0x16;
        let want = PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::NMI_EXITING;
        assert_eq!(adjust(want.bits(), msr), Ok(0x1f));
        // A control the CPU cannot enable is reported, alone.
        let msr = (0x3fu64 << 32) | 0x16;
        let want = PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::PREEMPTION_TIMER;
        assert_eq!(
            adjust(want.bits(), msr),
            Err(UnsupportedControls {
                bits: PinBased::PREEMPTION_TIMER.bits()
            })
        );
        // Optional controls drop out quietly; required ones still fail.
        let want = PinBased::EXTERNAL_INTERRUPT_EXITING.bits();
        let opt = PinBased::PREEMPTION_TIMER.bits();
        assert_eq!(adjust_optional(want, opt, msr), Ok(0x17));
        assert_eq!(adjust_optional(want, opt, (0x7fu64 << 32) | 0x16), Ok(0x57));
        assert!(adjust_optional(1 << 7, 0, msr).is_err());
        // Secondary controls: allowed-0 is all zero.
        let msr2 = 0x0000_0082u64 << 32;
        let want = SecondaryProcBased::ENABLE_EPT | SecondaryProcBased::UNRESTRICTED_GUEST;
        assert_eq!(adjust(want.bits(), msr2), Ok(0x82));
        assert_eq!(
            adjust(SecondaryProcBased::ENABLE_VPID.bits(), msr2),
            Err(UnsupportedControls { bits: 0x20 })
        );
    }

    #[test]
    fn capability_msr_follows_vmx_basic() {
        let plain = VmxBasic(0x0058_0400_0000_0004);
        let with_true = VmxBasic(plain.0 | (1 << 55));
        assert!(!plain.true_controls());
        assert!(with_true.true_controls());
        assert_eq!(plain.revision_id(), 4);
        assert_eq!(plain.region_size(), 0x400);
        assert_eq!(plain.memory_type(), 6);
        assert!(plain.ins_outs_info());
        assert_eq!(ControlWord::PinBased.capability_msr(plain), 0x481);
        assert_eq!(ControlWord::PinBased.capability_msr(with_true), 0x48d);
        assert_eq!(
            ControlWord::PrimaryProcBased.capability_msr(with_true),
            0x48e
        );
        assert_eq!(ControlWord::Exit.capability_msr(with_true), 0x48f);
        assert_eq!(ControlWord::Entry.capability_msr(with_true), 0x490);
        assert_eq!(ControlWord::Entry.capability_msr(plain), 0x484);
        assert_eq!(
            ControlWord::SecondaryProcBased.capability_msr(with_true),
            0x48b
        );
    }

    #[test]
    fn fixed_bits_and_unrestricted_guest() {
        // Typical: PE, NE, PG fixed to 1; everything may be 1.
        let (f0, f1) = (0x8000_0021u64, 0xffff_ffffu64);
        assert_eq!(apply_fixed(0x10, f0, f1, false), 0x8000_0031);
        assert_eq!(apply_fixed(0x10, f0, f1, true), 0x30);
        // CR4: VMXE fixed to 1, bits above 22 may not be set.
        assert_eq!(apply_fixed(0xff80_0000, 0x2000, 0x7f_ffff, false), 0x2000);
    }

    #[test]
    fn ept_vpid_capabilities() {
        let cap = EptVpidCap(0x0000_0f01_0673_4141);
        assert!(cap.execute_only());
        assert!(cap.page_walk_4());
        assert!(cap.memory_type_wb());
        assert!(cap.pages_2m());
        assert!(cap.pages_1g());
        assert!(cap.invept());
        assert!(cap.invept_single_context());
        assert!(cap.invept_all_context());
        assert!(cap.invvpid());
        assert!(cap.invvpid_single_context());
        assert!(cap.invvpid_all_context());
        assert!(!EptVpidCap(0).page_walk_4());
    }
}
