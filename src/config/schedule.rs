//! Job schedules as the configuration writes them: cron expressions with seconds (and an
//! optional year), read exactly as tokio-cron-scheduler reads them, and refused when they never
//! fire.

use time::{Date, Duration, OffsetDateTime};

use super::error::{err, ConfigError};

/// How far ahead a schedule must fire at least once, in years. Every day-of-month, month and
/// weekday combination comes round within 40: the longest wait is 29 February on a given
/// weekday across a century year that has no leap day.
const HORIZON_YEARS: i64 = 41;

/// The schedule at `key`, or `default` when the key is not set.
///
/// The scheduler itself, given a schedule that never fires (`0 0 0 31 2 *`, or a year gone
/// by), looks for its next time until the year 5000: seconds of start-up and then a job that
/// silently never runs. So the day each schedule next fires is looked for here, day by day
/// over a bounded horizon (cheap bit tests, well under a millisecond for most schedules).
pub(super) fn schedule_or(
    key: &str,
    raw: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    let schedule = raw.unwrap_or_else(|| default.to_owned());
    let example = "(e.g. \"0 17 * * * *\")";
    let cron = match parser().parse(&schedule) {
        Ok(cron) => cron,
        Err(e) => {
            return err(
                key,
                format!("{schedule:?} is not a cron expression with seconds {example}: {e}"),
            )
        }
    };
    if first_day(&cron, OffsetDateTime::now_utc().date()).is_none() {
        return err(
            key,
            format!("{schedule:?} never fires (looked {HORIZON_YEARS} years ahead) {example}"),
        );
    }
    Ok(schedule)
}

/// The parser tokio-cron-scheduler uses for `Job::new_async`: seconds required, and a
/// day-of-month and a weekday that must both match.
fn parser() -> croner::parser::CronParser {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
}

/// The first day from `from` within the horizon on which `cron` fires (every hour, minute
/// and second field of a parsed pattern matches at least one value).
fn first_day(cron: &croner::Cron, from: Date) -> Option<Date> {
    let p = &cron.pattern;
    let mut day = from;
    let last = from.checked_add(Duration::days(HORIZON_YEARS * 366))?;
    while day <= last {
        let (y, m, d) = (
            day.year(),
            u32::from(u8::from(day.month())),
            u32::from(day.day()),
        );
        let fires = p.year_match(y).unwrap_or(false)
            && p.month_match(m).unwrap_or(false)
            && p.day_match(y, m, d).unwrap_or(false);
        if fires {
            return Some(day);
        }
        day = day.next_day()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn first(schedule: &str, from: Date) -> Option<Date> {
        first_day(&parser().parse(schedule).expect("a valid pattern"), from)
    }

    #[test]
    fn a_schedule_fires_on_the_first_day_its_fields_allow() {
        let from = date!(2026 - 12 - 06);
        assert_eq!(first("0 17 * * * *", from), Some(from));
        assert_eq!(first("0 0 3 1 * *", from), Some(date!(2027 - 01 - 01)));
        // Day of month and weekday must both match: 29 February on a Monday.
        assert_eq!(first("0 0 0 29 2 Mon", from), Some(date!(2044 - 02 - 29)));
        assert_eq!(first("0 0 0 * * * 2031", from), Some(date!(2031 - 01 - 01)));
    }

    #[test]
    fn a_schedule_that_never_fires_is_found_out() {
        let from = date!(2026 - 12 - 06);
        for never in [
            "0 0 0 31 2 *",
            "0 0 0 30 2 *",
            "0 0 0 * * * 2020",
            "0 0 0 * * * 2100",
            "0\u{b}0\u{b}0 31 4,6 *",
        ] {
            assert_eq!(first(never, from), None, "{never:?}");
        }
    }

    #[test]
    fn a_schedule_that_never_fires_is_refused_naming_the_key() {
        let e = schedule_or("retention.schedule", Some("0 0 0 31 2 *".into()), "")
            .expect_err("refused");
        let text = e.to_string();
        assert!(
            text.contains("retention.schedule") && text.contains("never fires"),
            "{text}"
        );
        let e =
            schedule_or("retention.schedule", Some("every day".into()), "").expect_err("refused");
        assert!(e.to_string().contains("not a cron expression"), "{e}");
        assert_eq!(
            schedule_or("retention.schedule", None, "0 17 * * * *").unwrap(),
            "0 17 * * * *"
        );
    }
}
