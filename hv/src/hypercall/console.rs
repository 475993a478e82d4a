//! `console_io`: a domain's direct line to hv's serial console, prefixed `(dN)`.

use super::{Ctx, HcResult};
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
                let (id, hw) = (ctx.dom.id, &mut *ctx.hw);
                ctx.dom
                    .console_write(&chunk[..n], |line| hw.console_line(id, line));
                done += n as u64;
            }
            Ok(0)
        }
        Ok(ConsoleIoCmd::Read) => {
            if !ctx.dom.privileged {
                return Err(Errno::EPERM);
            }
            let mut chunk = [0u8; CHUNK];
            let n = ctx
                .hw
                .console_read(&mut chunk[..count.min(CHUNK as u64) as usize]);
            ctx.mem.write(buf, &chunk[..n])?;
            Ok(n as i64)
        }
        Err(_) => Err(Errno::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};

    const CONSOLE_IO: u64 = 18;

    #[test]
    fn lines_are_emitted_per_newline() {
        let mut w = World::new();
        w.mem.bytes[..12].copy_from_slice(b"hello\nworld\n");
        assert_eq!(w.call(CONSOLE_IO, &[0, 8, MEM_BASE]).1, 0);
        assert_eq!(w.hw.lines, vec![(1, b"hello".to_vec())]);
        assert_eq!(w.call(CONSOLE_IO, &[0, 4, MEM_BASE + 8]).1, 0);
        assert_eq!(w.hw.lines[1], (1, b"world".to_vec()));
    }

    #[test]
    fn faults_limits_and_privilege() {
        let mut w = World::new();
        assert_eq!(w.call(CONSOLE_IO, &[0, 16, 0x10]).1, -14);
        assert_eq!(w.call(CONSOLE_IO, &[0, u64::MAX, MEM_BASE]).1, -22);
        assert_eq!(w.call(CONSOLE_IO, &[1, 4, MEM_BASE]).1, -1);
        w.dom.privileged = true;
        w.hw.input = b"ab".to_vec();
        assert_eq!(w.call(CONSOLE_IO, &[1, 4, MEM_BASE]).1, 2);
        assert_eq!(&w.mem.bytes[..2], b"ab");
        assert_eq!(w.call(CONSOLE_IO, &[7, 0, 0]).1, -38);
    }
}
