//! Hypercall dispatch: number -> handler, one file per ABI group.
//!
//! Handlers see the calling domain and vCPU, the caller's registers, its memory (through
//! the fault-safe [`GuestMem`]) and the few machine services in [`Platform`]. They return
//! `Result<i64, Errno>`; the Xen errno becomes the negative return value here, at the
//! boundary, and nowhere else. Handlers that change how the vCPU continues (yield, block,
//! shutdown, `iret`) say so with an [`Outcome`].

mod console;
mod domctl;
pub mod event;
mod hvm;
mod memory;
mod multicall;
mod sched;
mod sysctl;
mod traps;
mod vcpu;
mod version;

use crate::domain::state::{Domain, Peers};
use crate::mm::guest_access::{field, read_obj, Fault, GuestMem};
use crate::regs::Regs;
use hypercall_abi::errno::Errno;
use hypercall_abi::grant_table::GnttabOp;
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::{Hypercall, DOMID_SELF};
use hypercall_abi::DomId;

/// Machine services hypercalls use.
pub trait Platform {
    /// System time: nanoseconds since hv booted.
    fn now_ns(&self) -> u64;
    /// Prints one line of a domain's console output, prefixed `(dN)` with `prefix`; `None`:
    /// the line already carries its prefix (the control domain relaying a domU's console).
    fn console_line(&mut self, prefix: Option<DomId>, line: &[u8]);
    /// The highest machine frame number with RAM.
    fn max_mfn(&self) -> u64;
    /// RAM frames hv manages (free, hv's own and the domains').
    fn total_pages(&self) -> u64;
    /// Frames free now.
    fn free_pages(&self) -> u64;
    /// The CPU's (TSC's) frequency in kHz.
    fn cpu_khz(&self) -> u32;
    /// The machine's memory map as the firmware gave it: (start, length, E820 type).
    fn machine_memory_map(&self) -> alloc::vec::Vec<(u64, u64, u32)>;
    /// Allocates `2^order` scrubbed, contiguous frames to domain `domid`; the first one.
    fn alloc_frames(&mut self, domid: DomId, order: u32) -> Option<u64>;
    /// Takes frame `mfn` back from domain `domid` if it owns it and nothing references it.
    fn release_frame(&mut self, domid: DomId, mfn: u64) -> bool;
    /// The machine-to-phys entry of `mfn`.
    fn m2p(&self, mfn: u64) -> u64;
    /// Sets the machine-to-phys entry of `mfn`.
    fn set_m2p(&mut self, mfn: u64, pfn: u64);
    /// Page-table and descriptor-table operations (`mmu_update`, `update_va_mapping`,
    /// `mmuext_op`, `set_gdt`), which need the frame table and physical memory.
    fn mmu(
        &mut self,
        dom: &mut Domain,
        vcpu: usize,
        call: MmuCall,
        mem: &mut dyn GuestMem,
    ) -> Result<MmuDone, Errno>;
    /// `grant_table_op(cmd, uop, count)`, which needs the frame table, physical memory and
    /// the grant tables of every domain.
    fn grant_table_op(
        &mut self,
        dom: &mut Domain,
        vcpu: usize,
        cmd: u64,
        uop: u64,
        count: u64,
        mem: &mut dyn GuestMem,
    ) -> Result<i64, Errno>;
    /// Places `space`'s page `idx` (already checked: shared info 0, or a grant-table frame)
    /// at guest frame `gpfn` of HVM domain `dom`, replacing what was there.
    fn add_to_physmap(
        &mut self,
        dom: &mut Domain,
        space: hypercall_abi::memory::XenMapSpace,
        idx: u64,
        gpfn: u64,
    ) -> Result<(), Errno>;
}

/// How far a batched page-table call got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuDone {
    /// Every request was carried out.
    Finished,
    /// `processed` requests were carried out and `remaining` are left: the call continues
    /// as a hypercall continuation (`Flow::Again`) with the count flagged [`PREEMPTED`].
    Preempted {
        /// Requests done in this step.
        processed: u64,
        /// Requests still to do.
        remaining: u64,
    },
}

/// Set in a batch count when the call is a continuation of a preempted one (Xen's
/// `MMU_UPDATE_PREEMPTED`): the count done so far is in the guest's `done` variable.
pub const PREEMPTED: u64 = 1 << 31;

/// Makes the vCPU re-issue hypercall `nr` with its list (first argument) advanced past
/// `processed` entries of `size` bytes and its count (second argument) set to `count`, as Xen's
/// hypercall continuations do: RIP goes back over the 2-byte `syscall`, so the guest re-enters
/// hv at once, with interrupts (and so preemption) possible in between.
pub(crate) fn continuation(regs: &mut Regs, nr: u64, processed: u64, size: u64, count: u64) {
    let list = regs.rdi.wrapping_add(processed * size);
    restart(regs, nr, list, count);
}

/// Makes the vCPU re-issue hypercall `nr` with first two arguments `arg0` and `arg1`.
fn restart(regs: &mut Regs, nr: u64, arg0: u64, arg1: u64) {
    regs.rdi = arg0;
    regs.rsi = arg1;
    regs.rax = nr;
    regs.rip = regs.rip.wrapping_sub(2);
    regs.force_iret();
}

/// A page-table hypercall with its raw arguments.
#[derive(Clone, Copy, Debug)]
pub enum MmuCall {
    /// `mmu_update(reqs, count, done, domid)`.
    Update {
        /// Guest address of the requests.
        reqs: u64,
        /// Number of requests.
        count: u64,
        /// Guest address for the count done (0: none).
        done: u64,
        /// Target domain.
        domid: u64,
    },
    /// `update_va_mapping(va, pte, flags)`.
    UpdateVa {
        /// Virtual address.
        va: u64,
        /// New L1 entry.
        pte: u64,
        /// `UVMF_*`.
        flags: u64,
    },
    /// `mmuext_op(ops, count, done, domid)`.
    Ext {
        /// Guest address of the operations.
        ops: u64,
        /// Number of operations.
        count: u64,
        /// Guest address for the count done (0: none).
        done: u64,
        /// Target domain.
        domid: u64,
    },
    /// `set_gdt(frames, entries)`.
    SetGdt {
        /// Guest address of the frame list.
        frames: u64,
        /// Number of descriptors.
        entries: u64,
    },
}

/// How the vCPU continues after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Return to the caller (RAX holds the result).
    Continue,
    /// `SCHEDOP_yield`: let others run first.
    Yield,
    /// `SCHEDOP_block` / `SCHEDOP_poll`: the vCPU stopped; schedule another.
    Block,
    /// The domain shut itself down.
    Shutdown(ShutdownReason),
    /// The domain must be crashed (what it asked for cannot be done safely).
    Crash(&'static str),
    /// Return to the caller once domain `id` (never the caller) has been destroyed
    /// (`XEN_DOMCTL_destroydomain`): the arch layer stops it and releases what it holds.
    Destroy(DomId),
}

/// A hypercall in progress.
pub struct Ctx<'a> {
    /// The calling domain.
    pub dom: &'a mut Domain,
    /// The calling vCPU's index.
    pub vcpu: usize,
    /// The calling vCPU's registers (the live frame).
    pub regs: &'a mut Regs,
    /// The caller's memory.
    pub mem: &'a mut dyn GuestMem,
    /// Machine services.
    pub hw: &'a mut dyn Platform,
    /// The other domains.
    pub peers: Peers<'a>,
    /// The caller runs 32-bit code (an HVM guest outside long mode): its structures use
    /// Xen's compat layouts, where longs, guest handles and frame numbers are 32 bits wide
    /// and 64-bit fields are only 4-byte aligned. Handlers whose structures differ read
    /// them so ([`compat_words`]) or refuse with `ENOSYS`.
    pub compat: bool,
}

/// Reads `N` little-endian 32-bit words at `arg` (a compat structure's fields, in order).
pub(crate) fn compat_words<const N: usize>(
    mem: &mut dyn GuestMem,
    arg: u64,
) -> Result<[u32; N], Fault> {
    let mut words = [0u32; N];
    for (i, w) in words.iter_mut().enumerate() {
        *w = read_obj::<u32>(mem, field(arg, 4 * i as u64)?)?;
    }
    Ok(words)
}

/// A handler's result: a value for RAX, or a Xen errno.
pub type HcResult = Result<i64, Errno>;

impl From<Fault> for Errno {
    fn from(_: Fault) -> Self {
        Errno::EFAULT
    }
}

/// Per-call control for handlers that do more than return a value.
pub(crate) enum Flow {
    /// Return `HcResult` in RAX.
    Value(HcResult),
    /// Return `HcResult` in RAX, then continue as the outcome says.
    Then(HcResult, Outcome),
    /// The handler rewrote the registers (`iret`); continue as the outcome says.
    Regs(Outcome),
    /// The call stopped partway: it goes on as hypercall `nr` with its first two arguments
    /// now `arg0` and `arg1` (a continuation). `dispatch` makes the vCPU re-issue it; a
    /// multicall stores them in the entry and continues the batch from that entry.
    Again {
        /// The hypercall.
        nr: u64,
        /// Its new first argument (the list, advanced past what was done).
        arg0: u64,
        /// Its new second argument (the count left, flagged [`PREEMPTED`]).
        arg1: u64,
    },
}

impl From<HcResult> for Flow {
    fn from(r: HcResult) -> Self {
        Flow::Value(r)
    }
}

/// A handler's result as the guest's RAX.
pub(super) fn to_rax(r: HcResult) -> u64 {
    match r {
        Ok(v) => v as u64,
        Err(e) => e.as_ret() as u64,
    }
}

/// Handles the hypercall in the caller's registers (RAX = number; RDI, RSI, RDX, R10, R8).
pub fn dispatch(ctx: &mut Ctx<'_>) -> Outcome {
    let r = &*ctx.regs;
    let (nr, args) = (r.rax, [r.rdi, r.rsi, r.rdx, r.r10, r.r8]);
    match call(ctx, nr, args, false) {
        Flow::Value(v) => {
            ctx.regs.rax = to_rax(v);
            Outcome::Continue
        }
        Flow::Then(v, outcome) => {
            ctx.regs.rax = to_rax(v);
            outcome
        }
        Flow::Regs(outcome) => outcome,
        Flow::Again { nr, arg0, arg1 } => {
            restart(ctx.regs, nr, arg0, arg1);
            Outcome::Continue
        }
    }
}

/// Hypercalls an HVM guest may make; the rest only make sense for PV guests.
fn hvm_allowed(op: Hypercall) -> bool {
    matches!(
        op,
        Hypercall::XenVersion
            | Hypercall::ConsoleIo
            | Hypercall::SchedOp
            | Hypercall::SetTimerOp
            | Hypercall::EventChannelOp
            | Hypercall::MemoryOp
            | Hypercall::GrantTableOp
            | Hypercall::VcpuOp
            | Hypercall::HvmOp
    )
}

/// Runs one hypercall; `in_multicall` forbids what a batch may not contain.
pub(crate) fn call(ctx: &mut Ctx<'_>, nr: u64, a: [u64; 5], in_multicall: bool) -> Flow {
    let Ok(op) = Hypercall::try_from(nr) else {
        return Flow::Value(Err(Errno::ENOSYS));
    };
    if ctx.dom.hvm.is_some() && !hvm_allowed(op) {
        return Flow::Value(Err(Errno::ENOSYS));
    }
    match op {
        Hypercall::XenVersion => version::xen_version(ctx, a[0], a[1]).into(),
        Hypercall::ConsoleIo => console::console_io(ctx, a[0], a[1], a[2]).into(),
        Hypercall::SchedOp => sched::sched_op(ctx, a[0], a[1]),
        Hypercall::SetTimerOp => sched::set_timer_op(ctx, a[0]).into(),
        Hypercall::EventChannelOp => event::event_channel_op(ctx, a[0], a[1]),
        Hypercall::SetTrapTable => traps::set_trap_table(ctx, a[0]).into(),
        Hypercall::SetCallbacks => traps::set_callbacks(ctx, a[0], a[1], a[2]).into(),
        Hypercall::CallbackOp => traps::callback_op(ctx, a[0], a[1]).into(),
        Hypercall::StackSwitch => traps::stack_switch(ctx, a[0], a[1]).into(),
        Hypercall::FpuTaskswitch => traps::fpu_taskswitch(ctx, a[0]).into(),
        Hypercall::SetSegmentBase => traps::set_segment_base(ctx, a[0], a[1]).into(),
        Hypercall::VmAssist => traps::vm_assist(a[0], a[1]).into(),
        Hypercall::Iret if in_multicall => Flow::Value(Err(Errno::EINVAL)),
        Hypercall::Iret => traps::iret(ctx),
        Hypercall::MemoryOp => memory::memory_op(ctx, a[0], a[1]).into(),
        Hypercall::VcpuOp => vcpu::vcpu_op(ctx, a[0], a[1], a[2]).into(),
        Hypercall::Domctl => domctl::domctl(ctx, a[0]),
        Hypercall::Sysctl => sysctl::sysctl(ctx, a[0]).into(),
        Hypercall::HvmOp => hvm::hvm_op(ctx, a[0], a[1]).into(),
        Hypercall::Multicall if in_multicall => Flow::Value(Err(Errno::EINVAL)),
        Hypercall::Multicall => multicall::multicall(ctx, a[0], a[1]),
        Hypercall::MmuUpdate => mmu(
            ctx,
            MmuCall::Update {
                reqs: a[0],
                count: a[1],
                done: a[2],
                domid: a[3],
            },
        ),
        Hypercall::UpdateVaMapping => mmu(
            ctx,
            MmuCall::UpdateVa {
                va: a[0],
                pte: a[1],
                flags: a[2],
            },
        ),
        Hypercall::MmuextOp => mmu(
            ctx,
            MmuCall::Ext {
                ops: a[0],
                count: a[1],
                done: a[2],
                domid: a[3],
            },
        ),
        Hypercall::SetGdt => mmu(
            ctx,
            MmuCall::SetGdt {
                frames: a[0],
                entries: a[1],
            },
        ),
        // setup_table and copy carry frame numbers and handles, 32 bits wide in the compat
        // layouts, which are not translated; the other operations' layouts are the same.
        Hypercall::GrantTableOp
            if ctx.compat
                && matches!(
                    GnttabOp::try_from(a[0] as u32),
                    Ok(GnttabOp::SetupTable | GnttabOp::Copy)
                ) =>
        {
            Flow::Value(Err(Errno::ENOSYS))
        }
        Hypercall::GrantTableOp => Flow::Value(
            ctx.hw
                .grant_table_op(ctx.dom, ctx.vcpu, a[0], a[1], a[2], ctx.mem),
        ),
        _ => Flow::Value(Err(Errno::ENOSYS)),
    }
}

fn mmu(ctx: &mut Ctx<'_>, call: MmuCall) -> Flow {
    // The batch calls: number, list, entry size, target domain.
    let (nr, list, size, domid) = match call {
        MmuCall::Update { reqs, domid, .. } => (Hypercall::MmuUpdate as u64, reqs, 16, Some(domid)),
        MmuCall::Ext { ops, domid, .. } => (Hypercall::MmuextOp as u64, ops, 24, Some(domid)),
        _ => (0, 0, 0, None),
    };
    // A foreign domain that does not exist is -ESRCH (one that exists: the handler decides).
    if let Some(d) = domid {
        let d = d as u16;
        if d != DOMID_SELF && d != ctx.dom.id && ctx.peers.get_mut(d).is_none() {
            return Flow::Value(Err(Errno::ESRCH));
        }
    }
    match ctx.hw.mmu(ctx.dom, ctx.vcpu, call, ctx.mem) {
        Ok(MmuDone::Finished) => Flow::Value(Ok(0)),
        Ok(MmuDone::Preempted {
            processed,
            remaining,
        }) => Flow::Again {
            nr,
            arg0: list.wrapping_add(processed * size),
            arg1: remaining | PREEMPTED,
        },
        Err(e) => Flow::Value(Err(e)),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fake domain and platform for handler tests.
    use super::*;
    use crate::domain::state::{DomainState, Vcpu};
    use crate::evtchn::EvtchnTable;
    use crate::mm::guest_access::FakeGuestMem;
    use alloc::boxed::Box;
    use alloc::string::String;
    use alloc::vec::Vec;
    use hypercall_abi::xen::SharedInfo;

    /// Guest memory in the tests: 64 KiB at 0x10000.
    pub const MEM_BASE: u64 = 0x1_0000;

    pub struct FakePlatform {
        pub now: u64,
        pub lines: Vec<(Option<DomId>, Vec<u8>)>,
        /// Frames left to allocate, the next one, and who owns what.
        pub free: u64,
        pub next_mfn: u64,
        pub owned: std::collections::BTreeMap<u64, DomId>,
        /// Frames still referenced (cannot be released).
        pub busy: std::collections::BTreeSet<u64>,
        pub m2p: std::collections::BTreeMap<u64, u64>,
        /// The grant_table_op commands that reached the platform.
        pub grant_cmds: Vec<u64>,
        /// What page-table calls answer (`None`: ENOSYS).
        pub mmu_preempt: Option<MmuDone>,
        /// The add_to_physmap calls that reached the platform: (space, idx, gpfn).
        pub physmap: Vec<(u32, u64, u64)>,
    }

    impl Platform for FakePlatform {
        fn now_ns(&self) -> u64 {
            self.now
        }
        fn console_line(&mut self, prefix: Option<DomId>, line: &[u8]) {
            self.lines.push((prefix, line.to_vec()));
        }
        fn max_mfn(&self) -> u64 {
            0x2_0000
        }
        fn total_pages(&self) -> u64 {
            0x1_ff8f
        }
        fn free_pages(&self) -> u64 {
            self.free
        }
        fn cpu_khz(&self) -> u32 {
            2_400_000
        }
        fn machine_memory_map(&self) -> Vec<(u64, u64, u32)> {
            alloc::vec![
                (0, 0x9_f000, 1),
                (0x10_0000, 0x1ff0_0000, 1),
                (0xfffc_0000, 0x4_0000, 2)
            ]
        }
        /// `mmu_preempt`, if set, is how far a batch call gets before it stops.
        fn mmu(
            &mut self,
            _: &mut Domain,
            _: usize,
            _: MmuCall,
            _: &mut dyn GuestMem,
        ) -> Result<MmuDone, Errno> {
            self.mmu_preempt.ok_or(Errno::ENOSYS)
        }
        fn add_to_physmap(
            &mut self,
            _: &mut Domain,
            space: hypercall_abi::memory::XenMapSpace,
            idx: u64,
            gpfn: u64,
        ) -> Result<(), Errno> {
            self.physmap.push((space as u32, idx, gpfn));
            Ok(())
        }
        /// Records the command; the grant tables are tested in `crate::gnttab`.
        fn grant_table_op(
            &mut self,
            _: &mut Domain,
            _: usize,
            cmd: u64,
            _: u64,
            _: u64,
            _: &mut dyn GuestMem,
        ) -> HcResult {
            self.grant_cmds.push(cmd);
            Ok(0)
        }
        fn alloc_frames(&mut self, domid: DomId, order: u32) -> Option<u64> {
            let n = 1u64 << order;
            if self.free < n {
                return None;
            }
            self.free -= n;
            let mfn = self.next_mfn;
            self.next_mfn += n;
            for m in mfn..mfn + n {
                self.owned.insert(m, domid);
            }
            Some(mfn)
        }
        fn release_frame(&mut self, domid: DomId, mfn: u64) -> bool {
            if self.owned.get(&mfn) == Some(&domid) && !self.busy.contains(&mfn) {
                self.owned.remove(&mfn);
                self.free += 1;
                true
            } else {
                false
            }
        }
        fn m2p(&self, mfn: u64) -> u64 {
            self.m2p.get(&mfn).copied().unwrap_or(u64::MAX)
        }
        fn set_m2p(&mut self, mfn: u64, pfn: u64) {
            self.m2p.insert(mfn, pfn);
        }
    }

    pub struct World {
        pub dom: Domain,
        /// Other domains: ids 2 and 3.
        pub peers: Vec<Domain>,
        pub regs: Regs,
        pub mem: FakeGuestMem,
        pub hw: FakePlatform,
        /// Calls are made as a 32-bit (compat) caller's.
        pub compat: bool,
    }

    /// A running domain `id` with one vCPU and 256 pages at machine frames 0x1000 + pfn.
    pub fn domain(id: DomId) -> Domain {
        Domain {
            id,
            name: String::from("test"),
            privileged: false,
            state: DomainState::Running,
            p2m: (0..256).map(|i| 0x1000 + i).collect(),
            tot_pages: 256,
            max_pages: 512,
            shared_info_mfn: 0x999,
            shared: Box::leak(Box::new(SharedInfo::default())),
            vcpus: alloc::vec![Vcpu::new(0, Regs::default())],
            evtchn: EvtchnTable::new(1),
            console_line: Vec::new(),
            rings: None,
            hvm: None,
            console_in: crate::console::InputQueue::new(crate::console::Sink::Hypercall),
        }
    }

    impl World {
        pub fn new() -> Self {
            World {
                dom: domain(1),
                peers: alloc::vec![domain(2), domain(3)],
                regs: Regs::default(),
                mem: FakeGuestMem::new(MEM_BASE, 0x1_0000),
                hw: FakePlatform {
                    now: 1_000_000,
                    lines: Vec::new(),
                    free: 64,
                    next_mfn: 0x8_0000,
                    owned: (0x1000..0x1100).map(|m| (m, 1)).collect(),
                    busy: Default::default(),
                    m2p: (0..256).map(|i| (0x1000 + i, i)).collect(),
                    grant_cmds: Vec::new(),
                    mmu_preempt: None,
                    physmap: Vec::new(),
                },
                compat: false,
            }
        }

        /// Makes hypercall `nr` with `args`; returns the outcome and RAX as a signed value.
        pub fn call(&mut self, nr: u64, args: &[u64]) -> (Outcome, i64) {
            let mut a = [0u64; 5];
            a[..args.len()].copy_from_slice(args);
            self.regs.rax = nr;
            [
                self.regs.rdi,
                self.regs.rsi,
                self.regs.rdx,
                self.regs.r10,
                self.regs.r8,
            ] = a;
            let mut ctx = Ctx {
                dom: &mut self.dom,
                vcpu: 0,
                regs: &mut self.regs,
                mem: &mut self.mem,
                hw: &mut self.hw,
                peers: Peers::new(&mut self.peers),
                compat: self.compat,
            };
            let out = dispatch(&mut ctx);
            (out, self.regs.rax as i64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::World;
    use super::*;

    #[test]
    fn unknown_numbers_are_enosys() {
        let mut w = World::new();
        for nr in [11, 60, 127, 128, u64::MAX] {
            assert_eq!(w.call(nr, &[]), (Outcome::Continue, -38), "hypercall {nr}");
        }
    }

    /// A 32-bit caller: sched_poll, memory_map and vcpu_op read and write Xen's compat
    /// layouts; the grant operations whose layouts differ are refused, the others go on.
    mod compat {
        use super::super::testing::{World, MEM_BASE};
        use super::super::Outcome;
        use crate::domain::state::VcpuState;
        use crate::mm::guest_access::{read_obj, write_obj};

        fn world() -> World {
            let mut w = World::new();
            w.compat = true;
            w
        }

        #[test]
        fn sched_poll() {
            let mut w = world();
            let port = w.dom.evtchn.bind_virq(0, 0).unwrap();
            write_obj(&mut w.mem, MEM_BASE + 0x100, &port).unwrap();
            // ports (32-bit handle), nr_ports, timeout at offset 8.
            let ports = (MEM_BASE + 0x100) as u32;
            write_obj(&mut w.mem, MEM_BASE, &[ports, 1, 5_000_000, 0]).unwrap();
            assert_eq!(w.call(29, &[3, MEM_BASE]), (Outcome::Block, 0));
            assert_eq!(w.dom.vcpus[0].poll_ports, [port]);
            assert_eq!(w.dom.vcpus[0].poll_deadline, Some(5_000_000));
            w.dom.vcpus[0].state = VcpuState::Runnable;
            write_obj(&mut w.mem, MEM_BASE, &[ports, 1, 0, 1]).unwrap();
            assert_eq!(w.call(29, &[3, MEM_BASE]), (Outcome::Block, 0));
            assert_eq!(
                w.dom.vcpus[0].poll_deadline,
                Some(1 << 32),
                "timeout's high half"
            );
        }

        #[test]
        fn memory_map() {
            let mut w = world();
            let buffer = (MEM_BASE + 0x100) as u32;
            write_obj(&mut w.mem, MEM_BASE, &[4u32, buffer]).unwrap();
            assert_eq!(w.call(12, &[9, MEM_BASE]).1, 0);
            assert_eq!(read_obj::<u32>(&mut w.mem, MEM_BASE).unwrap(), 1);
            let e: [u8; 20] = read_obj(&mut w.mem, MEM_BASE + 0x100).unwrap();
            assert_eq!(e[8..16], (256u64 * 4096).to_le_bytes());
        }

        #[test]
        fn vcpu_runstate_and_timer() {
            let mut w = world();
            write_obj(&mut w.mem, MEM_BASE, &[u64::MAX; 6]).unwrap();
            assert_eq!(w.call(24, &[4, 0, MEM_BASE]).1, 0);
            let words: [u64; 6] = read_obj(&mut w.mem, MEM_BASE).unwrap();
            let info: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(info[..4], 0u32.to_le_bytes(), "running");
            assert_eq!(info[4..12], 1_000_000u64.to_le_bytes(), "state_entry_time");
            assert_eq!(info[12..20], 1_000_000u64.to_le_bytes(), "time[running]");
            assert_eq!(info[20..44], [0; 24]);
            assert_eq!(
                info[44..],
                [0xff; 4],
                "nothing beyond the 44-byte compat struct"
            );
            // timeout (u64) and flags in 12 bytes: a past deadline with the future flag.
            write_obj(&mut w.mem, MEM_BASE, &[5u32, 0, 1]).unwrap();
            assert_eq!(w.call(24, &[8, 0, MEM_BASE]).1, -62);
            write_obj(&mut w.mem, MEM_BASE, &[5u32, 1, 1]).unwrap();
            assert_eq!(w.call(24, &[8, 0, MEM_BASE]).1, 0);
            assert_eq!(w.dom.vcpus[0].timer_deadline, Some(5 | 1 << 32));
        }

        #[test]
        fn grant_ops_with_other_layouts_are_refused() {
            let mut w = world();
            // setup_table (2) and copy (5) are refused; map (0) and query_size (6) go on.
            for cmd in [0, 2, 5, 6] {
                w.call(20, &[cmd, MEM_BASE, 1]);
            }
            assert_eq!(w.hw.grant_cmds, [0, 6]);
            assert_eq!(w.call(20, &[5, MEM_BASE, 1]).1, -38);
            w.compat = false;
            w.call(20, &[5, MEM_BASE, 1]);
            assert_eq!(w.hw.grant_cmds, [0, 6, 5], "64-bit callers copy");
        }
    }
}
