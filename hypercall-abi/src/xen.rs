//! Core hypercall interface: hypercall numbers, the start-of-day structures
//! (`start_info`, `shared_info`, `vcpu_info`), PV memory-management operations,
//! trap tables, the PV segment selectors and virtual-address layout, and the
//! `xen_version`, `console_io` and `vm_assist` hypercalls.

use crate::{DomId, GuestHandle, XenPfn, XenUlong};

abi_enum! {
    /// Hypercall numbers (`__HYPERVISOR_*`), passed in `rax` / used as the
    /// hypercall-page slot index.
    pub enum Hypercall: u64 {
        /// Install the PV virtual IDT (array of [`TrapInfo`]).
        SetTrapTable = 0,
        /// Batched page-table / M2P updates ([`MmuUpdate`]).
        MmuUpdate = 1,
        /// Install a PV GDT from a list of frames.
        SetGdt = 2,
        /// Set the kernel stack (ss, rsp) used on guest-kernel entry.
        StackSwitch = 3,
        /// Legacy event/failsafe callback registration.
        SetCallbacks = 4,
        /// Set (non-zero) or clear CR0.TS.
        FpuTaskswitch = 5,
        /// Pre-3.0.1 scheduler operation (argument by value).
        SchedOpCompat = 6,
        /// Platform (hardware domain) operations.
        PlatformOp = 7,
        /// Write a debug register.
        SetDebugreg = 8,
        /// Read a debug register.
        GetDebugreg = 9,
        /// Update one GDT/LDT descriptor by machine address.
        UpdateDescriptor = 10,
        /// Memory reservation and physmap operations ([`crate::memory::MemoryOp`]).
        MemoryOp = 12,
        /// Batch of hypercalls ([`MulticallEntry`]).
        Multicall = 13,
        /// Update the PTE mapping one virtual address.
        UpdateVaMapping = 14,
        /// One-shot timer at an absolute system time.
        SetTimerOp = 15,
        /// Pre-3.2.2 event-channel operation (cmd inside the argument).
        EventChannelOpCompat = 16,
        /// Version and feature queries ([`XenVersionCmd`]).
        XenVersion = 17,
        /// Hypervisor console ([`ConsoleIoCmd`]).
        ConsoleIo = 18,
        /// Pre-3.2.2 physdev operation (cmd inside the argument).
        PhysdevOpCompat = 19,
        /// Grant-table operations ([`crate::grant_table::GnttabOp`]).
        GrantTableOp = 20,
        /// Enable/disable a VM assist ([`VmAssistType`]).
        VmAssist = 21,
        /// `update_va_mapping` on behalf of another domain.
        UpdateVaMappingOtherdomain = 22,
        /// Return from a PV exception/event frame ([`IretContext`]).
        Iret = 23,
        /// Per-vCPU operations ([`crate::vcpu::VcpuOp`]).
        VcpuOp = 24,
        /// Set FS/GS base ([`SegBase`]).
        SetSegmentBase = 25,
        /// Extended MMU operations ([`MmuextOp`]).
        MmuextOp = 26,
        /// Security-module operations.
        XsmOp = 27,
        /// NMI callback registration.
        NmiOp = 28,
        /// Scheduler operations ([`crate::sched::SchedOp`]).
        SchedOp = 29,
        /// Callback registration ([`crate::callback::CallbackOp`]).
        CallbackOp = 30,
        /// Profiling (removed in recent Xen).
        XenoprofOp = 31,
        /// Event-channel operations ([`crate::event_channel::EvtchnOp`]).
        EventChannelOp = 32,
        /// Physical-device operations ([`crate::physdev::PhysdevOp`]).
        PhysdevOp = 33,
        /// HVM operations ([`crate::hvm::HvmOp`]).
        HvmOp = 34,
        /// System control (toolstack).
        Sysctl = 35,
        /// Domain control (toolstack).
        Domctl = 36,
        /// Kexec operations.
        KexecOp = 37,
        /// Transcendent memory (removed).
        TmemOp = 38,
        /// Argo inter-domain messaging.
        ArgoOp = 39,
        /// PMU virtualisation.
        XenpmuOp = 40,
        /// Device-model operations.
        DmOp = 41,
        /// Hypervisor file system.
        HypfsOp = 42,
        /// Architecture slot 0; on x86 the machine-check hypercall.
        Mca = 48,
        /// Architecture-specific slot 1.
        Arch1 = 49,
        /// Architecture-specific slot 2.
        Arch2 = 50,
        /// Architecture-specific slot 3.
        Arch3 = 51,
        /// Architecture-specific slot 4.
        Arch4 = 52,
        /// Architecture-specific slot 5.
        Arch5 = 53,
        /// Architecture-specific slot 6.
        Arch6 = 54,
        /// Architecture-specific slot 7.
        Arch7 = 55,
    }
}

/// Number of 32-byte stubs in a hypercall page.
pub const HYPERCALL_PAGE_SLOTS: usize = 128;
/// Size of one hypercall-page stub; slot `n` is at `page + n * 32`.
pub const HYPERCALL_STUB_SIZE: usize = 32;

// ---------------------------------------------------------------------------
// Domain identifiers.

/// First domain id that does not name an ordinary domain.
pub const DOMID_FIRST_RESERVED: DomId = 0x7FF0;
/// The calling domain.
pub const DOMID_SELF: DomId = 0x7FF0;
/// Pseudo-domain owning I/O memory (restricts mappings to I/O pages).
pub const DOMID_IO: DomId = 0x7FF1;
/// Pseudo-domain owning Xen's own pages (e.g. the M2P table).
pub const DOMID_XEN: DomId = 0x7FF2;
/// Owner of shared (copy-on-write) pages.
pub const DOMID_COW: DomId = 0x7FF3;
/// Owner of pages whose owner is unknown.
pub const DOMID_INVALID: DomId = 0x7FF4;
/// "Any domain": the handler picks one or treats it as a wildcard.
pub const DOMID_ANY: DomId = 0x7FF5;
/// The idle domain.
pub const DOMID_IDLE: DomId = 0x7FFF;
/// Mask of the bits that make up a valid domain id.
pub const DOMID_MASK: DomId = 0x7FFF;

// ---------------------------------------------------------------------------
// Virtual address layout and segment selectors (x86_64 PV).

/// Start of the virtual range reserved for the hypervisor in every PV guest.
pub const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// End (exclusive) of the hypervisor's reserved virtual range.
pub const HYPERVISOR_VIRT_END: u64 = 0xFFFF_8800_0000_0000;
/// Start of the read-only machine-to-phys table mapped into PV guests.
pub const MACH2PHYS_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// End (exclusive) of the machine-to-phys table.
pub const MACH2PHYS_VIRT_END: u64 = 0xFFFF_8040_0000_0000;
/// Number of 8-byte entries in the machine-to-phys table.
pub const MACH2PHYS_NR_ENTRIES: u64 = (MACH2PHYS_VIRT_END - MACH2PHYS_VIRT_START) >> 3;

/// Flat 32-bit ring-3 code segment in Xen's GDT area (GDT index 260).
pub const FLAT_RING3_CS32: u16 = 0xe023;
/// Flat 64-bit ring-3 code segment (GDT index 262); PV64 kernels run on it.
pub const FLAT_RING3_CS64: u16 = 0xe033;
/// Flat 32-bit ring-3 data segment (GDT index 261).
pub const FLAT_RING3_DS32: u16 = 0xe02b;
/// 64-bit data segments are the null selector.
pub const FLAT_RING3_DS64: u16 = 0x0000;
/// 32-bit stack segment (GDT index 261).
pub const FLAT_RING3_SS32: u16 = 0xe02b;
/// 64-bit stack segment (GDT index 261); the PV64 kernel's initial SS.
pub const FLAT_RING3_SS64: u16 = 0xe02b;
/// PV64 kernel code selector (same as [`FLAT_RING3_CS64`]).
pub const FLAT_KERNEL_CS64: u16 = FLAT_RING3_CS64;
/// PV64 kernel data selector (same as [`FLAT_RING3_DS64`]).
pub const FLAT_KERNEL_DS64: u16 = FLAT_RING3_DS64;
/// PV64 kernel stack selector (same as [`FLAT_RING3_SS64`]).
pub const FLAT_KERNEL_SS64: u16 = FLAT_RING3_SS64;
/// PV64 user code selector (same as [`FLAT_RING3_CS64`]).
pub const FLAT_USER_CS64: u16 = FLAT_RING3_CS64;
/// PV64 user data selector (same as [`FLAT_RING3_DS64`]).
pub const FLAT_USER_DS64: u16 = FLAT_RING3_DS64;
/// PV64 user stack selector (same as [`FLAT_RING3_SS64`]).
pub const FLAT_USER_SS64: u16 = FLAT_RING3_SS64;

/// First GDT page reserved for Xen; guests may supply at most this many
/// GDT frames.
pub const FIRST_RESERVED_GDT_PAGE: usize = 14;
/// Byte offset of the first GDT entry reserved for Xen.
pub const FIRST_RESERVED_GDT_BYTE: usize = FIRST_RESERVED_GDT_PAGE * 4096;
/// Index of the first GDT entry reserved for Xen (7168).
pub const FIRST_RESERVED_GDT_ENTRY: usize = FIRST_RESERVED_GDT_BYTE / 8;

/// Maximum number of vCPUs whose `vcpu_info` lives in the shared-info page.
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;

/// Instruction bytes (`ud2; .ascii "xen"`) that, followed by `cpuid`, make a
/// PV guest's CPUID go through the hypervisor's emulation.
pub const XEN_EMULATE_PREFIX: [u8; 5] = [0x0f, 0x0b, 0x78, 0x65, 0x6e];

/// I/O port whose writes appear on the hypervisor console ("port E9 hack").
pub const XEN_HVM_DEBUGCONS_IOPORT: u16 = 0xe9;

/// CR3 value for a top-level page-table frame.
pub const fn xen_pfn_to_cr3(pfn: XenPfn) -> u64 {
    pfn << 12
}

/// Frame number held in a CR3 value.
pub const fn xen_cr3_to_pfn(cr3: u64) -> XenPfn {
    cr3 >> 12
}

abi_enum! {
    /// `which` argument of `set_segment_base` (`SEGBASE_*`).
    pub enum SegBase: u32 {
        /// FS base.
        Fs = 0,
        /// User-mode GS base.
        GsUser = 1,
        /// Kernel-mode GS base.
        GsKernel = 2,
        /// Load the user GS selector given in `base[15:0]`.
        GsUserSel = 3,
    }
}

// ---------------------------------------------------------------------------
// mmu_update.

abi_enum! {
    /// Sub-command of one [`MmuUpdate`], held in `ptr[1:0]` (`MMU_*`).
    pub enum MmuUpdateType: u64 {
        /// Checked write of `val` to the PTE at machine address `ptr`.
        NormalPtUpdate = 0,
        /// Set the M2P entry of the frame containing `ptr` to `val`.
        MachphysUpdate = 1,
        /// Like `NormalPtUpdate` but keep the PTE's current A/D bits.
        PtUpdatePreserveAd = 2,
        /// Like `NormalPtUpdate` but `val` is not translated.
        PtUpdateNoTranslate = 3,
    }
}

impl MmuUpdateType {
    /// The sub-command encoded in the low two bits of an update's `ptr`.
    /// Total: every two-bit value is a defined sub-command.
    pub const fn from_ptr(ptr: u64) -> Self {
        match ptr & 3 {
            0 => Self::NormalPtUpdate,
            1 => Self::MachphysUpdate,
            2 => Self::PtUpdatePreserveAd,
            _ => Self::PtUpdateNoTranslate,
        }
    }
}

/// One request of `mmu_update` (`struct mmu_update`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuUpdate {
    /// IN: machine address of the target with [`MmuUpdateType`] in bits 1:0.
    pub ptr: u64,
    /// IN: the new PTE (or M2P value).
    pub val: u64,
}
assert_layout!(MmuUpdate, size = 16, ptr = 0, val = 8);

impl MmuUpdate {
    /// The sub-command in `ptr[1:0]`.
    pub const fn kind(&self) -> MmuUpdateType {
        MmuUpdateType::from_ptr(self.ptr)
    }

    /// The machine address in `ptr` with the sub-command bits cleared.
    pub const fn address(&self) -> u64 {
        self.ptr & !3
    }
}

/// `foreigndom` encoding of `mmu_update`: bits 15:0 name the owner of data
/// frames; bits 31:16 hold the page-table owner plus one (0 = self).
pub const fn mmu_update_foreigndom(data_owner: DomId, pt_owner: Option<DomId>) -> u32 {
    let pfd = match pt_owner {
        Some(d) => d as u32 + 1,
        None => 0,
    };
    (pfd << 16) | data_owner as u32
}

// ---------------------------------------------------------------------------
// mmuext_op.

abi_enum! {
    /// `cmd` of [`MmuextOp`] (`MMUEXT_*`).
    pub enum MmuextCmd: u32 {
        /// Pin `mfn` as an L1 page table.
        PinL1Table = 0,
        /// Pin `mfn` as an L2 page table.
        PinL2Table = 1,
        /// Pin `mfn` as an L3 page table.
        PinL3Table = 2,
        /// Pin `mfn` as an L4 page table.
        PinL4Table = 3,
        /// Unpin page table `mfn`.
        UnpinTable = 4,
        /// Install `mfn` as the kernel page-table base.
        NewBaseptr = 5,
        /// Flush this vCPU's TLB.
        TlbFlushLocal = 6,
        /// Invalidate `linear_addr` in this vCPU's TLB.
        InvlpgLocal = 7,
        /// Flush the TLBs of the vCPUs in `vcpumask`.
        TlbFlushMulti = 8,
        /// Invalidate `linear_addr` on the vCPUs in `vcpumask`.
        InvlpgMulti = 9,
        /// Flush every vCPU's TLB.
        TlbFlushAll = 10,
        /// Invalidate `linear_addr` on every vCPU.
        InvlpgAll = 11,
        /// Write back and invalidate caches.
        FlushCache = 12,
        /// Install an LDT at `linear_addr` with `nr_ents` entries.
        SetLdt = 13,
        /// Install `mfn` as the user-mode page-table base.
        NewUserBaseptr = 15,
        /// Zero frame `mfn`.
        ClearPage = 16,
        /// Copy frame `src_mfn` to `mfn`.
        CopyPage = 17,
        /// Write back and invalidate caches on all CPUs.
        FlushCacheGlobal = 18,
        /// Mark `mfn` as the head of a superpage.
        MarkSuper = 19,
        /// Unmark a superpage.
        UnmarkSuper = 20,
    }
}

/// One request of `mmuext_op` (`struct mmuext_op`).
///
/// Xen declares both arguments as unions; every member of `arg1` and the
/// widest member of `arg2` are 64 bits, so they are held here as raw `u64`s:
/// `arg1` is a frame (pin/unpin, base pointers, clear/copy page, superpages)
/// or a linear address (invlpg, set_ldt); `arg2` is an LDT entry count in its
/// low 32 bits (set_ldt), a guest handle to a vCPU bitmap (flush/invlpg
/// multi) or a source frame (copy_page).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuextOp {
    /// IN: [`MmuextCmd`].
    pub cmd: u32,
    /// Padding.
    pub pad0: u32,
    /// IN: frame or linear address, depending on `cmd`.
    pub arg1: u64,
    /// IN: entry count, vCPU-bitmap handle or source frame, depending on `cmd`.
    pub arg2: u64,
}
assert_layout!(MmuextOp, size = 24, cmd = 0, arg1 = 8, arg2 = 16);

impl MmuextOp {
    /// An operation with both arguments given as raw 64-bit values.
    pub const fn new(cmd: MmuextCmd, arg1: u64, arg2: u64) -> Self {
        Self {
            cmd: cmd as u32,
            pad0: 0,
            arg1,
            arg2,
        }
    }

    /// `arg2` read as the `set_ldt` entry count.
    pub const fn nr_ents(&self) -> u32 {
        self.arg2 as u32
    }

    /// `arg2` read as the vCPU bitmap of the `*_multi` commands.
    pub const fn vcpumask(&self) -> GuestHandle<u8> {
        GuestHandle::new(self.arg2)
    }
}

// ---------------------------------------------------------------------------
// update_va_mapping flags (`UVMF_*`).

/// No TLB flush.
pub const UVMF_NONE: u64 = 0;
/// Flush the whole TLB(s).
pub const UVMF_TLB_FLUSH: u64 = 1;
/// Invalidate only the updated address.
pub const UVMF_INVLPG: u64 = 2;
/// Mask of the flush-type bits.
pub const UVMF_FLUSHTYPE_MASK: u64 = 3;
/// Flush the TLBs of a vCPU set; OR in a pointer to the vCPU bitmap.
pub const UVMF_MULTI: u64 = 0;
/// Flush the local TLB only (`UVMF_MULTI` with a null bitmap).
pub const UVMF_LOCAL: u64 = 0;
/// Flush on all vCPUs.
pub const UVMF_ALL: u64 = 1 << 2;

// ---------------------------------------------------------------------------
// console_io and vm_assist.

abi_enum! {
    /// `cmd` of `console_io(cmd, count, buffer)` (`CONSOLEIO_*`).
    pub enum ConsoleIoCmd: u32 {
        /// Write `count` bytes from `buffer` to the hypervisor console.
        Write = 0,
        /// Read up to `count` bytes into `buffer`; returns the count read.
        Read = 1,
    }
}

abi_enum! {
    /// `cmd` of `vm_assist(cmd, type)` (`VMASST_CMD_*`).
    pub enum VmAssistCmd: u32 {
        /// Turn the assist on.
        Enable = 0,
        /// Turn the assist off.
        Disable = 1,
    }
}

abi_enum! {
    /// `type` of `vm_assist` (`VMASST_TYPE_*`); also the bit number in the
    /// per-domain assist bitmap.
    pub enum VmAssistType: u32 {
        /// 32-bit guests: emulate 4 GiB segment limits.
        FourGbSegments = 0,
        /// 32-bit guests: notify when the 4 GiB emulation is used.
        FourGbSegmentsNotify = 1,
        /// Let the guest write L1 PTEs directly (trapped and emulated).
        WritablePagetables = 2,
        /// PAE guests: allow page directories above 4 GiB.
        PaeExtendedCr3 = 3,
        /// Architectural virtual-IOPL behaviour.
        ArchitecturalIopl = 4,
        /// Set `XEN_RUNSTATE_UPDATE` while updating a runstate area.
        RunstateUpdateFlag = 5,
        /// 64-bit guests: hide the M2P from user mode.
        M2pStrict = 32,
    }
}

// ---------------------------------------------------------------------------
// multicall.

/// One entry of a `multicall` batch (`struct multicall_entry`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MulticallEntry {
    /// IN: [`Hypercall`] number.
    pub op: XenUlong,
    /// OUT: the hypercall's return value.
    pub result: XenUlong,
    /// IN: arguments; only the first five are used.
    pub args: [XenUlong; 6],
}
assert_layout!(MulticallEntry, size = 64, op = 0, result = 8, args = 16);

// ---------------------------------------------------------------------------
// Time and the per-vCPU / shared pages.

/// The TSC is stable across vCPUs (`vcpu_time_info.flags`).
pub const XEN_PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// The guest was stopped (`vcpu_time_info.flags`).
pub const XEN_PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// Per-vCPU system-time parameters (`struct vcpu_time_info`), all OUT.
///
/// The hypervisor increments `version` before and after an update, so an odd
/// `version` means an update is in progress; readers retry until they see the
/// same even value before and after reading. System time in nanoseconds is
/// `system_time + ((((tsc - tsc_timestamp) << tsc_shift) * tsc_to_system_mul) >> 32)`
/// with a negative `tsc_shift` meaning a right shift.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuTimeInfo {
    /// OUT: update counter (odd while an update is in progress).
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// OUT: TSC value at the last update.
    pub tsc_timestamp: u64,
    /// OUT: nanoseconds since boot at the last update.
    pub system_time: u64,
    /// OUT: TSC-to-nanoseconds multiplier (32.32 fixed point).
    pub tsc_to_system_mul: u32,
    /// OUT: power-of-two pre-shift applied to a TSC delta.
    pub tsc_shift: i8,
    /// OUT: `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad1: [u8; 2],
}
assert_layout!(
    VcpuTimeInfo,
    size = 32,
    version = 0,
    tsc_timestamp = 8,
    system_time = 16,
    tsc_to_system_mul = 24,
    tsc_shift = 28,
    flags = 29,
);

impl VcpuTimeInfo {
    /// Nanoseconds elapsed for a TSC delta under these parameters.
    pub const fn scale_delta(&self, tsc_delta: u64) -> u64 {
        // Out-of-range shifts saturate to 0 instead of overflowing.
        let shifted = if self.tsc_shift >= 0 {
            match tsc_delta.checked_shl(self.tsc_shift as u32) {
                Some(v) => v,
                None => 0,
            }
        } else {
            match tsc_delta.checked_shr(self.tsc_shift.unsigned_abs() as u32) {
                Some(v) => v,
                None => 0,
            }
        };
        ((shifted as u128 * self.tsc_to_system_mul as u128) >> 32) as u64
    }
}

/// x86_64 part of [`VcpuInfo`] (`struct arch_vcpu_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchVcpuInfo {
    /// OUT: faulting address of the last #PF delivered to a PV guest.
    pub cr2: u64,
    /// Padding.
    pub pad: u64,
}
assert_layout!(ArchVcpuInfo, size = 16, cr2 = 0, pad = 8);

/// Per-vCPU event and time state (`struct vcpu_info`), 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuInfo {
    /// OUT (guest clears): non-zero when an event upcall is pending.
    pub evtchn_upcall_pending: u8,
    /// IN: non-zero masks event upcalls to this vCPU (PV's virtual IF).
    pub evtchn_upcall_mask: u8,
    /// Padding.
    pub pad0: [u8; 6],
    /// OUT (guest clears): which words of `evtchn_pending` have new bits.
    pub evtchn_pending_sel: XenUlong,
    /// Architecture-specific state.
    pub arch: ArchVcpuInfo,
    /// OUT: system-time parameters.
    pub time: VcpuTimeInfo,
}
assert_layout!(
    VcpuInfo,
    size = 64,
    evtchn_upcall_pending = 0,
    evtchn_upcall_mask = 1,
    evtchn_pending_sel = 8,
    arch = 16,
    time = 32,
);

/// x86_64 part of [`SharedInfo`] (`struct arch_shared_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchSharedInfo {
    /// IN: number of valid entries in the guest's P2M.
    pub max_pfn: u64,
    /// IN: frame of the list of frames of the P2M frame list (0 = not set up,
    /// all-ones = invalid, use `p2m_vaddr`).
    pub pfn_to_mfn_frame_list_list: XenPfn,
    /// OUT: NMI reason bits for the hardware domain.
    pub nmi_reason: u64,
    /// IN: CR3 of the address space in which `p2m_vaddr` is valid (0 = the
    /// next two fields are unused).
    pub p2m_cr3: u64,
    /// IN: virtual address of the linear P2M list.
    pub p2m_vaddr: u64,
    /// IN: bumped by the guest before and after P2M mapping changes.
    pub p2m_generation: u64,
}
assert_layout!(
    ArchSharedInfo,
    size = 48,
    max_pfn = 0,
    pfn_to_mfn_frame_list_list = 8,
    nmi_reason = 16,
    p2m_cr3 = 24,
    p2m_vaddr = 32,
    p2m_generation = 40,
);

/// The shared-info page (`struct shared_info`), 3136 bytes on x86_64.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedInfo {
    /// Per-vCPU state of the first [`XEN_LEGACY_MAX_VCPUS`] vCPUs.
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// OUT (guest clears): 2-level event-channel pending bitmap.
    pub evtchn_pending: [XenUlong; 64],
    /// IN: 2-level event-channel mask bitmap.
    pub evtchn_mask: [XenUlong; 64],
    /// OUT: wall-clock update counter (same protocol as `VcpuTimeInfo::version`).
    pub wc_version: u32,
    /// OUT: wall-clock seconds at system time 0 (low 32 bits).
    pub wc_sec: u32,
    /// OUT: wall-clock nanoseconds at system time 0.
    pub wc_nsec: u32,
    /// OUT: high 32 bits of the wall-clock seconds.
    pub wc_sec_hi: u32,
    /// Architecture-specific state.
    pub arch: ArchSharedInfo,
}
assert_layout!(
    SharedInfo,
    size = 3136,
    vcpu_info = 0,
    evtchn_pending = 2048,
    evtchn_mask = 2560,
    wc_version = 3072,
    wc_sec = 3076,
    wc_nsec = 3080,
    wc_sec_hi = 3084,
    arch = 3088,
);
const _: () = assert!(core::mem::size_of::<SharedInfo>() <= crate::PAGE_SIZE);

impl SharedInfo {
    /// An all-zero shared-info page.
    pub const fn zeroed() -> Self {
        Self {
            vcpu_info: [VcpuInfo {
                evtchn_upcall_pending: 0,
                evtchn_upcall_mask: 0,
                pad0: [0; 6],
                evtchn_pending_sel: 0,
                arch: ArchVcpuInfo { cr2: 0, pad: 0 },
                time: VcpuTimeInfo {
                    version: 0,
                    pad0: 0,
                    tsc_timestamp: 0,
                    system_time: 0,
                    tsc_to_system_mul: 0,
                    tsc_shift: 0,
                    flags: 0,
                    pad1: [0; 2],
                },
            }; XEN_LEGACY_MAX_VCPUS],
            evtchn_pending: [0; 64],
            evtchn_mask: [0; 64],
            wc_version: 0,
            wc_sec: 0,
            wc_nsec: 0,
            wc_sec_hi: 0,
            arch: ArchSharedInfo {
                max_pfn: 0,
                pfn_to_mfn_frame_list_list: 0,
                nmi_reason: 0,
                p2m_cr3: 0,
                p2m_vaddr: 0,
                p2m_generation: 0,
            },
        }
    }

    /// Full 64-bit wall-clock seconds.
    pub const fn wc_sec_full(&self) -> u64 {
        ((self.wc_sec_hi as u64) << 32) | self.wc_sec as u64
    }
}

impl Default for SharedInfo {
    fn default() -> Self {
        Self::zeroed()
    }
}

// ---------------------------------------------------------------------------
// start_info.

/// `start_info.magic` of a 64-bit PV guest (NUL-padded to 32 bytes); Xen appends `p` when
/// the kernel asked for PAE (`xen-3.0-x86_64p`), so guests should check it as a prefix.
pub const START_INFO_MAGIC_X86_64: &str = "xen-3.0-x86_64";
/// Size of `start_info.cmd_line`.
pub const MAX_GUEST_CMDLINE: usize = 1024;

/// The domain is privileged.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// The domain is the initial control domain.
pub const SIF_INITDOMAIN: u32 = 1 << 1;
/// `mod_start` is a multiboot module package ([`XenMultibootModList`]).
pub const SIF_MULTIBOOT_MOD: u32 = 1 << 2;
/// `mod_start` is a PFN, not a virtual address.
pub const SIF_MOD_START_PFN: u32 = 1 << 3;
/// The toolstack understands a virtually mapped P2M list.
pub const SIF_VIRT_P2M_4TOOLS: u32 = 1 << 4;
/// Bits reserved for power-management options.
pub const SIF_PM_MASK: u32 = 0xFF << 8;

/// `start_info.console` of an ordinary domain: the console ring page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartInfoConsoleDomU {
    /// OUT: machine frame of the console ring ([`crate::io::console::XenconsInterface`]).
    pub mfn: XenPfn,
    /// OUT: event channel of the console ring.
    pub evtchn: u32,
    /// Padding.
    pub pad0: u32,
}
assert_layout!(StartInfoConsoleDomU, size = 16, mfn = 0, evtchn = 8);

/// `start_info.console` of the initial domain: where the VGA/VESA console
/// description ([`Dom0VgaConsoleInfo`]) lies within the start-info page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartInfoConsoleDom0 {
    /// OUT: byte offset of the console description from the start of `start_info`.
    pub info_off: u32,
    /// OUT: size of the console description.
    pub info_size: u32,
    /// Padding up to the size of the domU variant.
    pub pad0: [u32; 2],
}
assert_layout!(StartInfoConsoleDom0, size = 16, info_off = 0, info_size = 4);

/// The `start_info.console` union. Both variants are 16 bytes with explicit
/// padding, so writing either one initialises the whole union and reading
/// either one is always sound.
#[repr(C)]
#[derive(Clone, Copy)]
pub union StartInfoConsole {
    /// Used when `SIF_INITDOMAIN` is clear.
    pub dom_u: StartInfoConsoleDomU,
    /// Used when `SIF_INITDOMAIN` is set.
    pub dom0: StartInfoConsoleDom0,
}
const _: () = assert!(core::mem::size_of::<StartInfoConsole>() == 16);

impl StartInfoConsole {
    /// The union read as the domU variant.
    pub const fn dom_u(&self) -> StartInfoConsoleDomU {
        // SAFETY: both variants are 16 bytes of integers with no implicit
        // padding, so whichever was written initialised all 16 bytes, and any
        // bit pattern is a valid `StartInfoConsoleDomU`.
        unsafe { self.dom_u }
    }

    /// The union read as the dom0 variant.
    pub const fn dom0(&self) -> StartInfoConsoleDom0 {
        // SAFETY: as in `dom_u`: all 16 bytes are initialised integers and any
        // bit pattern is a valid `StartInfoConsoleDom0`.
        unsafe { self.dom0 }
    }
}

impl Default for StartInfoConsole {
    fn default() -> Self {
        Self {
            dom_u: StartInfoConsoleDomU::default(),
        }
    }
}

impl core::fmt::Debug for StartInfoConsole {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StartInfoConsole")
            .field("dom_u", &self.dom_u())
            .finish()
    }
}

/// The PV start-of-day page (`struct start_info`), whose virtual address a
/// PV guest receives in `rsi`. All fields are OUT.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    /// OUT: `"xen-<version>-<platform>"`, NUL padded ([`START_INFO_MAGIC_X86_64`]).
    pub magic: [u8; 32],
    /// OUT: pages allocated to the domain.
    pub nr_pages: u64,
    /// OUT: machine address of the shared-info page.
    pub shared_info: u64,
    /// OUT: `SIF_*` flags.
    pub flags: u32,
    /// Padding.
    pub pad0: u32,
    /// OUT: machine frame of the xenstore ring.
    pub store_mfn: XenPfn,
    /// OUT: event channel of the xenstore ring.
    pub store_evtchn: u32,
    /// Padding.
    pub pad1: u32,
    /// OUT: console ring (domU) or console description (dom0).
    pub console: StartInfoConsole,
    /// OUT: virtual address of the bootstrap top-level page table.
    pub pt_base: u64,
    /// OUT: number of bootstrap page-table frames.
    pub nr_pt_frames: u64,
    /// OUT: virtual address of the P2M list (`nr_pages` frame numbers).
    pub mfn_list: u64,
    /// OUT: virtual address (or PFN with `SIF_MOD_START_PFN`) of the initial module.
    pub mod_start: u64,
    /// OUT: size of the initial module in bytes.
    pub mod_len: u64,
    /// OUT: NUL-terminated kernel command line.
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    /// OUT: first PFN of the initial P2M table (with `XEN_ELFNOTE_INIT_P2M`).
    pub first_p2m_pfn: u64,
    /// OUT: number of PFNs of the initial P2M table.
    pub nr_p2m_frames: u64,
}
assert_layout!(
    StartInfo,
    size = 1168,
    magic = 0,
    nr_pages = 32,
    shared_info = 40,
    flags = 48,
    store_mfn = 56,
    store_evtchn = 64,
    console = 72,
    pt_base = 88,
    nr_pt_frames = 96,
    mfn_list = 104,
    mod_start = 112,
    mod_len = 120,
    cmd_line = 128,
    first_p2m_pfn = 1152,
    nr_p2m_frames = 1160,
);

impl StartInfo {
    /// An all-zero start-info page with the x86_64 magic filled in.
    pub const fn new() -> Self {
        let mut magic = [0u8; 32];
        let src = START_INFO_MAGIC_X86_64.as_bytes();
        let mut i = 0;
        while i < src.len() {
            magic[i] = src[i];
            i += 1;
        }
        Self {
            magic,
            nr_pages: 0,
            shared_info: 0,
            flags: 0,
            pad0: 0,
            store_mfn: 0,
            store_evtchn: 0,
            pad1: 0,
            console: StartInfoConsole {
                dom_u: StartInfoConsoleDomU {
                    mfn: 0,
                    evtchn: 0,
                    pad0: 0,
                },
            },
            pt_base: 0,
            nr_pt_frames: 0,
            mfn_list: 0,
            mod_start: 0,
            mod_len: 0,
            cmd_line: [0; MAX_GUEST_CMDLINE],
            first_p2m_pfn: 0,
            nr_p2m_frames: 0,
        }
    }

    /// The magic string up to its first NUL.
    pub fn magic_bytes(&self) -> &[u8] {
        until_nul(&self.magic)
    }

    /// The command line up to its first NUL.
    pub fn cmd_line_bytes(&self) -> &[u8] {
        until_nul(&self.cmd_line)
    }

    /// Stores `cmdline`, truncated so that a terminating NUL always fits.
    /// Returns the number of bytes stored.
    pub fn set_cmd_line(&mut self, cmdline: &[u8]) -> usize {
        let n = cmdline.len().min(MAX_GUEST_CMDLINE - 1);
        self.cmd_line = [0; MAX_GUEST_CMDLINE];
        self.cmd_line[..n].copy_from_slice(&cmdline[..n]);
        n
    }
}

impl Default for StartInfo {
    fn default() -> Self {
        Self::new()
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// One module descriptor of a multiboot module package
/// (`struct xen_multiboot_mod_list`); the list ends with `mod_start == 0`.
/// Addresses are relative to the start of the package.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMultibootModList {
    /// OUT: offset of the module's first byte.
    pub mod_start: u32,
    /// OUT: offset of the module's last byte (inclusive).
    pub mod_end: u32,
    /// OUT: offset of the module's NUL-terminated command line.
    pub cmdline: u32,
    /// Reserved, zero.
    pub pad: u32,
}
assert_layout!(
    XenMultibootModList,
    size = 16,
    mod_start = 0,
    mod_end = 4,
    cmdline = 8,
    pad = 12
);

/// [`Dom0VgaConsoleInfo::video_type`]: VGA text mode 3.
pub const XEN_VGATYPE_TEXT_MODE_3: u8 = 0x03;
/// [`Dom0VgaConsoleInfo::video_type`]: VESA linear frame buffer.
pub const XEN_VGATYPE_VESA_LFB: u8 = 0x23;
/// [`Dom0VgaConsoleInfo::video_type`]: EFI linear frame buffer.
pub const XEN_VGATYPE_EFI_LFB: u8 = 0x70;

/// Text-mode console description.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VgaTextMode3 {
    /// OUT: font height in pixels.
    pub font_height: u16,
    /// OUT: cursor column.
    pub cursor_x: u16,
    /// OUT: cursor row.
    pub cursor_y: u16,
    /// OUT: rows of characters.
    pub rows: u16,
    /// OUT: columns of characters.
    pub columns: u16,
}
assert_layout!(
    VgaTextMode3,
    size = 10,
    font_height = 0,
    cursor_x = 2,
    cursor_y = 4,
    rows = 6,
    columns = 8
);

/// Linear-frame-buffer console description.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VgaVesaLfb {
    /// OUT: width in pixels.
    pub width: u16,
    /// OUT: height in pixels.
    pub height: u16,
    /// OUT: bytes per scan line.
    pub bytes_per_line: u16,
    /// OUT: bits per pixel.
    pub bits_per_pixel: u16,
    /// OUT: low 32 bits of the frame buffer's physical address.
    pub lfb_base: u32,
    /// OUT: frame buffer size in 64 KiB units.
    pub lfb_size: u32,
    /// OUT: red field position.
    pub red_pos: u8,
    /// OUT: red field size.
    pub red_size: u8,
    /// OUT: green field position.
    pub green_pos: u8,
    /// OUT: green field size.
    pub green_size: u8,
    /// OUT: blue field position.
    pub blue_pos: u8,
    /// OUT: blue field size.
    pub blue_size: u8,
    /// OUT: reserved field position.
    pub rsvd_pos: u8,
    /// OUT: reserved field size.
    pub rsvd_size: u8,
    /// OUT: VESA capabilities.
    pub gbl_caps: u32,
    /// OUT: VESA mode attributes.
    pub mode_attrs: u16,
    /// Padding.
    pub pad: u16,
    /// OUT: high 32 bits of the frame buffer's physical address.
    pub ext_lfb_base: u32,
}
assert_layout!(
    VgaVesaLfb,
    size = 36,
    lfb_base = 8,
    red_pos = 16,
    gbl_caps = 24,
    mode_attrs = 28,
    ext_lfb_base = 32
);

/// The mode-specific part of [`Dom0VgaConsoleInfo`].
#[repr(C)]
#[derive(Clone, Copy)]
pub union Dom0VgaConsoleMode {
    /// For [`XEN_VGATYPE_TEXT_MODE_3`].
    pub text_mode_3: VgaTextMode3,
    /// For the frame-buffer types.
    pub vesa_lfb: VgaVesaLfb,
}

/// The initial domain's console description (`struct dom0_vga_console_info`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Dom0VgaConsoleInfo {
    /// OUT: `XEN_VGATYPE_*`.
    pub video_type: u8,
    /// Padding.
    pub pad0: [u8; 3],
    /// OUT: mode-specific description.
    pub u: Dom0VgaConsoleMode,
}
assert_layout!(Dom0VgaConsoleInfo, size = 40, video_type = 0, u = 4);

// ---------------------------------------------------------------------------
// Traps, iret and vCPU context.

/// One entry of the PV virtual IDT (`struct trap_info`); a table passed to
/// `set_trap_table` ends with an entry whose `address` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapInfo {
    /// IN: exception/interrupt vector.
    pub vector: u8,
    /// IN: bits 1:0 = lowest privilege allowed to raise it with `int`
    /// (0 none, 1-2 kernel, 3 everyone); bit 2 = mask events on entry.
    pub flags: u8,
    /// IN: code selector of the handler.
    pub cs: u16,
    /// Padding.
    pub pad0: u32,
    /// IN: handler address (0 terminates a table).
    pub address: u64,
}
assert_layout!(
    TrapInfo,
    size = 16,
    vector = 0,
    flags = 1,
    cs = 2,
    address = 8
);

/// [`TrapInfo::flags`] bit: mask event delivery on entry to the handler
/// (the PV equivalent of an interrupt gate).
pub const TI_MASK_EVENTS: u8 = 1 << 2;

impl TrapInfo {
    /// The DPL in bits 1:0 of `flags`.
    pub const fn dpl(&self) -> u8 {
        self.flags & 3
    }

    /// Whether entry masks event delivery.
    pub const fn masks_events(&self) -> bool {
        self.flags & TI_MASK_EVENTS != 0
    }
}

/// `vcpu_guest_context.flags`: the FPU context is valid.
pub const VGCF_I387_VALID: u64 = 1 << 0;
/// `vcpu_guest_context.flags`: the vCPU is in guest kernel mode.
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
/// `vcpu_guest_context.flags`: the failsafe callback masks events.
pub const VGCF_FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
/// `vcpu_guest_context.flags`: the syscall callback masks events.
pub const VGCF_SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
/// `vcpu_guest_context.flags`: the vCPU is online.
pub const VGCF_ONLINE: u64 = 1 << 5;
/// [`IretContext::flags`]: the frame came from `syscall`; return like
/// `sysret` (restore rax, rip, rflags, rsp; discard r11, rcx, cs, ss).
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

/// The frame the `iret` hypercall pops from the guest stack
/// (`struct iret_context`), lowest address (the `rsp` at the call) first.
/// All fields IN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IretContext {
    /// IN: value restored to rax.
    pub rax: u64,
    /// IN: value restored to r11.
    pub r11: u64,
    /// IN: value restored to rcx.
    pub rcx: u64,
    /// IN: [`VGCF_IN_SYSCALL`] or 0.
    pub flags: u64,
    /// IN: return rip.
    pub rip: u64,
    /// IN: return cs; RPL 3 returns to guest user mode, else guest kernel.
    pub cs: u64,
    /// IN: return rflags.
    pub rflags: u64,
    /// IN: return rsp.
    pub rsp: u64,
    /// IN: return ss.
    pub ss: u64,
}
assert_layout!(
    IretContext,
    size = 72,
    rax = 0,
    r11 = 8,
    rcx = 16,
    flags = 24,
    rip = 32,
    cs = 40,
    rflags = 48,
    rsp = 56,
    ss = 64,
);

/// General-purpose register state (`struct cpu_user_regs`, x86_64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuUserRegs {
    /// r15.
    pub r15: u64,
    /// r14.
    pub r14: u64,
    /// r13.
    pub r13: u64,
    /// r12.
    pub r12: u64,
    /// rbp.
    pub rbp: u64,
    /// rbx.
    pub rbx: u64,
    /// r11.
    pub r11: u64,
    /// r10.
    pub r10: u64,
    /// r9.
    pub r9: u64,
    /// r8.
    pub r8: u64,
    /// rax.
    pub rax: u64,
    /// rcx.
    pub rcx: u64,
    /// rdx.
    pub rdx: u64,
    /// rsi.
    pub rsi: u64,
    /// rdi.
    pub rdi: u64,
    /// Hypervisor-private.
    pub error_code: u32,
    /// Hypervisor-private.
    pub entry_vector: u32,
    /// rip.
    pub rip: u64,
    /// cs.
    pub cs: u16,
    /// Padding.
    pub pad0: u16,
    /// Event mask saved across an upcall.
    pub saved_upcall_mask: u8,
    /// Padding.
    pub pad1: [u8; 3],
    /// rflags.
    pub rflags: u64,
    /// rsp.
    pub rsp: u64,
    /// ss.
    pub ss: u16,
    /// Padding.
    pub pad2: [u16; 3],
    /// es.
    pub es: u16,
    /// Padding.
    pub pad3: [u16; 3],
    /// ds.
    pub ds: u16,
    /// Padding.
    pub pad4: [u16; 3],
    /// fs.
    pub fs: u16,
    /// Padding.
    pub pad5: [u16; 3],
    /// gs.
    pub gs: u16,
    /// Padding.
    pub pad6: [u16; 3],
}
assert_layout!(
    CpuUserRegs,
    size = 200,
    r15 = 0,
    rax = 80,
    rdi = 112,
    error_code = 120,
    rip = 128,
    cs = 136,
    saved_upcall_mask = 140,
    rflags = 144,
    rsp = 152,
    ss = 160,
    es = 168,
    ds = 176,
    fs = 184,
    gs = 192,
);

/// Full PV vCPU state (`struct vcpu_guest_context`, x86_64), used by
/// `VCPUOP_initialise` for PV guests. All fields IN.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VcpuGuestContext {
    /// IN: FXSAVE image.
    pub fpu_ctxt: [u8; 512],
    /// IN: `VGCF_*` flags.
    pub flags: u64,
    /// IN: general-purpose registers.
    pub user_regs: CpuUserRegs,
    /// IN: virtual IDT.
    pub trap_ctxt: [TrapInfo; 256],
    /// IN: LDT linear address.
    pub ldt_base: u64,
    /// IN: LDT entry count.
    pub ldt_ents: u64,
    /// IN: GDT frames.
    pub gdt_frames: [u64; 16],
    /// IN: GDT entry count.
    pub gdt_ents: u64,
    /// IN: kernel stack segment.
    pub kernel_ss: u64,
    /// IN: kernel stack pointer.
    pub kernel_sp: u64,
    /// IN: control registers; `ctrlreg[3]` kernel and `ctrlreg[1]` user page tables.
    pub ctrlreg: [u64; 8],
    /// IN: debug registers.
    pub debugreg: [u64; 8],
    /// IN: event callback address.
    pub event_callback_eip: u64,
    /// IN: failsafe callback address.
    pub failsafe_callback_eip: u64,
    /// IN: syscall callback address.
    pub syscall_callback_eip: u64,
    /// IN: `VMASST_TYPE_*` bitmap.
    pub vm_assist: u64,
    /// IN: FS base.
    pub fs_base: u64,
    /// IN: kernel GS base.
    pub gs_base_kernel: u64,
    /// IN: user GS base.
    pub gs_base_user: u64,
}
assert_layout!(
    VcpuGuestContext,
    size = 5168,
    flags = 512,
    user_regs = 520,
    trap_ctxt = 720,
    ldt_base = 4816,
    gdt_frames = 4832,
    gdt_ents = 4960,
    kernel_ss = 4968,
    kernel_sp = 4976,
    ctrlreg = 4984,
    debugreg = 5048,
    event_callback_eip = 5112,
    failsafe_callback_eip = 5120,
    syscall_callback_eip = 5128,
    vm_assist = 5136,
    fs_base = 5144,
    gs_base_kernel = 5152,
    gs_base_user = 5160,
);

// ---------------------------------------------------------------------------
// xen_version.

abi_enum! {
    /// `cmd` of `xen_version(cmd, arg)` (`XENVER_*`).
    pub enum XenVersionCmd: u32 {
        /// Returns `major << 16 | minor`; no argument.
        Version = 0,
        /// Fills a [`XenExtraversion`].
        Extraversion = 1,
        /// Fills a [`XenCompileInfo`].
        CompileInfo = 2,
        /// Fills a [`XenCapabilitiesInfo`].
        Capabilities = 3,
        /// Fills a [`XenChangesetInfo`].
        Changeset = 4,
        /// Fills a [`XenPlatformParameters`].
        PlatformParameters = 5,
        /// Fills the submap selected in a [`XenFeatureInfo`].
        GetFeatures = 6,
        /// Returns the page size; no argument.
        Pagesize = 7,
        /// Fills a [`XenDomainHandle`].
        GuestHandle = 8,
        /// Fills a [`XenCommandline`].
        Commandline = 9,
        /// Fills a [`XenVarbuf`]-framed build id.
        BuildId = 10,
        /// Variable-length extraversion ([`XenVarbuf`]).
        Extraversion2 = 11,
        /// Variable-length capabilities ([`XenVarbuf`]).
        Capabilities2 = 12,
        /// Variable-length changeset ([`XenVarbuf`]).
        Changeset2 = 13,
        /// Variable-length command line ([`XenVarbuf`]).
        Commandline2 = 14,
    }
}

/// Length of [`XenExtraversion`].
pub const XEN_EXTRAVERSION_LEN: usize = 16;
/// Length of [`XenCapabilitiesInfo`].
pub const XEN_CAPABILITIES_INFO_LEN: usize = 1024;
/// Length of [`XenChangesetInfo`].
pub const XEN_CHANGESET_INFO_LEN: usize = 64;
/// Length of [`XenCommandline`].
pub const XEN_COMMANDLINE_LEN: usize = 1024;

/// OUT of `XENVER_extraversion`: NUL-padded version suffix, e.g. ".0".
pub type XenExtraversion = [u8; XEN_EXTRAVERSION_LEN];
/// OUT of `XENVER_capabilities`: space-separated guest types, e.g. "xen-3.0-x86_64 hvm-3.0-x86_64".
pub type XenCapabilitiesInfo = [u8; XEN_CAPABILITIES_INFO_LEN];
/// OUT of `XENVER_changeset`: source revision string.
pub type XenChangesetInfo = [u8; XEN_CHANGESET_INFO_LEN];
/// OUT of `XENVER_commandline`: the hypervisor's command line.
pub type XenCommandline = [u8; XEN_COMMANDLINE_LEN];
/// OUT of `XENVER_guest_handle`: the domain's 16-byte handle (UUID).
pub type XenDomainHandle = [u8; 16];

/// Packs a version as `XENVER_version` returns it.
pub const fn xen_version_encode(major: u16, minor: u16) -> u32 {
    ((major as u32) << 16) | minor as u32
}

/// Splits a `XENVER_version` result into (major, minor).
pub const fn xen_version_decode(v: u32) -> (u16, u16) {
    ((v >> 16) as u16, v as u16)
}

/// OUT of `XENVER_compile_info` (`struct xen_compile_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XenCompileInfo {
    /// OUT: compiler description.
    pub compiler: [u8; 64],
    /// OUT: who built the hypervisor.
    pub compile_by: [u8; 16],
    /// OUT: build host domain.
    pub compile_domain: [u8; 32],
    /// OUT: build date.
    pub compile_date: [u8; 32],
}
assert_layout!(
    XenCompileInfo,
    size = 144,
    compiler = 0,
    compile_by = 64,
    compile_domain = 80,
    compile_date = 112
);

/// OUT of `XENVER_platform_parameters` (`struct xen_platform_parameters`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenPlatformParameters {
    /// OUT: start of the hypervisor's reserved virtual range.
    pub virt_start: XenUlong,
}
assert_layout!(XenPlatformParameters, size = 8, virt_start = 0);

/// Argument of `XENVER_get_features` (`struct xen_feature_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenFeatureInfo {
    /// IN: which 32-bit submap of `XENFEAT_*` bits to return.
    pub submap_idx: u32,
    /// OUT: bit `n` set = feature `32 * submap_idx + n` present.
    pub submap: u32,
}
assert_layout!(XenFeatureInfo, size = 8, submap_idx = 0, submap = 4);

/// Header of a variable-length `XENVER_*2` / `XENVER_build_id` result
/// (`struct xen_varbuf`); `len` bytes of data follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenVarbuf {
    /// IN: space available after the header; OUT: bytes written.
    pub len: u32,
}
assert_layout!(XenVarbuf, size = 4, len = 0);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn hypercall_numbers_match_xen() {
        let expect: [(u64, Hypercall); 12] = [
            (0, Hypercall::SetTrapTable),
            (1, Hypercall::MmuUpdate),
            (12, Hypercall::MemoryOp),
            (17, Hypercall::XenVersion),
            (18, Hypercall::ConsoleIo),
            (23, Hypercall::Iret),
            (26, Hypercall::MmuextOp),
            (29, Hypercall::SchedOp),
            (32, Hypercall::EventChannelOp),
            (34, Hypercall::HvmOp),
            (41, Hypercall::DmOp),
            (48, Hypercall::Mca),
        ];
        for (n, h) in expect {
            assert_eq!(Hypercall::try_from(n), Ok(h));
            assert_eq!(h as u64, n);
        }
    }

    #[test]
    fn hypercall_round_trips_and_rejects_gaps() {
        for &h in Hypercall::ALL {
            assert_eq!(Hypercall::try_from(h.raw()), Ok(h));
            assert_eq!(Hypercall::try_from(h.raw() as u32), Ok(h));
        }
        for n in (0..=42).filter(|&n| n != 11) {
            assert!(Hypercall::try_from(n as u64).is_ok(), "{n}");
        }
        for bad in [11u64, 43, 47, 56, 128, u64::MAX] {
            let err = Hypercall::try_from(bad).unwrap_err();
            assert_eq!(err.value, bad);
            assert_eq!(err.type_name, "Hypercall");
        }
        assert_eq!(Hypercall::ALL.len(), 42 + 8);
    }

    #[test]
    fn small_number_sets_round_trip() {
        for &c in MmuextCmd::ALL {
            assert_eq!(MmuextCmd::try_from(c.raw()), Ok(c));
        }
        assert!(MmuextCmd::try_from(14u32).is_err());
        assert!(MmuextCmd::try_from(21u32).is_err());
        for &c in XenVersionCmd::ALL {
            assert_eq!(XenVersionCmd::try_from(c.raw()), Ok(c));
        }
        assert!(XenVersionCmd::try_from(15u32).is_err());
        assert_eq!(ConsoleIoCmd::try_from(0u32), Ok(ConsoleIoCmd::Write));
        assert!(ConsoleIoCmd::try_from(2u32).is_err());
        assert_eq!(VmAssistType::try_from(32u32), Ok(VmAssistType::M2pStrict));
        assert!(VmAssistType::try_from(6u32).is_err());
        assert_eq!(SegBase::try_from(2u64), Ok(SegBase::GsKernel));
        assert!(SegBase::try_from(4u64).is_err());
        assert!(VmAssistCmd::try_from(2u32).is_err());
    }

    #[test]
    fn mmu_update_decodes_ptr_bits() {
        for &t in MmuUpdateType::ALL {
            assert_eq!(MmuUpdateType::from_ptr(0x1234_5000 | t.raw()), t);
        }
        let u = MmuUpdate {
            ptr: 0x1234_5008 | 2,
            val: 7,
        };
        assert_eq!(u.kind(), MmuUpdateType::PtUpdatePreserveAd);
        assert_eq!(u.address(), 0x1234_5008);
        assert_eq!(mmu_update_foreigndom(DOMID_SELF, None), 0x7FF0);
        assert_eq!(mmu_update_foreigndom(1, Some(0)), 0x0001_0001);
    }

    #[test]
    fn mmuext_op_layout_and_args() {
        assert_eq!(size_of::<MmuextOp>(), 24);
        assert_eq!(offset_of!(MmuextOp, arg1), 8);
        assert_eq!(offset_of!(MmuextOp, arg2), 16);
        let op = MmuextOp::new(MmuextCmd::CopyPage, 5, 6);
        assert_eq!(op.cmd, 17);
        assert_eq!((op.arg1, op.arg2), (5, 6));
        let ldt = MmuextOp::new(MmuextCmd::SetLdt, 0x8000, 0xFFFF_FFFF_0000_0020);
        assert_eq!(ldt.nr_ents(), 32);
        let multi = MmuextOp::new(MmuextCmd::TlbFlushMulti, 0, 0x5000);
        assert_eq!(multi.vcpumask().addr(), 0x5000);
    }

    #[test]
    fn vcpu_info_and_time_layout() {
        assert_eq!(size_of::<VcpuTimeInfo>(), 32);
        assert_eq!(size_of::<VcpuInfo>(), 64);
        assert_eq!(offset_of!(VcpuInfo, evtchn_upcall_mask), 1);
        assert_eq!(offset_of!(VcpuInfo, evtchn_pending_sel), 8);
        assert_eq!(
            offset_of!(VcpuInfo, arch) + offset_of!(ArchVcpuInfo, cr2),
            16
        );
        assert_eq!(offset_of!(VcpuInfo, time), 32);
        assert_eq!(offset_of!(VcpuTimeInfo, tsc_shift), 28);
    }

    #[test]
    fn shared_info_layout_is_3136_bytes() {
        // 32 vcpu_info (2048) + 2 x 64 words of bitmap (1024) + 4 wall-clock
        // words (16) + arch_shared_info (48).
        assert_eq!(size_of::<SharedInfo>(), 3136);
        assert_eq!(offset_of!(SharedInfo, evtchn_pending), 2048);
        assert_eq!(offset_of!(SharedInfo, evtchn_mask), 2560);
        assert_eq!(offset_of!(SharedInfo, wc_version), 3072);
        assert_eq!(offset_of!(SharedInfo, wc_sec_hi), 3084);
        assert_eq!(offset_of!(SharedInfo, arch), 3088);
        assert_eq!(offset_of!(ArchSharedInfo, p2m_generation), 40);
        let s = SharedInfo::zeroed();
        assert_eq!(s, SharedInfo::default());
        let mut s2 = s;
        s2.wc_sec = 1;
        s2.wc_sec_hi = 2;
        assert_eq!(s2.wc_sec_full(), 0x2_0000_0001);
    }

    #[test]
    fn start_info_field_order() {
        assert_eq!(size_of::<StartInfo>(), 1168);
        let offsets = [
            offset_of!(StartInfo, magic),
            offset_of!(StartInfo, nr_pages),
            offset_of!(StartInfo, shared_info),
            offset_of!(StartInfo, flags),
            offset_of!(StartInfo, store_mfn),
            offset_of!(StartInfo, store_evtchn),
            offset_of!(StartInfo, console),
            offset_of!(StartInfo, pt_base),
            offset_of!(StartInfo, nr_pt_frames),
            offset_of!(StartInfo, mfn_list),
            offset_of!(StartInfo, mod_start),
            offset_of!(StartInfo, mod_len),
            offset_of!(StartInfo, cmd_line),
            offset_of!(StartInfo, first_p2m_pfn),
            offset_of!(StartInfo, nr_p2m_frames),
        ];
        assert_eq!(
            offsets,
            [0, 32, 40, 48, 56, 64, 72, 88, 96, 104, 112, 120, 128, 1152, 1160]
        );
        assert_eq!(offset_of!(StartInfoConsoleDomU, evtchn), 8);
        assert_eq!(offset_of!(StartInfoConsoleDom0, info_size), 4);
    }

    #[test]
    fn start_info_magic_console_and_cmdline() {
        let mut si = StartInfo::new();
        assert_eq!(si.magic_bytes(), b"xen-3.0-x86_64");
        si.console = StartInfoConsole {
            dom_u: StartInfoConsoleDomU {
                mfn: 0x1234,
                evtchn: 2,
                pad0: 0,
            },
        };
        assert_eq!(si.console.dom_u().mfn, 0x1234);
        assert_eq!(si.console.dom0().info_off, 0x1234);
        si.console = StartInfoConsole {
            dom0: StartInfoConsoleDom0 {
                info_off: 0x800,
                info_size: 40,
                pad0: [0; 2],
            },
        };
        assert_eq!(si.console.dom0().info_size, 40);
        assert_eq!(si.console.dom_u().evtchn, 0);
        assert_eq!(si.set_cmd_line(b"console=hvc0"), 12);
        assert_eq!(si.cmd_line_bytes(), b"console=hvc0");
        let long = [b'x'; 2000];
        assert_eq!(si.set_cmd_line(&long), MAX_GUEST_CMDLINE - 1);
        assert_eq!(si.cmd_line[MAX_GUEST_CMDLINE - 1], 0);
        assert_eq!(SIF_PRIVILEGED | SIF_INITDOMAIN, 3);
    }

    #[test]
    fn pv_selectors_and_layout_constants() {
        assert_eq!(FLAT_RING3_CS64, 0xe033);
        assert_eq!(FLAT_RING3_CS32, 0xe023);
        assert_eq!(FLAT_RING3_SS64, 0xe02b);
        assert_eq!(FLAT_RING3_DS32, 0xe02b);
        // All three live just above the guest's 14 GDT frames, at RPL 3.
        for sel in [FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64] {
            assert!(usize::from(sel >> 3) >= FIRST_RESERVED_GDT_ENTRY);
            assert_eq!(sel & 3, 3);
        }
        assert_eq!(FLAT_RING3_CS32 >> 3, 7172);
        assert_eq!(FIRST_RESERVED_GDT_ENTRY, 7168);
        assert_eq!(MACH2PHYS_NR_ENTRIES, 0x40_0000_0000 / 8);
        assert_eq!(xen_pfn_to_cr3(0x137), 0x137000);
        assert_eq!(xen_cr3_to_pfn(0x137000), 0x137);
    }

    #[test]
    fn trap_info_iret_and_context_layouts() {
        assert_eq!(size_of::<TrapInfo>(), 16);
        assert_eq!(offset_of!(TrapInfo, address), 8);
        let t = TrapInfo {
            vector: 14,
            flags: 3 | TI_MASK_EVENTS,
            cs: FLAT_KERNEL_CS64,
            pad0: 0,
            address: 0x1000,
        };
        assert_eq!(t.dpl(), 3);
        assert!(t.masks_events());
        assert_eq!(size_of::<IretContext>(), 72);
        assert_eq!(offset_of!(IretContext, flags), 24);
        assert_eq!(offset_of!(IretContext, ss), 64);
        assert_eq!(VGCF_IN_SYSCALL, 0x100);
        assert_eq!(size_of::<CpuUserRegs>(), 200);
        assert_eq!(size_of::<VcpuGuestContext>(), 5168);
        assert_eq!(size_of::<MulticallEntry>(), 64);
    }

    #[test]
    fn version_structs_and_helpers() {
        assert_eq!(size_of::<XenExtraversion>(), 16);
        assert_eq!(size_of::<XenCapabilitiesInfo>(), 1024);
        assert_eq!(size_of::<XenFeatureInfo>(), 8);
        assert_eq!(size_of::<XenPlatformParameters>(), 8);
        assert_eq!(size_of::<XenCompileInfo>(), 144);
        assert_eq!(xen_version_encode(4, 17), 0x0004_0011);
        assert_eq!(xen_version_decode(0x0004_0011), (4, 17));
    }

    #[test]
    fn time_scaling_follows_the_pvclock_formula() {
        let t = VcpuTimeInfo {
            tsc_to_system_mul: 0x8000_0000, // 0.5 ns per shifted tick
            tsc_shift: 1,
            ..VcpuTimeInfo::default()
        };
        assert_eq!(t.scale_delta(1000), 1000);
        let t = VcpuTimeInfo {
            tsc_to_system_mul: 0x8000_0000,
            tsc_shift: -1,
            ..VcpuTimeInfo::default()
        };
        assert_eq!(t.scale_delta(1000), 250);
    }

    #[test]
    fn dom0_console_layout() {
        assert_eq!(size_of::<Dom0VgaConsoleInfo>(), 40);
        assert_eq!(size_of::<XenMultibootModList>(), 16);
    }
}
