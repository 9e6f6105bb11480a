//! A REST client for one service (`Api`), and the service's answers with the assertions the
//! tests make on them (`Answer`).

use std::time::Duration;

use axum::body::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ADMIN, DEADLINE, INGEST, REVIEW};

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

    /// The body as JSON, or `Null` when it is not JSON.
    pub fn json_or_null(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
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

    /// Whether this is the refusal `status` with `{"error": code, "message": <non-empty
    /// string>}` and nothing more: its message, or what is wrong with it.
    pub fn refusal(&self, status: u16, code: &str) -> Result<String, String> {
        let text = String::from_utf8_lossy(&self.body);
        if self.status != status {
            return Err(format!(
                "wanted {status} {code}, got {}: {text}",
                self.status
            ));
        }
        let body: Value = serde_json::from_slice(&self.body)
            .map_err(|e| format!("the error body is not JSON ({e}): {text}"))?;
        let object = body
            .as_object()
            .ok_or_else(|| format!("the error body is not an object: {text}"))?;
        if object.get("error").and_then(Value::as_str) != Some(code) {
            return Err(format!("wrong error code, wanted {code}: {text}"));
        }
        let message = object.get("message").and_then(Value::as_str);
        if message.is_none_or(|m| m.trim().is_empty()) {
            return Err(format!("the error has no message for a person: {text}"));
        }
        if object.len() != 2 {
            return Err(format!("the error body has extra fields: {text}"));
        }
        Ok(message.unwrap_or_default().to_owned())
    }

    /// Asserts a refusal (see `refusal`); returns its message.
    #[track_caller]
    pub fn refused(&self, status: u16, code: &str) -> String {
        self.refusal(status, code)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// Asserts a 422 `invalid_request` whose message contains `says`.
    #[track_caller]
    pub fn invalid(&self, says: &str) {
        let message = self.refused(422, "invalid_request");
        assert!(message.contains(says), "wanted {says:?} in {message:?}");
    }
}

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

    /// The one way a call is made: `method` on `path`, with `authorization` as the whole
    /// Authorization header and `body` as JSON, when given.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        if path.starts_with("/v1/endpoints") {
            // An endpoint created or changed at a receiver: this service may deliver there.
            if let Some(b) = &body {
                super::deliverers::serves(&String::from_utf8_lossy(b), &self.base);
            }
        }
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        if let Some(b) = body {
            request = request.header("content-type", "application/json").body(b);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("the answer body is read");
        Answer { status, body }
    }

    /// `method` on `path` with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let authorization = token.map(|t| format!("Bearer {t}"));
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        self.send(method, path, authorization.as_deref(), body)
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call("GET", path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.call("POST", path, token, Some(body)).await
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
        let body = json!({ "tguid": tguid, "operation": operation });
        self.post("/v1/transactions", Some(INGEST), &body).await
    }

    pub async fn event(&self, tguid: &str, body: Value) -> Answer {
        let path = format!("/v1/transactions/{tguid}/events");
        self.post(&path, Some(INGEST), &body).await
    }

    pub async fn review(&self, tguid: &str, body: Value) -> Answer {
        let path = format!("/v1/transactions/{tguid}/review");
        self.post(&path, Some(REVIEW), &body).await
    }

    pub async fn treatment(&self, tguid: &str, body: Value) -> Answer {
        let path = format!("/v1/transactions/{tguid}/treatment");
        self.post(&path, Some(REVIEW), &body).await
    }

    /// Registers `tguid` as ENROLL and reports `outcome`; both must be accepted.
    pub async fn enroll(&self, tguid: &str, outcome: &str) {
        self.register(tguid, "ENROLL").await.ok(201);
        self.event(tguid, json!({ "type": outcome })).await.ok(200);
    }

    /// `GET /v1/transactions/{tguid}`, which must succeed.
    pub async fn detail(&self, tguid: &str) -> Value {
        self.get(&format!("/v1/transactions/{tguid}"), Some(ADMIN))
            .await
            .ok(200)
    }

    /// `GET /v1/transactions/{tguid}` with the notification bodies as the exact bytes stored.
    pub async fn recorded(&self, tguid: &str) -> Detail {
        let answer = self
            .get(&format!("/v1/transactions/{tguid}"), Some(ADMIN))
            .await;
        assert_eq!(answer.status, 200, "GET {tguid}: {answer:?}");
        serde_json::from_slice(&answer.body).expect("a transaction's detail")
    }

    /// The first delivery of the first notification of `tguid`, as GET shows it now.
    pub async fn first_delivery(&self, tguid: &str) -> Value {
        self.detail(tguid).await["notifications"][0]["deliveries"][0].clone()
    }

    /// An endpoint as `GET /v1/endpoints` lists it (`Null` when it is not listed).
    pub async fn endpoint(&self, id: &str) -> Value {
        let all = self.get("/v1/endpoints", Some(ADMIN)).await.ok(200);
        all["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The enabled endpoints that `which` picks and that still have deliveries pending, as
    /// "id: backlog" (a pending delivery for a disabled endpoint is not sent until it is
    /// enabled, so it is not owed).
    pub async fn owed(&self, which: impl Fn(&Value) -> bool) -> Vec<String> {
        let list = self.get("/v1/endpoints", Some(ADMIN)).await.ok(200);
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|e| which(e))
            .filter(|e| e["enabled"] == true && e["active"] == true)
            .filter(|e| e["backlog"].as_i64() != Some(0))
            .map(|e| format!("{}: {}", e["id"], e["backlog"]))
            .collect()
    }

    /// Waits until no enabled endpoint has a delivery pending: everything the service will
    /// send on its own has been sent.
    pub async fn settled(&self) {
        self.settled_within(DEADLINE).await;
    }

    /// `settled`, with a limit of its own (for a large backlog).
    pub async fn settled_within(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let owed = self.owed(|_| true).await;
            if owed.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still owed after {limit:?}: {owed:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
                out.push(json!({
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

    /// One page of the pull feed, with each body as its exact bytes.
    pub async fn feed_page(&self, query: &str) -> FeedPage {
        let answer = self
            .get(&format!("/v1/notifications?{query}"), Some(REVIEW))
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

/// The part of `GET /v1/transactions/{tguid}` that tests compare, with each notification body
/// kept as its raw bytes (a `serde_json::Value` would sort its keys).
#[derive(Debug, Deserialize)]
pub struct Detail {
    pub state: String,
    pub notifications: Vec<RecordedNotification>,
}

#[derive(Debug, Deserialize)]
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
