//! The configuration of a test service: a base, then the test's own TOML merged over it table
//! by table (`[delivery]` in a test's TOML adds to the base's rather than clashing with it; an
//! `[[endpoints]]` list or any other value replaces the base's).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ADMIN, INGEST, REVIEW};

/// Retries come fast in tests; the list is long enough that a delivery is not dead before a
/// test has finished looking at it (about 3 s of failures).
pub const TEST_RETRY_SCHEDULE: &[&str] = &[
    "50ms", "100ms", "200ms", "300ms", "400ms", "500ms", "500ms", "500ms", "500ms",
];

/// The database of a service started in `dir`: its SQLite file, or the path that names its
/// PostgreSQL database (`postgres`).
pub fn database_in(dir: &Path) -> PathBuf {
    dir.join("notifier.db")
}

/// How a test service is configured and where its database lives; `start` runs it.
#[derive(Clone)]
pub struct Setup {
    /// TOML merged over the base, in order; `{receiver}` stands for the app's receiver URL.
    pub(super) layers: Vec<String>,
    /// The base: a token per role and the test delivery settings. Without it, only `listen`
    /// and `[store] sqlite_path` are set (an API without tokens, every default).
    pub(super) tokens_and_delivery: bool,
    /// Endpoint `test` at the app's receiver (an `[[endpoints]]` list in a layer replaces it).
    pub(super) test_endpoint: bool,
    /// A directory kept from an earlier service (its database), instead of a fresh one.
    pub(super) dir: Option<Arc<tempfile::TempDir>>,
}

impl Setup {
    /// The test configuration with `extra_toml` merged over it.
    pub fn new(extra_toml: &str) -> Setup {
        Setup {
            layers: vec![extra_toml.to_owned()],
            tokens_and_delivery: true,
            test_endpoint: true,
            dir: None,
        }
    }

    /// Merges one more TOML text over what is there.
    pub fn and(mut self, more_toml: &str) -> Setup {
        self.layers.push(more_toml.to_owned());
        self
    }

    /// No endpoint `test`: only the endpoints (or `[amqp]` sink) the layers configure.
    pub fn without_test_endpoint(mut self) -> Setup {
        self.test_endpoint = false;
        self
    }

    /// Only `listen` and the database from the harness: no tokens (the API is open on
    /// loopback), no endpoint, every delivery default; the layers say the rest.
    pub fn bare(mut self) -> Setup {
        self.tokens_and_delivery = false;
        self.test_endpoint = false;
        self
    }

    /// On the database in `dir`, kept from a service stopped earlier.
    pub fn in_dir(mut self, dir: Arc<tempfile::TempDir>) -> Setup {
        self.dir = Some(dir);
        self
    }

    /// The configuration file's text for a service on `listen` and `db`.
    pub fn toml(&self, listen: SocketAddr, db: &Path, receiver_url: &str) -> String {
        let store = if super::postgres::enabled() {
            format!("postgres_url = {:?}", super::postgres::url_for(db))
        } else {
            format!("sqlite_path = {:?}", db.display().to_string())
        };
        let mut base = format!("listen = \"{listen}\"\n\n[store]\n{store}\n");
        if self.tokens_and_delivery {
            let schedule = TEST_RETRY_SCHEDULE
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            base.push_str(&format!(
                r#"
[api]
tokens = [
  {{ token = "{ADMIN}", role = "admin" }},
  {{ token = "{INGEST}", role = "ingest" }},
  {{ token = "{REVIEW}", role = "review" }},
]

[delivery]
retry_schedule = [{schedule}]
request_timeout = "5s"
lease = "10s"
"#
            ));
        }
        if self.test_endpoint {
            base.push_str(&format!(
                "\n[[endpoints]]\nid = \"test\"\nurl = \"{receiver_url}\"\n"
            ));
        }
        let mut table: toml::Table = base.parse().expect("the base test config is TOML");
        for layer in &self.layers {
            let layer = layer.replace("{receiver}", receiver_url);
            let extra: toml::Table = layer
                .parse()
                .unwrap_or_else(|e| panic!("a test's TOML is not TOML: {e}\n{layer}"));
            merge(&mut table, extra);
        }
        toml::to_string(&table).expect("a TOML table serializes")
    }
}

/// Merges `from` into `into` table by table: a nested table adds to the one it meets, any
/// other value replaces it.
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}
