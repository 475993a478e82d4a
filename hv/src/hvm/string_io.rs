//! `ins` / `outs` (string port I/O, with or without `rep`): how much of one such instruction
//! an exit carries out, and the registers afterwards.
//!
//! The exit gives the port, the element size, the direction, whether `rep` was used, and
//! the linear address of the first element (SDM Vol. 3C 28.2.1, the guest-linear-address
//! field). hv moves elements up to the end of that page (the start, when RFLAGS.DF counts
//! down), at most [`MAX_ELEMENTS`], then updates RSI (`outs`) or RDI (`ins`) and, with
//! `rep`, RCX. While RCX is not yet 0 the instruction is not retired: the guest executes it
//! again and the next exit carries on, so a long `rep outsb` never holds hv for long and
//! interrupts stay deliverable between chunks, as on hardware.
//!
//! The registers are counted with the width of the address size. hv takes the address size
//! from the execution mode (16, 32 or 64 bits) and does not honour a 0x67 prefix, which
//! compilers do not emit for string I/O.

use super::CpuMode;

/// Most elements one exit moves.
pub const MAX_ELEMENTS: u64 = 512;

const PAGE: u64 = 4096;

/// One exit's share of a string I/O instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Elements to move now (0 for `rep` with RCX = 0).
    pub elements: u64,
    /// The new RSI (`outs`) or RDI (`ins`).
    pub index_after: u64,
    /// The new RCX (unchanged without `rep`).
    pub rcx_after: u64,
    /// Whether the instruction is complete (RIP moves past it).
    pub retire: bool,
}

/// The chunk an exit carries out.
///
/// `size` is the element size (1, 2 or 4), `rep` whether the instruction has `rep`, `rcx`
/// and `index` the guest's RCX and RSI/RDI, `down` RFLAGS.DF, `linear` the linear address
/// of the first element, `mode` the execution mode (the address size).
pub fn chunk(
    size: u8,
    rep: bool,
    rcx: u64,
    index: u64,
    down: bool,
    linear: u64,
    mode: CpuMode,
) -> Chunk {
    let mask = match mode {
        CpuMode::Bits16 => 0xffff,
        CpuMode::Bits32 => 0xffff_ffff,
        CpuMode::Bits64 => u64::MAX,
    };
    let size = u64::from(size.clamp(1, 4));
    let wanted = if rep { rcx & mask } else { 1 };
    // Whole elements left in this page in the direction of travel; an element that crosses
    // the page boundary goes alone.
    let in_page = if down {
        (linear % PAGE) / size + 1
    } else {
        (PAGE - linear % PAGE) / size
    };
    let elements = wanted.min(in_page.max(1)).min(MAX_ELEMENTS);
    let step = elements * size;
    let moved = if down {
        index.wrapping_sub(step)
    } else {
        index.wrapping_add(step)
    };
    let keep = |old: u64, new: u64| (old & !mask) | (new & mask);
    let rcx_after = if rep {
        keep(rcx, (rcx & mask) - elements)
    } else {
        rcx
    };
    Chunk {
        elements,
        index_after: keep(index, moved),
        rcx_after,
        retire: !rep || rcx_after & mask == 0,
    }
}

/// The linear address of element `i` of a chunk whose first element is at `linear`.
pub fn element_address(linear: u64, i: u64, size: u8, down: bool) -> u64 {
    let offset = i * u64::from(size);
    if down {
        linear.wrapping_sub(offset)
    } else {
        linear.wrapping_add(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CpuMode::*;

    #[test]
    fn a_single_outs_moves_one_element_and_retires() {
        let c = chunk(1, false, 77, 0x1000, false, 0x1000, Bits64);
        assert_eq!(
            c,
            Chunk {
                elements: 1,
                index_after: 0x1001,
                rcx_after: 77,
                retire: true
            }
        );
        let c = chunk(4, false, 0, 0x1000, true, 0x1000, Bits32);
        assert_eq!((c.elements, c.index_after), (1, 0xffc));
    }

    #[test]
    fn rep_stops_at_the_page_end_and_carries_on() {
        // 100 bytes from 0x1fc0: 64 fit in the page; RIP stays for the other 36.
        let c = chunk(1, true, 100, 0x1fc0, false, 0x1fc0, Bits64);
        assert_eq!(
            c,
            Chunk {
                elements: 64,
                index_after: 0x2000,
                rcx_after: 36,
                retire: false
            }
        );
        let c = chunk(1, true, 36, 0x2000, false, 0x2000, Bits64);
        assert_eq!((c.elements, c.rcx_after, c.retire), (36, 0, true));
        // Counting down from 0x1010 with words: 0x1010, 0x100e, ... 0x1000 are in the page.
        let c = chunk(2, true, 100, 0x1010, true, 0x1010, Bits64);
        assert_eq!(
            (c.elements, c.index_after, c.rcx_after),
            (9, 0x1010 - 18, 91)
        );
    }

    #[test]
    fn rep_with_rcx_zero_does_nothing() {
        let c = chunk(1, true, 0, 0x5000, false, 0x5000, Bits64);
        assert_eq!((c.elements, c.index_after, c.retire), (0, 0x5000, true));
    }

    #[test]
    fn an_element_across_the_page_boundary_goes_alone() {
        let c = chunk(4, true, 10, 0x1ffe, false, 0x1ffe, Bits64);
        assert_eq!((c.elements, c.rcx_after), (1, 9));
    }

    #[test]
    fn chunks_are_bounded() {
        let c = chunk(1, true, u64::MAX, 0, false, 0, Bits64);
        assert_eq!(c.elements, PAGE.min(MAX_ELEMENTS));
        assert!(!c.retire);
    }

    #[test]
    fn the_address_size_limits_the_registers() {
        // 16-bit: CX and SI wrap within 16 bits, the upper bits are kept.
        let c = chunk(1, true, 0xdead_0003, 0xbeef_fffe, false, 0xf_fffe, Bits16);
        assert_eq!(c.elements, 2, "two bytes to the end of the page");
        assert_eq!(c.rcx_after, 0xdead_0001);
        assert_eq!(c.index_after, 0xbeef_0000);
        // A 32-bit guest's ECX counts; the upper half of RCX is not part of the count.
        let c = chunk(1, true, 0x1_0000_0002, 0x10, false, 0x10, Bits32);
        assert_eq!(
            (c.elements, c.rcx_after, c.retire),
            (2, 0x1_0000_0000, true)
        );
    }

    #[test]
    fn element_addresses_follow_the_direction() {
        assert_eq!(element_address(0x1000, 3, 2, false), 0x1006);
        assert_eq!(element_address(0x1000, 3, 2, true), 0xffa);
    }
}
