//! Console lines: every line pvguest prints is formatted into one fixed buffer and handed to
//! the console in a single write, so lines never interleave and Xen logs each one whole.

use core::fmt;

/// A line of at most `N` bytes including its newline. Text that does not fit is cut and the
/// line ends in `...`, so a long line is still one write; embedded line breaks become spaces
/// so the result is exactly one line.
#[derive(Debug)]
pub struct LineBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
}

/// Bytes kept free for the truncation marker and the newline.
const RESERVE: usize = 4;

impl<const N: usize> LineBuf<N> {
    const ASSERT_ROOM: () = assert!(N > RESERVE, "a line needs room for text and its ending");

    /// An empty line.
    pub const fn new() -> Self {
        let () = Self::ASSERT_ROOM;
        Self {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }

    /// Ends the line and returns its bytes, newline included.
    pub fn finish(&mut self) -> &[u8] {
        if self.truncated {
            self.buf[self.len..self.len + 3].copy_from_slice(b"...");
            self.len += 3;
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
        &self.buf[..self.len]
    }
}

impl<const N: usize> Default for LineBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for LineBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - RESERVE - self.len;
        let take = s.len().min(room);
        if take < s.len() {
            self.truncated = true;
        }
        for (dst, &src) in self.buf[self.len..self.len + take]
            .iter_mut()
            .zip(s.as_bytes())
        {
            *dst = if src == b'\n' || src == b'\r' {
                b' '
            } else {
                src
            };
        }
        self.len += take;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn a_short_line_gets_its_newline() {
        let mut l = LineBuf::<32>::new();
        let name = "xen_version";
        write!(l, "selftest: {name} ok").unwrap();
        assert_eq!(l.finish(), b"selftest: xen_version ok\n");
    }

    #[test]
    fn a_long_line_is_cut_with_a_marker() {
        let mut l = LineBuf::<12>::new();
        write!(l, "0123456789abcdef").unwrap();
        assert_eq!(l.finish(), b"01234567...\n");
        assert_eq!(l.len, 12);
    }

    #[test]
    fn embedded_newlines_become_spaces() {
        let mut l = LineBuf::<32>::new();
        l.write_str("a\nb\r").unwrap();
        assert_eq!(l.finish(), b"a b \n");
    }

    #[test]
    fn exactly_full_is_not_truncated() {
        let mut l = LineBuf::<8>::new();
        l.write_str("abcd").unwrap();
        assert_eq!(l.finish(), b"abcd\n");
    }
}
