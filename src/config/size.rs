//! Sizes in bytes as the configuration writes them: a whole number and a binary unit,
//! "512KiB", "64MiB", "1GiB", or a bare number of bytes.

use super::error::{err, ConfigError};

/// Parses "65536", "512KiB", "64MiB", "1GiB" (a whole number and an optional binary unit).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let scale: usize = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// The size at `key`, or `default` when the key is not set.
pub(super) fn size_or(
    key: &str,
    value: Option<&str>,
    default: usize,
) -> Result<usize, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match parse_size(text) {
        Some(n) => Ok(n),
        None => err(
            key,
            format!("{text:?} is not a size (use e.g. \"512KiB\", \"64MiB\", \"1GiB\")"),
        ),
    }
}
