//! The register frame of an interrupted context: what hv saves on every entry from a guest
//! (exception, interrupt or `syscall`) and restores on the way back.
//!
//! The layout is fixed: the entry stubs in `arch` push exactly this, lowest address first,
//! and the CPU's own interrupt frame (`rip` .. `ss`) ends it. Portable code (hypercalls,
//! bounce frames, the `iret` hypercall) reads and edits guest state through this type.

/// `vector` of a frame built by the `syscall` entry; such a frame may return with `sysret`.
/// Anything that changes `rip`, `cs`, `rflags` or `rsp` in a way `sysret` cannot restore
/// sets another value (see [`Regs::force_iret`]).
pub const SYSCALL_FRAME: u64 = 0x100;
/// `vector` of a frame that must return with `iret`.
pub const IRET_FRAME: u64 = 0x101;

/// Saved general-purpose registers and the interrupt frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Exception vector, or [`SYSCALL_FRAME`] / [`IRET_FRAME`].
    pub vector: u64,
    /// The CPU's error code (0 where it pushes none).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<Regs>() == 22 * 8);

/// RFLAGS bits.
pub mod rflags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Always-one bit.
    pub const FIXED: u64 = 1 << 1;
    /// Trap (single step).
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u64 = 1 << 9;
    /// Direction.
    pub const DF: u64 = 1 << 10;
    /// I/O privilege level.
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check.
    pub const AC: u64 = 1 << 18;
}

impl Regs {
    /// The frame must go back with `iret`, not `sysret`.
    pub fn force_iret(&mut self) {
        self.vector = IRET_FRAME;
    }

    /// Whether the context was running at CPL 3.
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// Whether `addr` is canonical for 48-bit virtual addresses.
pub const fn is_canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == 0x1_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0));
        assert!(is_canonical(0x0000_7fff_ffff_ffff));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert!(!is_canonical(0xffff_7fff_ffff_ffff));
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(is_canonical(u64::MAX));
    }

    #[test]
    fn force_iret_marks_the_frame() {
        let mut r = Regs {
            vector: SYSCALL_FRAME,
            cs: 0xe033,
            ..Regs::default()
        };
        assert!(r.from_user());
        r.force_iret();
        assert_eq!(r.vector, IRET_FRAME);
    }
}
