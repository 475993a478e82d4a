//! One user-mode task: its own address space (a second L4 installed with
//! `MMUEXT_NEW_USER_BASEPTR`), entered with the `iret` hypercall; its `syscall`s arrive at
//! the registered syscall callback on the `stack_switch` stack.

use alloc::format;
use alloc::string::String;
use core::cell::UnsafeCell;
use core::ptr::addr_of;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::errno::Errno;
use hypercall_abi::xen::{MmuextCmd, MmuextOp, VGCF_IN_SYSCALL};
use pvguest::paging::{pte, PTE_PRESENT, PTE_USER, PTE_WRITABLE};

use super::entry::{self, KernelContext, TrapFrame};
use super::mm::{self, Mm};

/// `rax = rdi + 1`.
pub const SYS_ADD_ONE: u64 = 1;
/// Ends the task with exit code `rdi`.
pub const SYS_EXIT: u64 = 2;

/// Where the task's code page is mapped in its address space.
pub const USER_CODE_VA: u64 = 0x0000_0040_0000_0000;
/// Where its stack page is mapped.
pub const USER_STACK_VA: u64 = 0x0000_0040_0010_0000;

struct ContextCell(UnsafeCell<KernelContext>);
// SAFETY: one vCPU; the context is written by `user_enter` and read by `user_exit`, which
// run strictly one after the other.
unsafe impl Sync for ContextCell {}

static KERNEL_CONTEXT: ContextCell = ContextCell(UnsafeCell::new(KernelContext { regs: [0; 7] }));

/// What the syscall callback saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallRecord {
    pub calls: u64,
    pub first_arg: u64,
    pub from_user: u64,
    pub user_rip: u64,
    pub frame_addr: u64,
}

static CALLS: AtomicU64 = AtomicU64::new(0);
static FIRST_ARG: AtomicU64 = AtomicU64::new(0);
static FROM_USER: AtomicU64 = AtomicU64::new(0);
static USER_RIP: AtomicU64 = AtomicU64::new(0);
static FRAME_ADDR: AtomicU64 = AtomicU64::new(0);

/// The syscall callback: `frame` is the task's state (cs RPL 3). Returns the `iret` flags
/// for a sysret-style return.
pub fn syscall(frame: &mut TrapFrame) -> u64 {
    if CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        FIRST_ARG.store(frame.rdi, Ordering::SeqCst);
        FROM_USER.store(frame.cs & 3, Ordering::SeqCst);
        USER_RIP.store(frame.rip, Ordering::SeqCst);
        FRAME_ADDR.store(frame as *mut TrapFrame as u64, Ordering::SeqCst);
    }
    match frame.rax {
        SYS_ADD_ONE => frame.rax = frame.rdi.wrapping_add(1),
        SYS_EXIT => {
            // SAFETY: the context was saved by the `user_enter` that started this task,
            // whose caller is still waiting below us on the boot stack.
            unsafe { entry::user_exit(KERNEL_CONTEXT.0.get(), frame.rdi) }
        }
        _ => frame.rax = Errno::ENOSYS.as_ret() as u64,
    }
    VGCF_IN_SYSCALL
}

/// Builds the task's address space and runs the task to its exit; returns its exit code and
/// what the syscall callback saw.
pub fn run_task(mm: &mut Mm) -> Result<(u64, SyscallRecord), String> {
    let root = mm.alloc_frame()?;
    mm::mmuext(MmuextOp::new(MmuextCmd::PinL4Table, root.mfn, 0))?;
    let code_pfn = addr_of!(entry::user_code_page) as u64 >> 12;
    let code_mfn = mm.mfn(code_pfn)?;
    mm.map(
        root.mfn,
        USER_CODE_VA,
        pte(code_mfn, PTE_PRESENT | PTE_USER),
    )?;
    let stack = mm.alloc_frame()?;
    mm.map(
        root.mfn,
        USER_STACK_VA,
        pte(stack.mfn, PTE_PRESENT | PTE_WRITABLE | PTE_USER),
    )?;
    mm::mmuext(MmuextOp::new(MmuextCmd::NewUserBaseptr, root.mfn, 0))?;

    CALLS.store(0, Ordering::SeqCst);
    // SAFETY: the user address space maps the task's code and stack; the syscall callback
    // and the `stack_switch` stack are in place, and the task ends with SYS_EXIT, which
    // comes back here through `user_exit`.
    let code =
        unsafe { entry::user_enter(KERNEL_CONTEXT.0.get(), USER_CODE_VA, USER_STACK_VA + 4096) };
    let record = SyscallRecord {
        calls: CALLS.load(Ordering::SeqCst),
        first_arg: FIRST_ARG.load(Ordering::SeqCst),
        from_user: FROM_USER.load(Ordering::SeqCst),
        user_rip: USER_RIP.load(Ordering::SeqCst),
        frame_addr: FRAME_ADDR.load(Ordering::SeqCst),
    };
    if record.calls == 0 {
        return Err(format!("task exited with {code} without a syscall"));
    }
    Ok((code, record))
}
