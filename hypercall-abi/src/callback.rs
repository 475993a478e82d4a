//! `callback_op`: registering the entry points through which a PV guest
//! receives events, failsafe returns, syscalls and NMIs.

abi_enum! {
    /// `cmd` of `callback_op(cmd, arg)` (`CALLBACKOP_*`).
    pub enum CallbackOp: u32 {
        /// [`CallbackRegister`].
        Register = 0,
        /// [`CallbackUnregister`].
        Unregister = 1,
    }
}

abi_enum! {
    /// Which callback (`CALLBACKTYPE_*`).
    pub enum CallbackType: u32 {
        /// Event-channel upcall.
        Event = 0,
        /// Failsafe: a segment reload on return to the guest faulted.
        Failsafe = 1,
        /// 64-bit `syscall` from guest user mode.
        Syscall = 2,
        /// Old number of the sysenter callback (32-bit guests).
        SysenterDeprecated = 3,
        /// NMI.
        Nmi = 4,
        /// `sysenter` from 32-bit user mode.
        Sysenter = 5,
        /// 32-bit `syscall` from compatibility-mode user code.
        Syscall32 = 7,
    }
}

/// [`CallbackRegister::flags`]: mask events on entry to the callback.
pub const CALLBACKF_MASK_EVENTS: u16 = 1 << 0;

/// Argument of `CALLBACKOP_register` (`struct callback_register`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallbackRegister {
    /// IN: [`CallbackType`].
    pub type_: u16,
    /// IN: `CALLBACKF_*`.
    pub flags: u16,
    /// Padding.
    pub pad0: u32,
    /// IN: entry address (`xen_callback_t` is a plain address on x86_64).
    pub address: u64,
}
assert_layout!(
    CallbackRegister,
    size = 16,
    type_ = 0,
    flags = 2,
    address = 8
);

/// Argument of `CALLBACKOP_unregister` (`struct callback_unregister`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallbackUnregister {
    /// IN: [`CallbackType`].
    pub type_: u16,
    /// Unused.
    pub unused: u16,
}
assert_layout!(CallbackUnregister, size = 4, type_ = 0);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn numbers_round_trip_and_reject() {
        for &t in CallbackType::ALL {
            assert_eq!(CallbackType::try_from(t.raw()), Ok(t));
        }
        assert_eq!(CallbackType::Syscall32.raw(), 7);
        assert!(CallbackType::try_from(6u32).is_err());
        assert!(CallbackType::try_from(8u32).is_err());
        assert_eq!(CallbackOp::try_from(1u64), Ok(CallbackOp::Unregister));
        assert!(CallbackOp::try_from(2u64).is_err());
    }

    #[test]
    fn layouts() {
        assert_eq!(size_of::<CallbackRegister>(), 16);
        assert_eq!(offset_of!(CallbackRegister, address), 8);
        assert_eq!(size_of::<CallbackUnregister>(), 4);
    }
}
