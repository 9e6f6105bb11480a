//! Operator routes: deliveries (list, retry), endpoints (health and backlog, runtime
//! management, recovery of dead deliveries) and re-sending a transaction's notifications.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::openapi::{self, Read, Write};
use super::request::{page_cursor, page_limit, parse_json, parse_query, read_body, PathParam};
use super::AppState;
use crate::clock::rfc3339;
use crate::config::Role;
use crate::domain::{Subscriptions, Tguid};
use crate::endpoint::{self, Destination, Endpoint, Format, HttpDestination, Source};
use crate::secret::Secret;
use crate::store::{AdminOp, DeliveryFilter, DeliveryRow, EndpointRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(update_endpoint, delete_endpoint))
        .routes(routes!(recover))
        .routes(routes!(renotify))
}

/// Operators: review tooling and admins (admin is always admitted).
const OPERATORS: &[Role] = &[Role::Review];
/// Changing where notifications go is for admins only.
const ADMINS: &[Role] = &[];

#[derive(Serialize, ToSchema)]
pub(super) struct DeliveryOut {
    id: i64,
    endpoint: String,
    #[schema(schema_with = delivery_status)]
    status: String,
    attempts: i64,
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    last_attempt_at: Option<String>,
    /// The HTTP status of the last attempt.
    last_status: Option<i64>,
    last_error: Option<String>,
    #[schema(format = DateTime)]
    delivered_at: Option<String>,
}

/// What a delivery's `status` is, and what `GET /v1/deliveries?status=` filters on.
const DELIVERY_STATUSES: [&str; 4] = ["pending", "failing", "dead", "delivered"];

fn delivery_status() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(DELIVERY_STATUSES))
        .build()
}

/// `GET /v1/deliveries`: filters and paging.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    /// Only deliveries in this status.
    #[param(schema_with = delivery_status)]
    status: Option<String>,
    /// Only deliveries to this endpoint.
    endpoint: Option<String>,
    /// Only deliveries of this transaction.
    tguid: Option<String>,
    /// At most this many (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Where to continue: a previous page's `next_cursor`.
    #[param(value_type = Option<i64>, minimum = 0)]
    cursor: Option<String>,
}

/// An endpoint's id in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents `{id}`; the handler reads it as a `PathParam`.
struct EndpointId {
    #[param(schema_with = openapi::endpoint_id)]
    id: String,
}

impl From<DeliveryRow> for DeliveryOut {
    fn from(x: DeliveryRow) -> Self {
        let ts = |t: Option<i64>| t.map(rfc3339);
        DeliveryOut {
            id: x.id,
            endpoint: x.endpoint_id,
            status: x.status,
            attempts: x.attempts,
            next_attempt_at: ts(x.next_attempt_at),
            last_attempt_at: ts(x.last_attempt_at),
            last_status: x.last_status,
            last_error: x.last_error,
            delivered_at: ts(x.delivered_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct DeliveryItem {
    tguid: String,
    seq: i64,
    webhook_id: String,
    #[serde(flatten)]
    delivery: DeliveryOut,
}

#[derive(Serialize, ToSchema)]
struct DeliveryPage {
    items: Vec<DeliveryItem>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
}

/// Deliveries, newest first, by status, endpoint or transaction.
#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "operator",
    params(DeliveryQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "One page", body = DeliveryPage), Read)
)]
async fn list_deliveries(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<DeliveryPage>, ApiError> {
    app.auth.check(&headers, OPERATORS)?;
    let query: DeliveryQuery = parse_query(query.as_deref())?;
    if let Some(s) = &query.status {
        if !DELIVERY_STATUSES.contains(&s.as_str()) {
            return Err(ApiError::invalid(format!(
                "status {s:?} is not one of {}",
                DELIVERY_STATUSES.join(", ")
            )));
        }
    }
    let limit = page_limit(query.limit.as_deref())?;
    let cursor = page_cursor("cursor", query.cursor.as_deref())?;
    let filter = DeliveryFilter {
        status: query.status,
        endpoint_id: query.endpoint,
        tguid: query.tguid,
        cursor,
        limit,
    };
    let (rows, next) = app
        .store
        .readers
        .deliveries(filter)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(DeliveryPage {
        items: rows
            .into_iter()
            .map(|r| DeliveryItem {
                tguid: r.tguid,
                seq: r.seq,
                webhook_id: r.webhook_id,
                delivery: r.delivery.into(),
            })
            .collect(),
        next_cursor: next.map(|c| c.to_string()),
    }))
}

#[derive(Serialize, ToSchema)]
struct Affected {
    /// How many deliveries (or rows) the action queued or changed.
    affected: usize,
}

impl From<crate::store::AdminDone> for Json<Affected> {
    fn from(done: crate::store::AdminDone) -> Self {
        Json(Affected {
            affected: done.affected,
        })
    }
}

/// Send a dead or failing delivery again now.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/retry",
    tag = "operator",
    params(("id" = i64, Path, description = "The delivery's id")),
    security(("bearer" = [])),
    responses((status = 200, description = "Queued again", body = Affected), Write)
)]
async fn retry_delivery(
    State(app): State<AppState>,
    PathParam(id): PathParam,
    headers: HeaderMap,
) -> Result<Json<Affected>, ApiError> {
    app.auth.check(&headers, OPERATORS)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid(format!("delivery id {id:?} is not a number")))?;
    let done = app.store.admin(AdminOp::RetryDelivery { id }).await?;
    Ok(done.into())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RecoverRequest {
    /// RFC 3339 time: deliveries that went dead at or after it are sent again.
    #[schema(format = DateTime)]
    since: String,
}

/// A recovery body (`{"since"}`): the time, in unix milliseconds, from which dead deliveries
/// are sent again.
pub fn parse_recover(body: &[u8]) -> Result<i64, ApiError> {
    let req: RecoverRequest = parse_json(body)?;
    let since =
        time::OffsetDateTime::parse(&req.since, &time::format_description::well_known::Rfc3339)
            .map_err(|e| {
                ApiError::invalid(format!(
                    "since {:?} is not an RFC 3339 time: {e}",
                    req.since
                ))
            })?;
    Ok((since.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Send again the endpoint's deliveries that went dead since a time.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/recover",
    tag = "operator",
    params(EndpointId),
    request_body = RecoverRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "Queued again", body = Affected), Write)
)]
async fn recover(
    State(app): State<AppState>,
    PathParam(id): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Affected>, ApiError> {
    app.auth.check(&headers, OPERATORS)?;
    let since = parse_recover(&read_body(body).await?)?;
    let done = app
        .store
        .admin(AdminOp::Recover {
            endpoint_id: id,
            since,
        })
        .await?;
    Ok(done.into())
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RenotifyRequest {
    /// Only to this endpoint; all endpoints when absent.
    endpoint: Option<String>,
}

/// A re-send body (`{"endpoint"?}`, `null`, or none at all) for the transaction `raw_tguid`: the
/// transaction and the one endpoint to send to (all when `None`).
pub fn parse_renotify(raw_tguid: &str, body: &[u8]) -> Result<(Tguid, Option<String>), ApiError> {
    // The body is optional: none, or null, asks for every endpoint.
    let req: RenotifyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RenotifyRequest::default()
    } else {
        parse_json::<Option<RenotifyRequest>>(body)?.unwrap_or_default()
    };
    Ok((Tguid::parse(raw_tguid)?, req.endpoint))
}

/// Send a transaction's notifications again (the body is optional; none or null: to every
/// endpoint).
#[utoipa::path(
    post,
    path = "/v1/transactions/{tguid}/renotify",
    tag = "operator",
    params(openapi::TguidPath),
    request_body = Option<RenotifyRequest>,
    security(("bearer" = [])),
    responses((status = 200, description = "Queued again", body = Affected), Write)
)]
async fn renotify(
    State(app): State<AppState>,
    PathParam(raw_tguid): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Affected>, ApiError> {
    app.auth.check(&headers, OPERATORS)?;
    let (tguid, endpoint_id) = parse_renotify(&raw_tguid, &read_body(body).await?)?;
    let done = app
        .store
        .admin(AdminOp::Renotify {
            tguid: tguid.to_string(),
            endpoint_id,
        })
        .await?;
    Ok(done.into())
}

#[derive(Serialize, ToSchema)]
struct EndpointOut {
    id: String,
    url: String,
    /// "config" (from the configuration file) or "api" (created through this API).
    source: String,
    /// False once the configuration no longer names it.
    active: bool,
    enabled: bool,
    disabled_reason: Option<String>,
    /// Since when every attempt has failed (absent while it is healthy).
    failing_since: Option<String>,
    /// Deliveries waiting for it.
    backlog: i64,
    dead: i64,
    oldest_pending_at: Option<String>,
    last_delivered_at: Option<String>,
    /// The `<OPERATION>.<STATUS>` patterns it receives; null: every notification.
    subscriptions: Option<Vec<String>>,
    /// "gbds" (the body as it is) or "cloudevents".
    #[schema(schema_with = openapi::format)]
    format: String,
}

impl From<EndpointRow> for EndpointOut {
    fn from(e: EndpointRow) -> Self {
        EndpointOut {
            id: e.id,
            url: e.url,
            source: e.source,
            active: e.active,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since.map(rfc3339),
            backlog: e.backlog,
            dead: e.dead,
            oldest_pending_at: e.oldest_pending_at.map(rfc3339),
            last_delivered_at: e.last_delivered_at.map(rfc3339),
            subscriptions: e.subscriptions,
            format: e.format,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct EndpointList {
    items: Vec<EndpointOut>,
}

/// Every endpoint with its health and backlog.
#[utoipa::path(
    get,
    path = "/v1/endpoints",
    tag = "operator",
    security(("bearer" = [])),
    responses((status = 200, description = "The endpoints", body = EndpointList), Read)
)]
async fn list_endpoints(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<EndpointList>, ApiError> {
    app.auth.check(&headers, OPERATORS)?;
    let rows = app
        .store
        .readers
        .endpoints()
        .await
        .map_err(ApiError::from)?;
    let items = rows.into_iter().map(EndpointOut::from).collect();
    Ok(Json(EndpointList { items }))
}

async fn endpoint_by_id(app: &AppState, id: &str) -> Result<EndpointOut, ApiError> {
    let rows = app
        .store
        .readers
        .endpoints()
        .await
        .map_err(ApiError::from)?;
    rows.into_iter()
        .find(|e| e.id == id)
        .map(EndpointOut::from)
        .ok_or_else(|| ApiError::not_found(format!("no endpoint with id {id}")))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateEndpoint {
    #[schema(schema_with = openapi::endpoint_id)]
    id: String,
    #[schema(schema_with = openapi::url)]
    url: String,
    /// Signs every POST: `whsec_` and base64 (Standard Webhooks), or any other text (only
    /// `X-Signature`).
    #[schema(schema_with = openapi::secret_or_null)]
    secret: Option<Secret>,
    /// `<OPERATION>.<STATUS>` patterns; absent or null: every notification.
    #[schema(schema_with = openapi::subscriptions_or_null)]
    subscriptions: Option<Vec<String>>,
    /// "gbds" (default) or "cloudevents".
    #[schema(schema_with = openapi::format_or_null)]
    format: Option<String>,
}

/// A `subscriptions` list, checked: a 422 names the bad pattern (`subscriptions[1]: …`).
fn checked_subscriptions(list: &[String]) -> Result<Subscriptions, ApiError> {
    Subscriptions::parse(list).map_err(|(i, why)| match i {
        Some(i) => ApiError::invalid(format!("subscriptions[{i}]: {why}")),
        None => ApiError::invalid(format!("subscriptions: {why}")),
    })
}

fn checked_format(format: &str) -> Result<Format, ApiError> {
    Format::parse(format).map_err(|why| ApiError::invalid(format!("format: {why}")))
}

/// An endpoint's `url`, checked: in the grammar `/openapi.json` publishes (narrower than the
/// configuration file's: the document and the service must agree on every URL), and a URL.
fn checked_url(url: &str) -> Result<reqwest::Url, ApiError> {
    if !endpoint::grammar::fits(url) {
        return Err(ApiError::invalid(format!(
            "url {url:?} is not one the API takes: http:// or https://, a host name or an IPv4 \
             address, an optional port (1–65535), then a path and a query of URL characters \
             (no user info, fragment or IPv6 literal; the configuration file takes those)"
        )));
    }
    endpoint::check_url(url).map_err(ApiError::invalid)
}

/// A `secret`, checked: a 422 says what is wrong with it, never what it is.
fn checked_secret(secret: &Secret) -> Result<(), ApiError> {
    endpoint::check_secret(secret.expose())
        .map_err(|why| ApiError::invalid(format!("secret: {why}")))
}

impl CreateEndpoint {
    /// The endpoint asked for, checked by the same rules as the configuration file's.
    fn into_endpoint(self) -> Result<Endpoint, ApiError> {
        endpoint::check_id(&self.id).map_err(ApiError::invalid)?;
        let url = checked_url(&self.url)?;
        if let Some(secret) = &self.secret {
            checked_secret(secret)?;
        }
        let subscriptions = match &self.subscriptions {
            Some(list) => checked_subscriptions(list)?,
            None => Subscriptions::All,
        };
        let format = match &self.format {
            Some(format) => checked_format(format)?,
            None => Format::Gbds,
        };
        Ok(Endpoint {
            id: self.id,
            source: Source::Api,
            destination: Destination::Http(HttpDestination {
                url,
                secrets: self.secret.into_iter().collect(),
                auth: None,
                format,
            }),
            subscriptions,
            enabled: true,
        })
    }
}

/// An endpoint body (`POST /v1/endpoints`), checked by the configuration file's rules.
pub fn parse_endpoint(body: &[u8]) -> Result<Endpoint, ApiError> {
    parse_json::<CreateEndpoint>(body)?.into_endpoint()
}

/// Add an endpoint (role admin).
#[utoipa::path(
    post,
    path = "/v1/endpoints",
    tag = "operator",
    request_body = CreateEndpoint,
    security(("bearer" = [])),
    responses((status = 201, description = "Added", body = EndpointOut), Write)
)]
async fn create_endpoint(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<EndpointOut>), ApiError> {
    app.auth.check(&headers, ADMINS)?;
    let endpoint = parse_endpoint(&read_body(body).await?)?;
    let id = endpoint.id.clone();
    // Answered after the commit that added it to the database and to the registry.
    app.store
        .admin(AdminOp::CreateEndpoint(Box::new(endpoint)))
        .await?;
    Ok((StatusCode::CREATED, Json(endpoint_by_id(&app, &id).await?)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateEndpoint {
    #[schema(schema_with = openapi::url_or_null)]
    url: Option<String>,
    /// A new secret, or null to stop signing.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = openapi::secret_or_null)]
    secret: Option<Option<Secret>>,
    enabled: Option<bool>,
    /// New patterns, or null to receive every notification again.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = openapi::subscriptions_or_null)]
    subscriptions: Option<Option<Vec<String>>>,
    #[schema(schema_with = openapi::format_or_null)]
    format: Option<String>,
}

/// Tells a key given as null (`Some(None)`) apart from a key left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl UpdateEndpoint {
    /// The change asked for to endpoint `id`, each field checked as at its creation.
    fn into_change(self, id: &str) -> Result<endpoint::Change, ApiError> {
        let url = match &self.url {
            Some(url) => {
                endpoint::check_id(id).map_err(ApiError::invalid)?;
                Some(checked_url(url)?)
            }
            None => None,
        };
        if let Some(Some(secret)) = &self.secret {
            checked_secret(secret)?;
        }
        let subscriptions = match &self.subscriptions {
            Some(Some(list)) => Some(checked_subscriptions(list)?),
            Some(None) => Some(Subscriptions::All),
            None => None,
        };
        let format = self.format.as_deref().map(checked_format).transpose()?;
        Ok(endpoint::Change {
            url,
            secret: self.secret,
            enabled: self.enabled,
            subscriptions,
            format,
        })
    }
}

/// A change to endpoint `id` (`PATCH /v1/endpoints/{id}`), each field checked as at creation.
pub fn parse_endpoint_change(id: &str, body: &[u8]) -> Result<endpoint::Change, ApiError> {
    parse_json::<UpdateEndpoint>(body)?.into_change(id)
}

/// Change an endpoint (role admin); a configured one takes only `enabled`, `subscriptions`
/// and `format`.
#[utoipa::path(
    patch,
    path = "/v1/endpoints/{id}",
    tag = "operator",
    params(EndpointId),
    request_body = UpdateEndpoint,
    security(("bearer" = [])),
    responses((status = 200, description = "Changed", body = EndpointOut), Write)
)]
async fn update_endpoint(
    State(app): State<AppState>,
    PathParam(id): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EndpointOut>, ApiError> {
    app.auth.check(&headers, ADMINS)?;
    let change = parse_endpoint_change(&id, &read_body(body).await?)?;
    // Answered after the commit that changed the database and the registry alike: the next
    // delivery goes by the change.
    app.store
        .admin(AdminOp::UpdateEndpoint {
            id: id.clone(),
            change: Box::new(change),
        })
        .await?;
    Ok(Json(endpoint_by_id(&app, &id).await?))
}

/// Remove an endpoint added through the API (role admin); what it had not received is dead.
#[utoipa::path(
    delete,
    path = "/v1/endpoints/{id}",
    tag = "operator",
    params(EndpointId),
    security(("bearer" = [])),
    responses((status = 200, description = "Removed", body = Affected), Write)
)]
async fn delete_endpoint(
    State(app): State<AppState>,
    PathParam(id): PathParam,
    headers: HeaderMap,
) -> Result<Json<Affected>, ApiError> {
    app.auth.check(&headers, ADMINS)?;
    let done = app.store.admin(AdminOp::DeleteEndpoint { id }).await?;
    Ok(done.into())
}
