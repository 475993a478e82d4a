//! [`FrameRefs`] over the PV memory checker, so grant references follow the same page-type
//! discipline as the guest's own mappings (a granted frame mapped writable holds a writable
//! type reference; taking it flushes stale page-table translations first).

use hypercall_abi::DomId;

use super::{FrameRefs, FrameRefused};
use crate::mm::pv::{PageMemory, PvMm};
use crate::mm::{Mfn, Owner, PageType};

/// Entries of 8 bytes in a frame, to zero a new table frame through [`PageMemory`].
const ENTRIES_PER_PAGE: usize = 512;

impl<M: PageMemory> FrameRefs for PvMm<'_, '_, M> {
    fn take_ref(&mut self, mfn: Mfn, owner: DomId) -> Result<(), FrameRefused> {
        self.get_page(mfn, owner).map_err(|_| FrameRefused)
    }

    fn drop_ref(&mut self, mfn: Mfn) -> Result<(), FrameRefused> {
        self.put_page(mfn).map_err(|_| FrameRefused)
    }

    fn take_writable(&mut self, mfn: Mfn, owner: DomId) -> Result<(), FrameRefused> {
        self.get_page_type(mfn, owner, PageType::Writable)
            .map_err(|_| FrameRefused)
    }

    fn drop_writable(&mut self, mfn: Mfn) -> Result<(), FrameRefused> {
        self.put_page_type(mfn).map_err(|_| FrameRefused)
    }

    fn alloc_table_frame(&mut self, domid: DomId) -> Option<Mfn> {
        let mfn = self.alloc.alloc(0, Owner::Domain(domid)).ok()?;
        for index in 0..ENTRIES_PER_PAGE {
            self.mem.write_entry(mfn, index, 0);
        }
        Some(mfn)
    }

    fn free_if_unused(&mut self, mfn: Mfn, owner: DomId) -> bool {
        let unused = self.alloc.table().get(mfn).is_some_and(|page| {
            page.owner() == Owner::Domain(owner) && page.ref_count() == 0 && page.type_count() == 0
        });
        unused && self.alloc.free(mfn, 0).is_ok()
    }
}
