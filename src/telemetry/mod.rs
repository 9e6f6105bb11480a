//! Metrics and logs for operators: every metric `/metrics` exports (its name, kind, help and
//! buckets), the process's Prometheus recorder, and the handles the hot paths keep so that
//! counting a call or an attempt builds no label and looks up no name; `logs` sets up the log
//! format (`[log] format`).
//!
//! The recorder is one per process, as Prometheus scrapes a process: it is not installed as the
//! `metrics` crate's global recorder, so nothing but this module can add to what is exported.
//! Counters and histograms move where things happen (the store's writers, the dispatcher, the
//! API's middleware); the gauges of the delivery queues are read from the store when
//! `/metrics` is scraped ([`render`]).

pub mod logs;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Notifications recorded (committed), one per body and not per endpoint.
pub const NOTIFICATIONS: &str = "gbds_notifications_total";
/// Delivery attempts by endpoint and outcome (`delivered`, `retry`, `dead`, `gone`).
pub const DELIVERIES: &str = "gbds_deliveries_total";
/// How long one attempt took, from its start to its result, by endpoint.
pub const DELIVERY_DURATION: &str = "gbds_delivery_duration_seconds";
/// Pending deliveries by endpoint (read at scrape time).
pub const BACKLOG: &str = "gbds_delivery_backlog";
/// Age of the oldest notification an endpoint has not acknowledged yet (0 without backlog).
pub const OLDEST_PENDING: &str = "gbds_delivery_oldest_pending_age_seconds";
/// Dead deliveries held by endpoint (read at scrape time): they wait for an operator.
pub const DEAD: &str = "gbds_deliveries_dead";
/// 1 while an endpoint is enabled, 0 once disabled (a 410, or failing too long).
pub const ENDPOINT_ENABLED: &str = "gbds_endpoint_enabled";
/// How long every attempt to an endpoint has been failing (0 while it is healthy).
pub const ENDPOINT_FAILING: &str = "gbds_endpoint_failing_seconds";
/// How long a write batch took from its BEGIN to its COMMIT's return.
pub const COMMIT_DURATION: &str = "gbds_store_commit_duration_seconds";
/// Commands (calls, results, claims) per committed write batch.
pub const BATCH_SIZE: &str = "gbds_store_batch_commands";
/// API calls by matched route template and status.
pub const HTTP_REQUESTS: &str = "gbds_http_requests_total";
/// API calls refused before any route ran, by reason (`overloaded`, `timeout`).
pub const HTTP_REJECTED: &str = "gbds_http_rejected_total";
/// 1 while `/readyz` answers 200.
pub const READY: &str = "gbds_ready";
/// Messages the inbound consumer took from the broker, redeliveries included.
pub const INBOUND_RECEIVED: &str = "gbds_inbound_received_total";
/// Inbound messages finished and acknowledged, by outcome (`applied`, `duplicate`,
/// `dead_lettered`).
pub const INBOUND_MESSAGES: &str = "gbds_inbound_messages_total";
/// Inbound writes that failed (the store unavailable) and were tried again.
pub const INBOUND_STORE_FAILURES: &str = "gbds_inbound_store_failures_total";
/// Connections the inbound consumer opened to the broker: 1, plus one per reconnection.
pub const INBOUND_CONNECTIONS: &str = "gbds_inbound_connections_total";

/// Every metric above.
pub const ALL: [&str; 17] = [
    NOTIFICATIONS,
    DELIVERIES,
    DELIVERY_DURATION,
    BACKLOG,
    OLDEST_PENDING,
    DEAD,
    ENDPOINT_ENABLED,
    ENDPOINT_FAILING,
    COMMIT_DURATION,
    BATCH_SIZE,
    HTTP_REQUESTS,
    HTTP_REJECTED,
    READY,
    INBOUND_RECEIVED,
    INBOUND_MESSAGES,
    INBOUND_STORE_FAILURES,
    INBOUND_CONNECTIONS,
];

/// The `route` label of a call that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Seconds, for attempts: a LAN POST takes milliseconds, a timeout 15 s.
const DELIVERY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Seconds, for commits: an fsync takes 0.1-10 ms, PostgreSQL's round trips a few.
const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Commands per batch, up to the writers' 1,024.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// What became of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Failed; another attempt is scheduled.
    Retry,
    /// Failed, and the retry schedule is used up.
    Dead,
    /// 410 Gone: the endpoint is disabled.
    Gone,
}

impl Attempt {
    const ALL: [Attempt; 4] = [
        Attempt::Delivered,
        Attempt::Retry,
        Attempt::Dead,
        Attempt::Gone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Attempt::Delivered => "delivered",
            Attempt::Retry => "retry",
            Attempt::Dead => "dead",
            Attempt::Gone => "gone",
        }
    }
}

/// Why the API refused a call before routing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No slot under `api.max_concurrent_requests` within `api.request_timeout` (503).
    Overloaded,
    /// The call took longer than `api.request_timeout` (408).
    Timeout,
}

/// What the inbound consumer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundEvent {
    /// A message taken from the broker (a redelivery too).
    Received,
    /// A message whose write changed the state, acknowledged.
    Applied,
    /// A message whose write was a repeat that changed nothing, acknowledged.
    Duplicate,
    /// A refused message, published to the dead-letter queue and acknowledged.
    DeadLettered,
    /// A write that failed and will be tried again.
    StoreFailure,
    /// A connection opened and subscribed.
    Connected,
}

/// One endpoint's delivery queue as the store reports it when `/metrics` is scraped.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointQueue {
    pub id: String,
    pub enabled: bool,
    /// Pending deliveries.
    pub backlog: i64,
    pub dead: i64,
    /// Age of the oldest pending notification.
    pub oldest_pending: Option<Duration>,
    /// Since when every attempt has failed.
    pub failing_for: Option<Duration>,
}

/// The handles of one endpoint's attempt metrics.
struct EndpointAttempts {
    /// In the order of `Attempt::ALL`.
    outcomes: [Counter; 4],
    duration: Histogram,
}

/// The handles of one endpoint's scrape-time gauges.
struct EndpointGauges {
    backlog: Gauge,
    oldest_pending: Gauge,
    dead: Gauge,
    enabled: Gauge,
    failing: Gauge,
}

struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    notifications: Counter,
    commit: Histogram,
    batch: Histogram,
    ready: Gauge,
    overloaded: Counter,
    timeout: Counter,
    /// In the order of [`InboundEvent`]'s variants.
    inbound: [Counter; 6],
    attempts: RwLock<HashMap<Box<str>, Arc<EndpointAttempts>>>,
    /// Route template -> status -> counter.
    routes: RwLock<HashMap<Box<str>, HashMap<u16, Counter>>>,
    /// Held for a whole scrape, so that concurrent scrapes do not interleave.
    gauges: Mutex<HashMap<String, EndpointGauges>>,
}

/// Every handle names where it was registered from; the exporter does not show it.
static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

static TELEMETRY: LazyLock<Telemetry> = LazyLock::new(Telemetry::new);

impl Telemetry {
    fn new() -> Self {
        let buckets = |builder: PrometheusBuilder, name: &str, values: &[f64]| {
            builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), values)
                .expect("bucket lists are constants and not empty")
        };
        let builder = buckets(
            PrometheusBuilder::new(),
            DELIVERY_DURATION,
            DELIVERY_BUCKETS,
        );
        let builder = buckets(builder, COMMIT_DURATION, COMMIT_BUCKETS);
        let recorder = buckets(builder, BATCH_SIZE, BATCH_BUCKETS).build_recorder();
        describe(&recorder);
        let handle = recorder.handle();
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        let histogram = |name: &'static str| {
            recorder.register_histogram(&Key::from_static_name(name), &METADATA)
        };
        let rejected = |reason: &'static str| {
            counter(
                HTTP_REJECTED,
                vec![Label::from_static_parts("reason", reason)],
            )
        };
        let outcome = |outcome: &'static str| {
            counter(
                INBOUND_MESSAGES,
                vec![Label::from_static_parts("outcome", outcome)],
            )
        };
        let inbound = [
            counter(INBOUND_RECEIVED, Vec::new()),
            outcome("applied"),
            outcome("duplicate"),
            outcome("dead_lettered"),
            counter(INBOUND_STORE_FAILURES, Vec::new()),
            counter(INBOUND_CONNECTIONS, Vec::new()),
        ];
        Telemetry {
            notifications: counter(NOTIFICATIONS, Vec::new()),
            inbound,
            commit: histogram(COMMIT_DURATION),
            batch: histogram(BATCH_SIZE),
            ready: recorder.register_gauge(&Key::from_static_name(READY), &METADATA),
            overloaded: rejected("overloaded"),
            timeout: rejected("timeout"),
            attempts: RwLock::default(),
            routes: RwLock::default(),
            gauges: Mutex::default(),
            recorder,
            handle,
        }
    }

    fn attempts(&self, endpoint: &str) -> Arc<EndpointAttempts> {
        let known = self.attempts.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(handles) = known.get(endpoint) {
            return handles.clone();
        }
        drop(known);
        let mut known = self
            .attempts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        known
            .entry(endpoint.into())
            .or_insert_with(|| {
                let label = || Label::new("endpoint", endpoint.to_owned());
                Arc::new(EndpointAttempts {
                    outcomes: Attempt::ALL.map(|outcome| {
                        let labels = vec![
                            label(),
                            Label::from_static_parts("outcome", outcome.as_str()),
                        ];
                        self.recorder
                            .register_counter(&Key::from_parts(DELIVERIES, labels), &METADATA)
                    }),
                    duration: self.recorder.register_histogram(
                        &Key::from_parts(DELIVERY_DURATION, vec![label()]),
                        &METADATA,
                    ),
                })
            })
            .clone()
    }

    fn route(&self, route: &str, status: u16) -> Counter {
        let known = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(counter) = known.get(route).and_then(|s| s.get(&status)) {
            return counter.clone();
        }
        drop(known);
        let mut known = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        known
            .entry(route.into())
            .or_default()
            .entry(status)
            .or_insert_with(|| {
                let labels = vec![
                    Label::new("route", route.to_owned()),
                    Label::new("status", status.to_string()),
                ];
                self.recorder
                    .register_counter(&Key::from_parts(HTTP_REQUESTS, labels), &METADATA)
            })
            .clone()
    }

    fn endpoint_gauges(&self, id: &str) -> EndpointGauges {
        let gauge = |name: &'static str| {
            let labels = vec![Label::new("endpoint", id.to_owned())];
            self.recorder
                .register_gauge(&Key::from_parts(name, labels), &METADATA)
        };
        EndpointGauges {
            backlog: gauge(BACKLOG),
            oldest_pending: gauge(OLDEST_PENDING),
            dead: gauge(DEAD),
            enabled: gauge(ENDPOINT_ENABLED),
            failing: gauge(ENDPOINT_FAILING),
        }
    }
}

/// The `# HELP` and unit of every metric.
fn describe(recorder: &PrometheusRecorder) {
    let counters = [
        (NOTIFICATIONS, "Notifications recorded (committed), one per body whatever the number of endpoints."),
        (DELIVERIES, "Delivery attempts by endpoint and outcome: delivered, retry (failed, another attempt scheduled), dead (failed, schedule used up), gone (410: endpoint disabled)."),
        (HTTP_REQUESTS, "API calls by route template and HTTP status."),
        (HTTP_REJECTED, "API calls refused before routing: overloaded (503, no slot in time) or timeout (408)."),
        (INBOUND_RECEIVED, "Messages the inbound consumer took from the broker, redeliveries included."),
        (INBOUND_MESSAGES, "Inbound messages finished and acknowledged, by outcome: applied, duplicate (a repeat that changed nothing), dead_lettered (refused, published to <queue>.dead)."),
        (INBOUND_STORE_FAILURES, "Inbound writes that failed (store unavailable) and were tried again; the message stays unacknowledged."),
        (INBOUND_CONNECTIONS, "Connections the inbound consumer opened to the broker: 1, plus one per reconnection."),
    ];
    for (name, help) in counters {
        recorder.describe_counter(name.into(), None, help.into());
    }
    let gauges = [
        (BACKLOG, None, "Pending deliveries by endpoint."),
        (OLDEST_PENDING, Some(Unit::Seconds), "Age of the oldest notification an endpoint has not acknowledged (0 without backlog)."),
        (DEAD, None, "Dead deliveries by endpoint, waiting for an operator's retry or recover."),
        (ENDPOINT_ENABLED, None, "1 while the endpoint is enabled, 0 once disabled (410 Gone or failing for delivery.disable_after)."),
        (ENDPOINT_FAILING, Some(Unit::Seconds), "How long every attempt to the endpoint has failed (0 while healthy)."),
        (READY, None, "1 while /readyz answers 200."),
    ];
    for (name, unit, help) in gauges {
        recorder.describe_gauge(name.into(), unit, help.into());
    }
    let histograms = [
        (
            DELIVERY_DURATION,
            Some(Unit::Seconds),
            "Duration of one delivery attempt, from its start to its result, by endpoint.",
        ),
        (
            COMMIT_DURATION,
            Some(Unit::Seconds),
            "Duration of one write batch of the store, from BEGIN to the return of its COMMIT.",
        ),
        (
            BATCH_SIZE,
            None,
            "Commands (calls, delivery results, claims) per committed write batch.",
        ),
    ];
    for (name, unit, help) in histograms {
        recorder.describe_histogram(name.into(), unit, help.into());
    }
}

/// `n` notifications were committed.
pub fn notifications_recorded(n: usize) {
    if n > 0 {
        TELEMETRY.notifications.increment(n as u64);
    }
}

/// A write batch of `commands` committed, `took` after its BEGIN.
pub fn batch_committed(commands: usize, took: Duration) {
    let t = &*TELEMETRY;
    t.commit.record(took.as_secs_f64());
    t.batch.record(commands as f64);
}

/// Where the attempts to one endpoint are counted; take it before an attempt, record after.
#[derive(Clone)]
pub struct AttemptMeter(Arc<EndpointAttempts>);

impl AttemptMeter {
    /// The meter of `endpoint`'s attempts.
    pub fn of(endpoint: &str) -> Self {
        AttemptMeter(TELEMETRY.attempts(endpoint))
    }

    /// An attempt came to `outcome` after `took`.
    pub fn record(&self, outcome: Attempt, took: Duration) {
        let index = Attempt::ALL
            .iter()
            .position(|a| *a == outcome)
            .expect("ALL holds every outcome");
        self.0.outcomes[index].increment(1);
        self.0.duration.record(took.as_secs_f64());
    }
}

/// The API answered a call of `route` (a template such as `/v1/transactions/{tguid}`, or
/// [`UNMATCHED_ROUTE`]) with `status`.
pub fn http_request(route: &str, status: u16) {
    TELEMETRY.route(route, status).increment(1);
}

/// The API refused a call before routing it.
pub fn http_rejected(why: Rejected) {
    match why {
        Rejected::Overloaded => TELEMETRY.overloaded.increment(1),
        Rejected::Timeout => TELEMETRY.timeout.increment(1),
    }
}

/// The inbound consumer saw `what`.
pub fn inbound(what: InboundEvent) {
    let index = match what {
        InboundEvent::Received => 0,
        InboundEvent::Applied => 1,
        InboundEvent::Duplicate => 2,
        InboundEvent::DeadLettered => 3,
        InboundEvent::StoreFailure => 4,
        InboundEvent::Connected => 5,
    };
    TELEMETRY.inbound[index].increment(1);
}

/// Drains the histograms' recent samples into their buckets. Rendering does it too; this
/// bounds the samples held between scrapes (or when nothing scrapes at all).
pub fn upkeep() {
    TELEMETRY.handle.run_upkeep();
}

/// The Prometheus text of every metric, with the gauges set from `ready` and, when the store
/// could be read, its delivery queues. An endpoint no longer listed keeps its series, at 0.
pub fn render(ready: bool, queues: Option<&[EndpointQueue]>) -> String {
    let t = &*TELEMETRY;
    let mut gauges = t.gauges.lock().unwrap_or_else(PoisonError::into_inner);
    t.ready.set(if ready { 1.0 } else { 0.0 });
    if let Some(queues) = queues {
        for g in gauges.values() {
            for gauge in [
                &g.backlog,
                &g.oldest_pending,
                &g.dead,
                &g.failing,
                &g.enabled,
            ] {
                gauge.set(0.0);
            }
        }
        for q in queues {
            let g = gauges
                .entry(q.id.clone())
                .or_insert_with(|| t.endpoint_gauges(&q.id));
            g.backlog.set(q.backlog as f64);
            g.dead.set(q.dead as f64);
            g.oldest_pending
                .set(q.oldest_pending.map_or(0.0, |d| d.as_secs_f64()));
            g.failing
                .set(q.failing_for.map_or(0.0, |d| d.as_secs_f64()));
            g.enabled.set(if q.enabled { 1.0 } else { 0.0 });
        }
    }
    t.handle.render()
}

#[cfg(test)]
mod tests;
