//! The broker side of the inbound tests: a uniquely named queue the service consumes
//! (`InboundQueue`), messages as a back office publishes them (`Message`), its dead letters,
//! and `rabbitmqctl` for what AMQP cannot tell or do (messages not yet acknowledged, closing
//! one connection from the broker's side). Every wait polls against the harness deadline.

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::collections::BTreeMap;

use crate::harness::{broker_url, eventually, unique};

/// One message as the back office publishes it.
#[derive(Debug, Clone)]
pub struct Message {
    pub body: Vec<u8>,
    pub message_id: Option<String>,
}

impl Message {
    /// A body as given, with a fresh `message_id`.
    pub fn raw(body: impl Into<Vec<u8>>) -> Message {
        Message {
            body: body.into(),
            message_id: Some(format!("m-{:016x}", fastrand::u64(..))),
        }
    }

    /// `{"action":"register","tguid","operation"}`.
    pub fn register(tguid: &str, operation: &str) -> Message {
        Message::raw(
            json!({"action": "register", "tguid": tguid, "operation": operation}).to_string(),
        )
    }

    /// `{"action":"event","tguid", …body}`: an event as its REST body plus the two routing
    /// fields.
    pub fn event(tguid: &str, body: &Value) -> Message {
        let mut fields = body
            .as_object()
            .expect("an event body is an object")
            .clone();
        fields.insert("action".into(), json!("event"));
        fields.insert("tguid".into(), json!(tguid));
        Message::raw(Value::Object(fields).to_string())
    }

    pub fn without_message_id(mut self) -> Message {
        self.message_id = None;
        self
    }
}

/// A message read back from `<queue>.dead`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    /// The message's headers, string values only.
    pub headers: BTreeMap<String, String>,
}

impl DeadLetter {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| {
                panic!(
                    "dead letter {:?} has no {name} header: {:?}",
                    String::from_utf8_lossy(&self.body),
                    self.headers
                )
            })
    }
}

/// A queue no other test uses, which the service under test consumes; deleted with its
/// dead-letter exchange and queue by `delete` (or on drop, when a test failed first).
pub struct InboundQueue {
    pub name: String,
    connection: Connection,
    channel: Channel,
    deleted: bool,
}

impl InboundQueue {
    pub async fn new() -> InboundQueue {
        let connection = Connection::connect(&broker_url().await, ConnectionProperties::default())
            .await
            .expect("the test connects to RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        InboundQueue {
            name: unique("gbds.test.inbound"),
            connection,
            channel,
            deleted: false,
        }
    }

    pub fn dead(&self) -> String {
        format!("{}.dead", self.name)
    }

    /// The `[amqp]` table that makes the service consume this queue.
    pub fn config(&self) -> String {
        self.config_through("amqp://guest:guest@127.0.0.1:5672/%2f")
    }

    /// [`InboundQueue::config`] with the broker at `url` (a proxy the test controls).
    pub fn config_through(&self, url: &str) -> String {
        format!(
            "[amqp]\nurl = \"{url}\"\ninbound_queue = \"{}\"\n",
            self.name
        )
    }

    /// (ready messages, consumers) of `queue`, or `None` when it does not exist. A passive
    /// declare of a missing queue closes its channel, so each look uses a channel of its own.
    async fn look(&self, queue: &str) -> Option<(u32, u32)> {
        let channel = self.connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .ok()
            .map(|q| (q.message_count(), q.consumer_count()));
        if found.is_some() {
            let _ = channel.close(200, "looked".into()).await;
        }
        found
    }

    /// Messages ready in the queue (not counting those a consumer holds) and its consumers.
    pub async fn depth(&self) -> (u32, u32) {
        self.look(&self.name)
            .await
            .unwrap_or_else(|| panic!("queue {} does not exist", self.name))
    }

    /// Waits until the service has declared the queue and subscribed to it.
    pub async fn wait_consumed(&self) {
        eventually(&format!("a consumer on {}", self.name), async || {
            self.look(&self.name).await.filter(|(_, c)| *c > 0)
        })
        .await;
    }

    /// Waits until nobody consumes the queue (the broker noticed the consumer is gone).
    pub async fn wait_unconsumed(&self) -> u32 {
        eventually(&format!("no consumer on {}", self.name), async || {
            self.look(&self.name)
                .await
                .filter(|(_, c)| *c == 0)
                .map(|(ready, _)| ready)
        })
        .await
    }

    /// Publishes persistent messages to the queue (default exchange) and waits for the
    /// broker's confirm of every one: they are all in the queue, in this order.
    pub async fn publish(&self, messages: &[Message]) {
        for chunk in messages.chunks(1000) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for m in chunk {
                let mut properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into());
                if let Some(id) = &m.message_id {
                    properties = properties.with_message_id(id.as_str().into());
                }
                let confirm = self
                    .channel
                    .basic_publish(
                        "".into(),
                        self.name.as_str().into(),
                        BasicPublishOptions::default(),
                        &m.body,
                        properties,
                    )
                    .await
                    .expect("the test publishes");
                confirms.push(confirm);
            }
            for c in confirms {
                assert!(
                    matches!(c.await, Ok(Confirmation::Ack(_))),
                    "the broker confirms every test message"
                );
            }
        }
    }

    /// Waits until the queue holds no message at all, neither ready nor held unacknowledged
    /// by a consumer: every message published so far was acknowledged.
    pub async fn wait_acknowledged(&self) {
        eventually(
            &format!("every message of {} acknowledged", self.name),
            async || (messages_in(&self.name).await == Some(0)).then_some(()),
        )
        .await;
    }

    /// Takes every message in `<queue>.dead`.
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        let mut out = Vec::new();
        while let Some(m) = self
            .channel
            .basic_get(
                self.dead().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("the dead-letter queue exists")
        {
            let headers = m
                .delivery
                .properties
                .headers()
                .as_ref()
                .map(|h| {
                    h.inner()
                        .iter()
                        .filter_map(|(k, v)| match v {
                            AMQPValue::LongString(s) => Some((k.to_string(), s.to_string())),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(DeadLetter {
                body: m.delivery.data.clone(),
                message_id: m
                    .delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.to_string()),
                headers,
            });
        }
        out
    }

    /// Deletes the dead-letter queue only, as an operator might by mistake.
    pub async fn delete_dead_letter_queue(&self) {
        self.channel
            .queue_delete(self.dead().as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("the dead-letter queue is deleted");
    }

    /// Deletes the queue, its dead-letter queue and exchange. Stop the service first, or it
    /// declares them again.
    pub async fn delete(mut self) {
        delete_topology(&self.channel, &self.name).await;
        self.deleted = true;
    }
}

async fn delete_topology(channel: &Channel, queue: &str) {
    let dead = format!("{queue}.dead");
    for q in [queue, dead.as_str()] {
        let _ = channel
            .queue_delete(q.into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = channel
        .exchange_delete(dead.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}

impl Drop for InboundQueue {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // A test that failed before `delete`: clean up on a runtime of our own.
        let queue = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
                if let Ok(c) = Connection::connect(url, ConnectionProperties::default()).await {
                    if let Ok(channel) = c.create_channel().await {
                        delete_topology(&channel, &queue).await;
                    }
                }
            });
        })
        .join();
    }
}

/// Runs `rabbitmqctl` (the broker's own tool) and returns its output; never changes the
/// broker's configuration.
pub async fn rabbitmqctl(args: &[&str]) -> String {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("rabbitmqctl")
            .arg("-q")
            .args(&owned)
            .output()
    })
    .await
    .expect("the rabbitmqctl task")
    .unwrap_or_else(|e| panic!("rabbitmqctl runs ({e}); these tests need the broker's CLI"));
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Messages in `queue`, ready or held unacknowledged (`None` if there is no such queue).
pub async fn messages_in(queue: &str) -> Option<u64> {
    let listing = rabbitmqctl(&["list_queues", "name", "messages", "--no-table-headers"]).await;
    listing.lines().find_map(|line| {
        let (name, count) = line.split_once('\t')?;
        (name == queue).then(|| count.trim().parse().expect("a message count"))
    })
}

/// The broker's ids of the service's connections that consume `queue` (named after it).
pub async fn consumer_connections(queue: &str) -> Vec<String> {
    let name = format!("inbound {queue}\"");
    rabbitmqctl(&[
        "list_connections",
        "pid",
        "client_properties",
        "--no-table-headers",
    ])
    .await
    .lines()
    .filter(|line| line.contains(&name))
    .filter_map(|line| line.split('\t').next().map(str::to_owned))
    .collect()
}

/// Closes one connection from the broker's side, as a broker restart or an operator would.
pub async fn close_from_the_broker(connection: &str) {
    rabbitmqctl(&["close_connection", connection, "closed by the inbound test"]).await;
}

/// Waits until the service has a consuming connection other than `old`; returns it.
pub async fn reconnected(queue: &str, old: &str) -> String {
    eventually("the service's new connection to the broker", async || {
        consumer_connections(queue)
            .await
            .into_iter()
            .find(|c| c != old)
    })
    .await
}
