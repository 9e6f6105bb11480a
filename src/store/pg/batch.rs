//! One group commit on PostgreSQL, up to (not including) its COMMIT: two pipelined round
//! trips. The first locks every transaction the batch decides on, in tguid order, and reads
//! what the decisions need (idempotency keys, which queues have a pending delivery); the state
//! machine then runs in Rust, command by command, as on SQLite; the second writes the whole
//! batch, one statement per table (`sql.rs`), with the delivery results and claims.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio_postgres::Client;

use super::queue::Deliveries;
use super::sql::Statements;
use super::view::{Held, View};
use super::Failure;
use crate::domain::{self, Operation, State, UpdateLabel};
use crate::endpoint::Endpoint;
use crate::store::{
    Applied, Claimed, ClaimedDelivery, Command, Completion, DecisionNote, InputRequest, Registered,
    TxSummary, WriteError,
};

/// A command's answer, sent once the batch has committed.
pub(super) enum Answer {
    Register(Result<Registered, WriteError>),
    Apply(Result<Applied, WriteError>),
    Claim(Claimed),
    /// Complete, Release, Shutdown (and Admin, answered by the writer).
    Nothing,
}

/// What a batch decided, to act on once it has committed.
pub(super) struct Done {
    /// One per command, in order.
    pub answers: Vec<Answer>,
    /// Deliveries leased to this instance (new heads, promoted heads and claims), to hold and,
    /// except the claimed ones (which go back as answers), to hand over.
    pub leased: Vec<(ClaimedDelivery, Held, bool)>,
    /// Leases that ended: results recorded, leases given back.
    pub ended: Vec<i64>,
    /// The endpoints as the batch fanned out by, when they changed since the last publish.
    pub reloaded: Option<(Vec<Endpoint>, i64)>,
    /// 410 results, run after the batch (each disables an endpoint).
    pub gone: Vec<Completion>,
    /// Due heads were left for want of a slot: a freed slot should wake the dispatcher.
    pub waiting_for_slots: bool,
    /// Claimable deliveries were left in the database.
    pub woke: bool,
}

/// A transaction as the batch holds it (locked).
struct Tx {
    id: i64,
    operation: Operation,
    state: State,
    created_at: i64,
    updated_at: i64,
    next_seq: i64,
    /// The first command that may see it: the registration that created it in this batch.
    visible_from: usize,
    /// This batch created it.
    created: bool,
    changed: bool,
}

impl Tx {
    fn summary(&self, tguid: &str) -> TxSummary {
        TxSummary {
            tguid: tguid.to_owned(),
            operation: self.operation,
            state: self.state,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The transition log's rows the batch writes (columns of `sql::TRANSITIONS`).
#[derive(Default)]
struct Log {
    tx: Vec<i64>,
    tguid: Vec<String>,
    from: Vec<Option<String>>,
    to: Vec<String>,
    input: Vec<String>,
    uguid: Vec<Option<String>>,
    actor: Vec<String>,
    event_id: Vec<Option<String>>,
    at: Vec<i64>,
    decision_id: Vec<Option<String>>,
    fingerprint: Vec<Option<String>>,
    comment: Vec<Option<String>>,
}

impl Log {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        (tx, tguid): (i64, &str),
        (from, to): (Option<State>, State),
        input: String,
        uguid: Option<String>,
        (actor, event_id): (&str, Option<&str>),
        note: &DecisionNote,
        at: i64,
    ) {
        self.tx.push(tx);
        self.tguid.push(tguid.to_owned());
        self.from.push(from.map(|s| s.as_str().to_owned()));
        self.to.push(to.as_str().to_owned());
        self.input.push(input);
        self.uguid.push(uguid);
        self.actor.push(actor.to_owned());
        self.event_id.push(event_id.map(str::to_owned));
        self.at.push(at);
        let (id, fingerprint) = note.decision_id.clone().unzip();
        self.decision_id.push(id);
        self.fingerprint.push(fingerprint);
        self.comment.push(note.comment.clone());
    }
}

fn column<T>(rows: &[tokio_postgres::Row], i: usize) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    rows.iter().map(|r| r.get(i)).collect()
}

/// Runs the batch's commands in the open transaction (the caller began it and commits it).
pub(super) async fn run(
    client: &Client,
    st: &Statements,
    view: &View<'_>,
    commands: &[Command],
    carried: &[Completion],
    now: i64,
) -> Result<Done, Failure> {
    // What the first round trip must lock and read.
    // Each new tguid's operation and first registration (a command before it cannot see it).
    let mut registrations: BTreeMap<String, (Operation, usize)> = BTreeMap::new();
    let mut to_lock: Vec<String> = Vec::new();
    let (mut event_keys, mut decision_keys) = (Vec::new(), Vec::new());
    let mut fanning: Vec<String> = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        match command {
            Command::Register {
                tguid, operation, ..
            } => {
                registrations
                    .entry(tguid.to_string())
                    .or_insert((*operation, i));
                to_lock.push(tguid.to_string());
            }
            Command::Apply {
                request, decision, ..
            } => {
                let tguid = request.tguid.to_string();
                if let Some((id, _)) = &request.event_id {
                    event_keys.push((tguid.clone(), id.clone()));
                }
                if let Some((id, _)) = &decision.decision_id {
                    decision_keys.push((tguid.clone(), id.clone()));
                }
                to_lock.push(tguid.clone());
                fanning.push(tguid);
            }
            _ => {}
        }
    }
    let mut deliveries = Deliveries::new(view, now);
    let completions = commands
        .iter()
        .filter_map(|c| match c {
            Command::Complete { completions } => Some(completions.as_slice()),
            _ => None,
        })
        .chain(std::iter::once(carried))
        .flatten();
    for c in completions {
        if let Some(tguid) = deliveries.result(c) {
            to_lock.push(tguid);
        }
    }
    to_lock.sort_unstable();
    to_lock.dedup();
    let (reg_tguids, reg_ops): (Vec<String>, Vec<&str>) = registrations
        .iter()
        .map(|(t, (o, _))| (t.clone(), o.as_str()))
        .unzip();
    let (ev_tguids, ev_ids): (Vec<String>, Vec<String>) = event_keys.into_iter().unzip();
    let (de_tguids, de_ids): (Vec<String>, Vec<String>) = decision_keys.into_iter().unzip();

    // Round trip 1: lock and read.
    let (_, version, created, locked, used_events, used_decisions, pending) = tokio::try_join!(
        biased;
        client.query_one(&st.endpoints_shared, &[]),
        client.query_one(&st.endpoints_version, &[]),
        async {
            if reg_tguids.is_empty() {
                return Ok(vec![]);
            }
            client.query(&st.register, &[&reg_tguids, &reg_ops, &now]).await
        },
        async {
            if to_lock.is_empty() {
                return Ok(vec![]);
            }
            client.query(&st.lock, &[&to_lock]).await
        },
        async {
            if ev_tguids.is_empty() {
                return Ok(vec![]);
            }
            client.query(&st.event_ids, &[&ev_tguids, &ev_ids]).await
        },
        async {
            if de_tguids.is_empty() {
                return Ok(vec![]);
            }
            client.query(&st.decision_ids, &[&de_tguids, &de_ids]).await
        },
        async {
            if fanning.is_empty() {
                return Ok(vec![]);
            }
            client.query(&st.pending_queues, &[&fanning]).await
        },
    )?;

    // The endpoints changed since this instance last looked: fan out by what they are now.
    let version: i64 = version.get(0);
    let reloaded = if version != view.version {
        let endpoints = super::endpoints::load(client, view.configured).await?;
        Some((endpoints, version))
    } else {
        None
    };
    let reloaded_snapshot = reloaded
        .as_ref()
        .map(|(e, _)| view.endpoints.succeeded_by(e.clone()));
    let endpoints = reloaded_snapshot.as_ref().unwrap_or(view.endpoints);

    let created: HashSet<String> = column(&created, 0).into_iter().collect();
    let mut txs: HashMap<String, Tx> = HashMap::with_capacity(locked.len());
    for r in &locked {
        let tguid: String = r.get(1);
        let created = created.contains(&tguid);
        let operation: String = r.get(2);
        let state: String = r.get(3);
        let tx = Tx {
            id: r.get(0),
            operation: Operation::parse(&operation)
                .ok_or_else(|| Failure::Statement(format!("bad operation {operation:?} stored")))?,
            state: State::parse(&state)
                .ok_or_else(|| Failure::Statement(format!("bad state {state:?} stored")))?,
            created_at: r.get(4),
            updated_at: r.get(5),
            next_seq: r.get(6),
            visible_from: match registrations.get(&tguid) {
                Some((_, first)) if created => *first,
                _ => 0,
            },
            created,
            changed: false,
        };
        txs.insert(tguid, tx);
    }
    let mut used: HashMap<(String, String), String> = HashMap::new();
    for r in &used_events {
        used.insert((r.get(0), format!("e:{}", r.get::<_, String>(1))), r.get(2));
    }
    for r in &used_decisions {
        used.insert((r.get(0), format!("d:{}", r.get::<_, String>(1))), r.get(2));
    }
    for r in &pending {
        deliveries.queue_has_pending(r.get(0), r.get(1));
    }

    // The state machine, command by command, on the locked rows.
    let mut log = Log::default();
    let mut new_event_ids: (Vec<i64>, Vec<String>, Vec<String>) = Default::default();
    let mut answers = Vec::with_capacity(commands.len());
    for (i, command) in commands.iter().enumerate() {
        let answer = match command {
            Command::Register {
                tguid,
                operation,
                actor,
                ..
            } => {
                let tguid = tguid.as_str();
                Answer::Register(match txs.get_mut(tguid) {
                    Some(tx) if tx.created && tx.visible_from == i => {
                        log.push(
                            (tx.id, tguid),
                            (None, State::Processing),
                            format!("register {operation}"),
                            None,
                            (actor, None),
                            &DecisionNote::default(),
                            now,
                        );
                        Ok(Registered {
                            created: true,
                            summary: tx.summary(tguid),
                        })
                    }
                    Some(tx) if tx.operation == *operation => Ok(Registered {
                        created: false,
                        summary: tx.summary(tguid),
                    }),
                    Some(tx) => Err(WriteError::OperationConflict {
                        tguid: tguid.to_owned(),
                        existing: tx.operation,
                    }),
                    None => Err(WriteError::Internal(format!(
                        "transaction {tguid} was neither registered nor found"
                    ))),
                })
            }
            Command::Apply {
                request, decision, ..
            } => {
                let tguid = request.tguid.as_str();
                let applied = match txs.get_mut(tguid).filter(|tx| tx.visible_from <= i) {
                    None => Err(WriteError::NotFound(tguid.to_owned())),
                    Some(tx) => apply(tx, (request, decision), view.update_label, &mut used, now)
                        .map(|(applied, transition)| {
                            let Some(transition) = transition else {
                                return applied;
                            };
                            let event_id = request.event_id.as_ref().map(|(id, _)| id.as_str());
                            if let Some((id, fingerprint)) = &request.event_id {
                                new_event_ids.0.push(tx.id);
                                new_event_ids.1.push(id.clone());
                                new_event_ids.2.push(fingerprint.clone());
                            }
                            let uguid = match &request.input {
                                domain::Input::LatentMatch(u) => Some(u.as_str().to_owned()),
                                _ => None,
                            };
                            log.push(
                                (tx.id, tguid),
                                (Some(transition.from), transition.to),
                                request.input.describe(),
                                uguid,
                                (&request.actor, event_id),
                                decision,
                                now,
                            );
                            for notification in &transition.notifications {
                                let seq = tx.next_seq;
                                tx.next_seq += 1;
                                deliveries.record(endpoints, (tx.id, tguid, seq), notification);
                            }
                            applied
                        }),
                };
                Answer::Apply(applied)
            }
            _ => Answer::Nothing,
        };
        answers.push(answer);
    }

    // Round trip 2: write it all, with the delivery results and claims.
    let advanced: Vec<(&String, &Tx)> = txs.iter().filter(|(_, tx)| tx.changed).collect();
    let adv_ids: Vec<i64> = advanced.iter().map(|(_, tx)| tx.id).collect();
    let adv_states: Vec<&str> = advanced.iter().map(|(_, tx)| tx.state.as_str()).collect();
    let adv_at: Vec<i64> = advanced.iter().map(|(_, tx)| tx.updated_at).collect();
    let adv_seq: Vec<i64> = advanced.iter().map(|(_, tx)| tx.next_seq).collect();
    let claims: Vec<usize> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Claim { limit, .. } => Some(*limit),
            _ => None,
        })
        .collect();
    let releases: Vec<i64> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Release { ids, .. } => Some(ids.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect();
    let ((), (), (), written) = tokio::try_join!(
        biased;
        async {
            if !adv_ids.is_empty() {
                client
                    .execute(&st.advance, &[&adv_ids, &adv_states, &adv_at, &adv_seq])
                    .await?;
            }
            Ok(())
        },
        async {
            if !log.tx.is_empty() {
                client
                    .execute(
                        &st.transitions,
                        &[
                            &log.tx,
                            &log.tguid,
                            &log.from,
                            &log.to,
                            &log.input,
                            &log.uguid,
                            &log.actor,
                            &log.event_id,
                            &log.at,
                            &log.decision_id,
                            &log.fingerprint,
                            &log.comment,
                        ],
                    )
                    .await?;
            }
            Ok(())
        },
        async {
            if !new_event_ids.0.is_empty() {
                client
                    .execute(
                        &st.insert_event_ids,
                        &[&new_event_ids.0, &new_event_ids.1, &new_event_ids.2],
                    )
                    .await?;
            }
            Ok(())
        },
        deliveries.write(client, st, endpoints, &claims, &releases),
    )?;

    let mut claimed = written.claimed.into_iter();
    for (command, answer) in commands.iter().zip(answers.iter_mut()) {
        if let Command::Claim { .. } = command {
            *answer = Answer::Claim(claimed.next().unwrap_or_default());
        }
    }
    Ok(Done {
        answers,
        leased: written.leased,
        ended: written.ended,
        reloaded,
        gone: written.gone,
        waiting_for_slots: written.waiting_for_slots,
        woke: written.woke,
    })
}

/// An input applied to a locked transaction: the refusals first (nothing is written for
/// them), then the new state; the caller records the log row and the notifications.
fn apply(
    tx: &mut Tx,
    (request, note): (&InputRequest, &DecisionNote),
    update_label: UpdateLabel,
    used: &mut HashMap<(String, String), String>,
    now: i64,
) -> Result<(Applied, Option<Transition>), WriteError> {
    let tguid = request.tguid.as_str();
    let summary = tx.summary(tguid);
    let key = |kind: &str, id: &str| (tguid.to_owned(), format!("{kind}:{id}"));
    let earlier = match &request.event_id {
        Some((id, fingerprint)) => used
            .get(&key("e", id))
            .map(|f| (f == fingerprint, WriteError::EventIdReused(id.clone()))),
        None => None,
    };
    let earlier = earlier.or_else(|| {
        note.decision_id.as_ref().and_then(|(id, fingerprint)| {
            used.get(&key("d", id))
                .map(|f| (f == fingerprint, WriteError::DecisionIdReused(id.clone())))
        })
    });
    match earlier {
        Some((true, _)) => {
            return Ok((
                Applied {
                    duplicate: true,
                    summary,
                    notifications: 0,
                },
                None,
            ));
        }
        Some((false, reused)) => {
            // Contract §4 lists invalid_transition before event_id_reused.
            domain::step(tx.operation, tx.state, &request.input, update_label)?;
            return Err(reused);
        }
        None => {}
    }
    let transition = domain::step(tx.operation, tx.state, &request.input, update_label)?;
    if let Some((id, fingerprint)) = &request.event_id {
        used.insert(key("e", id), fingerprint.clone());
    }
    if let Some((id, fingerprint)) = &note.decision_id {
        used.insert(key("d", id), fingerprint.clone());
    }
    let from = tx.state;
    tx.state = transition.to;
    tx.updated_at = now;
    tx.changed = true;
    Ok((
        Applied {
            duplicate: false,
            notifications: transition.notifications.len(),
            summary: tx.summary(tguid),
        },
        Some(Transition {
            from,
            to: transition.to,
            notifications: transition.notifications,
        }),
    ))
}

/// A decision of the state machine with the state it left.
struct Transition {
    from: State,
    to: State,
    notifications: Vec<domain::Notification>,
}
