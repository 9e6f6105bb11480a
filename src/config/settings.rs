//! The validated settings the service runs on: typed, checked, and free of the file's
//! spelling. Built by `validate` from the raw shapes, with `defaults` for what is left out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::UpdateLabel;
use crate::endpoint::Endpoint;
use crate::secret::{Secret, TokenDigest};

/// Everything the service needs, typed and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub store: StoreSettings,
    /// Every configured endpoint, the RabbitMQ sink last when `[amqp] enabled` (or
    /// `RABBITMQ_TRANSACTION_EVENTS_ENABLED`).
    pub endpoints: Vec<Endpoint>,
    pub api: ApiSettings,
    pub delivery: DeliverySettings,
    pub update_label: UpdateLabel,
    pub retention: RetentionSettings,
    /// The consumer of outcomes over RabbitMQ, when `[amqp] inbound_queue` is set.
    pub amqp_inbound: Option<AmqpInboundSettings>,
    /// `[log] format`.
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For a person reading a terminal or the journal.
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// The consumer of back-office outcomes (CONTRACT §8), independent of the sink: it shares only
/// the broker URL.
#[derive(Debug, Clone)]
pub struct AmqpInboundSettings {
    /// `[amqp] url`; it holds the broker password, so it never shows in output.
    pub url: Secret,
    /// The durable queue consumed; refused messages go to `<queue>.dead`.
    pub queue: String,
    /// Most unacknowledged messages the broker lets the consumer hold (AMQP `basic.qos`).
    pub prefetch: u16,
}

/// The retention job: what it deletes and when it runs.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Final transactions whose notifications were all delivered are deleted this long after
    /// their last change. Undelivered (pending or dead) ones are never deleted.
    pub age: Duration,
    /// When the job runs: a cron expression with seconds (tokio-cron-scheduler syntax).
    pub schedule: String,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The SQLite file; unused when `postgres_url` is set.
    pub sqlite_path: PathBuf,
    /// The PostgreSQL database shared by every instance (CONTRACT §5), when set: the store
    /// is PostgreSQL instead of the SQLite file. Its password is secret.
    pub postgres_url: Option<Secret>,
    /// `synchronous = FULL` (default: every acknowledged call survives power loss) or `NORMAL`.
    pub synchronous_full: bool,
    /// When the full `PRAGMA integrity_check` of the SQLite file runs: a cron expression with
    /// seconds; a failure turns readiness red (`Component::Store`).
    pub integrity_schedule: String,
}

/// Who may call the REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The biometric back office: registers transactions, reports outcomes.
    Ingest,
    /// Manual-review and exception-treatment tooling.
    Review,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Review => "review",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    pub digest: TokenDigest,
    pub role: Role,
    pub name: String,
}

impl ApiToken {
    pub fn new(token: &str, role: Role, name: impl Into<String>) -> Self {
        Self {
            digest: TokenDigest::of(token),
            role,
            name: name.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Empty: the API is open (the service then listens on loopback only is the operator's job).
    pub tokens: Vec<ApiToken>,
    /// A connection that has not sent a complete request head within this is closed; this
    /// also ends idle keep-alive connections (slow-loris defence).
    pub header_read_timeout: Duration,
    /// How long a call may take to be answered once it holds a slot (then 408), and how long
    /// it may wait for a slot under `max_concurrent_requests` (then 503).
    pub request_timeout: Duration,
    /// Calls handled at once; more wait for a slot. A call takes its slot only once its body
    /// has arrived, so slow senders do not hold slots.
    pub max_concurrent_requests: usize,
    /// From the end of the request head to the last byte of its body (then 408): a body
    /// trickled in byte by byte cannot be held open for long.
    pub body_read_timeout: Duration,
    /// Bytes that the bodies being read and handled may hold in memory together; a body
    /// that would go past it is refused with 503 and `Retry-After`.
    pub body_memory_budget: usize,
}

/// Which HTTP answers acknowledge a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuccessRule {
    Any2xx,
    Only200,
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Delay before each retry; when used up the delivery is dead.
    pub retry_schedule: Vec<Duration>,
    pub success: SuccessRule,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// How long a claimed delivery stays reserved before another claim may take it.
    pub lease: Duration,
    /// Retry delays are spread by ± this fraction so that retries do not arrive in waves.
    pub jitter: f64,
    pub endpoint_concurrency: usize,
    pub max_in_flight: usize,
    /// Refuse private, loopback and link-local targets, checked on the resolved addresses at
    /// connect time (opt-in: receivers are often on the same network).
    pub block_private_targets: bool,
    /// An endpoint whose every attempt has failed for this long is disabled.
    pub disable_after: Duration,
    /// The CloudEvents `source` attribute (`[notifications] cloudevents_source`).
    pub cloudevents_source: String,
}
