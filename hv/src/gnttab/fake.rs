//! A host for the grant-table tests: a real frame allocator and frame table (references go
//! through [`PvMm`], as on hardware), and page contents in a map. The fake memory can race
//! hv: values queued in `races` are written into an entry's header just before each of hv's
//! compare-and-swaps, as a guest vCPU would.

use std::collections::{HashMap, VecDeque};
use std::vec::Vec;

use hypercall_abi::grant_table::{
    GnttabMapGrantRef, GnttabUnmapGrantRef, GrantEntryV1, GrantHandle, GrantRef, GrantStatus,
};
use hypercall_abi::DomId;

use super::{
    header, split_header, FrameRefs, FrameRefused, GrantConfig, GrantMap, GrantTables, GuestFrames,
    PageCopy, SharedEntries, ENTRIES_PER_FRAME,
};
use crate::mm::pv::{PageMemory, PvMm, HV_L4_SLOTS};
use crate::mm::{FrameAllocator, FrameTable, Mfn, Owner, PageInfo, PageType};

/// First frame of the fake machine.
pub const BASE: u64 = 0x100;
/// Frames of the fake machine.
pub const NR_FRAMES: u64 = 128;
/// Data frames each test domain gets.
pub const DATA_FRAMES: usize = 4;
/// The guest virtual address test mappings use for handle `i`: `HOST_VA + i * 4096`.
pub const HOST_VA: u64 = 0x4000_0000;

/// Page contents and the guest's concurrent writes.
#[derive(Default)]
pub struct Mem {
    pages: HashMap<u64, Vec<u8>>,
    /// Headers a "guest vCPU" writes into the entry just before each of hv's swaps.
    pub races: VecDeque<u32>,
    pub flushes: usize,
}

impl Mem {
    fn page_mut(&mut self, mfn: Mfn) -> &mut Vec<u8> {
        self.pages.entry(mfn.0).or_insert_with(|| vec![0; 4096])
    }

    pub fn bytes(&self, mfn: Mfn, offset: usize, len: usize) -> Vec<u8> {
        match self.pages.get(&mfn.0) {
            Some(page) => page[offset..offset + len].to_vec(),
            None => vec![0; len],
        }
    }

    pub fn fill(&mut self, mfn: Mfn, seed: u8) {
        for (i, byte) in self.page_mut(mfn).iter_mut().enumerate() {
            *byte = seed.wrapping_add(i as u8).wrapping_mul(7);
        }
    }

    fn u32_at(&self, mfn: Mfn, offset: usize) -> u32 {
        let b = self.bytes(mfn, offset, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn set_u32_at(&mut self, mfn: Mfn, offset: usize, value: u32) {
        self.page_mut(mfn)[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// The guest writes a whole entry.
    pub fn guest_write(&mut self, frame: Mfn, index: usize, entry: GrantEntryV1) {
        self.set_u32_at(frame, index * 8, header(entry.flags, entry.domid));
        self.set_u32_at(frame, index * 8 + 4, entry.frame);
    }

    /// The guest's atomic compare-and-swap of an entry's header.
    pub fn guest_cmpxchg(&mut self, frame: Mfn, index: usize, expected: u32, new: u32) -> u32 {
        let found = self.u32_at(frame, index * 8);
        if found == expected {
            self.set_u32_at(frame, index * 8, new);
        }
        found
    }
}

impl PageMemory for Mem {
    fn read_entry(&self, table: Mfn, index: usize) -> u64 {
        let b = self.bytes(table, index * 8, 8);
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
    fn write_entry(&mut self, table: Mfn, index: usize, value: u64) {
        self.page_mut(table)[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
    }
    fn set_m2p(&mut self, _mfn: Mfn, _pfn: u64) {}
    fn flush_domain_tlbs(&mut self, _domid: DomId) {
        self.flushes += 1;
    }
}

impl SharedEntries for Mem {
    fn read_entry(&self, frame: Mfn, index: usize) -> GrantEntryV1 {
        let (flags, domid) = split_header(self.u32_at(frame, index * 8));
        GrantEntryV1 {
            flags,
            domid,
            frame: self.u32_at(frame, index * 8 + 4),
        }
    }
    fn cmpxchg_header(&mut self, frame: Mfn, index: usize, expected: u32, new: u32) -> u32 {
        if let Some(raced) = self.races.pop_front() {
            self.set_u32_at(frame, index * 8, raced);
        }
        self.guest_cmpxchg(frame, index, expected, new)
    }
    fn clear_flags(&mut self, frame: Mfn, index: usize, bits: u16) {
        let raw = self.u32_at(frame, index * 8);
        self.set_u32_at(frame, index * 8, raw & !u32::from(bits));
    }
}

impl GuestFrames for Mem {
    fn gfn_to_mfn(&self, _domid: DomId, gfn: u64) -> Option<Mfn> {
        Some(Mfn(gfn))
    }
}

impl PageCopy for Mem {
    fn copy_bytes(&mut self, dst: Mfn, dst_offset: usize, src: Mfn, src_offset: usize, len: usize) {
        let data = self.bytes(src, src_offset, len);
        self.page_mut(dst)[dst_offset..dst_offset + len].copy_from_slice(&data);
    }
}

/// The frame allocator and memory: what the arch layer's environment holds.
pub struct Host {
    pub alloc: FrameAllocator<'static>,
    pub mem: Mem,
    /// When set, table-frame allocations beyond this many fail.
    pub table_frames_left: Option<usize>,
}

impl Host {
    pub fn new() -> Host {
        let storage = Box::leak(vec![PageInfo::NOT_RAM; NR_FRAMES as usize].into_boxed_slice());
        let table = FrameTable::new(storage, Mfn(BASE)).unwrap();
        let mut alloc = FrameAllocator::new(table);
        alloc
            .add_free_range(Mfn(BASE), Mfn(BASE + NR_FRAMES))
            .unwrap();
        Host {
            alloc,
            mem: Mem::default(),
            table_frames_left: None,
        }
    }

    fn pv(&mut self) -> PvMm<'_, 'static, Mem> {
        PvMm::new(&mut self.alloc, &mut self.mem, [0; HV_L4_SLOTS])
    }

    pub fn info(&self, mfn: Mfn) -> PageInfo {
        *self.alloc.table().get(mfn).unwrap()
    }

    /// (general references, type references, type) of a frame.
    pub fn counts(&self, mfn: Mfn) -> (u32, u32, PageType) {
        let page = self.info(mfn);
        (page.ref_count(), page.type_count(), page.page_type())
    }
}

impl SharedEntries for Host {
    fn read_entry(&self, frame: Mfn, index: usize) -> GrantEntryV1 {
        SharedEntries::read_entry(&self.mem, frame, index)
    }
    fn cmpxchg_header(&mut self, frame: Mfn, index: usize, expected: u32, new: u32) -> u32 {
        self.mem.cmpxchg_header(frame, index, expected, new)
    }
    fn clear_flags(&mut self, frame: Mfn, index: usize, bits: u16) {
        self.mem.clear_flags(frame, index, bits)
    }
}

impl GuestFrames for Host {
    fn gfn_to_mfn(&self, domid: DomId, gfn: u64) -> Option<Mfn> {
        self.mem.gfn_to_mfn(domid, gfn)
    }
}

impl PageCopy for Host {
    fn copy_bytes(&mut self, dst: Mfn, dst_offset: usize, src: Mfn, src_offset: usize, len: usize) {
        self.mem.copy_bytes(dst, dst_offset, src, src_offset, len)
    }
}

impl FrameRefs for Host {
    fn take_ref(&mut self, mfn: Mfn, owner: DomId) -> Result<(), FrameRefused> {
        self.pv().take_ref(mfn, owner)
    }
    fn drop_ref(&mut self, mfn: Mfn) -> Result<(), FrameRefused> {
        self.pv().drop_ref(mfn)
    }
    fn take_writable(&mut self, mfn: Mfn, owner: DomId) -> Result<(), FrameRefused> {
        self.pv().take_writable(mfn, owner)
    }
    fn drop_writable(&mut self, mfn: Mfn) -> Result<(), FrameRefused> {
        self.pv().drop_writable(mfn)
    }
    fn alloc_table_frame(&mut self, domid: DomId) -> Option<Mfn> {
        match &mut self.table_frames_left {
            Some(0) => return None,
            Some(left) => *left -= 1,
            None => {}
        }
        self.pv().alloc_table_frame(domid)
    }
    fn free_if_unused(&mut self, mfn: Mfn, owner: DomId) -> bool {
        self.pv().free_if_unused(mfn, owner)
    }
}

/// Domains with grant tables and data frames on a [`Host`].
pub struct World {
    pub host: Host,
    pub gt: GrantTables,
    pub data: HashMap<DomId, Vec<Mfn>>,
    /// Free frames before any domain existed.
    pub free_at_start: u64,
}

impl World {
    pub fn new(domains: &[DomId]) -> World {
        World::with_config(domains, GrantConfig::default())
    }

    pub fn with_config(domains: &[DomId], config: GrantConfig) -> World {
        let host = Host::new();
        let free_at_start = host.alloc.free_frames();
        let mut world = World {
            host,
            gt: GrantTables::new(),
            data: HashMap::new(),
            free_at_start,
        };
        for &d in domains {
            world.gt.add_domain(&mut world.host, d, config).unwrap();
            let frames: Vec<Mfn> = (0..DATA_FRAMES)
                .map(|i| {
                    let mfn = world.host.alloc.alloc(0, Owner::Domain(d)).unwrap();
                    world.host.mem.fill(mfn, d as u8 * 16 + i as u8);
                    mfn
                })
                .collect();
            world.data.insert(d, frames);
        }
        world
    }

    pub fn frame(&self, d: DomId, i: usize) -> Mfn {
        self.data[&d][i]
    }

    /// Where entry `gref` of `g` lives.
    pub fn location(&self, g: DomId, gref: GrantRef) -> (Mfn, usize) {
        let frames = self.gt.table_frames(g);
        (
            frames[(gref / ENTRIES_PER_FRAME) as usize],
            (gref % ENTRIES_PER_FRAME) as usize,
        )
    }

    pub fn entry(&self, g: DomId, gref: GrantRef) -> GrantEntryV1 {
        let (frame, index) = self.location(g, gref);
        SharedEntries::read_entry(&self.host.mem, frame, index)
    }

    /// `g` grants `gref` to `grantee` for `mfn` (the guest writes the entry).
    pub fn grant(&mut self, g: DomId, gref: GrantRef, grantee: DomId, mfn: Mfn, flags: u16) {
        let (frame, index) = self.location(g, gref);
        let entry = GrantEntryV1 {
            flags,
            domid: grantee,
            frame: mfn.0 as u32,
        };
        self.host.mem.guest_write(frame, index, entry);
    }

    /// The guest's end of access (Linux's `gnttab_end_foreign_access_ref`): clears the entry
    /// unless `GTF_reading`/`GTF_writing` are set. Returns whether it ended access.
    pub fn end_access(&mut self, g: DomId, gref: GrantRef) -> bool {
        use hypercall_abi::grant_table::{GTF_READING, GTF_WRITING};
        let (frame, index) = self.location(g, gref);
        let e = SharedEntries::read_entry(&self.host.mem, frame, index);
        if e.flags & (GTF_READING | GTF_WRITING) != 0 {
            return false;
        }
        let old = header(e.flags, e.domid);
        self.host.mem.guest_cmpxchg(frame, index, old, 0) == old
    }

    pub fn map_op(g: DomId, gref: GrantRef, flags: u32, host_addr: u64) -> GnttabMapGrantRef {
        GnttabMapGrantRef {
            host_addr,
            flags,
            ref_: gref,
            dom: g,
            ..Default::default()
        }
    }

    /// A whole `map_grant_ref` op as the arch layer runs it (the PTE always installs).
    pub fn map(
        &mut self,
        m: DomId,
        g: DomId,
        gref: GrantRef,
        flags: u32,
    ) -> Result<GrantMap, GrantStatus> {
        let op = World::map_op(g, gref, flags, HOST_VA);
        self.gt.map_grant_ref(&mut self.host, m, &op)
    }

    /// A whole `unmap_grant_ref` op as the arch layer runs it (the PTE always goes).
    pub fn unmap(
        &mut self,
        m: DomId,
        handle: GrantHandle,
        host_addr: u64,
        dev_bus_addr: u64,
    ) -> GrantStatus {
        let op = GnttabUnmapGrantRef {
            host_addr,
            dev_bus_addr,
            handle,
            ..Default::default()
        };
        match self.gt.unmap_grant_ref(m, &op) {
            Ok(unmap) => {
                self.host.mem.flushes += 1;
                self.gt.complete_unmap(&mut self.host, m, unmap);
                GrantStatus::Okay
            }
            Err(status) => status,
        }
    }

    /// The arch layer's domain teardown after `release_domain`: frees every frame still the
    /// domain's and unused.
    pub fn kill(&mut self, d: DomId) {
        self.gt.release_domain(&mut self.host, d);
        for mfn in self.data[&d].clone() {
            self.host.free_if_unused(mfn, d);
        }
    }
}
