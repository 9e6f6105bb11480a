//! The HTTP server around the API router, hardened against slow and greedy clients: a
//! header-read timeout (which also ends idle keep-alive connections), bodies read ahead under
//! their own deadline and memory budget (`intake`), a deadline per call and a bound on the
//! calls handled at once (`[api]` settings), and the JSON error body on every error.
//! axum's own `serve` has no header-read timeout, so connections are served here with hyper
//! directly.

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

use http_body_util::BodyExt;

use super::intake::Intake;
use super::{ApiError, Auth};
use crate::config::ApiSettings;
use crate::telemetry::{self, Rejected};

/// Adds, to the routes of `router`, the body intake and then the concurrency bound with the
/// per-call deadline; and to everything it answers, the JSON error body.
///
/// A call's body is read first (`Intake`: a valid token, `body_read_timeout`,
/// `body_memory_budget`), and only then does the call wait up to `request_timeout` for a slot
/// under `max_concurrent_requests` (then 503 with `Retry-After`) and get `request_timeout`
/// from then on to be answered (then 408). So a slow sender never holds a slot.
/// The probes (`ops::is_probe`) skip the bound, so that they still answer when the API is
/// saturated.
pub fn harden(router: Router, limits: &ApiSettings, auth: Arc<Auth>) -> Router {
    let slots = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    let deadline = limits.request_timeout;
    let intake = Arc::new(Intake::new(limits, auth));
    // The last route layer added runs first.
    router
        .route_layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let slots = slots.clone();
                async move { bounded(slots, deadline, req, next).await }
            },
        ))
        .route_layer(axum::middleware::from_fn(
            move |req: Request, next: Next| intake.clone().read_ahead(req, next),
        ))
        .layer(axum::middleware::from_fn(json_errors))
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
        format!("the call took longer than {} ms", limit.as_millis()),
    )
    .into_response()
}

/// Whatever answers an error without the `{"error","message"}` body (axum's own rejections,
/// a future extractor's) gets it here, with the text it had as the message. The headers that
/// explain the status (`Allow` on a 405, `Retry-After`) are kept.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match http_body_util::Limited::new(body, 4096).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut json = ApiError::new(status, error_code(status), message).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.get(&name) {
            json.headers_mut().insert(name, value.clone());
        }
    }
    json
}

/// The error code of a status, for answers that came without one.
fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_request",
        431 => "headers_too_large",
        503 => "unavailable",
        400..=499 => "bad_request",
        _ => "internal",
    }
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
    auth: Arc<Auth>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let service = TowerToHyperService::new(harden(router, limits, auth));
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

#[cfg(test)]
mod tests;
