//! The human-written domain config (TOML) and its conversion into a boot bundle.
//!
//! hv never parses TOML: `xtask` reads the config, checks it by the same rules hv applies
//! ([`hv::bundle::validate_settings`]), reads the images and writes a bundle with
//! [`hv::bundle::encode`]. Every error is one line, prefixed with the config file's path.
//!
//! ```toml
//! [[domain]]
//! name = "dom0"
//! kernel = "target/x86_64-unknown-none/release/pvguest"  # relative to this file, or absolute
//! cmdline = "selftest"    # optional, default ""
//! memory = "32M"          # "65536K", "32M", "1G", or an integer number of MiB
//! max_memory = "64M"      # optional, default: memory
//! vcpus = 1               # optional, default 1
//! type = "pv"             # "pv" (default), "pvh", or "hvm" (kernel: a raw boot sector)
//! privileged = true       # optional, default false: the control domain
//! module = "initrd.img"   # optional, relative like kernel
//! ```

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use hv::bundle::{self, BundleError, DomainInput, DomainKind};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A loaded, validated config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub domains: Vec<DomainConfig>,
    /// Where the config came from; every error message starts with it.
    source: PathBuf,
}

/// One domain; paths are already resolved against the config file's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    pub name: String,
    pub kernel: PathBuf,
    pub module: Option<PathBuf>,
    pub cmdline: String,
    pub memory_kib: u64,
    pub max_memory_kib: u64,
    pub vcpus: u32,
    pub kind: DomainKind,
    pub privileged: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    domain: Vec<RawDomain>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: String,
    kernel: PathBuf,
    module: Option<PathBuf>,
    #[serde(default)]
    cmdline: String,
    memory: MemorySize,
    max_memory: Option<MemorySize>,
    #[serde(default = "one")]
    vcpus: u32,
    #[serde(rename = "type", default)]
    kind: RawKind,
    #[serde(default)]
    privileged: bool,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    #[default]
    Pv,
    Pvh,
    Hvm,
}

/// A memory size in KiB, written as `"65536K"`, `"32M"`, `"1G"` or an integer number of MiB.
struct MemorySize(u64);

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MemorySizeVisitor)
    }
}

struct MemorySizeVisitor;

impl Visitor<'_> for MemorySizeVisitor {
    type Value = MemorySize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a size such as "65536K", "32M", "1G", or an integer number of MiB"#)
    }

    fn visit_i64<E: de::Error>(self, mib: i64) -> Result<MemorySize, E> {
        u64::try_from(mib)
            .ok()
            .and_then(|mib| mib.checked_mul(1024))
            .map(MemorySize)
            .ok_or_else(|| E::custom(format!("memory size {mib} MiB is out of range")))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<MemorySize, E> {
        parse_size_kib(text).map(MemorySize).map_err(E::custom)
    }
}

/// Parses `"<digits><K|M|G>"` (suffix case-insensitive) into KiB.
fn parse_size_kib(text: &str) -> Result<u64, String> {
    let bad = || format!(r#"invalid memory size "{text}": write e.g. "65536K", "32M" or "1G""#);
    let split = text
        .len()
        .checked_sub(1)
        .filter(|&at| text.is_char_boundary(at));
    let (digits, suffix) = split.map(|at| text.split_at(at)).ok_or_else(bad)?;
    let unit_kib: u64 = match suffix {
        "K" | "k" => 1,
        "M" | "m" => 1024,
        "G" | "g" => 1024 * 1024,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_kib))
        .ok_or_else(|| format!(r#"memory size "{text}" is out of range"#))
}

/// Reads and checks the config at `path`: at least one domain, unique names, the rules hv
/// applies to every domain, and image files that exist.
pub fn load(path: &Path) -> Result<Config, String> {
    let at = path.display();
    let text = fs::read_to_string(path).map_err(|e| format!("{at}: cannot read: {e}"))?;
    let raw: RawConfig = toml::from_str(&text).map_err(|e| {
        let location = e
            .span()
            .map_or(String::new(), |span| line_column(&text, span.start));
        format!("{at}{location}: {}", e.message().trim_end())
    })?;

    let base = path.parent().unwrap_or(Path::new(""));
    let domains: Vec<DomainConfig> = raw
        .domain
        .into_iter()
        .map(|d| DomainConfig {
            max_memory_kib: d.max_memory.as_ref().map_or(d.memory.0, |max| max.0),
            memory_kib: d.memory.0,
            kernel: base.join(d.kernel),
            module: d.module.map(|m| base.join(m)),
            name: d.name,
            cmdline: d.cmdline,
            vcpus: d.vcpus,
            kind: match d.kind {
                RawKind::Pv => DomainKind::Pv,
                RawKind::Pvh => DomainKind::Pvh,
                RawKind::Hvm => DomainKind::Hvm,
            },
            privileged: d.privileged,
        })
        .collect();

    if domains.is_empty() {
        return Err(format!("{at}: no [[domain]] tables"));
    }
    if domains.len() > bundle::MAX_DOMAINS as usize {
        let count = domains.len();
        return Err(format!(
            "{at}: {count} domains, more than {}",
            bundle::MAX_DOMAINS
        ));
    }
    for (index, domain) in domains.iter().enumerate() {
        let name = &domain.name;
        if let Some(first) = domains[..index].iter().position(|d| d.name == *name) {
            return Err(format!(
                "{at}: domain name {name:?} is used twice (domains {first} and {index})"
            ));
        }
        bundle::validate_settings(
            name,
            &domain.cmdline,
            domain.memory_kib,
            domain.max_memory_kib,
            domain.vcpus,
        )
        .map_err(|fault| format!("{at}: domain {name:?}: {fault}"))?;
        let images = [
            ("kernel", Some(&domain.kernel)),
            ("module", domain.module.as_ref()),
        ];
        for (what, image) in images {
            if let Some(image) = image.filter(|image| !image.is_file()) {
                return Err(format!(
                    "{at}: domain {name:?}: {what} {} is not a file",
                    image.display()
                ));
            }
        }
    }
    Ok(Config {
        domains,
        source: path.to_path_buf(),
    })
}

/// `:line:column` (1-based) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(":{line}:{column}")
}

/// The config for `cargo xtask run --kernel ELF`: one privileged domain of `kind` named "dom0".
/// It is checked when it becomes a bundle; errors then start with the kernel's path.
pub fn single_kernel(kernel: &Path, cmdline: &str, memory_kib: u64, kind: DomainKind) -> Config {
    Config {
        domains: vec![DomainConfig {
            name: "dom0".into(),
            kernel: kernel.to_path_buf(),
            module: None,
            cmdline: cmdline.into(),
            memory_kib,
            max_memory_kib: memory_kib,
            vcpus: 1,
            kind,
            privileged: true,
        }],
        source: kernel.to_path_buf(),
    }
}

impl Config {
    /// Where the config came from: the TOML file, or the kernel for [`single_kernel`].
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Reads every image and encodes the boot bundle hv loads.
    pub fn to_bundle(&self) -> Result<Vec<u8>, String> {
        let at = self.source.display();
        let read = |domain: &DomainConfig, what: &str, path: &Path| {
            fs::read(path).map_err(|e| {
                let name = &domain.name;
                format!(
                    "{at}: domain {name:?}: cannot read {what} {}: {e}",
                    path.display()
                )
            })
        };
        let inputs = self
            .domains
            .iter()
            .map(|d| {
                Ok(DomainInput {
                    name: d.name.clone(),
                    kernel: read(d, "kernel", &d.kernel)?,
                    module: d
                        .module
                        .as_deref()
                        .map(|m| read(d, "module", m))
                        .transpose()?,
                    cmdline: d.cmdline.clone(),
                    memory_kib: d.memory_kib,
                    max_memory_kib: d.max_memory_kib,
                    vcpus: d.vcpus,
                    kind: d.kind,
                    privileged: d.privileged,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        bundle::encode(&inputs).map_err(|e| match e {
            BundleError::Domain { index, fault } => {
                let name = inputs.get(index).map_or("?", |d| d.name.as_str());
                format!("{at}: domain {name:?}: {fault}")
            }
            other => format!("{at}: {other}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hv::bundle::Bundle;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let unique = format!(
                "xtask-config-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let dir = std::env::temp_dir().join(unique);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, contents).unwrap();
            path
        }

        /// Writes `toml` as `domains.toml` next to a kernel `k.elf` and loads it.
        fn load(&self, toml: &str) -> Result<Config, String> {
            self.write("k.elf", b"\x7fELF kernel");
            load(&self.write("domains.toml", toml))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const MINIMAL: &str = "[[domain]]\nname = \"d\"\nkernel = \"k.elf\"\nmemory = 32\n";

    #[test]
    fn full_example_loads_with_paths_resolved_from_the_config_directory() {
        let dir = TempDir::new();
        dir.write("images/initrd", b"ramdisk");
        let absolute = dir.write("abs/guest.elf", b"\x7fELF guest");
        let toml = format!(
            r#"
# Two domains
[[domain]]
name = "dom0"
kernel = "k.elf"     # relative to this file
cmdline = "selftest"
memory = "32M"
max_memory = "64M"
vcpus = 2
type = "pv"
privileged = true
module = "images/initrd"

[[domain]]
name = "guest"
kernel = "{}"
memory = "65536K"
type = "pvh"

[[domain]]
name = "sector"
kernel = "k.elf"
memory = 1
type = "hvm"
"#,
            absolute.display()
        );
        let config = dir.load(&toml).unwrap();
        assert_eq!(
            config.domains,
            [
                DomainConfig {
                    name: "dom0".into(),
                    kernel: dir.0.join("k.elf"),
                    module: Some(dir.0.join("images/initrd")),
                    cmdline: "selftest".into(),
                    memory_kib: 32 * 1024,
                    max_memory_kib: 64 * 1024,
                    vcpus: 2,
                    kind: DomainKind::Pv,
                    privileged: true,
                },
                DomainConfig {
                    name: "guest".into(),
                    kernel: absolute,
                    module: None,
                    cmdline: String::new(),
                    memory_kib: 64 * 1024,
                    max_memory_kib: 64 * 1024,
                    vcpus: 1,
                    kind: DomainKind::Pvh,
                    privileged: false,
                },
                DomainConfig {
                    name: "sector".into(),
                    kernel: dir.0.join("k.elf"),
                    module: None,
                    cmdline: String::new(),
                    memory_kib: 1024,
                    max_memory_kib: 1024,
                    vcpus: 1,
                    kind: DomainKind::Hvm,
                    privileged: false,
                },
            ]
        );
        assert_eq!(config.source(), dir.0.join("domains.toml"));
    }

    #[test]
    fn memory_sizes_parse_in_every_accepted_form() {
        assert_eq!(parse_size_kib("65536K"), Ok(65536));
        assert_eq!(parse_size_kib("32M"), Ok(32 * 1024));
        assert_eq!(parse_size_kib("32m"), Ok(32 * 1024));
        assert_eq!(parse_size_kib("1G"), Ok(1024 * 1024));
        for bad in [
            "", "32", "M", "32X", "-1M", "+1M", "3 M", "1.5G", "32MiB", "é",
        ] {
            let err = parse_size_kib(bad).unwrap_err();
            assert!(err.starts_with("invalid memory size"), "{bad:?}: {err}");
        }
        assert!(parse_size_kib("99999999999999999999G")
            .unwrap_err()
            .contains("out of range"));
        let dir = TempDir::new();
        let config = dir.load(MINIMAL).unwrap();
        assert_eq!(config.domains[0].memory_kib, 32 * 1024);
    }

    #[test]
    fn a_misspelt_key_names_the_key_the_file_and_the_line() {
        let dir = TempDir::new();
        let err = dir.load(&format!("{MINIMAL}vcpu = 2\n")).unwrap_err();
        let path = dir.0.join("domains.toml");
        assert!(
            err.starts_with(&format!("{}:5:1: unknown field `vcpu`", path.display())),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        let err = dir.load(&format!("domains = []\n{MINIMAL}")).unwrap_err();
        assert!(err.contains("unknown field `domains`"), "{err}");
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        let dir = TempDir::new();
        let cases = [
            (
                MINIMAL.replace("memory = 32", "memory = \"32X\""),
                "invalid memory size \"32X\"",
            ),
            (
                MINIMAL.replace("memory = 32", "memory = -1"),
                "memory size -1 MiB is out of range",
            ),
            (
                format!("{MINIMAL}type = \"vmx\"\n"),
                "unknown variant `vmx`",
            ),
            (
                MINIMAL.replace("name = \"d\"\n", ""),
                "missing field `name`",
            ),
            (
                MINIMAL.replace("kernel = \"k.elf\"\n", ""),
                "missing field `kernel`",
            ),
            (
                format!("{MINIMAL}vcpus = 0\n"),
                "domain \"d\": vcpus 0 not in 1..=64",
            ),
            (
                format!("{MINIMAL}max_memory = \"16M\"\n"),
                "domain \"d\": memory 32768 KiB is more than max memory 16384 KiB",
            ),
            (
                MINIMAL.replace("\"d\"", "\"my domain\""),
                "domain \"my domain\": name is not printable ASCII without spaces",
            ),
            ("# nothing\n".into(), "no [[domain]] tables"),
            (
                format!("{MINIMAL}{}", MINIMAL.replace("32", "64")),
                "domain name \"d\" is used twice (domains 0 and 1)",
            ),
            (
                MINIMAL.replace("k.elf", "missing.elf"),
                "domain \"d\": kernel ",
            ),
            (
                format!("{MINIMAL}module = \"nope\"\n"),
                "domain \"d\": module ",
            ),
        ];
        let prefix = format!("{}", dir.0.join("domains.toml").display());
        for (toml, expected) in cases {
            let err = dir.load(&toml).unwrap_err();
            assert!(err.starts_with(&prefix), "{err}");
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = dir
            .load(&MINIMAL.replace("k.elf", "missing.elf"))
            .unwrap_err();
        assert!(err.ends_with("missing.elf is not a file"), "{err}");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let dir = TempDir::new();
        let path = dir.0.join("absent.toml");
        let err = load(&path).unwrap_err();
        assert!(
            err.starts_with(&format!("{}: cannot read: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn to_bundle_carries_every_domain_into_the_bundle() {
        let dir = TempDir::new();
        dir.write("initrd", b"ramdisk bytes");
        let toml = format!(
            "{MINIMAL}cmdline = \"console=hvc0\"\nprivileged = true\nmodule = \"initrd\"\n\
             [[domain]]\nname = \"g\"\nkernel = \"k.elf\"\nmemory = \"8M\"\nvcpus = 4\n\
             type = \"pvh\"\n"
        );
        let bytes = dir.load(&toml).unwrap().to_bundle().unwrap();
        let bundle = Bundle::parse(&bytes).unwrap();
        let specs: Vec<_> = bundle.domains().collect::<Result<_, _>>().unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            (
                specs[0].name,
                specs[0].kernel,
                specs[0].module,
                specs[0].cmdline
            ),
            (
                "d",
                &b"\x7fELF kernel"[..],
                Some(&b"ramdisk bytes"[..]),
                "console=hvc0"
            )
        );
        assert_eq!(
            (specs[0].memory_kib, specs[0].max_memory_kib),
            (32 * 1024, 32 * 1024)
        );
        assert!(specs[0].privileged);
        assert_eq!(specs[0].kind, DomainKind::Pv);
        assert_eq!(
            (specs[1].name, specs[1].vcpus, specs[1].kind),
            ("g", 4, DomainKind::Pvh)
        );
        assert_eq!(
            (specs[1].memory_kib, specs[1].privileged),
            (8 * 1024, false)
        );
    }

    #[test]
    fn to_bundle_reports_unreadable_and_empty_images() {
        let dir = TempDir::new();
        let config = dir.load(MINIMAL).unwrap();
        fs::write(dir.0.join("k.elf"), b"").unwrap();
        let err = config.to_bundle().unwrap_err();
        let prefix = dir.0.join("domains.toml").display().to_string();
        assert_eq!(
            err,
            format!("{prefix}: domain \"d\": kernel image is empty")
        );
        fs::remove_file(dir.0.join("k.elf")).unwrap();
        let err = config.to_bundle().unwrap_err();
        assert!(
            err.starts_with(&format!("{prefix}: domain \"d\": cannot read kernel ")),
            "{err}"
        );
    }

    #[test]
    fn single_kernel_is_one_privileged_pv_dom0() {
        let dir = TempDir::new();
        let kernel = dir.write("pvguest", b"\x7fELF pvguest");
        let config = single_kernel(&kernel, "selftest", 64 * 1024, DomainKind::Pv);
        assert_eq!(config.source(), kernel);
        let bytes = config.to_bundle().unwrap();
        let bundle = Bundle::parse(&bytes).unwrap();
        let specs: Vec<_> = bundle.domains().collect::<Result<_, _>>().unwrap();
        let dom0 = specs[0];
        assert_eq!(specs.len(), 1);
        assert_eq!(
            (dom0.name, dom0.kernel, dom0.cmdline),
            ("dom0", &b"\x7fELF pvguest"[..], "selftest")
        );
        assert_eq!(
            (dom0.memory_kib, dom0.max_memory_kib, dom0.vcpus),
            (64 * 1024, 64 * 1024, 1)
        );
        assert_eq!(
            (dom0.kind, dom0.privileged, dom0.module),
            (DomainKind::Pv, true, None)
        );

        let err = single_kernel(&kernel, "", 1001, DomainKind::Pv)
            .to_bundle()
            .unwrap_err();
        let expected = format!(
            "{}: domain \"dom0\": 1001 KiB is not a whole number of 4 KiB pages",
            kernel.display()
        );
        assert_eq!(err, expected);
    }
}
