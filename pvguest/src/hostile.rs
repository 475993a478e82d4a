//! Hostile-mode bookkeeping: what each attack's outcome was, the line that reports it, and
//! the summary. The harness on the host judges a run by these exact texts:
//!
//! - `hostile: <name> refused <ERRNO>`: the hypercall failed with that Xen errno;
//! - `hostile: <name> refused <how>`: it returned success but did nothing harmful (`no-op`,
//!   `dpl-raised`, `contained`, ...), as checked by the attack itself;
//! - `hostile: <name> faulted #PF`: the access faulted and the fault reached the guest;
//! - `hostile: <name> ALLOWED (returned <value>)`: the attack worked.
//!
//! then `hostile: <N> attacks, <R> refused, <A> allowed` and [`DONE_LINE`].

use core::fmt;

use hypercall_abi::errno::{Errno, HypercallError};

/// The last line of a hostile run.
pub const DONE_LINE: &str = "pvguest: HOSTILE DONE";

/// How one attack ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The hypercall failed with a known Xen errno.
    Refused(Errno),
    /// The hypercall failed with a negative value that is no known errno.
    RefusedRaw(i64),
    /// The hypercall succeeded but the attack achieved nothing; the word says how.
    Contained(&'static str),
    /// The access faulted and the fault (this vector) was delivered to the guest.
    Faulted(u8),
    /// The attack worked; the hypercall returned this value.
    Allowed(i64),
}

impl Verdict {
    /// The verdict for a hypercall that must fail: an error is a refusal, anything else
    /// means the attack got through.
    pub fn from_ret(ret: i64) -> Verdict {
        match Errno::try_from(ret) {
            Ok(errno) => Verdict::Refused(errno),
            Err(_) if ret < 0 => Verdict::RefusedRaw(ret),
            Err(_) => Verdict::Allowed(ret),
        }
    }

    /// As [`Verdict::from_ret`], for a typed wrapper's result.
    pub fn from_result(result: Result<u64, HypercallError>) -> Verdict {
        match result {
            Ok(value) => Verdict::Allowed(value as i64),
            Err(HypercallError::Errno(errno)) => Verdict::Refused(errno),
            Err(HypercallError::Other(raw)) => Verdict::RefusedRaw(raw),
        }
    }

    /// Whether the attack was stopped (refused, contained or faulted).
    pub fn stopped(&self) -> bool {
        !matches!(self, Verdict::Allowed(_))
    }
}

/// The mnemonic of exception `vector` (`#PF`), or `#<n>` for the others.
fn vector_name(vector: u8) -> Option<&'static str> {
    const NAMES: [&str; 20] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS",
        "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM",
    ];
    NAMES.get(usize::from(vector)).copied()
}

/// The line reporting one attack.
#[derive(Clone, Copy, Debug)]
pub struct AttackLine<'a> {
    /// The attack's name (one word).
    pub name: &'a str,
    /// Its outcome.
    pub verdict: Verdict,
}

impl fmt::Display for AttackLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hostile: {} ", self.name)?;
        match self.verdict {
            Verdict::Refused(errno) => write!(f, "refused {errno}"),
            Verdict::RefusedRaw(raw) => write!(f, "refused error{raw}"),
            Verdict::Contained(how) => write!(f, "refused {how}"),
            Verdict::Faulted(vector) => match vector_name(vector) {
                Some(name) => write!(f, "faulted {name}"),
                None => write!(f, "faulted #{vector}"),
            },
            Verdict::Allowed(value) => write!(f, "ALLOWED (returned {value})"),
        }
    }
}

/// Counts of attacks and how they ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Attacks tried.
    pub attacks: u32,
    /// Attacks stopped (refused, contained or faulted).
    pub refused: u32,
    /// Attacks that worked.
    pub allowed: u32,
}

impl Tally {
    /// Counts `verdict` and returns the line that reports it.
    pub fn record<'a>(&mut self, name: &'a str, verdict: Verdict) -> AttackLine<'a> {
        self.attacks += 1;
        if verdict.stopped() {
            self.refused += 1;
        } else {
            self.allowed += 1;
        }
        AttackLine { name, verdict }
    }

    /// The summary line.
    pub fn summary(&self) -> Summary {
        Summary(*self)
    }
}

/// `hostile: <N> attacks, <R> refused, <A> allowed`.
#[derive(Clone, Copy, Debug)]
pub struct Summary(Tally);

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hostile: {} attacks, {} refused, {} allowed",
            self.0.attacks, self.0.refused, self.0.allowed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn return_values_become_verdicts() {
        assert_eq!(Verdict::from_ret(-22), Verdict::Refused(Errno::EINVAL));
        assert_eq!(Verdict::from_ret(-16), Verdict::Refused(Errno::EBUSY));
        assert_eq!(Verdict::from_ret(-4095), Verdict::RefusedRaw(-4095));
        assert_eq!(Verdict::from_ret(0), Verdict::Allowed(0));
        assert_eq!(Verdict::from_ret(7), Verdict::Allowed(7));
        assert_eq!(
            Verdict::from_result(Err(HypercallError::Errno(Errno::EFAULT))),
            Verdict::Refused(Errno::EFAULT)
        );
        assert_eq!(Verdict::from_result(Ok(3)), Verdict::Allowed(3));
        assert!(Verdict::Faulted(14).stopped());
        assert!(Verdict::Contained("no-op").stopped());
        assert!(!Verdict::Allowed(0).stopped());
    }

    #[test]
    fn lines_name_the_attack_and_its_outcome() {
        let line = |verdict| {
            AttackLine {
                name: "map_l4_rw",
                verdict,
            }
            .to_string()
        };
        assert_eq!(
            line(Verdict::Refused(Errno::EBUSY)),
            "hostile: map_l4_rw refused EBUSY"
        );
        assert_eq!(
            line(Verdict::RefusedRaw(-300)),
            "hostile: map_l4_rw refused error-300"
        );
        assert_eq!(
            line(Verdict::Contained("no-op")),
            "hostile: map_l4_rw refused no-op"
        );
        assert_eq!(line(Verdict::Faulted(14)), "hostile: map_l4_rw faulted #PF");
        assert_eq!(line(Verdict::Faulted(13)), "hostile: map_l4_rw faulted #GP");
        assert_eq!(line(Verdict::Faulted(40)), "hostile: map_l4_rw faulted #40");
        assert_eq!(
            line(Verdict::Allowed(0)),
            "hostile: map_l4_rw ALLOWED (returned 0)"
        );
    }

    #[test]
    fn the_tally_counts_faults_and_containment_as_refusals() {
        let mut t = Tally::default();
        t.record("a", Verdict::Refused(Errno::EINVAL));
        t.record("b", Verdict::Faulted(14));
        t.record("c", Verdict::Contained("no-op"));
        t.record("d", Verdict::Allowed(0));
        assert_eq!(
            t,
            Tally {
                attacks: 4,
                refused: 3,
                allowed: 1
            }
        );
        assert_eq!(
            t.summary().to_string(),
            "hostile: 4 attacks, 3 refused, 1 allowed"
        );
    }
}
