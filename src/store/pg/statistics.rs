//! Planner statistics for the tables the writer changes: an `ANALYZE` of them each time the
//! commands this instance has committed double (from `FIRST`), run in the background on a
//! connection of its own.
//!
//! Why the service does this and does not leave it to autovacuum: the writer's statements are
//! prepared once per connection, and PostgreSQL keeps the generic plan it made for each until
//! the tables' statistics change. Made while the tables were young (or never analyzed), that
//! plan scans every transaction or every pending delivery (a sequential scan, a bitmap over
//! the pending-queue index) where an index lookup would read a few rows, so each batch costs
//! more as the tables grow. Autovacuum analyzes only after its naptime (a minute by default),
//! and never when it is off. Doubling keeps this to a few dozen `ANALYZE`s over a database's
//! life (each reads a fixed-size sample), all of them early, while the tables change shape.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Committed commands before the first `ANALYZE`.
const FIRST: u64 = 1_000;

/// The tables whose statistics the hot path's plans depend on.
const ANALYZE: &str = "ANALYZE transactions, notifications, deliveries, transitions";

pub(super) struct Statistics {
    config: tokio_postgres::Config,
    committed: u64,
    next: u64,
    running: Arc<AtomicBool>,
}

impl Statistics {
    pub fn new(config: tokio_postgres::Config) -> Self {
        Statistics {
            config,
            committed: 0,
            next: FIRST,
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Counts a committed batch's commands; past the next threshold, starts an `ANALYZE` on
    /// the current runtime unless one still runs. A failure is logged and changes nothing:
    /// the next threshold tries again.
    pub fn committed(&mut self, commands: usize) {
        self.committed += commands as u64;
        if self.committed < self.next || self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        self.next = self.committed.saturating_mul(2);
        let (config, running, at) = (self.config.clone(), self.running.clone(), self.committed);
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let analyzed = async {
                let client = super::connect(&config).await?;
                client.batch_execute(ANALYZE).await
            }
            .await;
            match analyzed {
                Ok(()) => tracing::debug!(
                    commands = at,
                    took_ms = began.elapsed().as_millis() as u64,
                    "analyzed the writer's tables"
                ),
                Err(e) => tracing::warn!(error = %e, "analyzing the writer's tables failed"),
            }
            running.store(false, Ordering::SeqCst);
        });
    }
}
