//! Domains and vCPUs as hv tracks them: identity, memory, run state, and each vCPU's saved
//! registers and PV state. Hardware effects (loading CR3, running the guest) belong to the
//! arch layer; everything here is plain data and portable.

use crate::console::InputQueue;
use crate::evtchn::EvtchnTable;
use crate::pv::vcpu::PvVcpu;
use crate::regs::Regs;
use alloc::string::String;
use alloc::vec::Vec;
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::SharedInfo;
use hypercall_abi::DomId;

/// Where a vCPU is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Ready to run (or running).
    Runnable,
    /// `SCHEDOP_block`: waits for an event upcall to become pending.
    Blocked,
    /// `SCHEDOP_poll`: waits for one of its polled ports (or the timeout).
    Polling,
    /// Not running (its domain stopped, or it was never brought up).
    Down,
}

/// A vCPU's x87/SSE state in FXSAVE format (saved and restored when vCPUs switch).
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FpuState(pub [u8; 512]);

impl Default for FpuState {
    /// The state after FNINIT with the default MXCSR: all exceptions masked.
    fn default() -> Self {
        let mut s = [0u8; 512];
        s[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        s[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        s[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
        FpuState(s)
    }
}

impl core::fmt::Debug for FpuState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FpuState")
    }
}

/// One virtual CPU.
#[derive(Clone, Debug)]
pub struct Vcpu {
    /// Index within its domain.
    pub id: u32,
    /// Registers while not running.
    pub regs: Regs,
    /// PV state.
    pub pv: PvVcpu,
    /// Run state.
    pub state: VcpuState,
    /// `set_timer_op` deadline in system time (ns since boot).
    pub timer_deadline: Option<u64>,
    /// `SCHEDOP_poll`: the ports polled.
    pub poll_ports: Vec<u32>,
    /// `SCHEDOP_poll`: when to give up (system time), if ever.
    pub poll_deadline: Option<u64>,
    /// Time slice left before preemption, in ticks.
    pub slice_left: u32,
    /// x87/SSE registers while not running.
    pub fpu: alloc::boxed::Box<FpuState>,
    /// Nanoseconds spent on the CPU, up to its last switch out.
    pub cpu_time_ns: u64,
}

impl Vcpu {
    /// A vCPU starting with `regs` in guest kernel mode (its page-table root is set through
    /// `mm::pv`).
    pub fn new(id: u32, regs: Regs) -> Self {
        Self {
            id,
            regs,
            pv: PvVcpu::new(),
            state: VcpuState::Runnable,
            timer_deadline: None,
            poll_ports: Vec::new(),
            poll_deadline: None,
            slice_left: 0,
            fpu: alloc::boxed::Box::default(),
            cpu_time_ns: 0,
        }
    }
}

/// How a domain stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// Its vCPUs may run.
    Running,
    /// Paused by the control domain.
    Paused,
    /// Shut itself down.
    Shutdown(ShutdownReason),
    /// Crashed (by hv, or `SHUTDOWN_crash`).
    Crashed,
    /// Destroyed by the control domain (`XEN_DOMCTL_destroydomain`).
    Destroyed,
}

/// A guest domain.
pub struct Domain {
    /// Domain id.
    pub id: DomId,
    /// Name from the boot bundle.
    pub name: String,
    /// The control domain (may use privileged operations).
    pub privileged: bool,
    /// State.
    pub state: DomainState,
    /// Guest frame number to machine frame number ([`INVALID_MFN`] in holes).
    pub p2m: Vec<u64>,
    /// Pages the domain holds (its reservation).
    pub tot_pages: u64,
    /// Reservation limit in pages.
    pub max_pages: u64,
    /// Machine frame of the shared-info page.
    pub shared_info_mfn: u64,
    /// The shared-info page, as hv reaches it.
    pub shared: &'static mut SharedInfo,
    /// vCPUs.
    pub vcpus: Vec<Vcpu>,
    /// Event-channel ports.
    pub evtchn: EvtchnTable,
    /// Console output not yet ended by a newline.
    pub console_line: Vec<u8>,
    /// The xenstore and console rings a PV domU got at build (none for the control domain).
    pub rings: Option<Rings>,
    /// An HVM domain's parameters (`None` for a PV domain).
    pub hvm: Option<HvmParams>,
    /// Serial console input waiting for the domain, and how it takes it.
    pub console_in: InputQueue,
}

/// The `HVMOP_set_param` parameters hv keeps for an HVM domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmParams {
    /// `HVM_PARAM_CALLBACK_IRQ` as last set (0: no upcalls).
    pub callback_irq: u64,
}

impl HvmParams {
    /// The IDT vector event-channel upcalls are injected at, if the guest asked for the
    /// vector callback.
    pub fn callback_vector(&self) -> Option<u8> {
        match hypercall_abi::hvm::HvmCallbackVia::decode(self.callback_irq) {
            Ok(hypercall_abi::hvm::HvmCallbackVia::Vector(v)) => Some(v),
            _ => None,
        }
    }
}

/// A domU's xenstore and console rings, as `start_info` (PV) or `HVMOP_get_param` gives
/// them to it and `HVMOP_get_param` to the control domain: frame numbers as the domU names
/// them (machine frames for a PV domain, guest frames for an HVM one) and the domU's
/// unbound ports for the control domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rings {
    /// Frame number of the xenstore ring.
    pub store_frame: u64,
    /// The domU's port for the xenstore ring.
    pub store_port: u32,
    /// Frame number of the console ring.
    pub console_frame: u64,
    /// The domU's port for the console ring.
    pub console_port: u32,
}

/// The other domains, as a hypercall from one domain sees them (split borrows of the domain
/// list around the caller).
pub struct Peers<'a> {
    before: &'a mut [Domain],
    after: &'a mut [Domain],
}

impl<'a> Peers<'a> {
    /// Splits `domains` into the one at `index` and the rest.
    pub fn split(domains: &'a mut [Domain], index: usize) -> Option<(&'a mut Domain, Peers<'a>)> {
        let (before, rest) = domains.split_at_mut(index);
        let (dom, after) = rest.split_first_mut()?;
        Some((dom, Peers { before, after }))
    }

    /// The domains in `others`.
    pub fn new(others: &'a mut [Domain]) -> Self {
        Peers {
            before: others,
            after: &mut [],
        }
    }

    /// The live domain with id `id`.
    pub fn get_mut(&mut self, id: DomId) -> Option<&mut Domain> {
        self.before
            .iter_mut()
            .chain(self.after.iter_mut())
            .find(|d| d.id == id && d.is_alive())
    }

    /// Every other domain.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Domain> {
        self.before.iter_mut().chain(self.after.iter_mut())
    }
}

/// A p2m entry with no frame behind it.
pub const INVALID_MFN: u64 = u64::MAX;

/// Longest console line kept before it is printed anyway.
pub const CONSOLE_LINE_MAX: usize = 256;

impl Domain {
    /// Whether any vCPU may still run.
    pub fn is_alive(&self) -> bool {
        matches!(self.state, DomainState::Running | DomainState::Paused)
    }

    /// Appends guest console output; returns each completed line through `emit`.
    pub fn console_write(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        for &b in bytes {
            if b == b'\n' || self.console_line.len() >= CONSOLE_LINE_MAX {
                emit(&self.console_line);
                self.console_line.clear();
                if b == b'\n' {
                    continue;
                }
            }
            if b != b'\r' {
                self.console_line.push(b);
            }
        }
    }
}
