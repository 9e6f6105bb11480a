//! Endpoint subscription patterns (`<OPERATION>.<STATUS>`, `*` for any) against a model
//! written here from CONTRACT §2: the pairs notifications can carry, typed out again.
//!
//! Properties: nothing panics; a list is accepted exactly when it is not empty and each
//! pattern is `*` or a known operation, a dot, `*` or a known status, naming a pair some
//! notification has when both sides are named; an accepted list matches exactly the pairs
//! the model says; a pattern written back reads as itself; a refusal names the bad pattern.

#![no_main]

use gbds_notifier::domain::{Pattern, Subscriptions};
use libfuzzer_sys::fuzz_target;

/// Every (operation, status) a notification can carry.
const PAIRS: &[(&str, &str)] = &[
    ("ENROLL", "PENDING"),
    ("ENROLL", "EXCEPTION"),
    ("ENROLL", "REVERSE_LATENT_MATCH"),
    ("ENROLL", "ENROLLED"),
    ("ENROLL", "FAILED"),
    ("UPDATE", "PENDING"),
    ("UPDATE", "EXCEPTION"),
    ("UPDATE", "REVERSE_LATENT_MATCH"),
    ("UPDATE", "ENROLLED"),
    ("UPDATE", "FAILED"),
    ("SEARCH", "MATCH"),
    ("SEARCH", "NOT_MATCH"),
    ("SEARCH", "FAILED"),
    ("SEARCH", "PERSON_NOT_FOUND"),
    ("TREAT_EXCEPTION", "OK"),
];

/// Values to try matching against, beyond the known ones.
const STRANGERS: &[&str] = &["", "*", "enroll", "OK ", "ENROLL.ENROLLED"];

fn side_ok(side: &str, known: &[&str]) -> bool {
    side == "*" || known.contains(&side)
}

/// The model's reading of one pattern: accepted, and which (operation, status) it matches.
fn model(text: &str) -> Option<impl Fn(&str, &str) -> bool + '_> {
    let (op, status) = text.split_once('.')?;
    let ops: Vec<&str> = PAIRS.iter().map(|p| p.0).collect();
    let statuses: Vec<&str> = PAIRS.iter().map(|p| p.1).collect();
    if !side_ok(op, &ops) || !side_ok(status, &statuses) {
        return None;
    }
    if op != "*" && status != "*" && !PAIRS.contains(&(op, status)) {
        return None;
    }
    Some(move |o: &str, s: &str| (op == "*" || op == o) && (status == "*" || status == s))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let list: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').collect()
    };
    let models: Vec<_> = list.iter().map(|p| model(p)).collect();
    let mut candidates: Vec<(&str, &str)> = PAIRS.to_vec();
    for o in STRANGERS.iter().chain(PAIRS.iter().map(|p| &p.0)) {
        for s in STRANGERS.iter().chain(PAIRS.iter().map(|p| &p.1)) {
            candidates.push((o, s));
        }
    }
    match Subscriptions::parse(&list) {
        Ok(subs) => {
            assert!(!list.is_empty());
            assert!(models.iter().all(Option::is_some), "accepted {list:?}");
            for (o, s) in candidates {
                let want = models.iter().flatten().any(|m| m(o, s));
                assert_eq!(subs.matches(o, s), want, "{list:?} on {o}.{s}");
            }
            for written in subs.patterns().expect("a list was given") {
                let again = Pattern::parse(&written).expect("a written pattern reads back");
                assert_eq!(again.to_string(), written);
            }
        }
        Err((None, why)) => {
            assert!(list.is_empty(), "{why}");
        }
        Err((Some(i), why)) => {
            assert!(models[i].is_none(), "refused {:?}: {why}", list[i]);
            assert!(models[..i].iter().all(Option::is_some), "not the first bad one");
            assert!(why.to_string().contains(&format!("{:?}", list[i])), "{why}");
        }
    }
});
