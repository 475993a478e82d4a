//! Memory sizes as people write them on the command line: `512M`, `1G`, `256MiB`, `512`.

/// Parses a size into MiB; a bare number is MiB. Accepts K/M/G/T with an optional `iB` or `B`.
pub fn parse_mib(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("bad size {text:?}: expected a number such as 512M"))?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("iB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(unit);
    let kib = match unit.to_ascii_uppercase().as_str() {
        "K" => Some(number),
        "" | "M" => number.checked_mul(1024),
        "G" => number.checked_mul(1024 * 1024),
        "T" => number.checked_mul(1024 * 1024 * 1024),
        _ => return Err(format!("bad size {text:?}: unknown unit {unit:?}")),
    }
    .ok_or_else(|| format!("size {text:?} is too large"))?;
    if kib % 1024 != 0 || kib == 0 {
        return Err(format!(
            "size {text:?} is not a whole, non-zero number of MiB"
        ));
    }
    u32::try_from(kib / 1024).map_err(|_| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_mib;

    #[test]
    fn sizes_parse_to_mib() {
        assert_eq!(parse_mib("512"), Ok(512));
        assert_eq!(parse_mib("512M"), Ok(512));
        assert_eq!(parse_mib("256MiB"), Ok(256));
        assert_eq!(parse_mib("1G"), Ok(1024));
        assert_eq!(parse_mib("2g"), Ok(2048));
        assert_eq!(parse_mib("4096K"), Ok(4));
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(parse_mib("").is_err());
        assert!(parse_mib("M").is_err());
        assert!(parse_mib("12X").is_err());
        assert!(parse_mib("100K").is_err());
        assert!(parse_mib("0").is_err());
    }
}
