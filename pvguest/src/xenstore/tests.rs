//! Scenario tests of the daemon through its wire interface: dom0 (privileged, local) and
//! introduced domUs talk to one [`Xenstore`] exactly as they would over their rings.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::io::xs_wire::{
    xsd_error_from_payload, XenstoreDomainInterface, XsType, XsdSockmsg, XENSTORE_ERROR_RINGIDX,
    XENSTORE_PAYLOAD_MAX, XSD_ERRORS,
};
use proptest::prelude::*;

use super::ring::{RingError, RingTransport};
use super::wire::{self, HEADER_LEN};
use super::{DomId, Quotas, RingInfo, Xenstore, XsError};

const RING1: RingInfo = RingInfo {
    mfn: 0x1000,
    port: 5,
};

/// A daemon with dom0 connected and domUs 1 and 2 introduced, plus the watch events each
/// connection received, in order, as `path token` strings.
struct Harness {
    xs: Xenstore,
    events: BTreeMap<DomId, Vec<String>>,
    next_req: u32,
}

type Reply = (XsdSockmsg, Vec<u8>);

impl Harness {
    fn with_quotas(quotas: Quotas) -> Self {
        let mut xs = Xenstore::with_quotas(quotas);
        xs.connect(0, true).unwrap();
        for domid in [1, 2] {
            let ring = RingInfo {
                mfn: 0x1000 + u64::from(domid),
                port: 5,
            };
            xs.introduce_domain(domid, &alloc::format!("guest{domid}"), ring)
                .unwrap();
        }
        let mut h = Harness {
            xs,
            events: BTreeMap::new(),
            next_req: 100,
        };
        h.drain(0);
        h
    }

    fn new() -> Self {
        Self::with_quotas(Quotas::default())
    }

    /// Sends raw message bytes and returns the one reply, collecting watch events.
    fn raw(&mut self, domid: DomId, message: &[u8]) -> Reply {
        self.xs.handle_message(domid, message).unwrap();
        let mut replies = self.drain(domid);
        assert_eq!(replies.len(), 1, "exactly one reply per request");
        replies.remove(0)
    }

    fn drain(&mut self, domid: DomId) -> Vec<Reply> {
        let mut replies = Vec::new();
        while let Some(m) = self.xs.pop_output(domid) {
            let h = wire::parse_header(&m).unwrap();
            assert_eq!(h.len as usize, m.len() - HEADER_LEN);
            assert!(m.len() - HEADER_LEN <= XENSTORE_PAYLOAD_MAX);
            let payload = Vec::from(&m[HEADER_LEN..]);
            if h.type_ == XsType::WatchEvent.raw() {
                assert_eq!((h.req_id, h.tx_id), (0, 0));
                let text = String::from_utf8_lossy(&payload).into_owned();
                let fields: Vec<&str> = text.strip_suffix('\0').unwrap().split('\0').collect();
                assert_eq!(fields.len(), 2, "path\\0token\\0");
                let event = alloc::format!("{} {}", fields[0], fields[1]);
                self.events.entry(domid).or_default().push(event);
            } else {
                replies.push((h, payload));
            }
        }
        replies
    }

    fn events(&mut self, domid: DomId) -> Vec<String> {
        self.drain(domid);
        self.events.remove(&domid).unwrap_or_default()
    }

    fn call_tx(&mut self, domid: DomId, type_: XsType, tx: u32, payload: &[u8]) -> Reply {
        self.next_req += 1;
        let req = self.next_req;
        let reply = self.raw(domid, &wire::encode(type_, req, tx, payload));
        assert_eq!((reply.0.req_id, reply.0.tx_id), (req, tx), "ids are echoed");
        reply
    }

    /// The reply payload, or the error it carries.
    fn try_call(
        &mut self,
        domid: DomId,
        type_: XsType,
        tx: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, XsError> {
        let (h, p) = self.call_tx(domid, type_, tx, payload);
        if h.type_ == XsType::Error.raw() {
            let errno = xsd_error_from_payload(&p).expect("a known error name");
            Err(all_errors()
                .into_iter()
                .find(|e| e.errno() == errno)
                .unwrap())
        } else {
            assert_eq!(h.type_, type_.raw(), "success replies echo the type");
            Ok(p)
        }
    }

    fn ok(&mut self, domid: DomId, type_: XsType, payload: &[u8]) -> Vec<u8> {
        self.try_call(domid, type_, 0, payload).unwrap()
    }

    fn err(&mut self, domid: DomId, type_: XsType, payload: &[u8]) -> XsError {
        self.try_call(domid, type_, 0, payload).unwrap_err()
    }

    fn write(&mut self, domid: DomId, path: &str, value: &str) -> Result<(), XsError> {
        self.write_tx(domid, 0, path, value)
    }

    fn write_tx(&mut self, domid: DomId, tx: u32, path: &str, value: &str) -> Result<(), XsError> {
        let payload = [path.as_bytes(), b"\0", value.as_bytes()].concat();
        self.try_call(domid, XsType::Write, tx, &payload)
            .map(|r| assert_eq!(r, b"OK\0"))
    }

    fn read(&mut self, domid: DomId, path: &str) -> Result<String, XsError> {
        self.read_tx(domid, 0, path)
    }

    fn read_tx(&mut self, domid: DomId, tx: u32, path: &str) -> Result<String, XsError> {
        self.try_call(domid, XsType::Read, tx, &z(path))
            .map(|v| String::from_utf8(v).unwrap())
    }

    fn start(&mut self, domid: DomId) -> u32 {
        let id = self.ok(domid, XsType::TransactionStart, b"\0");
        let text = core::str::from_utf8(id.strip_suffix(b"\0").unwrap()).unwrap();
        text.parse().unwrap()
    }

    fn end(&mut self, domid: DomId, tx: u32, commit: bool) -> Result<(), XsError> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.try_call(domid, XsType::TransactionEnd, tx, arg)
            .map(|r| assert_eq!(r, b"OK\0"))
    }

    fn watch(&mut self, domid: DomId, path: &str, token: &str) -> Result<(), XsError> {
        let payload = [path.as_bytes(), b"\0", token.as_bytes(), b"\0"].concat();
        self.try_call(domid, XsType::Watch, 0, &payload).map(|_| ())
    }

    fn check(&mut self) {
        assert_eq!(self.ok(0, XsType::Control, b"check\0"), b"OK\0");
    }
}

fn all_errors() -> Vec<XsError> {
    vec![
        XsError::Invalid,
        XsError::Access,
        XsError::Exists,
        XsError::NoEntry,
        XsError::NoSpace,
        XsError::Again,
        XsError::TooBig,
        XsError::Permission,
        XsError::NotSupported,
        XsError::Busy,
        XsError::Io,
    ]
}

/// `s` NUL-terminated.
fn z(s: &str) -> Vec<u8> {
    [s.as_bytes(), b"\0"].concat()
}

/// NUL-terminated strings, concatenated.
fn zs(items: &[&str]) -> Vec<u8> {
    items.iter().flat_map(|s| z(s)).collect()
}

#[test]
fn every_error_is_one_clients_can_decode() {
    for e in all_errors() {
        assert!(XSD_ERRORS.contains(&e.errno()), "{e:?}");
    }
}

// ---------------------------------------------------------------- basic operations

#[test]
fn write_then_read_returns_the_exact_bytes() {
    let mut h = Harness::new();
    let value = [b'v', 0, b'x', 0xff];
    let payload = [&b"/data/bin\0"[..], &value].concat();
    assert_eq!(h.ok(0, XsType::Write, &payload), b"OK\0");
    assert_eq!(h.ok(0, XsType::Read, b"/data/bin\0"), value);
    h.write(0, "/data/bin", "").unwrap();
    assert_eq!(h.read(0, "/data/bin").unwrap(), "");
}

#[test]
fn write_creates_missing_parents_with_empty_values() {
    let mut h = Harness::new();
    h.write(0, "/a/b/c", "leaf").unwrap();
    assert_eq!(h.read(0, "/a").unwrap(), "");
    assert_eq!(h.read(0, "/a/b").unwrap(), "");
    assert_eq!(h.ok(0, XsType::Directory, b"/a\0"), b"b\0");
    h.check();
}

#[test]
fn read_of_a_missing_node_is_enoent() {
    let mut h = Harness::new();
    assert_eq!(h.read(0, "/nope"), Err(XsError::NoEntry));
    assert_eq!(h.err(0, XsType::Directory, b"/nope\0"), XsError::NoEntry);
    assert_eq!(h.err(0, XsType::GetPerms, b"/nope\0"), XsError::NoEntry);
    assert_eq!(
        h.err(0, XsType::SetPerms, &zs(&["/nope", "n0"])),
        XsError::NoEntry
    );
}

#[test]
fn mkdir_creates_and_leaves_existing_nodes_alone() {
    let mut h = Harness::new();
    h.ok(0, XsType::Mkdir, b"/m/n\0");
    assert_eq!(h.read(0, "/m/n").unwrap(), "");
    h.write(0, "/m/n", "kept").unwrap();
    h.ok(0, XsType::Mkdir, b"/m/n\0");
    assert_eq!(h.read(0, "/m/n").unwrap(), "kept");
}

#[test]
fn rm_removes_the_subtree() {
    let mut h = Harness::new();
    h.write(0, "/t/a/x", "1").unwrap();
    h.write(0, "/t/a/y", "2").unwrap();
    h.write(0, "/t/b", "3").unwrap();
    h.ok(0, XsType::Rm, b"/t/a\0");
    assert_eq!(h.read(0, "/t/a/x"), Err(XsError::NoEntry));
    assert_eq!(h.read(0, "/t/a"), Err(XsError::NoEntry));
    assert_eq!(h.ok(0, XsType::Directory, b"/t\0"), b"b\0");
    h.check();
}

#[test]
fn rm_of_an_absent_node_needs_only_its_parent() {
    let mut h = Harness::new();
    h.write(0, "/p", "").unwrap();
    assert_eq!(h.ok(0, XsType::Rm, b"/p/absent\0"), b"OK\0");
    assert_eq!(h.err(0, XsType::Rm, b"/q/absent\0"), XsError::NoEntry);
    assert_eq!(h.err(0, XsType::Rm, b"/\0"), XsError::Invalid);
}

#[test]
fn directory_lists_leaf_names() {
    let mut h = Harness::new();
    for name in ["c", "a", "b"] {
        h.write(0, &alloc::format!("/dir/{name}"), "").unwrap();
    }
    assert_eq!(h.ok(0, XsType::Directory, b"/dir\0"), b"a\0b\0c\0");
    assert_eq!(h.ok(0, XsType::Directory, b"/dir/a\0"), b"");
}

#[test]
fn directory_too_long_for_one_reply_is_e2big() {
    let mut h = Harness::new();
    let name = "n".repeat(200);
    for i in 0..25 {
        h.write(0, &alloc::format!("/big/{name}{i}"), "").unwrap();
    }
    assert_eq!(h.err(0, XsType::Directory, b"/big\0"), XsError::TooBig);
}

#[test]
fn relative_paths_resolve_under_the_callers_home() {
    let mut h = Harness::new();
    h.write(1, "data/x", "mine").unwrap();
    assert_eq!(h.read(0, "/local/domain/1/data/x").unwrap(), "mine");
    assert_eq!(h.read(1, "data/x").unwrap(), "mine");
    h.write(0, "dom0rel", "z").unwrap();
    assert_eq!(h.read(0, "/local/domain/0/dom0rel").unwrap(), "z");
}

#[test]
fn get_domain_path_names_the_home() {
    let mut h = Harness::new();
    assert_eq!(h.ok(1, XsType::GetDomainPath, b"7\0"), b"/local/domain/7\0");
    assert_eq!(h.err(1, XsType::GetDomainPath, b"x\0"), XsError::Invalid);
}

// ---------------------------------------------------------------- permissions

#[test]
fn introduced_domain_owns_its_home_and_standard_paths() {
    let mut h = Harness::new();
    assert_eq!(h.ok(0, XsType::GetPerms, b"/local/domain/1\0"), b"n1\0");
    assert_eq!(h.read(1, "domid").unwrap(), "1");
    assert_eq!(h.read(1, "name").unwrap(), "guest1");
    assert_eq!(
        h.ok(0, XsType::GetPerms, b"/local/domain/1/name\0"),
        b"n1\0"
    );
}

#[test]
fn domu_reads_its_own_node_but_not_another_domains() {
    let mut h = Harness::new();
    h.write(1, "secret", "one").unwrap();
    h.write(2, "secret", "two").unwrap();
    assert_eq!(h.read(1, "/local/domain/1/secret").unwrap(), "one");
    assert_eq!(h.read(1, "/local/domain/2/secret"), Err(XsError::Access));
    assert_eq!(
        h.write(1, "/local/domain/2/secret", "x"),
        Err(XsError::Access)
    );
    assert_eq!(h.write(1, "/local/domain/2/new", "x"), Err(XsError::Access));
    assert_eq!(
        h.err(1, XsType::Directory, b"/local/domain/2\0"),
        XsError::Access
    );
    assert_eq!(
        h.err(1, XsType::Rm, b"/local/domain/2/secret\0"),
        XsError::Access
    );
    assert_eq!(
        h.err(1, XsType::GetPerms, b"/local/domain/2\0"),
        XsError::Access
    );
    assert_eq!(h.read(2, "secret").unwrap(), "two");
}

#[test]
fn dom0_can_do_anything() {
    let mut h = Harness::new();
    h.write(1, "secret", "one").unwrap();
    h.ok(1, XsType::SetPerms, &zs(&["secret", "n1"]));
    assert_eq!(h.read(0, "/local/domain/1/secret").unwrap(), "one");
    h.write(0, "/local/domain/1/secret", "dom0 was here")
        .unwrap();
    h.ok(0, XsType::SetPerms, &zs(&["/local/domain/1/secret", "n2"]));
    assert_eq!(
        h.read(2, "/local/domain/1/secret").unwrap(),
        "dom0 was here"
    );
    h.ok(0, XsType::Rm, b"/local/domain/1/secret\0");
    h.check();
}

#[test]
fn domus_cannot_write_outside_granted_places() {
    let mut h = Harness::new();
    assert_eq!(h.write(1, "/tool/x", "1"), Err(XsError::Access));
    assert_eq!(h.err(1, XsType::Mkdir, b"/tool\0"), XsError::Access);
    assert_eq!(h.read(1, "/"), Err(XsError::Access));
}

#[test]
fn explicit_entries_grant_other_domains_access() {
    let mut h = Harness::new();
    h.write(1, "shared", "s").unwrap();
    h.ok(1, XsType::SetPerms, &zs(&["shared", "n1", "r2"]));
    assert_eq!(h.read(2, "/local/domain/1/shared").unwrap(), "s");
    assert_eq!(
        h.write(2, "/local/domain/1/shared", "x"),
        Err(XsError::Access)
    );
    h.ok(1, XsType::SetPerms, &zs(&["shared", "n1", "b2"]));
    h.write(2, "/local/domain/1/shared", "x").unwrap();
    // The default entry applies to everyone not listed.
    h.ok(1, XsType::SetPerms, &zs(&["shared", "r1"]));
    assert_eq!(h.read(2, "/local/domain/1/shared").unwrap(), "x");
    assert_eq!(h.ok(1, XsType::GetPerms, b"shared\0"), b"r1\0");
}

#[test]
fn nodes_a_domu_creates_in_a_writable_place_are_its_own() {
    let mut h = Harness::new();
    h.write(0, "/backend", "").unwrap();
    h.ok(0, XsType::SetPerms, &zs(&["/backend", "n0", "w1"]));
    h.write(1, "/backend/vif/0", "x").unwrap();
    assert_eq!(h.ok(0, XsType::GetPerms, b"/backend/vif\0"), b"n1\0w1\0");
    assert_eq!(h.read(1, "/backend/vif/0").unwrap(), "x");
    assert_eq!(h.read(2, "/backend/vif/0"), Err(XsError::Access));
    // Nodes dom0 creates inherit the parent's permissions unchanged.
    h.write(0, "/backend/d0", "").unwrap();
    assert_eq!(h.ok(0, XsType::GetPerms, b"/backend/d0\0"), b"n0\0w1\0");
}

#[test]
fn only_the_owner_sets_permissions_and_may_not_give_nodes_away() {
    let mut h = Harness::new();
    h.write(1, "n", "").unwrap();
    assert_eq!(
        h.err(2, XsType::SetPerms, &zs(&["/local/domain/1/n", "b2"])),
        XsError::Access
    );
    assert_eq!(
        h.err(1, XsType::SetPerms, &zs(&["n", "n2"])),
        XsError::Permission
    );
    h.ok(0, XsType::SetPerms, &zs(&["/local/domain/1/n", "n2"]));
    assert_eq!(h.ok(0, XsType::GetPerms, b"/local/domain/1/n\0"), b"n2\0");
}

#[test]
fn bad_permission_strings_are_einval() {
    let mut h = Harness::new();
    h.write(0, "/p", "").unwrap();
    for bad in [
        zs(&["/p"]),
        zs(&["/p", "x0"]),
        zs(&["/p", "r"]),
        zs(&["/p", "r99999"]),
        zs(&["/p", "n0", ""]),
        b"/p\0n0".to_vec(),
    ] {
        assert_eq!(
            h.err(0, XsType::SetPerms, &bad),
            XsError::Invalid,
            "{bad:?}"
        );
    }
    assert_eq!(h.ok(0, XsType::GetPerms, b"/p\0"), b"n0\0");
}

// ---------------------------------------------------------------- malformed requests

#[test]
fn malformed_requests_get_error_replies_with_ids_echoed() {
    let mut h = Harness::new();
    let cases: Vec<(Vec<u8>, XsError)> = vec![
        (wire::encode(XsType::Read, 1, 0, b"/a"), XsError::Invalid),
        (wire::encode(XsType::Read, 2, 0, b""), XsError::Invalid),
        (
            wire::encode(XsType::Read, 3, 0, b"/a\0/b\0"),
            XsError::Invalid,
        ),
        (wire::encode(XsType::Write, 4, 0, b"/a"), XsError::Invalid),
        (
            wire::encode(XsType::Read, 5, 0, b"/a//b\0"),
            XsError::Invalid,
        ),
        (
            wire::encode(XsType::Read, 6, 0, b"/a b\0"),
            XsError::Invalid,
        ),
        (wire::encode(XsType::Read, 7, 0, b"/a/\0"), XsError::Invalid),
        (
            wire::encode(XsType::Write, 8, 0, b"@x\0v"),
            XsError::Invalid,
        ),
        (wire::encode(XsType::Watch, 9, 0, b"/a\0"), XsError::Invalid),
        (
            wire::encode(XsType::WatchEvent, 10, 0, b"/a\0t\0"),
            XsError::Invalid,
        ),
        (
            wire::encode(XsType::Error, 11, 0, b"EINVAL\0"),
            XsError::Invalid,
        ),
        (
            wire::encode(XsType::SetTarget, 12, 0, b"1\0"),
            XsError::NotSupported,
        ),
        (
            wire::encode(XsType::Read, 13, 77, b"/a\0"),
            XsError::NoEntry,
        ),
        (
            wire::encode(XsType::TransactionEnd, 14, 0, b"T\0"),
            XsError::NoEntry,
        ),
    ];
    for (message, expected) in cases {
        let sent = wire::parse_header(&message).unwrap();
        let (header, payload) = h.raw(0, &message);
        assert_eq!(header.type_, XsType::Error.raw());
        assert_eq!((header.req_id, header.tx_id), (sent.req_id, sent.tx_id));
        assert_eq!(payload, z(expected.name()), "request {}", sent.req_id);
    }
}

#[test]
fn unknown_types_and_bad_lengths_are_refused() {
    let mut h = Harness::new();
    let with_header = |type_: u32, len: u32, payload: &[u8]| {
        let mut m = Vec::new();
        for w in [type_, 42, 3, len] {
            m.extend_from_slice(&w.to_le_bytes());
        }
        m.extend_from_slice(payload);
        m
    };
    for (message, expected) in [
        (with_header(20, 3, b"/a\0"), XsError::Invalid),
        (with_header(9999, 0, b""), XsError::Invalid),
        (with_header(2, 4, b"/a\0"), XsError::Invalid),
        (with_header(2, 2, b"/a\0"), XsError::Invalid),
        (with_header(2, 5000, b""), XsError::TooBig),
        (Vec::from(&b"short"[..]), XsError::Invalid),
    ] {
        let (_, payload) = h.raw(0, &message);
        assert_eq!(payload, z(expected.name()));
    }
    let too_big = vec![b'a'; XENSTORE_PAYLOAD_MAX + 1];
    let (_, payload) = h.raw(0, &with_header(2, too_big.len() as u32, &too_big));
    assert_eq!(payload, z("E2BIG"));
}

#[test]
fn messages_from_unknown_connections_are_rejected_without_reply() {
    let mut h = Harness::new();
    let m = wire::encode(XsType::Read, 1, 0, b"/\0");
    assert_eq!(h.xs.handle_message(9, &m), Err(XsError::NoEntry));
    assert_eq!(h.xs.pop_output(9), None);
}

// ---------------------------------------------------------------- watches

#[test]
fn a_new_watch_fires_once_immediately_after_its_reply() {
    let mut h = Harness::new();
    h.xs.handle_message(1, &wire::encode(XsType::Watch, 5, 0, &zs(&["dev", "tok"])))
        .unwrap();
    let first = h.xs.pop_output(1).unwrap();
    assert_eq!(
        wire::parse_header(&first).unwrap().type_,
        XsType::Watch.raw()
    );
    let second = h.xs.pop_output(1).unwrap();
    assert_eq!(&second[HEADER_LEN..], b"dev\0tok\0");
    assert_eq!(h.xs.pop_output(1), None);
}

#[test]
fn watches_fire_on_changes_of_the_path_and_its_descendants() {
    let mut h = Harness::new();
    h.watch(0, "/w", "t").unwrap();
    assert_eq!(h.events(0), ["/w t"]);
    h.write(0, "/w", "1").unwrap();
    h.write(0, "/w/a/b", "2").unwrap();
    h.ok(0, XsType::Mkdir, b"/w/m\0");
    h.ok(0, XsType::SetPerms, &zs(&["/w/m", "r0"]));
    h.ok(0, XsType::Rm, b"/w/a\0");
    h.write(0, "/wx", "sibling").unwrap();
    h.write(0, "/other", "x").unwrap();
    assert_eq!(
        h.events(0),
        ["/w t", "/w/a/b t", "/w/m t", "/w/m t", "/w/a t"]
    );
}

#[test]
fn removing_an_ancestor_reports_the_watched_path() {
    let mut h = Harness::new();
    h.write(0, "/r/deep/node", "").unwrap();
    h.watch(0, "/r/deep/node", "t").unwrap();
    h.events(0);
    h.ok(0, XsType::Rm, b"/r\0");
    assert_eq!(h.events(0), ["/r/deep/node t"]);
}

#[test]
fn relative_watches_report_relative_paths() {
    let mut h = Harness::new();
    h.watch(1, "device", "d").unwrap();
    assert_eq!(h.events(1), ["device d"]);
    h.write(0, "/local/domain/1/device/vbd/0", "x").unwrap();
    assert_eq!(h.events(1), ["device/vbd/0 d"]);
}

#[test]
fn watchers_are_not_told_about_nodes_they_cannot_read() {
    let mut h = Harness::new();
    h.watch(1, "/local/domain/2", "peek").unwrap();
    h.events(1);
    h.write(2, "private", "x").unwrap();
    assert!(h.events(1).is_empty());
    h.ok(2, XsType::SetPerms, &zs(&["private", "n2", "r1"]));
    assert_eq!(h.events(1), ["/local/domain/2/private peek"]);
}

#[test]
fn duplicate_and_unknown_watches() {
    let mut h = Harness::new();
    h.watch(1, "a", "t").unwrap();
    assert_eq!(h.watch(1, "a", "t"), Err(XsError::Exists));
    h.watch(1, "a", "t2").unwrap();
    h.ok(1, XsType::Unwatch, &zs(&["a", "t"]));
    assert_eq!(
        h.err(1, XsType::Unwatch, &zs(&["a", "t"])),
        XsError::NoEntry
    );
    h.events(1);
    h.write(1, "a", "").unwrap();
    assert_eq!(h.events(1), ["a t2"]);
}

#[test]
fn reset_watches_drops_watches_and_transactions() {
    let mut h = Harness::new();
    h.watch(1, "a", "t").unwrap();
    let tx = h.start(1);
    h.ok(1, XsType::ResetWatches, b"\0");
    assert_eq!(h.end(1, tx, true), Err(XsError::NoEntry));
    h.events(1);
    h.write(1, "a", "").unwrap();
    assert!(h.events(1).is_empty());
}

#[test]
fn special_watches_fire_on_introduce_and_release() {
    let mut h = Harness::new();
    h.watch(0, "@introduceDomain", "in").unwrap();
    h.watch(0, "@releaseDomain", "out").unwrap();
    h.watch(1, "@releaseDomain", "domu").unwrap();
    assert_eq!(h.events(0), ["@introduceDomain in", "@releaseDomain out"]);
    assert_eq!(h.events(1), ["@releaseDomain domu"]);
    h.ok(0, XsType::Introduce, &zs(&["3", "4096", "7"]));
    h.ok(0, XsType::Release, b"3\0");
    assert_eq!(h.events(0), ["@introduceDomain in", "@releaseDomain out"]);
    assert!(
        h.events(1).is_empty(),
        "special nodes are closed to domUs by default"
    );
    h.ok(0, XsType::SetPerms, &zs(&["@releaseDomain", "n0", "r1"]));
    assert_eq!(h.ok(1, XsType::GetPerms, b"@releaseDomain\0"), b"n0\0r1\0");
    h.xs.release_domain(2).unwrap();
    assert_eq!(h.events(1), ["@releaseDomain domu"]);
}

#[test]
fn node_changes_do_not_fire_special_watches() {
    let mut h = Harness::new();
    h.watch(0, "@releaseDomain", "out").unwrap();
    h.events(0);
    h.write(0, "/x", "").unwrap();
    assert!(h.events(0).is_empty());
}

#[test]
fn watch_events_beyond_the_queue_limit_are_dropped() {
    let quotas = Quotas {
        max_queued: 4,
        ..Quotas::default()
    };
    let mut h = Harness::with_quotas(quotas);
    h.watch(1, "q", "t").unwrap();
    h.events(1);
    for i in 0..10 {
        h.write(0, &alloc::format!("/local/domain/1/q/{i}"), "")
            .unwrap();
    }
    assert_eq!(h.events(1).len(), 4);
}

// ---------------------------------------------------------------- transactions

#[test]
fn a_transaction_sees_its_own_writes_and_others_see_them_on_commit() {
    let mut h = Harness::new();
    h.write(1, "x", "old").unwrap();
    let tx = h.start(1);
    assert_ne!(tx, 0);
    h.write_tx(1, tx, "x", "new").unwrap();
    h.write_tx(1, tx, "made/here", "n").unwrap();
    assert_eq!(h.read_tx(1, tx, "x").unwrap(), "new");
    assert_eq!(h.read(1, "x").unwrap(), "old");
    assert_eq!(h.read(1, "made/here"), Err(XsError::NoEntry));
    h.end(1, tx, true).unwrap();
    assert_eq!(h.read(1, "x").unwrap(), "new");
    assert_eq!(h.read(1, "made/here").unwrap(), "n");
    assert_eq!(
        h.end(1, tx, true),
        Err(XsError::NoEntry),
        "ended ids are gone"
    );
    h.check();
}

#[test]
fn aborting_discards_the_changes() {
    let mut h = Harness::new();
    let tx = h.start(1);
    h.write_tx(1, tx, "gone", "x").unwrap();
    h.try_call(1, XsType::Rm, tx, b"domid\0").unwrap();
    h.end(1, tx, false).unwrap();
    assert_eq!(h.read(1, "gone"), Err(XsError::NoEntry));
    assert_eq!(h.read(1, "domid").unwrap(), "1");
}

#[test]
fn interleaved_transactions_on_the_same_node_conflict() {
    let mut h = Harness::new();
    h.write(0, "/shared", "0").unwrap();
    h.ok(0, XsType::SetPerms, &zs(&["/shared", "b0"]));
    let t1 = h.start(1);
    let t2 = h.start(2);
    let v1 = h.read_tx(1, t1, "/shared").unwrap();
    let v2 = h.read_tx(2, t2, "/shared").unwrap();
    h.write_tx(1, t1, "/shared", &alloc::format!("{v1}+1"))
        .unwrap();
    h.write_tx(2, t2, "/shared", &alloc::format!("{v2}+2"))
        .unwrap();
    h.end(1, t1, true).unwrap();
    assert_eq!(h.end(2, t2, true), Err(XsError::Again));
    assert_eq!(h.read(0, "/shared").unwrap(), "0+1");
    // The retry succeeds.
    let t2 = h.start(2);
    let v = h.read_tx(2, t2, "/shared").unwrap();
    h.write_tx(2, t2, "/shared", &alloc::format!("{v}+2"))
        .unwrap();
    h.end(2, t2, true).unwrap();
    assert_eq!(h.read(0, "/shared").unwrap(), "0+1+2");
}

#[test]
fn a_plain_write_to_a_node_read_in_a_transaction_conflicts() {
    let mut h = Harness::new();
    h.write(1, "a", "1").unwrap();
    let tx = h.start(1);
    h.read_tx(1, tx, "a").unwrap();
    h.write_tx(1, tx, "b", "2").unwrap();
    h.write(0, "/local/domain/1/a", "changed").unwrap();
    assert_eq!(h.end(1, tx, true), Err(XsError::Again));
    assert_eq!(h.read(1, "b"), Err(XsError::NoEntry));
}

#[test]
fn creating_a_node_read_as_absent_conflicts() {
    let mut h = Harness::new();
    let tx = h.start(1);
    assert_eq!(h.read_tx(1, tx, "flag"), Err(XsError::NoEntry));
    h.write(1, "flag", "set").unwrap();
    assert_eq!(h.end(1, tx, true), Err(XsError::Again));
}

#[test]
fn transactions_on_unrelated_nodes_both_commit() {
    let mut h = Harness::new();
    h.write(1, "a", "").unwrap();
    h.write(2, "b", "").unwrap();
    let t1 = h.start(1);
    let t2 = h.start(2);
    h.write_tx(1, t1, "a", "1").unwrap();
    h.write_tx(2, t2, "b", "2").unwrap();
    h.end(2, t2, true).unwrap();
    h.end(1, t1, true).unwrap();
    assert_eq!(h.read(0, "/local/domain/1/a").unwrap(), "1");
    assert_eq!(h.read(0, "/local/domain/2/b").unwrap(), "2");
}

#[test]
fn transaction_events_fire_only_on_commit() {
    let mut h = Harness::new();
    h.watch(0, "/local/domain/1", "t").unwrap();
    h.events(0);
    let tx = h.start(1);
    h.write_tx(1, tx, "k", "v").unwrap();
    assert!(h.events(0).is_empty());
    h.end(1, tx, true).unwrap();
    assert_eq!(h.events(0), ["/local/domain/1/k t"]);
    let tx = h.start(1);
    h.write_tx(1, tx, "k", "w").unwrap();
    h.end(1, tx, false).unwrap();
    assert!(h.events(0).is_empty());
}

#[test]
fn transaction_ids_belong_to_their_connection() {
    let mut h = Harness::new();
    let tx = h.start(1);
    assert_eq!(h.read_tx(2, tx, "domid"), Err(XsError::NoEntry));
    assert_eq!(h.end(2, tx, true), Err(XsError::NoEntry));
    h.end(1, tx, true).unwrap();
}

#[test]
fn transaction_end_argument_and_start_with_a_tx_id() {
    let mut h = Harness::new();
    let tx = h.start(1);
    assert_eq!(
        h.try_call(1, XsType::TransactionEnd, tx, b"X\0"),
        Err(XsError::Invalid)
    );
    assert_eq!(
        h.try_call(1, XsType::TransactionStart, tx, b"\0"),
        Err(XsError::Busy)
    );
    h.end(1, tx, false).unwrap();
}

#[test]
fn watch_ignores_the_tx_id() {
    let mut h = Harness::new();
    h.try_call(1, XsType::Watch, 999, &zs(&["w", "t"])).unwrap();
    assert_eq!(h.events(1), ["w t"]);
}

// ---------------------------------------------------------------- quotas

#[test]
fn node_quota() {
    let quotas = Quotas {
        max_nodes: 5,
        ..Quotas::default()
    };
    let mut h = Harness::with_quotas(quotas);
    // domU 1 owns its home, domid and name: 3 nodes.
    h.write(1, "a", "").unwrap();
    assert_eq!(h.write(1, "b/c", ""), Err(XsError::NoSpace));
    h.write(1, "b", "").unwrap();
    assert_eq!(h.write(1, "c", ""), Err(XsError::NoSpace));
    h.ok(1, XsType::Rm, b"a\0");
    h.write(1, "c", "").unwrap();
    // dom0 is not limited, even when creating nodes for the domain.
    h.write(0, "/local/domain/1/d", "").unwrap();
    h.check();
}

#[test]
fn node_quota_inside_a_transaction() {
    let quotas = Quotas {
        max_nodes: 4,
        ..Quotas::default()
    };
    let mut h = Harness::with_quotas(quotas);
    let tx = h.start(1);
    h.write_tx(1, tx, "a", "").unwrap();
    assert_eq!(h.write_tx(1, tx, "b", ""), Err(XsError::NoSpace));
    h.end(1, tx, true).unwrap();
}

#[test]
fn value_size_quota() {
    let mut h = Harness::new();
    let max = Quotas::default().max_value_size;
    h.write(1, "v", &"x".repeat(max)).unwrap();
    assert_eq!(h.write(1, "v", &"x".repeat(max + 1)), Err(XsError::NoSpace));
    h.write(0, "/v", &"x".repeat(max + 1)).unwrap();
}

#[test]
fn watch_quota() {
    let mut h = Harness::new();
    let max = Quotas::default().max_watches;
    for i in 0..max {
        h.watch(1, "w", &alloc::format!("{i}")).unwrap();
    }
    assert_eq!(h.watch(1, "w", "one-more"), Err(XsError::TooBig));
    h.ok(1, XsType::Unwatch, &zs(&["w", "0"]));
    h.watch(1, "w", "one-more").unwrap();
    h.watch(0, "w", "dom0-unlimited").unwrap();
}

#[test]
fn transaction_quota() {
    let mut h = Harness::new();
    let max = Quotas::default().max_transactions;
    let ids: Vec<u32> = (0..max).map(|_| h.start(1)).collect();
    assert_eq!(
        h.try_call(1, XsType::TransactionStart, 0, b"\0"),
        Err(XsError::NoSpace)
    );
    h.end(1, ids[0], false).unwrap();
    h.start(1);
}

#[test]
fn transaction_size_quota() {
    let quotas = Quotas {
        max_transaction_nodes: 8,
        ..Quotas::default()
    };
    let mut h = Harness::with_quotas(quotas);
    let tx = h.start(1);
    for i in 0..8 {
        assert_eq!(
            h.read_tx(1, tx, &alloc::format!("absent{i}")),
            Err(XsError::NoEntry)
        );
    }
    assert_eq!(h.read_tx(1, tx, "domid"), Err(XsError::NoSpace));
    h.end(1, tx, false).unwrap();
    // Repeated writes of one node count their queued events too.
    let tx = h.start(1);
    let mut results = (0..8).map(|_| h.write_tx(1, tx, "k", "v"));
    assert!(results.any(|r| r == Err(XsError::NoSpace)));
    let tx0 = h.start(0);
    for i in 0..20 {
        h.write_tx(0, tx0, "/dom0/many", &alloc::format!("{i}"))
            .unwrap();
    }
    h.end(0, tx0, true).unwrap();
}

#[test]
fn permission_count_quota() {
    let mut h = Harness::new();
    h.write(1, "p", "").unwrap();
    let five = zs(&["p", "n1", "r2", "r3", "r4", "r5"]);
    h.ok(1, XsType::SetPerms, &five);
    let six = zs(&["p", "n1", "r2", "r3", "r4", "r5", "r6"]);
    assert_eq!(h.err(1, XsType::SetPerms, &six), XsError::NoSpace);
}

// ---------------------------------------------------------------- domain management

#[test]
fn introduce_is_privileged_and_creates_the_home() {
    let mut h = Harness::new();
    assert_eq!(
        h.err(1, XsType::Introduce, &zs(&["3", "1", "1"])),
        XsError::Access
    );
    h.ok(0, XsType::Introduce, &zs(&["3", "12345", "9", ""]));
    assert_eq!(
        h.ring_info(3),
        Some(RingInfo {
            mfn: 12345,
            port: 9
        })
    );
    assert_eq!(h.ok(0, XsType::IsDomainIntroduced, b"3\0"), b"T\0");
    assert_eq!(h.ok(0, XsType::GetPerms, b"/local/domain/3\0"), b"n3\0");
    assert_eq!(h.read(3, "domid").unwrap(), "3");
    // Re-introducing with the same ring is harmless; with another it is refused.
    h.ok(0, XsType::Introduce, &zs(&["3", "12345", "9"]));
    assert_eq!(
        h.err(0, XsType::Introduce, &zs(&["3", "1", "9"])),
        XsError::Exists
    );
}

#[test]
fn introduce_rejects_bad_arguments() {
    let mut h = Harness::new();
    for bad in [
        zs(&["0", "1", "1"]),
        zs(&["32752", "1", "1"]),
        zs(&["3", "x", "1"]),
        zs(&["3", "1", "4294967296"]),
        zs(&["3", "1"]),
        zs(&["3", "99999999999999999999999", "1"]),
    ] {
        assert_eq!(
            h.err(0, XsType::Introduce, &bad),
            XsError::Invalid,
            "{bad:?}"
        );
    }
}

#[test]
fn release_drops_the_connection_and_its_state() {
    let mut h = Harness::new();
    h.watch(1, "w", "t").unwrap();
    assert_eq!(h.events(1), ["w t"]);
    h.start(1);
    assert_eq!(h.err(1, XsType::Release, b"2\0"), XsError::Access);
    h.ok(0, XsType::Release, b"1\0");
    assert!(!h.xs.is_introduced(1));
    assert_eq!(h.ok(0, XsType::IsDomainIntroduced, b"1\0"), b"F\0");
    assert_eq!(h.err(0, XsType::Release, b"1\0"), XsError::NoEntry);
    let m = wire::encode(XsType::Read, 1, 0, b"domid\0");
    assert_eq!(h.xs.handle_message(1, &m), Err(XsError::NoEntry));
    // Its nodes stay until the toolstack removes them; a new introduction starts afresh.
    assert_eq!(h.read(0, "/local/domain/1/name").unwrap(), "guest1");
    h.xs.introduce_domain(1, "again", RING1).unwrap();
    h.write(0, "/local/domain/1/w", "").unwrap();
    assert!(h.events(1).is_empty(), "old watches are gone");
}

#[test]
fn resume_and_is_domain_introduced_are_privileged() {
    let mut h = Harness::new();
    assert_eq!(h.ok(0, XsType::Resume, b"1\0"), b"OK\0");
    assert_eq!(h.err(0, XsType::Resume, b"9\0"), XsError::NoEntry);
    assert_eq!(h.err(1, XsType::Resume, b"1\0"), XsError::Access);
    assert_eq!(
        h.err(1, XsType::IsDomainIntroduced, b"1\0"),
        XsError::Access
    );
}

#[test]
fn control_check_and_help() {
    let mut h = Harness::new();
    h.check();
    assert_eq!(h.ok(0, XsType::Control, b"help\0"), b"check\nhelp\n\0");
    assert_eq!(h.err(0, XsType::Control, b"frobnicate\0"), XsError::Invalid);
    assert_eq!(h.err(1, XsType::Control, b"check\0"), XsError::Access);
}

impl Harness {
    fn ring_info(&self, domid: DomId) -> Option<RingInfo> {
        self.xs.ring_info(domid)
    }
}

// ---------------------------------------------------------------- the ring

/// The guest's side of a ring page.
fn guest_send(ring: &mut XenstoreDomainInterface, bytes: &[u8]) {
    for &b in bytes {
        ring.req[(ring.req_prod as usize) % ring.req.len()] = b;
        ring.req_prod = ring.req_prod.wrapping_add(1);
    }
}

fn guest_receive(ring: &mut XenstoreDomainInterface) -> Vec<u8> {
    let mut out = Vec::new();
    while ring.rsp_cons != ring.rsp_prod {
        out.push(ring.rsp[(ring.rsp_cons as usize) % ring.rsp.len()]);
        ring.rsp_cons = ring.rsp_cons.wrapping_add(1);
    }
    out
}

fn split_messages(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(h) = wire::parse_header(bytes) {
        let end = HEADER_LEN + h.len as usize;
        out.push(Vec::from(&bytes[..end]));
        bytes = &bytes[end..];
    }
    assert!(bytes.is_empty());
    out
}

#[test]
fn requests_and_replies_travel_over_the_ring() {
    let mut h = Harness::new();
    let mut ring = XenstoreDomainInterface::new();
    let mut t = RingTransport::new();
    guest_send(&mut ring, &wire::encode(XsType::Write, 1, 0, b"k\0v"));
    guest_send(&mut ring, &wire::encode(XsType::Read, 2, 0, b"k\0"));
    assert_eq!(h.xs.service_ring(1, &mut t, &mut ring), Ok(true));
    assert_eq!(ring.req_cons, ring.req_prod);
    let replies = split_messages(&guest_receive(&mut ring));
    assert_eq!(replies.len(), 2);
    assert_eq!(&replies[0][HEADER_LEN..], b"OK\0");
    assert_eq!(&replies[1][HEADER_LEN..], b"v");
    assert_eq!(h.xs.service_ring(1, &mut t, &mut ring), Ok(false), "idle");
}

#[test]
fn a_guest_that_does_not_read_replies_is_throttled_not_buffered() {
    let mut h = Harness::new();
    let mut ring = XenstoreDomainInterface::new();
    let mut t = RingTransport::new();
    let value = "x".repeat(400);
    h.write(1, "big", &value).unwrap();
    let request = wire::encode(XsType::Read, 1, 0, b"big\0");
    let per_ring = ring.req.len() / request.len();
    for _ in 0..per_ring {
        guest_send(&mut ring, &request);
    }
    h.xs.service_ring(1, &mut t, &mut ring).unwrap();
    // Two 416-byte replies fit on the ring and a third starts; once the replies waiting for
    // space reach the outstanding quota, further requests stay on the request ring.
    assert_eq!(ring.rsp_prod, 1024);
    let taken = (ring.req_cons / request.len() as u32) as usize;
    assert_eq!(taken, 2 + Quotas::default().max_outstanding);
    // Reading everything lets every request through.
    let mut got = Vec::new();
    for _ in 0..100 {
        got.extend(guest_receive(&mut ring));
        h.xs.service_ring(1, &mut t, &mut ring).unwrap();
    }
    got.extend(guest_receive(&mut ring));
    let replies = split_messages(&got);
    assert_eq!(replies.len(), per_ring);
    assert!(replies.iter().all(|r| r[HEADER_LEN..] == *value.as_bytes()));
}

#[test]
fn impossible_ring_indices_set_the_error_field() {
    let mut h = Harness::new();
    let mut ring = XenstoreDomainInterface::new();
    ring.req_prod = 5000;
    let mut t = RingTransport::new();
    assert_eq!(
        h.xs.service_ring(1, &mut t, &mut ring),
        Err(RingError::BadIndex)
    );
    assert_eq!(ring.error, XENSTORE_ERROR_RINGIDX);
    assert_eq!(
        h.xs.service_ring(9, &mut t, &mut ring),
        Err(RingError::NotConnected)
    );
}

#[test]
fn an_oversized_header_on_the_ring_gets_e2big_and_the_stream_recovers() {
    let mut h = Harness::new();
    let mut ring = XenstoreDomainInterface::new();
    let mut t = RingTransport::new();
    let mut bad = wire::encode(XsType::Read, 7, 0, b"");
    bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    guest_send(&mut ring, &bad);
    guest_send(&mut ring, b"trailing garbage");
    h.xs.service_ring(1, &mut t, &mut ring).unwrap();
    let replies = split_messages(&guest_receive(&mut ring));
    assert_eq!(replies.len(), 1);
    assert_eq!(&replies[0][HEADER_LEN..], b"E2BIG\0");
    assert_eq!(wire::parse_header(&replies[0]).unwrap().req_id, 7);
    guest_send(&mut ring, &wire::encode(XsType::Read, 8, 0, b"domid\0"));
    h.xs.service_ring(1, &mut t, &mut ring).unwrap();
    let replies = split_messages(&guest_receive(&mut ring));
    assert_eq!(&replies[0][HEADER_LEN..], b"1");
}

// ---------------------------------------------------------------- properties

fn any_type() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..30, Just(0xffff), any::<u32>()]
}

/// Payloads built from path-like pieces, so that many requests get past parsing.
fn any_payload() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"/".to_vec()),
        Just(b"a".to_vec()),
        Just(b"b/".to_vec()),
        Just(b"local/domain/2".to_vec()),
        Just(b"@releaseDomain".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"T".to_vec()),
        Just(b"r1".to_vec()),
        Just(b"3".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes and random indices on a ring never panic, never break the tree, and every
    /// reply that comes back is well-formed.
    #[test]
    fn garbage_on_the_ring_never_panics(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..6),
        cons in any::<u32>(),
    ) {
        let mut h = Harness::new();
        let mut ring = XenstoreDomainInterface::new();
        ring.req_cons = cons;
        ring.req_prod = cons;
        ring.rsp_cons = cons;
        ring.rsp_prod = cons;
        let mut t = RingTransport::new();
        for chunk in &chunks {
            let room = ring.req.len() - ring.req_prod.wrapping_sub(ring.req_cons) as usize;
            guest_send(&mut ring, &chunk[..chunk.len().min(room)]);
            let _ = h.xs.service_ring(1, &mut t, &mut ring);
            let out = guest_receive(&mut ring);
            let mut rest = &out[..];
            while let Some(hdr) = wire::parse_header(rest) {
                prop_assert!(hdr.len as usize <= XENSTORE_PAYLOAD_MAX);
                rest = rest.get(HEADER_LEN + hdr.len as usize..).unwrap_or(&[]);
            }
        }
        h.check();
    }

    /// Random messages with valid framing always get exactly one reply carrying their ids.
    #[test]
    fn every_request_gets_one_reply(
        requests in proptest::collection::vec((any_type(), any::<u32>(), 0u32..3, any_payload()), 1..24),
    ) {
        let mut h = Harness::new();
        for (type_, req_id, tx_id, payload) in requests {
            let mut m = Vec::new();
            for w in [type_, req_id, tx_id, payload.len() as u32] {
                m.extend_from_slice(&w.to_le_bytes());
            }
            m.extend_from_slice(&payload);
            for domid in [1, 0] {
                if !h.xs.is_introduced(1) {
                    h.xs.introduce_domain(1, "back", RING1).unwrap();
                }
                let (reply, _) = h.raw(domid, &m);
                prop_assert_eq!((reply.req_id, reply.tx_id), (req_id, tx_id));
            }
        }
        h.check();
    }
}
