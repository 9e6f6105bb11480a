//! gbds-notifier: the GBDS notification flows as a standalone service.
//!
//! - [`domain`]: the pure state machine (operations, states, inputs, notification bodies).
//! - [`config`]: defaults → TOML file → `GBDS_*` environment, validated into [`config::Settings`].
//! - [`endpoint`]: the one `Endpoint` type, its checks, and the registry the writer keeps in
//!   step with the database and the dispatcher sends by.
//! - [`secret`]: `Secret`, a value that never shows itself.
//! - [`store`]: SQLite or PostgreSQL; one group-committing writer, pooled readers, the outbox.
//! - [`delivery`]: the dispatcher that claims, signs, POSTs and retries deliveries.
//! - [`api`]: the REST API on axum.
//! - [`console`]: the review console, a page for reviewers and operators over that API.
//! - [`inbound`]: the consumer of back-office outcomes over RabbitMQ (`[amqp] inbound_queue`).
//! - [`health`]: readiness, the conditions each part reports.
//! - [`supervisor`]: the writer, the dispatcher and the consumer watched; one that dies ends
//!   the process for its supervisor to restart.
//! - [`telemetry`]: the metrics `/metrics` exports and the log format.
//! - [`jobs`]: scheduled retention and endpoint-health jobs.
//! - [`states`]: renders the state machine as Markdown and Mermaid for `states/`.
//! - [`receiver`]: a development receiver that prints notifications and checks signatures.
//!
//! [`run`] wires them together on a listener the caller opened, until `shutdown` resolves.

pub mod api;
#[cfg(test)]
mod architecture_tests;
pub mod clock;
pub mod config;
pub mod console;
pub mod delivery;
pub mod domain;
pub mod endpoint;
pub mod health;
pub mod inbound;
pub mod jobs;
pub mod receiver;
pub mod secret;
pub mod states;
pub mod store;
pub mod supervisor;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Settings;
use crate::endpoint::Destination;
use crate::store::{Store, StoreOptions};

/// How long in-flight POSTs may run on after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often the histograms' recent samples are folded into their buckets when nothing scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Refuses to expose an API that has no tokens anywhere but on loopback.
pub fn check_exposure(settings: &Settings) -> anyhow::Result<()> {
    if settings.api.tokens.is_empty() && !settings.listen.ip().is_loopback() {
        anyhow::bail!(
            "config: api.tokens is empty, so the API would be open to anyone on {}; \
             configure [api] tokens or listen on a loopback address",
            settings.listen
        );
    }
    Ok(())
}

/// Runs the service on `listener` until `shutdown` resolves, then stops accepting calls, lets
/// POSTs in flight finish (bounded), releases what is left and closes the database.
///
/// Should the writer, the dispatcher or the consumer die meanwhile, readiness turns red, the
/// API answers for [`supervisor::LINGER`] more, the rest winds down the same way, and this
/// returns [`supervisor::Died`].
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    check_exposure(&settings)?;
    if settings.api.tokens.is_empty() {
        tracing::warn!(
            listen = %settings.listen,
            "NO API TOKENS CONFIGURED: the REST API is open to every local process; set [api] tokens"
        );
    }
    let options = StoreOptions {
        synchronous_full: settings.store.synchronous_full,
        update_label: settings.update_label,
        endpoints: settings.endpoints.clone(),
        delivery: (&settings.delivery).into(),
    };
    let store::Opened { store, writer } = match &settings.store.postgres_url {
        Some(url) => {
            let target = store::PgTarget::for_listener(url.expose(), listener.local_addr()?);
            Store::open_postgres(&target, options).await?
        }
        None => {
            let path = settings.store.sqlite_path.clone();
            tokio::task::spawn_blocking(move || Store::open(&path, options)).await??
        }
    };
    for e in &settings.endpoints {
        if let Destination::Amqp(a) = &e.destination {
            tracing::info!(endpoint = %e.id, url = %e.shown_url(), exchange = %a.exchange, "publishing to RabbitMQ");
        }
    }

    let health = store.health.clone();
    // Joined on the blocking pool, so that its end (a panic included) is an event to await.
    let writer = tokio::task::spawn_blocking(move || writer.join());
    let dispatcher = delivery::Dispatcher::new(store.clone(), settings.delivery.clone())?;
    let mut scheduler = jobs::start(&settings, &store).await?;
    let (stop, stopped) = watch::channel(false);
    let dispatching = tokio::spawn(dispatcher.run(stopped, SHUTDOWN_GRACE));

    // Messages reach the store the way calls do, so the consumer starts with the API.
    let inbound = settings
        .amqp_inbound
        .clone()
        .map(|s| inbound::Inbound::start(s, store.clone()));
    let mut watched = supervisor::Watched::new(
        health.clone(),
        writer,
        dispatching,
        inbound.as_ref().map(inbound::Inbound::state),
    );
    let upkeep = tokio::spawn(async {
        let mut every = tokio::time::interval(METRICS_UPKEEP);
        loop {
            every.tick().await;
            telemetry::upkeep();
        }
    });

    let auth = Arc::new(api::Auth::new(settings.api.tokens.clone()));
    let app = api::router(api::AppState {
        store: store.clone(),
        auth: auth.clone(),
    });
    let database = match &settings.store.postgres_url {
        Some(_) => "PostgreSQL (store.postgres_url)".to_owned(),
        None => settings.store.sqlite_path.display().to_string(),
    };
    // Every endpoint deliveries go to: the configured ones (the RabbitMQ sink among them) and
    // those created through the API.
    let endpoints = store.endpoints.snapshot();
    let amqp = endpoints
        .iter()
        .filter(|e| matches!(e.endpoint.destination, Destination::Amqp(_)))
        .count();
    tracing::info!(listen = %listener.local_addr()?, db = %database, endpoints = endpoints.len(), amqp_sinks = amqp, "gbds-notifier serving");
    let mut died = None;
    let until = async {
        tokio::select! {
            () = shutdown => {}
            dead = watched.first_death() => {
                dead.report(&health);
                tokio::time::sleep(supervisor::LINGER).await;
                died = Some(dead);
            }
        }
    };
    let served = api::serve(listener, app, &settings.api, auth, until).await;

    tracing::info!("shutting down: no new calls; finishing deliveries in flight");
    if let Some(inbound) = inbound {
        inbound.stop().await;
    }
    let _ = scheduler.shutdown().await;
    drop(scheduler);
    let _ = stop.send(true);
    watched.dispatcher_stopped().await;
    store.shutdown().await;
    drop(store);
    // The writer stops after committing everything queued before the shutdown command.
    watched.writer_stopped().await;
    upkeep.abort();
    if let Some(died) = died {
        return Err(died.into());
    }
    tracing::info!("stopped");
    Ok(served?)
}
