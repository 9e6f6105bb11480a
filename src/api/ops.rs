//! Routes for operators' machinery, without a token: `/readyz` (readiness, from
//! [`crate::health`]) and `/metrics` (Prometheus text, from [`crate::telemetry`]); and the
//! middleware that counts every call by route template and status.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::telemetry::{self, EndpointQueue};

/// The exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The paths that skip the API's concurrency bound: a probe must answer when the API is
/// saturated. (`/metrics` reads the store, so it takes a slot like any call.)
pub(super) fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// 200 while the store takes writes and the writer, the dispatcher and (when configured) the
/// consumer run; else 503 `not_ready`, naming every part that is not and why.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    security(()),
    responses(
        (status = 200, description = "Ready: `{\"status\":\"ready\"}`", content_type = "application/json", body = utoipa::openapi::schema::Object),
        (status = 503, description = "Not ready: every part that is not, and why", body = super::error::ErrorBody),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let problems = state.store.health.problems();
    if problems.is_empty() {
        return Json(serde_json::json!({ "status": "ready" })).into_response();
    }
    let message = problems
        .iter()
        .map(|(component, reason)| format!("{}: {reason}", component.as_str()))
        .collect::<Vec<_>>()
        .join("; ");
    let mut response =
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message).into_response();
    // A probe decides by the status; `Retry-After` is for clients, and readiness is no store
    // failure a client should wait out.
    response.headers_mut().remove(header::RETRY_AFTER);
    response
}

/// Every metric; the gauges of the delivery queues are read from the store now (without them,
/// and logged, when it cannot be read).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    security(()),
    responses(
        (status = 200, description = "Every metric, in the Prometheus text format", content_type = "text/plain; version=0.0.4", body = String),
        super::openapi::Open,
    )
)]
async fn metrics(State(state): State<AppState>) -> Response {
    let queues = match state.store.readers.endpoints().await {
        Ok(rows) => {
            let now = now_ms();
            let age = |since: Option<i64>| {
                since.map(|t| Duration::from_millis(now.saturating_sub(t).max(0) as u64))
            };
            Some(
                rows.into_iter()
                    .map(|r| EndpointQueue {
                        enabled: r.enabled,
                        backlog: r.backlog,
                        dead: r.dead,
                        oldest_pending: age(r.oldest_pending_at),
                        failing_for: age(r.failing_since),
                        id: r.id,
                    })
                    .collect::<Vec<_>>(),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the delivery queues cannot be read; their gauges are left out of date");
            None
        }
    };
    let text = telemetry::render(state.store.health.is_ready(), queues.as_deref());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_TEXT),
        )],
        text,
    )
        .into_response()
}

/// Counts the call by its route's template (never the raw path, whose ids would make a series
/// per transaction) and its status.
pub(super) async fn count(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route
        .as_ref()
        .map_or(telemetry::UNMATCHED_ROUTE, MatchedPath::as_str);
    telemetry::http_request(route, response.status().as_u16());
    response
}
