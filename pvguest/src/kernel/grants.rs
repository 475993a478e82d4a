//! Grant tables in the kernel: this domain's own table (set up with `GNTTABOP_setup_table`
//! and its frames mapped), and a window of virtual pages for mapping frames, our own or other
//! domains' grants.

use alloc::format;
use alloc::string::String;

use hypercall_abi::grant_table::{GrantEntryV1, GRANT_ENTRIES_V1_PER_PAGE};
use pvguest::front::grant::{self, GrantTable};
use pvguest::paging::{pte, PTE_PRESENT, PTE_WRITABLE};
use pvguest::pair::PAGE_WORDS;

use super::{pv, Kernel};

/// Start of the window of pages for front-end mappings.
const WINDOW_VA: u64 = 0x6000_0000;
/// Pages in the window.
const WINDOW_PAGES: u64 = 512;

/// Virtual pages handed out one by one from the window, each with its page tables down to
/// the L1 in place (as `map_grant_ref` needs) and nothing mapped.
#[derive(Debug, Default)]
pub struct Window {
    next: u64,
}

impl Window {
    /// A fresh virtual page with nothing mapped at it.
    pub fn page(&mut self, k: &mut Kernel) -> Result<u64, String> {
        if self.next == WINDOW_PAGES {
            return Err("the front-end window is full".into());
        }
        let va = WINDOW_VA + self.next * 4096;
        self.next += 1;
        let root = k.mm.kernel_root();
        k.mm.map(root, va, 0)?;
        Ok(va)
    }

    /// Maps machine frame `mfn` writable at a fresh page and returns its address.
    pub fn map_frame(&mut self, k: &mut Kernel, mfn: u64) -> Result<u64, String> {
        let va = self.page(k)?;
        let root = k.mm.kernel_root();
        k.mm.map(root, va, pte(mfn, PTE_PRESENT | PTE_WRITABLE))?;
        Ok(va)
    }
}

/// Sets up this domain's grant table (one frame) and maps it.
pub fn own_table(k: &mut Kernel, window: &mut Window) -> Result<GrantTable, String> {
    let mut frames = [0u64; 1];
    grant::setup_table(&pv::hypercalls(), &mut frames).map_err(|e| format!("setup_table: {e}"))?;
    let va = window.map_frame(k, frames[0])?;
    // SAFETY: `va` maps the table frame hv gave this domain, for the rest of the run, and
    // nothing else refers to it; one frame holds GRANT_ENTRIES_V1_PER_PAGE entries.
    Ok(unsafe { GrantTable::new(va as *mut GrantEntryV1, GRANT_ENTRIES_V1_PER_PAGE as u32) })
}

/// A copy of the page mapped at `va`.
///
/// # Safety
///
/// `va` must map a readable page.
pub unsafe fn read_page(va: u64) -> [u64; PAGE_WORDS] {
    let mut out = [0u64; PAGE_WORDS];
    for (i, w) in out.iter_mut().enumerate() {
        // SAFETY: the caller guarantees the page is mapped; i < 512 stays inside it. Volatile:
        // another domain may be writing it.
        *w = unsafe { (va as *const u64).add(i).read_volatile() };
    }
    out
}

/// Writes `words` to the page mapped at `va`.
///
/// # Safety
///
/// `va` must map a writable page that no Rust reference covers.
pub unsafe fn write_page(va: u64, words: &[u64; PAGE_WORDS]) {
    for (i, &w) in words.iter().enumerate() {
        // SAFETY: as the caller guarantees; i < 512 stays inside the page.
        unsafe { (va as *mut u64).add(i).write_volatile(w) };
    }
}
