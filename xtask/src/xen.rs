//! Running guests on real Xen: Debian's Xen 4.17 hypervisor, fetched as a package and unpacked
//! under the target directory (the host's boot setup is never touched), booted under QEMU TCG
//! with a guest ELF as its initial domain (dom0). Xen does not power QEMU off, so a run ends
//! when the guest prints its verdict line or the time limit passes; QEMU is always killed.

use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::images::TARGET;
use crate::paths;
use crate::runner::Machine;

/// The Debian package holding the hypervisor.
pub const XEN_PACKAGE: &str = "xen-hypervisor-4.17-amd64";
/// The compressed hypervisor inside that package.
pub const XEN_GZ_IN_PACKAGE: &str = "boot/xen-4.17-amd64.gz";
/// Names an already unpacked Xen ELF to use instead of the package.
pub const XEN_KERNEL_ENV: &str = "XEN_KERNEL";
/// Names a built pvguest image for the tests to use instead of building one.
pub const PVGUEST_IMAGE_ENV: &str = "PVGUEST_IMAGE";
/// Xen's own command line: serial console, a small dom0, every log message.
pub const XEN_CMDLINE: &str =
    "console=com1 com1=115200,8n1 dom0_mem=64M loglvl=all guest_loglvl=all";
/// pvguest's verdict line when every check passed.
pub const SUCCESS_MARKER: &str = "pvguest: SELFTEST SUCCESS";
/// pvguest's verdict line when some check failed.
pub const FAILURE_MARKER: &str = "pvguest: SELFTEST FAILURE";
/// Xen's line when its initial domain has shut down, crashed or halted.
pub const DOM0_ENDED_MARKER: &str = "(XEN) Hardware Dom0 ";
/// Serial lines a failure message shows.
pub const TAIL_LINES: usize = 40;

/// Where Xen is downloaded, unpacked and cached: `<target>/xen`.
pub fn xen_dir() -> PathBuf {
    paths::target_dir().join("xen")
}

/// The Xen 4.17 hypervisor as an ELF that QEMU's `-kernel` loads (the package's `xen.gz`
/// holds a 32-bit ELF with a multiboot header; QEMU does not decompress it, so it is
/// gunzipped once and cached as `<target>/xen/xen-4.17.elf`). `XEN_KERNEL` overrides.
pub fn xen_kernel() -> Result<PathBuf, String> {
    if let Some(path) = env::var_os(XEN_KERNEL_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{XEN_KERNEL_ENV} names {}, which does not exist",
                path.display()
            ))
        };
    }
    let dir = xen_dir();
    let elf = dir.join("xen-4.17.elf");
    if elf.is_file() {
        return Ok(elf);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let gz = unpacked_xen_gz(&dir)?;
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&gz)
        .output()
        .map_err(|e| format!("cannot run gzip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gzip -dc {} failed: {}",
            gz.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if !out.stdout.starts_with(b"\x7fELF") {
        return Err(format!("{} does not hold an ELF", gz.display()));
    }
    // Write then rename, so a concurrent run never sees half a file.
    let tmp = dir.join(format!("xen-4.17.elf.{}", std::process::id()));
    fs::write(&tmp, &out.stdout).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, &elf).map_err(|e| format!("cannot rename to {}: {e}", elf.display()))?;
    Ok(elf)
}

/// `<dir>/root/boot/xen-4.17-amd64.gz`, downloading and unpacking the package if needed.
fn unpacked_xen_gz(dir: &Path) -> Result<PathBuf, String> {
    let root = dir.join("root");
    let gz = root.join(XEN_GZ_IN_PACKAGE);
    if gz.is_file() {
        return Ok(gz);
    }
    let work = dir.join(format!("download.{}", std::process::id()));
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let result = download_and_unpack(&work, &root);
    // Best effort: a leftover download directory only wastes space.
    let _ = fs::remove_dir_all(&work);
    result?;
    if gz.is_file() {
        Ok(gz)
    } else {
        Err(format!("{XEN_PACKAGE} did not contain {XEN_GZ_IN_PACKAGE}"))
    }
}

fn download_and_unpack(work: &Path, root: &Path) -> Result<(), String> {
    let download = || {
        Command::new("apt-get")
            .args(["download", XEN_PACKAGE])
            .current_dir(work)
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))
    };
    let mut out = download()?;
    if !out.status.success() {
        // The package lists may be missing or stale (a fresh container): refresh and retry.
        let update = Command::new("apt-get")
            .arg("update")
            .output()
            .map_err(|e| format!("cannot run apt-get update: {e}"))?;
        if !update.status.success() {
            return Err(format!(
                "apt-get download {XEN_PACKAGE} failed ({}) and apt-get update failed ({}; \
                 it needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                update.status,
                String::from_utf8_lossy(&update.stderr).trim()
            ));
        }
        out = download()?;
        if !out.status.success() {
            return Err(format!(
                "apt-get download {XEN_PACKAGE} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let deb = fs::read_dir(work)
        .map_err(|e| format!("cannot list {}: {e}", work.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|p| p.extension().is_some_and(|ext| ext == "deb"))
        .ok_or_else(|| format!("apt-get download left no .deb in {}", work.display()))?;
    // Unpack next to the final place, then rename, so concurrent runs cannot see a partial tree.
    let staging = work.join("root");
    let status = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(&staging)
        .status()
        .map_err(|e| format!("cannot run dpkg: {e}"))?;
    if !status.success() {
        return Err(format!("dpkg -x {} failed ({status})", deb.display()));
    }
    match fs::rename(&staging, root) {
        Ok(()) => Ok(()),
        // Another run unpacked it first.
        Err(_) if root.join(XEN_GZ_IN_PACKAGE).is_file() => Ok(()),
        Err(e) => Err(format!(
            "cannot move the package to {}: {e}",
            root.display()
        )),
    }
}

/// The pvguest image for the Xen tests: `PVGUEST_IMAGE` when set, else built (release, for
/// the bare-metal target) into `<target>/images`, a target directory of its own so this
/// nested cargo never waits for the one running the tests.
pub fn pvguest_image_for_tests() -> Result<PathBuf, String> {
    if let Some(path) = env::var_os(PVGUEST_IMAGE_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{PVGUEST_IMAGE_ENV} names {}, which does not exist",
                path.display()
            ))
        };
    }
    let target_dir = paths::target_dir().join("images");
    let status = Command::new(paths::cargo())
        .current_dir(paths::workspace_root())
        .args(["build", "--release", "--target", TARGET])
        .args(["--package", "pvguest", "--bin", "pvguest", "--target-dir"])
        .arg(&target_dir)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building pvguest failed ({status})"));
    }
    let path = target_dir.join(TARGET).join("release").join("pvguest");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "cargo built pvguest but {} is missing",
            path.display()
        ))
    }
}

/// How a run on Xen ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenOutcome {
    /// The guest printed [`XenBoot::success_marker`].
    Success,
    /// The guest printed [`XenBoot::failure_marker`].
    Failure,
    /// Neither line appeared within the time limit.
    TimedOut,
    /// dom0 shut down (or crashed) without printing either line.
    Dom0Ended,
    /// QEMU exited before either line appeared.
    QemuExited,
}

/// One boot of Xen with a guest as dom0.
#[derive(Clone, Debug)]
pub struct XenRun {
    /// Everything QEMU printed (Xen's serial console and the guest's lines), line by line.
    pub log: String,
    /// Whether the guest reported success.
    pub success: bool,
    /// How the run ended.
    pub outcome: XenOutcome,
    /// From starting QEMU to the verdict line (or to the end of the run).
    pub elapsed: Duration,
    /// From starting QEMU to the first line containing [`XenBoot::timed_marker`].
    pub timed_marker_at: Option<Duration>,
    /// The QEMU command line, for reports.
    pub command: String,
}

impl XenRun {
    /// The first line containing `needle`.
    pub fn line_containing(&self, needle: &str) -> Option<&str> {
        self.log.lines().find(|l| l.contains(needle))
    }

    /// The last `n` lines of the log.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A multi-line account for failure messages: outcome, command, log tail.
    pub fn describe(&self) -> String {
        format!(
            "outcome {:?} after {:.1?}\ncommand: {}\nlast {TAIL_LINES} lines:\n{}",
            self.outcome,
            self.elapsed,
            self.command,
            self.tail(TAIL_LINES)
        )
    }
}

/// QEMU's multiboot loader splits `-initrd` at commas (`,,` stands for a literal one) and
/// the module's file name from its command line at the first space.
fn initrd_arg(guest: &Path, cmdline: &str) -> Result<String, String> {
    let path = guest
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", guest.display()))?;
    if path.contains(' ') {
        return Err(format!(
            "QEMU's multiboot loader cannot take a module path with spaces: {path}"
        ));
    }
    let escaped = format!("{path} {cmdline}").replace(',', ",,");
    Ok(escaped)
}

/// One boot of Xen with a guest as dom0: the guest's command line, how QEMU runs, and the
/// guest's lines that end the run.
#[derive(Clone, Copy, Debug)]
pub struct XenBoot<'a> {
    /// The guest's command line.
    pub cmdline: &'a str,
    /// The whole run's time limit.
    pub timeout: Duration,
    /// Also print serial lines to stdout as they arrive.
    pub echo: bool,
    /// QEMU's machine (`-M`); `None` keeps QEMU's default (`pc`).
    pub machine: Option<Machine>,
    /// QEMU `-icount shift=0`: one TSC tick per guest instruction, repeatable run to run.
    pub icount: bool,
    /// The guest's line that ends the run as a success.
    pub success_marker: &'a str,
    /// The guest's line that ends the run as a failure.
    pub failure_marker: &'a str,
    /// A line whose first appearance is timed ([`XenRun::timed_marker_at`]).
    pub timed_marker: Option<&'a str>,
}

impl<'a> XenBoot<'a> {
    /// The selftest's boot: QEMU's default machine, no icount, ended by the verdict line.
    pub fn selftest(cmdline: &'a str, timeout: Duration, echo: bool) -> XenBoot<'a> {
        XenBoot {
            cmdline,
            timeout,
            echo,
            machine: None,
            icount: false,
            success_marker: SUCCESS_MARKER,
            failure_marker: FAILURE_MARKER,
            timed_marker: None,
        }
    }
}

/// The QEMU command that boots `xen` with `guest` as dom0. Xen passes dom0 the module's
/// string minus its first word (the file name), so the guest sees exactly `boot.cmdline`.
pub fn qemu_command(xen: &Path, guest: &Path, boot: &XenBoot<'_>) -> Result<Command, String> {
    let mut cmd = Command::new("qemu-system-x86_64");
    if let Some(machine) = boot.machine {
        cmd.args(["-M", machine.name()]);
    }
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "512"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(xen)
        .args(["-append", XEN_CMDLINE])
        .arg("-initrd")
        .arg(initrd_arg(guest, boot.cmdline)?);
    if boot.icount {
        cmd.args(["-icount", "shift=0"]);
    }
    Ok(cmd)
}

/// Kills and reaps QEMU when dropped.
struct QemuProcess(Child);

impl Drop for QemuProcess {
    fn drop(&mut self) {
        // Best effort: QEMU may already have exited.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn forward_lines(stream: impl Read, tx: Sender<String>) {
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

/// Boots Xen 4.17 with `pvguest` (any PV guest ELF) as dom0 and `cmdline` as its command
/// line, collects the serial output (echoing it when `echo`), and ends QEMU when the guest's
/// selftest verdict line appears, dom0 ends, QEMU exits, or `timeout` passes.
pub fn run_pvguest_on_xen(
    pvguest: &Path,
    cmdline: &str,
    timeout: Duration,
    echo: bool,
) -> Result<XenRun, String> {
    run_on_xen(pvguest, &XenBoot::selftest(cmdline, timeout, echo))
}

/// Boots Xen 4.17 with `guest` as dom0 as `boot` describes and ends QEMU when one of its
/// markers appears, dom0 ends, QEMU exits, or the time limit passes.
pub fn run_on_xen(guest: &Path, boot: &XenBoot<'_>) -> Result<XenRun, String> {
    if !guest.is_file() {
        return Err(format!("no guest image at {}", guest.display()));
    }
    let xen = xen_kernel()?;
    let mut cmd = qemu_command(&xen, guest, boot)?;
    let command = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut qemu = QemuProcess(
        cmd.spawn()
            .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?,
    );
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(out) = qemu.0.stdout.take() {
        let tx = tx.clone();
        readers.push(thread::spawn(move || forward_lines(out, tx)));
    }
    if let Some(err) = qemu.0.stderr.take() {
        let tx = tx.clone();
        readers.push(thread::spawn(move || forward_lines(err, tx)));
    }
    drop(tx);

    let deadline = start + boot.timeout;
    let mut log = String::new();
    let mut timed_marker_at = None;
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if boot.echo {
                    println!("{line}");
                }
                log.push_str(&line);
                log.push('\n');
                if timed_marker_at.is_none() && boot.timed_marker.is_some_and(|m| line.contains(m))
                {
                    timed_marker_at = Some(start.elapsed());
                }
                if line.contains(boot.success_marker) {
                    break XenOutcome::Success;
                }
                if line.contains(boot.failure_marker) {
                    break XenOutcome::Failure;
                }
                if line.starts_with(DOM0_ENDED_MARKER) {
                    break XenOutcome::Dom0Ended;
                }
            }
            Err(RecvTimeoutError::Timeout) => break XenOutcome::TimedOut,
            Err(RecvTimeoutError::Disconnected) => break XenOutcome::QemuExited,
        }
    };
    let elapsed = start.elapsed();
    drop(qemu);
    for reader in readers {
        // The readers end when QEMU's pipes close; a panicked reader only loses log lines.
        let _ = reader.join();
    }
    // Lines that arrived after the verdict (QEMU's last words) still belong in the log.
    for line in rx.try_iter() {
        log.push_str(&line);
        log.push('\n');
    }
    Ok(XenRun {
        log,
        success: outcome == XenOutcome::Success,
        outcome,
        elapsed,
        timed_marker_at,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_escapes_commas_and_rejects_spaces() {
        assert_eq!(
            initrd_arg(Path::new("/t/pvguest"), "selftest").unwrap(),
            "/t/pvguest selftest"
        );
        assert_eq!(
            initrd_arg(Path::new("/t/pv,guest"), "a,b").unwrap(),
            "/t/pv,,guest a,,b"
        );
        assert!(initrd_arg(Path::new("/t/pv guest"), "selftest").is_err());
    }

    #[test]
    fn machine_and_icount_reach_qemu() {
        let boot = XenBoot {
            machine: Some(Machine::Q35),
            icount: true,
            ..XenBoot::selftest("bench", Duration::from_secs(1), false)
        };
        let cmd = qemu_command(Path::new("/x/xen"), Path::new("/t/pvguest"), &boot).unwrap();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[..4], ["-M", "q35", "-accel", "tcg"]);
        assert_eq!(
            args[args.len() - 4..],
            ["-initrd", "/t/pvguest bench", "-icount", "shift=0"]
        );
        let plain = qemu_command(
            Path::new("/x/xen"),
            Path::new("/t/pvguest"),
            &XenBoot::selftest("selftest", Duration::from_secs(1), false),
        )
        .unwrap();
        let plain: Vec<String> = plain
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!plain.iter().any(|a| a == "-M" || a == "-icount"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let run = XenRun {
            log: "a\nb\nc\n".into(),
            success: false,
            outcome: XenOutcome::TimedOut,
            elapsed: Duration::ZERO,
            timed_marker_at: None,
            command: String::new(),
        };
        assert_eq!(run.tail(2), "b\nc");
        assert_eq!(run.tail(10), "a\nb\nc");
        assert_eq!(run.line_containing("b"), Some("b"));
    }
}
