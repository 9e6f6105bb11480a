//! The delivery queue as the writer runs it: the deliveries the dispatcher holds (leases and
//! the slots they take), the queue heads a batch made and hands over after its commit, claims
//! of what waits in the database, attempt results (which promote the next delivery of a
//! queue), and endpoint health.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::mpsc;

use crate::endpoint::Snapshot;
use crate::store::leases::Leases;
use crate::store::sql::{
    DUE_HEADS, FINISH_DELIVERY, MAKE_READY, NEXT_PENDING, PENDING_DELIVERY, RETRY_DELIVERY,
};
use crate::store::{Claimed, ClaimedDelivery, Completion, DeliveryLimits};

/// The writer's end of the handoff to the dispatcher.
pub(in crate::store) struct HandoffSender {
    pub deliveries: mpsc::UnboundedSender<ClaimedDelivery>,
    /// Whether the dispatcher took the other end (`Store::take_handoff`).
    pub taken: Arc<std::sync::atomic::AtomicBool>,
}

impl HandoffSender {
    fn open(&self) -> bool {
        self.taken.load(std::sync::atomic::Ordering::SeqCst) && !self.deliveries.is_closed()
    }
}

/// What recording a batch of attempt results came to.
#[derive(Debug, Default)]
pub(super) struct Completed {
    /// Deliveries may be claimable now (a slot was freed, a retry was scheduled).
    pub woke: bool,
    /// An endpoint answered 410 and was disabled.
    pub disabled_endpoint: bool,
}

/// How far the batch's in-memory queue work had got before a command, to undo that command's
/// part if it fails.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    fresh: usize,
    promoted: usize,
    claimed: usize,
    recorded: usize,
}

pub(super) struct DeliveryQueue {
    /// The deliveries the dispatcher holds (claimed or handed over, not completed), and the
    /// slots they take.
    pub leases: Leases,
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
    /// Leases the batch's attempt results ended, with their endpoints: should the batch not
    /// commit, the results are not recorded and each delivery is held again, pinned, until
    /// they are (claiming it would send again what its receiver may have acknowledged).
    recorded: Vec<(i64, Arc<str>)>,
    /// Claimable deliveries were left in the database for want of a slot: freeing one wakes
    /// the dispatcher to claim them.
    waiting_for_slots: bool,
}

impl DeliveryQueue {
    pub fn new(limits: DeliveryLimits, handoff: HandoffSender) -> Self {
        DeliveryQueue {
            leases: Leases::new(limits),
            handoff,
            health_noted: Vec::new(),
            fresh: Vec::new(),
            promoted: Vec::new(),
            claimed: Vec::new(),
            recorded: Vec::new(),
            waiting_for_slots: false,
        }
    }

    /// A new queue head, to hand over once the batch has committed.
    pub fn queued_head(&mut self, d: ClaimedDelivery) {
        self.fresh.push(d);
    }

    /// Endpoint health noted so far no longer says what the open transaction holds (a new
    /// transaction, or a command that changed or undid it).
    pub fn forget_noted_health(&mut self) {
        self.health_noted.clear();
    }

    pub fn mark(&self) -> Mark {
        Mark {
            fresh: self.fresh.len(),
            promoted: self.promoted.len(),
            claimed: self.claimed.len(),
            recorded: self.recorded.len(),
        }
    }

    /// Undoes what the commands since `mark` left in memory (their writes were rolled back).
    pub fn undo_to(&mut self, mark: Mark) {
        self.health_noted.clear();
        self.fresh.truncate(mark.fresh);
        self.promoted.truncate(mark.promoted);
        for id in self.claimed.split_off(mark.claimed) {
            self.leases.end(id);
        }
        for (id, endpoint) in self.recorded.split_off(mark.recorded) {
            self.leases.pin(id, &endpoint);
        }
    }

    /// The batch committed: its claims and recorded results stand.
    pub fn committed(&mut self) {
        self.claimed.clear();
        self.recorded.clear();
    }

    /// Results that will not be recorded after all (they failed for a reason that waiting does
    /// not cure): their deliveries become claimable again when their leases would have ended,
    /// so they are sent again (at least once).
    pub fn unpin(&mut self, completions: &[Completion], now: i64) {
        for c in completions {
            if let Some(endpoint) = self.leases.end_from(c.id()) {
                self.leases
                    .hold(c.id(), now + self.leases.lease_ms(), &endpoint);
            }
        }
    }

    /// Undoes what a pass that did not commit left in memory: the heads it would have handed
    /// over and the leases its claims took.
    pub fn forget_pass(&mut self) {
        self.fresh.clear();
        self.promoted.clear();
        for id in self.claimed.drain(..) {
            self.leases.end(id);
        }
        for (id, endpoint) in self.recorded.drain(..) {
            self.leases.pin(id, &endpoint);
        }
    }

    /// Hands the heads the batch made to the dispatcher, as far as their endpoints have free
    /// slots; returns whether claimable deliveries are left for the dispatcher to claim.
    pub fn hand_over(&mut self, conn: &Connection, endpoints: &Snapshot, now: i64) -> bool {
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
            left |= !self.hand(endpoints, d, now);
        }
        for (id, endpoint) in promoted {
            if self.leases.room(&endpoint) == 0 {
                left = true;
                continue;
            }
            match self.load(conn, id) {
                Ok(Some(d)) => left |= !self.hand(endpoints, d, now),
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
    fn hand(&mut self, endpoints: &Snapshot, d: ClaimedDelivery, now: i64) -> bool {
        if self.leases.held(d.id, now) {
            // A claim later in the same batch took it already.
            return true;
        }
        let enabled = endpoints
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

    /// Leases up to `limit` due queue heads, endpoint by endpoint within their free slots, and
    /// says when the next one not leased now falls due.
    pub fn claim(
        &mut self,
        conn: &Connection,
        endpoints: &Snapshot,
        limit: usize,
        now: i64,
    ) -> rusqlite::Result<Claimed> {
        self.leases.sweep(now);
        let until = now + self.leases.lease_ms();
        let mut chosen: Vec<i64> = Vec::new();
        let mut next_due: Option<i64> = None;
        let mut out_of_slots = false;
        // Endpoints that are not disabled, starting at a different one each time so that none
        // is always served first.
        let enabled: Vec<String> = endpoints
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
                // Those in flight are the oldest heads and come first: skipped, with their
                // lease ends counting as due times.
                let mut heads = conn.prepare_cached(DUE_HEADS)?;
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
            match self.load(conn, id)? {
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
    fn load(&self, conn: &Connection, id: i64) -> rusqlite::Result<Option<ClaimedDelivery>> {
        conn.prepare_cached(
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
    fn promote_next(
        &mut self,
        conn: &Connection,
        tx: i64,
        endpoint_id: &str,
    ) -> rusqlite::Result<()> {
        let promoted: Option<i64> = conn
            .prepare_cached(NEXT_PENDING)?
            .query_row(params![tx, endpoint_id], |r| r.get(0))
            .optional()?;
        if let Some(id) = promoted {
            conn.prepare_cached(MAKE_READY)?.execute([id])?;
            self.promoted.push((id, endpoint_id.to_owned()));
        }
        Ok(())
    }

    fn finish(
        &mut self,
        conn: &Connection,
        id: i64,
        status: &str,
        http_status: Option<u16>,
        error: Option<&str>,
        now: i64,
    ) -> rusqlite::Result<()> {
        let pending: Option<(i64, String)> = conn
            .prepare_cached(PENDING_DELIVERY)?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((tx, endpoint)) = pending else {
            return Ok(());
        };
        conn.prepare_cached(FINISH_DELIVERY)?.execute(params![
            id,
            status,
            http_status,
            error,
            now
        ])?;
        self.note_endpoint_health(conn, &endpoint, status == "delivered", now)?;
        self.promote_next(conn, tx, &endpoint)
    }

    /// Tracks since when an endpoint has failed every attempt (cleared by any success), and
    /// when it last took a delivery. Both
    /// updates are idempotent within a transaction (`now` is the batch's), so only a change
    /// from the endpoint's last noted health runs one: a batch of a hundred results for one
    /// endpoint makes one update, not a hundred.
    fn note_endpoint_health(
        &mut self,
        conn: &Connection,
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
            "UPDATE endpoints SET failing_since = NULL, last_delivered_at = ?2 WHERE id = ?1"
        } else {
            "UPDATE endpoints SET failing_since = ?2 WHERE id = ?1 AND failing_since IS NULL"
        };
        conn.prepare_cached(sql)?
            .execute(params![endpoint_id, now])?;
        Ok(())
    }

    /// Records attempt results; says whether the dispatcher should look for claimable
    /// deliveries and whether an endpoint was disabled (by a 410).
    pub fn complete(
        &mut self,
        conn: &Connection,
        completions: &[Completion],
        now: i64,
    ) -> rusqlite::Result<Completed> {
        let mut done = Completed::default();
        for c in completions {
            // Its slot is free: what waited for one may be claimed now.
            if let Some(endpoint) = self.leases.end_from(c.id()) {
                self.recorded.push((c.id(), endpoint));
                if self.waiting_for_slots {
                    self.waiting_for_slots = false;
                    done.woke = true;
                }
            }
            match c {
                Completion::Delivered { id, http_status } => {
                    // A head it promotes is handed over after the commit (`hand_over`).
                    self.finish(conn, *id, "delivered", Some(*http_status), None, now)?;
                }
                Completion::Dead {
                    id,
                    http_status,
                    error,
                } => {
                    self.finish(conn, *id, "dead", *http_status, Some(error), now)?;
                }
                Completion::Retry {
                    id,
                    http_status,
                    error,
                    next_attempt_at,
                } => {
                    let endpoint: Option<String> = conn
                        .prepare_cached(PENDING_DELIVERY)?
                        .query_row([id], |r| r.get(1))
                        .optional()?;
                    if let Some(endpoint) = endpoint {
                        conn.prepare_cached(RETRY_DELIVERY)?.execute(params![
                            id,
                            next_attempt_at,
                            http_status,
                            error,
                            now
                        ])?;
                        self.note_endpoint_health(conn, &endpoint, false, now)?;
                    }
                    done.woke = true;
                }
                Completion::Gone { id, endpoint_id } => {
                    conn
                        .prepare_cached(
                            "UPDATE deliveries SET leased = 0, attempts = attempts + 1, next_attempt_at = ?2,
                                    last_status = 410, last_error = '410 Gone: endpoint disabled', last_attempt_at = ?2
                             WHERE id = ?1 AND status = 'pending'",
                        )?
                        .execute(params![id, now])?;
                    conn
                        .prepare_cached(
                            "UPDATE endpoints SET enabled = 0, disabled_reason = '410 Gone', updated_at = ?2 WHERE id = ?1",
                        )?
                        .execute(params![endpoint_id, now])?;
                    tracing::warn!(endpoint = %endpoint_id, "endpoint answered 410 Gone: disabled");
                    done.disabled_endpoint = true;
                }
            }
        }
        Ok(done)
    }

    /// Gives leases back: the deliveries keep their due times, which have passed, so they are
    /// claimable at once (by the next process, at shutdown).
    pub fn release(&mut self, ids: &[i64]) {
        for id in ids {
            self.leases.end(*id);
        }
    }
}
