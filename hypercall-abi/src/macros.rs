//! Helper macros for number sets and layout assertions.

/// Defines an ABI number set as a fieldless enum with an unsigned `repr`,
/// plus `TryFrom<u64>`, `TryFrom<u32>` (rejecting unknown numbers with
/// [`crate::UnknownValue`]), `From<Enum>` for the repr type and `ALL`, the
/// list of every member (used by the round-trip tests).
macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $value:expr
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr($repr)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant = $value,
            )+
        }

        impl $name {
            /// Every member of this number set, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The number as it appears on the wire.
            pub const fn raw(self) -> $repr {
                self as $repr
            }
        }

        impl From<$name> for $repr {
            fn from(v: $name) -> $repr {
                v as $repr
            }
        }

        impl TryFrom<u64> for $name {
            type Error = $crate::UnknownValue;

            fn try_from(value: u64) -> Result<Self, $crate::UnknownValue> {
                $(
                    if value == ($value) as u64 {
                        return Ok($name::$variant);
                    }
                )+
                Err($crate::UnknownValue {
                    type_name: stringify!($name),
                    value,
                })
            }
        }

        impl TryFrom<u32> for $name {
            type Error = $crate::UnknownValue;

            fn try_from(value: u32) -> Result<Self, $crate::UnknownValue> {
                Self::try_from(u64::from(value))
            }
        }
    };
}

/// Asserts at compile time the size of a `#[repr(C)]` type and the offsets of
/// the named fields.
macro_rules! assert_layout {
    ($ty:ty, size = $size:expr $(, $field:ident = $off:expr)* $(,)?) => {
        const _: () = assert!(core::mem::size_of::<$ty>() == $size);
        $(
            const _: () = assert!(core::mem::offset_of!($ty, $field) == $off);
        )*
    };
}
