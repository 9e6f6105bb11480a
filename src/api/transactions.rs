//! `/v1/transactions`: registration, back-office events, MIR reviews, ETR treatments, and the
//! read side (one transaction with its history and the decisions it takes now, the review
//! queues and their counts in `/v1/queues`).

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod schema;

use super::error::ApiError;
use super::openapi::{self, Read, Write};
use super::operator::DeliveryOut;
use super::request::{
    json_value, page_cursor, page_limit, parse_json, parse_query, read_body, shape, PathParam,
};
use super::AppState;
use crate::clock::rfc3339;
use crate::config::Role;
use crate::domain::{
    Decision, Input, Operation, Outcome, State as TxState, Tguid, Treatment, Uguid,
};
use crate::store::{DecisionNote, InputRequest, QueueCount, TransactionDetail, TxSummary};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(show))
        .routes(routes!(event))
        .routes(routes!(review))
        .routes(routes!(treatment))
        .routes(routes!(queues))
}

// ---- wire types ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    #[schema(schema_with = openapi::id)]
    tguid: String,
    #[schema(schema_with = openapi::operation)]
    operation: String,
}

/// The event types that are not outcomes; with `Outcome::ALL`, what an event's `type` takes.
const NON_OUTCOME_EVENTS: [&str; 3] = ["PENDING", "EXCEPTION", "REVERSE_LATENT_MATCH"];

/// Its schema (`openapi::event_request`) says what serde cannot: `uguid` comes with
/// REVERSE_LATENT_MATCH and with no other type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventRequest {
    #[serde(rename = "type")]
    kind: String,
    uguid: Option<String>,
    event_id: Option<String>,
}

impl utoipa::PartialSchema for EventRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::event_request().into()
    }
}
impl ToSchema for EventRequest {}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReviewRequest {
    #[schema(schema_with = openapi::decision)]
    decision: String,
    #[schema(schema_with = schema::label_or_null)]
    reviewer: Option<String>,
    #[schema(schema_with = schema::label_or_null)]
    decision_id: Option<String>,
    #[schema(schema_with = schema::comment_or_null)]
    comment: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TreatmentRequest {
    #[schema(schema_with = openapi::treatment)]
    treatment: String,
    #[schema(schema_with = schema::label_or_null)]
    reviewer: Option<String>,
    #[schema(schema_with = schema::label_or_null)]
    decision_id: Option<String>,
    #[schema(schema_with = schema::comment_or_null)]
    comment: Option<String>,
}

/// `GET /v1/transactions`: the review queues, paged.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only transactions in this state.
    #[param(schema_with = openapi::state)]
    state: Option<String>,
    /// Only transactions of this operation.
    #[param(schema_with = openapi::operation)]
    operation: Option<String>,
    /// At most this many (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Where to continue: a previous page's `next_cursor`.
    #[param(value_type = Option<i64>, minimum = 0)]
    cursor: Option<String>,
}

/// `GET /v1/queues` takes no parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct NoQuery {}

/// What every decision may carry beside the decision itself. (Repeated in both request
/// structs rather than flattened: serde's `flatten` defeats `deny_unknown_fields`.)
struct DecisionAbout {
    reviewer: Option<String>,
    /// Idempotency key: the same body again is a no-op, another body with it a 409.
    decision_id: Option<String>,
    /// Why, for the transition log.
    comment: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct SummaryOut {
    tguid: String,
    #[schema(schema_with = openapi::operation)]
    operation: &'static str,
    #[schema(schema_with = openapi::state)]
    state: &'static str,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<&TxSummary> for SummaryOut {
    fn from(s: &TxSummary) -> Self {
        Self {
            tguid: s.tguid.clone(),
            operation: s.operation.as_str(),
            state: s.state.as_str(),
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct EventOut {
    #[serde(flatten)]
    summary: SummaryOut,
    /// True when this `event_id` had been applied before and nothing changed now.
    duplicate: bool,
}

#[derive(Serialize, ToSchema)]
struct TransitionOut {
    /// Null for the registration.
    from: Option<String>,
    to: String,
    input: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    uguid: Option<String>,
    actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[schema(format = DateTime)]
    at: String,
}

/// The inputs a reviewer may send now, by the call that takes them (`domain::allowed`).
#[derive(Serialize, ToSchema)]
struct AllowedOut {
    #[schema(schema_with = openapi::decisions)]
    review: Vec<&'static str>,
    #[schema(schema_with = openapi::treatments)]
    treatment: Vec<&'static str>,
}

#[derive(Serialize, ToSchema)]
struct QueueOut {
    #[schema(schema_with = openapi::state)]
    state: &'static str,
    #[schema(schema_with = openapi::operation)]
    operation: &'static str,
    count: i64,
    /// When the longest-waiting of them entered the queue.
    #[schema(format = DateTime)]
    oldest_at: String,
}

#[derive(Serialize, ToSchema)]
struct QueuesOut {
    items: Vec<QueueOut>,
}

#[derive(Serialize, ToSchema)]
struct NotificationOut {
    seq: i64,
    webhook_id: String,
    /// The exact bytes sent, embedded as they are (key order kept).
    #[schema(value_type = Object)]
    body: Box<RawValue>,
    #[schema(format = DateTime)]
    created_at: String,
    deliveries: Vec<DeliveryOut>,
}

#[derive(Serialize, ToSchema)]
struct DetailOut {
    #[serde(flatten)]
    summary: SummaryOut,
    allowed: AllowedOut,
    transitions: Vec<TransitionOut>,
    notifications: Vec<NotificationOut>,
}

#[derive(Serialize, ToSchema)]
struct PageOut {
    items: Vec<SummaryOut>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

fn detail_out(d: TransactionDetail) -> Result<DetailOut, ApiError> {
    let mut notifications = Vec::with_capacity(d.notifications.len());
    for n in d.notifications {
        let text = String::from_utf8(n.body).map_err(ApiError::internal)?;
        notifications.push(NotificationOut {
            seq: n.seq,
            webhook_id: n.webhook_id,
            body: RawValue::from_string(text).map_err(ApiError::internal)?,
            created_at: rfc3339(n.created_at),
            deliveries: n.deliveries.into_iter().map(DeliveryOut::from).collect(),
        });
    }
    let allowed = crate::domain::allowed(d.summary.operation, d.summary.state);
    Ok(DetailOut {
        summary: SummaryOut::from(&d.summary),
        allowed: AllowedOut {
            review: allowed.decisions.iter().map(|d| d.as_str()).collect(),
            treatment: allowed.treatments.iter().map(|t| t.as_str()).collect(),
        },
        transitions: d
            .transitions
            .into_iter()
            .map(|t| TransitionOut {
                from: t.from_state,
                to: t.to_state,
                input: t.input,
                uguid: t.uguid,
                actor: t.actor,
                event_id: t.event_id,
                decision_id: t.decision_id,
                comment: t.comment,
                at: rfc3339(t.at),
            })
            .collect(),
        notifications,
    })
}

// ---- validation helpers ----

fn parse_enum<T>(
    field: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
    all: &[&str],
) -> Result<T, ApiError> {
    parse(value).ok_or_else(|| {
        ApiError::invalid(format!(
            "{field} {value:?} is not one of {}",
            all.join(", ")
        ))
    })
}

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|t| name(*t)).collect()
}

/// A free-text label (reviewer, event_id, decision_id): 1–128 characters, none of them control
/// characters. One rule for both idempotency keys, so a client can use the same ids for each.
fn label(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > 128 || v.chars().any(char::is_control) => {
            Err(ApiError::invalid(format!(
                "{field} must be 1–128 characters without control characters"
            )))
        }
        other => Ok(other),
    }
}

/// Longest comment a decision may carry, in characters.
const MAX_COMMENT: usize = 1000;

/// A `comment`: at most `MAX_COMMENT` characters; line breaks and tabs, but no other control
/// characters.
fn comment(value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v)
            if v.chars().count() > MAX_COMMENT
                || v.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) =>
        {
            Err(ApiError::invalid(format!(
                "comment must be at most {MAX_COMMENT} characters, without control characters other than line breaks and tabs"
            )))
        }
        other => Ok(other),
    }
}

fn actor(caller: &str, reviewer: Option<String>) -> String {
    match reviewer {
        Some(r) => format!("{caller} (reviewer {r})"),
        None => caller.to_owned(),
    }
}

/// A path tguid: a bad one is 422, after the body was checked (CONTRACT §4 order).
fn path_tguid(raw: &str) -> Result<Tguid, ApiError> {
    Ok(Tguid::parse(raw)?)
}

/// A registration body (`{"tguid","operation"}`), checked as `POST /v1/transactions` checks
/// it: the body, then the operation, then the tguid. Shared with the AMQP inbound consumer.
pub fn parse_registration(body: &[u8]) -> Result<(Tguid, Operation), ApiError> {
    registration(json_value(body)?)
}

/// `parse_registration` of a body already read as JSON (an inbound message's fields).
pub fn registration(body: Value) -> Result<(Tguid, Operation), ApiError> {
    let req: RegisterRequest = shape(body)?;
    let operation = parse_enum(
        "operation",
        &req.operation,
        Operation::parse,
        &names(Operation::ALL, Operation::as_str),
    )?;
    let tguid = Tguid::parse(&req.tguid)?;
    Ok((tguid, operation))
}

/// An event body (`{"type","uguid"?,"event_id"?}`) for the transaction `raw_tguid`, checked as
/// `POST /v1/transactions/{tguid}/events` checks it: the body, the type and uguid, the
/// event_id, then the tguid. Shared with the AMQP inbound consumer.
pub fn parse_event(raw_tguid: &str, body: &[u8], actor: String) -> Result<InputRequest, ApiError> {
    event_of(raw_tguid, json_value(body)?, actor)
}

/// `parse_event` of a body already read as JSON (an inbound message's fields).
pub fn event_of(raw_tguid: &str, body: Value, actor: String) -> Result<InputRequest, ApiError> {
    let req: EventRequest = shape(body)?;
    let input = match req.kind.as_str() {
        "PENDING" => Input::SentToReview,
        "EXCEPTION" => Input::Exception,
        "REVERSE_LATENT_MATCH" => match &req.uguid {
            Some(u) => Input::LatentMatch(Uguid::parse(u)?),
            None => {
                return Err(ApiError::invalid(
                    "a REVERSE_LATENT_MATCH event needs a uguid",
                ))
            }
        },
        other => match Outcome::parse(other) {
            Some(o) => Input::Outcome(o),
            None => {
                return Err(ApiError::invalid(format!(
                    "type {other:?} is not one of {}",
                    event_types().join(", ")
                )))
            }
        },
    };
    if req.uguid.is_some() && !matches!(input, Input::LatentMatch(_)) {
        return Err(ApiError::invalid(format!(
            "uguid is only allowed on REVERSE_LATENT_MATCH, not on {}",
            req.kind
        )));
    }
    let event_id = label("event_id", req.event_id)?;
    let tguid = path_tguid(raw_tguid)?;
    let fingerprint = format!("{}|{}", req.kind, req.uguid.as_deref().unwrap_or(""));
    Ok(InputRequest {
        tguid,
        input,
        event_id: event_id.map(|id| (id, fingerprint)),
        actor,
    })
}

/// Every event `type`, in the contract's order.
fn event_types() -> Vec<&'static str> {
    let outcomes = Outcome::ALL.iter().map(|o| o.as_str());
    outcomes.chain(NON_OUTCOME_EVENTS).collect()
}

// ---- handlers ----

/// Register a transaction (state PROCESSING).
#[utoipa::path(
    post,
    path = "/v1/transactions",
    tag = "transactions",
    request_body = RegisterRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = SummaryOut),
        (status = 200, description = "The same registration again: nothing changed", body = SummaryOut),
        Write,
    )
)]
async fn register(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<SummaryOut>), ApiError> {
    let caller = app.auth.check(&headers, &[Role::Ingest])?;
    let (tguid, operation) = parse_registration(&read_body(body).await?)?;
    let r = app.store.register(tguid, operation, caller.name).await?;
    let status = if r.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(SummaryOut::from(&r.summary))))
}

/// Report a processing outcome (role ingest). A repeat of an `event_id` is a no-op.
#[utoipa::path(
    post,
    path = "/v1/transactions/{tguid}/events",
    tag = "transactions",
    params(openapi::TguidPath),
    request_body = EventRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "Applied, or a repeat of its event_id", body = EventOut), Write)
)]
async fn event(
    State(app): State<AppState>,
    PathParam(raw_tguid): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EventOut>, ApiError> {
    let caller = app.auth.check(&headers, &[Role::Ingest])?;
    let request = parse_event(&raw_tguid, &read_body(body).await?, caller.name)?;
    let applied = app.store.apply(request).await?;
    Ok(Json(EventOut {
        summary: SummaryOut::from(&applied.summary),
        duplicate: applied.duplicate,
    }))
}

/// MIR decision on a PENDING transaction (role review).
#[utoipa::path(
    post,
    path = "/v1/transactions/{tguid}/review",
    tag = "review",
    params(openapi::TguidPath),
    request_body = ReviewRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "Decided, or a repeat of its decision_id", body = EventOut), Write)
)]
async fn review(
    State(app): State<AppState>,
    PathParam(raw_tguid): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EventOut>, ApiError> {
    decide(&app, &raw_tguid, &headers, body, parse_review).await
}

/// ETR treatment of an EXCEPTION transaction (role review).
#[utoipa::path(
    post,
    path = "/v1/transactions/{tguid}/treatment",
    tag = "review",
    params(openapi::TguidPath),
    request_body = TreatmentRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "Treated, or a repeat of its decision_id", body = EventOut), Write)
)]
async fn treatment(
    State(app): State<AppState>,
    PathParam(raw_tguid): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EventOut>, ApiError> {
    decide(&app, &raw_tguid, &headers, body, parse_treatment).await
}

/// A review body (`{"decision","reviewer"?,"decision_id"?,"comment"?}`) for the transaction
/// `raw_tguid`, as `POST /v1/transactions/{tguid}/review` checks it; `caller` is the token's
/// name.
pub fn parse_review(
    raw_tguid: &str,
    body: &[u8],
    caller: &str,
) -> Result<(InputRequest, DecisionNote), ApiError> {
    parse_decision(raw_tguid, body, caller, |req: ReviewRequest| {
        let decision = parse_enum(
            "decision",
            &req.decision,
            Decision::parse,
            &names(Decision::ALL, Decision::as_str),
        )?;
        let about = DecisionAbout {
            reviewer: req.reviewer,
            decision_id: req.decision_id,
            comment: req.comment,
        };
        Ok((Input::Review(decision), about))
    })
}

/// A treatment body (`{"treatment","reviewer"?,"decision_id"?,"comment"?}`), as
/// `POST /v1/transactions/{tguid}/treatment` checks it.
pub fn parse_treatment(
    raw_tguid: &str,
    body: &[u8],
    caller: &str,
) -> Result<(InputRequest, DecisionNote), ApiError> {
    parse_decision(raw_tguid, body, caller, |req: TreatmentRequest| {
        let t = parse_enum(
            "treatment",
            &req.treatment,
            Treatment::parse,
            &names(Treatment::ALL, Treatment::as_str),
        )?;
        let about = DecisionAbout {
            reviewer: req.reviewer,
            decision_id: req.decision_id,
            comment: req.comment,
        };
        Ok((Input::Treat(t), about))
    })
}

/// A reviewer's decision (MIR or ETR), checked in the contract's order (the caller was
/// checked before): the body, the decision (`input` turns the body into the input and what
/// came with it), the reviewer, decision_id and comment, then the tguid.
fn parse_decision<R: serde::de::DeserializeOwned>(
    raw_tguid: &str,
    body: &[u8],
    caller: &str,
    input: impl FnOnce(R) -> Result<(Input, DecisionAbout), ApiError>,
) -> Result<(InputRequest, DecisionNote), ApiError> {
    let req: R = parse_json(body)?;
    let (input, about) = input(req)?;
    let reviewer = label("reviewer", about.reviewer)?;
    let id = label("decision_id", about.decision_id)?;
    let comment = comment(about.comment)?;
    let tguid = path_tguid(raw_tguid)?;
    // What makes two bodies "the same" for a decision_id: every field but the id itself.
    let fingerprint = serde_json::json!([input.describe(), reviewer, comment]).to_string();
    let note = DecisionNote {
        decision_id: id.map(|id| (id, fingerprint)),
        comment,
    };
    let request = InputRequest {
        tguid,
        input,
        event_id: None,
        actor: actor(caller, reviewer),
    };
    Ok((request, note))
}

/// `parse_review` or `parse_treatment`.
type ParseDecision = fn(&str, &[u8], &str) -> Result<(InputRequest, DecisionNote), ApiError>;

/// The caller, then the body; then the state machine decides.
async fn decide(
    app: &AppState,
    raw_tguid: &str,
    headers: &HeaderMap,
    body: Body,
    parse: ParseDecision,
) -> Result<Json<EventOut>, ApiError> {
    let caller = app.auth.check(headers, &[Role::Review])?;
    let (request, note) = parse(raw_tguid, &read_body(body).await?, &caller.name)?;
    let applied = app.store.decide(request, note).await?;
    Ok(Json(EventOut {
        summary: SummaryOut::from(&applied.summary),
        duplicate: applied.duplicate,
    }))
}

const ANY_ROLE: &[Role] = &[Role::Ingest, Role::Review];

/// One transaction: its state, transitions, notifications with their deliveries, and the
/// decisions it takes now.
#[utoipa::path(
    get,
    path = "/v1/transactions/{tguid}",
    tag = "transactions",
    params(openapi::TguidPath),
    security(("bearer" = [])),
    responses((status = 200, description = "The transaction", body = DetailOut), Read)
)]
async fn show(
    State(app): State<AppState>,
    PathParam(raw_tguid): PathParam,
    headers: HeaderMap,
) -> Result<Json<DetailOut>, ApiError> {
    app.auth.check(&headers, ANY_ROLE)?;
    let tguid = path_tguid(&raw_tguid)?;
    match app
        .store
        .readers
        .transaction(tguid.to_string())
        .await
        .map_err(ApiError::from)?
    {
        Some(d) => Ok(Json(detail_out(d)?)),
        None => Err(ApiError::not_found(format!(
            "no transaction with tguid {tguid}"
        ))),
    }
}

/// The review queues' sizes, per state and operation.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "review",
    params(NoQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "The queues", body = QueuesOut), Read)
)]
async fn queues(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<QueuesOut>, ApiError> {
    app.auth.check(&headers, ANY_ROLE)?;
    let NoQuery {} = parse_query(query.as_deref())?;
    let counts = app.store.readers.queues().await.map_err(ApiError::from)?;
    Ok(Json(QueuesOut {
        items: counts
            .iter()
            .map(|q: &QueueCount| QueueOut {
                state: q.state.as_str(),
                operation: q.operation.as_str(),
                count: q.count,
                oldest_at: rfc3339(q.oldest_at),
            })
            .collect(),
    }))
}

/// Transactions by state and operation (the review queues), oldest first, paged.
#[utoipa::path(
    get,
    path = "/v1/transactions",
    tag = "review",
    params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "One page", body = PageOut), Read)
)]
async fn list(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<PageOut>, ApiError> {
    app.auth.check(&headers, ANY_ROLE)?;
    let query: ListQuery = parse_query(query.as_deref())?;
    let state = match &query.state {
        Some(s) => Some(parse_enum(
            "state",
            s,
            TxState::parse,
            &names(TxState::ALL, TxState::as_str),
        )?),
        None => None,
    };
    let operation = match &query.operation {
        Some(s) => Some(parse_enum(
            "operation",
            s,
            Operation::parse,
            &names(Operation::ALL, Operation::as_str),
        )?),
        None => None,
    };
    let limit = page_limit(query.limit.as_deref())?;
    let cursor = page_cursor("cursor", query.cursor.as_deref())?;
    let page = app
        .store
        .readers
        .list(state, operation, cursor, limit)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(PageOut {
        items: page.items.iter().map(SummaryOut::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}
