//! Unit tests: each operation and each refusal, with the state checked unchanged after every
//! refusal.

use hypercall_abi::errno::Errno;
use hypercall_abi::grant_table::{
    GnttabCopy, GnttabCopyPtr, GnttabSetupTable, GnttabUnmapGrantRef, GrantStatus,
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTMAP_CONTAINS_PTE, GNTMAP_DEVICE_MAP,
    GNTMAP_HOST_MAP, GNTMAP_READONLY, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE,
    GTF_WRITING,
};
use hypercall_abi::xen::DOMID_SELF;
use hypercall_abi::DomId;

use super::fake::{Host, World, HOST_VA};
use super::*;
use crate::mm::pv::PvMm;
use crate::mm::{Owner, PageType};

const D1: DomId = 1;
const D2: DomId = 2;
const D3: DomId = 3;
const RO: u32 = GNTMAP_HOST_MAP | GNTMAP_READONLY;
const RW: u32 = GNTMAP_HOST_MAP;
const GRANT: u16 = GTF_PERMIT_ACCESS;
const GRANT_RO: u16 = GTF_PERMIT_ACCESS | GTF_READONLY;
const BITS: u16 = GTF_READING | GTF_WRITING;

fn status_bits(w: &World, g: DomId, gref: GrantRef) -> u16 {
    w.entry(g, gref).flags & BITS
}

fn setup_op(dom: DomId, nr_frames: u32) -> GnttabSetupTable {
    GnttabSetupTable {
        dom,
        nr_frames,
        ..Default::default()
    }
}

/// Everything a refusal must leave as it was: counts of every data frame, every entry's
/// flags in use, every maptrack.
fn snapshot(w: &World) -> Vec<(u32, u32, u16)> {
    let mut all = Vec::new();
    for d in [D1, D2, D3] {
        let Some(frames) = w.data.get(&d) else {
            continue;
        };
        for (i, &mfn) in frames.iter().enumerate() {
            let (refs, types, _) = w.host.counts(mfn);
            let flags = if w.gt.contains(d) && !w.gt.table_frames(d).is_empty() {
                w.entry(d, i as GrantRef).flags
            } else {
                0
            };
            all.push((refs, types, flags));
        }
        let used = w.gt.domains.get(&d).map_or(0, |dg| {
            dg.maptrack
                .iter()
                .filter(|s| matches!(s, Slot::Used(_)))
                .count()
        });
        all.push((used as u32, 0, 0));
    }
    all
}

#[test]
fn errno_mapping_follows_xen() {
    assert_eq!(GnttabError::NoSuchDomain.errno(), Errno::ESRCH);
    assert_eq!(GnttabError::NotPermitted.errno(), Errno::EPERM);
    assert_eq!(GnttabError::BadVersion.errno(), Errno::EINVAL);
    assert_eq!(GnttabError::VersionUnsupported.errno(), Errno::ENOSYS);
    assert_eq!(GnttabError::DomainExists.errno(), Errno::EEXIST);
    assert_eq!(GnttabError::BadConfig.errno(), Errno::EINVAL);
    assert_eq!(Errno::from(GnttabError::NoMemory), Errno::ENOMEM);
}

#[test]
fn a_new_domain_has_one_zeroed_table_frame_of_its_own() {
    let w = World::new(&[D1]);
    let frames = w.gt.table_frames(D1);
    assert_eq!(frames.len(), 1);
    assert_eq!(w.host.info(frames[0]).owner(), Owner::Domain(D1));
    assert_eq!(w.entry(D1, 0), GrantEntryV1::default());
    assert_eq!(
        w.gt.query_size(D1, DOMID_SELF),
        Ok(TableSize {
            nr_frames: 1,
            max_nr_frames: 4
        })
    );
}

#[test]
fn add_domain_refuses_reserved_ids_bad_limits_duplicates_and_no_memory() {
    let mut w = World::new(&[D1]);
    let cfg = GrantConfig::default();
    let bad = |f: fn(&mut GrantConfig)| {
        let mut c = GrantConfig::default();
        f(&mut c);
        c
    };
    let mut gt = GrantTables::new();
    assert_eq!(
        gt.add_domain(&mut w.host, DOMID_SELF, cfg),
        Err(GnttabError::BadConfig)
    );
    assert_eq!(
        gt.add_domain(&mut w.host, D2, bad(|c| c.max_grant_frames = 0)),
        Err(GnttabError::BadConfig)
    );
    assert_eq!(
        gt.add_domain(&mut w.host, D2, bad(|c| c.max_maptrack_entries = 0)),
        Err(GnttabError::BadConfig)
    );
    assert_eq!(
        w.gt.add_domain(&mut w.host, D1, cfg),
        Err(GnttabError::DomainExists)
    );
    w.host.table_frames_left = Some(0);
    let free = w.host.alloc.free_frames();
    assert_eq!(
        gt.add_domain(&mut w.host, D2, cfg),
        Err(GnttabError::NoMemory)
    );
    assert!(!gt.contains(D2));
    assert_eq!(w.host.alloc.free_frames(), free);
}

#[test]
fn setup_table_grows_to_the_frames_asked_for_and_never_shrinks() {
    let mut w = World::new(&[D1]);
    let first = w.gt.table_frames(D1)[0];
    let frames =
        w.gt.setup_table(&mut w.host, D1, &setup_op(DOMID_SELF, 3))
            .unwrap()
            .to_vec();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0], first);
    for &mfn in &frames {
        assert_eq!(w.host.info(mfn).owner(), Owner::Domain(D1));
    }
    // Fewer frames: the first ones; the table keeps its size. Zero frames is fine.
    let one = w.gt.setup_table(&mut w.host, D1, &setup_op(D1, 1)).unwrap();
    assert_eq!(one, &frames[..1]);
    assert_eq!(
        w.gt.setup_table(&mut w.host, D1, &setup_op(D1, 0)),
        Ok(&[][..])
    );
    assert_eq!(w.gt.query_size(D1, D1).unwrap().nr_frames, 3);
    // Entries of the new frames are in range now.
    let entry_in_frame_2 = 2 * ENTRIES_PER_FRAME + 5;
    assert_eq!(
        w.map(D1, D1, entry_in_frame_2, RO),
        Err(GrantStatus::GeneralError)
    );
    assert_eq!(
        w.map(D1, D1, 3 * ENTRIES_PER_FRAME, RO),
        Err(GrantStatus::BadGntref)
    );
}

#[test]
fn setup_table_refusals() {
    let mut w = World::new(&[D1, D2]);
    assert_eq!(
        w.gt.setup_table(&mut w.host, D1, &setup_op(DOMID_SELF, 5)),
        Err(GrantStatus::GeneralError)
    );
    assert_eq!(
        w.gt.setup_table(&mut w.host, D1, &setup_op(9, 1)),
        Err(GrantStatus::BadDomain)
    );
    assert_eq!(
        w.gt.setup_table(&mut w.host, D1, &setup_op(D2, 1)),
        Err(GrantStatus::PermissionDenied)
    );
    assert_eq!(w.gt.query_size(D1, D2), Err(GrantStatus::PermissionDenied));
    assert_eq!(w.gt.query_size(D1, 9), Err(GrantStatus::BadDomain));
    // Out of memory part-way: nothing of the growth is kept.
    let free = w.host.alloc.free_frames();
    w.host.table_frames_left = Some(1);
    assert_eq!(
        w.gt.setup_table(&mut w.host, D1, &setup_op(D1, 4)),
        Err(GrantStatus::GeneralError)
    );
    assert_eq!(w.host.alloc.free_frames(), free);
    assert_eq!(w.gt.table_frames(D1).len(), 1);
}

#[test]
fn a_privileged_domain_may_set_up_and_query_others_tables() {
    let mut w = World::new(&[D2]);
    let cfg = GrantConfig {
        privileged: true,
        ..GrantConfig::default()
    };
    w.gt.add_domain(&mut w.host, D1, cfg).unwrap();
    assert_eq!(
        w.gt.setup_table(&mut w.host, D1, &setup_op(D2, 2))
            .map(<[Mfn]>::len),
        Ok(2)
    );
    assert_eq!(w.gt.query_size(D1, D2).unwrap().nr_frames, 2);
    assert_eq!(w.gt.get_version(D1, D2), Ok(1));
    assert_eq!(w.gt.get_version(D2, D1), Err(GnttabError::NotPermitted));
}

#[test]
fn versions_one_only() {
    let w = World::new(&[D1]);
    assert_eq!(GrantTables::set_version(1), Ok(()));
    assert_eq!(
        GrantTables::set_version(2).map_err(GnttabError::errno),
        Err(Errno::ENOSYS)
    );
    assert_eq!(GrantTables::set_version(0), Err(GnttabError::BadVersion));
    assert_eq!(GrantTables::set_version(3), Err(GnttabError::BadVersion));
    assert_eq!(w.gt.get_version(D1, DOMID_SELF), Ok(GRANT_TABLE_VERSION));
    assert_eq!(w.gt.get_version(D1, 7), Err(GnttabError::NoSuchDomain));
}

#[test]
fn read_only_map_sets_reading_takes_a_reference_and_unmap_undoes_it() {
    let mut w = World::new(&[D1, D2]);
    let mfn = w.frame(D1, 0);
    w.grant(D1, 8, D2, mfn, GRANT_RO);
    let before = snapshot(&w);
    let map = w.map(D2, D1, 8, RO).unwrap();
    assert_eq!(map.handle(), 0);
    assert_eq!(map.mfn(), mfn);
    assert_eq!(map.dev_bus_addr(), mfn.paddr());
    assert_eq!(map.host_addr(), Some(HOST_VA));
    assert!(map.readonly());
    assert_eq!(status_bits(&w, D1, 8), GTF_READING);
    assert_eq!(w.host.counts(mfn), (1, 0, PageType::None));
    assert_eq!(w.unmap(D2, map.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(status_bits(&w, D1, 8), 0);
    assert_eq!(snapshot(&w), before);
    // The handle is free again and is reused.
    assert_eq!(w.map(D2, D1, 8, RO).unwrap().handle(), 0);
}

#[test]
fn writable_map_sets_reading_and_writing_and_takes_the_writable_type() {
    let mut w = World::new(&[D1, D2]);
    let mfn = w.frame(D1, 1);
    w.grant(D1, 9, D2, mfn, GRANT);
    let map = w.map(D2, D1, 9, RW).unwrap();
    assert!(!map.readonly());
    assert_eq!(status_bits(&w, D1, 9), GTF_READING | GTF_WRITING);
    assert_eq!(w.host.counts(mfn), (1, 1, PageType::Writable));
    // A second, read-only mapping of the same grant: writing stays while the writer lives.
    let ro = w.map(D2, D1, 9, RO).unwrap();
    assert_eq!(w.host.counts(mfn), (2, 1, PageType::Writable));
    assert_eq!(w.unmap(D2, map.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(status_bits(&w, D1, 9), GTF_READING);
    assert_eq!(w.host.counts(mfn), (1, 0, PageType::None));
    assert_eq!(w.unmap(D2, ro.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(status_bits(&w, D1, 9), 0);
    assert_eq!(w.host.counts(mfn), (0, 0, PageType::None));
}

#[test]
fn host_and_device_parts_hold_a_reference_each_and_unmap_separately() {
    let mut w = World::new(&[D1, D2]);
    let mfn = w.frame(D1, 2);
    w.grant(D1, 10, D2, mfn, GRANT);
    let map = w.map(D2, D1, 10, RW | GNTMAP_DEVICE_MAP).unwrap();
    assert_eq!(w.host.counts(mfn), (2, 2, PageType::Writable));
    // Host part only.
    assert_eq!(w.unmap(D2, map.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(w.host.counts(mfn), (1, 1, PageType::Writable));
    assert_eq!(status_bits(&w, D1, 10), BITS);
    // The host part is gone: naming it again removes nothing.
    assert_eq!(w.unmap(D2, map.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(w.host.counts(mfn), (1, 1, PageType::Writable));
    // Device part, named by its bus address.
    assert_eq!(w.unmap(D2, map.handle(), 0, mfn.paddr()), GrantStatus::Okay);
    assert_eq!(w.host.counts(mfn), (0, 0, PageType::None));
    assert_eq!(status_bits(&w, D1, 10), 0);
    assert_eq!(
        w.unmap(D2, map.handle(), HOST_VA, 0),
        GrantStatus::BadHandle
    );
    // A device-only mapping has no host address.
    let dev = w
        .map(D2, D1, 10, GNTMAP_DEVICE_MAP | GNTMAP_READONLY)
        .unwrap();
    assert_eq!(dev.host_addr(), None);
    assert_eq!(w.host.counts(mfn), (1, 0, PageType::None));
}

#[test]
fn map_refusals_answer_xens_status_and_change_nothing() {
    let mut w = World::new(&[D1, D2, D3]);
    let mine = w.frame(D1, 0);
    w.grant(D1, 1, D3, mine, GRANT); // granted to someone else
    w.grant(D1, 2, D2, mine, GRANT_RO); // read-only
    w.grant(D1, 3, D2, mine, GTF_PERMIT_ACCESS | GTF_SUB_PAGE);
    w.grant(D1, 4, D2, w.frame(D2, 0), GRANT); // a frame that is not D1's
    w.grant(D1, 5, D2, Mfn(0x10_0000), GRANT); // no such frame
    w.grant(D1, 6, D2, mine, 2); // accept-transfer, not permit-access
    w.grant(D1, 7, D2, mine, GRANT);
    let before = snapshot(&w);
    let cases: [(DomId, GrantRef, u32, GrantStatus); 14] = [
        (D1, 0, RO, GrantStatus::GeneralError), // never granted
        (D1, 1, RO, GrantStatus::GeneralError),
        (D1, 2, RW, GrantStatus::GeneralError),
        (D1, 3, RO, GrantStatus::GeneralError),
        (D1, 4, RO, GrantStatus::BadPage),
        (D1, 5, RW, GrantStatus::BadPage),
        (D1, 6, RO, GrantStatus::GeneralError),
        (D1, ENTRIES_PER_FRAME, RO, GrantStatus::BadGntref),
        (D1, u32::MAX, RO, GrantStatus::BadGntref),
        (9, 7, RO, GrantStatus::BadDomain),
        (DOMID_SELF, 7, RO, GrantStatus::BadDomain),
        (D1, 7, GNTMAP_READONLY, GrantStatus::BadGntref),
        (D1, 7, RW | GNTMAP_CONTAINS_PTE, GrantStatus::GeneralError),
        (0x7FFF, 7, RO, GrantStatus::BadDomain),
    ];
    for (g, gref, flags, want) in cases {
        assert_eq!(w.map(D2, g, gref, flags), Err(want), "d{g} ref {gref:#x}");
        assert_eq!(snapshot(&w), before, "d{g} ref {gref:#x}");
    }
    assert_eq!(w.gt.inconsistencies(), 0);
}

#[test]
fn a_grant_in_use_by_one_domain_cannot_be_used_by_another() {
    let mut w = World::new(&[D1, D2, D3]);
    let mfn = w.frame(D1, 0);
    w.grant(D1, 1, D2, mfn, GRANT);
    let map = w.map(D2, D1, 1, RO).unwrap();
    // The granter re-grants the entry in use to D3: the active entry still belongs to D2.
    w.grant(D1, 1, D3, mfn, GRANT | GTF_READING);
    assert_eq!(w.map(D3, D1, 1, RO), Err(GrantStatus::GeneralError));
    // ...and D2 can still map it (the active entry is what counts once pinned).
    let again = w.map(D2, D1, 1, RO).unwrap();
    assert_eq!(w.unmap(D2, map.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(w.unmap(D2, again.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(w.map(D3, D1, 1, RO).map(|m| m.mfn()), Ok(mfn));
}

#[test]
fn the_frame_is_fixed_at_the_first_pin_whatever_the_granter_writes_later() {
    let mut w = World::new(&[D1, D2]);
    let (a, b) = (w.frame(D1, 0), w.frame(D1, 1));
    w.grant(D1, 1, D2, a, GRANT);
    let first = w.map(D2, D1, 1, RO).unwrap();
    w.grant(D1, 1, D2, b, GRANT | GTF_READING);
    let second = w.map(D2, D1, 1, RW).unwrap();
    assert_eq!((first.mfn(), second.mfn()), (a, a));
    assert_eq!(w.host.counts(a), (2, 1, PageType::Writable));
    assert_eq!(w.host.counts(b), (0, 0, PageType::None));
    // But an upgrade to writing checks GTF_readonly again.
    w.grant(D1, 1, D2, a, GRANT_RO | GTF_READING | GTF_WRITING);
    assert_eq!(w.unmap(D2, second.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(w.map(D2, D1, 1, RW), Err(GrantStatus::GeneralError));
}

#[test]
fn ending_access_is_refused_by_the_status_bits_while_mapped() {
    let mut w = World::new(&[D1, D2]);
    w.grant(D1, 3, D2, w.frame(D1, 0), GRANT);
    let map = w.map(D2, D1, 3, RW).unwrap();
    assert!(!w.end_access(D1, 3));
    assert_eq!(w.unmap(D2, map.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert!(w.end_access(D1, 3));
    assert_eq!(w.entry(D1, 3).flags, 0);
    assert_eq!(w.map(D2, D1, 3, RO), Err(GrantStatus::GeneralError));
}

#[test]
fn a_page_table_frame_can_be_granted_read_only_but_not_mapped_writable() {
    let mut w = World::new(&[D1, D2]);
    let mfn = w.frame(D1, 0);
    w.host
        .alloc
        .frame_mut(mfn)
        .unwrap()
        .get_type(PageType::L1)
        .unwrap();
    w.grant(D1, 1, D2, mfn, GRANT);
    assert_eq!(w.map(D2, D1, 1, RW), Err(GrantStatus::GeneralError));
    assert_eq!(w.host.counts(mfn), (0, 1, PageType::L1));
    assert_eq!(status_bits(&w, D1, 1), 0);
    let map = w.map(D2, D1, 1, RO).unwrap();
    // Refused as a write upgrade while read-mapped: GTF_writing is not left behind.
    assert_eq!(w.map(D2, D1, 1, RW), Err(GrantStatus::GeneralError));
    assert_eq!(status_bits(&w, D1, 1), GTF_READING);
    assert_eq!(w.unmap(D2, map.handle(), HOST_VA, 0), GrantStatus::Okay);
    // And a frame mapped writable through a grant cannot become a page table.
    let data = w.frame(D1, 1);
    w.grant(D1, 2, D2, data, GRANT);
    let _map = w.map(D2, D1, 2, RW).unwrap();
    let mut pv = PvMm::new(&mut w.host.alloc, &mut w.host.mem, [0; 16]);
    assert!(pv.get_page_type(data, D1, PageType::L1).is_err());
}

#[test]
fn maptrack_exhaustion_is_no_space_and_pin_counts_stop_at_xens_limit() {
    let cfg = GrantConfig {
        max_maptrack_entries: 2,
        ..GrantConfig::default()
    };
    let mut w = World::with_config(&[D1, D2], cfg);
    w.grant(D1, 1, D2, w.frame(D1, 0), GRANT);
    let _first = w.map(D2, D1, 1, RO).unwrap();
    let _second = w.map(D2, D1, 1, RO).unwrap();
    let before = snapshot(&w);
    assert_eq!(w.map(D2, D1, 1, RO), Err(GrantStatus::NoSpace));
    assert_eq!(snapshot(&w), before);

    let mut w = World::new(&[D1, D2]);
    let mfn = w.frame(D1, 0);
    w.grant(D1, 1, D2, mfn, GRANT);
    for _ in 0..PIN_LIMIT {
        let _map = w.map(D2, D1, 1, RO).unwrap();
    }
    assert_eq!(w.map(D2, D1, 1, RO), Err(GrantStatus::GeneralError));
    assert_eq!(w.host.counts(mfn).0, PIN_LIMIT);
}

#[test]
fn unmap_refusals() {
    let mut w = World::new(&[D1, D2, D3]);
    let mfn = w.frame(D1, 0);
    w.grant(D1, 1, D2, mfn, GRANT);
    let map = w.map(D2, D1, 1, RW | GNTMAP_DEVICE_MAP).unwrap();
    let before = snapshot(&w);
    let h = map.handle();
    for (caller, handle, host, dev, want) in [
        (D2, 1, HOST_VA, 0, GrantStatus::BadHandle), // free slot
        (D2, 4096, HOST_VA, 0, GrantStatus::BadHandle), // beyond the maptrack
        (D2, u32::MAX, HOST_VA, 0, GrantStatus::BadHandle), // far beyond
        (D3, h, HOST_VA, 0, GrantStatus::BadHandle), // another domain's handle
        (D2, h, HOST_VA + 4096, 0, GrantStatus::GeneralError),
        (D2, h, 0, mfn.paddr() + 4096, GrantStatus::GeneralError),
        (D2, h, HOST_VA, 1, GrantStatus::GeneralError),
    ] {
        assert_eq!(
            w.unmap(caller, handle, host, dev),
            want,
            "d{caller} {handle}"
        );
        assert_eq!(snapshot(&w), before);
    }
    // Naming neither address removes nothing and succeeds, as Xen.
    assert_eq!(w.unmap(D2, h, 0, 0), GrantStatus::Okay);
    assert_eq!(snapshot(&w), before);
    assert_eq!(w.unmap(D2, h, HOST_VA, mfn.paddr()), GrantStatus::Okay);
    // Double unmap.
    assert_eq!(w.unmap(D2, h, HOST_VA, mfn.paddr()), GrantStatus::BadHandle);
    assert_eq!(w.host.counts(mfn), (0, 0, PageType::None));
    assert_eq!(w.gt.inconsistencies(), 0);
}

#[test]
fn a_failed_pte_install_or_removal_rolls_back() {
    let mut w = World::new(&[D1, D2]);
    let mfn = w.frame(D1, 0);
    w.grant(D1, 1, D2, mfn, GRANT);
    let before = snapshot(&w);
    let map = w.map(D2, D1, 1, RW).unwrap();
    w.gt.abort_map(&mut w.host, D2, map);
    assert_eq!(snapshot(&w), before);

    let map = w.map(D2, D1, 1, RW).unwrap();
    let mapped = snapshot(&w);
    let op = GnttabUnmapGrantRef {
        host_addr: HOST_VA,
        handle: map.handle(),
        ..Default::default()
    };
    let unmap = w.gt.unmap_grant_ref(D2, &op).unwrap();
    assert_eq!(unmap.host_mapping(), Some((HOST_VA, mfn)));
    assert!(!unmap.is_empty());
    // While detached, a second unmap of the same mapping is refused.
    assert_eq!(w.gt.unmap_grant_ref(D2, &op), Err(GrantStatus::BadHandle));
    w.gt.cancel_unmap(D2, unmap);
    assert_eq!(snapshot(&w), mapped);
    assert_eq!(w.unmap(D2, map.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(snapshot(&w), before);
    assert_eq!(w.gt.inconsistencies(), 0);
}

#[test]
fn a_guest_racing_the_status_update_is_checked_on_what_it_wrote() {
    let mut w = World::new(&[D1, D2]);
    let mfn = w.frame(D1, 0);
    w.grant(D1, 1, D2, mfn, GRANT);
    // The granter makes the grant read-only between hv's read and its swap.
    w.host.mem.races.push_back(header(GRANT_RO, D2));
    assert_eq!(w.map(D2, D1, 1, RW), Err(GrantStatus::GeneralError));
    assert_eq!(w.entry(D1, 1).flags, GRANT_RO);
    assert_eq!(w.host.counts(mfn), (0, 0, PageType::None));
    // ...or re-grants it to another domain.
    w.grant(D1, 1, D2, mfn, GRANT);
    w.host.mem.races.push_back(header(GRANT, D3));
    assert_eq!(w.map(D2, D1, 1, RO), Err(GrantStatus::GeneralError));
    // A harmless change (a cache attribute) is retried and succeeds.
    w.grant(D1, 1, D2, mfn, GRANT);
    w.host
        .mem
        .races
        .push_back(header(GRANT | hypercall_abi::grant_table::GTF_PWT, D2));
    let map = w.map(D2, D1, 1, RO).unwrap();
    assert_eq!(status_bits(&w, D1, 1), GTF_READING);
    assert_eq!(w.unmap(D2, map.handle(), HOST_VA, 0), GrantStatus::Okay);
    // An entry that changes at every attempt is given up on after five.
    w.host
        .mem
        .races
        .extend((0..5).map(|i| header(GRANT | (i % 2) << 5, D2)));
    assert_eq!(w.map(D2, D1, 1, RO), Err(GrantStatus::GeneralError));
    assert!(w.host.mem.races.is_empty());
    assert_eq!(w.host.counts(mfn), (0, 0, PageType::None));
}

fn copy_op(source: GnttabCopyPtr, dest: GnttabCopyPtr, len: u16, flags: u16) -> GnttabCopy {
    GnttabCopy {
        source,
        dest,
        len,
        flags,
        ..Default::default()
    }
}

#[test]
fn copy_from_a_grant_to_an_own_frame_and_back_with_partial_pages() {
    let mut w = World::new(&[D1, D2]);
    let (theirs, mine) = (w.frame(D1, 0), w.frame(D2, 0));
    w.grant(D1, 1, D2, theirs, GRANT);
    let src = w.host.mem.bytes(theirs, 100, 300);
    let op = copy_op(
        GnttabCopyPtr::from_gref(D1, 1, 100),
        GnttabCopyPtr::from_gmfn(DOMID_SELF, mine.0, 3000),
        300,
        GNTCOPY_SOURCE_GREF,
    );
    assert_eq!(w.gt.copy(&mut w.host, D2, &op), GrantStatus::Okay);
    assert_eq!(w.host.mem.bytes(mine, 3000, 300), src);
    // Nothing stays pinned or referenced.
    assert_eq!(status_bits(&w, D1, 1), 0);
    assert_eq!(w.host.counts(theirs), (0, 0, PageType::None));
    assert_eq!(w.host.counts(mine), (0, 0, PageType::None));
    // Into the grant (writing), the whole page.
    let page = w.host.mem.bytes(mine, 0, 4096);
    let back = copy_op(
        GnttabCopyPtr::from_gmfn(DOMID_SELF, mine.0, 0),
        GnttabCopyPtr::from_gref(D1, 1, 0),
        4096,
        GNTCOPY_DEST_GREF,
    );
    assert_eq!(w.gt.copy(&mut w.host, D2, &back), GrantStatus::Okay);
    assert_eq!(w.host.mem.bytes(theirs, 0, 4096), page);
    assert_eq!(status_bits(&w, D1, 1), 0);
}

#[test]
fn copy_between_two_grants_and_within_ones_own_grant() {
    let mut w = World::new(&[D1, D2, D3]);
    let (a, b) = (w.frame(D1, 0), w.frame(D3, 0));
    w.grant(D1, 1, D2, a, GRANT_RO);
    w.grant(D3, 1, D2, b, GRANT);
    let op = copy_op(
        GnttabCopyPtr::from_gref(D1, 1, 0),
        GnttabCopyPtr::from_gref(D3, 1, 8),
        64,
        GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF,
    );
    let want = w.host.mem.bytes(a, 0, 64);
    assert_eq!(w.gt.copy(&mut w.host, D2, &op), GrantStatus::Okay);
    assert_eq!(w.host.mem.bytes(b, 8, 64), want);
    // A domain copying through a grant to itself, named DOMID_SELF, same frame both ends.
    let own = w.frame(D2, 1);
    w.grant(D2, 2, D2, own, GRANT);
    let op = copy_op(
        GnttabCopyPtr::from_gref(DOMID_SELF, 2, 0),
        GnttabCopyPtr::from_gref(D2, 2, 10),
        20,
        GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF,
    );
    let want = w.host.mem.bytes(own, 0, 20);
    assert_eq!(w.gt.copy(&mut w.host, D2, &op), GrantStatus::Okay);
    assert_eq!(w.host.mem.bytes(own, 10, 20), want);
    assert_eq!(status_bits(&w, D2, 2), 0);
    assert_eq!(w.host.counts(own), (0, 0, PageType::None));
}

#[test]
fn copy_refusals_in_a_batch_do_not_stop_it() {
    let mut w = World::new(&[D1, D2, D3]);
    let (theirs, mine) = (w.frame(D1, 0), w.frame(D2, 0));
    w.grant(D1, 1, D2, theirs, GRANT_RO);
    w.grant(D1, 2, D3, theirs, GRANT);
    let good = copy_op(
        GnttabCopyPtr::from_gref(D1, 1, 0),
        GnttabCopyPtr::from_gmfn(DOMID_SELF, mine.0, 0),
        16,
        GNTCOPY_SOURCE_GREF,
    );
    let with = |f: &dyn Fn(&mut GnttabCopy)| {
        let mut op = good;
        f(&mut op);
        op
    };
    let cases = [
        (
            with(&|o: &mut GnttabCopy| o.source.offset = 4090),
            GrantStatus::BadCopyArg,
        ),
        (
            with(&|o: &mut GnttabCopy| o.dest.offset = 4095),
            GrantStatus::BadCopyArg,
        ),
        (
            with(&|o: &mut GnttabCopy| o.len = 4097),
            GrantStatus::BadCopyArg,
        ),
        (
            with(&|o: &mut GnttabCopy| o.source.u = 2),
            GrantStatus::GeneralError,
        ), // granted to D3
        (
            with(&|o: &mut GnttabCopy| o.source.u = 3),
            GrantStatus::GeneralError,
        ), // not granted
        (
            with(&|o: &mut GnttabCopy| o.source.u = 1 << 20),
            GrantStatus::BadGntref,
        ),
        (
            with(&|o: &mut GnttabCopy| o.source.domid = 9),
            GrantStatus::BadDomain,
        ),
        (
            with(&|o: &mut GnttabCopy| o.dest.domid = D2),
            GrantStatus::PermissionDenied,
        ), // gmfn, not DOMID_SELF
        (
            with(&|o: &mut GnttabCopy| o.dest.u = theirs.0),
            GrantStatus::BadPage,
        ), // not D2's frame
        (
            // Writing into a read-only grant.
            with(&|o: &mut GnttabCopy| {
                o.dest = GnttabCopyPtr::from_gref(D1, 1, 0);
                o.flags = GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF;
            }),
            GrantStatus::GeneralError,
        ),
        (
            // A foreign frame as source.
            with(&|o: &mut GnttabCopy| {
                o.source = GnttabCopyPtr::from_gmfn(D1, theirs.0, 0);
                o.flags = 0;
            }),
            GrantStatus::PermissionDenied,
        ),
    ];
    let mut ops: Vec<GnttabCopy> = Vec::new();
    for (op, _) in &cases {
        ops.push(*op);
        ops.push(good);
    }
    let before = snapshot(&w);
    w.gt.copy_batch(&mut w.host, D2, &mut ops);
    for (i, (_, want)) in cases.iter().enumerate() {
        assert_eq!(ops[2 * i].status, want.raw(), "case {i}");
        assert_eq!(
            ops[2 * i + 1].status,
            GrantStatus::Okay.raw(),
            "after case {i}"
        );
    }
    assert_eq!(snapshot(&w), before);
    assert_eq!(w.gt.inconsistencies(), 0);
}

#[test]
fn a_copy_into_a_page_table_frame_is_refused() {
    let mut w = World::new(&[D1, D2]);
    let (table, mine) = (w.frame(D1, 0), w.frame(D2, 0));
    w.host
        .alloc
        .frame_mut(table)
        .unwrap()
        .get_type(PageType::L1)
        .unwrap();
    w.grant(D1, 1, D2, table, GRANT);
    let op = copy_op(
        GnttabCopyPtr::from_gmfn(DOMID_SELF, mine.0, 0),
        GnttabCopyPtr::from_gref(D1, 1, 0),
        8,
        GNTCOPY_DEST_GREF,
    );
    assert_eq!(w.gt.copy(&mut w.host, D2, &op), GrantStatus::GeneralError);
    assert_eq!(status_bits(&w, D1, 1), 0);
    assert_eq!(w.host.counts(table), (0, 1, PageType::L1));
}

#[test]
fn a_copy_through_a_mapped_grant_leaves_the_mappings_bits() {
    let mut w = World::new(&[D1, D2]);
    let (theirs, mine) = (w.frame(D1, 0), w.frame(D2, 0));
    w.grant(D1, 1, D2, theirs, GRANT);
    let map = w.map(D2, D1, 1, RO).unwrap();
    let op = copy_op(
        GnttabCopyPtr::from_gmfn(DOMID_SELF, mine.0, 0),
        GnttabCopyPtr::from_gref(D1, 1, 0),
        8,
        GNTCOPY_DEST_GREF,
    );
    assert_eq!(w.gt.copy(&mut w.host, D2, &op), GrantStatus::Okay);
    assert_eq!(status_bits(&w, D1, 1), GTF_READING);
    assert_eq!(w.host.counts(theirs), (1, 0, PageType::None));
    assert_eq!(w.unmap(D2, map.handle(), HOST_VA, 0), GrantStatus::Okay);
}

#[test]
fn a_granter_dying_with_grants_mapped_keeps_those_frames_until_the_last_unmap() {
    let mut w = World::new(&[D1, D2]);
    let (a, b) = (w.frame(D1, 0), w.frame(D1, 1));
    w.grant(D1, 1, D2, a, GRANT);
    w.grant(D1, 2, D2, b, GRANT_RO);
    w.grant(D1, 3, D2, a, GRANT_RO);
    let m1 = w.map(D2, D1, 1, RW).unwrap();
    let m2 = w.map(D2, D1, 2, RO).unwrap();
    let m3 = w.map(D2, D1, 3, RO).unwrap();
    let released = w.gt.release_domain(&mut w.host, D1).unwrap();
    assert_eq!(
        released,
        Released {
            mappings: 0,
            table_frames_freed: 1,
            table_frames_held: 0,
            grants_still_mapped: 3,
        }
    );
    for mfn in w.data[&D1].clone() {
        w.host.free_if_unused(mfn, D1);
    }
    // The dead domain is still known; the mapped frames are still its own and held.
    assert!(w.gt.contains(D1));
    assert_eq!(w.gt.release_domain(&mut w.host, D1), None);
    assert_eq!(
        w.gt.add_domain(&mut w.host, D1, GrantConfig::default()),
        Err(GnttabError::DomainExists)
    );
    assert_eq!(w.host.info(a).owner(), Owner::Domain(D1));
    assert_eq!(w.host.counts(a), (2, 1, PageType::Writable));
    assert_eq!(w.host.info(w.frame(D1, 2)).owner(), Owner::Free);
    // New maps of the dead domain's grants are refused.
    assert_eq!(w.map(D2, D1, 1, RO), Err(GrantStatus::BadDomain));
    assert_eq!(w.unmap(D2, m1.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(w.host.info(a).owner(), Owner::Domain(D1));
    assert_eq!(w.unmap(D2, m3.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(w.host.info(a).owner(), Owner::Free);
    assert!(w.gt.contains(D1));
    assert_eq!(w.unmap(D2, m2.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(w.host.info(b).owner(), Owner::Free);
    assert!(!w.gt.contains(D1));
    w.kill(D2);
    assert_eq!(w.host.alloc.free_frames(), w.free_at_start);
    assert_eq!(w.gt.inconsistencies(), 0);
}

#[test]
fn a_mapper_dying_releases_its_mappings_and_the_granters_bits() {
    let mut w = World::new(&[D1, D2]);
    let a = w.frame(D1, 0);
    w.grant(D1, 1, D2, a, GRANT);
    w.grant(D1, 2, D2, a, GRANT);
    let _kept = w.map(D2, D1, 1, RW | GNTMAP_DEVICE_MAP).unwrap();
    let pending = w.map(D2, D1, 2, RO).unwrap();
    // One unmap is half done when the domain dies.
    let op = GnttabUnmapGrantRef {
        host_addr: HOST_VA,
        handle: pending.handle(),
        ..Default::default()
    };
    let unmap = w.gt.unmap_grant_ref(D2, &op).unwrap();
    w.kill(D2);
    assert_eq!(status_bits(&w, D1, 1), 0);
    assert_eq!(status_bits(&w, D1, 2), 0);
    assert_eq!(w.host.counts(a), (0, 0, PageType::None));
    // Completing the stale unmap afterwards finds nothing to do.
    w.gt.complete_unmap(&mut w.host, D2, unmap);
    assert_eq!(w.gt.inconsistencies(), 1);
    assert_eq!(w.host.counts(a), (0, 0, PageType::None));
    w.kill(D1);
    assert_eq!(w.host.alloc.free_frames(), w.free_at_start);
}

#[test]
fn a_granted_table_frame_outlives_its_dead_domain_until_unmapped() {
    let mut w = World::new(&[D1, D2]);
    let table = w.gt.table_frames(D1)[0];
    w.grant(D1, 1, D2, table, GRANT_RO);
    let map = w.map(D2, D1, 1, RO).unwrap();
    let released = w.gt.release_domain(&mut w.host, D1).unwrap();
    assert_eq!(
        (released.table_frames_freed, released.table_frames_held),
        (0, 1)
    );
    for mfn in w.data[&D1].clone() {
        w.host.free_if_unused(mfn, D1);
    }
    assert_eq!(w.host.info(table).owner(), Owner::Domain(D1));
    assert_eq!(w.unmap(D2, map.handle(), HOST_VA, 0), GrantStatus::Okay);
    assert_eq!(w.host.info(table).owner(), Owner::Free);
    w.kill(D2);
    assert_eq!(w.host.alloc.free_frames(), w.free_at_start);
}

#[test]
fn a_domain_mapping_its_own_grant_releases_it_at_death() {
    let mut w = World::new(&[D1]);
    let a = w.frame(D1, 0);
    w.grant(D1, 1, D1, a, GRANT);
    let _kept = w.map(D1, D1, 1, RW).unwrap();
    let released = w.gt.release_domain(&mut w.host, D1).unwrap();
    assert_eq!(released.mappings, 1);
    assert_eq!(released.grants_still_mapped, 0);
    assert!(!w.gt.contains(D1));
    for mfn in w.data[&D1].clone() {
        w.host.free_if_unused(mfn, D1);
    }
    assert_eq!(w.host.alloc.free_frames(), w.free_at_start);
}

#[test]
fn pv_frame_refs_allocate_zeroed_owned_frames_and_free_only_unused_ones() {
    let mut host = Host::new();
    let mfn = host.alloc_table_frame(D1).unwrap();
    assert_eq!(host.info(mfn).owner(), Owner::Domain(D1));
    assert_eq!(host.mem.bytes(mfn, 0, 4096), vec![0; 4096]);
    host.take_ref(mfn, D1).unwrap();
    assert_eq!(host.take_ref(mfn, D2), Err(FrameRefused));
    assert_eq!(host.take_writable(mfn, D2), Err(FrameRefused));
    assert!(!host.free_if_unused(mfn, D1));
    host.drop_ref(mfn).unwrap();
    assert_eq!(host.drop_ref(mfn), Err(FrameRefused));
    assert_eq!(host.drop_writable(mfn), Err(FrameRefused));
    assert!(!host.free_if_unused(mfn, D2));
    assert!(host.free_if_unused(mfn, D1));
    assert!(!host.free_if_unused(mfn, D1));
}
