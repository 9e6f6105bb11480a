//! Hostile clients: a request head or body that never arrives, and more calls than the
//! concurrency limit.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::start;
use crate::harness::ADMIN;

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
    let app = start("[api]\nheader_read_timeout = \"300ms\"\n").await;
    // Half a request head, then silence (slow loris).
    let (_, held) = raw_exchange(
        &app.api.base,
        b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(held < Duration::from_secs(3), "held for {held:?}");
    // A connection that sends nothing at all goes the same way.
    let (_, held) = raw_exchange(&app.api.base, b"", Duration::from_secs(5)).await;
    assert!(held < Duration::from_secs(3), "held for {held:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_and_changes_nothing() {
    let app = start("[api]\nrequest_timeout = \"400ms\"\n").await;
    let head = b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tguid\":\"slow-1\",";
    let (answer, held) = raw_exchange(&app.api.base, head, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert!(held < Duration::from_secs(3), "held for {held:?}");
    assert_eq!(
        app.api
            .get("/v1/transactions/slow-1", Some(ADMIN))
            .await
            .status,
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn past_the_concurrency_limit_calls_wait_for_a_slot_then_get_503() {
    let app = start("[api]\nmax_concurrent_requests = 1\nrequest_timeout = \"1s\"\n").await;
    let slow_call = |base: String| async move {
        let head = b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{";
        raw_exchange(&base, head, Duration::from_secs(6)).await
    };
    // A slow call holds the only slot for 1 s; a second one waits for it and then holds it
    // for its own second.
    let first = tokio::spawn(slow_call(app.api.base.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn(slow_call(app.api.base.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A liveness probe is not held up by the limit.
    assert_eq!(app.api.get("/healthz", Some(ADMIN)).await.status, 200);
    // A third call waits its 1 s for a slot that does not come free in time.
    let started = Instant::now();
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/v1/transactions", app.api.base))
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
    assert_eq!(
        app.api.get("/v1/transactions", Some(ADMIN)).await.status,
        200
    );
    app.stop().await;
}
