//! A Cairn policy hook for change freezes: writes under a prefix are denied during the
//! freeze windows of its config, by the time the leader stamped on the write's log entry
//! (never a member's own clock, so every member decides the same).
//!
//! Config:
//!
//! ```json
//! {"prefix": "/config/",
//!  "windows": [{"from": "2026-12-24T00:00:00Z", "until": "2026-12-27T00:00:00Z",
//!               "reason": "holiday freeze"}],
//!  "exempt_roles": ["release"]}
//! ```
//!
//! Times are RFC 3339 in UTC (`…Z`), or milliseconds since the Unix epoch as numbers; a window
//! holds from `from` (included) to `until` (excluded). `exempt_roles` is optional: users
//! holding one of them are never frozen. Reads and watches are never frozen, and outside the
//! windows the hook defers to the roles, so it only ever takes permissions away. A bad config
//! denies every write it is asked about (fail closed).

use cairn_sdk::{Answer, Context, Policy, PolicyRequest};
use serde::Deserialize;

/// The binding config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The keys frozen: those starting with it.
    pub prefix: String,
    pub windows: Vec<Window>,
    #[serde(default)]
    pub exempt_roles: Vec<String>,
}

/// One freeze, `[from, until)`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from: Time,
    pub until: Time,
    #[serde(default)]
    pub reason: String,
}

/// A time as the config gives it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Time {
    UnixMs(i64),
    Rfc3339(String),
}

impl Time {
    fn unix_ms(&self) -> Result<i64, String> {
        match self {
            Time::UnixMs(ms) => Ok(*ms),
            Time::Rfc3339(text) => parse_rfc3339_utc(text),
        }
    }
}

/// The policy.
pub struct ChangeFreeze;

impl Policy for ChangeFreeze {
    fn check(ctx: &Context<'_>, request: &PolicyRequest) -> Answer {
        let config: Config = match serde_json::from_slice(ctx.config()) {
            Ok(config) => config,
            Err(e) => return bad_config(ctx, &e.to_string()),
        };
        let writes_frozen_keys = request
            .accesses
            .iter()
            .any(|a| a.write && touches_prefix(&a.key, &a.range_end, config.prefix.as_bytes()));
        if !writes_frozen_keys
            || request
                .roles
                .iter()
                .any(|r| config.exempt_roles.contains(r))
        {
            return Answer::Defer;
        }
        let now = ctx.now_ms();
        for window in &config.windows {
            let (from, until) = match (window.from.unix_ms(), window.until.unix_ms()) {
                (Ok(from), Ok(until)) => (from, until),
                (Err(e), _) | (_, Err(e)) => return bad_config(ctx, &e),
            };
            if (from..until).contains(&now) {
                let why = if window.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", window.reason)
                };
                return Answer::Deny(format!(
                    "change freeze on {}{why}: no writes until {}",
                    config.prefix,
                    format_utc(until)
                ));
            }
        }
        Answer::Defer
    }
}

cairn_sdk::export_policy!(ChangeFreeze);

fn bad_config(ctx: &Context<'_>, error: &str) -> Answer {
    let reason = format!("change-freeze: bad binding config: {error}");
    ctx.warn(&reason);
    Answer::Deny(reason)
}

/// Whether `[key, range_end)` (etcd's rules) holds any key starting with `prefix`.
fn touches_prefix(key: &[u8], range_end: &[u8], prefix: &[u8]) -> bool {
    if key.starts_with(prefix) {
        return true;
    }
    match range_end {
        [] => false,
        // Every key from `key` on.
        [0] => key < prefix || key.starts_with(prefix),
        end => key < prefix && end > prefix,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (seconds may have a fraction) as Unix milliseconds.
pub fn parse_rfc3339_utc(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not an RFC 3339 UTC time like 2026-12-24T00:00:00Z");
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' || !matches!(b[b.len() - 1], b'Z' | b'z') {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        text.get(range)
            .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut millis = 0;
    let fraction = &text[19..text.len() - 1];
    if let Some(digits) = fraction.strip_prefix('.') {
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let padded = format!("{digits:0<3}");
        millis = padded[..3].parse().map_err(|_| bad())?;
    } else if !fraction.is_empty() {
        return Err(bad());
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    let days = days_from_civil(y, mo, d);
    Ok(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + millis)
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use cairn_sdk::testing::{Harness, MemStore};
    use cairn_sdk::{Access, Answer, Operation, PolicyRequest};

    use super::{ChangeFreeze, format_utc, parse_rfc3339_utc};

    const CONFIG: &[u8] = br#"{"prefix": "/config/",
        "windows": [{"from": "2026-12-24T00:00:00Z", "until": "2026-12-27T00:00:00Z",
                     "reason": "holiday freeze"},
                    {"from": 0, "until": 1000}],
        "exempt_roles": ["release"]}"#;

    fn ask(now_ms: i64, roles: &[&str], accesses: Vec<Access>) -> Answer {
        let store = MemStore::new();
        let mut request = PolicyRequest::new("u", Operation::Put, accesses);
        request.roles = roles.iter().map(|r| r.to_string()).collect();
        Harness::new(&store, CONFIG)
            .at(now_ms)
            .check_policy::<ChangeFreeze>(&request)
    }

    fn ms(text: &str) -> i64 {
        parse_rfc3339_utc(text).expect("valid time")
    }

    #[test]
    fn writes_in_a_window_are_denied() {
        assert_eq!(
            ask(
                ms("2026-12-25T12:00:00Z"),
                &[],
                vec![Access::put("/config/app", "x")]
            ),
            Answer::deny(
                "change freeze on /config/ (holiday freeze): no writes until 2026-12-27T00:00:00Z"
            )
        );
        // A delete over a range that reaches into the prefix is frozen too.
        assert!(matches!(
            ask(
                ms("2026-12-24T00:00:00Z"),
                &[],
                vec![Access::delete("/a", "\0")]
            ),
            Answer::Deny(_)
        ));
    }

    #[test]
    fn outside_windows_reads_and_exempt_roles_defer() {
        let put = || vec![Access::put("/config/app", "x")];
        assert_eq!(ask(ms("2026-12-27T00:00:00Z"), &[], put()), Answer::Defer);
        assert_eq!(
            ask(ms("2026-12-23T23:59:59.999Z"), &[], put()),
            Answer::Defer
        );
        assert_eq!(
            ask(ms("2026-12-25T00:00:00Z"), &["release"], put()),
            Answer::Defer
        );
        assert_eq!(
            ask(
                ms("2026-12-25T00:00:00Z"),
                &[],
                vec![Access::read("/config/", "/config0")]
            ),
            Answer::Defer
        );
        assert_eq!(
            ask(
                ms("2026-12-25T00:00:00Z"),
                &[],
                vec![Access::put("/other", "x")]
            ),
            Answer::Defer
        );
    }

    #[test]
    fn windows_may_be_given_in_milliseconds() {
        assert!(matches!(
            ask(999, &[], vec![Access::put("/config/a", "x")]),
            Answer::Deny(_)
        ));
        assert_eq!(
            ask(1000, &[], vec![Access::put("/config/a", "x")]),
            Answer::Defer
        );
    }

    #[test]
    fn times_parse_and_print() {
        assert_eq!(ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ms("2000-03-01T00:00:01.5Z"), 951_868_801_500);
        assert_eq!(format_utc(951_868_801_500), "2000-03-01T00:00:01Z");
        assert_eq!(
            format_utc(ms("2026-12-27T10:20:30Z")),
            "2026-12-27T10:20:30Z"
        );
        for bad in [
            "2026-12-27",
            "2026-12-27T10:20:30+01:00",
            "2026-13-01T00:00:00Z",
        ] {
            assert!(parse_rfc3339_utc(bad).is_err(), "{bad}");
        }
    }
}
