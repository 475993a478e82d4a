//! `control` and `spin`: the toolstack's view of the hypervisor through `domctl` and `sysctl`,
//! and a domain that only yields, for the toolstack to act on.
//!
//! As the privileged domain, `control` reads the machine's figures, lists the domains (one
//! `sysctl getdomaininfolist`, cross-checked by walking `domctl getdomaininfo`), pauses d1
//! and shows that it gets no CPU while paused, unpauses it and shows that it runs again,
//! destroys d2 and shows that it is gone, checks the refusals (self-pause, self-destroy,
//! missing domain, wrong interface version), waits for d1 to finish and prints one verdict.
//! As any other domain it checks that every operation is refused with EPERM.

use core::fmt;

use hypercall_abi::domctl::{
    Domctl, DomctlCmd, DomctlGetDomainInfo, DomctlGetVcpuInfo, DomctlPayload, XEN_DOMINF_BLOCKED,
    XEN_DOMINF_DYING, XEN_DOMINF_PAUSED, XEN_DOMINF_RUNNING, XEN_DOMINF_SHUTDOWN,
    XEN_DOMINF_SHUTDOWN_MASK, XEN_DOMINF_SHUTDOWN_SHIFT,
};
use hypercall_abi::errno::{ret_to_result, Errno, HypercallError};
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::sysctl::{
    Sysctl, SysctlCmd, SysctlGetDomainInfoList, SysctlPayload, SysctlPhysinfo,
};
use hypercall_abi::xen::{Hypercall, SIF_PRIVILEGED};
use hypercall_abi::{DomId, GuestHandle};

use super::{pv, Kernel};

/// The domain `control` pauses and unpauses (it runs `selftest`).
const PAUSED: DomId = 1;
/// The domain `control` destroys (it runs `spin`).
const DOOMED: DomId = 2;
/// How long the paused domain must stay without CPU time.
const PAUSE_NS: u64 = 100_000_000;
/// How long to wait for another domain to make progress.
const WAIT_NS: u64 = 20_000_000_000;
/// Most domains listed at once.
pub(super) const MAX_LISTED: usize = 8;

/// `domctl(op)`.
fn domctl(op: &mut Domctl) -> Result<(), HypercallError> {
    // SAFETY: the hypervisor reads and writes one `Domctl` at `op`; the commands used here
    // write no other memory of this domain.
    let ret = unsafe {
        pv::hypercalls().hypercall1(Hypercall::Domctl, op as *mut Domctl as usize as u64)
    };
    ret_to_result(ret).map(|_| ())
}

/// `sysctl(op)`; a `getdomaininfolist` buffer in `op` must have room for `max_domains`.
fn sysctl(op: &mut Sysctl) -> Result<(), HypercallError> {
    // SAFETY: the hypervisor reads and writes one `Sysctl` at `op`, and for
    // `getdomaininfolist` at most `max_domains` entries at its buffer, which the callers
    // size accordingly.
    let ret = unsafe {
        pv::hypercalls().hypercall1(Hypercall::Sysctl, op as *mut Sysctl as usize as u64)
    };
    ret_to_result(ret).map(|_| ())
}

/// A command without payload on `domain`.
fn simple(cmd: DomctlCmd, domain: DomId) -> Result<(), HypercallError> {
    domctl(&mut Domctl::new(cmd, domain, DomctlPayload::zeroed()))
}

/// `XEN_DOMCTL_getdomaininfo`: the first domain whose id is at least `domain`.
fn domain_info(domain: DomId) -> Result<DomctlGetDomainInfo, HypercallError> {
    let mut op = Domctl::new(DomctlCmd::GetDomainInfo, domain, DomctlPayload::zeroed());
    domctl(&mut op)?;
    Ok(op.u.getdomaininfo())
}

/// Domain `domain` exactly, or `None` if it is not listed.
pub(super) fn exact_info(domain: DomId) -> Option<DomctlGetDomainInfo> {
    domain_info(domain).ok().filter(|i| i.domain == domain)
}

/// `XEN_DOMCTL_getvcpuinfo`.
fn vcpu_info(domain: DomId, vcpu: u32) -> Result<DomctlGetVcpuInfo, HypercallError> {
    let payload = DomctlPayload::from_getvcpuinfo(DomctlGetVcpuInfo {
        vcpu,
        ..DomctlGetVcpuInfo::default()
    });
    let mut op = Domctl::new(DomctlCmd::GetVcpuInfo, domain, payload);
    domctl(&mut op)?;
    Ok(op.u.getvcpuinfo())
}

/// `XEN_SYSCTL_physinfo`.
fn physinfo() -> Result<SysctlPhysinfo, HypercallError> {
    let mut op = Sysctl::new(SysctlCmd::Physinfo, SysctlPayload::zeroed());
    sysctl(&mut op)?;
    Ok(op.u.physinfo())
}

/// `XEN_SYSCTL_getdomaininfolist` from domain 0 into `buf`; returns how many were filled.
pub(super) fn list(buf: &mut [DomctlGetDomainInfo; MAX_LISTED]) -> Result<usize, HypercallError> {
    let list = SysctlGetDomainInfoList {
        first_domain: 0,
        max_domains: MAX_LISTED as u32,
        buffer: GuestHandle::from_ptr(buf.as_ptr()),
        ..SysctlGetDomainInfoList::default()
    };
    let mut op = Sysctl::new(
        SysctlCmd::GetDomainInfoList,
        SysctlPayload::from_getdomaininfolist(list),
    );
    sysctl(&mut op)?;
    Ok((op.u.getdomaininfolist().num_domains as usize).min(MAX_LISTED))
}

/// A domain's state as `XEN_DOMINF_*` flags tell it.
struct State(u32);

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = self.0;
        let code = (flags >> XEN_DOMINF_SHUTDOWN_SHIFT) & XEN_DOMINF_SHUTDOWN_MASK;
        if flags & XEN_DOMINF_DYING != 0 {
            f.write_str("dying")
        } else if flags & XEN_DOMINF_SHUTDOWN != 0 {
            match ShutdownReason::try_from(code) {
                Ok(r) => write!(f, "shutdown({r:?})"),
                Err(_) => write!(f, "shutdown({code})"),
            }
        } else if flags & XEN_DOMINF_PAUSED != 0 {
            f.write_str("paused")
        } else if flags & XEN_DOMINF_RUNNING != 0 {
            f.write_str("running")
        } else if flags & XEN_DOMINF_BLOCKED != 0 {
            f.write_str("blocked")
        } else {
            f.write_str("runnable")
        }
    }
}

/// Prints one line per listed domain; returns their ids.
fn print_list(what: &str) -> Result<([DomId; MAX_LISTED], usize), HypercallError> {
    let mut buf = [DomctlGetDomainInfo::default(); MAX_LISTED];
    let n = list(&mut buf)?;
    let mut ids = [0; MAX_LISTED];
    for (slot, d) in ids.iter_mut().zip(&buf[..n]) {
        *slot = d.domain;
        println!(
            "control: {what}: d{} {} pages {}/{} vcpus {} cpu {} us",
            d.domain,
            State(d.flags),
            d.tot_pages,
            d.max_pages,
            d.nr_online_vcpus,
            d.cpu_time / 1000
        );
    }
    Ok((ids, n))
}

/// Yields until `done` holds or `ns` pass; returns whether it held.
fn wait_for(ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = pv::system_time_ns() + ns;
    while pv::system_time_ns() < end {
        if done() {
            return true;
        }
        let _ = pv::hypercalls().sched_op_yield();
    }
    done()
}

/// The checks so far: every failed one is printed.
struct Verdict(bool);

impl Verdict {
    fn check(&mut self, ok: bool, what: fmt::Arguments<'_>) {
        if !ok {
            println!("control: check failed: {what}");
            self.0 = false;
        }
    }
}

/// Runs the mode; returns whether every check passed.
pub fn run(kernel: &Kernel) -> bool {
    let ok = if kernel.si.flags & SIF_PRIVILEGED != 0 {
        as_control_domain()
    } else {
        as_unprivileged_domain()
    };
    println!("control: {}", if ok { "SUCCESS" } else { "FAILURE" });
    ok
}

fn as_control_domain() -> bool {
    let mut v = Verdict(true);
    match physinfo() {
        Ok(p) => {
            println!(
                "control: physinfo: {} cpu at {} kHz, {} pages, {} free, max mfn {:#x}",
                p.nr_cpus, p.cpu_khz, p.total_pages, p.free_pages, p.max_mfn
            );
            v.check(
                p.nr_cpus >= 1 && p.free_pages > 0 && p.free_pages < p.total_pages,
                format_args!("physinfo figures"),
            );
        }
        Err(e) => v.check(false, format_args!("physinfo: {e}")),
    }
    match print_list("listed") {
        Ok((ids, n)) => {
            v.check(
                ids[..n] == [0, PAUSED, DOOMED],
                format_args!("listed {:?}", &ids[..n]),
            );
            // The classic toolstack walk: each answer names the next id to ask for.
            let mut next = 0;
            for &id in &ids[..n] {
                match domain_info(next) {
                    Ok(i) => {
                        v.check(i.domain == id, format_args!("walk found d{}", i.domain));
                        next = i.domain + 1;
                    }
                    Err(e) => v.check(false, format_args!("getdomaininfo({next}): {e}")),
                }
            }
            v.check(
                domain_info(next) == Err(HypercallError::Errno(Errno::ESRCH)),
                format_args!("nothing after d{}", next - 1),
            );
        }
        Err(e) => v.check(false, format_args!("getdomaininfolist: {e}")),
    }
    pause_and_unpause(&mut v);
    destroy(&mut v);
    refusals(&mut v);
    let finished = wait_for(WAIT_NS, || {
        exact_info(PAUSED).is_some_and(|i| i.flags & XEN_DOMINF_SHUTDOWN != 0)
    });
    v.check(finished, format_args!("d{PAUSED} did not finish"));
    match print_list("at the end") {
        Ok((ids, n)) => v.check(ids[..n] == [0, PAUSED], format_args!("{:?}", &ids[..n])),
        Err(e) => v.check(false, format_args!("getdomaininfolist: {e}")),
    }
    v.0
}

/// d1's CPU time so far (`u64::MAX` if it cannot be read).
fn cpu_time(domain: DomId) -> u64 {
    exact_info(domain).map_or(u64::MAX, |i| i.cpu_time)
}

fn pause_and_unpause(v: &mut Verdict) {
    // Let d1 get going first, so that pausing interrupts real work.
    let started = wait_for(WAIT_NS, || (1..u64::MAX).contains(&cpu_time(PAUSED)));
    v.check(started, format_args!("d{PAUSED} never ran"));
    let paused = simple(DomctlCmd::PauseDomain, PAUSED);
    println!("control: pause d{PAUSED}: {}", Outcome(paused));
    v.check(paused.is_ok(), format_args!("pause"));
    let flags = exact_info(PAUSED).map_or(0, |i| i.flags);
    println!("control: d{PAUSED} is {}", State(flags));
    v.check(flags & XEN_DOMINF_PAUSED != 0, format_args!("paused flag"));
    let (before, others_before) = (cpu_time(PAUSED), cpu_time(DOOMED));
    wait_for(PAUSE_NS, || false);
    let (after, others_after) = (cpu_time(PAUSED), cpu_time(DOOMED));
    println!(
        "control: while paused for {} ms: d{PAUSED} cpu {before} -> {after} ns, d{DOOMED} cpu {others_before} -> {others_after} ns",
        PAUSE_NS / 1_000_000
    );
    v.check(before == after, format_args!("d{PAUSED} ran while paused"));
    v.check(
        others_after > others_before,
        format_args!("d{DOOMED} did not run meanwhile"),
    );
    v.check(
        vcpu_info(PAUSED, 0).is_ok_and(|c| c.running == 0 && c.cpu_time == after),
        format_args!("getvcpuinfo of the paused vCPU"),
    );
    let unpaused = simple(DomctlCmd::UnpauseDomain, PAUSED);
    println!("control: unpause d{PAUSED}: {}", Outcome(unpaused));
    v.check(unpaused.is_ok(), format_args!("unpause"));
    let resumed = wait_for(WAIT_NS, || cpu_time(PAUSED) > after);
    println!(
        "control: d{PAUSED} {} after the unpause",
        if resumed {
            "runs again"
        } else {
            "stays stopped"
        }
    );
    v.check(resumed, format_args!("d{PAUSED} resumed"));
}

fn destroy(v: &mut Verdict) {
    let destroyed = simple(DomctlCmd::DestroyDomain, DOOMED);
    println!("control: destroy d{DOOMED}: {}", Outcome(destroyed));
    v.check(destroyed.is_ok(), format_args!("destroy"));
    let gone = exact_info(DOOMED).is_none();
    println!(
        "control: d{DOOMED} is {}",
        if gone { "gone" } else { "still listed" }
    );
    v.check(gone, format_args!("d{DOOMED} still listed"));
    match print_list("after the destroy") {
        Ok((ids, n)) => v.check(
            !ids[..n].contains(&DOOMED),
            format_args!("d{DOOMED} in the list"),
        ),
        Err(e) => v.check(false, format_args!("getdomaininfolist: {e}")),
    }
}

/// Each refusal and the errno Xen gives it.
fn refusals(v: &mut Verdict) {
    let mut stale = Domctl::new(DomctlCmd::GetDomainInfo, 0, DomctlPayload::zeroed());
    stale.interface_version -= 1;
    let cases = [
        (
            "self-pause",
            simple(DomctlCmd::PauseDomain, 0),
            Errno::EINVAL,
        ),
        (
            "self-destroy",
            simple(DomctlCmd::DestroyDomain, 0),
            Errno::EINVAL,
        ),
        (
            "destroy again",
            simple(DomctlCmd::DestroyDomain, DOOMED),
            Errno::ESRCH,
        ),
        ("pause d7", simple(DomctlCmd::PauseDomain, 7), Errno::ESRCH),
        ("old interface version", domctl(&mut stale), Errno::EACCES),
    ];
    for (what, got, want) in cases {
        println!("control: {what}: {}", Outcome(got));
        v.check(
            got == Err(HypercallError::Errno(want)),
            format_args!("{what}: expected {want}"),
        );
    }
}

fn as_unprivileged_domain() -> bool {
    let mut v = Verdict(true);
    let mut buf = [DomctlGetDomainInfo::default(); MAX_LISTED];
    let cases = [
        ("getdomaininfo", domain_info(0).map(|_| ())),
        ("getvcpuinfo", vcpu_info(0, 0).map(|_| ())),
        ("pause", simple(DomctlCmd::PauseDomain, 0)),
        ("unpause", simple(DomctlCmd::UnpauseDomain, 0)),
        ("destroy", simple(DomctlCmd::DestroyDomain, 0)),
        ("physinfo", physinfo().map(|_| ())),
        ("getdomaininfolist", list(&mut buf).map(|_| ())),
    ];
    for (what, got) in cases {
        println!("control: {what}: {}", Outcome(got));
        v.check(
            got == Err(HypercallError::Errno(Errno::EPERM)),
            format_args!("{what}: expected EPERM"),
        );
    }
    v.check(
        buf.iter().all(|d| *d == DomctlGetDomainInfo::default()),
        format_args!("the refused list wrote to the buffer"),
    );
    v.0
}

/// A call's result as `ok` or the errno's name.
struct Outcome(Result<(), HypercallError>);

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(()) => f.write_str("ok"),
            Err(e) => write!(f, "{e}"),
        }
    }
}

/// `spin`: yields forever, so that only a destroy ends the domain.
pub fn spin() -> ! {
    println!("pvguest: spinning until destroyed");
    loop {
        let _ = pv::hypercalls().sched_op_yield();
    }
}
