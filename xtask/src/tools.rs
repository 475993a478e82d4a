//! The host programs the runner needs, and installing them with apt-get when they are missing.

use std::env;
use std::path::Path;
use std::process::Command;
use std::sync::Once;

/// One thing to look for and the Debian package that provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// A program on `PATH` (no `/`) or an absolute path that must exist.
    pub needs: &'static str,
    pub package: &'static str,
}

const QEMU: &[Requirement] = &[Requirement {
    needs: "qemu-system-x86_64",
    package: "qemu-system-x86",
}];

const ISO: &[Requirement] = &[
    Requirement {
        needs: "grub-mkrescue",
        package: "grub-common",
    },
    Requirement {
        needs: crate::iso::GRUB_I386_PC,
        package: "grub-pc-bin",
    },
    Requirement {
        needs: "xorriso",
        package: "xorriso",
    },
    Requirement {
        needs: "mformat",
        package: "mtools",
    },
];

const BOCHS: &[Requirement] = &[
    Requirement {
        needs: "bochs-bin",
        package: "bochs",
    },
    Requirement {
        needs: crate::runner::BOCHS_BIOS,
        package: "bochsbios",
    },
    Requirement {
        needs: crate::runner::BOCHS_VGA_BIOS,
        package: "vgabios",
    },
];

/// What a run with QEMU needs.
pub fn for_qemu() -> Vec<Requirement> {
    QEMU.to_vec()
}

/// What making a GRUB ISO needs.
pub fn for_iso() -> Vec<Requirement> {
    ISO.to_vec()
}

/// What a run with Bochs needs (the ISO tools included).
pub fn for_bochs() -> Vec<Requirement> {
    [BOCHS, ISO].concat()
}

/// Everything any boot test needs.
pub fn for_everything() -> Vec<Requirement> {
    [QEMU, BOCHS, ISO].concat()
}

/// Whether `requirement` is satisfied on this machine.
pub fn present(requirement: &Requirement) -> bool {
    if requirement.needs.contains('/') {
        return Path::new(requirement.needs).exists();
    }
    env::var_os("PATH").is_some_and(|path| {
        env::split_paths(&path).any(|dir| dir.join(requirement.needs).is_file())
    })
}

/// Packages still to install for `requirements`, without duplicates.
pub fn missing_packages(requirements: &[Requirement]) -> Vec<&'static str> {
    let mut packages = Vec::new();
    for requirement in requirements.iter().filter(|r| !present(r)) {
        if !packages.contains(&requirement.package) {
            packages.push(requirement.package);
        }
    }
    packages
}

/// Makes sure `requirements` are met: installs the missing packages with apt-get when running as
/// root on a machine that has it, otherwise fails with the command to run.
pub fn ensure(requirements: &[Requirement]) -> Result<(), String> {
    let packages = missing_packages(requirements);
    if packages.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get install -y {}", packages.join(" "));
    let can_install = nix::unistd::geteuid().is_root()
        && present(&Requirement {
            needs: "apt-get",
            package: "apt",
        });
    if !can_install {
        return Err(format!(
            "missing host tools; install them with:\n  sudo apt-get update && sudo {command}"
        ));
    }
    static UPDATE: Once = Once::new();
    let mut update_result = Ok(());
    UPDATE.call_once(|| update_result = apt_get(&["update"]));
    update_result?;
    eprintln!("xtask: {command}");
    let mut args = vec!["install", "-y"];
    args.extend(&packages);
    apt_get(&args)?;
    let still_missing = missing_packages(requirements);
    if still_missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "still missing after apt-get install: {}",
            still_missing.join(" ")
        ))
    }
}

fn apt_get(args: &[&str]) -> Result<(), String> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("apt-get {} failed ({status})", args.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_program_is_missing_once() {
        let absent = Requirement {
            needs: "no-such-program-xtask-test",
            package: "pkg",
        };
        assert_eq!(missing_packages(&[absent, absent]), ["pkg"]);
    }

    #[test]
    fn absolute_path_is_checked_directly() {
        let root = Requirement {
            needs: "/",
            package: "base",
        };
        assert!(present(&root));
        assert!(missing_packages(&[root]).is_empty());
    }
}
