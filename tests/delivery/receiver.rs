//! A receiver whose every answer is scripted by the test: status, headers and delay per POST,
//! decided from the body and how many times that body came before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// What to answer to one POST.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<u64>,
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

/// One POST as it arrived.
#[derive(Clone, Debug)]
pub struct Hit {
    pub at: Instant,
    pub body: String,
    pub tguid: String,
    pub webhook_id: String,
    /// 1 for the first time this body arrived.
    pub attempt: u32,
    pub answered: u16,
}

type Script = Arc<dyn Fn(&str, u32) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Script>>,
    hits: Arc<Mutex<Vec<Hit>>>,
    attempts: Arc<Mutex<HashMap<String, u32>>>,
    count: Arc<watch::Sender<usize>>,
}

pub struct FaultReceiver {
    pub url: String,
    shared: Shared,
    count: watch::Receiver<usize>,
    _stop: oneshot::Sender<()>,
}

async fn handle(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    let attempt = {
        let mut a = s.attempts.lock().unwrap();
        let n = a.entry(text.clone()).or_default();
        *n += 1;
        *n
    };
    let reply = (s.script.lock().unwrap())(&text, attempt);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let tguid = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["tguid"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let webhook_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let n = {
        let mut hits = s.hits.lock().unwrap();
        hits.push(Hit {
            at: Instant::now(),
            body: text,
            tguid,
            webhook_id,
            attempt,
            answered: reply.status,
        });
        hits.len()
    };
    s.count.send_replace(n);
    let mut response = StatusCode::from_u16(reply.status).unwrap().into_response();
    if let Some(secs) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    response
}

impl FaultReceiver {
    /// Starts on a fresh port (or `port`), answering by `script(body, attempt)`.
    pub async fn start_on(
        port: u16,
        script: impl Fn(&str, u32) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("a port on 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let (count_tx, count) = watch::channel(0);
        let shared = Shared {
            script: Arc::new(Mutex::new(Arc::new(script))),
            hits: Arc::default(),
            attempts: Arc::default(),
            count: Arc::new(count_tx),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        FaultReceiver {
            url: format!("http://127.0.0.1:{port}/notify"),
            shared,
            count,
            _stop: stop,
        }
    }

    pub async fn start(script: impl Fn(&str, u32) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on(0, script).await
    }

    /// Replaces the script from now on.
    pub fn script(&self, script: impl Fn(&str, u32) -> Reply + Send + Sync + 'static) {
        *self.shared.script.lock().unwrap() = Arc::new(script);
    }

    /// POSTs that arrived, answered or still held by a delay.
    pub fn arrivals(&self) -> u32 {
        self.shared.attempts.lock().unwrap().values().sum()
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    /// Bodies acknowledged for `tguid`, in arrival order.
    pub fn delivered(&self, tguid: &str) -> Vec<String> {
        self.hits()
            .into_iter()
            .filter(|h| h.tguid == tguid && (200..300).contains(&h.answered))
            .map(|h| h.body)
            .collect()
    }

    /// Waits (bounded by `limit`) until `done` holds over the hits.
    pub async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Hit]) -> bool,
    ) -> Vec<Hit> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut count = self.count.clone();
        loop {
            let hits = self.hits();
            if done(&hits) {
                return hits;
            }
            if tokio::time::timeout_at(deadline, count.changed())
                .await
                .is_err()
            {
                let seen: Vec<String> = self
                    .hits()
                    .iter()
                    .map(|h| format!("{} #{} {}", h.answered, h.attempt, h.body))
                    .collect();
                panic!(
                    "waited {limit:?} for {what}; the receiver got:\n  {}",
                    seen.join("\n  ")
                );
            }
        }
    }
}
