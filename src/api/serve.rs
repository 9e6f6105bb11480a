//! The HTTP server around the API router, hardened against slow and greedy clients: a
//! header-read timeout (which also ends idle keep-alive connections), a deadline per call and
//! a bound on the calls handled at once (`[api]` settings). axum's own `serve` has no
//! header-read timeout, so connections are served here with hyper directly.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::ApiError;
use crate::config::ApiSettings;
use crate::telemetry::{self, Rejected};

/// Adds the concurrency bound and the per-call deadline to `router`. A call past the bound
/// waits up to `request_timeout` for a slot (then 503 with `Retry-After`), and has
/// `request_timeout` from when it gets one to read its body and be answered (then 408).
/// The probes (`ops::is_probe`) skip the bound, so that they still answer when the API is
/// saturated.
pub fn harden(router: Router, limits: &ApiSettings) -> Router {
    let slots = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    let deadline = limits.request_timeout;
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let slots = slots.clone();
            async move { bounded(slots, deadline, req, next).await }
        },
    ))
}

async fn bounded(slots: Arc<Semaphore>, limit: Duration, req: Request, next: Next) -> Response {
    let _slot = if super::ops::is_probe(req.uri().path()) {
        None
    } else {
        match tokio::time::timeout(limit, slots.acquire_owned()).await {
            Ok(slot) => Some(slot.expect("the semaphore is never closed")),
            Err(_) => {
                telemetry::http_rejected(Rejected::Overloaded);
                return overloaded();
            }
        }
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        // The call is abandoned where it stands. A write already handed to the store may
        // still commit: after a 408 the outcome is unknown and the call should be repeated
        // (registrations and events with an event_id are idempotent).
        Err(_) => {
            telemetry::http_rejected(Rejected::Timeout);
            request_timeout(limit)
        }
    }
}

fn request_timeout(limit: Duration) -> Response {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the call took longer than {} ms (a slow body?)",
            limit.as_millis()
        ),
    )
    .into_response()
}

fn overloaded() -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many calls at once; retry shortly",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Serves `router` (hardened) on `listener` until `shutdown` resolves; then stops accepting,
/// lets calls in progress finish and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ApiSettings,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let service = TowerToHyperService::new(harden(router, limits));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Header-read timeouts and clients that vanish end up here.
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A refused or reset connection is the client's business; anything else (out of file
/// descriptors) is logged and waited out, as axum's `serve` does.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
