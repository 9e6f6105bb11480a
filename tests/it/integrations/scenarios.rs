//! Every document scenario (fixtures/scenarios) through the RabbitMQ sink and a CloudEvents
//! endpoint at once. Checked exactly: a queue bound to `gbds.enroll.*` receives exactly the
//! ENROLL sequences, in order; a queue bound to `gbds.#` every message with its routing key and
//! properties; the CloudEvents endpoint valid events whose `data` is the exact body. Each
//! scenario's renderings are also snapshotted (`snapshots/<name>.snap`) for a person to read
//! next to the document: the AMQP routing keys and bodies, and the CloudEvents as sent (only
//! the per-run `id` and `time` replaced).

use serde::Deserialize;

use crate::harness::{
    broker_url, operation_status, unique, Consumed, FeedItem, Received, Receiver, Scenario,
    TestQueue,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Deserialize)]
struct EventHead {
    id: String,
    time: String,
    subject: String,
    data: Box<serde_json::value::RawValue>,
}

/// Runs every scenario whose configuration labels updates `update_operation`, checks what
/// arrived and snapshots it.
async fn every_scenario_labelled(update_operation: &str) {
    let scenarios: Vec<Scenario> = Scenario::all()
        .into_iter()
        .filter(|s| s.update_operation() == update_operation)
        .collect();
    assert!(!scenarios.is_empty());
    let exchange = unique("gbds.test.scenarios");
    let mut all = TestQueue::bind(&exchange, "gbds.#").await;
    let mut enroll = TestQueue::bind(&exchange, "gbds.enroll.*").await;
    let ce = Receiver::start().await;
    let app = super::start(&format!(
        r#"
[notifications]
update_operation = "{update_operation}"

[amqp]
enabled = true
url = "{}"
exchange = "{exchange}"

[[endpoints]]
id = "ce"
url = "{}"
secret = "{SECRET}"
format = "cloudevents"
"#,
        broker_url().await,
        ce.url
    ))
    .await;

    for s in &scenarios {
        s.run(&app.api, &format!("tg-{}", s.name)).await;
    }
    let expected: Vec<(String, Vec<String>)> = scenarios
        .iter()
        .map(|s| {
            let tguid = format!("tg-{}", s.name);
            let bodies = s.expected(&tguid);
            (tguid, bodies)
        })
        .collect();
    let total: usize = expected.iter().map(|(_, b)| b.len()).sum();
    let enroll_total = expected
        .iter()
        .flat_map(|(_, b)| b)
        .filter(|b| operation_status(b).0 == "ENROLL")
        .count();

    let published = all.wait_for(&app.api, total).await;
    assert_eq!(published.len(), total, "every notification published once");
    let enrolls = enroll.wait_for(&app.api, enroll_total).await;
    assert_eq!(
        enrolls.len(),
        enroll_total,
        "gbds.enroll.* gets ENROLL only"
    );
    let events = ce.settled_at(total).await;
    assert_eq!(
        events.len(),
        total,
        "every notification as a CloudEvent once"
    );
    let (feed, _) = app.api.feed_from("0", 1000).await;
    assert_eq!(feed.len(), total);

    let of = |tguid: &str| -> (
        Vec<&Consumed>,
        Vec<&Consumed>,
        Vec<&Received>,
        Vec<&FeedItem>,
    ) {
        (
            published
                .iter()
                .filter(|m| m.correlation_id() == tguid)
                .collect(),
            enrolls
                .iter()
                .filter(|m| m.correlation_id() == tguid)
                .collect(),
            events
                .iter()
                .filter(|r| {
                    serde_json::from_slice::<EventHead>(&r.body)
                        .unwrap()
                        .subject
                        == tguid
                })
                .collect(),
            feed.iter().filter(|i| i.tguid == tguid).collect(),
        )
    };

    for (s, (tguid, bodies)) in scenarios.iter().zip(&expected) {
        let (amqp, enroll_only, cloudevents, recorded) = of(tguid);
        let webhook_ids: Vec<&str> = recorded.iter().map(|i| i.webhook_id.as_str()).collect();

        // AMQP: the exact bodies in order, routing keys, and the message properties.
        let texts: Vec<String> = amqp.iter().map(|m| m.text()).collect();
        assert_eq!(&texts, bodies, "{tguid}: published bodies");
        let wanted_enroll: Vec<&String> = bodies
            .iter()
            .filter(|b| operation_status(b).0 == "ENROLL")
            .collect();
        let got_enroll: Vec<String> = enroll_only.iter().map(|m| m.text()).collect();
        assert_eq!(
            got_enroll.iter().collect::<Vec<_>>(),
            wanted_enroll,
            "{tguid}: the gbds.enroll.* queue"
        );
        for (m, id) in amqp.iter().zip(&webhook_ids) {
            let (op, status) = operation_status(&m.text());
            assert_eq!(
                m.routing_key,
                format!("gbds.{}.{}", op.to_lowercase(), status.to_lowercase())
            );
            let p = &m.properties;
            assert_eq!(m.message_id(), *id, "{tguid}: message_id is the webhook-id");
            assert_eq!(*p.delivery_mode(), Some(2), "persistent");
            assert_eq!(
                p.content_type().as_ref().map(|s| s.as_str()),
                Some("application/json")
            );
        }

        // CloudEvents: data byte for byte, id the webhook-id, time the notification's, signed.
        let mut rendered = Vec::new();
        for (r, item) in cloudevents.iter().zip(&recorded) {
            let head: EventHead = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(head.data.get(), item.body(), "{tguid}: data");
            assert_eq!(head.id, item.webhook_id);
            assert_eq!(r.header("webhook-id"), Some(item.webhook_id.as_str()));
            assert_eq!(head.time, item.created_at);
            let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
            assert_eq!(
                r.header("webhook-signature").unwrap(),
                gbds_notifier::delivery::signing::standard_signature(SECRET, &head.id, ts, &r.body)
            );
            rendered.push(
                r.text()
                    .replacen(
                        &format!("\"id\":\"{}\"", head.id),
                        "\"id\":\"<webhook-id>\"",
                        1,
                    )
                    .replacen(
                        &format!("\"time\":\"{}\"", head.time),
                        "\"time\":\"<time>\"",
                        1,
                    ),
            );
        }
        assert_eq!(rendered.len(), bodies.len(), "{tguid}: CloudEvents");

        let mut text = String::new();
        text.push_str(&format!(
            "registered as {}, updates labelled {update_operation}\n\n",
            s.operation
        ));
        text.push_str("AMQP: routing key, then the message body\n");
        for m in &amqp {
            text.push_str(&format!("{:<34} {}\n", m.routing_key, m.text()));
        }
        text.push_str("\nCloudEvents (structured mode), as sent\n");
        for r in &rendered {
            text.push_str(r);
            text.push('\n');
        }
        insta::with_settings!({
            snapshot_path => "snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("{} ({})", s.document_section, s.name),
        }, {
            insta::assert_snapshot!(s.name.as_str(), text);
        });
    }
    all.delete_exchange().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_scenario_reaches_rabbitmq_and_cloudevents_exactly_with_default_labels() {
    every_scenario_labelled("ENROLL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_scenario_reaches_rabbitmq_and_cloudevents_exactly_with_updates_labelled_update(
) {
    every_scenario_labelled("UPDATE").await;
}
