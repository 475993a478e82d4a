//! Host-side tooling shared by the `xtask` command and the boot tests in `tests/`: building
//! images and boot bundles, making GRUB ISOs, installing host tools, and running QEMU/Bochs.

pub mod bench;
pub mod bundle;
pub mod config;
pub mod images;
pub mod iso;
pub mod paths;
pub mod runner;
pub mod size;
pub mod tools;
pub mod xen;
