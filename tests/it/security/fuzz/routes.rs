//! Every route of the API fed any token, path, query and body: nothing answers 5xx, a stranger
//! changes nothing, and every call the administrator makes reaches its route's handler.

use std::collections::BTreeMap;

use gbds_notifier::domain::{Operation, State};
use proptest::prelude::*;
use serde_json::Value;

use super::{body, check_refusal_shape, encode, path_tguid, runner, text, Fuzzed};
use crate::harness::{ADMIN, INGEST, REVIEW};

/// Every route of the API: method, path (`{t}` a tguid, `{e}` an endpoint id, `{d}` a
/// delivery id, `{q}` a query string) and whether it takes a JSON body.
const ROUTES: &[(&str, &str, bool)] = &[
    ("GET", "/v1/transactions?{q}", false),
    ("POST", "/v1/transactions", true),
    ("GET", "/v1/transactions/{t}", false),
    ("POST", "/v1/transactions/{t}/events", true),
    ("POST", "/v1/transactions/{t}/review", true),
    ("POST", "/v1/transactions/{t}/treatment", true),
    ("POST", "/v1/transactions/{t}/renotify", true),
    ("GET", "/v1/queues?{q}", false),
    ("GET", "/v1/notifications?{q}", false),
    ("GET", "/v1/deliveries?{q}", false),
    ("POST", "/v1/deliveries/{d}/retry", false),
    ("GET", "/v1/endpoints", false),
    ("POST", "/v1/endpoints", true),
    ("PATCH", "/v1/endpoints/{e}", true),
    ("DELETE", "/v1/endpoints/{e}", false),
    ("POST", "/v1/endpoints/{e}/recover", true),
];

/// An Authorization header: mostly one of the configured tokens, admin most of all (so that
/// every handler is reached), sometimes nothing or anything.
fn authorization() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(Some(format!("Bearer {ADMIN}"))),
        2 => Just(Some(format!("Bearer {INGEST}"))),
        2 => Just(Some(format!("Bearer {REVIEW}"))),
        1 => proptest::sample::select(vec![ADMIN, INGEST, REVIEW])
            .prop_map(|t| Some(format!("bearer  {t} "))),
        1 => Just(None),
        1 => "[ -~]{0,60}".prop_map(Some),
        1 => "[!-~]{0,60}".prop_map(|t| Some(format!("Bearer {t}"))),
    ]
}

/// A query string: the keys the routes know (paging above all) and some they do not, each at
/// most once, with values that are right, nearly right and anything.
fn query() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = prop_oneof![
        3 => proptest::sample::select(vec!["limit", "cursor", "after"]).prop_map(str::to_owned),
        3 => proptest::sample::select(vec!["state", "operation", "status", "endpoint", "tguid"])
            .prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
    ];
    let value = prop_oneof![
        3 => (0i64..1200).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => Just("1e3".to_owned()),
        1 => Just(" 5".to_owned()),
        2 => proptest::sample::select(vec![
            "PENDING", "FAILED", "ENROLL", "SEARCH", "pending", "failing", "dead", "delivered",
            "fz", "fz-enr",
        ])
        .prop_map(str::to_owned),
        2 => text(),
    ];
    proptest::collection::btree_map(key, value, 0..4)
}

/// What `GET /v1/transactions` must answer for `query` with a good token: 200, or 422 when a
/// key is unknown or a value out of its range.
fn transactions_query_answer(query: &BTreeMap<String, String>) -> u16 {
    let ok = query.iter().all(|(k, v)| match k.as_str() {
        "limit" => v.parse::<u64>().is_ok_and(|n| (1..=1000).contains(&n)),
        "cursor" => v.parse::<i64>().is_ok_and(|n| n >= 0),
        "state" => State::parse(v).is_some(),
        "operation" => Operation::parse(v).is_some(),
        _ => false,
    });
    if ok {
        200
    } else {
        422
    }
}

/// Whether an answer came from a route's handler, past routing and authorization. A 404 is the
/// handler's when it names what is missing (`no endpoint with id …`), the router's when it says
/// there is no such route.
fn reached(status: u16, answer: &[u8]) -> bool {
    match status {
        401 | 403 | 405 => false,
        404 => serde_json::from_slice::<Value>(answer).is_ok_and(|b| {
            b["message"]
                .as_str()
                .is_some_and(|m| !m.starts_with("no such route"))
        }),
        _ => true,
    }
}

/// A path segment the URL parser folds away ("." and ".." are dot-segments, "" joins two
/// slashes), so the request names another path, maybe no route at all.
fn folded(segment: &str) -> bool {
    ["", ".", ".."].contains(&segment)
}

#[test]
fn every_route_fed_any_token_path_query_and_body_answers_without_5xx_and_reaches_its_handler() {
    let f = Fuzzed::start();
    // (route, status) -> how many times.
    let seen = std::cell::RefCell::new(BTreeMap::<(usize, u16), u32>::new());
    let endpoint_id = prop_oneof![
        2 => Just("fz".to_owned()),
        1 => Just("nope".to_owned()),
        1 => "[!-~]{1,20}",
    ];
    let delivery_id = prop_oneof![
        3 => (1u32..30).prop_map(|n| n.to_string()),
        1 => "[!-~]{1,12}",
    ];
    let cases = runner().config().cases;
    runner()
        .run(
            &(
                0..ROUTES.len(),
                authorization(),
                path_tguid(),
                endpoint_id,
                delivery_id,
                query(),
                body(),
            ),
            |(route, authorization, tguid, endpoint, delivery, query, body)| {
                let (method, template, takes_body) = ROUTES[route];
                let q: Vec<String> = query
                    .iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                    .collect();
                let path = template
                    .replace("{t}", &encode(&tguid))
                    .replace("{e}", &encode(&endpoint))
                    .replace("{d}", &encode(&delivery))
                    .replace("{q}", &q.join("&"));
                let segment = [("{t}", &tguid), ("{e}", &endpoint), ("{d}", &delivery)]
                    .into_iter()
                    .find(|(placeholder, _)| template.contains(placeholder))
                    .map(|(_, value)| value.as_str());
                let sent = takes_body.then_some(&body[..]);
                let token = authorization.as_deref().and_then(|a| {
                    let (scheme, token) = a.split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                });
                let known = token.is_some_and(|t| [ADMIN, INGEST, REVIEW].contains(&t));
                let before = (!known).then(|| f.world());
                let (status, answer) = f.raw(method, &path, sent, authorization.as_deref());
                *seen.borrow_mut().entry((route, status)).or_default() += 1;
                prop_assert!(
                    status < 500,
                    "{} {} {:?} -> {}",
                    method,
                    path,
                    authorization,
                    status
                );
                if status >= 400 {
                    check_refusal_shape(status, &answer)?;
                }
                if let Some(before) = before {
                    // Routing answers first (a path that is no route, e.g. a tguid of "." that
                    // the URL parser folds away, is 404/405 for anyone); every route refuses a
                    // stranger with 401.
                    prop_assert!(
                        [401, 404, 405].contains(&status),
                        "{} {} {:?} -> {}",
                        method,
                        path,
                        authorization,
                        status
                    );
                    prop_assert!(
                        f.world() == before,
                        "a stranger's {} {} changed something",
                        method,
                        path
                    );
                }
                // The administrator may call every route: unless the path was folded into
                // another, the answer is the handler's, whatever the identifiers, query and body.
                if authorization.as_deref() == Some(&format!("Bearer {ADMIN}"))
                    && !segment.is_some_and(folded)
                {
                    prop_assert!(
                        reached(status, &answer),
                        "{} {} as the administrator never reached its handler: {} {}",
                        method,
                        path,
                        status,
                        String::from_utf8_lossy(&answer)
                    );
                }
                // The query parsing of the transaction list, decided by the test's own rules.
                if route == 0 && token == Some(ADMIN) {
                    let want = transactions_query_answer(&query);
                    prop_assert_eq!(
                        status,
                        want,
                        "{} {}",
                        path,
                        String::from_utf8_lossy(&answer)
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    let seen = seen.into_inner();
    let mut by_status = BTreeMap::<u16, u32>::new();
    let mut by_route = vec![BTreeMap::<u16, u32>::new(); ROUTES.len()];
    for ((route, status), n) in &seen {
        *by_status.entry(*status).or_default() += n;
        *by_route[*route].entry(*status).or_default() += n;
    }
    eprintln!("answers reached over {cases} cases: {by_status:?}");
    for (i, (method, path, _)) in ROUTES.iter().enumerate() {
        eprintln!("  {method} {path}: {:?}", by_route[i]);
    }
    for status in [200, 401, 403, 422] {
        assert!(
            by_status.contains_key(&status),
            "no {status}: {by_status:?}"
        );
    }
    f.stop();
}
