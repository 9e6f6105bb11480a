//! The PostgreSQL store: any number of instances share one database (CONTRACT §5). Each runs
//! the same shape as on SQLite — one writer that group-commits the calls of its instance, and
//! answers them only after COMMIT — but locks the rows it decides on, so that instances
//! serialise per transaction, and keeps delivery leases in the database, fenced by a
//! generation, so that another instance can take over what a killed one held.
//!
//! - `schema`: the migrations, run under an advisory lock.
//! - `writer`: the writer thread: batches, the connection, outages and recovery.
//! - `batch`: one group commit: registrations, inputs, fan-out, results and claims.
//! - `admin`: the operator actions and jobs, each in a transaction of its own.
//! - `endpoints`: the `endpoints` table and the version that tells instances it changed.
//! - `reader`: the GET routes' queries on a pool of connections, and the feed in commit order.
//! - `statistics`: `ANALYZE` of the writer's tables as they grow, so its plans keep up.

mod admin;
mod batch;
mod endpoints;
mod queue;
mod reader;
mod schema;
mod sql;
mod statistics;
mod view;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_postgres::error::SqlState;

pub use reader::PgReaders;

use super::{Command, StoreOptions};
use crate::endpoint::{Publisher, Registry};
use crate::health::Health;

/// How long connecting to PostgreSQL may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the PostgreSQL store is and which instance this process is.
#[derive(Clone)]
pub struct PgTarget {
    /// A `postgres://` URL (tokio-postgres syntax; TLS is not supported).
    pub url: String,
    /// What this instance's leases are recorded under: stable across restarts of the same
    /// instance (its host and listening port), so that a restarted instance takes back at once
    /// what it held when it died, and unique among live instances (two processes cannot listen
    /// on one port of one host).
    pub instance: String,
}

impl PgTarget {
    /// The target for the instance listening on `listen` of this host.
    pub fn for_listener(url: &str, listen: std::net::SocketAddr) -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        PgTarget {
            url: url.to_owned(),
            instance: format!("{host}:{listen}"),
        }
    }
}

/// The connection settings of `url`, with the defaults the store relies on.
pub(super) fn config(url: &str) -> anyhow::Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| anyhow::anyhow!("store.postgres_url is not a PostgreSQL URL: {e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // A server gone without a word (a cut cable) is noticed within a minute, not hours.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    if config.get_application_name().is_none() {
        config.application_name("gbds-notifier");
    }
    Ok(config)
}

/// Opens a connection and drives it on the current runtime until it closes.
pub(super) async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Why a statement or a transaction failed, as the writer must treat it.
#[derive(Debug)]
pub(super) enum Failure {
    /// The server cannot be reached (or is shutting down, or out of connections): nothing
    /// of the open transaction was committed; the calls may be tried again later.
    Unreachable(String),
    /// A deadlock or serialization failure with another instance: run the batch again.
    Conflict(String),
    /// A statement was refused (a bug or a value the database cannot store).
    Statement(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        let text = e.to_string();
        let detail = match e.as_db_error() {
            Some(db) => format!("{text}: {}", db.message()),
            None => text,
        };
        if e.is_closed() {
            return Failure::Unreachable(detail);
        }
        match e.code() {
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => Failure::Conflict(detail),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => Failure::Conflict(detail),
            // Connection exceptions, operator intervention (shutdown), too many connections.
            Some(c)
                if ["08", "57", "53"]
                    .iter()
                    .any(|class| c.code().starts_with(class)) =>
            {
                Failure::Unreachable(detail)
            }
            Some(_) => Failure::Statement(detail),
            // No SQLSTATE: an I/O error, or a value that would not convert.
            None if std::error::Error::source(&e)
                .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()) =>
            {
                Failure::Unreachable(detail)
            }
            None => Failure::Statement(detail),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(e) => write!(f, "PostgreSQL is unreachable: {e}"),
            Failure::Conflict(e) => write!(f, "conflict with another instance: {e}"),
            Failure::Statement(e) => write!(f, "{e}"),
        }
    }
}

/// What opening the PostgreSQL store gives `Store::open_postgres`.
pub(super) struct OpenedParts {
    pub commands: mpsc::Sender<Command>,
    pub readers: PgReaders,
    pub endpoints: Registry,
    pub deliveries_ready: Arc<Notify>,
    pub handoff: super::Handoff,
    pub health: Health,
    pub writer: std::thread::JoinHandle<()>,
}

/// Gives back every lease the database records for `instance` but those on `keep`: the
/// deliveries are due at once, for any instance to claim. Returns how many were given back.
async fn give_back_leases(
    client: &tokio_postgres::Client,
    instance: &str,
    keep: &[i64],
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE deliveries SET lease_owner = NULL, next_attempt_at = LEAST(next_attempt_at, $2)
             WHERE status = 'pending' AND lease_owner = $1 AND NOT (id = ANY($3))",
            &[&instance, &crate::clock::now_ms(), &keep],
        )
        .await
}

/// Connects, migrates, records the configured endpoints, gives back this instance's own
/// leases (a restarted instance's previous self is dead), and starts the writer thread.
pub(super) async fn open(target: &PgTarget, options: StoreOptions) -> anyhow::Result<OpenedParts> {
    let config = config(&target.url)?;
    let mut client = connect(&config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL (store.postgres_url): {e}"))?;
    schema::migrate(&mut client).await?;
    let (endpoints, version) = endpoints::sync(&mut client, &options.endpoints).await?;
    let voided = give_back_leases(&client, &target.instance, &[]).await?;
    if voided > 0 {
        tracing::info!(
            deliveries = voided,
            instance = %target.instance,
            "took back the leases this instance held before it restarted"
        );
    }
    drop(client);
    let publisher = Publisher::new(endpoints);
    let registry = publisher.registry();
    let readers = PgReaders::new(config.clone());
    let (commands, received) = mpsc::channel(4096);
    let notify = Arc::new(Notify::new());
    let (handed, deliveries) = mpsc::unbounded_channel();
    let taken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health = Health::new();
    let writer = writer::spawn(writer::Start {
        config,
        instance: target.instance.clone(),
        options,
        publisher,
        endpoints_version: version,
        ready: notify.clone(),
        handoff: super::writer::HandoffSender {
            deliveries: handed,
            taken: taken.clone(),
        },
        health: health.clone(),
        commands: received,
    })?;
    Ok(OpenedParts {
        commands,
        readers,
        endpoints: registry,
        deliveries_ready: notify,
        handoff: super::Handoff { deliveries, taken },
        health,
        writer,
    })
}
