//! Where serial input goes, switched as on Xen: typing Ctrl-A three times in a row moves the
//! focus from hv to the first live domain, then to each following live domain (in domain id
//! order, skipping those that are gone), then back to hv. Every switch is announced with
//! [`switch_message`].
//!
//! A Ctrl-A is held back until the next byte shows whether it is part of a switch: fewer
//! than three followed by another byte are passed on, with that byte, to the focus.
//!
//! The focus starts at hv; when boot is over the run loop switches once, so input goes to
//! the first domain (Xen's DOM0) from then on, as Xen does.

use core::fmt;

use hypercall_abi::DomId;

/// The switch character: Ctrl-A.
pub const SWITCH_CHAR: u8 = 0x01;
/// How many switch characters in a row switch.
pub const SWITCH_COUNT: u8 = 3;

/// Who gets serial input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// hv itself (debug keys).
    Hv,
    /// A domain.
    Domain(DomId),
}

/// Bytes for the focus: at most the held Ctrl-As and the byte after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Passed {
    bytes: [u8; SWITCH_COUNT as usize],
    len: u8,
}

impl Passed {
    /// The bytes, in order.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What one byte of input does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A Ctrl-A held back for now.
    Held,
    /// Bytes for the focus.
    Pass(Passed),
    /// The third Ctrl-A: the caller switches with [`Router::switch`].
    Switch,
}

/// The switch state machine.
#[derive(Clone, Debug)]
pub struct Router {
    focus: Focus,
    held: u8,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// Focus on hv, nothing held.
    pub const fn new() -> Self {
        Router {
            focus: Focus::Hv,
            held: 0,
        }
    }

    /// Who gets input now.
    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// Takes one byte of input.
    pub fn feed(&mut self, byte: u8) -> Step {
        if byte == SWITCH_CHAR {
            self.held += 1;
            if self.held == SWITCH_COUNT {
                self.held = 0;
                return Step::Switch;
            }
            return Step::Held;
        }
        let mut passed = Passed {
            bytes: [SWITCH_CHAR; SWITCH_COUNT as usize],
            len: self.held + 1,
        };
        passed.bytes[usize::from(self.held)] = byte;
        self.held = 0;
        Step::Pass(passed)
    }

    /// Moves the focus on: from hv to the first of `live` (the live domains' ids), from a
    /// domain to the first live one with a higher id, and past the last back to hv. Returns
    /// the new focus.
    pub fn switch(&mut self, live: impl IntoIterator<Item = DomId>) -> Focus {
        let after = match self.focus {
            Focus::Hv => None,
            Focus::Domain(id) => Some(id),
        };
        let next = live
            .into_iter()
            .filter(|&id| after.is_none_or(|a| id > a))
            .min();
        self.focus = next.map_or(Focus::Hv, Focus::Domain);
        self.focus
    }
}

/// The line announcing that input now goes to `focus`, in Xen's words.
pub fn switch_message(focus: Focus) -> impl fmt::Display {
    struct Message(Focus);
    impl fmt::Display for Message {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("*** Serial input to ")?;
            match self.0 {
                Focus::Hv => f.write_str("Xen")?,
                Focus::Domain(id) => write!(f, "DOM{id}")?,
            }
            f.write_str(" (type 'CTRL-a' three times to switch input)")
        }
    }
    Message(focus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    /// Feeds `input`, switching among `live` when asked; returns the bytes passed on, each
    /// with the focus it went to, and the foci switched to.
    fn run(r: &mut Router, live: &[DomId], input: &[u8]) -> (Vec<(Focus, u8)>, Vec<Focus>) {
        let mut passed = Vec::new();
        let mut switches = Vec::new();
        for &b in input {
            match r.feed(b) {
                Step::Held => {}
                Step::Pass(p) => passed.extend(p.as_slice().iter().map(|&b| (r.focus(), b))),
                Step::Switch => switches.push(r.switch(live.iter().copied())),
            }
        }
        (passed, switches)
    }

    #[test]
    fn three_ctrl_a_cycle_through_the_live_domains_and_hv() {
        let mut r = Router::new();
        let live = [0, 1, 3];
        let (passed, switches) = run(&mut r, &live, &[1, 1, 1, b'a', 1, 1, 1, b'b']);
        assert_eq!(switches, [Focus::Domain(0), Focus::Domain(1)]);
        assert_eq!(passed, [(Focus::Domain(0), b'a'), (Focus::Domain(1), b'b')]);
        let (_, switches) = run(&mut r, &live, &[1; 9]);
        assert_eq!(switches, [Focus::Domain(3), Focus::Hv, Focus::Domain(0)]);
    }

    #[test]
    fn fewer_than_three_ctrl_a_pass_through_with_the_next_byte() {
        let mut r = Router::new();
        let (passed, switches) = run(&mut r, &[5], &[1, b'x', 1, 1, b'y', b'z']);
        assert!(switches.is_empty());
        let bytes: Vec<u8> = passed.iter().map(|&(_, b)| b).collect();
        assert_eq!(bytes, [1, b'x', 1, 1, b'y', b'z']);
        assert!(passed.iter().all(|&(f, _)| f == Focus::Hv));
        // A fourth Ctrl-A starts a new count; held ones wait for the next byte.
        assert_eq!(r.feed(1), Step::Held);
        assert_eq!(r.feed(1), Step::Held);
        assert_eq!(r.feed(1), Step::Switch);
        assert_eq!(r.feed(1), Step::Held);
        match r.feed(b'q') {
            Step::Pass(p) => assert_eq!(p.as_slice(), [1, b'q']),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gone_domains_are_skipped_and_no_domain_means_hv() {
        let mut r = Router::new();
        assert_eq!(r.switch([]), Focus::Hv);
        assert_eq!(r.switch([4, 2]), Focus::Domain(2));
        // Domain 2 died while focused: the next live one after it.
        assert_eq!(r.switch([4, 7]), Focus::Domain(4));
        assert_eq!(r.switch([2]), Focus::Hv);
        assert_eq!(r.switch([2]), Focus::Domain(2));
        assert_eq!(r.switch([]), Focus::Hv);
    }

    #[test]
    fn messages_name_xen_or_the_domain() {
        assert_eq!(
            switch_message(Focus::Domain(1)).to_string(),
            "*** Serial input to DOM1 (type 'CTRL-a' three times to switch input)"
        );
        assert_eq!(
            switch_message(Focus::Hv).to_string(),
            "*** Serial input to Xen (type 'CTRL-a' three times to switch input)"
        );
    }
}
