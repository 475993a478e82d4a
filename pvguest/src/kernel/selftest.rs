//! The selftest: each check exercises one part of the hypercall ABI and asserts on results
//! that any correct implementation must give. One line per check, then the summary and the
//! verdict (see `pvguest::selftest`).

use alloc::format;
use alloc::vec::Vec;
use core::arch::asm;
use core::hint::black_box;
use core::ptr::addr_of;

use hypercall_abi::elfnote::XenFeature;
use hypercall_abi::errno::{Errno, HypercallError};
use hypercall_abi::event_channel::{EvtchnBindVirq, EvtchnClose, EvtchnUnmask, Virq};
use hypercall_abi::memory::{E820Entry, E820Type, MemoryOp, XenMemoryMap};
use hypercall_abi::vcpu::VcpuOp;
use hypercall_abi::xen::{
    Hypercall, MmuextCmd, MmuextOp, MulticallEntry, SegBase, XenCapabilitiesInfo, XenExtraversion,
    XenFeatureInfo, XenPlatformParameters, XenVersionCmd, DOMID_SELF, FLAT_KERNEL_SS64,
    HYPERVISOR_VIRT_START, MACH2PHYS_VIRT_START, SIF_INITDOMAIN, SIF_PRIVILEGED,
    START_INFO_MAGIC_X86_64, UVMF_INVLPG,
};
use pvguest::ensure;
use pvguest::paging::PTE_WRITABLE;
use pvguest::paging::{pte, pte_mfn, PF_PRESENT, PF_USER, PF_WRITE, PTE_PRESENT, PTE_USER};
use pvguest::selftest::{CheckResult, Tally};

use super::entry;
use super::mm::{self, update_va_mapping};
use super::traps::{self, Resume};
use super::user::{self, USER_CODE_VA};
use super::{pv, Kernel};

/// A fresh virtual address for the mapping checks (1 GiB: no bootstrap table covers it).
const TEST_VA: u64 = 0x4000_0000;
/// A canonical address nothing maps.
const UNMAPPED_VA: u64 = 0x0000_7fff_ffff_0000;
/// A hypercall number Xen does not implement.
const UNKNOWN_HYPERCALL: usize = 100;
/// A `sched_op` command Xen does not implement.
const UNKNOWN_SCHED_OP: u64 = 99;
/// How far ahead the timer check arms its timer.
const TIMER_DELAY_NS: u64 = 20_000_000;
/// How early a timer may fire (Xen batches timers within its slop).
const TIMER_SLOP_NS: u64 = 1_000_000;

type Check = fn(&mut Kernel) -> CheckResult;

const CHECKS: &[(&str, Check)] = &[
    ("start_of_day", start_of_day),
    ("heap", heap),
    ("frame_allocator", frame_allocator),
    ("xen_version", xen_version),
    ("extraversion", extraversion),
    ("capabilities", capabilities),
    ("get_features", get_features),
    ("platform_parameters", platform_parameters),
    ("current_reservation", current_reservation),
    ("maximum_ram_page", maximum_ram_page),
    ("memory_map", memory_map),
    ("machine_memory_map", machine_memory_map),
    ("m2p", m2p),
    ("bad_pointer", bad_pointer),
    ("unknown_hypercall", unknown_hypercall),
    ("unknown_sched_op", unknown_sched_op),
    ("int3", int3),
    ("ud2", ud2),
    ("forced_emulation_cpuid", forced_emulation_cpuid),
    ("page_tables", page_tables),
    ("mmuext_flush", mmuext_flush),
    ("page_fault", page_fault),
    ("stack_switch", stack_switch),
    ("fpu_taskswitch", fpu_taskswitch),
    ("set_segment_base", set_segment_base),
    ("vcpu_is_up", vcpu_is_up),
    ("multicall", multicall),
    ("timer_event", timer_event),
    ("vcpu_time", vcpu_time),
    ("sched_yield", sched_yield),
    ("user_task", user_task),
];

/// Runs every check; returns whether all passed.
pub fn run(k: &mut Kernel) -> bool {
    let mut tally = Tally::default();
    for &(name, check) in CHECKS {
        let result = check(k);
        println!("{}", tally.record(name, &result));
    }
    println!("{}", tally.summary());
    println!("{}", tally.verdict());
    tally.success()
}

fn errno(e: HypercallError) -> Option<Errno> {
    match e {
        HypercallError::Errno(n) => Some(n),
        HypercallError::Other(_) => None,
    }
}

fn start_of_day(k: &mut Kernel) -> CheckResult {
    // Xen appends "p" when the kernel's PAE note says "yes": "xen-3.0-x86_64p".
    ensure!(
        k.si.magic_bytes()
            .starts_with(START_INFO_MAGIC_X86_64.as_bytes()),
        "start_info magic {:?}",
        core::str::from_utf8(k.si.magic_bytes())
    );
    // SAFETY: the hypercall page is part of the image and readable.
    let first = unsafe { core::ptr::read_volatile(addr_of!(entry::hypercall_page[0])) };
    ensure!(first != 0xc3, "hypercall page not filled");
    ensure!(k.si.nr_pages > 0, "nr_pages is 0");
    ensure!(k.si.nr_pt_frames > 0, "nr_pt_frames is 0");
    ensure!(
        k.si.pt_base.is_multiple_of(4096) && k.si.mfn_list.is_multiple_of(8),
        "pt_base {:#x} / mfn_list {:#x} misaligned",
        k.si.pt_base,
        k.si.mfn_list
    );
    Ok(())
}

fn heap(_: &mut Kernel) -> CheckResult {
    let v: Vec<u64> = (1..=1000).collect();
    let sum: u64 = black_box(&v).iter().sum();
    ensure!(sum == 500_500, "sum {sum}");
    Ok(())
}

fn frame_allocator(k: &mut Kernel) -> CheckResult {
    let before = k.mm.frames_available();
    let a = k.mm.alloc_frame()?;
    let b = k.mm.alloc_frame()?;
    ensure!(
        a.pfn != b.pfn && a.mfn != b.mfn,
        "two allocations gave {a:?} and {b:?}"
    );
    ensure!(a.pfn < k.si.nr_pages, "pfn {:#x} beyond nr_pages", a.pfn);
    k.mm.free_frame(a)?;
    k.mm.free_frame(b)?;
    ensure!(
        k.mm.frames_available() == before,
        "{} frames free after alloc+free, {before} before",
        k.mm.frames_available()
    );
    Ok(())
}

fn xen_version(_: &mut Kernel) -> CheckResult {
    let (major, minor) = pv::hypercalls()
        .xen_version()
        .map_err(|e| format!("xen_version: {e}"))?;
    ensure!(major >= 3, "version {major}.{minor}");
    Ok(())
}

fn extraversion(_: &mut Kernel) -> CheckResult {
    let mut extra: XenExtraversion = [0xff; 16];
    pv::hypercalls()
        .xen_version_extraversion(&mut extra)
        .map_err(|e| format!("XENVER_extraversion: {e}"))?;
    ensure!(extra.contains(&0), "not NUL-terminated: {extra:?}");
    Ok(())
}

fn capabilities(_: &mut Kernel) -> CheckResult {
    let mut caps: XenCapabilitiesInfo = [0; 1024];
    pv::hypercalls()
        .xen_version_capabilities(&mut caps)
        .map_err(|e| format!("XENVER_capabilities: {e}"))?;
    let end = caps
        .iter()
        .position(|&b| b == 0)
        .ok_or("not NUL-terminated")?;
    let text = core::str::from_utf8(&caps[..end]).map_err(|_| "not UTF-8")?;
    ensure!(
        text.split(' ').any(|c| c == START_INFO_MAGIC_X86_64),
        "{text:?} lacks {START_INFO_MAGIC_X86_64}"
    );
    Ok(())
}

fn get_features(k: &mut Kernel) -> CheckResult {
    let hc = pv::hypercalls();
    let mut fi = XenFeatureInfo {
        submap_idx: 0,
        submap: 0,
    };
    hc.xen_version_get_features(&mut fi)
        .map_err(|e| format!("submap 0: {e}"))?;
    let first = fi.submap;
    fi.submap = 0;
    hc.xen_version_get_features(&mut fi)
        .map_err(|e| format!("submap 0 again: {e}"))?;
    ensure!(fi.submap == first, "{first:#x} then {:#x}", fi.submap);
    let has = |f: XenFeature| first & f.submap_bit() != 0;
    ensure!(
        !has(XenFeature::AutoTranslatedPhysmap),
        "a PV guest reported auto_translated_physmap ({first:#x})"
    );
    ensure!(
        !has(XenFeature::SupervisorModeKernel),
        "a ring-3 kernel reported supervisor_mode_kernel ({first:#x})"
    );
    ensure!(
        has(XenFeature::Dom0) == (k.si.flags & SIF_INITDOMAIN != 0),
        "dom0 feature {} but SIF_INITDOMAIN {}",
        has(XenFeature::Dom0),
        k.si.flags & SIF_INITDOMAIN != 0
    );
    let mut beyond = XenFeatureInfo {
        submap_idx: 1000,
        submap: 0,
    };
    let r = hc.xen_version_get_features(&mut beyond);
    ensure!(
        r.is_err(),
        "submap 1000 accepted: {r:?} ({:#x})",
        beyond.submap
    );
    Ok(())
}

fn platform_parameters(_: &mut Kernel) -> CheckResult {
    let mut p = XenPlatformParameters { virt_start: 0 };
    pv::hypercalls()
        .xen_version_platform_parameters(&mut p)
        .map_err(|e| format!("XENVER_platform_parameters: {e}"))?;
    ensure!(
        p.virt_start != 0 && p.virt_start <= HYPERVISOR_VIRT_START,
        "virt_start {:#x}",
        p.virt_start
    );
    Ok(())
}

fn current_reservation(k: &mut Kernel) -> CheckResult {
    let mut dom = DOMID_SELF;
    // SAFETY: XENMEM_current_reservation reads one domid_t and changes nothing.
    let pages = unsafe { pv::hypercalls().memory_op(MemoryOp::CurrentReservation, &mut dom) }
        .map_err(|e| format!("XENMEM_current_reservation: {e}"))?;
    ensure!(
        pages == k.si.nr_pages,
        "{pages:#x} pages, start_info says {:#x}",
        k.si.nr_pages
    );
    Ok(())
}

fn maximum_ram_page(k: &mut Kernel) -> CheckResult {
    // SAFETY: XENMEM_maximum_ram_page takes no argument and changes nothing.
    let ret = unsafe {
        pv::hypercalls().hypercall2(Hypercall::MemoryOp, MemoryOp::MaximumRamPage as u64, 0)
    };
    ensure!(ret > 0, "returned {ret}");
    let root = k.mm.kernel_root();
    ensure!(
        root <= ret as u64,
        "our L4 is mfn {root:#x}, above maximum_ram_page {ret:#x}"
    );
    Ok(())
}

/// Issues `XENMEM_memory_map` (`cmd`) or `XENMEM_machine_memory_map`; returns the entries.
fn e820(cmd: MemoryOp) -> Result<Vec<E820Entry>, HypercallError> {
    let empty = E820Entry {
        addr: 0,
        size: 0,
        kind: 0,
    };
    let mut entries = alloc::vec![empty; 128];
    let mut map = XenMemoryMap {
        nr_entries: entries.len() as u32,
        pad0: 0,
        buffer: hypercall_abi::GuestHandle::from_ptr(entries.as_mut_ptr()),
    };
    // SAFETY: both commands write at most `nr_entries` entries to `entries` and the count
    // to `map`, and change nothing else.
    unsafe { pv::hypercalls().memory_op(cmd, &mut map) }?;
    entries.truncate(map.nr_entries as usize);
    Ok(entries)
}

/// Bytes of RAM in an E820 map.
fn ram_bytes(entries: &[E820Entry]) -> u64 {
    entries
        .iter()
        .filter(|e| e.kind == E820Type::Ram.raw())
        .map(|e| e.size)
        .sum()
}

fn memory_map(k: &mut Kernel) -> CheckResult {
    match e820(MemoryOp::MemoryMap) {
        // Xen keeps no pseudo-physical map for a PV initial domain and says so with
        // -ENOSYS (Xen 4.17); such a domain's memory is start_info.nr_pages.
        Err(e) if errno(e) == Some(Errno::ENOSYS) => Ok(()),
        Err(e) => Err(format!("XENMEM_memory_map: {e}")),
        Ok(map) => {
            let ram = ram_bytes(&map);
            ensure!(
                ram >= k.si.nr_pages * 4096,
                "{} entries with {ram:#x} bytes of RAM for {:#x} pages",
                map.len(),
                k.si.nr_pages
            );
            Ok(())
        }
    }
}

fn machine_memory_map(k: &mut Kernel) -> CheckResult {
    let r = e820(MemoryOp::MachineMemoryMap);
    if k.si.flags & SIF_PRIVILEGED == 0 {
        ensure!(r.is_err(), "an unprivileged domain read the machine map");
        return Ok(());
    }
    let map = r.map_err(|e| format!("XENMEM_machine_memory_map: {e}"))?;
    let ram = ram_bytes(&map);
    ensure!(
        ram >= k.si.nr_pages * 4096,
        "{} entries with {ram:#x} bytes of RAM, less than this domain's {:#x} pages",
        map.len(),
        k.si.nr_pages
    );
    Ok(())
}

fn m2p(k: &mut Kernel) -> CheckResult {
    let pfn = addr_of!(entry::__image_end) as u64 >> 12;
    let mfn = k.mm.mfn(pfn)?;
    // SAFETY: Xen maps its read-only M2P table at MACH2PHYS_VIRT_START for PV guests; `mfn`
    // is one of our frames, so its slot exists.
    let back = unsafe { ((MACH2PHYS_VIRT_START + mfn * 8) as *const u64).read_volatile() };
    ensure!(
        back == pfn,
        "p2m[{pfn:#x}] = {mfn:#x} but m2p[{mfn:#x}] = {back:#x}"
    );
    Ok(())
}

fn bad_pointer(_: &mut Kernel) -> CheckResult {
    // SAFETY: Xen must refuse to write through an unmapped address.
    let ret = unsafe {
        pv::hypercalls().hypercall2(
            Hypercall::XenVersion,
            XenVersionCmd::Extraversion as u64,
            UNMAPPED_VA,
        )
    };
    ensure!(ret == Errno::EFAULT.as_ret(), "returned {ret}, not -EFAULT");
    Ok(())
}

/// Calls hypercall slot `nr` of the hypercall page with two arguments.
fn raw_hypercall2(nr: usize, a1: u64, a2: u64) -> i64 {
    let stub = pv::hypercalls().base() + nr * 32;
    let ret: i64;
    // SAFETY: every slot of the filled hypercall page is a stub with the standard
    // convention; the callers pass numbers or commands Xen rejects, so nothing changes.
    unsafe {
        asm!(
            "call {stub}",
            stub = in(reg) stub,
            lateout("rax") ret,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            out("rdx") _,
            out("r10") _,
            out("r8") _,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

fn unknown_hypercall(_: &mut Kernel) -> CheckResult {
    let ret = raw_hypercall2(UNKNOWN_HYPERCALL, 0, 0);
    ensure!(ret == Errno::ENOSYS.as_ret(), "returned {ret}, not -ENOSYS");
    Ok(())
}

fn unknown_sched_op(_: &mut Kernel) -> CheckResult {
    // SAFETY: an unknown command changes nothing.
    let ret = unsafe { pv::hypercalls().hypercall2(Hypercall::SchedOp, UNKNOWN_SCHED_OP, 0) };
    ensure!(
        ret == Errno::ENOSYS.as_ret() || ret == Errno::EINVAL.as_ret(),
        "returned {ret}, not -ENOSYS or -EINVAL"
    );
    Ok(())
}

fn int3(_: &mut Kernel) -> CheckResult {
    traps::expect(3, Resume::Unchanged);
    // SAFETY: the #BP handler is armed and resumes after the int3.
    unsafe { entry::probe_int3() };
    let rec = traps::take_record();
    let resume = addr_of!(entry::probe_int3_resume) as u64;
    ensure!(rec.hits == 1, "{} #BP deliveries", rec.hits);
    ensure!(
        rec.rip == resume,
        "rip {:#x}, expected {resume:#x}",
        rec.rip
    );
    ensure!(
        rec.cs & 3 == 0,
        "kernel-mode frame has cs {:#x} (RPL should read 0)",
        rec.cs
    );
    Ok(())
}

fn ud2(_: &mut Kernel) -> CheckResult {
    traps::expect(6, Resume::Skip(2));
    // SAFETY: the #UD handler is armed and skips the two-byte ud2.
    unsafe { entry::probe_ud2() };
    let rec = traps::take_record();
    let insn = addr_of!(entry::probe_ud2_insn) as u64;
    ensure!(rec.hits == 1, "{} #UD deliveries", rec.hits);
    ensure!(rec.rip == insn, "rip {:#x}, expected {insn:#x}", rec.rip);
    Ok(())
}

/// CPUID through Xen's forced-emulation prefix.
fn xen_cpuid(leaf: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u64, u32, u32);
    // SAFETY: Xen recognises `ud2; "xen"; cpuid`, emulates the cpuid and resumes after it;
    // rbx is preserved around the instruction for LLVM.
    unsafe {
        asm!(
            "xchg {tmp}, rbx",
            "ud2",
            ".ascii \"xen\"",
            "cpuid",
            "xchg {tmp}, rbx",
            tmp = inout(reg) 0u64 => b,
            inout("eax") leaf => a,
            inout("ecx") 0u32 => c,
            out("edx") d,
        );
    }
    [a, b as u32, c, d]
}

/// Plain CPUID.
fn native_cpuid(leaf: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u64, u32, u32);
    // SAFETY: cpuid only reads processor identification; rbx is preserved for LLVM.
    unsafe {
        asm!(
            "xchg {tmp}, rbx",
            "cpuid",
            "xchg {tmp}, rbx",
            tmp = inout(reg) 0u64 => b,
            inout("eax") leaf => a,
            inout("ecx") 0u32 => c,
            out("edx") d,
        );
    }
    [a, b as u32, c, d]
}

fn forced_emulation_cpuid(_: &mut Kernel) -> CheckResult {
    let forced = xen_cpuid(0);
    let native = native_cpuid(0);
    ensure!(forced[0] >= 1, "max leaf {:#x}", forced[0]);
    ensure!(
        forced[1..] == native[1..],
        "vendor {:x?} emulated vs {:x?} native",
        &forced[1..],
        &native[1..]
    );
    let xen = xen_cpuid(0x4000_0000);
    let mut sig = [0u8; 12];
    for (chunk, reg) in sig.chunks_mut(4).zip(&xen[1..]) {
        chunk.copy_from_slice(&reg.to_le_bytes());
    }
    ensure!(&sig == b"XenVMMXenVMM", "leaf 0x40000000 signature {sig:?}");
    ensure!(xen[0] >= 0x4000_0002, "leaf 0x40000000 eax {:#x}", xen[0]);
    Ok(())
}

fn page_tables(k: &mut Kernel) -> CheckResult {
    let root = k.mm.kernel_root();
    let data = k.mm.alloc_frame()?;
    let rw = PTE_PRESENT | PTE_WRITABLE | PTE_USER;
    // First mapping: built entry by entry with mmu_update (new L2 and L1 tables).
    k.mm.map(root, TEST_VA, pte(data.mfn, rw))?;
    let leaf =
        k.mm.leaf_entry(root, TEST_VA)?
            .ok_or("no L1 after mapping")?;
    ensure!(
        pte_mfn(leaf) == data.mfn,
        "leaf {leaf:#x}, frame {:#x}",
        data.mfn
    );
    let p = TEST_VA as *mut u64;
    // SAFETY: TEST_VA now maps `data`, a cleared frame nothing else uses.
    let first = unsafe {
        let cleared = p.read_volatile();
        p.write_volatile(0x1234_5678_9abc_def0);
        (cleared, p.read_volatile())
    };
    ensure!(first == (0, 0x1234_5678_9abc_def0), "read {first:#x?}");
    // Second mapping of the same frame with update_va_mapping.
    let alias = TEST_VA + 4096;
    update_va_mapping(alias, pte(data.mfn, rw), UVMF_INVLPG)?;
    let q = alias as *mut u64;
    // SAFETY: `alias` maps the same frame; no Rust reference points into it.
    let seen = unsafe {
        let through_alias = q.read_volatile();
        q.add(1).write_volatile(0x55);
        (through_alias, p.add(1).read_volatile())
    };
    ensure!(
        seen == (0x1234_5678_9abc_def0, 0x55),
        "aliases disagree: {seen:#x?}"
    );
    // Unmap both: one with update_va_mapping, one with mmu_update and an INVLPG.
    update_va_mapping(alias, 0, UVMF_INVLPG)?;
    k.mm.map(root, TEST_VA, 0)?;
    mm::mmuext(MmuextOp::new(MmuextCmd::InvlpgLocal, TEST_VA, 0))?;
    for va in [TEST_VA, alias] {
        let e = k.mm.leaf_entry(root, va)?;
        ensure!(e == Some(0), "{va:#x} still mapped: {e:#x?}");
    }
    k.mm.free_frame(data)?;
    Ok(())
}

fn mmuext_flush(_: &mut Kernel) -> CheckResult {
    mm::mmuext(MmuextOp::new(MmuextCmd::TlbFlushLocal, 0, 0))?;
    mm::mmuext(MmuextOp::new(MmuextCmd::InvlpgLocal, TEST_VA, 0))?;
    Ok(())
}

fn page_fault(_: &mut Kernel) -> CheckResult {
    let fixup = addr_of!(entry::probe_read_fixup) as u64;
    traps::expect(traps::VECTOR_PF, Resume::At(fixup));
    // SAFETY: TEST_VA is unmapped (page_tables removed it); the #PF handler is armed and
    // resumes at the probe's fixup.
    let value = unsafe { entry::probe_read(TEST_VA) };
    let rec = traps::take_record();
    let insn = addr_of!(entry::probe_read_insn) as u64;
    ensure!(rec.hits == 1, "{} #PF deliveries", rec.hits);
    ensure!(value == u64::MAX, "probe read {value:#x}");
    ensure!(rec.rip == insn, "rip {:#x}, expected {insn:#x}", rec.rip);
    ensure!(
        rec.cr2 == TEST_VA,
        "cr2 {:#x}, expected {TEST_VA:#x}",
        rec.cr2
    );
    ensure!(
        rec.error_code & (PF_PRESENT | PF_WRITE | PF_USER) == 0,
        "error code {:#x} (want a kernel-mode read of a non-present page)",
        rec.error_code
    );
    Ok(())
}

fn stack_switch(_: &mut Kernel) -> CheckResult {
    let top = addr_of!(entry::kernel_stack_top) as u64;
    // SAFETY: `kernel_stack_top` is the top of a stack reserved for entries from user mode.
    unsafe { pv::hypercalls().stack_switch(u64::from(FLAT_KERNEL_SS64), top) }
        .map_err(|e| format!("stack_switch: {e}"))?;
    Ok(())
}

fn fpu_taskswitch(_: &mut Kernel) -> CheckResult {
    // SAFETY: setting the virtual CR0.TS only makes the next FPU instruction fault.
    let ret = unsafe { pv::hypercalls().hypercall1(Hypercall::FpuTaskswitch, 1) };
    ensure!(ret == 0, "fpu_taskswitch(1) returned {ret}");
    traps::expect(traps::VECTOR_NM, Resume::Unchanged);
    // SAFETY: the #NM handler is armed; it clears TS and the instruction is retried.
    unsafe { entry::probe_fpu() };
    let rec = traps::take_record();
    let insn = addr_of!(entry::probe_fpu_insn) as u64;
    ensure!(rec.hits == 1, "{} #NM deliveries", rec.hits);
    ensure!(rec.rip == insn, "rip {:#x}, expected {insn:#x}", rec.rip);
    // With TS clear again the instruction must not fault (the handler is disarmed now, so
    // a fault would stop the run).
    // SAFETY: fnop has no effect.
    unsafe { entry::probe_fpu() };
    Ok(())
}

static FS_TARGET: [u64; 2] = [0x1111_2222_3333_4444, 0x5eed_f00d_cafe_beef];

fn set_segment_base(_: &mut Kernel) -> CheckResult {
    let hc = pv::hypercalls();
    let base = FS_TARGET.as_ptr() as u64;
    // SAFETY: the kernel uses no FS-relative data; the base is reset below.
    let ret = unsafe { hc.hypercall2(Hypercall::SetSegmentBase, SegBase::Fs as u64, base) };
    ensure!(ret == 0, "set_segment_base(FS) returned {ret}");
    let value: u64;
    // SAFETY: FS now points at FS_TARGET, whose second word is at fs:8.
    unsafe { asm!("mov {}, qword ptr fs:[8]", out(reg) value, options(nostack, readonly)) };
    // SAFETY: as above.
    let ret = unsafe { hc.hypercall2(Hypercall::SetSegmentBase, SegBase::Fs as u64, 0) };
    ensure!(value == FS_TARGET[1], "fs:8 read {value:#x}");
    ensure!(ret == 0, "resetting the FS base returned {ret}");
    Ok(())
}

fn vcpu_is_up(_: &mut Kernel) -> CheckResult {
    let hc = pv::hypercalls();
    let mut unused = 0u64;
    // SAFETY: VCPUOP_is_up reads no argument and changes nothing.
    let up = unsafe { hc.vcpu_op(VcpuOp::IsUp, 0, &mut unused) };
    ensure!(up == Ok(1), "vcpu 0: {up:?}");
    // SAFETY: as above, for a vCPU that does not exist.
    let none = unsafe { hc.vcpu_op(VcpuOp::IsUp, 4096, &mut unused) };
    ensure!(none.is_err(), "vcpu 4096: {none:?}");
    Ok(())
}

fn multicall(_: &mut Kernel) -> CheckResult {
    let hc = pv::hypercalls();
    let call = |cmd: XenVersionCmd| MulticallEntry {
        op: Hypercall::XenVersion as u64,
        result: u64::MAX,
        args: [cmd as u64, 0, 0, 0, 0, 0],
    };
    let mut calls = [call(XenVersionCmd::Version), call(XenVersionCmd::Pagesize)];
    // SAFETY: the batch holds two side-effect-free xen_version calls; Xen writes only their
    // result fields.
    let ret = unsafe {
        hc.hypercall2(
            Hypercall::Multicall,
            calls.as_mut_ptr() as u64,
            calls.len() as u64,
        )
    };
    ensure!(ret == 0, "multicall returned {ret}");
    let (major, minor) = hc.xen_version().map_err(|e| format!("xen_version: {e}"))?;
    let version = hypercall_abi::xen::xen_version_encode(major, minor);
    ensure!(
        calls[0].result == u64::from(version),
        "XENVER_version gave {:#x} in the batch, {version:#x} alone",
        calls[0].result
    );
    ensure!(
        calls[1].result == 4096,
        "XENVER_pagesize gave {:#x}",
        calls[1].result
    );
    Ok(())
}

fn timer_event(_: &mut Kernel) -> CheckResult {
    let hc = pv::hypercalls();
    let mut bind = EvtchnBindVirq {
        virq: Virq::Timer.raw(),
        vcpu: 0,
        port: 0,
    };
    hc.event_channel_op(&mut bind)
        .map_err(|e| format!("bind_virq(VIRQ_TIMER): {e}"))?;
    let port = bind.port;
    let mut unused = 0u64;
    // SAFETY: stopping the default periodic timer only stops its VIRQ_TIMER events.
    unsafe { hc.vcpu_op(VcpuOp::StopPeriodicTimer, 0, &mut unused) }
        .map_err(|e| format!("stop_periodic_timer: {e}"))?;
    pv::clear_port(port);
    hc.event_channel_op(&mut EvtchnUnmask { port })
        .map_err(|e| format!("unmask port {port}: {e}"))?;

    let upcalls = traps::UPCALLS.load(core::sync::atomic::Ordering::SeqCst);
    let start = pv::system_time_ns();
    let deadline = start + TIMER_DELAY_NS;
    hc.set_timer_op(deadline)
        .map_err(|e| format!("set_timer_op: {e}"))?;
    let mut blocks = 0;
    while !pv::port_pending(port) && blocks < 1000 {
        // Blocking unmasks events; the upcall acknowledges the event and returns here.
        hc.sched_op_block().map_err(|e| format!("block: {e}"))?;
        pv::mask_events(true);
        blocks += 1;
    }
    let woke = pv::system_time_ns();
    let pending = pv::port_pending(port);
    let upcalls = traps::UPCALLS.load(core::sync::atomic::Ordering::SeqCst) - upcalls;
    pv::clear_port(port);
    hc.event_channel_op(&mut EvtchnClose { port })
        .map_err(|e| format!("close port {port}: {e}"))?;
    ensure!(pending, "port {port} not pending after {blocks} blocks");
    ensure!(
        woke + TIMER_SLOP_NS >= deadline,
        "woke at {woke} ns, {} ns before the deadline",
        deadline - woke
    );
    ensure!(upcalls >= 1, "no event upcall while blocked");
    Ok(())
}

fn vcpu_time(_: &mut Kernel) -> CheckResult {
    let (snap, _) = pv::time_snapshot();
    ensure!(
        snap.version.is_multiple_of(2),
        "odd version {}",
        snap.version
    );
    ensure!(snap.tsc_to_system_mul != 0, "tsc_to_system_mul is 0");
    let t1 = pv::system_time_ns();
    let tsc = pv::rdtsc();
    while pv::rdtsc().wrapping_sub(tsc) < 1_000_000 {
        core::hint::spin_loop();
    }
    let t2 = pv::system_time_ns();
    ensure!(t1 > 0 && t2 > t1, "system time {t1} then {t2}");
    Ok(())
}

fn sched_yield(_: &mut Kernel) -> CheckResult {
    let r = pv::hypercalls().sched_op_yield();
    ensure!(r == Ok(0), "yield: {r:?}");
    Ok(())
}

fn user_task(k: &mut Kernel) -> CheckResult {
    let (code, rec) = user::run_task(&mut k.mm)?;
    ensure!(rec.calls == 2, "{} syscalls", rec.calls);
    ensure!(rec.first_arg == 41, "first syscall's rdi {}", rec.first_arg);
    ensure!(rec.from_user == 3, "syscall frame cs RPL {}", rec.from_user);
    ensure!(
        (USER_CODE_VA..USER_CODE_VA + 4096).contains(&rec.user_rip),
        "syscall from rip {:#x}",
        rec.user_rip
    );
    let bottom = addr_of!(entry::kernel_stack_bottom) as u64;
    let top = addr_of!(entry::kernel_stack_top) as u64;
    ensure!(
        (bottom..top).contains(&rec.frame_addr),
        "syscall frame at {:#x}, not on the stack_switch stack",
        rec.frame_addr
    );
    ensure!(code == 42, "exit code {code}, expected 42");
    Ok(())
}
