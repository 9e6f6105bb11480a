//! One run's figures, the medians over runs, the table printed at the end and its JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::{median, Percentiles};

/// Which system a run measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Subject {
    /// gbds-notifier, end to end.
    Service,
    /// The same calls against a server that answers 200 and does nothing.
    HttpNull,
    /// What a notification needs, in a minimal schema, written by one SQLite thread, no HTTP.
    DiskNull,
    /// The service's own writes without HTTP: its store (schema, writer thread, SQL, group
    /// commit) driven in process at the same concurrency.
    Store,
}

impl Subject {
    /// Every subject, in the order of the table's columns.
    pub const ALL: [Subject; 4] = [
        Subject::Service,
        Subject::HttpNull,
        Subject::Store,
        Subject::DiskNull,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Subject::Service => "gbds-notifier",
            Subject::HttpNull => "HTTP ceiling",
            Subject::DiskNull => "disk, minimal schema",
            Subject::Store => "store ceiling",
        }
    }
}

/// Everything measured in one run of one subject.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunReport {
    pub subject: Option<Subject>,
    /// Index of the repetition (ratios are taken between subjects of the same one).
    pub run: usize,
    /// `closed c=16`, `open 1000 notifications/s`, …
    pub load: String,
    pub synchronous: String,
    pub transactions: u64,
    pub api_calls: u64,
    pub api_errors: u64,
    pub first_error: Option<String>,
    pub notifications_expected: u64,
    pub notifications_delivered: u64,
    /// Expected notifications of acknowledged calls that never arrived (within the timeout).
    pub notifications_missing: u64,
    pub duplicates: u64,
    pub order_violations: u64,
    pub order_examples: Vec<String>,
    /// Seconds from the first call to the last answer.
    pub api_seconds: f64,
    /// Seconds from the first call to the last delivery (the end-to-end window).
    pub e2e_seconds: f64,
    pub api_calls_per_s: Option<f64>,
    /// Service: distinct notifications delivered per second end to end. HTTP ceiling: calls/s
    /// times the mix's notifications per call. Store and disk ceilings: notifications whose
    /// delivery result is committed, per second.
    pub notifications_per_s: Option<f64>,
    pub api_latency_us: Option<Percentiles>,
    pub ack_to_delivery_us: Option<Percentiles>,
    /// Deliveries the receiver timestamped before the driver had read the ack (the POST raced
    /// the API answer); counted as 0 µs.
    pub delivered_before_ack_read: u64,
    /// CPU seconds of the service during the measured phase, and how they were attributed.
    pub service_cpu_s: Option<f64>,
    pub service_cpu_us_per_notification: Option<f64>,
    pub cpu_attribution: String,
    /// CPU seconds of the benchmark's own threads (driver + receiver) in the same window.
    pub bench_cpu_s: Option<f64>,
    /// Per thread name: CPU seconds in the measured window (in-process runs).
    pub threads_cpu_s: Vec<(String, f64)>,
    pub peak_rss_bytes: Option<u64>,
    pub rss_note: String,
    pub database_bytes: Option<u64>,
    pub database_notifications: Option<u64>,
    pub database_bytes_per_notification: Option<f64>,
    /// Open loop: the latest a transaction started after its scheduled time.
    pub schedule_lag_max_us: Option<u64>,
    pub load_average_before: Option<f64>,
    pub load_average_after: Option<f64>,
}

/// Medians over the runs of one subject.
#[derive(Debug, Clone, Serialize)]
pub struct Medians {
    pub subject: Subject,
    pub runs: usize,
    pub api_calls_per_s: Option<f64>,
    pub notifications_per_s: Option<f64>,
    pub notifications_per_s_min: Option<f64>,
    pub notifications_per_s_max: Option<f64>,
    pub api_p50_us: Option<f64>,
    pub api_p99_us: Option<f64>,
    pub delivery_p50_us: Option<f64>,
    pub delivery_p99_us: Option<f64>,
    pub delivery_p999_us: Option<f64>,
    pub service_cpu_s: Option<f64>,
    pub service_cpu_us_per_notification: Option<f64>,
    pub peak_rss_bytes: Option<f64>,
    pub database_bytes_per_notification: Option<f64>,
    pub api_errors: u64,
    pub notifications_missing: u64,
    pub duplicates: u64,
    pub order_violations: u64,
}

/// The service's throughput as a fraction of the lower ceiling, per run and its median.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub per_run: Vec<f64>,
    pub median: Option<f64>,
    /// Which ceiling was lower in each run.
    pub lower_ceiling: Vec<Subject>,
}

fn med(runs: &[&RunReport], f: impl Fn(&RunReport) -> Option<f64>) -> Option<f64> {
    median(&runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
}

pub fn medians(all: &[RunReport], subject: Subject) -> Option<Medians> {
    let runs: Vec<&RunReport> = all.iter().filter(|r| r.subject == Some(subject)).collect();
    if runs.is_empty() {
        return None;
    }
    let rates: Vec<f64> = runs.iter().filter_map(|r| r.notifications_per_s).collect();
    Some(Medians {
        subject,
        runs: runs.len(),
        api_calls_per_s: med(&runs, |r| r.api_calls_per_s),
        notifications_per_s: median(&rates),
        notifications_per_s_min: rates.iter().copied().reduce(f64::min),
        notifications_per_s_max: rates.iter().copied().reduce(f64::max),
        api_p50_us: med(&runs, |r| r.api_latency_us.map(|p| p.p50)),
        api_p99_us: med(&runs, |r| r.api_latency_us.map(|p| p.p99)),
        delivery_p50_us: med(&runs, |r| r.ack_to_delivery_us.map(|p| p.p50)),
        delivery_p99_us: med(&runs, |r| r.ack_to_delivery_us.map(|p| p.p99)),
        delivery_p999_us: med(&runs, |r| r.ack_to_delivery_us.map(|p| p.p999)),
        service_cpu_s: med(&runs, |r| r.service_cpu_s),
        service_cpu_us_per_notification: med(&runs, |r| r.service_cpu_us_per_notification),
        peak_rss_bytes: med(&runs, |r| r.peak_rss_bytes.map(|b| b as f64)),
        database_bytes_per_notification: med(&runs, |r| r.database_bytes_per_notification),
        api_errors: runs.iter().map(|r| r.api_errors).sum(),
        notifications_missing: runs.iter().map(|r| r.notifications_missing).sum(),
        duplicates: runs.iter().map(|r| r.duplicates).sum(),
        order_violations: runs.iter().map(|r| r.order_violations).sum(),
    })
}

/// Service ÷ min(HTTP ceiling, write ceiling), run by run, where the write ceiling is `disk`
/// ([`Subject::Store`]: the service's own writes, or [`Subject::DiskNull`]: the minimal
/// schema); None unless all three were measured.
pub fn ratio(all: &[RunReport], disk: Subject) -> Option<Ratio> {
    let rate = |run: usize, s: Subject| {
        all.iter()
            .find(|r| r.run == run && r.subject == Some(s))
            .and_then(|r| r.notifications_per_s)
    };
    let mut per_run = Vec::new();
    let mut lower_ceiling = Vec::new();
    let runs = all.iter().map(|r| r.run + 1).max().unwrap_or(0);
    for run in 0..runs {
        let (Some(ours), Some(http), Some(disk_rate)) = (
            rate(run, Subject::Service),
            rate(run, Subject::HttpNull),
            rate(run, disk),
        ) else {
            continue;
        };
        let (lower, which) = if http <= disk_rate {
            (http, Subject::HttpNull)
        } else {
            (disk_rate, disk)
        };
        per_run.push(ours / lower);
        lower_ceiling.push(which);
    }
    if per_run.is_empty() {
        return None;
    }
    Some(Ratio {
        median: median(&per_run),
        per_run,
        lower_ceiling,
    })
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) => {
            let s = format!("{x:.decimals$}");
            // Thousands separators for the integer part.
            let (int, frac) = s
                .split_once('.')
                .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
            let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
            let mut grouped = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    grouped.push(',');
                }
                grouped.push(c);
            }
            match frac {
                Some(f) => format!("{sign}{grouped}.{f}"),
                None => format!("{sign}{grouped}"),
            }
        }
        None => "–".to_owned(),
    }
}

fn ms(us: Option<f64>) -> String {
    num(us.map(|u| u / 1000.0), 2)
}

/// The one table: a row per figure, a column per subject (medians over the runs).
pub fn table(all: &[RunReport]) -> String {
    let cols: Vec<Medians> = Subject::ALL
        .into_iter()
        .filter_map(|s| medians(all, s))
        .collect();
    let first = all.first();
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&Medians) -> String| {
        rows.push((name.to_owned(), cols.iter().map(f).collect()));
    };
    row("runs (medians shown)", &|m| m.runs.to_string());
    row("API calls/s", &|m| num(m.api_calls_per_s, 0));
    row("notifications/s (e2e; ceilings: equivalent)", &|m| {
        num(m.notifications_per_s, 0)
    });
    row("  min .. max over runs", &|m| {
        format!(
            "{} .. {}",
            num(m.notifications_per_s_min, 0),
            num(m.notifications_per_s_max, 0)
        )
    });
    row("API latency p50 / p99 (ms)", &|m| {
        format!("{} / {}", ms(m.api_p50_us), ms(m.api_p99_us))
    });
    row("ack→delivery p50 / p99 / p99.9 (ms)", &|m| {
        if m.delivery_p50_us.is_none() {
            "–".to_owned()
        } else {
            format!(
                "{} / {} / {}",
                ms(m.delivery_p50_us),
                ms(m.delivery_p99_us),
                ms(m.delivery_p999_us)
            )
        }
    });
    row("service CPU s (µs per notification)", &|m| {
        if m.service_cpu_s.is_none() {
            "–".to_owned()
        } else {
            format!(
                "{} ({})",
                num(m.service_cpu_s, 2),
                num(m.service_cpu_us_per_notification, 0)
            )
        }
    });
    row("peak RSS (MB)", &|m| {
        num(m.peak_rss_bytes.map(|b| b / 1e6), 1)
    });
    row("database bytes / notification", &|m| {
        num(m.database_bytes_per_notification, 0)
    });
    row("errors / missing / duplicates / order violations", &|m| {
        format!(
            "{} / {} / {} / {}",
            m.api_errors, m.notifications_missing, m.duplicates, m.order_violations
        )
    });
    for (name, disk) in [
        ("gbds-notifier ÷ lower ceiling", Subject::Store),
        ("same, with the minimal-schema disk", Subject::DiskNull),
    ] {
        let Some(r) = ratio(all, disk) else {
            continue;
        };
        rows.push((
            name.to_owned(),
            cols.iter()
                .map(|m| match m.subject {
                    Subject::Service => format!(
                        "{} % (lower: {})",
                        num(r.median.map(|x| x * 100.0), 1),
                        r.lower_ceiling.first().map(|s| s.label()).unwrap_or("–")
                    ),
                    _ => String::new(),
                })
                .collect(),
        ));
    }

    let name_width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| {
            rows.iter()
                .map(|(_, v)| v[i].chars().count())
                .chain(std::iter::once(cols[i].subject.label().len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    if let Some(f) = first {
        let _ = writeln!(
            out,
            "load: {}, synchronous={}, {} transactions per run",
            f.load, f.synchronous, f.transactions
        );
    }
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let mut header = format!("| {} |", pad("figure", name_width));
    for (c, w) in cols.iter().zip(&widths) {
        let _ = write!(header, " {} |", pad(c.subject.label(), *w));
    }
    let _ = writeln!(out, "{header}");
    let mut rule = format!("|{}|", "-".repeat(name_width + 2));
    for w in &widths {
        let _ = write!(rule, "{}|", "-".repeat(w + 2));
    }
    let _ = writeln!(out, "{rule}");
    for (name, values) in &rows {
        let mut line = format!("| {} |", pad(name, name_width));
        for (v, w) in values.iter().zip(&widths) {
            let _ = write!(line, " {} |", pad(v, *w));
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(num(Some(1234567.891), 1), "1,234,567.9");
        assert_eq!(num(Some(-999.0), 0), "-999");
        assert_eq!(num(None, 0), "–");
    }

    #[test]
    fn the_ratio_divides_by_the_lower_ceiling_of_the_same_run() {
        let r = |run, subject, rate| RunReport {
            subject: Some(subject),
            run,
            notifications_per_s: Some(rate),
            ..RunReport::default()
        };
        let all = vec![
            r(0, Subject::Service, 50.0),
            r(0, Subject::HttpNull, 100.0),
            r(0, Subject::DiskNull, 200.0),
            r(1, Subject::Service, 60.0),
            r(1, Subject::HttpNull, 300.0),
            r(1, Subject::DiskNull, 120.0),
        ];
        let ratio_ = ratio(&all, Subject::DiskNull).unwrap();
        assert_eq!(ratio_.per_run, vec![0.5, 0.5]);
        assert_eq!(
            ratio_.lower_ceiling,
            vec![Subject::HttpNull, Subject::DiskNull]
        );
        // Against a write ceiling that was not measured there is no ratio.
        assert!(ratio(&all, Subject::Store).is_none());
    }
}
