//! The REST API (CONTRACT §4) on axum: one module per resource, each exporting `router()`.

mod error;
mod feed;
mod operator;
mod ops;
mod request;
mod serve;
mod transactions;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

pub use error::ApiError;
pub use request::{Auth, MAX_BODY};
// The AMQP inbound consumer checks its messages exactly as these routes check their bodies.
pub(crate) use request::parse_json;
pub use serve::{harden, serve};
pub(crate) use transactions::{parse_event, parse_registration};

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
        .merge(ops::router())
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
        // Last, so that it sees every route (it runs after routing, with the matched template).
        .layer(axum::middleware::from_fn(ops::count))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}
