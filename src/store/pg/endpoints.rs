//! The `endpoints` table on PostgreSQL: the start-up sync of the configured endpoints, the
//! active ones read back (by the same conversion as on SQLite), and the version that every
//! change bumps, by which each instance knows its registry is stale.

use tokio_postgres::GenericClient;

use crate::clock::now_ms;
use crate::endpoint::Endpoint;
use crate::store::endpoints::{stored_patterns, StoredEndpoint};

/// Records the configured endpoints (those no longer configured stay listed, inactive),
/// bumps the version, and reads back every active endpoint and the version.
pub(super) async fn sync(
    client: &mut tokio_postgres::Client,
    configured: &[Endpoint],
) -> Result<(Vec<Endpoint>, i64), tokio_postgres::Error> {
    let now = now_ms();
    let tx = client.transaction().await?;
    // One instance at a time (they start together in a cluster).
    let _ = tx
        .query_one("SELECT version FROM endpoints_version FOR UPDATE", &[])
        .await?;
    tx.execute(
        "UPDATE endpoints SET active = false WHERE source = 'config'",
        &[],
    )
    .await?;
    for e in configured {
        let patterns = stored_patterns(&e.subscriptions);
        tx.execute(
            "INSERT INTO endpoints (id, url, active, enabled, updated_at, subscriptions, format)
             VALUES ($1, $2, true, true, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, active = true, source = 'config',
                 secret = NULL, updated_at = excluded.updated_at,
                 subscriptions = excluded.subscriptions, format = excluded.format",
            &[&e.id, &e.shown_url(), &now, &patterns, &e.format().as_str()],
        )
        .await?;
    }
    let version = bump_version(&tx).await?;
    let endpoints = load(&tx, configured).await?;
    tx.commit().await?;
    Ok((endpoints, version))
}

/// Marks a change of the endpoints in the open transaction (which must hold the version row
/// FOR UPDATE, or takes it here); returns the new version.
pub(super) async fn bump_version(
    client: &impl GenericClient,
) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "UPDATE endpoints_version SET version = version + 1 RETURNING version",
            &[],
        )
        .await?
        .get(0))
}

/// The active endpoints as the open transaction has them.
pub(super) async fn load(
    client: &impl GenericClient,
    configured: &[Endpoint],
) -> Result<Vec<Endpoint>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, source, url, secret, subscriptions, format, enabled FROM endpoints
             WHERE active ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            StoredEndpoint {
                id: r.get(0),
                source: r.get(1),
                url: r.get(2),
                secret: r.get(3),
                subscriptions: r.get(4),
                format: r.get(5),
                enabled: r.get(6),
            }
            .into_endpoint(configured)
        })
        .collect())
}
