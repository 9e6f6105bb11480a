//! The benchmark's receiver: a bare hyper server that answers every POST at once, timestamps
//! it, de-duplicates on `webhook-id` and checks, as each notification arrives, that its
//! transaction's notifications come in the order of CONTRACT §2.
//!
//! `GET /_bench/records?prefix=P` returns what it saw as JSON, so the driver can read a
//! receiver running in another process (`gbds-bench --serve-receiver ADDR`).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::mix::{Kind, MAX_NOTIFICATIONS};
use crate::stats::now_ns;

/// Delivery times (Unix ns) of one transaction's notifications, by position in its expected
/// sequence; 0 where nothing arrived.
pub type Times = [i64; MAX_NOTIFICATIONS];

/// What the receiver saw.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every POST, duplicates included.
    pub posts: u64,
    /// Distinct `webhook-id`s.
    pub unique: u64,
    /// POSTs repeating a `webhook-id` already received (at-least-once re-sends).
    pub duplicates: u64,
    /// Notifications that arrived before one that should precede them, or that the
    /// transaction's script does not contain.
    pub order_violations: u64,
    /// Bodies whose tguid is not a benchmark tguid.
    pub foreign: u64,
    /// The first few violations, described.
    pub examples: Vec<String>,
    /// Per tguid (those starting with the asked prefix): when each notification arrived.
    pub records: HashMap<String, Times>,
}

#[derive(Default)]
struct Inner {
    /// Hashes of the `webhook-id`s seen (64-bit: collisions are negligible at these counts).
    ids: HashSet<u64>,
    txs: HashMap<Box<str>, Times>,
    duplicates: u64,
    violations: u64,
    foreign: u64,
    examples: Vec<String>,
}

/// State shared by the connections of one receiver.
#[derive(Default)]
pub struct Shared {
    inner: Mutex<Inner>,
    posts: AtomicU64,
    unique: AtomicU64,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    tguid: &'a str,
    #[serde(borrow)]
    status: &'a str,
}

impl Shared {
    /// Distinct notifications received so far.
    pub fn unique(&self) -> u64 {
        self.unique.load(Ordering::Relaxed)
    }

    fn record(&self, webhook_id: Option<&[u8]>, body: &[u8], at: i64) {
        self.posts.fetch_add(1, Ordering::Relaxed);
        let parsed: Option<Body<'_>> = serde_json::from_slice(body).ok();
        let mut inner = self.inner.lock().expect("receiver state");
        let id = {
            let mut h = DefaultHasher::new();
            // Without a webhook-id, the body stands in (the service always sends one).
            webhook_id.unwrap_or(body).hash(&mut h);
            h.finish()
        };
        if !inner.ids.insert(id) {
            inner.duplicates += 1;
            return;
        }
        self.unique.fetch_add(1, Ordering::Relaxed);
        let Some(b) = parsed else {
            inner.foreign += 1;
            return;
        };
        let Some(kind) = Kind::of_tguid(b.tguid) else {
            inner.foreign += 1;
            return;
        };
        let expected = kind.expected();
        let times = inner
            .txs
            .entry(b.tguid.into())
            .or_insert([0; MAX_NOTIFICATIONS]);
        let problem = match expected.iter().position(|s| *s == b.status) {
            None => Some(format!(
                "{}: status {} is not in its script",
                b.tguid, b.status
            )),
            Some(i) if times[i] != 0 => Some(format!(
                "{}: {} arrived twice with different webhook-ids",
                b.tguid, b.status
            )),
            Some(i) => {
                times[i] = at;
                // Every earlier notification must already be here, and no later one.
                let early = times[..i].contains(&0);
                let late = times[i + 1..].iter().any(|t| *t != 0);
                (early || late).then(|| {
                    format!(
                        "{}: {} arrived out of order (expected {:?})",
                        b.tguid, b.status, expected
                    )
                })
            }
        };
        if let Some(p) = problem {
            inner.violations += 1;
            if inner.examples.len() < 10 {
                inner.examples.push(p);
            }
        }
    }

    /// Drops the per-transaction records and seen ids (the counters stay), so that a long
    /// invocation's receiver does not grow from run to run.
    pub fn forget(&self) {
        let mut inner = self.inner.lock().expect("receiver state");
        inner.txs = HashMap::new();
        inner.ids = HashSet::new();
    }

    /// Counters, and the records of tguids starting with `prefix` (none if `prefix` is None).
    pub fn snapshot(&self, prefix: Option<&str>) -> Snapshot {
        let inner = self.inner.lock().expect("receiver state");
        let records = match prefix {
            None => HashMap::new(),
            Some(p) => inner
                .txs
                .iter()
                .filter(|(k, _)| k.starts_with(p))
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        };
        Snapshot {
            posts: self.posts.load(Ordering::Relaxed),
            unique: self.unique(),
            duplicates: inner.duplicates,
            order_violations: inner.violations,
            foreign: inner.foreign,
            examples: inner.examples.clone(),
            records,
        }
    }
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    _stop: watch::Sender<bool>,
}

impl Receiver {
    /// Binds `listen` and serves on the current runtime.
    pub async fn start(listen: SocketAddr) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, shared.clone(), stopped));
        Ok(Receiver {
            addr,
            shared,
            _stop: stop,
        })
    }

    /// The URL endpoints should POST to.
    pub fn url(&self) -> String {
        format!("http://{}/notify", self.addr)
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {}
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/_bench/records" {
        let prefix = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("prefix="))
                .map(str::to_owned)
        });
        let snapshot = shared.snapshot(prefix.as_deref());
        let body = serde_json::to_vec(&snapshot).unwrap_or_default();
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    let id = req
        .headers()
        .get("webhook-id")
        .map(|v| Bytes::copy_from_slice(v.as_bytes()));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(r);
        }
    };
    shared.record(id.as_deref(), &body, now_ns());
    Ok(Response::new(Full::new(Bytes::new())))
}

/// A receiver that is down in the slow way: it accepts connections and never answers, so
/// the service's attempts end in its request timeout instead of spinning on refusals.
pub struct BlackHole {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    pub async fn start(listen: SocketAddr) -> std::io::Result<BlackHole> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    r = listener.accept() => if let Ok((s, _)) = r { held.push(s) },
                    _ = stopped.changed() => return,
                }
            }
        });
        Ok(BlackHole { addr, stop, task })
    }

    /// Closes the listener and every held connection, and waits until they are closed, so
    /// that the port can be bound again at once.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Reads a receiver in another process through `GET /_bench/records`.
pub async fn fetch(
    client: &reqwest::Client,
    receiver_url: &str,
    prefix: Option<&str>,
) -> anyhow::Result<Snapshot> {
    let mut url = reqwest::Url::parse(receiver_url)?;
    url.set_path("/_bench/records");
    url.set_query(prefix.map(|p| format!("prefix={p}")).as_deref());
    let body = client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(shared: &Shared, id: &str, tguid: &str, status: &str, at: i64) {
        let body = format!(r#"{{"operation":"ENROLL","tguid":"{tguid}","status":"{status}"}}"#);
        shared.record(Some(id.as_bytes()), body.as_bytes(), at);
    }

    #[test]
    fn notifications_in_script_order_are_not_violations() {
        let s = Shared::default();
        post(&s, "a", "p-7-XD", "EXCEPTION", 1);
        post(&s, "b", "p-7-XD", "OK", 2);
        post(&s, "c", "p-7-XD", "ENROLLED", 3);
        let snap = s.snapshot(Some("p-"));
        assert_eq!((snap.unique, snap.order_violations), (3, 0));
        assert_eq!(snap.records["p-7-XD"], [1, 2, 3]);
    }

    #[test]
    fn a_notification_overtaking_its_predecessor_is_a_violation() {
        let s = Shared::default();
        post(&s, "a", "p-4-UP", "ENROLLED", 1);
        post(&s, "b", "p-4-UP", "REVERSE_LATENT_MATCH", 2);
        assert_eq!(s.snapshot(None).order_violations, 2);
    }

    #[test]
    fn a_resent_webhook_id_is_a_duplicate_not_a_violation() {
        let s = Shared::default();
        post(&s, "a", "p-0-EN", "ENROLLED", 1);
        post(&s, "a", "p-0-EN", "ENROLLED", 2);
        let snap = s.snapshot(Some("p-"));
        assert_eq!((snap.posts, snap.unique, snap.duplicates), (2, 1, 1));
        assert_eq!(snap.order_violations, 0);
        assert_eq!(snap.records["p-0-EN"][0], 1);
    }
}
