//! GRUB rescue ISOs (for Bochs and real machines): `boot/hv`, optionally `boot/bundle.bin`,
//! and a grub.cfg that boots hv through multiboot2 at once.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::paths::TempDir;

/// GRUB's BIOS platform files (Debian's grub-pc-bin); passed explicitly so an installed EFI
/// platform cannot change what the ISO boots with.
pub const GRUB_I386_PC: &str = "/usr/lib/grub/i386-pc";

/// The grub.cfg that boots `/boot/hv` with `cmdline`, plus the bundle module when there is one.
pub fn grub_cfg(cmdline: &str, with_bundle: bool) -> String {
    let mut cfg = String::from("set timeout=0\n");
    cfg.push_str("multiboot2 /boot/hv");
    for word in cmdline.split_whitespace() {
        cfg.push(' ');
        cfg.push_str(&grub_quote(word));
    }
    cfg.push('\n');
    if with_bundle {
        cfg.push_str("module2 /boot/bundle.bin bundle\n");
    }
    cfg.push_str("boot\n");
    cfg
}

/// Quotes one word for GRUB's shell-like script language when it holds anything special.
fn grub_quote(word: &str) -> String {
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-=,.:/+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Makes a bootable ISO at `out` holding `hv` and, if given, `bundle`.
pub fn make(hv: &Path, bundle: Option<&Path>, cmdline: &str, out: &Path) -> Result<(), String> {
    let staging = TempDir::new("iso")?;
    let boot = staging.path().join("boot");
    let grub = boot.join("grub");
    fs::create_dir_all(&grub).map_err(|e| format!("cannot create {}: {e}", grub.display()))?;
    copy(hv, &boot.join("hv"))?;
    if let Some(bundle) = bundle {
        copy(bundle, &boot.join("bundle.bin"))?;
    }
    let cfg_path = grub.join("grub.cfg");
    fs::write(&cfg_path, grub_cfg(cmdline, bundle.is_some()))
        .map_err(|e| format!("cannot write {}: {e}", cfg_path.display()))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let output = Command::new("grub-mkrescue")
        .arg("-d")
        .arg(GRUB_I386_PC)
        .arg("-o")
        .arg(out)
        .arg(staging.path())
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "grub-mkrescue failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_boots_hv_with_bundle() {
        assert_eq!(
            grub_cfg("console=com1 hvtest=ud2", true),
            "set timeout=0\n\
             multiboot2 /boot/hv console=com1 hvtest=ud2\n\
             module2 /boot/bundle.bin bundle\n\
             boot\n"
        );
    }

    #[test]
    fn grub_cfg_without_bundle_or_cmdline() {
        assert_eq!(
            grub_cfg("", false),
            "set timeout=0\nmultiboot2 /boot/hv\nboot\n"
        );
    }

    #[test]
    fn special_words_are_quoted() {
        assert_eq!(grub_quote("a;b"), "'a;b'");
        assert_eq!(grub_quote("it's"), r"'it'\''s'");
        assert_eq!(grub_quote("loglvl=all"), "loglvl=all");
    }
}
