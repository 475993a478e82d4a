//! The serial console: COM1 (a 16550 at 0x3f8) as the `log` backend.
//!
//! Every line hv prints starts with `(XEN) `, then the time since boot, the CPU and a level
//! letter, as in `(XEN) [    0.012345] c0 I: message`. The level comes from a compile-time
//! default, overridden by `loglvl=` on the command line. Input is polled (see `poll_input`).

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::SerialPort;

const COM1: u16 = 0x3f8;

// SAFETY: 0x3f8 is COM1's standard I/O base on every PC platform hv boots on (QEMU microvm
// and q35, Bochs, real machines); hv is the only user of those ports.
static SERIAL: Mutex<SerialPort> = Mutex::new(unsafe { SerialPort::new(COM1) });

/// The level used until the command line is read.
pub const DEFAULT_LEVEL: log::LevelFilter = log::LevelFilter::Info;

struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => 'E',
            log::Level::Warn => 'W',
            log::Level::Info => 'I',
            log::Level::Debug => 'D',
            log::Level::Trace => 'T',
        };
        let ns = super::time::now_ns();
        let mut port = SERIAL.lock();
        let _ = writeln!(
            Crlf(&mut port),
            "(XEN) [{:5}.{:06}] c0 {level}: {}",
            ns / 1_000_000_000,
            (ns % 1_000_000_000) / 1000,
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Translates `\n` to `\r\n` for terminals.
struct Crlf<'a>(&'a mut SerialPort);

impl Write for Crlf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.send(b'\r');
            }
            self.0.send(b);
        }
        Ok(())
    }
}

/// Programs the UART and installs the logger.
pub fn init() {
    SERIAL.lock().init();
    // A second call (there is none) would fail harmlessly; the logger stays the same.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(DEFAULT_LEVEL);
}

/// Prints one line of a guest's console output, prefixed `(dN)` as Xen does (no prefix for
/// `None`: a line the control domain relays carries its domU's). Control characters are
/// shown as `?` so a guest cannot drive the terminal.
pub fn guest_line(prefix: Option<u16>, line: &[u8]) {
    let mut port = SERIAL.lock();
    let mut out = Crlf(&mut port);
    if let Some(domid) = prefix {
        let _ = write!(out, "(d{domid}) ");
    }
    for &b in line {
        let c = if b == b'\t' || (0x20..0x7f).contains(&b) {
            b
        } else {
            b'?'
        };
        out.0.send(c);
    }
    let _ = out.write_str("\n");
}

/// Prints without the log prefix, for multi-line dumps that must get out even when the
/// console lock is held by the code that faulted.
pub fn emergency_print(args: fmt::Arguments<'_>) {
    // SAFETY: called only on the way to power-off with interrupts disabled (fatal traps and
    // panics); whoever held the lock will never run again, so taking the port over cannot
    // interleave with a write that is still going to complete.
    unsafe { SERIAL.force_unlock() };
    let mut port = SERIAL.lock();
    let _ = Crlf(&mut port).write_fmt(args);
}

/// Waits (boundedly) until the UART has sent everything, so a power-off that follows does not
/// cut the last line short.
pub fn drain() {
    const LINE_STATUS: u16 = COM1 + 5;
    const TRANSMITTER_EMPTY: u8 = 1 << 6;
    let mut lsr = x86_64::instructions::port::PortReadOnly::<u8>::new(LINE_STATUS);
    for _ in 0..100_000 {
        // SAFETY: reading COM1's line status register has no side effect on transmission.
        if unsafe { lsr.read() } & TRANSMITTER_EMPTY != 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

/// Reads a byte of console input if one is waiting.
pub fn poll_input() -> Option<u8> {
    SERIAL.try_lock()?.try_receive().ok()
}
