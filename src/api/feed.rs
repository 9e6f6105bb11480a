//! `GET /v1/notifications`: the pull feed for reconciliation. Every notification in commit
//! order behind a stable cursor, so a consumer that missed pushes catches up from the last
//! cursor it processed (docs/integrations.md).

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::openapi::{self, Read};
use super::request::{page_limit, parse_query};
use super::AppState;
use crate::clock::rfc3339;
use crate::config::Role;
use crate::domain::subscription::{OPERATIONS, STATUSES};
use crate::domain::Tguid;
use crate::store::{FeedCursor, FeedFilter, FeedRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(feed))
}

/// Any role may read the feed.
const READERS: &[Role] = &[Role::Ingest, Role::Review];

/// The feed's parameters.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
struct FeedQuery {
    /// Continue after this cursor (an item's `cursor` or a page's `next_cursor`); from the
    /// beginning when absent.
    #[param(schema_with = openapi::feed_cursor)]
    after: Option<String>,
    /// At most this many (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Only this transaction's notifications.
    #[param(schema_with = openapi::id)]
    tguid: Option<String>,
    /// Only notifications with this `operation`.
    #[param(schema_with = openapi::notification_operation)]
    operation: Option<String>,
    /// Only notifications with this `status`.
    #[param(schema_with = openapi::notification_status)]
    status: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Item {
    /// Pass as `after` to continue after this notification.
    cursor: String,
    tguid: String,
    seq: i64,
    webhook_id: String,
    #[schema(schema_with = openapi::notification_operation)]
    operation: String,
    #[schema(schema_with = openapi::notification_status)]
    status: String,
    /// The exact bytes that were (or are being) sent, key order kept.
    #[schema(value_type = Object)]
    body: Box<RawValue>,
    #[schema(format = DateTime)]
    created_at: String,
}

#[derive(Serialize, ToSchema)]
struct Page {
    items: Vec<Item>,
    /// Where to continue: the last item's cursor, or `after` itself when nothing is newer.
    next_cursor: String,
}

/// The parameters, checked: bad numbers and unknown values are 422s.
fn filter(query: FeedQuery) -> Result<FeedFilter, ApiError> {
    let after = match &query.after {
        None => FeedCursor::default(),
        Some(text) => FeedCursor::parse(text).ok_or_else(|| {
            ApiError::invalid(format!(
                "after {text:?} is not a cursor this service gave out (use 0 for the beginning)"
            ))
        })?,
    };
    let limit = page_limit(query.limit.as_deref())?;
    let tguid = match &query.tguid {
        None => None,
        Some(t) => Some(Tguid::parse(t)?.to_string()),
    };
    let one_of = |key: &str, value: Option<String>, known: &[&str]| match value {
        Some(v) if !known.contains(&v.as_str()) => Err(ApiError::invalid(format!(
            "{key} {v:?} is not one of {}",
            known.join(", ")
        ))),
        value => Ok(value),
    };
    Ok(FeedFilter {
        after,
        limit,
        tguid,
        operation: one_of("operation", query.operation, OPERATIONS)?,
        status: one_of("status", query.status, STATUSES)?,
    })
}

fn item(row: FeedRow) -> Result<Item, ApiError> {
    let text = String::from_utf8(row.body).map_err(ApiError::internal)?;
    Ok(Item {
        cursor: row.cursor.to_string(),
        tguid: row.tguid,
        seq: row.seq,
        webhook_id: row.webhook_id,
        operation: row.operation,
        status: row.status,
        body: RawValue::from_string(text).map_err(ApiError::internal)?,
        created_at: rfc3339(row.created_at),
    })
}

/// Every notification in commit order, after a cursor (role ingest or review).
#[utoipa::path(
    get,
    path = "/v1/notifications",
    tag = "feed",
    params(FeedQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "One page", body = Page), Read)
)]
async fn feed(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Page>, ApiError> {
    app.auth.check(&headers, READERS)?;
    let filter = filter(parse_query(query.as_deref())?)?;
    let after = filter.after;
    let rows = app
        .store
        .readers
        .feed(filter)
        .await
        .map_err(ApiError::from)?;
    let next_cursor = rows.last().map_or(after, |r| r.cursor).to_string();
    let items = rows.into_iter().map(item).collect::<Result<_, _>>()?;
    Ok(Json(Page { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    fn filter(query: &str) -> Result<FeedFilter, ApiError> {
        super::filter(parse_query(Some(query))?)
    }

    #[test]
    fn no_parameters_read_from_the_beginning_a_hundred_at_a_time() {
        let f = filter(&q(&[])).unwrap();
        assert_eq!((f.after, f.limit), (FeedCursor::default(), 100));
        assert!(f.tguid.is_none() && f.operation.is_none() && f.status.is_none());
    }

    #[test]
    fn every_filter_is_read_and_checked() {
        let f = filter(&q(&[
            ("after", "42"),
            ("limit", "1000"),
            ("tguid", "tg-1"),
            ("operation", "TREAT_EXCEPTION"),
            ("status", "OK"),
        ]))
        .unwrap();
        assert_eq!((f.after.id, f.limit), (42, 1000));
        assert_eq!(f.tguid.as_deref(), Some("tg-1"));
        assert_eq!(f.operation.as_deref(), Some("TREAT_EXCEPTION"));
        assert_eq!(f.status.as_deref(), Some("OK"));
    }

    #[test]
    fn bad_parameters_are_422s_that_say_what_is_wrong() {
        for (pairs, says) in [
            (vec![("after", "-1")], "after"),
            (vec![("after", "abc")], "after"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "1001")], "limit"),
            (vec![("tguid", "has space")], "tguid"),
            (vec![("operation", "enroll")], "operation"),
            (vec![("status", "PROCESSING")], "status"),
            (vec![("cursor", "1")], "unknown query parameter \"cursor\""),
        ] {
            let e = filter(&q(&pairs)).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
            assert!(e.message.contains(says), "{pairs:?}: {}", e.message);
        }
    }
}
