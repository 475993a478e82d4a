//! Building the bootable images (bare-metal ELFs, and the flat test boot sector) with cargo,
//! and finding them for the boot tests.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::paths;

/// The bare-metal target every image is built for.
pub const TARGET: &str = "x86_64-unknown-none";

/// A bootable image: one binary of one workspace package, built for [`TARGET`] in release mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Image {
    /// The hypervisor.
    Hv,
    /// The guest kernel.
    Pvguest,
    /// The test boot sector for `type = "hvm"` domains: a flat 512-byte image, not an ELF.
    BootSector,
}

impl Image {
    /// Every image, in build order.
    pub const ALL: &'static [Image] = &[Image::Hv, Image::Pvguest, Image::BootSector];

    /// The workspace package (and binary) name.
    pub fn package(self) -> &'static str {
        match self {
            Image::Hv => "hv",
            Image::Pvguest => "pvguest",
            Image::BootSector => "bootsector",
        }
    }

    /// The environment variable through which `cargo xtask test` hands a built image to the boot
    /// tests, e.g. `XTASK_IMAGE_HV`.
    pub fn env_var(self) -> String {
        format!("XTASK_IMAGE_{}", self.package().to_uppercase())
    }

    /// Where `cargo build` puts the image inside `target_dir`.
    pub fn path_in(self, target_dir: &Path) -> PathBuf {
        target_dir.join(TARGET).join("release").join(self.package())
    }
}

/// Builds `image` into `target_dir` and returns the path of the image.
pub fn build(image: Image, target_dir: &Path) -> Result<PathBuf, String> {
    let status = Command::new(paths::cargo())
        .current_dir(paths::workspace_root())
        .args(["build", "--release", "--target", TARGET, "--package"])
        .arg(image.package())
        .arg("--bin")
        .arg(image.package())
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building {} failed ({status})", image.package()));
    }
    let path = image.path_in(target_dir);
    if !path.is_file() {
        return Err(format!(
            "cargo built {} but {} is missing",
            image.package(),
            path.display()
        ));
    }
    Ok(path)
}

/// Builds every image into the workspace's target directory.
pub fn build_all() -> Result<Vec<(Image, PathBuf)>, String> {
    let target_dir = paths::target_dir();
    Image::ALL
        .iter()
        .map(|&image| build(image, &target_dir).map(|path| (image, path)))
        .collect()
}

/// The image for a boot test: the path in [`Image::env_var`] when set (as `cargo xtask test`
/// does), else the image built once per process into the workspace's target directory. This
/// nested cargo does not wait on the `cargo test` that started the tests: cargo releases its
/// build lock before it runs test binaries.
pub fn for_tests(image: Image) -> Result<PathBuf, String> {
    if let Some(path) = env::var_os(image.env_var()).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} names {}, which does not exist",
                image.env_var(),
                path.display()
            ))
        };
    }
    type Built = Vec<(Image, Result<PathBuf, String>)>;
    static BUILT: Mutex<Built> = Mutex::new(Vec::new());
    // Holding the lock while building makes concurrent tests wait for one build, and a failed
    // build is remembered rather than retried by every test.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, result)) = built.iter().find(|(i, _)| *i == image) {
        return result.clone();
    }
    let result = build(image, &paths::target_dir());
    built.push((image, result.clone()));
    result
}
