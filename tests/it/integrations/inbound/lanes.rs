//! Per-transaction order does not rest on the store answering in the order it was asked: the
//! consumer runs against the real broker with a stand-in writer that finishes each write after
//! a random pause. Many writes must be in flight at once (what lets the real writer
//! group-commit them), never two of one transaction, and each transaction's writes must start
//! in queue order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gbds_notifier::config::{AmqpInboundSettings, Secret};
use gbds_notifier::inbound::{Command, ConsumerState, Inbound, Writer};
use gbds_notifier::store::WriteError;
use serde_json::json;

use super::interleave;
use super::queue::{InboundQueue, Message};
use crate::harness::eventually;

/// Records which writes of each transaction began, in order, and how many ran at once.
#[derive(Default)]
struct SlowWriter {
    began: Mutex<HashMap<String, Vec<String>>>,
    running: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    overlaps: AtomicUsize,
    finished: AtomicUsize,
}

impl Writer for SlowWriter {
    fn write<'a>(
        &'a self,
        command: &'a Command,
        _actor: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, WriteError>> + Send + 'a>>
    {
        Box::pin(async move {
            let tguid = command.tguid().as_str().to_owned();
            let what = match command {
                Command::Register { .. } => "register".to_owned(),
                Command::Event(request) => request.event_id.clone().unwrap().0,
            };
            self.began
                .lock()
                .unwrap()
                .entry(tguid.clone())
                .or_default()
                .push(what);
            {
                let mut running = self.running.lock().unwrap();
                let n = running.entry(tguid.clone()).or_default();
                *n += 1;
                if *n > 1 {
                    self.overlaps.fetch_add(1, Ordering::SeqCst);
                }
            }
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..20))).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            *self.running.lock().unwrap().get_mut(&tguid).unwrap() -= 1;
            self.finished.fetch_add(1, Ordering::SeqCst);
            Ok(false)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writes_are_in_flight_but_one_transactions_run_one_at_a_time_in_queue_order() {
    let queue = InboundQueue::new().await;
    let writer = Arc::new(SlowWriter::default());
    let inbound = Inbound::start_with(
        AmqpInboundSettings {
            url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            queue: queue.name.clone(),
            prefetch: 256,
        },
        writer.clone(),
    );
    let mut state = inbound.state();
    tokio::time::timeout(
        crate::harness::DEADLINE,
        state.wait_for(|s| *s == ConsumerState::Consuming),
    )
    .await
    .expect("the consumer subscribes")
    .unwrap();

    let mut flows = Vec::new();
    let mut want: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..150 {
        let tguid = format!("tg-lane-{i}");
        let mut messages = vec![Message::register(&tguid, "ENROLL")];
        for k in 1..=5 {
            messages.push(Message::event(
                &tguid,
                &json!({"type": "REVERSE_LATENT_MATCH", "uguid": format!("ul-{k}")}),
            ));
        }
        let mut order = vec!["register".to_owned()];
        order.extend(messages[1..].iter().map(|m| m.message_id.clone().unwrap()));
        want.insert(tguid.clone(), order);
        flows.push((tguid, messages));
    }
    let messages = interleave(&flows);
    queue.publish(&messages).await;
    eventually("every write finished", async || {
        (writer.finished.load(Ordering::SeqCst) == messages.len()).then_some(())
    })
    .await;
    queue.wait_acknowledged().await;

    let most = writer.most_in_flight.load(Ordering::SeqCst);
    println!(
        "inbound lanes: {} messages, at most {most} writes in flight",
        messages.len()
    );
    assert_eq!(
        writer.overlaps.load(Ordering::SeqCst),
        0,
        "two writes of one transaction ran at once"
    );
    assert_eq!(
        *writer.began.lock().unwrap(),
        want,
        "queue order per transaction"
    );
    assert!(
        most >= 32,
        "only {most} writes in flight: too few for the writer to group-commit"
    );
    let stats = inbound.stats();
    assert_eq!(
        stats.applied.load(Ordering::SeqCst) as usize,
        messages.len()
    );
    inbound.stop().await;
    assert_eq!(*state.borrow_and_update(), ConsumerState::Stopped);
    queue.delete().await;
}
