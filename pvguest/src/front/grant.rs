//! Grant tables from the guest's side (v1).
//!
//! [`GrantTable`] is this domain's own table, mapped from the frames `GNTTABOP_setup_table`
//! returns: granting a frame to another domain writes an entry (target first, then the flags
//! that make it valid), and ending access is a compare-and-swap of the flags to 0 that fails
//! while Xen has `GTF_reading` or `GTF_writing` set, i.e. while the grantee has the frame
//! mapped or is copying it. The first [`GNTTAB_NR_RESERVED_ENTRIES`] entries belong to the
//! toolstack (console and xenstore rings) and are never handed out.
//!
//! The free functions are the grantee's side: mapping, unmapping and copying other domains'
//! grants, each operation's `GNTST_*` status turned into a [`GrantError`].

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU16, Ordering};

use hypercall_abi::call::{HypercallPage, HypercallResult};
use hypercall_abi::errno::HypercallError;
use hypercall_abi::grant_table::{
    GnttabCopy, GnttabMapGrantRef, GnttabOp, GnttabSetupTable, GnttabUnmapGrantRef, GrantEntryV1,
    GrantHandle, GrantRef, GrantStatus, GNTMAP_HOST_MAP, GNTMAP_READONLY,
    GNTTAB_NR_RESERVED_ENTRIES, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING,
};
use hypercall_abi::xen::DOMID_SELF;
use hypercall_abi::{DomId, GuestHandle};

/// Why a grant operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// The hypercall itself failed.
    Hypercall(HypercallError),
    /// The operation's status.
    Status(GrantStatus),
    /// A status that is no `GNTST_*` value.
    UnknownStatus(i16),
    /// Every entry of the table is in use.
    NoFreeRef,
    /// The reference was not granted through this table.
    NotGranted(GrantRef),
    /// The grantee still has the frame mapped or is copying it (`GTF_reading`/`GTF_writing`).
    InUse(GrantRef),
    /// The frame number does not fit a v1 entry.
    FrameTooLarge(u64),
}

impl core::fmt::Display for GrantError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GrantError::Hypercall(e) => write!(f, "grant_table_op: {e}"),
            GrantError::Status(s) => write!(f, "status {} ({})", s.raw(), s.message()),
            GrantError::UnknownStatus(s) => write!(f, "unknown status {s}"),
            GrantError::NoFreeRef => write!(f, "no free grant reference"),
            GrantError::NotGranted(r) => write!(f, "ref {r} is not granted"),
            GrantError::InUse(r) => write!(f, "ref {r} is in use by the grantee"),
            GrantError::FrameTooLarge(m) => write!(f, "frame {m:#x} does not fit an entry"),
        }
    }
}

impl From<HypercallError> for GrantError {
    fn from(e: HypercallError) -> Self {
        GrantError::Hypercall(e)
    }
}

/// An operation's `status` field as a result.
pub fn check_status(status: i16) -> Result<(), GrantError> {
    match GrantStatus::try_from(status) {
        Ok(GrantStatus::Okay) => Ok(()),
        Ok(s) => Err(GrantError::Status(s)),
        Err(_) => Err(GrantError::UnknownStatus(status)),
    }
}

/// This domain's grant table.
#[derive(Debug)]
pub struct GrantTable {
    entries: *mut GrantEntryV1,
    len: u32,
    /// One bit per entry: granted (or reserved).
    used: Vec<u64>,
}

impl GrantTable {
    /// The table of `len` entries at `entries` (the mapped `setup_table` frames).
    ///
    /// # Safety
    ///
    /// `entries` must be valid for reads and writes of `len` entries, suitably aligned, for
    /// as long as the table is used, and no Rust reference may cover them (the hypervisor
    /// updates the flags).
    pub unsafe fn new(entries: *mut GrantEntryV1, len: u32) -> Self {
        let mut used = vec![0u64; (len as usize).div_ceil(64)];
        for r in 0..GNTTAB_NR_RESERVED_ENTRIES.min(len) {
            used[(r / 64) as usize] |= 1 << (r % 64);
        }
        GrantTable { entries, len, used }
    }

    /// Entries in the table.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn is_used(&self, r: GrantRef) -> bool {
        r < self.len && self.used[(r / 64) as usize] & (1 << (r % 64)) != 0
    }

    fn set_used(&mut self, r: GrantRef, used: bool) {
        let (w, b) = ((r / 64) as usize, r % 64);
        if used {
            self.used[w] |= 1 << b;
        } else {
            self.used[w] &= !(1 << b);
        }
    }

    fn entry(&self, r: GrantRef) -> *mut GrantEntryV1 {
        debug_assert!(r < self.len);
        // SAFETY: callers pass r < len, inside the entries `new` was given.
        unsafe { self.entries.add(r as usize) }
    }

    fn flags_of(&self, r: GrantRef) -> &AtomicU16 {
        // SAFETY: the entry is valid and aligned (`new`), `flags` is its first u16 and the
        // hypervisor changes it only with atomic operations, as we do.
        unsafe { AtomicU16::from_ptr(core::ptr::addr_of_mut!((*self.entry(r)).flags)) }
    }

    /// The flags of entry `r` as they are now (`None` beyond the table).
    pub fn flags(&self, r: GrantRef) -> Option<u16> {
        (r < self.len).then(|| self.flags_of(r).load(Ordering::Acquire))
    }

    /// Grants `domid` access to `frame` (a machine frame for a PV domain), read-only if asked;
    /// returns the lowest free reference.
    pub fn grant_access(
        &mut self,
        domid: DomId,
        frame: u64,
        readonly: bool,
    ) -> Result<GrantRef, GrantError> {
        let frame32 = u32::try_from(frame).map_err(|_| GrantError::FrameTooLarge(frame))?;
        let r = (GNTTAB_NR_RESERVED_ENTRIES..self.len)
            .find(|&r| !self.is_used(r))
            .ok_or(GrantError::NoFreeRef)?;
        let e = self.entry(r);
        // SAFETY: `e` is a valid entry (`new`); the entry is free, so the hypervisor does not
        // use its target fields until the flags below make it valid.
        unsafe {
            core::ptr::addr_of_mut!((*e).domid).write_volatile(domid);
            core::ptr::addr_of_mut!((*e).frame).write_volatile(frame32);
        }
        // The target must be visible before the entry becomes valid (Xen's wmb()).
        fence(Ordering::Release);
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        self.flags_of(r).store(flags, Ordering::Release);
        self.set_used(r, true);
        Ok(r)
    }

    /// Ends the access granted through `r`, unless the grantee is using it: then
    /// [`GrantError::InUse`] and the grant stays.
    pub fn end_access(&mut self, r: GrantRef) -> Result<(), GrantError> {
        if r < GNTTAB_NR_RESERVED_ENTRIES || !self.is_used(r) {
            return Err(GrantError::NotGranted(r));
        }
        let flags = self.flags_of(r);
        let mut current = flags.load(Ordering::Acquire);
        loop {
            if current & (GTF_READING | GTF_WRITING) != 0 {
                return Err(GrantError::InUse(r));
            }
            match flags.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        self.set_used(r, false);
        Ok(())
    }
}

/// The way to `grant_table_op` (the hypercall page, or a fake in tests).
pub trait GnttabHypercall {
    /// `grant_table_op(cmd, ops, ops.len())`.
    ///
    /// # Safety
    ///
    /// As [`HypercallPage::grant_table_op`]: `T` is `cmd`'s structure, handles in it are
    /// valid, and mappings made or removed are sound for the caller.
    unsafe fn grant_table_op<T>(&self, cmd: GnttabOp, ops: &mut [T]) -> HypercallResult;
}

impl GnttabHypercall for HypercallPage {
    unsafe fn grant_table_op<T>(&self, cmd: GnttabOp, ops: &mut [T]) -> HypercallResult {
        // SAFETY: forwarded to the caller's contract.
        unsafe { HypercallPage::grant_table_op(self, cmd, ops) }
    }
}

/// `GNTTABOP_setup_table` for this domain: sizes the table to `frames.len()` frames and
/// fills `frames` with their frame numbers (machine frames for a PV domain).
pub fn setup_table(hc: &impl GnttabHypercall, frames: &mut [u64]) -> Result<(), GrantError> {
    let nr_frames =
        u32::try_from(frames.len()).map_err(|_| GrantError::Status(GrantStatus::GeneralError))?;
    let mut op = [GnttabSetupTable {
        dom: DOMID_SELF,
        nr_frames,
        frame_list: GuestHandle::from_ptr(frames.as_mut_ptr()),
        ..GnttabSetupTable::default()
    }];
    // SAFETY: the hypervisor writes `nr_frames` frame numbers into `frames`, which the
    // handle names and which is that long; nothing is mapped.
    unsafe { hc.grant_table_op(GnttabOp::SetupTable, &mut op) }?;
    check_status(op[0].status)
}

/// A foreign grant mapped into this domain's address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a mapping holds the granter's frame until it is unmapped"]
pub struct GrantMapping {
    /// Where it is mapped.
    pub host_addr: u64,
    /// The handle `map_grant_ref` returned.
    pub handle: GrantHandle,
}

/// `GNTTABOP_map_grant_ref`: maps `dom`'s grant `gref` at virtual address `host_addr`.
///
/// # Safety
///
/// `host_addr` must be a page of this domain's address space that no Rust reference covers,
/// whose page tables down to the L1 exist, and whose current mapping (if any) may be
/// replaced.
pub unsafe fn map_grant(
    hc: &impl GnttabHypercall,
    dom: DomId,
    gref: GrantRef,
    host_addr: u64,
    readonly: bool,
) -> Result<GrantMapping, GrantError> {
    let mut op = [GnttabMapGrantRef {
        host_addr,
        flags: GNTMAP_HOST_MAP | if readonly { GNTMAP_READONLY } else { 0 },
        ref_: gref,
        dom,
        ..GnttabMapGrantRef::default()
    }];
    // SAFETY: the caller vouches for the address the mapping goes to.
    unsafe { hc.grant_table_op(GnttabOp::MapGrantRef, &mut op) }?;
    check_status(op[0].status)?;
    Ok(GrantMapping {
        host_addr,
        handle: op[0].handle,
    })
}

/// `GNTTABOP_unmap_grant_ref` of a mapping made by [`map_grant`].
///
/// # Safety
///
/// No Rust reference may point into the mapped page any more.
pub unsafe fn unmap_grant(
    hc: &impl GnttabHypercall,
    mapping: GrantMapping,
) -> Result<(), GrantError> {
    let mut op = [GnttabUnmapGrantRef {
        host_addr: mapping.host_addr,
        handle: mapping.handle,
        ..GnttabUnmapGrantRef::default()
    }];
    // SAFETY: the caller guarantees nothing refers to the page that disappears.
    unsafe { hc.grant_table_op(GnttabOp::UnmapGrantRef, &mut op) }?;
    check_status(op[0].status)
}

/// `GNTTABOP_copy` of a batch; the first failed operation's status is the error.
///
/// # Safety
///
/// Destination frames of this domain must hold no memory a live Rust reference covers.
pub unsafe fn copy(hc: &impl GnttabHypercall, ops: &mut [GnttabCopy]) -> Result<(), GrantError> {
    // SAFETY: the caller vouches for the destinations; the hypervisor writes only the
    // status fields of `ops`.
    unsafe { hc.grant_table_op(GnttabOp::Copy, ops) }?;
    ops.iter().try_for_each(|op| check_status(op.status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;
    use hypercall_abi::errno::Errno;
    use hypercall_abi::grant_table::{GnttabCopyPtr, GRANT_ENTRIES_V1_PER_PAGE};

    fn table(entries: &mut Vec<GrantEntryV1>) -> GrantTable {
        // SAFETY: the vector outlives the table in each test; the tests touch the entries
        // only through the table or by raw pointer while it is idle.
        unsafe { GrantTable::new(entries.as_mut_ptr(), entries.len() as u32) }
    }

    #[test]
    fn grants_take_the_lowest_free_refs_after_the_reserved_ones() {
        let mut entries = vec![GrantEntryV1::default(); GRANT_ENTRIES_V1_PER_PAGE];
        let mut t = table(&mut entries);
        assert_eq!(t.len(), 512);
        assert_eq!(t.grant_access(2, 0x1234, false), Ok(8));
        assert_eq!(t.grant_access(2, 0x1235, true), Ok(9));
        assert_eq!(t.flags(8), Some(GTF_PERMIT_ACCESS));
        assert_eq!(t.flags(9), Some(GTF_PERMIT_ACCESS | GTF_READONLY));
        assert_eq!(t.end_access(8), Ok(()));
        assert_eq!(t.grant_access(3, 0x99, false), Ok(8));
        assert_eq!(entries[9].domid, 2);
        assert_eq!(entries[9].frame, 0x1235);
        assert_eq!(entries[8].domid, 3);
        assert_eq!(entries[8].frame, 0x99);
    }

    #[test]
    fn end_access_is_refused_while_the_grantee_reads_or_writes() {
        let mut entries = vec![GrantEntryV1::default(); 16];
        let base = entries.as_mut_ptr();
        let mut t = table(&mut entries);
        let r = t.grant_access(1, 7, false).unwrap();
        for busy in [GTF_READING, GTF_WRITING, GTF_READING | GTF_WRITING] {
            // What the hypervisor does while the grant is mapped.
            // SAFETY: entry `r` is inside the vector; the table is idle.
            let flags = unsafe {
                AtomicU16::from_ptr(core::ptr::addr_of_mut!((*base.add(r as usize)).flags))
            };
            flags.fetch_or(busy, Ordering::SeqCst);
            assert_eq!(t.end_access(r), Err(GrantError::InUse(r)));
            assert_eq!(t.flags(r), Some(GTF_PERMIT_ACCESS | busy));
            flags.fetch_and(!busy, Ordering::SeqCst);
        }
        assert_eq!(t.end_access(r), Ok(()));
        assert_eq!(t.flags(r), Some(0));
        assert_eq!(t.end_access(r), Err(GrantError::NotGranted(r)));
    }

    #[test]
    fn reserved_unknown_and_exhausted_refs() {
        let mut entries = vec![GrantEntryV1::default(); 10];
        let mut t = table(&mut entries);
        assert_eq!(t.end_access(1), Err(GrantError::NotGranted(1)));
        assert_eq!(t.end_access(100), Err(GrantError::NotGranted(100)));
        assert_eq!(t.flags(100), None);
        assert_eq!(
            t.grant_access(1, 1 << 32, false),
            Err(GrantError::FrameTooLarge(1 << 32))
        );
        assert_eq!(t.grant_access(1, 1, false), Ok(8));
        assert_eq!(t.grant_access(1, 2, false), Ok(9));
        assert_eq!(t.grant_access(1, 3, false), Err(GrantError::NoFreeRef));
    }

    /// Answers each op with a scripted status and records the op structures' key fields.
    struct FakeXen {
        status: i16,
        seen: RefCell<Vec<(GnttabOp, usize)>>,
    }

    impl GnttabHypercall for FakeXen {
        unsafe fn grant_table_op<T>(&self, cmd: GnttabOp, ops: &mut [T]) -> HypercallResult {
            self.seen.borrow_mut().push((cmd, ops.len()));
            let p = ops.as_mut_ptr() as *mut u8;
            // SAFETY: `T` is `cmd`'s structure (the caller's contract); each arm writes
            // fields at that structure's offsets.
            unsafe {
                match cmd {
                    GnttabOp::SetupTable => {
                        let list = p.add(16).cast::<u64>().read() as *mut u64;
                        for i in 0..p.add(4).cast::<u32>().read() as usize {
                            list.add(i).write(0x100 + i as u64);
                        }
                        p.add(8).cast::<i16>().write(self.status);
                    }
                    GnttabOp::MapGrantRef => {
                        p.add(18).cast::<i16>().write(self.status);
                        p.add(20).cast::<u32>().write(77);
                    }
                    GnttabOp::UnmapGrantRef => p.add(20).cast::<i16>().write(self.status),
                    GnttabOp::Copy => {
                        for i in 0..ops.len() {
                            p.add(i * 40 + 36).cast::<i16>().write(if i == 1 {
                                self.status
                            } else {
                                0
                            });
                        }
                    }
                    _ => return Err(HypercallError::Errno(Errno::ENOSYS)),
                }
            }
            Ok(0)
        }
    }

    fn xen(status: GrantStatus) -> FakeXen {
        FakeXen {
            status: status.raw(),
            seen: RefCell::new(Vec::new()),
        }
    }

    #[test]
    fn operations_decode_their_statuses() {
        let ok = xen(GrantStatus::Okay);
        let mut frames = [0u64; 2];
        assert_eq!(setup_table(&ok, &mut frames), Ok(()));
        assert_eq!(frames, [0x100, 0x101]);
        // SAFETY: the fake maps nothing.
        let m = unsafe { map_grant(&ok, 1, 8, 0x5000_0000, false) }.unwrap();
        assert_eq!(
            m,
            GrantMapping {
                host_addr: 0x5000_0000,
                handle: 77
            }
        );
        // SAFETY: as above.
        assert_eq!(unsafe { unmap_grant(&ok, m) }, Ok(()));

        let denied = xen(GrantStatus::PermissionDenied);
        // SAFETY: as above.
        let refused = unsafe { map_grant(&denied, 1, 9, 0x5000_0000, false) };
        assert_eq!(
            refused,
            Err(GrantError::Status(GrantStatus::PermissionDenied))
        );
        let mut ops = [GnttabCopy {
            source: GnttabCopyPtr::from_gref(1, 9, 0),
            dest: GnttabCopyPtr::from_gmfn(DOMID_SELF, 0x42, 0),
            len: 4096,
            ..GnttabCopy::default()
        }; 3];
        // SAFETY: the fake writes only statuses.
        let copied = unsafe { copy(&denied, &mut ops) };
        assert_eq!(
            copied,
            Err(GrantError::Status(GrantStatus::PermissionDenied))
        );
        let odd = FakeXen {
            status: -99,
            seen: RefCell::new(Vec::new()),
        };
        assert_eq!(
            setup_table(&odd, &mut frames),
            Err(GrantError::UnknownStatus(-99))
        );
        assert_eq!(
            *ok.seen.borrow(),
            [
                (GnttabOp::SetupTable, 1),
                (GnttabOp::MapGrantRef, 1),
                (GnttabOp::UnmapGrantRef, 1)
            ]
        );
    }

    #[test]
    fn hypercall_failures_are_errors() {
        struct Down;
        impl GnttabHypercall for Down {
            unsafe fn grant_table_op<T>(&self, _: GnttabOp, _: &mut [T]) -> HypercallResult {
                Err(HypercallError::Errno(Errno::ENOSYS))
            }
        }
        assert_eq!(
            setup_table(&Down, &mut [0u64; 1]),
            Err(GrantError::Hypercall(HypercallError::Errno(Errno::ENOSYS)))
        );
    }
}
