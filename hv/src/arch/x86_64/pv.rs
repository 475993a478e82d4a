//! Running PV domains: building them from the boot bundle, the run loop, and what happens on
//! every entry from a guest (hypercall, exception, interrupt) and every return to one.
//!
//! The portable layers decide (hypercall handlers, bounce frames, wake-ups, round robin);
//! this module applies their decisions to the CPU: the register frame at the top of the
//! guest-entry stack, CR3, the guest's FS/GS bases, CR0.TS and the FPU registers.

use super::cpu::{self, rdtsc};
use super::entry::{self, Fault};
use super::paging::{hv_l4_slots, phys_to_virt};
use super::power::{power_off, Status};
use super::{console, console_input, time, traps};
use crate::bundle::{DomainKind, DomainSpec};
use crate::console::{InputQueue, Sink};
use crate::domain::elf::{ImageKind, XenImage};
use crate::domain::pv_build::{build_pv, BuildMemory, BuildParams, RingPage};
use crate::domain::state::{Domain, DomainState, FpuState, Peers, Rings, Vcpu, VcpuState};
use crate::evtchn::EvtchnTable;
use crate::hypercall::{self, Ctx, MmuCall, MmuDone, Outcome, Platform};
use crate::mm::guest_access::{self, GuestMem};
use crate::mm::{Mfn, Owner, RegionKind, PAGE_SIZE};
use crate::pv::emulate::{decode_gp, decode_ud, pv_cpuid, Insn, MAX_INSN};
use crate::regs::{rflags, Regs};
use crate::sched::{self, VcpuRef, SLICE_TICKS};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use hypercall_abi::errno::Errno;
use hypercall_abi::grant_table::{GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE};
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::{
    SharedInfo, FIRST_RESERVED_GDT_PAGE, FLAT_KERNEL_CS64, FLAT_KERNEL_SS64, SIF_INITDOMAIN,
    SIF_PRIVILEGED,
};
use log::{error, info, warn};
use spin::Mutex;

/// Everything the run loop owns.
struct Runtime {
    domains: Vec<Domain>,
    /// Domains that could not be built or were skipped: the run cannot end clean.
    boot_failures: usize,
    /// Free frames before the first domain was built (every frame must come back).
    free_before: u64,
    current: Option<VcpuRef>,
    /// System time at which `current` was last switched in (its CPU time runs from there).
    since: u64,
    /// CR3, GS base, FS base and CR0.TS as loaded, to skip redundant reloads.
    loaded: Loaded,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Loaded {
    cr3: u64,
    gs: u64,
    fs: u64,
    ts: bool,
    /// GDT frames shown in the guest part of the GDT, and how many.
    gdt: [u64; FIRST_RESERVED_GDT_PAGE],
    gdt_len: usize,
}

static RUNTIME: Mutex<Runtime> = Mutex::new(Runtime {
    domains: Vec::new(),
    boot_failures: 0,
    free_before: 0,
    current: None,
    since: 0,
    loaded: Loaded {
        cr3: 0,
        gs: 0,
        fs: 0,
        ts: false,
        gdt: [0; FIRST_RESERVED_GDT_PAGE],
        gdt_len: 0,
    },
});

/// The current guest's memory, reached through its live page tables.
struct LiveGuest<'a> {
    /// The vCPU's kernel root, for a switch from user mode.
    kernel_root: Option<Mfn>,
    /// The root accesses must go through (the vCPU's current mode's).
    expected_cr3: u64,
    /// CR3 as loaded (kept true when a switch reloads it).
    loaded_cr3: &'a mut u64,
}

impl<'a> LiveGuest<'a> {
    fn new(pv: &crate::pv::vcpu::PvVcpu, loaded_cr3: &'a mut u64) -> Self {
        let expected_cr3 = pv.active_root().map_or(u64::MAX, |m| m.paddr());
        LiveGuest {
            kernel_root: pv.mm.kernel_root(),
            expected_cr3,
            loaded_cr3,
        }
    }

    /// Refuses any access unless the vCPU's own address space is the live one, so a slip in
    /// the order of a context switch can never touch another domain's memory.
    fn live(&self) -> Result<(), guest_access::Fault> {
        if *self.loaded_cr3 == self.expected_cr3 {
            Ok(())
        } else {
            Err(guest_access::Fault)
        }
    }
}

impl GuestMem for LiveGuest<'_> {
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), guest_access::Fault> {
        self.live()?;
        entry::copy_from_guest(gva, buf).map_err(|Fault| guest_access::Fault)
    }
    fn write(&mut self, gva: u64, buf: &[u8]) -> Result<(), guest_access::Fault> {
        self.live()?;
        entry::copy_to_guest(gva, buf).map_err(|Fault| guest_access::Fault)
    }
    fn switch_to_kernel(&mut self) {
        if let Some(root) = self.kernel_root {
            load_cr3(root.paddr());
            *self.loaded_cr3 = root.paddr();
            self.expected_cr3 = root.paddr();
        }
    }
}

fn load_cr3(cr3: u64) {
    // SAFETY: every root hv loads is a validated L4 of the running domain (the type system in
    // `mm::pv` guarantees it), which carries hv's own slots, so hv stays mapped.
    unsafe { core::arch::asm!("mov {}, %cr3", in(reg) cr3, options(att_syntax, nostack)) };
}

/// The machine services hypercalls use.
struct Machine;

impl Platform for Machine {
    fn now_ns(&self) -> u64 {
        time::now_ns()
    }
    fn console_line(&mut self, prefix: Option<u16>, line: &[u8]) {
        console::guest_line(prefix, line);
    }
    fn max_mfn(&self) -> u64 {
        super::start::max_mfn()
    }
    fn total_pages(&self) -> u64 {
        super::start::firmware_map()
            .iter()
            .filter(|r| r.kind == RegionKind::Ram)
            .map(|r| (r.end / PAGE_SIZE).saturating_sub(r.start.div_ceil(PAGE_SIZE)))
            .sum()
    }
    fn free_pages(&self) -> u64 {
        free_frames()
    }
    fn cpu_khz(&self) -> u32 {
        u32::try_from(time::tsc_hz() / 1000).unwrap_or(u32::MAX)
    }
    fn machine_memory_map(&self) -> Vec<(u64, u64, u32)> {
        super::start::firmware_map()
            .iter()
            .map(|r| (r.start, r.end - r.start, r.kind.e820_type()))
            .collect()
    }
    fn mmu(
        &mut self,
        dom: &mut Domain,
        vcpu: usize,
        call: MmuCall,
        mem: &mut dyn GuestMem,
    ) -> Result<MmuDone, Errno> {
        super::mmu::hypercall(dom, vcpu, call, mem)
    }
    fn add_to_physmap(
        &mut self,
        dom: &mut Domain,
        space: hypercall_abi::memory::XenMapSpace,
        idx: u64,
        gpfn: u64,
    ) -> Result<(), Errno> {
        super::vmx::add_to_physmap(dom, space, idx, gpfn)
    }
    fn grant_table_op(
        &mut self,
        dom: &mut Domain,
        vcpu: usize,
        cmd: u64,
        uop: u64,
        count: u64,
        mem: &mut dyn GuestMem,
    ) -> Result<i64, Errno> {
        super::gnttab::grant_table_op(dom, vcpu, cmd, uop, count, mem)
    }
    fn alloc_frames(&mut self, domid: u16, order: u32) -> Option<u64> {
        let mfn = super::start::FRAMES
            .lock()
            .as_mut()?
            .alloc(order, Owner::Domain(domid))
            .ok()?;
        // SAFETY: the block was just allocated to the domain and is in the direct map;
        // scrubbing it keeps a previous owner's data from leaking.
        unsafe {
            core::ptr::write_bytes(phys_to_virt(mfn.paddr()), 0, (PAGE_SIZE << order) as usize)
        };
        Some(mfn.0)
    }
    fn release_frame(&mut self, domid: u16, mfn: u64) -> bool {
        super::mmu::release_frame(domid, Mfn(mfn))
    }
    fn m2p(&self, mfn: u64) -> u64 {
        super::start::m2p(mfn)
    }
    fn set_m2p(&mut self, mfn: u64, pfn: u64) {
        super::start::set_m2p(mfn, pfn);
    }
}

/// Guest memory being built, through the direct map.
struct BuildMem<'a> {
    p2m: &'a [u64],
}

impl BuildMemory for BuildMem<'_> {
    fn nr_pages(&self) -> u64 {
        self.p2m.len() as u64
    }
    fn mfn(&self, pfn: u64) -> Mfn {
        Mfn(self.p2m.get(pfn as usize).copied().unwrap_or(u64::MAX))
    }
    fn page_mut(&mut self, pfn: u64) -> &mut [u8; 4096] {
        let mfn = self.p2m[pfn as usize];
        // SAFETY: `mfn` is a frame just allocated to the domain being built, mapped in the
        // direct map; nothing else refers to it until the domain runs, and the builder holds
        // at most one page reference at a time.
        unsafe { &mut *(phys_to_virt(mfn * PAGE_SIZE) as *mut [u8; 4096]) }
    }
}

/// Why a domain could not be built.
#[derive(Debug)]
pub struct BuildFailure(pub String);

fn fail(args: core::fmt::Arguments<'_>) -> BuildFailure {
    let mut s = String::new();
    let _ = s.write_fmt(args);
    BuildFailure(s)
}

/// Allocates domain-being-built's unbound ports for `peer` (the control domain) for its
/// xenstore and console rings at frame numbers `store` and `console` (as the domain names
/// them: machine frames for PV, guest frames for HVM).
pub(super) fn ring_ports(
    evtchn: &mut EvtchnTable,
    peer: u16,
    store: u64,
    console: u64,
) -> Result<Rings, BuildFailure> {
    let mut port = || {
        evtchn
            .alloc_unbound(peer)
            .map_err(|e| fail(format_args!("allocating a ring port: {e:?}")))
    };
    Ok(Rings {
        store_frame: store,
        store_port: port()?,
        console_frame: console,
        console_port: port()?,
    })
}

/// Grants `peer` the rings of domain `id` (built, with its grant table) in the reserved
/// entries Xen's toolstack uses (console 0, xenstore 1), and logs them.
pub(super) fn grant_rings(id: u16, peer: u16, r: Rings) -> Result<(), BuildFailure> {
    let grant = |gref, frame| super::gnttab::grant_to(id, gref, Mfn(frame), peer, false);
    grant(GNTTAB_RESERVED_CONSOLE, r.console_frame)
        .and_then(|()| grant(GNTTAB_RESERVED_XENSTORE, r.store_frame))
        .map_err(|e| fail(format_args!("granting the rings: {e:?}")))?;
    info!(
        "d{id}: rings for d{peer}: store frame {:#x} port {}, console frame {:#x} port {}",
        r.store_frame, r.store_port, r.console_frame, r.console_port
    );
    Ok(())
}

/// Builds domain `id` from its bundle record and queues it to run. A PV domain other than
/// `control` (the control domain, if any) gets xenstore and console rings for it.
///
/// The rings are two extra frames (outside the reservation, like shared info: `tot_pages`
/// and `start_info.nr_pages` do not count them, so the guest never takes them for free
/// memory), zeroed, at pfns `nr_pages` and `nr_pages + 1` of the domain's pseudo-physical
/// space; each has an unbound port for `control` and a grant to it in the reserved entry
/// Xen's toolstack uses (console 0, xenstore 1).
pub fn build_domain(
    id: u16,
    spec: &DomainSpec<'_>,
    control: Option<u16>,
) -> Result<(), BuildFailure> {
    if spec.vcpus as usize > hypercall_abi::xen::XEN_LEGACY_MAX_VCPUS {
        // Their vcpu_info lives in shared_info, which has room for 32.
        return Err(fail(format_args!(
            "{} vCPUs: at most {} are supported",
            spec.vcpus,
            hypercall_abi::xen::XEN_LEGACY_MAX_VCPUS
        )));
    }
    let ring_peer = control.filter(|&c| c != id);
    let hvm = match spec.kind {
        DomainKind::Pv => None,
        DomainKind::Pvh => Some(super::vmx::build_pvh_domain(id, spec, ring_peer)),
        DomainKind::Hvm => Some(super::vmx::build_boot_sector_domain(id, spec)),
    };
    if let Some(built) = hvm {
        RUNTIME.lock().domains.push(built.map_err(BuildFailure)?);
        return Ok(());
    }
    let image =
        XenImage::parse(spec.kernel).map_err(|e| fail(format_args!("kernel image: {e}")))?;
    if image.kind() != ImageKind::Pv {
        return Err(fail(format_args!("the kernel has no Xen PV notes")));
    }
    let nr_pages = spec.memory_kib / 4;
    let max_pages = spec.max_memory_kib / 4;
    let owner = Owner::Domain(id);
    let nr_rings = if ring_peer.is_some() { 2 } else { 0 };
    let mut p2m = Vec::new();
    p2m.try_reserve_exact((nr_pages + nr_rings) as usize)
        .map_err(|_| fail(format_args!("no memory for the p2m")))?;
    let shared_mfn;
    let mut ring_mfns = Vec::new();
    {
        let mut frames = super::start::FRAMES.lock();
        let frames = frames
            .as_mut()
            .ok_or_else(|| fail(format_args!("no frame allocator")))?;
        if frames.free_frames() < nr_pages + 1 + nr_rings {
            return Err(fail(format_args!(
                "needs {} pages, {} free",
                nr_pages + 1 + nr_rings,
                frames.free_frames()
            )));
        }
        for _ in 0..nr_pages {
            let mfn = frames
                .alloc(0, owner)
                .map_err(|e| fail(format_args!("allocating memory: {e:?}")))?;
            p2m.push(mfn.0);
        }
        shared_mfn = frames
            .alloc(0, owner)
            .map_err(|e| fail(format_args!("allocating shared info: {e:?}")))?
            .0;
        for _ in 0..nr_rings {
            let mfn = frames
                .alloc(0, owner)
                .map_err(|e| fail(format_args!("allocating a ring: {e:?}")))?;
            ring_mfns.push(mfn.0);
        }
    }
    for (pfn, &mfn) in p2m.iter().chain(&ring_mfns).enumerate() {
        // SAFETY: a frame just allocated to this domain, in the direct map; scrubbing it
        // keeps whatever a previous owner left from leaking into this domain.
        unsafe { core::ptr::write_bytes(phys_to_virt(mfn * PAGE_SIZE), 0, PAGE_SIZE as usize) };
        super::start::set_m2p(mfn, pfn as u64);
    }
    // SAFETY: the shared-info frame belongs to this domain alone, lives as long as the
    // domain, and is only touched by hv while the domain's vCPUs are not running (one CPU).
    let shared: &'static mut SharedInfo = unsafe {
        let p = phys_to_virt(shared_mfn * PAGE_SIZE);
        core::ptr::write_bytes(p, 0, PAGE_SIZE as usize);
        &mut *(p as *mut SharedInfo)
    };
    for v in shared.vcpu_info.iter_mut() {
        v.evtchn_upcall_mask = 1;
    }
    // The wallclock at system time 0, with Xen's version protocol (odd while changing).
    let wc = time::wallclock_at_boot_ns();
    shared.wc_version = 1;
    shared.wc_sec = (wc / 1_000_000_000) as u32;
    shared.wc_sec_hi = ((wc / 1_000_000_000) >> 32) as u32;
    shared.wc_nsec = (wc % 1_000_000_000) as u32;
    shared.wc_version = 2;
    let flags = if spec.privileged {
        SIF_PRIVILEGED | SIF_INITDOMAIN
    } else {
        0
    };
    let mut evtchn = EvtchnTable::new(spec.vcpus);
    let rings = match (ring_peer, ring_mfns.as_slice()) {
        (Some(peer), &[store, console]) => Some(ring_ports(&mut evtchn, peer, store, console)?),
        _ => None,
    };
    let ring = |mfn, evtchn| RingPage {
        mfn: Mfn(mfn),
        evtchn,
    };
    let slots = hv_l4_slots();
    let params = BuildParams {
        domid: id,
        nr_pages,
        max_pages,
        flags,
        cmdline: spec.cmdline,
        module: spec.module,
        shared_info_mfn: Mfn(shared_mfn),
        store: rings.map(|r| ring(r.store_frame, r.store_port)),
        console: rings.map(|r| ring(r.console_frame, r.console_port)),
        hv_l4_slots: &slots,
    };
    let built = build_pv(&image, &mut BuildMem { p2m: &p2m }, &params)
        .map_err(|e| fail(format_args!("building: {e}")))?;
    p2m.extend_from_slice(&ring_mfns);
    let mut dom = Domain {
        id,
        name: String::from(spec.name),
        privileged: spec.privileged,
        state: DomainState::Running,
        p2m,
        tot_pages: nr_pages,
        max_pages,
        shared_info_mfn: shared_mfn,
        shared,
        vcpus: Vec::new(),
        evtchn,
        console_line: Vec::new(),
        rings,
        hvm: None,
        console_in: InputQueue::new(Sink::for_domain(spec.privileged, false, rings)),
    };
    let regs = Regs {
        rip: built.entry,
        cs: u64::from(FLAT_KERNEL_CS64),
        rflags: rflags::IF | rflags::FIXED,
        rsp: built.stack_top,
        ss: u64::from(FLAT_KERNEL_SS64),
        rsi: built.start_info_va,
        vector: crate::regs::IRET_FRAME,
        ..Regs::default()
    };
    for i in 0..spec.vcpus {
        let mut v = Vcpu::new(i, regs);
        if i != 0 {
            v.state = VcpuState::Down;
        }
        dom.vcpus.push(v);
    }
    if let Err(e) = super::mmu::adopt_boot_tables(&mut dom, built.l4_mfn.0) {
        super::mmu::teardown(&mut dom);
        return Err(fail(format_args!("validating the boot page tables: {e:?}")));
    }
    if let Err(e) = super::gnttab::add_domain(id, spec.privileged) {
        super::mmu::teardown(&mut dom);
        return Err(fail(format_args!("creating the grant table: {e:?}")));
    }
    if let (Some(peer), Some(r)) = (ring_peer, rings) {
        if let Err(e) = grant_rings(id, peer, r) {
            super::mmu::teardown(&mut dom);
            return Err(e);
        }
    }
    info!(
        "d{id}: built: {} pages, entry {:#x}, start_info {:#x}, {} page-table frames",
        nr_pages,
        built.entry,
        built.start_info_va,
        built.pt_frames.end - built.pt_frames.start
    );
    RUNTIME.lock().domains.push(dom);
    Ok(())
}

/// Runs the domains until none is left, then powers off: cleanly if every domain powered
/// off and `boot_failures` is 0. Never returns.
pub fn run(boot_failures: usize) -> ! {
    let mut rt = RUNTIME.lock();
    rt.boot_failures = boot_failures;
    rt.loaded.cr3 = super::paging::root();
    if rt.domains.is_empty() {
        drop(rt);
        info!("no domains to run");
        power_off(if boot_failures == 0 {
            Status::Clean
        } else {
            Status::Failure
        });
    }
    // SAFETY: `guest_frame` is the frame at the top of the guest-entry stack; nothing else
    // uses it before the first guest runs.
    let frame = unsafe { &mut *entry::guest_frame() };
    console_input::start(&rt.domains);
    schedule(&mut rt, frame, None);
    run_hvm(&mut rt, frame);
    after(&mut rt, frame, Outcome::Continue);
    drop(rt);
    entry::enter_guest()
}

/// Called by the `syscall` entry: a hypercall from guest kernel mode, or a system call from
/// guest user mode for the guest kernel.
pub fn guest_syscall(frame: &mut Regs) {
    let mut rt = RUNTIME.lock();
    let Some((d, v)) = rt.current else {
        power_off(Status::Failure)
    };
    let outcome = {
        let rt = &mut *rt;
        let Some((dom, peers)) = Peers::split(&mut rt.domains, d) else {
            power_off(Status::Failure)
        };
        let mut mem = LiveGuest::new(&dom.vcpus[v].pv, &mut rt.loaded.cr3);
        if dom.vcpus[v].pv.kernel_mode {
            let mut ctx = Ctx {
                dom,
                vcpu: v,
                regs: frame,
                mem: &mut mem,
                hw: &mut Machine,
                peers,
                // hv runs 64-bit PV guests only.
                compat: false,
            };
            hypercall::dispatch(&mut ctx)
        } else {
            let vcpu = &mut dom.vcpus[v];
            match vcpu
                .pv
                .deliver_syscall(frame, &mut dom.shared.vcpu_info[v], &mut mem)
            {
                Ok(()) => Outcome::Continue,
                Err(_) => Outcome::Crash("syscall from user mode with no usable syscall callback"),
            }
        }
    };
    after(&mut rt, frame, outcome);
}

/// Called for every exception or interrupt taken while a guest ran.
pub fn guest_trap(frame: &mut Regs) {
    let vector = frame.vector;
    if vector == u64::from(traps::TIMER_VECTOR) {
        traps::timer_tick();
        let mut rt = RUNTIME.lock();
        console_input::poll(&mut rt.domains);
        let now = time::now_ns();
        sched::update(&mut rt.domains, now);
        let preempt = match rt.current {
            Some((d, v)) => {
                let vcpu = &mut rt.domains[d].vcpus[v];
                vcpu.slice_left = vcpu.slice_left.saturating_sub(1);
                vcpu.slice_left == 0
            }
            None => true,
        };
        let outcome = if preempt {
            Outcome::Yield
        } else {
            Outcome::Continue
        };
        after(&mut rt, frame, outcome);
        return;
    }
    match vector {
        // NMI arrives on its IST stack, not the guest frame: nothing to do but return.
        2 => return,
        8 | 18 => traps::fatal_exception(frame),
        v if v == u64::from(traps::SPURIOUS_VECTOR) => return,
        v if v >= 32 => {
            super::apic::eoi();
            return;
        }
        _ => {}
    }
    let mut rt = RUNTIME.lock();
    let outcome = guest_exception(&mut rt, frame, vector as u8);
    after(&mut rt, frame, outcome);
}

fn guest_exception(rt: &mut Runtime, frame: &mut Regs, vector: u8) -> Outcome {
    let Some((d, v)) = rt.current else {
        return Outcome::Crash("exception with no current vCPU");
    };
    let dom = &mut rt.domains[d];
    let mut mem = LiveGuest::new(&dom.vcpus[v].pv, &mut rt.loaded.cr3);
    let kernel = dom.vcpus[v].pv.kernel_mode;
    let mut error = traps::has_error_code(vector).then_some(frame.error_code);
    let mut deliver = vector;
    match vector {
        14 => {
            dom.shared.vcpu_info[v].arch.cr2 = cpu::cr2();
            if kernel {
                // The guest kernel runs at CPL 3 but must see its faults as supervisor ones.
                error = error.map(|e| e & !4);
            }
        }
        6 | 13 => {
            let mut bytes = [0u8; MAX_INSN];
            let n = (0..=MAX_INSN)
                .rev()
                .find(|&n| entry::copy_from_guest(frame.rip, &mut bytes[..n]).is_ok());
            let bytes = &bytes[..n.unwrap_or(0)];
            let insn = if vector == 6 {
                decode_ud(bytes)
            } else {
                decode_gp(bytes)
            };
            match insn {
                Some(Insn::Cpuid { len }) => {
                    let (leaf, sub) = (frame.rax as u32, frame.rcx as u32);
                    let r = cpu::cpuid(leaf, sub);
                    let [a, b, c, dd] = pv_cpuid(leaf, [r.eax, r.ebx, r.ecx, r.edx]);
                    (frame.rax, frame.rbx, frame.rcx, frame.rdx) =
                        (a.into(), b.into(), c.into(), dd.into());
                    frame.rip += u64::from(len);
                    return Outcome::Continue;
                }
                Some(Insn::MovFromCr3 { reg, len }) if kernel => {
                    let cr3 = dom.vcpus[v].pv.active_root().map_or(0, |m| m.paddr());
                    set_gpr(frame, reg, cr3);
                    frame.rip += u64::from(len);
                    return Outcome::Continue;
                }
                Some(Insn::Int { vector: n, len }) => {
                    // Guest kernel mode counts as DPL 1 for the virtual IDT's checks.
                    let cpl = if kernel { 1 } else { 3 };
                    if dom.vcpus[v].pv.traps[usize::from(n)].dpl >= cpl {
                        frame.rip += u64::from(len);
                        deliver = n;
                        error = None;
                    } else {
                        error = Some((u64::from(n) << 3) | 2);
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
    let vcpu = &mut dom.vcpus[v];
    match vcpu.pv.deliver_exception(
        frame,
        &mut dom.shared.vcpu_info[v],
        &mut mem,
        deliver,
        error,
    ) {
        Ok(()) => Outcome::Continue,
        Err(_) => Outcome::Crash(
            EXCEPTION_NAMES
                .get(usize::from(vector))
                .copied()
                .unwrap_or("exception"),
        ),
    }
}

const EXCEPTION_NAMES: [&str; 32] = [
    "unhandled #DE",
    "unhandled #DB",
    "unhandled NMI",
    "unhandled #BP",
    "unhandled #OF",
    "unhandled #BR",
    "unhandled #UD",
    "unhandled #NM",
    "double fault",
    "unhandled vector 9",
    "unhandled #TS",
    "unhandled #NP",
    "unhandled #SS",
    "unhandled #GP",
    "unhandled #PF",
    "unhandled vector 15",
    "unhandled #MF",
    "unhandled #AC",
    "machine check",
    "unhandled #XM",
    "unhandled #VE",
    "unhandled #CP",
    "unhandled vector 22",
    "unhandled vector 23",
    "unhandled vector 24",
    "unhandled vector 25",
    "unhandled vector 26",
    "unhandled vector 27",
    "unhandled vector 28",
    "unhandled vector 29",
    "unhandled vector 30",
    "unhandled vector 31",
];

fn set_gpr(r: &mut Regs, reg: u8, value: u64) {
    let slot = match reg {
        0 => &mut r.rax,
        1 => &mut r.rcx,
        2 => &mut r.rdx,
        3 => &mut r.rbx,
        4 => &mut r.rsp,
        5 => &mut r.rbp,
        6 => &mut r.rsi,
        7 => &mut r.rdi,
        8 => &mut r.r8,
        9 => &mut r.r9,
        10 => &mut r.r10,
        11 => &mut r.r11,
        12 => &mut r.r12,
        13 => &mut r.r13,
        14 => &mut r.r14,
        _ => &mut r.r15,
    };
    *slot = value;
}

/// Acts on a guest entry's outcome, then prepares the frame for the return to a guest. A
/// vCPU that cannot be returned to crashes its domain, as an outcome like any other, so the
/// next choice goes through the same steps (an HVM vCPU to `run_hvm`).
fn after(rt: &mut Runtime, frame: &mut Regs, mut outcome: Outcome) {
    loop {
        // The common case (a hypercall returning to its caller) has nothing to apply.
        if outcome != Outcome::Continue {
            let before = rt.current;
            apply(rt, frame, outcome);
            // Only a switch can make an HVM vCPU current (this entry came from a PV one).
            if rt.current != before {
                run_hvm(rt, frame);
            }
        }
        match prepare_return(rt, frame) {
            Ok(()) => return,
            Err(why) => outcome = Outcome::Crash(why),
        }
    }
}

/// Makes the current PV vCPU's context live and delivers its pending event upcall. The
/// vCPU's address space must be live before an upcall frame is written to its stack (after a
/// switch, CR3 still holds the previous vCPU's); the upcall may change its mode.
fn prepare_return(rt: &mut Runtime, frame: &mut Regs) -> Result<(), &'static str> {
    load_context(rt)?;
    if deliver_events(rt, frame)? {
        load_context(rt)?;
    }
    Ok(())
}

/// While the scheduler's choice is an HVM vCPU, runs it (VMX) and applies its outcome; returns
/// when a PV vCPU is current, whose frame the caller then returns to.
fn run_hvm(rt: &mut Runtime, frame: &mut Regs) {
    while let Some((d, v)) = rt.current {
        if rt.domains[d].hvm.is_none() {
            return;
        }
        let outcome = super::vmx::run_vcpu(&mut rt.domains, d, v, &mut Machine);
        console_input::poll(&mut rt.domains);
        apply(rt, frame, outcome);
    }
}

/// Acts on a guest entry's outcome: switches vCPUs, stops domains.
fn apply(rt: &mut Runtime, frame: &mut Regs, outcome: Outcome) {
    let cur = rt.current;
    match outcome {
        Outcome::Continue => {}
        Outcome::Yield => {
            let now = time::now_ns();
            sched::update(&mut rt.domains, now);
            if sched::pick_next(&rt.domains, cur).is_some_and(|n| Some(n) != cur) {
                schedule(rt, frame, cur);
            } else if let Some((d, v)) = cur {
                rt.domains[d].vcpus[v].slice_left = SLICE_TICKS;
            }
        }
        Outcome::Block => schedule(rt, frame, cur),
        Outcome::Shutdown(reason) => {
            if let Some((d, _)) = cur {
                if reason == ShutdownReason::Crash {
                    crash(rt, d, frame, "the domain asked to crash");
                } else {
                    info!("d{}: shut down ({reason:?})", rt.domains[d].id);
                    stop(rt, d, DomainState::Shutdown(reason));
                }
            }
            schedule(rt, frame, cur);
        }
        Outcome::Crash(why) => {
            if let Some((d, _)) = cur {
                crash(rt, d, frame, why);
            }
            schedule(rt, frame, cur);
        }
        Outcome::Destroy(id) => {
            if let Some(t) = rt.domains.iter().position(|d| d.id == id) {
                info!(
                    "d{id} ({}): destroyed by the control domain",
                    rt.domains[t].name
                );
                stop(rt, t, DomainState::Destroyed);
            }
        }
    }
}

fn crash(rt: &mut Runtime, d: usize, frame: &Regs, why: &str) {
    let dom = &rt.domains[d];
    error!("d{} ({}) crashed: {why}", dom.id, dom.name);
    // An HVM vCPU's registers live in hv's VMX state, not in the PV frame.
    let hvm = super::vmx::guest_registers(dom.id);
    let frame = hvm.as_ref().unwrap_or(frame);
    error!(
        "d{}: rip {:016x} rsp {:016x} rflags {:016x} cs {:04x} ss {:04x}",
        dom.id, frame.rip, frame.rsp, frame.rflags, frame.cs, frame.ss
    );
    error!(
        "d{}: rax {:016x} rbx {:016x} rcx {:016x} rdx {:016x} rsi {:016x} rdi {:016x}",
        dom.id, frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi
    );
    stop(rt, d, DomainState::Crashed);
}

/// Ends domain `d`: its ports are closed (interdomain peers left unbound) and everything it
/// holds is released.
fn stop(rt: &mut Runtime, d: usize, state: DomainState) {
    let Some((dom, mut peers)) = Peers::split(&mut rt.domains, d) else {
        return;
    };
    dom.state = state;
    for v in dom.vcpus.iter_mut() {
        v.state = VcpuState::Down;
    }
    hypercall::event::close_all(dom, &mut peers);
    super::vmx::destroy_domain(dom.id);
    super::mmu::teardown(dom);
}

/// Saves the current vCPU (if it still runs), picks the next one, idling until one is
/// runnable, and loads it into `frame`. Powers off when no domain is left.
fn schedule(rt: &mut Runtime, frame: &mut Regs, current: Option<VcpuRef>) {
    if let Some((d, v)) = current {
        let vcpu = &mut rt.domains[d].vcpus[v];
        vcpu.regs = *frame;
        vcpu.cpu_time_ns += time::now_ns().saturating_sub(rt.since);
        fpu_save(&mut vcpu.fpu);
    }
    rt.current = None;
    let next = loop {
        let now = time::now_ns();
        sched::update(&mut rt.domains, now);
        if let Some(n) = sched::pick_next(&rt.domains, current) {
            break n;
        }
        if !rt.domains.iter().any(|d| d.is_alive()) {
            finish(rt);
        }
        // Nothing runnable: wait for the tick (or another interrupt) with interrupts on.
        cpu::enable_and_halt();
        x86_64::instructions::interrupts::disable();
        console_input::poll(&mut rt.domains);
    };
    let (d, v) = next;
    let dom = &mut rt.domains[d];
    let vcpu = &mut dom.vcpus[v];
    vcpu.slice_left = SLICE_TICKS;
    *frame = vcpu.regs;
    fpu_restore(&vcpu.fpu);
    rt.loaded.ts = false;
    update_time(dom.shared, v);
    rt.current = Some(next);
    rt.since = time::now_ns();
}

/// Every domain has stopped: report and power off.
fn finish(rt: &Runtime) -> ! {
    let clean = rt.boot_failures == 0
        && rt.domains.iter().all(|d| {
            matches!(
                d.state,
                DomainState::Shutdown(ShutdownReason::Poweroff) | DomainState::Destroyed
            )
        });
    for d in &rt.domains {
        info!("d{} ({}): {:?}", d.id, d.name, d.state);
    }
    let after = free_frames();
    info!(
        "Frames free: {} before the domains were built, {after} after they were torn down",
        rt.free_before
    );
    if after != rt.free_before {
        error!(
            "{} frames were not returned",
            rt.free_before.abs_diff(after)
        );
        power_off(Status::Failure);
    }
    power_off(if clean {
        Status::Clean
    } else {
        Status::Failure
    })
}

/// Delivers a pending event upcall to the current vCPU if it can take one; returns whether
/// the frame changed.
fn deliver_events(rt: &mut Runtime, frame: &mut Regs) -> Result<bool, &'static str> {
    let Some((d, v)) = rt.current else {
        return Ok(false);
    };
    let dom = &mut rt.domains[d];
    let info = &mut dom.shared.vcpu_info[v];
    if info.evtchn_upcall_pending == 0 || info.evtchn_upcall_mask != 0 {
        return Ok(false);
    }
    let vcpu = &mut dom.vcpus[v];
    let cb = vcpu.pv.event_callback;
    if cb.address == 0 {
        return Ok(false);
    }
    let mut mem = LiveGuest::new(&vcpu.pv, &mut rt.loaded.cr3);
    if vcpu
        .pv
        .bounce(frame, info, &mut mem, cb.address, None, true)
        .is_err()
    {
        warn!("d{}: cannot deliver an event upcall", dom.id);
        return Err("event upcall frame not writable");
    }
    Ok(true)
}

/// Loads CR3, FS/GS bases, CR0.TS and the GDT frames for the current vCPU's mode, where
/// they changed. This runs on every return to a guest, so each item is one comparison.
fn load_context(rt: &mut Runtime) -> Result<(), &'static str> {
    let Some((d, v)) = rt.current else {
        return Ok(());
    };
    let pv = &rt.domains[d].vcpus[v].pv;
    let root = pv
        .active_root()
        .ok_or("no page-table root for the current mode")?;
    let have = &mut rt.loaded;
    let cr3 = root.paddr();
    if cr3 != have.cr3 {
        load_cr3(cr3);
        have.cr3 = cr3;
    }
    let gs = pv.active_gs_base();
    if gs != have.gs {
        entry::set_guest_gs_base(gs);
        have.gs = gs;
    }
    if pv.fs_base != have.fs {
        x86_64::registers::model_specific::FsBase::write(x86_64::VirtAddr::new_truncate(
            pv.fs_base,
        ));
        have.fs = pv.fs_base;
    }
    if pv.cr0_ts != have.ts {
        // SAFETY: CR0.TS only makes the guest's next FPU instruction raise #NM (delivered to
        // it); hv itself uses no FPU or SSE instructions.
        unsafe {
            x86_64::registers::control::Cr0::update(|c| {
                c.set(
                    x86_64::registers::control::Cr0Flags::TASK_SWITCHED,
                    pv.cr0_ts,
                )
            })
        };
        have.ts = pv.cr0_ts;
    }
    let frames = pv.mm.gdt_frames();
    let same_gdt =
        frames.len() == have.gdt_len && frames.iter().zip(&have.gdt).all(|(f, l)| f.0 == *l);
    if !same_gdt {
        for (slot, f) in have.gdt.iter_mut().zip(frames) {
            *slot = f.0;
        }
        have.gdt_len = frames.len();
        if let Err(e) = super::gdt::show_guest_frames(&have.gdt[..have.gdt_len]) {
            error!("cannot map the guest GDT: {e:?}");
            power_off(Status::Failure);
        }
    }
    Ok(())
}

/// Updates a vCPU's `vcpu_time_info` (Xen's version protocol: odd while changing).
fn update_time(shared: &mut SharedInfo, vcpu: usize) {
    let Some(info) = shared.vcpu_info.get_mut(vcpu) else {
        return;
    };
    let scale = time::scale();
    let t = &mut info.time;
    t.version = t.version.wrapping_add(1);
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    t.tsc_timestamp = rdtsc();
    t.system_time = time::ns_at(t.tsc_timestamp);
    t.tsc_to_system_mul = scale.mul;
    t.tsc_shift = scale.shift;
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    t.version = t.version.wrapping_add(1);
}

fn fpu_save(state: &mut FpuState) {
    let was_ts = x86_64::registers::control::Cr0::read()
        .contains(x86_64::registers::control::Cr0Flags::TASK_SWITCHED);
    // SAFETY: CLTS only allows FPU instructions; the area is 512 bytes, 16-byte aligned.
    unsafe {
        core::arch::asm!("clts", options(nostack));
        core::arch::asm!("fxsave64 [{}]", in(reg) state.0.as_mut_ptr(), options(nostack));
    }
    if was_ts {
        // SAFETY: restores the guest's CR0.TS as it was.
        unsafe {
            x86_64::registers::control::Cr0::update(|c| {
                c.insert(x86_64::registers::control::Cr0Flags::TASK_SWITCHED)
            })
        };
    }
}

fn fpu_restore(state: &FpuState) {
    // SAFETY: the area holds an FXSAVE image (hv's default, or one FXSAVE wrote) with
    // reserved MXCSR bits clear; CLTS only allows FPU instructions (`load_context` sets
    // CR0.TS again for a guest that wants it).
    unsafe {
        core::arch::asm!("clts", options(nostack));
        core::arch::asm!("fxrstor64 [{}]", in(reg) state.0.as_ptr(), options(nostack));
    }
}

fn free_frames() -> u64 {
    super::start::FRAMES
        .lock()
        .as_ref()
        .map_or(0, |f| f.free_frames())
}

/// Builds every domain in the bundle; returns how many failed.
pub fn build_all(specs: &[(u16, DomainSpec<'_>)]) -> usize {
    RUNTIME.lock().free_before = free_frames();
    let control = specs.iter().find(|(_, s)| s.privileged).map(|&(id, _)| id);
    let mut failed = 0;
    for (id, spec) in specs {
        if let Err(BuildFailure(why)) = build_domain(*id, spec, control) {
            error!("d{id} ({}) not built: {why}", spec.name);
            failed += 1;
        }
    }
    failed
}
