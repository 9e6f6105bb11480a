//! Per-transaction order among messages in flight: one lane per tguid, holding the messages
//! that wait for the one being applied. Messages of different transactions run side by side
//! (so the writer can group-commit them); a transaction's next message starts only when the
//! one before it is settled, so its effects follow queue order whatever order commits and
//! acknowledgements complete in.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Lanes keyed by `K` (a tguid) of jobs `J` (deliveries).
#[derive(Debug)]
pub struct Lanes<K, J> {
    /// For each key with a job running: the jobs of that key waiting behind it, in order.
    waiting: HashMap<K, VecDeque<J>>,
}

impl<K, J> Default for Lanes<K, J> {
    fn default() -> Self {
        Lanes {
            waiting: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash, J> Lanes<K, J> {
    /// Takes a job in queue order. Returns it when nothing of its key is running (start it
    /// now); otherwise keeps it until `finish` hands it out.
    pub fn push(&mut self, key: K, job: J) -> Option<J> {
        match self.waiting.get_mut(&key) {
            Some(queue) => {
                queue.push_back(job);
                None
            }
            None => {
                self.waiting.insert(key, VecDeque::new());
                Some(job)
            }
        }
    }

    /// Marks the running job of `key` settled; returns the next one of its key to start.
    pub fn finish(&mut self, key: &K) -> Option<J> {
        let queue = self.waiting.get_mut(key)?;
        let next = queue.pop_front();
        if next.is_none() {
            self.waiting.remove(key);
        }
        next
    }

    /// Keys with a job running.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.waiting.len()
    }

    /// Jobs waiting behind a running one.
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_of_other_keys_start_at_once_and_jobs_of_one_key_one_after_another() {
        let mut lanes = Lanes::default();
        assert_eq!(lanes.push("a", 1), Some(1));
        assert_eq!(lanes.push("b", 2), Some(2));
        assert_eq!(lanes.push("a", 3), None);
        assert_eq!(lanes.push("a", 4), None);
        assert_eq!((lanes.running(), lanes.waiting()), (2, 2));
        // b finishing frees nothing of a.
        assert_eq!(lanes.finish(&"b"), None);
        assert_eq!(lanes.push("b", 5), Some(5));
        assert_eq!(lanes.finish(&"a"), Some(3));
        assert_eq!(lanes.push("a", 6), None);
        assert_eq!(lanes.finish(&"a"), Some(4));
        assert_eq!(lanes.finish(&"a"), Some(6));
        assert_eq!(lanes.finish(&"a"), None);
        assert_eq!(lanes.push("a", 7), Some(7), "an idle key starts at once");
        assert_eq!(lanes.finish(&"z"), None, "an unknown key is nothing");
    }

    /// Drives random interleavings of arrivals and completions: every key's jobs start in
    /// arrival order and never two of one key at once.
    #[test]
    fn whatever_order_jobs_finish_in_each_key_runs_its_jobs_in_arrival_order() {
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut lanes: Lanes<u8, (u8, u32)> = Lanes::default();
            let mut running: Vec<(u8, u32)> = Vec::new();
            let mut started: HashMap<u8, Vec<u32>> = HashMap::new();
            let mut arrived: HashMap<u8, Vec<u32>> = HashMap::new();
            let mut n = 0u32;
            while n < 300 || !running.is_empty() {
                if n < 300 && (running.is_empty() || rng.bool()) {
                    let key = rng.u8(0..5);
                    arrived.entry(key).or_default().push(n);
                    if let Some(job) = lanes.push(key, (key, n)) {
                        running.push(job);
                    }
                    n += 1;
                } else {
                    let (key, _) = running.swap_remove(rng.usize(0..running.len()));
                    if let Some(job) = lanes.finish(&key) {
                        running.push(job);
                    }
                }
                for (key, job) in &running {
                    let s = started.entry(*key).or_default();
                    if s.last() != Some(job) {
                        s.push(*job);
                    }
                }
                let mut keys: Vec<u8> = running.iter().map(|(k, _)| *k).collect();
                keys.sort_unstable();
                keys.dedup();
                assert_eq!(keys.len(), running.len(), "two jobs of one key ran at once");
            }
            assert_eq!(started, arrived, "seed {seed}");
            assert_eq!((lanes.running(), lanes.waiting()), (0, 0));
        }
    }
}
