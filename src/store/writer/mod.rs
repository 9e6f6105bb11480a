//! The single writer: drains queued commands into one SQLite transaction (group commit), runs
//! each inside it, and answers every caller only after COMMIT returns. This module is the
//! batch: joining, savepoints and the re-run after a failure, the sync mode, and the answers;
//! what a command does lives beside it (`transitions`, `queue`, `fanout`, `store::admin`).

mod fanout;
mod queue;
mod transitions;

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{mpsc, Notify};

pub(super) use queue::HandoffSender;

use super::{
    admin, AdminDone, AdminOp, Applied, Claimed, Command, Completion, Registered, StoreOptions,
    WriteError,
};
use crate::clock::now_ms;
use crate::endpoint::Publisher;
use crate::health::{Component, Health};
use fanout::BatchEndpoints;
use queue::DeliveryQueue;

/// Most commands in one SQLite transaction; bounds the latency a batch adds to its first caller.
const MAX_BATCH: usize = 1024;

/// What a command produced, held back until the batch commits; then sent to its caller.
enum Outcome {
    Register(Result<Registered, WriteError>),
    Apply(Result<Applied, WriteError>),
    Claim(Claimed),
    Admin(Result<AdminDone, WriteError>),
    /// Complete, Release and Shutdown: nothing to report but having been committed.
    Done,
    /// Attempt results that could not be recorded; `unavailable` says why when the store
    /// could not take the write (they are kept and recorded later), `None` when it refused
    /// them for another reason (they are dropped, and the deliveries sent again).
    Unrecorded {
        unavailable: Option<String>,
    },
}

/// Why a batch, or a command, could not be written.
#[derive(Debug, Clone)]
struct Failed {
    /// The store cannot take writes for now (`WriteError::Unavailable`, a 503), as opposed to
    /// a failure that trying again will not cure.
    unavailable: bool,
    why: String,
}

impl Failed {
    fn sqlite(e: &rusqlite::Error) -> Self {
        Failed {
            unavailable: super::unavailable(e),
            why: e.to_string(),
        }
    }

    fn unavailable(why: String) -> Self {
        Failed {
            unavailable: true,
            why,
        }
    }

    fn error(&self) -> WriteError {
        if self.unavailable {
            WriteError::Unavailable(self.why.clone())
        } else {
            WriteError::Internal(format!("commit failed: {}", self.why))
        }
    }

    /// Why a command failed, from its outcome.
    fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Register(Err(e)) | Outcome::Apply(Err(e)) | Outcome::Admin(Err(e)) => Failed {
                unavailable: matches!(e, WriteError::Unavailable(_)),
                why: e.to_string(),
            },
            Outcome::Unrecorded {
                unavailable: Some(why),
            } => Failed::unavailable(why.clone()),
            _ => Failed {
                unavailable: false,
                why: "a command failed".to_owned(),
            },
        }
    }
}

/// Why a command could not be written for want of a working store, if that is why it failed.
fn unavailable_why(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Register(Err(WriteError::Unavailable(why)))
        | Outcome::Apply(Err(WriteError::Unavailable(why)))
        | Outcome::Admin(Err(WriteError::Unavailable(why)))
        | Outcome::Unrecorded {
            unavailable: Some(why),
        } => Some(why.clone()),
        _ => None,
    }
}

/// Answers a command's caller; when the batch did not commit, every write becomes an error
/// instead. (Attempt results are not answered: the writer keeps or drops them.)
fn answer(command: Command, outcome: Outcome, failed: Option<&Failed>) {
    let committed = failed.is_none();
    let failed = || failed.map_or_else(|| WriteError::Internal(String::new()), Failed::error);
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
            &Failed {
                unavailable: false,
                why: "internal error: a command got another kind's answer".to_owned(),
            },
        ),
    }
}

/// Answers a command that could not run at all.
fn refuse(command: Command, failed: &Failed) {
    let e = || failed.error();
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
    CannotBegin(Failed),
    /// A command failed and SQLite rolled the whole transaction back on its own (it does so
    /// on some I/O errors and on a full disk): nothing of the batch is written.
    Lost(Failed),
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
    /// The endpoints a new notification may be queued for, as the open batch has them;
    /// published after its COMMIT.
    endpoints: BatchEndpoints,
    /// The deliveries handed out and the queue heads the batch made.
    queue: DeliveryQueue,
    /// What `PRAGMA synchronous` is now: FULL (true) or NORMAL. Batches that acknowledge a
    /// call commit FULL (when configured); the others need no fsync of their own.
    synced_full: bool,
    /// The database file as the OS sees it, and readiness.
    guard: Guard,
    /// Attempt results the store could not take yet (a full disk, say), recorded with the next
    /// batch. Their deliveries stay leased, pinned, meanwhile: a receiver that acknowledged
    /// one is not sent it again.
    carried: Vec<Completion>,
}

/// What the writer keeps of its database beside the connection.
pub(in crate::store) struct Guard {
    /// The exclusive lock on the file, held for as long as the writer runs.
    pub lock: Option<super::file::FileLock>,
    /// The files the connection has open, checked before every COMMIT (none in memory).
    pub files: Option<super::file::OpenFiles>,
    /// Readiness: `Component::Store` fails while writes cannot be committed.
    pub health: Health,
    /// Set when a check found the file damaged: no write is committed to it from then on.
    pub damaged: Arc<std::sync::OnceLock<String>>,
}

pub(super) fn spawn(
    conn: Connection,
    mut commands: mpsc::Receiver<Command>,
    mut options: StoreOptions,
    publisher: Publisher,
    ready: Arc<Notify>,
    handoff: HandoffSender,
    guard: Guard,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let endpoints = BatchEndpoints::new(publisher, std::mem::take(&mut options.endpoints));
            let mut writer = Writer {
                conn,
                synced_full: options.synchronous_full,
                queue: DeliveryQueue::new(options.delivery, handoff),
                options,
                endpoints,
                guard,
                carried: Vec::new(),
            };
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = commands.blocking_recv() {
                batch.push(first);
                drain(&mut commands, &mut batch);
                #[cfg(debug_assertions)]
                super::fault_hook(&batch);
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
            if !writer.carried.is_empty() {
                tracing::warn!(
                    results = writer.carried.len(),
                    "stopping with attempt results the store could not record; those deliveries are sent again"
                );
            }
            drop(writer.guard.lock.take());
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
        let began = std::time::Instant::now();
        tracing::trace!(commands = batch.len(), "write batch");
        if !self.carried.is_empty() {
            let completions = std::mem::take(&mut self.carried);
            batch.insert(0, Command::Complete { completions });
        }
        let changes_before = self.conn.total_changes();
        if let Err(e) = self.sync_for(batch) {
            tracing::error!(error = %e, "cannot set PRAGMA synchronous; the batch is refused");
            self.refuse_batch(batch, &Failed::sqlite(&e));
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
        let (outcomes, woke, failed) = match result {
            Ok((outcomes, woke)) => {
                let failed = self.commit();
                (outcomes, woke, failed)
            }
            Err(PassAborted::CannotBegin(failed) | PassAborted::Lost(failed)) => {
                self.forget_pass();
                self.refuse_batch(batch, &failed);
                return false;
            }
            Err(PassAborted::CommandFailed) => unreachable!("a per-command pass does not abort"),
        };
        let woke = if failed.is_none() {
            crate::telemetry::batch_committed(batch.len(), began.elapsed());
            self.queue.committed();
            // What the batch changed of the endpoints is on disk: the dispatcher sends by it
            // from now on, before anything of the batch is handed out or answered.
            self.endpoints.publish();
            // What the batch queued is on disk: hand it over now, before anyone is answered.
            self.queue.hand_over(&self.conn, self.endpoints.now(), now) || woke
        } else {
            self.forget_pass();
            false
        };
        let unavailable = match &failed {
            Some(f) if f.unavailable => Some(f.why.clone()),
            Some(_) => None,
            None => outcomes.iter().find_map(unavailable_why),
        };
        match unavailable {
            Some(why) => self.unavailable(&why),
            None if self.conn.total_changes() != changes_before && failed.is_none() => {
                self.guard.health.recover(Component::Store);
            }
            None => {}
        }
        for (command, outcome) in batch.drain(..).zip(outcomes) {
            if let Command::Complete { completions } = command {
                match (&failed, outcome) {
                    (Some(_), _)
                    | (
                        None,
                        Outcome::Unrecorded {
                            unavailable: Some(_),
                        },
                    ) => self.carried.extend(completions),
                    (None, Outcome::Unrecorded { unavailable: None }) => {
                        self.queue.unpin(&completions, now)
                    }
                    (None, _) => {}
                }
                continue;
            }
            answer(command, outcome, failed.as_ref());
        }
        woke
    }

    /// The store cannot take writes: not ready, for `why` (logged when it changes).
    fn unavailable(&self, why: &str) {
        self.guard.health.fail(
            Component::Store,
            format!("the database cannot take writes: {why}"),
        );
    }

    /// Commits the open transaction, unless its file is no longer the one at its path (then
    /// the transaction is rolled back: a write to a deleted file would be acknowledged and
    /// lost). On failure, nothing of the batch is written.
    fn commit(&mut self) -> Option<Failed> {
        let damaged = self.guard.damaged.get().cloned().map(Failed::unavailable);
        let refused = match &self.guard.files {
            _ if damaged.is_some() => damaged,
            Some(files) => files.check().err().map(Failed::unavailable).or_else(|| {
                #[cfg(debug_assertions)]
                if let Some(e) = super::fault::commit_fault(files.db()) {
                    return Some(Failed::sqlite(&e));
                }
                None
            }),
            None => None,
        };
        if let Some(failed) = refused {
            tracing::debug!(why = %failed.why, "the batch is not committed");
            self.rollback();
            return Some(failed);
        }
        match self.statement("COMMIT") {
            Ok(()) => None,
            Err(e) => {
                let failed = Failed::sqlite(&e);
                if failed.unavailable {
                    // Readiness says so, once per change (`unavailable`): no line per batch.
                    tracing::debug!(error = %e, "commit failed; the batch is rolled back");
                } else {
                    tracing::error!(error = %e, "commit failed; the batch is rolled back");
                }
                self.rollback();
                Some(failed)
            }
        }
    }

    /// Refuses every command of a batch that could not run: calls are answered with the
    /// failure, attempt results are kept for the next batch.
    fn refuse_batch(&mut self, batch: &mut Vec<Command>, failed: &Failed) {
        if failed.unavailable {
            self.unavailable(&failed.why);
        }
        for c in batch.drain(..) {
            match c {
                Command::Complete { completions } => self.carried.extend(completions),
                c => refuse(c, failed),
            }
        }
    }

    /// Undoes what a pass that did not commit left in memory: the endpoint changes it made,
    /// the heads it would have handed over and the leases its claims took.
    fn forget_pass(&mut self) {
        self.endpoints.forget();
        self.queue.forget_pass();
    }

    /// Begins a transaction and runs every command of the batch in it, leaving it open for
    /// the caller to commit.
    fn run_pass(
        &mut self,
        batch: &[Command],
        now: i64,
        isolation: Isolation,
    ) -> Result<(Vec<Outcome>, bool), PassAborted> {
        self.queue.forget_noted_health();
        if let Err(e) = self.statement("BEGIN IMMEDIATE") {
            let failed = Failed::sqlite(&e);
            if !failed.unavailable {
                tracing::error!(error = %e, "cannot begin a write transaction");
            }
            return Err(PassAborted::CannotBegin(failed));
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
            let marks = (self.queue.mark(), self.endpoints.mark());
            let done = self.execute(command, now);
            if matches!(command, Command::Admin { .. }) {
                // It may have changed an endpoint's health itself.
                self.queue.forget_noted_health();
            }
            if !done.ok && self.conn.is_autocommit() {
                // SQLite rolled the transaction back on its own: the commands after this one
                // would each commit alone. The batch is lost; refuse it whole.
                let failed = Failed::of(&done.outcome);
                tracing::debug!(error = %failed.why, "the write transaction was rolled back by SQLite; the batch is refused");
                self.forget_pass();
                return Err(PassAborted::Lost(failed));
            }
            if isolated {
                if !done.ok {
                    self.savepoint("ROLLBACK TO command");
                    // Its writes are undone; so is what it left in memory.
                    self.queue.undo_to(marks.0);
                    self.endpoints.undo_to(marks.1);
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
        // After some errors (a full disk, an I/O error) SQLite has rolled back already.
        if self.conn.is_autocommit() {
            return;
        }
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
                let r = transitions::register(&self.conn, tguid, *operation, actor, now);
                let ok = r.is_ok();
                done(Outcome::Register(r), ok, false)
            }
            Command::Apply {
                request, decision, ..
            } => {
                let r = transitions::apply(
                    &self.conn,
                    self.options.update_label,
                    (self.endpoints.now(), &mut self.queue),
                    (request, decision),
                    now,
                );
                let ok = r.is_ok();
                // The heads it queued are handed over after the commit, or left for a claim;
                // `hand_over` says which.
                done(Outcome::Apply(r), ok, false)
            }
            Command::Shutdown => done(Outcome::Done, true, false),
            Command::Admin { op, .. } => {
                let outbox = admin::Outbox {
                    conn: &self.conn,
                    leases: &self.queue.leases,
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
            Command::Claim { limit, .. } => {
                match self
                    .queue
                    .claim(&self.conn, self.endpoints.now(), *limit, now)
                {
                    Ok(c) => done(Outcome::Claim(c), true, false),
                    Err(e) => {
                        tracing::error!(error = %e, "claim failed");
                        done(Outcome::Claim(Claimed::default()), false, false)
                    }
                }
            }
            Command::Complete { completions } => match self.complete(completions, now) {
                Ok(woke) => done(Outcome::Done, true, woke),
                Err(e) if super::unavailable(&e) => {
                    // Kept, and recorded once the store takes writes again (see `carried`).
                    tracing::debug!(error = %e, "delivery results cannot be recorded now");
                    let unavailable = Some(e.to_string());
                    done(Outcome::Unrecorded { unavailable }, false, false)
                }
                Err(e) => {
                    // Dropped: the leases expire and the deliveries are attempted again
                    // (at least once).
                    tracing::error!(error = %e, "recording delivery results failed");
                    done(Outcome::Unrecorded { unavailable: None }, false, false)
                }
            },
            Command::Release { ids, .. } => {
                self.queue.release(ids);
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

    /// Records attempt results; an endpoint they disabled (a 410) leaves the registry too.
    fn complete(&mut self, completions: &[Completion], now: i64) -> rusqlite::Result<bool> {
        let done = self.queue.complete(&self.conn, completions, now)?;
        if done.disabled_endpoint {
            self.endpoints.reload(&self.conn)?;
        }
        Ok(done.woke)
    }
}

#[cfg(test)]
mod tests;
