//! A real HTTP server on 127.0.0.1 that records every request it gets (headers and the raw
//! body bytes, how many times that body came before, when it came) and answers as the test
//! says: a standing status and hold the test can change at any time, or a script deciding
//! each answer from the request; a gate the test closes holds every answer until it opens it.
//!
//! "Nothing more arrives" is decided by the service's own record, not by a quiet window: each
//! receiver learns from `deliverers` the services whose configuration, or an endpoint created
//! or changed through the harness's `Api`, names its port, and it is settled once none of them
//! has a delivery pending for an enabled endpoint at that port. A
//! delivery stops being pending only after its POST was answered, and the receiver records a
//! POST before it answers, so by then every POST that will ever come has been recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::{deliverers, eventually, Api, DEADLINE};

/// What to answer to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
    /// How long to hold the answer after recording the request (a POST that stays in flight).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            retry_after: None,
            delay: Duration::ZERO,
        }
    }

    pub fn ok() -> Self {
        Self::status(200)
    }
}

/// A request as a script sees it, before it is answered.
pub struct Arrival<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a str,
    /// 1 the first time this body arrived.
    pub attempt: u32,
}

impl Arrival<'_> {
    /// The bearer token of the `Authorization` header.
    pub fn bearer(&self) -> Option<&str> {
        self.headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// 1 the first time this body arrived.
    pub attempt: u32,
    /// The status the receiver answers (or answered) with.
    pub status: u16,
    /// Whether that answer has been sent (false while it is held).
    pub answered: bool,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("a notification body is UTF-8")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
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

    /// Answered with a 2xx.
    pub fn acknowledged(&self) -> bool {
        self.answered && (200..300).contains(&self.status)
    }
}

type Script = Arc<dyn Fn(&Arrival) -> Reply + Send + Sync>;

struct Shared {
    standing: Mutex<Reply>,
    script: Mutex<Option<Script>>,
    log: Mutex<Vec<Received>>,
    attempts: Mutex<HashMap<Bytes, u32>>,
    /// Requests recorded so far.
    arrivals: watch::Sender<usize>,
    /// Bumped on every arrival and every answer sent.
    changes: watch::Sender<u64>,
    /// Whether answers may go out (`hold_until_released`).
    gate: watch::Sender<bool>,
    port: u16,
    /// A client for each service that delivers here, by base URL, made once.
    clients: Mutex<HashMap<String, Api>>,
}

impl Shared {
    fn client(&self, base: &str) -> Api {
        let mut clients = self.clients.lock().expect("clients");
        clients
            .entry(base.to_owned())
            .or_insert_with(|| Api::new(base.to_owned()))
            .clone()
    }
}

/// The recording receiver; it answers 200 until told otherwise.
pub struct Receiver {
    /// `http://127.0.0.1:<port>/notify`.
    pub url: String,
    shared: Arc<Shared>,
    _shutdown: oneshot::Sender<()>,
}

async fn record(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let attempt = {
        let mut attempts = s.attempts.lock().expect("attempts");
        let n = attempts.entry(body.clone()).or_default();
        *n += 1;
        *n
    };
    let script = s.script.lock().expect("script").clone();
    let reply = match script {
        Some(script) => script(&Arrival {
            headers: &headers,
            body: &String::from_utf8_lossy(&body),
            attempt,
        }),
        None => s.standing.lock().expect("standing answer").clone(),
    };
    let mut gate = s.gate.subscribe();
    let held = !reply.delay.is_zero() || !*gate.borrow_and_update();
    let index = {
        let mut log = s.log.lock().expect("receiver log");
        log.push(Received {
            at: Instant::now(),
            headers,
            body,
            attempt,
            status: reply.status,
            answered: !held,
        });
        log.len() - 1
    };
    s.arrivals.send_modify(|n| *n += 1);
    s.changes.send_modify(|n| *n += 1);
    if held {
        let _ = gate.wait_for(|open| *open).await;
        tokio::time::sleep(reply.delay).await;
        s.log.lock().expect("receiver log")[index].answered = true;
        s.changes.send_modify(|n| *n += 1);
    }
    let mut response = StatusCode::from_u16(reply.status)
        .expect("a valid status")
        .into_response();
    if let Some(secs) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    response
}

impl Receiver {
    /// Starts answering 200 on a fresh port.
    pub async fn start() -> Receiver {
        Self::start_on(0).await
    }

    /// Starts answering 200 on `port` (0: a fresh one).
    pub async fn start_on(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("a port on 127.0.0.1");
        let addr = listener.local_addr().expect("a bound address");
        let shared = Arc::new(Shared {
            standing: Mutex::new(Reply::ok()),
            script: Mutex::new(None),
            log: Mutex::default(),
            attempts: Mutex::default(),
            arrivals: watch::channel(0).0,
            changes: watch::channel(0).0,
            gate: watch::channel(true).0,
            port: addr.port(),
            clients: Mutex::default(),
        });
        deliverers::forget_port(addr.port());
        let (shutdown, stop) = oneshot::channel::<()>();
        let app = Router::new().fallback(record).with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .await;
        });
        Receiver {
            url: format!("http://{addr}/notify"),
            shared,
            _shutdown: shutdown,
        }
    }

    /// From now on, answer every request with `status` (after the standing hold).
    pub fn answer_with(&self, status: u16) {
        self.shared.standing.lock().expect("standing answer").status = status;
    }

    /// From now on, record each request at once but answer it only after `hold`.
    pub fn hold_answers_for(&self, hold: Duration) {
        self.shared.standing.lock().expect("standing answer").delay = hold;
    }

    /// From now on, record each request at once and hold its answer until `release`.
    pub fn hold_until_released(&self) {
        self.shared.gate.send_replace(false);
    }

    /// Sends the answers held since `hold_until_released`, and answers at once again.
    pub fn release(&self) {
        self.shared.gate.send_replace(true);
    }

    /// From now on, answer each request as `script` decides (instead of the standing answer).
    pub fn script(&self, script: impl Fn(&Arrival) -> Reply + Send + Sync + 'static) {
        *self.shared.script.lock().expect("script") = Some(Arc::new(script));
    }

    /// Every request so far, in arrival order.
    pub fn all(&self) -> Vec<Received> {
        self.shared.log.lock().expect("receiver log").clone()
    }

    /// The bodies acknowledged for `tguid`, in arrival order.
    pub fn delivered(&self, tguid: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|r| r.acknowledged() && r.tguid().as_deref() == Some(tguid))
            .map(|r| r.text())
            .collect()
    }

    /// Waits until `done` holds for what was received, or panics after `DEADLINE` saying what
    /// was awaited and what arrived.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        self.wait_until_within(what, DEADLINE, done).await
    }

    /// `wait_until` with a limit of its own.
    pub async fn wait_until_within(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut changes = self.shared.changes.subscribe();
        loop {
            let all = self.all();
            if done(&all) {
                return all;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                let got: Vec<String> = self
                    .all()
                    .iter()
                    .map(|r| format!("{} #{} {}", r.status, r.attempt, r.text()))
                    .collect();
                panic!(
                    "waited {limit:?} for {what}; the receiver got {} request(s):\n  {}",
                    got.len(),
                    got.join("\n  ")
                );
            }
        }
    }

    /// Waits until at least `n` requests arrived; returns all of them.
    pub async fn at_least(&self, n: usize) -> Vec<Received> {
        self.wait_until(&format!("{n} request(s) at {}", self.url), |all| {
            all.len() >= n
        })
        .await
    }

    /// Waits until at least `n` requests arrived and nothing more is owed to this receiver
    /// (`settled`); returns all.
    pub async fn settled_at(&self, n: usize) -> Vec<Received> {
        self.at_least(n).await;
        self.settled().await;
        self.all()
    }

    /// Waits until the services that deliver here owe this receiver nothing: no delivery
    /// pending for an enabled endpoint at its port (one that is pending for a disabled
    /// endpoint is not sent until someone enables it).
    pub async fn settled(&self) {
        let port = self.shared.port;
        let at_port = format!(":{port}/");
        eventually(
            &format!("no delivery pending for 127.0.0.1:{port}"),
            async || {
                let api = self.service().await;
                let owed = api
                    .owed(|e| e["url"].as_str().is_some_and(|u| u.contains(&at_port)))
                    .await;
                owed.is_empty().then_some(())
            },
        )
        .await;
    }

    /// The latest service that delivers here and still answers.
    async fn service(&self) -> Api {
        let port = self.shared.port;
        for base in deliverers::at(port).iter().rev() {
            let api = self.shared.client(base);
            if api.healthy().await {
                return api;
            }
        }
        let at_port = format!(":{port}/");
        for base in deliverers::running().iter().rev() {
            let api = self.shared.client(base);
            if !api.healthy().await {
                continue;
            }
            let list = api.get("/v1/endpoints", Some(super::ADMIN)).await;
            if list.status == 200 && String::from_utf8_lossy(&list.body).contains(&at_port) {
                deliverers::serves(&at_port, base);
                return api;
            }
        }
        panic!(
            "no running service started through the harness has an endpoint at {}",
            self.url
        )
    }

    /// Asserts that nothing arrives beyond what has (call it after the last expected one): the
    /// services settle (`settled`) without another request.
    pub async fn assert_quiet(&self) {
        let before = self.all().len();
        self.settled().await;
        let all = self.all();
        if all.len() > before {
            let extra: Vec<String> = all[before..].iter().map(Received::text).collect();
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
