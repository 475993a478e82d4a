//! Xen's error numbers. Hypercalls return `-errno` in `rax` on failure.
//!
//! The values are Xen's own (they match Linux's x86 numbering); a guest must
//! not assume its C library uses the same numbers.

use crate::UnknownValue;

/// A Xen error number (`XEN_E*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Errno {
    /// Operation not permitted.
    EPERM = 1,
    /// No such file or directory (no such object).
    ENOENT = 2,
    /// No such process (no such domain).
    ESRCH = 3,
    /// Interrupted; hypervisor-internal, never returned to a guest.
    EINTR = 4,
    /// I/O error.
    EIO = 5,
    /// No such device or address.
    ENXIO = 6,
    /// Argument list too long.
    E2BIG = 7,
    /// Exec format error.
    ENOEXEC = 8,
    /// Bad file number (bad handle).
    EBADF = 9,
    /// No child processes.
    ECHILD = 10,
    /// Try again (also `EWOULDBLOCK`).
    EAGAIN = 11,
    /// Out of memory.
    ENOMEM = 12,
    /// Permission denied.
    EACCES = 13,
    /// Bad address (a guest pointer could not be accessed).
    EFAULT = 14,
    /// Device or resource busy.
    EBUSY = 16,
    /// Object exists.
    EEXIST = 17,
    /// Cross-device link.
    EXDEV = 18,
    /// No such device.
    ENODEV = 19,
    /// Not a directory.
    ENOTDIR = 20,
    /// Is a directory.
    EISDIR = 21,
    /// Invalid argument.
    EINVAL = 22,
    /// File table overflow.
    ENFILE = 23,
    /// Too many open files.
    EMFILE = 24,
    /// No space left.
    ENOSPC = 28,
    /// Read-only.
    EROFS = 30,
    /// Too many links.
    EMLINK = 31,
    /// Argument out of domain.
    EDOM = 33,
    /// Result out of range.
    ERANGE = 34,
    /// Deadlock would occur (also `EDEADLOCK`).
    EDEADLK = 35,
    /// Name too long.
    ENAMETOOLONG = 36,
    /// No locks available.
    ENOLCK = 37,
    /// Function not implemented (unknown hypercall or sub-command).
    ENOSYS = 38,
    /// Not empty.
    ENOTEMPTY = 39,
    /// No data available.
    ENODATA = 61,
    /// Timer expired.
    ETIME = 62,
    /// Not a data message.
    EBADMSG = 74,
    /// Value too large.
    EOVERFLOW = 75,
    /// Illegal byte sequence.
    EILSEQ = 84,
    /// Restart the operation; hypervisor-internal, never returned to a guest.
    ERESTART = 85,
    /// Not a socket.
    ENOTSOCK = 88,
    /// Message too long.
    EMSGSIZE = 90,
    /// Operation not supported.
    EOPNOTSUPP = 95,
    /// Address in use.
    EADDRINUSE = 98,
    /// Address not available.
    EADDRNOTAVAIL = 99,
    /// No buffer space.
    ENOBUFS = 105,
    /// Already connected.
    EISCONN = 106,
    /// Not connected.
    ENOTCONN = 107,
    /// Timed out.
    ETIMEDOUT = 110,
    /// Connection refused.
    ECONNREFUSED = 111,
}

impl Errno {
    /// Alias of [`Errno::EAGAIN`].
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;
    /// Alias of [`Errno::EDEADLK`].
    pub const EDEADLOCK: Errno = Errno::EDEADLK;

    /// Every error number, in ascending order.
    pub const ALL: &'static [Errno] = &[
        Errno::EPERM,
        Errno::ENOENT,
        Errno::ESRCH,
        Errno::EINTR,
        Errno::EIO,
        Errno::ENXIO,
        Errno::E2BIG,
        Errno::ENOEXEC,
        Errno::EBADF,
        Errno::ECHILD,
        Errno::EAGAIN,
        Errno::ENOMEM,
        Errno::EACCES,
        Errno::EFAULT,
        Errno::EBUSY,
        Errno::EEXIST,
        Errno::EXDEV,
        Errno::ENODEV,
        Errno::ENOTDIR,
        Errno::EISDIR,
        Errno::EINVAL,
        Errno::ENFILE,
        Errno::EMFILE,
        Errno::ENOSPC,
        Errno::EROFS,
        Errno::EMLINK,
        Errno::EDOM,
        Errno::ERANGE,
        Errno::EDEADLK,
        Errno::ENAMETOOLONG,
        Errno::ENOLCK,
        Errno::ENOSYS,
        Errno::ENOTEMPTY,
        Errno::ENODATA,
        Errno::ETIME,
        Errno::EBADMSG,
        Errno::EOVERFLOW,
        Errno::EILSEQ,
        Errno::ERESTART,
        Errno::ENOTSOCK,
        Errno::EMSGSIZE,
        Errno::EOPNOTSUPP,
        Errno::EADDRINUSE,
        Errno::EADDRNOTAVAIL,
        Errno::ENOBUFS,
        Errno::EISCONN,
        Errno::ENOTCONN,
        Errno::ETIMEDOUT,
        Errno::ECONNREFUSED,
    ];

    /// The positive error number.
    pub const fn raw(self) -> i32 {
        self as i32
    }

    /// The hypercall return value reporting this error: `-errno`.
    pub const fn as_ret(self) -> i64 {
        -(self as i64)
    }

    /// The error for a positive error number.
    pub fn from_raw(errno: i32) -> Result<Self, UnknownValue> {
        Self::ALL
            .iter()
            .copied()
            .find(|e| e.raw() == errno)
            .ok_or(UnknownValue {
                type_name: "Errno",
                value: errno as i64 as u64,
            })
    }

    /// The symbolic name, e.g. `"EINVAL"`.
    pub const fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::ESRCH => "ESRCH",
            Errno::EINTR => "EINTR",
            Errno::EIO => "EIO",
            Errno::ENXIO => "ENXIO",
            Errno::E2BIG => "E2BIG",
            Errno::ENOEXEC => "ENOEXEC",
            Errno::EBADF => "EBADF",
            Errno::ECHILD => "ECHILD",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EACCES => "EACCES",
            Errno::EFAULT => "EFAULT",
            Errno::EBUSY => "EBUSY",
            Errno::EEXIST => "EEXIST",
            Errno::EXDEV => "EXDEV",
            Errno::ENODEV => "ENODEV",
            Errno::ENOTDIR => "ENOTDIR",
            Errno::EISDIR => "EISDIR",
            Errno::EINVAL => "EINVAL",
            Errno::ENFILE => "ENFILE",
            Errno::EMFILE => "EMFILE",
            Errno::ENOSPC => "ENOSPC",
            Errno::EROFS => "EROFS",
            Errno::EMLINK => "EMLINK",
            Errno::EDOM => "EDOM",
            Errno::ERANGE => "ERANGE",
            Errno::EDEADLK => "EDEADLK",
            Errno::ENAMETOOLONG => "ENAMETOOLONG",
            Errno::ENOLCK => "ENOLCK",
            Errno::ENOSYS => "ENOSYS",
            Errno::ENOTEMPTY => "ENOTEMPTY",
            Errno::ENODATA => "ENODATA",
            Errno::ETIME => "ETIME",
            Errno::EBADMSG => "EBADMSG",
            Errno::EOVERFLOW => "EOVERFLOW",
            Errno::EILSEQ => "EILSEQ",
            Errno::ERESTART => "ERESTART",
            Errno::ENOTSOCK => "ENOTSOCK",
            Errno::EMSGSIZE => "EMSGSIZE",
            Errno::EOPNOTSUPP => "EOPNOTSUPP",
            Errno::EADDRINUSE => "EADDRINUSE",
            Errno::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            Errno::ENOBUFS => "ENOBUFS",
            Errno::EISCONN => "EISCONN",
            Errno::ENOTCONN => "ENOTCONN",
            Errno::ETIMEDOUT => "ETIMEDOUT",
            Errno::ECONNREFUSED => "ECONNREFUSED",
        }
    }

    /// The error whose symbolic name is `name` (as used on the xenstore wire).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|e| e.name() == name)
    }
}

impl core::fmt::Display for Errno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Errno> for i32 {
    fn from(e: Errno) -> i32 {
        e.raw()
    }
}

/// Decodes a hypercall return value that reports an error: `-errno`.
/// Non-negative values and unknown numbers are rejected.
impl TryFrom<i64> for Errno {
    type Error = UnknownValue;

    fn try_from(ret: i64) -> Result<Self, Self::Error> {
        let unknown = UnknownValue {
            type_name: "Errno",
            value: ret as u64,
        };
        if ret >= 0 {
            return Err(unknown);
        }
        match i32::try_from(ret.unsigned_abs()) {
            Ok(n) => Self::from_raw(n).map_err(|_| unknown),
            Err(_) => Err(unknown),
        }
    }
}

/// A failed hypercall as seen by a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HypercallError {
    /// A known Xen error number.
    Errno(Errno),
    /// A negative return value that is not a known error number.
    Other(i64),
}

impl core::fmt::Display for HypercallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HypercallError::Errno(e) => write!(f, "{e}"),
            HypercallError::Other(v) => write!(f, "error {v}"),
        }
    }
}

/// Splits a raw hypercall return value: negative is an error, anything else
/// the (non-negative) result.
pub fn ret_to_result(ret: i64) -> Result<u64, HypercallError> {
    if ret >= 0 {
        Ok(ret as u64)
    } else {
        Err(Errno::try_from(ret)
            .map(HypercallError::Errno)
            .unwrap_or(HypercallError::Other(ret)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_xen_errno_h() {
        let expect = [
            (Errno::EPERM, 1),
            (Errno::ENOENT, 2),
            (Errno::ESRCH, 3),
            (Errno::EAGAIN, 11),
            (Errno::ENOMEM, 12),
            (Errno::EFAULT, 14),
            (Errno::EBUSY, 16),
            (Errno::EEXIST, 17),
            (Errno::EINVAL, 22),
            (Errno::ENOSPC, 28),
            (Errno::ENOSYS, 38),
            (Errno::ENODATA, 61),
            (Errno::ERESTART, 85),
            (Errno::EOPNOTSUPP, 95),
            (Errno::ENOBUFS, 105),
            (Errno::ETIMEDOUT, 110),
            (Errno::ECONNREFUSED, 111),
        ];
        for (e, v) in expect {
            assert_eq!(e.raw(), v);
        }
        assert_eq!(Errno::EWOULDBLOCK, Errno::EAGAIN);
        assert_eq!(Errno::EDEADLOCK.raw(), 35);
    }

    #[test]
    fn as_ret_is_negative_and_round_trips() {
        assert_eq!(Errno::EINVAL.as_ret(), -22);
        assert_eq!(Errno::ENOSYS.as_ret(), -38);
        for &e in Errno::ALL {
            assert_eq!(Errno::try_from(e.as_ret()), Ok(e));
            assert_eq!(Errno::from_raw(e.raw()), Ok(e));
            assert_eq!(Errno::from_name(e.name()), Some(e));
        }
        let mut sorted = Errno::ALL.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), Errno::ALL.len());
    }

    #[test]
    fn rejects_non_errors_and_unknown_numbers() {
        for bad in [0i64, 1, 22, -15, -20000, i64::MIN, -(1i64 << 33) - 22] {
            assert!(Errno::try_from(bad).is_err(), "{bad}");
        }
        assert!(Errno::from_raw(0).is_err());
        assert!(Errno::from_name("EWHATEVER").is_none());
    }

    #[test]
    fn ret_to_result_splits_success_and_errors() {
        assert_eq!(ret_to_result(0), Ok(0));
        assert_eq!(ret_to_result(0x4_0011), Ok(0x4_0011));
        assert_eq!(
            ret_to_result(-22),
            Err(HypercallError::Errno(Errno::EINVAL))
        );
        assert_eq!(ret_to_result(-15), Err(HypercallError::Other(-15)));
    }
}
