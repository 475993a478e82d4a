//! Property tests: random grant, end-access, map, unmap, copy and domain-death sequences
//! among three domains, checked step by step against a model of the mappings. Each op's
//! status is predicted by the model; after every step the pins, the shared entries' status
//! bits, every frame's counts and owner, and every maptrack must agree with it; at the end,
//! with all domains dead, every frame is back in the allocator.

use std::collections::BTreeMap;
use std::vec::Vec;

use hypercall_abi::grant_table::{
    GnttabCopy, GnttabCopyPtr, GrantHandle, GrantRef, GrantStatus, GNTCOPY_DEST_GREF,
    GNTCOPY_SOURCE_GREF, GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GTF_PERMIT_ACCESS,
    GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_TYPE_MASK, GTF_WRITING,
};
use hypercall_abi::xen::DOMID_SELF;
use hypercall_abi::{DomId, PAGE_SIZE};
use proptest::prelude::*;

use super::fake::{World, DATA_FRAMES, HOST_VA};
use super::{Mfn, Pins, Slot, ENTRIES_PER_FRAME};
use crate::mm::{Owner, PageType};

const DOMS: [DomId; 3] = [1, 2, 3];
/// Entries the sequences use (plus one beyond the table).
const GREFS: u32 = 4;
const BEYOND: GrantRef = 600;

#[derive(Clone, Copy, Debug)]
enum End {
    /// Grant `gref` of domain `d` (named `DOMID_SELF` when it is the caller and `self_id`).
    Gref {
        d: usize,
        gref: GrantRef,
        self_id: bool,
    },
    /// Data frame `frame` of the caller.
    Own { frame: usize },
}

#[derive(Clone, Copy, Debug)]
enum Action {
    /// Domain `g` writes entry `gref` for `grantee` (keeping hv's status bits, as a guest
    /// rewriting an entry in use would). `frame` 0..4 is its own data frame, 4 another
    /// domain's.
    Grant {
        g: usize,
        gref: GrantRef,
        grantee: usize,
        frame: usize,
        readonly: bool,
        sub_page: bool,
    },
    EndAccess {
        g: usize,
        gref: GrantRef,
    },
    Map {
        m: usize,
        g: usize,
        gref: GrantRef,
        readonly: bool,
        device: bool,
    },
    Unmap {
        m: usize,
        pick: usize,
        host: bool,
        device: bool,
        wrong_addr: bool,
    },
    Copy {
        c: usize,
        src: End,
        dst: End,
        src_offset: u16,
        dst_offset: u16,
        len: u16,
    },
    Die {
        d: usize,
    },
}

fn gref() -> impl Strategy<Value = GrantRef> {
    prop_oneof![6 => 0..GREFS, 1 => Just(BEYOND)]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        (0..3usize, gref(), any::<bool>()).prop_map(|(d, gref, self_id)| End::Gref {
            d,
            gref,
            self_id
        }),
        (0..DATA_FRAMES).prop_map(|frame| End::Own { frame }),
    ]
}

fn offset() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0u16), 0..4096u16, 4000..4096u16]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0..3usize, 0..GREFS, 0..3usize, 0..=DATA_FRAMES, any::<bool>(), prop::bool::weighted(0.05))
            .prop_map(|(g, gref, grantee, frame, readonly, sub_page)| Action::Grant {
                g, gref, grantee, frame, readonly, sub_page
            }),
        1 => (0..3usize, 0..GREFS).prop_map(|(g, gref)| Action::EndAccess { g, gref }),
        5 => (0..3usize, 0..3usize, gref(), any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(m, g, gref, readonly, device)| Action::Map { m, g, gref, readonly, device }),
        4 => (0..3usize, any::<usize>(), prop::bool::weighted(0.8), any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(m, pick, host, device, wrong_addr)| Action::Unmap { m, pick, host, device, wrong_addr }),
        3 => (0..3usize, end(), end(), offset(), offset(), prop_oneof![0..=64u16, 0..=4096u16])
            .prop_map(|(c, src, dst, src_offset, dst_offset, len)| Action::Copy {
                c, src, dst, src_offset, dst_offset, len
            }),
        1 => (0..3usize).prop_map(|d| Action::Die { d }),
    ]
}

/// A mapping as the model knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ModelMapping {
    granter: DomId,
    gref: GrantRef,
    readonly: bool,
    host: bool,
    device: bool,
    mfn: Mfn,
}

struct Model {
    w: World,
    alive: [bool; 3],
    maps: BTreeMap<(DomId, GrantHandle), ModelMapping>,
}

impl Model {
    fn new() -> Model {
        Model {
            w: World::new(&DOMS),
            alive: [true; 3],
            maps: BTreeMap::new(),
        }
    }

    fn alive(&self, d: DomId) -> bool {
        DOMS.iter()
            .position(|&x| x == d)
            .is_some_and(|i| self.alive[i])
    }

    /// The pins the model expects on an entry, and who holds them.
    fn pins(&self, g: DomId, gref: GrantRef) -> (Pins, Option<DomId>, Option<Mfn>) {
        let mut pins = Pins::default();
        let (mut user, mut mfn) = (None, None);
        for (&(m, _), map) in &self.maps {
            if map.granter == g && map.gref == gref {
                let ro = map.readonly;
                pins.host_ro += u32::from(map.host && ro);
                pins.host_rw += u32::from(map.host && !ro);
                pins.dev_ro += u32::from(map.device && ro);
                pins.dev_rw += u32::from(map.device && !ro);
                user = Some(m);
                mfn = Some(map.mfn);
            }
        }
        (pins, user, mfn)
    }

    /// What pinning `gref` of `g` for `user` answers (map or copy), given `extra` pins held
    /// by an earlier end of the same copy. Returns the frame on success.
    fn predict_pin(
        &self,
        user: DomId,
        g: DomId,
        gref: GrantRef,
        readonly: bool,
        for_map: bool,
        extra: Option<(Mfn, bool)>,
    ) -> Result<Mfn, GrantStatus> {
        if !self.alive(g) {
            return Err(GrantStatus::BadDomain);
        }
        if gref >= ENTRIES_PER_FRAME {
            return Err(GrantStatus::BadGntref);
        }
        let (mut pins, mut holder, mut mfn) = self.pins(g, gref);
        if let Some((extra_mfn, extra_ro)) = extra {
            *pins.counter(super::Part::Host, extra_ro) += 1;
            holder = Some(user);
            mfn = Some(extra_mfn);
        }
        let entry = self.w.entry(g, gref);
        if let (Some(holder), Some(mfn)) = (holder, mfn) {
            if holder != user {
                return Err(GrantStatus::GeneralError);
            }
            if !readonly && pins.writers() == 0 && entry.flags & GTF_READONLY != 0 {
                return Err(GrantStatus::GeneralError);
            }
            return Ok(mfn);
        }
        let mask = GTF_TYPE_MASK | if for_map { GTF_SUB_PAGE } else { 0 };
        if entry.flags & mask != GTF_PERMIT_ACCESS || entry.domid != user {
            return Err(GrantStatus::GeneralError);
        }
        if !readonly && entry.flags & GTF_READONLY != 0 {
            return Err(GrantStatus::GeneralError);
        }
        let mfn = Mfn(u64::from(entry.frame));
        if self.w.host.info(mfn).owner() != Owner::Domain(g) {
            return Err(GrantStatus::BadPage);
        }
        Ok(mfn)
    }

    fn step(&mut self, action: Action) {
        match action {
            Action::Grant {
                g,
                gref,
                grantee,
                frame,
                readonly,
                sub_page,
            } => {
                if !self.alive[g] {
                    return;
                }
                let mfn = match frame {
                    f if f < DATA_FRAMES => self.w.frame(DOMS[g], f),
                    _ => self.w.frame(DOMS[(g + 1) % 3], 0),
                };
                let in_use = self.w.entry(DOMS[g], gref).flags & (GTF_READING | GTF_WRITING);
                let mut flags = GTF_PERMIT_ACCESS | in_use;
                if readonly {
                    flags |= GTF_READONLY;
                }
                if sub_page {
                    flags |= GTF_SUB_PAGE;
                }
                self.w.grant(DOMS[g], gref, DOMS[grantee], mfn, flags);
            }
            Action::EndAccess { g, gref } => {
                if !self.alive[g] {
                    return;
                }
                let (pins, ..) = self.pins(DOMS[g], gref);
                let ended = self.w.end_access(DOMS[g], gref);
                assert_eq!(ended, !pins.any(), "end access of d{} ref {gref}", DOMS[g]);
            }
            Action::Map {
                m,
                g,
                gref,
                readonly,
                device,
            } => {
                let (m, g) = (DOMS[m], DOMS[g]);
                if !self.alive(m) {
                    return;
                }
                let flags = GNTMAP_HOST_MAP
                    | if readonly { GNTMAP_READONLY } else { 0 }
                    | if device { GNTMAP_DEVICE_MAP } else { 0 };
                let want = self.predict_pin(m, g, gref, readonly, true, None);
                let got = self.w.map(m, g, gref, flags);
                assert_eq!(
                    got.map(|map| map.mfn()),
                    want,
                    "map d{m} <- d{g} ref {gref}"
                );
                if let Ok(map) = got {
                    let mapping = ModelMapping {
                        granter: g,
                        gref,
                        readonly,
                        host: true,
                        device,
                        mfn: map.mfn(),
                    };
                    assert!(self.maps.insert((m, map.handle()), mapping).is_none());
                }
            }
            Action::Unmap {
                m,
                pick,
                host,
                device,
                wrong_addr,
            } => {
                let m = DOMS[m];
                if !self.alive(m) {
                    return;
                }
                let mine: Vec<(GrantHandle, ModelMapping)> = self
                    .maps
                    .iter()
                    .filter(|((d, _), _)| *d == m)
                    .map(|((_, h), map)| (*h, *map))
                    .collect();
                let Some(&(handle, map)) = mine.get(pick % mine.len().max(1)) else {
                    assert_eq!(self.w.unmap(m, 77, HOST_VA, 0), GrantStatus::BadHandle);
                    return;
                };
                let host_addr = match (host, wrong_addr) {
                    (false, _) => 0,
                    (true, false) => HOST_VA,
                    (true, true) => HOST_VA + 0x1000,
                };
                let dev = if device { map.mfn.paddr() } else { 0 };
                let got = self.w.unmap(m, handle, host_addr, dev);
                if host && wrong_addr && map.host {
                    assert_eq!(got, GrantStatus::GeneralError);
                    return;
                }
                assert_eq!(got, GrantStatus::Okay);
                let mut left = map;
                left.host &= !host;
                left.device &= !device;
                if left.host || left.device {
                    self.maps.insert((m, handle), left);
                } else {
                    self.maps.remove(&(m, handle));
                }
            }
            Action::Copy {
                c,
                src,
                dst,
                src_offset,
                dst_offset,
                len,
            } => self.copy(DOMS[c], src, dst, src_offset, dst_offset, len),
            Action::Die { d } => {
                if !self.alive[d] {
                    return;
                }
                self.w.kill(DOMS[d]);
                self.alive[d] = false;
                self.maps.retain(|&(m, _), _| m != DOMS[d]);
            }
        }
    }

    fn copy(&mut self, c: DomId, src: End, dst: End, src_offset: u16, dst_offset: u16, len: u16) {
        if !self.alive(c) {
            return;
        }
        let ptr = |end: End, offset: u16| match end {
            End::Gref { d, gref, self_id } => {
                let dom = if self_id && DOMS[d] == c {
                    DOMID_SELF
                } else {
                    DOMS[d]
                };
                GnttabCopyPtr::from_gref(dom, gref, offset)
            }
            End::Own { frame } => {
                GnttabCopyPtr::from_gmfn(DOMID_SELF, self.w.frame(c, frame).0, offset)
            }
        };
        let is_gref = |end: End| matches!(end, End::Gref { .. });
        let op = GnttabCopy {
            source: ptr(src, src_offset),
            dest: ptr(dst, dst_offset),
            len,
            flags: if is_gref(src) { GNTCOPY_SOURCE_GREF } else { 0 }
                | if is_gref(dst) { GNTCOPY_DEST_GREF } else { 0 },
            ..Default::default()
        };
        let want = self.predict_copy(c, src, dst, src_offset, dst_offset, len);
        let before = want.map(|(s, _)| self.w.host.mem.bytes(s, src_offset.into(), len.into()));
        let got = self.w.gt.copy(&mut self.w.host, c, &op);
        assert_eq!(
            got,
            want.map_or_else(|e| e, |_| GrantStatus::Okay),
            "{op:?}"
        );
        if let (Ok((_, d)), Ok(bytes)) = (want, before) {
            assert_eq!(
                self.w.host.mem.bytes(d, dst_offset.into(), len.into()),
                bytes
            );
        }
    }

    fn predict_copy(
        &self,
        c: DomId,
        src: End,
        dst: End,
        src_offset: u16,
        dst_offset: u16,
        len: u16,
    ) -> Result<(Mfn, Mfn), GrantStatus> {
        for end in [src, dst] {
            if let End::Gref { d, .. } = end {
                if !self.alive[d] {
                    return Err(GrantStatus::BadDomain);
                }
            }
        }
        let s = match src {
            End::Gref { d, gref, .. } => self.predict_pin(c, DOMS[d], gref, true, false, None)?,
            End::Own { frame } => self.w.frame(c, frame),
        };
        let d = match (dst, src) {
            (
                End::Gref { d, gref, .. },
                End::Gref {
                    d: sd, gref: sg, ..
                },
            ) if (d, gref) == (sd, sg) => {
                self.predict_pin(c, DOMS[d], gref, false, false, Some((s, true)))?
            }
            (End::Gref { d, gref, .. }, _) => {
                self.predict_pin(c, DOMS[d], gref, false, false, None)?
            }
            (End::Own { frame }, _) => self.w.frame(c, frame),
        };
        if usize::from(src_offset) + usize::from(len) > PAGE_SIZE
            || usize::from(dst_offset) + usize::from(len) > PAGE_SIZE
        {
            return Err(GrantStatus::BadCopyArg);
        }
        Ok((s, d))
    }

    /// Every invariant between hv's state, the frame table, the shared entries and the model.
    fn check(&self) {
        let w = &self.w;
        assert_eq!(w.gt.inconsistencies(), 0);
        for &g in &DOMS {
            // A dead domain is known exactly while others still map its grants.
            let mapped = self.maps.values().any(|m| m.granter == g);
            assert_eq!(w.gt.contains(g), self.alive(g) || mapped, "d{g} known");
            // Pins match the maptrack; status bits are set exactly while pinned.
            if let Some(dg) = w.gt.domains.get(&g) {
                for gref in 0..GREFS {
                    let (pins, ..) = self.pins(g, gref);
                    assert_eq!(
                        dg.active[gref as usize].pins, pins,
                        "pins of d{g} ref {gref}"
                    );
                    if self.alive(g) {
                        let bits = w.entry(g, gref).flags & (GTF_READING | GTF_WRITING);
                        let want = if pins.any() { GTF_READING } else { 0 }
                            | if pins.writers() > 0 { GTF_WRITING } else { 0 };
                        assert_eq!(bits, want, "status bits of d{g} ref {gref}");
                    }
                }
            }
            // The maptrack is the model's.
            let live: BTreeMap<GrantHandle, (DomId, GrantRef, bool, bool, bool)> =
                w.gt.domains
                    .get(&g)
                    .filter(|d| !d.released)
                    .map(|d| {
                        d.maptrack
                            .iter()
                            .enumerate()
                            .filter_map(|(h, slot)| match slot {
                                Slot::Used(m) => {
                                    assert!(m.detached.is_empty());
                                    Some((
                                        h as GrantHandle,
                                        (m.granter, m.gref, m.readonly, m.live.host, m.live.device),
                                    ))
                                }
                                Slot::Free => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
            let model: BTreeMap<GrantHandle, (DomId, GrantRef, bool, bool, bool)> = self
                .maps
                .iter()
                .filter(|((m, _), _)| *m == g)
                .map(|((_, h), m)| (*h, (m.granter, m.gref, m.readonly, m.host, m.device)))
                .collect();
            assert_eq!(live, model, "maptrack of d{g}");
            // Every frame's counts are the mappings' references; none is freed while mapped,
            // and a dead domain's frames are free once nothing maps them.
            for &mfn in &w.data[&g] {
                let (mut refs, mut types) = (0, 0);
                for m in self.maps.values().filter(|m| m.mfn == mfn) {
                    let parts = u32::from(m.host) + u32::from(m.device);
                    refs += parts;
                    if !m.readonly {
                        types += parts;
                    }
                }
                let page = w.host.info(mfn);
                let ty = if types > 0 {
                    PageType::Writable
                } else {
                    PageType::None
                };
                assert_eq!(
                    (page.ref_count(), page.type_count(), page.page_type()),
                    (refs, types, ty),
                    "counts of {mfn:?}"
                );
                let owner = if self.alive(g) || refs > 0 {
                    Owner::Domain(g)
                } else {
                    Owner::Free
                };
                assert_eq!(page.owner(), owner, "owner of {mfn:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn grant_sequences_keep_hv_the_frames_and_the_model_in_agreement(
        actions in prop::collection::vec(action(), 1..80)
    ) {
        let mut model = Model::new();
        for action in actions {
            model.step(action);
            model.check();
        }
        for d in 0..3 {
            model.step(Action::Die { d });
            model.check();
        }
        prop_assert!(model.w.gt.domains.is_empty());
        prop_assert_eq!(model.w.host.alloc.free_frames(), model.w.free_at_start);
    }
}
