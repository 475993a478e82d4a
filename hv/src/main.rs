//! The bootable hv image. Everything lives in the library; this file only gives the bare-metal
//! link its root (the entry points are in `hv::arch::x86_64::boot`).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use hv as _;

/// On the host the image has nothing to run; `cargo xtask run` builds and boots the real one.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("hv is a bare-metal image: boot it with `cargo xtask run`");
    std::process::exit(2);
}
