//! Outbound delivery: the dispatcher takes the deliveries the store hands over as it commits
//! them, and claims the others when they fall due; POSTs each body to its endpoint (signed when
//! the endpoint has a secret) and records what came of it. The store's writer leases every
//! delivery it hands out and bounds them by `max_in_flight` and `endpoint_concurrency`.

pub mod amqp;
pub mod auth;
pub mod cloudevents;
pub mod guard;
pub mod http1;
pub mod retry;
pub mod signing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::config::{DeliverySettings, SuccessRule};
use crate::endpoint::{Destination, Endpoint, Format, HttpDestination, Registry};
use crate::secret::Secret;
use crate::store::{ClaimedDelivery, Completion, Handoff, Store};
use crate::telemetry::{Attempt, AttemptMeter};
use reqwest::header::{self, HeaderName, HeaderValue};

const USER_AGENT: &str = concat!("gbds-notifier/", env!("CARGO_PKG_VERSION"));

/// What one POST came to, from either sender.
enum Sent {
    Answered {
        status: u16,
        /// The raw `Retry-After` header.
        retry_after: Option<String>,
    },
    /// No answer: why, prefixed "timed out", "connection failed" or "request failed".
    Failed(String),
}

/// A header value from text we made (ids, numbers, signatures, host names), all visible ASCII.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What a per-delivery task panicked with, for the dispatcher's loop to panic with in turn.
type Panic = Box<dyn std::any::Any + Send>;

/// Most deliveries claimed in one round trip to the writer.
const CLAIM_BATCH: usize = 256;

/// What the dispatcher keeps for one endpoint destination, made on its first attempt and
/// kept in the endpoint registry for as long as the destination does not change.
struct Link {
    /// Bounds concurrent attempts to one endpoint, so a slow one cannot take every connection.
    slots: Semaphore,
    way: Way,
}

/// How an attempt reaches the destination.
enum Way {
    Http(HttpLink),
    Amqp(amqp::AmqpSink),
}

struct HttpLink {
    /// API key or OAuth2 token (with its cache) for this endpoint.
    credentials: auth::Credentials,
    /// The URL's path and query, as the request line names them.
    path_and_query: String,
    /// Plain http:// endpoints without OAuth2 (and without the private-target guard) are
    /// sent to through hyper directly (`http1`); the others through reqwest.
    direct: Option<http1::Pool>,
}

impl Link {
    fn new(endpoint: &Endpoint, settings: &DeliverySettings) -> Self {
        let way = match &endpoint.destination {
            Destination::Http(http) => {
                let credentials = auth::Credentials::new(http.auth.as_ref());
                let direct = match credentials {
                    auth::Credentials::OAuth2(_) => None,
                    _ if settings.block_private_targets => None,
                    _ => http1::Pool::for_url(
                        &http.url,
                        settings.endpoint_concurrency,
                        settings.connect_timeout,
                        settings.request_timeout,
                    ),
                };
                Way::Http(HttpLink {
                    credentials,
                    path_and_query: path_and_query(&http.url),
                    direct,
                })
            }
            // It connects on its first attempt.
            Destination::Amqp(a) => Way::Amqp(amqp::AmqpSink::new(
                a.url.expose(),
                &a.exchange,
                settings.connect_timeout,
                settings.request_timeout,
            )),
        };
        Link {
            slots: Semaphore::new(settings.endpoint_concurrency),
            way,
        }
    }
}

fn path_and_query(url: &reqwest::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// What a notification contributes to what is sent for it: the CloudEvent that carries it, or
/// the AMQP message and its properties.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub webhook_id: &'a str,
    pub tguid: &'a str,
    pub operation: &'a str,
    pub status: &'a str,
    /// When the notification was recorded (Unix ms).
    pub created_at: i64,
    /// The exact CONTRACT §3 body.
    pub body: &'a [u8],
}

impl<'a> Outgoing<'a> {
    pub fn of(d: &'a ClaimedDelivery) -> Self {
        Outgoing {
            webhook_id: &d.webhook_id,
            tguid: &d.tguid,
            operation: &d.operation,
            status: &d.status,
            created_at: d.created_at,
            body: &d.body,
        }
    }
}

/// The next delivery the writer handed over; never, without a handoff.
async fn handed_over(handoff: &mut Option<Handoff>) -> Option<ClaimedDelivery> {
    match handoff {
        Some(h) => h.deliveries.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends what the store hands over or has claimed; one per service.
pub struct Dispatcher {
    store: Store,
    client: reqwest::Client,
    /// Where each delivery goes: the store's endpoint registry.
    endpoints: Registry,
    settings: DeliverySettings,
}

impl Dispatcher {
    pub fn new(store: Store, settings: DeliverySettings) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Receivers are named by the operator; an ambient http_proxy must not reroute them.
            .no_proxy()
            .pool_max_idle_per_host(settings.endpoint_concurrency)
            .user_agent(USER_AGENT);
        let client = guard::restrict(builder, settings.block_private_targets).build()?;
        Ok(Self {
            endpoints: store.endpoints.clone(),
            store,
            client,
            settings,
        })
    }

    /// Sends what is handed over and claims what falls due until `stop` turns true; then lets
    /// POSTs in flight finish for up to `grace` and gives back the leases of those that did not.
    pub async fn run(self, mut stop: watch::Receiver<bool>, grace: Duration) {
        let this = Arc::new(self);
        let mut handoff = this.store.take_handoff();
        // Handed out and not yet completed: delivery id -> endpoint id.
        let in_flight: Arc<Mutex<HashMap<i64, String>>> = Arc::default();
        let mut tasks = JoinSet::new();
        // A panic in an attempt's task is the dispatcher's own: ended alone, that task would
        // leave its delivery leased until the lease ran out, unnoticed, the service ready.
        // It comes on a channel of its own rather than from `tasks.join_next()` in the select
        // below, which would wake this loop once for every delivery that ends.
        let (panicked, mut panics) = mpsc::unbounded_channel::<Panic>();
        // Claim at once: a restart finds what the last process left due.
        let mut claim = true;
        let mut next_look = Instant::now();
        while !*stop.borrow() {
            while tasks.try_join_next().is_some() {}
            if claim {
                claim = false;
                // Until a claim comes back short: all that is due and has a slot is out.
                loop {
                    let claimed = this.store.claim(CLAIM_BATCH).await;
                    let short = claimed.deliveries.len() < CLAIM_BATCH;
                    for delivery in claimed.deliveries {
                        this.start(delivery, &mut tasks, &in_flight, &panicked);
                    }
                    if short {
                        // A due time already past belongs to a delivery in flight or one
                        // waiting for a slot; the writer wakes us when a slot frees up, and we
                        // look again shortly in any case.
                        let wait = match claimed.next_due {
                            Some(due) => {
                                Duration::from_millis((due - now_ms()).clamp(20, 1000) as u64)
                            }
                            None => Duration::from_secs(1),
                        };
                        next_look = Instant::now() + wait;
                        break;
                    }
                }
            }
            tokio::select! {
                handed = handed_over(&mut handoff) => match handed {
                    Some(delivery) => {
                        this.start(delivery, &mut tasks, &in_flight, &panicked);
                        while let Some(d) = handoff.as_mut().and_then(|h| h.deliveries.try_recv().ok()) {
                            this.start(d, &mut tasks, &in_flight, &panicked);
                        }
                    }
                    None => handoff = None,
                },
                _ = this.store.deliveries_ready.notified() => claim = true,
                _ = tokio::time::sleep_until(next_look) => claim = true,
                _ = stop.changed() => {}
                Some(panic) = panics.recv() => std::panic::resume_unwind(panic),
            }
        }
        // Handed over and not started: their leases go back (the next process sends them).
        let mut unstarted = Vec::new();
        if let Some(h) = handoff.as_mut() {
            h.deliveries.close();
            while let Ok(d) = h.deliveries.try_recv() {
                unstarted.push(d.id);
            }
        }
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tasks.abort_all();
            let left: Vec<i64> = in_flight
                .lock()
                .expect("in-flight set")
                .drain()
                .map(|(id, _)| id)
                .collect();
            tracing::warn!(
                count = left.len(),
                "shutdown deadline: releasing unfinished deliveries"
            );
            unstarted.extend(left);
        }
        if !unstarted.is_empty() {
            this.store.release(unstarted).await;
        }
    }

    /// Attempts `delivery` on a task of its own and reports the result to the store.
    fn start(
        self: &Arc<Self>,
        delivery: ClaimedDelivery,
        tasks: &mut JoinSet<()>,
        in_flight: &Arc<Mutex<HashMap<i64, String>>>,
        panicked: &mpsc::UnboundedSender<Panic>,
    ) {
        in_flight
            .lock()
            .expect("in-flight set")
            .insert(delivery.id, delivery.endpoint_id.clone());
        let (this, in_flight, panicked) = (self.clone(), in_flight.clone(), panicked.clone());
        let meter = AttemptMeter::of(&delivery.endpoint_id);
        let attempt = async move {
            let id = delivery.id;
            let began = std::time::Instant::now();
            let completion = this.attempt(delivery).await;
            let outcome = match &completion {
                Completion::Delivered { .. } => Attempt::Delivered,
                Completion::Retry { .. } => Attempt::Retry,
                Completion::Dead { .. } => Attempt::Dead,
                Completion::Gone { .. } => Attempt::Gone,
            };
            meter.record(outcome, began.elapsed());
            this.store.complete(vec![completion]).await;
            in_flight.lock().expect("in-flight set").remove(&id);
        };
        tasks.spawn(async move {
            if let Err(panic) = std::panic::AssertUnwindSafe(attempt).catch_unwind().await {
                // After a stop nobody reads it: the panic hook has logged it all the same.
                let _ = panicked.send(panic);
            }
        });
    }

    /// One POST (or publish) and its classification.
    async fn attempt(&self, d: ClaimedDelivery) -> Completion {
        #[cfg(debug_assertions)]
        fault_hook(&d);
        let Some(registered) = self.endpoints.get(&d.endpoint_id) else {
            // The writer hands out deliveries only for endpoints in the registry, so this one
            // was deleted since; its deliveries went dead with it, and the lease is all that
            // is left to give back.
            return Completion::Retry {
                id: d.id,
                http_status: None,
                error: "the endpoint was deleted".to_owned(),
                next_attempt_at: now_ms(),
            };
        };
        let link = registered.sender(|e| Link::new(e, &self.settings));
        let _slot = link.slots.acquire().await.expect("never closed");
        let (http, way) = match (&registered.endpoint.destination, &link.way) {
            (_, Way::Amqp(sink)) => return self.publish(sink, d).await,
            (Destination::Http(http), Way::Http(way)) => (http, way),
            (Destination::Amqp(_), Way::Http(_)) => {
                unreachable!("a link is made for the destination it is kept with")
            }
        };
        // What is sent is what is signed: the body, or the CloudEvent that carries it.
        let (content_type, body) = match http.format {
            Format::Gbds => ("application/json", d.body.to_vec()),
            Format::CloudEvents => {
                match cloudevents::render(&self.settings.cloudevents_source, &Outgoing::of(&d)) {
                    Ok(event) => (cloudevents::CONTENT_TYPE, event),
                    Err(e) => {
                        return Completion::Dead {
                            id: d.id,
                            http_status: None,
                            error: format!("the stored body is not JSON: {e}"),
                        }
                    }
                }
            }
        };
        // What is signed is what is sent, by either sender.
        let mut headers: Vec<(HeaderName, HeaderValue)> = vec![
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                HeaderName::from_static("webhook-id"),
                header_value(&d.webhook_id),
            ),
        ];
        if let Some(newest) = http.secrets.first() {
            let timestamp = now_ms() / 1000;
            let all = http.secrets.iter().map(Secret::expose);
            headers.push((
                HeaderName::from_static("webhook-timestamp"),
                header_value(&timestamp.to_string()),
            ));
            headers.push((
                HeaderName::from_static("webhook-signature"),
                header_value(&signing::standard_signatures(
                    all,
                    &d.webhook_id,
                    timestamp,
                    &body,
                )),
            ));
            headers.push((
                HeaderName::from_static("x-signature"),
                header_value(&signing::plain_signature(newest.expose(), &body)),
            ));
        }
        let started = std::time::Instant::now();
        let sent = match &way.direct {
            Some(direct) => Self::send_direct(direct, way, headers, body).await,
            None => self.send_reqwest(http, way, headers, body).await,
        };
        match sent {
            Sent::Answered {
                status,
                retry_after,
            } => {
                let retry_after = retry_after
                    .as_deref()
                    .and_then(retry::parse_retry_after)
                    .filter(|_| status == 429 || status == 503);
                let acknowledged = match self.settings.success {
                    SuccessRule::Any2xx => (200..300).contains(&status),
                    SuccessRule::Only200 => status == 200,
                };
                tracing::debug!(delivery = d.id, endpoint = %d.endpoint_id, tguid = %d.tguid, webhook_id = %d.webhook_id, status, elapsed_ms = started.elapsed().as_millis() as u64, "attempt");
                if acknowledged {
                    Completion::Delivered {
                        id: d.id,
                        http_status: status,
                    }
                } else if status == 410 {
                    Completion::Gone {
                        id: d.id,
                        endpoint_id: d.endpoint_id,
                    }
                } else {
                    self.failed(&d, Some(status), format!("HTTP {status}"), retry_after)
                }
            }
            Sent::Failed(why) => {
                tracing::debug!(delivery = d.id, endpoint = %d.endpoint_id, tguid = %d.tguid, webhook_id = %d.webhook_id, error = %why, "attempt failed");
                self.failed(&d, None, why, None)
            }
        }
    }

    /// The POST through hyper's connection-level client (plain http://, see `http1`).
    async fn send_direct(
        direct: &http1::Pool,
        way: &HttpLink,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Vec<u8>,
    ) -> Sent {
        let mut request = hyper::Request::post(way.path_and_query.as_str())
            .header(header::HOST, header_value(direct.authority()))
            .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let auth::Credentials::ApiKey { header, value } = &way.credentials {
            request = request.header(header.clone(), value.clone());
        }
        let request = match request.body(http1::Body::new(body.into())) {
            Ok(r) => r,
            Err(e) => return Sent::Failed(format!("request failed: {e}")),
        };
        match direct.send(request).await {
            Ok(a) => Sent::Answered {
                status: a.status,
                retry_after: a.retry_after,
            },
            Err(e) => Sent::Failed(e.to_string()),
        }
    }

    /// The POST through reqwest, with the endpoint's credentials (OAuth2 included) and the
    /// private-target guard.
    async fn send_reqwest(
        &self,
        http: &HttpDestination,
        way: &HttpLink,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Vec<u8>,
    ) -> Sent {
        let mut request = self.client.post(http.url.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(body);
        let guarded = self.settings.block_private_targets;
        match auth::send(&self.client, &way.credentials, guarded, request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                // Read the (small) answer so the connection goes back to the pool.
                let _ = response.bytes().await;
                Sent::Answered {
                    status,
                    retry_after,
                }
            }
            Err(e) => {
                let why = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                Sent::Failed(format!("{why}: {e}"))
            }
        }
    }

    /// One publish to the RabbitMQ sink: a broker ack is a delivery (recorded with status
    /// 200), a nack, a timeout or a connection error a failed attempt, retried on schedule.
    async fn publish(&self, sink: &amqp::AmqpSink, d: ClaimedDelivery) -> Completion {
        match sink.publish(&Outgoing::of(&d)).await {
            Ok(()) => Completion::Delivered {
                id: d.id,
                http_status: 200,
            },
            Err(why) => {
                tracing::debug!(delivery = d.id, endpoint = %d.endpoint_id, tguid = %d.tguid, webhook_id = %d.webhook_id, error = %why, "publish failed");
                self.failed(&d, None, why, None)
            }
        }
    }

    /// A failed attempt of `d`: retried on schedule, or dead once the schedule is used up.
    fn failed(
        &self,
        d: &ClaimedDelivery,
        http_status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    ) -> Completion {
        let (id, failed_attempts) = (d.id, d.attempts + 1);
        let s = &self.settings;
        match retry::next_delay(
            &s.retry_schedule,
            failed_attempts,
            s.jitter,
            fastrand::f64(),
            retry_after,
        ) {
            Some(delay) => Completion::Retry {
                id,
                http_status,
                error,
                next_attempt_at: now_ms() + delay.as_millis() as i64,
            },
            None => {
                tracing::warn!(delivery = id, endpoint = %d.endpoint_id, tguid = %d.tguid,
                    webhook_id = %d.webhook_id, attempts = failed_attempts, %error,
                    "delivery is dead: its retry schedule is used up");
                Completion::Dead {
                    id,
                    http_status,
                    error,
                }
            }
        }
    }
}

/// Debug builds only: `GBDS_FAULT_DISPATCHER_PANIC_ON=<tguid>` makes the dispatcher panic when
/// it is about to send a notification of that tguid (in the attempt's own task, where a real
/// bug would strike), so that tests can watch what the dispatcher's death does to the process
/// (`tests/it/operability`). Release builds have no such hook.
#[cfg(debug_assertions)]
fn fault_hook(d: &ClaimedDelivery) {
    static TGUID: std::sync::LazyLock<Option<String>> =
        std::sync::LazyLock::new(|| std::env::var("GBDS_FAULT_DISPATCHER_PANIC_ON").ok());
    if TGUID.as_deref() == Some(d.tguid.as_str()) {
        panic!(
            "fault hook: a delivery of {} kills the dispatcher (GBDS_FAULT_DISPATCHER_PANIC_ON)",
            d.tguid
        );
    }
}
