//! The frame allocator: hands out the guest frames (PFNs) Xen gave the domain that the start
//! of day left unused, highest first (those lie beyond the builder's initial mappings), and
//! takes frames back for reuse.

use alloc::vec::Vec;

/// Frames `[low, high)` that nothing else uses.
#[derive(Debug)]
pub struct FrameAllocator {
    low: u64,
    top: u64,
    next: u64,
    freed: Vec<u64>,
}

/// A frame handed back twice, or one the allocator never owned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadFree(pub u64);

impl FrameAllocator {
    /// An allocator over frames `[low, high)`.
    pub const fn new(low: u64, high: u64) -> Self {
        let top = if high > low { high } else { low };
        Self {
            low,
            top,
            next: top,
            freed: Vec::new(),
        }
    }

    /// A free frame, if any is left.
    pub fn alloc(&mut self) -> Option<u64> {
        if let Some(pfn) = self.freed.pop() {
            return Some(pfn);
        }
        if self.next > self.low {
            self.next -= 1;
            Some(self.next)
        } else {
            None
        }
    }

    /// Returns `pfn` for reuse.
    pub fn free(&mut self, pfn: u64) -> Result<(), BadFree> {
        if pfn < self.next || pfn >= self.top || self.freed.contains(&pfn) {
            return Err(BadFree(pfn));
        }
        self.freed.push(pfn);
        Ok(())
    }

    /// Frames still available.
    pub fn available(&self) -> u64 {
        self.next - self.low + self.freed.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_highest_first_then_runs_dry() {
        let mut a = FrameAllocator::new(10, 13);
        assert_eq!(a.available(), 3);
        assert_eq!(a.alloc(), Some(12));
        assert_eq!(a.alloc(), Some(11));
        assert_eq!(a.alloc(), Some(10));
        assert_eq!(a.alloc(), None);
        assert_eq!(a.available(), 0);
    }

    #[test]
    fn freed_frames_are_reused() {
        let mut a = FrameAllocator::new(0, 4);
        let f = a.alloc().unwrap();
        assert_eq!(a.free(f), Ok(()));
        assert_eq!(a.free(f), Err(BadFree(f)));
        assert_eq!(a.available(), 4);
        assert_eq!(a.alloc(), Some(f));
    }

    #[test]
    fn frames_never_handed_out_cannot_be_freed() {
        let mut a = FrameAllocator::new(0, 4);
        assert_eq!(a.free(2), Err(BadFree(2)));
        assert_eq!(a.free(4), Err(BadFree(4)));
        assert_eq!(FrameAllocator::new(5, 3).available(), 0);
    }
}
