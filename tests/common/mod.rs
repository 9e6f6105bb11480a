//! What every integration-test binary shares: merging TOML test configurations, and the
//! service's answer with the assertions the tests make on it. Included with `#[path]` by
//! `tests/it`, `tests/delivery` and `tests/integrations`.

use axum::body::Bytes;
use serde_json::Value;

/// Merges `from` into `into` table by table: a nested table adds to the one it meets, any
/// other value replaces it.
pub fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// An answer from the service: status and raw body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} answered with a body that is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a successful answer and returns its JSON.
    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected answer: {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }

    /// Asserts a refusal: the status and `{"error": code, "message": <non-empty string>}`,
    /// nothing more; returns the message.
    #[track_caller]
    pub fn refused(&self, status: u16, code: &str) -> String {
        let text = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "wanted {status} {code}, got: {text}");
        let body = self.json();
        let object = body
            .as_object()
            .unwrap_or_else(|| panic!("the error body is not an object: {text}"));
        assert_eq!(
            object.get("error").and_then(Value::as_str),
            Some(code),
            "wrong error code: {text}"
        );
        let message = object.get("message").and_then(Value::as_str);
        assert!(
            message.is_some_and(|m| !m.trim().is_empty()),
            "the error has no message for a person: {text}"
        );
        assert_eq!(object.len(), 2, "the error body has extra fields: {text}");
        message.unwrap_or_default().to_owned()
    }

    /// Asserts a 422 `invalid_request` whose message contains `says`.
    #[track_caller]
    pub fn invalid(&self, says: &str) {
        let message = self.refused(422, "invalid_request");
        assert!(message.contains(says), "wanted {says:?} in {message:?}");
    }
}

/// The service running in this test's runtime: what stops it and what it returns.
pub type Running = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// Writes `config` into `dir` as `gbds-notifier.toml`, loads it as `serve --config` would and
/// runs the service on `listener` until the returned sender fires (or is dropped).
pub fn run_service(
    dir: &std::path::Path,
    listener: tokio::net::TcpListener,
    config: &str,
) -> Running {
    let path = dir.join("gbds-notifier.toml");
    std::fs::write(&path, config).expect("the config file is written");
    let settings = gbds_notifier::config::load(Some(&path), |_| None)
        .unwrap_or_else(|e| panic!("the test configuration is refused: {e}"));
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(gbds_notifier::run(settings, listener, async move {
        let _ = stop.await;
    }));
    (shutdown, running)
}
