//! The environment table: which `GBDS_*` variable sets which key, and how its value is read.
//! Variables override the file key by key.

use super::error::ConfigError;

/// The environment variables that override keys, with the key each one sets and how its
/// value is read: `Text` as a plain string, `Toml` as a TOML value (numbers, arrays, tables).
pub const ENV_KEYS: &[(&str, &str, EnvKind)] = &[
    ("GBDS_LISTEN", "listen", EnvKind::Text),
    ("GBDS_STORE_SQLITE_PATH", "store.sqlite_path", EnvKind::Text),
    ("GBDS_STORE_SYNCHRONOUS", "store.synchronous", EnvKind::Text),
    (
        "GBDS_STORE_INTEGRITY_SCHEDULE",
        "store.integrity_schedule",
        EnvKind::Text,
    ),
    (
        "GBDS_STORE_POSTGRES_URL",
        "store.postgres_url",
        EnvKind::Text,
    ),
    ("GBDS_ENDPOINTS", "endpoints", EnvKind::Toml),
    ("GBDS_API_TOKENS", "api.tokens", EnvKind::Toml),
    (
        "GBDS_API_HEADER_READ_TIMEOUT",
        "api.header_read_timeout",
        EnvKind::Text,
    ),
    (
        "GBDS_API_REQUEST_TIMEOUT",
        "api.request_timeout",
        EnvKind::Text,
    ),
    (
        "GBDS_API_MAX_CONCURRENT_REQUESTS",
        "api.max_concurrent_requests",
        EnvKind::Toml,
    ),
    (
        "GBDS_API_BODY_READ_TIMEOUT",
        "api.body_read_timeout",
        EnvKind::Text,
    ),
    (
        "GBDS_API_BODY_MEMORY_BUDGET",
        "api.body_memory_budget",
        EnvKind::Text,
    ),
    (
        "GBDS_DELIVERY_RETRY_SCHEDULE",
        "delivery.retry_schedule",
        EnvKind::Toml,
    ),
    ("GBDS_DELIVERY_SUCCESS", "delivery.success", EnvKind::Text),
    (
        "GBDS_DELIVERY_CONNECT_TIMEOUT",
        "delivery.connect_timeout",
        EnvKind::Text,
    ),
    (
        "GBDS_DELIVERY_REQUEST_TIMEOUT",
        "delivery.request_timeout",
        EnvKind::Text,
    ),
    ("GBDS_DELIVERY_LEASE", "delivery.lease", EnvKind::Text),
    (
        "GBDS_DELIVERY_BLOCK_PRIVATE_TARGETS",
        "delivery.block_private_targets",
        EnvKind::Toml,
    ),
    ("GBDS_DELIVERY_JITTER", "delivery.jitter", EnvKind::Toml),
    (
        "GBDS_DELIVERY_ENDPOINT_CONCURRENCY",
        "delivery.endpoint_concurrency",
        EnvKind::Toml,
    ),
    (
        "GBDS_DELIVERY_MAX_IN_FLIGHT",
        "delivery.max_in_flight",
        EnvKind::Toml,
    ),
    (
        "GBDS_NOTIFICATIONS_UPDATE_OPERATION",
        "notifications.update_operation",
        EnvKind::Text,
    ),
    (
        "GBDS_DELIVERY_DISABLE_AFTER",
        "delivery.disable_after",
        EnvKind::Text,
    ),
    ("GBDS_RETENTION_AGE", "retention.age", EnvKind::Text),
    (
        "GBDS_RETENTION_SCHEDULE",
        "retention.schedule",
        EnvKind::Text,
    ),
    (
        "GBDS_NOTIFICATIONS_CLOUDEVENTS_SOURCE",
        "notifications.cloudevents_source",
        EnvKind::Text,
    ),
    // Seed 001's switch; GBDS_AMQP_ENABLED, read after it, wins when both are set.
    (
        "RABBITMQ_TRANSACTION_EVENTS_ENABLED",
        "amqp.enabled",
        EnvKind::Toml,
    ),
    ("GBDS_AMQP_ENABLED", "amqp.enabled", EnvKind::Toml),
    ("GBDS_AMQP_URL", "amqp.url", EnvKind::Text),
    ("GBDS_AMQP_EXCHANGE", "amqp.exchange", EnvKind::Text),
    ("GBDS_AMQP_ID", "amqp.id", EnvKind::Text),
    (
        "GBDS_AMQP_SUBSCRIPTIONS",
        "amqp.subscriptions",
        EnvKind::Toml,
    ),
    (
        "GBDS_AMQP_INBOUND_QUEUE",
        "amqp.inbound_queue",
        EnvKind::Text,
    ),
    (
        "GBDS_AMQP_INBOUND_PREFETCH",
        "amqp.inbound_prefetch",
        EnvKind::Toml,
    ),
    ("GBDS_LOG_FORMAT", "log.format", EnvKind::Text),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    Text,
    Toml,
}

/// Sets every key whose variable `env` knows in `tree` (the file's table), over the file.
pub(super) fn apply(
    tree: &mut toml::Table,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (var, key, kind) in ENV_KEYS {
        let Some(value) = env(var) else { continue };
        let value = match kind {
            EnvKind::Text => toml::Value::String(value),
            EnvKind::Toml => {
                let doc = format!("v = {value}");
                let mut parsed: toml::Table = doc.parse().map_err(|e| {
                    ConfigError(format!("{var} (sets {key}): not a TOML value: {e}"))
                })?;
                parsed.remove("v").expect("just parsed")
            }
        };
        set_path(tree, key, value);
    }
    Ok(())
}

fn set_path(tree: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            tree.insert(key.to_owned(), value);
        }
        Some((section, rest)) => {
            let entry = tree
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            set_path(entry.as_table_mut().expect("made a table"), rest, value);
        }
    }
}
