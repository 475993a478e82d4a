//! The guest command line (`start_info.cmd_line`): its first word chooses what pvguest does.

/// What pvguest was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Exercise the hypercall ABI and report one line per check.
    Selftest,
    /// Crash the domain on purpose, in the named way (for isolation tests).
    Crash(CrashKind),
    /// Measure hypervisor paths and report one line per figure (see `crate::bench`).
    Bench,
    /// Attack the hypervisor's memory isolation and report one line per attack (see
    /// `crate::hostile`).
    Hostile,
}

/// The ways `crash=<how>` makes the domain die.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// `ud2` with no trap table installed: an exception the guest cannot handle.
    Unhandled,
    /// A write to hv's own memory (Xen's reserved range): a page fault with no handler.
    HvWrite,
    /// `sched_op(SHUTDOWN_crash)`.
    Shutdown,
    /// The `iret` hypercall with a return address inside Xen's reserved range.
    BadIret,
    /// An exception while the stack pointer names unmapped memory: the bounce frame cannot
    /// be written.
    BadStack,
}

impl CrashKind {
    /// Every kind, with its command-line name.
    pub const ALL: [(&'static str, CrashKind); 5] = [
        ("unhandled", CrashKind::Unhandled),
        ("hv-write", CrashKind::HvWrite),
        ("shutdown", CrashKind::Shutdown),
        ("bad-iret", CrashKind::BadIret),
        ("bad-stack", CrashKind::BadStack),
    ];
}

/// The line printed when the command line names no known mode.
pub const USAGE: &str = "pvguest: usage: command line `selftest` | `bench [filter=TEXT]` | `hostile` | `crash=unhandled|hv-write|shutdown|bad-iret|bad-stack`";

/// The first word of `cmdline` that names no known mode (empty when the line is empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownMode<'a>(pub &'a str);

/// Picks the mode from the first whitespace-separated word of `cmdline`. Later words are
/// ignored: Xen may append options of its own to the initial domain's command line.
pub fn parse_mode(cmdline: &[u8]) -> Result<Mode, UnknownMode<'_>> {
    let text = core::str::from_utf8(cmdline).unwrap_or("");
    let word = text.split_ascii_whitespace().next().unwrap_or("");
    match word {
        "selftest" => Ok(Mode::Selftest),
        "bench" => Ok(Mode::Bench),
        "hostile" => Ok(Mode::Hostile),
        other => match other.strip_prefix("crash=") {
            Some(how) => CrashKind::ALL
                .iter()
                .find(|(name, _)| *name == how)
                .map(|&(_, kind)| Mode::Crash(kind))
                .ok_or(UnknownMode(other)),
            None => Err(UnknownMode(other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_word_picks_the_mode() {
        assert_eq!(parse_mode(b"selftest"), Ok(Mode::Selftest));
        assert_eq!(parse_mode(b"  selftest noapic"), Ok(Mode::Selftest));
        assert_eq!(parse_mode(b"selftest\tfoo=1"), Ok(Mode::Selftest));
        assert_eq!(parse_mode(b"bench filter=evtchn"), Ok(Mode::Bench));
        assert_eq!(parse_mode(b"hostile"), Ok(Mode::Hostile));
    }

    #[test]
    fn crash_kinds() {
        assert_eq!(
            parse_mode(b"crash=hv-write"),
            Ok(Mode::Crash(CrashKind::HvWrite))
        );
        assert_eq!(
            parse_mode(b"crash=bad-stack x"),
            Ok(Mode::Crash(CrashKind::BadStack))
        );
        assert_eq!(
            parse_mode(b"crash=sideways"),
            Err(UnknownMode("crash=sideways"))
        );
        assert_eq!(parse_mode(b"crash="), Err(UnknownMode("crash=")));
    }

    #[test]
    fn other_words_are_unknown() {
        assert_eq!(parse_mode(b""), Err(UnknownMode("")));
        assert_eq!(
            parse_mode(b"benchmark selftest"),
            Err(UnknownMode("benchmark"))
        );
        assert_eq!(parse_mode(b"selftests"), Err(UnknownMode("selftests")));
        assert_eq!(parse_mode(&[0xff, 0xfe]), Err(UnknownMode("")));
    }
}
