//! The configuration file's shape: every key of CONTRACT §1 as serde reads it, unknown keys
//! refused (`deny_unknown_fields`), every value still as written. The section modules check
//! these into typed settings.

use std::path::PathBuf;

use serde::Deserialize;

use crate::secret::Secret;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub listen: Option<String>,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub notifications: RawNotifications,
    #[serde(default)]
    pub retention: RawRetention,
    #[serde(default)]
    pub amqp: RawAmqp,
    #[serde(default)]
    pub log: RawLog,
}

/// `[log]`: how the service logs.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    /// "text" or "json".
    pub format: Option<String>,
}

/// `[amqp]`: the RabbitMQ sink (docs/integrations.md).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAmqp {
    pub enabled: Option<bool>,
    pub url: Option<Secret>,
    pub exchange: Option<String>,
    pub id: Option<String>,
    pub subscriptions: Option<Vec<String>>,
    /// The queue of back-office outcomes to consume; absent or empty: no consumer.
    pub inbound_queue: Option<String>,
    /// Checked into a `u16` by `validate::inbound`, so that a mistake names the key.
    pub inbound_prefetch: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub age: Option<String>,
    pub schedule: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub sqlite_path: Option<PathBuf>,
    pub synchronous: Option<String>,
    /// A cron expression: when the full integrity check of the SQLite file runs.
    pub integrity_schedule: Option<String>,
    /// A PostgreSQL URL: the scale-out store, instead of the SQLite file.
    pub postgres_url: Option<Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub id: String,
    pub url: String,
    pub secret: Option<Secret>,
    /// Several secrets during a rotation, newest first; instead of `secret`.
    pub secrets: Option<Vec<Secret>>,
    pub auth: Option<RawAuth>,
    /// Patterns over `<OPERATION>.<STATUS>`; absent: every notification.
    pub subscriptions: Option<Vec<String>>,
    /// "gbds" (default) or "cloudevents".
    pub format: Option<String>,
}

/// `auth = { type = "api_key", … }` or `{ type = "oauth2", … }`; one flat table so that a
/// missing or misplaced key can be named in the error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(rename = "type")]
    pub kind: String,
    pub header: Option<String>,
    pub value: Option<Secret>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub scope: Option<String>,
    pub client_auth: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    #[serde(default)]
    pub tokens: Vec<RawToken>,
    pub header_read_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub max_concurrent_requests: Option<usize>,
    pub body_read_timeout: Option<String>,
    pub body_memory_budget: Option<RawSize>,
}

/// A size: a number of bytes, or text with a unit ("64MiB").
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub token: Option<Secret>,
    /// Hex SHA-256 of the token, so that the file need not hold the token itself.
    pub token_sha256: Option<String>,
    pub role: String,
    /// A name for the transition log; defaults to the role.
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub retry_schedule: Option<Vec<String>>,
    pub success: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub lease: Option<String>,
    pub jitter: Option<f64>,
    pub endpoint_concurrency: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub block_private_targets: Option<bool>,
    pub disable_after: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotifications {
    pub update_operation: Option<String>,
    pub cloudevents_source: Option<String>,
}
