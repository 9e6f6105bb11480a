//! Hostile clients: a request head or body that never arrives, and more calls than the
//! concurrency limit.

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
    let app = start("[api]\nrequest_timeout = \"400ms\"\n").await;
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

#[tokio::test]
async fn past_the_concurrency_limit_calls_wait_for_a_slot_then_get_503() {
    let app = start("[api]\nmax_concurrent_requests = 1\nrequest_timeout = \"1s\"\n").await;
    let base = app.api.base.clone();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // A call whose body never comes holds the only slot until its 408, 1 s after it got it;
    // a second such call waits for it and then holds it for its own second. A round counts
    // when a GET made meanwhile waited out its own 1 s without the slot coming free (503);
    // which call got the slot when is up to the scheduler, so rounds repeat until one counts.
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(
            rounds <= 10,
            "in {rounds} rounds no call was held back by the limit"
        );
        let slow = tokio::spawn(raw_exchange_owned(base.clone()));
        let slow_too = tokio::spawn(raw_exchange_owned(base.clone()));
        let started = Instant::now();
        let get = tokio::spawn(client.get(format!("{base}/v1/transactions")).send());
        // A liveness probe made while the GET waits is not held up by the limit: it is
        // answered before the GET's 503, which comes while the slot is still taken.
        let health = app.api.get("/healthz", Some(ADMIN)).await;
        let health_done = Instant::now();
        let resp = get.await.unwrap().unwrap();
        let (got_done, waited) = (Instant::now(), started.elapsed());
        for slow in [slow, slow_too] {
            let (slow_answer, _) = slow.await.unwrap();
            assert!(
                slow_answer.starts_with("HTTP/1.1 408") || slow_answer.starts_with("HTTP/1.1 503"),
                "{slow_answer}"
            );
        }
        assert_eq!(health.status, 200);
        match resp.status().as_u16() {
            200 => continue,
            503 => {
                assert_eq!(resp.headers()["retry-after"], "1");
                assert!(resp
                    .text()
                    .await
                    .unwrap()
                    .contains("\"error\":\"overloaded\""));
                assert!(waited >= Duration::from_millis(900), "{waited:?}");
                assert!(
                    health_done < got_done,
                    "the liveness probe waited for a slot"
                );
                break;
            }
            other => panic!("GET answered {other}"),
        }
    }
    // The slot is free again.
    assert_eq!(
        app.api.get("/v1/transactions", Some(ADMIN)).await.status,
        200
    );
    app.stop().await;
}

/// A POST whose body never comes, on a fresh connection; what came back.
async fn raw_exchange_owned(base: String) -> (String, Duration) {
    let head = b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{";
    raw_exchange(&base, head).await
}
