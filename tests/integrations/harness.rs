//! What the integration tests stand on: the service in-process on port 0 with its own SQLite
//! file (`App`), recording HTTP receivers (`Receiver`), a REST client (`Api`), the document
//! scenarios (`Scenario`), and RabbitMQ helpers: the real broker on 127.0.0.1:5672
//! (`broker_url`), a queue of our own bound to the exchange under test (`TestQueue`) and a TCP
//! proxy the test can cut (`Proxy`). Waits poll against a deadline; nothing sleeps for a result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::Deserialize;
use serde_json::{json, Value};

pub use crate::common::Answer;
use crate::common::{merge, run_service};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN: &str = "t-admin";
pub const INGEST: &str = "t-ingest";
pub const REVIEW: &str = "t-review";

/// Longest a test waits for something that should happen.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How long a test watches for something that must NOT happen after the expected things
/// arrived. Deliveries go out within milliseconds, so this is ample.
pub const QUIET: Duration = Duration::from_millis(400);

/// Polls `check` until it gives a value or `DEADLINE` passes (then panics with `what`).
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The service

/// The service running in this test's runtime, on its own database.
pub struct App {
    pub api: Api,
    pub dir: Arc<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The test configuration: a token per role, fast retries, then `extra_toml` (endpoints,
/// `[amqp]`, more `[delivery]` keys) merged over it table by table.
fn config_toml(listen: SocketAddr, db: &Path, extra_toml: &str) -> String {
    let base = format!(
        r#"
listen = "{listen}"

[store]
sqlite_path = {db:?}
synchronous = "NORMAL"

[api]
tokens = [
  {{ token = "{ADMIN}", role = "admin" }},
  {{ token = "{INGEST}", role = "ingest" }},
  {{ token = "{REVIEW}", role = "review" }},
]

[delivery]
retry_schedule = ["50ms", "100ms", "200ms", "300ms", "400ms", "500ms", "500ms", "500ms", "500ms"]
connect_timeout = "2s"
request_timeout = "5s"
lease = "10s"
"#,
        db = db.display().to_string(),
    );
    let mut table: toml::Table = base.parse().expect("the base test config is TOML");
    let extra: toml::Table = extra_toml
        .parse()
        .unwrap_or_else(|e| panic!("extra_toml is not TOML: {e}\n{extra_toml}"));
    merge(&mut table, extra);
    toml::to_string(&table).expect("a TOML table serializes")
}

impl App {
    /// Starts the service on a fresh database with the test configuration and `extra_toml`.
    pub async fn start(extra_toml: &str) -> App {
        let dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
        Self::start_in(dir, extra_toml).await
    }

    /// Starts the service on the database in `dir` (kept from an earlier `App`).
    pub async fn start_in(dir: Arc<tempfile::TempDir>, extra_toml: &str) -> App {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port on 127.0.0.1");
        let addr = listener.local_addr().expect("a bound address");
        let config = config_toml(addr, &Self::db(&dir), extra_toml);
        let (shutdown, running) = run_service(dir.path(), listener, &config);
        App {
            api: Api::new(format!("http://{addr}")),
            dir,
            shutdown: Some(shutdown),
            running: Some(running),
        }
    }

    pub fn db(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("notifier.db")
    }

    /// Stops the service (it must stop cleanly) and gives back its directory.
    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(running) = self.running.take() {
            tokio::time::timeout(DEADLINE, running)
                .await
                .expect("the service stops within the deadline")
                .expect("the service task did not panic")
                .expect("the service stops without an error");
        }
        self.dir.clone()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP receivers

/// One POST as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("a UTF-8 body")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A receiver that records every POST and answers 200.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app =
            axum::Router::new()
                .fallback(
                    |State(got): State<Arc<Mutex<Vec<Received>>>>,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        got.lock().unwrap().push(Received { headers, body });
                        axum::http::StatusCode::OK
                    },
                )
                .with_state(got.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/notify"),
            got,
        }
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` POSTs arrived, then watches a moment for any more; returns all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(&format!("{n} POSTs at {}", self.url), async || {
            (self.all().len() >= n).then_some(())
        })
        .await;
        tokio::time::sleep(QUIET).await;
        self.all()
    }
}

// ---------------------------------------------------------------------------------------------
// The REST client

#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(DEADLINE)
            .build()
            .unwrap();
        Api { base, client }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("the answer is read");
        Answer { status, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token);
        self.send(r).await
    }

    pub async fn call(&self, method: &str, path: &str, token: &str, body: &Value) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap());
        self.send(r).await
    }

    pub async fn register(&self, tguid: &str, operation: &str) {
        let body = json!({ "tguid": tguid, "operation": operation });
        self.call("POST", "/v1/transactions", INGEST, &body)
            .await
            .ok(201);
    }

    /// One step of a scenario (`event`, `review` or `treatment`), which must be accepted.
    pub async fn step(&self, tguid: &str, call: &str, body: &Value) {
        let (route, token) = match call {
            "event" => ("events", INGEST),
            "review" => ("review", REVIEW),
            "treatment" => ("treatment", REVIEW),
            other => panic!("unknown scenario call {other:?}"),
        };
        let path = format!("/v1/transactions/{tguid}/{route}");
        self.call("POST", &path, token, body).await.ok(200);
    }

    /// One page of the pull feed, with each body as its exact bytes.
    pub async fn feed_page(&self, query: &str) -> FeedPage {
        let answer = self
            .get(&format!("/v1/notifications?{query}"), REVIEW)
            .await;
        answer.ok(200);
        serde_json::from_slice(&answer.body).expect("a feed page")
    }

    /// Reads the whole pull feed from `after`, `limit` at a time; returns the items and the
    /// cursor to continue from.
    pub async fn feed_from(&self, after: &str, limit: usize) -> (Vec<FeedItem>, String) {
        let mut items = Vec::new();
        let mut cursor = after.to_owned();
        loop {
            let page = self
                .feed_page(&format!("after={cursor}&limit={limit}"))
                .await;
            cursor = page.next_cursor;
            if page.items.is_empty() {
                return (items, cursor);
            }
            items.extend(page.items);
        }
    }
}

/// `GET /v1/notifications` as a consumer reads it (unknown fields refused, so the test notices
/// a change of shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedPage {
    pub items: Vec<FeedItem>,
    pub next_cursor: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedItem {
    pub cursor: String,
    pub tguid: String,
    pub seq: i64,
    pub webhook_id: String,
    pub operation: String,
    pub status: String,
    /// Kept as the bytes the service wrote (a `Value` would re-order the keys).
    pub body: Box<serde_json::value::RawValue>,
    pub created_at: String,
}

impl FeedItem {
    pub fn body(&self) -> &str {
        self.body.get()
    }
}

// ---------------------------------------------------------------------------------------------
// The document scenarios (fixtures/scenarios, see fixtures/README.md)

#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub document_section: String,
    pub operation: String,
    #[serde(default)]
    pub config: Option<Value>,
    pub steps: Vec<Step>,
    pub expect: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Step {
    pub call: String,
    pub body: Value,
}

impl Scenario {
    /// Every scenario file, by name.
    pub fn all() -> Vec<Scenario> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios");
        let mut out: Vec<Scenario> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(
            out.len() >= 20,
            "only {} scenarios in fixtures/scenarios",
            out.len()
        );
        out
    }

    pub fn named(name: &str) -> Scenario {
        Scenario::all()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no scenario {name}"))
    }

    /// `[notifications] update_operation` of its config ("ENROLL" when it has none).
    pub fn update_operation(&self) -> String {
        self.config
            .as_ref()
            .and_then(|c| c["notifications"]["update_operation"].as_str())
            .unwrap_or("ENROLL")
            .to_owned()
    }

    /// The expected bodies with the tguid filled in.
    pub fn expected(&self, tguid: &str) -> Vec<String> {
        self.expect
            .iter()
            .map(|e| e.replace("<tguid>", tguid))
            .collect()
    }

    /// Registers the transaction and runs every step.
    pub async fn run(&self, api: &Api, tguid: &str) {
        api.register(tguid, &self.operation).await;
        for step in &self.steps {
            api.step(tguid, &step.call, &step.body).await;
        }
    }
}

/// The `operation` and `status` fields of a body.
pub fn operation_status(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap();
    (
        v["operation"].as_str().unwrap().to_owned(),
        v["status"].as_str().unwrap().to_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

/// The broker every test uses (guest/guest on the default vhost).
pub const BROKER: &str = "127.0.0.1:5672";

/// The broker's AMQP URL, once it answers on 127.0.0.1:5672. When nothing listens there, tries
/// `rabbitmq-server -detached` and waits up to 60 s; the broker is never stopped or changed.
pub async fn broker_url() -> String {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let up = || {
            std::net::TcpStream::connect_timeout(&BROKER.parse().unwrap(), Duration::from_secs(1))
                .is_ok()
        };
        if up() {
            return Ok(());
        }
        let started = std::process::Command::new("rabbitmq-server")
            .arg("-detached")
            .status();
        if let Err(e) = started {
            return Err(format!(
                "RabbitMQ is not listening on {BROKER} and `rabbitmq-server -detached` failed ({e}); \
                 install and start it (apt-get install rabbitmq-server)"
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if up() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!(
            "RabbitMQ did not come up on {BROKER} within 60 s of `rabbitmq-server -detached`"
        ))
    });
    if let Err(why) = checked {
        panic!("{why}");
    }
    format!("amqp://guest:guest@{BROKER}/%2f")
}

/// A name no other test (or run) uses, for exchanges.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}.{}.{:08x}", std::process::id(), fastrand::u32(..))
}

/// One message as a consumer of our test queue read it.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl Consumed {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    pub fn correlation_id(&self) -> String {
        self.properties
            .correlation_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default()
    }
    pub fn message_id(&self) -> String {
        self.properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default()
    }
}

/// An exclusive, auto-deleted queue of the test's own, bound to `exchange` with a pattern, as
/// a consumer would bind theirs. Deletes the exchange (the test's own) when dropped.
pub struct TestQueue {
    _connection: Connection,
    channel: Channel,
    queue: String,
    exchange: String,
    got: Vec<Consumed>,
}

impl TestQueue {
    /// Declares `exchange` as the service does (durable topic) and binds a new queue to it.
    pub async fn bind(exchange: &str, pattern: &str) -> TestQueue {
        let connection = Connection::connect(&broker_url().await, ConnectionProperties::default())
            .await
            .expect("the test connects to RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = queue.name().to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        TestQueue {
            _connection: connection,
            channel,
            queue,
            exchange: exchange.to_owned(),
            got: Vec::new(),
        }
    }

    /// Takes whatever is in the queue now.
    async fn pull(&mut self) {
        while let Some(m) = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            self.got.push(Consumed {
                routing_key: m.delivery.routing_key.to_string(),
                properties: m.delivery.properties.clone(),
                body: m.delivery.data.clone(),
            });
        }
    }

    /// Waits until at least `n` messages were read, then watches a moment for more.
    pub async fn wait_for(&mut self, n: usize) -> Vec<Consumed> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.pull().await;
            if self.got.len() >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {n} messages on {}; got {}",
                self.exchange,
                self.got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(QUIET).await;
        self.pull().await;
        self.got.clone()
    }

    /// What was read so far, after a last look.
    pub async fn now(&mut self) -> Vec<Consumed> {
        self.pull().await;
        self.got.clone()
    }

    /// Deletes the test's exchange (its queue goes with the connection).
    pub async fn delete_exchange(&self) {
        let _ = self
            .channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
}

/// A TCP proxy to the broker on a port of its own, which the test opens and cuts: the service's
/// connection to "the broker" fails while the broker itself is left alone.
pub struct Proxy {
    pub port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// A port nobody listens on yet; the sink pointed there is refused until `open`.
    pub fn closed() -> Proxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        Proxy { port, task: None }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts forwarding connections on the port to the broker.
    pub async fn open(&mut self) {
        assert!(self.task.is_none(), "the proxy is already open");
        broker_url().await;
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the proxy port is free again");
        self.task = Some(tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                links.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(BROKER).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Stops listening and drops every forwarded connection: aborting the task drops its
    /// JoinSet, which aborts every link. Only ours: the broker runs on.
    pub async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
