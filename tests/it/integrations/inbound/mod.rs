//! Outcomes over RabbitMQ (CONTRACT §8) against the real broker on 127.0.0.1:5672, each test
//! on a queue of its own: the document's flows published as messages give their exact
//! notification sequences; refused messages are dead-lettered with the REST error code of the
//! same mistake and change nothing; one transaction's messages take effect in queue order
//! while many are in flight; a second instance waits while the first consumes; a connection
//! closed by the broker mid-stream is recovered by itself. `lanes` checks the order against a
//! writer that answers out of order, `process` has the tests on the real binary (kill -9, a
//! store that fails), `bench` the benchmark run by hand.

mod bench;
mod lanes;
mod process;
mod queue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{eventually, Call, Proxy, Received, Scenario, Setup, TestApp, INGEST, REVIEW};
use queue::{
    close_from_the_broker, consumer_connections, rabbitmqctl, reconnected, InboundQueue, Message,
};

/// A service (notifying its receiver) that consumes `queue`, once it has subscribed.
async fn consuming(queue: &InboundQueue, extra_toml: &str) -> TestApp {
    let app = Setup::new(&queue.config()).and(extra_toml).start().await;
    queue.wait_consumed().await;
    app
}

/// The messages of a back office reporting each flow, interleaved round-robin so that many
/// transactions are in flight at once while each one's messages keep their order.
fn interleave(flows: &[(String, Vec<Message>)]) -> Vec<Message> {
    let longest = flows.iter().map(|(_, m)| m.len()).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| flows.iter().filter_map(move |(_, m)| m.get(i).cloned()))
        .collect()
}

fn tguid_of(r: &Received) -> String {
    r.tguid().unwrap_or_default()
}

/// What arrived, as each transaction's bodies in arrival order.
fn by_tguid(got: &[Received]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in got {
        out.entry(tguid_of(r)).or_default().push(r.text());
    }
    out
}

/// The flows of the document (fixtures/scenarios) made only of a registration and events,
/// whose configuration labels updates `update_operation`.
fn event_flows(update_operation: &str) -> Vec<Scenario> {
    Scenario::all()
        .into_iter()
        .filter(|s| s.update_operation() == update_operation)
        .filter(|s| s.steps.iter().all(|step| matches!(step.call, Call::Event)))
        .collect()
}

async fn every_event_flow_labelled(update_operation: &str) {
    let scenarios = event_flows(update_operation);
    assert!(
        scenarios.len() >= 2,
        "{update_operation}: {}",
        scenarios.len()
    );
    let queue = InboundQueue::new().await;
    let app = consuming(
        &queue,
        &format!("[notifications]\nupdate_operation = \"{update_operation}\"\n"),
    )
    .await;
    let receiver = &app.receiver;
    let listing = rabbitmqctl(&[
        "list_queues",
        "name",
        "durable",
        "arguments",
        "--no-table-headers",
    ])
    .await;
    let declared = listing
        .lines()
        .find(|l| l.starts_with(&format!("{}\t", queue.name)))
        .unwrap_or_else(|| panic!("{} is not listed:\n{listing}", queue.name));
    assert!(declared.contains("\ttrue\t"), "durable: {declared}");
    assert!(
        declared.contains(r#"{"x-single-active-consumer",true}"#),
        "{declared}"
    );
    assert!(
        declared.contains(&format!(
            r#"{{"x-dead-letter-exchange","{}"}}"#,
            queue.dead()
        )),
        "{declared}"
    );

    let flows: Vec<(String, Vec<Message>)> = scenarios
        .iter()
        .map(|s| {
            let tguid = format!("tg-{}", s.name);
            let mut messages = vec![Message::register(&tguid, &s.operation)];
            messages.extend(s.steps.iter().map(|st| Message::event(&tguid, &st.body)));
            (tguid, messages)
        })
        .collect();
    let messages = interleave(&flows);
    queue.publish(&messages).await;

    let want: HashMap<String, Vec<String>> = scenarios
        .iter()
        .map(|s| {
            let tguid = format!("tg-{}", s.name);
            let bodies = s.expected(&tguid);
            (tguid, bodies)
        })
        .filter(|(_, bodies)| !bodies.is_empty())
        .collect();
    let total: usize = want.values().map(Vec::len).sum();
    let got = receiver.settled_at(total).await;
    assert_eq!(got.len(), total, "every notification once");
    assert_eq!(by_tguid(&got), want);
    queue.wait_acknowledged().await;

    // The transition log names the queue as the actor, and each event's message_id as its
    // event_id.
    let transitions_of = async |tguid: &str| -> Vec<Value> {
        let detail = app
            .api
            .get(&format!("/v1/transactions/{tguid}"), Some(REVIEW))
            .await
            .ok(200);
        detail["transitions"].as_array().unwrap().clone()
    };
    let actor = format!("amqp:{}", queue.name);
    for (tguid, sent) in &flows {
        let transitions = transitions_of(tguid).await;
        assert_eq!(transitions.len(), sent.len(), "{tguid}: {transitions:?}");
        assert!(transitions.iter().all(|t| t["actor"] == actor.as_str()));
        let event_ids: Vec<&str> = transitions[1..]
            .iter()
            .map(|t| t["event_id"].as_str().unwrap())
            .collect();
        let message_ids: Vec<&str> = sent[1..]
            .iter()
            .map(|m| m.message_id.as_deref().unwrap())
            .collect();
        assert_eq!(event_ids, message_ids, "{tguid}");
    }

    // Everything delivered again (as the broker redelivers after a crash): every message is
    // applied as a no-op and acknowledged; nothing is recorded, sent or dead-lettered.
    queue.publish(&messages).await;
    queue.wait_acknowledged().await;
    let (feed, _) = app.api.feed_from("0", 1000).await;
    assert_eq!(feed.len(), total, "no notification recorded twice");
    for (tguid, sent) in &flows {
        assert_eq!(transitions_of(tguid).await.len(), sent.len(), "{tguid}");
    }
    receiver.assert_quiet().await;
    assert_eq!(receiver.all().len(), total, "nothing sent again");
    assert!(queue.dead_letters().await.is_empty());

    app.stop().await;
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_register_and_event_flow_of_the_document_published_as_messages_notifies_exactly() {
    every_event_flow_labelled("ENROLL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flows_published_as_messages_notify_exactly_with_updates_labelled_update() {
    every_event_flow_labelled("UPDATE").await;
}

/// A refused message, the code it must be dead-lettered with, and the REST call that makes
/// the same mistake (path and raw body), when there is one.
struct Refused {
    name: &'static str,
    message: Message,
    code: &'static str,
    rest: Option<(&'static str, String)>,
}

fn refused_messages() -> Vec<Refused> {
    let event = |body: &Value| Message::event("tg-bad", body);
    let rest_event = |body: &str| Some(("/v1/transactions/tg-bad/events", body.to_owned()));
    let register = |tguid: &str, op: &str| Message::register(tguid, op);
    let rest_register = |tguid: &str, op: &str| {
        Some((
            "/v1/transactions",
            json!({"tguid": tguid, "operation": op}).to_string(),
        ))
    };
    let pad = "x".repeat(2 * 1024 * 1024);
    // tg-reuse took a latent match as event e-2; it stays PROCESSING, where another latent
    // match would be valid, so only the reused id refuses these.
    let latent = |uguid: &str| json!({"type": "REVERSE_LATENT_MATCH", "uguid": uguid});
    let mut reused = latent("ul-2");
    reused["event_id"] = json!("e-2");
    let mut reused_by_message_id = Message::event("tg-reuse", &latent("ul-3"));
    reused_by_message_id.message_id = Some("e-2".into());
    let rest_reuse = |uguid: &str| {
        let body = json!({"type": "REVERSE_LATENT_MATCH", "uguid": uguid, "event_id": "e-2"});
        Some(("/v1/transactions/tg-reuse/events", body.to_string()))
    };
    vec![
        Refused {
            name: "not JSON",
            message: Message::raw(r#"{"action":"event","tguid":"tg-bad","#),
            code: "malformed_json",
            rest: rest_event(r#"{"action":"event","tguid":"tg-bad","#),
        },
        Refused {
            name: "not an object",
            message: Message::raw(r#"["register","tg-bad"]"#),
            code: "invalid_request",
            rest: Some(("/v1/transactions", r#"["register","tg-bad"]"#.into())),
        },
        Refused {
            name: "no action",
            message: Message::raw(r#"{"tguid":"tg-bad","type":"ENROLLED"}"#),
            code: "invalid_request",
            rest: None,
        },
        Refused {
            name: "unknown action",
            message: Message::raw(r#"{"action":"explode","tguid":"tg-bad"}"#),
            code: "invalid_request",
            rest: None,
        },
        Refused {
            name: "event without a tguid",
            message: Message::raw(r#"{"action":"event","type":"ENROLLED"}"#),
            code: "invalid_request",
            rest: None,
        },
        Refused {
            name: "duplicate key",
            message: Message::raw(
                r#"{"action":"event","tguid":"tg-bad","type":"FAILED","type":"ENROLLED"}"#,
            ),
            code: "invalid_request",
            rest: rest_event(r#"{"type":"FAILED","type":"ENROLLED"}"#),
        },
        Refused {
            name: "unknown field",
            message: event(&json!({"type": "ENROLLED", "color": "red"})),
            code: "invalid_request",
            rest: rest_event(r#"{"type":"ENROLLED","color":"red"}"#),
        },
        Refused {
            name: "unknown operation",
            message: register("tg-new", "DELETE"),
            code: "invalid_request",
            rest: rest_register("tg-new", "DELETE"),
        },
        Refused {
            name: "unknown event type",
            message: event(&json!({"type": "EXPLODED"})),
            code: "invalid_request",
            rest: rest_event(r#"{"type":"EXPLODED"}"#),
        },
        Refused {
            name: "malformed tguid",
            message: register("has space", "ENROLL"),
            code: "invalid_request",
            rest: rest_register("has space", "ENROLL"),
        },
        Refused {
            name: "latent match without a uguid",
            message: event(&json!({"type": "REVERSE_LATENT_MATCH"})),
            code: "invalid_request",
            rest: rest_event(r#"{"type":"REVERSE_LATENT_MATCH"}"#),
        },
        Refused {
            name: "uguid on another type",
            message: event(&json!({"type": "FAILED", "uguid": "ul-1"})),
            code: "invalid_request",
            rest: rest_event(r#"{"type":"FAILED","uguid":"ul-1"}"#),
        },
        Refused {
            name: "body over 2 MB",
            message: Message::raw(
                json!({"action": "register", "tguid": "tg-big", "operation": "ENROLL", "pad": pad})
                    .to_string(),
            ),
            code: "payload_too_large",
            rest: Some((
                "/v1/transactions",
                json!({"tguid": "tg-big", "operation": "ENROLL", "pad": pad}).to_string(),
            )),
        },
        Refused {
            name: "unknown tguid",
            message: Message::event("tg-nope", &json!({"type": "ENROLLED"})),
            code: "not_found",
            rest: Some((
                "/v1/transactions/tg-nope/events",
                r#"{"type":"ENROLLED"}"#.into(),
            )),
        },
        Refused {
            name: "invalid transition",
            message: event(&json!({"type": "MATCH"})),
            code: "invalid_transition",
            rest: rest_event(r#"{"type":"MATCH"}"#),
        },
        Refused {
            name: "registered before with another operation",
            message: register("tg-bad", "SEARCH"),
            code: "operation_conflict",
            rest: rest_register("tg-bad", "SEARCH"),
        },
        Refused {
            name: "event_id reused with another body",
            message: Message::event("tg-reuse", &reused),
            code: "event_id_reused",
            rest: rest_reuse("ul-2"),
        },
        Refused {
            name: "message_id reused as an event_id with another body",
            message: reused_by_message_id,
            code: "event_id_reused",
            rest: rest_reuse("ul-3"),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refused_message_is_dead_lettered_with_the_code_rest_gives_the_same_mistake_and_changes_nothing(
) {
    let queue = InboundQueue::new().await;
    let app = consuming(&queue, "").await;
    let receiver = &app.receiver;

    // tg-bad is an ENROLL sent to review, tg-reuse one that took a latent match as event
    // e-2; the refusals come after, then a flow that must still go through.
    let cases = refused_messages();
    let mut messages = vec![
        Message::register("tg-bad", "ENROLL"),
        Message::event("tg-bad", &json!({"type": "PENDING"})),
        Message::register("tg-reuse", "ENROLL"),
        Message::event(
            "tg-reuse",
            &json!({"type": "REVERSE_LATENT_MATCH", "uguid": "ul-1", "event_id": "e-2"}),
        ),
    ];
    messages.extend(cases.iter().map(|c| c.message.clone()));
    messages.push(Message::register("tg-after", "SEARCH"));
    // Without a message_id (nor an event_id) an event is applied all the same.
    messages.push(Message::event("tg-after", &json!({"type": "MATCH"})).without_message_id());
    queue.publish(&messages).await;

    let mut dead = Vec::new();
    eventually(&format!("{} dead letters", cases.len()), async || {
        dead.extend(queue.dead_letters().await);
        (dead.len() >= cases.len()).then_some(())
    })
    .await;
    queue.wait_acknowledged().await;
    dead.extend(queue.dead_letters().await);
    assert_eq!(
        dead.len(),
        cases.len(),
        "each refused message dead-lettered once"
    );

    let mut table = String::new();
    for case in &cases {
        let letter = dead
            .iter()
            .find(|d| d.message_id == case.message.message_id)
            .unwrap_or_else(|| panic!("{}: not dead-lettered", case.name));
        assert_eq!(
            letter.body, case.message.body,
            "{}: the body as sent",
            case.name
        );
        assert_eq!(letter.header("x-gbds-error"), case.code, "{}", case.name);
        let says = letter.header("x-gbds-message");
        assert!(!says.trim().is_empty(), "{}", case.name);
        if let Some((path, body)) = &case.rest {
            let bearer = format!("Bearer {INGEST}");
            let answer = app
                .api
                .send("POST", path, Some(&bearer), Some(body.clone().into_bytes()))
                .await;
            let rest_code = answer.json()["error"].as_str().unwrap().to_owned();
            assert_eq!(
                rest_code, case.code,
                "{}: REST answers the same mistake",
                case.name
            );
        }
        table.push_str(&format!("{:<52} {:<18} {says}\n", case.name, case.code));
    }
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => "each refused inbound message: x-gbds-error, then x-gbds-message",
    }, {
        insta::assert_snapshot!("inbound_dead_letters", table);
    });

    // Nothing changed: tg-bad and tg-reuse are as their two transitions left them, and the
    // only notifications are theirs and tg-after's.
    let got = receiver.settled_at(3).await;
    let mut texts: Vec<String> = got.iter().map(Received::text).collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            r#"{"operation":"ENROLL","tguid":"tg-bad","status":"PENDING"}"#,
            r#"{"operation":"ENROLL","tguid":"tg-reuse","status":"REVERSE_LATENT_MATCH","uguid":"ul-1"}"#,
            r#"{"operation":"SEARCH","tguid":"tg-after","status":"MATCH"}"#,
        ]
    );
    for (tguid, state) in [("tg-bad", "PENDING"), ("tg-reuse", "PROCESSING")] {
        let detail = app
            .api
            .get(&format!("/v1/transactions/{tguid}"), Some(REVIEW))
            .await
            .ok(200);
        assert_eq!(detail["state"], state);
        assert_eq!(
            detail["transitions"].as_array().unwrap().len(),
            2,
            "{tguid}"
        );
    }
    for tguid in ["tg-new", "tg-nope", "tg-big"] {
        app.api
            .get(&format!("/v1/transactions/{tguid}"), Some(REVIEW))
            .await
            .refused(404, "not_found");
    }
    assert_eq!(queue.depth().await.0, 0, "nothing requeued");

    app.stop().await;
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_never_lost_when_its_dead_letter_queue_was_deleted() {
    let queue = InboundQueue::new().await;
    let app = consuming(&queue, "").await;
    let before = eventually("the service's connection", async || {
        consumer_connections(&queue.name).await.into_iter().next()
    })
    .await;

    // Nothing is bound to <queue>.dead now: the broker returns the dead letter, the consumer
    // keeps the message, connects again and declares the topology again.
    queue.delete_dead_letter_queue().await;
    let refused = Message::event("tg-unknown", &json!({"type": "MATCH"}));
    queue.publish(std::slice::from_ref(&refused)).await;
    reconnected(&queue.name, &before).await;
    let mut dead = Vec::new();
    eventually("the dead letter", async || {
        dead.extend(queue.dead_letters().await);
        (!dead.is_empty()).then_some(())
    })
    .await;
    queue.wait_acknowledged().await;
    dead.extend(queue.dead_letters().await);
    assert_eq!(dead.len(), 1, "dead-lettered once");
    assert_eq!(dead[0].message_id, refused.message_id);
    assert_eq!(dead[0].header("x-gbds-error"), "not_found");
    app.stop().await;
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_one_transaction_take_effect_in_queue_order_while_many_are_in_flight() {
    let queue = InboundQueue::new().await;
    let app = consuming(&queue, "").await;
    let receiver = &app.receiver;

    // 150 transactions of 8 messages each, interleaved: the consumer holds up to its prefetch
    // (256) at once, so every transaction has several messages in hand together.
    let mut flows = Vec::new();
    let mut want: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..150 {
        let tguid = format!("tg-order-{i}");
        let mut messages = vec![Message::register(&tguid, "ENROLL")];
        let mut bodies = Vec::new();
        for k in 1..=6 {
            let uguid = format!("ul-{k}");
            messages.push(Message::event(
                &tguid,
                &json!({"type": "REVERSE_LATENT_MATCH", "uguid": uguid}),
            ));
            bodies.push(format!(
                r#"{{"operation":"ENROLL","tguid":"{tguid}","status":"REVERSE_LATENT_MATCH","uguid":"{uguid}"}}"#
            ));
        }
        messages.push(Message::event(&tguid, &json!({"type": "ENROLLED"})));
        bodies.push(format!(
            r#"{{"operation":"ENROLL","tguid":"{tguid}","status":"ENROLLED"}}"#
        ));
        want.insert(tguid.clone(), bodies);
        flows.push((tguid, messages));
    }
    queue.publish(&interleave(&flows)).await;
    let total: usize = want.values().map(Vec::len).sum();
    let got = receiver.settled_at(total).await;
    assert_eq!(got.len(), total);
    assert_eq!(
        by_tguid(&got),
        want,
        "each transaction's notifications in queue order"
    );
    queue.wait_acknowledged().await;
    assert!(queue.dead_letters().await.is_empty());
    app.stop().await;
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_instances_one_consumes_and_the_other_takes_over_when_it_stops() {
    let queue = InboundQueue::new().await;
    let first = consuming(&queue, "").await;
    let second = Setup::new(&queue.config()).start().await;
    eventually("two consumers subscribed", async || {
        (queue.depth().await.1 == 2).then_some(())
    })
    .await;

    let flow = |tguid: &str| {
        vec![
            Message::register(tguid, "SEARCH"),
            Message::event(tguid, &json!({"type": "NOT_MATCH"})),
        ]
    };
    let batch: Vec<Message> = (0..20).flat_map(|i| flow(&format!("tg-a-{i}"))).collect();
    queue.publish(&batch).await;
    assert_eq!(first.receiver.settled_at(20).await.len(), 20);
    assert!(
        second.receiver.all().is_empty(),
        "the waiting instance got nothing"
    );

    first.stop().await;
    let batch: Vec<Message> = (0..20).flat_map(|i| flow(&format!("tg-b-{i}"))).collect();
    queue.publish(&batch).await;
    let got = second.receiver.settled_at(20).await;
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|r| tguid_of(r).starts_with("tg-b-")));
    queue.wait_acknowledged().await;
    second.stop().await;
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_unreachable_at_start_is_tried_again_until_it_answers() {
    let queue = InboundQueue::new().await;
    let mut proxy = Proxy::closed();
    let app = Setup::new(&queue.config_through(&proxy.url()))
        .start()
        .await;
    let receiver = &app.receiver;
    // The API serves while the consumer cannot connect.
    app.api.get("/healthz", Some(REVIEW)).await.ok(200);
    proxy.open().await;
    queue.wait_consumed().await;
    queue
        .publish(&[
            Message::register("tg-late", "SEARCH"),
            Message::event("tg-late", &json!({"type": "NOT_MATCH"})),
        ])
        .await;
    let got = receiver.settled_at(1).await;
    assert_eq!(
        got[0].text(),
        r#"{"operation":"SEARCH","tguid":"tg-late","status":"NOT_MATCH"}"#
    );
    queue.wait_acknowledged().await;
    app.stop().await;
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_broker_mid_stream_is_recovered_and_nothing_is_lost() {
    let queue = InboundQueue::new().await;
    let app = consuming(&queue, "").await;
    let receiver = &app.receiver;
    let before = eventually("the service's connection", async || {
        consumer_connections(&queue.name).await.into_iter().next()
    })
    .await;

    // The stream keeps flowing until the close has landed: a publisher keeps about `BACKLOG`
    // flows ahead of what was notified, so however fast this machine consumes, the broker
    // holds messages for the consumer when it closes the link (a fixed batch could be all
    // consumed before `rabbitmqctl` gets to it on a fast machine).
    const BATCH: usize = 100;
    const BACKLOG: usize = 400;
    let closed = AtomicBool::new(false);
    let publisher = async {
        let mut published = 0;
        while !closed.load(Ordering::SeqCst) {
            if published >= receiver.all().len() + BACKLOG {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let batch: Vec<Message> = (published..published + BATCH)
                .flat_map(|i| {
                    let tguid = format!("tg-close-{i}");
                    [
                        Message::register(&tguid, "SEARCH"),
                        Message::event(&tguid, &json!({"type": "MATCH"})),
                    ]
                })
                .collect();
            queue.publish(&batch).await;
            published += BATCH;
        }
        published
    };
    let closer = async {
        eventually("the first notifications", async || {
            (!receiver.all().is_empty()).then_some(())
        })
        .await;
        close_from_the_broker(&before).await;
        // Mid-stream: the broker still held messages for the consumer when it closed the link.
        let (left, _) = queue.depth().await;
        closed.store(true, Ordering::SeqCst);
        left
    };
    let (n, left) = tokio::join!(publisher, closer);
    assert!(left > 0, "the close landed after the stream ({left} left)");
    let after = reconnected(&queue.name, &before).await;
    assert_ne!(after, before);

    let got = receiver.settled_at(n).await;
    let mut tguids: Vec<String> = got.iter().map(tguid_of).collect();
    tguids.sort();
    tguids.dedup();
    assert_eq!(tguids.len(), n, "every flow notified");
    assert_eq!(
        got.len(),
        n,
        "each once: the store applied every message once"
    );
    queue.wait_acknowledged().await;
    assert!(
        queue.dead_letters().await.is_empty(),
        "no redelivery refused"
    );
    app.stop().await;
    queue.delete().await;
}
