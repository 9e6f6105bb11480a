//! What every integration test stands on: the service started in-process on port 0 with its
//! own SQLite file (`spawn_app`), the real binary as a child process (`ServiceProcess`), a
//! recording receiver whose answer can change mid-test (`TestReceiver`), and a small REST
//! client (`Api`). Waits poll against a deadline; nothing sleeps a fixed time for a result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use serde_json::Value;

pub use crate::common::Answer;
use crate::common::{merge, run_service};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// Bearer tokens configured on every service the tests start, one per role.
pub const ADMIN: &str = "t-admin";
pub const INGEST: &str = "t-ingest";
pub const REVIEW: &str = "t-review";

/// Retries come fast in tests; the list is long enough that a delivery is not dead before a
/// test has finished looking at it (about 3 s of failures).
pub const TEST_RETRY_SCHEDULE: &[&str] = &[
    "50ms", "100ms", "200ms", "300ms", "400ms", "500ms", "500ms", "500ms", "500ms",
];

/// Longest a test waits for something that should happen.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How long a test watches for something that must NOT happen, after the last expected
/// notification arrived. Deliveries go out within milliseconds, so this is ample.
pub const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Configuration

/// The configuration every test service gets: tokens for the three roles, the test retry
/// schedule and one endpoint `test` at `receiver_url`, then `extra_toml` merged over it table
/// by table (`[delivery]` in `extra_toml` adds to the test settings rather than clashing with
/// them; an `[[endpoints]]` list replaces the default one). `{receiver}` in `extra_toml` stands
/// for `receiver_url`.
pub fn config_toml(listen: SocketAddr, db: &Path, receiver_url: &str, extra_toml: &str) -> String {
    let schedule = TEST_RETRY_SCHEDULE
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let base = format!(
        r#"
listen = "{listen}"

[store]
sqlite_path = {db:?}

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

[[endpoints]]
id = "test"
url = "{receiver_url}"
"#,
        db = db.display().to_string(),
    );
    let mut table: toml::Table = base.parse().expect("the base test config is TOML");
    let extra_toml = extra_toml.replace("{receiver}", receiver_url);
    let extra: toml::Table = extra_toml
        .parse()
        .unwrap_or_else(|e| panic!("extra_toml is not TOML: {e}\n{extra_toml}"));
    merge(&mut table, extra);
    toml::to_string(&table).expect("a TOML table serializes")
}

/// A port nobody listens on right now (for the child process, which binds it itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

// ---------------------------------------------------------------------------------------------
// The service in-process

/// The service running in this test's runtime, with its own database and receiver.
pub struct TestApp {
    pub api: Api,
    pub receiver: TestReceiver,
    shutdown: Option<oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Starts `gbds_notifier::run` on 127.0.0.1:0 with a fresh SQLite file and a fresh
/// `TestReceiver` as its only endpoint; `extra_toml` is merged over the test configuration.
pub async fn spawn_app(extra_toml: &str) -> TestApp {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port on 127.0.0.1");
    let addr = listener.local_addr().expect("a bound address");
    let config = config_toml(
        addr,
        &dir.path().join("notifier.db"),
        &receiver.url,
        extra_toml,
    );
    let (shutdown, running) = run_service(dir.path(), listener, &config);
    TestApp {
        api: Api::new(format!("http://{addr}")),
        receiver,
        shutdown: Some(shutdown),
        running: Some(running),
        _dir: dir,
    }
}

impl TestApp {
    /// Asks the service to stop and waits until it has (it must stop cleanly).
    pub async fn stop(mut self) {
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
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The real binary as a child process

/// `gbds-notifier serve --config FILE` as a child process, killed if the test ends first.
pub struct ServiceProcess {
    pub api: Api,
    child: Child,
    log: PathBuf,
}

impl ServiceProcess {
    /// Writes a config (listening on a fresh port, on `db`, delivering to `receiver_url`) into
    /// `dir` and starts the binary on it; returns once `/healthz` answers.
    pub async fn start(dir: &Path, db: &Path, receiver_url: &str, extra_toml: &str) -> Self {
        let port = free_port();
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        let config = dir.join(format!("gbds-notifier-{port}.toml"));
        std::fs::write(&config, config_toml(listen, db, receiver_url, extra_toml))
            .expect("the config file is written");
        let log = dir.join(format!("gbds-notifier-{port}.log"));
        let out = std::fs::File::create(&log).expect("the log file is created");
        let child = Command::new(env!("CARGO_BIN_EXE_gbds-notifier"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            // Nothing from the caller's environment (GBDS_*, proxies) may change the config.
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("the log file handle"))
            .stderr(out)
            .spawn()
            .expect("the gbds-notifier binary starts");
        let mut process = ServiceProcess {
            api: Api::new(format!("http://{listen}")),
            child,
            log,
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if process.api.healthy().await {
                return process;
            }
            if let Some(status) = process
                .child
                .try_wait()
                .expect("the child can be waited on")
            {
                panic!(
                    "gbds-notifier exited with {status} before answering:\n{}",
                    process.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gbds-notifier did not answer /healthz within {DEADLINE:?}:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the killed child is reaped");
    }

    /// SIGTERM, then waits (polling, bounded) for the process to exit; returns its status.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        // The shell's builtin `kill`: no dependency on libc bindings or a /bin/kill.
        let sent = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", self.pid()))
            .status()
            .expect("`sh` runs");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited on") {
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "gbds-notifier did not exit after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The REST client

/// A REST client for one service; calls never go through an environment proxy.
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
            .expect("an HTTP client");
        Self { base, client }
    }

    /// POSTs raw bytes as JSON with an optional bearer token.
    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> Answer {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.into());
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        Self::answer(request).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.post_raw(path, token, serde_json::to_vec(body).expect("JSON"))
            .await
    }

    /// POSTs JSON with `authorization` as the whole Authorization header.
    pub async fn post_with_authorization(
        &self,
        path: &str,
        authorization: &str,
        body: &Value,
    ) -> Answer {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("authorization", authorization)
            .body(serde_json::to_vec(body).expect("JSON"));
        Self::answer(request).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        Self::answer(request).await
    }

    async fn answer(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("the answer body is read");
        Answer { status, body }
    }

    pub async fn healthy(&self) -> bool {
        match self
            .client
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_secs(1))
            .send()
            .await
        {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Registers a transaction as the back office does; returns the answer unchecked.
    pub async fn register(&self, tguid: &str, operation: &str) -> Answer {
        self.post(
            "/v1/transactions",
            Some(INGEST),
            &serde_json::json!({ "tguid": tguid, "operation": operation }),
        )
        .await
    }

    pub async fn event(&self, tguid: &str, body: Value) -> Answer {
        self.post(
            &format!("/v1/transactions/{tguid}/events"),
            Some(INGEST),
            &body,
        )
        .await
    }

    pub async fn review(&self, tguid: &str, body: Value) -> Answer {
        self.post(
            &format!("/v1/transactions/{tguid}/review"),
            Some(REVIEW),
            &body,
        )
        .await
    }

    pub async fn treatment(&self, tguid: &str, body: Value) -> Answer {
        self.post(
            &format!("/v1/transactions/{tguid}/treatment"),
            Some(REVIEW),
            &body,
        )
        .await
    }

    /// `GET /v1/transactions/{tguid}` with the notification bodies as the exact bytes stored.
    pub async fn recorded(&self, tguid: &str) -> Detail {
        let answer = self
            .get(&format!("/v1/transactions/{tguid}"), Some(ADMIN))
            .await;
        assert_eq!(answer.status, 200, "GET {tguid}: {answer:?}");
        serde_json::from_slice(&answer.body).expect("a transaction's detail")
    }

    /// `GET /v1/transactions/{tguid}`, which must succeed.
    pub async fn detail(&self, tguid: &str) -> Value {
        self.get(&format!("/v1/transactions/{tguid}"), Some(ADMIN))
            .await
            .ok(200)
    }

    /// Everything a refused call must leave as it was: every transaction with its operation,
    /// state, last change, number of transitions and the webhook-ids of its notifications.
    /// (Delivery progress is left out: it moves on its own.)
    pub async fn world(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/transactions?limit=1000&cursor={c}"),
                None => "/v1/transactions?limit=1000".to_owned(),
            };
            let page = self.get(&path, Some(ADMIN)).await.ok(200);
            for item in page["items"].as_array().expect("items") {
                let tguid = item["tguid"].as_str().expect("tguid");
                let d = self.detail(tguid).await;
                let ids: Vec<Value> = d["notifications"]
                    .as_array()
                    .expect("notifications")
                    .iter()
                    .map(|n| n["webhook_id"].clone())
                    .collect();
                out.push(serde_json::json!({
                    "tguid": d["tguid"],
                    "operation": d["operation"],
                    "state": d["state"],
                    "updated_at": d["updated_at"],
                    "transitions": d["transitions"].as_array().expect("transitions").len(),
                    "notifications": ids,
                }));
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }
}

/// The part of `GET /v1/transactions/{tguid}` that tests compare, with each notification body
/// kept as its raw bytes (a `serde_json::Value` would sort its keys).
#[derive(Debug, serde::Deserialize)]
pub struct Detail {
    pub state: String,
    pub notifications: Vec<RecordedNotification>,
}

#[derive(Debug, serde::Deserialize)]
pub struct RecordedNotification {
    pub webhook_id: String,
    pub body: Box<serde_json::value::RawValue>,
    /// One per endpoint: `{"endpoint", "status", "attempts", ...}`.
    pub deliveries: Vec<Value>,
}

impl RecordedNotification {
    pub fn text(&self) -> &str {
        self.body.get()
    }
}

// ---------------------------------------------------------------------------------------------
// The receiver

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the receiver answered with.
    pub answered: u16,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("a notification body is UTF-8")
    }

    pub fn tguid(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body)
            .ok()?
            .get("tguid")?
            .as_str()
            .map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn webhook_id(&self) -> String {
        self.header("webhook-id")
            .unwrap_or_else(|| panic!("a POST without webhook-id: {}", self.text()))
            .to_owned()
    }

    pub fn acknowledged(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

#[derive(Clone)]
struct ReceiverState {
    status: Arc<AtomicU16>,
    hold_ms: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<Received>>>,
    count: Arc<watch::Sender<usize>>,
}

/// A real HTTP server on 127.0.0.1:0 that records every request it gets (headers and the raw
/// body bytes) and answers with a status the test can change at any time.
pub struct TestReceiver {
    pub url: String,
    status: Arc<AtomicU16>,
    hold_ms: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<Received>>>,
    count: watch::Receiver<usize>,
    _shutdown: oneshot::Sender<()>,
}

async fn record(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let answered = s.status.load(Ordering::SeqCst);
    let n = {
        let mut log = s.log.lock().expect("receiver log");
        log.push(Received {
            headers,
            body,
            answered,
        });
        log.len()
    };
    s.count.send_replace(n);
    let hold = s.hold_ms.load(Ordering::SeqCst);
    if hold > 0 {
        tokio::time::sleep(Duration::from_millis(hold)).await;
    }
    StatusCode::from_u16(answered).expect("a valid status")
}

impl TestReceiver {
    /// Starts answering 200 on a fresh port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port on 127.0.0.1");
        let addr = listener.local_addr().expect("a bound address");
        let (count_tx, count) = watch::channel(0);
        let state = ReceiverState {
            status: Arc::new(AtomicU16::new(200)),
            hold_ms: Arc::default(),
            log: Arc::default(),
            count: Arc::new(count_tx),
        };
        let (shutdown, stop) = oneshot::channel::<()>();
        let app = Router::new().fallback(record).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .await;
        });
        TestReceiver {
            url: format!("http://{addr}/notify"),
            status: state.status,
            hold_ms: state.hold_ms,
            log: state.log,
            count,
            _shutdown: shutdown,
        }
    }

    /// From now on, answer every POST with `status`.
    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// From now on, record each request at once but answer it only after `hold` (a POST that
    /// stays in flight).
    pub fn hold_answers_for(&self, hold: Duration) {
        self.hold_ms
            .store(hold.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every request so far, in arrival order.
    pub fn all(&self) -> Vec<Received> {
        self.log.lock().expect("receiver log").clone()
    }

    /// Waits until `done` holds for what was received, or panics after `DEADLINE` saying what
    /// was awaited and what arrived.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut count = self.count.clone();
        loop {
            let all = self.all();
            if done(&all) {
                return all;
            }
            if tokio::time::timeout_at(deadline, count.changed())
                .await
                .is_err()
            {
                let got: Vec<String> = self
                    .all()
                    .iter()
                    .map(|r| format!("{} {}", r.answered, r.text()))
                    .collect();
                panic!(
                    "waited {DEADLINE:?} for {what}; the receiver got {} request(s):\n  {}",
                    got.len(),
                    got.join("\n  ")
                );
            }
        }
    }

    /// Asserts that no request arrives for `QUIET` (call it after the last expected one).
    pub async fn assert_quiet(&self) {
        let before = self.all().len();
        let mut count = self.count.clone();
        count.mark_unchanged();
        if tokio::time::timeout(QUIET, count.changed()).await.is_ok() {
            let extra: Vec<String> = self.all()[before..].iter().map(Received::text).collect();
            panic!(
                "nothing more should have arrived, but got:\n  {}",
                extra.join("\n  ")
            );
        }
    }

    /// Waits for exactly `expected` (each transaction's bodies in the given order; different
    /// transactions may interleave), then checks that nothing else arrives.
    pub async fn expect_exactly(&self, expected: &[String]) {
        let tguid_of = |b: &str| -> Option<String> {
            serde_json::from_str::<Value>(b).ok()?["tguid"]
                .as_str()
                .map(str::to_owned)
        };
        self.wait_until(&format!("{} notification(s)", expected.len()), |all| {
            all.iter().filter(|r| r.acknowledged()).count() >= expected.len()
        })
        .await;
        self.assert_quiet().await;
        let got: Vec<String> = self.all().iter().map(Received::text).collect();
        assert_eq!(
            got.len(),
            expected.len(),
            "wanted exactly:\n  {}\ngot:\n  {}",
            expected.join("\n  "),
            got.join("\n  ")
        );
        let mut tguids: Vec<Option<String>> = Vec::new();
        for t in expected.iter().map(|b| tguid_of(b)) {
            if !tguids.contains(&t) {
                tguids.push(t);
            }
        }
        for t in tguids {
            let want: Vec<&String> = expected.iter().filter(|b| tguid_of(b) == t).collect();
            let have: Vec<&String> = got.iter().filter(|b| tguid_of(b) == t).collect();
            assert_eq!(have, want, "notifications for {t:?}");
        }
    }
}

/// The compact JSON body of a treatment notification, as CONTRACT §3 writes it.
pub fn treated_body(tguid: &str, treatment: &str) -> String {
    format!(
        r#"{{"operation":"TREAT_EXCEPTION","tguid":"{tguid}","status":"OK","treatment":"{treatment}"}}"#
    )
}

/// The compact JSON body of a reverse latent match notification.
pub fn latent_body(operation: &str, tguid: &str, uguid: &str) -> String {
    format!(
        r#"{{"operation":"{operation}","tguid":"{tguid}","status":"REVERSE_LATENT_MATCH","uguid":"{uguid}"}}"#
    )
}

/// The compact JSON body of a status notification, as CONTRACT §3 writes it.
pub fn status_body(operation: &str, tguid: &str, status: &str) -> String {
    format!(r#"{{"operation":"{operation}","tguid":"{tguid}","status":"{status}"}}"#)
}
