//! The OpenAPI document (`GET /openapi.json`): its frame (title, the bearer scheme, the error
//! body), the error responses the routes share, and the schemas of values whose rules live in
//! `domain` or `endpoint` (enums, ids, subscription patterns), built from those rules. Each
//! route's own part comes from the `#[utoipa::path]` on its handler and the route files' wire
//! types; `api::document` puts them together from the same registration that builds the router.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder, ResponsesBuilder};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;

use crate::domain::{Decision, Operation, State, Subscriptions, Treatment};

/// The name the document gives the bearer-token scheme; routes that need a token refer to it.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gbds-notifier",
        description = "GBDS notification flows: transactions, their state machine and the \
            notifications it sends, with the operator routes. Every refusal is a 4xx with \
            `{\"error\", \"message\"}`; a refused call changes nothing.",
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerScheme),
    tags(
        (name = "transactions", description = "Register transactions and report what happened to them"),
        (name = "review", description = "MIR reviews and ETR treatments, and the queues they come from"),
        (name = "feed", description = "Every notification in commit order"),
        (name = "operator", description = "Deliveries and endpoints"),
        (name = "service", description = "Liveness, this document and the review console"),
    )
)]
pub struct Frame;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `[api] tokens`; its role (ingest, review, admin) decides \
                         which calls it may make. Without configured tokens the API is open.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Declares a set of refusals a route may answer, each as the error body with its status.
macro_rules! refusals {
    ($($(#[$meta:meta])* $name:ident = [$($status:literal),+ $(,)?];)+) => {$(
        $(#[$meta])*
        pub struct $name;
        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
                error_responses(&[$($status),+])
            }
        }
    )+};
}

refusals! {
    /// A route that needs no token and takes no input: only the server's own limits.
    Open = [408, 503];
    /// A read with a token and a path or query to check.
    Read = [401, 403, 404, 408, 422, 503];
    /// A write with a token and a JSON body.
    Write = [400, 401, 403, 404, 408, 409, 413, 422, 503];
}

/// One response per status, each the error body with what that status means here.
fn error_responses(statuses: &[u16]) -> std::collections::BTreeMap<String, RefOr<Response>> {
    let mut responses = ResponsesBuilder::new();
    for &status in statuses {
        let description = match status {
            400 => "the body is not JSON",
            401 => "no bearer token, or not a valid one",
            403 => "the token's role may not make this call",
            404 => "no such transaction, delivery or endpoint",
            408 => "the call took longer than `[api] request_timeout`",
            409 => "not allowed now (a transition the state does not take, a reused idempotency key, a conflicting registration)",
            413 => "the body is larger than 2 MB",
            422 => "the body, the path or the query does not fit the call",
            503 => "the store cannot take the call now, or too many calls at once; retry after `Retry-After` seconds",
            _ => "refused",
        };
        responses = responses.response(
            status.to_string(),
            ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    ))))
                    .build(),
            ),
        );
    }
    responses.build().responses.into_iter().collect()
}

/// A string that is one of `names`.
pub(super) fn one_of<'a>(names: impl IntoIterator<Item = &'a str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names.into_iter().collect::<Vec<_>>()))
        .build()
}

pub fn operation() -> Object {
    one_of(Operation::ALL.iter().map(|o| o.as_str()))
}
pub fn state() -> Object {
    one_of(State::ALL.iter().map(|s| s.as_str()))
}
pub fn decision() -> Object {
    one_of(Decision::ALL.iter().map(|d| d.as_str()))
}
pub fn treatment() -> Object {
    one_of(Treatment::ALL.iter().map(|t| t.as_str()))
}

pub fn decisions() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new().items(decision()).build()
}
pub fn treatments() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new().items(treatment()).build()
}

/// A string matching `pattern` with `min..=max` characters, or null (a field serde reads as an
/// `Option`: null and absent are the same).
pub(super) fn text_or_null(pattern: &str, min: usize, max: usize) -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .pattern(Some(pattern))
        .min_length(Some(min))
        .max_length(Some(max))
        .build()
}

/// A tguid or uguid, as `domain::ids` checks it: 1–128 printable ASCII characters, no space
/// and no `/`.
pub fn id() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[!-.0-~]{1,128}$"))
        .build()
}

/// A tguid as the path parameter of a route (the handler reads it as a `PathParam`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct TguidPath {
    /// The transaction's global id.
    #[param(schema_with = id)]
    tguid: String,
}

/// An endpoint's id, as `endpoint::check_id` checks it.
pub fn endpoint_id() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9._-]{1,64}$"))
        .build()
}

/// An endpoint's URL, in the grammar the API takes (`endpoint::grammar`).
pub fn url() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::Custom(
            "uri".to_owned(),
        )))
        .pattern(Some(crate::endpoint::grammar::PATTERN))
        .build()
}

pub fn url_or_null() -> Schema {
    or_null(url())
}

/// A signing secret (`endpoint::check_secret`): `whsec_` and canonical base64 of a non-empty
/// key, or any non-empty text that does not start with `whsec_`; or null for none.
pub fn secret_or_null() -> Schema {
    let standard = ObjectBuilder::new().schema_type(Type::String).pattern(Some(
        "^whsec_([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{4}|[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)$",
    ));
    let plain = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some("^(?!whsec_)"));
    Schema::OneOf(
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(standard)
            .item(plain)
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
}

/// A body format (`endpoint::Format`).
pub fn format() -> Object {
    one_of(crate::endpoint::Format::ALL.iter().map(|f| f.as_str()))
}

pub fn format_or_null() -> Schema {
    or_null(format())
}

/// `schema`, or null.
fn or_null(schema: Object) -> Schema {
    Schema::OneOf(
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(schema)
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
}

/// Every subscription pattern `Subscriptions::parse` accepts, found by asking it.
fn subscription_patterns() -> Vec<String> {
    use crate::domain::subscription::{OPERATIONS, STATUSES};
    let operations = std::iter::once("*").chain(OPERATIONS.iter().copied());
    operations
        .flat_map(|o| {
            std::iter::once("*")
                .chain(STATUSES.iter().copied())
                .map(move |s| format!("{o}.{s}"))
        })
        .filter(|p| Subscriptions::parse(std::slice::from_ref(p)).is_ok())
        .collect()
}

/// A non-empty list of `<OPERATION>.<STATUS>` patterns.
pub fn subscriptions() -> utoipa::openapi::schema::Array {
    let patterns = subscription_patterns();
    ArrayBuilder::new()
        .items(one_of(patterns.iter().map(String::as_str)))
        .min_items(Some(1))
        .build()
}

/// The same, or null.
pub fn subscriptions_or_null() -> Schema {
    Schema::OneOf(
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(subscriptions())
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
}

/// A feed cursor (`store::FeedCursor`): `<id>` or `<commit>.<id>`, as the feed gave it out.
pub fn feed_cursor() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9]{1,18}(\\.[0-9]{1,18})?$"))
        .build()
}

/// A notification's `operation` and `status` (`domain::subscription`).
pub fn notification_operation() -> Object {
    one_of(crate::domain::subscription::OPERATIONS.iter().copied())
}
pub fn notification_status() -> Object {
    one_of(crate::domain::subscription::STATUSES.iter().copied())
}

/// The document, rendered once: it depends only on the code.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string_pretty(&super::document()).expect("the document serializes")
});

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI document of every route", content_type = "application/json", body = Object),
        Open,
    )
)]
pub async fn document_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

#[cfg(test)]
mod tests {
    /// The whole document, for a reviewer to see what a change does to the API's description.
    #[test]
    fn the_document_is_as_reviewed() {
        insta::assert_json_snapshot!("openapi", super::super::document());
    }

    #[test]
    fn every_secured_operation_names_the_bearer_scheme_and_the_others_none() {
        let document = serde_json::to_value(super::super::document()).unwrap();
        let open = [
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/console",
        ];
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let security = &operation["security"];
                if open.iter().any(|p| path.starts_with(p)) {
                    assert_eq!(security, &serde_json::json!([{}]), "{method} {path}");
                } else {
                    assert_eq!(
                        security,
                        &serde_json::json!([{ super::BEARER: [] }]),
                        "{method} {path}"
                    );
                }
            }
        }
    }
}
