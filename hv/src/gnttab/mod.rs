//! Grant tables, Xen's v1 ABI: each domain's table of grant entries (shared with the domain,
//! which writes them), the hypervisor's active entry per grant, and each domain's maptrack of
//! the grants it has mapped. This module owns that state and every reference a grant mapping
//! or copy holds on a granted frame.
//!
//! # The protocol on a granting domain's entry
//!
//! The granting domain writes an entry (`GTF_permit_access`, the grantee's `domid`, the
//! `frame`, optionally `GTF_readonly`). While a grant is in use, hv keeps `GTF_reading` set in
//! the entry, and `GTF_writing` while it is in use for writing; the granter ends access only
//! when neither is set (the guest's side of the protocol: a compare-and-swap of the flags to 0
//! that fails while they are set). The entry is shared memory the granter may change at any
//! moment from another vCPU, so hv touches it only with single atomic accesses
//! ([`SharedEntries`]) and acts on the value its compare-and-swap succeeded against, never on
//! a separate earlier read (Xen's `_set_status_v1`). The first pin of an entry checks the type
//! and `domid` and records the frame in the active entry; later pins by the same domain use
//! the active entry, so a granter rewriting an entry in use changes nothing hv relies on.
//!
//! # What hv enforces where the guest protocol cannot
//!
//! A granter can scribble over its own entry, clearing `GTF_reading` under a mapping. It gains
//! nothing: the mapping holds a general reference (and, if writable, a writable type
//! reference) on the frame, taken through [`FrameRefs`], so the frame stays the granter's,
//! cannot be freed and cannot become a page table while mapped. When a granting domain dies
//! with grants mapped, [`GrantTables::release_domain`] keeps its active entries (the domain
//! stays known, see [`GrantTables::contains`]) and the mapped frames stay allocated; each is
//! freed by [`FrameRefs::free_if_unused`] when its last grant reference goes. When a mapping
//! domain dies, its maptrack is walked and every mapping released.
//!
//! # Split with the arch layer
//!
//! The hypercall layer decodes `GNTTABOP_*`, copies the op structures in and out, answers
//! count and fault errors (`-EINVAL`, `-EFAULT`) and writes each op's [`GrantStatus`]. PTEs are
//! installed and removed by the arch layer's page-table code:
//! [`map_grant_ref`](GrantTables::map_grant_ref) takes the references and records the mapping,
//! then the caller installs the PTE, undoing everything with
//! [`abort_map`](GrantTables::abort_map) if that fails;
//! [`unmap_grant_ref`](GrantTables::unmap_grant_ref) checks and detaches, the caller removes
//! the PTE ([`cancel_unmap`](GrantTables::cancel_unmap) if it cannot) and flushes the mapping
//! domain's TLBs, then [`complete_unmap`](GrantTables::complete_unmap) drops the references.
//! Frames and memory are reached through the traits below, so all of it runs under
//! `cargo test`.

mod copy;
mod map;
mod pv_frames;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use hypercall_abi::errno::Errno;
use hypercall_abi::grant_table::{
    GnttabSetupTable, GrantEntryV1, GrantHandle, GrantRef, GrantStatus, GRANT_ENTRIES_V1_PER_PAGE,
};
use hypercall_abi::xen::{DOMID_FIRST_RESERVED, DOMID_SELF};
use hypercall_abi::DomId;

use crate::mm::Mfn;

pub use map::{GrantMap, GrantUnmap};

/// The only grant-table format hv implements; `set_version` and `get_version` report it.
pub const GRANT_TABLE_VERSION: u32 = 1;

/// Frames a domain's table has from its creation (Xen's `INITIAL_NR_GRANT_FRAMES`), enough
/// for the reserved entries the domain builder writes.
pub const INITIAL_GRANT_FRAMES: u32 = 1;

/// v1 entries per table frame.
const ENTRIES_PER_FRAME: u32 = GRANT_ENTRIES_V1_PER_PAGE as u32;

/// The shared grant entries: v1 entries in the frames of a domain's table, which that domain
/// may write concurrently from any of its vCPUs. The arch layer implements this over its
/// direct map with atomic instructions; tests use a fake that can race the hypervisor.
pub trait SharedEntries {
    /// Reads entry `index` (0..512) of table frame `frame`. The header (flags and domid) must
    /// be read as one 32-bit access; the frame field may be read separately.
    fn read_entry(&self, frame: Mfn, index: usize) -> GrantEntryV1;

    /// Atomically replaces the header (the entry's first 32 bits: flags in the low half,
    /// domid in the high half, as in memory) with `new` if it equals `expected`; returns the
    /// value found (a `lock cmpxchg`, Xen's `guest_cmpxchg` on `grant_combo`).
    fn cmpxchg_header(&mut self, frame: Mfn, index: usize, expected: u32, new: u32) -> u32;

    /// Atomically clears `bits` in the entry's flags (a `lock and` on the 16-bit flags, Xen's
    /// `gnttab_clear_flags`).
    fn clear_flags(&mut self, frame: Mfn, index: usize, bits: u16);
}

/// Guest frame numbers. For a PV domain the frame numbers in grant entries and in
/// `GNTTABOP_copy` are machine frames (Xen's PV p2m is the identity), so the arch layer answers
/// `Some(Mfn(gfn))`; whether the frame is the domain's is checked by [`FrameRefs::take_ref`].
pub trait GuestFrames {
    /// The machine frame `domid`'s frame number `gfn` names, if any.
    fn gfn_to_mfn(&self, domid: DomId, gfn: u64) -> Option<Mfn>;
}

/// A reference or type could not be taken, or a reference hv believed it held was not there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRefused;

/// The frame table, as grant tables use it. Implemented for [`crate::mm::pv::PvMm`], so page
/// types follow the PV discipline: a frame mapped writable through a grant holds a writable
/// type reference and can be no page table or descriptor frame meanwhile.
pub trait FrameRefs {
    /// Takes a general reference on `mfn`, which must be allocated to `owner` (Xen's
    /// `get_page`).
    fn take_ref(&mut self, mfn: Mfn, owner: DomId) -> Result<(), FrameRefused>;
    /// Drops a general reference taken by [`take_ref`](Self::take_ref).
    fn drop_ref(&mut self, mfn: Mfn) -> Result<(), FrameRefused>;
    /// Takes a writable type reference on `mfn` of `owner`, whose general reference the caller
    /// holds (Xen's `get_page_type(PGT_writable_page)`).
    fn take_writable(&mut self, mfn: Mfn, owner: DomId) -> Result<(), FrameRefused>;
    /// Drops a writable type reference taken by [`take_writable`](Self::take_writable).
    fn drop_writable(&mut self, mfn: Mfn) -> Result<(), FrameRefused>;
    /// A zeroed frame owned by `domid` for its grant table (the domain maps it to write its
    /// entries), or `None` if memory is short.
    fn alloc_table_frame(&mut self, domid: DomId) -> Option<Mfn>;
    /// Frees `mfn`, a frame of the dead domain `owner`, if it is still `owner`'s and holds no
    /// reference and no type; returns whether it did.
    fn free_if_unused(&mut self, mfn: Mfn, owner: DomId) -> bool;
}

/// Byte copies between machine frames, for `GNTTABOP_copy`.
pub trait PageCopy {
    /// Copies `len` bytes from offset `src_offset` of `src` to offset `dst_offset` of `dst`.
    /// Both ranges lie within their page (checked by the caller); the frames may be the same
    /// and the ranges may overlap (copy as `memmove`).
    fn copy_bytes(&mut self, dst: Mfn, dst_offset: usize, src: Mfn, src_offset: usize, len: usize);
}

/// Per-domain limits, fixed when the domain is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantConfig {
    /// Most table frames `setup_table` grows the table to (512 entries each).
    pub max_grant_frames: u32,
    /// Most grant mappings the domain may hold at once (its maptrack size).
    pub max_maptrack_entries: u32,
    /// Whether the domain may set up and query other domains' tables (the control domain).
    pub privileged: bool,
}

impl Default for GrantConfig {
    /// 4 frames (2048 entries), 1024 mappings, unprivileged.
    fn default() -> Self {
        GrantConfig {
            max_grant_frames: 4,
            max_maptrack_entries: 1024,
            privileged: false,
        }
    }
}

/// Errors of the whole-hypercall operations; [`GnttabError::errno`] is what the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GnttabError {
    /// `get_version` of a domain that does not exist. `-ESRCH`, as Xen.
    NoSuchDomain,
    /// `get_version` of another domain by an unprivileged caller. `-EPERM`, as Xen's XSM
    /// default.
    NotPermitted,
    /// `set_version` to a version that is neither 1 nor 2. `-EINVAL`, as Xen.
    BadVersion,
    /// `set_version(2)`: v2 is not implemented. `-ENOSYS`, as Xen when v2 is disabled.
    VersionUnsupported,
    /// [`GrantTables::add_domain`] of a domain already known (possibly still held by
    /// others' mappings). `-EEXIST`.
    DomainExists,
    /// [`GrantTables::add_domain`] with a reserved domid or limits below the minimum.
    /// `-EINVAL`.
    BadConfig,
    /// [`GrantTables::add_domain`] could not get the initial table frame. `-ENOMEM`.
    NoMemory,
}

impl GnttabError {
    /// The Xen errno for this error.
    pub fn errno(self) -> Errno {
        match self {
            GnttabError::NoSuchDomain => Errno::ESRCH,
            GnttabError::NotPermitted => Errno::EPERM,
            GnttabError::BadVersion | GnttabError::BadConfig => Errno::EINVAL,
            GnttabError::VersionUnsupported => Errno::ENOSYS,
            GnttabError::DomainExists => Errno::EEXIST,
            GnttabError::NoMemory => Errno::ENOMEM,
        }
    }
}

impl From<GnttabError> for Errno {
    fn from(error: GnttabError) -> Errno {
        error.errno()
    }
}

/// `GNTTABOP_query_size`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSize {
    /// Frames the table has.
    pub nr_frames: u32,
    /// Most frames it may grow to.
    pub max_nr_frames: u32,
}

/// What [`GrantTables::release_domain`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Mappings the domain held that were released.
    pub mappings: usize,
    /// Table frames freed.
    pub table_frames_freed: usize,
    /// Table frames still held (by other domains' grant mappings of them, freed when those
    /// go; or, if the caller did not tear the domain's page tables down first, by its PTEs).
    pub table_frames_held: usize,
    /// The domain's grants still mapped or pinned by other domains; while non-zero the domain
    /// stays known ([`GrantTables::contains`]) and its mapped frames allocated.
    pub grants_still_mapped: usize,
}

/// How many times a domain's entry uses are pinned, by kind (Xen's `GNTPIN_*` fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pins {
    host_ro: u32,
    host_rw: u32,
    dev_ro: u32,
    dev_rw: u32,
}

/// A pin counter at this value refuses further pins (Xen's check of each 8-bit field's top
/// bit, `act->pin & 0x80808080`).
const PIN_LIMIT: u32 = 0x80;

impl Pins {
    fn any(&self) -> bool {
        self.host_ro | self.host_rw | self.dev_ro | self.dev_rw != 0
    }

    fn writers(&self) -> u32 {
        self.host_rw + self.dev_rw
    }

    fn at_limit(&self) -> bool {
        [self.host_ro, self.host_rw, self.dev_ro, self.dev_rw]
            .iter()
            .any(|&n| n >= PIN_LIMIT)
    }

    fn counter(&mut self, part: Part, readonly: bool) -> &mut u32 {
        match (part, readonly) {
            (Part::Host, true) => &mut self.host_ro,
            (Part::Host, false) => &mut self.host_rw,
            (Part::Device, true) => &mut self.dev_ro,
            (Part::Device, false) => &mut self.dev_rw,
        }
    }
}

/// The hypervisor's state of one grant entry (Xen's `active_grant_entry`): who uses it and
/// the frame it was resolved to when first pinned. Meaningful while pinned.
#[derive(Clone, Copy, Debug)]
struct ActiveEntry {
    pins: Pins,
    user: DomId,
    mfn: Mfn,
}

impl ActiveEntry {
    const IDLE: ActiveEntry = ActiveEntry {
        pins: Pins {
            host_ro: 0,
            host_rw: 0,
            dev_ro: 0,
            dev_rw: 0,
        },
        user: 0,
        mfn: Mfn(0),
    };
}

/// One kind of use of a grant: a host (CPU) mapping or a device mapping. A copy pins as a
/// host use while it runs, as Xen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Host,
    Device,
}

/// A set of [`Part`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Parts {
    host: bool,
    device: bool,
}

impl Parts {
    const NONE: Parts = Parts {
        host: false,
        device: false,
    };
    const HOST: Parts = Parts {
        host: true,
        device: false,
    };

    fn is_empty(self) -> bool {
        !self.host && !self.device
    }

    /// Device first, as Xen takes and drops them.
    fn iter(self) -> impl Iterator<Item = Part> {
        [(self.device, Part::Device), (self.host, Part::Host)]
            .into_iter()
            .filter_map(|(set, part)| set.then_some(part))
    }

    fn union(self, other: Parts) -> Parts {
        Parts {
            host: self.host || other.host,
            device: self.device || other.device,
        }
    }

    fn minus(self, other: Parts) -> Parts {
        Parts {
            host: self.host && !other.host,
            device: self.device && !other.device,
        }
    }

    fn contains(self, other: Parts) -> bool {
        other.minus(self).is_empty()
    }
}

/// One mapping in a domain's maptrack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    granter: DomId,
    gref: GrantRef,
    readonly: bool,
    host_addr: u64,
    /// Parts in place.
    live: Parts,
    /// Parts an unmap detached whose references [`GrantTables::complete_unmap`] drops.
    detached: Parts,
}

/// A maptrack slot; its index is the mapping's handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Free,
    Used(Mapping),
}

/// One domain's grant state, as granter and as mapper.
#[derive(Debug)]
struct DomainGrants {
    config: GrantConfig,
    /// The domain is dead; its table frames are given back and only active entries still
    /// pinned by others remain.
    released: bool,
    frames: Vec<Mfn>,
    /// One per entry of `frames`.
    active: Vec<ActiveEntry>,
    maptrack: Vec<Slot>,
    free_handles: Vec<GrantHandle>,
}

impl DomainGrants {
    fn nr_entries(&self) -> u32 {
        // Cannot overflow: the table never grows past max_grant_frames, which add_domain
        // bounds by MAX_FRAMES_LIMIT.
        self.frames.len() as u32 * ENTRIES_PER_FRAME
    }

    /// The table frame and index of entry `gref`, if the table has it and is still shared.
    fn entry_location(&self, gref: GrantRef) -> Option<(Mfn, usize)> {
        let frame = self.frames.get((gref / ENTRIES_PER_FRAME) as usize)?;
        Some((*frame, (gref % ENTRIES_PER_FRAME) as usize))
    }

    fn pinned_entries(&self) -> usize {
        self.active.iter().filter(|a| a.pins.any()).count()
    }

    /// The handle the next mapping gets, if the maptrack has room.
    fn next_handle(&self) -> Option<GrantHandle> {
        match self.free_handles.last() {
            Some(&handle) => Some(handle),
            None => u32::try_from(self.maptrack.len())
                .ok()
                .filter(|&len| len < self.config.max_maptrack_entries),
        }
    }

    fn insert_mapping(&mut self, mapping: Mapping) -> Option<GrantHandle> {
        let handle = self.next_handle()?;
        match self.maptrack.get_mut(handle as usize) {
            Some(slot) => {
                self.free_handles.pop();
                *slot = Slot::Used(mapping);
            }
            None => self.maptrack.push(Slot::Used(mapping)),
        }
        Some(handle)
    }

    fn free_slot(&mut self, handle: GrantHandle) {
        if let Some(slot) = self.maptrack.get_mut(handle as usize) {
            *slot = Slot::Free;
            self.free_handles.push(handle);
        }
    }
}

/// Largest `max_grant_frames` accepted: keeps every entry count within a `u32` grant ref.
const MAX_FRAMES_LIMIT: u32 = u32::MAX / ENTRIES_PER_FRAME;

/// The grant state of every domain. The caller serialises all calls (one lock).
#[derive(Debug, Default)]
pub struct GrantTables {
    domains: BTreeMap<DomId, DomainGrants>,
    /// Count of times hv's own bookkeeping disagreed with the frame table (a reference hv
    /// believed it held was missing). Never the guest's doing; logged as it happens.
    inconsistencies: u64,
}

impl GrantTables {
    /// No domains.
    pub fn new() -> Self {
        GrantTables::default()
    }

    /// Adds domain `domid` with a table of [`INITIAL_GRANT_FRAMES`] zeroed frames (the
    /// domain builder writes the reserved entries into [`table_frames`](Self::table_frames)).
    /// Refused: a reserved domid or `max_grant_frames` below the initial size or
    /// `max_maptrack_entries` of 0 ([`GnttabError::BadConfig`]); a domid still known, even
    /// only as a dead granter whose grants are mapped ([`GnttabError::DomainExists`]); no
    /// memory ([`GnttabError::NoMemory`]).
    pub fn add_domain<E: FrameRefs>(
        &mut self,
        env: &mut E,
        domid: DomId,
        config: GrantConfig,
    ) -> Result<(), GnttabError> {
        if domid >= DOMID_FIRST_RESERVED
            || !(INITIAL_GRANT_FRAMES..=MAX_FRAMES_LIMIT).contains(&config.max_grant_frames)
            || config.max_maptrack_entries == 0
        {
            return Err(GnttabError::BadConfig);
        }
        if self.domains.contains_key(&domid) {
            return Err(GnttabError::DomainExists);
        }
        self.domains.insert(
            domid,
            DomainGrants {
                config,
                released: false,
                frames: Vec::new(),
                active: Vec::new(),
                maptrack: Vec::new(),
                free_handles: Vec::new(),
            },
        );
        if self.grow(env, domid, INITIAL_GRANT_FRAMES) {
            Ok(())
        } else {
            self.domains.remove(&domid);
            Err(GnttabError::NoMemory)
        }
    }

    /// Whether `domid` is known: alive, or dead with grants still mapped by others. A domid
    /// must not be reused while this holds.
    pub fn contains(&self, domid: DomId) -> bool {
        self.domains.contains_key(&domid)
    }

    /// The frames of `domid`'s table, in entry order (empty once the domain is dead).
    pub fn table_frames(&self, domid: DomId) -> &[Mfn] {
        self.domains.get(&domid).map_or(&[], |d| &d.frames)
    }

    /// Times hv found its bookkeeping inconsistent with the frame table (0 unless hv has a
    /// bug): for the debug-key dump and tests.
    pub fn inconsistencies(&self) -> u64 {
        self.inconsistencies
    }

    fn inconsistent(&mut self, what: &str, domid: DomId) {
        self.inconsistencies += 1;
        log::error!("gnttab: {what} (d{domid})");
    }

    /// The live domain's state.
    fn live(&self, domid: DomId) -> Option<&DomainGrants> {
        self.domains.get(&domid).filter(|d| !d.released)
    }

    /// Resolves the `dom` of a table operation on behalf of `caller` (`DOMID_SELF`, itself,
    /// or any domain if privileged): Xen's `rcu_lock_domain_by_any_id` and XSM target check.
    fn target(&self, caller: DomId, dom: DomId) -> Result<DomId, GnttabError> {
        let target = if dom == DOMID_SELF { caller } else { dom };
        self.live(target).ok_or(GnttabError::NoSuchDomain)?;
        let privileged = self.live(caller).is_some_and(|c| c.config.privileged);
        if target == caller || privileged {
            Ok(target)
        } else {
            Err(GnttabError::NotPermitted)
        }
    }

    /// Grows `domid`'s table to `nr_frames` (never shrinks it). All or nothing: frames got
    /// before a failed allocation are given back. Returns whether the table has them.
    fn grow<E: FrameRefs>(&mut self, env: &mut E, domid: DomId, nr_frames: u32) -> bool {
        let Some(d) = self.domains.get_mut(&domid) else {
            return false;
        };
        let have = d.frames.len();
        let want = nr_frames as usize;
        while d.frames.len() < want {
            match env.alloc_table_frame(domid) {
                Some(mfn) => d.frames.push(mfn),
                None => {
                    for mfn in d.frames.drain(have..) {
                        env.free_if_unused(mfn, domid);
                    }
                    return false;
                }
            }
        }
        d.active.resize(
            d.frames.len() * ENTRIES_PER_FRAME as usize,
            ActiveEntry::IDLE,
        );
        true
    }

    /// `GNTTABOP_setup_table` for `caller`: grows the table of `op.dom` to `op.nr_frames`
    /// and returns its first `op.nr_frames` frames, which the caller writes to
    /// `op.frame_list` (a PV guest's frame numbers are machine frames; a failed write is
    /// `GNTST_bad_virt_addr`, as Xen).
    ///
    /// Statuses: no such domain (`bad_domain`); another domain's table without privilege
    /// (`permission_denied`); more than its `max_grant_frames`, or no memory
    /// (`general_error`).
    pub fn setup_table<E: FrameRefs>(
        &mut self,
        env: &mut E,
        caller: DomId,
        op: &GnttabSetupTable,
    ) -> Result<&[Mfn], GrantStatus> {
        let target = self.target(caller, op.dom).map_err(table_status)?;
        let max = self.live(target).map_or(0, |d| d.config.max_grant_frames);
        if op.nr_frames > max || !self.grow(env, target, op.nr_frames) {
            return Err(GrantStatus::GeneralError);
        }
        let frames = self.table_frames(target);
        frames
            .get(..op.nr_frames as usize)
            .ok_or(GrantStatus::GeneralError)
    }

    /// `GNTTABOP_query_size` for `caller` of domain `dom`. Statuses as
    /// [`setup_table`](Self::setup_table)'s lookup.
    pub fn query_size(&self, caller: DomId, dom: DomId) -> Result<TableSize, GrantStatus> {
        let target = self.target(caller, dom).map_err(table_status)?;
        let d = self.live(target).ok_or(GrantStatus::BadDomain)?;
        Ok(TableSize {
            nr_frames: d.frames.len() as u32,
            max_nr_frames: d.config.max_grant_frames,
        })
    }

    /// `GNTTABOP_set_version`: 1 is accepted (it is in force), 2 is
    /// [`GnttabError::VersionUnsupported`], anything else [`GnttabError::BadVersion`]. In
    /// every case the caller writes [`GRANT_TABLE_VERSION`] back to `op.version`, as Xen.
    pub fn set_version(requested: u32) -> Result<(), GnttabError> {
        match requested {
            GRANT_TABLE_VERSION => Ok(()),
            2 => Err(GnttabError::VersionUnsupported),
            _ => Err(GnttabError::BadVersion),
        }
    }

    /// `GNTTABOP_get_version` for `caller` of domain `dom`: [`GRANT_TABLE_VERSION`].
    /// Refused: no such domain ([`GnttabError::NoSuchDomain`]), another domain without
    /// privilege ([`GnttabError::NotPermitted`]).
    pub fn get_version(&self, caller: DomId, dom: DomId) -> Result<u32, GnttabError> {
        self.target(caller, dom).map(|_| GRANT_TABLE_VERSION)
    }

    /// Releases everything of dead domain `domid`, in both roles. Call it with the domain's
    /// vCPUs stopped, after its page tables are torn down (`PvMm::relinquish`, which must
    /// leave grant PTEs' references to this module), and before freeing its memory.
    ///
    /// - As mapper: every mapping in its maptrack is released (references dropped, the
    ///   granters' pins and status bits updated), as Xen's `gnttab_release_mappings`.
    /// - As granter: its table frames are freed (or left to be freed when grant mappings of
    ///   them go); its active entries still pinned by other domains are kept, with their
    ///   frames' references, until those domains unmap or die; each such frame is freed
    ///   through [`FrameRefs::free_if_unused`] when its last grant reference goes. The caller
    ///   frees the domain's other frames that are still its own and unused.
    ///
    /// Returns `None` if the domain is unknown or already released.
    pub fn release_domain<E: SharedEntries + FrameRefs>(
        &mut self,
        env: &mut E,
        domid: DomId,
    ) -> Option<Released> {
        let d = self.live(domid)?;
        let mappings: Vec<Mapping> = d
            .maptrack
            .iter()
            .filter_map(|slot| match slot {
                Slot::Used(m) => Some(*m),
                Slot::Free => None,
            })
            .collect();
        let mut released = Released {
            mappings: mappings.len(),
            ..Released::default()
        };
        for m in mappings {
            self.release_pins(env, m.granter, m.gref, m.live.union(m.detached), m.readonly);
        }
        let d = self.domains.get_mut(&domid)?;
        d.released = true;
        d.maptrack = Vec::new();
        d.free_handles = Vec::new();
        let frames = core::mem::take(&mut d.frames);
        released.grants_still_mapped = d.pinned_entries();
        if released.grants_still_mapped == 0 {
            self.domains.remove(&domid);
        }
        for mfn in frames {
            if env.free_if_unused(mfn, domid) {
                released.table_frames_freed += 1;
            } else {
                released.table_frames_held += 1;
            }
        }
        log::info!(
            "gnttab: d{domid} released: {} mappings, {} grants still mapped by others",
            released.mappings,
            released.grants_still_mapped
        );
        Some(released)
    }
}

/// The status a table operation's domain lookup answers.
fn table_status(error: GnttabError) -> GrantStatus {
    match error {
        GnttabError::NotPermitted => GrantStatus::PermissionDenied,
        _ => GrantStatus::BadDomain,
    }
}

/// The header of an entry as one 32-bit value (flags low, domid high, as in memory).
fn header(flags: u16, domid: DomId) -> u32 {
    u32::from(flags) | (u32::from(domid) << 16)
}

/// A header's flags and domid.
fn split_header(raw: u32) -> (u16, DomId) {
    // Truncations intended: the two 16-bit halves.
    (raw as u16, (raw >> 16) as u16)
}
