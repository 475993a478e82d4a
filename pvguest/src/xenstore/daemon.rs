//! The daemon: connections (one per domain), request dispatch, watches, transactions, quotas
//! and the introduction and release of domains.
//!
//! Each request gets exactly one reply, queued on the caller's connection before any watch
//! event it causes; watch events go to every connection whose watch matches and who may read
//! the changed node. Replies and events wait in the connection's output queue until the
//! transport takes them ([`Xenstore::pop_output`] or [`Xenstore::service_ring`]).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use hypercall_abi::io::xs_wire::{
    XenstoreDomainInterface, XsType, XsdSockmsg, XENSTORE_ERROR_RINGIDX, XENSTORE_PAYLOAD_MAX,
};
use hypercall_abi::xen::DOMID_FIRST_RESERVED;

use super::path::{self, Resolved, INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use super::perms::{parse_domid, Access, Caller, Perms};
use super::ring::{RingError, RingTransport};
use super::store::{Direct, Event, InTransaction, NodeStore, Transaction, Tree};
use super::wire::{self, OK};
use super::{ops, DomId, XsError};

/// Per-domain limits, applied to unprivileged domains only. The defaults are C xenstored's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes a domain may own (`-E`, 1000).
    pub max_nodes: usize,
    /// Bytes in one node's value (`-S`, 2048).
    pub max_value_size: usize,
    /// Watches per connection (`-W`, 128).
    pub max_watches: usize,
    /// Open transactions per connection (`-t`, 10).
    pub max_transactions: usize,
    /// Entries in one node's permission list (`-A`, 5).
    pub max_perms: usize,
    /// Replies waiting for space on a domain's ring; while this many wait, further requests
    /// stay on the request ring (`quota_req_outstanding`, 20).
    pub max_outstanding: usize,
    /// Nodes a transaction may have looked at, changed or queued events for; past this its
    /// requests fail, bounding what an open transaction holds (`quota_trans_nodes`, 1024).
    pub max_transaction_nodes: usize,
    /// Messages queued for a connection; watch events beyond this are dropped so a domain that
    /// never reads its ring cannot grow the daemon's memory.
    pub max_queued: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_nodes: 1000,
            max_value_size: 2048,
            max_watches: 128,
            max_transactions: 10,
            max_perms: 5,
            max_outstanding: 20,
            max_transaction_nodes: 1024,
            max_queued: 1024,
        }
    }
}

/// Where a domain's ring lives, as given by `INTRODUCE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingInfo {
    /// The machine frame of the domain's `xenstore_domain_interface` page.
    pub mfn: u64,
    /// The domain's unbound event channel for the ring.
    pub port: u32,
}

#[derive(Debug)]
struct Watch {
    /// The absolute path or special name watched.
    path: String,
    /// As the client gave it, relative to its home; events are then reported relative too.
    relative: bool,
    token: Vec<u8>,
}

#[derive(Debug)]
struct Connection {
    caller: Caller,
    /// `None` for local connections (the control domain itself).
    ring: Option<RingInfo>,
    watches: Vec<Watch>,
    transactions: BTreeMap<u32, Transaction>,
    next_tx_id: u32,
    output: VecDeque<Vec<u8>>,
    /// Replies queued and not yet taken by the transport.
    replies_queued: usize,
    /// Requests handled so far.
    requests: u64,
}

impl Connection {
    fn new(caller: Caller, ring: Option<RingInfo>) -> Self {
        Connection {
            caller,
            ring,
            watches: Vec::new(),
            transactions: BTreeMap::new(),
            next_tx_id: 1,
            output: VecDeque::new(),
            replies_queued: 0,
            requests: 0,
        }
    }

    fn allocate_tx_id(&mut self) -> u32 {
        loop {
            let id = self.next_tx_id;
            self.next_tx_id = self.next_tx_id.wrapping_add(1).max(1);
            if !self.transactions.contains_key(&id) {
                return id;
            }
        }
    }
}

/// What a successful request answers, besides its reply payload.
struct Outcome {
    payload: Vec<u8>,
    /// The first firing of a just-registered watch, sent right after the reply.
    first_fire: Option<Vec<u8>>,
}

impl Outcome {
    fn reply(payload: Vec<u8>) -> Self {
        Outcome {
            payload,
            first_fire: None,
        }
    }

    fn ok() -> Self {
        Self::reply(Vec::from(OK))
    }
}

/// The xenstore daemon's state.
#[derive(Debug)]
pub struct Xenstore {
    tree: Tree,
    /// Permissions of the special watch paths (who is told about those events).
    special: BTreeMap<&'static str, Perms>,
    connections: BTreeMap<DomId, Connection>,
    quotas: Quotas,
    /// Events of the request being handled, fired once it is answered.
    events: Vec<Event>,
}

impl Default for Xenstore {
    fn default() -> Self {
        Self::new()
    }
}

/// Request types that honour a non-zero `tx_id` (Xen ignores it for the others).
fn uses_transaction(type_: XsType) -> bool {
    matches!(
        type_,
        XsType::Read
            | XsType::Write
            | XsType::Mkdir
            | XsType::Rm
            | XsType::Directory
            | XsType::GetPerms
            | XsType::SetPerms
            | XsType::TransactionStart
            | XsType::TransactionEnd
    )
}

impl Xenstore {
    /// An empty store (only `/`) with Xen's default quotas and no connections.
    pub fn new() -> Self {
        Self::with_quotas(Quotas::default())
    }

    /// An empty store with the given quotas.
    pub fn with_quotas(quotas: Quotas) -> Self {
        let closed = Perms::new(0, Access::None);
        Xenstore {
            tree: Tree::new(),
            special: [(INTRODUCE_DOMAIN, closed.clone()), (RELEASE_DOMAIN, closed)]
                .into_iter()
                .collect(),
            connections: BTreeMap::new(),
            quotas,
            events: Vec::new(),
        }
    }

    /// Opens a connection that does not come through `INTRODUCE`: the control domain's own
    /// (privileged), or another local client.
    pub fn connect(&mut self, domid: DomId, privileged: bool) -> Result<(), XsError> {
        if self.connections.contains_key(&domid) {
            return Err(XsError::Exists);
        }
        let caller = Caller { domid, privileged };
        self.connections
            .insert(domid, Connection::new(caller, None));
        Ok(())
    }

    /// What a toolstack does for a new domain: `INTRODUCE` it (creating its home, owned by it,
    /// with `domid`) and write its `name`.
    pub fn introduce_domain(
        &mut self,
        domid: DomId,
        name: &str,
        ring: RingInfo,
    ) -> Result<(), XsError> {
        self.introduce(domid, ring)?;
        let dom0 = Caller {
            domid: 0,
            privileged: true,
        };
        let home = path::home(domid);
        self.node_op(dom0, 0, |store, quotas| {
            ops::write(
                store,
                dom0,
                quotas,
                &path::join(&home, "name"),
                name.as_bytes(),
            )
        })?;
        self.fire_events();
        Ok(())
    }

    /// Disconnects an introduced domain: drops its watches, transactions and queued output,
    /// and fires `@releaseDomain`. Its nodes stay (the toolstack removes them).
    pub fn release_domain(&mut self, domid: DomId) -> Result<(), XsError> {
        self.release(domid)?;
        self.fire_events();
        Ok(())
    }

    /// Whether `domid` was introduced and not released since.
    pub fn is_introduced(&self, domid: DomId) -> bool {
        self.connections
            .get(&domid)
            .is_some_and(|c| c.ring.is_some())
    }

    /// How many requests `domid`'s current connection has had handled (0 without one).
    pub fn requests_handled(&self, domid: DomId) -> u64 {
        self.connections.get(&domid).map_or(0, |c| c.requests)
    }

    /// The ring of an introduced domain.
    pub fn ring_info(&self, domid: DomId) -> Option<RingInfo> {
        self.connections.get(&domid).and_then(|c| c.ring)
    }

    /// Handles one complete message (header and payload) from `domid`'s connection and queues
    /// the reply. `Err(NoEntry)` if there is no such connection; every problem with the
    /// message itself is answered with an error reply instead.
    pub fn handle_message(&mut self, domid: DomId, message: &[u8]) -> Result<(), XsError> {
        let conn = self.connections.get(&domid).ok_or(XsError::NoEntry)?;
        let caller = conn.caller;
        let (header, payload) = match wire::parse_header(message) {
            Some(h) => (h, message.get(wire::HEADER_LEN..).unwrap_or(&[])),
            None => (XsdSockmsg::default(), &[][..]),
        };
        let result = if message.len() < wire::HEADER_LEN {
            Err(XsError::Invalid)
        } else if header.len as usize > XENSTORE_PAYLOAD_MAX {
            Err(XsError::TooBig)
        } else if header.len as usize != payload.len() {
            Err(XsError::Invalid)
        } else {
            self.dispatch(caller, &header, payload)
        };
        let reply_type = XsType::try_from(header.type_).unwrap_or(XsType::Error);
        let (reply, first_fire) = match result {
            Ok(outcome) if outcome.payload.len() <= XENSTORE_PAYLOAD_MAX => (
                wire::encode(reply_type, header.req_id, header.tx_id, &outcome.payload),
                outcome.first_fire,
            ),
            Ok(_) => (
                wire::error_reply(header.req_id, header.tx_id, XsError::TooBig),
                None,
            ),
            Err(e) => {
                self.events.clear();
                (wire::error_reply(header.req_id, header.tx_id, e), None)
            }
        };
        // Introduced domains are unprivileged and cannot release themselves, so the caller's
        // connection still exists; should it not, the reply has nowhere to go.
        if let Some(conn) = self.connections.get_mut(&domid) {
            conn.output.push_back(reply);
            conn.replies_queued += 1;
            conn.requests += 1;
            if let Some(event) = first_fire {
                conn.output.push_back(event);
            }
        }
        self.fire_events();
        Ok(())
    }

    /// Takes the next message queued for `domid`.
    pub fn pop_output(&mut self, domid: DomId) -> Option<Vec<u8>> {
        let conn = self.connections.get_mut(&domid)?;
        let message = conn.output.pop_front()?;
        if wire::parse_header(&message).is_some_and(|h| h.type_ != XsType::WatchEvent.raw()) {
            conn.replies_queued = conn.replies_queued.saturating_sub(1);
        }
        Some(message)
    }

    /// Serves `domid`'s ring: sends what is queued, handles the complete requests on the ring
    /// (no more than the outstanding-reply quota allows) and sends their replies. Returns
    /// whether any index moved, i.e. whether the domain should be notified. A ring whose
    /// indices are impossible gets `XENSTORE_ERROR_RINGIDX` in its `error` field.
    pub fn service_ring(
        &mut self,
        domid: DomId,
        transport: &mut RingTransport,
        ring: &mut XenstoreDomainInterface,
    ) -> Result<bool, RingError> {
        if !self.connections.contains_key(&domid) {
            return Err(RingError::NotConnected);
        }
        let result = self.pump(domid, transport, ring);
        if result == Err(RingError::BadIndex) {
            ring.error = XENSTORE_ERROR_RINGIDX;
        }
        result
    }

    fn pump(
        &mut self,
        domid: DomId,
        transport: &mut RingTransport,
        ring: &mut XenstoreDomainInterface,
    ) -> Result<bool, RingError> {
        let (start_cons, start_prod) = (ring.req_cons, ring.rsp_prod);
        loop {
            self.transmit(domid, transport, ring)?;
            let outstanding = transport.pending_replies()
                + self.connections.get(&domid).map_or(0, |c| c.replies_queued);
            if outstanding >= self.quotas.max_outstanding {
                break;
            }
            let (cons, message) = transport.receive(&ring.req, ring.req_cons, ring.req_prod)?;
            ring.req_cons = cons;
            match message {
                Some(message) => {
                    // The connection exists (checked by the caller) unless a request released
                    // it, in which case the loop stops here.
                    if self.handle_message(domid, &message).is_err() {
                        break;
                    }
                }
                None => break,
            }
        }
        self.transmit(domid, transport, ring)?;
        Ok(ring.req_cons != start_cons || ring.rsp_prod != start_prod)
    }

    fn transmit(
        &mut self,
        domid: DomId,
        transport: &mut RingTransport,
        ring: &mut XenstoreDomainInterface,
    ) -> Result<(), RingError> {
        loop {
            ring.rsp_prod = transport.transmit(&mut ring.rsp, ring.rsp_cons, ring.rsp_prod)?;
            if transport.has_pending() {
                return Ok(());
            }
            match self.pop_output(domid) {
                Some(message) => transport.queue(&message),
                None => return Ok(()),
            }
        }
    }

    fn transaction_mut(&mut self, domid: DomId, tx_id: u32) -> Result<&mut Transaction, XsError> {
        self.connections
            .get_mut(&domid)
            .and_then(|c| c.transactions.get_mut(&tx_id))
            .ok_or(XsError::NoEntry)
    }

    /// Runs a node operation directly (`tx_id` 0) or inside the caller's transaction.
    fn node_op<T>(
        &mut self,
        caller: Caller,
        tx_id: u32,
        op: impl FnOnce(&mut dyn NodeStore, &Quotas) -> Result<T, XsError>,
    ) -> Result<T, XsError> {
        if tx_id == 0 {
            let mut store = Direct {
                tree: &mut self.tree,
                events: &mut self.events,
            };
            return op(&mut store, &self.quotas);
        }
        let tx = self
            .connections
            .get_mut(&caller.domid)
            .and_then(|c| c.transactions.get_mut(&tx_id))
            .ok_or(XsError::NoEntry)?;
        if !caller.privileged && tx.footprint() >= self.quotas.max_transaction_nodes {
            return Err(XsError::NoSpace);
        }
        let mut store = InTransaction {
            tree: &self.tree,
            tx,
        };
        op(&mut store, &self.quotas)
    }

    fn dispatch(
        &mut self,
        caller: Caller,
        header: &XsdSockmsg,
        payload: &[u8],
    ) -> Result<Outcome, XsError> {
        let type_ = XsType::try_from(header.type_).map_err(|_| XsError::Invalid)?;
        let tx_id = if uses_transaction(type_) {
            header.tx_id
        } else {
            0
        };
        if tx_id != 0 {
            self.transaction_mut(caller.domid, tx_id)?;
        }
        let domid = caller.domid;
        match type_ {
            XsType::Read => {
                let path = path::resolve(wire::one_string(payload)?, domid)?;
                self.node_op(caller, tx_id, |s, _| ops::read(s, caller, &path))
                    .map(Outcome::reply)
            }
            XsType::Directory => {
                let path = path::resolve(wire::one_string(payload)?, domid)?;
                self.node_op(caller, tx_id, |s, _| ops::directory(s, caller, &path))
                    .map(Outcome::reply)
            }
            XsType::GetPerms => {
                let target = path::resolve_watch(wire::one_string(payload)?, domid)?;
                if let Some(perms) = self.special.get(target.path.as_str()) {
                    if !caller.may_read(perms) {
                        return Err(XsError::Access);
                    }
                    let mut out = Vec::new();
                    perms.encode(&mut out);
                    return Ok(Outcome::reply(out));
                }
                let path = node_path(target)?;
                self.node_op(caller, tx_id, |s, _| ops::get_perms(s, caller, &path))
                    .map(Outcome::reply)
            }
            XsType::Write => {
                let (raw_path, value) = wire::string_and_rest(payload)?;
                let path = path::resolve(raw_path, domid)?;
                self.node_op(caller, tx_id, |s, q| ops::write(s, caller, q, &path, value))?;
                Ok(Outcome::ok())
            }
            XsType::Mkdir => {
                let path = path::resolve(wire::one_string(payload)?, domid)?;
                self.node_op(caller, tx_id, |s, q| ops::mkdir(s, caller, q, &path))?;
                Ok(Outcome::ok())
            }
            XsType::Rm => {
                let path = path::resolve(wire::one_string(payload)?, domid)?;
                self.node_op(caller, tx_id, |s, _| ops::rm(s, caller, &path))?;
                Ok(Outcome::ok())
            }
            XsType::SetPerms => {
                let fields = wire::strings(payload)?;
                let (raw_path, entries) = fields.split_first().ok_or(XsError::Invalid)?;
                let target = path::resolve_watch(raw_path, domid)?;
                let perms = Perms::parse(entries.iter().copied())?;
                if let Some(current) = self.special.get_mut(target.path.as_str()) {
                    if !caller.may_set_perms(current) {
                        return Err(XsError::Access);
                    }
                    *current = perms;
                    return Ok(Outcome::ok());
                }
                let path = node_path(target)?;
                self.node_op(caller, tx_id, |s, q| {
                    ops::set_perms(s, caller, q, &path, perms)
                })?;
                Ok(Outcome::ok())
            }
            XsType::Watch => self.watch(caller, payload),
            XsType::Unwatch => self.unwatch(caller, payload),
            XsType::ResetWatches => {
                let conn = self.connection_mut(domid)?;
                conn.watches.clear();
                conn.transactions.clear();
                Ok(Outcome::ok())
            }
            XsType::TransactionStart => {
                if tx_id != 0 {
                    return Err(XsError::Busy);
                }
                let max = self.quotas.max_transactions;
                let conn = self.connection_mut(domid)?;
                if !caller.privileged && conn.transactions.len() >= max {
                    return Err(XsError::NoSpace);
                }
                let id = conn.allocate_tx_id();
                conn.transactions.insert(id, Transaction::default());
                Ok(Outcome::reply(format!("{id}\0").into_bytes()))
            }
            XsType::TransactionEnd => {
                let commit = match wire::one_string(payload)? {
                    b"T" => true,
                    b"F" => false,
                    _ => return Err(XsError::Invalid),
                };
                let tx = self
                    .connection_mut(domid)?
                    .transactions
                    .remove(&tx_id)
                    .ok_or(XsError::NoEntry)?;
                if commit {
                    let events = tx.commit(&mut self.tree)?;
                    self.events.extend(events);
                }
                Ok(Outcome::ok())
            }
            XsType::Introduce => {
                require_privileged(caller)?;
                let fields = wire::strings(payload)?;
                let [raw_domid, raw_mfn, raw_port, ..] = fields.as_slice() else {
                    return Err(XsError::Invalid);
                };
                let target = parse_domid(raw_domid)?;
                let mfn = parse_decimal(raw_mfn)?;
                let port = u32::try_from(parse_decimal(raw_port)?).map_err(|_| XsError::Invalid)?;
                self.introduce(target, RingInfo { mfn, port })?;
                Ok(Outcome::ok())
            }
            XsType::Release => {
                require_privileged(caller)?;
                let target = parse_domid(wire::one_string(payload)?)?;
                self.release(target)?;
                Ok(Outcome::ok())
            }
            XsType::Resume => {
                require_privileged(caller)?;
                let target = parse_domid(wire::one_string(payload)?)?;
                if self.is_introduced(target) {
                    Ok(Outcome::ok())
                } else {
                    Err(XsError::NoEntry)
                }
            }
            XsType::GetDomainPath => {
                let target = parse_domid(wire::one_string(payload)?)?;
                Ok(Outcome::reply(
                    format!("{}\0", path::home(target)).into_bytes(),
                ))
            }
            XsType::IsDomainIntroduced => {
                require_privileged(caller)?;
                let target = parse_domid(wire::one_string(payload)?)?;
                let answer: &[u8] = if self.is_introduced(target) {
                    b"T\0"
                } else {
                    b"F\0"
                };
                Ok(Outcome::reply(Vec::from(answer)))
            }
            XsType::Control => self.control(caller, payload),
            XsType::SetTarget
            | XsType::DirectoryPart
            | XsType::GetFeature
            | XsType::SetFeature
            | XsType::GetQuota
            | XsType::SetQuota => Err(XsError::NotSupported),
            XsType::WatchEvent | XsType::Error | XsType::Invalid => Err(XsError::Invalid),
        }
    }

    fn connection_mut(&mut self, domid: DomId) -> Result<&mut Connection, XsError> {
        self.connections.get_mut(&domid).ok_or(XsError::NoEntry)
    }

    fn watch(&mut self, caller: Caller, payload: &[u8]) -> Result<Outcome, XsError> {
        let fields = wire::strings(payload)?;
        let [raw_path, token, ..] = fields.as_slice() else {
            return Err(XsError::Invalid);
        };
        let Resolved { path, relative } = path::resolve_watch(raw_path, caller.domid)?;
        let max = self.quotas.max_watches;
        let conn = self.connection_mut(caller.domid)?;
        if conn
            .watches
            .iter()
            .any(|w| w.path == path && w.token == *token)
        {
            return Err(XsError::Exists);
        }
        if !caller.privileged && conn.watches.len() >= max {
            return Err(XsError::TooBig);
        }
        let first_fire = wire::watch_event(raw_path, token);
        conn.watches.push(Watch {
            path,
            relative,
            token: Vec::from(*token),
        });
        Ok(Outcome {
            payload: Vec::from(OK),
            first_fire,
        })
    }

    fn unwatch(&mut self, caller: Caller, payload: &[u8]) -> Result<Outcome, XsError> {
        let fields = wire::strings(payload)?;
        let [raw_path, token, ..] = fields.as_slice() else {
            return Err(XsError::Invalid);
        };
        let Resolved { path, .. } = path::resolve_watch(raw_path, caller.domid)?;
        let conn = self.connection_mut(caller.domid)?;
        let index = conn
            .watches
            .iter()
            .position(|w| w.path == path && w.token == *token)
            .ok_or(XsError::NoEntry)?;
        conn.watches.remove(index);
        Ok(Outcome::ok())
    }

    /// `CONTROL` (formerly `DEBUG`), privileged only: `check` verifies the tree's consistency,
    /// `help` lists the commands.
    fn control(&mut self, caller: Caller, payload: &[u8]) -> Result<Outcome, XsError> {
        require_privileged(caller)?;
        let fields = wire::strings(payload)?;
        match fields.first().copied() {
            Some(b"check") if self.tree.check() => Ok(Outcome::ok()),
            Some(b"check") => Err(XsError::Io),
            Some(b"help") => Ok(Outcome::reply(Vec::from(&b"check\nhelp\n\0"[..]))),
            _ => Err(XsError::Invalid),
        }
    }

    fn introduce(&mut self, domid: DomId, ring: RingInfo) -> Result<(), XsError> {
        if domid == 0 || domid >= DOMID_FIRST_RESERVED {
            return Err(XsError::Invalid);
        }
        if let Some(conn) = self.connections.get(&domid) {
            return if conn.ring == Some(ring) {
                Ok(())
            } else {
                Err(XsError::Exists)
            };
        }
        let dom0 = Caller {
            domid: 0,
            privileged: true,
        };
        let home = path::home(domid);
        self.node_op(dom0, 0, |store, quotas| {
            ops::mkdir(store, dom0, quotas, &home)?;
            ops::set_perms(store, dom0, quotas, &home, Perms::new(domid, Access::None))?;
            ops::write(
                store,
                dom0,
                quotas,
                &path::join(&home, "domid"),
                format!("{domid}").as_bytes(),
            )
        })?;
        let caller = Caller {
            domid,
            privileged: false,
        };
        self.connections
            .insert(domid, Connection::new(caller, Some(ring)));
        self.events.push(Event::Special(INTRODUCE_DOMAIN));
        Ok(())
    }

    fn release(&mut self, domid: DomId) -> Result<(), XsError> {
        if !self.is_introduced(domid) {
            return Err(XsError::NoEntry);
        }
        self.connections.remove(&domid);
        self.events.push(Event::Special(RELEASE_DOMAIN));
        Ok(())
    }

    /// Sends the collected events to every matching watch whose owner may see them.
    fn fire_events(&mut self) {
        let events = core::mem::take(&mut self.events);
        for event in &events {
            for conn in self.connections.values_mut() {
                for watch in &conn.watches {
                    let Some(epath) = event_path(event, watch, conn.caller, &self.special) else {
                        continue;
                    };
                    if conn.output.len() >= self.quotas.max_queued {
                        continue;
                    }
                    if let Some(message) = wire::watch_event(epath.as_bytes(), &watch.token) {
                        conn.output.push_back(message);
                    }
                }
            }
        }
    }
}

/// The path a watch reports for an event, if the watch matches it and its owner may read the
/// node: the event's own path when it lies below the watch, the watch's path when a removal
/// took away one of its ancestors (Xen's rule), relative when the watch was.
fn event_path(
    event: &Event,
    watch: &Watch,
    watcher: Caller,
    special: &BTreeMap<&'static str, Perms>,
) -> Option<String> {
    match event {
        Event::Special(name) => {
            let visible = special.get(name).is_some_and(|p| watcher.may_read(p));
            (watch.path == *name && visible).then(|| String::from(*name))
        }
        Event::Node { .. } if watch.path.starts_with('@') => None,
        Event::Node {
            path,
            removed,
            perms,
        } => {
            if !watcher.may_read(perms) {
                return None;
            }
            let epath = if path::is_child(path, &watch.path) {
                path.clone()
            } else if *removed && path::is_child(&watch.path, path) {
                watch.path.clone()
            } else {
                return None;
            };
            Some(if watch.relative {
                path::relative_to_home(&epath, watcher.domid)
            } else {
                epath
            })
        }
    }
}

fn require_privileged(caller: Caller) -> Result<(), XsError> {
    if caller.privileged {
        Ok(())
    } else {
        Err(XsError::Access)
    }
}

/// A special name is only valid where the special table handles it.
fn node_path(target: Resolved) -> Result<String, XsError> {
    if target.path.starts_with('@') {
        Err(XsError::Invalid)
    } else {
        Ok(target.path)
    }
}

/// An unsigned decimal number (at most 20 digits; `INTRODUCE`'s mfn and port).
fn parse_decimal(digits: &[u8]) -> Result<u64, XsError> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(XsError::Invalid);
    }
    digits.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(XsError::Invalid)
    })
}
