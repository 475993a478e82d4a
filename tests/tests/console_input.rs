//! Serial console input (issue 5): typing Ctrl-A three times moves the input from hv to each
//! domain in turn and back, as on Xen; each domain gets its input the way it reads it.
//!
//! - The control domain runs the console back end; two domUs run `console-echo` on their
//!   console rings (hv puts input into each ring's `in` half). Text reaches only the focused
//!   domain, fewer than three Ctrl-A pass through, hv's `h` and `q` keys answer while binary
//!   garbage to hv is ignored, a flood bigger than hv's queue for a domain that never reads is
//!   dropped and counted, lines and garbage bigger than ring and queue reach a reading domU
//!   with every byte accounted for, and a domain that has gone is skipped when switching.
//! - Two domains without rings read with `CONSOLEIO_read` (woken by `VIRQ_CONSOLE`); one of
//!   them gets a flood of lines while it reads, and still echoes the line after it.

use std::time::Duration;

use hv_tests::{
    assert_frames_balance, assert_power_off, guest_lines, number_after, pvguest_bundle, qemu,
    start, Machine, RunReport, Session, TempDir,
};

/// Three Ctrl-A: switch the input.
const SWITCH: &[u8] = &[1, 1, 1];
/// How long one step may take.
const STEP: Duration = Duration::from_secs(20);
/// The whole run's limit.
const RUN: Duration = Duration::from_secs(120);

fn boot(dir: &TempDir, domains: &[hv_tests::TestDomain<'_>], control: bool) -> Session {
    let mut spec = qemu(Machine::Microvm);
    spec.bundle = Some(pvguest_bundle(dir, domains, control));
    spec.serial_input = true;
    spec.timeout = RUN;
    start(&spec)
}

fn send(s: &mut Session, bytes: &[u8]) {
    s.send(bytes).unwrap_or_else(|e| panic!("{e}"));
}

fn wait(s: &mut Session, needle: &str) -> String {
    wait_from(s, 0, needle)
}

/// Waits for a line containing `needle` among the lines from index `first` on.
fn wait_from(s: &mut Session, first: usize, needle: &str) -> String {
    s.wait_for_line_from(first, needle, STEP)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Switches the input and waits for hv to announce `to` (`DOM<n>` or `Xen`).
fn switch_to(s: &mut Session, to: &str) {
    let before = s.lines().len();
    send(s, SWITCH);
    let needle = format!("*** Serial input to {to} (type 'CTRL-a' three times to switch input)");
    wait_from(s, before, &needle);
    let announced = s.lines()[before..]
        .iter()
        .filter(|l| l.contains("*** Serial input to"))
        .count();
    assert_eq!(announced, 1, "one switch, one announcement");
}

/// `count` numbered lines starting with `text`.
fn flood_lines(text: &str, count: u32) -> Vec<u8> {
    (0..count)
        .flat_map(|i| format!("{text} {i:04}\n").into_bytes())
        .collect()
}

/// `len` bytes of every value but Ctrl-A and `except`.
fn garbage(len: usize, except: &[u8]) -> Vec<u8> {
    (0..=255u8)
        .cycle()
        .filter(|b| *b != SWITCH[0] && !except.contains(b))
        .take(len)
        .collect()
}

/// Domain `id` echoed `text` exactly once, and no other domain did.
fn assert_echoed_only_by(report: &RunReport, id: u32, ids: &[u32], text: &str) {
    let echo = format!("echo: {text}");
    for &other in ids {
        let n = guest_lines(report, other)
            .iter()
            .filter(|l| **l == echo)
            .count();
        let want = usize::from(other == id);
        assert_eq!(
            n,
            want,
            "d{other} echoed {text:?} {n} times\n{}",
            report.describe()
        );
    }
}

#[test]
fn input_switches_between_ring_domains_and_hv() {
    let dir = TempDir::new("console-input").expect("temp dir");
    let mut s = boot(
        &dir,
        &[
            ("toolstack", "backend", 32),
            ("echo1", "console-echo", 16),
            ("echo2", "console-echo", 16),
        ],
        true,
    );
    // After boot the input goes to the first domain, as Xen gives it to DOM0.
    wait(&mut s, "*** Serial input to DOM0");
    wait(&mut s, "(d1) console-echo: d1 ready");
    wait(&mut s, "(d2) console-echo: d2 ready");
    // The control domain does not read its input: it waits in hv, then is dropped.
    let flood = 2048usize;
    let to_dom0 = b"to dom0\n";
    send(&mut s, to_dom0);
    send(&mut s, &vec![b'z'; flood]);

    switch_to(&mut s, "DOM1");
    send(&mut s, b"hello one\n");
    wait(&mut s, "(d1) echo: hello one");
    switch_to(&mut s, "DOM2");
    let mut to_dom2 = 0;
    let mut send_dom2 = |s: &mut Session, bytes: &[u8]| {
        to_dom2 += bytes.len();
        send(s, bytes);
    };
    send_dom2(&mut s, b"hello two\r");
    wait(&mut s, "(d2) echo: hello two");
    // Fewer than three Ctrl-A go through (hv shows control characters as '?').
    send_dom2(&mut s, &[1, b'x', 1, 1, b'y', b'\n']);
    wait(&mut s, "(d2) echo: ?x??y");
    // More than the ring and hv's queue hold, while d2 reads: hv never overruns the ring, and
    // the line after the flood arrives whole.
    send_dom2(&mut s, &flood_lines("ring flood", 160));
    send_dom2(&mut s, &garbage(2048, &[]));
    send_dom2(&mut s, b"\nafter the ring flood\n");
    wait(&mut s, "(d2) echo: after the ring flood");

    switch_to(&mut s, "Xen");
    // Keys without a meaning are ignored, however many.
    send(&mut s, &garbage(2048, b"hq"));
    send(&mut s, b"h");
    wait(&mut s, "'h' pressed");
    wait(&mut s, "'q' dump domains");
    send(&mut s, b"q");
    wait(&mut s, "'q' pressed: 3 domains; input to Xen");
    let dom0_input = wait(&mut s, "d0   input: ");
    let dom2_input = wait(&mut s, "d2   input: console ring");

    // Back round to DOM1; end it, and the next switch skips it.
    switch_to(&mut s, "DOM0");
    switch_to(&mut s, "DOM1");
    send(&mut s, b"quit\n");
    wait(&mut s, "(d1) console-echo: quit");
    wait(&mut s, "d1: shut down (Poweroff)");
    switch_to(&mut s, "DOM2");
    send(&mut s, b"still here\nquit\n");
    wait(&mut s, "(d2) console-echo: quit");
    let report = s.finish();

    assert_power_off(&report, 0);
    assert_frames_balance(&report);
    let ids = [0, 1, 2];
    assert_echoed_only_by(&report, 1, &ids, "hello one");
    assert_echoed_only_by(&report, 2, &ids, "hello two");
    assert_echoed_only_by(&report, 2, &ids, "still here");
    let presses = |key: &str| {
        report
            .lines
            .iter()
            .filter(|l| l.contains(&format!("'{key}' pressed")))
            .count()
    };
    assert_eq!(
        (presses("h"), presses("q")),
        (1, 1),
        "{}",
        report.describe()
    );
    // No key reached a domain while hv had the input.
    for id in ids {
        let lines = guest_lines(&report, id);
        assert!(
            !lines.contains(&"echo: h") && !lines.contains(&"echo: q"),
            "d{id} got hv's keys\n{}",
            report.describe()
        );
    }
    // d0's queue holds what fitted; the rest of the flood was dropped and counted.
    let received = number_after(&dom0_input, "waiting, ").expect("received count");
    let dropped = number_after(&dom0_input, "received, ").expect("dropped count");
    assert!(
        dom0_input.contains("CONSOLEIO_read"),
        "{dom0_input}\n{}",
        report.describe()
    );
    assert!(received > 0 && dropped > 0, "{dom0_input}");
    assert_eq!(
        received + dropped,
        (to_dom0.len() + flood) as u64,
        "{dom0_input}"
    );
    // Every byte typed for d2 was received or dropped, and d2 echoed flood lines.
    let received = number_after(&dom2_input, "waiting, ").expect("received count");
    let dropped = number_after(&dom2_input, "received, ").expect("dropped count");
    assert_eq!(received + dropped, to_dom2 as u64, "{dom2_input}");
    assert!(
        guest_lines(&report, 2)
            .iter()
            .any(|l| l.starts_with("echo: ring flood ")),
        "{}",
        report.describe()
    );
    // The back end served both domUs to their end.
    assert!(
        guest_lines(&report, 0).contains(&"backend: SUCCESS"),
        "{}",
        report.describe()
    );
}

#[test]
fn consoleio_read_domains_get_only_their_input_and_survive_a_flood() {
    let dir = TempDir::new("console-input-read").expect("temp dir");
    let mut s = boot(
        &dir,
        &[
            ("reader0", "console-echo", 16),
            ("reader1", "console-echo", 16),
        ],
        false,
    );
    wait(&mut s, "*** Serial input to DOM0");
    wait(
        &mut s,
        "(d0) console-echo: ready, reading with CONSOLEIO_read",
    );
    wait(
        &mut s,
        "(d1) console-echo: ready, reading with CONSOLEIO_read",
    );
    send(&mut s, b"first\n");
    wait(&mut s, "(d0) echo: first");
    switch_to(&mut s, "DOM1");
    send(&mut s, b"second\n");
    wait(&mut s, "(d1) echo: second");
    // More lines than hv's queue holds, while d1 reads: some may be dropped, none may hang
    // hv, and the line after the flood arrives whole.
    send(&mut s, &flood_lines("flood line", 160));
    send(&mut s, b"\nafter the flood\n");
    wait(&mut s, "(d1) echo: after the flood");
    send(&mut s, b"quit\n");
    wait(&mut s, "(d1) console-echo: quit");
    switch_to(&mut s, "Xen");
    switch_to(&mut s, "DOM0");
    send(&mut s, b"quit\n");
    let report = s.finish();

    assert_power_off(&report, 0);
    assert_frames_balance(&report);
    let ids = [0, 1];
    assert_echoed_only_by(&report, 0, &ids, "first");
    assert_echoed_only_by(&report, 1, &ids, "second");
    assert_echoed_only_by(&report, 1, &ids, "after the flood");
    let flood_echoes = guest_lines(&report, 1)
        .iter()
        .filter(|l| l.starts_with("echo: flood line "))
        .count();
    assert!(
        flood_echoes > 0 && !guest_lines(&report, 0).iter().any(|l| l.contains("flood")),
        "d1 echoed {flood_echoes} flood lines\n{}",
        report.describe()
    );
}
