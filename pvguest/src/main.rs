//! The bootable pvguest image. The portable logic is in the library; the bare-metal kernel
//! (entry code, traps, paging, the selftest) is the `kernel` module, built only for the
//! bare-metal target.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod kernel;

/// On the host the image has nothing to run: it is a guest kernel for Xen (or hv).
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("pvguest is a guest kernel image: boot it under Xen or hv (`cargo xtask`)");
    std::process::exit(2);
}
