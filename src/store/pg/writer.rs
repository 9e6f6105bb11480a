//! The PostgreSQL writer: a thread of its own (with a single-threaded runtime, as the SQLite
//! writer has a thread) that drains the command channel into batches and commits each in one
//! database transaction, answering its callers only after COMMIT. It owns the connection, the
//! leases this instance holds (and the slots they take) and the handoff to the dispatcher.
//!
//! Failures: a deadlock or serialization failure with another instance runs the batch again;
//! a statement refused runs its commands again one by one, so that only the culprit fails;
//! an unreachable database refuses the batch with `WriteError::Unavailable` (503), marks the
//! store not ready, keeps the attempt results to record later (their leases fence them), and
//! tries to connect again at most every `RECONNECT_INTERVAL`. A COMMIT cut off (connection
//! lost while it was on its way) may or may not have happened: its callers get a 503 that
//! says the outcome is unknown, never a success; the next connection then gives back whatever
//! leases the database records for this instance beyond those the writer holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_postgres::Client;

use super::batch::{self, Answer, Done};
use super::sql::Statements;
use super::statistics::Statistics;
use super::view::{Held, View};
use super::{admin, connect, Failure};
use crate::clock::now_ms;
use crate::domain::UpdateLabel;
use crate::endpoint::{Endpoint, Publisher, Snapshot};
use crate::health::{Component, Health};
use crate::store::leases::Leases;
use crate::store::writer::HandoffSender;
use crate::store::{Claimed, Command, Completion, DeliveryLimits, StoreOptions, WriteError};

/// Most commands in one batch.
const MAX_BATCH: usize = 1024;
/// How often a batch meeting deadlocks with other instances is run again before it fails.
const CONFLICT_RETRIES: usize = 8;
/// While the database is unreachable, how often the writer tries to connect again (calls in
/// between are refused at once rather than kept waiting).
const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);
/// Longest a batch may take, COMMIT included; past it the connection is dropped.
const BATCH_DEADLINE: Duration = Duration::from_secs(30);
/// Most attempt results kept while the database is unreachable (the rest are sent again
/// once their leases run out).
const MAX_CARRIED: usize = 100_000;

/// What the writer thread starts from.
pub(super) struct Start {
    pub config: tokio_postgres::Config,
    pub instance: String,
    pub options: StoreOptions,
    pub publisher: Publisher,
    pub endpoints_version: i64,
    pub ready: Arc<Notify>,
    pub handoff: HandoffSender,
    pub health: Health,
    pub commands: mpsc::Receiver<Command>,
}

pub(super) fn spawn(start: Start) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the store writer");
            runtime.block_on(Writer::new(start).run());
            tracing::debug!("store writer stopped");
        })
}

/// A connection with the hot path's statements prepared on it.
struct Connection {
    client: Client,
    statements: Statements,
}

/// How a transaction ended short of a commit.
enum Aborted {
    Failed(Failure),
    /// The connection was lost while COMMIT was on its way: it may have happened.
    Unknown(String),
}

struct Writer {
    config: tokio_postgres::Config,
    instance: String,
    update_label: UpdateLabel,
    limits: DeliveryLimits,
    configured: Vec<Endpoint>,
    publisher: Publisher,
    published: Snapshot,
    /// The endpoints' version `published` reflects.
    version: i64,
    /// This instance's leases: the slots they take, and the generation each was taken under.
    leases: Leases,
    held: HashMap<i64, Held>,
    handoff: HandoffSender,
    health: Health,
    ready: Arc<Notify>,
    conn: Option<Connection>,
    /// No connection attempt before then (the last one failed), and why it failed.
    reconnect_at: Option<(Instant, String)>,
    /// A COMMIT's outcome is unknown: it may have leased deliveries this writer does not hold.
    leases_unsure: bool,
    /// Attempt results not recorded yet (the database was unreachable).
    carried: Vec<Completion>,
    /// Due deliveries were left for want of a slot: freeing one wakes the dispatcher.
    waiting_for_slots: bool,
    statistics: Statistics,
    commands: mpsc::Receiver<Command>,
}

impl Writer {
    fn new(start: Start) -> Self {
        let Start {
            config,
            instance,
            options,
            publisher,
            endpoints_version,
            ready,
            handoff,
            health,
            commands,
        } = start;
        Writer {
            statistics: Statistics::new(config.clone()),
            config,
            instance,
            update_label: options.update_label,
            limits: options.delivery,
            configured: options.endpoints,
            published: publisher.current(),
            publisher,
            version: endpoints_version,
            leases: Leases::new(options.delivery),
            held: HashMap::new(),
            handoff,
            health,
            ready,
            conn: None,
            reconnect_at: None,
            leases_unsure: false,
            carried: Vec::new(),
            waiting_for_slots: false,
            commands,
        }
    }

    async fn run(mut self) {
        while let Some(first) = self.commands.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.commands.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            #[cfg(debug_assertions)]
            crate::store::fault_hook(&batch);
            let stop = batch.iter().any(|c| matches!(c, Command::Shutdown));
            let now = now_ms();
            self.leases.sweep(now);
            let (admins, hot): (Vec<Command>, Vec<Command>) = batch
                .into_iter()
                .partition(|c| matches!(c, Command::Admin { .. }));
            if !hot.is_empty() || !self.carried.is_empty() {
                self.run_hot(hot, now).await;
            }
            for command in admins {
                if let Command::Admin { op, reply } = command {
                    let done = self.run_admin(&admin::Action::Op(op)).await;
                    let _ = reply.send(done);
                }
            }
            if stop {
                break;
            }
        }
    }

    fn handoff_open(&self) -> bool {
        self.handoff.taken.load(std::sync::atomic::Ordering::SeqCst)
            && !self.handoff.deliveries.is_closed()
    }

    /// The connection, made (and its statements prepared) if there is none; refused at once
    /// while the database was found unreachable less than `RECONNECT_INTERVAL` ago.
    async fn connection(&mut self) -> Result<Connection, Failure> {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() {
                return Ok(conn);
            }
        }
        if let Some((at, why)) = &self.reconnect_at {
            if Instant::now() < *at {
                return Err(Failure::Unreachable(why.clone()));
            }
        }
        let made = async {
            let client = connect(&self.config).await?;
            let statements = Statements::prepare(&client).await?;
            Ok::<_, tokio_postgres::Error>(Connection { client, statements })
        }
        .await;
        let made = match made {
            Ok(conn) if self.leases_unsure => self.give_back_unheld_leases(&conn).await.map(|()| {
                self.leases_unsure = false;
                conn
            }),
            made => made,
        };
        match made {
            Ok(conn) => {
                if self.reconnect_at.take().is_some() {
                    tracing::info!("reconnected to PostgreSQL");
                }
                Ok(conn)
            }
            Err(e) => {
                let failure = Failure::from(e);
                if let Failure::Unreachable(_) = failure {
                    self.went_down(&failure);
                }
                Err(failure)
            }
        }
    }

    /// On the first connection after a COMMIT whose answer never came (the connection broke on
    /// its way back, or the batch ran past its deadline): the leases the database records for
    /// this instance beyond those it holds in memory were taken by that COMMIT. Nothing here
    /// will send those deliveries, so they are given back now rather than stuck until their
    /// leases run out.
    async fn give_back_unheld_leases(
        &self,
        conn: &Connection,
    ) -> Result<(), tokio_postgres::Error> {
        let held: Vec<i64> = self.held.keys().copied().collect();
        let given = super::give_back_leases(&conn.client, &self.instance, &held).await?;
        if given > 0 {
            tracing::warn!(
                deliveries = given,
                "gave back leases taken by a COMMIT whose outcome was unknown"
            );
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The database cannot be reached: not ready, and no new attempt for a while.
    fn went_down(&mut self, failure: &Failure) {
        self.conn = None;
        self.reconnect_at = Some((Instant::now() + RECONNECT_INTERVAL, failure.to_string()));
        self.health.fail(Component::Store, failure.to_string());
    }

    fn view(&self) -> View<'_> {
        View {
            instance: &self.instance,
            update_label: self.update_label,
            endpoints: &self.published,
            version: self.version,
            configured: &self.configured,
            leases: &self.leases,
            held: &self.held,
            handoff_open: self.handoff_open(),
            lease_ms: self.limits.lease_ms,
        }
    }

    /// Runs the calls, results and claims of a batch in one transaction (again on a conflict,
    /// one by one after a refused statement), and acts on what it decided once it committed.
    async fn run_hot(&mut self, commands: Vec<Command>, now: i64) {
        let carried = std::mem::take(&mut self.carried);
        let mut conflicts = 0;
        loop {
            let conn = match self.connection().await {
                Ok(c) => c,
                Err(failure) => return self.refuse(commands, carried, &failure.to_string()),
            };
            let view = self.view();
            let began = std::time::Instant::now();
            let run = tokio::time::timeout(
                BATCH_DEADLINE,
                in_transaction(&conn, |client, st| {
                    batch::run(client, st, &view, &commands, &carried, now)
                }),
            )
            .await
            .unwrap_or_else(|_| {
                Err(Aborted::Unknown(format!(
                    "the batch took longer than {BATCH_DEADLINE:?}"
                )))
            });
            #[cfg(debug_assertions)]
            let run = match run {
                Ok(_) if commit_reply_lost(&commands) => Err(Aborted::Unknown(
                    "the COMMIT's answer was lost (GBDS_FAULT_PG_COMMIT_ANSWER_LOST_ON)".into(),
                )),
                run => run,
            };
            match run {
                Ok(done) => {
                    let commands_run = commands.len() + usize::from(!carried.is_empty());
                    crate::telemetry::batch_committed(commands_run, began.elapsed());
                    self.statistics.committed(commands_run);
                    self.conn = Some(conn);
                    self.health.recover(Component::Store);
                    // The lease generations of the 410s, read before `committed` forgets what
                    // the batch ended: the 410 is recorded fenced by its lease.
                    let gens: Vec<i64> = done
                        .gone
                        .iter()
                        .map(|c| match c {
                            Completion::Gone { id, .. } => self.held.get(id).map_or(-1, |h| h.gen),
                            _ => -1,
                        })
                        .collect();
                    let gone = self.committed(commands, done, now);
                    for (c, gen) in gone.into_iter().zip(gens) {
                        if let Completion::Gone { id, endpoint_id } = c {
                            let action = admin::Action::Gone {
                                id,
                                gen,
                                endpoint_id,
                            };
                            if let Err(e) = self.run_admin(&action).await {
                                tracing::error!(error = %e, delivery = id, "recording a 410 failed; the delivery is sent again when its lease runs out");
                            }
                            self.held.remove(&id);
                            self.leases.end(id);
                        }
                    }
                    return;
                }
                Err(Aborted::Failed(Failure::Conflict(why))) if conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    tracing::debug!(%why, conflicts, "batch conflicted with another instance; running it again");
                    self.conn = Some(conn);
                }
                Err(Aborted::Failed(failure @ Failure::Unreachable(_))) => {
                    self.went_down(&failure);
                    return self.refuse(commands, carried, &failure.to_string());
                }
                Err(Aborted::Unknown(why)) => {
                    drop(conn.client);
                    self.leases_unsure = true;
                    let failure = Failure::Unreachable(why);
                    self.went_down(&failure);
                    let why = format!(
                        "{failure}; the connection was lost during COMMIT, so whether this call \
                         was recorded is unknown: repeat it (an event_id or decision_id makes a \
                         repeat safe)"
                    );
                    return self.refuse(commands, carried, &why);
                }
                Err(Aborted::Failed(failure)) => {
                    self.conn = Some(conn);
                    if commands.len() + usize::from(!carried.is_empty()) > 1 {
                        tracing::warn!(error = %failure, "a batch failed; its commands run again one by one");
                        return self.one_by_one(commands, carried, now).await;
                    }
                    tracing::error!(error = %failure, "a write failed");
                    for c in commands {
                        refuse_one(c, || WriteError::Internal(failure.to_string()));
                    }
                    return;
                }
            }
        }
    }

    /// After a refused statement: each command in a transaction of its own, so that only the
    /// one that caused it fails (results carried over go alone, first).
    async fn one_by_one(&mut self, commands: Vec<Command>, carried: Vec<Completion>, now: i64) {
        if !carried.is_empty() {
            self.carried = carried;
            Box::pin(self.run_hot(Vec::new(), now)).await;
            // Results that fail even alone are dropped; their leases run out.
            self.carried.clear();
        }
        for command in commands {
            Box::pin(self.run_hot(vec![command], now)).await;
        }
    }

    /// Refuses a batch that could not run: every call gets `Unavailable`, results are kept
    /// for the next batch, claims get nothing.
    fn refuse(&mut self, commands: Vec<Command>, carried: Vec<Completion>, why: &str) {
        self.carried = carried;
        for c in commands {
            match c {
                Command::Complete { completions } => self.carried.extend(completions),
                c => refuse_one(c, || WriteError::Unavailable(why.to_owned())),
            }
        }
        if self.carried.len() > MAX_CARRIED {
            let excess = self.carried.len() - MAX_CARRIED;
            self.carried.drain(..excess);
        }
    }

    /// The batch committed: the endpoints it saw are published, leases end and begin, new
    /// heads go to the dispatcher, and then the callers are answered.
    /// Returns the 410 results, which are recorded next, each in a transaction of its own.
    fn committed(&mut self, commands: Vec<Command>, done: Done, now: i64) -> Vec<Completion> {
        if let Some((endpoints, version)) = done.reloaded {
            self.publish(endpoints, version);
        }
        let mut woke = done.woke;
        for id in done.ended {
            self.held.remove(&id);
            if self.leases.end(id) && self.waiting_for_slots {
                self.waiting_for_slots = false;
                woke = true;
            }
        }
        let until = now + self.limits.lease_ms;
        for (delivery, held, hand) in done.leased {
            self.leases.hold(delivery.id, until, &held.endpoint);
            self.held.insert(delivery.id, held);
            if hand && self.handoff.deliveries.send(delivery).is_err() {
                // No dispatcher any more (shutting down): the lease runs out, or the next
                // start of this instance gives it back.
            }
        }
        self.waiting_for_slots |= done.waiting_for_slots;
        for (command, answer) in commands.into_iter().zip(done.answers) {
            reply(command, answer);
        }
        if woke {
            self.ready.notify_one();
        }
        done.gone
    }

    fn publish(&mut self, endpoints: Vec<Endpoint>, version: i64) {
        let snapshot = self.published.succeeded_by(endpoints);
        self.publisher.publish(snapshot.clone());
        self.published = snapshot;
        self.version = version;
    }

    /// Runs an operator action in a transaction of its own (again on a conflict); an action
    /// that changed the endpoints publishes them after its commit.
    async fn run_admin(
        &mut self,
        action: &admin::Action,
    ) -> Result<crate::store::AdminDone, WriteError> {
        let mut conflicts = 0;
        loop {
            let conn = match self.connection().await {
                Ok(c) => c,
                Err(failure) => return Err(WriteError::Unavailable(failure.to_string())),
            };
            let ctx = admin::Context {
                instance: &self.instance,
                configured: &self.configured,
                endpoints: &self.published,
                now: now_ms(),
            };
            let run = in_transaction(&conn, |client, _| admin::run(client, &ctx, action)).await;
            match run {
                Ok(Ok(done)) => {
                    self.conn = Some(conn);
                    self.health.recover(Component::Store);
                    if let Some((endpoints, version)) = done.reloaded {
                        self.publish(endpoints, version);
                    }
                    self.ready.notify_one();
                    return Ok(done.done);
                }
                Ok(Err(refused)) => {
                    self.conn = Some(conn);
                    return Err(refused);
                }
                Err(Aborted::Failed(Failure::Conflict(_))) if conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    self.conn = Some(conn);
                }
                Err(Aborted::Failed(failure @ Failure::Unreachable(_))) => {
                    self.went_down(&failure);
                    return Err(WriteError::Unavailable(failure.to_string()));
                }
                Err(Aborted::Unknown(why)) => {
                    self.leases_unsure = true;
                    let failure = Failure::Unreachable(why);
                    self.went_down(&failure);
                    return Err(WriteError::Unavailable(format!(
                        "{failure}; the connection was lost during COMMIT: the outcome is unknown"
                    )));
                }
                Err(Aborted::Failed(failure)) => {
                    self.conn = Some(conn);
                    return Err(WriteError::Internal(failure.to_string()));
                }
            }
        }
    }
}

/// The fault hook of debug builds: the first batch that holds an event of the tguid in
/// `GBDS_FAULT_PG_COMMIT_ANSWER_LOST_ON` commits, then is treated as if the connection broke
/// while COMMIT's answer was on its way (whatever it leased is recorded, and not held).
#[cfg(debug_assertions)]
fn commit_reply_lost(commands: &[Command]) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static TGUID: std::sync::LazyLock<Option<String>> =
        std::sync::LazyLock::new(|| std::env::var("GBDS_FAULT_PG_COMMIT_ANSWER_LOST_ON").ok());
    static SPENT: AtomicBool = AtomicBool::new(false);
    let Some(tguid) = TGUID.as_deref() else {
        return false;
    };
    let hit = commands
        .iter()
        .any(|c| matches!(c, Command::Apply { request, .. } if request.tguid.as_str() == tguid));
    hit && !SPENT.swap(true, Ordering::SeqCst)
}

/// Runs `work` between BEGIN and COMMIT on `conn`; rolls back when it fails. A refusal from
/// `work` (an `Err` inside the `Ok`) is rolled back too.
async fn in_transaction<'c, T, F, Fut>(conn: &'c Connection, work: F) -> Result<T, Aborted>
where
    F: FnOnce(&'c Client, &'c Statements) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
    T: Committable,
{
    let client = &conn.client;
    if let Err(e) = client.batch_execute("BEGIN").await {
        return Err(Aborted::Failed(e.into()));
    }
    let done = match work(client, &conn.statements).await {
        Ok(done) if done.commits() => done,
        Ok(refused) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Ok(refused);
        }
        Err(failure) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(Aborted::Failed(failure));
        }
    };
    match client.batch_execute("COMMIT").await {
        Ok(()) => Ok(done),
        // The server answered: the transaction did not commit.
        Err(e) if e.as_db_error().is_some() => Err(Aborted::Failed(e.into())),
        Err(e) => Err(Aborted::Unknown(e.to_string())),
    }
}

/// Whether what a transaction's work returned is to be committed.
trait Committable {
    fn commits(&self) -> bool;
}

impl Committable for Done {
    fn commits(&self) -> bool {
        true
    }
}

impl<T, E> Committable for Result<T, E> {
    fn commits(&self) -> bool {
        self.is_ok()
    }
}

/// Sends a committed command its answer.
fn reply(command: Command, answer: Answer) {
    match (command, answer) {
        (Command::Register { reply, .. }, Answer::Register(r)) => drop(reply.send(r)),
        (Command::Apply { reply, .. }, Answer::Apply(r)) => drop(reply.send(r)),
        (Command::Claim { reply, .. }, Answer::Claim(c)) => drop(reply.send(c)),
        (Command::Release { reply, .. }, _) => drop(reply.send(())),
        (Command::Complete { .. } | Command::Shutdown, _) => {}
        (c, _) => refuse_one(c, || {
            WriteError::Internal("internal error: a command got another kind's answer".into())
        }),
    }
}

/// Answers a command that did not run with `error`.
fn refuse_one(command: Command, error: impl Fn() -> WriteError) {
    match command {
        Command::Register { reply, .. } => drop(reply.send(Err(error()))),
        Command::Apply { reply, .. } => drop(reply.send(Err(error()))),
        Command::Admin { reply, .. } => drop(reply.send(Err(error()))),
        Command::Claim { reply, .. } => drop(reply.send(Claimed::default())),
        Command::Release { reply, .. } => drop(reply.send(())),
        Command::Complete { .. } | Command::Shutdown => {}
    }
}
