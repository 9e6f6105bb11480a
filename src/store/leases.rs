//! Which deliveries the dispatcher holds right now, kept by the writer in memory, and the
//! delivery slots they take: at most `max_in_flight` in all, `endpoint_concurrency` each.
//!
//! Why in memory, not a row update (`leased = 1`, `next_attempt_at` = lease end): that would
//! be a write per claim, into the table and two indexes, and a commit for batches that only
//! claimed, and nothing needs it on disk: one process owns a database file, and a process
//! that starts voids every lease anyway (the previous owner is gone). So the writer keeps
//! them here, a claim only reads the database, and the writer, which takes and frees every
//! slot, can hand a new delivery to the dispatcher the moment it commits.

use std::collections::HashMap;
use std::sync::Arc;

use super::DeliveryLimits;

#[derive(Debug)]
struct Lease {
    /// When it ends (Unix ms); after that the delivery may be claimed again, as one whose
    /// attempt outlived `delivery.lease` always could.
    until: i64,
    endpoint: Arc<str>,
}

#[derive(Debug)]
pub(crate) struct Leases {
    held: HashMap<i64, Lease>,
    /// Leases per endpoint (only endpoints with at least one).
    busy: HashMap<Arc<str>, usize>,
    limits: DeliveryLimits,
}

impl Leases {
    pub fn new(limits: DeliveryLimits) -> Self {
        Leases {
            held: HashMap::new(),
            busy: HashMap::new(),
            limits,
        }
    }

    pub fn lease_ms(&self) -> i64 {
        self.limits.lease_ms
    }

    /// Whether the delivery is held by a lease that has not ended at `now`.
    pub fn held(&self, id: i64, now: i64) -> bool {
        self.held_until(id, now).is_some()
    }

    /// The end of the delivery's lease, if it is still running at `now`.
    pub fn held_until(&self, id: i64, now: i64) -> Option<i64> {
        self.held.get(&id).map(|l| l.until).filter(|&end| end > now)
    }

    /// How many more deliveries `endpoint` may take now.
    pub fn room(&self, endpoint: &str) -> usize {
        let total = self.limits.max_in_flight.saturating_sub(self.held.len());
        let own = self
            .limits
            .endpoint_concurrency
            .saturating_sub(self.busy.get(endpoint).copied().unwrap_or(0));
        total.min(own)
    }

    /// How many more deliveries `endpoint` may take once `taken_in_all` more leases (of which
    /// `taken_here` for `endpoint`) are held than now: what a batch may still lease beside
    /// what it already decided to.
    pub fn room_beside(&self, endpoint: &str, taken_in_all: usize, taken_here: usize) -> usize {
        let total = self
            .limits
            .max_in_flight
            .saturating_sub(self.held.len() + taken_in_all);
        let own = self
            .limits
            .endpoint_concurrency
            .saturating_sub(self.busy.get(endpoint).copied().unwrap_or(0) + taken_here);
        total.min(own)
    }

    /// Takes a slot of `endpoint` for the delivery until `until`.
    pub fn hold(&mut self, id: i64, until: i64, endpoint: &str) {
        self.end(id);
        let endpoint: Arc<str> = match self.busy.get_key_value(endpoint) {
            Some((k, _)) => k.clone(),
            None => Arc::from(endpoint),
        };
        *self.busy.entry(endpoint.clone()).or_default() += 1;
        self.held.insert(id, Lease { until, endpoint });
    }

    /// Ends the lease and frees its slot (the attempt finished, or was given back). Returns
    /// whether there was one.
    pub fn end(&mut self, id: i64) -> bool {
        let Some(lease) = self.held.remove(&id) else {
            return false;
        };
        if let Some(n) = self.busy.get_mut(&lease.endpoint) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(&lease.endpoint);
            }
        }
        true
    }

    /// Ends the lease as [`Leases::end`] does, and says which endpoint's slot it freed.
    pub fn end_from(&mut self, id: i64) -> Option<Arc<str>> {
        let endpoint = self.held.get(&id)?.endpoint.clone();
        self.end(id);
        Some(endpoint)
    }

    /// Holds the delivery with no end: its attempt's result is known but not yet recorded, so
    /// it must not be claimed again (that would send again what a receiver may have
    /// acknowledged) until the result is recorded or dropped.
    pub fn pin(&mut self, id: i64, endpoint: &str) {
        self.hold(id, i64::MAX, endpoint);
    }

    /// Ends the leases that ran out (their attempts never reported back), freeing their slots.
    pub fn sweep(&mut self, now: i64) {
        let ended: Vec<i64> = self
            .held
            .iter()
            .filter(|(_, l)| l.until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            self.end(id);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leases(max_in_flight: usize, endpoint_concurrency: usize) -> Leases {
        Leases::new(DeliveryLimits {
            lease_ms: 1_000,
            max_in_flight,
            endpoint_concurrency,
        })
    }

    #[test]
    fn a_lease_holds_until_its_end_and_not_after() {
        let mut l = leases(8, 8);
        l.hold(7, 1_000, "e");
        assert!(l.held(7, 999));
        assert_eq!(l.held_until(7, 999), Some(1_000));
        assert!(
            !l.held(7, 1_000),
            "a lease that has ended lets the delivery be claimed again"
        );
        assert!(!l.held(8, 0));
    }

    #[test]
    fn slots_are_bounded_per_endpoint_and_in_all() {
        let mut l = leases(3, 2);
        assert_eq!(l.room("a"), 2);
        l.hold(1, 10, "a");
        l.hold(2, 10, "a");
        assert_eq!(l.room("a"), 0, "a has its two");
        assert_eq!(l.room("b"), 1, "one slot left in all");
        l.hold(3, 10, "b");
        assert_eq!(l.room("b"), 0);
        assert!(l.end(1));
        assert!(!l.end(1), "ending twice frees one slot");
        assert_eq!((l.room("a"), l.room("b")), (1, 1));
    }

    #[test]
    fn room_beside_counts_what_a_batch_already_took() {
        let mut l = leases(4, 2);
        l.hold(1, 10, "a");
        assert_eq!(l.room_beside("a", 0, 0), 1);
        assert_eq!(l.room_beside("a", 1, 1), 0, "a has its two");
        assert_eq!(l.room_beside("b", 2, 0), 1, "one slot left in all");
        assert_eq!(l.room_beside("b", 3, 0), 0);
    }

    #[test]
    fn holding_a_delivery_again_does_not_take_a_second_slot() {
        let mut l = leases(8, 8);
        l.hold(1, 10, "a");
        l.hold(1, 20, "a");
        assert_eq!(l.room("a"), 7);
        assert_eq!(l.held_until(1, 0), Some(20));
    }

    #[test]
    fn a_pinned_lease_outlives_every_sweep_and_keeps_its_slot() {
        let mut l = leases(2, 2);
        l.hold(1, 10, "e");
        let endpoint = l.end_from(1).expect("it was held");
        assert_eq!(&*endpoint, "e");
        assert_eq!(l.end_from(1), None);
        l.pin(1, &endpoint);
        l.sweep(i64::MAX - 1);
        assert!(l.held(1, i64::MAX - 1));
        assert_eq!(l.room("e"), 1);
    }

    #[test]
    fn sweeping_frees_only_the_slots_of_ended_leases() {
        let mut l = leases(100, 100);
        for id in 0..10 {
            l.hold(id, if id < 4 { 10 } else { 1_000 }, "e");
        }
        l.sweep(500);
        assert_eq!(l.len(), 6);
        assert_eq!(l.room("e"), 94);
        assert!(l.held(5, 500));
    }
}
