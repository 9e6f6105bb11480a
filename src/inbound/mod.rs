//! Outcomes over RabbitMQ (CONTRACT §8): the consumer of `[amqp] inbound_queue`, which applies
//! `register` and `event` messages through the REST routes' checks and the store's group
//! commit, acknowledges each only after its write committed, and dead-letters refusals.
//!
//! - `message`: a message body to a store command, or the REST refusal of the same body.
//! - `lanes`: per-transaction order among the messages in flight.
//! - `broker`: the connection, the queue topology and the dead-letter publisher.
//! - `consumer`: the loop: reconnect with backoff, settle every delivery, retry store failures.
//!
//! Its health is a [`ConsumerState`] on a watch channel and counters ([`InboundStats`]).

mod broker;
mod consumer;
mod lanes;
mod message;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::AmqpInboundSettings;
use crate::store::{Store, WriteError};
use crate::telemetry::{self, InboundEvent};

pub use broker::{dead_letter_name, ERROR_HEADER, MESSAGE_HEADER};
pub use message::{parse, Command};

/// How long stopping waits for the store writes of messages in hand before closing the
/// connection (what is not acknowledged by then is redelivered).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the consumer is doing, for logs, readiness and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerState {
    /// Connecting for the first time.
    Starting,
    /// Subscribed to the queue. With several instances the broker delivers to one of them
    /// (single active consumer); the others wait subscribed.
    Consuming,
    /// The broker cannot be reached, or the link broke; reconnecting with backoff.
    Reconnecting {
        error: String,
    },
    /// Writes fail: the messages in hand are retried with backoff and none is acknowledged.
    StoreUnavailable {
        error: String,
    },
    Stopped,
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct InboundStats {
    /// Deliveries taken from the broker (redeliveries included).
    pub received: AtomicU64,
    /// Messages whose write committed and that were acknowledged.
    pub applied: AtomicU64,
    /// Of those, repeats that changed nothing (a redelivered event, a repeated registration).
    pub duplicates: AtomicU64,
    /// Refused messages published to `<queue>.dead` and acknowledged.
    pub dead_lettered: AtomicU64,
    /// Store writes that failed and were retried.
    pub store_failures: AtomicU64,
    /// Connections opened to the broker.
    pub connections: AtomicU64,
}

impl InboundStats {
    /// Counts `what` here and in the process's metrics.
    fn note(&self, what: InboundEvent) {
        let counter = match what {
            InboundEvent::Received => &self.received,
            InboundEvent::Applied | InboundEvent::Duplicate => &self.applied,
            InboundEvent::DeadLettered => &self.dead_lettered,
            InboundEvent::StoreFailure => &self.store_failures,
            InboundEvent::Connected => &self.connections,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if what == InboundEvent::Duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        telemetry::inbound(what);
    }
}

/// Where the consumer writes what a message asks for: the store, or a stand-in with which a
/// test decides when each write finishes.
pub trait Writer: Send + Sync + 'static {
    /// Writes `command` for `actor`; `Ok(true)` when it was a repeat that changed nothing.
    /// Answers only once the write is durable.
    fn write<'a>(
        &'a self,
        command: &'a Command,
        actor: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<bool, WriteError>> + Send + 'a>>;
}

impl Writer for Store {
    fn write<'a>(
        &'a self,
        command: &'a Command,
        actor: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<bool, WriteError>> + Send + 'a>> {
        Box::pin(async move {
            match command {
                Command::Register { tguid, operation } => self
                    .register(tguid.clone(), *operation, actor.to_owned())
                    .await
                    .map(|r| !r.created),
                Command::Event(request) => self.apply(request.clone()).await.map(|a| a.duplicate),
            }
        })
    }
}

/// The running consumer.
pub struct Inbound {
    state: watch::Receiver<ConsumerState>,
    stats: Arc<InboundStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Inbound {
    /// Starts consuming `settings.queue` into `store` (on the current tokio runtime).
    pub fn start(settings: AmqpInboundSettings, store: Store) -> Inbound {
        Self::start_with(settings, Arc::new(store))
    }

    /// [`Inbound::start`] with any [`Writer`].
    pub fn start_with(settings: AmqpInboundSettings, writer: Arc<dyn Writer>) -> Inbound {
        let (state_tx, state) = watch::channel(ConsumerState::Starting);
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(InboundStats::default());
        let shared = consumer::Shared {
            actor: format!("amqp:{}", settings.queue),
            settings,
            writer,
            state: state_tx,
            stats: stats.clone(),
        };
        let task = tokio::spawn(consumer::run(shared, stopped));
        Inbound {
            state,
            stats,
            stop,
            task,
        }
    }

    /// The consumer's state now and its changes.
    pub fn state(&self) -> watch::Receiver<ConsumerState> {
        self.state.clone()
    }

    pub fn stats(&self) -> Arc<InboundStats> {
        self.stats.clone()
    }

    /// Stops taking messages, lets the writes in hand finish (bounded) and acknowledges them,
    /// then closes the connection: the broker requeues the rest. Call before the store stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests;
