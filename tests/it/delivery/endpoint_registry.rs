//! Endpoints changed through the API while notifications flow: the sender must know an
//! endpoint from the moment the writer can hand out a delivery for it, and must send to what
//! the database says once a change is answered.

use serde_json::{json, Value};

use crate::harness::{eventually, spawn_app, Api, Receiver, ADMIN};

/// Rounds of each race: enough that an ordering which loses shows up in nearly every run.
const ROUNDS: usize = 20;
/// Transactions whose events flow during each creation.
const FLOW: usize = 64;
/// Callers sending those events at once.
const CALLERS: usize = 8;

/// Sends the ENROLLED event of every tguid from `CALLERS` tasks; `answered` counts the 200s.
fn enroll_in_a_flow(
    api: &Api,
    tguids: &[String],
    answered: tokio::sync::watch::Sender<usize>,
) -> tokio::task::JoinSet<()> {
    let answered = std::sync::Arc::new(answered);
    let mut callers = tokio::task::JoinSet::new();
    for slice in tguids.chunks(tguids.len().div_ceil(CALLERS)) {
        let (api, slice, answered) = (api.clone(), slice.to_vec(), answered.clone());
        callers.spawn(async move {
            for t in slice {
                api.event(&t, json!({"type": "ENROLLED"})).await.ok(200);
                answered.send_modify(|n| *n += 1);
            }
        });
    }
    callers
}

/// Every delivery listed for `endpoint`, as `(tguid, status)`.
async fn deliveries_of(api: &Api, endpoint: &str) -> Vec<(String, String)> {
    let page = api
        .get(
            &format!("/v1/deliveries?endpoint={endpoint}&limit=1000"),
            Some(ADMIN),
        )
        .await
        .ok(200);
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["tguid"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_created_while_notifications_flow_stays_enabled_and_gets_every_one_of_them() {
    let app = spawn_app("").await;
    let api = &app.api;
    let mut fanned_out = 0;
    for round in 0..ROUNDS {
        let created = Receiver::start().await;
        let tguids: Vec<String> = (0..FLOW).map(|i| format!("tg-new-{round}-{i}")).collect();
        for t in &tguids {
            api.register(t, "ENROLL").await.ok(201);
        }
        // The endpoint is created in the middle of the flow, so that the writer's batches
        // hold its creation and events that fan out to it.
        let (answered, mut progress) = tokio::sync::watch::channel(0);
        let mut flow = enroll_in_a_flow(api, &tguids, answered);
        progress.wait_for(|n| *n >= CALLERS).await.unwrap();
        let id = format!("new-{round}");
        api.post(
            "/v1/endpoints",
            Some(ADMIN),
            &json!({"id": id, "url": created.url.as_str()}),
        )
        .await
        .ok(201);
        while let Some(caller) = flow.join_next().await {
            caller.unwrap();
        }

        // Settled: the endpoint was disabled, or nothing is left pending for it.
        let e = eventually(&format!("endpoint {id} to settle"), async || {
            let e = api.endpoint(&id).await;
            (e["enabled"] == false || e["backlog"] == 0).then_some(e)
        })
        .await;
        assert_eq!(
            e["enabled"], true,
            "round {round}: a new endpoint was disabled as if it had answered 410: {e}"
        );
        let listed = deliveries_of(api, &id).await;
        assert!(
            listed.iter().all(|(_, status)| status == "delivered"),
            "round {round}: {listed:?}"
        );
        let mut got: Vec<String> = created
            .all()
            .into_iter()
            .filter(|r| r.acknowledged())
            .filter_map(|r| r.tguid())
            .collect();
        got.sort();
        let mut wanted: Vec<String> = listed.into_iter().map(|(t, _)| t).collect();
        wanted.sort();
        assert_eq!(
            got, wanted,
            "round {round}: the receiver got each delivery once"
        );
        fanned_out += wanted.len();
        api.call("DELETE", &format!("/v1/endpoints/{id}"), Some(ADMIN), None)
            .await
            .ok(200);
    }
    assert!(
        fanned_out > 0,
        "no event fanned out to a new endpoint: the race was never run"
    );
}

fn tguid_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body).ok()?["tguid"]
        .as_str()
        .map(str::to_owned)
}

/// Whether `receiver` got a notification of `tguid`, from its `from`th request on.
fn arrived_since(receiver: &Receiver, from: usize, tguid: &str) -> bool {
    receiver.all()[from..]
        .iter()
        .any(|r| tguid_of(&r.body).as_deref() == Some(tguid))
}

#[tokio::test]
async fn the_first_delivery_after_a_patch_is_answered_goes_to_the_new_url_signed_with_the_new_secret(
) {
    let app = spawn_app("").await;
    let api = &app.api;
    let old = Receiver::start().await;
    let new = Receiver::start().await;
    const OLD_SECRET: &str = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0";
    const NEW_SECRET: &str = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0";
    let body = json!({"id": "moving", "url": old.url, "secret": OLD_SECRET});
    api.post("/v1/endpoints", Some(ADMIN), &body).await.ok(201);
    for round in 0..ROUNDS {
        let (from, to, secret) = if round % 2 == 0 {
            (&old, &new, NEW_SECRET)
        } else {
            (&new, &old, OLD_SECRET)
        };
        let before = (from.all().len(), to.all().len());
        let change = json!({"url": to.url, "secret": secret});
        api.call("PATCH", "/v1/endpoints/moving", Some(ADMIN), Some(&change))
            .await
            .ok(200);
        let t = format!("tg-moved-{round}");
        api.enroll(&t, "ENROLLED").await;
        let all = to
            .wait_until(&format!("{t} at the new url"), |all| {
                all[before.1..]
                    .iter()
                    .any(|r| tguid_of(&r.body).as_deref() == Some(t.as_str()))
            })
            .await;
        let r = all[before.1..]
            .iter()
            .find(|r| tguid_of(&r.body).as_deref() == Some(t.as_str()))
            .unwrap();
        let verdict = gbds_notifier::receiver::verify(secret, &r.headers, &r.body);
        assert_eq!(
            (verdict.standard, verdict.plain),
            (Some(true), Some(true)),
            "round {round}: signed with the new secret"
        );
        assert!(
            !arrived_since(from, before.0, &t),
            "round {round}: nothing of {t} went to the old url"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_two_patches_race_the_endpoint_delivers_to_the_url_the_endpoints_list_shows() {
    let app = spawn_app("").await;
    let api = &app.api;
    let a = Receiver::start().await;
    let b = Receiver::start().await;
    let body = json!({"id": "contested", "url": a.url});
    api.post("/v1/endpoints", Some(ADMIN), &body).await.ok(201);
    let patch = |url: String| {
        let api = api.clone();
        tokio::spawn(async move {
            let change = json!({ "url": url });
            api.call(
                "PATCH",
                "/v1/endpoints/contested",
                Some(ADMIN),
                Some(&change),
            )
            .await
        })
    };
    for round in 0..ROUNDS {
        let (to_a, to_b) = (patch(a.url.clone()), patch(b.url.clone()));
        to_a.await.unwrap().ok(200);
        to_b.await.unwrap().ok(200);
        let shown = api.endpoint("contested").await["url"]
            .as_str()
            .unwrap()
            .to_owned();
        let (there, elsewhere) = if shown == a.url { (&a, &b) } else { (&b, &a) };
        let t = format!("tg-contested-{round}");
        let before_elsewhere = elsewhere.all().len();
        api.enroll(&t, "ENROLLED").await;
        eventually(&format!("round {round}: {t} at either url"), async || {
            (arrived_since(&a, 0, &t) || arrived_since(&b, 0, &t)).then_some(())
        })
        .await;
        assert!(
            arrived_since(there, 0, &t),
            "round {round}: {t} went to the url the database no longer holds (it shows {shown})"
        );
        assert!(
            !arrived_since(elsewhere, before_elsewhere, &t),
            "round {round}: {t} also went to the other url"
        );
    }
}
