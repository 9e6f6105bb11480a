//! gbds-notifier: the GBDS notification flows as a standalone service.
//!
//! - [`domain`]: the pure state machine (operations, states, inputs, notification bodies).
//! - [`config`]: defaults → TOML file → `GBDS_*` environment, validated into [`config::Settings`].
//! - [`store`]: SQLite; one group-committing writer thread, pooled readers, the outbox.
//! - [`delivery`]: the dispatcher that claims, signs, POSTs and retries deliveries.
//! - [`api`]: the REST API on axum.
//! - [`console`]: the review console, a page for reviewers and operators over that API.
//! - [`inbound`]: the consumer of back-office outcomes over RabbitMQ (`[amqp] inbound_queue`).
//! - [`jobs`]: scheduled retention and endpoint-health jobs.
//! - [`states`]: renders the state machine as Markdown and Mermaid for `states/`.
//! - [`receiver`]: a development receiver that prints notifications and checks signatures.
//!
//! [`run`] wires them together on a listener the caller opened, until `shutdown` resolves.

pub mod api;
pub mod clock;
pub mod config;
pub mod console;
pub mod delivery;
pub mod domain;
pub mod inbound;
pub mod jobs;
pub mod receiver;
pub mod states;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Settings;
use crate::store::{Store, StoreOptions};

/// How long in-flight POSTs may run on after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
    let mut options = StoreOptions {
        synchronous_full: settings.store.synchronous_full,
        update_label: settings.update_label,
        endpoints: settings
            .endpoints
            .iter()
            .map(|e| (e.id.clone(), e.url.to_string()))
            .collect(),
        delivery: (&settings.delivery).into(),
    };
    let mut endpoint_options: store::ConfigEndpointOptions = settings
        .endpoints
        .iter()
        .map(|e| {
            let o = store::EndpointOptions {
                subscriptions: e.subscriptions.patterns(),
                format: e.format.as_str().to_owned(),
            };
            (e.id.clone(), o)
        })
        .collect();
    // The RabbitMQ sink is an endpoint like the others: same outbox, retries and dead letters.
    if let Some(a) = &settings.amqp {
        let url = delivery::amqp::redact_url(a.url.expose());
        options.endpoints.push((a.id.clone(), url));
        let o = store::EndpointOptions {
            subscriptions: a.subscriptions.patterns(),
            format: "gbds".to_owned(),
        };
        endpoint_options.insert(a.id.clone(), o);
    }
    let path = settings.store.sqlite_path.clone();
    let store::Opened {
        store,
        writer,
        api_endpoints,
    } = tokio::task::spawn_blocking(move || Store::open_with(&path, options, &endpoint_options))
        .await??;

    let targets = delivery::Targets::new(&settings.endpoints, &settings.delivery);
    if let Some(a) = &settings.amqp {
        targets.add_amqp(a);
        tracing::info!(endpoint = %a.id, url = %delivery::amqp::redact_url(a.url.expose()), exchange = %a.exchange, "publishing to RabbitMQ");
    }
    for e in &api_endpoints {
        let endpoint = config::EndpointSettings::runtime(&e.id, &e.url, e.secret.clone()).and_then(
            |mut endpoint| {
                endpoint.format = delivery::cloudevents::Format::parse(&e.format)?;
                Ok(endpoint)
            },
        );
        match endpoint {
            Ok(endpoint) => targets.upsert(&endpoint),
            Err(why) => {
                tracing::error!(endpoint = %e.id, %why, "stored endpoint is invalid; skipped")
            }
        }
    }
    let dispatcher =
        delivery::Dispatcher::new(store.clone(), targets.clone(), settings.delivery.clone())?;
    let mut scheduler = jobs::start(&settings, &store).await?;
    let (stop, stopped) = watch::channel(false);
    let dispatching = tokio::spawn(dispatcher.run(stopped, SHUTDOWN_GRACE));

    // Messages reach the store the way calls do, so the consumer starts with the API.
    let inbound = settings
        .amqp_inbound
        .clone()
        .map(|s| inbound::Inbound::start(s, store.clone()));

    let app = api::router(api::AppState {
        store: store.clone(),
        targets: targets.clone(),
        auth: Arc::new(api::Auth::new(settings.api.tokens.clone())),
    });
    tracing::info!(listen = %listener.local_addr()?, db = %settings.store.sqlite_path.display(), endpoints = settings.endpoints.len(), "gbds-notifier serving");
    let served = api::serve(listener, app, &settings.api, shutdown).await;

    tracing::info!("shutting down: no new calls; finishing deliveries in flight");
    if let Some(inbound) = inbound {
        inbound.stop().await;
    }
    let _ = scheduler.shutdown().await;
    drop(scheduler);
    let _ = stop.send(true);
    let _ = dispatching.await;
    store.shutdown().await;
    drop(store);
    // The writer stops after committing everything queued before the shutdown command.
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    tracing::info!("stopped");
    Ok(served?)
}
