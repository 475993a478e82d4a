//! The benchmark mode: times hypervisor paths with the TSC around tight loops and prints one
//! line per figure in the format of `pvguest::bench`, then the end line.
//!
//! Every figure runs its operation [`WARMUP`] times, then [`SAMPLES`] samples each of
//! [`ITERS`] and of twice as many iterations, keeping the fastest of each; their difference
//! is the cost of [`ITERS`] iterations without the fixed costs (the timer reads, the loop's
//! setup). The empty loop (same harness, empty body) is measured the same way and
//! subtracted. Setup that fails (an operation the hypervisor does not offer) skips the
//! figure with a reason instead of stopping the run.

use alloc::format;
use alloc::string::String;
use core::arch::asm;
use core::sync::atomic::Ordering;

use hypercall_abi::event_channel::{
    EvtchnAllocUnbound, EvtchnBindIpi, EvtchnClose, EvtchnSend, EvtchnStat, EvtchnStatus,
    EvtchnUnmask,
};
use hypercall_abi::grant_table::{GnttabCopy, GnttabCopyPtr, GrantRef, GNTCOPY_SOURCE_GREF};
use hypercall_abi::xen::{
    Hypercall, MmuUpdate, MmuUpdateType, MmuextCmd, MmuextOp, XenVersionCmd, DOMID_SELF,
    SIF_INITDOMAIN,
};
use hypercall_abi::DomId;
use pvguest::bench::{DoneLine, FigureLine, Filter, Measurement, SkipLine};
use pvguest::front::grant::{self, GrantTable};
use pvguest::paging::{pte, PTE_PRESENT, PTE_USER, PTE_WRITABLE};
use pvguest::pair::PAGE_WORDS;

use super::entry;
use super::grants::{self, Window};
use super::mm;
use super::traps::{self, UPCALLS};
use super::{pv, Kernel};

/// Iterations before the first sample (fills caches and the emulator's translation cache).
const WARMUP: u64 = 100;
/// Iterations per sample. Even, so a toggling operation ends where it started.
const ITERS: u64 = 1000;
/// Samples per loop; the fastest counts.
const SAMPLES: u32 = 5;
/// The address whose mapping `mmu_update_1` toggles (1 GiB: no bootstrap table covers it).
const BENCH_VA: u64 = 0x4000_0000;
/// #UD.
const VECTOR_UD: u8 = 6;
/// How long `evtchn_pingpong` waits for an upcall before it gives up (loop turns).
const UPCALL_PATIENCE: u64 = 1_000_000;

/// Pages of the 64 KiB copies.
const COPY_PAGES: usize = 16;
/// Bytes in a page.
const PAGE_BYTES: u64 = 4096;

type Figure = fn(&mut Kernel, &mut Shared) -> Result<Measurement, String>;

/// The figures: name, measurement, and the bytes one iteration moves (data-moving figures).
const FIGURES: &[(&str, Figure, Option<u64>)] = &[
    ("hypercall_xen_version", hypercall_xen_version, None),
    ("bounce_ud2_iret", bounce_ud2_iret, None),
    ("evtchn_status", evtchn_status, None),
    ("mmu_update_1", mmu_update_1, None),
    ("evtchn_pingpong", evtchn_pingpong, None),
    ("memcpy_4k", memcpy_4k, Some(PAGE_BYTES)),
    (
        "memcpy_64k",
        memcpy_64k,
        Some(COPY_PAGES as u64 * PAGE_BYTES),
    ),
    ("grant_copy_4k", grant_copy_4k, Some(PAGE_BYTES)),
    (
        "grant_copy_64k",
        grant_copy_64k,
        Some(COPY_PAGES as u64 * PAGE_BYTES),
    ),
    ("grant_map_unmap", grant_map_unmap, None),
];

/// State figures share, set up by the first figure that needs it.
#[derive(Default)]
pub struct Shared {
    grants: Option<Result<GrantSetup, String>>,
}

impl Shared {
    /// The grant figures' frames and grants, set up on first use (a failed setup skips every
    /// figure that needs it, with the same reason).
    fn grants(&mut self, k: &mut Kernel) -> Result<&mut GrantSetup, String> {
        self.grants
            .get_or_insert_with(|| GrantSetup::new(k))
            .as_mut()
            .map_err(|e| e.clone())
    }
}

/// Measures every figure the command line's filter selects and prints the lines.
pub fn run(k: &mut Kernel) {
    // A copy, so the filter does not borrow the kernel the figures need mutably.
    let si = k.si;
    let mut shared = Shared::default();
    run_figures(si.cmd_line_bytes(), FIGURES, |figure| {
        figure(k, &mut shared)
    });
}

/// A figure of the PVH benchmark: no PV kernel behind it.
type PvhFigure = fn() -> Result<Measurement, String>;

/// The figures measured when pvguest runs as a PVH (HVM) guest: hypercalls through
/// `vmcall`. Their names are `pvguest::bench::PVH_FIGURES`.
const PVH_FIGURES: &[(&str, PvhFigure, Option<u64>)] =
    &[(pvguest::bench::PVH_FIGURES[0], xen_version, None)];

/// The PVH benchmark mode (the shared-info page must be mapped, for the clock's scale).
pub fn run_pvh(cmdline: &[u8]) {
    run_figures(cmdline, PVH_FIGURES, |figure| figure());
}

/// Measures `figures` the filter in `cmdline` selects, with `measure` running one, and
/// prints each figure's line and the end line.
fn run_figures<F: Copy>(
    cmdline: &[u8],
    figures: &[(&str, F, Option<u64>)],
    mut measure: impl FnMut(F) -> Result<Measurement, String>,
) {
    let filter = Filter::from_cmdline(cmdline);
    let (clock, _) = pv::time_snapshot();
    let ns = (clock.tsc_to_system_mul != 0).then_some(move |ticks| clock.scale_delta(ticks));
    let mut done = DoneLine {
        measured: 0,
        skipped: 0,
    };
    for &(name, figure, bytes) in figures.iter().filter(|(name, ..)| filter.selects(name)) {
        match measure(figure) {
            Ok(m) => {
                println!("{}", FigureLine { name, m, ns, bytes });
                done.measured += 1;
            }
            Err(reason) => {
                println!("{}", SkipLine { name, reason });
                done.skipped += 1;
            }
        }
    }
    println!("{done}");
}

/// The TSC at the start of a timed region: earlier instructions have finished, later ones
/// have not started.
#[inline(always)]
fn tsc_begin() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: lfence and rdtsc only order execution and read the time-stamp counter.
    unsafe {
        asm!("lfence", "rdtsc", "lfence", out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The TSC at the end of a timed region: the region's instructions have finished.
#[inline(always)]
fn tsc_end() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: as in `tsc_begin`.
    unsafe { asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// TSC ticks of `iters` runs of `op`.
#[inline(never)]
fn sample(iters: u64, op: &mut impl FnMut()) -> u64 {
    let start = tsc_begin();
    for _ in 0..iters {
        op();
    }
    tsc_end().wrapping_sub(start)
}

/// TSC ticks of [`ITERS`] runs of `op` without the fixed costs: the fastest of [`SAMPLES`]
/// samples of twice as many runs minus the fastest of as many samples of [`ITERS`] runs.
fn marginal(op: &mut impl FnMut()) -> u64 {
    let mut fastest = |iters| {
        (0..SAMPLES)
            .map(|_| sample(iters, op))
            .min()
            .unwrap_or(u64::MAX)
    };
    let single = fastest(ITERS);
    fastest(2 * ITERS).saturating_sub(single)
}

/// Warms `op` up and measures it against the empty loop.
fn measure(mut op: impl FnMut()) -> Measurement {
    for _ in 0..WARMUP {
        op();
    }
    let op_ticks = marginal(&mut op);
    let empty_ticks = marginal(&mut || {
        // SAFETY: an empty asm statement does nothing; it only keeps the loop from being
        // optimised away, as the operations' own asm does.
        unsafe { asm!("", options(nomem, nostack, preserves_flags)) }
    });
    Measurement {
        iters: ITERS,
        op_ticks,
        empty_ticks,
    }
}

/// `xen_version(XENVER_version)` through the hypercall page.
fn hypercall_xen_version(_: &mut Kernel, _: &mut Shared) -> Result<Measurement, String> {
    xen_version()
}

/// `xen_version(XENVER_version)` through the hypercall page (`syscall` for PV, `vmcall` for
/// PVH).
fn xen_version() -> Result<Measurement, String> {
    let hc = pv::hypercalls();
    hc.xen_version().map_err(|e| format!("xen_version: {e}"))?;
    let mut worst = 0i64;
    let m = measure(|| {
        // SAFETY: XENVER_version takes no buffer and changes nothing.
        let ret = unsafe { hc.hypercall2(Hypercall::XenVersion, XenVersionCmd::Version as u64, 0) };
        worst = worst.min(ret);
    });
    if worst < 0 {
        return Err(format!(
            "xen_version failed during the measurement: {worst}"
        ));
    }
    Ok(m)
}

/// `ud2` -> #UD bounce to [`entry::bench_ud_entry`] -> `iret` hypercall to the next
/// instruction.
fn bounce_ud2_iret(_: &mut Kernel, _: &mut Shared) -> Result<Measurement, String> {
    let lean = [(VECTOR_UD, entry::bench_ud_entry as *const () as u64)];
    // SAFETY: bench_ud_entry handles #UD's frame (no error code) and returns with iret.
    unsafe { traps::install_trap_table_with(&lean) }.map_err(|e| format!("set_trap_table: {e}"))?;
    let m = measure(|| {
        // SAFETY: the #UD entry resumes right after this two-byte instruction with every
        // register as it was (the bounce frame is pushed below the stack pointer, and this
        // target keeps no red zone).
        unsafe { asm!("ud2") }
    });
    traps::install_trap_table().map_err(|e| format!("restoring the trap table: {e}"))?;
    Ok(m)
}

/// `EVTCHNOP_status` on a port allocated unbound (for this domain itself).
fn evtchn_status(_: &mut Kernel, _: &mut Shared) -> Result<Measurement, String> {
    let hc = pv::hypercalls();
    let mut alloc = EvtchnAllocUnbound {
        dom: DOMID_SELF,
        remote_dom: DOMID_SELF,
        port: 0,
    };
    hc.event_channel_op(&mut alloc)
        .map_err(|e| format!("alloc_unbound: {e}"))?;
    let port = alloc.port;
    let mut status = EvtchnStatus {
        dom: DOMID_SELF,
        port,
        ..EvtchnStatus::default()
    };
    let first = hc.event_channel_op(&mut status);
    let result = match first {
        Err(e) => Err(format!("status of port {port}: {e}")),
        Ok(_) if status.status != EvtchnStat::Unbound.raw() => Err(format!(
            "port {port} has status {}, not unbound",
            status.status
        )),
        Ok(_) => {
            let mut failed = None;
            let m = measure(|| {
                if let Err(e) = hc.event_channel_op(&mut status) {
                    failed = Some(e);
                }
            });
            match failed {
                Some(e) => Err(format!("status failed during the measurement: {e}")),
                None => Ok(m),
            }
        }
    };
    hc.event_channel_op(&mut EvtchnClose { port })
        .map_err(|e| format!("close port {port}: {e}"))?;
    result
}

/// One `mmu_update` of an L1 entry, alternately mapping a scratch frame at [`BENCH_VA`] and
/// unmapping it (nothing touches the address, so no flush is needed in between).
fn mmu_update_1(k: &mut Kernel, _: &mut Shared) -> Result<Measurement, String> {
    let root = k.mm.kernel_root();
    let data = k.mm.alloc_frame()?;
    // Creates the intermediate tables and leaves the leaf empty.
    k.mm.map(root, BENCH_VA, 0)?;
    let ptr =
        k.mm.leaf_entry_maddr(root, BENCH_VA)?
            .ok_or("no L1 table after mapping")?
            | MmuUpdateType::NormalPtUpdate as u64;
    let requests = [
        [MmuUpdate {
            ptr,
            val: pte(data.mfn, PTE_PRESENT | PTE_WRITABLE | PTE_USER),
        }],
        [MmuUpdate { ptr, val: 0 }],
    ];
    let hc = pv::hypercalls();
    let mut turn = 0usize;
    let mut failed = None;
    let m = measure(|| {
        // SAFETY: the entry maps or unmaps a frame the kernel owns at an address nothing
        // else uses; no Rust reference points there.
        if let Err(e) = unsafe { hc.mmu_update(&requests[turn & 1], None, DOMID_SELF) } {
            failed = Some(e);
        }
        turn += 1;
    });
    // Every loop ran an even number of times, so the entry is empty again.
    mm::mmuext(MmuextOp::new(MmuextCmd::InvlpgLocal, BENCH_VA, 0))?;
    k.mm.free_frame(data)?;
    match failed {
        Some(e) => Err(format!("mmu_update failed during the measurement: {e}")),
        None => Ok(m),
    }
}

/// `EVTCHNOP_send` on an IPI port bound to this vCPU, until the upcall handler has run
/// (through the kernel's ordinary event entry), then the port's pending bit is cleared.
fn evtchn_pingpong(_: &mut Kernel, _: &mut Shared) -> Result<Measurement, String> {
    let hc = pv::hypercalls();
    let mut bind = EvtchnBindIpi { vcpu: 0, port: 0 };
    hc.event_channel_op(&mut bind)
        .map_err(|e| format!("bind_ipi: {e}"))?;
    let port = bind.port;
    pv::clear_port(port);
    let ping = || -> Result<(), String> {
        let before = UPCALLS.load(Ordering::SeqCst);
        hc.event_channel_op(&mut EvtchnSend { port })
            .map_err(|e| format!("send on port {port}: {e}"))?;
        let mut waited = 0;
        while UPCALLS.load(Ordering::SeqCst) == before {
            waited += 1;
            if waited == UPCALL_PATIENCE {
                return Err(format!("no upcall after a send on port {port}"));
            }
            core::hint::spin_loop();
        }
        pv::clear_port(port);
        Ok(())
    };
    let result = hc
        .event_channel_op(&mut EvtchnUnmask { port })
        .map_err(|e| format!("unmask port {port}: {e}"))
        .and_then(|_| {
            pv::mask_events(false);
            // One round first: a hypervisor that never delivers the upcall skips the figure.
            let measured = ping().map(|()| {
                let mut failed = None;
                let m = measure(|| {
                    if let Err(e) = ping() {
                        failed = Some(e);
                    }
                });
                failed.map_or(Ok(m), Err)
            });
            pv::mask_events(true);
            measured?
        });
    hc.event_channel_op(&mut EvtchnClose { port })
        .map_err(|e| format!("close port {port}: {e}"))?;
    result
}

/// Source and destination frames for the copy figures, granted to this domain itself, and a
/// window page to map a grant at.
struct GrantSetup {
    /// This domain's id, as the self-grants name it.
    domid: DomId,
    /// The grants of the source frames, one per page.
    grefs: [GrantRef; COPY_PAGES],
    /// Where the source pages are mapped (consecutive pages).
    src_va: u64,
    /// The destination frames (machine frames: a PV domain's gmfn).
    dst_mfns: [u64; COPY_PAGES],
    /// Where the destination pages are mapped (consecutive pages).
    dst_va: u64,
    /// A page with nothing mapped, for `map_grant_ref`.
    map_va: u64,
    /// Kept for as long as the grants exist.
    _table: GrantTable,
}

/// The words of source page `page`: distinct in every page, so a misplaced copy shows.
fn source_words(page: usize) -> [u64; PAGE_WORDS] {
    let mut words = [0u64; PAGE_WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        *w = ((page as u64) << 32 | i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    words
}

impl GrantSetup {
    fn new(k: &mut Kernel) -> Result<GrantSetup, String> {
        // A domain learns its own id from nothing but this flag: the initial domain is d0
        // (on Xen and on hv alike). Others would need xenstore's `domid`.
        if k.si.flags & SIF_INITDOMAIN == 0 {
            return Err("own domid unknown: not the initial domain".into());
        }
        let domid: DomId = 0;
        let mut window = Window::default();
        let mut table = grants::own_table(k, &mut window)?;
        let mut src_mfns = [0u64; COPY_PAGES];
        let mut src_va = 0;
        for (page, mfn) in src_mfns.iter_mut().enumerate() {
            *mfn = k.mm.alloc_frame()?.mfn;
            let va = window.map_frame(k, *mfn)?;
            if page == 0 {
                src_va = va;
            }
            // SAFETY: `va` maps the fresh frame writable; nothing else refers to it.
            unsafe { grants::write_page(va, &source_words(page)) };
        }
        let mut dst_mfns = [0u64; COPY_PAGES];
        let mut dst_va = 0;
        for (page, mfn) in dst_mfns.iter_mut().enumerate() {
            *mfn = k.mm.alloc_frame()?.mfn;
            let va = window.map_frame(k, *mfn)?;
            if page == 0 {
                dst_va = va;
            }
        }
        let map_va = window.page(k)?;
        let mut grefs = [0; COPY_PAGES];
        for (gref, &mfn) in grefs.iter_mut().zip(&src_mfns) {
            *gref = table
                .grant_access(domid, mfn, false)
                .map_err(|e| format!("grant_access: {e}"))?;
        }
        Ok(GrantSetup {
            domid,
            grefs,
            src_va,
            dst_mfns,
            dst_va,
            map_va,
            _table: table,
        })
    }

    /// Zeroes the destination pages.
    fn clear_destination(&self) {
        for page in 0..COPY_PAGES as u64 {
            // SAFETY: the destination pages are mapped writable and nothing refers to them.
            unsafe { grants::write_page(self.dst_va + page * PAGE_BYTES, &[0; PAGE_WORDS]) };
        }
    }

    /// Whether the first `pages` destination pages hold the source pages.
    fn check_destination(&self, pages: usize, what: &str) -> Result<(), String> {
        for page in 0..pages {
            // SAFETY: the destination pages are mapped and nothing writes them now.
            let seen = unsafe { grants::read_page(self.dst_va + page as u64 * PAGE_BYTES) };
            if seen != source_words(page) {
                return Err(format!(
                    "{what}: destination page {page} differs from its source"
                ));
            }
        }
        Ok(())
    }

    /// `GNTTABOP_copy` operations copying the first `pages` source grants (`DOMID_SELF`'s
    /// grant references) to the destination frames (gmfn), a whole page each.
    fn copy_ops(&self, pages: usize) -> [GnttabCopy; COPY_PAGES] {
        let mut ops = [GnttabCopy::default(); COPY_PAGES];
        for (i, op) in ops.iter_mut().enumerate().take(pages) {
            *op = GnttabCopy {
                source: GnttabCopyPtr::from_gref(DOMID_SELF, self.grefs[i], 0),
                dest: GnttabCopyPtr::from_gmfn(DOMID_SELF, self.dst_mfns[i], 0),
                len: PAGE_BYTES as u16,
                flags: GNTCOPY_SOURCE_GREF,
                ..GnttabCopy::default()
            };
        }
        ops
    }
}

/// A plain copy of `pages` source pages to the destination pages inside the guest.
fn memcpy_pages(shared: &mut Shared, k: &mut Kernel, pages: usize) -> Result<Measurement, String> {
    let g = shared.grants(k)?;
    g.clear_destination();
    let (src, dst) = (g.src_va as *const u8, g.dst_va as *mut u8);
    let len = pages * PAGE_BYTES as usize;
    let m = measure(|| {
        // SAFETY: both runs of consecutive pages are mapped (readable, writable), do not
        // overlap, and no Rust reference covers them. black_box keeps each copy.
        unsafe {
            core::ptr::copy_nonoverlapping(
                core::hint::black_box(src),
                core::hint::black_box(dst),
                len,
            )
        }
    });
    g.check_destination(pages, "memcpy")?;
    Ok(m)
}

/// memcpy of one page.
fn memcpy_4k(k: &mut Kernel, shared: &mut Shared) -> Result<Measurement, String> {
    memcpy_pages(shared, k, 1)
}

/// memcpy of [`COPY_PAGES`] pages in one call.
fn memcpy_64k(k: &mut Kernel, shared: &mut Shared) -> Result<Measurement, String> {
    memcpy_pages(shared, k, COPY_PAGES)
}

/// One `GNTTABOP_copy` batch of `pages` page-sized operations from self-granted frames to
/// this domain's own frames.
fn grant_copy_pages(
    shared: &mut Shared,
    k: &mut Kernel,
    pages: usize,
) -> Result<Measurement, String> {
    let g = shared.grants(k)?;
    g.clear_destination();
    let mut ops = g.copy_ops(pages);
    let hc = pv::hypercalls();
    // One batch first: a hypervisor that refuses the copy skips the figure.
    // SAFETY: the destination frames are mapped only at the window pages, which no Rust
    // reference covers.
    unsafe { grant::copy(&hc, &mut ops[..pages]) }.map_err(|e| format!("copy: {e}"))?;
    g.check_destination(pages, "grant copy")?;
    let mut failed = None;
    let m = measure(|| {
        // SAFETY: as above.
        if let Err(e) = unsafe { grant::copy(&hc, &mut ops[..pages]) } {
            failed = Some(e);
        }
    });
    match failed {
        Some(e) => Err(format!("copy failed during the measurement: {e}")),
        None => Ok(m),
    }
}

/// `GNTTABOP_copy` of one page.
fn grant_copy_4k(k: &mut Kernel, shared: &mut Shared) -> Result<Measurement, String> {
    grant_copy_pages(shared, k, 1)
}

/// `GNTTABOP_copy` of [`COPY_PAGES`] pages in one batch.
fn grant_copy_64k(k: &mut Kernel, shared: &mut Shared) -> Result<Measurement, String> {
    grant_copy_pages(shared, k, COPY_PAGES)
}

/// `GNTTABOP_map_grant_ref` of a self-grant at a scratch page (host mapping), then
/// `GNTTABOP_unmap_grant_ref` of it.
fn grant_map_unmap(k: &mut Kernel, shared: &mut Shared) -> Result<Measurement, String> {
    let g = shared.grants(k)?;
    let hc = pv::hypercalls();
    let (domid, gref, va) = (g.domid, g.grefs[0], g.map_va);
    // One round first, checking the mapping shows the granted page.
    // SAFETY: `va` is a window page with its page tables and nothing mapped, which no Rust
    // reference covers.
    let mapping = unsafe { grant::map_grant(&hc, domid, gref, va, false) }
        .map_err(|e| format!("map_grant_ref of self-grant {gref} (d{domid}): {e}"))?;
    // SAFETY: `va` now maps the granted source page.
    let seen = unsafe { grants::read_page(va) };
    // SAFETY: `seen` is a copy; nothing refers to the page.
    unsafe { grant::unmap_grant(&hc, mapping) }.map_err(|e| format!("unmap_grant_ref: {e}"))?;
    if seen != source_words(0) {
        return Err("the mapped self-grant does not show the granted page".into());
    }
    let mut failed = None;
    let m = measure(|| {
        // SAFETY: as above: `va` is the scratch page, unmapped again after each round.
        let round = unsafe { grant::map_grant(&hc, domid, gref, va, false) }.and_then(|mapping| {
            // SAFETY: nothing touches the page between the map and the unmap.
            unsafe { grant::unmap_grant(&hc, mapping) }
        });
        if let Err(e) = round {
            failed = Some(e);
        }
    });
    match failed {
        Some(e) => Err(format!("map/unmap failed during the measurement: {e}")),
        None => Ok(m),
    }
}
