//! Property-based fuzzing (proptest) of what a hostile caller controls: identifiers, request
//! bodies, paths, query strings and Authorization headers, through the real HTTP API, and the
//! pure pieces under it (identifier parsing, the state machine, signature checks, config).
//!
//! Properties: nothing panics and nothing answers 5xx; every refusal is a 4xx with the error
//! JSON and changes nothing; an accepted call does exactly what the contract's table says
//! (`delivery::model`, written apart from `domain::step`), down to the notification bytes;
//! every call the administrator makes with random paths, queries and bodies is answered by its
//! route's handler (`routes`), and the answers reached are counted and printed. The pure
//! pieces are fuzzed in `fuzz_pure`.
//! Cases per property: `PROPTEST_CASES` (proptest's default, 256, in `cargo test`).

use std::collections::BTreeMap;

use gbds_notifier::domain::{
    Decision, Input, Operation, Outcome, State, Treatment, Uguid, UpdateLabel,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};

use super::start;
use crate::delivery::model;
use crate::harness::{TestApp, ADMIN, INGEST, REVIEW};

mod routes;

// ---- strategies ----

/// Field names the API knows, and a few it does not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "tguid", "operation", "type", "uguid", "event_id", "decision", "reviewer", "treatment",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,10}",
    ]
}

/// Strings a caller might send: the real enumerations, near misses and anything at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "ENROLL",
            "UPDATE",
            "SEARCH",
            "ENROLLED",
            "FAILED",
            "MATCH",
            "NOT_MATCH",
            "PERSON_NOT_FOUND",
            "PENDING",
            "EXCEPTION",
            "REVERSE_LATENT_MATCH",
            "APPROVE",
            "REJECT",
            "SAME_FINGERS",
            "DIFFERENT_FINGERS",
            "MERGE_TRANSACTIONS",
            "RECOLLECT",
            "INCORRECT_ENROLL",
            "enroll",
            "Approve",
            "",
            " ",
            "a/b",
            "ñ",
            "\u{0}",
            "fz-enr",
        ])
        .prop_map(str::to_owned),
        ".{0,40}",
        "[!-~]{120,140}",
    ]
}

/// Any JSON value, nested a little, with the API's field names often among the keys.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body: raw bytes, truncated JSON, any JSON value, or an object made of the route's
/// fields with arbitrary values (the shape most likely to get past the first checks).
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        (json_value(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            let at = cut.index(text.len() + 1);
            text[..at].to_vec()
        }),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        proptest::collection::btree_map(key(), text().prop_map(Value::from), 0..4).prop_map(|m| {
            Value::Object(m.into_iter().collect())
                .to_string()
                .into_bytes()
        }),
    ]
}

/// A tguid for the path: the fixtures, unknown ones and malformed ones.
fn path_tguid() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(FIXTURES.iter().map(|(t, _, _)| *t).collect::<Vec<_>>())
            .prop_map(str::to_owned),
        1 => "[!-~]{1,20}",
        1 => ".{0,20}",
        1 => "[!-~]{129,140}",
    ]
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---- the service under fuzz ----

/// Transactions to aim at: (tguid, operation, how to bring it to its starting state).
const FIXTURES: &[(&str, &str, Option<&str>)] = &[
    ("fz-enr", "ENROLL", None),
    ("fz-pend", "ENROLL", Some("PENDING")),
    ("fz-exc", "ENROLL", Some("EXCEPTION")),
    ("fz-upd-exc", "UPDATE", Some("EXCEPTION")),
    ("fz-upd-pend", "UPDATE", Some("PENDING")),
    ("fz-srch", "SEARCH", None),
];

struct Fuzzed {
    rt: tokio::runtime::Runtime,
    app: TestApp,
}

/// The fixtures' tguids in generation `generation` (a new one when the last has ended).
fn fixture(tguid: &str, generation: u32) -> String {
    if generation == 0 {
        tguid.to_owned()
    } else {
        format!("{tguid}-g{generation}")
    }
}

impl Fuzzed {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = rt.block_on(start(&format!(
            "[api]\ntokens = [\n  {{ token = \"{ADMIN}\", role = \"admin\" }},\n  \
             {{ token = \"{INGEST}\", role = \"ingest\" }},\n  \
             {{ token = \"{REVIEW}\", role = \"review\" }},\n]\n\n\
             [[endpoints]]\nid = \"fz\"\nurl = \"{{receiver}}\"\n"
        )));
        let f = Fuzzed { rt, app };
        f.fixtures(0);
        f
    }

    /// Registers generation `generation` of the fixtures and brings each to its state.
    fn fixtures(&self, generation: u32) {
        for i in 0..FIXTURES.len() {
            self.fixture(i, generation);
        }
    }

    /// Registers generation `generation` of fixture `i` and brings it to its state.
    fn fixture(&self, i: usize, generation: u32) {
        self.rt.block_on(async {
            let (tguid, op, event) = FIXTURES[i];
            let tguid = fixture(tguid, generation);
            let answer = self
                .app
                .api
                .post(
                    "/v1/transactions",
                    Some(ADMIN),
                    &json!({"tguid": tguid, "operation": op}),
                )
                .await;
            assert_eq!(answer.status, 201, "{}", answer.json_or_null());
            if let Some(event) = event {
                let path = format!("/v1/transactions/{tguid}/events");
                let answer = self
                    .app
                    .api
                    .post(&path, Some(ADMIN), &json!({"type": event}))
                    .await;
                assert_eq!(answer.status, 200, "{}", answer.json_or_null());
            }
        })
    }

    fn stop(self) {
        let Fuzzed { rt, app } = self;
        rt.block_on(app.stop());
    }

    /// One raw call: status and body bytes.
    fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        authorization: Option<&str>,
    ) -> (u16, Vec<u8>) {
        let answer = self.rt.block_on(self.app.api.send(
            method,
            path,
            authorization,
            body.map(<[u8]>::to_vec),
        ));
        (answer.status, answer.body.to_vec())
    }

    /// Every transaction with its transitions and notifications.
    fn world(&self) -> BTreeMap<String, Value> {
        let (s, list) = self.raw(
            "GET",
            "/v1/transactions?limit=1000",
            None,
            Some("Bearer t-admin"),
        );
        assert_eq!(s, 200);
        let list: Value = serde_json::from_slice(&list).unwrap();
        let all: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["tguid"].as_str().unwrap().to_owned())
            .collect();
        self.these(&all)
    }

    /// These transactions with their transitions and notifications.
    fn these(&self, tguids: &[String]) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for tguid in tguids {
            let tguid = tguid.clone();
            let (s, d) = self.raw(
                "GET",
                &format!("/v1/transactions/{}", encode(&tguid)),
                None,
                Some("Bearer t-admin"),
            );
            assert_eq!(s, 200);
            let mut d: Value = serde_json::from_slice(&d).unwrap();
            // Delivery progress is not the caller's doing; keep what the call could change.
            for n in d["notifications"].as_array_mut().unwrap() {
                n.as_object_mut().unwrap().remove("deliveries");
            }
            out.insert(tguid, d);
        }
        out
    }
}

/// A refusal must be a 4xx with `{"error": <code>, "message": <text>}`.
fn check_refusal_shape(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!((400..500).contains(&status), "status {}", status);
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| TestCaseError::fail(format!("{status} without JSON")))?;
    prop_assert!(v["error"].is_string() && v["message"].is_string(), "{}", v);
    Ok(())
}

fn runner() -> TestRunner {
    // Failures are reported with the shrunk input; no regression files in the tree.
    TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    })
}

// ---- the API, fed anything ----

#[test]
fn any_body_on_any_route_is_answered_without_5xx_and_a_refusal_changes_nothing() {
    let f = Fuzzed::start();
    let routes = vec!["", "/events", "/review", "/treatment"];
    let world = std::cell::RefCell::new(f.world());
    runner()
        .run(
            &(proptest::sample::select(routes), path_tguid(), body()),
            |(route, tguid, body)| {
                let path = if route.is_empty() {
                    "/v1/transactions".to_owned()
                } else {
                    format!("/v1/transactions/{}{route}", encode(&tguid))
                };
                let (status, answer) = f.raw("POST", &path, Some(&body), Some("Bearer t-admin"));
                prop_assert!(
                    status < 500,
                    "{} {} -> {}",
                    path,
                    String::from_utf8_lossy(&body),
                    status
                );
                let after = f.world();
                if status >= 400 {
                    check_refusal_shape(status, &answer)?;
                    prop_assert!(
                        after == *world.borrow(),
                        "refused {} on {} changed the world",
                        status,
                        path
                    );
                }
                *world.borrow_mut() = after;
                Ok(())
            },
        )
        .unwrap();
    f.stop();
}

#[test]
fn accepted_calls_do_what_the_contract_table_says_with_its_exact_bodies_and_refused_ones_nothing() {
    let f = Fuzzed::start();
    let ops: BTreeMap<&str, Operation> = FIXTURES
        .iter()
        .map(|(t, op, _)| (*t, Operation::parse(op).unwrap()))
        .collect();
    let kinds = vec![
        "ENROLLED",
        "FAILED",
        "MATCH",
        "NOT_MATCH",
        "PERSON_NOT_FOUND",
        "PENDING",
        "EXCEPTION",
        "REVERSE_LATENT_MATCH",
        "MATCHED",
        "",
    ];
    let decisions = vec!["APPROVE", "REJECT", "approve", "MAYBE"];
    let treatments = vec![
        "SAME_FINGERS",
        "DIFFERENT_FINGERS",
        "MERGE_TRANSACTIONS",
        "RECOLLECT",
        "INCORRECT_ENROLL",
        "NONE",
    ];
    let label = prop_oneof![
        4 => Just(None),
        4 => Just(Some("alice".to_owned())),
        1 => Just(Some(String::new())),
        1 => Just(Some("x".repeat(129))),
        1 => Just(Some("a\nb".to_owned())),
        2 => Just(Some("ñandú".to_owned())),
    ];
    let uguid = prop_oneof![
        8 => Just(None),
        3 => Just(Some("u-1".to_owned())),
        1 => Just(Some("u 1".to_owned())),
        1 => Just(Some(String::new())),
    ];
    let event_id = prop_oneof![
        3 => Just(None),
        1 => Just(Some("e-0".to_owned())),
        1 => Just(Some("e-1".to_owned())),
    ];
    // (tguid, event_id) -> the type and uguid it was first applied with.
    let used = std::cell::RefCell::new(BTreeMap::<(String, String), String>::new());
    let call = (
        0..3usize,
        proptest::sample::select(FIXTURES.iter().map(|(t, _, _)| *t).collect::<Vec<_>>()),
        proptest::sample::select(kinds),
        uguid,
        proptest::sample::select(decisions),
        proptest::sample::select(treatments),
        label,
        proptest::bool::weighted(0.1),
        event_id,
    );
    // Each fixture is replaced by a fresh one of its kind once it has reached a final state.
    let generation = std::cell::RefCell::new(vec![0u32; FIXTURES.len()]);
    let seen = std::cell::RefCell::new(BTreeMap::<u16, u32>::new());
    let fixtures_now = || -> Vec<String> {
        FIXTURES
            .iter()
            .zip(generation.borrow().iter())
            .map(|((t, _, _), g)| fixture(t, *g))
            .collect()
    };
    runner()
        .run(
            &call,
            |(which, base, kind, uguid, decision, treatment, reviewer, extra_field, event_id)| {
                let op = ops[base];
                let slot = FIXTURES.iter().position(|(t, _, _)| *t == base).unwrap();
                let tguid = fixture(base, generation.borrow()[slot]);
                let tguid = tguid.as_str();
                let before = f.these(&fixtures_now());
                let state = State::parse(before[tguid]["state"].as_str().unwrap()).unwrap();
                let label_ok = |l: &Option<String>| {
                    l.as_ref().is_none_or(|v| {
                        !v.is_empty()
                            && v.chars().count() <= 128
                            && !v.chars().any(char::is_control)
                    })
                };
                // What the request asks for, or None when its body must be refused (422).
                // An event's event_id, and what makes a repeat of it "the same event".
                let mut key = None;
                let (route, mut body, input) = match which {
                    0 => {
                        let mut b = json!({"type": kind});
                        if let Some(u) = &uguid {
                            b["uguid"] = json!(u);
                        }
                        if let Some(id) = &event_id {
                            b["event_id"] = json!(id);
                            let same = format!("{kind}|{}", uguid.as_deref().unwrap_or(""));
                            key = Some(((tguid.to_owned(), id.clone()), same));
                        }
                        let u = uguid.as_deref().map(Uguid::parse);
                        let input = match (kind, u) {
                            ("REVERSE_LATENT_MATCH", Some(Ok(u))) => Some(Input::LatentMatch(u)),
                            (_, Some(_)) => None,
                            ("PENDING", None) => Some(Input::SentToReview),
                            ("EXCEPTION", None) => Some(Input::Exception),
                            (k, None) => Outcome::parse(k).map(Input::Outcome),
                        };
                        ("events", b, input)
                    }
                    1 => {
                        let mut b = json!({"decision": decision});
                        if let Some(r) = &reviewer {
                            b["reviewer"] = json!(r);
                        }
                        let input = Decision::parse(decision)
                            .filter(|_| label_ok(&reviewer))
                            .map(Input::Review);
                        ("review", b, input)
                    }
                    _ => {
                        let mut b = json!({"treatment": treatment});
                        if let Some(r) = &reviewer {
                            b["reviewer"] = json!(r);
                        }
                        let input = Treatment::parse(treatment)
                            .filter(|_| label_ok(&reviewer))
                            .map(Input::Treat);
                        ("treatment", b, input)
                    }
                };
                let input = if extra_field {
                    body["note"] = json!("unexpected");
                    None
                } else {
                    input
                };
                let path = format!("/v1/transactions/{tguid}/{route}");
                let (status, answer) = f.raw(
                    "POST",
                    &path,
                    Some(body.to_string().as_bytes()),
                    Some("Bearer t-admin"),
                );
                *seen.borrow_mut().entry(status).or_default() += 1;
                let after = f.these(&fixtures_now());
                if State::parse(after[tguid]["state"].as_str().unwrap())
                    .unwrap()
                    .is_final()
                {
                    let next = generation.borrow()[slot] + 1;
                    f.fixture(slot, next);
                    generation.borrow_mut()[slot] = next;
                }
                let shown = String::from_utf8_lossy(&answer);
                let code = serde_json::from_slice::<Value>(&answer).unwrap_or(Value::Null)["error"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                let earlier = key
                    .as_ref()
                    .and_then(|(k, _)| used.borrow().get(k).cloned());
                let notified = |w: &BTreeMap<String, Value>| {
                    w[tguid]["notifications"].as_array().unwrap().clone()
                };
                // The oracle: the contract's table (`delivery::model`), not `domain::step`.
                let expected = input
                    .as_ref()
                    .map(|i| model::expect(op, UpdateLabel::Enroll, state.as_str(), i, tguid));
                match (expected, earlier) {
                    (None, _) => {
                        prop_assert_eq!(status, 422, "{} {} -> {}", path, body, shown);
                    }
                    (Some(_), Some(first))
                        if Some(&first) == key.as_ref().map(|(_, same)| same) =>
                    {
                        // The same event again: accepted, nothing changes.
                        prop_assert_eq!(status, 200, "{} {} repeated: {}", path, body, shown);
                        prop_assert!(after == before, "a repeated event changed the world");
                    }
                    (Some(None), _) => {
                        prop_assert_eq!(
                            (status, code.as_str()),
                            (409, "invalid_transition"),
                            "{} {} in {}: {}",
                            path,
                            body,
                            state,
                            shown
                        );
                    }
                    (Some(Some(_)), Some(_)) => {
                        prop_assert_eq!(
                            (status, code.as_str()),
                            (409, "event_id_reused"),
                            "{} {} in {}: {}",
                            path,
                            body,
                            state,
                            shown
                        );
                    }
                    (Some(Some(e)), None) => {
                        prop_assert_eq!(status, 200, "{} {} in {}: {}", path, body, state, shown);
                        prop_assert_eq!(after[tguid]["state"].as_str(), Some(e.to));
                        let (was, now) = (notified(&before), notified(&after));
                        let new: Vec<Value> =
                            now[was.len()..].iter().map(|n| n["body"].clone()).collect();
                        let want: Vec<Value> = e
                            .bodies
                            .iter()
                            .map(|b| serde_json::from_str(b).unwrap())
                            .collect();
                        prop_assert_eq!(new, want, "{} {} in {}", path, body, state);
                        if let Some((k, same)) = key {
                            used.borrow_mut().insert(k, same);
                        }
                    }
                }
                if status >= 400 {
                    check_refusal_shape(status, &answer)?;
                    prop_assert!(after == before, "refused {} changed the world", status);
                }
                Ok(())
            },
        )
        .unwrap();
    // The run reached every kind of answer, not only refusals.
    let seen = seen.into_inner();
    eprintln!(
        "answers: {seen:?}, fixtures used: {:?}",
        generation.borrow()
    );
    for status in [200, 409, 422] {
        assert!(seen.get(&status).is_some_and(|n| *n > 0), "{seen:?}");
    }
    f.stop();
}
