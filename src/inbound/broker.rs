//! The consumer's link to RabbitMQ: one connection with a consuming channel and a publishing
//! channel in confirm mode (for dead letters), and the queue topology, declared on every
//! connect: the durable queue with a single active consumer, and the dead-letter exchange
//! `<queue>.dead` bound to the durable queue of the same name.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, Consumer, ExchangeKind};

use crate::api::ApiError;
use crate::config::AmqpInboundSettings;
use crate::endpoint::amqp::redact_url;

/// Bounds connecting and declaring, like the sink's connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds publishing a dead letter and its confirm; past it the link is taken for broken.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The header naming why a message was refused: the REST error code of the same refusal.
pub const ERROR_HEADER: &str = "x-gbds-error";
/// The header with the refusal's message for a person.
pub const MESSAGE_HEADER: &str = "x-gbds-message";

/// `<queue>.dead`: the dead-letter exchange, and the queue bound to it.
pub fn dead_letter_name(queue: &str) -> String {
    format!("{queue}.dead")
}

/// The consumed queue's arguments: one active consumer at a time across every instance (so
/// the queue is consumed in order), and whatever the broker itself dead-letters (a policy's
/// TTL or length limit) goes where our refusals go.
pub fn queue_arguments(queue: &str) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dead_letter_name(queue).into()),
    );
    arguments
}

/// An open connection, subscribed to the queue.
pub struct Link {
    connection: Connection,
    consuming: Channel,
    publishing: Channel,
    queue: String,
    prefetch: u16,
}

impl Link {
    /// Connects, declares the topology and subscribes; the consumer yields the deliveries.
    pub async fn open(settings: &AmqpInboundSettings) -> Result<(Link, Consumer), String> {
        let url = settings.url.expose();
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, Self::connect(settings)).await;
        match opened {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(e)) => Err(format!("{}: {e}", redact_url(url))),
            Err(_) => Err(format!(
                "{}: no answer within {CONNECT_TIMEOUT:?}",
                redact_url(url)
            )),
        }
    }

    async fn connect(settings: &AmqpInboundSettings) -> lapin::Result<(Link, Consumer)> {
        let queue = settings.queue.as_str();
        let name = format!(
            "gbds-notifier/{} inbound {queue}",
            env!("CARGO_PKG_VERSION")
        );
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connection = Connection::connect(settings.url.expose(), properties).await?;
        let publishing = connection.create_channel().await?;
        publishing
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let consuming = connection.create_channel().await?;
        declare(&consuming, queue).await?;
        consuming
            .basic_qos(settings.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = consuming
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let link = Link {
            connection,
            consuming,
            publishing,
            queue: queue.to_owned(),
            prefetch: settings.prefetch,
        };
        Ok((link, consumer))
    }

    /// Acknowledges a delivery: the broker forgets it.
    pub async fn ack(&self, delivery: &Delivery) -> Result<(), String> {
        match delivery.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the channel it came on is closed".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Returns once the broker has processed every acknowledgement sent before: a channel's
    /// methods are handled in order, so the answer to a `basic.qos` sent after them proves it.
    pub async fn barrier(&self) -> Result<(), String> {
        self.consuming
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| e.to_string())
    }

    /// Publishes a refused message to `<queue>.dead` with its body and properties, adding the
    /// refusal's code and message as headers; `Ok` once the broker confirmed it was queued
    /// (an error leaves the message unacknowledged, and the reconnect declares the topology
    /// again).
    pub async fn dead_letter(&self, delivery: &Delivery, refusal: &ApiError) -> Result<(), String> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            ERROR_HEADER.into(),
            AMQPValue::LongString(LongString::from(refusal.code)),
        );
        headers.insert(
            MESSAGE_HEADER.into(),
            AMQPValue::LongString(LongString::from(refusal.message.as_str())),
        );
        let properties = delivery
            .properties
            .clone()
            .with_delivery_mode(2)
            .with_headers(headers);
        let exchange = dead_letter_name(&self.queue);
        let published = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            self.publishing
                .basic_publish(
                    exchange.as_str().into(),
                    self.queue.as_str().into(),
                    // Returned, not dropped, should nothing be bound to the exchange any more.
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &delivery.data,
                    properties,
                )
                .await?
                .await
        })
        .await;
        match published {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(format!(
                "no queue is bound to the exchange {exchange:?}: the broker returned it"
            )),
            Ok(Ok(other)) => Err(format!("the broker did not confirm it: {other:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no confirm within {PUBLISH_TIMEOUT:?}")),
        }
    }

    /// Closes the connection; the broker requeues every delivery not acknowledged.
    pub async fn close(&self) {
        let _ = self
            .connection
            .close(200, "gbds-notifier stops".into())
            .await;
    }
}

async fn declare(channel: &Channel, queue: &str) -> lapin::Result<()> {
    let dead = dead_letter_name(queue);
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            dead.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(dead.as_str().into(), durable, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            dead.as_str().into(),
            dead.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(queue.into(), durable, queue_arguments(queue))
        .await?;
    Ok(())
}
