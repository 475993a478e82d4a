//! Selftest bookkeeping: one line per check, one summary line and one verdict line at the end.
//! The harness on the host judges a run by these exact texts.

use alloc::string::String;
use core::fmt;

/// The verdict line of a run in which every check passed.
pub const SUCCESS_LINE: &str = "pvguest: SELFTEST SUCCESS";
/// The verdict line of a run in which some check failed.
pub const FAILURE_LINE: &str = "pvguest: SELFTEST FAILURE";

/// The outcome of one check: `Err` carries the reason it failed.
pub type CheckResult = Result<(), String>;

/// Fails the enclosing check with a formatted reason unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(alloc::format!($($arg)+));
        }
    };
}

/// The line reporting one check.
#[derive(Clone, Copy, Debug)]
pub struct CheckLine<'a> {
    /// The check's name (one word).
    pub name: &'a str,
    /// Its outcome.
    pub result: &'a CheckResult,
}

impl fmt::Display for CheckLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.result {
            Ok(()) => write!(f, "selftest: {} ok", self.name),
            Err(why) => write!(f, "selftest: {} FAILED: {}", self.name, why),
        }
    }
}

/// Counts of passed and failed checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
}

impl Tally {
    /// Counts `result` and returns the line that reports it.
    pub fn record<'a>(&mut self, name: &'a str, result: &'a CheckResult) -> CheckLine<'a> {
        if result.is_ok() {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        CheckLine { name, result }
    }

    /// Whether the run succeeded: at least one check ran and none failed.
    pub fn success(&self) -> bool {
        self.failed == 0 && self.passed > 0
    }

    /// The summary line.
    pub fn summary(&self) -> Summary {
        Summary(*self)
    }

    /// The verdict line.
    pub fn verdict(&self) -> &'static str {
        if self.success() {
            SUCCESS_LINE
        } else {
            FAILURE_LINE
        }
    }
}

/// `pvguest selftest: <N> passed, <M> failed`.
#[derive(Clone, Copy, Debug)]
pub struct Summary(Tally);

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pvguest selftest: {} passed, {} failed",
            self.0.passed, self.0.failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    fn positive(v: i32) -> CheckResult {
        ensure!(v > 0, "{v} is not positive");
        Ok(())
    }

    #[test]
    fn lines_and_counts() {
        let mut t = Tally::default();
        let ok = positive(1);
        let bad = positive(-2);
        assert_eq!(
            t.record("sign", &ok).to_string(),
            "selftest: sign ok".to_string()
        );
        assert_eq!(
            t.record("sign2", &bad).to_string(),
            "selftest: sign2 FAILED: -2 is not positive"
        );
        assert_eq!(
            t,
            Tally {
                passed: 1,
                failed: 1
            }
        );
        assert_eq!(
            format!("{}", t.summary()),
            "pvguest selftest: 1 passed, 1 failed"
        );
        assert!(!t.success());
        assert_eq!(t.verdict(), FAILURE_LINE);
    }

    #[test]
    fn success_needs_a_check_and_no_failure() {
        let mut t = Tally::default();
        assert!(!t.success());
        t.record("a", &Ok(()));
        assert!(t.success());
        assert_eq!(t.verdict(), SUCCESS_LINE);
        assert_eq!(
            format!("{}", t.summary()),
            "pvguest selftest: 1 passed, 0 failed"
        );
    }
}
