//! `console_io`: a domain's direct line to hv's serial console, prefixed `(dN)`.
//!
//! The control domain's console back end relays each domU's ring output as lines that start
//! with that domU's `(dN) `; such a line from the privileged domain is printed as it is, so
//! the serial console shows `(d1) hello` rather than `(d0) (d1) hello`.
//!
//! `CONSOLEIO_read` takes the serial input hv queued for the caller (see [`crate::console`]);
//! only a domain whose input comes that way may use it (the control domain, and a PV domain
//! without a console ring), others get `EPERM`.

use super::{Ctx, HcResult};
use crate::console::Sink;
use hypercall_abi::errno::Errno;
use hypercall_abi::xen::ConsoleIoCmd;

/// Bytes copied per step (keeps hv's stack use bounded).
const CHUNK: usize = 128;
/// Most bytes one call may write (Xen has no limit; hv bounds the time spent in one call).
const MAX_WRITE: u64 = 64 * 1024;

pub(super) fn console_io(ctx: &mut Ctx<'_>, cmd: u64, count: u64, buf: u64) -> HcResult {
    match ConsoleIoCmd::try_from(cmd) {
        Ok(ConsoleIoCmd::Write) => {
            if count > MAX_WRITE {
                return Err(Errno::EINVAL);
            }
            let mut chunk = [0u8; CHUNK];
            let mut done = 0u64;
            while done < count {
                let n = (count - done).min(CHUNK as u64) as usize;
                let at = buf.checked_add(done).ok_or(Errno::EFAULT)?;
                ctx.mem.read(at, &mut chunk[..n])?;
                let (id, privileged, hw) = (ctx.dom.id, ctx.dom.privileged, &mut *ctx.hw);
                ctx.dom.console_write(&chunk[..n], |line| {
                    let relayed = privileged && has_domain_prefix(line);
                    hw.console_line((!relayed).then_some(id), line)
                });
                done += n as u64;
            }
            Ok(0)
        }
        Ok(ConsoleIoCmd::Read) => {
            if ctx.dom.console_in.sink() != Sink::Hypercall {
                return Err(Errno::EPERM);
            }
            // Bytes leave the queue only once they are in the caller's buffer.
            let mut chunk = [0u8; CHUNK];
            let n = ctx
                .dom
                .console_in
                .peek_into(&mut chunk[..count.min(CHUNK as u64) as usize]);
            ctx.mem.write(buf, &chunk[..n])?;
            ctx.dom.console_in.discard(n);
            Ok(n as i64)
        }
        Err(_) => Err(Errno::ENOSYS),
    }
}

/// Whether `line` starts with `(d<digits>) `.
fn has_domain_prefix(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"(d") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && rest.get(digits..).is_some_and(|r| r.starts_with(b") "))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use super::has_domain_prefix;
    use crate::console::{InputQueue, Sink};

    const CONSOLE_IO: u64 = 18;

    #[test]
    fn lines_are_emitted_per_newline() {
        let mut w = World::new();
        w.mem.bytes[..12].copy_from_slice(b"hello\nworld\n");
        assert_eq!(w.call(CONSOLE_IO, &[0, 8, MEM_BASE]).1, 0);
        assert_eq!(w.hw.lines, vec![(Some(1), b"hello".to_vec())]);
        assert_eq!(w.call(CONSOLE_IO, &[0, 4, MEM_BASE + 8]).1, 0);
        assert_eq!(w.hw.lines[1], (Some(1), b"world".to_vec()));
    }

    #[test]
    fn only_the_control_domain_relays_prefixed_lines_verbatim() {
        let text = b"(d2) hi\n(d) x\n(d12)y\nplain\n(d7) \n";
        let mut w = World::new();
        w.mem.bytes[..text.len()].copy_from_slice(text);
        assert_eq!(w.call(CONSOLE_IO, &[0, text.len() as u64, MEM_BASE]).1, 0);
        w.dom.privileged = true;
        assert_eq!(w.call(CONSOLE_IO, &[0, text.len() as u64, MEM_BASE]).1, 0);
        let (unprivileged, privileged) = w.hw.lines.split_at(5);
        let line = |p: Option<u16>, s: &[u8]| (p, s.to_vec());
        assert!(unprivileged.iter().all(|(p, _)| *p == Some(1)));
        assert_eq!(
            privileged,
            [
                line(None, b"(d2) hi"),
                line(Some(1), b"(d) x"),
                line(Some(1), b"(d12)y"),
                line(Some(1), b"plain"),
                line(None, b"(d7) "),
            ]
        );
    }

    #[test]
    fn domain_prefix_shape() {
        assert!(has_domain_prefix(b"(d0) "));
        assert!(has_domain_prefix(b"(d65535) text"));
        for no in [&b""[..], b"(d", b"(d1)", b"(dx) a", b" (d1) a", b"(D1) a"] {
            assert!(!has_domain_prefix(no), "{:?}", core::str::from_utf8(no));
        }
    }

    #[test]
    fn faults_limits_and_commands() {
        let mut w = World::new();
        assert_eq!(w.call(CONSOLE_IO, &[0, 16, 0x10]).1, -14);
        assert_eq!(w.call(CONSOLE_IO, &[0, u64::MAX, MEM_BASE]).1, -22);
        assert_eq!(w.call(CONSOLE_IO, &[7, 0, 0]).1, -38);
    }

    #[test]
    fn reads_take_the_domains_queued_input() {
        let mut w = World::new();
        w.dom.console_in.push(b"abcdef");
        assert_eq!(w.call(CONSOLE_IO, &[1, 4, MEM_BASE]).1, 4);
        assert_eq!(&w.mem.bytes[..4], b"abcd");
        // A bad buffer takes nothing from the queue.
        assert_eq!(w.call(CONSOLE_IO, &[1, 4, 0x10]).1, -14);
        assert_eq!(w.call(CONSOLE_IO, &[1, 100, MEM_BASE + 8]).1, 2);
        assert_eq!(&w.mem.bytes[8..10], b"ef");
        assert_eq!(w.call(CONSOLE_IO, &[1, 100, MEM_BASE]).1, 0);
        // A domain with a console ring reads its ring, not CONSOLEIO_read; other domains'
        // input is out of reach.
        w.peers[0].console_in.push(b"secret");
        w.dom.console_in = InputQueue::new(Sink::Ring { mfn: 1, port: 1 });
        w.dom.console_in.push(b"ring");
        assert_eq!(w.call(CONSOLE_IO, &[1, 4, MEM_BASE]).1, -1);
        assert_eq!(w.dom.console_in.len(), 4);
        assert_eq!(w.peers[0].console_in.len(), 6);
    }
}
