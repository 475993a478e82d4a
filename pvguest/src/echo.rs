//! `console-echo`: the portable part. Console input is cut into lines (ended by `\n` or by
//! `\r`, as a terminal's Enter key sends; empty lines are skipped, long ones cut at
//! [`CONSOLE_LINE_MAX`]); each line is answered with `echo: <line>`, and the line `quit`
//! ends the mode.

use alloc::string::String;

use crate::backend::{ConsoleLines, CONSOLE_LINE_MAX};

/// The line that ends the mode.
pub const QUIT: &str = "quit";

/// Console input on its way to echo lines.
#[derive(Debug)]
pub struct Echo {
    lines: ConsoleLines,
    quit: bool,
}

impl Default for Echo {
    fn default() -> Self {
        Self::new()
    }
}

impl Echo {
    /// Nothing received yet.
    pub fn new() -> Self {
        Echo {
            lines: ConsoleLines::new(CONSOLE_LINE_MAX),
            quit: false,
        }
    }

    /// Takes input bytes and hands the reply to every line they complete to `reply`, up to
    /// and including a `quit` line (input after it is ignored). Returns whether `quit` came.
    pub fn push(&mut self, bytes: &[u8], mut reply: impl FnMut(&str)) -> bool {
        for &b in bytes {
            if self.quit {
                break;
            }
            let b = if b == b'\r' { b'\n' } else { b };
            let quit = &mut self.quit;
            self.lines.push(&[b], |line| {
                if !line.is_empty() {
                    let mut text = String::from("echo: ");
                    text.push_str(line);
                    reply(&text);
                    *quit = line == QUIT;
                }
            });
        }
        self.quit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    fn replies(e: &mut Echo, bytes: &[u8]) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        let quit = e.push(bytes, |l| out.push(l.to_string()));
        (out, quit)
    }

    #[test]
    fn lines_end_at_newline_or_return_and_empty_ones_are_skipped() {
        let mut e = Echo::new();
        assert_eq!(replies(&mut e, b"hel"), (Vec::new(), false));
        let (out, quit) = replies(&mut e, b"lo\r\nworld\r\n\nx\ry");
        assert_eq!(out, ["echo: hello", "echo: world", "echo: x"]);
        assert!(!quit);
        let long = [b'a'; CONSOLE_LINE_MAX + 3];
        let (out, _) = replies(&mut e, &long);
        assert_eq!(out.len(), 1, "a full line is cut");
        assert_eq!(out[0].len(), "echo: ".len() + CONSOLE_LINE_MAX);
        assert!(out[0].starts_with("echo: yaaa"));
    }

    #[test]
    fn quit_ends_and_later_input_is_ignored() {
        let mut e = Echo::new();
        let (out, quit) = replies(&mut e, b"quitter\nquit\nafter\n");
        assert_eq!(out, ["echo: quitter", "echo: quit"]);
        assert!(quit);
        assert_eq!(replies(&mut e, b"more\n"), (Vec::new(), true));
    }
}
