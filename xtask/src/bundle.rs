//! Boot bundles: the one module hv gets, made from a TOML domain config (see [`crate::config`]).

use std::fs;
use std::path::{Path, PathBuf};

use crate::config::{self, Config};
use hv::bundle::DomainKind;
use hv::domain::elf::{ImageKind, XenImage};
use hv::hvm::pvh_build::check_boot_sector;

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
/// `PHYS32_ENTRY` note (no PV notes), HVM for a boot sector (no ELF, the 0x55 0xaa
/// signature), PV otherwise (an image hv cannot parse is passed on as PV, for hv to report).
pub fn kernel_kind(kernel: &Path) -> Result<DomainKind, String> {
    let bytes = fs::read(kernel).map_err(|e| format!("cannot read {}: {e}", kernel.display()))?;
    Ok(match XenImage::parse(&bytes).map(|image| image.kind()) {
        Ok(ImageKind::PvhOnly) => DomainKind::Pvh,
        Err(_) if check_boot_sector(&bytes).is_ok() => DomainKind::Hvm,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::TempDir;

    #[test]
    fn a_boot_sector_is_an_hvm_domain() {
        let dir = TempDir::new("kernel-kind").unwrap();
        let mut sector = vec![0xf4u8; 512];
        sector[510] = 0x55;
        sector[511] = 0xaa;
        let path = dir.path().join("boot.bin");
        fs::write(&path, &sector).unwrap();
        assert_eq!(kernel_kind(&path), Ok(DomainKind::Hvm));
        sector[511] = 0;
        fs::write(&path, &sector).unwrap();
        assert_eq!(kernel_kind(&path), Ok(DomainKind::Pv));
    }
}
