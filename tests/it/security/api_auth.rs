//! The API's tokens and roles: every route refuses a missing or wrong token (401) and a role
//! without the right (403) and changes nothing; reviews and treatments record who decided.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{endpoint, start};
use crate::harness::{Api, Receiver, ADMIN, INGEST, REVIEW};

/// Ingest as a token, review as its SHA-256 (`token_sha256`), admin as a token.
fn tokens_config() -> String {
    use sha2::Digest;
    let review_sha = hex::encode(sha2::Sha256::digest(REVIEW.as_bytes()));
    format!(
        "[api]\ntokens = [\n  {{ token = \"{INGEST}\", role = \"ingest\", name = \"backoffice\" }},\n  {{ token_sha256 = \"{review_sha}\", role = \"review\", name = \"mir-desk\" }},\n  {{ token = \"{ADMIN}\", role = \"admin\" }},\n]\n"
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    Nobody,
    Stranger,
    Ingest,
    Review,
    Admin,
}

impl Caller {
    fn token(self) -> Option<&'static str> {
        match self {
            Caller::Nobody => None,
            Caller::Stranger => Some("t-nope"),
            Caller::Ingest => Some(INGEST),
            Caller::Review => Some(REVIEW),
            Caller::Admin => Some(ADMIN),
        }
    }
}

/// Everything a call could change: every transaction with its history, and what was sent;
/// taken once no delivery is left pending, so that earlier calls have settled.
async fn world(api: &Api, rx: &Receiver) -> (Value, usize) {
    let deadline = Instant::now() + crate::harness::DEADLINE;
    loop {
        let answer = api.get("/v1/transactions?limit=1000", Some(ADMIN)).await;
        assert_eq!(answer.status, 200);
        let list = answer.json();
        let mut all = vec![];
        for item in list["items"].as_array().unwrap() {
            let tguid = item["tguid"].as_str().unwrap();
            all.push(api.detail(tguid).await);
        }
        let all = Value::Array(all);
        if !all.to_string().contains("\"status\":\"pending\"") {
            return (all, rx.all().len());
        }
        assert!(Instant::now() < deadline, "deliveries never settled: {all}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_token_401_and_a_role_without_the_right_403() {
    let rx = Receiver::start().await;
    let app = start(&format!("{}{}", tokens_config(), endpoint(&rx.url, ""))).await;
    let admin = |m: &'static str, p: String, b: Value| {
        let api = &app.api;
        async move { api.call(m, &p, Some(ADMIN), Some(&b)).await.status }
    };
    for (tguid, event) in [("tx-pend", "PENDING"), ("tx-exc", "EXCEPTION")] {
        assert_eq!(
            admin(
                "POST",
                "/v1/transactions".into(),
                json!({"tguid": tguid, "operation": "ENROLL"})
            )
            .await,
            201
        );
        assert_eq!(
            admin(
                "POST",
                format!("/v1/transactions/{tguid}/events"),
                json!({"type": event})
            )
            .await,
            200
        );
    }
    rx.at_least(2).await;

    use Caller::*;
    let ingest_only = [Ingest, Admin];
    let review_only = [Review, Admin];
    let anyone = [Ingest, Review, Admin];
    // (method, path, body, who may call it)
    let routes: Vec<(&str, &str, Option<Value>, &[Caller])> = vec![
        (
            "POST",
            "/v1/transactions",
            Some(json!({"tguid": "NEW", "operation": "ENROLL"})),
            &ingest_only,
        ),
        (
            "POST",
            "/v1/transactions/tx-pend/events",
            Some(json!({"type": "REVERSE_LATENT_MATCH", "uguid": "u-1"})),
            &ingest_only,
        ),
        (
            "POST",
            "/v1/transactions/tx-pend/review",
            Some(json!({"decision": "REJECT"})),
            &review_only,
        ),
        (
            "POST",
            "/v1/transactions/tx-exc/treatment",
            Some(json!({"treatment": "RECOLLECT"})),
            &review_only,
        ),
        ("GET", "/v1/transactions/tx-pend", None, &anyone),
        ("GET", "/v1/transactions?state=PENDING", None, &anyone),
    ];
    let mut n = 0;
    for (method, path, body, allowed) in &routes {
        // Refusals first, while the state they would change is still there.
        for caller in [Nobody, Stranger, Ingest, Review, Admin] {
            if allowed.contains(&caller) {
                continue;
            }
            n += 1;
            let body = body.clone().map(|b| {
                let text = b.to_string().replace("NEW", &format!("new-{n}"));
                serde_json::from_str(&text).unwrap()
            });
            let before = world(&app.api, &rx).await;
            let answer = app
                .api
                .call(method, path, caller.token(), body.as_ref())
                .await;
            let (status, answer) = (answer.status, answer.json_or_null());
            let expected = if matches!(caller, Nobody | Stranger) {
                401
            } else {
                403
            };
            assert_eq!(status, expected, "{method} {path} as {caller:?}: {answer}");
            assert_eq!(
                answer["error"],
                if expected == 401 {
                    "unauthorized"
                } else {
                    "forbidden"
                },
                "{answer}"
            );
            // Answered after the commit that would hold any write: the world is read now.
            assert_eq!(
                world(&app.api, &rx).await,
                before,
                "{method} {path} as {caller:?} changed something"
            );
        }
        for caller in allowed.iter() {
            n += 1;
            let body = body.clone().map(|b| {
                let text = b.to_string().replace("NEW", &format!("new-{n}"));
                serde_json::from_str(&text).unwrap()
            });
            let answer = app
                .api
                .call(method, path, caller.token(), body.as_ref())
                .await;
            let (status, answer) = (answer.status, answer.json_or_null());
            // Admitted: whatever the state says (200, 201, or 409 for a second decision).
            assert!(
                [200, 201, 409].contains(&status),
                "{method} {path} as {caller:?}: {status} {answer}"
            );
        }
    }
    // Liveness needs no token.
    assert_eq!(
        app.api.call("GET", "/healthz", None, None).await.status,
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn every_review_and_treatment_records_who_decided() {
    let rx = Receiver::start().await;
    let app = start(&format!("{}{}", tokens_config(), endpoint(&rx.url, ""))).await;
    let call = |t: &'static str, p: String, b: Value| {
        let api = &app.api;
        async move {
            let answer = api.call("POST", &p, Some(t), Some(&b)).await;
            let (s, v) = (answer.status, answer.json_or_null());
            assert!(s == 200 || s == 201, "{p}: {s} {v}");
        }
    };
    call(
        INGEST,
        "/v1/transactions".into(),
        json!({"tguid": "who-1", "operation": "ENROLL"}),
    )
    .await;
    call(
        INGEST,
        "/v1/transactions/who-1/events".into(),
        json!({"type": "PENDING"}),
    )
    .await;
    call(
        REVIEW,
        "/v1/transactions/who-1/review".into(),
        json!({"decision": "APPROVE", "reviewer": "alice"}),
    )
    .await;
    call(
        INGEST,
        "/v1/transactions/who-1/events".into(),
        json!({"type": "EXCEPTION"}),
    )
    .await;
    call(
        ADMIN,
        "/v1/transactions/who-1/treatment".into(),
        json!({"treatment": "DIFFERENT_FINGERS"}),
    )
    .await;

    let d = app.api.detail("who-1").await;
    let log: Vec<(String, String)> = d["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["to"].as_str().unwrap().to_owned(),
                t["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = |to: &str, actor: &str| (to.to_owned(), actor.to_owned());
    assert_eq!(
        log,
        [
            expect("PROCESSING", "backoffice"),
            expect("PENDING", "backoffice"),
            expect("PROCESSING", "mir-desk (reviewer alice)"),
            expect("EXCEPTION", "backoffice"),
            expect("ENROLLED", "admin"),
        ],
        "{d}"
    );
    app.stop().await;
}
