//! CloudEvents endpoints: structured mode, `data` the exact GBDS body, signatures over the
//! bytes that were sent.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;

use crate::harness::{Received, Receiver, Scenario, ADMIN};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A structured-mode event as a strict consumer reads it: every attribute we send, nothing
/// else, `data` kept as its bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    kind: String,
    subject: String,
    time: String,
    datacontenttype: String,
    data: Box<serde_json::value::RawValue>,
}

fn event(r: &Received) -> Event {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not a CloudEvent ({e}): {}", r.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudevents_endpoint_receives_valid_structured_events_whose_data_is_the_exact_body() {
    let (ce, plain) = (Receiver::start().await, Receiver::start().await);
    let app = super::start(&format!(
        r#"
[notifications]
cloudevents_source = "https://gbds.example/notifier"

[[endpoints]]
id = "ce"
url = "{}"
secret = "{SECRET}"
format = "cloudevents"

[[endpoints]]
id = "plain"
url = "{}"
"#,
        ce.url, plain.url
    ))
    .await;
    let scenarios = [
        Scenario::named("enroll_exception_same_fingers"),
        Scenario::named("enroll_reverse_latent_match"),
        Scenario::named("search_match"),
    ];
    let mut expected = Vec::new();
    for s in &scenarios {
        let tguid = format!("tg-{}", s.name);
        s.run(&app.api, &tguid).await;
        expected.extend(s.expected(&tguid).into_iter().map(|b| (tguid.clone(), b)));
    }
    let got = ce.settled_at(expected.len()).await;
    assert_eq!(got.len(), expected.len());
    let (feed, _) = app.api.feed_from("0", 100).await;
    let created: HashMap<&str, &str> = feed
        .iter()
        .map(|i| (i.webhook_id.as_str(), i.created_at.as_str()))
        .collect();

    let mut by_tguid: HashMap<String, Vec<String>> = HashMap::new();
    for r in &got {
        assert_eq!(
            r.header("content-type"),
            Some("application/cloudevents+json")
        );
        let e = event(r);
        let webhook_id = r.header("webhook-id").unwrap();
        assert_eq!(e.specversion, "1.0");
        assert_eq!(e.id, webhook_id, "id is the webhook-id");
        assert_eq!(e.source, "https://gbds.example/notifier");
        assert_eq!(e.datacontenttype, "application/json");
        assert_eq!(e.time, created[webhook_id], "time is the notification's");
        let data: serde_json::Value = serde_json::from_str(e.data.get()).unwrap();
        assert_eq!(e.subject, data["tguid"]);
        assert_eq!(
            e.kind,
            format!(
                "gbds.{}.{}.v1",
                data["operation"].as_str().unwrap().to_lowercase(),
                data["status"].as_str().unwrap().to_lowercase()
            )
        );
        // Signed as sent: both signatures verify over the envelope's bytes.
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert_eq!(
            r.header("webhook-signature").unwrap(),
            gbds_notifier::delivery::signing::standard_signature(SECRET, webhook_id, ts, &r.body)
        );
        assert_eq!(
            r.header("x-signature").unwrap(),
            gbds_notifier::delivery::signing::plain_signature(SECRET, &r.body)
        );
        by_tguid
            .entry(e.subject.clone())
            .or_default()
            .push(e.data.get().to_owned());
    }
    // data is the body byte for byte, in order per transaction.
    for s in &scenarios {
        let tguid = format!("tg-{}", s.name);
        assert_eq!(by_tguid[&tguid], s.expected(&tguid), "{tguid}");
    }

    // The plain endpoint got the bodies themselves, with the same webhook-ids.
    let plain_got = plain.settled_at(expected.len()).await;
    for r in &plain_got {
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(serde_json::from_slice::<Event>(&r.body).is_err());
    }
    let ids = |rs: &[Received]| {
        let mut v: Vec<String> = rs
            .iter()
            .map(|r| r.header("webhook-id").unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&got), ids(&plain_got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_endpoint_can_take_cloudevents_and_be_switched_back_to_plain_bodies() {
    let receiver = Receiver::start().await;
    let app = super::start("").await;
    let created = app
        .api
        .call(
            "POST",
            "/v1/endpoints",
            Some(ADMIN),
            Some(&json!({ "id": "rt", "url": receiver.url, "format": "cloudevents" })),
        )
        .await
        .ok(201);
    assert_eq!(created["format"], "cloudevents");
    let s = Scenario::named("enroll_enrolled");
    s.run(&app.api, "tg-1").await;
    let got = receiver.settled_at(1).await;
    let e = event(&got[0]);
    assert_eq!(e.source, "urn:gbds-notifier", "the default source");
    assert_eq!(e.kind, "gbds.enroll.enrolled.v1");
    assert_eq!(e.data.get(), s.expected("tg-1")[0]);

    // The format survives a restart.
    let dir = app.stop().await;
    let app = super::start_in(dir, "").await;
    s.run(&app.api, "tg-2").await;
    let got = receiver.settled_at(2).await;
    assert_eq!(event(&got[1]).data.get(), s.expected("tg-2")[0]);

    app.api
        .call(
            "PATCH",
            "/v1/endpoints/rt",
            Some(ADMIN),
            Some(&json!({ "format": "gbds" })),
        )
        .await
        .ok(200);
    s.run(&app.api, "tg-3").await;
    let got = receiver.settled_at(3).await;
    assert_eq!(got[2].text(), s.expected("tg-3")[0]);
    assert_eq!(got[2].header("content-type"), Some("application/json"));
}
