//! Hostile clients: a request head or body that never arrives, and bodies trickled in by
//! more senders than the concurrency limit admits. (The limit itself, and the body memory
//! budget, are tested on a router of test routes in `api::serve::tests`.)

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::start;
use crate::harness::{ADMIN, DEADLINE};

/// Writes `sent` on a fresh connection and reads until the server closes it; returns what came
/// back and how long the server kept the connection. Panics when the server keeps it past
/// `DEADLINE` (only a guard against hanging: the server's own timeout decides).
async fn raw_exchange(base: &str, sent: &[u8]) -> (String, Duration) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(sent).await.unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open for {DEADLINE:?}: {}",
        String::from_utf8_lossy(&got)
    );
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = start("[api]\nheader_read_timeout = \"300ms\"\n").await;
    // Half a request head, then silence (slow loris): the server closes the connection.
    let (_, held) = raw_exchange(
        &app.api.base,
        b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    assert!(held >= Duration::from_millis(250), "closed after {held:?}");
    // A connection that sends nothing at all goes the same way.
    let (_, held) = raw_exchange(&app.api.base, b"").await;
    assert!(held >= Duration::from_millis(250), "closed after {held:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_and_changes_nothing() {
    let app = start("[api]\nbody_read_timeout = \"400ms\"\n").await;
    let head = b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tguid\":\"slow-1\",";
    let (answer, held) = raw_exchange(&app.api.base, head).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert!(
        held >= Duration::from_millis(350),
        "answered after {held:?}"
    );
    assert_eq!(
        app.api
            .get("/v1/transactions/slow-1", Some(ADMIN))
            .await
            .status,
        404
    );
    app.stop().await;
}

/// Sends a request head that announces a body of `length` bytes and asks for `100 Continue`,
/// waits for it (the service is reading the body from then on), sends one byte and stalls.
async fn slow_sender(base: &str, length: usize) -> tokio::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
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

#[tokio::test]
async fn senders_trickling_their_bodies_hold_no_slot_and_other_calls_are_answered() {
    let app = start(
        "[api]\nmax_concurrent_requests = 2\nrequest_timeout = \"1s\"\nbody_read_timeout = \"30s\"\n",
    )
    .await;
    // Four times as many slow senders as slots, every one of them being read.
    let mut slow = Vec::new();
    for _ in 0..8 {
        slow.push(slow_sender(&app.api.base, 1000).await);
    }
    // Were a slot held by each, these would wait their second and get 503.
    for i in 0..5 {
        app.api
            .register(&format!("tg-beside-slow-{i}"), "SEARCH")
            .await
            .ok(201);
    }
    assert_eq!(
        app.api.get("/v1/transactions", Some(ADMIN)).await.status,
        200
    );
    drop(slow);
    app.stop().await;
}
