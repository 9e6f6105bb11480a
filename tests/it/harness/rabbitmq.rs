//! RabbitMQ for the tests: the real broker on 127.0.0.1:5672 (`broker_url`), a queue of the
//! test's own bound to the exchange under test as a consumer would bind theirs (`TestQueue`),
//! and a TCP proxy to the broker that the test opens and cuts (`Proxy`), so that outages never
//! touch the broker itself.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::net::TcpListener;

use super::{free_port, Api, DEADLINE};

/// The broker every test uses (guest/guest on the default vhost).
pub const BROKER: &str = "127.0.0.1:5672";

/// The broker's AMQP URL, once it answers on 127.0.0.1:5672. When nothing listens there, tries
/// `rabbitmq-server -detached` and waits up to 60 s; the broker is never stopped or changed.
pub async fn broker_url() -> String {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let up = || {
            std::net::TcpStream::connect_timeout(&BROKER.parse().unwrap(), Duration::from_secs(1))
                .is_ok()
        };
        if up() {
            return Ok(());
        }
        let started = std::process::Command::new("rabbitmq-server")
            .arg("-detached")
            .status();
        if let Err(e) = started {
            return Err(format!(
                "RabbitMQ is not listening on {BROKER} and `rabbitmq-server -detached` failed ({e}); \
                 install and start it (apt-get install rabbitmq-server)"
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if up() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!(
            "RabbitMQ did not come up on {BROKER} within 60 s of `rabbitmq-server -detached`"
        ))
    });
    if let Err(why) = checked {
        panic!("{why}");
    }
    format!("amqp://guest:guest@{BROKER}/%2f")
}

/// A name no other test (or run) uses, for exchanges.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}.{}.{:08x}", std::process::id(), fastrand::u32(..))
}

/// One message as a consumer of our test queue read it.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl Consumed {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    pub fn correlation_id(&self) -> String {
        self.properties
            .correlation_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default()
    }
    pub fn message_id(&self) -> String {
        self.properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default()
    }
}

/// An exclusive, auto-deleted queue of the test's own, bound to `exchange` with a pattern, as
/// a consumer would bind theirs. Deletes the exchange (the test's own) when dropped.
pub struct TestQueue {
    _connection: Connection,
    channel: Channel,
    queue: String,
    exchange: String,
    got: Vec<Consumed>,
}

impl TestQueue {
    /// Declares `exchange` as the service does (durable topic) and binds a new queue to it.
    pub async fn bind(exchange: &str, pattern: &str) -> TestQueue {
        let connection = Connection::connect(&broker_url().await, ConnectionProperties::default())
            .await
            .expect("the test connects to RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = queue.name().to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        TestQueue {
            _connection: connection,
            channel,
            queue,
            exchange: exchange.to_owned(),
            got: Vec::new(),
        }
    }

    /// Takes whatever is in the queue now.
    async fn pull(&mut self) {
        while let Some(m) = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            self.got.push(Consumed {
                routing_key: m.delivery.routing_key.to_string(),
                properties: m.delivery.properties.clone(),
                body: m.delivery.data.clone(),
            });
        }
    }

    /// Waits until at least `n` messages were read and `service` has nothing left to publish
    /// (a sink's delivery is done only once the broker confirmed the message), then takes what
    /// else is in the queue.
    pub async fn wait_for(&mut self, service: &Api, n: usize) -> Vec<Consumed> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.pull().await;
            if self.got.len() >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {n} messages on {}; got {}",
                self.exchange,
                self.got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        service.settled().await;
        self.pull().await;
        self.got.clone()
    }

    /// What was read so far, after a last look.
    pub async fn now(&mut self) -> Vec<Consumed> {
        self.pull().await;
        self.got.clone()
    }

    /// Deletes the test's exchange (its queue goes with the connection).
    pub async fn delete_exchange(&self) {
        let _ = self
            .channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
}

/// A TCP proxy to a server (the broker, or PostgreSQL) on a port of its own, which the test
/// opens and cuts: the service's connection to "the server" fails while the server itself is
/// left alone.
pub struct Proxy {
    pub port: u16,
    /// Where it forwards to.
    target: &'static str,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// A port nobody listens on yet, to the broker; the sink pointed there is refused until
    /// `open`.
    pub fn closed() -> Proxy {
        Proxy::closed_to(BROKER)
    }

    /// A port nobody listens on yet, forwarding to `target` once open.
    pub fn closed_to(target: &'static str) -> Proxy {
        Proxy {
            port: free_port(),
            target,
            task: None,
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts forwarding connections on the port to its target.
    pub async fn open(&mut self) {
        assert!(self.task.is_none(), "the proxy is already open");
        if self.target == BROKER {
            broker_url().await;
        }
        let target = self.target;
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the proxy port is free again");
        self.task = Some(tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                links.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Stops listening and drops every forwarded connection: aborting the task drops its
    /// JoinSet, which aborts every link. Only ours: the broker runs on.
    pub async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
