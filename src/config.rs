//! Configuration: built-in defaults, then the TOML file, then `GBDS_*` environment variables;
//! validated into typed `Settings` before anything listens (CONTRACT §1).

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::UpdateLabel;
use crate::endpoint::{
    self, AmqpDestination, ClientAuth, Destination, Endpoint, EndpointAuth, HttpDestination,
    OAuth2Settings, Source,
};
pub use crate::secret::Secret;

/// A configuration problem, naming the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

fn err<T>(key: impl fmt::Display, what: impl fmt::Display) -> Result<T, ConfigError> {
    Err(ConfigError(format!("{key}: {what}")))
}

fn endpoint_auth(key: &str, raw: RawAuth) -> Result<EndpointAuth, ConfigError> {
    // Keys that belong to the other type are refused rather than silently ignored.
    let unused = |kind: &str, present: &[(&str, bool)]| -> Result<(), ConfigError> {
        match present.iter().find(|(_, p)| *p) {
            Some((name, _)) => err(
                format!("{key}.{name}"),
                format!("is not used by type {kind:?}"),
            ),
            None => Ok(()),
        }
    };
    match raw.kind.as_str() {
        "api_key" => {
            unused(
                "api_key",
                &[
                    ("token_url", raw.token_url.is_some()),
                    ("client_id", raw.client_id.is_some()),
                    ("client_secret", raw.client_secret.is_some()),
                    ("scope", raw.scope.is_some()),
                    ("client_auth", raw.client_auth.is_some()),
                ],
            )?;
            let Some(header) = raw.header else {
                return err(format!("{key}.header"), "is required for type \"api_key\"");
            };
            let name = match endpoint::api_key_header(&header) {
                Ok(n) => n,
                Err(why) => return err(format!("{key}.header"), why),
            };
            let Some(value) = raw.value else {
                return err(format!("{key}.value"), "is required for type \"api_key\"");
            };
            if let Err(why) = endpoint::check_api_key_value(&value) {
                return err(format!("{key}.value"), why);
            }
            Ok(EndpointAuth::ApiKey {
                header: name,
                value,
            })
        }
        "oauth2" => {
            unused(
                "oauth2",
                &[
                    ("header", raw.header.is_some()),
                    ("value", raw.value.is_some()),
                ],
            )?;
            let Some(token_url) = raw.token_url else {
                return err(
                    format!("{key}.token_url"),
                    "is required for type \"oauth2\"",
                );
            };
            let token_url = match endpoint::check_url(&token_url) {
                Ok(u) => u,
                Err(why) => return err(format!("{key}.token_url"), why),
            };
            let client_id = match raw.client_id {
                Some(id) if !id.is_empty() => id,
                _ => {
                    return err(
                        format!("{key}.client_id"),
                        "is required for type \"oauth2\" (non-empty)",
                    )
                }
            };
            let client_secret = match raw.client_secret {
                Some(s) if !s.expose().is_empty() => s,
                _ => {
                    return err(
                        format!("{key}.client_secret"),
                        "is required for type \"oauth2\" (non-empty)",
                    )
                }
            };
            let client_auth = match ClientAuth::parse(raw.client_auth.as_deref().unwrap_or("basic"))
            {
                Ok(a) => a,
                Err(why) => return err(format!("{key}.client_auth"), why),
            };
            Ok(EndpointAuth::OAuth2(OAuth2Settings {
                token_url,
                client_id,
                client_secret,
                scope: raw.scope.filter(|s| !s.is_empty()),
                client_auth,
            }))
        }
        other => err(
            format!("{key}.type"),
            format!("{other:?} is not \"api_key\" or \"oauth2\""),
        ),
    }
}

// ---- the file's shape: every key of CONTRACT §1, unknown keys refused ----

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    notifications: RawNotifications,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    amqp: RawAmqp,
}

/// `[amqp]`: the RabbitMQ sink (docs/integrations.md).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAmqp {
    enabled: Option<bool>,
    url: Option<Secret>,
    exchange: Option<String>,
    id: Option<String>,
    subscriptions: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    age: Option<String>,
    schedule: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    sqlite_path: Option<PathBuf>,
    synchronous: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    id: String,
    url: String,
    secret: Option<Secret>,
    /// Several secrets during a rotation, newest first; instead of `secret`.
    secrets: Option<Vec<Secret>>,
    auth: Option<RawAuth>,
    /// Patterns over `<OPERATION>.<STATUS>`; absent: every notification.
    subscriptions: Option<Vec<String>>,
    /// "gbds" (default) or "cloudevents".
    format: Option<String>,
}

/// `auth = { type = "api_key", … }` or `{ type = "oauth2", … }`; one flat table so that a
/// missing or misplaced key can be named in the error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(rename = "type")]
    kind: String,
    header: Option<String>,
    value: Option<Secret>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    scope: Option<String>,
    client_auth: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default)]
    tokens: Vec<RawToken>,
    header_read_timeout: Option<String>,
    request_timeout: Option<String>,
    max_concurrent_requests: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    token: Option<Secret>,
    /// Hex SHA-256 of the token, so that the file need not hold the token itself.
    token_sha256: Option<String>,
    role: String,
    /// A name for the transition log; defaults to the role.
    name: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    retry_schedule: Option<Vec<String>>,
    success: Option<String>,
    connect_timeout: Option<String>,
    request_timeout: Option<String>,
    lease: Option<String>,
    jitter: Option<f64>,
    endpoint_concurrency: Option<usize>,
    max_in_flight: Option<usize>,
    block_private_targets: Option<bool>,
    disable_after: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNotifications {
    update_operation: Option<String>,
    cloudevents_source: Option<String>,
}

// ---- the validated settings the service runs on ----

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
    pub sqlite_path: PathBuf,
    /// `synchronous = FULL` (default: every acknowledged call survives power loss) or `NORMAL`.
    pub synchronous_full: bool,
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

/// The SHA-256 of an API token: all the service keeps of it, and what it compares.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(token.as_bytes()).into())
    }
    /// From 64 hex digits (either case), as `sha256sum` prints them.
    pub fn from_hex(hex_digits: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digits.trim(), &mut out).ok()?;
        Some(Self(out))
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest of a guessable token is as good as the token: show nothing of it.
        f.write_str("TokenDigest(***)")
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
    /// How long a call may take to be read and answered once it is handled (then 408), and
    /// how long it may wait for a slot under `max_concurrent_requests` (then 503).
    pub request_timeout: Duration,
    /// Calls handled at once; more wait for a slot. Bounds the memory held by request bodies
    /// to about this many times 2 MB.
    pub max_concurrent_requests: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_S),
            request_timeout: Duration::from_secs(DEFAULT_API_REQUEST_TIMEOUT_S),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }
}

const DEFAULT_HEADER_READ_TIMEOUT_S: u64 = 10;
const DEFAULT_API_REQUEST_TIMEOUT_S: u64 = 30;
const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;

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

/// The Standard Webhooks ladder (after the immediate first attempt).
pub const DEFAULT_RETRY_SCHEDULE: [&str; 7] = ["5s", "5m", "30m", "2h", "5h", "10h", "10h"];

impl Default for Settings {
    fn default() -> Self {
        validate(RawConfig::default()).expect("the defaults are valid")
    }
}

/// Parses "250ms", "5s", "5m", "2h", "1d" (a whole number and a unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).map(Duration::from_millis)
}

fn duration(key: &str, value: Option<&str>, default: &str) -> Result<Duration, ConfigError> {
    let text = value.unwrap_or(default);
    match parse_duration(text) {
        Some(d) => Ok(d),
        None => err(
            key,
            format!("{text:?} is not a duration (use e.g. \"250ms\", \"5s\", \"5m\", \"2h\")"),
        ),
    }
}

/// The environment variables that override keys, with the key each one sets and how its
/// value is read: `Text` as a plain string, `Toml` as a TOML value (numbers, arrays, tables).
pub const ENV_KEYS: &[(&str, &str, EnvKind)] = &[
    ("GBDS_LISTEN", "listen", EnvKind::Text),
    ("GBDS_STORE_SQLITE_PATH", "store.sqlite_path", EnvKind::Text),
    ("GBDS_STORE_SYNCHRONOUS", "store.synchronous", EnvKind::Text),
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
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    Text,
    Toml,
}

/// Loads the file (if any), applies the environment, validates.
pub fn load(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let mut tree = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?
        }
        None => toml::Table::new(),
    };
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
        set_path(&mut tree, key, value);
    }
    let raw: RawConfig = toml::Value::Table(tree)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError(e.message().to_owned()))?;
    validate(raw)
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

fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
    let listen_text = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen: SocketAddr = match listen_text.parse() {
        Ok(a) => a,
        Err(_) => {
            return err(
                "listen",
                format!("{listen_text:?} is not an address such as \"127.0.0.1:8080\""),
            )
        }
    };

    let synchronous_full = match raw.store.synchronous.as_deref().unwrap_or("FULL") {
        "FULL" | "full" => true,
        "NORMAL" | "normal" => false,
        other => {
            return err(
                "store.synchronous",
                format!("{other:?} is not FULL or NORMAL"),
            )
        }
    };
    let store = StoreSettings {
        sqlite_path: raw
            .store
            .sqlite_path
            .unwrap_or_else(|| PathBuf::from("gbds-notifier.db")),
        synchronous_full,
    };

    let block_private_targets = raw.delivery.block_private_targets.unwrap_or(false);
    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in raw.endpoints.into_iter().enumerate() {
        let key = format!("endpoints[{i}]");
        if e.id.is_empty() || !endpoint::id_characters_allowed(&e.id) {
            return err(
                format!("{key}.id"),
                format!(
                    "{:?} must be non-empty letters, digits, '-', '_' or '.'",
                    e.id
                ),
            );
        }
        if !seen.insert(e.id.clone()) {
            return err(
                format!("{key}.id"),
                format!("{:?} is used by another endpoint", e.id),
            );
        }
        let url = match endpoint::parse_http_url(&e.url) {
            Ok(u) => u,
            Err(why) => return err(format!("{key}.url"), why),
        };
        let secrets = match (e.secret, e.secrets) {
            (Some(_), Some(_)) => {
                return err(
                    format!("{key}.secrets"),
                    "give either secret or secrets (newest first), not both",
                )
            }
            (Some(one), None) => {
                if let Err(why) = endpoint::check_secret(one.expose()) {
                    return err(format!("{key}.secret"), why);
                }
                vec![one]
            }
            (None, Some(list)) => {
                if list.is_empty() {
                    return err(
                        format!("{key}.secrets"),
                        "must hold at least one secret (or leave it out)",
                    );
                }
                for (j, secret) in list.iter().enumerate() {
                    if let Err(why) = endpoint::check_secret(secret.expose()) {
                        return err(format!("{key}.secrets[{j}]"), why);
                    }
                }
                list
            }
            (None, None) => Vec::new(),
        };
        let auth = match e.auth {
            Some(raw) => Some(endpoint_auth(&format!("{key}.auth"), raw)?),
            None => None,
        };
        if block_private_targets {
            // Names are checked when resolved; a literal address can be refused now.
            if let Err(why) = endpoint::address::check_public_literal(&url) {
                return err(format!("{key}.url"), why);
            }
            if let Some(EndpointAuth::OAuth2(o)) = &auth {
                if let Err(why) = endpoint::address::check_public_literal(&o.token_url) {
                    return err(format!("{key}.auth.token_url"), why);
                }
            }
        }
        let subscriptions = subscriptions(&key, e.subscriptions.as_deref())?;
        let format = match e.format.as_deref() {
            None => endpoint::Format::Gbds,
            Some(f) => match endpoint::Format::parse(f) {
                Ok(f) => f,
                Err(why) => return err(format!("{key}.format"), why),
            },
        };
        endpoints.push(Endpoint {
            id: e.id,
            source: Source::Config,
            destination: Destination::Http(HttpDestination {
                url,
                secrets,
                auth,
                format,
            }),
            subscriptions,
            enabled: true,
        });
    }

    let mut tokens = Vec::new();
    for (i, t) in raw.api.tokens.into_iter().enumerate() {
        let role = match t.role.as_str() {
            "ingest" => Role::Ingest,
            "review" => Role::Review,
            "admin" => Role::Admin,
            other => {
                return err(
                    format!("api.tokens[{i}].role"),
                    format!("{other:?} is not ingest, review or admin"),
                )
            }
        };
        let digest = match (t.token, t.token_sha256) {
            (Some(_), Some(_)) => {
                return err(
                    format!("api.tokens[{i}].token_sha256"),
                    "give either token or token_sha256, not both",
                )
            }
            (None, None) => {
                return err(
                    format!("api.tokens[{i}].token"),
                    "is required (or token_sha256: the hex SHA-256 of the token)",
                )
            }
            (Some(token), None) => {
                if token.expose().trim().is_empty() {
                    return err(format!("api.tokens[{i}].token"), "must not be empty");
                }
                TokenDigest::of(token.expose().trim())
            }
            (None, Some(hex_digits)) => match TokenDigest::from_hex(&hex_digits) {
                Some(d) => d,
                None => {
                    return err(
                        format!("api.tokens[{i}].token_sha256"),
                        "must be 64 hex digits (e.g. from `printf %s TOKEN | sha256sum`)",
                    )
                }
            },
        };
        if let Some(j) = tokens.iter().position(|t: &ApiToken| t.digest == digest) {
            return err(
                format!("api.tokens[{i}]"),
                format!("holds the same token as api.tokens[{j}]; a token has one role"),
            );
        }
        let name = t.name.unwrap_or_else(|| role.as_str().to_owned());
        tokens.push(ApiToken { digest, role, name });
    }
    let header_read_timeout = duration(
        "api.header_read_timeout",
        raw.api.header_read_timeout.as_deref(),
        &format!("{DEFAULT_HEADER_READ_TIMEOUT_S}s"),
    )?;
    let api_request_timeout = duration(
        "api.request_timeout",
        raw.api.request_timeout.as_deref(),
        &format!("{DEFAULT_API_REQUEST_TIMEOUT_S}s"),
    )?;
    if header_read_timeout.is_zero() {
        return err("api.header_read_timeout", "must be more than 0");
    }
    if api_request_timeout.is_zero() {
        return err("api.request_timeout", "must be more than 0");
    }
    let max_concurrent_requests = raw
        .api
        .max_concurrent_requests
        .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS);
    if max_concurrent_requests == 0 {
        return err("api.max_concurrent_requests", "must be at least 1");
    }
    let api = ApiSettings {
        tokens,
        header_read_timeout,
        request_timeout: api_request_timeout,
        max_concurrent_requests,
    };

    let d = raw.delivery;
    let retry_schedule = match d.retry_schedule {
        None => DEFAULT_RETRY_SCHEDULE
            .iter()
            .map(|s| parse_duration(s).expect("valid default"))
            .collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                out.push(duration(
                    &format!("delivery.retry_schedule[{i}]"),
                    Some(s),
                    "",
                )?);
            }
            out
        }
    };
    let success = match d.success.as_deref().unwrap_or("2xx") {
        "2xx" => SuccessRule::Any2xx,
        "200" => SuccessRule::Only200,
        other => {
            return err(
                "delivery.success",
                format!("{other:?} is not \"2xx\" or \"200\""),
            )
        }
    };
    let jitter = d.jitter.unwrap_or(0.2);
    if !(0.0..=1.0).contains(&jitter) {
        return err(
            "delivery.jitter",
            format!("{jitter} is not between 0 and 1"),
        );
    }
    let endpoint_concurrency = d.endpoint_concurrency.unwrap_or(64);
    if endpoint_concurrency == 0 {
        return err("delivery.endpoint_concurrency", "must be at least 1");
    }
    let max_in_flight = d.max_in_flight.unwrap_or(512);
    if max_in_flight == 0 {
        return err("delivery.max_in_flight", "must be at least 1");
    }
    let lease = duration("delivery.lease", d.lease.as_deref(), "60s")?;
    let request_timeout = duration(
        "delivery.request_timeout",
        d.request_timeout.as_deref(),
        "15s",
    )?;
    if lease <= request_timeout {
        return err("delivery.lease", "must be longer than delivery.request_timeout, or a slow POST could be sent twice at once");
    }
    let delivery = DeliverySettings {
        retry_schedule,
        success,
        connect_timeout: duration(
            "delivery.connect_timeout",
            d.connect_timeout.as_deref(),
            "5s",
        )?,
        request_timeout,
        lease,
        jitter,
        endpoint_concurrency,
        max_in_flight,
        block_private_targets,
        disable_after: duration("delivery.disable_after", d.disable_after.as_deref(), "5d")?,
        cloudevents_source: {
            let source = raw
                .notifications
                .cloudevents_source
                .clone()
                .unwrap_or_else(|| DEFAULT_CLOUDEVENTS_SOURCE.to_owned());
            if let Err(why) = endpoint::check_cloudevents_source(&source) {
                return err("notifications.cloudevents_source", why);
            }
            source
        },
    };

    let schedule = raw
        .retention
        .schedule
        .unwrap_or_else(|| "0 17 * * * *".to_owned());
    if let Err(e) =
        tokio_cron_scheduler::Job::new_async(schedule.as_str(), |_, _| Box::pin(async {}))
    {
        return err(
            "retention.schedule",
            format!(
                "{schedule:?} is not a cron expression with seconds (e.g. \"0 17 * * * *\"): {e}"
            ),
        );
    }
    let retention = RetentionSettings {
        age: duration("retention.age", raw.retention.age.as_deref(), "30d")?,
        schedule,
    };

    let update_label = match raw
        .notifications
        .update_operation
        .as_deref()
        .unwrap_or("ENROLL")
    {
        "ENROLL" => UpdateLabel::Enroll,
        "UPDATE" => UpdateLabel::Update,
        other => {
            return err(
                "notifications.update_operation",
                format!("{other:?} is not \"ENROLL\" or \"UPDATE\""),
            )
        }
    };

    if let Some(sink) = amqp_sink(raw.amqp, &endpoints)? {
        endpoints.push(sink);
    }

    Ok(Settings {
        listen,
        store,
        endpoints,
        api,
        delivery,
        update_label,
        retention,
    })
}

/// An endpoint's `subscriptions` list, each bad pattern named by its index.
fn subscriptions(
    key: &str,
    patterns: Option<&[String]>,
) -> Result<crate::domain::Subscriptions, ConfigError> {
    match patterns {
        None => Ok(crate::domain::Subscriptions::All),
        Some(list) => crate::domain::Subscriptions::parse(list).or_else(|(i, why)| match i {
            Some(i) => err(format!("{key}.subscriptions[{i}]"), why),
            None => err(format!("{key}.subscriptions"), why),
        }),
    }
}

/// `[amqp]`: the RabbitMQ sink, an endpoint whose deliveries are published to a topic
/// exchange. Checked whether or not it is enabled, so a mistake shows before it is switched on.
fn amqp_sink(raw: RawAmqp, endpoints: &[Endpoint]) -> Result<Option<Endpoint>, ConfigError> {
    let url = raw
        .url
        .unwrap_or_else(|| Secret::new(DEFAULT_AMQP_URL.to_owned()));
    if let Err(why) = endpoint::amqp::check_url(url.expose()) {
        return err("amqp.url", why);
    }
    let exchange = raw
        .exchange
        .unwrap_or_else(|| DEFAULT_AMQP_EXCHANGE.to_owned());
    if let Err(why) = endpoint::amqp::check_exchange(&exchange) {
        return err("amqp.exchange", why);
    }
    let id = raw.id.unwrap_or_else(|| DEFAULT_AMQP_ID.to_owned());
    if let Err(why) = endpoint::check_id(&id) {
        return err("amqp.id", why);
    }
    if let Some(i) = endpoints.iter().position(|e| e.id == id) {
        return err(
            "amqp.id",
            format!("{id:?} is used by endpoints[{i}]; give the sink another id"),
        );
    }
    let subscriptions = subscriptions("amqp", raw.subscriptions.as_deref())?;
    Ok(raw.enabled.unwrap_or(false).then_some(Endpoint {
        id,
        source: Source::Config,
        destination: Destination::Amqp(AmqpDestination { url, exchange }),
        subscriptions,
        enabled: true,
    }))
}

/// `[amqp] url` when not set: the local broker's default vhost with the guest account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// `[amqp] exchange` when not set.
pub const DEFAULT_AMQP_EXCHANGE: &str = "gbds.notifications";
/// `[amqp] id` when not set: the endpoint id deliveries to the sink are recorded under.
pub const DEFAULT_AMQP_ID: &str = "rabbitmq";
/// `[notifications] cloudevents_source` when not set.
pub const DEFAULT_CLOUDEVENTS_SOURCE: &str = "urn:gbds-notifier";

#[cfg(test)]
mod tests {
    use super::*;

    /// The HTTP destination of a configured endpoint.
    fn http(e: &Endpoint) -> &HttpDestination {
        match &e.destination {
            Destination::Http(h) => h,
            Destination::Amqp(_) => panic!("{} is the RabbitMQ sink", e.id),
        }
    }

    /// The RabbitMQ sink, when enabled: its endpoint and its destination.
    fn sink(s: &Settings) -> Option<(&Endpoint, &AmqpDestination)> {
        s.endpoints.iter().find_map(|e| match &e.destination {
            Destination::Amqp(a) => Some((e, a)),
            Destination::Http(_) => None,
        })
    }

    fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        from_toml_env(text, &[])
    }

    fn from_toml_env(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(Some(&path), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn no_file_gives_the_embedded_defaults() {
        let s = load(None, |_| None).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.store.sqlite_path, PathBuf::from("gbds-notifier.db"));
        assert!(s.endpoints.is_empty());
        assert_eq!(s.delivery.retry_schedule.len(), 7);
        assert_eq!(s.delivery.retry_schedule[1], Duration::from_secs(300));
        assert_eq!(s.update_label, UpdateLabel::Enroll);
        assert_eq!(s.delivery.success, SuccessRule::Any2xx);
    }

    #[test]
    fn the_contract_example_config_is_accepted() {
        let s = from_toml(
            r#"
listen = "127.0.0.1:9090"
[store]
sqlite_path = "x.db"
[[endpoints]]
id = "backoffice"
url = "http://127.0.0.1:9000/notify"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[api]
tokens = [ { token = "t-admin", role = "admin" } ]
[delivery]
retry_schedule = ["250ms", "5s", "5m", "30m", "2h", "5h", "10h", "10h"]
success = "200"
[notifications]
update_operation = "UPDATE"
"#,
        )
        .unwrap();
        assert_eq!(s.listen.port(), 9090);
        assert_eq!(s.endpoints[0].id, "backoffice");
        assert_eq!(s.api.tokens[0].role, Role::Admin);
        assert_eq!(s.delivery.retry_schedule[0], Duration::from_millis(250));
        assert_eq!(s.delivery.success, SuccessRule::Only200);
        assert_eq!(s.update_label, UpdateLabel::Update);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = from_toml("[delivery]\nretry_schedul = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retry_schedul"), "{e}");
        let e = from_toml("lisen = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("listen = \"nowhere\"", "listen"),
            ("[delivery]\nretry_schedule = [\"5s\", \"5x\"]", "delivery.retry_schedule[1]"),
            ("[delivery]\nsuccess = \"3xx\"", "delivery.success"),
            ("[notifications]\nupdate_operation = \"SEARCH\"", "notifications.update_operation"),
            ("[api]\ntokens = [{ token = \"t\", role = \"root\" }]", "api.tokens[0].role"),
            ("[[endpoints]]\nid = \"a\"\nurl = \"ftp://x/\"", "endpoints[0].url"),
            ("[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\n[[endpoints]]\nid = \"a\"\nurl = \"http://y/\"", "endpoints[1].id"),
            ("[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\nsecret = \"whsec_!!\"", "endpoints[0].secret"),
            ("[store]\nsynchronous = \"OFF\"", "store.synchronous"),
        ] {
            let e = from_toml(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn environment_variables_override_the_file() {
        let s = from_toml_env(
            "listen = \"127.0.0.1:1\"\n",
            &[
                ("GBDS_LISTEN", "127.0.0.1:2"),
                ("GBDS_DELIVERY_RETRY_SCHEDULE", "[\"1s\", \"2s\"]"),
                (
                    "GBDS_ENDPOINTS",
                    "[{ id = \"e\", url = \"http://127.0.0.1:9/\" }]",
                ),
                ("GBDS_API_TOKENS", "[{ token = \"t\", role = \"review\" }]"),
                ("GBDS_NOTIFICATIONS_UPDATE_OPERATION", "UPDATE"),
            ],
        )
        .unwrap();
        assert_eq!(s.listen.port(), 2);
        assert_eq!(
            s.delivery.retry_schedule,
            vec![Duration::from_secs(1), Duration::from_secs(2)]
        );
        assert_eq!(s.endpoints[0].id, "e");
        assert_eq!(s.api.tokens[0].role, Role::Review);
        assert_eq!(s.update_label, UpdateLabel::Update);
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let e = from_toml_env("", &[("GBDS_DELIVERY_RETRY_SCHEDULE", "[\"1s\"")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("GBDS_DELIVERY_RETRY_SCHEDULE"), "{e}");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = from_toml("[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"").unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("MfKQ9r8"), "{shown}");
    }

    #[test]
    fn an_endpoint_may_hold_several_secrets_newest_first() {
        let s = from_toml(
            "[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\nsecrets = [\"whsec_bmV3\", \"whsec_b2xk\"]",
        )
        .unwrap();
        let shown: Vec<&str> = http(&s.endpoints[0])
            .secrets
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(shown, ["whsec_bmV3", "whsec_b2xk"]);
        let s =
            from_toml("[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\nsecret = \"whsec_bmV3\"")
                .unwrap();
        assert_eq!(http(&s.endpoints[0]).secrets.len(), 1);
        let s = from_toml("[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"").unwrap();
        assert!(http(&s.endpoints[0]).secrets.is_empty());
        assert!(http(&s.endpoints[0]).auth.is_none());
    }

    #[test]
    fn endpoint_auth_is_read_and_checked_key_by_key() {
        let e = "[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\n";
        let s = from_toml(&format!(
            "{e}auth = {{ type = \"api_key\", header = \"X-API-Key\", value = \"k-123\" }}"
        ))
        .unwrap();
        match &http(&s.endpoints[0]).auth {
            Some(EndpointAuth::ApiKey { header, value }) => {
                assert_eq!(header.as_str(), "x-api-key");
                assert_eq!(value.expose(), "k-123");
            }
            other => panic!("{other:?}"),
        }
        let s = from_toml(&format!(
            "{e}auth = {{ type = \"oauth2\", token_url = \"https://idp/token\", client_id = \"c\", client_secret = \"cs-9\", scope = \"notify\" }}"
        ))
        .unwrap();
        match &http(&s.endpoints[0]).auth {
            Some(EndpointAuth::OAuth2(o)) => {
                assert_eq!(o.token_url.as_str(), "https://idp/token");
                assert_eq!(o.scope.as_deref(), Some("notify"));
                assert_eq!(o.client_auth, ClientAuth::Basic);
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{s:?}").contains("cs-9"));

        for (auth, key) in [
            ("{ type = \"basic\" }", "endpoints[0].auth.type"),
            ("{ type = \"api_key\", value = \"v\" }", "endpoints[0].auth.header"),
            ("{ type = \"api_key\", header = \"X-K\" }", "endpoints[0].auth.value"),
            ("{ type = \"api_key\", header = \"bad header\", value = \"v\" }", "endpoints[0].auth.header"),
            ("{ type = \"api_key\", header = \"X-Signature\", value = \"v\" }", "endpoints[0].auth.header"),
            ("{ type = \"api_key\", header = \"X-K\", value = \"v\\n\" }", "endpoints[0].auth.value"),
            ("{ type = \"api_key\", header = \"X-K\", value = \"v\", scope = \"s\" }", "endpoints[0].auth.scope"),
            ("{ type = \"oauth2\", client_id = \"c\", client_secret = \"s\" }", "endpoints[0].auth.token_url"),
            ("{ type = \"oauth2\", token_url = \"ftp://idp/\", client_id = \"c\", client_secret = \"s\" }", "endpoints[0].auth.token_url"),
            ("{ type = \"oauth2\", token_url = \"https://idp/\", client_secret = \"s\" }", "endpoints[0].auth.client_id"),
            ("{ type = \"oauth2\", token_url = \"https://idp/\", client_id = \"c\" }", "endpoints[0].auth.client_secret"),
            ("{ type = \"oauth2\", token_url = \"https://idp/\", client_id = \"c\", client_secret = \"s\", client_auth = \"jwt\" }", "endpoints[0].auth.client_auth"),
            ("{ type = \"oauth2\", token_url = \"https://idp/\", client_id = \"c\", client_secret = \"s\", header = \"X\" }", "endpoints[0].auth.header"),
            ("{ type = \"oauth2\", token_url = \"https://idp/\", client_id = \"c\", client_secret = \"s\", audience = \"x\" }", "audience"),
        ] {
            let e = from_toml(&format!("{e}auth = {auth}")).unwrap_err().to_string();
            assert!(e.contains(key), "{auth}: {e}");
            assert!(!e.contains("v\\n"), "{e}");
        }
    }

    #[test]
    fn rotation_and_guard_errors_name_their_key() {
        let e = "[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\n";
        for (text, key) in [
            (format!("{e}secret = \"whsec_bmV3\"\nsecrets = [\"whsec_bmV3\"]"), "endpoints[0].secrets"),
            (format!("{e}secrets = []"), "endpoints[0].secrets"),
            (format!("{e}secrets = [\"whsec_bmV3\", \"whsec_!\"]"), "endpoints[0].secrets[1]"),
            (
                "[delivery]\nblock_private_targets = true\n[[endpoints]]\nid = \"a\"\nurl = \"http://127.0.0.1:9000/\"".to_owned(),
                "endpoints[0].url",
            ),
            (
                "[delivery]\nblock_private_targets = true\n[[endpoints]]\nid = \"a\"\nurl = \"https://example.com/\"\nauth = { type = \"oauth2\", token_url = \"http://[::1]/t\", client_id = \"c\", client_secret = \"s\" }".to_owned(),
                "endpoints[0].auth.token_url",
            ),
        ] {
            let e = from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        // Names are left to the resolver at connect time; public literals pass.
        let s = from_toml("[delivery]\nblock_private_targets = true\n[[endpoints]]\nid = \"a\"\nurl = \"http://localhost:9/\"\n[[endpoints]]\nid = \"b\"\nurl = \"https://8.8.8.8/\"").unwrap();
        assert!(s.delivery.block_private_targets);
        assert!(!Settings::default().delivery.block_private_targets);
    }

    #[test]
    fn api_tokens_may_be_given_as_their_sha256_and_mistakes_name_the_key() {
        let s = from_toml(
            "[api]\ntokens = [{ token = \"t-admin\", role = \"admin\" }, { token_sha256 = \"C140B9EE332D67F84953AAE63EDC037A10D217685D2D98161ECB34696EB4E2A5\", role = \"review\", name = \"mir\" }]",
        )
        .unwrap();
        assert_eq!(s.api.tokens[0].digest, TokenDigest::of("t-admin"));
        assert_eq!(s.api.tokens[1].name, "mir");
        for (tokens, key) in [
            ("{ role = \"admin\" }", "api.tokens[0].token"),
            ("{ token = \"\", role = \"admin\" }", "api.tokens[0].token"),
            ("{ token = \"a\", token_sha256 = \"00\", role = \"admin\" }", "api.tokens[0].token_sha256"),
            ("{ token_sha256 = \"c140b9\", role = \"admin\" }", "api.tokens[0].token_sha256"),
            ("{ token_sha256 = \"zz40b9ee332d67f84953aae63edc037a10d217685d2d98161ecb34696eb4e2a4\", role = \"admin\" }", "api.tokens[0].token_sha256"),
            (
                "{ token = \"t-admin\", role = \"admin\" }, { token_sha256 = \"c140b9ee332d67f84953aae63edc037a10d217685d2d98161ecb34696eb4e2a4\", role = \"ingest\" }",
                "api.tokens[1]",
            ),
        ] {
            let e = from_toml(&format!("[api]\ntokens = [{tokens}]"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{tokens}: {e}");
            assert!(!e.contains("t-admin"), "{e}");
        }
    }

    #[test]
    fn api_limits_have_defaults_and_can_be_set() {
        let d = Settings::default().api;
        assert_eq!(d.header_read_timeout, Duration::from_secs(10));
        assert_eq!(d.request_timeout, Duration::from_secs(30));
        assert_eq!(d.max_concurrent_requests, 256);
        let s = from_toml_env(
            "[api]\nheader_read_timeout = \"2s\"\n",
            &[
                ("GBDS_API_REQUEST_TIMEOUT", "5s"),
                ("GBDS_API_MAX_CONCURRENT_REQUESTS", "8"),
            ],
        )
        .unwrap();
        assert_eq!(s.api.header_read_timeout, Duration::from_secs(2));
        assert_eq!(s.api.request_timeout, Duration::from_secs(5));
        assert_eq!(s.api.max_concurrent_requests, 8);
        for (text, key) in [
            (
                "[api]\nheader_read_timeout = \"0s\"",
                "api.header_read_timeout",
            ),
            ("[api]\nrequest_timeout = \"soon\"", "api.request_timeout"),
            (
                "[api]\nmax_concurrent_requests = 0",
                "api.max_concurrent_requests",
            ),
        ] {
            let e = from_toml(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1.5s"), None);
    }

    #[test]
    fn subscriptions_and_format_are_read_per_endpoint_and_bad_ones_name_their_key() {
        let e = "[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"\n";
        let s = from_toml(&format!(
            "{e}subscriptions = [\"ENROLL.*\", \"*.FAILED\", \"TREAT_EXCEPTION.*\", \"SEARCH.MATCH\"]\nformat = \"cloudevents\""
        ))
        .unwrap();
        let subs = &s.endpoints[0].subscriptions;
        assert!(subs.matches("SEARCH", "FAILED"));
        assert!(!subs.matches("SEARCH", "NOT_MATCH"));
        assert_eq!(http(&s.endpoints[0]).format, endpoint::Format::CloudEvents);
        let s = from_toml(e).unwrap();
        assert_eq!(
            s.endpoints[0].subscriptions,
            crate::domain::Subscriptions::All
        );
        assert_eq!(http(&s.endpoints[0]).format, endpoint::Format::Gbds);
        assert_eq!(s.delivery.cloudevents_source, "urn:gbds-notifier");
        for (text, key, says) in [
            (
                format!("{e}subscriptions = [\"ENROLL.*\", \"ENROL.*\"]"),
                "endpoints[0].subscriptions[1]",
                "ENROL",
            ),
            (
                format!("{e}subscriptions = [\"SEARCH.ENROLLED\"]"),
                "endpoints[0].subscriptions[0]",
                "never matches",
            ),
            (
                format!("{e}subscriptions = []"),
                "endpoints[0].subscriptions",
                "at least one",
            ),
            (
                format!("{e}format = \"xml\""),
                "endpoints[0].format",
                "cloudevents",
            ),
            (
                "[notifications]\ncloudevents_source = \"\"".to_owned(),
                "notifications.cloudevents_source",
                "URI",
            ),
        ] {
            let got = from_toml(&text).unwrap_err().to_string();
            assert!(got.contains(key) && got.contains(says), "{text}: {got}");
        }
    }

    #[test]
    fn the_amqp_sink_is_off_unless_enabled_by_config_or_by_either_variable() {
        let s = from_toml("").unwrap();
        assert!(sink(&s).is_none());
        let s = from_toml("[amqp]\nenabled = true").unwrap();
        let (e, a) = sink(&s).unwrap();
        assert_eq!(e.id, "rabbitmq");
        assert_eq!(a.exchange, "gbds.notifications");
        assert_eq!(a.url.expose(), "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(e.subscriptions, crate::domain::Subscriptions::All);
        let s = from_toml_env("", &[("RABBITMQ_TRANSACTION_EVENTS_ENABLED", "true")]).unwrap();
        assert!(sink(&s).is_some());
        let s = from_toml_env(
            "",
            &[
                ("RABBITMQ_TRANSACTION_EVENTS_ENABLED", "true"),
                ("GBDS_AMQP_ENABLED", "false"),
            ],
        )
        .unwrap();
        assert!(sink(&s).is_none(), "GBDS_AMQP_ENABLED wins");
        let s = from_toml_env(
            "",
            &[
                ("GBDS_AMQP_ENABLED", "true"),
                ("GBDS_AMQP_URL", "amqps://u:p@broker:5671/prod"),
                ("GBDS_AMQP_EXCHANGE", "gbds.events"),
                ("GBDS_AMQP_ID", "broker"),
                ("GBDS_AMQP_SUBSCRIPTIONS", "[\"ENROLL.*\"]"),
            ],
        )
        .unwrap();
        let (e, a) = sink(&s).unwrap();
        assert_eq!(
            (e.id.as_str(), a.exchange.as_str(), a.url.expose()),
            ("broker", "gbds.events", "amqps://u:p@broker:5671/prod")
        );
        assert!(!e.subscriptions.matches("SEARCH", "MATCH"));
    }

    #[test]
    fn amqp_mistakes_name_their_key_and_never_show_the_password() {
        for (text, key) in [
            ("[amqp]\nurl = \"http://u:hunter2@x/\"", "amqp.url"),
            ("[amqp]\nexchange = \"has space\"", "amqp.exchange"),
            ("[amqp]\nid = \"no/slash\"", "amqp.id"),
            (
                "[amqp]\nsubscriptions = [\"*.NOPE\"]",
                "amqp.subscriptions[0]",
            ),
            ("[amqp]\nenable = true", "enable"),
            (
                "[amqp]\nid = \"a\"\n[[endpoints]]\nid = \"a\"\nurl = \"http://x/\"",
                "amqp.id",
            ),
        ] {
            let e = from_toml(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let s = from_toml("[amqp]\nenabled = true\nurl = \"amqp://u:hunter2@x/\"").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
