//! Random interleavings of inputs on several transactions, applied through the real store,
//! against a small reference model of CONTRACT §2 written as data (not with `domain::step`).

use std::collections::HashMap;

use gbds_notifier::domain::{Decision, Input, Operation, Outcome, Tguid, Treatment, Uguid};
use gbds_notifier::store::{InputRequest, WriteError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Register(Operation),
    Do(Input),
}

fn action() -> impl Strategy<Value = Action> {
    let op = prop_oneof![
        Just(Operation::Enroll),
        Just(Operation::Update),
        Just(Operation::Search)
    ];
    let input = prop_oneof![
        proptest::sample::select(Outcome::ALL.to_vec()).prop_map(Input::Outcome),
        Just(Input::SentToReview),
        Just(Input::Exception),
        (0..3u8).prop_map(|n| Input::LatentMatch(Uguid::parse(&format!("ul-{n}")).unwrap())),
        proptest::sample::select(Decision::ALL.to_vec()).prop_map(Input::Review),
        proptest::sample::select(Treatment::ALL.to_vec()).prop_map(Input::Treat),
    ];
    prop_oneof![1 => op.prop_map(Action::Register), 4 => input.prop_map(Action::Do)]
}

/// The contract's tables, as plain strings: (operations, from, input, to, notifications).
/// `{op}` stands for the label (ENROLL for enroll and update, SEARCH for search).
/// (operations, from, input, to, notifications)
type Row = (
    &'static [&'static str],
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

fn contract() -> Vec<Row> {
    const EU: &[&str] = &["ENROLL", "UPDATE"];
    vec![
        (EU, "PROCESSING", "ENROLLED", "ENROLLED", &["{op}|ENROLLED"]),
        (EU, "PROCESSING", "FAILED", "FAILED", &["{op}|FAILED"]),
        (&["SEARCH"], "PROCESSING", "MATCH", "MATCH", &["{op}|MATCH"]),
        (
            &["SEARCH"],
            "PROCESSING",
            "NOT_MATCH",
            "NOT_MATCH",
            &["{op}|NOT_MATCH"],
        ),
        (
            &["SEARCH"],
            "PROCESSING",
            "FAILED",
            "FAILED",
            &["{op}|FAILED"],
        ),
        (
            &["SEARCH"],
            "PROCESSING",
            "PERSON_NOT_FOUND",
            "PERSON_NOT_FOUND",
            &["{op}|PERSON_NOT_FOUND"],
        ),
        (EU, "PROCESSING", "PENDING", "PENDING", &["{op}|PENDING"]),
        (
            EU,
            "PROCESSING",
            "EXCEPTION",
            "EXCEPTION",
            &["{op}|EXCEPTION"],
        ),
        (
            EU,
            "PROCESSING",
            "RLM",
            "PROCESSING",
            &["{op}|REVERSE_LATENT_MATCH|uguid"],
        ),
        (EU, "PENDING", "APPROVE", "PROCESSING", &[]),
        (EU, "PENDING", "REJECT", "FAILED", &["{op}|FAILED"]),
        (
            &["ENROLL"],
            "EXCEPTION",
            "SAME_FINGERS",
            "FAILED",
            &["TREAT|SAME_FINGERS", "{op}|FAILED"],
        ),
        (
            &["ENROLL"],
            "EXCEPTION",
            "DIFFERENT_FINGERS",
            "ENROLLED",
            &["TREAT|DIFFERENT_FINGERS", "{op}|ENROLLED"],
        ),
        (
            &["ENROLL"],
            "EXCEPTION",
            "MERGE_TRANSACTIONS",
            "ENROLLED",
            &["TREAT|MERGE_TRANSACTIONS", "{op}|ENROLLED"],
        ),
        (
            &["ENROLL"],
            "EXCEPTION",
            "RECOLLECT",
            "FAILED",
            &["TREAT|RECOLLECT", "{op}|FAILED"],
        ),
        (
            &["UPDATE"],
            "EXCEPTION",
            "SAME_FINGERS",
            "ENROLLED",
            &["TREAT|SAME_FINGERS", "{op}|ENROLLED"],
        ),
        (
            &["UPDATE"],
            "EXCEPTION",
            "DIFFERENT_FINGERS",
            "FAILED",
            &["TREAT|DIFFERENT_FINGERS", "{op}|FAILED"],
        ),
        (
            &["UPDATE"],
            "EXCEPTION",
            "RECOLLECT",
            "FAILED",
            &["TREAT|RECOLLECT", "{op}|FAILED"],
        ),
        (
            &["UPDATE"],
            "EXCEPTION",
            "INCORRECT_ENROLL",
            "ENROLLED",
            &["TREAT|INCORRECT_ENROLL", "{op}|ENROLLED"],
        ),
    ]
}

fn input_key(input: &Input) -> String {
    match input {
        Input::Outcome(o) => o.as_str().to_owned(),
        Input::SentToReview => "PENDING".into(),
        Input::Exception => "EXCEPTION".into(),
        Input::LatentMatch(_) => "RLM".into(),
        Input::Review(d) => d.as_str().to_owned(),
        Input::Treat(t) => t.as_str().to_owned(),
    }
}

/// The body the model expects for one table entry.
fn body(template: &str, op: Operation, tguid: &str, input: &Input) -> String {
    let label = if op == Operation::Search {
        "SEARCH"
    } else {
        "ENROLL"
    };
    let parts: Vec<&str> = template.split('|').collect();
    match parts.as_slice() {
        ["TREAT", t] => format!(
            r#"{{"operation":"TREAT_EXCEPTION","tguid":"{tguid}","status":"OK","treatment":"{t}"}}"#
        ),
        [_, status, "uguid"] => {
            let Input::LatentMatch(u) = input else {
                unreachable!()
            };
            format!(
                r#"{{"operation":"{label}","tguid":"{tguid}","status":"{status}","uguid":"{}"}}"#,
                u.as_str()
            )
        }
        [_, status] => {
            format!(r#"{{"operation":"{label}","tguid":"{tguid}","status":"{status}"}}"#)
        }
        _ => unreachable!(),
    }
}

#[derive(Debug, Default, Clone)]
struct ModelTx {
    op: Option<Operation>,
    state: &'static str,
    bodies: Vec<String>,
}

async fn check(script: Vec<(usize, Action)>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let opened = crate::harness::store_with_one_endpoint(&dir.path().join("m.db")).await;
    let store = opened.store;
    let table = contract();
    let mut model: HashMap<usize, ModelTx> = HashMap::new();
    for (i, action) in script {
        let tguid = format!("tg-{i}");
        let m = model.entry(i).or_default();
        match action {
            Action::Register(op) => {
                let got = store
                    .register(Tguid::parse(&tguid).unwrap(), op, "model".into())
                    .await;
                match m.op {
                    None => {
                        prop_assert!(got.as_ref().is_ok_and(|r| r.created), "{got:?}");
                        m.op = Some(op);
                        m.state = "PROCESSING";
                    }
                    Some(existing) if existing == op => prop_assert!(got.is_ok_and(|r| !r.created)),
                    Some(_) => prop_assert!(
                        matches!(got, Err(WriteError::OperationConflict { .. })),
                        "{:?}",
                        got
                    ),
                }
            }
            Action::Do(input) => {
                let request = InputRequest {
                    tguid: Tguid::parse(&tguid).unwrap(),
                    input: input.clone(),
                    event_id: None,
                    actor: "model".into(),
                };
                let got = store.apply(request).await;
                let Some(op) = m.op else {
                    prop_assert!(matches!(got, Err(WriteError::NotFound(_))), "{got:?}");
                    continue;
                };
                let key = input_key(&input);
                let row = table.iter().find(|(ops, from, inp, _, _)| {
                    ops.contains(&op.as_str()) && *from == m.state && *inp == key
                });
                match row {
                    Some((_, _, _, to, notes)) => {
                        prop_assert!(got.is_ok(), "{op} {} {key}: {got:?}", m.state);
                        m.state = to;
                        m.bodies
                            .extend(notes.iter().map(|n| body(n, op, &tguid, &input)));
                    }
                    None => prop_assert!(
                        matches!(got, Err(WriteError::Refused(_))),
                        "{op} {} {key} should be refused: {got:?}",
                        m.state
                    ),
                }
            }
        }
    }
    for (i, m) in &model {
        let detail = store.readers.transaction(format!("tg-{i}")).await.unwrap();
        match (m.op, detail) {
            (None, None) => {}
            (Some(op), Some(d)) => {
                prop_assert_eq!(d.summary.operation, op);
                prop_assert_eq!(d.summary.state.as_str(), m.state);
                let bodies: Vec<String> = d
                    .notifications
                    .iter()
                    .map(|n| String::from_utf8(n.body.clone()).unwrap())
                    .collect();
                prop_assert_eq!(&bodies, &m.bodies);
                let seqs: Vec<i64> = d.notifications.iter().map(|n| n.seq).collect();
                prop_assert_eq!(seqs, (1..=m.bodies.len() as i64).collect::<Vec<_>>());
                prop_assert!(d
                    .notifications
                    .iter()
                    .all(|n| n.deliveries.len() == 1 && n.deliveries[0].status == "pending"));
            }
            (op, d) => prop_assert!(false, "model {op:?} vs store {:?}", d.map(|d| d.summary)),
        }
    }
    store.shutdown().await;
    opened.writer.join().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_of_inputs_moves_every_transaction_exactly_as_the_contract_says(
        script in proptest::collection::vec((0..5usize, action()), 1..60)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(script))?;
    }
}
