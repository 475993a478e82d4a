//! Booting an image under QEMU or Bochs: a [`Session`] owns one emulator process (in its own
//! process group), streams hv's serial console line by line into a captured log (and to the
//! terminal when asked), waits for marker lines, and judges the run by hv's power-off line.
//! The emulator is always killed: when the session ends or is dropped, on timeout, and when the
//! process gets SIGINT/SIGTERM.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::iso;
use crate::paths::TempDir;

/// The text of hv's last line, followed by its status: 0 = everything ended cleanly.
pub const POWER_OFF_MARKER: &str = "hv power-off: status=";
/// Bochs's BIOS (Debian's bochsbios).
pub const BOCHS_BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
/// Bochs's VGA BIOS (Debian's vgabios).
pub const BOCHS_VGA_BIOS: &str = "/usr/share/vgabios/vgabios.bin";
/// The oldest Bochs CPU model with VT-x, EPT and unrestricted guest.
pub const DEFAULT_BOCHS_CPU: &str = "corei7_sandy_bridge_2600k";
/// How many serial lines a failure message shows.
pub const TAIL_LINES: usize = 40;

/// How long an emulator may take to exit after hv's power-off line.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// How often waiting loops look at the emulator process.
const POLL: Duration = Duration::from_millis(10);
/// Emulator stdout/stderr lines kept for failure messages.
const EMULATOR_OUTPUT_LINES: usize = 200;

/// A QEMU machine type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    Microvm,
    Q35,
}

impl Machine {
    pub fn name(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Q35 => "q35",
        }
    }
}

impl FromStr for Machine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "microvm" => Ok(Machine::Microvm),
            "q35" => Ok(Machine::Q35),
            other => Err(format!("unknown machine {other:?} (microvm or q35)")),
        }
    }
}

/// The emulator to boot under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emulator {
    /// QEMU TCG, loading hv as a PVH kernel with `-kernel` and the bundle as its initrd.
    Qemu { machine: Machine },
    /// Bochs (VT-x capable CPU models), booting a GRUB ISO through multiboot2.
    Bochs { cpu_model: String },
}

/// Everything that describes one boot.
#[derive(Clone, Debug)]
pub struct BootSpec {
    pub emulator: Emulator,
    /// The hv ELF.
    pub image: PathBuf,
    /// hv's command line.
    pub cmdline: String,
    /// The boot bundle (domains), if any.
    pub bundle: Option<PathBuf>,
    pub memory_mib: u32,
    pub smp: u32,
    /// QEMU `-icount shift=0`: one TSC tick per guest instruction, repeatable run to run.
    pub icount: bool,
    /// The whole run's time limit.
    pub timeout: Duration,
    /// Also print serial lines to stdout as they arrive.
    pub echo: bool,
    /// Connect a pipe to the serial line's input (QEMU only) for [`Session::send`];
    /// otherwise nothing can be typed.
    pub serial_input: bool,
}

impl BootSpec {
    /// A QEMU boot of `image` with the defaults: no cmdline or bundle, 512 MiB, 1 vCPU, 60 s.
    pub fn qemu(machine: Machine, image: &Path) -> BootSpec {
        BootSpec {
            emulator: Emulator::Qemu { machine },
            image: image.to_path_buf(),
            cmdline: String::new(),
            bundle: None,
            memory_mib: 512,
            smp: 1,
            icount: false,
            timeout: Duration::from_secs(60),
            echo: false,
            serial_input: false,
        }
    }

    /// A Bochs boot of `image` on [`DEFAULT_BOCHS_CPU`], otherwise as [`BootSpec::qemu`].
    pub fn bochs(image: &Path) -> BootSpec {
        BootSpec {
            emulator: Emulator::Bochs {
                cpu_model: DEFAULT_BOCHS_CPU.to_string(),
            },
            ..BootSpec::qemu(Machine::Microvm, image)
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// hv printed its power-off line (and, under QEMU, the exit code agreed).
    PowerOff { status: u32 },
    /// hv printed its power-off line but QEMU's exit code is not `(status << 1) | 1`.
    ExitCodeMismatch { status: u32, code: Option<i32> },
    /// The time limit passed first.
    Timeout,
    /// The emulator ended without hv's power-off line (`code` is `None` when it was signalled).
    EmulatorExited { code: Option<i32> },
}

impl Outcome {
    /// hv powered off with status 0.
    pub fn success(self) -> bool {
        self == Outcome::PowerOff { status: 0 }
    }

    /// The exit code `cargo xtask run` reports this outcome with: 0, 1, or 124 on timeout.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::PowerOff { status: 0 } => 0,
            Outcome::Timeout => 124,
            _ => 1,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::PowerOff { status } => write!(f, "hv powered off with status {status}"),
            Outcome::ExitCodeMismatch { status, code } => write!(
                f,
                "hv powered off with status {status} but the emulator exit code was {code:?} \
                 (expected {})",
                qemu_exit_code(*status)
            ),
            Outcome::Timeout => write!(f, "timed out"),
            Outcome::EmulatorExited { code } => write!(
                f,
                "the emulator exited (code {code:?}) without hv's power-off line"
            ),
        }
    }
}

/// QEMU's exit code when the guest writes `status` to isa-debug-exit (an exit code keeps 8 bits).
fn qemu_exit_code(status: u32) -> i32 {
    (((status << 1) | 1) & 0xff) as i32
}

/// The status in hv's power-off line, if `line` is one.
pub fn parse_power_off(line: &str) -> Option<u32> {
    let (_, rest) = line.split_once(POWER_OFF_MARKER)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Everything a finished run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub outcome: Outcome,
    /// Every serial line, without line endings.
    pub lines: Vec<String>,
    /// The emulator's own messages (stderr; for Bochs also stdout and the end of its log).
    pub emulator_output: Vec<String>,
    /// The emulator command line.
    pub command: String,
    pub elapsed: Duration,
}

impl RunReport {
    /// The first serial line containing `needle`.
    pub fn line_containing(&self, needle: &str) -> Option<&str> {
        self.lines
            .iter()
            .map(String::as_str)
            .find(|line| line.contains(needle))
    }

    /// The last [`TAIL_LINES`] serial lines.
    pub fn tail(&self) -> String {
        tail(&self.lines, TAIL_LINES)
    }

    /// A multi-line account of the run for failure messages: outcome, command, log tail.
    pub fn describe(&self) -> String {
        let (head, emulator) = self.summary_parts();
        format!(
            "{head}\n--- last serial lines ---\n{}{emulator}",
            self.tail()
        )
    }

    /// [`RunReport::describe`] without the serial lines, for when they were already shown.
    pub fn summary(&self) -> String {
        let (head, emulator) = self.summary_parts();
        format!("{head}{emulator}")
    }

    fn summary_parts(&self) -> (String, String) {
        let head = format!(
            "{} after {:.2} s\ncommand: {}",
            self.outcome,
            self.elapsed.as_secs_f64(),
            self.command
        );
        let emulator = if self.emulator_output.is_empty() {
            String::new()
        } else {
            format!(
                "\n--- emulator output (last lines) ---\n{}",
                tail(&self.emulator_output, 15)
            )
        };
        (head, emulator)
    }
}

fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Serial lines and emulator messages, filled by reader threads.
#[derive(Default)]
struct ConsoleState {
    lines: Vec<String>,
    power_off: Option<u32>,
    /// No more serial lines will come.
    closed: bool,
    emulator_output: VecDeque<String>,
}

struct Console {
    state: Mutex<ConsoleState>,
    changed: Condvar,
    echo: bool,
}

impl Console {
    fn lock(&self) -> MutexGuard<'_, ConsoleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push_line(&self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_end_matches(['\r', '\n']).to_string();
        if self.echo {
            println!("{line}");
        }
        let mut state = self.lock();
        if state.power_off.is_none() {
            state.power_off = parse_power_off(&line);
        }
        state.lines.push(line);
        self.changed.notify_all();
    }

    fn push_emulator_output(&self, line: String) {
        let mut state = self.lock();
        if state.emulator_output.len() == EMULATOR_OUTPUT_LINES {
            state.emulator_output.pop_front();
        }
        state.emulator_output.push_back(line);
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

/// Process groups of running emulators and their work directories, killed and removed by the
/// SIGINT/SIGTERM handler.
static RUNNING: Mutex<Vec<(Pid, PathBuf)>> = Mutex::new(Vec::new());

fn running() -> MutexGuard<'static, Vec<(Pid, PathBuf)>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

fn install_interrupt_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let result = ctrlc::set_handler(|| {
            for (group, workdir) in running().iter() {
                // The group may already be gone, and the directory is best effort.
                let _ = killpg(*group, Signal::SIGKILL);
                let _ = fs::remove_dir_all(workdir);
            }
            eprintln!("xtask: interrupted; emulators killed");
            std::process::exit(130);
        });
        if let Err(e) = result {
            eprintln!("xtask: no SIGINT/SIGTERM handler ({e}); an interrupt may leave emulators");
        }
    });
}

/// One running emulator.
pub struct Session {
    child: Child,
    group: Pid,
    console: Arc<Console>,
    command: String,
    started: Instant,
    deadline: Instant,
    /// Checks QEMU's exit code against the power-off status (Bochs's says nothing).
    exit_code_agrees: bool,
    exit: Option<ExitStatus>,
    /// The serial line's input, when [`BootSpec::serial_input`] asked for it.
    input: Option<ChildStdin>,
    /// Tells the serial file tailer (Bochs) that the emulator has ended.
    emulator_gone: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    /// Bochs's own log, shown on failure.
    bochs_log: Option<PathBuf>,
    stopped: bool,
    /// Holds the ISO, bochsrc and logs; removed last.
    _workdir: TempDir,
}

impl Session {
    /// Starts the emulator described by `spec` (building the ISO first for Bochs).
    pub fn start(spec: &BootSpec) -> Result<Session, String> {
        if !spec.image.is_file() {
            return Err(format!("image {} does not exist", spec.image.display()));
        }
        if let Some(bundle) = spec.bundle.as_ref().filter(|b| !b.is_file()) {
            return Err(format!("bundle {} does not exist", bundle.display()));
        }
        install_interrupt_handler();
        let workdir = TempDir::new("boot")?;
        let console = Arc::new(Console {
            state: Mutex::new(ConsoleState::default()),
            changed: Condvar::new(),
            echo: spec.echo,
        });
        let emulator_gone = Arc::new(AtomicBool::new(false));
        let (mut command, serial_file, bochs_log) = match &spec.emulator {
            Emulator::Qemu { machine } => (qemu_command(spec, *machine), None, None),
            Emulator::Bochs { cpu_model } => {
                if spec.icount {
                    return Err("icount is a QEMU option; Bochs has no equivalent".into());
                }
                let (command, serial, log) = bochs_command(spec, cpu_model, workdir.path())?;
                (command, Some(serial), Some(log))
            }
        };
        let command_text = describe_command(&command);
        let stdin = match (&spec.emulator, spec.serial_input) {
            (_, false) => Stdio::null(),
            (Emulator::Qemu { .. }, true) => Stdio::piped(),
            (Emulator::Bochs { .. }, true) => {
                return Err("serial input is a QEMU feature here; Bochs writes a file".into())
            }
        };
        command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {command_text}: {e}"))?;
        let input = child.stdin.take();
        let group = Pid::from_raw(child.id() as i32);
        running().push((group, workdir.path().to_path_buf()));
        let started = Instant::now();

        let mut readers = Vec::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        match serial_file {
            None => {
                readers.push(spawn_serial_reader(stdout, console.clone()));
            }
            Some(path) => {
                readers.push(spawn_emulator_output_reader(stdout, console.clone()));
                let (console, gone) = (console.clone(), emulator_gone.clone());
                readers.push(thread::spawn(move || tail_file(&path, &console, &gone)));
            }
        }
        readers.push(spawn_emulator_output_reader(stderr, console.clone()));

        Ok(Session {
            child,
            group,
            console,
            command: command_text,
            started,
            deadline: started + spec.timeout,
            exit_code_agrees: matches!(spec.emulator, Emulator::Qemu { .. }),
            exit: None,
            input,
            emulator_gone,
            readers,
            bochs_log,
            stopped: false,
            _workdir: workdir,
        })
    }

    /// Boots `spec` to the end and reports.
    pub fn run(spec: &BootSpec) -> Result<RunReport, String> {
        Ok(Session::start(spec)?.finish())
    }

    /// Sends `bytes` to the serial line's input (typed, as far as hv can tell).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let input = self
            .input
            .as_mut()
            .ok_or("the session has no serial input (BootSpec::serial_input)")?;
        input
            .write_all(bytes)
            .and_then(|()| input.flush())
            .map_err(|e| format!("cannot send to the serial line: {e}"))
    }

    /// Takes the serial line's input, for a caller that feeds it from elsewhere (`None` if
    /// there is none or it was taken).
    pub fn take_input(&mut self) -> Option<ChildStdin> {
        self.input.take()
    }

    /// The serial lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.console.lock().lines.clone()
    }

    /// Waits (at most `timeout`, and never past the run's time limit) for a serial line that
    /// contains `needle`, and returns it; the error says why not and shows the log tail.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.wait_for_line_from(0, needle, timeout)
    }

    /// As [`Session::wait_for_line`], looking only at the lines from index `first` on (e.g.
    /// `lines().len()` taken before an action, for a line the action causes).
    pub fn wait_for_line_from(
        &mut self,
        first: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = self.deadline.min(Instant::now() + timeout);
        let found = self.wait_until(deadline, |state| {
            let hit = state
                .lines
                .iter()
                .skip(first)
                .find(|l| l.contains(needle))
                .cloned();
            match hit {
                Some(line) => Some(Ok(line)),
                None if state.closed => Some(Err("the serial console closed")),
                None => None,
            }
        });
        let reason = match found {
            Some(Ok(line)) => return Ok(line),
            Some(Err(reason)) => reason,
            None => "timed out",
        };
        Err(format!(
            "no serial line containing {needle:?}: {reason} after {:.2} s\ncommand: {}\n\
             --- last serial lines ---\n{}",
            self.started.elapsed().as_secs_f64(),
            self.command,
            tail(&self.lines(), TAIL_LINES)
        ))
    }

    /// Waits for the run to end (power-off line, emulator exit, or time limit), kills the
    /// emulator, and reports.
    pub fn finish(mut self) -> RunReport {
        let deadline = self.deadline;
        let ended = self.wait_until(deadline, |state| {
            (state.power_off.is_some() || state.closed).then_some(state.power_off)
        });
        let outcome = match ended {
            None => Outcome::Timeout,
            Some(Some(status)) => {
                self.wait_for_exit(Instant::now() + EXIT_GRACE);
                let code = self.exit.and_then(|status| status.code());
                let expected = Some(qemu_exit_code(status));
                if self.exit_code_agrees && code != expected {
                    Outcome::ExitCodeMismatch { status, code }
                } else {
                    Outcome::PowerOff { status }
                }
            }
            Some(None) => {
                self.wait_for_exit(Instant::now() + EXIT_GRACE);
                Outcome::EmulatorExited {
                    code: self.exit.and_then(|status| status.code()),
                }
            }
        };
        self.stop();
        let elapsed = self.started.elapsed();
        let mut state = self.console.lock();
        let mut emulator_output: Vec<String> = state.emulator_output.drain(..).collect();
        if let Some(log) = &self.bochs_log {
            emulator_output.extend(bochs_log_tail(log));
        }
        RunReport {
            outcome,
            lines: std::mem::take(&mut state.lines),
            emulator_output,
            command: self.command.clone(),
            elapsed,
        }
    }

    /// Notes the emulator's exit once it has happened.
    fn poll_exit(&mut self) {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                self.emulator_gone.store(true, Ordering::Release);
            }
        }
    }

    /// Waits until the emulator has exited or `deadline` passes.
    fn wait_for_exit(&mut self, deadline: Instant) {
        self.poll_exit();
        while self.exit.is_none() && Instant::now() < deadline {
            thread::sleep(POLL);
            self.poll_exit();
        }
    }

    /// Waits until `check` returns `Some` (checked on every console change and every
    /// [`POLL`]) or `deadline` passes.
    fn wait_until<T>(
        &mut self,
        deadline: Instant,
        mut check: impl FnMut(&ConsoleState) -> Option<T>,
    ) -> Option<T> {
        let console = self.console.clone();
        loop {
            self.poll_exit();
            let state = console.lock();
            if let Some(result) = check(&state) {
                return Some(result);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let wait = (deadline - now).min(POLL);
            drop(console.changed.wait_timeout(state, wait));
        }
    }

    /// Kills the emulator's process group, reaps it and waits for the reader threads.
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.input = None;
        if self.exit.is_none() {
            // The group may have ended by itself in the meantime; nothing else to do then.
            let _ = killpg(self.group, Signal::SIGKILL);
            self.exit = self.child.wait().ok();
        }
        running().retain(|(group, _)| *group != self.group);
        self.emulator_gone.store(true, Ordering::Release);
        for reader in self.readers.drain(..) {
            // A reader that panicked has nothing more to give.
            let _ = reader.join();
        }
        self.console.close();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
    }
}

fn qemu_command(spec: &BootSpec, machine: Machine) -> Command {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-M", machine.name(), "-accel", "tcg", "-cpu", "max"])
        .arg("-m")
        .arg(spec.memory_mib.to_string())
        .arg("-smp")
        .arg(spec.smp.to_string())
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(&spec.image)
        .arg("-append")
        .arg(&spec.cmdline);
    if let Some(bundle) = &spec.bundle {
        command.arg("-initrd").arg(bundle);
    }
    command.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    if spec.icount {
        command.args(["-icount", "shift=0"]);
    }
    command
}

/// Makes the ISO, bochsrc and debugger script in `dir`; returns the command, the serial log
/// path and Bochs's log path.
fn bochs_command(
    spec: &BootSpec,
    cpu_model: &str,
    dir: &Path,
) -> Result<(Command, PathBuf, PathBuf), String> {
    let iso_path = dir.join("hv.iso");
    iso::make(
        &spec.image,
        spec.bundle.as_deref(),
        &spec.cmdline,
        &iso_path,
    )?;
    let serial = dir.join("serial.log");
    let log = dir.join("bochs.log");
    let rc = dir.join("bochsrc");
    let debugger_script = dir.join("debugger.rc");
    let bochsrc = bochsrc(spec, cpu_model, &iso_path, &serial, &log);
    fs::write(&rc, bochsrc).map_err(|e| format!("cannot write {}: {e}", rc.display()))?;
    // Bochs's debugger reads these: continue, and quit when the machine stops.
    fs::write(&debugger_script, "c\nquit\n")
        .map_err(|e| format!("cannot write {}: {e}", debugger_script.display()))?;
    let mut command = Command::new("bochs-bin");
    command
        .current_dir(dir)
        .arg("-q")
        .arg("-f")
        .arg(&rc)
        .arg("-rc")
        .arg(&debugger_script);
    Ok((command, serial, log))
}

/// A headless bochsrc: rfb display that waits for no client (Debian's Bochs has no `nogui`;
/// rfb moves on to the next free port, so runs can go in parallel), serial to a file, no
/// sound device (ALSA aborts Bochs on machines without a sound card).
fn bochsrc(spec: &BootSpec, cpu_model: &str, iso: &Path, serial: &Path, log: &Path) -> String {
    format!(
        "megs: {memory}\n\
         cpu: model={cpu_model}, count={smp}, ips=1000000\n\
         romimage: file={BOCHS_BIOS}\n\
         vgaromimage: file={BOCHS_VGA_BIOS}\n\
         ata0-master: type=cdrom, path=\"{iso}\", status=inserted\n\
         boot: cdrom\n\
         com1: enabled=1, mode=file, dev=\"{serial}\"\n\
         clock: sync=none, time0=utc\n\
         display_library: rfb, options=\"timeout=0\"\n\
         sound: driver=dummy\n\
         speaker: enabled=0\n\
         mouse: enabled=0\n\
         log: \"{log}\"\n\
         panic: action=fatal\n\
         error: action=report\n\
         info: action=report\n\
         debug: action=ignore, cpu0=report\n",
        memory = spec.memory_mib,
        smp = spec.smp,
        iso = iso.display(),
        serial = serial.display(),
        log = log.display(),
    )
}

fn bochs_log_tail(log: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(log) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    std::iter::once(format!("--- {} (last lines) ---", log.display()))
        .chain(lines[start..].iter().map(|l| l.to_string()))
        .collect()
}

fn describe_command(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| {
            let arg = arg.to_string_lossy();
            if arg.is_empty() || arg.contains([' ', '\'', '"']) {
                format!("'{}'", arg.replace('\'', r"'\''"))
            } else {
                arg.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn spawn_serial_reader(
    stream: impl Read + Send + 'static,
    console: Arc<Console>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            console.push_line(&line);
            line.clear();
        }
        console.close();
    })
}

fn spawn_emulator_output_reader(
    stream: impl Read + Send + 'static,
    console: Arc<Console>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line);
            console.push_emulator_output(text.trim_end().to_string());
            line.clear();
        }
    })
}

/// Follows the serial log file Bochs writes until the emulator is gone, then reads the rest.
fn tail_file(path: &Path, console: &Console, emulator_gone: &AtomicBool) {
    let mut file: Option<File> = None;
    let mut partial = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        // Read the flag before the file so the last pass sees everything written before exit.
        let gone = emulator_gone.load(Ordering::Acquire);
        if file.is_none() {
            file = File::open(path).ok();
        }
        let mut got_data = false;
        if let Some(file) = file.as_mut() {
            while let Ok(n @ 1..) = file.read(&mut buffer) {
                got_data = true;
                partial.extend_from_slice(&buffer[..n]);
                while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=end).collect();
                    console.push_line(&line);
                }
            }
        }
        if gone {
            if !partial.is_empty() {
                console.push_line(&partial);
            }
            console.close();
            return;
        }
        if !got_data {
            thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_off_line_is_parsed() {
        assert_eq!(parse_power_off("(XEN) hv power-off: status=0"), Some(0));
        assert_eq!(parse_power_off("(XEN) hv power-off: status=1 "), Some(1));
        assert_eq!(parse_power_off("(XEN) hv power-off: status="), None);
        assert_eq!(parse_power_off("(XEN) hv power-off soon"), None);
    }

    #[test]
    fn qemu_exit_code_encodes_the_status() {
        assert_eq!(qemu_exit_code(0), 1);
        assert_eq!(qemu_exit_code(1), 3);
        assert_eq!(qemu_exit_code(128), 1);
    }

    #[test]
    fn only_clean_power_off_succeeds() {
        assert!(Outcome::PowerOff { status: 0 }.success());
        assert!(!Outcome::PowerOff { status: 1 }.success());
        assert!(!Outcome::Timeout.success());
        assert_eq!(Outcome::Timeout.exit_code(), 124);
        assert_eq!(Outcome::EmulatorExited { code: Some(0) }.exit_code(), 1);
        assert_eq!(
            Outcome::ExitCodeMismatch {
                status: 0,
                code: Some(0)
            }
            .exit_code(),
            1
        );
    }

    #[test]
    fn qemu_command_follows_the_contract() {
        let mut spec = BootSpec::qemu(Machine::Q35, Path::new("/x/hv"));
        spec.cmdline = "hvtest=timer".into();
        spec.bundle = Some(PathBuf::from("/x/b.bin"));
        spec.icount = true;
        assert_eq!(
            describe_command(&qemu_command(&spec, Machine::Q35)),
            "qemu-system-x86_64 -M q35 -accel tcg -cpu max -m 512 -smp 1 -display none \
             -monitor none -serial stdio -no-reboot -kernel /x/hv -append hvtest=timer \
             -initrd /x/b.bin -device isa-debug-exit,iobase=0xf4,iosize=0x04 -icount shift=0"
        );
    }

    #[test]
    fn report_tail_keeps_the_last_lines() {
        let report = RunReport {
            outcome: Outcome::Timeout,
            lines: (0..100).map(|i| format!("line {i}")).collect(),
            emulator_output: Vec::new(),
            command: "qemu".into(),
            elapsed: Duration::ZERO,
        };
        let tail = report.tail();
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(tail.starts_with("line 60\n"));
        assert!(report
            .describe()
            .starts_with("timed out after 0.00 s\ncommand: qemu\n"));
    }
}
