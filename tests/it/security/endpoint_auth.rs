//! Authentication towards endpoints: an API key on every POST; OAuth 2.0 client credentials
//! (one token request shared by concurrent deliveries, renewal before expiry, one immediate
//! retry after a 401, a clear error that hides the secret); and `block_private_targets`.

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
use serde_json::json;
use tokio::net::TcpListener;

use super::{endpoint, enrolled, first_attempt, header, start};
use crate::harness::{Arrival, Receiver, Reply};

/// A receiver's answer that refuses the bearer tokens in `refused` with 401.
fn refuse_bearer(r: &Arrival, refused: &[&str]) -> Reply {
    match r.bearer() {
        Some(t) if refused.contains(&t) => Reply::status(401),
        _ => Reply::ok(),
    }
}

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// An OAuth 2.0 token server (client credentials).
/// A token request's form fields and its Authorization header.
type TokenRequest = (HashMap<String, String>, Option<String>);

#[derive(Clone)]
struct TokenServer {
    /// Every token request: its form fields and its Authorization header.
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    /// When each token request came.
    times: Arc<Mutex<Vec<Instant>>>,
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
            times: Arc::default(),
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
                        t.times.lock().unwrap().push(Instant::now());
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

#[tokio::test]
async fn an_api_key_endpoint_receives_its_key_header_on_every_post() {
    let rx = Receiver::start().await;
    let app = start(&endpoint(
        &rx.url,
        "auth = { type = \"api_key\", header = \"X-API-Key\", value = \"k-live-123\" }",
    ))
    .await;
    enrolled(&app.api, "ak-1").await;
    enrolled(&app.api, "ak-2").await;
    let got = rx.at_least(2).await;
    for post in &got {
        assert_eq!(header(post, "x-api-key"), "k-live-123");
        assert_eq!(header(post, "authorization"), "");
    }
    app.stop().await;
}

#[tokio::test]
async fn concurrent_oauth2_deliveries_share_one_token_request() {
    let rx = Receiver::start().await;
    let (tokens, token_url) =
        TokenServer::start(Some(3600), Duration::from_millis(300), false).await;
    let app = start(&endpoint(&rx.url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"notifier\", client_secret = \"cs-s3cr3t\", scope = \"notify:write\" }}"),
    ))
    .await;
    for i in 0..20 {
        enrolled(&app.api, &format!("oa-{i}")).await;
    }
    let got = rx.at_least(20).await;
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
    app.stop().await;
}

#[tokio::test]
async fn client_auth_body_sends_the_client_credentials_in_the_form() {
    let rx = Receiver::start().await;
    let (tokens, token_url) = TokenServer::start(Some(3600), Duration::ZERO, false).await;
    let app = start(&endpoint(&rx.url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"notifier\", client_secret = \"cs s3cr3t&=\", client_auth = \"body\" }}"),
    ))
    .await;
    enrolled(&app.api, "body-1").await;
    rx.at_least(1).await;
    let (form, auth) = &tokens.requests()[0];
    assert_eq!(auth, &None);
    assert_eq!(form.get("client_id").map(String::as_str), Some("notifier"));
    assert_eq!(
        form.get("client_secret").map(String::as_str),
        Some("cs s3cr3t&=")
    );
    assert!(!form.contains_key("scope"));
    app.stop().await;
}

#[tokio::test]
async fn after_a_401_the_token_is_replaced_and_the_post_sent_again_at_once() {
    let rx = Receiver::start().await;
    rx.script(|r| refuse_bearer(r, &["tok-1"]));
    let (tokens, token_url) = TokenServer::start(Some(3600), Duration::ZERO, false).await;
    let app = start(&endpoint(&rx.url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"c\", client_secret = \"s\" }}"),
    ))
    .await;
    enrolled(&app.api, "re-1").await;
    let got = rx.at_least(2).await;
    assert_eq!(header(&got[0], "authorization"), "Bearer tok-1");
    assert_eq!(header(&got[1], "authorization"), "Bearer tok-2");
    assert_eq!(header(&got[0], "webhook-id"), header(&got[1], "webhook-id"));
    assert_eq!(tokens.requests().len(), 2);
    // Both POSTs are one attempt: the resend is immediate, not a retry on the schedule.
    let delivery = first_attempt(&app.api, "re-1").await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["attempts"], 1, "{delivery}");

    // The new token is kept: the next notification needs no token request.
    enrolled(&app.api, "re-2").await;
    let got = rx.at_least(3).await;
    assert_eq!(header(&got[2], "authorization"), "Bearer tok-2");
    assert_eq!(tokens.requests().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_second_401_in_a_row_is_an_ordinary_failed_attempt() {
    let rx = Receiver::start().await;
    rx.script(|r| refuse_bearer(r, &["tok-1", "tok-2"]));
    let (tokens, token_url) = TokenServer::start(Some(3600), Duration::ZERO, false).await;
    let app = start(&endpoint(&rx.url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"c\", client_secret = \"s\" }}"),
    ))
    .await;
    enrolled(&app.api, "re401-1").await;
    let delivery = first_attempt(&app.api, "re401-1").await;
    assert_eq!(delivery["status"], "pending", "{delivery}");
    assert_eq!(delivery["last_status"], 401, "{delivery}");
    assert_eq!(rx.all().len(), 2, "exactly one immediate retry");
    assert_eq!(tokens.requests().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_token_is_used_until_its_renewal_time_then_fetched_again() {
    // A 2 s token is renewed 0.2 s early (a tenth of its life; the exact margin is the unit
    // test `a_token_is_renewed_a_tenth_of_its_lifetime_early_at_most_a_minute`). Notifications
    // go out one after the other until one carries a new token.
    let rx = Receiver::start().await;
    let (tokens, token_url) = TokenServer::start(Some(2), Duration::ZERO, false).await;
    let app = start(&endpoint(&rx.url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"c\", client_secret = \"s\" }}"),
    ))
    .await;
    let mut sent = 0;
    loop {
        sent += 1;
        assert!(sent <= 2000, "no new token after {sent} notifications");
        enrolled(&app.api, &format!("exp-{sent}")).await;
        let got = rx.at_least(sent).await;
        match header(&got[sent - 1], "authorization") {
            "Bearer tok-1" => {}
            "Bearer tok-2" => break,
            other => panic!("notification {sent} carried {other:?}"),
        }
    }
    assert!(sent >= 2, "the first token was used at least once");
    let times = tokens.times.lock().unwrap().clone();
    assert_eq!(times.len(), 2, "one request per token");
    let kept = times[1] - times[0];
    assert!(
        kept >= Duration::from_millis(1800),
        "renewed after {kept:?}, before its renewal time"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_token_url_slower_than_the_request_timeout_fails_the_attempt_and_nothing_is_sent() {
    let rx = Receiver::start().await;
    // The token server takes 5 s to answer; the endpoint gives up after 300 ms.
    let (tokens, token_url) = TokenServer::start(Some(3600), Duration::from_secs(5), false).await;
    let config = endpoint(&rx.url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"c\", client_secret = \"cs-s3cr3t\" }}"),
    )
    .replace("request_timeout = \"5s\"", "request_timeout = \"300ms\"");
    let app = start(&config).await;
    enrolled(&app.api, "slow-token-1").await;
    let delivery = first_attempt(&app.api, "slow-token-1").await;
    assert_eq!(delivery["status"], "pending", "{delivery}");
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.contains("oauth2 token"), "{error}");
    assert!(error.contains("token URL"), "{error}");
    assert!(error.to_lowercase().contains("timed out"), "{error}");
    assert!(!error.contains("cs-s3cr3t"), "{error}");
    assert_eq!(tokens.requests().len(), 1);
    assert!(rx.all().is_empty(), "nothing is sent without a token");
    app.stop().await;
}

#[tokio::test]
async fn when_no_token_can_be_had_nothing_is_sent_and_the_error_hides_the_secret() {
    let rx = Receiver::start().await;
    let (_tokens, token_url) = TokenServer::start(Some(3600), Duration::ZERO, true).await;
    let app = start(&endpoint(&rx.url,
        &format!("auth = {{ type = \"oauth2\", token_url = \"{token_url}\", client_id = \"c\", client_secret = \"cs-s3cr3t\" }}"),
    ))
    .await;
    enrolled(&app.api, "nt-1").await;
    let delivery = first_attempt(&app.api, "nt-1").await;
    assert_eq!(delivery["status"], "pending", "{delivery}");
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.contains("oauth2 token"), "{error}");
    assert!(error.contains("invalid_client"), "{error}");
    assert!(!error.contains("cs-s3cr3t"), "{error}");
    assert!(rx.all().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn block_private_targets_refuses_a_name_that_resolves_to_loopback() {
    let rx = Receiver::start().await;
    let port = reqwest::Url::parse(&rx.url).unwrap().port().unwrap();
    let config = format!(
        "[delivery]\nblock_private_targets = true\nretry_schedule = [\"5s\"]\n[[endpoints]]\nid = \"rx\"\nurl = \"http://localhost:{port}/notify\"\n"
    );
    let app = start(&config).await;
    enrolled(&app.api, "bp-1").await;
    let delivery = first_attempt(&app.api, "bp-1").await;
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.contains("block_private_targets"), "{error}");
    assert!(rx.all().is_empty());
    app.stop().await;

    // The same endpoint without the guard is reached.
    let app = start(&config.replace(
        "block_private_targets = true",
        "block_private_targets = false",
    ))
    .await;
    enrolled(&app.api, "bp-2").await;
    rx.at_least(1).await;
    app.stop().await;
}
