//! Security (issue 4), end to end against real local servers on 127.0.0.1:0:
//!
//! - signatures during a secret rotation verify with either secret;
//! - API-key and OAuth 2.0 client-credentials endpoints get authenticated POSTs (one shared
//!   token request, renewal on expiry, one immediate retry after a 401);
//! - `block_private_targets` refuses a name that resolves to loopback;
//! - every API route refuses a missing or wrong token (401) and a role without the right (403)
//!   and changes nothing; reviews and treatments record who decided;
//! - hostile input: header and request timeouts, the concurrency limit;
//! - `fuzz`: proptest over request parsing, the API and the state machine.

#[path = "security/fuzz.rs"]
mod fuzz;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use gbds_notifier::receiver::verify;

const NEW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_dGhlLW9sZC1zZWNyZXQtb2YtdGhlLWVuZHBvaW50";

// ---- the service in-process ----

struct Service {
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Starts `gbds_notifier::run` on 127.0.0.1:0 with its own database and `config` (TOML,
/// without `listen` and `[store]`).
async fn start(config: &str) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let path = dir.path().join("c.toml");
    let db = dir.path().join("n.db");
    std::fs::write(
        &path,
        format!(
            "listen = \"{addr}\"\n[store]\nsqlite_path = {:?}\n{config}",
            db.display().to_string()
        ),
    )
    .unwrap();
    let settings = gbds_notifier::config::load(Some(&path), |_| None)
        .unwrap_or_else(|e| panic!("test config refused: {e}"));
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(gbds_notifier::run(settings, listener, async move {
        let _ = stopped.await;
    }));
    Service {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        stop: Some(stop),
        running: Some(running),
        _dir: dir,
    }
}

impl Service {
    /// One call as admin (when tokens are configured); the status and JSON (or Null).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, body, Some(ADMIN)).await
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut r = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn detail(&self, tguid: &str) -> Value {
        let (status, v) = self
            .call("GET", &format!("/v1/transactions/{tguid}"), None)
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Registers an ENROLL transaction and reports it ENROLLED: one notification.
    async fn enrolled(&self, tguid: &str) {
        let (s, v) = self
            .call(
                "POST",
                "/v1/transactions",
                Some(json!({"tguid": tguid, "operation": "ENROLL"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = self
            .call(
                "POST",
                &format!("/v1/transactions/{tguid}/events"),
                Some(json!({"type": "ENROLLED"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    /// The first delivery of the transaction's first notification, once it has been tried.
    async fn first_delivery(&self, tguid: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = self.detail(tguid).await;
            let delivery = d["notifications"][0]["deliveries"][0].clone();
            if delivery["attempts"].as_i64().unwrap_or(0) > 0 || delivery["status"] != "pending" {
                return delivery;
            }
            assert!(Instant::now() < deadline, "never tried: {d}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            running.await.unwrap().unwrap();
        }
    }
}

// ---- a receiver that records POSTs and checks their Authorization ----

#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Bearer tokens that get 401.
    refused_tokens: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let app = Router::new()
            .fallback(post(
                |State(r): State<Receiver>, headers: HeaderMap, body: Bytes| async move {
                    let bearer = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .map(str::to_owned);
                    r.got.lock().unwrap().push(Received { headers, body });
                    match bearer {
                        Some(t) if r.refused_tokens.lock().unwrap().contains(&t) => {
                            StatusCode::UNAUTHORIZED
                        }
                        _ => StatusCode::OK,
                    }
                },
            ))
            .with_state(r.clone());
        (r, serve(app).await)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.got().len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} POSTs arrived",
                self.got().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.got()
    }
}

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

// ---- an OAuth 2.0 token server (client credentials) ----

/// A token request's form fields and its Authorization header.
type TokenRequest = (HashMap<String, String>, Option<String>);

#[derive(Clone)]
struct TokenServer {
    /// Every token request: its form fields and its Authorization header.
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    issued: Arc<AtomicU64>,
    expires_in: Option<u64>,
    /// How long each answer takes (to make concurrent deliveries overlap).
    delay: Duration,
    /// Answer 400 invalid_client instead.
    refuse: bool,
}

impl TokenServer {
    async fn start(
        expires_in: Option<u64>,
        delay: Duration,
        refuse: bool,
    ) -> (TokenServer, String) {
        let t = TokenServer {
            requests: Arc::default(),
            issued: Arc::default(),
            expires_in,
            delay,
            refuse,
        };
        let app = Router::new()
            .route(
                "/token",
                post(
                    |State(t): State<TokenServer>, headers: HeaderMap, body: Bytes| async move {
                        let form: HashMap<String, String> =
                            form_urlencoded::parse(&body).into_owned().collect();
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        t.requests.lock().unwrap().push((form, auth));
                        tokio::time::sleep(t.delay).await;
                        if t.refuse {
                            return (
                                StatusCode::BAD_REQUEST,
                                json!({"error": "invalid_client", "error_description": "no"})
                                    .to_string(),
                            );
                        }
                        let n = t.issued.fetch_add(1, Ordering::SeqCst) + 1;
                        let mut answer =
                            json!({"access_token": format!("tok-{n}"), "token_type": "Bearer"});
                        if let Some(e) = t.expires_in {
                            answer["expires_in"] = json!(e);
                        }
                        (StatusCode::OK, answer.to_string())
                    },
                ),
            )
            .with_state(t.clone());
        let base = serve(app).await;
        (t, format!("{base}/token"))
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn endpoint(url: &str, extra: &str) -> String {
    format!("[delivery]\nretry_schedule = [\"5s\"]\nrequest_timeout = \"5s\"\nlease = \"10s\"\n[[endpoints]]\nid = \"rx\"\nurl = \"{url}/notify\"\n{extra}\n")
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

// ---- 1. signatures during a secret rotation ----

#[tokio::test]
async fn during_a_rotation_receivers_holding_either_secret_verify_every_notification() {
    let (rx, url) = Receiver::start().await;
    let svc = start(&endpoint(
        &url,
        &format!("secrets = [\"{NEW_SECRET}\", \"{OLD_SECRET}\"]"),
    ))
    .await;
    svc.enrolled("rot-1").await;
    let got = rx.wait_for(1).await;
    let post = &got[0];
    assert_eq!(
        &post.body[..],
        br#"{"operation":"ENROLL","tguid":"rot-1","status":"ENROLLED"}"#
    );
    let sigs: Vec<&str> = header(post, "webhook-signature").split(' ').collect();
    assert_eq!(sigs.len(), 2, "{sigs:?}");
    assert!(sigs.iter().all(|s| s.starts_with("v1,")));

    // A receiver still on the old secret and one already on the new both verify the
    // Standard Webhooks signature; X-Signature follows the newest secret.
    let with_new = verify(NEW_SECRET, &post.headers, &post.body);
    assert_eq!(
        (with_new.standard, with_new.plain),
        (Some(true), Some(true))
    );
    let with_old = verify(OLD_SECRET, &post.headers, &post.body);
    assert_eq!(
        (with_old.standard, with_old.plain),
        (Some(true), Some(false))
    );
    let stranger = verify("whsec_c29tZW9uZS1lbHNl", &post.headers, &post.body);
    assert_eq!(stranger.standard, Some(false));
    svc.stop().await;
}

#[tokio::test]
async fn a_single_secret_still_sends_one_signature_and_a_matching_x_signature() {
    let (rx, url) = Receiver::start().await;
    let svc = start(&endpoint(&url, &format!("secret = \"{NEW_SECRET}\""))).await;
    svc.enrolled("one-1").await;
    let post = &rx.wait_for(1).await[0];
    assert_eq!(header(post, "webhook-signature").split(' ').count(), 1);
    let v = verify(NEW_SECRET, &post.headers, &post.body);
    assert_eq!((v.standard, v.plain), (Some(true), Some(true)));
    svc.stop().await;
}

// ---- 2. authentication towards endpoints ----

#[tokio::test]
async fn an_api_key_endpoint_receives_its_key_header_on_every_post() {
    let (rx, url) = Receiver::start().await;
    let svc = start(&endpoint(
        &url,
        "auth = { type = \"api_key\", header = \"X-API-Key\", value = \"k-live-123\" }",
    ))
    .await;
    svc.enrolled("ak-1").await;
    svc.enrolled("ak-2").await;
    let got = rx.wait_for(2).await;
    for post in &got {
        assert_eq!(header(post, "x-api-key"), "k-live-123");
        assert_eq!(header(post, "authorization"), "");
    }
    svc.stop().await;
}

#[tokio::test]
async fn concurrent_oauth2_deliveries_share_one_token_request() {
    let (rx, url) = Receiver::start().await;
    let (tokens, token_url) =
        TokenServer::start(Some(3600), Duration::from_millis(300), false).await;
    let svc = start(&endpoint(
        &url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"notifier\", client_secret = \"cs-s3cr3t\", scope = \"notify:write\" }}"),
    ))
    .await;
    for i in 0..20 {
        svc.enrolled(&format!("oa-{i}")).await;
    }
    let got = rx.wait_for(20).await;
    assert!(got
        .iter()
        .all(|p| header(p, "authorization") == "Bearer tok-1"));
    let requests = tokens.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");

    // RFC 6749 §4.4 client credentials; the client authenticates with HTTP Basic.
    let (form, auth) = &requests[0];
    assert_eq!(
        form.get("grant_type").map(String::as_str),
        Some("client_credentials")
    );
    assert_eq!(form.get("scope").map(String::as_str), Some("notify:write"));
    assert!(!form.contains_key("client_secret"));
    let basic = auth.as_deref().unwrap().strip_prefix("Basic ").unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic)
        .unwrap();
    assert_eq!(decoded, b"notifier:cs-s3cr3t");
    svc.stop().await;
}

#[tokio::test]
async fn client_auth_body_sends_the_client_credentials_in_the_form() {
    let (rx, url) = Receiver::start().await;
    let (tokens, token_url) = TokenServer::start(Some(3600), Duration::ZERO, false).await;
    let svc = start(&endpoint(
        &url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"notifier\", client_secret = \"cs s3cr3t&=\", client_auth = \"body\" }}"),
    ))
    .await;
    svc.enrolled("body-1").await;
    rx.wait_for(1).await;
    let (form, auth) = &tokens.requests()[0];
    assert_eq!(auth, &None);
    assert_eq!(form.get("client_id").map(String::as_str), Some("notifier"));
    assert_eq!(
        form.get("client_secret").map(String::as_str),
        Some("cs s3cr3t&=")
    );
    assert!(!form.contains_key("scope"));
    svc.stop().await;
}

#[tokio::test]
async fn after_a_401_the_token_is_replaced_and_the_post_sent_again_at_once() {
    let (rx, url) = Receiver::start().await;
    rx.refused_tokens.lock().unwrap().push("tok-1".into());
    let (tokens, token_url) = TokenServer::start(Some(3600), Duration::ZERO, false).await;
    // A failed attempt would wait 5 s for its retry: arriving sooner proves the immediate one.
    let svc = start(&endpoint(
        &url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"c\", client_secret = \"s\" }}"),
    ))
    .await;
    let started = Instant::now();
    svc.enrolled("re-1").await;
    let got = rx.wait_for(2).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(header(&got[0], "authorization"), "Bearer tok-1");
    assert_eq!(header(&got[1], "authorization"), "Bearer tok-2");
    assert_eq!(header(&got[0], "webhook-id"), header(&got[1], "webhook-id"));
    assert_eq!(tokens.requests().len(), 2);
    let delivery = svc.first_delivery("re-1").await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["attempts"], 1, "{delivery}");

    // The new token is kept: the next notification needs no token request.
    svc.enrolled("re-2").await;
    let got = rx.wait_for(3).await;
    assert_eq!(header(&got[2], "authorization"), "Bearer tok-2");
    assert_eq!(tokens.requests().len(), 2);
    svc.stop().await;
}

#[tokio::test]
async fn a_second_401_in_a_row_is_an_ordinary_failed_attempt() {
    let (rx, url) = Receiver::start().await;
    rx.refused_tokens
        .lock()
        .unwrap()
        .extend(["tok-1".to_owned(), "tok-2".to_owned()]);
    let (tokens, token_url) = TokenServer::start(Some(3600), Duration::ZERO, false).await;
    let svc = start(&endpoint(
        &url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"c\", client_secret = \"s\" }}"),
    ))
    .await;
    svc.enrolled("re401-1").await;
    let delivery = svc.first_delivery("re401-1").await;
    assert_eq!(delivery["status"], "pending", "{delivery}");
    assert_eq!(delivery["last_status"], 401, "{delivery}");
    assert_eq!(rx.got().len(), 2, "exactly one immediate retry");
    assert_eq!(tokens.requests().len(), 2);
    svc.stop().await;
}

#[tokio::test]
async fn a_token_is_fetched_again_shortly_before_it_expires() {
    let (rx, url) = Receiver::start().await;
    let (tokens, token_url) = TokenServer::start(Some(1), Duration::ZERO, false).await;
    let svc = start(&endpoint(
        &url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"c\", client_secret = \"s\" }}"),
    ))
    .await;
    svc.enrolled("exp-1").await;
    rx.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    svc.enrolled("exp-2").await;
    let got = rx.wait_for(2).await;
    assert_eq!(header(&got[0], "authorization"), "Bearer tok-1");
    assert_eq!(header(&got[1], "authorization"), "Bearer tok-2");
    assert_eq!(tokens.requests().len(), 2);
    svc.stop().await;
}

#[tokio::test]
async fn when_no_token_can_be_had_nothing_is_sent_and_the_error_hides_the_secret() {
    let (rx, url) = Receiver::start().await;
    let (_tokens, token_url) = TokenServer::start(Some(3600), Duration::ZERO, true).await;
    let svc = start(&endpoint(
        &url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"c\", client_secret = \"cs-s3cr3t\" }}"),
    ))
    .await;
    svc.enrolled("nt-1").await;
    let delivery = svc.first_delivery("nt-1").await;
    assert_eq!(delivery["status"], "pending", "{delivery}");
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.contains("oauth2 token"), "{error}");
    assert!(error.contains("invalid_client"), "{error}");
    assert!(!error.contains("cs-s3cr3t"), "{error}");
    assert!(rx.got().is_empty());
    svc.stop().await;
}

// ---- 4b. block_private_targets ----

#[tokio::test]
async fn block_private_targets_refuses_a_name_that_resolves_to_loopback() {
    let (rx, url) = Receiver::start().await;
    let port = url.rsplit(':').next().unwrap();
    let config = format!(
        "[delivery]\nblock_private_targets = true\nretry_schedule = [\"5s\"]\n[[endpoints]]\nid = \"rx\"\nurl = \"http://localhost:{port}/notify\"\n"
    );
    let svc = start(&config).await;
    svc.enrolled("bp-1").await;
    let delivery = svc.first_delivery("bp-1").await;
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.contains("block_private_targets"), "{error}");
    assert!(rx.got().is_empty());
    svc.stop().await;

    // The same endpoint without the guard is reached.
    let svc = start(&config.replace(
        "block_private_targets = true",
        "block_private_targets = false",
    ))
    .await;
    svc.enrolled("bp-2").await;
    rx.wait_for(1).await;
    svc.stop().await;
}

// ---- 3. API authentication: every route, every role ----

const INGEST: &str = "t-ingest";
const REVIEW: &str = "t-review";
const ADMIN: &str = "t-admin";

/// Ingest as a token, review as its SHA-256 (`token_sha256`), admin as a token.
fn tokens_config() -> String {
    use sha2::Digest;
    let review_sha = hex::encode(sha2::Sha256::digest(REVIEW.as_bytes()));
    format!(
        "[api]\ntokens = [\n  {{ token = \"{INGEST}\", role = \"ingest\", name = \"backoffice\" }},\n  {{ token_sha256 = \"{review_sha}\", role = \"review\", name = \"mir-desk\" }},\n  {{ token = \"{ADMIN}\", role = \"admin\" }},\n]\n"
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    Nobody,
    Stranger,
    Ingest,
    Review,
    Admin,
}

impl Caller {
    fn token(self) -> Option<&'static str> {
        match self {
            Caller::Nobody => None,
            Caller::Stranger => Some("t-nope"),
            Caller::Ingest => Some(INGEST),
            Caller::Review => Some(REVIEW),
            Caller::Admin => Some(ADMIN),
        }
    }
}

/// Everything a call could change: every transaction with its history, and what was sent;
/// taken once no delivery is left pending, so that earlier calls have settled.
async fn world(svc: &Service, rx: &Receiver) -> (Value, usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, list) = svc.call("GET", "/v1/transactions?limit=1000", None).await;
        assert_eq!(s, 200);
        let mut all = vec![];
        for item in list["items"].as_array().unwrap() {
            let tguid = item["tguid"].as_str().unwrap();
            all.push(svc.detail(tguid).await);
        }
        let all = Value::Array(all);
        if !all.to_string().contains("\"status\":\"pending\"") {
            return (all, rx.got().len());
        }
        assert!(Instant::now() < deadline, "deliveries never settled: {all}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_token_401_and_a_role_without_the_right_403() {
    let (rx, url) = Receiver::start().await;
    let svc = start(&format!("{}{}", tokens_config(), endpoint(&url, ""))).await;
    let admin = |m: &'static str, p: String, b: Value| {
        let svc = &svc;
        async move { svc.call_with(m, &p, Some(b), Some(ADMIN)).await }
    };
    for (tguid, event) in [("tx-pend", "PENDING"), ("tx-exc", "EXCEPTION")] {
        assert_eq!(
            admin(
                "POST",
                "/v1/transactions".into(),
                json!({"tguid": tguid, "operation": "ENROLL"})
            )
            .await
            .0,
            201
        );
        assert_eq!(
            admin(
                "POST",
                format!("/v1/transactions/{tguid}/events"),
                json!({"type": event})
            )
            .await
            .0,
            200
        );
    }
    rx.wait_for(2).await;

    use Caller::*;
    let ingest_only = [Ingest, Admin];
    let review_only = [Review, Admin];
    let anyone = [Ingest, Review, Admin];
    // (method, path, body, who may call it)
    let routes: Vec<(&str, &str, Option<Value>, &[Caller])> = vec![
        (
            "POST",
            "/v1/transactions",
            Some(json!({"tguid": "NEW", "operation": "ENROLL"})),
            &ingest_only,
        ),
        (
            "POST",
            "/v1/transactions/tx-pend/events",
            Some(json!({"type": "REVERSE_LATENT_MATCH", "uguid": "u-1"})),
            &ingest_only,
        ),
        (
            "POST",
            "/v1/transactions/tx-pend/review",
            Some(json!({"decision": "REJECT"})),
            &review_only,
        ),
        (
            "POST",
            "/v1/transactions/tx-exc/treatment",
            Some(json!({"treatment": "RECOLLECT"})),
            &review_only,
        ),
        ("GET", "/v1/transactions/tx-pend", None, &anyone),
        ("GET", "/v1/transactions?state=PENDING", None, &anyone),
    ];
    let mut n = 0;
    for (method, path, body, allowed) in &routes {
        // Refusals first, while the state they would change is still there.
        for caller in [Nobody, Stranger, Ingest, Review, Admin] {
            if allowed.contains(&caller) {
                continue;
            }
            n += 1;
            let body = body.clone().map(|b| {
                let text = b.to_string().replace("NEW", &format!("new-{n}"));
                serde_json::from_str(&text).unwrap()
            });
            let before = world(&svc, &rx).await;
            let (status, answer) = svc.call_with(method, path, body, caller.token()).await;
            let expected = if matches!(caller, Nobody | Stranger) {
                401
            } else {
                403
            };
            assert_eq!(status, expected, "{method} {path} as {caller:?}: {answer}");
            assert_eq!(
                answer["error"],
                if expected == 401 {
                    "unauthorized"
                } else {
                    "forbidden"
                },
                "{answer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                world(&svc, &rx).await,
                before,
                "{method} {path} as {caller:?} changed something"
            );
        }
        for caller in allowed.iter() {
            n += 1;
            let body = body.clone().map(|b| {
                let text = b.to_string().replace("NEW", &format!("new-{n}"));
                serde_json::from_str(&text).unwrap()
            });
            let (status, answer) = svc.call_with(method, path, body, caller.token()).await;
            // Admitted: whatever the state says (200, 201, or 409 for a second decision).
            assert!(
                [200, 201, 409].contains(&status),
                "{method} {path} as {caller:?}: {status} {answer}"
            );
        }
    }
    // Liveness needs no token.
    assert_eq!(svc.call_with("GET", "/healthz", None, None).await.0, 200);
    svc.stop().await;
}

#[tokio::test]
async fn every_review_and_treatment_records_who_decided() {
    let (_rx, url) = Receiver::start().await;
    let svc = start(&format!("{}{}", tokens_config(), endpoint(&url, ""))).await;
    let call = |t: &'static str, p: String, b: Value| {
        let svc = &svc;
        async move {
            let (s, v) = svc.call_with("POST", &p, Some(b), Some(t)).await;
            assert!(s == 200 || s == 201, "{p}: {s} {v}");
        }
    };
    call(
        INGEST,
        "/v1/transactions".into(),
        json!({"tguid": "who-1", "operation": "ENROLL"}),
    )
    .await;
    call(
        INGEST,
        "/v1/transactions/who-1/events".into(),
        json!({"type": "PENDING"}),
    )
    .await;
    call(
        REVIEW,
        "/v1/transactions/who-1/review".into(),
        json!({"decision": "APPROVE", "reviewer": "alice"}),
    )
    .await;
    call(
        INGEST,
        "/v1/transactions/who-1/events".into(),
        json!({"type": "EXCEPTION"}),
    )
    .await;
    call(
        ADMIN,
        "/v1/transactions/who-1/treatment".into(),
        json!({"treatment": "DIFFERENT_FINGERS"}),
    )
    .await;

    let d = svc.detail("who-1").await;
    let log: Vec<(String, String)> = d["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["to"].as_str().unwrap().to_owned(),
                t["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = |to: &str, actor: &str| (to.to_owned(), actor.to_owned());
    assert_eq!(
        log,
        [
            expect("PROCESSING", "backoffice"),
            expect("PENDING", "backoffice"),
            expect("PROCESSING", "mir-desk (reviewer alice)"),
            expect("EXCEPTION", "backoffice"),
            expect("ENROLLED", "admin"),
        ],
        "{d}"
    );
    svc.stop().await;
}

// ---- 4. hostile input: slow clients and floods ----

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes `sent` on a fresh connection and reads until the server closes it (or `within`
/// passes); returns what came back and how long the server kept the connection.
async fn raw_exchange(base: &str, sent: &[u8], within: Duration) -> (String, Duration) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(sent).await.unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let svc = start("[api]\nheader_read_timeout = \"300ms\"\n").await;
    // Half a request head, then silence (slow loris).
    let (_, held) = raw_exchange(
        &svc.base,
        b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(held < Duration::from_secs(3), "held for {held:?}");
    // A connection that sends nothing at all goes the same way.
    let (_, held) = raw_exchange(&svc.base, b"", Duration::from_secs(5)).await;
    assert!(held < Duration::from_secs(3), "held for {held:?}");
    svc.stop().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_and_changes_nothing() {
    let svc = start("[api]\nrequest_timeout = \"400ms\"\n").await;
    let head = b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tguid\":\"slow-1\",";
    let (answer, held) = raw_exchange(&svc.base, head, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert!(held < Duration::from_secs(3), "held for {held:?}");
    assert_eq!(
        svc.call("GET", "/v1/transactions/slow-1", None).await.0,
        404
    );
    svc.stop().await;
}

#[tokio::test]
async fn past_the_concurrency_limit_calls_wait_for_a_slot_then_get_503() {
    let svc = start("[api]\nmax_concurrent_requests = 1\nrequest_timeout = \"1s\"\n").await;
    let slow_call = |base: String| async move {
        let head = b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{";
        raw_exchange(&base, head, Duration::from_secs(6)).await
    };
    // A slow call holds the only slot for 1 s; a second one waits for it and then holds it
    // for its own second.
    let first = tokio::spawn(slow_call(svc.base.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn(slow_call(svc.base.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A liveness probe is not held up by the limit.
    assert_eq!(svc.call("GET", "/healthz", None).await.0, 200);
    // A third call waits its 1 s for a slot that does not come free in time.
    let started = Instant::now();
    let resp = svc
        .client
        .get(format!("{}/v1/transactions", svc.base))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("\"error\":\"overloaded\""));
    assert!(waited >= Duration::from_millis(900), "{waited:?}");

    let (first, _) = first.await.unwrap();
    let (second, _) = second.await.unwrap();
    assert!(first.starts_with("HTTP/1.1 408"), "{first}");
    assert!(second.starts_with("HTTP/1.1 408"), "{second}");
    // The slot is free again.
    assert_eq!(svc.call("GET", "/v1/transactions", None).await.0, 200);
    svc.stop().await;
}
