//! Boot bundles: the one module hv gets, made from a TOML domain config (see [`crate::config`]).

use std::fs;
use std::path::{Path, PathBuf};

use crate::config::{self, Config};
use hv::bundle::DomainKind;
use hv::domain::elf::{ImageKind, XenImage};

/// Guest memory for a domain named on the command line with `--kernel` (no config file).
pub const SINGLE_KERNEL_MEMORY_KIB: u64 = 64 * 1024;

/// Serialises `config` and writes the bundle to `out`.
pub fn write(config: &Config, out: &Path) -> Result<PathBuf, String> {
    let bytes = config.to_bundle()?;
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fs::write(out, bytes).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(out.to_path_buf())
}

/// Loads the TOML config at `config_path` and writes its bundle to `out`.
pub fn from_config_file(config_path: &Path, out: &Path) -> Result<PathBuf, String> {
    // config::load's errors already name the file.
    let config = config::load(config_path)?;
    write(&config, out)
}

/// The kind of domain `kernel` makes: PVH for an image that carries only Xen's
/// `PHYS32_ENTRY` note (no PV notes), PV otherwise (an image hv cannot parse is passed on as
/// PV, for hv to report).
pub fn kernel_kind(kernel: &Path) -> Result<DomainKind, String> {
    let bytes = fs::read(kernel).map_err(|e| format!("cannot read {}: {e}", kernel.display()))?;
    Ok(match XenImage::parse(&bytes).map(|image| image.kind()) {
        Ok(ImageKind::PvhOnly) => DomainKind::Pvh,
        _ => DomainKind::Pv,
    })
}

/// Writes a bundle holding one domain booted from `kernel` with `cmdline`, of the kind the
/// image asks for (see [`kernel_kind`]).
pub fn from_kernel(kernel: &Path, cmdline: &str, out: &Path) -> Result<PathBuf, String> {
    from_kernel_as(kernel, cmdline, kernel_kind(kernel)?, out)
}

/// Writes a bundle holding one domain of `kind` booted from `kernel` with `cmdline`.
pub fn from_kernel_as(
    kernel: &Path,
    cmdline: &str,
    kind: DomainKind,
    out: &Path,
) -> Result<PathBuf, String> {
    write(
        &config::single_kernel(kernel, cmdline, SINGLE_KERNEL_MEMORY_KIB, kind),
        out,
    )
}
