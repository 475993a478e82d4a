//! The virtual IDT and the Rust side of every entry stub. A check that provokes an exception
//! first states what it expects ([`expect`]); the handler records what arrived and resumes
//! where the expectation says. Anything unexpected is reported and crashes the domain.

use core::ptr::addr_of;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::callback::{CallbackRegister, CallbackType, CALLBACKF_MASK_EVENTS};
use hypercall_abi::errno::HypercallError;
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::{Hypercall, TrapInfo, FLAT_KERNEL_CS64};

use super::entry::{self, TrapFrame, NR_EXCEPTIONS, VECTOR_EVENT, VECTOR_SYSCALL};
use super::{events, pv, user};

/// #NM, device not available.
pub const VECTOR_NM: u64 = 7;
/// #PF, page fault.
pub const VECTOR_PF: u64 = 14;

/// Where execution continues after an expected exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// At the frame's rip (traps, and faults whose cause the handler removed).
    Unchanged,
    /// `n` bytes past the faulting instruction's start.
    Skip(u64),
    /// At this address.
    At(u64),
}

/// What the last expected exception looked like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapRecord {
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub cr2: u64,
    pub hits: u64,
}

const NONE: u64 = u64::MAX;

static EXPECT_VECTOR: AtomicU64 = AtomicU64::new(NONE);
static EXPECT_RESUME_KIND: AtomicU64 = AtomicU64::new(0);
static EXPECT_RESUME_VALUE: AtomicU64 = AtomicU64::new(0);
static REC_ERROR: AtomicU64 = AtomicU64::new(0);
static REC_RIP: AtomicU64 = AtomicU64::new(0);
static REC_CS: AtomicU64 = AtomicU64::new(0);
static REC_CR2: AtomicU64 = AtomicU64::new(0);
static REC_HITS: AtomicU64 = AtomicU64::new(0);

/// Upcalls taken so far.
pub static UPCALLS: AtomicU64 = AtomicU64::new(0);

/// Arms the handler for one or more `vector` exceptions, clearing the record.
pub fn expect(vector: u64, resume: Resume) {
    let (kind, value) = match resume {
        Resume::Unchanged => (0, 0),
        Resume::Skip(n) => (1, n),
        Resume::At(a) => (2, a),
    };
    EXPECT_RESUME_KIND.store(kind, Ordering::SeqCst);
    EXPECT_RESUME_VALUE.store(value, Ordering::SeqCst);
    REC_HITS.store(0, Ordering::SeqCst);
    EXPECT_VECTOR.store(vector, Ordering::SeqCst);
}

/// Disarms the handler and returns what it recorded.
pub fn take_record() -> TrapRecord {
    EXPECT_VECTOR.store(NONE, Ordering::SeqCst);
    TrapRecord {
        error_code: REC_ERROR.load(Ordering::SeqCst),
        rip: REC_RIP.load(Ordering::SeqCst),
        cs: REC_CS.load(Ordering::SeqCst),
        cr2: REC_CR2.load(Ordering::SeqCst),
        hits: REC_HITS.load(Ordering::SeqCst),
    }
}

/// Installs the trap table: every exception vector goes to its stub. `int3` and `into` may
/// be raised from any ring (DPL 3); the others only by the CPU.
pub fn install_trap_table() -> Result<u64, HypercallError> {
    // SAFETY: no overrides: every vector gets its own stub.
    unsafe { install_trap_table_with(&[]) }
}

/// As [`install_trap_table`], with the entry of each `(vector, address)` in `overrides`
/// replacing that vector's stub.
///
/// # Safety
///
/// Each override must handle its vector's bounce frame and return through `iret`.
pub unsafe fn install_trap_table_with(overrides: &[(u8, u64)]) -> Result<u64, HypercallError> {
    let mut table = [TrapInfo::default(); NR_EXCEPTIONS + 1];
    // SAFETY: `trap_entries` is a read-only table of NR_EXCEPTIONS addresses in the image.
    let entries = unsafe { &*addr_of!(entry::trap_entries) };
    for (vector, (slot, &address)) in table.iter_mut().zip(entries).enumerate() {
        *slot = TrapInfo {
            vector: vector as u8,
            flags: if vector == 3 || vector == 4 { 3 } else { 0 },
            cs: FLAT_KERNEL_CS64,
            pad0: 0,
            address,
        };
    }
    for &(vector, address) in overrides {
        if let Some(slot) = table[..NR_EXCEPTIONS].get_mut(usize::from(vector)) {
            slot.address = address;
        }
    }
    // SAFETY: every stub handles its vector's bounce frame (with or without error code), as
    // the caller guarantees for the overrides; the table ends with a zero entry.
    unsafe { pv::hypercalls().set_trap_table(&table) }
}

/// Registers the event, failsafe and syscall callbacks.
pub fn register_callbacks() -> Result<(), HypercallError> {
    let callbacks = [
        (
            CallbackType::Event,
            entry::event_entry as *const () as usize,
            0,
        ),
        (
            CallbackType::Failsafe,
            entry::failsafe_entry as *const () as usize,
            0,
        ),
        (
            CallbackType::Syscall,
            entry::syscall_entry as *const () as usize,
            CALLBACKF_MASK_EVENTS,
        ),
    ];
    for (kind, address, flags) in callbacks {
        let cb = CallbackRegister {
            type_: kind.raw() as u16,
            flags,
            pad0: 0,
            address: address as u64,
        };
        // SAFETY: each entry point handles its callback's frame for the rest of the run.
        unsafe { pv::hypercalls().callback_register(&cb) }?;
    }
    Ok(())
}

/// Called by every entry stub; returns the flags word for the `iret` hypercall.
#[no_mangle]
extern "C" fn pvguest_trap(frame: &mut TrapFrame) -> u64 {
    match frame.vector {
        VECTOR_EVENT => {
            events::upcall();
            UPCALLS.fetch_add(1, Ordering::SeqCst);
            0
        }
        VECTOR_SYSCALL => user::syscall(frame),
        vector if vector == EXPECT_VECTOR.load(Ordering::SeqCst) => {
            REC_ERROR.store(frame.error_code, Ordering::SeqCst);
            REC_RIP.store(frame.rip, Ordering::SeqCst);
            REC_CS.store(frame.cs, Ordering::SeqCst);
            if vector == VECTOR_PF {
                REC_CR2.store(pv::fault_cr2(), Ordering::SeqCst);
            }
            REC_HITS.fetch_add(1, Ordering::SeqCst);
            if vector == VECTOR_NM {
                // A lazy-FPU kernel clears TS once it has the FPU ready (Xen already
                // cleared its copy when it delivered the fault).
                // SAFETY: fpu_taskswitch(0) only clears the virtual CR0.TS.
                unsafe { pv::hypercalls().hypercall1(Hypercall::FpuTaskswitch, 0) };
            }
            let value = EXPECT_RESUME_VALUE.load(Ordering::SeqCst);
            match EXPECT_RESUME_KIND.load(Ordering::SeqCst) {
                1 => frame.rip += value,
                2 => frame.rip = value,
                _ => {}
            }
            0
        }
        _ => unexpected(frame),
    }
}

fn unexpected(frame: &TrapFrame) -> ! {
    println!(
        "pvguest: unexpected exception {} error {:#x} at {:#x} cs {:#x} rflags {:#x} rsp {:#x} cr2 {:#x}",
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        pv::fault_cr2()
    );
    println!(
        "pvguest: rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    );
    pv::shutdown(ShutdownReason::Crash)
}

/// Called by the failsafe stub; Xen could not return to the guest context.
#[no_mangle]
extern "C" fn pvguest_failsafe(frame: *const u64) -> ! {
    println!("pvguest: failsafe callback (frame at {:p})", frame);
    pv::shutdown(ShutdownReason::Crash)
}
