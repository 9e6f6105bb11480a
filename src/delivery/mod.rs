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
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::config::{DeliverySettings, EndpointSettings, Secret, SuccessRule};
use crate::store::{ClaimedDelivery, Completion, Handoff, Store};
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

/// Most deliveries claimed in one round trip to the writer.
const CLAIM_BATCH: usize = 256;

/// Where an endpoint's notifications go and how they are signed.
struct Target {
    url: reqwest::Url,
    /// Newest first; all sign `webhook-signature` during a rotation, the first `X-Signature`.
    secrets: Vec<Secret>,
    /// Bounds concurrent POSTs to one endpoint, so a slow one cannot take every connection.
    slots: Semaphore,
    /// API key or OAuth2 token (with its cache) for this endpoint.
    credentials: auth::Credentials,
    /// The body as it is, or wrapped in a CloudEvent (HTTP endpoints).
    format: cloudevents::Format,
    /// Where an attempt goes.
    sink: Sink,
    /// The URL's path and query, as the request line names them.
    path_and_query: String,
    /// Plain http:// endpoints without OAuth2 (and without the private-target guard) are
    /// sent to through hyper directly (`http1`); the others through reqwest.
    direct: Option<http1::Pool>,
}

/// The kinds of endpoint: an attempt is an HTTP POST or a publish to the RabbitMQ sink.
enum Sink {
    Http,
    Amqp(Arc<amqp::AmqpSink>),
}

impl Target {
    fn new(e: &EndpointSettings, settings: &DeliverySettings) -> Self {
        let credentials = auth::Credentials::new(e.auth.as_ref());
        let direct = match credentials {
            auth::Credentials::OAuth2(_) => None,
            _ if settings.block_private_targets => None,
            _ => http1::Pool::for_url(
                &e.url,
                settings.endpoint_concurrency,
                settings.connect_timeout,
                settings.request_timeout,
            ),
        };
        Target {
            url: e.url.clone(),
            secrets: e.secrets.clone(),
            slots: Semaphore::new(settings.endpoint_concurrency),
            credentials,
            format: e.format,
            sink: Sink::Http,
            path_and_query: path_and_query(&e.url),
            direct,
        }
    }
}

fn path_and_query(url: &reqwest::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// The endpoints deliveries can go to, by id; changed at runtime by the endpoints API.
#[derive(Clone)]
pub struct Targets {
    map: Arc<RwLock<HashMap<String, Arc<Target>>>>,
    settings: Arc<DeliverySettings>,
}

impl Targets {
    pub fn new(endpoints: &[EndpointSettings], settings: &DeliverySettings) -> Self {
        let map = endpoints
            .iter()
            .map(|e| (e.id.clone(), Arc::new(Target::new(e, settings))))
            .collect();
        Targets {
            map: Arc::new(RwLock::new(map)),
            settings: Arc::new(settings.clone()),
        }
    }

    /// Adds or replaces an endpoint (deliveries in flight finish with the old one).
    pub fn upsert(&self, e: &EndpointSettings) {
        let target = Arc::new(Target::new(e, &self.settings));
        self.map
            .write()
            .expect("targets")
            .insert(e.id.clone(), target);
    }

    pub fn remove(&self, id: &str) {
        self.map.write().expect("targets").remove(id);
    }

    /// Adds the RabbitMQ sink under its endpoint id (it connects on its first attempt).
    pub fn add_amqp(&self, a: &crate::config::AmqpSettings) {
        let sink = amqp::AmqpSink::new(
            a.url.expose(),
            &a.exchange,
            self.settings.connect_timeout,
            self.settings.request_timeout,
        );
        let target = Target {
            url: reqwest::Url::parse(&amqp::redact_url(a.url.expose()))
                .unwrap_or_else(|_| reqwest::Url::parse("amqp://broker").expect("a URL")),
            secrets: Vec::new(),
            slots: Semaphore::new(self.settings.endpoint_concurrency),
            credentials: auth::Credentials::new(None),
            format: cloudevents::Format::Gbds,
            sink: Sink::Amqp(Arc::new(sink)),
            path_and_query: String::new(),
            direct: None,
        };
        self.map
            .write()
            .expect("targets")
            .insert(a.id.clone(), Arc::new(target));
    }

    fn get(&self, id: &str) -> Option<Arc<Target>> {
        self.map.read().expect("targets").get(id).cloned()
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
    targets: Targets,
    settings: DeliverySettings,
}

impl Dispatcher {
    pub fn new(store: Store, targets: Targets, settings: DeliverySettings) -> anyhow::Result<Self> {
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
            store,
            client,
            targets,
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
                        this.start(delivery, &mut tasks, &in_flight);
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
                        this.start(delivery, &mut tasks, &in_flight);
                        while let Some(d) = handoff.as_mut().and_then(|h| h.deliveries.try_recv().ok()) {
                            this.start(d, &mut tasks, &in_flight);
                        }
                    }
                    None => handoff = None,
                },
                _ = this.store.deliveries_ready.notified() => claim = true,
                _ = tokio::time::sleep_until(next_look) => claim = true,
                _ = stop.changed() => {}
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
    ) {
        in_flight
            .lock()
            .expect("in-flight set")
            .insert(delivery.id, delivery.endpoint_id.clone());
        let (this, in_flight) = (self.clone(), in_flight.clone());
        tasks.spawn(async move {
            let id = delivery.id;
            let completion = this.attempt(delivery).await;
            this.store.complete(vec![completion]).await;
            in_flight.lock().expect("in-flight set").remove(&id);
        });
    }

    /// One POST and its classification.
    async fn attempt(&self, d: ClaimedDelivery) -> Completion {
        let Some(target) = self.targets.get(&d.endpoint_id) else {
            // Claims only return configured endpoints; keep the delivery for when it is back.
            return Completion::Gone {
                id: d.id,
                endpoint_id: d.endpoint_id,
            };
        };
        let _slot = target.slots.acquire().await.expect("never closed");
        if let Sink::Amqp(sink) = &target.sink {
            return self.publish(sink, d).await;
        }
        // What is sent is what is signed: the body, or the CloudEvent that carries it.
        let (content_type, body) = match target.format {
            cloudevents::Format::Gbds => ("application/json", d.body.to_vec()),
            cloudevents::Format::CloudEvents => {
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
        if let Some(newest) = target.secrets.first() {
            let timestamp = now_ms() / 1000;
            let all = target.secrets.iter().map(Secret::expose);
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
        let sent = match &target.direct {
            Some(direct) => Self::send_direct(direct, &target, headers, body).await,
            None => self.send_reqwest(&target, headers, body).await,
        };
        let failed_attempts = d.attempts + 1;
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
                tracing::debug!(delivery = d.id, endpoint = %d.endpoint_id, status, elapsed_ms = started.elapsed().as_millis() as u64, "attempt");
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
                    self.failed(
                        d.id,
                        failed_attempts,
                        Some(status),
                        format!("HTTP {status}"),
                        retry_after,
                    )
                }
            }
            Sent::Failed(why) => {
                tracing::debug!(delivery = d.id, endpoint = %d.endpoint_id, error = %why, "attempt failed");
                self.failed(d.id, failed_attempts, None, why, None)
            }
        }
    }

    /// The POST through hyper's connection-level client (plain http://, see `http1`).
    async fn send_direct(
        direct: &http1::Pool,
        target: &Target,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Vec<u8>,
    ) -> Sent {
        let mut request = hyper::Request::post(target.path_and_query.as_str())
            .header(header::HOST, header_value(direct.authority()))
            .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let auth::Credentials::ApiKey { header, value } = &target.credentials {
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
        target: &Target,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Vec<u8>,
    ) -> Sent {
        let mut request = self.client.post(target.url.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(body);
        let guarded = self.settings.block_private_targets;
        match auth::send(&self.client, &target.credentials, guarded, request).await {
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
                tracing::debug!(delivery = d.id, endpoint = %d.endpoint_id, error = %why, "publish failed");
                self.failed(d.id, d.attempts + 1, None, why, None)
            }
        }
    }

    fn failed(
        &self,
        id: i64,
        failed_attempts: u32,
        http_status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    ) -> Completion {
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
            None => Completion::Dead {
                id,
                http_status,
                error,
            },
        }
    }
}
