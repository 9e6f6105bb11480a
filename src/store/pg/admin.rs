//! Operator actions and jobs on PostgreSQL, each in a transaction of its own (the writer
//! begins and commits it). They lock what they change the way the batches do: a queue's
//! transaction row before its deliveries, the endpoints' version before an endpoint. Each
//! leaves every queue it touched with one claimable head, or its delivery in flight alone.

use tokio_postgres::Client;

use super::endpoints::{bump_version, load};
use super::Failure;
use crate::endpoint::{Destination, Endpoint, Snapshot};
use crate::secret::Secret;
use crate::store::endpoints::stored_patterns;
use crate::store::{AdminDone, AdminOp, WriteError};

/// What an action sees of its writer.
pub(super) struct Context<'a> {
    pub instance: &'a str,
    pub configured: &'a [Endpoint],
    pub endpoints: &'a Snapshot,
    pub now: i64,
}

/// An operator action, or a 410 Gone result (which disables its endpoint).
pub(super) enum Action {
    Op(crate::store::AdminOp),
    Gone {
        id: i64,
        gen: i64,
        endpoint_id: String,
    },
}

/// What an action did, and the endpoints when it changed them.
pub(super) struct Outcome {
    pub done: AdminDone,
    pub reloaded: Option<(Vec<Endpoint>, i64)>,
}

enum Stop {
    Refused(WriteError),
    Failed(Failure),
}

impl From<tokio_postgres::Error> for Stop {
    fn from(e: tokio_postgres::Error) -> Self {
        Stop::Failed(e.into())
    }
}

impl From<WriteError> for Stop {
    fn from(e: WriteError) -> Self {
        Stop::Refused(e)
    }
}

type Step<T> = Result<T, Stop>;

/// Runs `action` in the open transaction: `Ok(Err(_))` is a refusal (rolled back), `Err(_)`
/// a failure of the database.
pub(super) async fn run(
    client: &Client,
    ctx: &Context<'_>,
    action: &Action,
) -> Result<Result<Outcome, WriteError>, Failure> {
    match act(client, ctx, action).await {
        Ok(outcome) => Ok(Ok(outcome)),
        Err(Stop::Refused(e)) => Ok(Err(e)),
        Err(Stop::Failed(f)) => Err(f),
    }
}

fn done(affected: usize) -> Outcome {
    Outcome {
        done: AdminDone { affected },
        reloaded: None,
    }
}

async fn act(client: &Client, ctx: &Context<'_>, action: &Action) -> Step<Outcome> {
    let op = match action {
        Action::Op(op) => op,
        Action::Gone {
            id,
            gen,
            endpoint_id,
        } => return gone(client, ctx, *id, *gen, endpoint_id).await,
    };
    match op {
        AdminOp::RetryDelivery { id } => retry_delivery(client, ctx, *id).await,
        AdminOp::Recover { endpoint_id, since } => recover(client, ctx, endpoint_id, *since).await,
        AdminOp::Renotify { tguid, endpoint_id } => {
            renotify(client, ctx, tguid, endpoint_id.as_deref()).await
        }
        AdminOp::CreateEndpoint(e) => {
            lock_endpoints(client).await?;
            create_endpoint(client, e, ctx.now).await?;
            changed_endpoints(client, ctx, 1).await
        }
        AdminOp::UpdateEndpoint { id, change } => {
            lock_endpoints(client).await?;
            update_endpoint(client, ctx.now, id, change).await?;
            changed_endpoints(client, ctx, 1).await
        }
        AdminOp::DeleteEndpoint { id } => {
            lock_endpoints(client).await?;
            let n = delete_endpoint(client, id, ctx.now).await?;
            changed_endpoints(client, ctx, n).await
        }
        AdminOp::Retention { cutoff, limit } => retention(client, *cutoff, *limit).await,
        AdminOp::DisableFailing { cutoff } => {
            lock_endpoints(client).await?;
            let n = client
                .execute(
                    "UPDATE endpoints SET enabled = false, updated_at = $2,
                        disabled_reason = 'failing continuously since '
                          || to_char(to_timestamp(failing_since / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                     WHERE enabled AND active AND failing_since IS NOT NULL AND failing_since < $1",
                    &[cutoff, &ctx.now],
                )
                .await? as usize;
            if n == 0 {
                return Ok(done(0));
            }
            tracing::warn!(count = n, "endpoints failing for too long were disabled");
            changed_endpoints(client, ctx, n).await
        }
    }
}

/// Takes the endpoints' lock exclusively: no batch fans out until this commits.
async fn lock_endpoints(client: &Client) -> Step<()> {
    client
        .query_one(super::sql::ENDPOINTS_EXCLUSIVE, &[])
        .await?;
    Ok(())
}

/// The endpoints changed: a new version, and the list as it is now, to publish.
async fn changed_endpoints(client: &Client, ctx: &Context<'_>, affected: usize) -> Step<Outcome> {
    let version = bump_version(client).await?;
    let endpoints = load(client, ctx.configured).await?;
    Ok(Outcome {
        done: AdminDone { affected },
        reloaded: Some((endpoints, version)),
    })
}

/// Locks transactions by id, in the order every batch locks them (tguid).
async fn lock_transactions(client: &Client, ids: &[i64]) -> Step<()> {
    client
        .query(
            "SELECT id FROM transactions WHERE id = ANY($1) ORDER BY tguid FOR UPDATE",
            &[&ids],
        )
        .await?;
    Ok(())
}

/// Makes the queue of (transaction, endpoint) consistent again: its first pending delivery is
/// the only claimable one, unless one of them is in flight (under a lease that has not run
/// out: that one stays the head, and its result promotes the next).
async fn recompute_head(client: &Client, ctx: &Context<'_>, tx: i64, endpoint: &str) -> Step<()> {
    let rows = client
        .query(
            "SELECT id, lease_owner IS NOT NULL AND next_attempt_at > $3 FROM deliveries
             WHERE tx = $1 AND endpoint_id = $2 AND status = 'pending' ORDER BY seq",
            &[&tx, &endpoint, &ctx.now],
        )
        .await?;
    let in_flight: Vec<i64> = rows
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    let heads: Vec<i64> = if in_flight.is_empty() {
        rows.first().map(|r| r.get(0)).into_iter().collect()
    } else {
        in_flight
    };
    client
        .execute(
            "UPDATE deliveries SET ready = (id = ANY($3))
             WHERE tx = $1 AND endpoint_id = $2 AND status = 'pending' AND ready IS DISTINCT FROM (id = ANY($3))",
            &[&tx, &endpoint, &heads],
        )
        .await?;
    Ok(())
}

async fn retry_delivery(client: &Client, ctx: &Context<'_>, id: i64) -> Step<Outcome> {
    let Some(row) = client
        .query_opt("SELECT tx FROM deliveries WHERE id = $1", &[&id])
        .await?
    else {
        return Err(WriteError::Missing(format!("no delivery with id {id}")).into());
    };
    let tx: i64 = row.get(0);
    lock_transactions(client, &[tx]).await?;
    let row = client
        .query_one(
            "SELECT d.tguid, d.endpoint_id, d.status,
                    d.lease_owner IS NOT NULL AND d.next_attempt_at > $2
             FROM deliveries d WHERE d.id = $1",
            &[&id, &ctx.now],
        )
        .await?;
    let (tguid, endpoint, status, leased): (String, String, String, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    match (status.as_str(), leased) {
        ("delivered", _) => {
            return Err(WriteError::Conflict(format!(
            "delivery {id} was delivered; re-send it with POST /v1/transactions/{tguid}/renotify"
        ))
            .into())
        }
        ("pending", true) => {
            return Err(
                WriteError::Conflict(format!("delivery {id} is being attempted right now")).into(),
            )
        }
        _ => {}
    }
    client
        .execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2, lease_owner = NULL
             WHERE id = $1",
            &[&id, &ctx.now],
        )
        .await?;
    recompute_head(client, ctx, tx, &endpoint).await?;
    Ok(done(1))
}

async fn endpoint_source(client: &Client, id: &str) -> Step<Option<String>> {
    Ok(client
        .query_opt("SELECT source FROM endpoints WHERE id = $1", &[&id])
        .await?
        .map(|r| r.get(0)))
}

async fn recover(client: &Client, ctx: &Context<'_>, endpoint: &str, since: i64) -> Step<Outcome> {
    if endpoint_source(client, endpoint).await?.is_none() {
        return Err(WriteError::Missing(format!("no endpoint with id {endpoint}")).into());
    }
    let txs: Vec<i64> = client
        .query(
            "SELECT DISTINCT tx FROM deliveries WHERE endpoint_id = $1 AND status = 'dead' AND last_attempt_at >= $2",
            &[&endpoint, &since],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    lock_transactions(client, &txs).await?;
    let n = client
        .execute(
            "UPDATE deliveries SET status = 'pending', ready = false, attempts = 0, next_attempt_at = $3, lease_owner = NULL
             WHERE endpoint_id = $1 AND status = 'dead' AND last_attempt_at >= $2 AND tx = ANY($4)",
            &[&endpoint, &since, &ctx.now, &txs],
        )
        .await?;
    for tx in txs {
        recompute_head(client, ctx, tx, endpoint).await?;
    }
    Ok(done(n as usize))
}

async fn renotify(
    client: &Client,
    ctx: &Context<'_>,
    tguid: &str,
    endpoint_id: Option<&str>,
) -> Step<Outcome> {
    let Some(row) = client
        .query_opt(
            "SELECT id FROM transactions WHERE tguid = $1 FOR UPDATE",
            &[&tguid],
        )
        .await?
    else {
        return Err(WriteError::NotFound(tguid.to_owned()).into());
    };
    let tx: i64 = row.get(0);
    if let Some(e) = endpoint_id {
        if endpoint_source(client, e).await?.is_none() {
            return Err(WriteError::Missing(format!("no endpoint with id {e}")).into());
        }
    }
    // Endpoints added since the notifications were recorded get them too, when subscribed.
    let endpoints = ctx
        .endpoints
        .iter()
        .map(|e| &e.endpoint)
        .filter(|e| endpoint_id.is_none_or(|id| e.id == id));
    for endpoint in endpoints {
        let missing = client
            .query(
                "SELECT n.id, n.seq, n.operation, n.status FROM notifications n
                 WHERE n.tx = $1
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.endpoint_id = $2)",
                &[&tx, &endpoint.id],
            )
            .await?;
        for n in &missing {
            let (id, seq, operation, status): (i64, i64, String, String) =
                (n.get(0), n.get(1), n.get(2), n.get(3));
            if endpoint.subscriptions.matches(&operation, &status) {
                client
                    .execute(
                        "INSERT INTO deliveries (notification_id, endpoint_id, tx, tguid, seq, status, ready, next_attempt_at)
                         VALUES ($1, $2, $3, $4, $5, 'pending', false, $6)",
                        &[&id, &endpoint.id, &tx, &tguid, &seq, &ctx.now],
                    )
                    .await?;
            }
        }
    }
    client
        .execute(
            "UPDATE deliveries SET status = 'pending', ready = false, attempts = 0, next_attempt_at = $2,
                    delivered_at = NULL, lease_owner = NULL
             WHERE notification_id IN (SELECT id FROM notifications WHERE tx = $1)
               AND status IN ('delivered', 'dead') AND ($3::text IS NULL OR endpoint_id = $3)",
            &[&tx, &ctx.now, &endpoint_id],
        )
        .await?;
    let pending: Vec<String> = client
        .query(
            "SELECT DISTINCT endpoint_id FROM deliveries
             WHERE tx = $1 AND status = 'pending' AND ($2::text IS NULL OR endpoint_id = $2)",
            &[&tx, &endpoint_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for e in &pending {
        recompute_head(client, ctx, tx, e).await?;
    }
    let queued: i64 = client
        .query_one(
            "SELECT count(*) FROM deliveries
             WHERE tx = $1 AND status = 'pending' AND ($2::text IS NULL OR endpoint_id = $2)",
            &[&tx, &endpoint_id],
        )
        .await?
        .get(0);
    Ok(done(queued as usize))
}

async fn create_endpoint(client: &Client, e: &Endpoint, now: i64) -> Step<()> {
    if endpoint_source(client, &e.id).await?.is_some() {
        return Err(WriteError::Conflict(format!("endpoint {} already exists", e.id)).into());
    }
    let secret = match &e.destination {
        Destination::Http(http) => http.secrets.first().map(Secret::expose),
        Destination::Amqp(_) => None,
    };
    client
        .execute(
            "INSERT INTO endpoints (id, url, active, enabled, updated_at, source, secret, subscriptions, format)
             VALUES ($1, $2, true, $3, $4, $5, $6, $7, $8)",
            &[
                &e.id,
                &e.shown_url(),
                &e.enabled,
                &now,
                &e.source.as_str(),
                &secret,
                &stored_patterns(&e.subscriptions),
                &e.format().as_str(),
            ],
        )
        .await?;
    Ok(())
}

async fn update_endpoint(
    client: &Client,
    now: i64,
    id: &str,
    change: &crate::endpoint::Change,
) -> Step<()> {
    let Some(source) = endpoint_source(client, id).await? else {
        return Err(WriteError::Missing(format!("no endpoint with id {id}")).into());
    };
    let config = source == "config";
    if config && (change.subscriptions.is_some() || change.format.is_some()) {
        return Err(WriteError::Conflict(format!(
            "endpoint {id} is defined in the configuration file; change its subscriptions or format there"
        ))
        .into());
    }
    if config && (change.url.is_some() || change.secret.is_some()) {
        return Err(WriteError::Conflict(format!(
            "endpoint {id} is defined in the configuration file; change its url or secret there (only enabled can be set here)"
        ))
        .into());
    }
    if let Some(subscriptions) = &change.subscriptions {
        client
            .execute(
                "UPDATE endpoints SET subscriptions = $2, updated_at = $3 WHERE id = $1",
                &[&id, &stored_patterns(subscriptions), &now],
            )
            .await?;
    }
    if let Some(format) = change.format {
        client
            .execute(
                "UPDATE endpoints SET format = $2, updated_at = $3 WHERE id = $1",
                &[&id, &format.as_str(), &now],
            )
            .await?;
    }
    if let Some(url) = &change.url {
        client
            .execute(
                "UPDATE endpoints SET url = $2, updated_at = $3 WHERE id = $1",
                &[&id, &url.as_str(), &now],
            )
            .await?;
    }
    if let Some(secret) = &change.secret {
        client
            .execute(
                "UPDATE endpoints SET secret = $2, updated_at = $3 WHERE id = $1",
                &[&id, &secret.as_ref().map(Secret::expose), &now],
            )
            .await?;
    }
    match change.enabled {
        Some(true) => {
            client
                .execute(
                    "UPDATE endpoints SET enabled = true, disabled_reason = NULL, failing_since = NULL, updated_at = $2
                     WHERE id = $1",
                    &[&id, &now],
                )
                .await?;
            // Its backlog resumes now, in order: the heads of its queues fall due (one in
            // flight keeps its lease).
            client
                .execute(
                    "UPDATE deliveries SET next_attempt_at = $2
                     WHERE endpoint_id = $1 AND status = 'pending' AND ready
                       AND NOT (lease_owner IS NOT NULL AND next_attempt_at > $2)",
                    &[&id, &now],
                )
                .await?;
        }
        Some(false) => {
            client
                .execute(
                    "UPDATE endpoints SET enabled = false, disabled_reason = 'disabled by an operator', updated_at = $2
                     WHERE id = $1",
                    &[&id, &now],
                )
                .await?;
        }
        None => {}
    }
    Ok(())
}

async fn delete_endpoint(client: &Client, id: &str, now: i64) -> Step<usize> {
    match endpoint_source(client, id).await?.as_deref() {
        None => return Err(WriteError::Missing(format!("no endpoint with id {id}")).into()),
        Some("config") => {
            return Err(WriteError::Conflict(format!(
                "endpoint {id} is defined in the configuration file; remove it there"
            ))
            .into())
        }
        Some(_) => {}
    }
    // What it had not received stays visible as dead (and recoverable if it comes back).
    let n = client
        .execute(
            "UPDATE deliveries SET status = 'dead', ready = false, last_error = 'endpoint deleted', last_attempt_at = $2
             WHERE endpoint_id = $1 AND status = 'pending'",
            &[&id, &now],
        )
        .await?;
    client
        .execute("DELETE FROM endpoints WHERE id = $1", &[&id])
        .await?;
    Ok(n as usize)
}

/// Deletes up to `limit` final transactions last changed before `cutoff` whose every
/// notification was delivered, with their log and outbox rows; skips any another instance
/// has locked (it is changing it).
async fn retention(client: &Client, cutoff: i64, limit: usize) -> Step<Outcome> {
    let doomed: Vec<i64> = client
        .query(
            "SELECT t.id FROM transactions t
             WHERE t.updated_at < $1
               AND t.state IN ('ENROLLED', 'FAILED', 'MATCH', 'NOT_MATCH', 'PERSON_NOT_FOUND')
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.tx = t.id AND d.status IN ('pending', 'dead'))
             ORDER BY t.tguid LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&cutoff, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for sql in [
        "DELETE FROM deliveries WHERE tx = ANY($1)",
        "DELETE FROM notifications WHERE tx = ANY($1)",
        "DELETE FROM transitions WHERE tx = ANY($1)",
        "DELETE FROM decisions WHERE tx = ANY($1)",
        "DELETE FROM event_ids WHERE tx = ANY($1)",
        "DELETE FROM transactions WHERE id = ANY($1)",
    ] {
        client.execute(sql, &[&doomed]).await?;
    }
    Ok(done(doomed.len()))
}

/// A 410 Gone: the attempt is counted (fenced by its lease), and the endpoint disabled.
async fn gone(
    client: &Client,
    ctx: &Context<'_>,
    id: i64,
    gen: i64,
    endpoint: &str,
) -> Step<Outcome> {
    lock_endpoints(client).await?;
    client
        .execute(
            "UPDATE deliveries SET lease_owner = NULL, attempts = attempts + 1, next_attempt_at = $2,
                    last_status = 410, last_error = '410 Gone: endpoint disabled', last_attempt_at = $2
             WHERE id = $1 AND lease_gen = $3 AND status = 'pending'",
            &[&id, &ctx.now, &gen],
        )
        .await?;
    client
        .execute(
            "UPDATE endpoints SET enabled = false, disabled_reason = '410 Gone', updated_at = $2 WHERE id = $1",
            &[&endpoint, &ctx.now],
        )
        .await?;
    tracing::warn!(endpoint = %endpoint, instance = ctx.instance, "endpoint answered 410 Gone: disabled");
    changed_endpoints(client, ctx, 1).await
}
