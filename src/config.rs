//! Configuration: built-in defaults, then the TOML file, then `GBDS_*` environment variables;
//! validated into typed `Settings` before anything listens (CONTRACT §1).

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::UpdateLabel;

/// A configuration problem, naming the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

fn err<T>(key: impl fmt::Display, what: impl fmt::Display) -> Result<T, ConfigError> {
    Err(ConfigError(format!("{key}: {what}")))
}

/// A secret that never shows itself in `Debug` output, logs or errors.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; call only where it is used (signing, comparing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
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
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default)]
    tokens: Vec<RawToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    token: Secret,
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
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNotifications {
    update_operation: Option<String>,
}

// ---- the validated settings the service runs on ----

/// Everything the service needs, typed and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub store: StoreSettings,
    pub endpoints: Vec<EndpointSettings>,
    pub api: ApiSettings,
    pub delivery: DeliverySettings,
    pub update_label: UpdateLabel,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub sqlite_path: PathBuf,
    /// `synchronous = FULL` (default: every acknowledged call survives power loss) or `NORMAL`.
    pub synchronous_full: bool,
}

#[derive(Debug, Clone)]
pub struct EndpointSettings {
    pub id: String,
    pub url: reqwest::Url,
    pub secret: Option<Secret>,
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
    pub token: Secret,
    pub role: Role,
    pub name: String,
}

#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    /// Empty: the API is open (the service then listens on loopback only is the operator's job).
    pub tokens: Vec<ApiToken>,
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

    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in raw.endpoints.into_iter().enumerate() {
        let key = format!("endpoints[{i}]");
        if e.id.is_empty()
            || !e
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
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
        let url = match reqwest::Url::parse(&e.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            Ok(_) => {
                return err(
                    format!("{key}.url"),
                    format!("{:?} must be an http:// or https:// URL", e.url),
                )
            }
            Err(why) => {
                return err(
                    format!("{key}.url"),
                    format!("{:?} is not a URL: {why}", e.url),
                )
            }
        };
        if let Some(secret) = &e.secret {
            if let Err(why) = crate::delivery::signing::check_secret(secret.expose()) {
                return err(format!("{key}.secret"), why);
            }
        }
        endpoints.push(EndpointSettings {
            id: e.id,
            url,
            secret: e.secret,
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
        if t.token.expose().is_empty() {
            return err(format!("api.tokens[{i}].token"), "must not be empty");
        }
        let name = t.name.unwrap_or_else(|| role.as_str().to_owned());
        tokens.push(ApiToken {
            token: t.token,
            role,
            name,
        });
    }

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

    Ok(Settings {
        listen,
        store,
        endpoints,
        api: ApiSettings { tokens },
        delivery,
        update_label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1.5s"), None);
    }
}
