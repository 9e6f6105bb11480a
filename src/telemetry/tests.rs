//! What `/metrics` shows, read back from the rendered text. The recorder is the process's, and
//! other tests count into it meanwhile: every test uses labels of its own and compares values
//! before and after.

use super::*;

/// The value of the series `name{labels}` exactly as rendered (labels in their order), if any.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

#[test]
fn attempts_are_counted_by_endpoint_and_outcome_and_timed_in_a_histogram() {
    let meter = AttemptMeter::of("tele-a");
    meter.record(Attempt::Delivered, Duration::from_millis(3));
    meter.record(Attempt::Delivered, Duration::from_millis(700));
    meter.record(Attempt::Retry, Duration::from_secs(20));
    AttemptMeter::of("tele-a").record(Attempt::Dead, Duration::from_millis(1));
    let text = render(true, None);
    let count = |outcome: &str| {
        value(
            &text,
            &format!("{DELIVERIES}{{endpoint=\"tele-a\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(count("delivered"), Some(2.0), "{text}");
    assert_eq!(count("retry"), Some(1.0));
    assert_eq!(count("dead"), Some(1.0));
    assert_eq!(
        count("gone"),
        Some(0.0),
        "every outcome is shown from the start"
    );
    let bucket = |le: &str| {
        value(
            &text,
            &format!("{DELIVERY_DURATION}_bucket{{endpoint=\"tele-a\",le=\"{le}\"}}"),
        )
    };
    // 1 ms, 3 ms, 700 ms and 20 s; a bucket counts what is at most its bound.
    assert_eq!(bucket("0.001"), Some(1.0), "{text}");
    assert_eq!(bucket("0.005"), Some(2.0));
    assert_eq!(bucket("1"), Some(3.0));
    assert_eq!(bucket("+Inf"), Some(4.0));
    assert!(text.contains(&format!("# TYPE {DELIVERY_DURATION} histogram")));
    assert!(text.contains(&format!("# TYPE {DELIVERIES} counter")));
}

#[test]
fn calls_are_counted_by_route_template_and_status() {
    http_request("/tele/{tguid}", 200);
    http_request("/tele/{tguid}", 200);
    http_request("/tele/{tguid}", 404);
    let text = render(true, None);
    let count = |status: u16| {
        value(
            &text,
            &format!("{HTTP_REQUESTS}{{route=\"/tele/{{tguid}}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!((count(200), count(404)), (Some(2.0), Some(1.0)), "{text}");
}

#[test]
fn the_queue_gauges_are_set_at_render_and_an_endpoint_no_longer_listed_drops_to_zero() {
    let queue = |id: &str, backlog| EndpointQueue {
        id: id.to_owned(),
        enabled: true,
        backlog,
        dead: 2,
        oldest_pending: Some(Duration::from_secs(90)),
        failing_for: None,
    };
    let text = render(false, Some(&[queue("tele-q1", 7), queue("tele-q2", 1)]));
    let gauge =
        |text: &str, name: &str, id: &str| value(text, &format!("{name}{{endpoint=\"{id}\"}}"));
    assert_eq!(gauge(&text, BACKLOG, "tele-q1"), Some(7.0), "{text}");
    assert_eq!(gauge(&text, OLDEST_PENDING, "tele-q1"), Some(90.0));
    assert_eq!(gauge(&text, DEAD, "tele-q2"), Some(2.0));
    assert_eq!(gauge(&text, ENDPOINT_ENABLED, "tele-q2"), Some(1.0));
    assert_eq!(gauge(&text, ENDPOINT_FAILING, "tele-q2"), Some(0.0));
    let text = render(true, Some(&[queue("tele-q1", 3)]));
    assert_eq!(gauge(&text, BACKLOG, "tele-q1"), Some(3.0));
    assert_eq!(gauge(&text, BACKLOG, "tele-q2"), Some(0.0));
    assert_eq!(gauge(&text, ENDPOINT_ENABLED, "tele-q2"), Some(0.0));
}

#[test]
fn every_metric_has_its_help_and_the_batch_histograms_have_buckets() {
    batch_committed(3, Duration::from_micros(800));
    notifications_recorded(2);
    http_rejected(Rejected::Overloaded);
    let text = render(true, None);
    for name in [
        NOTIFICATIONS,
        COMMIT_DURATION,
        BATCH_SIZE,
        HTTP_REJECTED,
        READY,
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
    }
    assert!(value(&text, &format!("{COMMIT_DURATION}_bucket{{le=\"0.001\"}}")).unwrap() >= 1.0);
    assert!(value(&text, &format!("{BATCH_SIZE}_bucket{{le=\"4\"}}")).unwrap() >= 1.0);
    assert!(value(&text, NOTIFICATIONS).unwrap() >= 2.0);
    assert!(value(&text, &format!("{HTTP_REJECTED}{{reason=\"overloaded\"}}")).unwrap() >= 1.0);
}

/// The `gbds_…` metric names a text mentions, histogram series (`_bucket`, `_sum`, `_count`)
/// taken for their histogram.
fn names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("gbds_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let histogram = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| ALL.contains(base));
        // The crate's name (`RUST_LOG=gbds_notifier=debug`) is no metric.
        if name != "gbds_notifier" {
            names.insert(histogram.unwrap_or(name).to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_the_alerts_and_the_operations_guide_know_exactly_the_metrics_exported() {
    let all: std::collections::BTreeSet<String> = ALL.iter().map(|s| s.to_string()).collect();
    let dashboard = include_str!("../../deploy/grafana-dashboard.json");
    let rules = include_str!("../../deploy/prometheus-rules.yml");
    let guide = include_str!("../../docs/operations.md");
    for (what, text) in [("dashboard", dashboard), ("alerting rules", rules)] {
        let unknown: Vec<_> = names_in(text).difference(&all).cloned().collect();
        assert!(
            unknown.is_empty(),
            "the {what} uses metrics that do not exist: {unknown:?}"
        );
    }
    let shown = names_in(dashboard);
    let missing: Vec<_> = all.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "the dashboard does not show {missing:?}"
    );
    let documented = names_in(guide);
    assert_eq!(
        documented, all,
        "docs/operations.md lists the metrics exported, no more"
    );
    let rendered = names_in(&render(true, None));
    assert!(rendered.is_subset(&all), "{rendered:?}");
}
