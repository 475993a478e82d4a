//! Paravirtualised (PV) guests: the per-vCPU state Xen's PV ABI defines, and what hv does on
//! the guest's behalf in the exception, `syscall` and `iret` paths.
//!
//! A 64-bit PV guest kernel runs at CPL 3 like its user processes; hv tells the two apart by
//! a mode bit and gives each its own page-table root. Exceptions reach the guest through the
//! virtual IDT it registered (`set_trap_table`) as Xen's bounce frame on its kernel stack; it
//! returns with the `iret` hypercall. All of this is portable and tested on the host; the
//! arch layer applies the results (CR3, GS base) and runs the guest.

pub mod emulate;
pub mod vcpu;
