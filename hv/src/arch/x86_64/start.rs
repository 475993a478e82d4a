//! Boot of the bootstrap CPU, from the trampoline's jump to `hv_start` to the run loop:
//! console, traps, boot information, memory, time, the boot bundle.

use super::boot::{PROTOCOL_MULTIBOOT2, PROTOCOL_PVH};
use super::layout::{DIRECTMAP_BASE, HV_VIRT_OFFSET};
use super::paging::{self, phys_to_virt, Builder};
use super::power::{power_off, Status};
use super::{apic, console, cpu, entry, gdt, pv, time, traps};
use crate::boot::{self, BootError, BootInfo, PhysRead};
use crate::bundle::{Bundle, DomainSpec};
use crate::cmdline::{parse_loglvl, Cmdline};
use crate::mm::{
    FrameAllocator, FrameTable, MemoryMap, Mfn, Owner, PageInfo, RegionKind, PAGE_SIZE,
};
use core::sync::atomic::{AtomicU64, Ordering};
use hypercall_abi::xen::MACH2PHYS_VIRT_START;
use linked_list_allocator::LockedHeap;
use log::{error, info, warn};
use spin::Mutex;
use x86_64::structures::paging::PageTableFlags as F;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// The machine's frame allocator (and through it the frame table).
pub static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);

/// The heap is 1/64 of RAM (hv's per-domain structures, e.g. its p2m copy at 1/512 of a
/// domain's memory, scale with RAM), between 2 MiB and 64 MiB, as one buddy block.
fn heap_order(total_ram: u64) -> u32 {
    let frames = (total_ram / 64 / PAGE_SIZE).max(1);
    frames.ilog2().clamp(9, 14)
}
/// Period of the scheduler tick.
const TICK_NS: u64 = 10_000_000;
/// Page-table frames set aside for building hv's tables (maps up to ~1 TiB of RAM).
const EARLY_PT_FRAMES: u64 = 64;
/// The boot tables map only the first 4 GiB, so early allocations must come from there.
const BOOT_MAPPED_LIMIT: u64 = 1 << 32;

unsafe extern "C" {
    static __image_start_phys: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __image_end: u8;
}

/// The address of a linker-script symbol.
macro_rules! sym {
    ($s:ident) => {
        (&raw const $s) as u64
    };
}

/// Physical memory below 4 GiB through the boot tables' direct map.
struct BootPhys;

impl PhysRead for BootPhys {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), BootError> {
        let end = paddr
            .checked_add(buf.len() as u64)
            .ok_or(BootError::Unreadable(paddr))?;
        if end > BOOT_MAPPED_LIMIT {
            return Err(BootError::Unreadable(paddr));
        }
        // SAFETY: `[paddr, end)` lies in the first 4 GiB, which the boot tables and hv's own
        // tables map at DIRECTMAP_BASE; reading physical memory has no side effects on RAM,
        // and loaders place their information in RAM.
        unsafe { core::ptr::copy_nonoverlapping(phys_to_virt(paddr), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}

/// A downward bump allocator over one RAM range, used before the frame allocator exists.
struct EarlyFrames {
    bottom: u64,
    top: u64,
    next: u64,
}

impl EarlyFrames {
    fn take(&mut self, bytes: u64) -> Option<u64> {
        let bytes = bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let at = self.next.checked_sub(bytes).filter(|&a| a >= self.bottom)?;
        self.next = at;
        Some(at)
    }
}

/// Entered from the trampoline on the boot stack, at hv's final virtual address.
#[unsafe(no_mangle)]
extern "C" fn hv_start(protocol: u32, info_paddr: u32, magic: u32) -> ! {
    time::mark_boot();
    console::init();
    gdt::init();
    traps::init();
    entry::init();
    // Let guests use SSE (FXSAVE/FXRSTOR, SIMD exceptions); hv itself is built soft-float.
    // SAFETY: setting OSFXSR/OSXMMEXCPT only enables instructions hv never executes itself.
    unsafe {
        x86_64::registers::control::Cr4::update(|c| {
            c.insert(
                x86_64::registers::control::Cr4Flags::OSFXSR
                    | x86_64::registers::control::Cr4Flags::OSXMMEXCPT_ENABLE,
            )
        })
    };

    let parsed = match protocol {
        PROTOCOL_PVH => boot::pvh::parse(&BootPhys, info_paddr.into()),
        PROTOCOL_MULTIBOOT2 => boot::multiboot2::parse(&BootPhys, magic, info_paddr.into()),
        _ => Err(BootError::BadMagic(protocol)),
    };
    let info = match parsed {
        Ok(info) => info,
        Err(e) => {
            error!("cannot use the boot information: {e}");
            power_off(Status::Failure);
        }
    };
    let cmdline = Cmdline::new(info.cmdline());
    if let Some(level) = cmdline.get("loglvl") {
        match parse_loglvl(level) {
            Some(l) => log::set_max_level(l),
            None => warn!("unknown loglvl={level}, keeping {}", console::DEFAULT_LEVEL),
        }
    }
    info!(
        "hv {} (Xen ABI 4.17) booted via {}",
        env!("CARGO_PKG_VERSION"),
        info.protocol
    );
    info!("Command line: {}", cmdline.as_str());

    let features = cpu::Features::detect();
    info!("{features}");
    paging::set_nx(features.nx);

    setup_memory(&info, &features);

    let status = match time::calibrate() {
        Ok((hz, method)) => {
            info!(
                "TSC: {}.{:03} MHz (calibrated via {method:?})",
                hz / 1_000_000,
                (hz / 1000) % 1000
            );
            match time::init_wallclock() {
                Some(secs) => info!("Wallclock: {secs} s since the Unix epoch (CMOS RTC)"),
                None => warn!("no readable RTC: guests see a wallclock of 0"),
            }
            setup_timer(&features)
        }
        Err(_) => {
            error!("TSC calibration failed: no CPUID 0x15 and no PIT");
            Status::Failure
        }
    };
    let (bundle_status, specs) = load_bundle(&info);
    let status = if status == Status::Clean {
        bundle_status
    } else {
        status
    };

    match cmdline.get("hvtest") {
        Some("ud2") => {
            info!("hvtest: executing ud2");
            // SAFETY: deliberately raises #UD to exercise the fatal-trap path; never returns.
            unsafe { core::arch::asm!("ud2") };
        }
        Some("timer") => timer_test(),
        Some(other) => warn!("unknown hvtest={other}"),
        None => {}
    }
    if status != Status::Clean && specs.is_empty() {
        power_off(status);
    }
    let failures = pv::build_all(&specs) + usize::from(status != Status::Clean);
    pv::run(failures)
}

fn setup_memory(info: &BootInfo, features: &cpu::Features) {
    let fw = FIRMWARE_MAP.call_once(|| info.memmap.clone());
    for r in fw.regions() {
        info!(" {:016x} - {:016x} ({:?})", r.start, r.end, r.kind);
    }
    let total = fw.total_ram_bytes();
    info!(
        "Memory map: {} KiB RAM in {} regions",
        total / 1024,
        fw.ram_regions().count()
    );

    let (image_start, image_end) = (sym!(__image_start_phys), sym!(__image_end) - HV_VIRT_OFFSET);

    let mut avail: MemoryMap = fw.clone();
    cut(&mut avail, 0..0x10_0000, "the first MiB");
    cut(&mut avail, image_start..image_end, "hv's image");
    for m in info.modules() {
        let end = (m.start + m.len).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        cut(&mut avail, m.start & !(PAGE_SIZE - 1)..end, "a boot module");
    }

    let Some(span) = avail.ram_frame_span() else {
        error!("no usable RAM");
        power_off(Status::Failure);
    };
    let ft_bytes = FrameTable::bytes_needed(span.end.0 - span.start.0).unwrap_or(usize::MAX) as u64;
    let m2p_bytes = (span.end.0 * 8).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let early_need = ft_bytes + m2p_bytes + EARLY_PT_FRAMES * PAGE_SIZE;
    let Some(early_range) = avail
        .ram_regions()
        .map(|r| r.start..r.end.min(BOOT_MAPPED_LIMIT))
        .filter(|r| r.end > r.start && r.end - r.start >= early_need)
        .max_by_key(|r| r.end - r.start)
    else {
        error!("no RAM below 4 GiB for the frame table ({ft_bytes} bytes)");
        power_off(Status::Failure);
    };
    let mut early = EarlyFrames {
        bottom: early_range.start,
        top: early_range.end,
        next: early_range.end,
    };
    let Some(ft_pa) = early.take(ft_bytes) else {
        power_off(Status::Failure)
    };
    let Some(m2p_pa) = early.take(m2p_bytes) else {
        power_off(Status::Failure)
    };
    // SAFETY: the M2P's frames were just taken for it alone, in the boot direct map. Every
    // entry starts invalid (all ones, as Xen's INVALID_M2P_ENTRY).
    unsafe { core::ptr::write_bytes(phys_to_virt(m2p_pa), 0xff, m2p_bytes as usize) };
    M2P.store(m2p_pa, Ordering::Relaxed);
    MAX_MFN.store(span.end.0, Ordering::Relaxed);

    // hv's own tables: the image W^X, the direct map of everything the firmware named.
    let mut next_frame = || early.take(PAGE_SIZE);
    let pt_frames = match build_tables(fw, &mut next_frame, features, m2p_pa..m2p_pa + m2p_bytes) {
        Ok(n) => n,
        Err(e) => {
            error!("building hv's page tables failed: {e:?}");
            power_off(Status::Failure);
        }
    };
    cut(&mut avail, early.next..early.top, "early allocations");

    // SAFETY: `[ft_pa, ft_pa + ft_bytes)` was taken from RAM for the frame table alone and
    // removed from what the allocator will see; it is mapped in the direct map, suitably
    // aligned (page-aligned), and lives for the rest of hv's life.
    let entries: &'static mut [PageInfo] = unsafe {
        core::slice::from_raw_parts_mut(
            (DIRECTMAP_BASE + ft_pa) as *mut PageInfo,
            (ft_bytes as usize) / core::mem::size_of::<PageInfo>(),
        )
    };
    let table = match FrameTable::new(entries, span.start) {
        Ok(t) => t,
        Err(e) => {
            error!("frame table: {e:?}");
            power_off(Status::Failure);
        }
    };
    let mut frames = FrameAllocator::new(table);
    for r in avail.ram_regions() {
        if let Err(e) = frames.add_free_range(Mfn::from_paddr(r.start), Mfn::from_paddr(r.end)) {
            error!(
                "frame allocator rejected {:#x}-{:#x}: {e:?}",
                r.start, r.end
            );
        }
    }
    // hv's own RAM (its image, and the frame table, M2P and page tables boot took) is RAM
    // owned by hv in the frame table, not a hole: guests naming it are refused as for any
    // frame not theirs.
    for (start, end) in [(image_start, image_end), (early.next, early.top)] {
        if let Err(e) = frames.reserve_for_hypervisor(
            Mfn::from_paddr(start),
            Mfn::from_paddr(end.div_ceil(PAGE_SIZE) * PAGE_SIZE),
        ) {
            error!("cannot record hv's frames {start:#x}-{end:#x}: {e:?}");
        }
    }
    let heap_order = heap_order(total);
    let Ok(heap) = frames.alloc(heap_order, Owner::Hypervisor) else {
        error!("no memory for the heap");
        power_off(Status::Failure);
    };
    let heap_bytes = PAGE_SIZE << heap_order;
    // SAFETY: the block was just allocated to hv and is mapped in the direct map; the heap is
    // initialised once, before anything allocates.
    unsafe {
        HEAP.lock()
            .init(phys_to_virt(heap.paddr()), heap_bytes as usize)
    };

    let free = frames.free_frames();
    *FRAMES.lock() = Some(frames);
    let image_kib = (image_end - image_start) / 1024;
    info!(
        "hv memory: image {image_kib} KiB, frame table {} KiB, M2P {} KiB, page tables {} KiB, heap {} KiB: {} KiB in all",
        ft_bytes / 1024,
        m2p_bytes / 1024,
        pt_frames * 4,
        heap_bytes / 1024,
        image_kib + (ft_bytes + m2p_bytes) / 1024 + pt_frames * 4 + heap_bytes / 1024
    );
    info!("Free memory: {} KiB in {} frames", free * 4, free);
}

/// Takes `r` out of the RAM the frame allocator will get.
fn cut(avail: &mut MemoryMap, r: core::ops::Range<u64>, what: &str) {
    if let Err(e) = avail.remove(r.clone()) {
        error!("cannot reserve {what} {:#x}-{:#x}: {e:?}", r.start, r.end);
        power_off(Status::Failure);
    }
}

fn build_tables(
    fw: &MemoryMap,
    alloc: &mut dyn FnMut() -> Option<u64>,
    features: &cpu::Features,
    m2p: core::ops::Range<u64>,
) -> Result<u64, paging::MapError> {
    let global = if features.pge { F::GLOBAL } else { F::empty() };
    let (text, text_end) = (sym!(__text_start), sym!(__text_end));
    let (rodata, rodata_end) = (sym!(__rodata_start), sym!(__rodata_end));
    let (data, end) = (sym!(__data_start), sym!(__image_end));
    let mut b = Builder::new(alloc)?;
    let phys = |va: u64| va - HV_VIRT_OFFSET;
    b.map(text, phys(text), text_end - text, global)?;
    b.map(
        rodata,
        phys(rodata),
        rodata_end - rodata,
        global | F::NO_EXECUTE,
    )?;
    b.map(
        data,
        phys(data),
        end - data,
        global | F::WRITABLE | F::NO_EXECUTE,
    )?;
    // The first MiB (firmware tables) and every RAM or ACPI region, in the direct map.
    let rw = global | F::WRITABLE | F::NO_EXECUTE;
    b.map(DIRECTMAP_BASE, 0, 0x10_0000, rw)?;
    for r in fw.regions() {
        if matches!(
            r.kind,
            RegionKind::Ram | RegionKind::AcpiReclaimable | RegionKind::AcpiNvs
        ) {
            let start = r.start.max(0x10_0000) & !(PAGE_SIZE - 1);
            let end = r.end.div_ceil(PAGE_SIZE) * PAGE_SIZE;
            if end > start {
                b.map(DIRECTMAP_BASE + start, start, end - start, rw)?;
            }
        }
    }
    // The machine-to-phys table, read-only for PV guests at Xen's address.
    b.map(
        MACH2PHYS_VIRT_START,
        m2p.start,
        m2p.end - m2p.start,
        global | F::USER_ACCESSIBLE | F::NO_EXECUTE,
    )?;
    let frames = b.frames;
    b.activate();
    if features.pge {
        // SAFETY: setting CR4.PGE only lets global TLB entries survive CR3 writes; hv's
        // mappings are the same in every address space.
        unsafe {
            x86_64::registers::control::Cr4::update(|c| {
                c.insert(x86_64::registers::control::Cr4Flags::PAGE_GLOBAL)
            })
        };
    }
    Ok(frames)
}

/// The firmware memory map, normalised (for the control domain's machine memory map).
static FIRMWARE_MAP: spin::Once<MemoryMap> = spin::Once::new();

/// The firmware memory map.
pub fn firmware_map() -> &'static [crate::mm::Region] {
    FIRMWARE_MAP.get().map_or(&[], |m| m.regions())
}

/// Physical address of the machine-to-phys table.
static M2P: AtomicU64 = AtomicU64::new(0);
/// One past the highest RAM frame (the M2P's length in entries).
static MAX_MFN: AtomicU64 = AtomicU64::new(0);

/// The highest machine frame number with RAM.
pub fn max_mfn() -> u64 {
    MAX_MFN.load(Ordering::Relaxed).saturating_sub(1)
}

/// Records in the M2P that machine frame `mfn` holds guest frame `pfn`.
pub fn set_m2p(mfn: u64, pfn: u64) {
    if mfn >= MAX_MFN.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: the M2P has an 8-byte entry for every frame below MAX_MFN, in the direct map.
    unsafe {
        (phys_to_virt(M2P.load(Ordering::Relaxed)) as *mut u64)
            .add(mfn as usize)
            .write_volatile(pfn)
    };
}

/// The M2P entry of `mfn` (all ones where none).
pub fn m2p(mfn: u64) -> u64 {
    if mfn >= MAX_MFN.load(Ordering::Relaxed) {
        return u64::MAX;
    }
    // SAFETY: the M2P has an 8-byte entry for every frame below MAX_MFN, in the direct map.
    unsafe {
        (phys_to_virt(M2P.load(Ordering::Relaxed)) as *const u64)
            .add(mfn as usize)
            .read_volatile()
    }
}

/// Allocates a page-table frame from the frame allocator (after boot).
fn pt_frame() -> Option<u64> {
    FRAMES
        .lock()
        .as_mut()?
        .alloc(0, Owner::Hypervisor)
        .ok()
        .map(|m| m.paddr())
}

fn setup_timer(features: &cpu::Features) -> Status {
    let mode = apic::init(features.x2apic, |pa| {
        paging::map_fixmap(0, pa, &mut pt_frame)
            .ok()
            .map(|p| p as usize)
    });
    let Some(mode) = mode else {
        error!("cannot map the local APIC");
        return Status::Failure;
    };
    let timer_hz = apic::calibrate_timer(10_000_000);
    apic::start_periodic(timer_hz, TICK_NS);
    info!(
        "LAPIC: {}, id {}, timer {}.{:03} MHz after divide-by-16, periodic tick every {} ms",
        mode,
        apic::id(),
        timer_hz / 1_000_000,
        (timer_hz / 1000) % 1000,
        TICK_NS / 1_000_000
    );
    Status::Clean
}

/// Domains read from the boot bundle, with the ids they get.
type Specs = alloc::vec::Vec<(u16, DomainSpec<'static>)>;

/// Reads the boot bundle and lists its domains. A bundle that cannot be used is a failure;
/// a bad domain record skips that domain only.
fn load_bundle(info: &BootInfo) -> (Status, Specs) {
    let mut specs = Specs::new();
    let Some(m) = info.modules().first() else {
        info!("No boot bundle: no domains to build");
        return (Status::Clean, specs);
    };
    if m.start
        .checked_add(m.len)
        .is_none_or(|e| e > BOOT_MAPPED_LIMIT)
    {
        error!(
            "bundle rejected: module at {:#x} (+{:#x}) is outside the direct map",
            m.start, m.len
        );
        return (Status::Failure, specs);
    }
    // SAFETY: the module lies in RAM below 4 GiB (checked above), which hv's direct map
    // covers; it was removed from the allocator's RAM, so nothing else writes it, and it is
    // never freed: it lives as long as hv.
    let bytes: &'static [u8] =
        unsafe { core::slice::from_raw_parts(phys_to_virt(m.start), m.len as usize) };
    let bundle = match Bundle::parse(bytes) {
        Ok(b) => b,
        Err(e) => {
            error!("bundle rejected: {e}");
            return (Status::Failure, specs);
        }
    };
    let mut status = Status::Clean;
    for (i, d) in bundle.domains().enumerate() {
        match d {
            Ok(d) => {
                info!(
                    "domain {i}: {} ({:?}, {} KiB, {} vCPU{}{}, kernel {} bytes, cmdline \"{}\")",
                    d.name,
                    d.kind,
                    d.memory_kib,
                    d.vcpus,
                    if d.vcpus == 1 { "" } else { "s" },
                    if d.privileged { ", privileged" } else { "" },
                    d.kernel.len(),
                    d.cmdline
                );
                specs.push((i as u16, d));
            }
            Err(e) => {
                error!("domain {i} skipped: {e}");
                status = Status::Failure;
            }
        }
    }
    (status, specs)
}

/// `hvtest=timer`: counts periodic ticks against the TSC.
fn timer_test() {
    const TICKS: u64 = 50;
    let wait_for_tick = || {
        let t = traps::TIMER_TICKS.load(Ordering::Relaxed);
        while traps::TIMER_TICKS.load(Ordering::Relaxed) == t {
            cpu::enable_and_halt();
        }
    };
    wait_for_tick();
    let start = time::now_ns();
    for _ in 0..TICKS {
        wait_for_tick();
    }
    let took = time::now_ns() - start;
    x86_64::instructions::interrupts::disable();
    info!("timer test: {TICKS} ticks of {TICK_NS} ns took {took} ns by TSC");
}
