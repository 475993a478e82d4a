//! The console: `console_io` writes, one per line (the initial domain's console; Xen copies
//! the bytes straight to its serial line).

use core::fmt::{self, Write};

use pvguest::line::LineBuf;

use super::pv;

/// Longest line printed in one piece.
const LINE_MAX: usize = 256;

/// Prints one formatted line.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::kernel::console::write_line(format_args!($($arg)*))
    };
}

/// Formats `args` into one line and writes it with a single `console_io` call.
pub fn write_line(args: fmt::Arguments<'_>) {
    let mut line = LineBuf::<LINE_MAX>::new();
    // A formatting error can only come from a Display impl; print what was formatted.
    let _ = line.write_fmt(args);
    // Nothing sensible remains to be done if the console itself fails.
    let _ = pv::hypercalls().console_io_write(line.finish());
}
