//! The control domain's back ends (`backend` mode): the portable part of the console back
//! end, which cuts the bytes a domain produces on its console ring into lines for the hv
//! serial console.

use alloc::string::String;
use alloc::vec::Vec;

/// Longest console line the back end prints in one piece; longer lines are printed in pieces
/// of this size.
pub const CONSOLE_LINE_MAX: usize = 160;

/// Console output cut into lines: bytes go in as they come off the ring, complete lines come
/// out without their line ending (`\n`, with a `\r` before it dropped). A line longer than the
/// limit comes out in pieces of the limit, so one domain cannot make the back end buffer
/// without bound. Bytes that are not UTF-8 come out as U+FFFD.
#[derive(Debug)]
pub struct ConsoleLines {
    partial: Vec<u8>,
    max: usize,
}

impl ConsoleLines {
    /// A splitter that cuts lines at `max` bytes (at least 1).
    pub fn new(max: usize) -> Self {
        ConsoleLines {
            partial: Vec::new(),
            max: max.max(1),
        }
    }

    /// Takes `bytes` and hands every line they complete to `emit`.
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&str)) {
        for &b in bytes {
            if b == b'\n' {
                self.emit_partial(&mut emit);
            } else {
                self.partial.push(b);
                if self.partial.len() == self.max {
                    self.emit_partial(&mut emit);
                }
            }
        }
    }

    /// Hands the unfinished line, if any, to `emit` (when the domain has gone).
    pub fn flush(&mut self, mut emit: impl FnMut(&str)) {
        if !self.partial.is_empty() {
            self.emit_partial(&mut emit);
        }
    }

    fn emit_partial(&mut self, emit: &mut impl FnMut(&str)) {
        let bytes = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
        let text = String::from_utf8_lossy(bytes);
        emit(&text);
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn lines(splitter: &mut ConsoleLines, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        splitter.push(bytes, |l| out.push(l.to_string()));
        out
    }

    #[test]
    fn lines_complete_across_pushes() {
        let mut s = ConsoleLines::new(CONSOLE_LINE_MAX);
        assert_eq!(lines(&mut s, b"hello fr"), Vec::<String>::new());
        assert_eq!(
            lines(&mut s, b"om d1\nsecond\r\nthi"),
            ["hello from d1", "second"]
        );
        assert_eq!(lines(&mut s, b"rd\n\n"), ["third", ""]);
        let mut rest = Vec::new();
        s.flush(|l| rest.push(l.to_string()));
        assert!(rest.is_empty());
    }

    #[test]
    fn long_lines_are_cut_and_the_tail_is_flushed() {
        let mut s = ConsoleLines::new(4);
        assert_eq!(lines(&mut s, b"abcdefghij"), ["abcd", "efgh"]);
        let mut rest = Vec::new();
        s.flush(|l| rest.push(l.to_string()));
        assert_eq!(rest, ["ij"]);
        s.flush(|l| rest.push(l.to_string()));
        assert_eq!(rest, ["ij"]);
    }

    #[test]
    fn bad_utf8_is_replaced_not_dropped() {
        let mut s = ConsoleLines::new(CONSOLE_LINE_MAX);
        assert_eq!(lines(&mut s, &[b'a', 0xff, b'b', b'\n']), ["a\u{fffd}b"]);
        assert_eq!(lines(&mut s, &[b'x'; 3]), Vec::<String>::new());
    }
}
