//! `multicall`: a batch of hypercalls in one trap.

use super::{call, continuation, to_rax, Ctx, Flow, Outcome};
use crate::mm::guest_access::{field, read_obj, write_obj};
use hypercall_abi::errno::Errno;
use hypercall_abi::xen::{Hypercall, MulticallEntry};

/// Entries run per step; a longer batch continues as a hypercall continuation, so one call
/// never holds hv for long.
const STEP: u64 = 128;

/// Runs each entry (op, result, args[6]) and stores its result. A call that stops the vCPU
/// (yield, block, shutdown) ends the batch after storing its result; after a domain destroy
/// the rest of the batch continues once the arch layer has acted on it.
pub(super) fn multicall(ctx: &mut Ctx<'_>, list: u64, count: u64) -> Flow {
    // Xen takes the count as 32 bits.
    let count = count & 0xffff_ffff;
    let size = core::mem::size_of::<MulticallEntry>() as u64;
    let step = count.min(STEP);
    for i in 0..step {
        let Some(at) = list.checked_add(i * size) else {
            return Flow::Value(Err(Errno::EFAULT));
        };
        let e: MulticallEntry = match read_obj(ctx.mem, at) {
            Ok(e) => e,
            Err(f) => return Flow::Value(Err(f.into())),
        };
        let args = [e.args[0], e.args[1], e.args[2], e.args[3], e.args[4]];
        let (result, outcome) = match call(ctx, e.op, args, true) {
            Flow::Value(r) => (r, Outcome::Continue),
            Flow::Then(r, o) => (r, o),
            Flow::Regs(o) => (Ok(0), o),
            // The entry stopped partway (a long page-table batch): as Xen, its arguments
            // advance in place and the multicall continues from this entry.
            Flow::Again { arg0, arg1, .. } => {
                if let Err(f) = field(at, 16).and_then(|a| write_obj(ctx.mem, a, &[arg0, arg1])) {
                    return Flow::Value(Err(f.into()));
                }
                continuation(ctx.regs, Hypercall::Multicall as u64, i, size, count - i);
                return Flow::Regs(Outcome::Continue);
            }
        };
        let raw = to_rax(result);
        if let Err(f) = field(at, 8).and_then(|a| write_obj(ctx.mem, a, &raw)) {
            return Flow::Value(Err(f.into()));
        }
        // The caller goes on after a destroy: the rest of the batch is a continuation, run once
        // the arch layer has torn the domain down.
        if matches!(outcome, Outcome::Destroy(_)) && i + 1 < count {
            let left = count - (i + 1);
            continuation(ctx.regs, Hypercall::Multicall as u64, i + 1, size, left);
            return Flow::Regs(outcome);
        }
        if outcome != Outcome::Continue {
            return Flow::Then(Ok(0), outcome);
        }
    }
    if step < count {
        continuation(
            ctx.regs,
            Hypercall::Multicall as u64,
            step,
            size,
            count - step,
        );
        return Flow::Regs(Outcome::Continue);
    }
    Flow::Value(Ok(0))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use super::super::Outcome;
    use crate::mm::guest_access::{read_obj, write_obj};
    use hypercall_abi::xen::MulticallEntry;

    const MULTICALL: u64 = 13;

    fn entry(op: u64, args: [u64; 6]) -> MulticallEntry {
        MulticallEntry {
            op,
            result: 0,
            args,
        }
    }

    #[test]
    fn results_per_entry_and_no_nesting() {
        let mut w = World::new();
        write_obj(&mut w.mem, MEM_BASE, &entry(17, [0; 6])).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 64, &entry(17, [7, 0, 0, 0, 0, 0])).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 128, &entry(13, [0; 6])).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 192, &entry(200, [0; 6])).unwrap();
        assert_eq!(w.call(MULTICALL, &[MEM_BASE, 4]), (Outcome::Continue, 0));
        let r = |w: &mut World, i: u64| {
            read_obj::<u64>(&mut w.mem, MEM_BASE + i * 64 + 8).unwrap() as i64
        };
        assert_eq!(r(&mut w, 0), 0x4_0011);
        assert_eq!(r(&mut w, 1), 4096);
        assert_eq!(r(&mut w, 2), -22, "nested multicall");
        assert_eq!(r(&mut w, 3), -38);
        assert_eq!(w.call(MULTICALL, &[0x10, 1]).1, -14);
    }

    #[test]
    fn long_batches_continue() {
        let mut w = World::new();
        for i in 0..200 {
            write_obj(&mut w.mem, MEM_BASE + i * 64, &entry(17, [0; 6])).unwrap();
        }
        w.regs.rip = 0x40_1000;
        let (out, _) = w.call(MULTICALL, &[MEM_BASE, 200]);
        assert_eq!(out, Outcome::Continue);
        // Rewound over the syscall, list advanced, count reduced, number back in RAX.
        assert_eq!(
            (w.regs.rip, w.regs.rdi, w.regs.rsi, w.regs.rax),
            (0x40_0ffe, MEM_BASE + 128 * 64, 72, 13)
        );
        assert_eq!(
            read_obj::<u64>(&mut w.mem, MEM_BASE + 127 * 64 + 8).unwrap(),
            0x4_0011
        );
        assert_eq!(
            read_obj::<u64>(&mut w.mem, MEM_BASE + 128 * 64 + 8).unwrap(),
            0,
            "not yet run"
        );
        // A count above 32 bits is cut to 32 bits, as Xen reads it: this one is empty.
        assert_eq!(w.call(MULTICALL, &[MEM_BASE, 1 << 32]).1, 0);
    }

    /// An mmu_update that stops partway, alone and inside a batch: alone the vCPU re-issues
    /// it with the list advanced and the count left flagged; in a batch the entry's arguments
    /// advance in place and the multicall itself continues from that entry, its registers
    /// describing the multicall (not the page-table call).
    #[test]
    fn a_preempted_entry_continues_the_batch_from_itself() {
        use super::super::{MmuDone, PREEMPTED};
        let mut w = World::new();
        w.hw.mmu_preempt = Some(MmuDone::Preempted {
            processed: 2,
            remaining: 3,
        });
        let reqs = MEM_BASE + 0x1000;
        w.regs.rip = 0x40_1000;
        let (out, _) = w.call(1, &[reqs, 5, 0, 0x7ff0]);
        assert_eq!(out, Outcome::Continue);
        assert_eq!(
            (w.regs.rip, w.regs.rdi, w.regs.rsi, w.regs.rax),
            (0x40_0ffe, reqs + 2 * 16, 3 | PREEMPTED, 1)
        );

        let mut w = World::new();
        w.hw.mmu_preempt = Some(MmuDone::Preempted {
            processed: 2,
            remaining: 3,
        });
        write_obj(&mut w.mem, MEM_BASE, &entry(17, [0; 6])).unwrap();
        write_obj(
            &mut w.mem,
            MEM_BASE + 64,
            &entry(1, [reqs, 5, 0, 0x7ff0, 0, 0]),
        )
        .unwrap();
        write_obj(&mut w.mem, MEM_BASE + 128, &entry(17, [0; 6])).unwrap();
        w.regs.rip = 0x40_1000;
        let (out, _) = w.call(MULTICALL, &[MEM_BASE, 3]);
        assert_eq!(out, Outcome::Continue);
        assert_eq!(
            (w.regs.rip, w.regs.rdi, w.regs.rsi, w.regs.rax),
            (0x40_0ffe, MEM_BASE + 64, 2, 13),
            "the multicall goes on from entry 1"
        );
        let e: MulticallEntry = read_obj(&mut w.mem, MEM_BASE + 64).unwrap();
        assert_eq!(e.args[..4], [reqs + 2 * 16, 3 | PREEMPTED, 0, 0x7ff0]);
        assert_eq!(e.result, 0, "not finished");
        let first: MulticallEntry = read_obj(&mut w.mem, MEM_BASE).unwrap();
        assert_eq!(first.result, 0x4_0011);
    }

    #[test]
    fn yield_ends_the_batch() {
        let mut w = World::new();
        write_obj(&mut w.mem, MEM_BASE, &entry(29, [0; 6])).unwrap();
        write_obj(&mut w.mem, MEM_BASE + 64, &entry(17, [0; 6])).unwrap();
        assert_eq!(w.call(MULTICALL, &[MEM_BASE, 2]).0, Outcome::Yield);
        assert_eq!(
            read_obj::<u64>(&mut w.mem, MEM_BASE + 64 + 8).unwrap(),
            0,
            "not run"
        );
    }
}
