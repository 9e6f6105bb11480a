//! Supervision of the parts that must keep running while the service serves: the store's
//! writer thread, the dispatcher task and, when configured, the inbound consumer. One that
//! stops unasked (a panic, or a loop that ended) is logged, turns readiness red and makes
//! [`crate::run`] end with [`Died`], which the binary turns into exit status [`EXIT_DIED`]: a
//! process that lost its writer cannot take a single write again, so a supervisor (systemd's
//! `Restart=on-failure`, an orchestrator) is to start a fresh one. The consumer's own state
//! (connecting, reconnecting, store failing) is readiness too, but no reason to exit: it
//! recovers by itself.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::health::{Component, Health};
use crate::inbound::ConsumerState;
use crate::telemetry::logs::panic_message;

/// The exit status of a process one of whose parts stopped (1 is a failure to start, 2 a
/// configuration error).
pub const EXIT_DIED: i32 = 3;

/// How long the API goes on answering (`/readyz` with 503, writes with 503) after a part
/// died and before the process winds down: probes and load balancers see why, rather than a
/// refused connection.
pub const LINGER: Duration = Duration::from_secs(2);

/// A part of the service that stopped unasked, and how.
#[derive(Debug, thiserror::Error)]
#[error("the {} stopped: {reason}", component.as_str())]
pub struct Died {
    pub component: Component,
    pub reason: String,
}

impl Died {
    /// Logs it and turns readiness red.
    pub fn report(&self, health: &Health) {
        tracing::error!(
            component = self.component.as_str(),
            reason = %self.reason,
            "a part of the service stopped; the process exits with status {EXIT_DIED} for its supervisor to restart it"
        );
        health.fail(self.component, format!("stopped: {}", self.reason));
    }
}

/// What the writer thread's join gives: its panic, if it panicked.
pub type WriterJoin = JoinHandle<std::thread::Result<()>>;

/// The watched parts. Each is awaited once: a part that finished is dropped from here.
pub struct Watched {
    health: Health,
    writer: Option<WriterJoin>,
    dispatcher: Option<JoinHandle<()>>,
    consumer: Option<watch::Receiver<ConsumerState>>,
}

impl Watched {
    /// Watches `writer` (the writer thread joined on the blocking pool, e.g.
    /// `spawn_blocking(move || thread.join())`), the dispatcher's task and the consumer's state.
    pub fn new(
        health: Health,
        writer: WriterJoin,
        dispatcher: JoinHandle<()>,
        consumer: Option<watch::Receiver<ConsumerState>>,
    ) -> Self {
        if consumer.is_some() {
            health.wait_for(Component::Consumer, "connecting to the broker");
        }
        Watched {
            health,
            writer: Some(writer),
            dispatcher: Some(dispatcher),
            consumer,
        }
    }

    /// Resolves when a part stops, saying which and how; keeps the consumer's readiness in
    /// step with its state meanwhile. Never resolves while every part runs.
    pub async fn first_death(&mut self) -> Died {
        let Watched {
            health,
            writer,
            dispatcher,
            consumer,
        } = self;
        let writer_died = async {
            let Some(handle) = writer.as_mut() else {
                return std::future::pending().await;
            };
            let joined = handle.await;
            *writer = None;
            let reason = match joined {
                Ok(Ok(())) => "the writer thread ended".to_owned(),
                Ok(Err(panic)) => format!("the writer thread panicked: {}", panic_message(&*panic)),
                Err(e) => format!("the writer thread could not be joined: {e}"),
            };
            Died {
                component: Component::Writer,
                reason,
            }
        };
        let dispatcher_died = async {
            let Some(handle) = dispatcher.as_mut() else {
                return std::future::pending().await;
            };
            let ended = handle.await;
            *dispatcher = None;
            let reason = match ended {
                Ok(()) => "the dispatcher ended".to_owned(),
                Err(e) if e.is_panic() => {
                    format!(
                        "the dispatcher panicked: {}",
                        panic_message(&*e.into_panic())
                    )
                }
                Err(e) => format!("the dispatcher was cancelled: {e}"),
            };
            Died {
                component: Component::Dispatcher,
                reason,
            }
        };
        let consumer_died = async {
            let Some(state) = consumer.as_mut() else {
                return std::future::pending().await;
            };
            loop {
                report_consumer(health, &state.borrow_and_update());
                if state.changed().await.is_err() {
                    break;
                }
            }
            *consumer = None;
            Died {
                component: Component::Consumer,
                reason: "the inbound consumer ended".to_owned(),
            }
        };
        tokio::select! {
            died = writer_died => died,
            died = dispatcher_died => died,
            died = consumer_died => died,
        }
    }

    /// After the dispatcher was told to stop: waits until it has (at once if it died).
    pub async fn dispatcher_stopped(&mut self) {
        if let Some(handle) = self.dispatcher.take() {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "the dispatcher failed while stopping");
            }
        }
    }

    /// After the writer was told to stop: waits until its thread has ended.
    pub async fn writer_stopped(&mut self) {
        if let Some(handle) = self.writer.take() {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(panic)) => tracing::error!(
                    panic = %panic_message(&*panic),
                    "the writer thread panicked while stopping"
                ),
                Err(e) => tracing::error!(error = %e, "the writer thread could not be joined"),
            }
        }
    }
}

/// The consumer's state as readiness: ready only while subscribed to its queue.
fn report_consumer(health: &Health, state: &ConsumerState) {
    match state {
        ConsumerState::Consuming => health.recover(Component::Consumer),
        ConsumerState::Starting => health.wait_for(Component::Consumer, "connecting to the broker"),
        ConsumerState::Reconnecting { error } => health.fail(
            Component::Consumer,
            format!("the broker cannot be reached; reconnecting: {error}"),
        ),
        ConsumerState::StoreUnavailable { error } => health.fail(
            Component::Consumer,
            format!("store writes fail; messages are held and retried: {error}"),
        ),
        ConsumerState::Stopped => health.fail(Component::Consumer, "stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy_writer() -> (WriterJoin, std::sync::mpsc::Sender<()>) {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = stopped.recv();
        });
        (tokio::task::spawn_blocking(move || thread.join()), stop)
    }

    #[tokio::test]
    async fn a_panicking_writer_thread_is_reported_as_dead_with_its_panic_and_readiness_turns_red()
    {
        let health = Health::new();
        let thread = std::thread::spawn(|| panic!("disk on fire"));
        let writer = tokio::task::spawn_blocking(move || thread.join());
        let dispatcher = tokio::spawn(std::future::pending::<()>());
        let mut watched = Watched::new(health.clone(), writer, dispatcher, None);
        assert!(health.is_ready());
        let died = watched.first_death().await;
        assert_eq!(died.component, Component::Writer);
        assert!(died.reason.contains("disk on fire"), "{}", died.reason);
        died.report(&health);
        assert!(!health.is_ready());
        assert!(health
            .reason(Component::Writer)
            .is_some_and(|r| r.contains("disk on fire")));
        // The writer is gone from the watch: the next death is another part's.
        watched.writer_stopped().await;
    }

    #[tokio::test]
    async fn a_dispatcher_that_returns_or_panics_unasked_is_dead() {
        for (task, expected) in [
            (tokio::spawn(async {}), "the dispatcher ended"),
            (
                tokio::spawn(async { panic!("claim loop broke") }),
                "the dispatcher panicked: claim loop broke",
            ),
        ] {
            let health = Health::new();
            let (writer, stop_writer) = healthy_writer();
            let mut watched = Watched::new(health.clone(), writer, task, None);
            let died = watched.first_death().await;
            assert_eq!(
                (died.component, died.reason.as_str()),
                (Component::Dispatcher, expected)
            );
            drop(stop_writer);
            watched.writer_stopped().await;
        }
    }

    #[tokio::test]
    async fn the_consumer_is_ready_only_while_consuming_and_dead_when_its_task_ends() {
        let health = Health::new();
        let (writer, stop_writer) = healthy_writer();
        let dispatcher = tokio::spawn(std::future::pending::<()>());
        let (state, watching) = watch::channel(ConsumerState::Starting);
        let mut watched = Watched::new(health.clone(), writer, dispatcher, Some(watching));
        assert!(health.reason(Component::Consumer).is_some());
        let health_seen = health.clone();
        let driver = async move {
            // Each change is seen by the watch before the next is made.
            let wait_until = |ready: bool| {
                let h = health_seen.clone();
                async move {
                    while h.is_ready() != ready {
                        tokio::task::yield_now().await;
                    }
                }
            };
            state.send_replace(ConsumerState::Consuming);
            wait_until(true).await;
            state.send_replace(ConsumerState::Reconnecting {
                error: "connection refused".into(),
            });
            wait_until(false).await;
            assert!(health_seen
                .reason(Component::Consumer)
                .is_some_and(|r| r.contains("connection refused")));
            state.send_replace(ConsumerState::Consuming);
            wait_until(true).await;
            drop(state);
        };
        let (died, ()) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(watched.first_death(), driver)
        })
        .await
        .expect("the consumer's changes are seen (a guard against hanging)");
        assert_eq!(died.component, Component::Consumer);
        drop(stop_writer);
        watched.writer_stopped().await;
    }
}
