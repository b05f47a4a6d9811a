//! Flag values with units: Go-style durations (`2s`, `500ms`, `1m30s`, as etcdctl takes them)
//! and byte sizes (`1048576`, `1MiB`, `512KiB`, `64MB`).
//!
//! Pure parsing; clap calls these as value parsers and shows their messages.

use std::time::Duration;

/// Parses a Go duration: one or more `<number><unit>` groups, unit one of `ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`. A bare `0` is zero. Fractions (`1.5s`) are allowed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: expected e.g. 2s, 500ms or 1m30s");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Parses a byte count: a plain integer, or one with a suffix `K`/`KiB`, `M`/`MiB`, `G`/`GiB`
/// (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000). `B` alone is bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {text:?}: expected bytes, e.g. 1048576, 1MiB or 512KiB");
    let digits_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_len == 0 {
        return Err(bad());
    }
    let number: u64 = text[..digits_len].parse().map_err(|_| bad())?;
    let multiplier: u64 = match text[digits_len..].trim_start() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number.checked_mul(multiplier).ok_or_else(bad)
}

/// Sizes as etcdctl prints them (go-humanize's `Bytes`: SI units, one decimal under 10).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let exp = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    if exp == 0 {
        return format!("{n} B");
    }
    let value = n as f64 / 1000f64.powi(exp as i32);
    let value = (value * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exp - 1])
    } else {
        format!("{value:.0} {}", UNITS[exp - 1])
    }
}

/// A duration as Go's `time.Duration.String` writes it: `2.559554ms`, `1.5s`, `1m2.5s`.
pub fn go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    // Trailing zeros of the fraction dropped, as Go drops them.
    let with_fraction = |whole: u128, fraction: u128, digits: usize, unit: &str| {
        let fraction = format!("{fraction:0digits$}");
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            format!("{whole}{unit}")
        } else {
            format!("{whole}.{fraction}{unit}")
        }
    };
    match nanos {
        0 => "0s".to_owned(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => with_fraction(n / 1_000, n % 1_000, 3, "µs"),
        n if n < 1_000_000_000 => with_fraction(n / 1_000_000, n % 1_000_000, 6, "ms"),
        n => {
            let secs = n / 1_000_000_000;
            let (hours, minutes, secs) = (secs / 3600, secs / 60 % 60, secs % 60);
            let seconds = with_fraction(secs, n % 1_000_000_000, 9, "s");
            match (hours, minutes) {
                (0, 0) => seconds,
                (0, m) => format!("{m}m{seconds}"),
                (h, m) => format!("{h}h{m}m{seconds}"),
            }
        }
    }
}

#[cfg(test)]
mod go_duration_tests {
    use super::go_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(go_duration(Duration::from_nanos(2_559_554)), "2.559554ms");
        assert_eq!(go_duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(62_500)), "1m2.5s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_nanos(999)), "999ns");
    }
}
