//! The delivery queue in a PostgreSQL batch: the deliveries its notifications get (a queue's
//! head leased to this instance at once when it has a slot), attempt results (fenced by the
//! lease's generation; finishing a head promotes the next in the same statement), claims of
//! what fell due, and leases given back. Written in the batch's second round trip.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio_postgres::Client;

use super::sql::Statements;
use super::view::{Held, View};
use crate::domain::Notification;
use crate::endpoint::Snapshot;
use crate::store::{Claimed, ClaimedDelivery, Completion};

/// What the batch writes of the delivery queue, gathered while its commands run.
pub(super) struct Deliveries<'a> {
    view: &'a View<'a>,
    now: i64,
    /// A lease taken now ends then.
    until: i64,
    /// (tguid, endpoint) queues with a pending delivery: a new one of them is not the head.
    pending: HashSet<(String, String)>,
    notifications: NotificationRows,
    rows: DeliveryRows,
    /// Heads leased at insert: (tx, seq, endpoint) → what the dispatcher sends.
    fresh: HashMap<(i64, i64, String), ClaimedDelivery>,
    /// Slots the batch took, per endpoint and in all.
    taken: HashMap<String, usize>,
    taken_total: usize,
    finish: Finish,
    retry: Retry,
    gone: Vec<Completion>,
    /// Each endpoint's last result in the batch: acknowledged or not.
    health: Vec<(String, bool)>,
    /// Leases whose results the batch records.
    ended: Vec<i64>,
}

#[derive(Default)]
struct NotificationRows {
    tx: Vec<i64>,
    tguid: Vec<String>,
    seq: Vec<i64>,
    webhook_id: Vec<String>,
    operation: Vec<&'static str>,
    status: Vec<&'static str>,
    body: Vec<Vec<u8>>,
    created_at: Vec<i64>,
}

#[derive(Default)]
struct DeliveryRows {
    tx: Vec<i64>,
    seq: Vec<i64>,
    endpoint: Vec<String>,
    ready: Vec<bool>,
    due: Vec<i64>,
    owner: Vec<Option<String>>,
    gen: Vec<i64>,
}

#[derive(Default)]
struct Finish {
    id: Vec<i64>,
    gen: Vec<i64>,
    status: Vec<&'static str>,
    http: Vec<Option<i32>>,
    error: Vec<Option<String>>,
    /// The finished lease's slot passes to the head it promotes.
    pass_slot: Vec<bool>,
}

#[derive(Default)]
struct Retry {
    id: Vec<i64>,
    gen: Vec<i64>,
    at: Vec<i64>,
    http: Vec<Option<i32>>,
    error: Vec<String>,
}

/// What the second round trip wrote of the queue.
pub(super) struct Written {
    /// Leased to this instance: (what it sends, its lease, whether to hand it over — claims
    /// are answered instead).
    pub leased: Vec<(ClaimedDelivery, Held, bool)>,
    pub claimed: Vec<Claimed>,
    pub ended: Vec<i64>,
    pub gone: Vec<Completion>,
    pub waiting_for_slots: bool,
    pub woke: bool,
}

impl<'a> Deliveries<'a> {
    pub fn new(view: &'a View<'a>, now: i64) -> Self {
        Deliveries {
            view,
            now,
            until: now + view.lease_ms,
            pending: HashSet::new(),
            notifications: NotificationRows::default(),
            rows: DeliveryRows::default(),
            fresh: HashMap::new(),
            taken: HashMap::new(),
            taken_total: 0,
            finish: Finish::default(),
            retry: Retry::default(),
            gone: Vec::new(),
            health: Vec::new(),
            ended: Vec::new(),
        }
    }

    /// Notes that the (tguid, endpoint) queue already has a pending delivery.
    pub fn queue_has_pending(&mut self, tguid: String, endpoint: String) {
        self.pending.insert((tguid, endpoint));
    }

    fn note_health(&mut self, endpoint: &str, ok: bool) {
        match self.health.iter_mut().find(|(e, _)| e == endpoint) {
            Some((_, last)) => *last = ok,
            None => self.health.push((endpoint.to_owned(), ok)),
        }
    }

    /// Takes an attempt's result into the batch; returns the tguid whose row must be locked
    /// (finishing a head changes its queue). A result for a lease this instance does not
    /// hold is dropped: it cannot be fenced.
    pub fn result(&mut self, c: &Completion) -> Option<String> {
        let Some(held) = self.view.held.get(&c.id()) else {
            tracing::warn!(
                delivery = c.id(),
                "a result for a delivery this instance holds no lease on; dropped"
            );
            return None;
        };
        let (id, gen) = (c.id(), held.gen);
        self.ended.push(id);
        let (status, http, error) = match c {
            Completion::Delivered { http_status, .. } => {
                ("delivered", Some(*http_status as i32), None)
            }
            Completion::Dead {
                http_status, error, ..
            } => ("dead", http_status.map(i32::from), Some(error.clone())),
            Completion::Retry {
                http_status,
                error,
                next_attempt_at,
                ..
            } => {
                self.retry.id.push(id);
                self.retry.gen.push(gen);
                self.retry.at.push(*next_attempt_at);
                self.retry.http.push(http_status.map(i32::from));
                self.retry.error.push(error.clone());
                self.note_health(&held.endpoint, false);
                return None;
            }
            Completion::Gone { .. } => {
                self.gone.push(c.clone());
                return None;
            }
        };
        let enabled = self
            .view
            .endpoints
            .get(&held.endpoint)
            .is_some_and(|e| e.endpoint.enabled);
        self.finish.id.push(id);
        self.finish.gen.push(gen);
        self.finish.status.push(status);
        self.finish.http.push(http);
        self.finish.error.push(error);
        self.finish
            .pass_slot
            .push(enabled && self.view.handoff_open && self.view.leases.held(id, self.now));
        self.note_health(&held.endpoint, status == "delivered");
        Some(held.tguid.clone())
    }

    /// Queues a delivery of a new notification for every endpoint subscribed to it; a queue's
    /// head is leased to this instance at once when its endpoint is enabled and has a slot.
    pub fn record(
        &mut self,
        endpoints: &Snapshot,
        (tx, tguid, seq): (i64, &str, i64),
        notification: &Notification,
    ) {
        let body = body_of(notification, tguid);
        let webhook_id = format!("msg_{:011x}{:016x}", self.now, fastrand::u64(..));
        let (operation, status) = (notification.operation(), notification.status());
        let n = &mut self.notifications;
        n.tx.push(tx);
        n.tguid.push(tguid.to_owned());
        n.seq.push(seq);
        n.webhook_id.push(webhook_id.clone());
        n.operation.push(operation);
        n.status.push(status);
        n.body.push(body.to_vec());
        n.created_at.push(self.now);
        for endpoint in endpoints.iter().map(|e| &e.endpoint) {
            if !endpoint.subscriptions.matches(operation, status) {
                continue;
            }
            let head = self.pending.insert((tguid.to_owned(), endpoint.id.clone()));
            let taken_here = self.taken.get(&endpoint.id).copied().unwrap_or(0);
            let lease = head
                && endpoint.enabled
                && self.view.handoff_open
                && self
                    .view
                    .leases
                    .room_beside(&endpoint.id, self.taken_total, taken_here)
                    > 0;
            let r = &mut self.rows;
            r.tx.push(tx);
            r.seq.push(seq);
            r.endpoint.push(endpoint.id.clone());
            r.ready.push(head);
            r.due.push(if lease { self.until } else { self.now });
            r.owner.push(lease.then(|| self.view.instance.to_owned()));
            r.gen.push(i64::from(lease));
            if lease {
                *self.taken.entry(endpoint.id.clone()).or_default() += 1;
                self.taken_total += 1;
                self.fresh.insert(
                    (tx, seq, endpoint.id.clone()),
                    ClaimedDelivery {
                        id: 0,
                        endpoint_id: endpoint.id.clone(),
                        tguid: tguid.to_owned(),
                        seq,
                        attempts: 0,
                        webhook_id: webhook_id.clone(),
                        body: body.clone(),
                        operation: operation.to_owned(),
                        status: status.to_owned(),
                        created_at: self.now,
                    },
                );
            }
        }
    }

    /// Writes the batch's part of the queue (pipelined with the rest of its writes).
    pub async fn write(
        self,
        client: &Client,
        st: &Statements,
        endpoints: &Snapshot,
        claims: &[usize],
        releases: &[i64],
    ) -> Result<Written, tokio_postgres::Error> {
        let (now, until, me) = (self.now, self.until, self.view.instance);
        let n = &self.notifications;
        let r = &self.rows;
        let f = &self.finish;
        let t = &self.retry;
        let (health_ids, health_ok): (Vec<&str>, Vec<bool>) =
            self.health.iter().map(|(e, ok)| (e.as_str(), *ok)).unzip();
        let release_gens: Vec<(i64, i64)> = releases
            .iter()
            .filter_map(|id| self.view.held.get(id).map(|h| (*id, h.gen)))
            .collect();
        let (release_ids, release_gen): (Vec<i64>, Vec<i64>) = release_gens.into_iter().unzip();
        let (inserted, promoted, (), (), ()) = tokio::try_join!(
            biased;
            async {
                if n.tx.is_empty() {
                    return Ok(vec![]);
                }
                client
                    .query(
                        &st.notify,
                        &[
                            &n.tx,
                            &n.tguid,
                            &n.seq,
                            &n.webhook_id,
                            &n.operation,
                            &n.status,
                            &n.body,
                            &n.created_at,
                            &r.tx,
                            &r.seq,
                            &r.endpoint,
                            &r.ready,
                            &r.due,
                            &r.owner,
                            &r.gen,
                        ],
                    )
                    .await
            },
            async {
                if f.id.is_empty() {
                    return Ok(vec![]);
                }
                client
                    .query(
                        &st.finish,
                        &[
                            &f.id,
                            &f.gen,
                            &f.status,
                            &f.http,
                            &f.error,
                            &f.pass_slot,
                            &now,
                            &me,
                            &until,
                        ],
                    )
                    .await
            },
            async {
                if !t.id.is_empty() {
                    client
                        .execute(&st.retry, &[&t.id, &t.gen, &t.at, &t.http, &t.error, &now])
                        .await?;
                }
                Ok(())
            },
            async {
                if !health_ids.is_empty() {
                    client
                        .execute(&st.health, &[&health_ids, &health_ok, &now])
                        .await?;
                }
                Ok(())
            },
            async {
                if !release_ids.is_empty() {
                    client
                        .execute(&st.release, &[&release_ids, &release_gen, &now])
                        .await?;
                }
                Ok(())
            },
        )?;
        let mut fresh = self.fresh;
        let mut leased = Vec::new();
        let mut woke = r.ready.iter().zip(&r.owner).any(|(h, o)| *h && o.is_none());
        for row in &inserted {
            let (id, tx, seq, endpoint): (i64, i64, i64, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if let Some(mut d) = fresh.remove(&(tx, seq, endpoint)) {
                d.id = id;
                let held = Held {
                    gen: 1,
                    tguid: d.tguid.clone(),
                    endpoint: d.endpoint_id.clone(),
                };
                leased.push((d, held, true));
            }
        }
        for row in &promoted {
            let (d, held, is_leased) = delivery_row(row);
            if is_leased {
                leased.push((d, held, true));
            } else {
                woke = true;
            }
        }
        woke |= !t.id.is_empty() || !release_ids.is_empty();
        // Claims last: what the batch leased above is not due, and its slots are taken.
        // Promoted heads took the slots of the results that promoted them.
        let (mut taken, mut taken_total) = (self.taken, self.taken_total);
        let mut claimed = Vec::new();
        let mut waiting_for_slots = false;
        for &limit in claims {
            let (ids, rooms, full) = rooms(self.view, endpoints, limit, (&taken, taken_total));
            waiting_for_slots |= full;
            let rows = if ids.is_empty() {
                vec![]
            } else {
                client
                    .query(&st.claim, &[&ids, &rooms, &now, &me, &until])
                    .await?
            };
            let enabled: Vec<&str> = endpoints
                .iter()
                .filter(|e| e.endpoint.enabled)
                .map(|e| e.endpoint.id.as_str())
                .collect();
            let next: Option<i64> = client
                .query_one(&st.next_due, &[&enabled, &now])
                .await?
                .get(0);
            let mut deliveries = Vec::with_capacity(rows.len());
            for row in &rows {
                let (d, held, _) = delivery_row(row);
                *taken.entry(d.endpoint_id.clone()).or_default() += 1;
                taken_total += 1;
                leased.push((d.clone(), held, false));
                deliveries.push(d);
            }
            let next_due = match (next, deliveries.is_empty()) {
                (next, true) => next,
                (next, false) => Some(next.map_or(until, |n| n.min(until))),
            };
            claimed.push(Claimed {
                deliveries,
                next_due,
            });
        }
        let mut ended = self.ended;
        ended.extend(release_ids);
        Ok(Written {
            leased,
            claimed,
            ended,
            gone: self.gone,
            waiting_for_slots,
            woke,
        })
    }
}

/// How many due heads each enabled endpoint may be leased now beside what the batch took,
/// `limit` in all, starting at a different endpoint each time so that none is always served
/// first; and whether an endpoint had no slot left.
fn rooms(
    view: &View<'_>,
    endpoints: &Snapshot,
    limit: usize,
    (taken, taken_total): (&HashMap<String, usize>, usize),
) -> (Vec<String>, Vec<i64>, bool) {
    let enabled: Vec<&str> = endpoints
        .iter()
        .filter(|e| e.endpoint.enabled)
        .map(|e| e.endpoint.id.as_str())
        .collect();
    let start = if enabled.is_empty() {
        0
    } else {
        fastrand::usize(..enabled.len())
    };
    let (mut ids, mut rooms) = (Vec::new(), Vec::new());
    let (mut left, mut full) = (limit, false);
    for endpoint in enabled.iter().cycle().skip(start).take(enabled.len()) {
        let taken_here = taken.get(*endpoint).copied().unwrap_or(0);
        let room = view
            .leases
            .room_beside(endpoint, taken_total, taken_here)
            .min(left);
        full |= room == 0;
        if room > 0 {
            ids.push((*endpoint).to_owned());
            rooms.push(room as i64);
            left -= room;
        }
    }
    (ids, rooms, full)
}

/// A leased delivery as `sql::FINISH` and `sql::CLAIM` return it.
fn delivery_row(row: &tokio_postgres::Row) -> (ClaimedDelivery, Held, bool) {
    let d = ClaimedDelivery {
        id: row.get(0),
        endpoint_id: row.get(1),
        tguid: row.get(2),
        seq: row.get(3),
        attempts: row.get::<_, i32>(4) as u32,
        webhook_id: row.get(7),
        body: Arc::from(row.get::<_, Vec<u8>>(8)),
        operation: row.get(9),
        status: row.get(10),
        created_at: row.get(11),
    };
    let held = Held {
        gen: row.get(5),
        tguid: d.tguid.clone(),
        endpoint: d.endpoint_id.clone(),
    };
    (d, held, row.get(6))
}

/// The body bytes of a notification, shared by its deliveries.
fn body_of(notification: &Notification, tguid: &str) -> Arc<[u8]> {
    let tguid = crate::domain::Tguid::parse(tguid).expect("a stored tguid is valid");
    notification.body(&tguid).into()
}
