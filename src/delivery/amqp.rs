//! The RabbitMQ sink (a topic exchange with routing keys): an endpoint whose attempt publishes the exact
//! CONTRACT §3 body to a durable topic exchange instead of POSTing it. Routing key
//! `gbds.<operation>.<status>` in lower case, persistent messages, publisher confirms: an ack
//! is a delivery, anything else a failed attempt retried by the outbox like an HTTP one.
//! Consumers bind their own queues; this never declares one.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::Outgoing;
use crate::endpoint::amqp::redact_url;

/// `gbds.<operation>.<status>` in lower case: `gbds.enroll.enrolled`, `gbds.treat_exception.ok`.
pub fn routing_key(operation: &str, status: &str) -> String {
    format!(
        "gbds.{}.{}",
        operation.to_ascii_lowercase(),
        status.to_ascii_lowercase()
    )
}

/// The message properties: persistent, JSON, the webhook-id as `message_id` (consumers
/// de-duplicate on it, as HTTP receivers do), the tguid as `correlation_id`.
pub fn properties(m: &Outgoing<'_>) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(m.webhook_id.into())
        .with_correlation_id(m.tguid.into())
        .with_timestamp((m.created_at / 1000).max(0) as u64)
        .with_app_id("gbds-notifier".into())
}

/// An open channel in confirm mode on the declared exchange, and which connection it is.
struct Link {
    /// Kept so the connection lives as long as the channel; dropping it closes it.
    _connection: Connection,
    channel: Channel,
    generation: u64,
}

/// One broker connection, opened on the first attempt and again after it failed.
pub struct AmqpSink {
    url: String,
    exchange: String,
    connect_timeout: Duration,
    /// Bounds a publish and its confirm together, like an HTTP request timeout.
    publish_timeout: Duration,
    link: Mutex<Option<Link>>,
    /// Counts connections, so that a failure seen on an old one does not drop a new one.
    generations: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSink")
            .field("url", &redact_url(&self.url))
            .field("exchange", &self.exchange)
            .finish()
    }
}

impl AmqpSink {
    /// No connection is made here: the first attempt connects (lazily, so a broker that is
    /// down at start only delays deliveries, as an unreachable HTTP endpoint does).
    pub fn new(
        url: &str,
        exchange: &str,
        connect_timeout: Duration,
        publish_timeout: Duration,
    ) -> Self {
        AmqpSink {
            url: url.to_owned(),
            exchange: exchange.to_owned(),
            connect_timeout,
            publish_timeout,
            link: Mutex::new(None),
            generations: Default::default(),
        }
    }

    /// The open channel, connecting (and declaring the exchange) if there is none.
    async fn channel(&self) -> Result<(Channel, u64), String> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref() {
            if l.channel.status().connected() {
                return Ok((l.channel.clone(), l.generation));
            }
        }
        *link = None;
        let opened = tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .map_err(|_| {
                format!(
                    "connection failed: no answer from {} within {:?}",
                    redact_url(&self.url),
                    self.connect_timeout
                )
            })?
            .map_err(|e| format!("connection failed: {e}"))?;
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let channel = opened.1.clone();
        *link = Some(Link {
            _connection: opened.0,
            channel: opened.1,
            generation,
        });
        tracing::info!(url = %redact_url(&self.url), exchange = %self.exchange, "connected to the AMQP broker");
        Ok((channel, generation))
    }

    async fn connect(&self) -> lapin::Result<(Connection, Channel)> {
        let properties = ConnectionProperties::default()
            .with_connection_name(concat!("gbds-notifier/", env!("CARGO_PKG_VERSION")).into());
        let connection = Connection::connect(&self.url, properties).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel))
    }

    /// Forgets the connection of `generation` so the next attempt opens a new one.
    async fn drop_link(&self, generation: u64) {
        let mut link = self.link.lock().await;
        if link.as_ref().is_some_and(|l| l.generation == generation) {
            *link = None;
        }
    }

    /// Publishes one notification and waits for the broker's confirm. `Ok` only on an ack;
    /// the error says what happened, for the delivery's `last_error`.
    pub async fn publish(&self, m: &Outgoing<'_>) -> Result<(), String> {
        let (channel, generation) = self.channel().await?;
        let key = routing_key(m.operation, m.status);
        let sent = tokio::time::timeout(self.publish_timeout, async {
            channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    m.body,
                    properties(m),
                )
                .await?
                .await
        })
        .await;
        match sent {
            Ok(Ok(Confirmation::Ack(_))) => Ok(()),
            Ok(Ok(Confirmation::Nack(_))) => Err("the broker refused the message (nack)".into()),
            Ok(Ok(Confirmation::NotRequested)) => {
                // The channel lost confirm mode; open a new one rather than publish blind.
                self.drop_link(generation).await;
                Err("the channel is not in confirm mode".into())
            }
            Ok(Err(e)) => {
                self.drop_link(generation).await;
                Err(format!("publish failed: {e}"))
            }
            Err(_) => {
                self.drop_link(generation).await;
                Err(format!(
                    "timed out: no confirm within {:?}",
                    self.publish_timeout
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routing_key_is_the_lower_case_operation_and_status_under_gbds() {
        assert_eq!(routing_key("ENROLL", "ENROLLED"), "gbds.enroll.enrolled");
        assert_eq!(
            routing_key("TREAT_EXCEPTION", "OK"),
            "gbds.treat_exception.ok"
        );
        assert_eq!(
            routing_key("ENROLL", "REVERSE_LATENT_MATCH"),
            "gbds.enroll.reverse_latent_match"
        );
    }

    #[test]
    fn messages_are_persistent_json_with_the_webhook_id_and_the_tguid() {
        let p = properties(&Outgoing {
            webhook_id: "msg_1",
            tguid: "tg-1",
            operation: "ENROLL",
            status: "ENROLLED",
            created_at: 1_614_265_330_123,
            body: b"{}",
        });
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("msg_1"));
        assert_eq!(
            p.correlation_id().as_ref().map(|s| s.as_str()),
            Some("tg-1")
        );
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(*p.timestamp(), Some(1_614_265_330));
    }
}
