//! Guest-side hypercall wrappers.
//!
//! A guest issues hypercalls by calling the 32-byte stub for hypercall `N` at
//! `page + N * 32` in its hypercall page. The convention is the same whether
//! the stub uses `syscall` (PV), `vmcall` (Intel HVM) or `vmmcall` (AMD HVM):
//! arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`; the result in `rax`
//! (negative Xen errno on failure); `rcx` and `r11` may be clobbered. Xen
//! may also rewrite argument registers (debug builds deliberately poison
//! unused ones, and continuations update them), so every argument register
//! is treated as clobbered too.
//!
//! The raw `hypercallN` functions are `unsafe`. The typed wrappers are safe
//! when the hypercall can only read or write the structures passed by
//! reference; those that change the guest's memory, control flow or
//! interrupt delivery stay `unsafe` with their requirements documented.

use core::arch::asm;

use crate::callback::{CallbackOp, CallbackRegister};
use crate::errno::{ret_to_result, HypercallError};
use crate::event_channel::{EvtchnOpArg, EvtchnPort};
use crate::grant_table::GnttabOp;
use crate::hvm::{HvmOp, XenHvmParam};
use crate::memory::MemoryOp;
use crate::physdev::PhysdevOp;
use crate::sched::{SchedOp, SchedPoll, SchedShutdown, ShutdownReason};
use crate::vcpu::{VcpuOp, VcpuSetSingleshotTimer};
use crate::xen::{
    ConsoleIoCmd, Hypercall, MmuUpdate, MmuextOp, TrapInfo, VmAssistCmd, VmAssistType,
    XenCapabilitiesInfo, XenExtraversion, XenFeatureInfo, XenPlatformParameters, XenVersionCmd,
    DOMID_SELF, HYPERCALL_STUB_SIZE,
};
use crate::{DomId, GuestHandle};

/// Result of a typed hypercall wrapper: the non-negative return value or the
/// error.
pub type HypercallResult = Result<u64, HypercallError>;

/// The guest's hypercall page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallPage {
    base: usize,
}

/// Address of a structure the hypervisor only reads.
fn addr_of<T: ?Sized>(r: &T) -> u64 {
    r as *const T as *const u8 as usize as u64
}

/// Address of a structure the hypervisor may write: derived from a unique
/// reference so that writes through it are permitted.
fn addr_mut<T: ?Sized>(r: &mut T) -> u64 {
    r as *mut T as *mut u8 as usize as u64
}

impl HypercallPage {
    /// Wraps the hypercall page mapped at virtual address `base`.
    ///
    /// # Safety
    ///
    /// `base` must be the page-aligned address of a page, executable in the
    /// current address space, that the hypervisor has filled with hypercall
    /// stubs (via the `XEN_ELFNOTE_HYPERCALL_PAGE` note for PV guests or the
    /// hypercall MSR for HVM guests), and it must stay mapped and unchanged
    /// for as long as this value is used.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    /// The page's virtual address.
    pub const fn base(&self) -> usize {
        self.base
    }

    /// Whether the page looks filled: the hypervisor never leaves a `ret`
    /// (0xc3) as a stub's first byte, while an unfilled page guests prepare
    /// conventionally starts with one.
    ///
    /// # Safety
    ///
    /// `base` must be readable (it is after a successful [`HypercallPage::new`]).
    pub unsafe fn is_filled(&self) -> bool {
        // SAFETY: the caller guarantees the page is mapped and readable.
        unsafe { core::ptr::read_volatile(self.base as *const u8) != 0xc3 }
    }

    fn stub(&self, nr: Hypercall) -> usize {
        self.base + nr as usize * HYPERCALL_STUB_SIZE
    }

    /// Issues hypercall `nr` with no arguments.
    ///
    /// # Safety
    ///
    /// The hypercall's effects (on memory the hypervisor may write, the
    /// address space, control flow and event delivery) must be sound for the
    /// caller; see Xen's documentation of `nr`.
    pub unsafe fn hypercall0(&self, nr: Hypercall) -> i64 {
        // SAFETY: the caller vouches for the hypercall's effects; the stub
        // (guaranteed by `new`) follows the convention the operands describe.
        unsafe { self.hypercall5(nr, 0, 0, 0, 0, 0) }
    }

    /// Issues hypercall `nr` with one argument.
    ///
    /// # Safety
    ///
    /// As for [`HypercallPage::hypercall0`]; pointer arguments must be valid
    /// for the accesses the hypercall makes.
    pub unsafe fn hypercall1(&self, nr: Hypercall, a1: u64) -> i64 {
        // SAFETY: forwarded to the caller's contract.
        unsafe { self.hypercall5(nr, a1, 0, 0, 0, 0) }
    }

    /// Issues hypercall `nr` with two arguments.
    ///
    /// # Safety
    ///
    /// As for [`HypercallPage::hypercall1`].
    pub unsafe fn hypercall2(&self, nr: Hypercall, a1: u64, a2: u64) -> i64 {
        // SAFETY: forwarded to the caller's contract.
        unsafe { self.hypercall5(nr, a1, a2, 0, 0, 0) }
    }

    /// Issues hypercall `nr` with three arguments.
    ///
    /// # Safety
    ///
    /// As for [`HypercallPage::hypercall1`].
    pub unsafe fn hypercall3(&self, nr: Hypercall, a1: u64, a2: u64, a3: u64) -> i64 {
        // SAFETY: forwarded to the caller's contract.
        unsafe { self.hypercall5(nr, a1, a2, a3, 0, 0) }
    }

    /// Issues hypercall `nr` with four arguments.
    ///
    /// # Safety
    ///
    /// As for [`HypercallPage::hypercall1`].
    pub unsafe fn hypercall4(&self, nr: Hypercall, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
        // SAFETY: forwarded to the caller's contract.
        unsafe { self.hypercall5(nr, a1, a2, a3, a4, 0) }
    }

    /// Issues hypercall `nr` with five arguments.
    ///
    /// # Safety
    ///
    /// As for [`HypercallPage::hypercall1`]. `nr` must not be
    /// [`Hypercall::Iret`], whose stub does not return.
    pub unsafe fn hypercall5(
        &self,
        nr: Hypercall,
        a1: u64,
        a2: u64,
        a3: u64,
        a4: u64,
        a5: u64,
    ) -> i64 {
        let stub = self.stub(nr);
        let ret: i64;
        // SAFETY: `stub` is the entry of hypercall `nr` in a filled hypercall
        // page (guaranteed by `new`). The stub takes its arguments in
        // rdi/rsi/rdx/r10/r8, returns in rax, may clobber rcx and r11 and the
        // argument registers, and preserves everything else; it uses the
        // stack (so no `nostack`) and the hypervisor may read or write memory
        // (so no `nomem`). The caller vouches for the hypercall's effects.
        unsafe {
            asm!(
                "call {stub}",
                stub = in(reg) stub,
                lateout("rax") ret,
                inlateout("rdi") a1 => _,
                inlateout("rsi") a2 => _,
                inlateout("rdx") a3 => _,
                inlateout("r10") a4 => _,
                inlateout("r8") a5 => _,
                out("rcx") _,
                out("r11") _,
            );
        }
        ret
    }

    // -----------------------------------------------------------------------
    // Typed wrappers.

    /// `XENVER_version`: the hypervisor's (major, minor) version.
    pub fn xen_version(&self) -> Result<(u16, u16), HypercallError> {
        // SAFETY: XENVER_version takes no buffer and has no side effects.
        let ret =
            unsafe { self.hypercall2(Hypercall::XenVersion, XenVersionCmd::Version as u64, 0) };
        ret_to_result(ret).map(|v| crate::xen::xen_version_decode(v as u32))
    }

    /// `XENVER_extraversion`.
    pub fn xen_version_extraversion(&self, out: &mut XenExtraversion) -> HypercallResult {
        // SAFETY: the hypervisor writes exactly one `XenExtraversion` to `out`.
        ret_to_result(unsafe {
            self.hypercall2(
                Hypercall::XenVersion,
                XenVersionCmd::Extraversion as u64,
                addr_mut(out),
            )
        })
    }

    /// `XENVER_capabilities`.
    pub fn xen_version_capabilities(&self, out: &mut XenCapabilitiesInfo) -> HypercallResult {
        // SAFETY: the hypervisor writes exactly one `XenCapabilitiesInfo` to `out`.
        ret_to_result(unsafe {
            self.hypercall2(
                Hypercall::XenVersion,
                XenVersionCmd::Capabilities as u64,
                addr_mut(out),
            )
        })
    }

    /// `XENVER_platform_parameters`.
    pub fn xen_version_platform_parameters(
        &self,
        out: &mut XenPlatformParameters,
    ) -> HypercallResult {
        // SAFETY: the hypervisor writes exactly one `XenPlatformParameters` to `out`.
        ret_to_result(unsafe {
            self.hypercall2(
                Hypercall::XenVersion,
                XenVersionCmd::PlatformParameters as u64,
                addr_mut(out),
            )
        })
    }

    /// `XENVER_get_features`: fills `info.submap` for `info.submap_idx`.
    pub fn xen_version_get_features(&self, info: &mut XenFeatureInfo) -> HypercallResult {
        // SAFETY: the hypervisor reads and writes one `XenFeatureInfo` at `info`.
        ret_to_result(unsafe {
            self.hypercall2(
                Hypercall::XenVersion,
                XenVersionCmd::GetFeatures as u64,
                addr_mut(info),
            )
        })
    }

    /// `console_io(CONSOLEIO_write)`: writes `bytes` to the hypervisor console.
    pub fn console_io_write(&self, bytes: &[u8]) -> Result<(), HypercallError> {
        for chunk in bytes.chunks(u32::MAX as usize) {
            // SAFETY: the hypervisor reads `chunk.len()` bytes from `chunk`.
            ret_to_result(unsafe {
                self.hypercall3(
                    Hypercall::ConsoleIo,
                    ConsoleIoCmd::Write as u64,
                    chunk.len() as u64,
                    addr_of(chunk),
                )
            })?;
        }
        Ok(())
    }

    /// `console_io(CONSOLEIO_read)`: reads up to `buf.len()` bytes (at most
    /// 2 GiB); returns the count read.
    pub fn console_io_read(&self, buf: &mut [u8]) -> HypercallResult {
        let len = buf.len().min(i32::MAX as usize);
        // SAFETY: the hypervisor writes at most `len` bytes into `buf`.
        ret_to_result(unsafe {
            self.hypercall3(
                Hypercall::ConsoleIo,
                ConsoleIoCmd::Read as u64,
                len as u64,
                addr_mut(buf),
            )
        })
    }

    /// `SCHEDOP_yield`.
    pub fn sched_op_yield(&self) -> HypercallResult {
        // SAFETY: yielding has no memory effects.
        ret_to_result(unsafe { self.hypercall2(Hypercall::SchedOp, SchedOp::Yield as u64, 0) })
    }

    /// `SCHEDOP_block`: waits for an event; unmasks event delivery, so the
    /// event upcall may run before this returns.
    pub fn sched_op_block(&self) -> HypercallResult {
        // SAFETY: blocking has no memory effects; an upcall that runs is an
        // ordinary asynchronous event the guest has registered for.
        ret_to_result(unsafe { self.hypercall2(Hypercall::SchedOp, SchedOp::Block as u64, 0) })
    }

    /// `SCHEDOP_shutdown`: stops the domain (returns only for `Suspend`, or on
    /// error).
    pub fn sched_op_shutdown(&self, reason: ShutdownReason) -> HypercallResult {
        let arg = SchedShutdown {
            reason: reason.raw(),
        };
        // SAFETY: the hypervisor reads one `SchedShutdown` from `arg`.
        ret_to_result(unsafe {
            self.hypercall2(Hypercall::SchedOp, SchedOp::Shutdown as u64, addr_of(&arg))
        })
    }

    /// `SCHEDOP_poll`: waits until one of `ports` is pending or the absolute
    /// system time `timeout` (0 = none) passes.
    pub fn sched_op_poll(&self, ports: &[EvtchnPort], timeout: u64) -> HypercallResult {
        let nr_ports = u32::try_from(ports.len())
            .map_err(|_| HypercallError::Errno(crate::errno::Errno::EINVAL))?;
        let arg = SchedPoll {
            ports: GuestHandle::from_ptr(ports.as_ptr()),
            nr_ports,
            pad0: 0,
            timeout,
        };
        // SAFETY: the hypervisor reads `arg` and `nr_ports` ports from `ports`.
        ret_to_result(unsafe {
            self.hypercall2(Hypercall::SchedOp, SchedOp::Poll as u64, addr_of(&arg))
        })
    }

    /// `set_timer_op`: one-shot timer at absolute system time `deadline_ns`
    /// (0 cancels); delivered as `VIRQ_TIMER`.
    pub fn set_timer_op(&self, deadline_ns: u64) -> HypercallResult {
        // SAFETY: arming a timer has no memory effects.
        ret_to_result(unsafe { self.hypercall1(Hypercall::SetTimerOp, deadline_ns) })
    }

    /// `event_channel_op` with the sub-command implied by `op`'s type.
    pub fn event_channel_op<T: EvtchnOpArg>(&self, op: &mut T) -> HypercallResult {
        // SAFETY: the hypervisor reads and writes one `T` at `op`, the
        // structure belonging to `T::CMD`; event-channel operations change
        // no guest memory beyond it and the shared-info bitmaps the guest
        // already treats as hypervisor-written.
        ret_to_result(unsafe {
            self.hypercall2(Hypercall::EventChannelOp, T::CMD as u64, addr_mut(op))
        })
    }

    /// `memory_op(cmd, arg)`.
    ///
    /// # Safety
    ///
    /// `arg` must be the structure `cmd` expects, every guest handle in it
    /// must be valid for the accesses the operation makes, and the change to
    /// the guest's memory (pages given away, remapped or populated) must be
    /// sound for the caller.
    pub unsafe fn memory_op<T>(&self, cmd: MemoryOp, arg: &mut T) -> HypercallResult {
        // SAFETY: forwarded to the caller's contract.
        ret_to_result(unsafe { self.hypercall2(Hypercall::MemoryOp, cmd as u64, addr_mut(arg)) })
    }

    /// `grant_table_op(cmd, ops, ops.len())`.
    ///
    /// # Safety
    ///
    /// `T` must be the structure `cmd` expects, guest handles in it must be
    /// valid, and any mapping created or removed must be sound for the caller.
    pub unsafe fn grant_table_op<T>(&self, cmd: GnttabOp, ops: &mut [T]) -> HypercallResult {
        // SAFETY: forwarded to the caller's contract.
        ret_to_result(unsafe {
            self.hypercall3(
                Hypercall::GrantTableOp,
                cmd as u64,
                addr_mut(ops),
                ops.len() as u64,
            )
        })
    }

    /// `HVMOP_get_param` for the calling domain.
    pub fn hvm_get_param(&self, index: crate::hvm::HvmParam) -> Result<u64, HypercallError> {
        let mut p = XenHvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index: index.raw(),
            value: 0,
        };
        // SAFETY: the hypervisor reads and writes one `XenHvmParam` at `p`.
        ret_to_result(unsafe {
            self.hypercall2(Hypercall::HvmOp, HvmOp::GetParam as u64, addr_mut(&mut p))
        })?;
        Ok(p.value)
    }

    /// `HVMOP_set_param` for the calling domain.
    ///
    /// # Safety
    ///
    /// The parameter's effect must be sound for the caller; e.g. setting
    /// `HVM_PARAM_CALLBACK_IRQ` starts interrupt delivery at the given vector,
    /// which must have a handler.
    pub unsafe fn hvm_set_param(&self, index: crate::hvm::HvmParam, value: u64) -> HypercallResult {
        let p = XenHvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index: index.raw(),
            value,
        };
        // SAFETY: the hypervisor reads one `XenHvmParam`; the caller vouches
        // for the parameter's effect.
        ret_to_result(unsafe {
            self.hypercall2(Hypercall::HvmOp, HvmOp::SetParam as u64, addr_of(&p))
        })
    }

    /// `vcpu_op(cmd, vcpu, arg)`.
    ///
    /// # Safety
    ///
    /// `arg` must be the structure `cmd` expects (its contents are ignored by
    /// commands without an argument), and the effect must be sound: e.g.
    /// `VCPUOP_register_vcpu_info` makes the hypervisor write to the given
    /// frame from then on, and `VCPUOP_initialise`/`VCPUOP_up` start code.
    pub unsafe fn vcpu_op<T>(&self, cmd: VcpuOp, vcpu: u32, arg: &mut T) -> HypercallResult {
        // SAFETY: forwarded to the caller's contract.
        ret_to_result(unsafe {
            self.hypercall3(
                Hypercall::VcpuOp,
                cmd as u64,
                u64::from(vcpu),
                addr_mut(arg),
            )
        })
    }

    /// `VCPUOP_set_singleshot_timer`.
    pub fn vcpu_set_singleshot_timer(
        &self,
        vcpu: u32,
        timer: &VcpuSetSingleshotTimer,
    ) -> HypercallResult {
        // SAFETY: the hypervisor reads one `VcpuSetSingleshotTimer`.
        ret_to_result(unsafe {
            self.hypercall3(
                Hypercall::VcpuOp,
                VcpuOp::SetSingleshotTimer as u64,
                u64::from(vcpu),
                addr_of(timer),
            )
        })
    }

    /// `VCPUOP_stop_singleshot_timer`.
    pub fn vcpu_stop_singleshot_timer(&self, vcpu: u32) -> HypercallResult {
        // SAFETY: no argument and no memory effects.
        ret_to_result(unsafe {
            self.hypercall3(
                Hypercall::VcpuOp,
                VcpuOp::StopSingleshotTimer as u64,
                u64::from(vcpu),
                0,
            )
        })
    }

    /// `CALLBACKOP_register`.
    ///
    /// # Safety
    ///
    /// `cb.address` must be an entry point able to handle the callback's
    /// frame for as long as it stays registered.
    pub unsafe fn callback_register(&self, cb: &CallbackRegister) -> HypercallResult {
        // SAFETY: the hypervisor reads one `CallbackRegister`; the caller
        // vouches for the entry point.
        ret_to_result(unsafe {
            self.hypercall2(
                Hypercall::CallbackOp,
                CallbackOp::Register as u64,
                addr_of(cb),
            )
        })
    }

    /// `set_trap_table`; `traps` must end with an entry whose address is 0.
    ///
    /// # Safety
    ///
    /// Every handler must be able to handle its exception frame.
    pub unsafe fn set_trap_table(&self, traps: &[TrapInfo]) -> HypercallResult {
        // SAFETY: the hypervisor reads entries up to the terminator, which
        // the caller provides; the caller vouches for the handlers.
        ret_to_result(unsafe { self.hypercall1(Hypercall::SetTrapTable, addr_of(traps)) })
    }

    /// `stack_switch`: the kernel stack used on entry from user mode.
    ///
    /// # Safety
    ///
    /// `ss:rsp` must be a valid kernel stack.
    pub unsafe fn stack_switch(&self, ss: u64, rsp: u64) -> HypercallResult {
        // SAFETY: forwarded to the caller's contract.
        ret_to_result(unsafe { self.hypercall2(Hypercall::StackSwitch, ss, rsp) })
    }

    /// `mmu_update`: applies `reqs`; returns through `done` how many succeeded.
    ///
    /// # Safety
    ///
    /// The page-table changes must be sound for the caller.
    pub unsafe fn mmu_update(
        &self,
        reqs: &[MmuUpdate],
        done: Option<&mut u32>,
        foreigndom: DomId,
    ) -> HypercallResult {
        let done_ptr = done.map_or(0, addr_mut);
        // SAFETY: the hypervisor reads `reqs.len()` entries and writes one
        // `u32` at `done_ptr` if non-null; the caller vouches for the changes.
        ret_to_result(unsafe {
            self.hypercall4(
                Hypercall::MmuUpdate,
                addr_of(reqs),
                reqs.len() as u64,
                done_ptr,
                u64::from(foreigndom),
            )
        })
    }

    /// `mmuext_op`: applies `ops`; returns through `done` how many succeeded.
    ///
    /// # Safety
    ///
    /// The operations (pinning, base pointer switches, flushes with vCPU
    /// bitmaps) must be sound for the caller.
    pub unsafe fn mmuext_op(
        &self,
        ops: &[MmuextOp],
        done: Option<&mut u32>,
        foreigndom: DomId,
    ) -> HypercallResult {
        let done_ptr = done.map_or(0, addr_mut);
        // SAFETY: as for `mmu_update`.
        ret_to_result(unsafe {
            self.hypercall4(
                Hypercall::MmuextOp,
                addr_of(ops),
                ops.len() as u64,
                done_ptr,
                u64::from(foreigndom),
            )
        })
    }

    /// `update_va_mapping`: sets the PTE for `va` to `pte`, flushing per
    /// `UVMF_*` `flags`.
    ///
    /// # Safety
    ///
    /// The mapping change must be sound for the caller.
    pub unsafe fn update_va_mapping(&self, va: u64, pte: u64, flags: u64) -> HypercallResult {
        // SAFETY: forwarded to the caller's contract.
        ret_to_result(unsafe { self.hypercall3(Hypercall::UpdateVaMapping, va, pte, flags) })
    }

    /// `vm_assist`.
    ///
    /// # Safety
    ///
    /// The guest must be prepared for the assist's changed behaviour (e.g.
    /// writable page tables change how PTE writes fault).
    pub unsafe fn vm_assist(&self, cmd: VmAssistCmd, kind: VmAssistType) -> HypercallResult {
        // SAFETY: forwarded to the caller's contract.
        ret_to_result(unsafe { self.hypercall2(Hypercall::VmAssist, cmd as u64, kind as u64) })
    }

    /// `physdev_op(cmd, arg)`.
    ///
    /// # Safety
    ///
    /// `arg` must be the structure `cmd` expects, with valid guest handles,
    /// and the effect must be sound for the caller.
    pub unsafe fn physdev_op<T>(&self, cmd: PhysdevOp, arg: &mut T) -> HypercallResult {
        // SAFETY: forwarded to the caller's contract.
        ret_to_result(unsafe { self.hypercall2(Hypercall::PhysdevOp, cmd as u64, addr_mut(arg)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A fake hypercall page for the host: slot N loads N into eax and jumps
    // to a routine that returns (N << 40) + a1 + 2*a2 + 3*a3 + 4*a4 + 5*a5
    // and then scribbles over rcx, r11 and every argument register, as the
    // real stubs and hypervisor are allowed to.
    #[cfg(target_os = "linux")]
    core::arch::global_asm!(
        ".pushsection .text.hypercall_abi_fake_page, \"ax\"",
        ".balign 4096",
        ".globl hypercall_abi_fake_page",
        "hypercall_abi_fake_page:",
        ".set slot, 0",
        ".rept 128",
        "  mov eax, slot",
        "  jmp 2f",
        "  .balign 32, 0xcc",
        "  .set slot, slot + 1",
        ".endr",
        "2:",
        "  shl rax, 40",
        "  add rax, rdi",
        "  lea rax, [rax + 2 * rsi]",
        "  lea rax, [rax + 2 * rdx]",
        "  add rax, rdx",
        "  lea rax, [rax + 4 * r10]",
        "  lea rax, [rax + 4 * r8]",
        "  add rax, r8",
        "  mov rcx, -1",
        "  mov r11, -1",
        "  mov rdi, -1",
        "  mov rsi, -1",
        "  mov rdx, -1",
        "  mov r10, -1",
        "  mov r8, -1",
        "  ret",
        ".popsection",
    );

    #[cfg(target_os = "linux")]
    extern "C" {
        static hypercall_abi_fake_page: u8;
    }

    #[cfg(target_os = "linux")]
    fn fake_page() -> HypercallPage {
        let base = core::ptr::addr_of!(hypercall_abi_fake_page) as usize;
        // SAFETY: the fake page holds 128 executable 32-byte stubs following
        // the hypercall convention, in the test binary's text section.
        unsafe { HypercallPage::new(base) }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn calls_reach_slot_n_with_arguments_in_order() {
        let page = fake_page();
        assert_eq!(page.base() % 4096, 0);
        // SAFETY: the fake stubs touch no memory.
        let r = unsafe { page.hypercall5(Hypercall::ConsoleIo, 1, 10, 100, 1000, 10000) };
        assert_eq!(r, (18 << 40) + 1 + 20 + 300 + 4000 + 50000);
        // SAFETY: as above.
        let r = unsafe { page.hypercall0(Hypercall::Arch7) };
        assert_eq!(r, 55 << 40);
        // SAFETY: as above.
        let r = unsafe { page.hypercall3(Hypercall::SetTrapTable, 7, 0, 1) };
        assert_eq!(r, 7 + 3);
        // SAFETY: the fake page is readable.
        assert!(unsafe { page.is_filled() });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn typed_wrappers_decode_results() {
        let page = fake_page();
        // The fake returns (17 << 40) + XENVER_version (0): major 0, minor 0
        // once truncated to 32 bits.
        assert_eq!(page.xen_version(), Ok((0, 0)));
        // set_timer_op (15) with a deadline of 5: (15 << 40) + 5.
        assert_eq!(page.set_timer_op(5), Ok((15 << 40) + 5));
    }

    #[test]
    fn stub_addresses_are_32_bytes_apart() {
        // SAFETY: the page is never called or read in this test.
        let page = unsafe { HypercallPage::new(0x10_0000) };
        assert_eq!(page.base(), 0x10_0000);
        assert_eq!(page.stub(Hypercall::SetTrapTable), 0x10_0000);
        assert_eq!(page.stub(Hypercall::ConsoleIo), 0x10_0000 + 18 * 32);
        assert_eq!(page.stub(Hypercall::Arch7), 0x10_0000 + 55 * 32);
        assert!(Hypercall::ALL
            .iter()
            .all(|&h| (h as usize) < crate::xen::HYPERCALL_PAGE_SLOTS));
    }

    #[test]
    fn is_filled_checks_the_first_byte() {
        #[repr(align(4096))]
        struct Page([u8; 4096]);
        let mut p = Page([0xc3; 4096]);
        // SAFETY: the page is a live local; it is only read, never called.
        let page = unsafe { HypercallPage::new(p.0.as_ptr() as usize) };
        // SAFETY: `p` is mapped and readable for the duration of the call.
        assert!(!unsafe { page.is_filled() });
        p.0[0] = 0x51;
        // SAFETY: `p` has been re-borrowed for the new base; still readable.
        let page = unsafe { HypercallPage::new(p.0.as_ptr() as usize) };
        // SAFETY: as above.
        assert!(unsafe { page.is_filled() });
    }
}
