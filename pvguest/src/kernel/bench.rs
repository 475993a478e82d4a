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
use hypercall_abi::xen::{
    Hypercall, MmuUpdate, MmuUpdateType, MmuextCmd, MmuextOp, XenVersionCmd, DOMID_SELF,
};
use pvguest::bench::{DoneLine, FigureLine, Filter, Measurement, SkipLine};
use pvguest::paging::{pte, PTE_PRESENT, PTE_USER, PTE_WRITABLE};

use super::entry;
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

type Figure = fn(&mut Kernel) -> Result<Measurement, String>;

const FIGURES: &[(&str, Figure)] = &[
    ("hypercall_xen_version", hypercall_xen_version),
    ("bounce_ud2_iret", bounce_ud2_iret),
    ("evtchn_status", evtchn_status),
    ("mmu_update_1", mmu_update_1),
    ("evtchn_pingpong", evtchn_pingpong),
];

/// Measures every figure the command line's filter selects and prints the lines.
pub fn run(k: &mut Kernel) {
    // A copy, so the filter does not borrow the kernel the figures need mutably.
    let si = k.si;
    let filter = Filter::from_cmdline(si.cmd_line_bytes());
    let (clock, _) = pv::time_snapshot();
    let ns = (clock.tsc_to_system_mul != 0).then_some(move |ticks| clock.scale_delta(ticks));
    let mut done = DoneLine {
        measured: 0,
        skipped: 0,
    };
    for &(name, figure) in FIGURES.iter().filter(|(name, _)| filter.selects(name)) {
        match figure(k) {
            Ok(m) => {
                println!("{}", FigureLine { name, m, ns });
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
fn hypercall_xen_version(_: &mut Kernel) -> Result<Measurement, String> {
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
fn bounce_ud2_iret(_: &mut Kernel) -> Result<Measurement, String> {
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
fn evtchn_status(_: &mut Kernel) -> Result<Measurement, String> {
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
fn mmu_update_1(k: &mut Kernel) -> Result<Measurement, String> {
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
fn evtchn_pingpong(_: &mut Kernel) -> Result<Measurement, String> {
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
