//! Property-based fuzzing of the pure pieces under the API: identifier parsing, the state
//! machine against the contract's table (`delivery::model`, an oracle written apart from
//! `domain::step`), signature checks and configuration loading.

use axum::http::HeaderMap;
use gbds_notifier::domain::{
    step, Decision, Input, Operation, Outcome, State, Tguid, Treatment, Uguid, UpdateLabel,
};
use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::delivery::model;

proptest! {
    #![proptest_config(Config { failure_persistence: None, ..Config::default() })]

    #[test]
    fn identifiers_are_accepted_exactly_when_the_contract_allows_them(s in prop_oneof![".{0,140}", "[!-~]{0,140}"]) {
        let allowed = !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'/');
        prop_assert_eq!(Tguid::parse(&s).is_ok(), allowed);
        prop_assert_eq!(Uguid::parse(&s).is_ok(), allowed);
    }

    #[test]
    fn the_state_machine_does_exactly_what_the_contract_table_says_down_to_the_bytes(
        op in proptest::sample::select(Operation::ALL.to_vec()),
        update_label in prop_oneof![Just(UpdateLabel::Enroll), Just(UpdateLabel::Update)],
        inputs in proptest::collection::vec(input(), 0..12),
    ) {
        let tguid = Tguid::parse("tg-pure").unwrap();
        let mut state = State::Processing;
        for input in &inputs {
            let expected = model::expect(op, update_label, state.as_str(), input, tguid.as_str());
            match (step(op, state, input, update_label), expected) {
                (Ok(t), Some(e)) => {
                    prop_assert!(!state.is_final(), "{} left final state {}", input.describe(), state);
                    prop_assert_eq!(t.to.as_str(), e.to, "{} {} {}", op, state, input.describe());
                    let bodies: Vec<String> = t
                        .notifications
                        .iter()
                        .map(|n| String::from_utf8(n.body(&tguid)).unwrap())
                        .collect();
                    prop_assert_eq!(bodies, e.bodies, "{} {} {}", op, state, input.describe());
                    state = t.to;
                }
                // A refusal is a value, not a change: the caller keeps `state`.
                (Err(_), None) => {}
                (got, want) => prop_assert!(
                    false,
                    "{} in {} on {}: the machine says {:?}, the table {:?}",
                    op,
                    state,
                    input.describe(),
                    got.map(|t| t.to),
                    want
                ),
            }
        }
    }

    #[test]
    fn signature_checks_never_panic_on_any_header_or_body(
        id in ".{0,40}",
        ts in ".{0,20}",
        sig in ".{0,120}",
        xsig in ".{0,80}",
        body in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in [("webhook-id", &id), ("webhook-timestamp", &ts), ("webhook-signature", &sig), ("x-signature", &xsig)] {
            if let Ok(v) = value.parse() {
                headers.insert(name, v);
            }
        }
        let v = gbds_notifier::receiver::verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &headers, &body);
        // Random headers never verify.
        prop_assert_ne!(v.standard, Some(true));
        prop_assert_ne!(v.plain, Some(true));
    }

    #[test]
    fn any_configuration_text_is_loaded_or_refused_without_panicking(
        text in prop_oneof![
            ".{0,200}",
            proptest::collection::vec((key_path(), toml_value()), 0..6).prop_map(|kv| {
                kv.into_iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>()
            }),
        ]
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).unwrap();
        let _ = gbds_notifier::config::load(Some(&path), |_| None);
    }
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        proptest::sample::select(Outcome::ALL.to_vec()).prop_map(Input::Outcome),
        Just(Input::SentToReview),
        Just(Input::Exception),
        (0..3u8).prop_map(|n| Input::LatentMatch(Uguid::parse(&format!("u-{n}")).unwrap())),
        proptest::sample::select(Decision::ALL.to_vec()).prop_map(Input::Review),
        proptest::sample::select(Treatment::ALL.to_vec()).prop_map(Input::Treat),
    ]
}

fn key_path() -> impl Strategy<Value = String> {
    proptest::sample::select(vec![
        "listen",
        "store.sqlite_path",
        "api.tokens",
        "api.request_timeout",
        "api.max_concurrent_requests",
        "delivery.retry_schedule",
        "delivery.block_private_targets",
        "delivery.jitter",
        "endpoints",
        "notifications.update_operation",
    ])
    .prop_map(str::to_owned)
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        ".{0,20}".prop_map(|s| format!("{s:?}")),
        Just("[\"1s\", \"x\"]".to_owned()),
        Just("[{ token = \"t\", role = \"admin\" }]".to_owned()),
        Just("[{ token_sha256 = \"zz\", role = \"admin\" }]".to_owned()),
        Just("[{ id = \"e\", url = \"http://127.0.0.1:1/\", secrets = [] }]".to_owned()),
        Just("[{ id = \"e\", url = \"http://x/\", auth = { type = \"oauth2\" } }]".to_owned()),
        Just("[{ id = \"e\", url = \"http://x/\", auth = { type = \"api_key\", header = \"\", value = \"\" } }]".to_owned()),
    ]
}
