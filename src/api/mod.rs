//! The REST API (CONTRACT §4) on axum: one module per resource, each exporting `router()`.

mod error;
mod feed;
mod intake;
mod operator;
mod request;
mod serve;
mod transactions;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

pub use error::ApiError;
pub use request::{Auth, MAX_BODY};
pub use serve::{harden, serve};

// What each route makes of its body, as pure functions: the handlers call them after the
// token check, the AMQP inbound consumer checks its messages with them (`json_value` once,
// then the `_of` forms), and the fuzz targets (`fuzz/`) call them directly.
pub use operator::{parse_endpoint, parse_endpoint_change, parse_recover, parse_renotify};
pub use request::{json_value, parse_json, shape};
pub use transactions::{
    event_of, parse_event, parse_registration, parse_review, parse_treatment, registration,
};

use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub auth: Arc<Auth>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .merge(transactions::router())
        .merge(operator::router())
        .merge(feed::router())
        .merge(crate::console::router())
        .fallback(|| async {
            ApiError::not_found("no such route; see the API table in the README")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}
