//! `burn` and `cpu-share`: a domain that only computes, and the control domain's view of how
//! the CPU was shared.
//!
//! `burn` repeats [`work_round`] without blocking, yielding or taking events until its span
//! of system time is over, then prints how many rounds it did; it runs the same as a PV and
//! as a PVH guest. `cpu-share` (privileged) sleeps, samples every domain's CPU time through
//! `sysctl getdomaininfolist`, sleeps for its span, samples again and prints one [`Usage`]
//! line per domain, so a test can compare the shares the scheduler gave.

use alloc::vec::Vec;

use hypercall_abi::xen::SIF_PRIVILEGED;
use hypercall_abi::DomId;
use pvguest::share::{usage, work_round, BurnArgs, CpuShareArgs};

use super::control::{list, MAX_LISTED};
use super::{events, pv, Kernel};

/// Burns the CPU for `args.ms` of system time.
pub fn burn(args: BurnArgs) {
    println!("burn: computing for {} ms without blocking", args.ms);
    let start = pv::system_time_ns();
    let end = start.saturating_add(args.ms * 1_000_000);
    let (mut x, mut rounds) = (1u64, 0u64);
    let now = loop {
        x = work_round(core::hint::black_box(x));
        rounds += 1;
        let now = pv::system_time_ns();
        if now >= end {
            break now;
        }
    };
    println!(
        "burn: {rounds} rounds in {} ms (last value {x:#018x})",
        (now - start) / 1_000_000
    );
}

/// Every listed domain's total CPU time, and the system time of the sample.
fn sample() -> Option<(Vec<(DomId, u64)>, u64)> {
    let mut buf = [Default::default(); MAX_LISTED];
    match list(&mut buf) {
        Ok(n) => Some((
            buf[..n].iter().map(|d| (d.domain, d.cpu_time)).collect(),
            pv::system_time_ns(),
        )),
        Err(e) => {
            println!("cpu-share: getdomaininfolist: {e}");
            None
        }
    }
}

/// Sleeps `ms` milliseconds (blocked: the time goes to the other domains).
fn sleep(ms: u64) {
    events::wait_until(|| false, ms * 1_000_000);
}

/// Runs `cpu-share`; returns whether both samples were taken.
pub fn cpu_share(kernel: &Kernel, args: CpuShareArgs) -> bool {
    if kernel.si.flags & SIF_PRIVILEGED == 0 {
        println!("cpu-share: needs the control domain");
        return false;
    }
    if let Err(e) = events::init_timer() {
        println!("cpu-share: {e}");
        return false;
    }
    sleep(args.wait_ms);
    let Some((before, t0)) = sample() else {
        return false;
    };
    sleep(args.span_ms);
    let Some((after, t1)) = sample() else {
        return false;
    };
    for u in usage(&before, &after, t1.saturating_sub(t0)) {
        println!("{u}");
    }
    true
}
