//! hv's command line: Xen-style space-separated `key=value` options and bare flags.
//!
//! Later occurrences of a key win, as on Xen. Nothing here allocates: the command line is
//! borrowed from the copy `BootInfo` keeps.

/// A parsed view of the command line.
#[derive(Clone, Copy, Debug)]
pub struct Cmdline<'a> {
    text: &'a str,
}

impl<'a> Cmdline<'a> {
    /// Wraps a command line.
    pub fn new(text: &'a str) -> Self {
        Self { text }
    }

    /// The whole command line.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// The value of the last `key=value` option named `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.text
            .split_ascii_whitespace()
            .filter_map(|word| word.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .next_back()
    }

    /// Whether `key` appears as a bare flag or with a true value (`1`, `yes`, `on`, `true`).
    pub fn flag(&self, key: &str) -> bool {
        let mut on = false;
        for word in self.text.split_ascii_whitespace() {
            match word.split_once('=') {
                None if word == key => on = true,
                Some((k, v)) if k == key => on = matches!(v, "1" | "yes" | "on" | "true"),
                _ => {}
            }
        }
        on
    }
}

/// Xen's `loglvl=` names, mapped onto `log` levels. `None` for an unknown name.
pub fn parse_loglvl(value: &str) -> Option<log::LevelFilter> {
    Some(match value {
        "none" => log::LevelFilter::Off,
        "error" => log::LevelFilter::Error,
        "warning" | "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "all" | "trace" => log::LevelFilter::Trace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_value_wins_and_flags_parse() {
        let c = Cmdline::new("loglvl=info  hvtest=timer loglvl=debug noreboot x=");
        assert_eq!(c.get("loglvl"), Some("debug"));
        assert_eq!(c.get("hvtest"), Some("timer"));
        assert_eq!(c.get("x"), Some(""));
        assert_eq!(c.get("missing"), None);
        assert!(c.flag("noreboot"));
        assert!(!c.flag("loglvl"));
        assert!(!c.flag("missing"));
    }

    #[test]
    fn flag_values() {
        assert!(Cmdline::new("a=yes").flag("a"));
        assert!(!Cmdline::new("a=0").flag("a"));
        assert!(!Cmdline::new("a a=off").flag("a"));
        assert!(Cmdline::new("a=off a").flag("a"));
    }

    #[test]
    fn loglvl_names() {
        assert_eq!(parse_loglvl("warning"), Some(log::LevelFilter::Warn));
        assert_eq!(parse_loglvl("all"), Some(log::LevelFilter::Trace));
        assert_eq!(parse_loglvl("loud"), None);
    }
}
