//! Fan-out: the endpoints as the writer sees them (the registry it publishes, and what the
//! open batch changed of it) and the deliveries a newly recorded notification gets, one per
//! endpoint subscribed to it.

use std::sync::Arc;

use rusqlite::{params, Connection};

use super::queue::DeliveryQueue;
use crate::endpoint::{Endpoint, Publisher, Snapshot};
use crate::store::endpoints;
use crate::store::sql::{DELIVERY_IS_HEAD, INSERT_DELIVERY};
use crate::store::ClaimedDelivery;

/// The endpoint registry as the writer sees it: what it last published, and what the open
/// transaction changed of it. A command that changes an endpoint in the database changes the
/// list here too (`reload`), so later commands of the batch fan out by it; the list is
/// published only once the batch has committed, and forgotten if it does not.
pub(super) struct BatchEndpoints {
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
    pub fn new(publisher: Publisher, configured: Vec<Endpoint>) -> Self {
        BatchEndpoints {
            published: publisher.current(),
            publisher,
            configured,
            changed: None,
        }
    }

    /// A reading handle on the registry it publishes.
    #[cfg(test)]
    pub fn registry(&self) -> crate::endpoint::Registry {
        self.publisher.registry()
    }

    /// The endpoints as the open transaction has them.
    pub fn now(&self) -> &Snapshot {
        self.changed.as_ref().unwrap_or(&self.published)
    }

    /// Reads the endpoints again after a command changed them in the open transaction.
    pub fn reload(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let endpoints = endpoints::load(conn, &self.configured)?;
        self.changed = Some(self.now().succeeded_by(endpoints));
        Ok(())
    }

    /// The batch committed: what it changed is what everyone sees from now on.
    pub fn publish(&mut self) {
        if let Some(snapshot) = self.changed.take() {
            self.publisher.publish(snapshot.clone());
            self.published = snapshot;
        }
    }

    /// The batch was undone: so is what it changed here.
    pub fn forget(&mut self) {
        self.changed = None;
    }

    /// Where a command starts from, to go back to if it is undone.
    pub fn mark(&self) -> Option<Snapshot> {
        self.changed.clone()
    }

    /// The command since `mark` was undone: so is what it changed here.
    pub fn undo_to(&mut self, mark: Option<Snapshot>) {
        self.changed = mark;
    }
}

/// A notification just recorded, as its deliveries need it.
pub(super) struct Recorded<'a> {
    pub id: i64,
    /// Its transaction's row id.
    pub tx: i64,
    pub tguid: &'a str,
    pub seq: i64,
    pub webhook_id: &'a str,
    pub body: &'a Arc<[u8]>,
    pub operation: &'a str,
    pub status: &'a str,
    pub created_at: i64,
}

/// Queues a delivery of `n` for every endpoint subscribed to it. Only the first pending
/// notification of a (tguid, endpoint) may be sent: a delivery that is its queue's head is
/// claimable at once, and handed over after the commit when its endpoint is enabled.
pub(super) fn fan_out(
    conn: &Connection,
    endpoints: &Snapshot,
    n: &Recorded,
    queue: &mut DeliveryQueue,
) -> rusqlite::Result<()> {
    for endpoint in endpoints.iter().map(|e| &e.endpoint) {
        if !endpoint.subscriptions.matches(n.operation, n.status) {
            continue;
        }
        let head: bool = conn
            .prepare_cached(DELIVERY_IS_HEAD)?
            .query_row(params![n.tx, endpoint.id], |r| r.get(0))?;
        conn.prepare_cached(INSERT_DELIVERY)?.execute(params![
            n.id,
            endpoint.id,
            n.tx,
            n.tguid,
            n.seq,
            head,
            n.created_at
        ])?;
        let id = conn.last_insert_rowid();
        if head && endpoint.enabled {
            queue.queued_head(ClaimedDelivery {
                id,
                endpoint_id: endpoint.id.clone(),
                tguid: n.tguid.to_owned(),
                seq: n.seq,
                attempts: 0,
                webhook_id: n.webhook_id.to_owned(),
                body: n.body.clone(),
                operation: n.operation.to_owned(),
                status: n.status.to_owned(),
                created_at: n.created_at,
            });
        }
    }
    Ok(())
}
