//! The `endpoints` table: how an [`Endpoint`] is stored and read back, and the start-up sync
//! that records the configured endpoints. The writer builds the endpoint registry from what
//! this reads; operator actions write endpoint rows with these encodings.

use rusqlite::{params, Connection};

use crate::clock::now_ms;
use crate::domain::Subscriptions;
use crate::endpoint::{self, Destination, Endpoint, HttpDestination, Source};
use crate::secret::Secret;

/// Start-up work on the write connection: records the configured endpoints (those no longer
/// configured stay listed, inactive) and reads back every active one.
pub(super) fn sync(
    conn: &mut Connection,
    configured: &[Endpoint],
) -> rusqlite::Result<Vec<Endpoint>> {
    let now = now_ms();
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE endpoints SET active = 0 WHERE source = 'config'",
        [],
    )?;
    for e in configured {
        let patterns = stored_patterns(&e.subscriptions);
        tx.execute(
            "INSERT INTO endpoints (id, url, active, enabled, updated_at, subscriptions, format) VALUES (?1, ?2, 1, 1, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET url = excluded.url, active = 1, source = 'config', secret = NULL,
                                           updated_at = excluded.updated_at, subscriptions = excluded.subscriptions,
                                           format = excluded.format",
            params![e.id, e.shown_url(), now, patterns, e.format().as_str()],
        )?;
    }
    let endpoints = load(&tx, configured)?;
    tx.commit()?;
    Ok(endpoints)
}

/// The active endpoints as the open transaction has them: the configured ones as the
/// configuration defines them (the row adds whether each is enabled), the API ones from
/// their rows. A row that cannot make an endpoint is logged and left out.
pub(super) fn load(conn: &Connection, configured: &[Endpoint]) -> rusqlite::Result<Vec<Endpoint>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, source, url, secret, subscriptions, format, enabled FROM endpoints
         WHERE active = 1 ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredEndpoint {
            id: r.get(0)?,
            source: r.get(1)?,
            url: r.get(2)?,
            secret: r.get(3)?,
            subscriptions: r.get(4)?,
            format: r.get(5)?,
            enabled: r.get(6)?,
        })
    })?;
    let mut endpoints = Vec::new();
    for row in rows {
        endpoints.extend(row?.into_endpoint(configured));
    }
    Ok(endpoints)
}

/// An `endpoints` row, as `load` reads it (from either database).
pub(super) struct StoredEndpoint {
    pub id: String,
    pub source: String,
    pub url: String,
    pub secret: Option<String>,
    pub subscriptions: Option<String>,
    pub format: String,
    pub enabled: bool,
}

impl StoredEndpoint {
    /// The endpoint this row makes: a configured one as the configuration defines it (the
    /// row adds whether it is enabled), an API one from the row. A row that cannot make one
    /// is logged and gives none.
    pub fn into_endpoint(self, configured: &[Endpoint]) -> Option<Endpoint> {
        let endpoint = match Source::parse(&self.source) {
            Some(Source::Config) => match configured.iter().find(|e| e.id == self.id) {
                Some(e) => Ok(Endpoint {
                    enabled: self.enabled,
                    ..e.clone()
                }),
                None => Err("it is no longer in the configuration".to_owned()),
            },
            Some(Source::Api) => self.api_endpoint(),
            None => Err(format!("its source {:?} is unknown", self.source)),
        };
        match endpoint {
            Ok(e) => Some(e),
            Err(why) => {
                tracing::error!(endpoint = %self.id, %why, "stored endpoint is invalid; skipped");
                None
            }
        }
    }

    /// An endpoint created through the API: everything it is was checked before it was stored.
    fn api_endpoint(&self) -> Result<Endpoint, String> {
        let url = endpoint::parse_http_url(&self.url)?;
        let format = endpoint::Format::parse(&self.format)?;
        Ok(Endpoint {
            id: self.id.clone(),
            source: Source::Api,
            destination: Destination::Http(HttpDestination {
                url,
                secrets: self.secret.iter().map(Secret::new).collect(),
                auth: None,
                format,
            }),
            subscriptions: stored_subscriptions(&self.id, self.subscriptions.as_deref()),
            enabled: self.enabled,
        })
    }
}

/// Patterns were checked before they were stored; should one not parse now, the endpoint
/// gets everything rather than silently missing notifications.
fn stored_subscriptions(endpoint: &str, json: Option<&str>) -> Subscriptions {
    let Some(json) = json else {
        return Subscriptions::All;
    };
    let parsed = serde_json::from_str::<Vec<String>>(json)
        .map_err(|e| e.to_string())
        .and_then(|list| Subscriptions::parse(&list).map_err(|(_, e)| e.to_string()));
    parsed.unwrap_or_else(|why| {
        tracing::error!(%endpoint, %why, "stored subscriptions are invalid; the endpoint receives every notification");
        Subscriptions::All
    })
}

/// Subscriptions as the `endpoints` table keeps them: a JSON list of patterns, NULL for all.
pub(super) fn stored_patterns(subscriptions: &Subscriptions) -> Option<String> {
    subscriptions
        .patterns()
        .map(|p| serde_json::to_string(&p).expect("strings serialize"))
}
