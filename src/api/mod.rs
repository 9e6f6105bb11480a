//! The REST API (CONTRACT §4) on axum: one module per resource, each exporting `router()`,
//! and the OpenAPI document of all of them, registered together.

mod error;
mod feed;
mod intake;
mod openapi;
mod operator;
mod ops;
mod request;
mod serve;
mod transactions;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// Every route with its documentation. A route is added only here or in a resource's
/// `router()`, always through `routes!`, which registers the handler and its `#[utoipa::path]`
/// in one call: the router and `/openapi.json` cannot disagree.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::Frame::openapi())
        .routes(routes!(healthz))
        .routes(routes!(openapi::document_json))
        .merge(transactions::router())
        .merge(operator::router())
        .merge(feed::router())
        .merge(crate::console::router())
        .merge(ops::router())
}

/// The OpenAPI document of every route (`GET /openapi.json` serves it).
pub fn document() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

pub fn router(state: AppState) -> Router {
    let (router, _document) = routes().split_for_parts();
    router
        .fallback(|| async {
            ApiError::not_found("no such route; GET /openapi.json lists every route")
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

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok`: the process answers.
    #[schema(schema_with = health_status)]
    status: &'static str,
}

fn health_status() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["ok"]))
        .build()
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    security(()),
    responses((status = 200, description = "The process answers", body = Health), openapi::Open)
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}
