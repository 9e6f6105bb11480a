//! The server's limits and error bodies on a router of test routes (one that holds its slot
//! until told, one that answers with a body's length), served on port 0 and spoken to as
//! raw HTTP/1.1, so that a test can stop half-way through a body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use super::*;

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(router: Router, limits: ApiSettings, auth: Auth) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            serve(listener, router, &limits, Arc::new(auth), async {
                let _ = stopped.await;
            })
            .await
        });
        Self { addr, stop, served }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.served.await.unwrap().unwrap();
    }

    /// Sends `request` whole on a new connection and reads the answer to its end.
    async fn exchange(&self, request: &str) -> String {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        read_to_end(&mut stream).await
    }

    /// Opens a connection, sends a head that announces `length` bytes and asks for
    /// `100 Continue`, and waits for it: from then on the server is reading the body.
    async fn start_slow_body(&self, path: &str, length: usize) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("100 Continue in time")
                .unwrap();
            assert!(n > 0, "closed before 100 Continue");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 100"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        stream.write_all(b"{").await.unwrap();
        stream
    }
}

/// Reads until the server closes the connection (a reset too: what came before it counts).
async fn read_to_end(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the server answers and closes in time");
    String::from_utf8_lossy(&got).into_owned()
}

fn post_request(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// The status code and the body (the part after the head).
fn parts(answer: &str) -> (u16, &str) {
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body)
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split_once("\r\n\r\n")?.0;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Asserts the answer is `status` with `{"error": code, "message": <text>}`.
#[track_caller]
fn assert_error(answer: &str, status: u16, code: &str) -> String {
    let (got, body) = parts(answer);
    assert_eq!(got, status, "{answer}");
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(json["error"], code, "{answer}");
    assert_eq!(json.as_object().unwrap().len(), 2, "{answer}");
    json["message"].as_str().unwrap().to_owned()
}

fn limits(f: impl FnOnce(&mut ApiSettings)) -> ApiSettings {
    let mut limits = ApiSettings::default();
    f(&mut limits);
    limits
}

/// `/echo` answers with the length of the body it got.
fn echo() -> Router {
    Router::new().route(
        "/echo",
        post(|body: axum::body::Body| async move {
            match super::super::request::read_body(body).await {
                Ok(bytes) => bytes.len().to_string().into_response(),
                Err(e) => e.into_response(),
            }
        }),
    )
}

#[derive(serde::Deserialize)]
struct Strict {
    #[allow(dead_code)]
    n: u32,
}

#[tokio::test]
async fn errors_from_the_router_and_from_extractors_get_the_json_error_body() {
    let router = Router::new()
        .route(
            "/plain",
            get(|| async { (StatusCode::BAD_REQUEST, "plain words") }),
        )
        .route("/query", get(|_: Query<Strict>| async { "ok" }))
        .route("/only-post", post(|| async { "ok" }));
    let server = Server::start(router, ApiSettings::default(), Auth::new(vec![])).await;

    let message = assert_error(
        &server.exchange(&get_request("/plain")).await,
        400,
        "bad_request",
    );
    assert_eq!(message, "plain words");
    assert_error(
        &server.exchange(&get_request("/query?n=x")).await,
        400,
        "bad_request",
    );
    assert_error(
        &server.exchange(&get_request("/nowhere")).await,
        404,
        "not_found",
    );
    let answer = server.exchange(&get_request("/only-post")).await;
    assert_error(&answer, 405, "method_not_allowed");
    assert_eq!(header(&answer, "allow"), Some("POST"), "{answer}");
    // What succeeds is left as it is.
    assert_eq!(
        parts(&server.exchange(&get_request("/query?n=1")).await),
        (200, "ok")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_call_waits_for_a_slot_then_gets_503_and_healthz_never_waits() {
    let entered = Arc::new(Notify::new());
    let e = entered.clone();
    // A call that holds its slot until its deadline.
    let router = Router::new()
        .route(
            "/held",
            get(move || {
                let e = e.clone();
                async move {
                    e.notify_one();
                    std::future::pending::<()>().await;
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let limits = limits(|l| {
        l.max_concurrent_requests = 1;
        l.request_timeout = Duration::from_secs(1);
    });
    let server = Arc::new(Server::start(router, limits, Auth::new(vec![])).await);
    let call = |server: Arc<Server>| {
        tokio::spawn(async move { server.exchange(&get_request("/held")).await })
    };
    let first = call(server.clone());
    entered.notified().await;
    assert_eq!(
        parts(&server.exchange(&get_request("/healthz")).await),
        (200, "ok")
    );

    // Two more: whichever gets the slot when the first one's second is up holds it for its
    // own second, so the other waits its second in vain.
    let (second, third) = (call(server.clone()), call(server.clone()));
    assert_error(&first.await.unwrap(), 408, "request_timeout");
    let mut later = [second.await.unwrap(), third.await.unwrap()];
    later.sort_by_key(|a| parts(a).0);
    assert_error(&later[0], 408, "request_timeout");
    assert_error(&later[1], 503, "overloaded");
    assert_eq!(header(&later[1], "retry-after"), Some("1"));
    Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test]
async fn bodies_still_arriving_hold_no_slot() {
    let limits = limits(|l| {
        l.max_concurrent_requests = 1;
        l.request_timeout = Duration::from_millis(500);
        l.body_read_timeout = Duration::from_secs(30);
    });
    let server = Server::start(echo(), limits, Auth::new(vec![])).await;
    // More slow senders than slots, each one known to be read by the server.
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(server.start_slow_body("/echo", 1000).await);
    }
    // With a slot held by each, this would wait 500 ms and get 503.
    for _ in 0..3 {
        assert_eq!(
            parts(&server.exchange(&post_request("/echo", "{\"a\":1}")).await),
            (200, "7")
        );
    }
    drop(slow);
    server.stop().await;
}

#[tokio::test]
async fn a_body_not_received_within_its_deadline_is_408() {
    let limits = limits(|l| l.body_read_timeout = Duration::from_millis(300));
    let server = Server::start(echo(), limits, Auth::new(vec![])).await;
    let mut slow = server.start_slow_body("/echo", 1000).await;
    let answer = read_to_end(&mut slow).await;
    let message = assert_error(&answer, 408, "request_timeout");
    assert!(message.contains("300 ms"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn bodies_past_the_memory_budget_are_503_and_one_larger_than_it_413() {
    let limits = limits(|l| l.body_memory_budget = 4096);
    let server = Server::start(echo(), limits, Auth::new(vec![])).await;
    let slow = server.start_slow_body("/echo", 3000).await;

    let big = "x".repeat(1500);
    let answer = server.exchange(&post_request("/echo", &big)).await;
    assert_error(&answer, 503, "overloaded");
    assert_eq!(header(&answer, "retry-after"), Some("1"));
    // What still fits is read.
    assert_eq!(
        parts(&server.exchange(&post_request("/echo", "{}")).await),
        (200, "2")
    );
    // More than the whole budget could never fit: 413, not "retry later".
    let answer = server
        .exchange(&post_request("/echo", &"x".repeat(5000)))
        .await;
    assert_error(&answer, 413, "payload_too_large");

    // A sender that goes away gives its share back.
    drop(slow);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = server.exchange(&post_request("/echo", &big)).await;
        if parts(&answer).0 != 503 {
            assert_eq!(parts(&answer), (200, "1500"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the budget was not given back"
        );
        tokio::task::yield_now().await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_body_is_waited_for_only_from_a_caller_with_a_valid_token() {
    let auth = Auth::new(vec![crate::config::ApiToken::new(
        "t-ingest",
        crate::config::Role::Ingest,
        "bo",
    )]);
    let server = Server::start(echo(), ApiSettings::default(), auth).await;
    let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{";
    assert_error(&server.exchange(head).await, 401, "unauthorized");
    let with_token = "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer t-ingest\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(parts(&server.exchange(with_token).await), (200, "2"));
    server.stop().await;
}

#[tokio::test]
async fn large_bodies_sent_slowly_leave_room_for_small_calls() {
    // An eighth of the budget (1 KiB here) is kept for small bodies.
    let limits = limits(|l| l.body_memory_budget = 8192);
    let server = Server::start(echo(), limits, Auth::new(vec![])).await;
    let slow = [
        server.start_slow_body("/echo", 3584).await,
        server.start_slow_body("/echo", 3584).await,
    ];
    let answer = server
        .exchange(&post_request("/echo", &"x".repeat(2000)))
        .await;
    assert_error(&answer, 503, "overloaded");
    let small = format!("{{\"tguid\":\"{}\"}}", "t".repeat(300));
    for _ in 0..3 {
        assert_eq!(
            parts(&server.exchange(&post_request("/echo", &small)).await),
            (200, small.len().to_string().as_str())
        );
    }
    drop(slow);
    server.stop().await;
}
