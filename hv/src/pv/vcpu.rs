//! One PV vCPU's guest-visible state and the frame manipulations Xen's ABI specifies.

use crate::mm::guest_access::{read_obj, Fault, GuestMem};
use crate::mm::pv::VcpuMm;
use crate::mm::Mfn;
use crate::regs::{is_canonical, rflags, Regs};
use hypercall_abi::xen::{
    IretContext, VcpuInfo, FLAT_KERNEL_CS64, FLAT_KERNEL_SS64, FLAT_RING3_CS32, FLAT_RING3_CS64,
    FLAT_RING3_SS64, HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START, VGCF_IN_SYSCALL,
};

/// `trap_info.flags`: DPL in bits 0-1, bit 2 masks events on delivery.
const TI_MASK_EVENTS: u8 = 1 << 2;

/// One entry of the guest's virtual IDT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapEntry {
    /// Handler address (0 = none).
    pub address: u64,
    /// DPL: the lowest privilege that may raise the vector with `int N`.
    pub dpl: u8,
    /// Deliver with event upcalls masked.
    pub mask_events: bool,
}

/// A registered callback (event, failsafe, syscall, NMI).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Callback {
    /// Entry address (0 = none).
    pub address: u64,
    /// Mask event upcalls when entering it.
    pub mask_events: bool,
}

/// Why a request to change guest state was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// An address is non-canonical or inside Xen's reserved range.
    BadAddress,
    /// A selector or value the guest may not use.
    BadValue,
}

/// Whether a guest may run code or keep a stack at `addr`.
pub fn guest_address_ok(addr: u64) -> bool {
    is_canonical(addr) && !(HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END).contains(&addr)
}

/// A PV vCPU's state beyond its registers.
#[derive(Clone, Debug)]
pub struct PvVcpu {
    /// Running the guest kernel (true) or guest user code (false).
    pub kernel_mode: bool,
    /// The virtual IDT.
    pub traps: [TrapEntry; 256],
    /// Event upcall entry.
    pub event_callback: Callback,
    /// Entered when hv cannot deliver to the guest's own frame.
    pub failsafe_callback: Callback,
    /// Entry for `syscall` from guest user mode.
    pub syscall_callback: Callback,
    /// NMI entry.
    pub nmi_callback: Callback,
    /// Entry for `syscall` from 32-bit guest user code (recorded; hv runs no 32-bit code, so
    /// a compatibility-mode `syscall` is delivered as #UD).
    pub syscall32_callback: Callback,
    /// Entry for `sysenter` (recorded, as above).
    pub sysenter_callback: Callback,
    /// Guest kernel stack used when an exception interrupts guest user mode (`stack_switch`).
    pub kernel_sp: u64,
    /// Its stack segment.
    pub kernel_ss: u64,
    /// Page-table roots, GDT and LDT (kept by `mm::pv`, which validates every change).
    pub mm: VcpuMm,
    /// FS base.
    pub fs_base: u64,
    /// GS base while in guest kernel mode.
    pub gs_base_kernel: u64,
    /// GS base while in guest user mode.
    pub gs_base_user: u64,
    /// CR0.TS as the guest set it (`fpu_taskswitch`).
    pub cr0_ts: bool,
}

impl Default for PvVcpu {
    fn default() -> Self {
        Self::new()
    }
}

impl PvVcpu {
    /// A vCPU that will enter the guest kernel (its roots are set through `mm::pv`).
    pub fn new() -> Self {
        Self {
            kernel_mode: true,
            traps: [TrapEntry::default(); 256],
            event_callback: Callback::default(),
            failsafe_callback: Callback::default(),
            syscall_callback: Callback::default(),
            nmi_callback: Callback::default(),
            syscall32_callback: Callback::default(),
            sysenter_callback: Callback::default(),
            kernel_sp: 0,
            kernel_ss: 0,
            mm: VcpuMm::new(),
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
            cr0_ts: false,
        }
    }

    /// The page-table root the current mode runs on.
    pub fn active_root(&self) -> Option<Mfn> {
        if self.kernel_mode {
            self.mm.kernel_root()
        } else {
            self.mm.user_root()
        }
    }

    /// The GS base the current mode runs with.
    pub fn active_gs_base(&self) -> u64 {
        if self.kernel_mode {
            self.gs_base_kernel
        } else {
            self.gs_base_user
        }
    }

    /// Sets one virtual IDT entry from the guest's `trap_info`.
    pub fn set_trap(&mut self, vector: u8, flags: u8, address: u64) -> Result<(), StateError> {
        if address != 0 && !guest_address_ok(address) {
            return Err(StateError::BadAddress);
        }
        self.traps[usize::from(vector)] = TrapEntry {
            address,
            dpl: flags & 3,
            mask_events: flags & TI_MASK_EVENTS != 0,
        };
        Ok(())
    }

    /// Writes a bounce frame for an exception or callback onto the guest kernel stack and
    /// points `regs` at `target`, as Xen's `create_bounce_frame` does.
    ///
    /// From guest user mode this switches to guest kernel mode (its root, GS base and the
    /// stack set with `stack_switch`). The frame, low to high: rcx, r11, [error code], rip,
    /// cs (RPL 0 for guest kernel mode, with the saved upcall mask in bits 32-39), rflags (IF
    /// standing for the virtual interrupt flag), rsp, ss. A fault writing it is returned: the
    /// caller crashes the domain.
    pub fn bounce(
        &mut self,
        regs: &mut Regs,
        info: &mut VcpuInfo,
        mem: &mut (impl GuestMem + ?Sized),
        target: u64,
        error_code: Option<u64>,
        mask_events: bool,
    ) -> Result<(), Fault> {
        if !guest_address_ok(target) || target == 0 {
            return Err(Fault);
        }
        let saved_mask = info.evtchn_upcall_mask;
        let was_kernel = self.kernel_mode;
        if !was_kernel {
            mem.switch_to_kernel();
        }
        let mut sp = if was_kernel { regs.rsp } else { self.kernel_sp };
        sp &= !0xf;
        let cs = if was_kernel {
            regs.cs & !3
        } else {
            regs.cs | 3
        };
        let flags = (regs.rflags & !rflags::IF) | if saved_mask == 0 { rflags::IF } else { 0 };
        let mut frame = [0u64; 8];
        let mut n = 0;
        let mut push = |v: u64| {
            frame[n] = v;
            n += 1;
        };
        push(regs.rcx);
        push(regs.r11);
        if let Some(e) = error_code {
            push(e);
        }
        push(regs.rip);
        push(cs | (u64::from(saved_mask) << 32));
        push(flags);
        push(regs.rsp);
        push(regs.ss);
        let bytes = n as u64 * 8;
        sp = sp.checked_sub(bytes).ok_or(Fault)?;
        if !guest_address_ok(sp) {
            return Err(Fault);
        }
        // One copy for the whole frame (the words in memory order).
        let mut bytes = [0u8; 64];
        for (chunk, v) in bytes.chunks_exact_mut(8).zip(&frame[..n]) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        mem.write(sp, &bytes[..n * 8])?;
        if !was_kernel {
            self.kernel_mode = true;
        }
        if mask_events {
            info.evtchn_upcall_mask = 1;
        }
        regs.rip = target;
        regs.cs = u64::from(FLAT_KERNEL_CS64);
        regs.ss = u64::from(FLAT_KERNEL_SS64);
        regs.rsp = sp;
        regs.rflags &= !(rflags::TF | rflags::VM | rflags::RF | rflags::NT | rflags::AC);
        regs.force_iret();
        Ok(())
    }

    /// Delivers guest exception `vector` through the virtual IDT. `Err` when the guest has
    /// no handler or the frame cannot be written: the domain is then crashed.
    pub fn deliver_exception(
        &mut self,
        regs: &mut Regs,
        info: &mut VcpuInfo,
        mem: &mut (impl GuestMem + ?Sized),
        vector: u8,
        error_code: Option<u64>,
    ) -> Result<(), Fault> {
        let t = self.traps[usize::from(vector)];
        if t.address == 0 {
            return Err(Fault);
        }
        self.bounce(regs, info, mem, t.address, error_code, t.mask_events)
    }

    /// `syscall` from guest user mode: enter the guest kernel's syscall callback with a
    /// frame like an exception's (no error code). The guest returns with `iret` and
    /// `VGCF_in_syscall`.
    pub fn deliver_syscall(
        &mut self,
        regs: &mut Regs,
        info: &mut VcpuInfo,
        mem: &mut (impl GuestMem + ?Sized),
    ) -> Result<(), Fault> {
        let cb = self.syscall_callback;
        if cb.address == 0 {
            return Err(Fault);
        }
        self.bounce(regs, info, mem, cb.address, None, cb.mask_events)
    }

    /// The `iret` hypercall: restores the context the guest saved on its stack (at `regs.rsp`,
    /// where the hypercall stub pushed rax, r11 and rcx) and returns to it, switching to
    /// guest user mode when the saved CS has RPL 3.
    pub fn iret(
        &mut self,
        regs: &mut Regs,
        info: &mut VcpuInfo,
        mem: &mut (impl GuestMem + ?Sized),
    ) -> Result<(), IretError> {
        let ctx: IretContext = read_obj(mem, regs.rsp).map_err(|_| IretError::Fault)?;
        // Only the selector's 16 bits count (a bounce frame keeps the upcall mask above them).
        let cs = (ctx.cs & 0xffff) | 3;
        let ss = (ctx.ss & 0xffff) | 3;
        if !guest_address_ok(ctx.rip)
            || !guest_address_ok(ctx.rsp)
            || (cs != u64::from(FLAT_RING3_CS64) && cs != u64::from(FLAT_RING3_CS32))
            || ss != u64::from(FLAT_RING3_SS64)
        {
            log::warn!(
                "iret: refused rip {:#x} cs {:#x} rflags {:#x} rsp {:#x} ss {:#x}",
                ctx.rip,
                ctx.cs,
                ctx.rflags,
                ctx.rsp,
                ctx.ss
            );
            return Err(IretError::BadContext);
        }
        let to_user = ctx.cs & 3 == 3;
        // (the saved mask in bits 32-39 is ignored: the virtual IF in rflags decides)
        if to_user {
            if self.mm.user_root().is_none() {
                return Err(IretError::NoUserRoot);
            }
            self.kernel_mode = false;
        }
        regs.rip = ctx.rip;
        regs.cs = cs;
        regs.rsp = ctx.rsp;
        regs.ss = ss;
        // The guest's IF is virtual (the upcall mask); the real IF stays set, IOPL stays 0.
        regs.rflags =
            (ctx.rflags & !(rflags::IOPL | rflags::VM | rflags::NT)) | rflags::IF | rflags::FIXED;
        info.evtchn_upcall_mask = u8::from(ctx.rflags & rflags::IF == 0);
        if ctx.flags & VGCF_IN_SYSCALL == 0 {
            regs.r11 = ctx.r11;
            regs.rcx = ctx.rcx;
        }
        regs.rax = ctx.rax;
        regs.force_iret();
        Ok(())
    }
}

/// Why an `iret` hypercall failed (the domain is crashed, as on Xen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IretError {
    /// The saved context could not be read.
    Fault,
    /// The saved context names an address or selector the guest may not use.
    BadContext,
    /// Return to user mode without a user page-table root.
    NoUserRoot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::guest_access::{write_obj, FakeGuestMem};

    const STACK: u64 = 0x20_0000;

    fn setup() -> (PvVcpu, Regs, VcpuInfo, FakeGuestMem) {
        let mut v = PvVcpu::new();
        v.mm = VcpuMm::with_roots(Some(Mfn(0x1234)), Some(Mfn(0x5678)));
        v.set_trap(14, 0, 0x10_0100).unwrap();
        v.set_trap(3, 3 | TI_MASK_EVENTS, 0x10_0200).unwrap();
        v.kernel_sp = STACK - 0x100;
        let regs = Regs {
            rip: 0x10_1000,
            cs: u64::from(FLAT_RING3_CS64),
            rflags: 0x202,
            rsp: STACK - 0x800 + 8,
            ss: u64::from(FLAT_RING3_SS64),
            rcx: 0xc,
            r11: 0x11,
            rax: 0xa,
            ..Regs::default()
        };
        (
            v,
            regs,
            VcpuInfo::default(),
            FakeGuestMem::new(STACK - 0x1000, 0x1000),
        )
    }

    fn word(m: &mut FakeGuestMem, at: u64) -> u64 {
        read_obj::<u64>(m, at).unwrap()
    }

    #[test]
    fn kernel_mode_page_fault_frame() {
        let (mut v, mut r, mut info, mut m) = setup();
        let old = r;
        v.deliver_exception(&mut r, &mut info, &mut m, 14, Some(2))
            .unwrap();
        // 16-byte aligned, then eight words.
        let sp = (old.rsp & !0xf) - 64;
        assert_eq!(r.rsp, sp);
        assert_eq!(r.rip, 0x10_0100);
        assert_eq!(r.cs, u64::from(FLAT_KERNEL_CS64));
        let words: Vec<u64> = (0..8).map(|i| word(&mut m, sp + i * 8)).collect();
        assert_eq!(
            words,
            vec![0xc, 0x11, 2, old.rip, (old.cs & !3), 0x202, old.rsp, old.ss]
        );
        assert_eq!(info.evtchn_upcall_mask, 0);
        assert!(v.kernel_mode);
    }

    #[test]
    fn user_mode_exception_switches_to_the_kernel_stack_and_masks() {
        let (mut v, mut r, mut info, mut m) = setup();
        v.kernel_mode = false;
        info.evtchn_upcall_mask = 0;
        v.deliver_exception(&mut r, &mut info, &mut m, 3, None)
            .unwrap();
        assert!(v.kernel_mode);
        assert_eq!(r.rsp, STACK - 0x100 - 56);
        assert_eq!(info.evtchn_upcall_mask, 1);
        // cs slot keeps RPL 3 for a user-mode interruption; saved mask 0.
        assert_eq!(word(&mut m, r.rsp + 24), u64::from(FLAT_RING3_CS64));
    }

    #[test]
    fn saved_mask_travels_in_the_cs_slot_and_if_is_virtual() {
        let (mut v, mut r, mut info, mut m) = setup();
        info.evtchn_upcall_mask = 1;
        v.deliver_exception(&mut r, &mut info, &mut m, 3, None)
            .unwrap();
        assert_eq!(word(&mut m, r.rsp + 24) >> 32, 1);
        assert_eq!(word(&mut m, r.rsp + 32) & rflags::IF, 0);
    }

    #[test]
    fn missing_handler_or_unwritable_stack_is_a_fault() {
        let (mut v, mut r, mut info, mut m) = setup();
        assert_eq!(
            v.deliver_exception(&mut r, &mut info, &mut m, 6, None),
            Err(Fault)
        );
        r.rsp = 0x100;
        assert_eq!(
            v.deliver_exception(&mut r, &mut info, &mut m, 14, Some(0)),
            Err(Fault)
        );
    }

    #[test]
    fn iret_round_trip_to_user_mode() {
        let (mut v, mut r, mut info, mut m) = setup();
        let at = STACK - 0x200;
        let ctx = IretContext {
            rax: 1,
            r11: 2,
            rcx: 3,
            flags: 0,
            rip: 0x40_0000,
            cs: u64::from(FLAT_RING3_CS64),
            rflags: 0x3202,
            rsp: 0x50_0000,
            ss: u64::from(FLAT_RING3_SS64),
        };
        write_obj(&mut m, at, &ctx).unwrap();
        r.rsp = at;
        v.iret(&mut r, &mut info, &mut m).unwrap();
        assert!(!v.kernel_mode);
        assert_eq!(
            (r.rax, r.r11, r.rcx, r.rip, r.rsp),
            (1, 2, 3, 0x40_0000, 0x50_0000)
        );
        assert_eq!(r.rflags & rflags::IOPL, 0, "IOPL is never granted");
        assert_eq!(info.evtchn_upcall_mask, 0);
        assert_eq!(v.active_root(), Some(Mfn(0x5678)));
    }

    #[test]
    fn iret_rejects_bad_contexts() {
        let (mut v, mut r, mut info, mut m) = setup();
        let at = STACK - 0x200;
        r.rsp = at;
        let good = IretContext {
            rip: 0x40_0000,
            cs: u64::from(FLAT_RING3_CS64),
            rsp: 0x50_0000,
            ss: u64::from(FLAT_RING3_SS64),
            ..IretContext::default()
        };
        for bad in [
            IretContext {
                rip: 0x8000_0000_0000,
                ..good
            },
            IretContext {
                rip: HYPERVISOR_VIRT_START + 0x1000,
                ..good
            },
            IretContext { cs: 0x10, ..good },
            IretContext { ss: 0, ..good },
        ] {
            write_obj(&mut m, at, &bad).unwrap();
            assert_eq!(
                v.iret(&mut r, &mut info, &mut m),
                Err(IretError::BadContext)
            );
        }
        v.mm = VcpuMm::with_roots(Some(Mfn(0x1234)), None);
        write_obj(&mut m, at, &good).unwrap();
        assert_eq!(
            v.iret(&mut r, &mut info, &mut m),
            Err(IretError::NoUserRoot)
        );
        r.rsp = 0x10;
        assert_eq!(v.iret(&mut r, &mut info, &mut m), Err(IretError::Fault));
    }

    #[test]
    fn trap_addresses_are_checked() {
        let mut v = PvVcpu::new();
        assert_eq!(
            v.set_trap(1, 0, HYPERVISOR_VIRT_START),
            Err(StateError::BadAddress)
        );
        assert_eq!(
            v.set_trap(1, 0, 0x8000_0000_0000),
            Err(StateError::BadAddress)
        );
        assert!(v.set_trap(1, 0, 0).is_ok());
    }
}
