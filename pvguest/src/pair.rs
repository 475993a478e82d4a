//! The two-domain modes, their portable parts: the arguments of `pingpong` and `grant`, the
//! ping-pong tally and its report, and the page patterns and checksums the grant mode moves
//! between domains.
//!
//! Without xenstore the two domains agree on everything through their command lines: the
//! server (or granter) allocates the first event-channel port of its domain for the peer, so
//! its number is known in advance and given to the client (or mapper) as `port=`; the grant
//! references are the first free ones after Xen's reserved entries.

use core::fmt;

use hypercall_abi::event_channel::EvtchnPort;
use hypercall_abi::grant_table::{GrantRef, GNTTAB_NR_RESERVED_ENTRIES};
use hypercall_abi::DomId;

/// Events each side of a ping-pong receives unless `rounds=` says otherwise.
pub const DEFAULT_ROUNDS: u32 = 10_000;

/// Which end of the channel a domain is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Allocates the unbound port and speaks first (`pingpong` server, `grant` granter).
    Server,
    /// Binds to the server's port (`pingpong` client, `grant` mapper).
    Client,
}

/// The arguments shared by both two-domain modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairArgs {
    /// This domain's end.
    pub role: Role,
    /// The other domain.
    pub peer: DomId,
    /// The server's port: required of a client; a server checks it got this one.
    pub port: Option<EvtchnPort>,
}

/// `pingpong role=server|client peer=<domid> [port=<p>] [rounds=<n>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingpongArgs {
    /// The channel.
    pub pair: PairArgs,
    /// Events each side must receive.
    pub rounds: u32,
}

/// `grant role=granter|mapper peer=<domid> [port=<p>] [rw=<ref>] [ro=<ref>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantArgs {
    /// The channel.
    pub pair: PairArgs,
    /// The read-write grant (the granter checks it got this reference).
    pub rw_ref: GrantRef,
    /// The read-only grant.
    pub ro_ref: GrantRef,
    /// What happens after the first mapping (`then=`): the normal run, or one side dying
    /// while the read-write grant is mapped.
    pub then: Then,
}

/// `then=` of `grant`: whether a side dies while the read-write grant is mapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Then {
    /// The normal run (no `then=`).
    #[default]
    Finish,
    /// `then=crash`: once the read-write grant is mapped (and the peer told), this side
    /// crashes with `SCHEDOP_shutdown(crash)`, leaving the mapping or the grant behind.
    Crash,
    /// `then=outlive`: the peer crashes while the mapping exists; this side checks what is
    /// left (the granter ends access once hv has dropped the dead mapper's mapping, the mapper
    /// still reads the dead granter's page and unmaps it) and finishes.
    Outlive,
}

/// The word of a mode's arguments that is wrong or missing (`role=` when there is none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadArgument<'a>(pub &'a str);

fn number<'a, T: core::str::FromStr>(word: &'a str, value: &str) -> Result<T, BadArgument<'a>> {
    value.parse().map_err(|_| BadArgument(word))
}

/// Parses the words after the mode's name. `server_name`/`client_name` are the role names;
/// `extra` sees every other `key=value` word and returns whether it took it. Words that are
/// not `key=value` pairs of these modes are ignored, as the mode's first word leaves the rest
/// of the command line alone.
fn parse_pair<'a>(
    words: impl Iterator<Item = &'a str>,
    server_name: &str,
    client_name: &str,
    mut extra: impl FnMut(&'a str, &'a str, &'a str) -> Result<(), BadArgument<'a>>,
) -> Result<PairArgs, BadArgument<'a>> {
    let (mut role, mut peer, mut port) = (None, None, None);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "role" if value == server_name => role = Some(Role::Server),
            "role" if value == client_name => role = Some(Role::Client),
            "role" => return Err(BadArgument(word)),
            "peer" => peer = Some(number(word, value)?),
            "port" => port = Some(number(word, value)?),
            _ => extra(word, key, value)?,
        }
    }
    let role = role.ok_or(BadArgument("role="))?;
    let peer = peer.ok_or(BadArgument("peer="))?;
    if role == Role::Client && port.is_none() {
        return Err(BadArgument("port="));
    }
    Ok(PairArgs { role, peer, port })
}

impl PingpongArgs {
    /// Parses the words after `pingpong`.
    pub fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Result<Self, BadArgument<'a>> {
        let mut rounds = DEFAULT_ROUNDS;
        let pair = parse_pair(words, "server", "client", |word, key, value| {
            if key == "rounds" {
                rounds = number(word, value)?;
            }
            Ok(())
        })?;
        Ok(PingpongArgs { pair, rounds })
    }
}

impl GrantArgs {
    /// Parses the words after `grant`.
    pub fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Result<Self, BadArgument<'a>> {
        let (mut rw_ref, mut ro_ref) = (GNTTAB_NR_RESERVED_ENTRIES, GNTTAB_NR_RESERVED_ENTRIES + 1);
        let mut then = Then::Finish;
        let pair = parse_pair(words, "granter", "mapper", |word, key, value| {
            match (key, value) {
                ("rw", _) => rw_ref = number(word, value)?,
                ("ro", _) => ro_ref = number(word, value)?,
                ("then", "crash") => then = Then::Crash,
                ("then", "outlive") => then = Then::Outlive,
                ("then", _) => return Err(BadArgument(word)),
                _ => {}
            }
            Ok(())
        })?;
        Ok(GrantArgs {
            pair,
            rw_ref,
            ro_ref,
            then,
        })
    }
}

/// One side's count of a ping-pong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingpongTally {
    /// This domain's end.
    pub role: Role,
    /// Events it had to receive.
    pub rounds: u32,
    /// Events it did receive, one per turn.
    pub received: u32,
    /// Events that arrived when none was due (a second event before this side answered).
    pub doubled: u32,
    /// Whether a wait ran out of time (the rest of the rounds count as lost).
    pub timed_out: bool,
}

impl PingpongTally {
    /// A tally before the first round.
    pub const fn new(role: Role, rounds: u32) -> Self {
        PingpongTally {
            role,
            rounds,
            received: 0,
            doubled: 0,
            timed_out: false,
        }
    }

    /// Events due that never came.
    pub fn lost(&self) -> u32 {
        self.rounds.saturating_sub(self.received)
    }

    /// Exactly `rounds` events, one at a time.
    pub fn success(&self) -> bool {
        self.received == self.rounds && self.doubled == 0 && !self.timed_out
    }
}

impl fmt::Display for PingpongTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role {
            Role::Server => "server",
            Role::Client => "client",
        };
        write!(
            f,
            "pingpong: {role} received {} events, {} lost, {} doubled",
            self.received,
            self.lost(),
            self.doubled
        )
    }
}

/// The pattern the granter writes into the read-write page.
pub const GRANTER_SEED: u64 = 0x6772_616e_7465_7201;
/// The pattern of the read-only page.
pub const READONLY_SEED: u64 = 0x6772_616e_7465_7202;
/// The pattern the mapper writes into the read-write page through its mapping.
pub const MAPPER_SEED: u64 = 0x6d61_7070_6572_0003;

/// Words in a page.
pub const PAGE_WORDS: usize = 512;

/// Fills `page` with the pattern of `seed` (splitmix64: every word differs, and so does every
/// seed's page).
pub fn fill_pattern(seed: u64, page: &mut [u64]) {
    let mut state = seed;
    for word in page {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        *word = z ^ (z >> 31);
    }
}

/// A position-dependent checksum (FNV-1a over the words), so swapped words are noticed.
pub fn checksum(page: &[u64]) -> u64 {
    page.iter().fold(0xcbf2_9ce4_8422_2325, |h, &w| {
        (h ^ w).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The checksum of seed `seed`'s page.
pub fn pattern_checksum(seed: u64) -> u64 {
    let mut page = [0u64; PAGE_WORDS];
    fill_pattern(seed, &mut page);
    checksum(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> core::str::SplitAsciiWhitespace<'_> {
        s.split_ascii_whitespace()
    }

    #[test]
    fn pingpong_arguments() {
        assert_eq!(
            PingpongArgs::parse(words("role=server peer=2 rounds=7")),
            Ok(PingpongArgs {
                pair: PairArgs {
                    role: Role::Server,
                    peer: 2,
                    port: None
                },
                rounds: 7
            })
        );
        assert_eq!(
            PingpongArgs::parse(words("peer=1 role=client port=1 noise")),
            Ok(PingpongArgs {
                pair: PairArgs {
                    role: Role::Client,
                    peer: 1,
                    port: Some(1)
                },
                rounds: DEFAULT_ROUNDS
            })
        );
        assert_eq!(
            PingpongArgs::parse(words("role=client peer=1")),
            Err(BadArgument("port="))
        );
        assert_eq!(
            PingpongArgs::parse(words("peer=1")),
            Err(BadArgument("role="))
        );
        assert_eq!(
            PingpongArgs::parse(words("role=server")),
            Err(BadArgument("peer="))
        );
        assert_eq!(
            PingpongArgs::parse(words("role=granter peer=1")),
            Err(BadArgument("role=granter"))
        );
        assert_eq!(
            PingpongArgs::parse(words("role=server peer=70000")),
            Err(BadArgument("peer=70000"))
        );
        assert_eq!(
            PingpongArgs::parse(words("role=server peer=1 rounds=-1")),
            Err(BadArgument("rounds=-1"))
        );
    }

    #[test]
    fn grant_arguments_default_to_the_first_free_refs() {
        assert_eq!(
            GrantArgs::parse(words("role=granter peer=2")),
            Ok(GrantArgs {
                pair: PairArgs {
                    role: Role::Server,
                    peer: 2,
                    port: None
                },
                rw_ref: 8,
                ro_ref: 9,
                then: Then::Finish
            })
        );
        assert_eq!(
            GrantArgs::parse(words("role=mapper peer=1 port=3 rw=10 ro=11")),
            Ok(GrantArgs {
                pair: PairArgs {
                    role: Role::Client,
                    peer: 1,
                    port: Some(3)
                },
                rw_ref: 10,
                ro_ref: 11,
                then: Then::Finish
            })
        );
        assert_eq!(
            GrantArgs::parse(words("role=mapper peer=1 port=3 then=crash")).map(|a| a.then),
            Ok(Then::Crash)
        );
        assert_eq!(
            GrantArgs::parse(words("role=granter peer=2 then=outlive")).map(|a| a.then),
            Ok(Then::Outlive)
        );
        assert_eq!(
            GrantArgs::parse(words("role=granter peer=2 then=sideways")),
            Err(BadArgument("then=sideways"))
        );
        assert_eq!(
            GrantArgs::parse(words("role=mapper peer=1 port=3 rw=x")),
            Err(BadArgument("rw=x"))
        );
        assert_eq!(
            GrantArgs::parse(words("role=server peer=1")),
            Err(BadArgument("role=server"))
        );
    }

    #[test]
    fn tally_and_report() {
        let mut t = PingpongTally::new(Role::Client, 10);
        t.received = 10;
        assert!(t.success());
        assert_eq!(
            t.to_string(),
            "pingpong: client received 10 events, 0 lost, 0 doubled"
        );
        t.doubled = 1;
        assert!(!t.success());
        let mut t = PingpongTally::new(Role::Server, 10);
        t.received = 4;
        t.timed_out = true;
        assert!(!t.success());
        assert_eq!(
            t.to_string(),
            "pingpong: server received 4 events, 6 lost, 0 doubled"
        );
    }

    #[test]
    fn patterns_differ_by_seed_and_checksums_see_swaps() {
        let mut a = [0u64; PAGE_WORDS];
        let mut b = [0u64; PAGE_WORDS];
        fill_pattern(1, &mut a);
        fill_pattern(2, &mut b);
        assert_ne!(checksum(&a), checksum(&b));
        assert_eq!(checksum(&a), pattern_checksum(1));
        a.swap(3, 4);
        assert_ne!(checksum(&a), pattern_checksum(1));
        let mut c = [0u64; PAGE_WORDS];
        fill_pattern(1, &mut c);
        assert!(c.windows(2).all(|w| w[0] != w[1]));
    }
}
