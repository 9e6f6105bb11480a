//! `GET /v1/notifications`: the pull feed for reconciliation. Every notification in commit
//! order behind a stable cursor, so a consumer that missed pushes catches up from the last
//! cursor it processed (docs/integrations.md).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use super::request::{page_limit, query_keys};
use super::AppState;
use crate::clock::rfc3339;
use crate::config::Role;
use crate::domain::subscription::{OPERATIONS, STATUSES};
use crate::domain::Tguid;
use crate::store::{FeedCursor, FeedFilter, FeedRow};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/notifications", get(feed))
}

/// Any role may read the feed.
const READERS: &[Role] = &[Role::Ingest, Role::Review];

#[derive(Serialize)]
struct Item {
    /// Pass as `after` to continue after this notification.
    cursor: String,
    tguid: String,
    seq: i64,
    webhook_id: String,
    operation: String,
    status: String,
    /// The exact bytes that were (or are being) sent, key order kept.
    body: Box<RawValue>,
    created_at: String,
}

#[derive(Serialize)]
struct Page {
    items: Vec<Item>,
    /// Where to continue: the last item's cursor, or `after` itself when nothing is newer.
    next_cursor: String,
}

/// The parameters, checked: unknown keys, bad numbers and unknown values are 422s.
fn filter(query: &HashMap<String, String>) -> Result<FeedFilter, ApiError> {
    const KEYS: &[&str] = &["after", "limit", "tguid", "operation", "status"];
    query_keys(query, KEYS)?;
    let after = match query.get("after") {
        None => FeedCursor::default(),
        Some(text) => FeedCursor::parse(text).ok_or_else(|| {
            ApiError::invalid(format!(
                "after {text:?} is not a cursor this service gave out (use 0 for the beginning)"
            ))
        })?,
    };
    let limit = page_limit(query)?;
    let tguid = match query.get("tguid") {
        None => None,
        Some(t) => Some(Tguid::parse(t)?.to_string()),
    };
    let one_of = |key: &str, known: &[&str]| -> Result<Option<String>, ApiError> {
        match query.get(key) {
            None => Ok(None),
            Some(v) if known.contains(&v.as_str()) => Ok(Some(v.clone())),
            Some(v) => Err(ApiError::invalid(format!(
                "{key} {v:?} is not one of {}",
                known.join(", ")
            ))),
        }
    };
    Ok(FeedFilter {
        after,
        limit,
        tguid,
        operation: one_of("operation", OPERATIONS)?,
        status: one_of("status", STATUSES)?,
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

async fn feed(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Page>, ApiError> {
    app.auth.check(&headers, READERS)?;
    let filter = filter(&query)?;
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

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
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
