//! Wall-clock helpers: the store keeps times as Unix milliseconds, the API shows RFC 3339.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-23T10:00:00.123Z` for a Unix-milliseconds time.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    // Always three fraction digits, so that times sort as strings.
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_three_fraction_digits_so_times_sort_as_text() {
        assert_eq!(
            super::rfc3339(1_614_265_330_100),
            "2021-02-25T15:02:10.100Z"
        );
        assert_eq!(
            super::rfc3339(1_614_265_330_000),
            "2021-02-25T15:02:10.000Z"
        );
    }

    #[test]
    fn formats_milliseconds_as_rfc3339_utc() {
        assert_eq!(
            super::rfc3339(1_614_265_330_123),
            "2021-02-25T15:02:10.123Z"
        );
    }
}
