//! Pinning grant entries (shared by mappings and copies), `GNTTABOP_map_grant_ref` and
//! `GNTTABOP_unmap_grant_ref`.

use hypercall_abi::grant_table::{
    GnttabMapGrantRef, GnttabUnmapGrantRef, GrantHandle, GrantRef, GrantStatus,
    GNTMAP_CONTAINS_PTE, GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GTF_PERMIT_ACCESS,
    GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_TYPE_MASK, GTF_WRITING,
};
use hypercall_abi::DomId;

use super::{
    header, split_header, DomainGrants, FrameRefs, GrantTables, GuestFrames, Mapping, Parts, Pins,
    SharedEntries, Slot,
};
use crate::mm::Mfn;

/// Compare-and-swap attempts on a shared entry before the guest is deemed to be racing hv on
/// purpose (Xen's bound of five in `_set_status_v1`).
const SET_STATUS_TRIES: usize = 5;

/// A mapping [`GrantTables::map_grant_ref`] made: its references are held and it is in the
/// maptrack. The caller installs the PTE if [`host_addr`](Self::host_addr) says so, then
/// writes `handle` and `dev_bus_addr` to the op with `GNTST_okay`; if the PTE cannot be
/// installed it calls [`GrantTables::abort_map`] instead and answers `GNTST_general_error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "install the PTE or abort the mapping"]
pub struct GrantMap {
    handle: GrantHandle,
    mfn: Mfn,
    host_addr: Option<u64>,
    readonly: bool,
}

impl GrantMap {
    /// The handle for the op's `handle` field.
    pub fn handle(&self) -> GrantHandle {
        self.handle
    }

    /// The granted frame.
    pub fn mfn(&self) -> Mfn {
        self.mfn
    }

    /// The op's `dev_bus_addr`: the frame's machine address (no IOMMU, so bus addresses are
    /// machine addresses).
    pub fn dev_bus_addr(&self) -> u64 {
        self.mfn.paddr()
    }

    /// For a host mapping, the guest virtual address whose L1 entry must map
    /// [`mfn`](Self::mfn) (present, user, writable unless [`readonly`](Self::readonly), marked
    /// as a grant PTE so the page-table code leaves its references to this module).
    pub fn host_addr(&self) -> Option<u64> {
        self.host_addr
    }

    /// Whether the mapping is read-only.
    pub fn readonly(&self) -> bool {
        self.readonly
    }
}

/// An unmap [`GrantTables::unmap_grant_ref`] accepted: the parts it names are detached from
/// the mapping (a second unmap of them is refused) but their references are still held. The
/// caller removes the PTE if [`host_mapping`](Self::host_mapping) says so; if it cannot, it
/// calls [`GrantTables::cancel_unmap`] and answers `GNTST_general_error`. Otherwise, once the
/// mapping domain's TLBs are flushed (once per batch), it calls
/// [`GrantTables::complete_unmap`], and answers `GNTST_okay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "complete or cancel the unmap"]
pub struct GrantUnmap {
    handle: GrantHandle,
    granter: DomId,
    gref: GrantRef,
    mfn: Mfn,
    readonly: bool,
    parts: Parts,
    host_addr: u64,
}

impl GrantUnmap {
    /// If the host mapping is being removed: the virtual address whose L1 entry must be
    /// cleared, and the frame it must map (anything else there refuses the unmap).
    pub fn host_mapping(&self) -> Option<(u64, Mfn)> {
        self.parts.host.then_some((self.host_addr, self.mfn))
    }

    /// Whether the mapping is read-only: the L1 entry removed must be read-only too, or a
    /// writable entry could outlive the writable mapping that holds its frame's type.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// Whether anything is being unmapped (an op naming neither a host address nor a device
    /// address removes nothing and succeeds, as in Xen).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// How [`GrantTables::pin`] uses an entry.
#[derive(Clone, Copy, Debug)]
pub(super) struct Usage {
    /// The uses (a copy is one host use).
    pub parts: Parts,
    /// Reading only.
    pub readonly: bool,
    /// A mapping (sub-page grants refused, `general_error` when a pinned frame cannot be
    /// referenced) rather than a copy (`bad_domain` then, as Xen).
    pub for_map: bool,
}

/// Xen's `_set_status_v1`: sets `GTF_reading` (and `GTF_writing` unless `readonly`) in the
/// entry with a compare-and-swap. When `first` (the entry is not pinned yet) the entry must
/// be a permit-access grant to `user` (not sub-page, for mappings); a write use needs it not
/// `GTF_readonly`. Every check is made on the value the swap is attempted against, so a guest
/// changing the entry meanwhile makes the swap fail and the checks run again on what it
/// wrote; after [`SET_STATUS_TRIES`] failed swaps the guest is refused.
fn set_status<E: SharedEntries>(
    env: &mut E,
    (frame, index): (Mfn, usize),
    first: bool,
    readonly: bool,
    user: DomId,
    for_map: bool,
) -> Result<(), GrantStatus> {
    let type_mask = GTF_TYPE_MASK | if for_map { GTF_SUB_PAGE } else { 0 };
    let entry = env.read_entry(frame, index);
    let mut seen = header(entry.flags, entry.domid);
    for _ in 0..SET_STATUS_TRIES {
        let (flags, domid) = split_header(seen);
        if first && (flags & type_mask != GTF_PERMIT_ACCESS || domid != user) {
            return Err(GrantStatus::GeneralError);
        }
        if !readonly && flags & GTF_READONLY != 0 {
            return Err(GrantStatus::GeneralError);
        }
        let set = GTF_READING | if readonly { 0 } else { GTF_WRITING };
        let found = env.cmpxchg_header(frame, index, seen, header(flags | set, domid));
        if found == seen {
            return Ok(());
        }
        seen = found;
    }
    log::warn!("gnttab: d{user}: shared grant entry is unstable");
    Err(GrantStatus::GeneralError)
}

/// The status bits to clear after a use ends or fails, given the pins left (Xen's
/// `reduce_status_for_pin`).
fn bits_to_clear(pins: &Pins, readonly: bool) -> u16 {
    let mut bits = 0;
    if !readonly && pins.writers() == 0 {
        bits |= GTF_WRITING;
    }
    if !pins.any() {
        bits |= GTF_READING;
    }
    bits
}

impl GrantTables {
    /// Pins entry `gref` of `granter` for `user`'s uses `usage.parts` and takes the frame's
    /// references: one general reference per part, plus one writable type reference per part
    /// unless `readonly` (Xen's `map_grant_ref` and `acquire_grant_for_copy` with
    /// `gnttab_copy_claim_buf`). On failure nothing is left taken or pinned, and status bits
    /// this call set are cleared. Returns the frame.
    pub(super) fn pin<E: SharedEntries + GuestFrames + FrameRefs>(
        &mut self,
        env: &mut E,
        user: DomId,
        granter: DomId,
        gref: GrantRef,
        usage: Usage,
    ) -> Result<Mfn, GrantStatus> {
        let Usage {
            parts,
            readonly,
            for_map,
        } = usage;
        let d = self
            .domains
            .get_mut(&granter)
            .filter(|d| !d.released)
            .ok_or(GrantStatus::BadDomain)?;
        if gref >= d.nr_entries() {
            return Err(GrantStatus::BadGntref);
        }
        let location = d.entry_location(gref).ok_or(GrantStatus::BadGntref)?;
        let act = d
            .active
            .get_mut(gref as usize)
            .ok_or(GrantStatus::BadGntref)?;
        let first = !act.pins.any();
        if !first && (act.user != user || act.pins.at_limit()) {
            return Err(GrantStatus::GeneralError);
        }
        if first || (!readonly && act.pins.writers() == 0) {
            set_status(env, location, first, readonly, user, for_map)?;
        }
        let clear = bits_to_clear(&act.pins, readonly);
        let (frame, index) = location;
        // The first reference: on a first pin it resolves the frame the entry names now (Xen's
        // get_paged_frame), otherwise the one recorded at the first pin.
        let first_ref = if first {
            let gfn = u64::from(env.read_entry(frame, index).frame);
            env.gfn_to_mfn(granter, gfn)
                .filter(|&mfn| env.take_ref(mfn, granter).is_ok())
                .ok_or(GrantStatus::BadPage)
        } else if env.take_ref(act.mfn, granter).is_ok() {
            Ok(act.mfn)
        } else {
            Err(if for_map {
                GrantStatus::GeneralError
            } else {
                GrantStatus::BadDomain
            })
        };
        let mfn = match first_ref {
            Ok(mfn) => mfn,
            Err(status) => {
                if clear != 0 {
                    env.clear_flags(frame, index, clear);
                }
                return Err(status);
            }
        };
        let (mut refs, mut writables) = (1, 0);
        let mut taken = Ok(());
        for (i, _) in parts.iter().enumerate() {
            if i > 0 {
                taken = env.take_ref(mfn, granter);
                if taken.is_err() {
                    break;
                }
                refs += 1;
            }
            if !readonly {
                taken = env.take_writable(mfn, granter);
                if taken.is_err() {
                    break;
                }
                writables += 1;
            }
        }
        if taken.is_err() {
            // Xen's could_not_pin: the frame holds another type (a page table, a descriptor
            // frame) or a count is at its maximum.
            for _ in 0..writables {
                let _ = env.drop_writable(mfn);
            }
            for _ in 0..refs {
                let _ = env.drop_ref(mfn);
            }
            if clear != 0 {
                env.clear_flags(frame, index, clear);
            }
            return Err(GrantStatus::GeneralError);
        }
        for part in parts.iter() {
            *act.pins.counter(part, readonly) += 1;
        }
        if first {
            act.user = user;
            act.mfn = mfn;
        }
        Ok(mfn)
    }

    /// Ends uses `parts` of entry `gref` of `granter` that [`pin`](Self::pin) made: drops
    /// the pins and the frame's references, and clears the status bits no remaining use needs
    /// (Xen's `unmap_common_complete` and `release_grant_for_copy`). For a dead granter the
    /// frame is freed once unused, and the granter forgotten once nothing is pinned.
    pub(super) fn release_pins<E: SharedEntries + FrameRefs>(
        &mut self,
        env: &mut E,
        granter: DomId,
        gref: GrantRef,
        parts: Parts,
        readonly: bool,
    ) {
        let Some(d) = self.domains.get_mut(&granter) else {
            return self.inconsistent("release of a grant of an unknown domain", granter);
        };
        let location = d.entry_location(gref);
        let released = d.released;
        let Some(act) = d.active.get_mut(gref as usize) else {
            return self.inconsistent("release of a grant beyond the table", granter);
        };
        let mfn = act.mfn;
        let mut underflow = false;
        let mut dropped = Ok(());
        for part in parts.iter() {
            let pins = act.pins.counter(part, readonly);
            match pins.checked_sub(1) {
                Some(left) => *pins = left,
                None => underflow = true,
            }
            if !readonly {
                dropped = dropped.and(env.drop_writable(mfn));
            }
            dropped = dropped.and(env.drop_ref(mfn));
        }
        let clear = bits_to_clear(&act.pins, readonly);
        if !released {
            if let Some((frame, index)) = location.filter(|_| clear != 0) {
                env.clear_flags(frame, index, clear);
            }
        } else {
            env.free_if_unused(mfn, granter);
            if d.pinned_entries() == 0 {
                self.domains.remove(&granter);
                log::info!("gnttab: d{granter}: last grant of the dead domain released");
            }
        }
        if underflow {
            self.inconsistent("grant pin count underflow", granter);
        }
        if dropped.is_err() {
            self.inconsistent("grant frame reference missing", granter);
        }
    }

    /// `GNTTABOP_map_grant_ref` of one op for `caller`: pins `op.ref_` of `op.dom` (which
    /// must grant it to `caller`), takes the frame's references (general, and writable type
    /// for a writable map, per part) and records the mapping in `caller`'s maptrack.
    ///
    /// Statuses, in Xen's order of checks: neither `GNTMAP_host_map` nor `GNTMAP_device_map`
    /// (`bad_gntref`, as Xen); `GNTMAP_contains_pte`, which hv does not implement
    /// (`general_error`); `op.dom` unknown or dead (`bad_domain`; `DOMID_SELF` is not
    /// accepted here, as in Xen); maptrack full (`no_space`); ref beyond the table
    /// (`bad_gntref`); entry pinned by another domain or pin counter at its limit, entry not
    /// a permit-access grant to `caller` (or a sub-page one), a writable map of a read-only
    /// grant, an entry the guest keeps changing (`general_error`); the entry's frame not the
    /// granter's (`bad_page`); the frame cannot take the writable type or a count is at its
    /// maximum (`general_error`).
    pub fn map_grant_ref<E: SharedEntries + GuestFrames + FrameRefs>(
        &mut self,
        env: &mut E,
        caller: DomId,
        op: &GnttabMapGrantRef,
    ) -> Result<GrantMap, GrantStatus> {
        let parts = Parts {
            host: op.flags & GNTMAP_HOST_MAP != 0,
            device: op.flags & GNTMAP_DEVICE_MAP != 0,
        };
        if parts.is_empty() {
            return Err(GrantStatus::BadGntref);
        }
        if op.flags & GNTMAP_CONTAINS_PTE != 0 {
            return Err(GrantStatus::GeneralError);
        }
        let readonly = op.flags & GNTMAP_READONLY != 0;
        self.live(op.dom).ok_or(GrantStatus::BadDomain)?;
        let mapper = self.live(caller).ok_or(GrantStatus::GeneralError)?;
        mapper.next_handle().ok_or(GrantStatus::NoSpace)?;
        let mfn = self.pin(
            env,
            caller,
            op.dom,
            op.ref_,
            Usage {
                parts,
                readonly,
                for_map: true,
            },
        )?;
        let mapping = Mapping {
            granter: op.dom,
            gref: op.ref_,
            readonly,
            host_addr: op.host_addr,
            live: parts,
            detached: Parts::NONE,
        };
        let handle = self
            .domains
            .get_mut(&caller)
            .and_then(|d| d.insert_mapping(mapping));
        match handle {
            Some(handle) => Ok(GrantMap {
                handle,
                mfn,
                host_addr: parts.host.then_some(op.host_addr),
                readonly,
            }),
            None => {
                // Cannot happen: the room was checked above and nothing ran in between.
                self.release_pins(env, op.dom, op.ref_, parts, readonly);
                self.inconsistent("maptrack slot vanished", caller);
                Err(GrantStatus::NoSpace)
            }
        }
    }

    /// Undoes a [`map_grant_ref`](Self::map_grant_ref) whose PTE could not be installed:
    /// the mapping leaves the maptrack and its pins and references are dropped.
    pub fn abort_map<E: SharedEntries + FrameRefs>(
        &mut self,
        env: &mut E,
        caller: DomId,
        map: GrantMap,
    ) {
        let mapping =
            self.domains
                .get_mut(&caller)
                .and_then(|d| match d.maptrack.get(map.handle as usize) {
                    Some(&Slot::Used(m)) if m.detached.is_empty() => {
                        d.free_slot(map.handle);
                        Some(m)
                    }
                    _ => None,
                });
        match mapping {
            Some(m) => self.release_pins(env, m.granter, m.gref, m.live, m.readonly),
            None => self.inconsistent("abort of an unknown mapping", caller),
        }
    }

    /// `GNTTABOP_unmap_grant_ref` of one op for `caller`, first half: checks the handle and
    /// addresses and detaches the parts the op names (the host mapping if `op.host_addr` is
    /// non-zero, the device mapping if `op.dev_bus_addr` is). See [`GrantUnmap`] for the
    /// rest.
    ///
    /// Statuses: handle beyond the maptrack, free, or already being unmapped (`bad_handle`);
    /// `op.dev_bus_addr` non-zero and not the frame's address, or `op.host_addr` non-zero and
    /// not the address the host mapping was made at (`general_error`, as Xen's failed PTE
    /// check).
    pub fn unmap_grant_ref(
        &mut self,
        caller: DomId,
        op: &GnttabUnmapGrantRef,
    ) -> Result<GrantUnmap, GrantStatus> {
        let mapping = match self
            .live(caller)
            .and_then(|d| d.maptrack.get(op.handle as usize))
        {
            Some(&Slot::Used(m)) if !m.live.is_empty() => m,
            _ => return Err(GrantStatus::BadHandle),
        };
        let mfn = self
            .domains
            .get(&mapping.granter)
            .and_then(|g| g.active.get(mapping.gref as usize))
            .map(|act| act.mfn)
            .ok_or(GrantStatus::BadHandle)?;
        if op.dev_bus_addr != 0 && op.dev_bus_addr != mfn.paddr() {
            return Err(GrantStatus::GeneralError);
        }
        let mut parts = Parts::NONE;
        if op.host_addr != 0 && mapping.live.host {
            if op.host_addr != mapping.host_addr {
                return Err(GrantStatus::GeneralError);
            }
            parts.host = true;
        }
        parts.device = op.dev_bus_addr != 0 && mapping.live.device;
        self.move_parts(caller, op.handle, parts, true);
        Ok(GrantUnmap {
            handle: op.handle,
            granter: mapping.granter,
            gref: mapping.gref,
            mfn,
            readonly: mapping.readonly,
            parts,
            host_addr: mapping.host_addr,
        })
    }

    /// Re-attaches the parts of an unmap whose PTE could not be removed: the mapping is as
    /// before the unmap.
    pub fn cancel_unmap(&mut self, caller: DomId, unmap: GrantUnmap) {
        if !self.move_parts(caller, unmap.handle, unmap.parts, false) {
            self.inconsistent("cancel of an unknown unmap", caller);
        }
    }

    /// Second half of an unmap, after the PTE is gone and the mapping domain's TLBs are
    /// flushed: drops the detached parts' pins and references, clears the status bits no
    /// remaining use needs, and frees the handle when nothing of the mapping is left.
    pub fn complete_unmap<E: SharedEntries + FrameRefs>(
        &mut self,
        env: &mut E,
        caller: DomId,
        unmap: GrantUnmap,
    ) {
        if unmap.parts.is_empty() {
            return;
        }
        let done = self.live_mut(caller).and_then(|d| {
            let Some(Slot::Used(m)) = d.maptrack.get_mut(unmap.handle as usize) else {
                return None;
            };
            if m.granter != unmap.granter
                || m.gref != unmap.gref
                || !m.detached.contains(unmap.parts)
            {
                return None;
            }
            m.detached = m.detached.minus(unmap.parts);
            if m.live.is_empty() && m.detached.is_empty() {
                d.free_slot(unmap.handle);
            }
            Some(())
        });
        match done {
            Some(()) => {
                self.release_pins(env, unmap.granter, unmap.gref, unmap.parts, unmap.readonly)
            }
            None => self.inconsistent("completion of an unknown unmap", caller),
        }
    }

    fn live_mut(&mut self, domid: DomId) -> Option<&mut DomainGrants> {
        self.domains.get_mut(&domid).filter(|d| !d.released)
    }

    /// Moves `parts` of mapping `handle` from live to detached (`detach`) or back. Returns
    /// whether the mapping had them.
    fn move_parts(
        &mut self,
        caller: DomId,
        handle: GrantHandle,
        parts: Parts,
        detach: bool,
    ) -> bool {
        let Some(Slot::Used(m)) = self
            .live_mut(caller)
            .and_then(|d| d.maptrack.get_mut(handle as usize))
        else {
            return false;
        };
        let (from, to) = if detach {
            (&mut m.live, &mut m.detached)
        } else {
            (&mut m.detached, &mut m.live)
        };
        if !from.contains(parts) {
            return false;
        }
        *from = from.minus(parts);
        *to = to.union(parts);
        true
    }
}
