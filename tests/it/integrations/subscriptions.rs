//! Subscriptions: an endpoint receives only the notifications its `<OPERATION>.<STATUS>`
//! patterns match, still in order per transaction; bad patterns are refused by name.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::harness::{operation_status, Received, Receiver, Scenario, ADMIN, REVIEW};

/// The received bodies, by tguid, in arrival order.
fn by_tguid(received: &[Received]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in received {
        let tguid = r.json()["tguid"].as_str().unwrap().to_owned();
        out.entry(tguid).or_default().push(r.text());
    }
    out
}

/// Which (operation, status) an endpoint takes.
type Wanted = dyn Fn(&str, &str) -> bool;

/// What each transaction must bring to an endpoint that takes what `wanted` says yes to.
fn expected_for(
    scenarios: &[Scenario],
    wanted: impl Fn(&str, &str) -> bool,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for s in scenarios {
        let tguid = format!("tg-{}", s.name);
        let bodies: Vec<String> = s
            .expected(&tguid)
            .into_iter()
            .filter(|b| {
                let (op, status) = operation_status(b);
                wanted(&op, &status)
            })
            .collect();
        if !bodies.is_empty() {
            out.insert(tguid, bodies);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_receives_exactly_the_notifications_its_patterns_match_in_order() {
    let (failed, mixed, all) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let app = super::start(&format!(
        r#"
[[endpoints]]
id = "failed"
url = "{}"
subscriptions = ["*.FAILED"]

[[endpoints]]
id = "mixed"
url = "{}"
subscriptions = ["ENROLL.*", "*.FAILED", "TREAT_EXCEPTION.*", "SEARCH.MATCH"]

[[endpoints]]
id = "all"
url = "{}"
"#,
        failed.url, mixed.url, all.url
    ))
    .await;
    // Every document scenario that runs on the default configuration.
    let scenarios: Vec<Scenario> = Scenario::all()
        .into_iter()
        .filter(|s| s.update_operation() == "ENROLL")
        .collect();
    for s in &scenarios {
        s.run(&app.api, &format!("tg-{}", s.name)).await;
    }

    let cases: [(&Receiver, &Wanted); 3] = [
        (&failed, &|_, status| status == "FAILED"),
        (&mixed, &|op, status| {
            op == "ENROLL"
                || status == "FAILED"
                || op == "TREAT_EXCEPTION"
                || (op == "SEARCH" && status == "MATCH")
        }),
        (&all, &|_, _| true),
    ];
    for (receiver, wanted) in cases {
        let expected = expected_for(&scenarios, wanted);
        let count = expected.values().map(Vec::len).sum();
        let received = receiver.settled_at(count).await;
        assert_eq!(received.len(), count, "{}: nothing more", receiver.url);
        assert_eq!(by_tguid(&received), expected, "{}", receiver.url);
    }
    // The `*.FAILED` endpoint saw only FAILED notifications, of every operation that has one.
    let statuses: Vec<(String, String)> = failed
        .all()
        .iter()
        .map(|r| operation_status(&r.text()))
        .collect();
    assert!(statuses.iter().all(|(_, s)| s == "FAILED"));
    assert!(statuses.iter().any(|(op, _)| op == "SEARCH"));
    assert!(statuses.iter().any(|(op, _)| op == "ENROLL"));

    // Deliveries are recorded only for subscribed endpoints.
    let detail = app
        .api
        .get("/v1/transactions/tg-enroll_enrolled", Some(REVIEW))
        .await
        .ok(200);
    let endpoints: Vec<&str> = detail["notifications"][0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(endpoints, ["all", "mixed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_patterns_are_refused_by_the_endpoints_api_naming_them_and_nothing_changes() {
    let receiver = Receiver::start().await;
    let app = super::start(&format!(
        "[[endpoints]]\nid = \"configured\"\nurl = \"{}\"\n",
        receiver.url
    ))
    .await;
    let create = |extra: Value| {
        let mut body = json!({ "id": "x", "url": receiver.url });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, says) in [
        (
            json!({ "subscriptions": ["ENROLL.*", "ENROLL.DONE"] }),
            "subscriptions[1]: \"ENROLL.DONE\"",
        ),
        (json!({ "subscriptions": ["enroll.*"] }), "subscriptions[0]"),
        (
            json!({ "subscriptions": ["SEARCH.ENROLLED"] }),
            "never matches",
        ),
        (json!({ "subscriptions": [] }), "subscriptions: must list"),
        (json!({ "format": "xml" }), "format: \"xml\""),
    ] {
        app.api
            .call("POST", "/v1/endpoints", Some(ADMIN), Some(&create(extra)))
            .await
            .invalid(says);
    }
    let listed = app.api.get("/v1/endpoints", Some(ADMIN)).await.ok(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    app.api
        .call(
            "POST",
            "/v1/endpoints",
            Some(ADMIN),
            Some(&create(json!({}))),
        )
        .await
        .ok(201);
    app.api
        .call(
            "PATCH",
            "/v1/endpoints/x",
            Some(ADMIN),
            Some(&json!({ "subscriptions": ["*.FAILD"] })),
        )
        .await
        .invalid("subscriptions[0]: \"*.FAILD\"");
    // A configured endpoint's subscriptions are the configuration file's.
    let answer = app
        .api
        .call(
            "PATCH",
            "/v1/endpoints/configured",
            Some(ADMIN),
            Some(&json!({ "subscriptions": ["*.FAILED"] })),
        )
        .await;
    assert_eq!(answer.status, 409, "{}", answer.json());
    let listed = app.api.get("/v1/endpoints", Some(ADMIN)).await.ok(200);
    for e in listed["items"].as_array().unwrap() {
        assert_eq!(e["subscriptions"], Value::Null, "{e}");
        assert_eq!(e["format"], "gbds", "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_endpoints_keep_their_subscriptions_across_a_restart_and_a_patch_changes_them() {
    let receiver = Receiver::start().await;
    let late = Receiver::start().await;
    let app = super::start("").await;
    let created = app
        .api
        .call(
            "POST",
            "/v1/endpoints",
            Some(ADMIN),
            Some(&json!({ "id": "rt", "url": receiver.url, "subscriptions": ["SEARCH.*"] })),
        )
        .await
        .ok(201);
    assert_eq!(created["subscriptions"], json!(["SEARCH.*"]));

    let enroll = Scenario::named("enroll_exception_same_fingers");
    let search = Scenario::named("search_match");
    enroll.run(&app.api, "tg-e1").await;
    search.run(&app.api, "tg-s1").await;
    let got = receiver.settled_at(1).await;
    assert_eq!(
        got.iter().map(Received::text).collect::<Vec<_>>(),
        search.expected("tg-s1")
    );

    // After a restart the stored patterns still decide.
    let dir = app.stop().await;
    let app = super::start_in(dir, "").await;
    search.run(&app.api, "tg-s2").await;
    enroll.run(&app.api, "tg-e2").await;
    let got = receiver.settled_at(2).await;
    assert_eq!(got[1].text(), search.expected("tg-s2")[0]);
    assert_eq!(got.len(), 2);

    // null subscribes it to everything again.
    let patched = app
        .api
        .call(
            "PATCH",
            "/v1/endpoints/rt",
            Some(ADMIN),
            Some(&json!({ "subscriptions": null })),
        )
        .await
        .ok(200);
    assert_eq!(patched["subscriptions"], Value::Null);
    enroll.run(&app.api, "tg-e3").await;
    let got = receiver.settled_at(2 + 3).await;
    let texts: Vec<String> = got[2..].iter().map(Received::text).collect();
    assert_eq!(texts, enroll.expected("tg-e3"));

    // Re-sending a transaction to an endpoint added later respects its subscriptions too.
    app.api
        .call(
            "POST",
            "/v1/endpoints",
            Some(ADMIN),
            Some(&json!({ "id": "late", "url": late.url, "subscriptions": ["*.FAILED"] })),
        )
        .await
        .ok(201);
    app.api
        .call(
            "POST",
            "/v1/transactions/tg-e1/renotify",
            Some(REVIEW),
            Some(&json!({ "endpoint": "late" })),
        )
        .await
        .ok(200);
    let got = late.settled_at(1).await;
    assert_eq!(
        got.iter().map(Received::text).collect::<Vec<_>>(),
        [r#"{"operation":"ENROLL","tguid":"tg-e1","status":"FAILED"}"#]
    );
}
