//! VM exits as data: the exit-reason field, the basic exit reasons (SDM Vol. 3C Appendix C),
//! the exit qualifications hv acts on (SDM 27.2.1), interruption information (24.9.2,
//! 24.8.3), the VM-entry failure reasons (26.8) and the VM-instruction error numbers (30.4).
//!
//! Every decoder takes the raw field value and cannot fail on any bit pattern: reserved or
//! unknown values become `Err` values or `Unknown` variants, never panics.

use super::{Direction, Gpr};

macro_rules! numbered {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$d:meta])* $v:ident = $n:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum $name { $($(#[$d])* $v = $n,)* }

        impl $name {
            /// Every value, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
        }

        impl TryFrom<u32> for $name {
            type Error = u32;
            /// The variant numbered `n`, or `n` back if there is none.
            fn try_from(n: u32) -> Result<Self, u32> {
                match n {
                    $($n => Ok($name::$v),)*
                    other => Err(other),
                }
            }
        }
    };
}

numbered! {
    /// Basic exit reasons (SDM Vol. 3C Appendix C, Table C-1); 35, 38 and 42 are unused.
    pub enum BasicExitReason {
        /// Exception or non-maskable interrupt.
        ExceptionOrNmi = 0,
        /// External interrupt.
        ExternalInterrupt = 1,
        /// Triple fault.
        TripleFault = 2,
        /// INIT signal.
        Init = 3,
        /// Start-up IPI.
        Sipi = 4,
        /// I/O system-management interrupt.
        IoSmi = 5,
        /// Other SMI.
        OtherSmi = 6,
        /// Interrupt window.
        InterruptWindow = 7,
        /// NMI window.
        NmiWindow = 8,
        /// Task switch.
        TaskSwitch = 9,
        /// CPUID.
        Cpuid = 10,
        /// GETSEC.
        Getsec = 11,
        /// HLT.
        Hlt = 12,
        /// INVD.
        Invd = 13,
        /// INVLPG.
        Invlpg = 14,
        /// RDPMC.
        Rdpmc = 15,
        /// RDTSC.
        Rdtsc = 16,
        /// RSM in SMM.
        Rsm = 17,
        /// VMCALL.
        Vmcall = 18,
        /// VMCLEAR.
        Vmclear = 19,
        /// VMLAUNCH.
        Vmlaunch = 20,
        /// VMPTRLD.
        Vmptrld = 21,
        /// VMPTRST.
        Vmptrst = 22,
        /// VMREAD.
        Vmread = 23,
        /// VMRESUME.
        Vmresume = 24,
        /// VMWRITE.
        Vmwrite = 25,
        /// VMXOFF.
        Vmxoff = 26,
        /// VMXON.
        Vmxon = 27,
        /// Control-register access ([`CrQualification`]).
        CrAccess = 28,
        /// MOV DR.
        DrAccess = 29,
        /// I/O instruction ([`IoQualification`]).
        IoInstruction = 30,
        /// RDMSR.
        Rdmsr = 31,
        /// WRMSR.
        Wrmsr = 32,
        /// VM-entry failure due to invalid guest state.
        EntryFailInvalidGuestState = 33,
        /// VM-entry failure due to MSR loading.
        EntryFailMsrLoading = 34,
        /// MWAIT.
        Mwait = 36,
        /// Monitor trap flag.
        MonitorTrapFlag = 37,
        /// MONITOR.
        Monitor = 39,
        /// PAUSE.
        Pause = 40,
        /// VM-entry failure due to a machine-check event.
        EntryFailMachineCheck = 41,
        /// TPR below threshold.
        TprBelowThreshold = 43,
        /// APIC access.
        ApicAccess = 44,
        /// Virtualized EOI.
        VirtualizedEoi = 45,
        /// Access to GDTR or IDTR.
        GdtrIdtrAccess = 46,
        /// Access to LDTR or TR.
        LdtrTrAccess = 47,
        /// EPT violation ([`EptViolation`]).
        EptViolation = 48,
        /// EPT misconfiguration.
        EptMisconfig = 49,
        /// INVEPT.
        Invept = 50,
        /// RDTSCP.
        Rdtscp = 51,
        /// VMX-preemption timer expired.
        PreemptionTimer = 52,
        /// INVVPID.
        Invvpid = 53,
        /// WBINVD or WBNOINVD.
        Wbinvd = 54,
        /// XSETBV.
        Xsetbv = 55,
        /// APIC write.
        ApicWrite = 56,
        /// RDRAND.
        Rdrand = 57,
        /// INVPCID.
        Invpcid = 58,
        /// VMFUNC.
        Vmfunc = 59,
        /// ENCLS.
        Encls = 60,
        /// RDSEED.
        Rdseed = 61,
        /// Page-modification log full.
        PmlFull = 62,
        /// XSAVES.
        Xsaves = 63,
        /// XRSTORS.
        Xrstors = 64,
        /// PCONFIG.
        Pconfig = 65,
        /// SPP-related event.
        SppEvent = 66,
        /// UMWAIT.
        Umwait = 67,
        /// TPAUSE.
        Tpause = 68,
        /// LOADIWKEY.
        Loadiwkey = 69,
        /// ENCLV.
        Enclv = 70,
        /// SGX conflict.
        SgxConflict = 71,
        /// ENQCMD PASID-translation failure.
        EnqcmdPasidFailure = 72,
        /// ENQCMDS PASID-translation failure.
        EnqcmdsPasidFailure = 73,
        /// Bus lock.
        BusLock = 74,
        /// Instruction timeout (notify VM exit).
        InstructionTimeout = 75,
        /// SEAMCALL.
        Seamcall = 76,
        /// TDCALL.
        Tdcall = 77,
        /// RDMSRLIST.
        Rdmsrlist = 78,
        /// WRMSRLIST.
        Wrmsrlist = 79,
    }
}

/// The exit-reason field (SDM 24.9.1, Table 24-18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitReason(pub u32);

impl BasicExitReason {
    /// Exits of instructions an HVM guest is told it lacks (CPUID hides VMX, SMX, SGX and
    /// the VM functions: hv offers no nested virtualisation): the guest gets the #UD the
    /// instruction would raise on such a CPU (SDM Vol. 3C 26.1.2 lists them as always
    /// exiting in VMX non-root operation), as Xen gives one without nested HVM.
    pub const fn is_hidden_instruction(self) -> bool {
        matches!(
            self,
            Self::Getsec
                | Self::Vmclear
                | Self::Vmlaunch
                | Self::Vmptrld
                | Self::Vmptrst
                | Self::Vmread
                | Self::Vmresume
                | Self::Vmwrite
                | Self::Vmxoff
                | Self::Vmxon
                | Self::Invept
                | Self::Invvpid
                | Self::Vmfunc
                | Self::Encls
        )
    }
}

impl ExitReason {
    /// Bits 15:0.
    pub const fn basic_raw(self) -> u16 {
        self.0 as u16
    }

    /// The basic exit reason, or the raw number if Appendix C names none.
    pub fn basic(self) -> Result<BasicExitReason, u32> {
        BasicExitReason::try_from(u32::from(self.basic_raw()))
    }

    /// Bit 27: the exit came from enclave mode.
    pub const fn enclave_mode(self) -> bool {
        self.0 & (1 << 27) != 0
    }

    /// Bit 28: an MTF exit is pending.
    pub const fn pending_mtf(self) -> bool {
        self.0 & (1 << 28) != 0
    }

    /// Bit 29: the exit came from VMX root operation (SMM dual-monitor).
    pub const fn from_vmx_root(self) -> bool {
        self.0 & (1 << 29) != 0
    }

    /// Bit 31: VM entry failed (reasons 33, 34, 41; the guest never ran).
    pub const fn entry_failure(self) -> bool {
        self.0 & (1 << 31) != 0
    }
}

/// Access type of a control-register exit (Table 27-3, bits 5:4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccessType {
    /// MOV to CR from a register.
    MovToCr(Gpr),
    /// MOV from CR to a register.
    MovFromCr(Gpr),
    /// CLTS.
    Clts,
    /// LMSW with its 16-bit source.
    Lmsw {
        /// The source operand (only bits 3:0 reach CR0).
        source: u16,
        /// Whether the operand was in memory (else a register).
        memory: bool,
    },
}

/// The exit qualification of a control-register access (Table 27-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrQualification {
    /// The control register (0, 3, 4 or 8).
    pub cr: u8,
    /// What the instruction did.
    pub access: CrAccessType,
}

impl CrQualification {
    /// Decodes `qual`: bits 3:0 CR number, 5:4 access type, 6 LMSW operand type, 11:8 GPR,
    /// 31:16 LMSW source data.
    pub const fn decode(qual: u64) -> Self {
        let gpr = Gpr::from_index((qual >> 8) as u8);
        let access = match (qual >> 4) & 3 {
            0 => CrAccessType::MovToCr(gpr),
            1 => CrAccessType::MovFromCr(gpr),
            2 => CrAccessType::Clts,
            _ => CrAccessType::Lmsw {
                source: (qual >> 16) as u16,
                memory: qual & (1 << 6) != 0,
            },
        };
        CrQualification {
            cr: (qual & 0xf) as u8,
            access,
        }
    }
}

/// The exit qualification of an I/O instruction (Table 27-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQualification {
    /// Access size in bytes: 1, 2 or 4.
    pub size: u8,
    /// `in`/`ins` reads, `out`/`outs` writes.
    pub direction: Direction,
    /// INS / OUTS.
    pub string: bool,
    /// REP prefixed.
    pub rep: bool,
    /// The port came as an immediate (else DX).
    pub immediate: bool,
    /// The port.
    pub port: u16,
}

impl IoQualification {
    /// Decodes `qual`: bits 2:0 size - 1 (0, 1 or 3), bit 3 direction (1 = in), bit 4 string,
    /// bit 5 REP, bit 6 operand encoding, bits 31:16 port. A size code of 2 or above 3 is
    /// not architectural and is an error.
    pub const fn decode(qual: u64) -> Result<Self, u64> {
        let size = match qual & 7 {
            0 => 1,
            1 => 2,
            3 => 4,
            _ => return Err(qual),
        };
        Ok(IoQualification {
            size,
            direction: if qual & (1 << 3) != 0 {
                Direction::Read
            } else {
                Direction::Write
            },
            string: qual & (1 << 4) != 0,
            rep: qual & (1 << 5) != 0,
            immediate: qual & (1 << 6) != 0,
            port: (qual >> 16) as u16,
        })
    }
}

/// The exit qualification of an EPT violation (Table 27-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    /// The access was a data read (bit 0).
    pub read: bool,
    /// The access was a data write (bit 1).
    pub write: bool,
    /// The access was an instruction fetch (bit 2).
    pub fetch: bool,
    /// The translation allowed reads (bit 3).
    pub readable: bool,
    /// The translation allowed writes (bit 4).
    pub writable: bool,
    /// The translation allowed execution (bit 5; supervisor with mode-based control).
    pub executable: bool,
    /// The guest-linear-address field is valid (bit 7).
    pub gla_valid: bool,
    /// With `gla_valid`: the access was to the linear address's translation (bit 8 set),
    /// not to a guest paging structure.
    pub gla_translated: bool,
    /// The violation interrupted an IRET that unblocked NMIs (bit 12).
    pub nmi_unblocking: bool,
}

impl EptViolation {
    /// Decodes `qual`.
    pub fn decode(qual: u64) -> Self {
        let bit = |n: u32| qual & (1 << n) != 0;
        EptViolation {
            read: bit(0),
            write: bit(1),
            fetch: bit(2),
            readable: bit(3),
            writable: bit(4),
            executable: bit(5),
            gla_valid: bit(7),
            gla_translated: bit(7) && bit(8),
            nmi_unblocking: bit(12),
        }
    }

    /// The access, vendor-neutral.
    pub const fn access(&self) -> super::GpaAccess {
        super::GpaAccess {
            read: self.read,
            write: self.write,
            fetch: self.fetch,
        }
    }

    /// Whether the page had no translation at all (MMIO or outside the guest's memory) as
    /// opposed to one with too few permissions.
    pub const fn not_present(&self) -> bool {
        !self.readable && !self.writable && !self.executable
    }
}

/// Interruption type (SDM 24.8.3 Table 24-16, 24.9.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptionType {
    /// External interrupt (0).
    External,
    /// NMI (2).
    Nmi,
    /// Hardware exception (3).
    HardwareException,
    /// Software interrupt, `int n` (4).
    SoftwareInterrupt,
    /// Privileged software exception, `int1` (5).
    PrivilegedSoftwareException,
    /// Software exception, `int3` / `into` (6).
    SoftwareException,
    /// Other event (7; MTF injection).
    Other,
    /// The reserved value 1.
    Reserved,
}

impl InterruptionType {
    const fn from_bits(b: u32) -> Self {
        match b & 7 {
            0 => InterruptionType::External,
            2 => InterruptionType::Nmi,
            3 => InterruptionType::HardwareException,
            4 => InterruptionType::SoftwareInterrupt,
            5 => InterruptionType::PrivilegedSoftwareException,
            6 => InterruptionType::SoftwareException,
            7 => InterruptionType::Other,
            _ => InterruptionType::Reserved,
        }
    }

    const fn bits(self) -> u32 {
        match self {
            InterruptionType::External => 0,
            InterruptionType::Reserved => 1,
            InterruptionType::Nmi => 2,
            InterruptionType::HardwareException => 3,
            InterruptionType::SoftwareInterrupt => 4,
            InterruptionType::PrivilegedSoftwareException => 5,
            InterruptionType::SoftwareException => 6,
            InterruptionType::Other => 7,
        }
    }
}

/// Interruption information: the VM-exit interruption-information and IDT-vectoring fields
/// (24.9.2, 24.9.3) and the VM-entry interruption-information field (24.8.3), which share
/// the layout: bits 7:0 vector, 10:8 type, 11 error code valid, 12 NMI unblocking due to
/// IRET (exit only), 31 valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptionInfo {
    /// Vector.
    pub vector: u8,
    /// Type.
    pub kind: InterruptionType,
    /// An error code was (or is to be) pushed.
    pub has_error_code: bool,
    /// NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl InterruptionInfo {
    /// Decodes a field; `None` when its valid bit (31) is clear.
    pub const fn decode(raw: u32) -> Option<Self> {
        if raw & (1 << 31) == 0 {
            return None;
        }
        Some(InterruptionInfo {
            vector: raw as u8,
            kind: InterruptionType::from_bits(raw >> 8),
            has_error_code: raw & (1 << 11) != 0,
            nmi_unblocking: raw & (1 << 12) != 0,
        })
    }

    /// The VM-entry interruption-information value that injects this event (valid bit set,
    /// bit 12 clear as entry requires).
    pub const fn encode(self) -> u32 {
        (1 << 31)
            | ((self.has_error_code as u32) << 11)
            | (self.kind.bits() << 8)
            | self.vector as u32
    }

    /// The entry value for a vendor-neutral [`super::Event`]; the error code, if any, goes
    /// to the VM-entry exception error code field.
    pub const fn for_event(event: super::Event) -> (Self, Option<u32>) {
        match event {
            super::Event::Exception { vector, error_code } => (
                InterruptionInfo {
                    vector,
                    kind: InterruptionType::HardwareException,
                    has_error_code: error_code.is_some(),
                    nmi_unblocking: false,
                },
                error_code,
            ),
            super::Event::Interrupt(vector) => (
                InterruptionInfo {
                    vector,
                    kind: InterruptionType::External,
                    has_error_code: false,
                    nmi_unblocking: false,
                },
                None,
            ),
            super::Event::Nmi => (
                InterruptionInfo {
                    vector: 2,
                    kind: InterruptionType::Nmi,
                    has_error_code: false,
                    nmi_unblocking: false,
                },
                None,
            ),
        }
    }
}

/// Why VM entry failed after the checks on the guest state began (SDM 26.8): the exit
/// reason has bit 31 set and the basic reason is 33, 34 or 41.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFailure {
    /// Reason 33: the guest-state area failed a check (26.3.1). The qualification says
    /// which kind.
    InvalidGuestState(GuestStateFailure),
    /// Reason 34: loading the MSR at this 1-based index of the VM-entry MSR-load area failed.
    MsrLoading {
        /// The failing entry's index, counting from 1.
        entry: u32,
    },
    /// Reason 41: a machine check during VM entry.
    MachineCheck,
}

/// The exit qualification of a reason-33 entry failure (SDM 26.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestStateFailure {
    /// 0 (or 1): a guest-state check other than those below (hv's state was wrong).
    Other,
    /// 2: loading the PDPTEs failed.
    PdpteLoading,
    /// 3: an NMI was to be injected while blocking by STI.
    NmiInjectionBlockedBySti,
    /// 4: invalid VMCS link pointer.
    VmcsLinkPointer,
    /// Any other value.
    Unknown(u64),
}

impl EntryFailure {
    /// The failure for an exit reason with bit 31 set, or `None` if the reason is not an
    /// entry failure.
    pub fn decode(reason: ExitReason, qualification: u64) -> Option<Self> {
        if !reason.entry_failure() {
            return None;
        }
        match reason.basic() {
            Ok(BasicExitReason::EntryFailInvalidGuestState) => {
                Some(EntryFailure::InvalidGuestState(match qualification {
                    0 | 1 => GuestStateFailure::Other,
                    2 => GuestStateFailure::PdpteLoading,
                    3 => GuestStateFailure::NmiInjectionBlockedBySti,
                    4 => GuestStateFailure::VmcsLinkPointer,
                    q => GuestStateFailure::Unknown(q),
                }))
            }
            Ok(BasicExitReason::EntryFailMsrLoading) => Some(EntryFailure::MsrLoading {
                entry: qualification as u32,
            }),
            Ok(BasicExitReason::EntryFailMachineCheck) => Some(EntryFailure::MachineCheck),
            _ => None,
        }
    }
}

numbered! {
    /// VM-instruction error numbers (SDM Vol. 3C 30.4, Table 30-1), read from the
    /// VM-instruction error field after VMfailValid.
    pub enum VmInstructionError {
        /// VMCALL executed in VMX root operation.
        VmcallInRoot = 1,
        /// VMCLEAR with invalid physical address.
        VmclearInvalidAddress = 2,
        /// VMCLEAR with VMXON pointer.
        VmclearVmxonPointer = 3,
        /// VMLAUNCH with non-clear VMCS.
        VmlaunchNonClear = 4,
        /// VMRESUME with non-launched VMCS.
        VmresumeNonLaunched = 5,
        /// VMRESUME after VMXOFF.
        VmresumeAfterVmxoff = 6,
        /// VM entry with invalid control field(s).
        EntryInvalidControls = 7,
        /// VM entry with invalid host-state field(s).
        EntryInvalidHostState = 8,
        /// VMPTRLD with invalid physical address.
        VmptrldInvalidAddress = 9,
        /// VMPTRLD with VMXON pointer.
        VmptrldVmxonPointer = 10,
        /// VMPTRLD with incorrect VMCS revision identifier.
        VmptrldBadRevision = 11,
        /// VMREAD/VMWRITE from/to unsupported VMCS component.
        UnsupportedComponent = 12,
        /// VMWRITE to read-only VMCS component.
        VmwriteReadOnly = 13,
        /// VMXON executed in VMX root operation.
        VmxonInRoot = 15,
        /// VM entry with invalid executive-VMCS pointer.
        EntryInvalidExecutiveVmcs = 16,
        /// VM entry with non-launched executive VMCS.
        EntryNonLaunchedExecutiveVmcs = 17,
        /// VM entry with executive-VMCS pointer not VMXON pointer.
        EntryExecutiveVmcsNotVmxon = 18,
        /// VMCALL with non-clear VMCS.
        VmcallNonClear = 19,
        /// VMCALL with invalid VM-exit control fields.
        VmcallInvalidExitControls = 20,
        /// VMCALL with incorrect MSEG revision identifier.
        VmcallBadMsegRevision = 22,
        /// VMXOFF under dual-monitor treatment of SMIs and SMM.
        VmxoffDualMonitor = 23,
        /// VMCALL with invalid SMM-monitor features.
        VmcallInvalidSmmFeatures = 24,
        /// VM entry with invalid VM-execution control fields in executive VMCS.
        EntryInvalidExecutiveControls = 25,
        /// VM entry with events blocked by MOV SS.
        EntryEventsBlockedByMovSs = 26,
        /// Invalid operand to INVEPT/INVVPID.
        InvalidInveptInvvpidOperand = 28,
    }
}

impl VmInstructionError {
    /// The SDM's wording, for the log line of a failed VMLAUNCH / VMRESUME.
    pub const fn description(self) -> &'static str {
        use VmInstructionError::*;
        match self {
            VmcallInRoot => "VMCALL executed in VMX root operation",
            VmclearInvalidAddress => "VMCLEAR with invalid physical address",
            VmclearVmxonPointer => "VMCLEAR with VMXON pointer",
            VmlaunchNonClear => "VMLAUNCH with non-clear VMCS",
            VmresumeNonLaunched => "VMRESUME with non-launched VMCS",
            VmresumeAfterVmxoff => "VMRESUME after VMXOFF",
            EntryInvalidControls => "VM entry with invalid control field(s)",
            EntryInvalidHostState => "VM entry with invalid host-state field(s)",
            VmptrldInvalidAddress => "VMPTRLD with invalid physical address",
            VmptrldVmxonPointer => "VMPTRLD with VMXON pointer",
            VmptrldBadRevision => "VMPTRLD with incorrect VMCS revision identifier",
            UnsupportedComponent => "VMREAD/VMWRITE from/to unsupported VMCS component",
            VmwriteReadOnly => "VMWRITE to read-only VMCS component",
            VmxonInRoot => "VMXON executed in VMX root operation",
            EntryInvalidExecutiveVmcs => "VM entry with invalid executive-VMCS pointer",
            EntryNonLaunchedExecutiveVmcs => "VM entry with non-launched executive VMCS",
            EntryExecutiveVmcsNotVmxon => "VM entry with executive-VMCS pointer not VMXON pointer",
            VmcallNonClear => "VMCALL with non-clear VMCS",
            VmcallInvalidExitControls => "VMCALL with invalid VM-exit control fields",
            VmcallBadMsegRevision => "VMCALL with incorrect MSEG revision identifier",
            VmxoffDualMonitor => "VMXOFF under dual-monitor treatment of SMIs and SMM",
            VmcallInvalidSmmFeatures => "VMCALL with invalid SMM-monitor features",
            EntryInvalidExecutiveControls => {
                "VM entry with invalid VM-execution control fields in executive VMCS"
            }
            EntryEventsBlockedByMovSs => "VM entry with events blocked by MOV SS",
            InvalidInveptInvvpidOperand => "invalid operand to INVEPT/INVVPID",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vmx_instructions_are_hidden_ones() {
        use super::BasicExitReason as R;
        let hidden: Vec<u32> = R::ALL
            .iter()
            .filter(|r| r.is_hidden_instruction())
            .map(|&r| r as u32)
            .collect();
        assert_eq!(
            hidden,
            [11, 19, 20, 21, 22, 23, 24, 25, 26, 27, 50, 53, 59, 60]
        );
        assert!(
            !R::Vmcall.is_hidden_instruction(),
            "vmcall is the hypercall"
        );
        assert!(!R::Cpuid.is_hidden_instruction());
    }
    use super::*;
    use crate::hvm::Event;

    #[test]
    fn basic_reasons_round_trip_and_gaps_are_errors() {
        for &r in BasicExitReason::ALL {
            assert_eq!(BasicExitReason::try_from(r as u32), Ok(r));
        }
        assert_eq!(BasicExitReason::ALL.len(), 80 - 3);
        for gap in [35, 38, 42, 80, 0xffff, u32::MAX] {
            assert_eq!(BasicExitReason::try_from(gap), Err(gap));
        }
        assert_eq!(BasicExitReason::try_from(10), Ok(BasicExitReason::Cpuid));
        assert_eq!(BasicExitReason::try_from(18), Ok(BasicExitReason::Vmcall));
        assert_eq!(
            BasicExitReason::try_from(30),
            Ok(BasicExitReason::IoInstruction)
        );
        assert_eq!(
            BasicExitReason::try_from(48),
            Ok(BasicExitReason::EptViolation)
        );
        assert_eq!(
            BasicExitReason::try_from(52),
            Ok(BasicExitReason::PreemptionTimer)
        );
    }

    #[test]
    fn exit_reason_field_bits() {
        let r = ExitReason(0x8000_0021);
        assert!(r.entry_failure());
        assert_eq!(r.basic(), Ok(BasicExitReason::EntryFailInvalidGuestState));
        let r = ExitReason(0x1000_0030);
        assert!(!r.entry_failure());
        assert!(r.pending_mtf());
        assert!(!r.enclave_mode() && !r.from_vmx_root());
        assert_eq!(r.basic(), Ok(BasicExitReason::EptViolation));
        assert!(ExitReason(0x2800_0000).from_vmx_root());
        assert!(ExitReason(0x2800_0000).enclave_mode());
        assert_eq!(ExitReason(0x0001_0023).basic(), Err(35));
    }

    #[test]
    fn cr_access_qualifications() {
        // mov %rbx, %cr0: CR 0, type 0, register 3.
        assert_eq!(
            CrQualification::decode(0x300),
            CrQualification {
                cr: 0,
                access: CrAccessType::MovToCr(Gpr::Rbx)
            }
        );
        // mov %cr4, %r12: CR 4, type 1, register 12.
        assert_eq!(
            CrQualification::decode(0xc14),
            CrQualification {
                cr: 4,
                access: CrAccessType::MovFromCr(Gpr::R12)
            }
        );
        assert_eq!(CrQualification::decode(0x20).access, CrAccessType::Clts);
        // lmsw with source 0x000f from memory.
        assert_eq!(
            CrQualification::decode(0x000f_0070),
            CrQualification {
                cr: 0,
                access: CrAccessType::Lmsw {
                    source: 0xf,
                    memory: true
                }
            }
        );
        assert_eq!(
            CrQualification::decode(0xabcd_0030).access,
            CrAccessType::Lmsw {
                source: 0xabcd,
                memory: false
            }
        );
        // Garbage in the upper bits decodes to something, never a panic.
        let _ = CrQualification::decode(u64::MAX);
    }

    #[test]
    fn io_qualifications() {
        // out %al, $0xe9.
        assert_eq!(
            IoQualification::decode(0x00e9_0040),
            Ok(IoQualification {
                size: 1,
                direction: Direction::Write,
                string: false,
                rep: false,
                immediate: true,
                port: 0xe9
            })
        );
        // in (%dx), %eax with DX = 0x3fd.
        assert_eq!(
            IoQualification::decode(0x03fd_000b),
            Ok(IoQualification {
                size: 4,
                direction: Direction::Read,
                string: false,
                rep: false,
                immediate: false,
                port: 0x3fd
            })
        );
        // rep outsw to 0x1f0.
        let q = IoQualification::decode(0x01f0_0031).unwrap();
        assert_eq!((q.size, q.string, q.rep), (2, true, true));
        assert_eq!(q.direction, Direction::Write);
        assert_eq!(IoQualification::decode(2), Err(2));
        assert_eq!(IoQualification::decode(7), Err(7));
    }

    #[test]
    fn ept_violation_qualifications() {
        // A write to a page with no translation, linear address valid and translated.
        let v = EptViolation::decode(0x182);
        assert!(v.write && !v.read && !v.fetch);
        assert!(v.not_present());
        assert!(v.gla_valid && v.gla_translated);
        // A write to a read/execute page.
        let v = EptViolation::decode(0x2a);
        assert!(v.write && v.readable && !v.writable && v.executable);
        assert!(!v.not_present() && !v.gla_valid);
        // Bit 8 without bit 7 is undefined and ignored.
        assert!(!EptViolation::decode(0x101).gla_translated);
        let v = EptViolation::decode(0x1004);
        assert!(v.fetch && v.nmi_unblocking);
        assert_eq!(
            v.access(),
            crate::hvm::GpaAccess {
                read: false,
                write: false,
                fetch: true
            }
        );
    }

    #[test]
    fn interruption_information() {
        assert_eq!(InterruptionInfo::decode(0x0000_030e), None);
        // #PF with an error code.
        let i = InterruptionInfo::decode(0x8000_0b0e).unwrap();
        assert_eq!(i.vector, 14);
        assert_eq!(i.kind, InterruptionType::HardwareException);
        assert!(i.has_error_code);
        assert_eq!(i.encode(), 0x8000_0b0e);
        // External interrupt 0x20, NMI unblocking reported on exit but not re-encoded.
        let i = InterruptionInfo::decode(0x8000_1020).unwrap();
        assert_eq!(i.kind, InterruptionType::External);
        assert!(i.nmi_unblocking);
        assert_eq!(i.encode(), 0x8000_0020);
        assert_eq!(
            InterruptionInfo::decode(0x8000_0100).unwrap().kind,
            InterruptionType::Reserved
        );
        assert_eq!(
            InterruptionInfo::for_event(Event::GP0).0.encode(),
            0x8000_0b0d
        );
        assert_eq!(InterruptionInfo::for_event(Event::GP0).1, Some(0));
        assert_eq!(
            InterruptionInfo::for_event(Event::UD).0.encode(),
            0x8000_0306
        );
        assert_eq!(
            InterruptionInfo::for_event(Event::Interrupt(0xf3))
                .0
                .encode(),
            0x8000_00f3
        );
        assert_eq!(
            InterruptionInfo::for_event(Event::Nmi).0.encode(),
            0x8000_0202
        );
    }

    #[test]
    fn entry_failures() {
        let q = |reason, qual| EntryFailure::decode(ExitReason(reason), qual);
        assert_eq!(
            q(0x8000_0021, 0),
            Some(EntryFailure::InvalidGuestState(GuestStateFailure::Other))
        );
        assert_eq!(
            q(0x8000_0021, 4),
            Some(EntryFailure::InvalidGuestState(
                GuestStateFailure::VmcsLinkPointer
            ))
        );
        assert_eq!(
            q(0x8000_0021, 9),
            Some(EntryFailure::InvalidGuestState(GuestStateFailure::Unknown(
                9
            )))
        );
        assert_eq!(
            q(0x8000_0022, 3),
            Some(EntryFailure::MsrLoading { entry: 3 })
        );
        assert_eq!(q(0x8000_0029, 0), Some(EntryFailure::MachineCheck));
        // Not an entry failure: bit 31 clear, or a reason that cannot fail an entry.
        assert_eq!(q(0x21, 0), None);
        assert_eq!(q(0x8000_000a, 0), None);
    }

    #[test]
    fn instruction_errors_have_names() {
        assert_eq!(
            VmInstructionError::try_from(7),
            Ok(VmInstructionError::EntryInvalidControls)
        );
        assert_eq!(
            VmInstructionError::EntryInvalidHostState.description(),
            "VM entry with invalid host-state field(s)"
        );
        for &e in VmInstructionError::ALL {
            assert_eq!(VmInstructionError::try_from(e as u32), Ok(e));
            assert!(!e.description().is_empty());
        }
        assert_eq!(VmInstructionError::ALL.len(), 25);
        for gap in [0, 14, 21, 27, 29] {
            assert_eq!(VmInstructionError::try_from(gap), Err(gap));
        }
    }
}
