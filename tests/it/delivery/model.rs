//! A reference model of CONTRACT §2 written as data: the contract's tables typed as strings
//! and the notification bodies spelled out (not `domain::step`, not `Notification::body`).
//! `expect` answers what an input does; the fuzzers use it as their oracle too.
//!
//! Checked here: random interleavings of register, events (with and without `event_id`,
//! repeated and reused), reviews and treatments on several transactions, applied through the
//! real store under either UPDATE label, must leave every transaction in the model's state
//! with exactly the model's notification bodies, and every refusal must be the model's.

use std::collections::HashMap;

use gbds_notifier::domain::{
    Decision, Input, Operation, Outcome, Tguid, Treatment, Uguid, UpdateLabel,
};
use gbds_notifier::store::{InputRequest, WriteError};
use proptest::prelude::*;

/// Transactions and uguids a script picks from.
const TGUIDS: usize = 8;
const UGUIDS: u8 = 4;
/// `event_id`s a script picks from: few, so that they repeat and are reused.
const EVENT_IDS: u8 = 3;

#[derive(Debug, Clone)]
enum Action {
    Register(Operation),
    Do(Input, Option<String>),
}

fn is_event(input: &Input) -> bool {
    matches!(
        input,
        Input::Outcome(_) | Input::SentToReview | Input::Exception | Input::LatentMatch(_)
    )
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
        (0..UGUIDS).prop_map(|n| Input::LatentMatch(Uguid::parse(&format!("ul-{n}")).unwrap())),
        proptest::sample::select(Decision::ALL.to_vec()).prop_map(Input::Review),
        proptest::sample::select(Treatment::ALL.to_vec()).prop_map(Input::Treat),
    ];
    let event_id = prop_oneof![
        3 => Just(None),
        2 => (0..EVENT_IDS).prop_map(|n| Some(format!("e-{n}"))),
    ];
    prop_oneof![
        1 => op.prop_map(Action::Register),
        5 => (input, event_id).prop_map(|(input, id)| {
            // Only a back-office event carries an event_id.
            let id = id.filter(|_| is_event(&input));
            Action::Do(input, id)
        }),
    ]
}

/// What an input does by the contract: the next state and the exact bodies it notifies.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expected {
    pub to: &'static str,
    pub bodies: Vec<String>,
}

/// The `operation` label of a transaction's status notifications.
pub(crate) fn label_of(op: Operation, update_label: UpdateLabel) -> &'static str {
    match (op, update_label) {
        (Operation::Enroll, _) => "ENROLL",
        (Operation::Update, UpdateLabel::Enroll) => "ENROLL",
        (Operation::Update, UpdateLabel::Update) => "UPDATE",
        (Operation::Search, _) => "SEARCH",
    }
}

/// What `input` does to the `op` transaction `tguid` in `state`; `None`: it is refused.
pub(crate) fn expect(
    op: Operation,
    update_label: UpdateLabel,
    state: &str,
    input: &Input,
    tguid: &str,
) -> Option<Expected> {
    let key = input_key(input);
    let label = label_of(op, update_label);
    contract()
        .into_iter()
        .find(|(ops, from, inp, _, _)| ops.contains(&op.as_str()) && *from == state && *inp == key)
        .map(|(_, _, _, to, notes)| Expected {
            to,
            bodies: notes.iter().map(|n| body(n, label, tguid, input)).collect(),
        })
}

/// The contract's tables, as plain strings: (operations, from, input, to, notifications).
/// `{op}` stands for the transaction's label (`label_of`).
type Row = (
    &'static [&'static str],
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

pub(crate) fn contract() -> Vec<Row> {
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
fn body(template: &str, label: &str, tguid: &str, input: &Input) -> String {
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
    /// event_id -> what it was first applied with.
    event_ids: HashMap<String, String>,
}

/// What an event_id is compared by: the input, with its uguid.
fn fingerprint(input: &Input) -> String {
    match input {
        Input::LatentMatch(u) => format!("RLM|{}", u.as_str()),
        other => input_key(other),
    }
}

async fn check(
    update_label: UpdateLabel,
    script: Vec<(usize, Action)>,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let opened = crate::harness::store_with_label(&dir.path().join("m.db"), update_label).await;
    let store = opened.store;
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
            Action::Do(input, event_id) => {
                let request = InputRequest {
                    tguid: Tguid::parse(&tguid).unwrap(),
                    input: input.clone(),
                    event_id: event_id.clone().map(|id| (id, fingerprint(&input))),
                    actor: "model".into(),
                };
                let got = store.apply(request).await;
                let Some(op) = m.op else {
                    prop_assert!(matches!(got, Err(WriteError::NotFound(_))), "{got:?}");
                    continue;
                };
                let key = input_key(&input);
                let expected = expect(op, update_label, m.state, &input, &tguid);
                let earlier = event_id.as_ref().and_then(|id| m.event_ids.get(id));
                match (earlier, expected) {
                    // The same event again: answered as applied, nothing changes.
                    (Some(first), _) if *first == fingerprint(&input) => prop_assert!(
                        got.as_ref()
                            .is_ok_and(|a| a.duplicate && a.notifications == 0),
                        "{op} {} {key} repeated: {got:?}",
                        m.state
                    ),
                    // Another event under a used event_id: refused as the machine refuses it,
                    // or else as a reuse.
                    (Some(_), None) => prop_assert!(
                        matches!(got, Err(WriteError::Refused(_))),
                        "{op} {} {key} should be refused: {got:?}",
                        m.state
                    ),
                    (Some(_), Some(_)) => prop_assert!(
                        matches!(got, Err(WriteError::EventIdReused(ref id)) if Some(id) == event_id.as_ref()),
                        "{op} {} {key} under a used event_id: {got:?}",
                        m.state
                    ),
                    (None, Some(e)) => {
                        prop_assert!(
                            got.as_ref()
                                .is_ok_and(|a| !a.duplicate && a.notifications == e.bodies.len()),
                            "{op} {} {key}: {got:?}",
                            m.state
                        );
                        m.state = e.to;
                        m.bodies.extend(e.bodies);
                        if let Some(id) = event_id {
                            m.event_ids.insert(id, fingerprint(&input));
                        }
                    }
                    (None, None) => prop_assert!(
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
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_of_inputs_and_event_ids_moves_every_transaction_exactly_as_the_contract_says(
        update_label in prop_oneof![Just(UpdateLabel::Enroll), Just(UpdateLabel::Update)],
        script in proptest::collection::vec((0..TGUIDS, action()), 1..100)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(update_label, script))?;
    }
}
