//! Node permissions in Xen's model: a non-empty list whose first entry names the owner (who
//! always has full access) and the access everyone else gets by default; later entries grant a
//! specific domain its own access. Privileged callers bypass the check (in [`Caller`]).
//! On the wire each entry is a letter (`n` none, `r` read, `w` write, `b` both) and a domid.

use alloc::vec;
use alloc::vec::Vec;

use super::{DomId, XsError};

/// What one permission entry allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read only.
    Read,
    /// `w`: write only.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// Whether reads are allowed.
    pub const fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// Whether writes are allowed.
    pub const fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }

    const fn letter(self) -> u8 {
        match self {
            Access::None => b'n',
            Access::Read => b'r',
            Access::Write => b'w',
            Access::Both => b'b',
        }
    }

    const fn from_letter(letter: u8) -> Option<Self> {
        match letter {
            b'n' => Some(Access::None),
            b'r' => Some(Access::Read),
            b'w' => Some(Access::Write),
            b'b' => Some(Access::Both),
            _ => None,
        }
    }
}

/// One permission entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// The domain the entry is about.
    pub domid: DomId,
    /// What it may do.
    pub access: Access,
}

/// A node's permissions; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Perms(Vec<Perm>);

impl Perms {
    /// Owned by `owner`, everyone else gets `default`.
    pub fn new(owner: DomId, default: Access) -> Self {
        Perms(vec![Perm {
            domid: owner,
            access: default,
        }])
    }

    /// From a list of entries; `None` if it is empty.
    pub fn from_entries(entries: Vec<Perm>) -> Option<Self> {
        if entries.is_empty() {
            None
        } else {
            Some(Perms(entries))
        }
    }

    /// The entries, owner first.
    pub fn entries(&self) -> &[Perm] {
        &self.0
    }

    /// The owning domain.
    pub fn owner(&self) -> DomId {
        self.0[0].domid
    }

    /// The same permissions with `owner` as the owner.
    pub fn with_owner(mut self, owner: DomId) -> Self {
        self.0[0].domid = owner;
        self
    }

    /// What an unprivileged `domid` may do: everything if it owns the node, its own entry if it
    /// has one, else the default.
    pub fn access_for(&self, domid: DomId) -> Access {
        if domid == self.owner() {
            return Access::Both;
        }
        self.0[1..]
            .iter()
            .find(|p| p.domid == domid)
            .map_or(self.0[0].access, |p| p.access)
    }

    /// Parses one wire entry such as `b5`: a letter then a decimal domid.
    pub fn parse_entry(text: &[u8]) -> Result<Perm, XsError> {
        let (&letter, digits) = text.split_first().ok_or(XsError::Invalid)?;
        let access = Access::from_letter(letter).ok_or(XsError::Invalid)?;
        let domid = parse_domid(digits)?;
        Ok(Perm { domid, access })
    }

    /// Parses the entries of a `SET_PERMS` request.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, XsError> {
        let parsed = entries
            .into_iter()
            .map(Self::parse_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_entries(parsed).ok_or(XsError::Invalid)
    }

    /// Appends the wire form, each entry NUL-terminated (the `GET_PERMS` reply).
    pub fn encode(&self, out: &mut Vec<u8>) {
        for p in &self.0 {
            out.push(p.access.letter());
            out.extend_from_slice(alloc::format!("{}", p.domid).as_bytes());
            out.push(0);
        }
    }
}

/// Parses a decimal domid (0..=65535); anything else is `EINVAL`.
pub fn parse_domid(digits: &[u8]) -> Result<DomId, XsError> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(XsError::Invalid);
    }
    let value = digits
        .iter()
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    DomId::try_from(value).map_err(|_| XsError::Invalid)
}

/// Who is asking, and whether the permission checks apply to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The calling domain.
    pub domid: DomId,
    /// Privileged callers (the control domain) bypass permissions and quotas.
    pub privileged: bool,
}

impl Caller {
    /// Whether the caller may read a node with `perms`.
    pub fn may_read(&self, perms: &Perms) -> bool {
        self.privileged || perms.access_for(self.domid).can_read()
    }

    /// Whether the caller may write a node with `perms`.
    pub fn may_write(&self, perms: &Perms) -> bool {
        self.privileged || perms.access_for(self.domid).can_write()
    }

    /// Whether the caller may change a node's permissions.
    pub fn may_set_perms(&self, perms: &Perms) -> bool {
        self.privileged || perms.owner() == self.domid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_has_full_access_and_others_get_the_default() {
        let p = Perms::new(5, Access::Read);
        assert_eq!(p.access_for(5), Access::Both);
        assert_eq!(p.access_for(6), Access::Read);
        assert_eq!(Perms::new(5, Access::None).access_for(0), Access::None);
    }

    #[test]
    fn specific_entries_override_the_default() {
        let p = Perms::parse([&b"n1"[..], b"r2", b"w3", b"b4"]).unwrap();
        assert_eq!(p.owner(), 1);
        assert_eq!(p.access_for(2), Access::Read);
        assert_eq!(p.access_for(3), Access::Write);
        assert_eq!(p.access_for(4), Access::Both);
        assert_eq!(p.access_for(9), Access::None);
        let mut wire = Vec::new();
        p.encode(&mut wire);
        assert_eq!(wire, b"n1\0r2\0w3\0b4\0");
    }

    #[test]
    fn privileged_callers_bypass() {
        let p = Perms::new(5, Access::None);
        let dom0 = Caller {
            domid: 0,
            privileged: true,
        };
        let dom7 = Caller {
            domid: 7,
            privileged: false,
        };
        assert!(dom0.may_read(&p) && dom0.may_write(&p) && dom0.may_set_perms(&p));
        assert!(!dom7.may_read(&p) && !dom7.may_write(&p) && !dom7.may_set_perms(&p));
    }

    #[test]
    fn bad_entries_are_invalid() {
        for bad in [
            &b""[..],
            b"x1",
            b"r",
            b"r-1",
            b"r65536",
            b"r1a",
            b"r123456",
            b"R1",
        ] {
            assert_eq!(Perms::parse_entry(bad), Err(XsError::Invalid), "{bad:?}");
        }
        assert_eq!(Perms::parse(core::iter::empty()), Err(XsError::Invalid));
        assert_eq!(parse_domid(b"65535"), Ok(65535));
        assert_eq!(parse_domid(b"0"), Ok(0));
    }
}
