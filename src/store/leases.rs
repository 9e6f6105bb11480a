//! Which deliveries the dispatcher holds right now, kept by the writer in memory.
//!
//! A lease used to be a row update (`leased = 1`, `next_attempt_at` = lease end): a write per
//! claim, into the table and two indexes, and a commit for batches that only claimed. Nothing
//! needs it on disk: one process owns a database file, and a process that starts voids every
//! lease anyway (the previous owner is gone). So the writer keeps them here, and a claim only
//! reads the database.

use std::collections::HashMap;

/// Delivery id → when its lease ends (Unix ms). After that, it may be claimed again, as a
/// delivery whose attempt outlived `delivery.lease` always could.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    until: HashMap<i64, i64>,
}

impl Leases {
    /// Whether the delivery is held by a lease that has not ended at `now`.
    pub fn held(&self, id: i64, now: i64) -> bool {
        self.held_until(id, now).is_some()
    }

    /// The end of the delivery's lease, if it is still running at `now`.
    pub fn held_until(&self, id: i64, now: i64) -> Option<i64> {
        self.until.get(&id).copied().filter(|&end| end > now)
    }

    pub fn hold(&mut self, id: i64, until: i64) {
        self.until.insert(id, until);
    }

    /// Ends the lease (the attempt finished, or was given back).
    pub fn end(&mut self, id: i64) {
        self.until.remove(&id);
    }

    /// Forgets leases that ended long ago (their attempts never reported back), so that the
    /// map stays as small as what is in flight.
    pub fn sweep(&mut self, now: i64) {
        if self.until.len() > 4096 {
            self.until.retain(|_, end| *end > now);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_until_its_end_and_not_after() {
        let mut l = Leases::default();
        l.hold(7, 1_000);
        assert!(l.held(7, 999));
        assert_eq!(l.held_until(7, 999), Some(1_000));
        assert!(
            !l.held(7, 1_000),
            "a lease that has ended lets the delivery be claimed again"
        );
        assert!(!l.held(8, 0));
    }

    #[test]
    fn ending_a_lease_frees_the_delivery_at_once() {
        let mut l = Leases::default();
        l.hold(7, 1_000);
        l.end(7);
        assert!(!l.held(7, 0));
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn sweeping_forgets_only_ended_leases() {
        let mut l = Leases::default();
        for id in 0..5000 {
            l.hold(id, if id < 4000 { 10 } else { 1_000 });
        }
        l.sweep(500);
        assert_eq!(l.len(), 1000);
        assert!(l.held(4500, 500));
    }
}
