//! Where things live: the workspace root, cargo's target directory, and the cargo to run.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory for this workspace: `CARGO_TARGET_DIR` (or `CARGO_BUILD_TARGET_DIR`)
/// when set, taken relative to the workspace root, else `<root>/target`.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .iter()
        .find_map(|name| env::var_os(name).filter(|v| !v.is_empty()))
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"))
}

/// The cargo that started us (cargo sets `CARGO` for `cargo run` and for tests), else `cargo`.
pub fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// A directory removed (with its contents) when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory under the system temp dir, named after `label`.
    pub fn new(label: &str) -> Result<TempDir, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "hv-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = env::temp_dir().join(unique);
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
