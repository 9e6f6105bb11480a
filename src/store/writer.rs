//! The single writer: drains queued commands into one SQLite transaction (group commit), runs
//! the state machine inside it, and answers every caller only after COMMIT returns.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, Notify};

use super::leases::Leases;
use super::{
    admin, AdminDone, AdminOp, Applied, Claimed, ClaimedDelivery, Command, Completion,
    InputRequest, Registered, StoreOptions, TxSummary, WriteError,
};
use crate::clock::now_ms;
use crate::domain::{self, Operation, State, Subscriptions, Tguid};
use crate::endpoint::{self, Destination, Endpoint, HttpDestination, Publisher, Snapshot, Source};
use crate::secret::Secret;

/// Most commands in one SQLite transaction; bounds the latency a batch adds to its first caller.
const MAX_BATCH: usize = 1024;

/// Whether a new delivery of a (transaction, endpoint) would be its queue's head: no earlier
/// one is pending (`deliveries_queue`). Asked before the insert, rather than inside it with
/// `RETURNING`: SQLite gathers a `RETURNING` statement's rows in an ephemeral table, a b-tree
/// created and destroyed per statement, which cost the writer more than this second lookup.
pub(crate) const DELIVERY_IS_HEAD: &str =
    "SELECT NOT EXISTS (SELECT 1 FROM deliveries WHERE tx = ?1 AND endpoint_id = ?2 AND status = 'pending')";

/// A new delivery, claimable (`ready`) only when it is its queue's head (`DELIVERY_IS_HEAD`).
pub(crate) const INSERT_DELIVERY: &str =
    "INSERT INTO deliveries (notification_id, endpoint_id, tx, tguid, seq, status, ready, next_attempt_at)
     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)";

/// The first pending delivery of a (transaction, endpoint): the one to make claimable next.
pub(crate) const NEXT_PENDING: &str = "SELECT id FROM deliveries
     WHERE tx = ?1 AND endpoint_id = ?2 AND status = 'pending'
     ORDER BY seq LIMIT 1";

/// A pending delivery's queue, looked up before its result is recorded (not with `RETURNING`:
/// see `DELIVERY_IS_HEAD`).
pub(crate) const PENDING_DELIVERY: &str =
    "SELECT tx, endpoint_id FROM deliveries WHERE id = ?1 AND status = 'pending'";

/// A transaction's row, found by its tguid: what every call reads first.
pub(crate) const TRANSACTION_BY_TGUID: &str =
    "SELECT operation, state, created_at, updated_at, next_seq, id FROM transactions WHERE tguid = ?1";

/// One step of a transaction's history.
pub(crate) const INSERT_TRANSITION: &str =
    "INSERT INTO transitions (tx, tguid, from_state, to_state, input, uguid, actor, event_id, at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// A registered transaction, PROCESSING.
pub(crate) const INSERT_TRANSACTION: &str =
    "INSERT INTO transactions (tguid, operation, state, created_at, updated_at, next_seq)
     VALUES (?1, ?2, 'PROCESSING', ?3, ?3, 1)";

/// A transaction's new state and next notification number.
pub(crate) const ADVANCE_TRANSACTION: &str =
    "UPDATE transactions SET state = ?2, updated_at = ?3, next_seq = ?4 WHERE id = ?1";

/// A notification, numbered in its transaction.
pub(crate) const INSERT_NOTIFICATION: &str =
    "INSERT INTO notifications (tx, tguid, seq, webhook_id, operation, status, body, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// A delivery's last result: delivered or dead.
pub(crate) const FINISH_DELIVERY: &str =
    "UPDATE deliveries SET status = ?2, ready = 0, leased = 0, attempts = attempts + 1,
     last_status = ?3, last_error = ?4, last_attempt_at = ?5,
     delivered_at = CASE WHEN ?2 = 'delivered' THEN ?5 END
     WHERE id = ?1";

/// A failed attempt, to be retried at `next_attempt_at`.
const RETRY_DELIVERY: &str =
    "UPDATE deliveries SET leased = 0, attempts = attempts + 1, next_attempt_at = ?2,
     last_status = ?3, last_error = ?4, last_attempt_at = ?5
     WHERE id = ?1";

/// A queue's new head, claimable now.
pub(crate) const MAKE_READY: &str = "UPDATE deliveries SET ready = 1 WHERE id = ?1";

/// What a command produced, held back until the batch commits; then sent to its caller.
enum Outcome {
    Register(Result<Registered, WriteError>),
    Apply(Result<Applied, WriteError>),
    Claim(Claimed),
    Admin(Result<AdminDone, WriteError>),
    /// Complete, Release and Shutdown: nothing to report but having been committed.
    Done,
}

/// Answers a command's caller; when the commit failed, every write becomes an error instead.
fn answer(command: Command, outcome: Outcome, commit_error: Option<&str>) {
    let failed = || WriteError::Internal(format!("commit failed: {}", commit_error.unwrap_or("")));
    let committed = commit_error.is_none();
    match (command, outcome) {
        (Command::Register { reply, .. }, Outcome::Register(r)) => {
            let _ = reply.send(if committed { r } else { Err(failed()) });
        }
        (Command::Apply { reply, .. }, Outcome::Apply(r)) => {
            let _ = reply.send(if committed { r } else { Err(failed()) });
        }
        (Command::Claim { reply, .. }, Outcome::Claim(c)) => {
            let _ = reply.send(if committed { c } else { Claimed::default() });
        }
        (Command::Admin { reply, .. }, Outcome::Admin(r)) => {
            let _ = reply.send(if committed { r } else { Err(failed()) });
        }
        (Command::Release { reply, .. }, _) => {
            let _ = reply.send(());
        }
        (Command::Complete { .. } | Command::Shutdown, _) => {}
        (command, _) => refuse(
            command,
            "internal error: a command got another kind's answer",
        ),
    }
}

/// Answers a command that could not run at all.
fn refuse(command: Command, why: &str) {
    let e = || WriteError::Internal(why.to_owned());
    match command {
        Command::Register { reply, .. } => drop(reply.send(Err(e()))),
        Command::Apply { reply, .. } => drop(reply.send(Err(e()))),
        Command::Claim { reply, .. } => drop(reply.send(Claimed::default())),
        Command::Release { reply, .. } => drop(reply.send(())),
        Command::Admin { reply, .. } => drop(reply.send(Err(e()))),
        Command::Complete { .. } | Command::Shutdown => {}
    }
}

/// How a batch runs its commands.
#[derive(Clone, Copy, PartialEq)]
enum Isolation {
    /// No savepoints (the common case): every refusal is decided before a command writes, so
    /// a refused command has changed nothing. A command that fails *after* writing (an SQL
    /// error) aborts the pass; the batch is rolled back and run again `PerCommand`.
    Optimistic,
    /// Each command in its own savepoint, so a failure undoes only that command's writes.
    PerCommand,
}

/// Why a pass over the batch stopped before its commit.
enum PassAborted {
    CannotBegin(String),
    /// An optimistic pass met a command that failed after writing; it was rolled back.
    CommandFailed,
}

/// Whether a failed command failed before it wrote anything: the refusals of the state
/// machine and of registration are decided on what was read. Storage errors (`Internal`) can
/// come after a write, so they are never taken for clean.
fn refused_before_writing(outcome: &Outcome) -> bool {
    let clean = |e: &WriteError| {
        matches!(
            e,
            WriteError::NotFound(_)
                | WriteError::OperationConflict { .. }
                | WriteError::EventIdReused(_)
                | WriteError::Refused(_)
        )
    };
    match outcome {
        Outcome::Register(Err(e)) | Outcome::Apply(Err(e)) => clean(e),
        _ => false,
    }
}

/// The writer's own columns of a transaction row.
struct TxRow {
    /// What child rows reference it by.
    id: i64,
    /// The sequence number of its next notification.
    next_seq: i64,
}

/// One command's result inside a batch.
struct Executed {
    outcome: Outcome,
    /// It succeeded and its writes must be kept.
    ok: bool,
    /// Deliveries may have become claimable.
    woke: bool,
}

struct Writer {
    conn: Connection,
    options: StoreOptions,
    /// The endpoints a new notification may be queued for (config and API ones), each with
    /// what it subscribed to: it gets a delivery only when its subscriptions match.
    endpoints: BatchEndpoints,
    /// The deliveries the dispatcher holds (claimed or handed over, not completed), and the
    /// slots they take.
    leases: Leases,
    /// What `PRAGMA synchronous` is now: FULL (true) or NORMAL. Batches that acknowledge a
    /// call commit FULL (when configured); the others need no fsync of their own.
    synced_full: bool,
    handoff: HandoffSender,
    /// The last health each endpoint was noted with in the open transaction
    /// (`note_endpoint_health`): noting it again changes nothing, so it is skipped.
    health_noted: Vec<(String, bool)>,
    /// Queue heads the batch made, to hand over once it has committed: new ones with what
    /// they send (in hand), and promoted ones (read back after the commit). Recorded whether
    /// or not a dispatcher took the handoff: `hand_over` then says they wait to be claimed.
    fresh: Vec<ClaimedDelivery>,
    promoted: Vec<(i64, String)>,
    /// Leases taken by the batch's claims: given back if the batch does not commit (its
    /// claims are answered empty then).
    claimed: Vec<i64>,
    /// Claimable deliveries were left in the database for want of a slot: freeing one wakes
    /// the dispatcher to claim them.
    waiting_for_slots: bool,
}

/// The writer's end of the handoff to the dispatcher.
pub(super) struct HandoffSender {
    pub deliveries: mpsc::UnboundedSender<ClaimedDelivery>,
    /// Whether the dispatcher took the other end (`Store::take_handoff`).
    pub taken: Arc<std::sync::atomic::AtomicBool>,
}

impl HandoffSender {
    fn open(&self) -> bool {
        self.taken.load(std::sync::atomic::Ordering::SeqCst) && !self.deliveries.is_closed()
    }
}

/// The endpoint registry as the writer sees it: what it last published, and what the open
/// transaction changed of it. A command that changes an endpoint in the database changes the
/// list here too (`reload`), so later commands of the batch fan out by it; the list is
/// published only once the batch has committed, and forgotten if it does not.
struct BatchEndpoints {
    publisher: Publisher,
    /// What readers see now.
    published: Snapshot,
    /// The configured endpoints as the configuration defines them; the database adds only
    /// whether each is enabled.
    configured: Vec<Endpoint>,
    /// The list as the open transaction has it, once a command in it changed an endpoint.
    changed: Option<Snapshot>,
}

impl BatchEndpoints {
    fn new(publisher: Publisher, configured: Vec<Endpoint>) -> Self {
        BatchEndpoints {
            published: publisher.current(),
            publisher,
            configured,
            changed: None,
        }
    }

    /// The endpoints as the open transaction has them.
    fn now(&self) -> &Snapshot {
        self.changed.as_ref().unwrap_or(&self.published)
    }

    /// Reads the endpoints again after a command changed them in the open transaction.
    fn reload(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let endpoints = load_endpoints(conn, &self.configured)?;
        self.changed = Some(self.now().succeeded_by(endpoints));
        Ok(())
    }

    /// The batch committed: what it changed is what everyone sees from now on.
    fn publish(&mut self) {
        if let Some(snapshot) = self.changed.take() {
            self.publisher.publish(snapshot.clone());
            self.published = snapshot;
        }
    }

    /// The batch (or a command) was undone: so is what it changed here.
    fn forget(&mut self) {
        self.changed = None;
    }
}

/// The active endpoints as the open transaction has them: the configured ones as the
/// configuration defines them (the row adds whether each is enabled), the API ones from
/// their rows. A row that cannot make an endpoint is logged and left out.
fn load_endpoints(conn: &Connection, configured: &[Endpoint]) -> rusqlite::Result<Vec<Endpoint>> {
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
        let row = row?;
        let endpoint = match Source::parse(&row.source) {
            Some(Source::Config) => match configured.iter().find(|e| e.id == row.id) {
                Some(e) => Ok(Endpoint {
                    enabled: row.enabled,
                    ..e.clone()
                }),
                None => Err("it is no longer in the configuration".to_owned()),
            },
            Some(Source::Api) => row.api_endpoint(),
            None => Err(format!("its source {:?} is unknown", row.source)),
        };
        match endpoint {
            Ok(e) => endpoints.push(e),
            Err(why) => {
                tracing::error!(endpoint = %row.id, %why, "stored endpoint is invalid; skipped")
            }
        }
    }
    Ok(endpoints)
}

/// An `endpoints` row, as `load_endpoints` reads it.
struct StoredEndpoint {
    id: String,
    source: String,
    url: String,
    secret: Option<String>,
    subscriptions: Option<String>,
    format: String,
    enabled: bool,
}

impl StoredEndpoint {
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

/// Start-up work on the write connection: records the configured endpoints (those no longer
/// configured stay listed, inactive) and reads back every active one.
pub(super) fn sync_endpoints(
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
        let patterns = admin::stored_patterns(&e.subscriptions);
        tx.execute(
            "INSERT INTO endpoints (id, url, active, enabled, updated_at, subscriptions, format) VALUES (?1, ?2, 1, 1, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET url = excluded.url, active = 1, source = 'config', secret = NULL,
                                           updated_at = excluded.updated_at, subscriptions = excluded.subscriptions,
                                           format = excluded.format",
            params![e.id, e.shown_url(), now, patterns, e.format().as_str()],
        )?;
    }
    let endpoints = load_endpoints(&tx, configured)?;
    tx.commit()?;
    Ok(endpoints)
}

pub(super) fn spawn(
    conn: Connection,
    mut commands: mpsc::Receiver<Command>,
    mut options: StoreOptions,
    publisher: Publisher,
    ready: Arc<Notify>,
    handoff: HandoffSender,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let endpoints = BatchEndpoints::new(publisher, std::mem::take(&mut options.endpoints));
            let synced_full = options.synchronous_full;
            let leases = Leases::new(options.delivery);
            let mut writer = Writer {
                conn,
                options,
                endpoints,
                leases,
                synced_full,
                handoff,
                health_noted: Vec::new(),
                fresh: Vec::new(),
                promoted: Vec::new(),
                claimed: Vec::new(),
                waiting_for_slots: false,
            };
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = commands.blocking_recv() {
                batch.push(first);
                drain(&mut commands, &mut batch);
                let mut stop = batch.iter().any(|c| matches!(c, Command::Shutdown));
                let woke = writer.run_batch_joining(&mut batch, &mut |batch| {
                    let from = batch.len();
                    drain(&mut commands, batch);
                    stop |= batch[from..].iter().any(|c| matches!(c, Command::Shutdown));
                });
                if woke {
                    ready.notify_one();
                }
                if stop {
                    break;
                }
            }
            tracing::debug!("store writer stopped");
        })
}

/// Moves what is queued into the batch, up to `MAX_BATCH`.
fn drain(commands: &mut mpsc::Receiver<Command>, batch: &mut Vec<Command>) {
    while batch.len() < MAX_BATCH {
        match commands.try_recv() {
            Ok(c) => batch.push(c),
            Err(_) => break,
        }
    }
}

impl Writer {
    /// Runs a batch in one transaction; returns whether deliveries became claimable.
    #[cfg(test)]
    fn run_batch(&mut self, batch: &mut Vec<Command>) -> bool {
        self.run_batch_joining(batch, &mut |_| {})
    }

    /// Runs a batch in one transaction, as [`Writer::run_batch`]; before its COMMIT, the
    /// commands that reached the queue while it ran (`more` moves them into the batch) join
    /// it, as long as some keep coming. They would otherwise wait for this commit and then
    /// for one of their own: under load, a call arrives every few tens of µs and a commit's
    /// fsync takes hundreds, so joining is what fills a commit.
    fn run_batch_joining(
        &mut self,
        batch: &mut Vec<Command>,
        more: &mut dyn FnMut(&mut Vec<Command>),
    ) -> bool {
        let now = now_ms();
        tracing::trace!(commands = batch.len(), "write batch");
        if let Err(e) = self.sync_for(batch) {
            tracing::error!(error = %e, "cannot set PRAGMA synchronous; the batch is refused");
            for c in batch.drain(..) {
                refuse(c, &format!("storage error: {e}"));
            }
            return false;
        }
        let mut result = self.run_pass(batch, now, Isolation::Optimistic);
        // A batch of only delivery results commits without an fsync (`sync_for`): calls
        // cannot join it. Nor can more than a batch's worth of commands.
        let joinable = self.synced_full || !self.options.synchronous_full;
        while joinable && batch.len() < MAX_BATCH {
            let Ok((outcomes, woke)) = &mut result else {
                break;
            };
            let from = batch.len();
            more(batch);
            if batch.len() == from {
                break;
            }
            match self.run_commands(&batch[from..], now, Isolation::Optimistic) {
                Ok((joined, joined_woke)) => {
                    outcomes.extend(joined);
                    *woke |= joined_woke;
                }
                Err(aborted) => result = Err(aborted),
            }
        }
        if let Err(PassAborted::CommandFailed) = result {
            tracing::warn!(
                "a command failed after writing; the batch runs again, command by command"
            );
            result = self.run_pass(batch, now, Isolation::PerCommand);
        }
        let (outcomes, woke, commit_error) = match result {
            Ok((outcomes, woke)) => {
                let commit_error = self.statement("COMMIT").err().map(|e| {
                    tracing::error!(error = %e, "commit failed; the batch is rolled back");
                    self.rollback();
                    e.to_string()
                });
                (outcomes, woke, commit_error)
            }
            Err(PassAborted::CannotBegin(e)) => {
                self.forget_pass();
                for c in batch.drain(..) {
                    refuse(c, &e);
                }
                return false;
            }
            Err(PassAborted::CommandFailed) => unreachable!("a per-command pass does not abort"),
        };
        let woke = if commit_error.is_none() {
            self.claimed.clear();
            // What the batch changed of the endpoints is on disk: the dispatcher sends by it
            // from now on, before anything of the batch is handed out or answered.
            self.endpoints.publish();
            // What the batch queued is on disk: hand it over now, before anyone is answered.
            self.hand_over(now) || woke
        } else {
            self.forget_pass();
            false
        };
        for (command, outcome) in batch.drain(..).zip(outcomes) {
            answer(command, outcome, commit_error.as_deref());
        }
        woke
    }

    /// Undoes what a pass that did not commit left in memory: the heads it would have handed
    /// over and the leases its claims took.
    fn forget_pass(&mut self) {
        self.endpoints.forget();
        self.fresh.clear();
        self.promoted.clear();
        for id in self.claimed.drain(..) {
            self.leases.end(id);
        }
    }

    /// Hands the heads the batch made to the dispatcher, as far as their endpoints have free
    /// slots; returns whether claimable deliveries are left for the dispatcher to claim.
    fn hand_over(&mut self, now: i64) -> bool {
        let fresh = std::mem::take(&mut self.fresh);
        let promoted = std::mem::take(&mut self.promoted);
        if fresh.is_empty() && promoted.is_empty() {
            return false;
        }
        if !self.handoff.open() {
            return true;
        }
        let mut left = false;
        for d in fresh {
            left |= !self.hand(d, now);
        }
        for (id, endpoint) in promoted {
            if self.leases.room(&endpoint) == 0 {
                left = true;
                continue;
            }
            match self.load(id) {
                Ok(Some(d)) => left |= !self.hand(d, now),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, delivery = id, "cannot read a promoted delivery; it waits to be claimed");
                    left = true;
                }
            }
        }
        if left {
            self.waiting_for_slots = true;
        }
        left
    }

    /// Leases `d` and gives it to the dispatcher; false when its endpoint has no free slot
    /// or is disabled (it stays claimable in the database).
    fn hand(&mut self, d: ClaimedDelivery, now: i64) -> bool {
        if self.leases.held(d.id, now) {
            // A claim later in the same batch took it already.
            return true;
        }
        let enabled = self
            .endpoints
            .now()
            .get(&d.endpoint_id)
            .is_some_and(|e| e.endpoint.enabled);
        if !enabled || self.leases.room(&d.endpoint_id) == 0 {
            return false;
        }
        let (id, endpoint) = (d.id, d.endpoint_id.clone());
        self.leases
            .hold(id, now + self.leases.lease_ms(), &endpoint);
        if self.handoff.deliveries.send(d).is_err() {
            self.leases.end(id);
            return false;
        }
        true
    }

    /// Begins a transaction and runs every command of the batch in it, leaving it open for
    /// the caller to commit.
    fn run_pass(
        &mut self,
        batch: &[Command],
        now: i64,
        isolation: Isolation,
    ) -> Result<(Vec<Outcome>, bool), PassAborted> {
        self.health_noted.clear();
        if let Err(e) = self.statement("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "cannot begin a write transaction");
            return Err(PassAborted::CannotBegin(e.to_string()));
        }
        self.run_commands(batch, now, isolation)
    }

    /// Runs commands in the open transaction; on a failure after writing (`Optimistic`), rolls
    /// the whole transaction back.
    fn run_commands(
        &mut self,
        batch: &[Command],
        now: i64,
        isolation: Isolation,
    ) -> Result<(Vec<Outcome>, bool), PassAborted> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut woke = false;
        for command in batch {
            // Operator actions are rare and check as they go: always isolated.
            let isolated =
                isolation == Isolation::PerCommand || matches!(command, Command::Admin { .. });
            if isolated {
                self.savepoint("SAVEPOINT command");
            }
            let marks = (self.fresh.len(), self.promoted.len(), self.claimed.len());
            let endpoints_before = self.endpoints.changed.clone();
            let done = self.execute(command, now);
            if matches!(command, Command::Admin { .. }) {
                // It may have changed an endpoint's health itself.
                self.health_noted.clear();
            }
            if isolated {
                if !done.ok {
                    self.savepoint("ROLLBACK TO command");
                    self.health_noted.clear();
                    // Its writes are undone; so is what it left in memory.
                    self.endpoints.changed = endpoints_before;
                    self.fresh.truncate(marks.0);
                    self.promoted.truncate(marks.1);
                    for id in self.claimed.split_off(marks.2) {
                        self.leases.end(id);
                    }
                }
                self.savepoint("RELEASE command");
            } else if !done.ok && !refused_before_writing(&done.outcome) {
                self.rollback();
                self.forget_pass();
                return Err(PassAborted::CommandFailed);
            }
            woke |= done.woke;
            outcomes.push(done.outcome);
        }
        // One outcome per command, in order: the replies are zipped with the batch.
        Ok((outcomes, woke))
    }

    /// Sets how the batch's COMMIT syncs. A batch that answers a call (a registration, an
    /// input, an operator action) is made durable as configured: with FULL, the WAL is synced
    /// before anyone is answered. A batch of only delivery results (and claims, which write
    /// nothing) commits NORMAL: no fsync of its own. Should the machine lose power before the
    /// next synced commit, those results are lost and the deliveries are sent again, which
    /// at-least-once delivery allows; a FULL commit syncs the whole WAL, so it makes every
    /// earlier commit durable too, and SQLite keeps NORMAL commits consistent in WAL mode.
    fn sync_for(&mut self, batch: &[Command]) -> rusqlite::Result<()> {
        let answers_a_call = batch.iter().any(|c| {
            matches!(
                c,
                Command::Register { .. } | Command::Apply { .. } | Command::Admin { .. }
            )
        });
        let full = answers_a_call && self.options.synchronous_full;
        if full != self.synced_full {
            // Until the switch is known to have happened, assume the weaker mode is in force,
            // so that a FULL batch tries again rather than commit unsynced.
            self.synced_full = false;
            self.statement(if full {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            })?;
            self.synced_full = full;
        }
        Ok(())
    }

    fn rollback(&self) {
        if let Err(e) = self.statement("ROLLBACK") {
            tracing::error!(error = %e, "rollback failed");
        }
    }

    /// Runs a transaction-control statement, prepared once and cached.
    fn statement(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// Runs one command; its writes stay in the open transaction unless it failed.
    fn execute(&mut self, command: &Command, now: i64) -> Executed {
        let done = |outcome, ok, woke| Executed { outcome, ok, woke };
        match command {
            Command::Register {
                tguid,
                operation,
                actor,
                ..
            } => {
                let r = self.register(tguid, *operation, actor, now);
                let ok = r.is_ok();
                done(Outcome::Register(r), ok, false)
            }
            Command::Apply { request, .. } => {
                let r = self.apply(request, now);
                let ok = r.is_ok();
                // The heads it queued are handed over after the commit, or left for a claim;
                // `hand_over` says which.
                done(Outcome::Apply(r), ok, false)
            }
            Command::Shutdown => done(Outcome::Done, true, false),
            Command::Admin { op, .. } => {
                let outbox = admin::Outbox {
                    conn: &self.conn,
                    leases: &self.leases,
                    endpoints: self.endpoints.now(),
                    now,
                };
                let mut r = admin::run(&outbox, op);
                // Where deliveries go changed: so does the registry, in the same transaction.
                let changes_endpoints = matches!(
                    op,
                    AdminOp::CreateEndpoint(_)
                        | AdminOp::UpdateEndpoint { .. }
                        | AdminOp::DeleteEndpoint { .. }
                        | AdminOp::DisableFailing { .. }
                );
                if r.is_ok() && changes_endpoints {
                    if let Err(e) = self.endpoints.reload(&self.conn) {
                        r = Err(e.into());
                    }
                }
                let ok = r.is_ok();
                done(Outcome::Admin(r), ok, ok)
            }
            Command::Claim { limit, .. } => match self.claim(*limit, now) {
                Ok(c) => done(Outcome::Claim(c), true, false),
                Err(e) => {
                    tracing::error!(error = %e, "claim failed");
                    done(Outcome::Claim(Claimed::default()), false, false)
                }
            },
            Command::Complete { completions } => match self.complete(completions, now) {
                Ok(woke) => done(Outcome::Done, true, woke),
                Err(e) => {
                    // The leases expire and the deliveries are attempted again: at-least-once.
                    tracing::error!(error = %e, "recording delivery results failed");
                    done(Outcome::Done, false, false)
                }
            },
            Command::Release { ids, .. } => {
                self.release(ids);
                done(Outcome::Done, true, true)
            }
        }
    }

    /// Runs a savepoint statement; inside the batch's transaction these cannot fail short of
    /// a broken connection, which the batch's COMMIT then reports to every caller.
    fn savepoint(&self, sql: &str) {
        if let Err(e) = self.statement(sql) {
            tracing::error!(error = %e, sql, "savepoint statement failed");
        }
    }

    /// A transaction as the writer needs it: its summary, its id and its next sequence number.
    fn summary(&self, tguid: &str) -> Result<Option<(TxSummary, TxRow)>, WriteError> {
        let mut stmt = self.conn.prepare_cached(TRANSACTION_BY_TGUID)?;
        let row = stmt
            .query_row([tguid], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .optional()?;
        Ok(match row {
            None => None,
            Some((op, state, created_at, updated_at, next_seq, id)) => Some((
                TxSummary {
                    tguid: tguid.to_owned(),
                    operation: Operation::parse(&op).ok_or_else(|| {
                        WriteError::Internal(format!("bad operation {op:?} stored"))
                    })?,
                    state: State::parse(&state).ok_or_else(|| {
                        WriteError::Internal(format!("bad state {state:?} stored"))
                    })?,
                    created_at,
                    updated_at,
                },
                TxRow { id, next_seq },
            )),
        })
    }

    fn log_transition(
        &self,
        (tx, tguid): (i64, &str),
        (from, to): (Option<State>, State),
        input: &str,
        uguid: Option<&str>,
        (actor, event_id): (&str, Option<&str>),
        now: i64,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(INSERT_TRANSITION)?
            .execute(params![
                tx,
                tguid,
                from.map(State::as_str),
                to.as_str(),
                input,
                uguid,
                actor,
                event_id,
                now
            ])?;
        Ok(())
    }

    fn register(
        &self,
        tguid: &Tguid,
        operation: Operation,
        actor: &str,
        now: i64,
    ) -> Result<Registered, WriteError> {
        if let Some((summary, _)) = self.summary(tguid.as_str())? {
            return if summary.operation == operation {
                Ok(Registered {
                    created: false,
                    summary,
                })
            } else {
                Err(WriteError::OperationConflict {
                    tguid: tguid.to_string(),
                    existing: summary.operation,
                })
            };
        }
        self.conn
            .prepare_cached(INSERT_TRANSACTION)?
            .execute(params![tguid.as_str(), operation.as_str(), now])?;
        let tx = self.conn.last_insert_rowid();
        let input = format!("register {operation}");
        self.log_transition(
            (tx, tguid.as_str()),
            (None, State::Processing),
            &input,
            None,
            (actor, None),
            now,
        )?;
        Ok(Registered {
            created: true,
            summary: TxSummary {
                tguid: tguid.to_string(),
                operation,
                state: State::Processing,
                created_at: now,
                updated_at: now,
            },
        })
    }

    fn apply(&mut self, request: &InputRequest, now: i64) -> Result<Applied, WriteError> {
        let tguid = request.tguid.as_str();
        let (
            summary,
            TxRow {
                id: tx,
                mut next_seq,
            },
        ) = self
            .summary(tguid)?
            .ok_or_else(|| WriteError::NotFound(tguid.to_owned()))?;

        if let Some((event_id, fingerprint)) = &request.event_id {
            let seen: Option<String> = self
                .conn
                .prepare_cached(
                    "SELECT fingerprint FROM event_ids WHERE tguid = ?1 AND event_id = ?2",
                )?
                .query_row([tguid, event_id], |r| r.get(0))
                .optional()?;
            match seen {
                Some(f) if &f == fingerprint => {
                    return Ok(Applied {
                        duplicate: true,
                        summary,
                        notifications: 0,
                    });
                }
                Some(_) => {
                    // Contract §4 lists invalid_transition before event_id_reused: when the
                    // new body would be refused anyway, that refusal is the answer.
                    domain::step(
                        summary.operation,
                        summary.state,
                        &request.input,
                        self.options.update_label,
                    )?;
                    return Err(WriteError::EventIdReused(event_id.clone()));
                }
                None => {}
            }
        }

        let transition = domain::step(
            summary.operation,
            summary.state,
            &request.input,
            self.options.update_label,
        )?;
        let endpoints = self.endpoints.now().clone();

        self.conn
            .prepare_cached(ADVANCE_TRANSACTION)?
            .execute(params![
                tx,
                transition.to.as_str(),
                now,
                next_seq + transition.notifications.len() as i64
            ])?;
        let uguid = match &request.input {
            domain::Input::LatentMatch(u) => Some(u.as_str()),
            _ => None,
        };
        let event_id = request.event_id.as_ref().map(|(id, _)| id.as_str());
        self.log_transition(
            (tx, tguid),
            (Some(summary.state), transition.to),
            &request.input.describe(),
            uguid,
            (&request.actor, event_id),
            now,
        )?;
        if let Some((event_id, fingerprint)) = &request.event_id {
            self.conn
                .prepare_cached(
                    "INSERT INTO event_ids (tguid, event_id, fingerprint) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![tguid, event_id, fingerprint])?;
        }

        for notification in &transition.notifications {
            let body: Arc<[u8]> = notification.body(&request.tguid).into();
            let webhook_id = new_webhook_id(now);
            let (operation, status) = (notification.operation(), notification.status());
            self.conn
                .prepare_cached(INSERT_NOTIFICATION)?
                .execute(params![
                    tx,
                    tguid,
                    next_seq,
                    webhook_id,
                    operation,
                    status,
                    &body[..],
                    now
                ])?;
            let notification_id = self.conn.last_insert_rowid();
            for endpoint in endpoints.iter().map(|e| &e.endpoint) {
                if !endpoint.subscriptions.matches(operation, status) {
                    continue;
                }
                // Only the first pending notification of a (tguid, endpoint) may be sent.
                let head: bool = self
                    .conn
                    .prepare_cached(DELIVERY_IS_HEAD)?
                    .query_row(params![tx, endpoint.id], |r| r.get(0))?;
                self.conn.prepare_cached(INSERT_DELIVERY)?.execute(params![
                    notification_id,
                    endpoint.id,
                    tx,
                    tguid,
                    next_seq,
                    head,
                    now
                ])?;
                let id = self.conn.last_insert_rowid();
                if head && endpoint.enabled {
                    self.fresh.push(ClaimedDelivery {
                        id,
                        endpoint_id: endpoint.id.clone(),
                        tguid: tguid.to_owned(),
                        seq: next_seq,
                        attempts: 0,
                        webhook_id: webhook_id.clone(),
                        body: body.clone(),
                        operation: operation.to_owned(),
                        status: status.to_owned(),
                        created_at: now,
                    });
                }
            }
            next_seq += 1;
        }

        Ok(Applied {
            duplicate: false,
            notifications: transition.notifications.len(),
            summary: TxSummary {
                state: transition.to,
                updated_at: now,
                ..summary
            },
        })
    }

    /// Leases up to `limit` due queue heads, endpoint by endpoint within their free slots, and
    /// says when the next one not leased now falls due.
    fn claim(&mut self, limit: usize, now: i64) -> rusqlite::Result<Claimed> {
        self.leases.sweep(now);
        let until = now + self.leases.lease_ms();
        let mut chosen: Vec<i64> = Vec::new();
        let mut next_due: Option<i64> = None;
        let mut out_of_slots = false;
        // Endpoints that are not disabled, starting at a different one each time so that none
        // is always served first.
        let enabled: Vec<String> = self
            .endpoints
            .now()
            .iter()
            .filter(|e| e.endpoint.enabled)
            .map(|e| e.endpoint.id.clone())
            .collect();
        let start = if enabled.is_empty() {
            0
        } else {
            fastrand::usize(..enabled.len())
        };
        for endpoint in enabled.iter().cycle().skip(start).take(enabled.len()) {
            let mut take = self.leases.room(endpoint).min(limit - chosen.len());
            let first = chosen.len();
            {
                // The queue heads by due time, from the index alone (id and due time are in
                // it). Those in flight are the oldest and come first: skipped, with their lease
                // ends counting as due times. No `LIMIT ?`: SQLite re-prepares a statement
                // whose LIMIT is a bound parameter each time it changes; stopping early reads
                // no more than a LIMIT would.
                let mut heads = self.conn.prepare_cached(
                    "SELECT id, next_attempt_at FROM deliveries INDEXED BY deliveries_due_by_endpoint
                     WHERE endpoint_id = ?1 AND status = 'pending' AND ready = 1
                     ORDER BY next_attempt_at",
                )?;
                let mut rows = heads.query([endpoint])?;
                while let Some(row) = rows.next()? {
                    let (id, due): (i64, i64) = (row.get(0)?, row.get(1)?);
                    if let Some(end) = self.leases.held_until(id, now) {
                        next_due = Some(next_due.map_or(end, |d| d.min(end)));
                        continue;
                    }
                    if due > now || take == 0 {
                        // Not due yet, or due with no slot left: the next look is then.
                        out_of_slots |= due <= now && take == 0;
                        next_due = Some(next_due.map_or(due, |d| d.min(due)));
                        break;
                    }
                    chosen.push(id);
                    take -= 1;
                }
            }
            for &id in &chosen[first..] {
                self.leases.hold(id, until, endpoint);
                self.claimed.push(id);
            }
        }
        if out_of_slots {
            self.waiting_for_slots = true;
        }
        let mut deliveries = Vec::with_capacity(chosen.len());
        for id in chosen {
            match self.load(id)? {
                Some(d) => deliveries.push(d),
                None => {
                    self.leases.end(id);
                }
            }
        }
        if !deliveries.is_empty() {
            next_due = Some(next_due.map_or(until, |d| d.min(until)));
        }
        Ok(Claimed {
            deliveries,
            next_due,
        })
    }

    /// What the dispatcher needs to send a delivery.
    fn load(&self, id: i64) -> rusqlite::Result<Option<ClaimedDelivery>> {
        self.conn
            .prepare_cached(
                "SELECT d.endpoint_id, d.tguid, d.seq, d.attempts, n.webhook_id, n.body,
                        n.operation, n.status, n.created_at
                 FROM deliveries d JOIN notifications n ON n.id = d.notification_id
                 WHERE d.id = ?1 AND d.status = 'pending'",
            )?
            .query_row([id], |r| {
                Ok(ClaimedDelivery {
                    id,
                    endpoint_id: r.get(0)?,
                    tguid: r.get(1)?,
                    seq: r.get(2)?,
                    attempts: r.get(3)?,
                    webhook_id: r.get(4)?,
                    body: Arc::from(r.get::<_, Vec<u8>>(5)?),
                    operation: r.get(6)?,
                    status: r.get(7)?,
                    created_at: r.get(8)?,
                })
            })
            .optional()
    }

    /// Makes the next pending delivery of the same (tguid, endpoint) claimable.
    ///
    /// It keeps its own due time (when it was queued, unless something scheduled it later):
    /// claims go by due time, so it is sent before heads queued after it. Setting it to "now"
    /// would put a transaction's 2nd and 3rd notifications behind every newer head, which is
    /// what made the tail of a backlog drain slowly.
    fn promote_next(&mut self, tx: i64, endpoint_id: &str) -> rusqlite::Result<()> {
        let promoted: Option<i64> = self
            .conn
            .prepare_cached(NEXT_PENDING)?
            .query_row(params![tx, endpoint_id], |r| r.get(0))
            .optional()?;
        if let Some(id) = promoted {
            self.conn.prepare_cached(MAKE_READY)?.execute([id])?;
            self.promoted.push((id, endpoint_id.to_owned()));
        }
        Ok(())
    }

    fn finish(
        &mut self,
        id: i64,
        status: &str,
        http_status: Option<u16>,
        error: Option<&str>,
        now: i64,
    ) -> rusqlite::Result<()> {
        let pending: Option<(i64, String)> = self
            .conn
            .prepare_cached(PENDING_DELIVERY)?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((tx, endpoint)) = pending else {
            return Ok(());
        };
        self.conn.prepare_cached(FINISH_DELIVERY)?.execute(params![
            id,
            status,
            http_status,
            error,
            now
        ])?;
        self.note_endpoint_health(&endpoint, status == "delivered", now)?;
        self.promote_next(tx, &endpoint)
    }

    /// Tracks since when an endpoint has failed every attempt (cleared by any success). Both
    /// updates are idempotent within a transaction (`now` is the batch's), so only a change
    /// from the endpoint's last noted health runs one: a batch of a hundred results for one
    /// endpoint makes one update, not a hundred.
    fn note_endpoint_health(
        &mut self,
        endpoint_id: &str,
        ok: bool,
        now: i64,
    ) -> rusqlite::Result<()> {
        match self.health_noted.iter_mut().find(|(e, _)| e == endpoint_id) {
            Some((_, noted)) if *noted == ok => return Ok(()),
            Some((_, noted)) => *noted = ok,
            None => self.health_noted.push((endpoint_id.to_owned(), ok)),
        }
        let sql = if ok {
            "UPDATE endpoints SET failing_since = NULL WHERE id = ?1 AND failing_since IS NOT NULL AND ?2 >= 0"
        } else {
            "UPDATE endpoints SET failing_since = ?2 WHERE id = ?1 AND failing_since IS NULL"
        };
        self.conn
            .prepare_cached(sql)?
            .execute(params![endpoint_id, now])?;
        Ok(())
    }

    fn complete(&mut self, completions: &[Completion], now: i64) -> rusqlite::Result<bool> {
        let mut woke = false;
        for c in completions {
            // Its slot is free: what waited for one may be claimed now.
            if self.leases.end(c.id()) && self.waiting_for_slots {
                self.waiting_for_slots = false;
                woke = true;
            }
            match c {
                Completion::Delivered { id, http_status } => {
                    // A head it promotes is handed over after the commit (`hand_over`).
                    self.finish(*id, "delivered", Some(*http_status), None, now)?;
                }
                Completion::Dead {
                    id,
                    http_status,
                    error,
                } => {
                    self.finish(*id, "dead", *http_status, Some(error), now)?;
                }
                Completion::Retry {
                    id,
                    http_status,
                    error,
                    next_attempt_at,
                } => {
                    let endpoint: Option<String> = self
                        .conn
                        .prepare_cached(PENDING_DELIVERY)?
                        .query_row([id], |r| r.get(1))
                        .optional()?;
                    if let Some(endpoint) = endpoint {
                        self.conn.prepare_cached(RETRY_DELIVERY)?.execute(params![
                            id,
                            next_attempt_at,
                            http_status,
                            error,
                            now
                        ])?;
                        self.note_endpoint_health(&endpoint, false, now)?;
                    }
                    woke = true;
                }
                Completion::Gone { id, endpoint_id } => {
                    self.conn
                        .prepare_cached(
                            "UPDATE deliveries SET leased = 0, attempts = attempts + 1, next_attempt_at = ?2,
                                    last_status = 410, last_error = '410 Gone: endpoint disabled', last_attempt_at = ?2
                             WHERE id = ?1 AND status = 'pending'",
                        )?
                        .execute(params![id, now])?;
                    self.conn
                        .prepare_cached(
                            "UPDATE endpoints SET enabled = 0, disabled_reason = '410 Gone', updated_at = ?2 WHERE id = ?1",
                        )?
                        .execute(params![endpoint_id, now])?;
                    tracing::warn!(endpoint = %endpoint_id, "endpoint answered 410 Gone: disabled");
                    self.endpoints.reload(&self.conn)?;
                }
            }
        }
        Ok(woke)
    }

    /// Gives leases back: the deliveries keep their due times, which have passed, so they are
    /// claimable at once (by the next process, at shutdown).
    fn release(&mut self, ids: &[i64]) {
        for id in ids {
            self.leases.end(*id);
        }
    }
}

/// A new notification id: the creation time and 64 random bits, unique across databases too.
fn new_webhook_id(now: i64) -> String {
    format!("msg_{:011x}{:016x}", now, fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    //! The batch runs without savepoints; these check that a command failing after it wrote
    //! still leaves the others' writes, and none of its own.

    use tokio::sync::oneshot;

    use super::*;
    use crate::domain::{Input, Outcome as Result_, UpdateLabel};
    use crate::store::{schema, DeliveryLimits, InputRequest};

    fn writer() -> Writer {
        writer_with(DeliveryLimits::default()).0
    }

    /// A writer whose handoff is taken (as the dispatcher does), with these slots.
    fn handing_over(limits: DeliveryLimits) -> (Writer, mpsc::UnboundedReceiver<ClaimedDelivery>) {
        let (w, rx) = writer_with(limits);
        w.handoff
            .taken
            .store(true, std::sync::atomic::Ordering::SeqCst);
        (w, rx)
    }

    fn writer_with(limits: DeliveryLimits) -> (Writer, mpsc::UnboundedReceiver<ClaimedDelivery>) {
        let (handed, rx) = mpsc::unbounded_channel();
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        let configured = vec![Endpoint::http("e", "http://127.0.0.1:9/".parse().unwrap())];
        let endpoints = sync_endpoints(&mut conn, &configured).unwrap();
        let w = Writer {
            conn,
            options: StoreOptions {
                synchronous_full: false,
                update_label: UpdateLabel::Enroll,
                endpoints: Vec::new(),
                delivery: limits,
            },
            endpoints: BatchEndpoints::new(Publisher::new(endpoints), configured),
            leases: Leases::new(limits),
            synced_full: false,
            handoff: HandoffSender {
                deliveries: handed,
                taken: Default::default(),
            },
            health_noted: Vec::new(),
            fresh: Vec::new(),
            promoted: Vec::new(),
            claimed: Vec::new(),
            waiting_for_slots: false,
        };
        (w, rx)
    }

    fn claim(limit: usize) -> (Command, oneshot::Receiver<Claimed>) {
        let (reply, rx) = oneshot::channel();
        (Command::Claim { limit, reply }, rx)
    }

    fn delivered(id: i64) -> Command {
        Command::Complete {
            completions: vec![Completion::Delivered {
                id,
                http_status: 200,
            }],
        }
    }

    fn register(tguid: &str) -> (Command, oneshot::Receiver<Result<Registered, WriteError>>) {
        let (reply, rx) = oneshot::channel();
        let command = Command::Register {
            tguid: Tguid::parse(tguid).unwrap(),
            operation: Operation::Enroll,
            actor: "test".into(),
            reply,
        };
        (command, rx)
    }

    fn enrolled(tguid: &str) -> (Command, oneshot::Receiver<Result<Applied, WriteError>>) {
        let (reply, rx) = oneshot::channel();
        let request = InputRequest {
            tguid: Tguid::parse(tguid).unwrap(),
            input: Input::Outcome(Result_::Enrolled),
            event_id: None,
            actor: "test".into(),
        };
        (Command::Apply { request, reply }, rx)
    }

    /// Makes every notification insert of `tguid` fail: after the state update and log row.
    fn fail_notifications_of(w: &Writer, tguid: &str) {
        w.conn
            .execute_batch(&format!(
                "CREATE TRIGGER boom AFTER INSERT ON notifications WHEN NEW.tguid = '{tguid}'
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
            ))
            .unwrap();
    }

    fn count(w: &Writer, sql: &str) -> i64 {
        w.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_command_failing_after_writing_is_undone_alone_and_the_batch_still_commits() {
        let mut w = writer();
        let mut setup = vec![register("a").0, register("boom").0, register("c").0];
        w.run_batch(&mut setup);
        fail_notifications_of(&w, "boom");
        let (a, a_rx) = enrolled("a");
        let (boom, boom_rx) = enrolled("boom");
        let (c, c_rx) = enrolled("c");
        let (refused, refused_rx) = enrolled("missing");
        let mut batch = vec![a, boom, refused, c];
        assert!(w.run_batch(&mut batch), "deliveries became claimable");

        assert!(a_rx.blocking_recv().unwrap().is_ok());
        assert!(c_rx.blocking_recv().unwrap().is_ok());
        let err = boom_rx.blocking_recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(matches!(
            refused_rx.blocking_recv().unwrap(),
            Err(WriteError::NotFound(_))
        ));
        assert_eq!(
            count(
                &w,
                "SELECT count(*) FROM transactions WHERE state = 'ENROLLED'"
            ),
            2
        );
        assert_eq!(
            count(&w, "SELECT count(*) FROM transactions WHERE tguid = 'boom' AND state = 'PROCESSING' AND next_seq = 1"),
            1
        );
        assert_eq!(
            count(&w, "SELECT count(*) FROM transitions WHERE tguid = 'boom'"),
            1
        );
        assert_eq!(count(&w, "SELECT count(*) FROM notifications"), 2);
        assert_eq!(
            count(&w, "SELECT count(*) FROM deliveries WHERE ready = 1"),
            2
        );
    }

    fn retried(id: i64) -> Command {
        Command::Complete {
            completions: vec![Completion::Retry {
                id,
                http_status: Some(503),
                error: "unavailable".into(),
                next_attempt_at: now_ms() + 60_000,
            }],
        }
    }

    fn failing_since(w: &Writer) -> Option<i64> {
        w.conn
            .query_row(
                "SELECT failing_since FROM endpoints WHERE id = 'e'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn an_endpoints_health_follows_its_last_result_in_a_batch() {
        let mut w = writer();
        let mut setup = vec![register("a").0, register("b").0];
        w.run_batch(&mut setup);
        w.run_batch(&mut vec![enrolled("a").0, enrolled("b").0]);
        // A success, then a failure: failing since this batch (the first noted is not enough).
        w.run_batch(&mut vec![delivered(1), retried(2)]);
        assert!(failing_since(&w).is_some());
        // Failures then a success in one batch: healthy again.
        w.run_batch(&mut vec![retried(2), retried(2), delivered(2)]);
        assert_eq!(failing_since(&w), None);
    }

    /// Hands `joining` to the pass the first time it asks for more, then nothing; counts asks.
    fn joins(
        joining: Vec<Command>,
    ) -> (
        impl FnMut(&mut Vec<Command>),
        std::rc::Rc<std::cell::Cell<usize>>,
    ) {
        let asked = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = asked.clone();
        let mut joining = Some(joining);
        let more = move |batch: &mut Vec<Command>| {
            counter.set(counter.get() + 1);
            batch.extend(joining.take().unwrap_or_default());
        };
        (more, asked)
    }

    #[test]
    fn commands_queued_during_a_pass_join_its_commit_and_get_their_own_answers() {
        let mut w = writer();
        let (a, a_rx) = register("a");
        let (a_done, a_done_rx) = enrolled("a");
        let (b, b_rx) = register("b");
        let (b_missing, b_missing_rx) = enrolled("never-registered");
        let (mut more, asked) = joins(vec![a_done, b, b_missing]);
        w.run_batch_joining(&mut vec![a], &mut more);
        assert_eq!(
            asked.get(),
            2,
            "asked again after the joined ones, until none came"
        );
        assert!(a_rx.blocking_recv().unwrap().unwrap().created);
        let applied = a_done_rx.blocking_recv().unwrap().unwrap();
        assert_eq!(applied.summary.state, State::Enrolled);
        assert!(b_rx.blocking_recv().unwrap().unwrap().created);
        assert!(matches!(
            b_missing_rx.blocking_recv().unwrap(),
            Err(WriteError::NotFound(_))
        ));
        assert_eq!(
            count(
                &w,
                "SELECT count(*) FROM transactions WHERE state = 'ENROLLED'"
            ),
            1
        );
    }

    #[test]
    fn a_joined_command_failing_after_writing_reruns_the_whole_batch_command_by_command() {
        let mut w = writer();
        w.run_batch(&mut vec![register("a").0, register("boom").0]);
        fail_notifications_of(&w, "boom");
        let (a, a_rx) = enrolled("a");
        let (boom, boom_rx) = enrolled("boom");
        let (c, c_rx) = register("c");
        let (mut more, _) = joins(vec![boom, c]);
        w.run_batch_joining(&mut vec![a], &mut more);
        assert!(a_rx.blocking_recv().unwrap().is_ok());
        let err = boom_rx.blocking_recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(c_rx.blocking_recv().unwrap().unwrap().created);
        assert_eq!(
            count(
                &w,
                "SELECT count(*) FROM transactions WHERE state = 'ENROLLED'"
            ),
            1
        );
        assert_eq!(
            count(
                &w,
                "SELECT count(*) FROM transactions WHERE tguid = 'boom' AND state = 'PROCESSING'"
            ),
            1
        );
        assert_eq!(count(&w, "SELECT count(*) FROM transactions"), 3);
    }

    #[test]
    fn a_batch_committed_without_fsync_takes_no_call_in() {
        let (mut w, mut handed) = handing_over(DeliveryLimits::default());
        w.options.synchronous_full = true;
        w.run_batch(&mut vec![register("a").0]);
        w.run_batch(&mut vec![enrolled("a").0]);
        let d = handed.try_recv().unwrap();
        let (mut more, asked) = joins(vec![register("b").0]);
        w.run_batch_joining(&mut vec![delivered(d.id)], &mut more);
        assert_eq!(asked.get(), 0, "results only: NORMAL, so nothing may join");
        assert!(!w.synced_full);
        // A batch with a call is FULL, and results may join it.
        let (mut more, asked) = joins(Vec::new());
        w.run_batch_joining(&mut vec![register("c").0], &mut more);
        assert_eq!(asked.get(), 1);
        assert!(w.synced_full);
    }

    #[test]
    fn the_claim_scan_reads_the_due_index_alone() {
        let w = writer();
        let plan: String = w
            .conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id, next_attempt_at FROM deliveries INDEXED BY deliveries_due_by_endpoint
                 WHERE endpoint_id = ?1 AND status = 'pending' AND ready = 1
                 ORDER BY next_attempt_at",
                ["e"],
                |r| r.get(3),
            )
            .unwrap();
        assert!(
            plan.contains("COVERING INDEX deliveries_due_by_endpoint"),
            "{plan}"
        );
    }

    /// Every lookup of a transaction's deliveries goes through indexes: none scans a table.
    #[test]
    fn the_queue_lookups_search_indexes_and_scan_no_table() {
        let w = writer();
        for sql in [
            DELIVERY_IS_HEAD,
            NEXT_PENDING,
            PENDING_DELIVERY,
            admin::QUEUE,
            admin::REQUEUE_SENT,
            admin::PENDING_ENDPOINTS,
            admin::PENDING_COUNT,
            admin::RETAINABLE,
        ] {
            let mut explain = w
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let nulls = vec![rusqlite::types::Null; explain.parameter_count()];
            let plan: Vec<String> = explain
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                // A SELECT without FROM "scans" its one constant row.
                plan.iter()
                    .all(|step| !step.starts_with("SCAN") || step == "SCAN CONSTANT ROW"),
                "{sql}\n{plan:#?}"
            );
        }
    }

    /// No statement a call or a delivery result runs builds an ephemeral table: SQLite makes
    /// one for every `RETURNING` and every `IN` list of more than two constants (a partial
    /// index's predicate included), a b-tree created and destroyed per execution.
    #[test]
    fn the_hot_path_statements_build_no_ephemeral_table() {
        let w = writer();
        for sql in [
            DELIVERY_IS_HEAD,
            INSERT_DELIVERY,
            NEXT_PENDING,
            PENDING_DELIVERY,
            INSERT_TRANSITION,
            INSERT_TRANSACTION,
            ADVANCE_TRANSACTION,
            INSERT_NOTIFICATION,
            FINISH_DELIVERY,
            RETRY_DELIVERY,
            MAKE_READY,
        ] {
            let mut explain = w.conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            let nulls = vec![rusqlite::types::Null; explain.parameter_count()];
            let opcodes: Vec<String> = explain
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get(1))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                !opcodes.iter().any(|op| op == "OpenEphemeral"),
                "{sql}\n{opcodes:?}"
            );
        }
    }

    #[test]
    fn refusals_in_an_optimistic_batch_change_nothing_and_need_no_replay() {
        let mut w = writer();
        let mut setup = vec![register("a").0];
        w.run_batch(&mut setup);
        let (again, again_rx) = enrolled("a");
        let (first, first_rx) = enrolled("a");
        // The second ENROLLED for "a" is refused by the state machine after the first one.
        let mut batch = vec![first, again];
        w.run_batch(&mut batch);
        assert!(first_rx.blocking_recv().unwrap().is_ok());
        assert!(matches!(
            again_rx.blocking_recv().unwrap(),
            Err(WriteError::Refused(_))
        ));
        assert_eq!(count(&w, "SELECT count(*) FROM notifications"), 1);
        assert_eq!(count(&w, "SELECT count(*) FROM transitions"), 2);
    }

    #[test]
    fn a_committed_head_is_handed_over_with_its_exact_body_and_leased() {
        let (mut w, mut handed) = handing_over(DeliveryLimits::default());
        w.run_batch(&mut vec![register("tg-h").0]);
        let (apply, applied) = enrolled("tg-h");
        let woke = w.run_batch(&mut vec![apply]);
        assert!(applied.blocking_recv().unwrap().is_ok());
        assert!(!woke, "nothing was left for the dispatcher to claim");
        let d = handed.try_recv().expect("handed over at the commit");
        assert_eq!(
            std::str::from_utf8(&d.body).unwrap(),
            r#"{"operation":"ENROLL","tguid":"tg-h","status":"ENROLLED"}"#
        );
        assert_eq!((d.endpoint_id.as_str(), d.seq, d.attempts), ("e", 1, 0));
        // Leased: a claim does not see it again.
        let (c, claimed) = claim(10);
        w.run_batch(&mut vec![c]);
        assert!(claimed.blocking_recv().unwrap().deliveries.is_empty());
        assert!(handed.try_recv().is_err(), "handed over once");
    }

    #[test]
    fn the_handoff_keeps_to_the_endpoint_slots_and_leaves_the_rest_to_claim() {
        let limits = DeliveryLimits {
            endpoint_concurrency: 1,
            ..DeliveryLimits::default()
        };
        let (mut w, mut handed) = handing_over(limits);
        w.run_batch(&mut vec![register("tg-1").0, register("tg-2").0]);
        let woke = w.run_batch(&mut vec![enrolled("tg-1").0, enrolled("tg-2").0]);
        assert!(
            woke,
            "one was left in the database: the dispatcher is woken"
        );
        let first = handed.try_recv().unwrap();
        assert!(
            handed.try_recv().is_err(),
            "one slot, one delivery in flight"
        );
        let (c, claimed) = claim(10);
        w.run_batch(&mut vec![c]);
        assert!(
            claimed.blocking_recv().unwrap().deliveries.is_empty(),
            "no slot for a claim either"
        );
        // Its result frees the slot, which wakes the dispatcher to claim the other.
        assert!(w.run_batch(&mut vec![delivered(first.id)]));
        let (c, claimed) = claim(10);
        w.run_batch(&mut vec![c]);
        let second = claimed.blocking_recv().unwrap().deliveries;
        assert_eq!(second.len(), 1);
        assert_ne!(second[0].tguid, first.tguid);
    }

    #[test]
    fn a_command_that_fails_after_queueing_a_head_hands_nothing_over() {
        let (mut w, mut handed) = handing_over(DeliveryLimits::default());
        w.run_batch(&mut vec![register("tg-ok").0, register("tg-boom").0]);
        // The treatment's second notification (ENROLLED, seq 3) of tg-boom fails, after its
        // first one (OK, a queue head once EXCEPTION is delivered) was inserted.
        w.conn
            .execute_batch(
                "CREATE TRIGGER boom AFTER INSERT ON notifications WHEN NEW.tguid = 'tg-boom' AND NEW.seq = 3
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            )
            .unwrap();
        let exception = |tguid: &str| {
            let (reply, rx) = oneshot::channel();
            let request = InputRequest {
                tguid: Tguid::parse(tguid).unwrap(),
                input: Input::Exception,
                event_id: None,
                actor: "test".into(),
            };
            (Command::Apply { request, reply }, rx)
        };
        let treat = |tguid: &str| {
            let (reply, rx) = oneshot::channel();
            let request = InputRequest {
                tguid: Tguid::parse(tguid).unwrap(),
                input: Input::Treat(crate::domain::Treatment::DifferentFingers),
                event_id: None,
                actor: "test".into(),
            };
            (Command::Apply { request, reply }, rx)
        };
        w.run_batch(&mut vec![exception("tg-ok").0, exception("tg-boom").0]);
        let firsts: Vec<_> = std::iter::from_fn(|| handed.try_recv().ok()).collect();
        assert_eq!(firsts.len(), 2, "both EXCEPTION notifications went out");
        for d in &firsts {
            w.run_batch(&mut vec![delivered(d.id)]);
        }
        let (ok, ok_rx) = treat("tg-ok");
        let (boom, boom_rx) = treat("tg-boom");
        w.run_batch(&mut vec![ok, boom]);
        assert!(ok_rx.blocking_recv().unwrap().is_ok());
        assert!(boom_rx.blocking_recv().unwrap().is_err());
        let out: Vec<_> = std::iter::from_fn(|| handed.try_recv().ok()).collect();
        assert_eq!(
            out.iter().map(|d| d.tguid.as_str()).collect::<Vec<_>>(),
            vec!["tg-ok"],
            "only the committed command's head went out"
        );
    }

    fn create_endpoint(id: &str) -> (Command, oneshot::Receiver<Result<AdminDone, WriteError>>) {
        let (reply, rx) = oneshot::channel();
        let endpoint = Endpoint {
            source: Source::Api,
            ..Endpoint::http(id, "http://127.0.0.1:9/created".parse().unwrap())
        };
        let op = AdminOp::CreateEndpoint(Box::new(endpoint));
        (Command::Admin { op, reply }, rx)
    }

    #[test]
    fn an_endpoint_created_in_a_batch_fans_out_at_once_and_is_published_with_the_commit() {
        let (mut w, mut handed) = handing_over(DeliveryLimits::default());
        let registry = w.endpoints.publisher.registry();
        w.run_batch(&mut vec![register("tg-a").0, register("tg-b").0]);
        let (create, created) = create_endpoint("new");
        let (mut more, asked) = joins(vec![enrolled("tg-b").0]);
        let mut before_commit = None;
        w.run_batch_joining(&mut vec![create, enrolled("tg-a").0], &mut |batch| {
            before_commit.get_or_insert(registry.get("new").is_some());
            more(batch)
        });
        assert!(asked.get() > 0);
        assert_eq!(
            before_commit,
            Some(false),
            "not published before the commit"
        );
        assert!(created.blocking_recv().unwrap().is_ok());
        assert!(registry.get("new").is_some(), "published with the commit");
        let mut out: Vec<(String, String)> = std::iter::from_fn(|| handed.try_recv().ok())
            .map(|d| (d.tguid, d.endpoint_id))
            .collect();
        out.sort();
        let pair = |t: &str, e: &str| (t.to_owned(), e.to_owned());
        assert_eq!(
            out,
            [
                pair("tg-a", "e"),
                pair("tg-a", "new"),
                pair("tg-b", "e"),
                pair("tg-b", "new")
            ],
            "commands after the creation, joined ones too, fan out to it"
        );
    }

    #[test]
    fn an_endpoint_change_that_is_undone_never_reaches_the_registry() {
        let (mut w, mut handed) = handing_over(DeliveryLimits::default());
        let registry = w.endpoints.publisher.registry();
        w.run_batch(&mut vec![register("tg").0]);
        w.conn
            .execute_batch(
                "CREATE TRIGGER refuse AFTER UPDATE OF url ON endpoints WHEN NEW.id = 'doomed'
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            )
            .unwrap();
        // Created, then changed: its format is written, then its url fails.
        let (create, created) = create_endpoint("doomed");
        w.run_batch(&mut vec![create]);
        assert!(created.blocking_recv().unwrap().is_ok());
        let (reply, changed) = oneshot::channel();
        let change = endpoint::Change {
            format: Some(endpoint::Format::CloudEvents),
            url: Some("http://127.0.0.1:9/moved".parse().unwrap()),
            ..Default::default()
        };
        let update = Command::Admin {
            op: AdminOp::UpdateEndpoint {
                id: "doomed".into(),
                change: Box::new(change),
            },
            reply,
        };
        w.run_batch(&mut vec![update, enrolled("tg").0]);
        assert!(changed.blocking_recv().unwrap().is_err());
        let doomed = registry.get("doomed").unwrap();
        assert_eq!(doomed.endpoint.shown_url(), "http://127.0.0.1:9/created");
        assert_eq!(doomed.endpoint.format(), endpoint::Format::Gbds);
        assert_eq!(
            std::iter::from_fn(|| handed.try_recv().ok()).count(),
            2,
            "the event still fans out to both endpoints"
        );
    }

    #[test]
    fn a_410_undone_with_the_results_it_came_with_leaves_the_endpoint_enabled_everywhere() {
        let (mut w, mut handed) = handing_over(DeliveryLimits::default());
        let registry = w.endpoints.publisher.registry();
        w.run_batch(&mut vec![register("tg-a").0, register("tg-b").0]);
        w.run_batch(&mut vec![enrolled("tg-a").0, enrolled("tg-b").0]);
        let ids: Vec<i64> = std::iter::from_fn(|| handed.try_recv().ok())
            .map(|d| d.id)
            .collect();
        assert_eq!(ids.len(), 2);
        w.conn
            .execute_batch(&format!(
                "CREATE TRIGGER boom AFTER UPDATE OF status ON deliveries WHEN NEW.id = {}
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
                ids[1]
            ))
            .unwrap();
        let results = Command::Complete {
            completions: vec![
                Completion::Gone {
                    id: ids[0],
                    endpoint_id: "e".into(),
                },
                Completion::Delivered {
                    id: ids[1],
                    http_status: 200,
                },
            ],
        };
        w.run_batch(&mut vec![results]);
        assert_eq!(
            count(
                &w,
                "SELECT count(*) FROM endpoints WHERE id = 'e' AND enabled = 1"
            ),
            1
        );
        assert!(registry.get("e").unwrap().endpoint.enabled);
    }
}
