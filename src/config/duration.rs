//! Durations as the configuration writes them: a whole number and a unit, "250ms", "5s",
//! "5m", "2h", "1d".

use std::time::Duration;

use super::error::{err, ConfigError};

/// Parses "250ms", "5s", "5m", "2h", "1d" (a whole number and a unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).map(Duration::from_millis)
}

/// The duration at `key`, or `default` when the key is not set.
pub(super) fn duration_or(
    key: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match parse_duration(text) {
        Some(d) => Ok(d),
        None => err(
            key,
            format!("{text:?} is not a duration (use e.g. \"250ms\", \"5s\", \"5m\", \"2h\")"),
        ),
    }
}
