//! The store: one writer that group-commits many calls per transaction, and readers for
//! queries. Nothing is acknowledged before the commit that holds it. SQLite (the embedded
//! default: one writer thread owning the write connection) or PostgreSQL (`pg`: any number of
//! instances on one database), chosen at open; the `Store` handle and its commands are the
//! same for both.

mod admin;
mod decisions;
mod endpoints;
#[cfg(debug_assertions)]
pub mod fault;
pub mod file;
pub mod integrity;
mod leases;
pub mod pg;
mod reader;
mod readers;
mod schema;
mod sql;
mod writer;

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::domain::{Input, Operation, Refusal, State, Tguid};
use crate::endpoint::{self, Endpoint, Publisher, Registry};
use crate::health::Health;

pub use pg::PgTarget;
pub use reader::{
    DeliveryFilter, DeliveryListRow, DeliveryRow, EndpointRow, FeedCursor, FeedFilter, FeedRow,
    NotificationRow, QueueCount, ReadError, TransactionDetail, TransactionPage, TransitionRow,
};
pub use readers::Readers;

/// A transaction's headline, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxSummary {
    pub tguid: String,
    pub operation: Operation,
    pub state: State,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Why a write was refused or failed. Refusals leave the database as it was.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no transaction with tguid {0}")]
    NotFound(String),
    #[error("transaction {tguid} is already registered as {existing}")]
    OperationConflict { tguid: String, existing: Operation },
    #[error("event_id {0:?} was already used on this transaction with a different body")]
    EventIdReused(String),
    #[error("decision_id {0:?} was already used on this transaction with a different body")]
    DecisionIdReused(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Something other than a transaction does not exist (a delivery, an endpoint).
    #[error("{0}")]
    Missing(String),
    /// An operator action that does not fit the current state of what it acts on.
    #[error("{0}")]
    Conflict(String),
    /// The store cannot take writes for now (no space, its file gone, its server down); the
    /// caller may try again later. Nothing was written — except when the connection to the
    /// server was lost during COMMIT, when the message says that the outcome is unknown.
    #[error("the store cannot take writes now: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        if unavailable(&e) {
            WriteError::Unavailable(e.to_string())
        } else {
            WriteError::Internal(e.to_string())
        }
    }
}

/// Whether an SQLite error says that the database cannot take writes for now (no space, an
/// I/O error, its file unreadable or damaged, locked too long) rather than that the statement
/// is wrong: the caller may try again later, and gets a 503 that says so.
pub(crate) fn unavailable(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e.sqlite_error_code(),
        Some(
            C::DiskFull
                | C::SystemIoFailure
                | C::CannotOpen
                | C::ReadOnly
                | C::DatabaseCorrupt
                | C::NotADatabase
                | C::DatabaseBusy
                | C::DatabaseLocked
        )
    )
}

/// The answer to a registration.
#[derive(Debug, Clone)]
pub struct Registered {
    /// False when the same tguid and operation were registered before (a no-op repeat).
    pub created: bool,
    pub summary: TxSummary,
}

/// The answer to an accepted input.
#[derive(Debug, Clone)]
pub struct Applied {
    /// True when this repeated an `event_id` or `decision_id` already applied (nothing changed).
    pub duplicate: bool,
    pub summary: TxSummary,
    /// How many notifications the transition recorded.
    pub notifications: usize,
}

/// An input to apply, with what the transition log keeps of it.
#[derive(Debug, Clone)]
pub struct InputRequest {
    pub tguid: Tguid,
    pub input: Input,
    /// Idempotency key of a back-office event, and the fingerprint of the body it came with.
    pub event_id: Option<(String, String)>,
    pub actor: String,
}

/// What the transition log keeps of a reviewer's decision beside its input; an empty note
/// (an event, or a decision with neither) writes nothing.
#[derive(Debug, Clone, Default)]
pub struct DecisionNote {
    /// Idempotency key of the decision, and the fingerprint of the body it came with.
    pub decision_id: Option<(String, String)>,
    /// The reviewer's reason, as given.
    pub comment: Option<String>,
}

/// A delivery reserved by the dispatcher until its lease ends.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub endpoint_id: String,
    pub tguid: String,
    pub seq: i64,
    /// Attempts made before this one.
    pub attempts: u32,
    pub webhook_id: String,
    pub body: Arc<[u8]>,
    /// The body's `operation` and `status`, for AMQP routing keys and CloudEvents types.
    pub operation: String,
    pub status: String,
    /// When the notification was recorded (Unix ms): the CloudEvents `time`.
    pub created_at: i64,
}

/// A batch of claimed deliveries and when the next one not claimed now falls due.
#[derive(Debug, Default)]
pub struct Claimed {
    pub deliveries: Vec<ClaimedDelivery>,
    pub next_due: Option<i64>,
}

/// How deliveries are leased: the writer takes a slot for every delivery it hands out
/// (claimed or handed over), frees it when the attempt's result comes back, and never holds
/// more than these.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryLimits {
    /// How long a delivery handed out stays reserved (`delivery.lease`).
    pub lease_ms: i64,
    /// Deliveries in flight in all (`delivery.max_in_flight`).
    pub max_in_flight: usize,
    /// Deliveries in flight to one endpoint (`delivery.endpoint_concurrency`).
    pub endpoint_concurrency: usize,
}

impl From<&crate::config::DeliverySettings> for DeliveryLimits {
    fn from(d: &crate::config::DeliverySettings) -> Self {
        DeliveryLimits {
            lease_ms: d.lease.as_millis() as i64,
            max_in_flight: d.max_in_flight,
            endpoint_concurrency: d.endpoint_concurrency,
        }
    }
}

impl Default for DeliveryLimits {
    /// The configuration's defaults.
    fn default() -> Self {
        (&crate::config::Settings::default().delivery).into()
    }
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub enum Completion {
    Delivered {
        id: i64,
        http_status: u16,
    },
    /// Failed; try again at `next_attempt_at`.
    Retry {
        id: i64,
        http_status: Option<u16>,
        error: String,
        next_attempt_at: i64,
    },
    /// Failed and the retry schedule is used up.
    Dead {
        id: i64,
        http_status: Option<u16>,
        error: String,
    },
    /// 410 Gone: the endpoint is disabled; the delivery waits for it to be enabled again.
    Gone {
        id: i64,
        endpoint_id: String,
    },
}

impl Completion {
    /// The delivery it reports on.
    pub fn id(&self) -> i64 {
        match self {
            Completion::Delivered { id, .. }
            | Completion::Retry { id, .. }
            | Completion::Dead { id, .. }
            | Completion::Gone { id, .. } => *id,
        }
    }
}

/// An operator action (see `admin`).
#[derive(Debug, Clone)]
pub enum AdminOp {
    /// Send a dead (or waiting) delivery again now.
    RetryDelivery {
        id: i64,
    },
    /// Send again everything that went dead to an endpoint since a time (Unix ms).
    Recover {
        endpoint_id: String,
        since: i64,
    },
    /// Send a transaction's whole sequence again (to one endpoint, or to all).
    Renotify {
        tguid: String,
        endpoint_id: Option<String>,
    },
    /// Adds an endpoint defined through the API. (Boxed, as the change below: every command
    /// on the writer's channel is as large as the largest.)
    CreateEndpoint(Box<Endpoint>),
    UpdateEndpoint {
        id: String,
        change: Box<endpoint::Change>,
    },
    DeleteEndpoint {
        id: String,
    },
    /// Delete up to `limit` fully delivered final transactions last changed before `cutoff`.
    Retention {
        cutoff: i64,
        limit: usize,
    },
    /// Disable endpoints failing continuously since before `cutoff`.
    DisableFailing {
        cutoff: i64,
    },
}

/// What an operator action did.
#[derive(Debug, Clone, Default)]
pub struct AdminDone {
    /// Rows (deliveries, transactions, endpoints) it changed.
    pub affected: usize,
}

pub(crate) enum Command {
    /// Commit what is queued before it, then stop the writer thread.
    Shutdown,
    Admin {
        op: AdminOp,
        reply: oneshot::Sender<Result<AdminDone, WriteError>>,
    },
    Register {
        tguid: Tguid,
        operation: Operation,
        actor: String,
        reply: oneshot::Sender<Result<Registered, WriteError>>,
    },
    Apply {
        request: InputRequest,
        decision: DecisionNote,
        reply: oneshot::Sender<Result<Applied, WriteError>>,
    },
    Claim {
        limit: usize,
        reply: oneshot::Sender<Claimed>,
    },
    Complete {
        completions: Vec<Completion>,
    },
    Release {
        ids: Vec<i64>,
        reply: oneshot::Sender<()>,
    },
}

/// Settings the writer applies to every transition.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub synchronous_full: bool,
    pub update_label: crate::domain::UpdateLabel,
    /// The configured endpoints (the RabbitMQ sink among them). With those created through
    /// the API, they make the registry: every notification gets one delivery per endpoint
    /// subscribed to it.
    pub endpoints: Vec<Endpoint>,
    pub delivery: DeliveryLimits,
}

/// What opening the store gives: the handle, and the writer thread to join at shutdown.
pub struct Opened {
    pub store: Store,
    pub writer: std::thread::JoinHandle<()>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    commands: mpsc::Sender<Command>,
    pub readers: Readers,
    /// The endpoints, as the last COMMIT left them (the writer changes them).
    pub endpoints: Registry,
    /// Woken after a commit that made a delivery claimable (one not handed over).
    pub deliveries_ready: Arc<Notify>,
    /// Whether the store takes writes (`Component::Store`), as the writer found it.
    pub health: Health,
    /// Deliveries the writer leased as it committed them, for the dispatcher to send; taken
    /// once (`take_handoff`). Until then the writer hands nothing over and everything waits to
    /// be claimed.
    handoff: Arc<std::sync::Mutex<Option<Handoff>>>,
}

/// The dispatcher's end of the writer's direct handoff.
pub struct Handoff {
    pub deliveries: mpsc::UnboundedReceiver<ClaimedDelivery>,
    taken: Arc<std::sync::atomic::AtomicBool>,
}

/// Debug builds only: `GBDS_FAULT_WRITER_PANIC_ON=<tguid>` makes the writer thread panic when a
/// registration of that tguid reaches it, so that tests can watch what the writer's death does
/// to the process (`tests/it/operability`). Release builds have no such hook.
#[cfg(debug_assertions)]
fn fault_hook(batch: &[Command]) {
    static TGUID: std::sync::LazyLock<Option<String>> =
        std::sync::LazyLock::new(|| std::env::var("GBDS_FAULT_WRITER_PANIC_ON").ok());
    let Some(fatal) = TGUID.as_deref() else {
        return;
    };
    let hit = batch
        .iter()
        .any(|c| matches!(c, Command::Register { tguid, .. } if tguid.as_str() == fatal));
    if hit {
        panic!("fault hook: a registration of {fatal} kills the store writer (GBDS_FAULT_WRITER_PANIC_ON)");
    }
}

/// Most statements the writer's connection keeps prepared.
const STATEMENT_CACHE: usize = 128;

/// The writer's caches, sized from profiles of the closed-loop benchmark.
fn tune_caches(conn: &Connection) -> rusqlite::Result<()> {
    // rusqlite keeps 16 prepared statements by default, fewer than the writer's hot path and
    // the operator actions use: past 16 it evicted and re-prepared statements on every batch
    // (3.8 % of the writer's CPU, profiled). Every statement the writer runs fits in 128.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // SQLite's default page cache (2 MiB), on purpose. When a b-tree balance reorders pages it
    // parks one at the PENDING_BYTE page number for a moment, and the COMMIT that follows
    // then scans the whole page-cache hash table to drop it: a cost that grows with the
    // cache. At 64 MiB that scan was 7-12 % of the writer's CPU (profiled); the pages a
    // smaller cache misses are read back from the OS page cache for far less.
    conn.pragma_update(None, "cache_size", -2000)
}

fn open(path: &Path, synchronous_full: bool) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if synchronous_full { "FULL" } else { "NORMAL" },
    )?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    tune_caches(&conn)?;
    // Operator actions (and a batch re-run after a failure) run each command in a SAVEPOINT,
    // whose sub-journal would otherwise spill to temporary files; keep it in memory.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

impl Store {
    /// Opens (creating and migrating) the database, records the configured endpoints, loads
    /// the endpoint registry and starts the writer thread. Leases live in the writer's
    /// memory, so whatever a previous process had in flight is claimable at once.
    ///
    /// One process owns the file: it takes an exclusive lock on `<path>.lock` first, and
    /// refuses with [`file::InUse`] (naming the holder) when another process has it.
    pub fn open(path: &Path, options: StoreOptions) -> anyhow::Result<Opened> {
        let lock = file::FileLock::take(path)?;
        let mut conn = open(path, options.synchronous_full)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        let files = file::OpenFiles::note(path)
            .map_err(|e| anyhow::anyhow!("cannot stat {}: {e}", path.display()))?;
        let health = Health::new();
        let damaged = Arc::new(std::sync::OnceLock::new());
        match integrity::quick(&conn, path, integrity::START_BUDGET)? {
            integrity::Covered::All(took) => {
                tracing::debug!(elapsed_ms = took.as_millis() as u64, "quick check: ok");
            }
            integrity::Covered::Part => {
                tracing::info!(
                    db = %path.display(),
                    "the quick check did not finish within its start budget; it goes on in the background"
                );
                integrity::in_background(path, damaged.clone(), health.clone());
            }
        }
        schema::migrate(&mut conn)?;
        let endpoints = endpoints::sync(&mut conn, &options.endpoints)?;
        let publisher = Publisher::new(endpoints);
        let registry = publisher.registry();
        let readers = Readers::Sqlite(reader::SqliteReaders::new(
            path.to_owned(),
            options.synchronous_full,
        ));
        let (tx, rx) = mpsc::channel(4096);
        let notify = Arc::new(Notify::new());
        let (handed, deliveries) = mpsc::unbounded_channel();
        let taken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handoff = writer::HandoffSender {
            deliveries: handed,
            taken: taken.clone(),
        };

        let guard = writer::Guard {
            lock: Some(lock),
            files: Some(files),
            health: health.clone(),
            damaged,
        };
        let handle = writer::spawn(conn, rx, options, publisher, notify.clone(), handoff, guard)?;
        Ok(Opened {
            store: Store {
                commands: tx,
                readers,
                endpoints: registry,
                deliveries_ready: notify,
                health,
                handoff: Arc::new(std::sync::Mutex::new(Some(Handoff { deliveries, taken }))),
            },
            writer: handle,
        })
    }

    /// Opens the PostgreSQL store shared by every instance (CONTRACT §5): connects, creates or
    /// upgrades the schema (one instance at a time), records the configured endpoints, takes
    /// back the leases this instance held before a restart, and starts the writer thread.
    pub async fn open_postgres(target: &PgTarget, options: StoreOptions) -> anyhow::Result<Opened> {
        let parts = pg::open(target, options).await?;
        Ok(Opened {
            store: Store {
                commands: parts.commands,
                readers: Readers::Postgres(parts.readers),
                endpoints: parts.endpoints,
                deliveries_ready: parts.deliveries_ready,
                health: parts.health,
                handoff: Arc::new(std::sync::Mutex::new(Some(parts.handoff))),
            },
            writer: parts.writer,
        })
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, WriteError> {
        let (reply, answer) = oneshot::channel();
        // Without its writer this process takes no write again (it exits for a restart); the
        // caller may try again, here later or at another instance.
        self.commands.send(make(reply)).await.map_err(|_| {
            WriteError::Unavailable("the store writer has stopped; nothing was written".into())
        })?;
        answer.await.map_err(|_| {
            WriteError::Unavailable(
                "the store writer stopped before answering, so whether this call was recorded \
                 is unknown: repeat it (an event_id or decision_id makes a repeat safe)"
                    .into(),
            )
        })
    }

    pub async fn register(
        &self,
        tguid: Tguid,
        operation: Operation,
        actor: String,
    ) -> Result<Registered, WriteError> {
        self.ask(|reply| Command::Register {
            tguid,
            operation,
            actor,
            reply,
        })
        .await?
    }

    pub async fn apply(&self, request: InputRequest) -> Result<Applied, WriteError> {
        self.decide(request, DecisionNote::default()).await
    }

    /// [`Store::apply`] for a reviewer's decision, kept in the log with its note; a repeat of
    /// its `decision_id` with the same body changes nothing.
    pub async fn decide(
        &self,
        request: InputRequest,
        decision: DecisionNote,
    ) -> Result<Applied, WriteError> {
        let applied = self
            .ask(|reply| Command::Apply {
                request,
                decision,
                reply,
            })
            .await??;
        if !applied.duplicate {
            crate::telemetry::notifications_recorded(applied.notifications);
        }
        Ok(applied)
    }

    /// Leases up to `limit` due deliveries, each the first pending one of its queue, within
    /// the free slots of their endpoints.
    pub async fn claim(&self, limit: usize) -> Claimed {
        self.ask(|reply| Command::Claim { limit, reply })
            .await
            .unwrap_or_default()
    }

    /// The deliveries the writer will hand over as it commits them (once; `None` after).
    /// Whoever takes this must send each one and report it with `complete`, or `release` it.
    pub fn take_handoff(&self) -> Option<Handoff> {
        let h = self.handoff.lock().expect("handoff").take()?;
        h.taken.store(true, std::sync::atomic::Ordering::SeqCst);
        Some(h)
    }

    /// Runs an operator action; answered after its commit.
    pub async fn admin(&self, op: AdminOp) -> Result<AdminDone, WriteError> {
        self.ask(|reply| Command::Admin { op, reply }).await?
    }

    /// Stops the writer after it committed everything sent before; join its thread next.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }

    /// Records attempt results; they are committed with the next batch.
    pub async fn complete(&self, completions: Vec<Completion>) {
        let _ = self.commands.send(Command::Complete { completions }).await;
    }

    /// Gives back leases of deliveries that were claimed but not attempted (at shutdown).
    pub async fn release(&self, ids: Vec<i64>) {
        let _ = self.ask(|reply| Command::Release { ids, reply }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_of_the_writer_stays_prepared() {
        // Each `prepare_cached(` call site is one statement text (or a few, for the
        // `statement` helper's transaction-control texts, counted below).
        let sites: usize = [
            include_str!("writer/mod.rs"),
            include_str!("writer/transitions.rs"),
            include_str!("writer/fanout.rs"),
            include_str!("writer/queue.rs"),
            include_str!("endpoints.rs"),
            include_str!("admin.rs"),
            include_str!("decisions.rs"),
        ]
        .iter()
        .map(|src| src.matches("prepare_cached(").count())
        .sum();
        let control = [
            "BEGIN IMMEDIATE",
            "COMMIT",
            "ROLLBACK",
            "PRAGMA synchronous",
        ]
        .len()
            + 4;
        assert!(
            sites + control <= STATEMENT_CACHE,
            "{sites} call sites + {control} control statements exceed the cache of {STATEMENT_CACHE}"
        );

        let conn = Connection::open_in_memory().unwrap();
        tune_caches(&conn).unwrap();
        let size: i64 = conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(size, -2000, "the page cache is SQLite's default 2 MiB");
        // A statement the cache evicts is finalized: after STATEMENT_CACHE distinct ones were
        // used and handed back, all of them must still be alive on the connection.
        for i in 0..STATEMENT_CACHE {
            conn.prepare_cached(&format!("SELECT {i}")).unwrap();
        }
        let mut alive = 0;
        // SAFETY: walks the connection's statement list without touching the statements; no
        // statement is created or finalized meanwhile (this thread owns the connection).
        unsafe {
            let db = conn.handle();
            let mut stmt = rusqlite::ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
            while !stmt.is_null() {
                alive += 1;
                stmt = rusqlite::ffi::sqlite3_next_stmt(db, stmt);
            }
        }
        assert_eq!(alive, STATEMENT_CACHE, "statements kept prepared");
    }
}
