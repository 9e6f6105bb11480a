//! The consuming loop. It connects (again, with backoff, whenever the link breaks), takes
//! deliveries up to the prefetch, and settles each one:
//!
//! - accepted: written through the store, acknowledged after the store answered (it answers
//!   after COMMIT), so a crash before that means redelivery, and the redelivery is a no-op
//!   (`event_id` or the `message_id` standing in for it; a repeated registration);
//! - refused (by the REST checks or the state machine): published to `<queue>.dead` with the
//!   REST error code, confirmed, then acknowledged;
//! - a store failure: never acknowledged, never dead-lettered; retried with backoff while the
//!   message stays in hand.
//!
//! Deliveries of different transactions are settled concurrently, so the writer commits many
//! in one group; those of one transaction one after another, in queue order (`lanes`).

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::message::Delivery;
use lapin::Consumer;
use tokio::sync::watch;

use super::broker::Link;
use super::lanes::Lanes;
use super::message::{self, Command};
use super::{ConsumerState, InboundStats, Writer, STOP_GRACE};
use crate::api::ApiError;
use crate::config::AmqpInboundSettings;
use crate::domain::Tguid;
use crate::endpoint::amqp::redact_url;
use crate::store::WriteError;
use crate::telemetry::InboundEvent;

/// First wait before connecting again; it doubles up to `RECONNECT_MAX`.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// First wait before retrying a failed store write; it doubles up to `STORE_RETRY_MAX`.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

/// What the loop and every settling delivery share.
pub(super) struct Shared {
    pub settings: AmqpInboundSettings,
    pub writer: std::sync::Arc<dyn Writer>,
    /// `amqp:<queue>`, the actor in the transition log.
    pub actor: String,
    pub state: watch::Sender<ConsumerState>,
    pub stats: std::sync::Arc<InboundStats>,
}

impl Shared {
    fn set(&self, state: ConsumerState) {
        self.state.send_if_modified(|now| {
            let changed = *now != state;
            *now = state;
            changed
        });
    }

    /// Notes a failed write; logs it once per outage rather than once per message.
    fn store_failed(&self, why: &str, retry_in: Duration) {
        self.stats.note(InboundEvent::StoreFailure);
        let began = self.state.send_if_modified(|now| match now {
            ConsumerState::Consuming => {
                *now = ConsumerState::StoreUnavailable {
                    error: why.to_owned(),
                };
                true
            }
            _ => false,
        });
        if began {
            tracing::warn!(queue = %self.settings.queue, error = %why, ?retry_in,
                "inbound consumer: store writes fail; holding the messages in hand (unacknowledged) and retrying");
        }
    }

    fn store_answered(&self) {
        let recovered = self.state.send_if_modified(|now| match now {
            ConsumerState::StoreUnavailable { .. } => {
                *now = ConsumerState::Consuming;
                true
            }
            _ => false,
        });
        if recovered {
            tracing::info!(queue = %self.settings.queue, "inbound consumer: store writes succeed again");
        }
    }
}

/// A doubling delay between `first` and `max`.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// How a write came out in the end.
#[derive(Debug)]
pub(super) enum Settled {
    /// Committed; `duplicate` when it changed nothing (a repeat).
    Applied { duplicate: bool },
    /// Refused by the checks or the state machine: nothing changed.
    Refused(ApiError),
    /// Given up without an answer because the consumer is stopping or reconnecting; the
    /// message stays unacknowledged and comes back.
    Abandoned,
}

/// Runs `attempt` until the store answers it: a storage failure (not a refusal) is retried
/// after a growing delay (`failed` is told each time) until it succeeds, is refused, or
/// `cancel` turns true.
pub(super) async fn apply_until_settled<F, Fut>(
    mut attempt: F,
    mut cancel: watch::Receiver<bool>,
    mut failed: impl FnMut(&str, Duration),
) -> Settled
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, WriteError>>,
{
    let mut backoff = Backoff::new(STORE_RETRY_FIRST, STORE_RETRY_MAX);
    loop {
        match attempt().await {
            Ok(duplicate) => return Settled::Applied { duplicate },
            // Not a refusal: the store could not write (it says when it is unavailable for
            // now; anything else is a storage error). The message waits in hand.
            Err(WriteError::Unavailable(why) | WriteError::Internal(why)) => {
                let delay = backoff.next_delay();
                failed(&why, delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.wait_for(|c| *c) => return Settled::Abandoned,
                }
            }
            Err(refusal) => return Settled::Refused(ApiError::from(refusal)),
        }
    }
}

/// A delivery and what its body asks for.
struct Job {
    delivery: Delivery,
    command: Result<Command, ApiError>,
}

impl Job {
    fn new(delivery: Delivery, actor: &str) -> Job {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str());
        let command = message::parse(&delivery.data, message_id, actor);
        Job { delivery, command }
    }

    /// The transaction whose order it must keep. A message refused by its body alone has
    /// none: it would be refused in any state, so it cannot overtake anything.
    fn lane(&self) -> Option<Tguid> {
        self.command.as_ref().ok().map(|c| c.tguid().clone())
    }
}

/// What settling one delivery came to.
struct Done {
    lane: Option<Tguid>,
    /// Set when the link failed under it (an ack or a dead letter that did not go through):
    /// the loop reconnects, and the broker redelivers everything not acknowledged, in order.
    broken: Option<String>,
}

async fn settle(shared: &Shared, link: &Link, job: Job, cancel: watch::Receiver<bool>) -> Done {
    let lane = job.lane();
    let Job { delivery, command } = job;
    let broken = |why: String| Done {
        lane: lane.clone(),
        broken: Some(why),
    };
    let refusal = match command {
        Err(refusal) => refusal,
        Ok(command) => {
            let settled = apply_until_settled(
                || shared.writer.write(&command, &shared.actor),
                cancel,
                |why, retry_in| shared.store_failed(why, retry_in),
            )
            .await;
            match settled {
                Settled::Applied { duplicate } => {
                    shared.store_answered();
                    if let Err(why) = link.ack(&delivery).await {
                        return broken(format!("cannot acknowledge: {why}"));
                    }
                    shared.stats.note(if duplicate {
                        InboundEvent::Duplicate
                    } else {
                        InboundEvent::Applied
                    });
                    return Done {
                        lane: lane.clone(),
                        broken: None,
                    };
                }
                Settled::Refused(refusal) => {
                    shared.store_answered();
                    refusal
                }
                Settled::Abandoned => {
                    return Done {
                        lane: lane.clone(),
                        broken: None,
                    }
                }
            }
        }
    };
    if let Err(why) = link.dead_letter(&delivery, &refusal).await {
        return broken(format!("cannot dead-letter a refused message: {why}"));
    }
    if let Err(why) = link.ack(&delivery).await {
        return broken(format!("cannot acknowledge a dead-lettered message: {why}"));
    }
    // Were this acknowledgement lost in a crash, the message would be redelivered and judged
    // again, perhaps after a later message of its transaction made it valid. The next one of
    // the lane starts only once the broker has surely processed the ack.
    if lane.is_some() {
        if let Err(why) = link.barrier().await {
            return broken(format!("cannot confirm an acknowledgement: {why}"));
        }
    }
    shared.stats.note(InboundEvent::DeadLettered);
    tracing::warn!(
        queue = %shared.settings.queue,
        tguid = lane.as_ref().map(Tguid::as_str),
        message_id = delivery.properties.message_id().as_ref().map(|s| s.as_str()),
        error = refusal.code,
        message = %refusal.message,
        "inbound message refused; dead-lettered"
    );
    Done { lane, broken: None }
}

/// Why a link's consuming ended.
enum Ended {
    Stopped,
    Lost(String),
}

/// Consumes on one link until it breaks or the service stops; then lets the writes in hand
/// finish (bounded) so their messages are acknowledged if the link still can.
async fn consume(
    shared: &Shared,
    link: &Link,
    mut consumer: Consumer,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let (cancel, cancelled) = watch::channel(false);
    let mut lanes: Lanes<Tguid, Job> = Lanes::default();
    let mut running = FuturesUnordered::new();
    let start = |job: Job| settle(shared, link, job, cancelled.clone());
    let ended = loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break Ended::Stopped,
            Some(done) = running.next() => {
                let done: Done = done;
                if let Some(why) = done.broken {
                    break Ended::Lost(why);
                }
                if let Some(job) = done.lane.and_then(|key| lanes.finish(&key)) {
                    running.push(start(job));
                }
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    shared.stats.note(InboundEvent::Received);
                    let job = Job::new(delivery, &shared.actor);
                    let ready = match job.lane() {
                        Some(key) => lanes.push(key, job),
                        None => Some(job),
                    };
                    if let Some(job) = ready {
                        running.push(start(job));
                    }
                }
                Some(Err(e)) => break Ended::Lost(e.to_string()),
                None => break Ended::Lost("the broker ended the subscription".to_owned()),
            }
        }
    };
    // What waits in a lane never started: the broker redelivers it. Store retries give up.
    let _ = cancel.send(true);
    let in_hand = running.len();
    tracing::debug!(queue = %shared.settings.queue, in_hand, waiting = lanes.waiting(),
        "inbound consumer: finishing the writes in hand; the rest will be redelivered");
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while running.next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(queue = %shared.settings.queue, in_hand,
            "inbound consumer: writes in hand did not finish within {STOP_GRACE:?}; their messages will be redelivered");
    }
    ended
}

/// The consumer task: connect, consume, reconnect with backoff, until `stop` turns true.
pub(super) async fn run(shared: Shared, mut stop: watch::Receiver<bool>) {
    let queue = shared.settings.queue.clone();
    tracing::info!(%queue, prefetch = shared.settings.prefetch,
        url = %redact_url(shared.settings.url.expose()), "inbound consumer starting");
    let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
    loop {
        let opened = tokio::select! {
            opened = Link::open(&shared.settings) => opened,
            _ = stop.wait_for(|s| *s) => break,
        };
        let why = match opened {
            Err(why) => {
                tracing::warn!(%queue, error = %why, "inbound consumer cannot reach the broker");
                why
            }
            Ok((link, consumer)) => {
                shared.stats.note(InboundEvent::Connected);
                tracing::info!(%queue, "inbound consumer subscribed");
                shared.set(ConsumerState::Consuming);
                let since = Instant::now();
                let ended = consume(&shared, &link, consumer, &mut stop).await;
                link.close().await;
                match ended {
                    Ended::Stopped => break,
                    Ended::Lost(why) => {
                        // A link that served a while starts the backoff over.
                        if since.elapsed() >= RECONNECT_MAX {
                            backoff.reset();
                        }
                        tracing::warn!(%queue, error = %why, "inbound consumer lost its broker link");
                        why
                    }
                }
            }
        };
        let delay = backoff.next_delay();
        tracing::info!(%queue, retry_in = ?delay, "inbound consumer reconnecting");
        shared.set(ConsumerState::Reconnecting { error: why });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    shared.set(ConsumerState::Stopped);
    tracing::info!(%queue, "inbound consumer stopped");
}
