//! The guest command line (`start_info.cmd_line`): its first word chooses what pvguest does.

/// What pvguest was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Exercise the hypercall ABI and report one line per check.
    Selftest,
}

/// The line printed when the command line names no known mode.
pub const USAGE: &str = "pvguest: usage: command line `selftest`";

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
        other => Err(UnknownMode(other)),
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
    }

    #[test]
    fn other_words_are_unknown() {
        assert_eq!(parse_mode(b""), Err(UnknownMode("")));
        assert_eq!(parse_mode(b"bench selftest"), Err(UnknownMode("bench")));
        assert_eq!(parse_mode(b"selftests"), Err(UnknownMode("selftests")));
        assert_eq!(parse_mode(&[0xff, 0xfe]), Err(UnknownMode("")));
    }
}
