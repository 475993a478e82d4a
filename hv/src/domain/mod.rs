//! Domains: reading guest kernel images and building a domain's start-of-day memory.
//!
//! [`elf`] parses a guest's ELF image and its Xen ELF notes into a checked [`elf::XenImage`];
//! [`pv_build`] lays out and writes a PV guest's initial memory from it (kernel, p2m list,
//! `start_info`, bootstrap page tables, stack, hypercall page) the way Xen 4.17 does. Both are
//! portable: they touch guest memory only through the [`pv_build::BuildMemory`] trait, so they
//! run under `cargo test` on the host.

pub mod elf;
pub mod pv_build;
pub mod state;
