//! Hardware-assisted guests (HVM / PVH): the portable half.
//!
//! This module owns everything about running a guest under VT-x (and later AMD-V) that can be
//! written and tested without the hardware: the VMCS vocabulary ([`vmcs`]), decoding of exits
//! ([`exit`]), the instruction decoder for MMIO accesses ([`mmio`]), EPT construction ([`ept`]),
//! the emulated COM1 ([`uart`]), string port I/O ([`string_io`]), the PVH and real-mode domain
//! builder ([`pvh_build`]), the guest's CPUID and MSR model ([`cpuid`], [`msr`]), and the
//! decisions about event upcalls ([`upcall_action`]) and PAE PDPTEs ([`load_pdptes`]). The
//! arch layer (`arch/x86_64/vmx`; an AMD-V backend would sit beside it) holds the `asm!`
//! (VMXON, VMREAD/VMWRITE, VMLAUNCH/VMRESUME); it turns hardware exits into the
//! vendor-neutral [`Exit`] and lets the portable handlers here decide what happens.
//!
//! Section numbers cite the Intel SDM edition in which Vol. 3C chapter 24 is the VMCS, 26 VM
//! entries, 27 VM exits, 28 address translation (28.3 EPT) and 30.4 the VM-instruction error
//! numbers; later editions shift these chapters by one.
//!
//! # How the arch layer uses this
//!
//! A domain is PV or HVM for its whole life. hv's scheduler ([`crate::sched`]) keeps choosing
//! vCPUs by [`crate::sched::pick_next`] without knowing the difference; only the arch layer's
//! "run this vCPU" step branches:
//!
//! - PV vCPU: load its page tables and `iret`/`sysret` to ring 3, as today.
//! - HVM vCPU: the backend's `run_vcpu` enters the guest, decodes each exit into one
//!   [`Exit`] and handles it with the portable pieces (CPUID through [`cpuid::hvm_cpuid`],
//!   MSRs through [`msr::HvmMsrs`], port I/O to COM1 through [`uart::Uart16550`], EPT
//!   violations through [`mmio::decode`], `vmcall` through the same
//!   [`crate::hypercall::dispatch`] as PV with the registers from [`hypercall_frame`]), and
//!   enters again until the exit needs the scheduler: an external interrupt or the
//!   preemption timer (the time slice is over), `hlt` or a blocking hypercall (the vCPU
//!   blocks), or a fatal exit (the domain is crashed, the other domains keep running).
//!
//! hv never mixes guest modes on one physical CPU at the same time: a PV vCPU runs in ring 3
//! outside VMX non-root operation, an HVM vCPU inside it, and switching between them is the
//! ordinary context switch plus `VMPTRLD` of the next VMCS (the VMCS stays current on its CPU
//! until another is loaded; a vCPU that moves to another CPU is `VMCLEAR`ed first).

pub mod cpuid;
pub mod ept;
pub mod exit;
pub mod guest_walk;
pub mod mmio;
pub mod msr;
pub mod pvh_build;
pub mod string_io;
pub mod uart;
pub mod vmcs;

use crate::regs::Regs;

/// A guest frame number: a guest-physical address divided by 4096.
///
/// Distinct from [`Mfn`] so a guest frame can never be passed where a machine frame is meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gfn(pub u64);

impl Gfn {
    /// The frame holding guest-physical address `gpa`.
    pub const fn from_gpa(gpa: u64) -> Gfn {
        Gfn(gpa >> 12)
    }

    /// The guest-physical address of the frame's first byte.
    pub const fn gpa(self) -> u64 {
        self.0 << 12
    }
}

/// The general-purpose registers, numbered as instruction encodings and exit qualifications
/// number them (SDM Vol. 2A 2.1.5, Table 2-2; Vol. 3C Table 27-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Gpr {
    /// RAX (0).
    Rax = 0,
    /// RCX (1).
    Rcx = 1,
    /// RDX (2).
    Rdx = 2,
    /// RBX (3).
    Rbx = 3,
    /// RSP (4): kept in the VMCS / VMCB, not in the saved register block.
    Rsp = 4,
    /// RBP (5).
    Rbp = 5,
    /// RSI (6).
    Rsi = 6,
    /// RDI (7).
    Rdi = 7,
    /// R8.
    R8 = 8,
    /// R9.
    R9 = 9,
    /// R10.
    R10 = 10,
    /// R11.
    R11 = 11,
    /// R12.
    R12 = 12,
    /// R13.
    R13 = 13,
    /// R14.
    R14 = 14,
    /// R15.
    R15 = 15,
}

impl Gpr {
    /// Every register, in encoding order.
    pub const ALL: [Gpr; 16] = [
        Gpr::Rax,
        Gpr::Rcx,
        Gpr::Rdx,
        Gpr::Rbx,
        Gpr::Rsp,
        Gpr::Rbp,
        Gpr::Rsi,
        Gpr::Rdi,
        Gpr::R8,
        Gpr::R9,
        Gpr::R10,
        Gpr::R11,
        Gpr::R12,
        Gpr::R13,
        Gpr::R14,
        Gpr::R15,
    ];

    /// The register with encoding `n`; only the low four bits are used, so every value maps.
    pub const fn from_index(n: u8) -> Gpr {
        Gpr::ALL[(n & 0xf) as usize]
    }

    /// Its encoding, 0..=15.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// The guest's 16 general-purpose registers, indexed by [`Gpr`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gprs(pub [u64; 16]);

impl Gprs {
    /// The value of `r`.
    pub fn get(&self, r: Gpr) -> u64 {
        self.0[r.index() & 0xf]
    }

    /// Sets `r` to `value`.
    pub fn set(&mut self, r: Gpr, value: u64) {
        self.0[r.index() & 0xf] = value;
    }
}

/// Segment attributes in the layout of descriptor bits 40..=55 with bits 8..=11 zero
/// (VMX access rights, SDM Vol. 3C 24.4.1, Table 24-2): type 3:0, S 4, DPL 6:5, P 7, AVL 12,
/// L 13, D/B 14, G 15. SVM packs the same bits into 12 ([`SegmentAttrs::svm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentAttrs(pub u16);

impl SegmentAttrs {
    /// 32-bit flat code: execute/read, accessed, S, DPL 0, present, D, G.
    pub const CODE32: SegmentAttrs = SegmentAttrs(0xc09b);
    /// 32-bit flat data: read/write, accessed, S, DPL 0, present, B, G.
    pub const DATA32: SegmentAttrs = SegmentAttrs(0xc093);
    /// Real-mode code: execute/read, accessed, S, present, 16-bit, byte granular.
    pub const CODE16: SegmentAttrs = SegmentAttrs(0x009b);
    /// Real-mode data: read/write, accessed, S, present, 16-bit, byte granular.
    pub const DATA16: SegmentAttrs = SegmentAttrs(0x0093);
    /// A busy 32-bit TSS (type 11), present.
    pub const TSS32_BUSY: SegmentAttrs = SegmentAttrs(0x008b);

    /// The VMX access-rights word (bit 16, "unusable", is 0).
    pub const fn vmx(self) -> u32 {
        (self.0 & 0xf0ff) as u32
    }

    /// The SVM VMCB attribute word: bits 7:0 as above, bits 11:8 = AVL, L, D/B, G.
    pub const fn svm(self) -> u16 {
        (self.0 & 0xff) | ((self.0 >> 4) & 0xf00)
    }
}

/// A segment register as the hardware holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentState {
    /// Selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit in bytes (already scaled by G).
    pub limit: u32,
    /// Attributes; `None` marks the register unusable (VMX AR bit 16; a null LDTR).
    pub attrs: Option<SegmentAttrs>,
}

impl SegmentState {
    /// A register marked unusable.
    pub const UNUSABLE: SegmentState = SegmentState {
        selector: 0,
        base: 0,
        limit: 0,
        attrs: None,
    };

    /// The VMX access-rights value: the attributes, or bit 16 (unusable).
    pub const fn vmx_access_rights(&self) -> u32 {
        match self.attrs {
            Some(a) => a.vmx(),
            None => 1 << 16,
        }
    }
}

/// A descriptor-table register (GDTR / IDTR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableReg {
    /// Base address.
    pub base: u64,
    /// Limit.
    pub limit: u16,
}

/// The architectural state a vCPU starts with, as the builder chooses it and the backend
/// loads it into the VMCS / VMCB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuStartState {
    /// General-purpose registers (RSP included).
    pub gprs: Gprs,
    /// Instruction pointer.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// CR0 as the guest sees it.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 as the guest sees it.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// CS.
    pub cs: SegmentState,
    /// DS.
    pub ds: SegmentState,
    /// ES.
    pub es: SegmentState,
    /// SS.
    pub ss: SegmentState,
    /// FS.
    pub fs: SegmentState,
    /// GS.
    pub gs: SegmentState,
    /// TR.
    pub tr: SegmentState,
    /// LDTR.
    pub ldtr: SegmentState,
    /// GDTR.
    pub gdtr: TableReg,
    /// IDTR.
    pub idtr: TableReg,
}

/// The code size the guest executes with (for instruction decoding): CR0.PE, EFER.LMA, CS.L
/// and CS.D decide it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// Real mode, virtual-8086 mode, or a 16-bit protected-mode code segment.
    Bits16,
    /// A 32-bit protected-mode (or compatibility-mode) code segment.
    Bits32,
    /// 64-bit mode (EFER.LMA and CS.L).
    Bits64,
}

impl CpuMode {
    /// The mode from CR0.PE, EFER.LMA and the CS attributes (SDM Vol. 3A 5.2.1).
    pub const fn from_state(cr0: u64, efer: u64, cs: SegmentAttrs) -> CpuMode {
        const CR0_PE: u64 = 1;
        const EFER_LMA: u64 = 1 << 10;
        if cr0 & CR0_PE == 0 {
            CpuMode::Bits16
        } else if efer & EFER_LMA != 0 && cs.0 & (1 << 13) != 0 {
            CpuMode::Bits64
        } else if cs.0 & (1 << 14) != 0 {
            CpuMode::Bits32
        } else {
            CpuMode::Bits16
        }
    }
}

/// An event to deliver to the guest at the next entry (SDM Vol. 3C 24.8.3; APM EVENTINJ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A hardware exception (vector 0..=31) with its error code, if it has one.
    Exception {
        /// Vector.
        vector: u8,
        /// Error code (#DF, #TS, #NP, #SS, #GP, #PF, #AC).
        error_code: Option<u32>,
    },
    /// An external interrupt (the event-channel upcall vector).
    Interrupt(u8),
    /// A non-maskable interrupt.
    Nmi,
}

impl Event {
    /// #UD.
    pub const UD: Event = Event::Exception {
        vector: 6,
        error_code: None,
    };
    /// #GP(0).
    pub const GP0: Event = Event::Exception {
        vector: 13,
        error_code: Some(0),
    };
}

/// Direction of a port or memory access, from the guest's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The guest reads (`in`, a load).
    Read,
    /// The guest writes (`out`, a store).
    Write,
}

/// What a guest access to guest-physical memory was (EPT violation / nested page fault).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpaAccess {
    /// A data read.
    pub read: bool,
    /// A data write.
    pub write: bool,
    /// An instruction fetch.
    pub fetch: bool,
}

/// Why the guest stopped running: the vendor-neutral form of a VM exit / #VMEXIT.
///
/// The backend decodes its hardware exit (for VT-x with [`exit`]) into this; everything that
/// needs no hardware is handled from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// An external interrupt arrived for hv (timer, IPI, device); the guest is intact.
    ExternalInterrupt,
    /// The preemption timer (or hv's LAPIC timer) ended the time slice.
    Preempted,
    /// The guest can take an interrupt now (interrupt-window exiting was requested).
    InterruptWindow,
    /// `cpuid`; leaf in EAX, subleaf in ECX.
    Cpuid,
    /// `hlt`.
    Hlt,
    /// `vmcall` / `vmmcall`: a hypercall.
    Hypercall,
    /// An instruction the guest's CPUID says it lacks (VMX, SMX, SGX): #UD.
    HiddenInstruction,
    /// `rdmsr`; index in ECX.
    Rdmsr,
    /// `wrmsr`; index in ECX, value in EDX:EAX.
    Wrmsr,
    /// Port I/O.
    Io(exit::IoQualification),
    /// A control-register access that hv intercepts.
    CrAccess(exit::CrQualification),
    /// An access to guest-physical memory the nested tables do not allow.
    GpaFault {
        /// The guest-physical address.
        gpa: u64,
        /// What the access was.
        access: GpaAccess,
    },
    /// An exception hv intercepts (exception bitmap).
    Exception {
        /// Vector.
        vector: u8,
        /// Error code, if the exception has one.
        error_code: Option<u32>,
    },
    /// The guest triple-faulted (shutdown): the domain is crashed.
    TripleFault,
    /// INIT arrived: the domain is crashed (hv does not model a reset).
    Init,
    /// VM entry failed; the domain is crashed and the reason logged.
    EntryFailed(exit::EntryFailure),
    /// Any other exit: the vendor's raw reason, for the log; the domain is crashed.
    Unhandled(u32),
}

/// The hypercall in an HVM guest's registers, as the frame [`crate::hypercall::dispatch`]
/// reads (RAX = number; RDI, RSI, RDX, R10, R8 = arguments). A 64-bit guest passes them in
/// exactly those registers; a 32-bit guest passes EAX and EBX, ECX, EDX, ESI, EDI (Xen's HVM
/// ABI), zero-extended here. Hypercalls from 16-bit code are refused (`None`).
pub fn hypercall_frame(gprs: &Gprs, mode: CpuMode) -> Option<Regs> {
    let g = |r| gprs.get(r);
    let w = |r| gprs.get(r) & 0xffff_ffff;
    match mode {
        CpuMode::Bits64 => Some(Regs {
            rax: g(Gpr::Rax),
            rdi: g(Gpr::Rdi),
            rsi: g(Gpr::Rsi),
            rdx: g(Gpr::Rdx),
            r10: g(Gpr::R10),
            r8: g(Gpr::R8),
            ..Regs::default()
        }),
        CpuMode::Bits32 => Some(Regs {
            rax: w(Gpr::Rax),
            rdi: w(Gpr::Rbx),
            rsi: w(Gpr::Rcx),
            rdx: w(Gpr::Rdx),
            r10: w(Gpr::Rsi),
            r8: w(Gpr::Rdi),
            ..Regs::default()
        }),
        CpuMode::Bits16 => None,
    }
}

/// Puts a hypercall's result (`frame.rax` after dispatch) into the guest's RAX; a 32-bit
/// guest gets the low 32 bits in EAX.
pub fn complete_hypercall(gprs: &mut Gprs, mode: CpuMode, frame: &Regs) {
    let rax = match mode {
        CpuMode::Bits64 => frame.rax,
        CpuMode::Bits32 | CpuMode::Bits16 => frame.rax & 0xffff_ffff,
    };
    gprs.set(Gpr::Rax, rax);
}

/// What to do before entering an HVM guest about its event-channel upcall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpcallAction {
    /// Nothing pending (or no callback vector): enter as is.
    Nothing,
    /// Inject the callback vector as an external interrupt now.
    Inject(u8),
    /// The guest cannot take it yet (RFLAGS.IF clear, an STI or MOV-SS shadow, or another
    /// event being injected): ask for an interrupt-window exit and decide again then.
    Wait,
}

/// Xen's vector callback (`HVM_PARAM_CALLBACK_IRQ` of the vector type): while vCPU 0's
/// `evtchn_upcall_pending` is set, the vector is raised whenever the guest can take an
/// interrupt. The guest's handler clears the flag before it scans the bitmaps, and needs no
/// EOI (there is no emulated local APIC behind it). `evtchn_upcall_mask` is the PV mask and
/// is not consulted, as in Xen.
///
/// `rflags` and `interruptibility` are the guest's (VMCS interruptibility-state bits 0-1:
/// blocking by STI, by MOV SS); `injecting` is whether an event is already queued for entry.
pub fn upcall_action(
    vector: Option<u8>,
    upcall_pending: bool,
    rflags: u64,
    interruptibility: u32,
    injecting: bool,
) -> UpcallAction {
    const RFLAGS_IF: u64 = 1 << 9;
    match vector {
        Some(v) if upcall_pending => {
            if rflags & RFLAGS_IF != 0 && interruptibility & 3 == 0 && !injecting {
                UpcallAction::Inject(v)
            } else {
                UpcallAction::Wait
            }
        }
        _ => UpcallAction::Nothing,
    }
}

/// Bits of a PAE page-directory-pointer-table entry that must be 0 when it is present
/// (SDM Vol. 3A 4.4.1: bits 2:1, 8:5 and 63:52; hv's guests have at most 52 physical bits).
const PDPTE_RESERVED: u64 = 0xfff0_0000_0000_01e6;

/// The VMX-preemption timer value for about `tsc_ticks` of guest time: the timer counts down
/// once every 2^`shift` TSC ticks (`shift` is IA32_VMX_MISC bits 4:0; SDM Vol. 3C,
/// "VMX-Preemption Timer") and exits when it reaches 0. At least 1 (0 would exit before the
/// first instruction), at most what the 32-bit field holds.
pub fn preemption_timer_value(tsc_ticks: u64, shift: u8) -> u32 {
    (tsc_ticks >> shift.min(63)).clamp(1, u64::from(u32::MAX)) as u32
}

/// Whether a guest with these control registers uses PAE paging outside long mode, where
/// the CPU takes the four PDPTEs from the VMCS on VM entry (SDM Vol. 3C 26.3.2.4) and hv
/// must load them whenever the guest changes CR0, CR3 or CR4.
pub fn pae_legacy_paging(cr0: u64, cr4: u64, efer: u64) -> bool {
    const CR0_PG: u64 = 1 << 31;
    const CR4_PAE: u64 = 1 << 5;
    const EFER_LMA: u64 = 1 << 10;
    cr0 & CR0_PG != 0 && cr4 & CR4_PAE != 0 && efer & EFER_LMA == 0
}

/// The four PDPTEs at `cr3` (bits 31:5 of it, SDM Vol. 3A 4.4.1), as a `mov` to CR3 in PAE
/// mode loads them; `None` (the guest takes #GP) if one cannot be read or a present one has
/// reserved bits set.
pub fn load_pdptes(cr3: u64, mem: &impl guest_walk::GuestPhysRead) -> Option<[u64; 4]> {
    let base = cr3 & 0xffff_ffe0;
    let mut out = [0u64; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        let e = mem.read_u64(base + 8 * i as u64)?;
        if e & 1 != 0 && e & PDPTE_RESERVED != 0 {
            return None;
        }
        *slot = e;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn upcalls_wait_for_the_guest_to_take_interrupts() {
        use super::{upcall_action, UpcallAction::*};
        const IF: u64 = 0x202;
        assert_eq!(upcall_action(Some(0xf3), true, IF, 0, false), Inject(0xf3));
        assert_eq!(upcall_action(Some(0xf3), false, IF, 0, false), Nothing);
        assert_eq!(upcall_action(None, true, IF, 0, false), Nothing);
        assert_eq!(
            upcall_action(Some(0xf3), true, 0x2, 0, false),
            Wait,
            "IF clear"
        );
        assert_eq!(
            upcall_action(Some(0xf3), true, IF, 1, false),
            Wait,
            "STI shadow"
        );
        assert_eq!(
            upcall_action(Some(0xf3), true, IF, 2, false),
            Wait,
            "MOV SS"
        );
        assert_eq!(
            upcall_action(Some(0xf3), true, IF, 4, false),
            Inject(0xf3),
            "SMI"
        );
        assert_eq!(upcall_action(Some(0xf3), true, IF, 0, true), Wait, "busy");
    }

    #[test]
    fn pdptes_load_from_cr3_and_reserved_bits_refuse() {
        use super::{load_pdptes, pae_legacy_paging};
        struct Mem(std::collections::HashMap<u64, u64>);
        impl super::guest_walk::GuestPhysRead for Mem {
            fn read_u64(&self, gpa: u64) -> Option<u64> {
                self.0.get(&gpa).copied()
            }
        }
        let mut m = Mem((0..4)
            .map(|i| (0x5000 + 8 * i, 0x7001 + i * 0x1000))
            .collect());
        // CR3's low 5 bits and bits above 31 are not part of the table's address.
        assert_eq!(
            load_pdptes(0x1_0000_501f, &m),
            Some([0x7001, 0x8001, 0x9001, 0xa001])
        );
        // A not-present entry may hold anything; a present one may not set reserved bits.
        m.0.insert(0x5008, 0xffff_ffff_ffff_fffe);
        assert!(load_pdptes(0x5000, &m).is_some());
        m.0.insert(0x5008, 0x8001 | 1 << 63);
        assert_eq!(load_pdptes(0x5000, &m), None);
        m.0.insert(0x5008, 0x8001 | 1 << 1);
        assert_eq!(load_pdptes(0x5000, &m), None);
        m.0.remove(&0x5018);
        m.0.insert(0x5008, 0x8001);
        assert_eq!(load_pdptes(0x5000, &m), None, "unreadable table");

        assert!(pae_legacy_paging(0x8000_0011, 0x20, 0));
        assert!(!pae_legacy_paging(0x8000_0011, 0x20, 0x500), "long mode");
        assert!(!pae_legacy_paging(0x8000_0011, 0x10, 0), "32-bit paging");
        assert!(!pae_legacy_paging(0x11, 0x20, 0), "paging off");
    }

    use super::*;

    #[test]
    fn gfn_and_gpr_conversions() {
        assert_eq!(Gfn::from_gpa(0x1234_5fff), Gfn(0x12345));
        assert_eq!(Gfn(0x12345).gpa(), 0x1234_5000);
        for (i, r) in Gpr::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(Gpr::from_index(i as u8), *r);
        }
        assert_eq!(Gpr::from_index(0x13), Gpr::Rbx);
        let mut g = Gprs::default();
        g.set(Gpr::R13, 7);
        assert_eq!(g.get(Gpr::R13), 7);
        assert_eq!(g.0[13], 7);
    }

    #[test]
    fn hypercall_registers_by_mode() {
        let mut g = Gprs::default();
        for (i, r) in Gpr::ALL.iter().enumerate() {
            g.set(*r, 0xaaaa_0000_0000_0000 | i as u64);
        }
        let f = hypercall_frame(&g, CpuMode::Bits64).unwrap();
        assert_eq!(f.rax, 0xaaaa_0000_0000_0000);
        assert_eq!(
            (f.rdi, f.rsi, f.rdx),
            (g.get(Gpr::Rdi), g.get(Gpr::Rsi), g.get(Gpr::Rdx))
        );
        assert_eq!((f.r10, f.r8), (g.get(Gpr::R10), g.get(Gpr::R8)));
        let f = hypercall_frame(&g, CpuMode::Bits32).unwrap();
        assert_eq!(
            (f.rax, f.rdi, f.rsi, f.rdx, f.r10, f.r8),
            (0, 3, 1, 2, 6, 7)
        );
        assert_eq!(hypercall_frame(&g, CpuMode::Bits16), None);
        let done = Regs {
            rax: (-38i64) as u64,
            ..Regs::default()
        };
        complete_hypercall(&mut g, CpuMode::Bits32, &done);
        assert_eq!(g.get(Gpr::Rax), 0xffff_ffda);
        complete_hypercall(&mut g, CpuMode::Bits64, &done);
        assert_eq!(g.get(Gpr::Rax), (-38i64) as u64);
    }

    #[test]
    fn segment_attribute_encodings() {
        assert_eq!(SegmentAttrs::CODE32.vmx(), 0xc09b);
        assert_eq!(SegmentAttrs::CODE32.svm(), 0xc9b);
        assert_eq!(SegmentAttrs::DATA32.svm(), 0xc93);
        assert_eq!(SegmentAttrs::TSS32_BUSY.svm(), 0x8b);
        assert_eq!(SegmentState::UNUSABLE.vmx_access_rights(), 0x1_0000);
        // Bits 8..=11 of the descriptor word are not attributes and never reach the VMCS.
        assert_eq!(SegmentAttrs(0xcf9b).vmx(), 0xc09b);
    }

    #[test]
    fn cpu_mode_from_state() {
        let code64 = SegmentAttrs(0xa09b);
        assert_eq!(CpuMode::from_state(0x10, 0, code64), CpuMode::Bits16);
        assert_eq!(
            CpuMode::from_state(0x11, 0, SegmentAttrs::CODE32),
            CpuMode::Bits32
        );
        assert_eq!(
            CpuMode::from_state(0x11, 0, SegmentAttrs::CODE16),
            CpuMode::Bits16
        );
        assert_eq!(
            CpuMode::from_state(0x8000_0011, 0x500, code64),
            CpuMode::Bits64
        );
        // Compatibility mode: LMA set, CS.L clear.
        assert_eq!(
            CpuMode::from_state(0x8000_0011, 0x500, SegmentAttrs::CODE32),
            CpuMode::Bits32
        );
    }

    #[test]
    fn preemption_timer_counts_in_scaled_tsc_ticks() {
        // 10 ms at 1 GHz, counting every 2^5 TSC ticks: 10^7 / 32.
        assert_eq!(preemption_timer_value(10_000_000, 5), 312_500);
        assert_eq!(preemption_timer_value(10_000, 0), 10_000);
        // Never 0, never more than the field holds.
        assert_eq!(preemption_timer_value(0, 0), 1);
        assert_eq!(preemption_timer_value(31, 5), 1);
        assert_eq!(preemption_timer_value(u64::MAX, 0), u32::MAX);
        assert_eq!(preemption_timer_value(u64::MAX, 200), 1);
    }
}
