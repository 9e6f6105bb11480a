//! The retry policy as a pure function: how long to wait after a failed attempt, or `None`
//! when the schedule is used up and the delivery is dead.

use std::time::Duration;

/// Longest `Retry-After` we honour; a receiver cannot park a delivery for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Delay before the next attempt, after `failed_attempts` failures (1 after the first).
///
/// `schedule[k]` is the wait after failure k+1; `jitter` (0..=1) spreads it by ± that fraction
/// using `unit` (a uniform sample in 0..1, passed in to keep this pure); `retry_after`, from a
/// 429 or 503, replaces the scheduled wait, bounded by `MAX_RETRY_AFTER`.
pub fn next_delay(
    schedule: &[Duration],
    failed_attempts: u32,
    jitter: f64,
    unit: f64,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let index = usize::try_from(failed_attempts.checked_sub(1)?).ok()?;
    let scheduled = *schedule.get(index)?;
    if let Some(asked) = retry_after {
        return Some(asked.min(MAX_RETRY_AFTER));
    }
    let factor = 1.0 + jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    Some(scheduled.mul_f64(factor.max(0.0)))
}

/// Reads a `Retry-After` header given in seconds (the HTTP-date form is ignored).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn each_failure_waits_its_step_of_the_schedule_then_the_delivery_is_dead() {
        let schedule = [s(5), s(300), s(1800)];
        assert_eq!(next_delay(&schedule, 1, 0.0, 0.5, None), Some(s(5)));
        assert_eq!(next_delay(&schedule, 2, 0.0, 0.5, None), Some(s(300)));
        assert_eq!(next_delay(&schedule, 3, 0.0, 0.5, None), Some(s(1800)));
        assert_eq!(next_delay(&schedule, 4, 0.0, 0.5, None), None);
        assert_eq!(next_delay(&[], 1, 0.0, 0.5, None), None);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let schedule = [s(100)];
        assert_eq!(next_delay(&schedule, 1, 0.2, 0.0, None), Some(s(80)));
        assert_eq!(next_delay(&schedule, 1, 0.2, 1.0, None), Some(s(120)));
        assert_eq!(next_delay(&schedule, 1, 0.2, 0.5, None), Some(s(100)));
    }

    #[test]
    fn retry_after_replaces_the_wait_but_is_bounded_and_does_not_extend_the_schedule() {
        let schedule = [s(5)];
        assert_eq!(next_delay(&schedule, 1, 0.2, 0.9, Some(s(30))), Some(s(30)));
        assert_eq!(
            next_delay(&schedule, 1, 0.0, 0.5, Some(s(86_400))),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(next_delay(&schedule, 2, 0.0, 0.5, Some(s(1))), None);
    }

    #[test]
    fn retry_after_seconds_parse() {
        assert_eq!(parse_retry_after(" 120 "), Some(s(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
