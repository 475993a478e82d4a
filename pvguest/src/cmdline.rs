//! The guest command line (`start_info.cmd_line`): its first word chooses what pvguest does.

use crate::pair::{GrantArgs, PingpongArgs};
use crate::share::{BurnArgs, CpuShareArgs};
use crate::xenbus_test::XenbusTestArgs;

/// What pvguest was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Exercise the hypercall ABI and report one line per check.
    Selftest,
    /// Crash the domain on purpose, in the named way (for isolation tests).
    Crash(CrashKind),
    /// Measure hypervisor paths and report one line per figure (see `crate::bench`).
    Bench,
    /// Attack the hypervisor's memory isolation and report one line per attack (see
    /// `crate::hostile`).
    Hostile,
    /// Use the control domain's `domctl`/`sysctl` operations, or check that they are
    /// refused to an unprivileged domain (see `kernel::control`).
    Control,
    /// Yield forever, until another domain destroys this one.
    Spin,
    /// Exchange events with a peer domain over an interdomain channel (see `crate::pair`).
    Pingpong(PingpongArgs),
    /// Grant pages to a peer domain, or map and copy its grants (see `crate::pair`).
    Grant(GrantArgs),
    /// The control domain's xenstore and console back ends for every other domain (see
    /// `kernel::backend`).
    Backend,
    /// A domU's xenstore checks through the xenbus client, and console output through its
    /// console ring (see `crate::xenbus_test`).
    XenbusTest(XenbusTestArgs),
    /// Attack another domain's event channels and grants and feed garbage to xenstored, as
    /// an unprivileged domU (see `kernel::hostile_peer`).
    HostilePeer {
        /// The domain attacked.
        peer: crate::xenstore::DomId,
    },
    /// Print each line of console input back as `echo: <line>`, until `quit` (see
    /// `crate::echo`).
    ConsoleEcho,
    /// Burn CPU without blocking for a span of system time, then report the work done (see
    /// `crate::share`).
    Burn(BurnArgs),
    /// As the control domain: sample every domain's CPU time twice and print what each used
    /// in between (see `crate::share`).
    CpuShare(CpuShareArgs),
}

/// The ways `crash=<how>` makes the domain die.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// `ud2` with no trap table installed: an exception the guest cannot handle.
    Unhandled,
    /// A write to hv's own memory (Xen's reserved range): a page fault with no handler.
    HvWrite,
    /// `sched_op(SHUTDOWN_crash)`.
    Shutdown,
    /// The `iret` hypercall with a return address inside Xen's reserved range.
    BadIret,
    /// An exception while the stack pointer names unmapped memory: the bounce frame cannot
    /// be written.
    BadStack,
    /// An event upcall due while the stack pointer names unmapped memory: the upcall's frame
    /// cannot be written.
    BadUpcallStack,
}

impl CrashKind {
    /// Every kind, with its command-line name.
    pub const ALL: [(&'static str, CrashKind); 6] = [
        ("unhandled", CrashKind::Unhandled),
        ("hv-write", CrashKind::HvWrite),
        ("shutdown", CrashKind::Shutdown),
        ("bad-iret", CrashKind::BadIret),
        ("bad-stack", CrashKind::BadStack),
        ("bad-upcall-stack", CrashKind::BadUpcallStack),
    ];
}

/// The line printed when the command line names no known mode.
pub const USAGE: &str = "pvguest: usage: command line `selftest` | `bench [filter=TEXT]` | `hostile` | `control` | `spin` | `pingpong role=server|client peer=D [port=P] [rounds=N]` | `grant role=granter|mapper peer=D [port=P] [rw=R] [ro=R]` | `backend` | `xenbus-test other=D` | `hostile-peer peer=D` | `console-echo` | `burn [ms=N]` | `cpu-share [wait=MS] [span=MS]` | `crash=unhandled|hv-write|shutdown|bad-iret|bad-stack|bad-upcall-stack`";

/// The first word of `cmdline` that names no known mode (empty when the line is empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownMode<'a>(pub &'a str);

/// Picks the mode from the first whitespace-separated word of `cmdline`. Later words are
/// ignored (Xen may append options of its own to the initial domain's command line), except
/// the `key=value` arguments of the modes that take them; a bad one is reported as the unknown
/// word.
pub fn parse_mode(cmdline: &[u8]) -> Result<Mode, UnknownMode<'_>> {
    let text = core::str::from_utf8(cmdline).unwrap_or("");
    let mut words = text.split_ascii_whitespace();
    let word = words.next().unwrap_or("");
    match word {
        "selftest" => Ok(Mode::Selftest),
        "bench" => Ok(Mode::Bench),
        "hostile" => Ok(Mode::Hostile),
        "control" => Ok(Mode::Control),
        "spin" => Ok(Mode::Spin),
        "pingpong" => PingpongArgs::parse(words)
            .map(Mode::Pingpong)
            .map_err(|bad| UnknownMode(bad.0)),
        "grant" => GrantArgs::parse(words)
            .map(Mode::Grant)
            .map_err(|bad| UnknownMode(bad.0)),
        "backend" => Ok(Mode::Backend),
        "console-echo" => Ok(Mode::ConsoleEcho),
        "burn" => BurnArgs::parse(words)
            .map(Mode::Burn)
            .map_err(|bad| UnknownMode(bad.0)),
        "cpu-share" => CpuShareArgs::parse(words)
            .map(Mode::CpuShare)
            .map_err(|bad| UnknownMode(bad.0)),
        "hostile-peer" => words
            .find_map(|w| w.strip_prefix("peer=").map(|v| (w, v)))
            .ok_or(UnknownMode("peer="))
            .and_then(|(w, v)| v.parse().map_err(|_| UnknownMode(w)))
            .map(|peer| Mode::HostilePeer { peer }),
        "xenbus-test" => XenbusTestArgs::parse(words)
            .map(Mode::XenbusTest)
            .map_err(|bad| UnknownMode(bad.0)),
        other => match other.strip_prefix("crash=") {
            Some(how) => CrashKind::ALL
                .iter()
                .find(|(name, _)| *name == how)
                .map(|&(_, kind)| Mode::Crash(kind))
                .ok_or(UnknownMode(other)),
            None => Err(UnknownMode(other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_word_picks_the_mode() {
        assert_eq!(parse_mode(b"selftest"), Ok(Mode::Selftest));
        assert_eq!(parse_mode(b"  selftest noapic"), Ok(Mode::Selftest));
        assert_eq!(parse_mode(b"selftest\tfoo=1"), Ok(Mode::Selftest));
        assert_eq!(parse_mode(b"bench filter=evtchn"), Ok(Mode::Bench));
        assert_eq!(parse_mode(b"hostile"), Ok(Mode::Hostile));
        assert_eq!(parse_mode(b"control"), Ok(Mode::Control));
        assert_eq!(parse_mode(b"spin x"), Ok(Mode::Spin));
        assert_eq!(parse_mode(b"backend"), Ok(Mode::Backend));
        assert_eq!(parse_mode(b"console-echo"), Ok(Mode::ConsoleEcho));
        assert_eq!(
            parse_mode(b"burn ms=40"),
            Ok(Mode::Burn(BurnArgs { ms: 40 }))
        );
        assert_eq!(parse_mode(b"burn ms=x"), Err(UnknownMode("ms=x")));
        assert_eq!(
            parse_mode(b"cpu-share wait=1 span=2"),
            Ok(Mode::CpuShare(CpuShareArgs {
                wait_ms: 1,
                span_ms: 2
            }))
        );
        assert_eq!(
            parse_mode(b"xenbus-test other=2"),
            Ok(Mode::XenbusTest(XenbusTestArgs { other: 2 }))
        );
        assert_eq!(parse_mode(b"xenbus-test"), Err(UnknownMode("other=")));
        assert_eq!(
            parse_mode(b"hostile-peer x peer=2"),
            Ok(Mode::HostilePeer { peer: 2 })
        );
        assert_eq!(parse_mode(b"hostile-peer"), Err(UnknownMode("peer=")));
        assert_eq!(
            parse_mode(b"hostile-peer peer=d2"),
            Err(UnknownMode("peer=d2"))
        );
    }

    #[test]
    fn crash_kinds() {
        assert_eq!(
            parse_mode(b"crash=hv-write"),
            Ok(Mode::Crash(CrashKind::HvWrite))
        );
        assert_eq!(
            parse_mode(b"crash=bad-stack x"),
            Ok(Mode::Crash(CrashKind::BadStack))
        );
        assert_eq!(
            parse_mode(b"crash=sideways"),
            Err(UnknownMode("crash=sideways"))
        );
        assert_eq!(parse_mode(b"crash="), Err(UnknownMode("crash=")));
    }

    #[test]
    fn two_domain_modes_take_their_arguments() {
        use crate::pair::{PairArgs, Role};
        assert_eq!(
            parse_mode(b"pingpong role=client peer=1 port=1 rounds=5"),
            Ok(Mode::Pingpong(PingpongArgs {
                pair: PairArgs {
                    role: Role::Client,
                    peer: 1,
                    port: Some(1)
                },
                rounds: 5
            }))
        );
        assert_eq!(
            parse_mode(b"grant role=granter peer=2"),
            Ok(Mode::Grant(GrantArgs {
                pair: PairArgs {
                    role: Role::Server,
                    peer: 2,
                    port: None
                },
                rw_ref: 8,
                ro_ref: 9,
                then: crate::pair::Then::Finish
            }))
        );
        assert_eq!(
            parse_mode(b"pingpong role=client peer=1"),
            Err(UnknownMode("port="))
        );
        assert_eq!(
            parse_mode(b"grant role=granter peer=x"),
            Err(UnknownMode("peer=x"))
        );
    }

    #[test]
    fn other_words_are_unknown() {
        assert_eq!(parse_mode(b""), Err(UnknownMode("")));
        assert_eq!(
            parse_mode(b"benchmark selftest"),
            Err(UnknownMode("benchmark"))
        );
        assert_eq!(parse_mode(b"selftests"), Err(UnknownMode("selftests")));
        assert_eq!(parse_mode(&[0xff, 0xfe]), Err(UnknownMode("")));
    }
}
